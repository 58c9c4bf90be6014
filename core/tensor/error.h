/* Error reporting for the cbnet core.
 *
 * Every fallible core function returns a cb_status. On failure it also leaves a
 * human-readable message, naming the operation and what was wrong, in a
 * thread-local buffer that cb_last_error() returns; the Lua binding turns the
 * pair into a Lua error. */
#ifndef CB_ERROR_H
#define CB_ERROR_H

typedef enum {
  CB_OK = 0,
  CB_EINVAL, /* bad argument value */
  CB_ESHAPE, /* shapes do not fit the operation */
  CB_ERANGE, /* index out of range */
  CB_ETYPE,  /* wrong dtype */
  CB_ENOMEM, /* allocation failed */
  CB_EIO,    /* file could not be read or written */
  CB_EFORMAT /* file content is malformed */
} cb_status;

/* Sets the thread's error message (printf-style) and returns code. */
cb_status cb_fail(cb_status code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The message of the last failure on this thread ("" if none). */
const char *cb_last_error(void);

#endif
