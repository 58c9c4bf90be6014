/* Strided n-dimensional tensors over shared, reference-counted storage.
 *
 * A cb_tensor is a view: (storage, offset, shape, stride, dtype). Several
 * tensors may share one storage; views (transpose, narrow, expand, ...) never
 * copy. Offsets and strides count elements, not bytes. Dims are 0-based here;
 * the Lua binding converts from Lua's 1-based indices.
 *
 * Ownership: every function that hands out a cb_tensor* gives the caller one
 * reference; release it with cb_tensor_release(). On failure such a function
 * leaves *out NULL (the allocators clear it first, and cb_release_on_error
 * clears it after), so a caller may always release *out. */
#ifndef CB_TENSOR_H
#define CB_TENSOR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tensor/error.h"

#define CB_MAX_DIMS 8

typedef enum {
  CB_FLOAT32 = 0,
  CB_INT64 = 1, /* labels and indices */
  CB_UINT8 = 2, /* raw image bytes */
  CB_BOOL = 3   /* results of comparisons; one byte, 0 or 1 */
} cb_dtype;
#define CB_NUM_DTYPES 4

/* ---- checked size arithmetic ----
 * Sizes, strides and offsets come from users (Lua integers, file headers),
 * so every constructor, view and kernel-parameter path computes them through
 * these helpers: a product or sum that overflows, or an element count above
 * CB_MAX_NUMEL, is an error naming op, never a wrapped value. */
#define CB_MAX_NUMEL ((int64_t)1 << 48)

static inline bool cb_mul_overflows(int64_t a, int64_t b, int64_t *r) {
  return __builtin_mul_overflow(a, b, r);
}
static inline bool cb_add_overflows(int64_t a, int64_t b, int64_t *r) {
  return __builtin_add_overflow(a, b, r);
}
/* Checks ndim and every size (>= 0) and that the element count is at most
 * CB_MAX_NUMEL, counting a size of 0 as 1 (so an empty tensor's strides are
 * representable too); stores the element count in *numel. */
cb_status cb_check_shape(const char *op, int ndim, const int64_t *shape, int64_t *numel);
/* Output length of a sliding window (convolution, pooling) over `in`
 * elements: (in + 2 padding - dilation (kernel - 1) - 1) / stride + 1, with
 * kernel, stride, dilation >= 1 and padding >= 0 checked and every step
 * checked for overflow. A window larger than the padded input gives 0. */
cb_status cb_window_count(const char *op, int64_t in, int64_t kernel, int64_t stride,
                          int64_t padding, int64_t dilation, int64_t *out);

int64_t cb_dtype_size(cb_dtype dtype);
const char *cb_dtype_name(cb_dtype dtype);
/* Parses "float32"/"float", "int64"/"long", "uint8"/"byte", "bool". */
cb_status cb_dtype_parse(const char *name, cb_dtype *dtype);

typedef struct cb_storage {
  void *data;
  int64_t nbytes;
  atomic_int refcount;
  /* Bumped by every in-place write, so autograd can tell that a tensor it
   * saved for backward was modified since. */
  atomic_uint version;
} cb_storage;

/* Autograd's per-tensor state, defined by autograd.h (the layer above). The
 * tensor only owns it: destroy is autograd's function that frees it. */
struct cb_autograd_meta;
typedef void (*cb_meta_destroy_fn)(struct cb_autograd_meta *meta);

typedef struct cb_tensor {
  cb_storage *storage;
  int64_t offset; /* in elements */
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  int64_t stride[CB_MAX_DIMS]; /* in elements; 0 for expanded dims */
  cb_dtype dtype;
  atomic_int refcount;
  struct cb_autograd_meta *autograd; /* NULL: a plain tensor */
  cb_meta_destroy_fn autograd_destroy;
} cb_tensor;

/* Marks t's storage as written in place. */
void cb_tensor_bump_version(cb_tensor *t);

/* Bytes currently held by all live storages (what the Lua binding reports to
 * its garbage collector). */
int64_t cb_storage_live_bytes(void);

/* ---- life cycle ---- */
cb_status cb_tensor_empty(cb_tensor **out, int ndim, const int64_t *shape,
                          cb_dtype dtype);
cb_status cb_tensor_zeros(cb_tensor **out, int ndim, const int64_t *shape,
                          cb_dtype dtype);
cb_status cb_tensor_full(cb_tensor **out, int ndim, const int64_t *shape,
                         cb_dtype dtype, double value);
/* 0-d tensor holding one value. */
cb_status cb_tensor_scalar(cb_tensor **out, double value, cb_dtype dtype);
/* start, start+step, ... while < end (or > end for negative step). */
cb_status cb_tensor_arange(cb_tensor **out, double start, double end,
                           double step, cb_dtype dtype);
/* An empty tensor shaped like `like` with the same memory order of dims
 * (when like is dense, e.g. a permuted contiguous tensor), else contiguous.
 * Kernels use it so that outputs and gradients keep their inputs' layout. */
cb_status cb_tensor_empty_same_layout(cb_tensor **out, const cb_tensor *like, cb_dtype dtype);

/* ---- image layouts ----
 * A batch of images, N x C x H x W, lives in memory in one of two orders:
 *   CB_LAYOUT_NCHW  contiguous: image after image (PyTorch's default);
 *   CB_LAYOUT_CNHW  channel after channel: each channel's N x H x W block is
 *                   contiguous. conv2d writes its output this way (its GEMM
 *                   computes all images of one output channel as one row),
 *                   and reads its input and output gradient best this way.
 * Every image kernel (conv, batch norm, pooling, pointwise) reads both, and
 * writes its output in its input's layout (cb_tensor_empty_images with
 * cb_image_layout(x)), so a network stays CNHW from its first convolution to
 * its classifier and never pays for a transpose between layers. clone()
 * keeps the layout; contiguous() gives NCHW; a CNHW batch cannot be viewed
 * as N x (C*H*W) without a copy (reshape copies, view says so). */
typedef enum { CB_LAYOUT_NCHW, CB_LAYOUT_CNHW, CB_LAYOUT_STRIDED } cb_layout;

/* The layout of a 4-d tensor (NCHW when both fit, e.g. N = 1); STRIDED for
 * anything else. */
cb_layout cb_image_layout(const cb_tensor *t);
/* An empty n x c x h x w tensor in layout NCHW or CNHW. */
cb_status cb_tensor_empty_images(cb_tensor **out, int64_t n, int64_t c, int64_t h, int64_t w,
                                 cb_dtype dtype, cb_layout layout);
/* An empty batch of like's images and channels, h x w each, in like's layout
 * (CNHW stays CNHW; anything else gives NCHW): a pooling's output. */
cb_status cb_tensor_empty_images_like(cb_tensor **out, const cb_tensor *like, int64_t h, int64_t w,
                                      cb_dtype dtype);
cb_tensor *cb_tensor_retain(cb_tensor *t);
void cb_tensor_release(cb_tensor *t);
/* For functions that hand out *out: on failure releases it and clears the
 * pointer; returns st either way. */
cb_status cb_release_on_error(cb_status st, cb_tensor **out);

/* ---- queries ---- */
int64_t cb_tensor_numel(const cb_tensor *t);
bool cb_tensor_is_contiguous(const cb_tensor *t);
/* Some element is reachable at two indices (an expanded dim): such a
 * tensor cannot be written to. An empty tensor has nothing to overlap. */
bool cb_tensor_overlaps(const cb_tensor *t);
/* Its elements fill a block of memory without gaps or overlaps, in some
 * order of dims (a contiguous tensor, or a permutation of one). */
bool cb_tensor_is_dense(const cb_tensor *t);
/* Pointer to element 0 (storage data + offset). */
void *cb_tensor_data(const cb_tensor *t);
/* Reads / writes one element at a full index, converting through double. */
double cb_tensor_get(const cb_tensor *t, const int64_t *index);
void cb_tensor_set(cb_tensor *t, const int64_t *index, double value);
/* The same for int64 values, exact over the whole int64 range (a double
 * holds integers exactly only up to 2^53). Other dtypes convert. */
int64_t cb_tensor_get_int64(const cb_tensor *t, const int64_t *index);
void cb_store_int64(void *p, cb_dtype dtype, int64_t value);
/* Formats a shape as "{2, 3}" into buf. */
const char *cb_shape_str(char *buf, int64_t size, int ndim,
                         const int64_t *shape);
bool cb_same_shape(const cb_tensor *a, const cb_tensor *b);

/* Element read/write by byte address, converting through double. */
double cb_load(const void *p, cb_dtype dtype);
void cb_store(void *p, cb_dtype dtype, double value);

/* ---- views (share storage, never copy) ---- */
/* A new tensor struct with t's storage, shape and strides: the starting
 * point for views built by hand. */
cb_status cb_tensor_alias(cb_tensor **out, const cb_tensor *t);
/* shape may hold one -1, inferred from the element count. Needs strides
 * compatible with the new shape; cb_reshape copies when they are not. */
cb_status cb_tensor_view(cb_tensor **out, const cb_tensor *t, int ndim,
                  const int64_t *shape);
cb_status cb_tensor_reshape(cb_tensor **out, const cb_tensor *t, int ndim,
                     const int64_t *shape);
cb_status cb_tensor_transpose(cb_tensor **out, const cb_tensor *t, int dim0,
                       int dim1);
cb_status cb_tensor_permute(cb_tensor **out, const cb_tensor *t, const int *dims);
cb_status cb_tensor_narrow(cb_tensor **out, const cb_tensor *t, int dim,
                    int64_t start, int64_t length);
/* Removes dim, keeping element index at it. */
cb_status cb_tensor_select(cb_tensor **out, const cb_tensor *t, int dim,
                    int64_t index);
/* Elements start, start+step, ... < end along dim (step > 0). */
cb_status cb_tensor_slice(cb_tensor **out, const cb_tensor *t, int dim, int64_t start,
                   int64_t end, int64_t step);
/* Size-1 dims broadcast to any size (stride 0); -1 keeps a size. */
cb_status cb_tensor_expand(cb_tensor **out, const cb_tensor *t, int ndim,
                    const int64_t *shape);
/* Removes dim if it has size 1 (else the view is unchanged). */
cb_status cb_tensor_squeeze(cb_tensor **out, const cb_tensor *t, int dim);
/* Removes every size-1 dim. */
cb_status cb_tensor_squeeze_all(cb_tensor **out, const cb_tensor *t);
cb_status cb_tensor_unsqueeze(cb_tensor **out, const cb_tensor *t, int dim);
cb_status cb_tensor_flatten(cb_tensor **out, const cb_tensor *t, int start_dim,
                     int end_dim);

/* ---- copies ---- */
/* The same tensor if already contiguous (one more reference), else a
 * contiguous copy. */
cb_status cb_tensor_contiguous(cb_tensor **out, const cb_tensor *t);
/* A copy in the same memory order when t is dense (so a CNHW batch stays
 * CNHW, as PyTorch's preserve_format), else contiguous. */
cb_status cb_tensor_clone(cb_tensor **out, const cb_tensor *t);
/* Converts to dtype (a new reference to t when it already has it). */
cb_status cb_tensor_to_dtype(cb_tensor **out, const cb_tensor *t, cb_dtype dtype);
/* dst[...] = src, src broadcast to dst's shape, converting dtype. */
cb_status cb_tensor_copy_(cb_tensor *dst, const cb_tensor *src);
cb_status cb_tensor_fill_(cb_tensor *dst, double value);
/* fill_ with an exact int64 value (int64 tensors keep every bit). */
cb_status cb_tensor_fill_int64_(cb_tensor *dst, int64_t value);

/* Normalises a possibly negative dim for an ndim-dimensional tensor;
 * op names the operation in the error message. */
cb_status cb_wrap_dim(const char *op, int *dim, int ndim);

#endif
