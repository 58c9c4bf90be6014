#include "ops/views.h"

#include <string.h>

#include "autograd/autograd.h"
#include "ops/pointwise.h"
#include "ops/reduce.h"

/* Finishes an op: on success records node (name, backward) for out =
 * f(input); on failure releases out. Returns the node through *node. */
static cb_status finish(cb_status st, cb_tensor **out, const cb_tensor *input,
                        const char *name, cb_backward_fn backward, cb_node **node) {
  cb_node *recorded = NULL;
  if (node) *node = NULL;
  if (st != CB_OK) return st;
  st = cb_record(*out, name, backward, 1, &input, 0, NULL, &recorded);
  if (node) *node = recorded;
  return cb_release_on_error(st, out);
}

/* ---- shape changes: the gradient is reshaped back ---- */

static cb_status reshape_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  return cb_tensor_reshape(&grad_in[0], g, node->inputs[0].ndim, node->inputs[0].shape);
}

cb_status cb_view(cb_tensor **out, const cb_tensor *t, int ndim, const int64_t *shape) {
  return finish(cb_tensor_view(out, t, ndim, shape), out, t, "ViewBackward", reshape_backward,  NULL);
}

cb_status cb_reshape(cb_tensor **out, const cb_tensor *t, int ndim, const int64_t *shape) {
  return finish(cb_tensor_reshape(out, t, ndim, shape), out, t, "ReshapeBackward",
                reshape_backward,  NULL);
}

cb_status cb_flatten(cb_tensor **out, const cb_tensor *t, int start_dim, int end_dim) {
  return finish(cb_tensor_flatten(out, t, start_dim, end_dim), out, t, "FlattenBackward",
                reshape_backward,  NULL);
}

cb_status cb_squeeze(cb_tensor **out, const cb_tensor *t, int dim) {
  return finish(cb_tensor_squeeze(out, t, dim), out, t, "SqueezeBackward", reshape_backward,
                 NULL);
}

cb_status cb_squeeze_all(cb_tensor **out, const cb_tensor *t) {
  return finish(cb_tensor_squeeze_all(out, t), out, t, "SqueezeBackward", reshape_backward,
                 NULL);
}

cb_status cb_unsqueeze(cb_tensor **out, const cb_tensor *t, int dim) {
  return finish(cb_tensor_unsqueeze(out, t, dim), out, t, "UnsqueezeBackward",
                reshape_backward,  NULL);
}

/* ---- dim reorderings: the inverse reordering ---- */

typedef struct {
  int dim0, dim1;
} transpose_ctx;

static cb_status transpose_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const transpose_ctx *ctx = CB_NODE_CTX(node, transpose_ctx);
  return cb_tensor_transpose(&grad_in[0], g, ctx->dim0, ctx->dim1);
}

cb_status cb_transpose(cb_tensor **out, const cb_tensor *t, int dim0, int dim1) {
  cb_node *node;
  cb_status st = finish(cb_tensor_transpose(out, t, dim0, dim1), out, t, "TransposeBackward",
                        transpose_backward, &node);
  if (node) *CB_NODE_CTX(node, transpose_ctx) = (transpose_ctx){dim0, dim1};
  return st;
}

typedef struct {
  int dims[CB_MAX_DIMS]; /* non-negative */
} permute_ctx;

static cb_status permute_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  int inverse[CB_MAX_DIMS];
  const permute_ctx *ctx = CB_NODE_CTX(node, permute_ctx);
  for (int d = 0; d < g->ndim; d++) inverse[ctx->dims[d]] = d;
  return cb_tensor_permute(&grad_in[0], g, inverse);
}

cb_status cb_permute(cb_tensor **out, const cb_tensor *t, const int *dims) {
  cb_node *node;
  cb_status st = finish(cb_tensor_permute(out, t, dims), out, t, "PermuteBackward",
                        permute_backward, &node);
  for (int d = 0; node && d < t->ndim; d++)
    CB_NODE_CTX(node, permute_ctx)->dims[d] = dims[d] < 0 ? dims[d] + t->ndim : dims[d];
  return st;
}

/* ---- sub-regions: the gradient lands in a zero tensor's region, or is added
 * into the region of the input's gradient so far (an option-A shortcut's
 * subsampling: no input-sized zeros written) ---- */

typedef cb_status (*region_fn)(cb_tensor **out, const cb_tensor *t, cb_node *node);

static cb_status region_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in,
                                 region_fn region) {
  cb_tensor *zeros, *part;
  cb_tensor *so_far = cb_node_grad_so_far(node, 0);
  if (so_far) { /* g added into the input's gradient so far: no zeros written */
    cb_status st = region(&part, so_far, node);
    if (st == CB_OK) {
      st = cb_binary_into(part, CB_ADD, part, g);
      cb_tensor_release(part);
    }
    return st;
  }
  cb_status st = cb_tensor_zeros(&zeros, node->inputs[0].ndim, node->inputs[0].shape, g->dtype);
  if (st != CB_OK) return st;
  if ((st = region(&part, zeros, node)) == CB_OK) {
    st = cb_tensor_copy_(part, g);
    cb_tensor_release(part);
  }
  if (st == CB_OK) grad_in[0] = zeros;
  else cb_tensor_release(zeros);
  return st;
}

typedef struct {
  int dim;
  int64_t start, length;
} narrow_ctx;

static cb_status narrow_region(cb_tensor **out, const cb_tensor *t, cb_node *node) {
  const narrow_ctx *ctx = CB_NODE_CTX(node, narrow_ctx);
  return cb_tensor_narrow(out, t, ctx->dim, ctx->start, ctx->length);
}
static cb_status narrow_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  return region_backward(node, g, grad_in, narrow_region);
}

cb_status cb_narrow(cb_tensor **out, const cb_tensor *t, int dim, int64_t start, int64_t length) {
  cb_node *node;
  cb_status st = finish(cb_tensor_narrow(out, t, dim, start, length), out, t, "NarrowBackward",
                        narrow_backward, &node);
  if (node) *CB_NODE_CTX(node, narrow_ctx) = (narrow_ctx){dim, start, length};
  return st;
}

typedef struct {
  int dim;
  int64_t index;
} select_ctx;

static cb_status select_region(cb_tensor **out, const cb_tensor *t, cb_node *node) {
  const select_ctx *ctx = CB_NODE_CTX(node, select_ctx);
  return cb_tensor_select(out, t, ctx->dim, ctx->index);
}
static cb_status select_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  return region_backward(node, g, grad_in, select_region);
}

cb_status cb_select(cb_tensor **out, const cb_tensor *t, int dim, int64_t index) {
  cb_node *node;
  cb_status st = finish(cb_tensor_select(out, t, dim, index), out, t, "SelectBackward",
                        select_backward, &node);
  if (node) *CB_NODE_CTX(node, select_ctx) = (select_ctx){dim, index};
  return st;
}

typedef struct {
  int dim;
  int64_t start, end, step;
} slice_ctx;

static cb_status slice_region(cb_tensor **out, const cb_tensor *t, cb_node *node) {
  const slice_ctx *ctx = CB_NODE_CTX(node, slice_ctx);
  return cb_tensor_slice(out, t, ctx->dim, ctx->start, ctx->end, ctx->step);
}
static cb_status slice_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  return region_backward(node, g, grad_in, slice_region);
}

cb_status cb_slice(cb_tensor **out, const cb_tensor *t, int dim, int64_t start, int64_t end,
                   int64_t step) {
  cb_node *node;
  cb_status st = finish(cb_tensor_slice(out, t, dim, start, end, step), out, t, "SliceBackward",
                        slice_backward, &node);
  if (node) *CB_NODE_CTX(node, slice_ctx) = (slice_ctx){dim, start, end, step};
  return st;
}

/* ---- broadcasting: the gradient is summed back ---- */

static cb_status expand_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  return cb_sum_to_shape(&grad_in[0], g, node->inputs[0].ndim, node->inputs[0].shape);
}

cb_status cb_expand(cb_tensor **out, const cb_tensor *t, int ndim, const int64_t *shape) {
  return finish(cb_tensor_expand(out, t, ndim, shape), out, t, "ExpandBackward", expand_backward,
                 NULL);
}

/* ---- copies: the gradient passes through ---- */

static cb_status identity_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  (void)node;
  grad_in[0] = cb_tensor_retain((cb_tensor *)g);
  return CB_OK;
}

cb_status cb_contiguous(cb_tensor **out, const cb_tensor *t) {
  if (cb_tensor_is_contiguous(t)) { /* the same tensor, graph and all */
    *out = cb_tensor_retain((cb_tensor *)t);
    return CB_OK;
  }
  return finish(cb_tensor_contiguous(out, t), out, t, "ContiguousBackward", identity_backward,
                NULL);
}

cb_status cb_clone(cb_tensor **out, const cb_tensor *t) {
  return finish(cb_tensor_clone(out, t), out, t, "CloneBackward", identity_backward,  NULL);
}

cb_status cb_to_dtype(cb_tensor **out, const cb_tensor *t, cb_dtype dtype) {
  if (t->dtype == dtype) {
    *out = cb_tensor_retain((cb_tensor *)t);
    return CB_OK;
  }
  cb_status st = cb_tensor_to_dtype(out, t, dtype);
  if (st != CB_OK || dtype != CB_FLOAT32) return st; /* integer results carry no gradient */
  return finish(st, out, t, "ToBackward", identity_backward,  NULL);
}
