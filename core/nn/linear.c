/* Fully connected layer: y = x W^T + b through one sgemm (b preloaded into
 * y, so the addition is free). Backward: dx = dy W, dW = dy^T x, db = column
 * sums of dy. Leading dims of x are flattened into rows. */
#include <string.h>

#include "autograd/autograd.h"
#include "tensor/blas.h"
#include "nn/nn.h"

static cb_status check_linear(const cb_tensor *x, const cb_tensor *w, const cb_tensor *b) {
  char xs[128], ws[128];
  if (x->dtype != CB_FLOAT32 || w->dtype != CB_FLOAT32 || (b && b->dtype != CB_FLOAT32))
    return cb_fail(CB_ETYPE, "linear: expected float32 input, weight and bias");
  if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
    return cb_fail(CB_ESHAPE, "linear: input %s does not fit weight %s (out x in)",
                   cb_shape_str(xs, 128, x->ndim, x->shape), cb_shape_str(ws, 128, w->ndim, w->shape));
  if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
    return cb_fail(CB_ESHAPE, "linear: bias must have shape {%lld}", (long long)w->shape[0]);
  return CB_OK;
}

/* x's leading dims flattened: the rows of the matrix product. */
static int64_t rows_of(const cb_tensor *x) {
  int64_t rows = 1;
  for (int d = 0; d < x->ndim - 1; d++) rows *= x->shape[d];
  return rows;
}

static cb_status linear_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const cb_tensor *x, *w;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &w)) != CB_OK)
    return st;
  int64_t in = w->shape[1], out = w->shape[0], rows = rows_of(x);
  cb_tensor *dy = NULL;
  if ((st = cb_tensor_contiguous(&dy, grad)) != CB_OK) return st;
  const float *dyp = cb_tensor_data(dy);
  if (cb_node_needs_grad(node, 0) &&
      (st = cb_tensor_empty(&grad_in[0], x->ndim, x->shape, CB_FLOAT32)) == CB_OK)
    st = cb_sgemm(false, false, rows, in, out, 1.0f, dyp, out, cb_tensor_data(w), in, 0.0f,
                  cb_tensor_data(grad_in[0]), in);
  if (st == CB_OK && cb_node_needs_grad(node, 1) &&
      (st = cb_tensor_empty(&grad_in[1], 2, w->shape, CB_FLOAT32)) == CB_OK)
    st = cb_sgemm(true, false, out, in, rows, 1.0f, dyp, out, cb_tensor_data(x), in, 0.0f,
                  cb_tensor_data(grad_in[1]), in);
  if (st == CB_OK && cb_node_needs_grad(node, 2) &&
      (st = cb_tensor_zeros(&grad_in[2], 1, &out, CB_FLOAT32)) == CB_OK) {
    float *db = cb_tensor_data(grad_in[2]);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t o = 0; o < out; o++) db[o] += dyp[r * out + o];
  }
  cb_tensor_release(dy);
  return st;
}

cb_status cb_linear(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                    const cb_tensor *bias) {
  cb_status st = check_linear(x, weight, bias);
  if (st != CB_OK) return st;
  cb_tensor *xc = NULL, *w = NULL;
  if ((st = cb_tensor_contiguous(&xc, x)) != CB_OK) return st;
  if ((st = cb_tensor_contiguous(&w, weight)) != CB_OK) goto done;
  int64_t in = w->shape[1], nout = w->shape[0], rows = rows_of(x);
  int64_t shape[CB_MAX_DIMS];
  memcpy(shape, x->shape, sizeof shape);
  shape[x->ndim - 1] = nout;
  if ((st = cb_tensor_empty(out, x->ndim, shape, CB_FLOAT32)) != CB_OK) goto done;
  float *y = cb_tensor_data(*out);
  if (bias && rows > 0) {
    float *b = cb_tensor_data(*out); /* row 0 from the bias, copied to the rest */
    for (int64_t o = 0; o < nout; o++) b[o] = (float)cb_tensor_get(bias, &o);
    for (int64_t r = 1; r < rows; r++) memcpy(y + r * nout, b, sizeof(float) * (size_t)nout);
  }
  st = cb_sgemm(false, true, rows, nout, in, 1.0f, cb_tensor_data(xc), in, cb_tensor_data(w), in,
                bias ? 1.0f : 0.0f, y, nout);
  if (st == CB_OK) {
    const cb_tensor *inputs[3] = {x, weight, bias}, *save[2] = {xc, w};
    cb_node *node;
    st = cb_record(*out, "LinearBackward", linear_backward, 3, inputs, 2, save, &node);
  }
  cb_release_on_error(st, out);
done:
  cb_tensor_release(xc);
  cb_tensor_release(w);
  return st;
}
