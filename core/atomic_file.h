/* Atomic file replacement, for every write that matters (checkpoints,
 * results, the decoded-image cache).
 *
 * The data goes to PATH.tmp.<pid> beside the target; commit checks every
 * step -- each write, fsync, close -- and only then renames the temporary
 * over PATH and syncs the folder. Any failure (a full disk, an I/O error)
 * removes the temporary and leaves the old PATH untouched, so a reader sees
 * the old file or the new one, never a mix or an empty one. A writer killed
 * mid-way leaves its temporary behind; the next open for the same PATH
 * removes those whose process is gone. */
#ifndef CB_ATOMIC_FILE_H
#define CB_ATOMIC_FILE_H

#include <stddef.h>

#include "error.h"

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

#endif
