#include "ops/matmul.h"

#include <string.h>

#include "autograd/autograd.h"
#include "tensor/blas.h"
#include "ops/reduce.h"

/* How sgemm can read a (rows x cols) matrix with element strides (rs, cs):
 * row-major with leading dimension ld, or transposed. */
typedef struct {
  bool ok, trans;
  int64_t ld;
} blas_layout;

static blas_layout layout_of(int64_t rows, int64_t cols, int64_t rs, int64_t cs) {
  blas_layout l = {false, false, 0};
  /* BLAS wants ld >= max(1, leading extent); strides of size-1 dims are free */
  if (cols == 1) cs = 1;
  if (rows == 1) rs = cols > 1 ? cols : 1;
  if (cs == 1 && rs >= (cols > 1 ? cols : 1)) {
    l.ok = true;
    l.ld = rs;
  } else if (rs == 1 && cs >= (rows > 1 ? rows : 1)) {
    l.ok = true;
    l.trans = true;
    l.ld = cs;
  }
  return l;
}

static cb_status check_float(const char *op, const cb_tensor *a, const cb_tensor *b) {
  if (a->dtype != CB_FLOAT32 || b->dtype != CB_FLOAT32)
    return cb_fail(CB_ETYPE, "%s: expected float32 tensors, got %s and %s", op,
                   cb_dtype_name(a->dtype), cb_dtype_name(b->dtype));
  return CB_OK;
}

static cb_status shape_error(const char *op, const cb_tensor *a, const cb_tensor *b) {
  char x[128], y[128];
  return cb_fail(CB_ESHAPE, "%s: shapes %s and %s do not fit (inner sizes differ)", op,
                 cb_shape_str(x, 128, a->ndim, a->shape), cb_shape_str(y, 128, b->ndim, b->shape));
}

/* One product: c (n x m, row stride ldc) = a @ b (+ c). a, b described by
 * base pointers and element strides. */
static cb_status gemm(int64_t n, int64_t k, int64_t m, const float *a, int64_t ars,
                      int64_t acs, const float *b, int64_t brs, int64_t bcs, float *c,
                      int64_t ldc, bool accumulate) {
  blas_layout la = layout_of(n, k, ars, acs), lb = layout_of(k, m, brs, bcs);
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < n; i++) memset(c + i * ldc, 0, sizeof(float) * (size_t)m);
    return CB_OK;
  }
  /* callers make operands contiguous when a layout is not ok */
  return cb_sgemm(la.trans, lb.trans, n, m, k, 1.0f, a, la.ld, b, lb.ld,
                  accumulate ? 1.0f : 0.0f, c, ldc > 1 ? ldc : 1);
}

/* A batched operand: matrices of rows x cols at element strides (rs, cs),
 * batch dims (broadcast to the output's batch shape) with element strides. */
typedef struct {
  const float *base;
  int64_t rows, cols, rs, cs;
  int64_t batch_stride[CB_MAX_DIMS];
} operand;

static cb_status make_operand(operand *op, cb_tensor **keep, const cb_tensor *t, int nbatch) {
  const cb_tensor *src = t;
  if (!layout_of(t->shape[t->ndim - 2], t->shape[t->ndim - 1], t->stride[t->ndim - 2],
                 t->stride[t->ndim - 1]).ok) {
    cb_status st = cb_tensor_contiguous(keep, t);
    if (st != CB_OK) return st;
    src = *keep;
  }
  op->base = cb_tensor_data(src);
  op->rows = src->shape[src->ndim - 2];
  op->cols = src->shape[src->ndim - 1];
  op->rs = src->stride[src->ndim - 2];
  op->cs = src->stride[src->ndim - 1];
  int lead = nbatch - (src->ndim - 2);
  for (int d = 0; d < nbatch; d++) {
    int sd = d - lead;
    op->batch_stride[d] = (sd < 0 || src->shape[sd] == 1) ? 0 : src->stride[sd];
  }
  return CB_OK;
}

static cb_status matmul_forward(cb_tensor **out, const cb_tensor *a, const cb_tensor *b);

/* t with 1-D promoted as matmul does: a row (at_front) or column vector. */
static cb_status as_matrix(cb_tensor **out, const cb_tensor *t, bool at_front) {
  if (t->ndim == 1) return cb_tensor_unsqueeze(out, t, at_front ? 0 : 1);
  *out = cb_tensor_retain((cb_tensor *)t);
  return CB_OK;
}

/* C = A B (batched): dA = dC B^T and dB = A^T dC, each summed over the batch
 * dims it was broadcast along, with 1-D operands promoted and restored. */
static cb_status matmul_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *a, *b;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &a)) != CB_OK || (st = cb_node_saved(node, 1, &b)) != CB_OK)
    return st;
  cb_tensor *a2 = NULL, *b2 = NULL, *g2 = NULL, *g1 = NULL, *tr = NULL, *full = NULL;
  if ((st = as_matrix(&a2, a, true)) != CB_OK || (st = as_matrix(&b2, b, false)) != CB_OK)
    goto done;
  /* the output lost a rows dim if a was 1-D, a cols dim if b was 1-D */
  if (a->ndim == 1 && (st = cb_tensor_unsqueeze(&g1, g, g->ndim - (b->ndim == 1 ? 0 : 1))) != CB_OK)
    goto done;
  if (!g1) g1 = cb_tensor_retain((cb_tensor *)g);
  if (b->ndim == 1) st = cb_tensor_unsqueeze(&g2, g1, g1->ndim);
  else g2 = cb_tensor_retain(g1);
  if (st != CB_OK) goto done;
  for (int which = 0; which < 2 && st == CB_OK; which++) {
    if (!cb_node_needs_grad(node, which)) continue;
    const cb_tensor *other = which == 0 ? b2 : a2, *mine = which == 0 ? a2 : b2;
    if ((st = cb_tensor_transpose(&tr, other, -1, -2)) != CB_OK) break;
    st = which == 0 ? matmul_forward(&full, g2, tr) : matmul_forward(&full, tr, g2);
    cb_tensor_release(tr);
    tr = NULL;
    if (st != CB_OK) break;
    cb_tensor *summed;
    if ((st = cb_sum_to_shape(&summed, full, mine->ndim, mine->shape)) == CB_OK) {
      const cb_tensor *orig = which == 0 ? a : b;
      st = cb_tensor_reshape(&grad_in[which], summed, orig->ndim, orig->shape);
      cb_tensor_release(summed);
    }
    cb_tensor_release(full);
    full = NULL;
  }
done:
  cb_tensor_release(a2);
  cb_tensor_release(b2);
  cb_tensor_release(g1);
  cb_tensor_release(g2);
  return st;
}

cb_status cb_matmul(cb_tensor **out, const cb_tensor *a, const cb_tensor *b) {
  cb_status st = matmul_forward(out, a, b);
  if (st != CB_OK) return st;
  const cb_tensor *inputs[2] = {a, b};
  cb_node *node;
  st = cb_release_on_error(
      cb_record(*out, "MatmulBackward", matmul_backward, 2, inputs, 2, inputs, &node), out);
  return st;
}

static cb_status matmul_forward(cb_tensor **out, const cb_tensor *a, const cb_tensor *b) {
  cb_status st = check_float("matmul", a, b);
  if (st != CB_OK) return st;
  if (a->ndim == 0 || b->ndim == 0)
    return cb_fail(CB_ESHAPE, "matmul: both operands need at least 1 dim (got %d and %d)",
                   a->ndim, b->ndim);
  /* Promote 1-D operands to matrices; remember which dims to drop. */
  cb_tensor *a2 = NULL, *b2 = NULL, *result = NULL, *keep_a = NULL, *keep_b = NULL;
  bool drop_rows = a->ndim == 1, drop_cols = b->ndim == 1;
  if (drop_rows) st = cb_tensor_unsqueeze(&a2, a, 0);
  else a2 = cb_tensor_retain((cb_tensor *)a);
  if (st == CB_OK && drop_cols) st = cb_tensor_unsqueeze(&b2, b, 1);
  else if (st == CB_OK) b2 = cb_tensor_retain((cb_tensor *)b);
  if (st != CB_OK) goto done;
  int64_t n = a2->shape[a2->ndim - 2], k = a2->shape[a2->ndim - 1];
  int64_t k2 = b2->shape[b2->ndim - 2], m = b2->shape[b2->ndim - 1];
  if (k != k2) {
    st = shape_error("matmul", a, b);
    goto done;
  }
  /* Broadcast the batch dims. */
  int na = a2->ndim - 2, nb = b2->ndim - 2, nbatch = na > nb ? na : nb;
  int64_t batch_shape[CB_MAX_DIMS];
  for (int d = 0; d < nbatch; d++) {
    int da = d - (nbatch - na), db = d - (nbatch - nb);
    int64_t sa = da >= 0 ? a2->shape[da] : 1, sb = db >= 0 ? b2->shape[db] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      char x[128], y[128];
      st = cb_fail(CB_ESHAPE, "matmul: batch dims of %s and %s cannot be broadcast",
                   cb_shape_str(x, 128, a->ndim, a->shape), cb_shape_str(y, 128, b->ndim, b->shape));
      goto done;
    }
    batch_shape[d] = sa > sb ? sa : sb;
  }
  int64_t out_shape[CB_MAX_DIMS];
  int out_ndim = 0;
  for (int d = 0; d < nbatch; d++) out_shape[out_ndim++] = batch_shape[d];
  if (!drop_rows) out_shape[out_ndim++] = n;
  if (!drop_cols) out_shape[out_ndim++] = m;
  if (out_ndim > CB_MAX_DIMS) {
    st = cb_fail(CB_ESHAPE, "matmul: result would have more than %d dims", CB_MAX_DIMS);
    goto done;
  }
  if ((st = cb_tensor_empty(&result, out_ndim, out_shape, CB_FLOAT32)) != CB_OK) goto done;
  operand oa, ob;
  if ((st = make_operand(&oa, &keep_a, a2, nbatch)) != CB_OK) goto done;
  if ((st = make_operand(&ob, &keep_b, b2, nbatch)) != CB_OK) goto done;
  int64_t nmats = 1;
  for (int d = 0; d < nbatch; d++) nmats *= batch_shape[d];
  float *c = cb_tensor_data(result);
  /* When b is shared by every batch entry and a's batches are stacked rows,
   * one sgemm over (batch * n) rows does the whole product. */
  bool b_shared = true, a_stacked = oa.cs == 1 && oa.rs == k;
  int64_t expect = n * k;
  for (int d = nbatch - 1; d >= 0; d--) {
    if (ob.batch_stride[d] != 0 && batch_shape[d] > 1) b_shared = false;
    if (batch_shape[d] > 1 && oa.batch_stride[d] != expect) a_stacked = false;
    expect *= batch_shape[d];
  }
  if (nmats > 1 && b_shared && a_stacked) {
    st = gemm(nmats * n, k, m, oa.base, oa.rs, oa.cs, ob.base, ob.rs, ob.cs, c, m, false);
    goto done;
  }
  int64_t index[CB_MAX_DIMS] = {0};
  for (int64_t i = 0; i < nmats && st == CB_OK; i++) {
    int64_t off_a = 0, off_b = 0;
    for (int d = 0; d < nbatch; d++) {
      off_a += index[d] * oa.batch_stride[d];
      off_b += index[d] * ob.batch_stride[d];
    }
    st = gemm(n, k, m, oa.base + off_a, oa.rs, oa.cs, ob.base + off_b, ob.rs, ob.cs,
              c + i * n * m, m, false);
    for (int d = nbatch - 1; d >= 0; d--) {
      if (++index[d] < batch_shape[d]) break;
      index[d] = 0;
    }
  }
done:
  cb_tensor_release(a2);
  cb_tensor_release(b2);
  cb_tensor_release(keep_a);
  cb_tensor_release(keep_b);
  if (st == CB_OK) *out = result;
  else cb_tensor_release(result);
  return st;
}
