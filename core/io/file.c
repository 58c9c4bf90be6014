#include "io/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

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

/* ---- whole-file reads ---- */

/* The most a gzip stream may expand: its own size times this. Real data
 * sets compress 2-10x; a bomb (zeros) reaches about 1000x. */
#define GZIP_MAX_RATIO 250

static bool is_gzip(int fd) {
  uint8_t magic[2];
  bool gz = pread(fd, magic, 2, 0) == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
  return gz;
}

/* Opens path for reading, refusing anything but a regular file (a FIFO or a
 * device such as /dev/zero would block or never end); *bytes gets its size. */
static cb_status open_regular(const char *path, int *fd, int64_t *bytes) {
  *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block here */
  if (*fd < 0) return cb_fail(CB_EIO, "%s: cannot open (%s)", path, strerror(errno));
  struct stat s;
  if (fstat(*fd, &s) != 0 || !S_ISREG(s.st_mode)) {
    close(*fd);
    return cb_fail(CB_EIO, "%s: not a regular file", path);
  }
  fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) & ~O_NONBLOCK);
  *bytes = s.st_size;
  return CB_OK;
}

static cb_status too_large(const char *path, int64_t max_bytes) {
  return cb_fail(CB_EFORMAT, "%s: larger than the %lld bytes this reader accepts", path,
                 (long long)max_bytes);
}

static cb_status read_plain_fd(int fd, const char *path, int64_t file_bytes, int64_t max_bytes,
                               uint8_t **out, size_t *size) {
  if (file_bytes > max_bytes) return too_large(path, max_bytes);
  uint8_t *buf = malloc(file_bytes > 0 ? (size_t)file_bytes : 1);
  if (!buf) return cb_fail(CB_ENOMEM, "%s: out of memory for %lld bytes", path, (long long)file_bytes);
  int64_t used = 0;
  while (used < file_bytes) {
    ssize_t n = read(fd, buf + used, (size_t)(file_bytes - used));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      free(buf);
      return n < 0 ? cb_fail(CB_EIO, "%s: read error (%s)", path, strerror(errno))
                   : cb_fail(CB_EIO, "%s: file shrank while being read", path);
    }
    used += n;
  }
  *out = buf;
  *size = (size_t)used;
  return CB_OK;
}

/* Streams the gzip member in, growing the buffer, and stops as soon as the
 * output passes the ratio limit or max_bytes: a bomb is refused after at most
 * that much memory, not after expanding whole. */
static cb_status read_gzip_fd(int fd, const char *path, int64_t file_bytes, int64_t max_bytes,
                              uint8_t **out, size_t *size) {
  int64_t limit = file_bytes * GZIP_MAX_RATIO;
  if (limit > max_bytes) limit = max_bytes;
  gzFile f = gzdopen(fd, "rb");
  if (!f) {
    close(fd);
    return cb_fail(CB_ENOMEM, "%s: out of memory", path);
  }
  size_t capacity = 1 << 16, used = 0;
  uint8_t *buf = malloc(capacity);
  cb_status st = buf ? CB_OK : cb_fail(CB_ENOMEM, "%s: out of memory", path);
  while (st == CB_OK) {
    if (used == capacity) {
      uint8_t *bigger = realloc(buf, capacity * 2);
      if (!bigger) {
        st = cb_fail(CB_ENOMEM, "%s: out of memory", path);
        break;
      }
      buf = bigger;
      capacity *= 2;
    }
    size_t want = capacity - used;
    if (want > (1u << 30)) want = 1u << 30;
    int n = gzread(f, buf + used, (unsigned)want);
    if (n < 0) {
      int code;
      st = cb_fail(CB_EFORMAT, "%s: corrupt gzip data (%s)", path, gzerror(f, &code));
    } else if (n == 0) {
      break;
    } else if ((int64_t)(used += (size_t)n) > limit) {
      st = limit == max_bytes ? too_large(path, max_bytes)
                              : cb_fail(CB_EFORMAT, "%s: gzip data expands more than %dx "
                                        "(a compression bomb?)", path, GZIP_MAX_RATIO);
    }
  }
  gzclose(f); /* closes fd */
  if (st != CB_OK) {
    free(buf);
    return st;
  }
  *out = buf;
  *size = used;
  return CB_OK;
}

cb_status cb_read_file(const char *path, int64_t max_bytes, uint8_t **bytes, size_t *size) {
  *bytes = NULL;
  *size = 0;
  int fd;
  int64_t file_bytes = 0;
  cb_status st = open_regular(path, &fd, &file_bytes);
  if (st != CB_OK) return st;
  if (is_gzip(fd)) return read_gzip_fd(fd, path, file_bytes, max_bytes, bytes, size);
  st = read_plain_fd(fd, path, file_bytes, max_bytes, bytes, size);
  close(fd);
  return st;
}
