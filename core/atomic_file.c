#include "atomic_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The folder part of path ("." when it has none) and the file name. */
static void split_path(const char *path, char *dir, size_t dir_size, const char **base) {
  const char *slash = strrchr(path, '/');
  if (!slash) {
    snprintf(dir, dir_size, ".");
    *base = path;
  } else {
    snprintf(dir, dir_size, "%.*s", slash == path ? 1 : (int)(slash - path), path);
    *base = slash + 1;
  }
}

/* Removes BASE.tmp.<pid> files of processes that no longer exist. */
static void remove_stale_temporaries(const char *path) {
  char dir[4096];
  const char *base;
  split_path(path, dir, sizeof dir, &base);
  size_t base_len = strlen(base);
  DIR *d = opendir(dir);
  if (!d) return;
  for (struct dirent *e; (e = readdir(d));) {
    if (strncmp(e->d_name, base, base_len) != 0 || strncmp(e->d_name + base_len, ".tmp.", 5))
      continue;
    char *end;
    long pid = strtol(e->d_name + base_len + 5, &end, 10);
    if (*end || pid <= 0 || pid == (long)getpid()) continue;
    if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive, or not ours to judge */
    char stale[8192];
    snprintf(stale, sizeof stale, "%s/%s", dir, e->d_name);
    unlink(stale);
  }
  closedir(d);
}

cb_status cb_atomic_open(cb_atomic_file *f, const char *path) {
  f->fd = -1;
  if (strlen(path) >= sizeof f->path) return cb_fail(CB_EINVAL, "%s: path too long", path);
  snprintf(f->path, sizeof f->path, "%s", path);
  snprintf(f->tmp, sizeof f->tmp, "%s.tmp.%ld", path, (long)getpid());
  remove_stale_temporaries(path);
  f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (f->fd < 0) return cb_fail(CB_EIO, "%s: cannot write (%s)", path, strerror(errno));
  return CB_OK;
}

void cb_atomic_abort(cb_atomic_file *f) {
  if (f->fd < 0) return;
  close(f->fd);
  unlink(f->tmp);
  f->fd = -1;
}

static cb_status fail_and_abort(cb_atomic_file *f, const char *step) {
  int err = errno;
  cb_atomic_abort(f);
  return cb_fail(CB_EIO, "%s: %s failed (%s); the previous file is unchanged", f->path, step,
                 strerror(err));
}

cb_status cb_atomic_write(cb_atomic_file *f, const void *data, size_t size) {
  const char *p = data;
  while (size > 0) {
    ssize_t n = write(f->fd, p, size > (1u << 30) ? (1u << 30) : size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = ENOSPC;
      return fail_and_abort(f, "write");
    }
    p += n;
    size -= (size_t)n;
  }
  return CB_OK;
}

cb_status cb_atomic_commit(cb_atomic_file *f) {
  if (fsync(f->fd) != 0) return fail_and_abort(f, "fsync");
  int fd = f->fd;
  f->fd = -1;
  if (close(fd) != 0) {
    f->fd = open("/dev/null", O_RDONLY); /* so abort has something to close */
    return fail_and_abort(f, "close");
  }
  if (rename(f->tmp, f->path) != 0) {
    int err = errno;
    unlink(f->tmp);
    return cb_fail(CB_EIO, "%s: rename failed (%s); the previous file is unchanged", f->path,
                   strerror(err));
  }
  /* the rename itself must reach the disk too */
  char dir[4096];
  const char *base;
  split_path(f->path, dir, sizeof dir, &base);
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return CB_OK;
}

cb_status cb_write_file_atomic(const char *path, const void *data, size_t size) {
  cb_atomic_file f;
  cb_status st = cb_atomic_open(&f, path);
  if (st == CB_OK) st = cb_atomic_write(&f, data, size);
  if (st == CB_OK) st = cb_atomic_commit(&f);
  return st;
}
