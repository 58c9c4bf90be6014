#include "error.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[512];

cb_status cb_fail(cb_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return code;
}

const char *cb_last_error(void) { return last_error; }

const char *cb_status_name(cb_status code) {
  switch (code) {
  case CB_OK: return "ok";
  case CB_EINVAL: return "invalid argument";
  case CB_ESHAPE: return "shape mismatch";
  case CB_ERANGE: return "index out of range";
  case CB_ETYPE: return "wrong dtype";
  case CB_ENOMEM: return "out of memory";
  case CB_EIO: return "i/o error";
  case CB_EFORMAT: return "malformed file";
  }
  return "unknown error";
}
