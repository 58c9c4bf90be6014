#include "tensor/tensor.h"

#include <malloc.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensor/iter.h"

static atomic_llong live_bytes;

int64_t cb_storage_live_bytes(void) { return atomic_load(&live_bytes); }

/* ---- dtypes ---- */

int64_t cb_dtype_size(cb_dtype dtype) {
  switch (dtype) {
  case CB_FLOAT32: return 4;
  case CB_INT64: return 8;
  case CB_UINT8:
  case CB_BOOL: return 1;
  }
  return 1;
}

const char *cb_dtype_name(cb_dtype dtype) {
  static const char *const names[] = {"float32", "int64", "uint8", "bool"};
  return (unsigned)dtype < CB_NUM_DTYPES ? names[dtype] : "?";
}

cb_status cb_dtype_parse(const char *name, cb_dtype *dtype) {
  static const struct { const char *name; cb_dtype dtype; } table[] = {
      {"float32", CB_FLOAT32}, {"float", CB_FLOAT32}, {"int64", CB_INT64},
      {"long", CB_INT64},      {"uint8", CB_UINT8},   {"byte", CB_UINT8},
      {"bool", CB_BOOL}};
  for (size_t i = 0; i < sizeof table / sizeof *table; i++)
    if (strcmp(name, table[i].name) == 0) {
      *dtype = table[i].dtype;
      return CB_OK;
    }
  return cb_fail(CB_EINVAL,
                 "unknown dtype '%s' (expected float32, int64, uint8 or bool)", name);
}

double cb_load(const void *p, cb_dtype dtype) {
  switch (dtype) {
  case CB_FLOAT32: return *(const float *)p;
  case CB_INT64: return (double)*(const int64_t *)p;
  case CB_UINT8: return *(const uint8_t *)p;
  case CB_BOOL: return *(const uint8_t *)p != 0;
  }
  return 0;
}

/* double -> int64 truncating toward zero, saturating at the int64 range
 * (a plain cast of an out-of-range double is undefined); NaN gives 0. */
static int64_t double_to_int64(double v) {
  if (v != v) return 0;
  if (v >= 9223372036854775808.0) return INT64_MAX;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)v;
}

void cb_store(void *p, cb_dtype dtype, double v) {
  switch (dtype) {
  case CB_FLOAT32: *(float *)p = (float)v; break;
  case CB_INT64: *(int64_t *)p = double_to_int64(v); break;
  case CB_UINT8: *(uint8_t *)p = (uint8_t)double_to_int64(v); break;
  case CB_BOOL: *(uint8_t *)p = v != 0; break;
  }
}

void cb_store_int64(void *p, cb_dtype dtype, int64_t v) {
  if (dtype == CB_INT64) *(int64_t *)p = v;
  else cb_store(p, dtype, (double)v);
}

/* ---- storage ---- */

/* glibc serves large blocks with fresh mmap()s, so every training step would
 * page-fault its activations in again (zeroed pages, a few ms per step). Keep
 * blocks up to 32 MiB (glibc's ceiling) in the heap, and freed memory there. */
static void tune_malloc(void) {
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 512 * 1024 * 1024);
}

/* Blocks over that ceiling are mmap()ed whatever we ask, so freed ones are
 * kept here for the next request of the same size (a training step asks for
 * the same sizes every step: 128 x 64 x 32 x 32 floats is 32 MiB and a bit),
 * at most LARGE_SLOTS blocks and LARGE_BYTES in all; a failed allocation
 * empties the cache and tries again. */
#define LARGE_BLOCK (32LL << 20)
#define LARGE_SLOTS 16
#define LARGE_BYTES (1LL << 30)

/* Whether glibc would map the block afresh: it maps requests whose chunk
 * (the block, alignment slack and a header) reaches the threshold, so a block
 * of exactly 32 MiB (128 x 64 x 32 x 32 floats, fastnet's first activations)
 * is one. */
static bool mapped_by_glibc(int64_t padded) { return padded + 4096 >= LARGE_BLOCK; }

static struct {
  pthread_mutex_t lock;
  void *data[LARGE_SLOTS];
  int64_t nbytes[LARGE_SLOTS];
  int count;
  int64_t total;
} large_cache = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *large_take(int64_t padded) {
  void *data = NULL;
  pthread_mutex_lock(&large_cache.lock);
  for (int i = large_cache.count - 1; i >= 0; i--)
    if (large_cache.nbytes[i] == padded) {
      data = large_cache.data[i];
      large_cache.total -= padded;
      large_cache.count--;
      large_cache.data[i] = large_cache.data[large_cache.count];
      large_cache.nbytes[i] = large_cache.nbytes[large_cache.count];
      break;
    }
  pthread_mutex_unlock(&large_cache.lock);
  return data;
}

/* Keeps a freed block, or frees it when the cache is full. */
static void large_give_back(void *data, int64_t padded) {
  pthread_mutex_lock(&large_cache.lock);
  bool kept = large_cache.count < LARGE_SLOTS && large_cache.total + padded <= LARGE_BYTES;
  if (kept) {
    large_cache.data[large_cache.count] = data;
    large_cache.nbytes[large_cache.count++] = padded;
    large_cache.total += padded;
  }
  pthread_mutex_unlock(&large_cache.lock);
  if (!kept) free(data);
}

static void large_empty(void) {
  pthread_mutex_lock(&large_cache.lock);
  for (int i = 0; i < large_cache.count; i++) free(large_cache.data[i]);
  large_cache.count = 0;
  large_cache.total = 0;
  pthread_mutex_unlock(&large_cache.lock);
}

/* 64-byte alignment for AVX-512 loads; aligned_alloc wants a multiple. */
static int64_t padded_size(int64_t nbytes) { return nbytes > 0 ? (nbytes + 63) / 64 * 64 : 64; }

static void *block_alloc(int64_t padded) {
  void *data = mapped_by_glibc(padded) ? large_take(padded) : NULL;
  if (!data) data = aligned_alloc(64, (size_t)padded);
  if (!data) {
    large_empty();
    data = aligned_alloc(64, (size_t)padded);
  }
  return data;
}

static cb_status storage_new(cb_storage **out, int64_t nbytes) {
  *out = NULL;
  static pthread_once_t malloc_once = PTHREAD_ONCE_INIT;
  pthread_once(&malloc_once, tune_malloc);
  cb_storage *s = malloc(sizeof *s);
  void *data = s ? block_alloc(padded_size(nbytes)) : NULL;
  if (!s || !data) {
    free(s);
    return cb_fail(CB_ENOMEM, "out of memory allocating %lld bytes", (long long)nbytes);
  }
  s->data = data;
  s->nbytes = nbytes;
  atomic_init(&s->refcount, 1);
  atomic_init(&s->version, 0);
  atomic_fetch_add(&live_bytes, nbytes);
  *out = s;
  return CB_OK;
}

static void storage_release(cb_storage *s) {
  if (s && atomic_fetch_sub(&s->refcount, 1) == 1) {
    atomic_fetch_sub(&live_bytes, s->nbytes);
    int64_t padded = padded_size(s->nbytes);
    if (mapped_by_glibc(padded)) large_give_back(s->data, padded);
    else free(s->data);
    free(s);
  }
}

/* ---- life cycle ---- */

static void set_contiguous_strides(cb_tensor *t) {
  int64_t stride = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    t->stride[d] = stride;
    stride *= t->shape[d];
  }
}

cb_status cb_tensor_alias(cb_tensor **out, const cb_tensor *src) {
  *out = NULL;
  cb_tensor *t = malloc(sizeof *t);
  if (!t) return cb_fail(CB_ENOMEM, "out of memory allocating a tensor view");
  memcpy(t, src, sizeof *t);
  atomic_init(&t->refcount, 1);
  t->autograd = NULL; /* a view gets its own autograd state, if any */
  t->autograd_destroy = NULL;
  atomic_fetch_add(&t->storage->refcount, 1);
  *out = t;
  return CB_OK;
}

/* ---- checked size arithmetic ---- */

static cb_status too_many_elements(const char *op, int ndim, const int64_t *shape) {
  char buf[160];
  return cb_fail(CB_EINVAL, "%s: shape %s has too many elements (at most 2^48)", op,
                 cb_shape_str(buf, sizeof buf, ndim, shape));
}

cb_status cb_check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel) {
  if (ndim < 0 || ndim > CB_MAX_DIMS)
    return cb_fail(CB_EINVAL, "%s: %d dims requested, at most %d are supported",
                   op, ndim, CB_MAX_DIMS);
  bool has_zero = false;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] < 0)
      return cb_fail(CB_EINVAL, "%s: negative size %lld in dim %d", op,
                     (long long)shape[d], d + 1);
    has_zero |= shape[d] == 0;
  }
  /* zero sizes count as one, so that strides (products of the sizes after a
   * dim) stay representable in an empty tensor too */
  int64_t n = 1;
  for (int d = 0; d < ndim; d++)
    if (cb_mul_overflows(n, shape[d] > 0 ? shape[d] : 1, &n) || n > CB_MAX_NUMEL)
      return too_many_elements(op, ndim, shape);
  *numel = has_zero ? 0 : n;
  return CB_OK;
}

cb_status cb_window_count(const char *op, int64_t in, int64_t kernel, int64_t stride,
                          int64_t padding, int64_t dilation, int64_t *out) {
  if (kernel < 1 || stride < 1 || dilation < 1 || padding < 0)
    return cb_fail(CB_EINVAL, "%s: need kernel, stride and dilation >= 1 and padding >= 0 "
                   "(got %lld, %lld, %lld and %lld)", op, (long long)kernel,
                   (long long)stride, (long long)dilation, (long long)padding);
  int64_t padded, span;
  if (cb_mul_overflows(2, padding, &padded) || cb_add_overflows(in, padded, &padded) ||
      cb_mul_overflows(dilation, kernel - 1, &span) || cb_add_overflows(span, 1, &span))
    return cb_fail(CB_EINVAL, "%s: kernel %lld, padding %lld and dilation %lld overflow "
                   "the size arithmetic", op, (long long)kernel, (long long)padding,
                   (long long)dilation);
  *out = padded < span ? 0 : (padded - span) / stride + 1;
  return CB_OK;
}

cb_status cb_tensor_empty(cb_tensor **out, int ndim, const int64_t *shape,
                          cb_dtype dtype) {
  *out = NULL;
  int64_t numel = 0;
  cb_status st = cb_check_shape("tensor", ndim, shape, &numel);
  if (st != CB_OK) return st;
  if ((unsigned)dtype >= CB_NUM_DTYPES)
    return cb_fail(CB_ETYPE, "empty: invalid dtype %d", (int)dtype);
  cb_tensor *t = calloc(1, sizeof *t);
  if (!t) return cb_fail(CB_ENOMEM, "out of memory allocating a tensor");
  st = storage_new(&t->storage, numel * cb_dtype_size(dtype));
  if (st != CB_OK) {
    free(t);
    return st;
  }
  t->ndim = ndim;
  if (ndim > 0) memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
  set_contiguous_strides(t);
  t->dtype = dtype;
  atomic_init(&t->refcount, 1);
  *out = t;
  return CB_OK;
}

cb_status cb_tensor_zeros(cb_tensor **out, int ndim, const int64_t *shape,
                          cb_dtype dtype) {
  cb_status st = cb_tensor_empty(out, ndim, shape, dtype);
  if (st == CB_OK) memset((*out)->storage->data, 0, (size_t)(*out)->storage->nbytes);
  return st;
}

cb_status cb_tensor_full(cb_tensor **out, int ndim, const int64_t *shape,
                         cb_dtype dtype, double value) {
  cb_status st = cb_tensor_empty(out, ndim, shape, dtype);
  if (st == CB_OK) cb_tensor_fill_(*out, value);
  return st;
}

cb_status cb_tensor_scalar(cb_tensor **out, double value, cb_dtype dtype) {
  return cb_tensor_full(out, 0, NULL, dtype, value);
}

cb_status cb_tensor_arange(cb_tensor **out, double start, double end,
                           double step, cb_dtype dtype) {
  if (step == 0 || !isfinite(step) || !isfinite(start) || !isfinite(end))
    return cb_fail(CB_EINVAL, "arange: step must be finite and non-zero, bounds finite");
  double count = ceil((end - start) / step);
  if (count < 0) count = 0;
  if (count > 1e12) return cb_fail(CB_EINVAL, "arange: too many elements (%.0f)", count);
  int64_t n = (int64_t)count;
  cb_status st = cb_tensor_empty(out, 1, &n, dtype);
  if (st != CB_OK) return st;
  char *p = (*out)->storage->data;
  int64_t esize = cb_dtype_size(dtype);
  for (int64_t i = 0; i < n; i++) cb_store(p + i * esize, dtype, start + (double)i * step);
  return CB_OK;
}

/* Dims from the largest stride to the smallest (stable: ties keep order). */
static void dims_by_stride(const cb_tensor *t, int *order) {
  for (int d = 0; d < t->ndim; d++) order[d] = d;
  for (int i = 1; i < t->ndim; i++)
    for (int j = i; j > 0 && t->stride[order[j]] > t->stride[order[j - 1]]; j--) {
      int tmp = order[j];
      order[j] = order[j - 1];
      order[j - 1] = tmp;
    }
}

bool cb_tensor_is_dense(const cb_tensor *t) {
  int order[CB_MAX_DIMS];
  dims_by_stride(t, order);
  /* dense iff the strides are those of a contiguous tensor in that order */
  int64_t expected = 1;
  for (int i = t->ndim - 1; i >= 0; i--) {
    int d = order[i];
    if (t->shape[d] != 1 && t->stride[d] != expected) return false;
    expected *= t->shape[d];
  }
  return true;
}

cb_status cb_tensor_empty_same_layout(cb_tensor **out, const cb_tensor *like, cb_dtype dtype) {
  int order[CB_MAX_DIMS];
  dims_by_stride(like, order);
  cb_status st = cb_tensor_empty(out, like->ndim, like->shape, dtype);
  if (st != CB_OK || !cb_tensor_is_dense(like)) return st;
  int64_t expected = 1;
  for (int i = like->ndim - 1; i >= 0; i--) {
    (*out)->stride[order[i]] = expected;
    expected *= like->shape[order[i]];
  }
  return CB_OK;
}

cb_layout cb_image_layout(const cb_tensor *t) {
  if (t->ndim != 4 || !cb_tensor_is_dense(t)) return CB_LAYOUT_STRIDED;
  if (cb_tensor_is_contiguous(t)) return CB_LAYOUT_NCHW;
  const int64_t *shape = t->shape, *stride = t->stride, plane = shape[2] * shape[3];
  bool planes = (shape[3] == 1 || stride[3] == 1) && (shape[2] == 1 || stride[2] == shape[3]);
  bool images_inner = shape[0] == 1 || stride[0] == plane;
  bool channels_outer = shape[1] == 1 || stride[1] == shape[0] * plane;
  return planes && images_inner && channels_outer ? CB_LAYOUT_CNHW : CB_LAYOUT_STRIDED;
}

cb_status cb_tensor_empty_images(cb_tensor **out, int64_t n, int64_t c, int64_t h, int64_t w,
                                 cb_dtype dtype, cb_layout layout) {
  if (layout != CB_LAYOUT_CNHW) return cb_tensor_empty(out, 4, (int64_t[]){n, c, h, w}, dtype);
  cb_tensor *channel_major;
  cb_status st = cb_tensor_empty(&channel_major, 4, (int64_t[]){c, n, h, w}, dtype);
  if (st != CB_OK) return st;
  st = cb_tensor_permute(out, channel_major, (int[]){1, 0, 2, 3});
  cb_tensor_release(channel_major);
  return st;
}

cb_status cb_tensor_empty_images_like(cb_tensor **out, const cb_tensor *like, int64_t h, int64_t w,
                                      cb_dtype dtype) {
  cb_layout layout = cb_image_layout(like) == CB_LAYOUT_CNHW ? CB_LAYOUT_CNHW : CB_LAYOUT_NCHW;
  return cb_tensor_empty_images(out, like->shape[0], like->shape[1], h, w, dtype, layout);
}

cb_tensor *cb_tensor_retain(cb_tensor *t) {
  if (t) atomic_fetch_add(&t->refcount, 1);
  return t;
}

void cb_tensor_release(cb_tensor *t) {
  if (t && atomic_fetch_sub(&t->refcount, 1) == 1) {
    if (t->autograd) t->autograd_destroy(t->autograd);
    storage_release(t->storage);
    free(t);
  }
}

cb_status cb_release_on_error(cb_status st, cb_tensor **out) {
  if (st != CB_OK) {
    cb_tensor_release(*out);
    *out = NULL;
  }
  return st;
}

void cb_tensor_bump_version(cb_tensor *t) { atomic_fetch_add(&t->storage->version, 1); }

/* ---- queries ---- */

int64_t cb_tensor_numel(const cb_tensor *t) {
  int64_t n = 1;
  for (int d = 0; d < t->ndim; d++) {
    if (t->shape[d] == 0) return 0;
    n *= t->shape[d]; /* bounded by CB_MAX_NUMEL: every shape was checked */
  }
  return n;
}

bool cb_tensor_is_contiguous(const cb_tensor *t) {
  int64_t expected = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] == 1) continue;
    if (t->stride[d] != expected) return false;
    expected *= t->shape[d];
  }
  return true;
}

void *cb_tensor_data(const cb_tensor *t) {
  return (char *)t->storage->data + t->offset * cb_dtype_size(t->dtype);
}

static int64_t element_offset(const cb_tensor *t, const int64_t *index) {
  int64_t off = 0;
  for (int d = 0; d < t->ndim; d++) off += index[d] * t->stride[d];
  return off;
}

int64_t cb_tensor_get_int64(const cb_tensor *t, const int64_t *index) {
  const char *p = (const char *)cb_tensor_data(t) + element_offset(t, index) * cb_dtype_size(t->dtype);
  return t->dtype == CB_INT64 ? *(const int64_t *)p : double_to_int64(cb_load(p, t->dtype));
}

double cb_tensor_get(const cb_tensor *t, const int64_t *index) {
  char *p = cb_tensor_data(t);
  return cb_load(p + element_offset(t, index) * cb_dtype_size(t->dtype), t->dtype);
}

void cb_tensor_set(cb_tensor *t, const int64_t *index, double value) {
  char *p = cb_tensor_data(t);
  cb_store(p + element_offset(t, index) * cb_dtype_size(t->dtype), t->dtype, value);
}

const char *cb_shape_str(char *buf, int64_t size, int ndim, const int64_t *shape) {
  int64_t used = snprintf(buf, (size_t)size, "{");
  for (int d = 0; d < ndim && used < size; d++)
    used += snprintf(buf + used, (size_t)(size - used), d ? ", %lld" : "%lld",
                     (long long)shape[d]);
  if (used < size) snprintf(buf + used, (size_t)(size - used), "}");
  return buf;
}

bool cb_same_shape(const cb_tensor *a, const cb_tensor *b) {
  if (a->ndim != b->ndim) return false;
  for (int d = 0; d < a->ndim; d++)
    if (a->shape[d] != b->shape[d]) return false;
  return true;
}

cb_status cb_wrap_dim(const char *op, int *dim, int ndim) {
  int n = ndim > 0 ? ndim : 1;
  if (*dim < -n || *dim >= n) /* dims are reported 1-based, as Lua code sees them */
    return cb_fail(CB_ERANGE, "%s: dim %d out of range for a %d-d tensor (expected 1..%d "
                   "or -%d..-1)", op, *dim >= 0 ? *dim + 1 : *dim, ndim, n, n);
  if (*dim < 0) *dim += n;
  return CB_OK;
}

/* ---- views ---- */

/* Infers a -1 entry of shape from numel. */
static cb_status infer_shape(const char *op, int ndim, const int64_t *shape,
                             int64_t numel, int64_t *out) {
  if (ndim > CB_MAX_DIMS)
    return cb_fail(CB_EINVAL, "%s: %d dims requested, at most %d are supported",
                   op, ndim, CB_MAX_DIMS);
  int infer = -1;
  int64_t known = 1;
  for (int d = 0; d < ndim; d++) {
    out[d] = shape[d];
    if (shape[d] == -1) {
      if (infer >= 0) return cb_fail(CB_EINVAL, "%s: only one size may be -1", op);
      infer = d;
    } else if (shape[d] < 0) {
      return cb_fail(CB_EINVAL, "%s: negative size %lld in dim %d", op,
                     (long long)shape[d], d + 1);
    } else if (cb_mul_overflows(known, shape[d], &known) || known > CB_MAX_NUMEL) {
      return too_many_elements(op, ndim, shape);
    }
  }
  if (infer < 0) {
    int64_t total;
    cb_status st = cb_check_shape(op, ndim, out, &total);
    if (st != CB_OK) return st;
  }
  if (infer >= 0) {
    if (known == 0 || numel % known != 0)
      return cb_fail(CB_ESHAPE, "%s: cannot infer size -1: %lld elements do not "
                     "divide into blocks of %lld", op, (long long)numel, (long long)known);
    out[infer] = numel / known;
    known *= out[infer];
  }
  if (known != numel) {
    char buf[128];
    return cb_fail(CB_ESHAPE, "%s: shape %s does not hold %lld elements", op,
                   cb_shape_str(buf, sizeof buf, ndim, out), (long long)numel);
  }
  return CB_OK;
}

/* Strides for viewing t as new_shape without copying, if possible (the
 * algorithm of NumPy's _attempt_nocopy_reshape, also used by PyTorch). */
static bool view_strides(const cb_tensor *t, int ndim, const int64_t *shape,
                         int64_t *stride) {
  int64_t numel = cb_tensor_numel(t);
  if (numel == 0 || t->ndim == 0) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
      stride[d] = s;
      s *= shape[d] > 0 ? shape[d] : 1;
    }
    return true;
  }
  int view_d = ndim - 1;
  int64_t chunk_base_stride = t->stride[t->ndim - 1];
  int64_t tensor_numel = 1, view_numel = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    tensor_numel *= t->shape[d];
    if (d == 0 || (t->shape[d - 1] != 1 &&
                   t->stride[d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        stride[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        view_d--;
      }
      if (view_numel != tensor_numel) return false;
      if (d > 0) {
        chunk_base_stride = t->stride[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  return view_d == -1;
}

cb_status cb_tensor_view(cb_tensor **out, const cb_tensor *t, int ndim,
                  const int64_t *shape) {
  int64_t new_shape[CB_MAX_DIMS], new_stride[CB_MAX_DIMS];
  cb_status st = infer_shape("view", ndim, shape, cb_tensor_numel(t), new_shape);
  if (st != CB_OK) return st;
  if (!view_strides(t, ndim, new_shape, new_stride)) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "view: a tensor of shape %s with these strides cannot "
                   "be viewed as %s without a copy (use reshape or contiguous)",
                   cb_shape_str(a, 128, t->ndim, t->shape),
                   cb_shape_str(b, 128, ndim, new_shape));
  }
  st = cb_tensor_alias(out, t);
  if (st != CB_OK) return st;
  (*out)->ndim = ndim;
  memcpy((*out)->shape, new_shape, sizeof(int64_t) * (size_t)ndim);
  memcpy((*out)->stride, new_stride, sizeof(int64_t) * (size_t)ndim);
  return CB_OK;
}

cb_status cb_tensor_reshape(cb_tensor **out, const cb_tensor *t, int ndim,
                     const int64_t *shape) {
  int64_t new_shape[CB_MAX_DIMS], new_stride[CB_MAX_DIMS];
  cb_status st = infer_shape("reshape", ndim, shape, cb_tensor_numel(t), new_shape);
  if (st != CB_OK) return st;
  if (view_strides(t, ndim, new_shape, new_stride)) return cb_tensor_view(out, t, ndim, new_shape);
  cb_tensor *copy;
  st = cb_tensor_contiguous(&copy, t);
  if (st != CB_OK) return st;
  st = cb_tensor_view(out, copy, ndim, new_shape);
  cb_tensor_release(copy);
  return st;
}

cb_status cb_tensor_transpose(cb_tensor **out, const cb_tensor *t, int dim0, int dim1) {
  cb_status st;
  if ((st = cb_wrap_dim("transpose", &dim0, t->ndim)) != CB_OK ||
      (st = cb_wrap_dim("transpose", &dim1, t->ndim)) != CB_OK)
    return st;
  if ((st = cb_tensor_alias(out, t)) != CB_OK) return st;
  if (t->ndim == 0) return CB_OK;
  cb_tensor *v = *out;
  int64_t s = v->shape[dim0];
  v->shape[dim0] = v->shape[dim1];
  v->shape[dim1] = s;
  s = v->stride[dim0];
  v->stride[dim0] = v->stride[dim1];
  v->stride[dim1] = s;
  return CB_OK;
}

cb_status cb_tensor_permute(cb_tensor **out, const cb_tensor *t, const int *dims) {
  bool seen[CB_MAX_DIMS] = {false};
  int wrapped[CB_MAX_DIMS];
  for (int d = 0; d < t->ndim; d++) {
    wrapped[d] = dims[d];
    cb_status st = cb_wrap_dim("permute", &wrapped[d], t->ndim);
    if (st != CB_OK) return st;
    if (seen[wrapped[d]])
      return cb_fail(CB_EINVAL, "permute: dim %d appears twice", wrapped[d] + 1);
    seen[wrapped[d]] = true;
  }
  cb_status st = cb_tensor_alias(out, t);
  if (st != CB_OK) return st;
  for (int d = 0; d < t->ndim; d++) {
    (*out)->shape[d] = t->shape[wrapped[d]];
    (*out)->stride[d] = t->stride[wrapped[d]];
  }
  return CB_OK;
}

cb_status cb_tensor_narrow(cb_tensor **out, const cb_tensor *t, int dim,
                    int64_t start, int64_t length) {
  if (t->ndim == 0) return cb_fail(CB_EINVAL, "narrow: cannot narrow a 0-d tensor");
  cb_status st = cb_wrap_dim("narrow", &dim, t->ndim);
  if (st != CB_OK) return st;
  if (start < 0 || length < 0 || start > t->shape[dim] - length)
    return cb_fail(CB_ERANGE, "narrow: %lld elements from position %lld out of range for "
                   "dim %d of size %lld", (long long)length, (long long)start + 1, dim + 1,
                   (long long)t->shape[dim]);
  if ((st = cb_tensor_alias(out, t)) != CB_OK) return st;
  (*out)->offset += start * t->stride[dim];
  (*out)->shape[dim] = length;
  return CB_OK;
}

cb_status cb_tensor_select(cb_tensor **out, const cb_tensor *t, int dim, int64_t index) {
  if (t->ndim == 0) return cb_fail(CB_EINVAL, "select: cannot index a 0-d tensor");
  cb_status st = cb_wrap_dim("select", &dim, t->ndim);
  if (st != CB_OK) return st;
  if (index < 0 || index >= t->shape[dim])
    return cb_fail(CB_ERANGE, "index %lld out of range for dim %d of size %lld",
                   (long long)index + 1, dim + 1, (long long)t->shape[dim]);
  if ((st = cb_tensor_alias(out, t)) != CB_OK) return st;
  cb_tensor *v = *out;
  v->offset += index * t->stride[dim];
  for (int d = dim; d < t->ndim - 1; d++) {
    v->shape[d] = t->shape[d + 1];
    v->stride[d] = t->stride[d + 1];
  }
  v->ndim--;
  return CB_OK;
}

cb_status cb_tensor_slice(cb_tensor **out, const cb_tensor *t, int dim, int64_t start,
                   int64_t end, int64_t step) {
  if (t->ndim == 0) return cb_fail(CB_EINVAL, "slice: cannot slice a 0-d tensor");
  cb_status st = cb_wrap_dim("slice", &dim, t->ndim);
  if (st != CB_OK) return st;
  if (step <= 0) return cb_fail(CB_EINVAL, "slice: step must be positive, got %lld",
                                (long long)step);
  int64_t size = t->shape[dim];
  if (start < 0) start = 0;
  if (start > size) start = size;
  if (end > size) end = size;
  if (end < start) end = start;
  int64_t count = end > start ? (end - start - 1) / step + 1 : 0, stride;
  /* one element needs no stride; saturate so a huge step cannot overflow it */
  if (count <= 1 || cb_mul_overflows(t->stride[dim], step, &stride)) stride = t->stride[dim];
  if ((st = cb_tensor_alias(out, t)) != CB_OK) return st;
  (*out)->offset += start * t->stride[dim];
  (*out)->shape[dim] = count;
  (*out)->stride[dim] = stride;
  return CB_OK;
}

cb_status cb_tensor_expand(cb_tensor **out, const cb_tensor *t, int ndim,
                    const int64_t *shape) {
  if (ndim < t->ndim || ndim > CB_MAX_DIMS) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "expand: cannot expand shape %s to %s",
                   cb_shape_str(a, 128, t->ndim, t->shape), cb_shape_str(b, 128, ndim, shape));
  }
  int64_t new_shape[CB_MAX_DIMS], new_stride[CB_MAX_DIMS];
  int lead = ndim - t->ndim;
  for (int d = 0; d < ndim; d++) {
    int td = d - lead;
    int64_t want = shape[d];
    if (td < 0) {
      if (want < 0) return cb_fail(CB_EINVAL, "expand: size -1 is not allowed in a new leading dim");
      new_shape[d] = want;
      new_stride[d] = 0;
    } else if (want == -1 || want == t->shape[td]) {
      new_shape[d] = t->shape[td];
      new_stride[d] = t->stride[td];
    } else if (t->shape[td] == 1 && want >= 0) {
      new_shape[d] = want;
      new_stride[d] = 0;
    } else {
      char a[128], b[128];
      return cb_fail(CB_ESHAPE, "expand: cannot expand shape %s to %s (dim %d has size %lld)",
                     cb_shape_str(a, 128, t->ndim, t->shape), cb_shape_str(b, 128, ndim, shape),
                     td + 1, (long long)t->shape[td]);
    }
  }
  int64_t numel;
  cb_status st = cb_check_shape("expand", ndim, new_shape, &numel);
  if (st != CB_OK) return st;
  if ((st = cb_tensor_alias(out, t)) != CB_OK) return st;
  (*out)->ndim = ndim;
  memcpy((*out)->shape, new_shape, sizeof(int64_t) * (size_t)ndim);
  memcpy((*out)->stride, new_stride, sizeof(int64_t) * (size_t)ndim);
  return CB_OK;
}

/* Drops the size-1 dims that drop[] marks. */
static cb_status squeeze_dims(cb_tensor **out, const cb_tensor *t, const bool *drop) {
  cb_status st = cb_tensor_alias(out, t);
  if (st != CB_OK) return st;
  cb_tensor *v = *out;
  int n = 0;
  for (int d = 0; d < t->ndim; d++) {
    if (drop[d] && t->shape[d] == 1) continue;
    v->shape[n] = t->shape[d];
    v->stride[n] = t->stride[d];
    n++;
  }
  v->ndim = n;
  return CB_OK;
}

cb_status cb_tensor_squeeze(cb_tensor **out, const cb_tensor *t, int dim) {
  bool drop[CB_MAX_DIMS] = {false};
  if (t->ndim > 0) {
    cb_status st = cb_wrap_dim("squeeze", &dim, t->ndim);
    if (st != CB_OK) return st;
    drop[dim] = true;
  }
  return squeeze_dims(out, t, drop);
}

cb_status cb_tensor_squeeze_all(cb_tensor **out, const cb_tensor *t) {
  bool drop[CB_MAX_DIMS];
  for (int d = 0; d < CB_MAX_DIMS; d++) drop[d] = true;
  return squeeze_dims(out, t, drop);
}

cb_status cb_tensor_unsqueeze(cb_tensor **out, const cb_tensor *t, int dim) {
  if (t->ndim >= CB_MAX_DIMS)
    return cb_fail(CB_EINVAL, "unsqueeze: a tensor has at most %d dims", CB_MAX_DIMS);
  cb_status st = cb_wrap_dim("unsqueeze", &dim, t->ndim + 1);
  if (st != CB_OK) return st;
  if ((st = cb_tensor_alias(out, t)) != CB_OK) return st;
  cb_tensor *v = *out;
  for (int d = t->ndim; d > dim; d--) {
    v->shape[d] = t->shape[d - 1];
    v->stride[d] = t->stride[d - 1];
  }
  v->shape[dim] = 1;
  v->stride[dim] = dim < t->ndim ? t->shape[dim] * t->stride[dim] : 1;
  v->ndim++;
  return CB_OK;
}

cb_status cb_tensor_flatten(cb_tensor **out, const cb_tensor *t, int start_dim, int end_dim) {
  if (t->ndim == 0) {
    int64_t one = 1;
    return cb_tensor_reshape(out, t, 1, &one);
  }
  cb_status st;
  if ((st = cb_wrap_dim("flatten", &start_dim, t->ndim)) != CB_OK ||
      (st = cb_wrap_dim("flatten", &end_dim, t->ndim)) != CB_OK)
    return st;
  if (start_dim > end_dim)
    return cb_fail(CB_EINVAL, "flatten: start dim %d is after end dim %d",
                   start_dim + 1, end_dim + 1);
  int64_t shape[CB_MAX_DIMS];
  int n = 0;
  for (int d = 0; d < start_dim; d++) shape[n++] = t->shape[d];
  int64_t merged = 1;
  for (int d = start_dim; d <= end_dim; d++) merged *= t->shape[d];
  shape[n++] = merged;
  for (int d = end_dim + 1; d < t->ndim; d++) shape[n++] = t->shape[d];
  return cb_tensor_reshape(out, t, n, shape);
}

/* ---- copies ---- */

bool cb_tensor_overlaps(const cb_tensor *t) {
  if (cb_tensor_numel(t) == 0) return false;
  for (int d = 0; d < t->ndim; d++)
    if (t->stride[d] == 0 && t->shape[d] > 1) return true;
  return false;
}

static void copy_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const cb_dtype *types = ctx; /* [dst, src] */
  cb_dtype dt = types[0], st = types[1];
  if (dt == st) {
    int64_t esize = cb_dtype_size(dt);
    if (s[0] == esize && s[1] == esize) {
      memcpy(p[0], p[1], (size_t)(n * esize));
      return;
    }
    if (dt == CB_FLOAT32) {
      for (int64_t i = 0; i < n; i++)
        *(float *)(p[0] + i * s[0]) = *(const float *)(p[1] + i * s[1]);
      return;
    }
  }
  if (dt == CB_FLOAT32 && st == CB_UINT8) { /* images */
    for (int64_t i = 0; i < n; i++)
      *(float *)(p[0] + i * s[0]) = *(const uint8_t *)(p[1] + i * s[1]);
    return;
  }
  for (int64_t i = 0; i < n; i++)
    cb_store(p[0] + i * s[0], dt, cb_load(p[1] + i * s[1], st));
}

cb_status cb_tensor_copy_(cb_tensor *dst, const cb_tensor *src) {
  const cb_tensor *ops[2] = {dst, src};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_status st = cb_broadcast_shapes("copy", 2, ops, &ndim, shape);
  if (st != CB_OK) return st;
  bool fits = ndim == dst->ndim;
  for (int d = 0; fits && d < ndim; d++) fits = shape[d] == dst->shape[d];
  if (!fits) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "copy: source of shape %s does not fit destination %s",
                   cb_shape_str(a, 128, src->ndim, src->shape),
                   cb_shape_str(b, 128, dst->ndim, dst->shape));
  }
  if (cb_tensor_overlaps(dst))
    return cb_fail(CB_EINVAL, "copy: destination is an expanded view whose elements "
                   "overlap; clone it first");
  cb_tensor_bump_version(dst);
  cb_iter it;
  cb_iter_init(&it, 2, ops, dst->ndim, dst->shape);
  cb_dtype types[2] = {dst->dtype, src->dtype};
  cb_iter_run(&it, copy_row, types);
  return CB_OK;
}

/* One element's bytes, repeated by fill_row. */
typedef struct {
  char bytes[8];
  int64_t size;
} fill_ctx;

static void fill_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const fill_ctx *fill = ctx;
  if (fill->size == 4) {
    float v;
    memcpy(&v, fill->bytes, 4);
    for (int64_t i = 0; i < n; i++) *(float *)(p[0] + i * s[0]) = v;
    return;
  }
  for (int64_t i = 0; i < n; i++) memcpy(p[0] + i * s[0], fill->bytes, (size_t)fill->size);
}

static cb_status fill_bytes(cb_tensor *dst, const fill_ctx *ctx) {
  if (cb_tensor_overlaps(dst))
    return cb_fail(CB_EINVAL, "fill: destination is an expanded view whose elements "
                   "overlap; clone it first");
  cb_tensor_bump_version(dst);
  const cb_tensor *ops[1] = {dst};
  cb_iter it;
  cb_iter_init(&it, 1, ops, dst->ndim, dst->shape);
  cb_iter_run(&it, fill_row, (void *)ctx);
  return CB_OK;
}

cb_status cb_tensor_fill_(cb_tensor *dst, double value) {
  fill_ctx ctx = {.size = cb_dtype_size(dst->dtype)};
  cb_store(ctx.bytes, dst->dtype, value);
  return fill_bytes(dst, &ctx);
}

cb_status cb_tensor_fill_int64_(cb_tensor *dst, int64_t value) {
  fill_ctx ctx = {.size = cb_dtype_size(dst->dtype)};
  cb_store_int64(ctx.bytes, dst->dtype, value);
  return fill_bytes(dst, &ctx);
}

cb_status cb_tensor_clone(cb_tensor **out, const cb_tensor *t) {
  cb_status st = cb_tensor_empty_same_layout(out, t, t->dtype);
  if (st != CB_OK) return st;
  return cb_release_on_error(cb_tensor_copy_(*out, t), out);
}

cb_status cb_tensor_contiguous(cb_tensor **out, const cb_tensor *t) {
  if (cb_tensor_is_contiguous(t)) {
    *out = cb_tensor_retain((cb_tensor *)t);
    return CB_OK;
  }
  cb_status st = cb_tensor_empty(out, t->ndim, t->shape, t->dtype);
  if (st != CB_OK) return st;
  return cb_release_on_error(cb_tensor_copy_(*out, t), out);
}

cb_status cb_tensor_to_dtype(cb_tensor **out, const cb_tensor *t, cb_dtype dtype) {
  if (t->dtype == dtype) {
    *out = cb_tensor_retain((cb_tensor *)t);
    return CB_OK;
  }
  cb_status st = cb_tensor_empty(out, t->ndim, t->shape, dtype);
  if (st != CB_OK) return st;
  st = cb_release_on_error(cb_tensor_copy_(*out, t), out);
  return st;
}
