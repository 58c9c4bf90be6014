/* IDX files (LeCun's MNIST format): 0x00 0x00, a type byte, a dim count,
 * the dims as big-endian uint32, then the data, big-endian. */
#include <stdlib.h>
#include <string.h>

#include "data/data.h"
#include "io/file.h"

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Element sizes of the IDX type codes 0x08..0x0E (0 for unknown codes). */
static int idx_element_size(uint8_t type) {
  switch (type) {
  case 0x08: case 0x09: return 1; /* unsigned / signed byte */
  case 0x0B: return 2;            /* short */
  case 0x0C: case 0x0D: return 4; /* int, float */
  case 0x0E: return 8;            /* double */
  default: return 0;
  }
}

static double idx_value(uint8_t type, const uint8_t *p) {
  switch (type) {
  case 0x08: return p[0];
  case 0x09: return (int8_t)p[0];
  case 0x0B: return (int16_t)((uint16_t)p[0] << 8 | p[1]);
  case 0x0C: return (int32_t)be32(p);
  case 0x0D: {
    uint32_t bits = be32(p);
    float f;
    memcpy(&f, &bits, 4);
    return f;
  }
  default: {
    uint64_t bits = (uint64_t)be32(p) << 32 | be32(p + 4);
    double d;
    memcpy(&d, &bits, 8);
    return d;
  }
  }
}

cb_status cb_parse_idx(cb_tensor **out, const uint8_t *bytes, size_t size, const char *name) {
  *out = NULL;
  if (size < 4) return cb_fail(CB_EFORMAT, "%s: too short for an IDX file (%zu bytes)", name, size);
  if (bytes[0] != 0 || bytes[1] != 0 || !idx_element_size(bytes[2]))
    return cb_fail(CB_EFORMAT, "%s: not an IDX file (magic bytes %02x %02x %02x)", name, bytes[0],
                   bytes[1], bytes[2]);
  uint8_t type = bytes[2];
  int ndim = bytes[3];
  if (ndim < 1 || ndim > CB_MAX_DIMS)
    return cb_fail(CB_EFORMAT, "%s: IDX file with %d dims (1..%d supported)", name, ndim, CB_MAX_DIMS);
  if (size < 4 + 4 * (size_t)ndim) return cb_fail(CB_EFORMAT, "%s: truncated IDX header", name);
  int64_t shape[CB_MAX_DIMS], count = 1;
  for (int d = 0; d < ndim; d++) {
    shape[d] = be32(bytes + 4 + 4 * d);
    if (shape[d] > 0 && count > (int64_t)(size / (size_t)shape[d] + 1))
      return cb_fail(CB_EFORMAT, "%s: IDX dims larger than the file", name);
    count *= shape[d];
  }
  size_t esize = (size_t)idx_element_size(type), header = 4 + 4 * (size_t)ndim;
  size_t need = header + (size_t)count * esize;
  if (size < need)
    return cb_fail(CB_EFORMAT, "%s: truncated: the header promises %lld values (%zu bytes), the "
                   "file has %zu bytes", name, (long long)count, need, size);
  if (size > need)
    return cb_fail(CB_EFORMAT, "%s: %zu bytes after the last value: not an IDX file of the "
                   "dims its header gives", name, size - need);
  cb_dtype dtype = type == 0x08 ? CB_UINT8 : (type == 0x0D || type == 0x0E) ? CB_FLOAT32 : CB_INT64;
  cb_status st = cb_tensor_empty(out, ndim, shape, dtype);
  if (st != CB_OK) return st;
  const uint8_t *data = bytes + header;
  if (type == 0x08) {
    memcpy(cb_tensor_data(*out), data, (size_t)count);
  } else {
    char *dst = cb_tensor_data(*out);
    int64_t dsize = cb_dtype_size(dtype);
    for (int64_t i = 0; i < count; i++) cb_store(dst + i * dsize, dtype, idx_value(type, data + i * esize));
  }
  return CB_OK;
}

cb_status cb_read_idx(cb_tensor **out, const char *path) {
  uint8_t *bytes;
  size_t size;
  cb_status st = cb_read_file(path, CB_IDX_MAX_BYTES, &bytes, &size);
  if (st != CB_OK) return st;
  st = cb_parse_idx(out, bytes, size, path);
  free(bytes);
  return st;
}
