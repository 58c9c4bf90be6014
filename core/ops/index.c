#include "ops/index.h"

#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "tensor/iter.h"
#include "ops/reduce.h"
#include "ops/views.h"

static cb_status check_index_tensor(const char *op, const cb_tensor *index) {
  if (index->dtype != CB_INT64)
    return cb_fail(CB_ETYPE, "%s: index must be an int64 tensor, got %s", op,
                   cb_dtype_name(index->dtype));
  return CB_OK;
}

static cb_status index_error(const char *op, int64_t value, int dim, int64_t size) {
  return cb_fail(CB_ERANGE, "%s: index %lld out of range for dim %d of size %lld "
                 "(index tensors hold 0-based positions)", op, (long long)value, dim + 1,
                 (long long)size);
}

/* The gradient of index_select adds each selected slice back at its index:
 * a scatter_add with the index broadcast along the other dims. */
static cb_status index_select_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *idx;
  cb_status st = cb_node_saved(node, 0, &idx);
  if (st != CB_OK) return st;
  int dim = CB_NODE_CTX(node, cb_dim_ctx)->dim;
  int64_t shape[CB_MAX_DIMS];
  for (int d = 0; d < g->ndim; d++) shape[d] = d == dim ? g->shape[d] : 1;
  cb_tensor *v = NULL, *e = NULL;
  if ((st = cb_tensor_view(&v, idx, g->ndim, shape)) == CB_OK &&
      (st = cb_tensor_expand(&e, v, g->ndim, g->shape)) == CB_OK &&
      (st = cb_tensor_zeros(&grad_in[0], node->inputs[0].ndim, node->inputs[0].shape,
                            CB_FLOAT32)) == CB_OK)
    st = cb_scatter_add_(grad_in[0], dim, e, g);
  cb_tensor_release(v);
  cb_tensor_release(e);
  return st;
}

cb_status cb_index_select(cb_tensor **out, const cb_tensor *a, int dim, const cb_tensor *index) {
  cb_status st = check_index_tensor("index_select", index);
  if (st != CB_OK) return st;
  if (index->ndim > 1)
    return cb_fail(CB_ESHAPE, "index_select: index must be 1-D, got %d dims", index->ndim);
  if (a->ndim == 0) return cb_fail(CB_EINVAL, "index_select: cannot index a 0-d tensor");
  if ((st = cb_wrap_dim("index_select", &dim, a->ndim)) != CB_OK) return st;
  cb_tensor *src = NULL, *idx = NULL;
  if ((st = cb_tensor_contiguous(&src, a)) != CB_OK) return st;
  if ((st = cb_tensor_contiguous(&idx, index)) != CB_OK) goto done;
  int64_t count = cb_tensor_numel(idx), size = a->shape[dim];
  const int64_t *ip = cb_tensor_data(idx);
  for (int64_t i = 0; i < count; i++)
    if (ip[i] < 0 || ip[i] >= size) {
      st = index_error("index_select", ip[i], dim, size);
      goto done;
    }
  int64_t shape[CB_MAX_DIMS];
  memcpy(shape, a->shape, sizeof shape);
  shape[dim] = count;
  if ((st = cb_tensor_empty(out, a->ndim, shape, a->dtype)) != CB_OK) goto done;
  /* a as (outer, size, inner) blocks of contiguous bytes */
  int64_t outer = 1, inner = cb_dtype_size(a->dtype);
  for (int d = 0; d < dim; d++) outer *= a->shape[d];
  for (int d = dim + 1; d < a->ndim; d++) inner *= a->shape[d];
  const char *from = cb_tensor_data(src);
  char *to = cb_tensor_data(*out);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < count; i++)
      memcpy(to + (o * count + i) * inner, from + (o * size + ip[i]) * inner, (size_t)inner);
  if (a->dtype == CB_FLOAT32) {
    cb_node *node;
    const cb_tensor *save = idx;
    st = cb_release_on_error(
        cb_record(*out, "IndexSelectBackward", index_select_backward, 1, &a, 1, &save, &node), out);
    if (node) CB_NODE_CTX(node, cb_dim_ctx)->dim = dim;
  }
done:
  cb_tensor_release(src);
  cb_tensor_release(idx);
  return st;
}

/* A view of t with index's shape and t's strides, except 0 along dim: its
 * element at i points at t's element with index i and position 0 along dim. */
static cb_status along_dim_view(const char *op, const char *what, cb_tensor **view,
                                const cb_tensor *t, const cb_tensor *index, int dim,
                                bool keep_dim_stride) {
  if (t->ndim != index->ndim)
    return cb_fail(CB_ESHAPE, "%s: index has %d dims, %s has %d", op, index->ndim, what, t->ndim);
  for (int d = 0; d < t->ndim; d++)
    if (index->shape[d] > t->shape[d] && (d != dim || keep_dim_stride)) {
      char x[128], y[128];
      return cb_fail(CB_ESHAPE, "%s: index of shape %s is larger than %s of shape %s in dim %d",
                     op, cb_shape_str(x, 128, index->ndim, index->shape), what,
                     cb_shape_str(y, 128, t->ndim, t->shape), d + 1);
    }
  cb_tensor *v;
  cb_status st = cb_tensor_alias(&v, t);
  if (st != CB_OK) return st;
  for (int d = 0; d < t->ndim; d++) {
    v->shape[d] = index->shape[d];
    if (d == dim && !keep_dim_stride) v->stride[d] = 0;
  }
  *view = v;
  return CB_OK;
}

typedef struct {
  cb_dtype dtype;
  int64_t dim_stride; /* bytes between positions along dim in the source/target */
} along_ctx; /* indices were checked before the loop runs */

/* operands: out, index, a-view */
static void gather_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  along_ctx *c = ctx;
  int64_t esize = cb_dtype_size(c->dtype);
  for (int64_t i = 0; i < n; i++) {
    int64_t k = *(const int64_t *)(p[1] + i * s[1]);
    memcpy(p[0] + i * s[0], p[2] + i * s[2] + k * c->dim_stride, (size_t)esize);
  }
}

static cb_status check_indices(const char *op, const cb_tensor *index, int dim, int64_t size) {
  /* Checked before any write so that a bad index leaves no partial result. */
  cb_tensor *idx;
  cb_status st = cb_tensor_contiguous(&idx, index);
  if (st != CB_OK) return st;
  const int64_t *ip = cb_tensor_data(idx);
  for (int64_t i = 0, n = cb_tensor_numel(idx); i < n && st == CB_OK; i++)
    if (ip[i] < 0 || ip[i] >= size) st = index_error(op, ip[i], dim, size);
  cb_tensor_release(idx);
  return st;
}

static cb_status gather_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *idx;
  cb_status st = cb_node_saved(node, 0, &idx);
  if (st == CB_OK)
    st = cb_tensor_zeros(&grad_in[0], node->inputs[0].ndim, node->inputs[0].shape, CB_FLOAT32);
  if (st == CB_OK) st = cb_scatter_add_(grad_in[0], CB_NODE_CTX(node, cb_dim_ctx)->dim, idx, g);
  return st;
}

cb_status cb_gather(cb_tensor **out, const cb_tensor *a, int dim, const cb_tensor *index) {
  cb_status st = check_index_tensor("gather", index);
  if (st != CB_OK) return st;
  if (a->ndim == 0) return cb_fail(CB_EINVAL, "gather: cannot index a 0-d tensor");
  if ((st = cb_wrap_dim("gather", &dim, a->ndim)) != CB_OK) return st;
  cb_tensor *view = NULL;
  if ((st = along_dim_view("gather", "input", &view, a, index, dim, false)) != CB_OK) return st;
  if ((st = check_indices("gather", index, dim, a->shape[dim])) != CB_OK) goto done;
  if ((st = cb_tensor_empty(out, index->ndim, index->shape, a->dtype)) != CB_OK) goto done;
  const cb_tensor *ops[3] = {*out, index, view};
  cb_iter it;
  cb_iter_init(&it, 3, ops, index->ndim, index->shape);
  along_ctx ctx = {a->dtype, a->stride[dim] * cb_dtype_size(a->dtype)};
  cb_iter_run(&it, gather_row, &ctx);
  if (a->dtype == CB_FLOAT32) {
    cb_node *node;
    st = cb_release_on_error(
        cb_record(*out, "GatherBackward", gather_backward, 1, &a, 1, &index, &node), out);
    if (node) CB_NODE_CTX(node, cb_dim_ctx)->dim = dim;
  }
done:
  cb_tensor_release(view);
  return st;
}

/* operands: self-view, index, src-view */
static void scatter_add_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  along_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    int64_t k = *(const int64_t *)(p[1] + i * s[1]);
    char *target = p[0] + i * s[0] + k * c->dim_stride;
    const char *from = p[2] + i * s[2];
    if (c->dtype == CB_FLOAT32) *(float *)target += *(const float *)from;
    else cb_store(target, c->dtype, cb_load(target, c->dtype) + cb_load(from, c->dtype));
  }
}

static void scatter_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  along_ctx *c = ctx;
  int64_t esize = cb_dtype_size(c->dtype);
  for (int64_t i = 0; i < n; i++) {
    int64_t k = *(const int64_t *)(p[1] + i * s[1]);
    memcpy(p[0] + i * s[0] + k * c->dim_stride, p[2] + i * s[2], (size_t)esize);
  }
}

/* scatter_ and scatter_add_: self[..., index[i], ...] = (or +=) src[i]
 * along dim, serially in index order (later writes win in scatter_). */
static cb_status scatter(const char *op, cb_tensor *self, int dim, const cb_tensor *index,
                         const cb_tensor *src, cb_row_fn row) {
  cb_status st = check_index_tensor(op, index);
  if (st != CB_OK) return st;
  if (self->ndim == 0) return cb_fail(CB_EINVAL, "%s: cannot index a 0-d tensor", op);
  if ((st = cb_wrap_dim(op, &dim, self->ndim)) != CB_OK) return st;
  if (src->dtype != self->dtype)
    return cb_fail(CB_ETYPE, "%s: src is %s, self is %s", op, cb_dtype_name(src->dtype),
                   cb_dtype_name(self->dtype));
  if (cb_tensor_overlaps(self))
    return cb_fail(CB_EINVAL, "%s: self is an expanded view whose elements overlap", op);
  cb_tensor *self_view = NULL, *src_view = NULL;
  if ((st = along_dim_view(op, "self", &self_view, self, index, dim, false)) != CB_OK)
    return st;
  if ((st = along_dim_view(op, "src", &src_view, src, index, dim, true)) != CB_OK)
    goto done;
  if ((st = check_indices(op, index, dim, self->shape[dim])) != CB_OK) goto done;
  cb_tensor_bump_version(self);
  const cb_tensor *ops[3] = {self_view, index, src_view};
  cb_iter it;
  cb_iter_init(&it, 3, ops, index->ndim, index->shape);
  along_ctx ctx = {self->dtype, self->stride[dim] * cb_dtype_size(self->dtype)};
  cb_iter_run_serial(&it, row, &ctx); /* rows may hit the same target */
done:
  cb_tensor_release(self_view);
  cb_tensor_release(src_view);
  return st;
}

cb_status cb_scatter_add_(cb_tensor *self, int dim, const cb_tensor *index, const cb_tensor *src) {
  return scatter("scatter_add", self, dim, index, src, scatter_add_row);
}

cb_status cb_scatter_(cb_tensor *self, int dim, const cb_tensor *index, const cb_tensor *src) {
  return scatter("scatter", self, dim, index, src, scatter_row);
}

typedef struct {
  double value;
  cb_dtype self_dtype, mask_dtype;
} masked_fill_ctx;

static void masked_fill_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const masked_fill_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++)
    if (cb_load(p[1] + i * s[1], c->mask_dtype) != 0)
      cb_store(p[0] + i * s[0], c->self_dtype, c->value);
}

cb_status cb_masked_fill_(cb_tensor *self, const cb_tensor *mask, double value) {
  const cb_tensor *ops[2] = {self, mask};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_status st = cb_broadcast_shapes("masked_fill", 2, ops, &ndim, shape);
  if (st != CB_OK) return st;
  bool fits = ndim == self->ndim;
  for (int d = 0; fits && d < ndim; d++) fits = shape[d] == self->shape[d];
  if (!fits) {
    char x[128], y[128];
    return cb_fail(CB_ESHAPE, "masked_fill: mask of shape %s does not broadcast to %s",
                   cb_shape_str(x, 128, mask->ndim, mask->shape),
                   cb_shape_str(y, 128, self->ndim, self->shape));
  }
  cb_tensor_bump_version(self);
  masked_fill_ctx ctx = {value, self->dtype, mask->dtype};
  cb_iter it;
  cb_iter_init(&it, 2, ops, ndim, shape);
  cb_iter_run(&it, masked_fill_row, &ctx);
  return CB_OK;
}

/* The filled positions no longer depend on the input. */
static cb_status masked_fill_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *mask;
  cb_status st = cb_node_saved(node, 0, &mask);
  if (st == CB_OK) st = cb_tensor_clone(&grad_in[0], g);
  if (st == CB_OK) st = cb_masked_fill_(grad_in[0], mask, 0);
  return st;
}

cb_status cb_masked_fill(cb_tensor **out, const cb_tensor *a, const cb_tensor *mask,
                         double value) {
  cb_status st = cb_tensor_clone(out, a);
  if (st == CB_OK) st = cb_masked_fill_(*out, mask, value);
  cb_node *node;
  if (st == CB_OK) st = cb_record(*out, "MaskedFillBackward", masked_fill_backward, 1, &a, 1,
                                  &mask, &node);
  return cb_release_on_error(st, out);
}

typedef struct {
  cb_dtype dtype, mask_dtype;
  char *out;
  int64_t count;
} select_ctx;

/* operands: grad (broadcast shape), mask; writes the next gradient value
 * where the mask is set, in the order masked_select read them */
static void masked_scatter_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  select_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++)
    if (cb_load(p[1] + i * s[1], c->mask_dtype) != 0)
      *(float *)(p[0] + i * s[0]) = ((const float *)c->out)[c->count++];
}

/* The shape the input and the mask broadcast to. */
typedef struct {
  int ndim;
  int64_t shape[CB_MAX_DIMS];
} masked_select_ctx;

static cb_status masked_select_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *mask;
  cb_status st = cb_node_saved(node, 0, &mask);
  cb_tensor *full = NULL, *gc = NULL;
  const masked_select_ctx *broadcast = CB_NODE_CTX(node, masked_select_ctx);
  int ndim = broadcast->ndim;
  const int64_t *shape = broadcast->shape;
  if (st == CB_OK) st = cb_tensor_zeros(&full, ndim, shape, CB_FLOAT32);
  if (st == CB_OK) st = cb_tensor_contiguous(&gc, g);
  if (st == CB_OK) {
    const cb_tensor *ops[2] = {full, mask};
    cb_iter it;
    cb_iter_init(&it, 2, ops, ndim, shape);
    select_ctx ctx = {CB_FLOAT32, mask->dtype, cb_tensor_data(gc), 0};
    cb_iter_run_serial(&it, masked_scatter_row, &ctx);
    st = cb_sum_to_shape(&grad_in[0], full, node->inputs[0].ndim, node->inputs[0].shape);
  }
  cb_tensor_release(full);
  cb_tensor_release(gc);
  return st;
}

static void masked_select_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  select_ctx *c = ctx;
  int64_t esize = cb_dtype_size(c->dtype);
  for (int64_t i = 0; i < n; i++)
    if (cb_load(p[1] + i * s[1], c->mask_dtype) != 0) {
      if (c->out) memcpy(c->out + c->count * esize, p[0] + i * s[0], (size_t)esize);
      c->count++;
    }
}

cb_status cb_masked_select(cb_tensor **out, const cb_tensor *a, const cb_tensor *mask) {
  const cb_tensor *ops[2] = {a, mask};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_status st = cb_broadcast_shapes("masked_select", 2, ops, &ndim, shape);
  if (st != CB_OK) return st;
  cb_iter it;
  cb_iter_init(&it, 2, ops, ndim, shape);
  select_ctx ctx = {a->dtype, mask->dtype, NULL, 0};
  cb_iter_run_serial(&it, masked_select_row, &ctx); /* count */
  if ((st = cb_tensor_empty(out, 1, &ctx.count, a->dtype)) != CB_OK) return st;
  ctx.out = cb_tensor_data(*out);
  ctx.count = 0;
  cb_iter_run_serial(&it, masked_select_row, &ctx); /* copy, in order */
  if (a->dtype != CB_FLOAT32) return CB_OK;
  cb_node *node;
  st = cb_release_on_error(
      cb_record(*out, "MaskedSelectBackward", masked_select_backward, 1, &a, 1, &mask, &node), out);
  if (node) {
    masked_select_ctx *broadcast = CB_NODE_CTX(node, masked_select_ctx);
    broadcast->ndim = ndim;
    memcpy(broadcast->shape, shape, sizeof(int64_t) * (size_t)ndim);
  }
  return st;
}

/* Each input gets its own stretch of the gradient along dim. */
static cb_status cat_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  int dim = CB_NODE_CTX(node, cb_dim_ctx)->dim;
  int64_t start = 0;
  cb_status st = CB_OK;
  for (int i = 0; i < node->ninputs && st == CB_OK; i++) {
    int64_t length = node->inputs[i].shape[dim];
    if (cb_node_needs_grad(node, i)) st = cb_tensor_narrow(&grad_in[i], g, dim, start, length);
    start += length;
  }
  return st;
}

cb_status cb_cat(cb_tensor **out, int n, const cb_tensor *const *ts, int dim) {
  if (n < 1) return cb_fail(CB_EINVAL, "cat: expected at least one tensor");
  const cb_tensor *first = ts[0];
  if (first->ndim == 0) return cb_fail(CB_EINVAL, "cat: cannot join 0-d tensors (use stack)");
  cb_status st = cb_wrap_dim("cat", &dim, first->ndim);
  if (st != CB_OK) return st;
  cb_dtype dtype = first->dtype;
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    const cb_tensor *t = ts[i];
    bool fits = t->ndim == first->ndim;
    for (int d = 0; fits && d < t->ndim; d++) fits = d == dim || t->shape[d] == first->shape[d];
    if (!fits) {
      char x[128], y[128];
      return cb_fail(CB_ESHAPE, "cat: tensor %d has shape %s, tensor 1 has %s (they may "
                     "differ only in dim %d)", i + 1, cb_shape_str(x, 128, t->ndim, t->shape),
                     cb_shape_str(y, 128, first->ndim, first->shape), dim + 1);
    }
    if (t->dtype != dtype) dtype = (t->dtype == CB_FLOAT32 || dtype == CB_FLOAT32) ? CB_FLOAT32 : CB_INT64;
    total += t->shape[dim];
  }
  int64_t shape[CB_MAX_DIMS];
  memcpy(shape, first->shape, sizeof shape);
  shape[dim] = total;
  if ((st = cb_tensor_empty(out, first->ndim, shape, dtype)) != CB_OK) return st;
  int64_t start = 0;
  for (int i = 0; i < n && st == CB_OK; i++) {
    cb_tensor *part;
    if ((st = cb_tensor_narrow(&part, *out, dim, start, ts[i]->shape[dim])) != CB_OK) break;
    st = cb_tensor_copy_(part, ts[i]);
    cb_tensor_release(part);
    start += ts[i]->shape[dim];
  }
  cb_node *node = NULL;
  if (st == CB_OK && dtype == CB_FLOAT32)
    st = cb_record(*out, "CatBackward", cat_backward, n, ts, 0, NULL, &node);
  if (node) CB_NODE_CTX(node, cb_dim_ctx)->dim = dim;
  return cb_release_on_error(st, out);
}

cb_status cb_stack(cb_tensor **out, int n, const cb_tensor *const *ts, int dim) {
  if (n < 1) return cb_fail(CB_EINVAL, "stack: expected at least one tensor");
  cb_status st = cb_wrap_dim("stack", &dim, ts[0]->ndim + 1);
  if (st != CB_OK) return st;
  for (int i = 1; i < n; i++)
    if (!cb_same_shape(ts[i], ts[0])) {
      char x[128], y[128];
      return cb_fail(CB_ESHAPE, "stack: tensor %d has shape %s, tensor 1 has %s", i + 1,
                     cb_shape_str(x, 128, ts[i]->ndim, ts[i]->shape),
                     cb_shape_str(y, 128, ts[0]->ndim, ts[0]->shape));
    }
  cb_tensor **parts = calloc((size_t)n, sizeof *parts);
  if (!parts) return cb_fail(CB_ENOMEM, "stack: out of memory");
  /* differentiable unsqueeze: stack's gradient flows through cat's */
  for (int i = 0; i < n && st == CB_OK; i++) st = cb_unsqueeze(&parts[i], ts[i], dim);
  if (st == CB_OK) st = cb_cat(out, n, (const cb_tensor *const *)parts, dim);
  for (int i = 0; i < n; i++) cb_tensor_release(parts[i]);
  free(parts);
  return st;
}
