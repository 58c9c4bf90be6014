/* Shared by the readers: the dataset life cycle and whole-file reads. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data.h"

void cb_dataset_free(cb_dataset *ds) {
  if (!ds) return;
  cb_tensor_release(ds->images);
  cb_tensor_release(ds->labels);
  for (int i = 0; i < ds->num_classes && ds->class_names; i++) free(ds->class_names[i]);
  free(ds->class_names);
  memset(ds, 0, sizeof *ds);
}

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
