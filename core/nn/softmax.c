/* softmax / log_softmax along a dim, and the fused cross-entropy loss.
 *
 * Rows are computed in double with the maximum subtracted first, so large
 * logits neither overflow nor lose the small probabilities. Backward:
 *   softmax:      dx = y (g - sum(g y))
 *   log_softmax:  dx = g - softmax(x) sum(g)
 *   cross-entropy (see nn.h): dx_c = s_i [(1-e) w_y (p_c - [c = y])
 *                                         + e/C (p_c W - w_c)],  W = sum_c w_c,
 * with s_i the incoming gradient of sample i's loss (divided by the mean's
 * denominator). */
#include <math.h>
#include <string.h>

#include "autograd/autograd.h"
#include "nn/nn.h"
#include "tensor/threadpool.h"

/* x as outer x size x inner, contiguous. */
typedef struct {
  int64_t outer, size, inner;
  const float *x;
  float *y;
  bool log;
  /* backward */
  const float *g;
  float *dx;
} softmax_job;

static void softmax_rows(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const softmax_job *j = arg;
  for (int64_t r = begin; r < end; r++) {
    int64_t o = r / j->inner, i = r % j->inner, step = j->inner;
    const float *x = j->x + o * j->size * j->inner + i;
    float *y = j->y + o * j->size * j->inner + i;
    double m = -INFINITY, sum = 0;
    for (int64_t k = 0; k < j->size; k++) m = fmax(m, x[k * step]);
    for (int64_t k = 0; k < j->size; k++) sum += exp(x[k * step] - m);
    double lse = m + log(sum);
    for (int64_t k = 0; k < j->size; k++)
      y[k * step] = j->log ? (float)(x[k * step] - lse) : (float)exp(x[k * step] - lse);
  }
}

/* here x holds the forward output y */
static void softmax_backward_rows(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const softmax_job *j = arg;
  for (int64_t r = begin; r < end; r++) {
    int64_t o = r / j->inner, i = r % j->inner, step = j->inner, base = o * j->size * j->inner + i;
    const float *y = j->x + base, *g = j->g + base;
    float *dx = j->dx + base;
    double dot = 0;
    for (int64_t k = 0; k < j->size; k++) dot += j->log ? g[k * step] : g[k * step] * y[k * step];
    for (int64_t k = 0; k < j->size; k++)
      dx[k * step] = j->log ? (float)(g[k * step] - exp(y[k * step]) * dot)
                            : (float)(y[k * step] * (g[k * step] - dot));
  }
}

static void split_dims(const cb_tensor *t, int dim, softmax_job *j) {
  j->outer = j->inner = 1;
  for (int d = 0; d < dim; d++) j->outer *= t->shape[d];
  for (int d = dim + 1; d < t->ndim; d++) j->inner *= t->shape[d];
  j->size = t->ndim ? t->shape[dim] : 1;
}

typedef struct {
  int dim;
  bool log;
} softmax_ctx;

static cb_status softmax_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const cb_tensor *y;
  cb_status st = cb_node_saved(node, 0, &y);
  cb_tensor *g = NULL;
  if (st != CB_OK || (st = cb_tensor_contiguous(&g, grad)) != CB_OK) return st;
  if ((st = cb_tensor_empty(&grad_in[0], y->ndim, y->shape, CB_FLOAT32)) == CB_OK) {
    const softmax_ctx *ctx = CB_NODE_CTX(node, softmax_ctx);
    softmax_job j = {.x = cb_tensor_data(y), .g = cb_tensor_data(g),
                     .dx = cb_tensor_data(grad_in[0]), .log = ctx->log};
    split_dims(y, ctx->dim, &j);
    cb_parallel_for(j.outer * j.inner, 256, softmax_backward_rows, &j);
  }
  cb_tensor_release(g);
  return st;
}

cb_status cb_softmax(cb_tensor **out, const cb_tensor *x, int dim, bool log) {
  const char *name = log ? "log_softmax" : "softmax";
  if (x->dtype != CB_FLOAT32) return cb_fail(CB_ETYPE, "%s: expected a float32 input", name);
  cb_status st = cb_wrap_dim(name, &dim, x->ndim);
  if (st != CB_OK) return st;
  cb_tensor *xc;
  if ((st = cb_tensor_contiguous(&xc, x)) != CB_OK) return st;
  if ((st = cb_tensor_empty(out, x->ndim, x->shape, CB_FLOAT32)) == CB_OK) {
    softmax_job j = {.x = cb_tensor_data(xc), .y = cb_tensor_data(*out), .log = log};
    split_dims(x, dim, &j);
    cb_parallel_for(j.outer * j.inner, 256, softmax_rows, &j);
    cb_node *node;
    st = cb_record(*out, log ? "LogSoftmaxBackward" : "SoftmaxBackward", softmax_backward, 1, &x,
                   1, (const cb_tensor *const *)out, &node);
    if (node) *CB_NODE_CTX(node, softmax_ctx) = (softmax_ctx){dim, log};
    cb_release_on_error(st, out);
  }
  cb_tensor_release(xc);
  return st;
}

/* ---- cross-entropy ---- */

typedef struct {
  int64_t n, c;
  const float *x;      /* logits, n x c contiguous */
  const int64_t *y;    /* labels */
  const float *w;      /* class weights or NULL */
  double smoothing, weight_total; /* e, W */
  float *loss;         /* per sample (forward) */
  float *lse;          /* per sample log-sum-exp (forward out, backward in) */
  /* backward */
  const float *g;      /* per-sample gradient scale, or one value */
  int64_t g_stride;    /* 0 when one value serves all samples */
  double scale;        /* 1 / mean denominator, or 1 */
  float *dx;
} ce_job;

static void ce_forward_rows(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const ce_job *j = arg;
  double e = j->smoothing;
  for (int64_t i = begin; i < end; i++) {
    const float *x = j->x + i * j->c;
    double m = -INFINITY, sum = 0, smooth = 0;
    for (int64_t k = 0; k < j->c; k++) m = fmax(m, x[k]);
    for (int64_t k = 0; k < j->c; k++) sum += exp(x[k] - m);
    double lse = m + log(sum);
    int64_t y = j->y[i];
    double wy = j->w ? j->w[y] : 1.0;
    if (e > 0)
      for (int64_t k = 0; k < j->c; k++) smooth += (j->w ? j->w[k] : 1.0) * (lse - x[k]);
    j->lse[i] = (float)lse;
    j->loss[i] = (float)((1 - e) * wy * (lse - x[y]) + e / (double)j->c * smooth);
  }
}

static void ce_backward_rows(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const ce_job *j = arg;
  double e = j->smoothing;
  for (int64_t i = begin; i < end; i++) {
    const float *x = j->x + i * j->c;
    float *dx = j->dx + i * j->c;
    double s = j->g[i * j->g_stride] * j->scale, lse = j->lse[i];
    int64_t y = j->y[i];
    double wy = j->w ? j->w[y] : 1.0;
    for (int64_t k = 0; k < j->c; k++) {
      double p = exp(x[k] - lse), wk = j->w ? j->w[k] : 1.0;
      double d = (1 - e) * wy * (p - (k == y)) + e / (double)j->c * (p * j->weight_total - wk);
      dx[k] = (float)(s * d);
    }
  }
}

typedef struct {
  cb_reduction reduction;
  double label_smoothing, weight_total;
  double scale; /* of the incoming gradient: 1 / the mean's denominator, or 1 */
} cross_entropy_ctx;

static cb_status ce_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const cb_tensor *x, *y, *lse, *w = NULL;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &y)) != CB_OK ||
      (st = cb_node_saved(node, 2, &lse)) != CB_OK)
    return st;
  if (node->nsaved > 3 && (st = cb_node_saved(node, 3, &w)) != CB_OK) return st;
  cb_tensor *g = NULL;
  if ((st = cb_tensor_contiguous(&g, grad)) != CB_OK) return st;
  if ((st = cb_tensor_empty(&grad_in[0], 2, x->shape, CB_FLOAT32)) == CB_OK) {
    const cross_entropy_ctx *ctx = CB_NODE_CTX(node, cross_entropy_ctx);
    ce_job j = {.n = x->shape[0], .c = x->shape[1], .x = cb_tensor_data(x),
                .y = cb_tensor_data(y), .w = w ? cb_tensor_data(w) : NULL,
                .smoothing = ctx->label_smoothing, .weight_total = ctx->weight_total,
                .lse = cb_tensor_data(lse), .g = cb_tensor_data(g),
                .g_stride = ctx->reduction == CB_REDUCE_NONE ? 1 : 0, .scale = ctx->scale,
                .dx = cb_tensor_data(grad_in[0])};
    cb_parallel_for(j.n, 64, ce_backward_rows, &j);
  }
  cb_tensor_release(g);
  return st;
}

static cb_status check_ce(const cb_tensor *x, const cb_tensor *target, const cb_tensor *weight,
                          double smoothing) {
  char xs[128], ts[128];
  if (x->dtype != CB_FLOAT32) return cb_fail(CB_ETYPE, "cross_entropy: logits must be float32");
  if (target->dtype != CB_INT64)
    return cb_fail(CB_ETYPE, "cross_entropy: target must hold int64 class labels, got %s",
                   cb_dtype_name(target->dtype));
  if (x->ndim != 2 || target->ndim != 1 || target->shape[0] != x->shape[0])
    return cb_fail(CB_ESHAPE, "cross_entropy: expected logits N x C and target N, got %s and %s",
                   cb_shape_str(xs, 128, x->ndim, x->shape),
                   cb_shape_str(ts, 128, target->ndim, target->shape));
  if (weight && (weight->dtype != CB_FLOAT32 || weight->ndim != 1 || weight->shape[0] != x->shape[1]))
    return cb_fail(CB_ESHAPE, "cross_entropy: weight must be float32 of shape {%lld}",
                   (long long)x->shape[1]);
  if (!(smoothing >= 0 && smoothing <= 1))
    return cb_fail(CB_EINVAL, "cross_entropy: label_smoothing must be in [0, 1], got %g", smoothing);
  return CB_OK;
}

cb_status cb_cross_entropy(cb_tensor **out, const cb_tensor *logits, const cb_tensor *target,
                           const cb_tensor *weight, double label_smoothing,
                           cb_reduction reduction) {
  cb_status st = check_ce(logits, target, weight, label_smoothing);
  if (st != CB_OK) return st;
  int64_t n = logits->shape[0], c = logits->shape[1];
  cb_tensor *x = NULL, *y = NULL, *w = NULL, *loss = NULL, *lse = NULL;
  if ((st = cb_tensor_contiguous(&x, logits)) != CB_OK ||
      (st = cb_tensor_contiguous(&y, target)) != CB_OK ||
      (weight && (st = cb_tensor_contiguous(&w, weight)) != CB_OK))
    goto done;
  const int64_t *yp = cb_tensor_data(y);
  for (int64_t i = 0; i < n; i++)
    if (yp[i] < 0 || yp[i] >= c) {
      st = cb_fail(CB_ERANGE, "cross_entropy: target %lld (sample %lld) is not a class label "
                   "in 0..%lld", (long long)yp[i], (long long)i + 1, (long long)c - 1);
      goto done;
    }
  if ((st = cb_tensor_empty(&loss, 1, &n, CB_FLOAT32)) != CB_OK ||
      (st = cb_tensor_empty(&lse, 1, &n, CB_FLOAT32)) != CB_OK)
    goto done;
  double weight_total = (double)c, denominator = (double)n;
  if (w) {
    const float *wp = cb_tensor_data(w);
    weight_total = denominator = 0;
    for (int64_t k = 0; k < c; k++) weight_total += wp[k];
    for (int64_t i = 0; i < n; i++) denominator += wp[yp[i]];
  }
  ce_job j = {.n = n, .c = c, .x = cb_tensor_data(x), .y = yp, .w = w ? cb_tensor_data(w) : NULL,
              .smoothing = label_smoothing, .loss = cb_tensor_data(loss), .lse = cb_tensor_data(lse)};
  cb_parallel_for(n, 64, ce_forward_rows, &j);
  if (reduction == CB_REDUCE_NONE) {
    *out = cb_tensor_retain(loss);
  } else {
    double total = 0;
    const float *lp = cb_tensor_data(loss);
    for (int64_t i = 0; i < n; i++) total += lp[i];
    if (reduction == CB_REDUCE_MEAN) total /= denominator;
    if ((st = cb_tensor_scalar(out, total, CB_FLOAT32)) != CB_OK) goto done;
  }
  const cb_tensor *inputs[1] = {logits}, *save[4] = {x, y, lse, w};
  cb_node *node;
  st = cb_record(*out, "CrossEntropyBackward", ce_backward, 1, inputs, w ? 4 : 3, save, &node);
  if (node)
    *CB_NODE_CTX(node, cross_entropy_ctx) = (cross_entropy_ctx){
        reduction, label_smoothing, weight_total,
        reduction == CB_REDUCE_MEAN ? 1.0 / denominator : 1.0};
  cb_release_on_error(st, out);
done:
  cb_tensor_release(x);
  cb_tensor_release(y);
  cb_tensor_release(w);
  cb_tensor_release(loss);
  cb_tensor_release(lse);
  return st;
}
