/* Shared by the readers: the dataset life cycle and whole-file reads. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
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

/* zlib's gzread reads plain files unchanged, so one path serves both. */
cb_status cb_read_file(const char *path, uint8_t **bytes, size_t *size) {
  *bytes = NULL;
  *size = 0;
  gzFile f = gzopen(path, "rb");
  if (!f) return cb_fail(CB_EIO, "%s: cannot open (%s)", path, strerror(errno ? errno : ENOENT));
  size_t capacity = 1 << 16, used = 0;
  uint8_t *buf = malloc(capacity);
  cb_status st = buf ? CB_OK : cb_fail(CB_ENOMEM, "%s: out of memory", path);
  while (st == CB_OK) {
    if (used == capacity) {
      if (capacity > ((size_t)1 << 34)) {
        st = cb_fail(CB_EFORMAT, "%s: larger than 16 GiB uncompressed", path);
        break;
      }
      uint8_t *bigger = realloc(buf, capacity * 2);
      if (!bigger) {
        st = cb_fail(CB_ENOMEM, "%s: out of memory", path);
        break;
      }
      buf = bigger;
      capacity *= 2;
    }
    int n = gzread(f, buf + used, (unsigned)(capacity - used > (1u << 30) ? (1u << 30) : capacity - used));
    if (n < 0) {
      int code;
      const char *msg = gzerror(f, &code);
      st = cb_fail(CB_EIO, "%s: read error (%s)", path, msg);
    } else if (n == 0) {
      break;
    } else {
      used += (size_t)n;
    }
  }
  gzclose(f);
  if (st != CB_OK) {
    free(buf);
    return st;
  }
  *bytes = buf;
  *size = used;
  return CB_OK;
}
