/* Activations with a parameter (leaky_relu, gelu, softplus) and dropout.
 * Each activation is one scalar function and its derivative, run by the
 * strided iterator forward (y = f(x)) and backward (dx = g f'(x)). */
#include <math.h>
#include <stddef.h>

#include "autograd/autograd.h"
#include "tensor/iter.h"
#include "nn/nn.h"
#include "ops/pointwise.h"

static const char *const act_names[CB_NUM_ACT] = {"leaky_relu", "gelu", "softplus"};
static const char *const act_backward_names[CB_NUM_ACT] = {
    "LeakyReluBackward", "GeluBackward", "SoftplusBackward"};

typedef struct {
  cb_actop op;
  float param;
} act_ctx;

static inline float act_forward(const act_ctx *a, float x) {
  switch (a->op) {
  case CB_ACT_LEAKY_RELU: return x > 0 ? x : a->param * x;
  case CB_ACT_GELU: return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
  case CB_ACT_SOFTPLUS: {
    float bx = a->param * x; /* linear above the threshold, as PyTorch */
    return bx > 20.0f ? x : log1pf(expf(bx)) / a->param;
  }
  case CB_NUM_ACT: break;
  }
  return 0;
}

static inline float act_derivative(const act_ctx *a, float x) {
  switch (a->op) {
  case CB_ACT_LEAKY_RELU: return x > 0 ? 1.0f : a->param;
  case CB_ACT_GELU: {
    float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    float pdf = expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
    return cdf + x * pdf;
  }
  case CB_ACT_SOFTPLUS: {
    float bx = a->param * x;
    return bx > 20.0f ? 1.0f : 1.0f / (1.0f + expf(-bx));
  }
  case CB_NUM_ACT: break;
  }
  return 0;
}

/* operands: y, x */
static void act_forward_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  for (int64_t i = 0; i < n; i++)
    *(float *)(p[0] + i * s[0]) = act_forward(ctx, *(const float *)(p[1] + i * s[1]));
}

/* operands: dx, g, x */
static void act_backward_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  for (int64_t i = 0; i < n; i++)
    *(float *)(p[0] + i * s[0]) = *(const float *)(p[1] + i * s[1]) *
                                  act_derivative(ctx, *(const float *)(p[2] + i * s[2]));
}

static cb_status act_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *x;
  cb_status st = cb_node_saved(node, 0, &x);
  if (st != CB_OK || (st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) != CB_OK)
    return st;
  act_ctx a = *CB_NODE_CTX(node, act_ctx);
  const cb_tensor *ops[3] = {grad_in[0], g, x};
  cb_iter it;
  cb_iter_init(&it, 3, ops, x->ndim, x->shape);
  cb_iter_run(&it, act_backward_row, &a);
  return CB_OK;
}

cb_status cb_activation(cb_tensor **out, cb_actop op, const cb_tensor *x, double param) {
  if ((unsigned)op >= CB_NUM_ACT) return cb_fail(CB_EINVAL, "activation: invalid op %d", (int)op);
  if (x->dtype != CB_FLOAT32)
    return cb_fail(CB_ETYPE, "%s: expected a float32 input, got %s", act_names[op],
                   cb_dtype_name(x->dtype));
  if (op == CB_ACT_SOFTPLUS && !(param > 0))
    return cb_fail(CB_EINVAL, "softplus: beta must be positive, got %g", param);
  cb_status st = cb_tensor_empty_same_layout(out, x, CB_FLOAT32);
  if (st != CB_OK) return st;
  act_ctx a = {op, (float)param};
  const cb_tensor *ops[2] = {*out, x};
  cb_iter it;
  cb_iter_init(&it, 2, ops, x->ndim, x->shape);
  cb_iter_run(&it, act_forward_row, &a);
  cb_node *node;
  st = cb_record(*out, act_backward_names[op], act_backward, 1, &x, 1, &x, &node);
  if (node) *CB_NODE_CTX(node, act_ctx) = a;
  return cb_release_on_error(st, out);
}

/* ---- dropout: y = x * mask, mask 0 or 1/(1-p) ---- */

static cb_status dropout_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *mask;
  cb_status st = cb_node_saved(node, 0, &mask);
  if (st != CB_OK) return st;
  return cb_binary(&grad_in[0], CB_MUL, g, mask);
}

cb_status cb_dropout(cb_tensor **out, const cb_tensor *x, double p, bool training,
                     cb_generator *g) {
  if (!(p >= 0 && p <= 1)) return cb_fail(CB_EINVAL, "dropout: p must be in [0, 1], got %g", p);
  if (x->dtype != CB_FLOAT32) return cb_fail(CB_ETYPE, "dropout: expected a float32 input");
  if (!training || p == 0) { /* the identity, as an alias so the graph stays whole */
    *out = cb_tensor_retain((cb_tensor *)x);
    return CB_OK;
  }
  cb_tensor *mask;
  cb_status st = cb_tensor_empty(&mask, x->ndim, x->shape, CB_FLOAT32);
  if (st != CB_OK) return st;
  float keep = p < 1 ? (float)(1.0 / (1.0 - p)) : 0.0f;
  float *m = cb_tensor_data(mask);
  for (int64_t i = 0, n = cb_tensor_numel(mask); i < n; i++)
    m[i] = cb_random_double(g) < p ? 0.0f : keep;
  bool was = cb_set_grad_enabled(false); /* one node for the whole op, below */
  st = cb_binary(out, CB_MUL, x, mask);
  cb_set_grad_enabled(was);
  cb_node *node;
  if (st == CB_OK)
    st = cb_release_on_error(cb_record(*out, "DropoutBackward", dropout_backward, 1, &x, 1,
                                       (const cb_tensor *const *)&mask, &node),
                             out);
  cb_tensor_release(mask);
  return st;
}
