/* Files: whole-file reads that validate before they allocate, and atomic
 * replacement for every write that matters (checkpoints, results, the
 * decoded-image cache).
 *
 * Reading: cb_read_file takes regular files only (a FIFO would block, a
 * device such as /dev/zero never ends), plain or gzip-compressed, and
 * refuses before allocating a file above the caller's cap or a gzip stream
 * expanding more than 250 times its size (a compression bomb).
 *
 * Writing: the data goes to PATH.tmp.<pid> beside the target; commit checks every
 * step -- each write, fsync, close -- and only then renames the temporary
 * over PATH and syncs the folder. Any failure (a full disk, an I/O error)
 * removes the temporary and leaves the old PATH untouched, so a reader sees
 * the old file or the new one, never a mix or an empty one. A writer killed
 * mid-way leaves its temporary behind; the next open for the same PATH
 * removes those whose process is gone. */
#ifndef CB_IO_FILE_H
#define CB_IO_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/error.h"

typedef struct {
  int fd; /* -1 when closed */
  char path[4096], tmp[4096 + 32];
} cb_atomic_file;

cb_status cb_atomic_open(cb_atomic_file *f, const char *path);
/* All of data, or an error (the file is then aborted). */
cb_status cb_atomic_write(cb_atomic_file *f, const void *data, size_t size);
/* Makes the new content durable and visible as path; aborts on failure. */
cb_status cb_atomic_commit(cb_atomic_file *f);
/* Drops the temporary file (safe to call twice, or after commit). */
void cb_atomic_abort(cb_atomic_file *f);

/* open + write + commit of one buffer. */
cb_status cb_write_file_atomic(const char *path, const void *data, size_t size);

/* Reads a whole regular file (gzip-compressed or not) into a malloc'd
 * buffer; see above for what it refuses. */
cb_status cb_read_file(const char *path, int64_t max_bytes, uint8_t **bytes, size_t *size);

#endif
