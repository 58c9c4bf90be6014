#include "ops/pointwise.h"

#include <math.h>
#include <string.h>

#include "autograd/autograd.h"
#include "tensor/iter.h"
#include "ops/reduce.h"
#include "tensor/vectorize.h"

static const char *const unop_names[CB_NUM_UNARY] = {
    "neg", "abs", "sign", "floor", "ceil", "round", "relu", "exp", "log",
    "sqrt", "rsqrt", "sigmoid", "tanh", "sin", "cos", "reciprocal", "logical_not"};
static const char *const binop_names[CB_NUM_BINARY] = {
    "add", "sub", "mul", "div", "pow", "maximum", "minimum", "remainder", "eq", "ne",
    "lt", "le", "gt", "ge", "logical_and", "logical_or"};

const char *cb_unop_name(cb_unop op) {
  return (unsigned)op < CB_NUM_UNARY ? unop_names[op] : "?";
}
const char *cb_binop_name(cb_binop op) {
  return (unsigned)op < CB_NUM_BINARY ? binop_names[op] : "?";
}

static bool unop_is_float_only(cb_unop op) { return op >= CB_EXP && op <= CB_RECIPROCAL; }
static bool binop_gives_bool(cb_binop op) { return op >= CB_EQ; }

/* The dtype the computation runs in. */
static cb_dtype unary_compute_dtype(cb_unop op, cb_dtype a) {
  return (a == CB_FLOAT32 || unop_is_float_only(op)) ? CB_FLOAT32 : CB_INT64;
}
static cb_dtype binary_compute_dtype(cb_binop op, cb_dtype a, cb_dtype b) {
  if (a == CB_FLOAT32 || b == CB_FLOAT32 || op == CB_DIV) return CB_FLOAT32;
  return CB_INT64;
}

cb_dtype cb_unary_result_dtype(cb_unop op, cb_dtype a) {
  return op == CB_LOGICAL_NOT ? CB_BOOL : unary_compute_dtype(op, a);
}
cb_dtype cb_binary_result_dtype(cb_binop op, cb_dtype a, cb_dtype b) {
  return binop_gives_bool(op) ? CB_BOOL : binary_compute_dtype(op, a, b);
}

/* ---- scalar functions ---- */

static inline float f32_unary(cb_unop op, float x) {
  switch (op) {
  case CB_NEG: return -x;
  case CB_ABS: return fabsf(x);
  case CB_SIGN: return (float)((x > 0) - (x < 0));
  case CB_FLOOR: return floorf(x);
  case CB_CEIL: return ceilf(x);
  case CB_ROUND: return nearbyintf(x); /* half to even, as PyTorch */
  case CB_RELU: return x > 0 ? x : 0.0f;
  case CB_EXP: return expf(x);
  case CB_LOG: return logf(x);
  case CB_SQRT: return sqrtf(x);
  case CB_RSQRT: return 1.0f / sqrtf(x);
  case CB_SIGMOID: return 1.0f / (1.0f + expf(-x));
  case CB_TANH: return tanhf(x);
  case CB_SIN: return sinf(x);
  case CB_COS: return cosf(x);
  case CB_RECIPROCAL: return 1.0f / x;
  case CB_LOGICAL_NOT: return x == 0;
  case CB_NUM_UNARY: break;
  }
  return 0;
}

/* int64 arithmetic wraps around, as Lua's integers do (signed overflow is
 * undefined in C, so it goes through uint64_t). */
static inline int64_t wrap_add(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
static inline int64_t wrap_sub(int64_t a, int64_t b) { return (int64_t)((uint64_t)a - (uint64_t)b); }
static inline int64_t wrap_mul(int64_t a, int64_t b) { return (int64_t)((uint64_t)a * (uint64_t)b); }

static inline int64_t i64_unary(cb_unop op, int64_t x) {
  switch (op) {
  case CB_NEG: return wrap_sub(0, x);
  case CB_ABS: return x < 0 ? wrap_sub(0, x) : x;
  case CB_SIGN: return (x > 0) - (x < 0);
  case CB_RELU: return x > 0 ? x : 0;
  case CB_LOGICAL_NOT: return x == 0;
  default: return x; /* floor, ceil, round of an integer */
  }
}

static inline float f32_binary(cb_binop op, float a, float b) {
  switch (op) {
  case CB_ADD: return a + b;
  case CB_SUB: return a - b;
  case CB_MUL: return a * b;
  case CB_DIV: return a / b;
  case CB_POW: return powf(a, b);
  /* NaN propagates, as in PyTorch's maximum/minimum. */
  case CB_MAXIMUM: return (a > b || isnan(a)) ? a : b;
  case CB_MINIMUM: return (a < b || isnan(a)) ? a : b;
  case CB_REMAINDER: {
    float r = fmodf(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
  }
  case CB_EQ: return a == b;
  case CB_NE: return a != b;
  case CB_LT: return a < b;
  case CB_LE: return a <= b;
  case CB_GT: return a > b;
  case CB_GE: return a >= b;
  case CB_LOGICAL_AND: return a != 0 && b != 0;
  case CB_LOGICAL_OR: return a != 0 || b != 0;
  case CB_NUM_BINARY: break;
  }
  return 0;
}

static inline int64_t i64_pow(int64_t base, int64_t exp) {
  if (exp < 0) return base == 1 ? 1 : base == -1 ? (exp % 2 ? -1 : 1) : 0;
  int64_t result = 1;
  while (exp) {
    if (exp & 1) result = wrap_mul(result, base);
    base = wrap_mul(base, base);
    exp >>= 1;
  }
  return result;
}

static inline int64_t i64_binary(cb_binop op, int64_t a, int64_t b) {
  switch (op) {
  case CB_ADD: return wrap_add(a, b);
  case CB_SUB: return wrap_sub(a, b);
  case CB_MUL: return wrap_mul(a, b);
  case CB_POW: return i64_pow(a, b);
  case CB_MAXIMUM: return a > b ? a : b;
  case CB_MINIMUM: return a < b ? a : b;
  case CB_REMAINDER: {
    /* b == 0 is refused before the loop; INT64_MIN % -1 traps in hardware */
    if (b == 0 || b == -1) return 0;
    int64_t r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
  }
  case CB_EQ: return a == b;
  case CB_NE: return a != b;
  case CB_LT: return a < b;
  case CB_LE: return a <= b;
  case CB_GT: return a > b;
  case CB_GE: return a >= b;
  case CB_LOGICAL_AND: return a != 0 && b != 0;
  case CB_LOGICAL_OR: return a != 0 || b != 0;
  default: return 0; /* div runs in float32 */
  }
}

/* ---- row loops ----
 * Each loop is written once with the operation as a constant argument; the
 * always_inline helpers are expanded per switch case in the row functions
 * below, so the compiler sees a fixed operation and vectorises the
 * contiguous and scalar-operand cases. */

#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE void unary_f32_loop(cb_unop op, int64_t n, char **p, const int64_t *s) {
  if (s[0] == 4 && s[1] == 4) {
    float *o = (float *)p[0];
    const float *a = (const float *)p[1];
    for (int64_t i = 0; i < n; i++) o[i] = f32_unary(op, a[i]);
  } else {
    for (int64_t i = 0; i < n; i++)
      *(float *)(p[0] + i * s[0]) = f32_unary(op, *(const float *)(p[1] + i * s[1]));
  }
}

static void unary_f32_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_unop op = *(const cb_unop *)ctx;
  switch (op) {
  case CB_NEG: unary_f32_loop(CB_NEG, n, p, s); break;
  case CB_ABS: unary_f32_loop(CB_ABS, n, p, s); break;
  case CB_RELU: unary_f32_loop(CB_RELU, n, p, s); break;
  case CB_EXP: unary_f32_loop(CB_EXP, n, p, s); break;
  case CB_LOG: unary_f32_loop(CB_LOG, n, p, s); break;
  case CB_SQRT: unary_f32_loop(CB_SQRT, n, p, s); break;
  case CB_SIGMOID: unary_f32_loop(CB_SIGMOID, n, p, s); break;
  case CB_TANH: unary_f32_loop(CB_TANH, n, p, s); break;
  default:
    for (int64_t i = 0; i < n; i++)
      *(float *)(p[0] + i * s[0]) = f32_unary(op, *(const float *)(p[1] + i * s[1]));
  }
}

typedef struct {
  cb_unop op;
  cb_dtype out_dtype;
} unary_ctx;

/* int64 input; output int64, or bool for logical_not. */
static void unary_i64_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const unary_ctx *u = ctx;
  for (int64_t i = 0; i < n; i++) {
    int64_t r = i64_unary(u->op, *(const int64_t *)(p[1] + i * s[1]));
    if (u->out_dtype == CB_BOOL) *(uint8_t *)(p[0] + i * s[0]) = (uint8_t)r;
    else *(int64_t *)(p[0] + i * s[0]) = r;
  }
}

static void logical_not_f32_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  (void)ctx;
  for (int64_t i = 0; i < n; i++)
    *(uint8_t *)(p[0] + i * s[0]) = *(const float *)(p[1] + i * s[1]) == 0;
}

ALWAYS_INLINE void binary_f32_loop(cb_binop op, int64_t n, char **p, const int64_t *s) {
  float *o = (float *)p[0];
  const float *a = (const float *)p[1], *b = (const float *)p[2];
  if (s[0] == 4 && s[1] == 4 && s[2] == 4) {
    for (int64_t i = 0; i < n; i++) o[i] = f32_binary(op, a[i], b[i]);
  } else if (s[0] == 4 && s[1] == 4 && s[2] == 0) {
    const float bv = *b;
    for (int64_t i = 0; i < n; i++) o[i] = f32_binary(op, a[i], bv);
  } else if (s[0] == 4 && s[1] == 0 && s[2] == 4) {
    const float av = *a;
    for (int64_t i = 0; i < n; i++) o[i] = f32_binary(op, av, b[i]);
  } else {
    for (int64_t i = 0; i < n; i++)
      *(float *)(p[0] + i * s[0]) = f32_binary(op, *(const float *)(p[1] + i * s[1]),
                                               *(const float *)(p[2] + i * s[2]));
  }
}

static void binary_f32_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_binop op = *(const cb_binop *)ctx;
  switch (op) {
  case CB_ADD: binary_f32_loop(CB_ADD, n, p, s); break;
  case CB_SUB: binary_f32_loop(CB_SUB, n, p, s); break;
  case CB_MUL: binary_f32_loop(CB_MUL, n, p, s); break;
  case CB_DIV: binary_f32_loop(CB_DIV, n, p, s); break;
  case CB_MAXIMUM: binary_f32_loop(CB_MAXIMUM, n, p, s); break;
  case CB_MINIMUM: binary_f32_loop(CB_MINIMUM, n, p, s); break;
  default: binary_f32_loop(op, n, p, s); break;
  }
}

static void binary_i64_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_binop op = *(const cb_binop *)ctx;
  for (int64_t i = 0; i < n; i++)
    *(int64_t *)(p[0] + i * s[0]) = i64_binary(op, *(const int64_t *)(p[1] + i * s[1]),
                                               *(const int64_t *)(p[2] + i * s[2]));
}

/* Comparisons and logical operations: bool output. */
static void compare_f32_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_binop op = *(const cb_binop *)ctx;
  for (int64_t i = 0; i < n; i++)
    *(uint8_t *)(p[0] + i * s[0]) = (uint8_t)f32_binary(
        op, *(const float *)(p[1] + i * s[1]), *(const float *)(p[2] + i * s[2]));
}

static void compare_i64_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_binop op = *(const cb_binop *)ctx;
  for (int64_t i = 0; i < n; i++)
    *(uint8_t *)(p[0] + i * s[0]) = (uint8_t)i64_binary(
        op, *(const int64_t *)(p[1] + i * s[1]), *(const int64_t *)(p[2] + i * s[2]));
}

/* ---- drivers ---- */

/* Checks that out has exactly shape (ndim, shape) and dtype. */
static cb_status check_out(const char *op, const cb_tensor *out, int ndim,
                           const int64_t *shape, cb_dtype dtype) {
  bool same = out->ndim == ndim;
  for (int d = 0; same && d < ndim; d++) same = out->shape[d] == shape[d];
  if (!same) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "%s: output has shape %s, the result has shape %s", op,
                   cb_shape_str(a, 128, out->ndim, out->shape), cb_shape_str(b, 128, ndim, shape));
  }
  if (out->dtype != dtype)
    return cb_fail(CB_ETYPE, "%s: output is %s, the result is %s", op,
                   cb_dtype_name(out->dtype), cb_dtype_name(dtype));
  if (cb_tensor_overlaps(out))
    return cb_fail(CB_EINVAL, "%s: output is an expanded view whose elements overlap", op);
  return CB_OK;
}

cb_status cb_unary_into(cb_tensor *out, cb_unop op, const cb_tensor *a) {
  if ((unsigned)op >= CB_NUM_UNARY) return cb_fail(CB_EINVAL, "unary: invalid op %d", (int)op);
  const char *name = cb_unop_name(op);
  cb_dtype compute = unary_compute_dtype(op, a->dtype);
  cb_dtype result = cb_unary_result_dtype(op, a->dtype);
  cb_status st = check_out(name, out, a->ndim, a->shape, result);
  if (st != CB_OK) return st;
  cb_tensor *input;
  if ((st = cb_tensor_to_dtype(&input, a, compute)) != CB_OK) return st;
  cb_tensor_bump_version(out);
  const cb_tensor *ops[2] = {out, input};
  cb_iter it;
  cb_iter_init(&it, 2, ops, out->ndim, out->shape);
  unary_ctx ctx = {op, result};
  if (compute == CB_INT64) cb_iter_run(&it, unary_i64_row, &ctx);
  else if (op == CB_LOGICAL_NOT) cb_iter_run(&it, logical_not_f32_row, NULL);
  else cb_iter_run(&it, unary_f32_row, &op);
  cb_tensor_release(input);
  return CB_OK;
}

/* ---- gradients of the unary functions ---- */

/* d(op)/dx times g, from the input x and the output y. */
static inline float unary_grad(cb_unop op, float g, float x, float y) {
  switch (op) {
  case CB_NEG: return -g;
  case CB_ABS: return x > 0 ? g : x < 0 ? -g : 0.0f;
  case CB_RELU: return x > 0 ? g : 0.0f;
  case CB_EXP: return g * y;
  case CB_LOG: return g / x;
  case CB_SQRT: return g * 0.5f / y;
  case CB_RSQRT: return -0.5f * g * y * y * y;
  case CB_SIGMOID: return g * y * (1.0f - y);
  case CB_TANH: return g * (1.0f - y * y);
  case CB_SIN: return g * cosf(x);
  case CB_COS: return -g * sinf(x);
  case CB_RECIPROCAL: return -g * y * y;
  default: return 0.0f; /* sign, floor, ceil, round: flat almost everywhere */
  }
}

/* Branch-free, so it vectorises (signs are random: branches mispredict). */
CB_VECTOR_CLONES static void relu_grad_contiguous(int64_t n, float *restrict gin,
                                                  const float *restrict g,
                                                  const float *restrict x) {
  for (int64_t i = 0; i < n; i++) gin[i] = x[i] > 0.0f ? g[i] : 0.0f;
}

/* operands: grad_in, g, x, y */
static void unary_grad_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_unop op = *(const cb_unop *)ctx;
  if (op == CB_RELU && s[0] == 4 && s[1] == 4 && s[2] == 4) { /* the hot one in CNNs */
    relu_grad_contiguous(n, (float *)p[0], (const float *)p[1], (const float *)p[2]);
    return;
  }
  for (int64_t i = 0; i < n; i++)
    *(float *)(p[0] + i * s[0]) =
        unary_grad(op, *(const float *)(p[1] + i * s[1]), *(const float *)(p[2] + i * s[2]),
                   *(const float *)(p[3] + i * s[3]));
}

static const char *const unary_backward_names[CB_NUM_UNARY] = {
    "NegBackward", "AbsBackward", "SignBackward", "FloorBackward", "CeilBackward",
    "RoundBackward", "ReluBackward", "ExpBackward", "LogBackward", "SqrtBackward",
    "RsqrtBackward", "SigmoidBackward", "TanhBackward", "SinBackward", "CosBackward",
    "ReciprocalBackward", "LogicalNotBackward"};

static cb_status unary_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *x, *y;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &y)) != CB_OK)
    return st;
  if ((st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) != CB_OK) return st;
  const cb_tensor *ops[4] = {grad_in[0], g, x, y};
  cb_iter it;
  cb_iter_init(&it, 4, ops, x->ndim, x->shape);
  cb_iter_run(&it, unary_grad_row, CB_NODE_CTX(node, cb_unop));
  return CB_OK;
}

cb_status cb_unary(cb_tensor **out, cb_unop op, const cb_tensor *a) {
  if ((unsigned)op >= CB_NUM_UNARY) return cb_fail(CB_EINVAL, "unary: invalid op %d", (int)op);
  cb_status st = cb_tensor_empty_same_layout(out, a, cb_unary_result_dtype(op, a->dtype));
  if (st != CB_OK) return st;
  if ((st = cb_unary_into(*out, op, a)) != CB_OK) return cb_release_on_error(st, out);
  if ((*out)->dtype != CB_FLOAT32) return CB_OK;
  const cb_tensor *save[2] = {a, *out};
  cb_node *node;
  st = cb_record(*out, unary_backward_names[op], unary_backward, 1, &a, 2, save, &node);
  if (node) *CB_NODE_CTX(node, cb_unop) = op;
  return cb_release_on_error(st, out);
}

static void find_zero_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  bool *found = ctx;
  for (int64_t i = 0; i < n; i++) *found |= *(const int64_t *)(p[0] + i * s[0]) == 0;
}

static bool has_zero_int64(const cb_tensor *t) {
  bool found = false;
  cb_iter it;
  cb_iter_init(&it, 1, &t, t->ndim, t->shape);
  cb_iter_run_serial(&it, find_zero_row, &found);
  return found;
}

cb_status cb_binary_into(cb_tensor *out, cb_binop op, const cb_tensor *a,
                         const cb_tensor *b) {
  if ((unsigned)op >= CB_NUM_BINARY) return cb_fail(CB_EINVAL, "binary: invalid op %d", (int)op);
  const char *name = cb_binop_name(op);
  const cb_tensor *inputs[2] = {a, b};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_status st = cb_broadcast_shapes(name, 2, inputs, &ndim, shape);
  if (st != CB_OK) return st;
  cb_dtype compute = binary_compute_dtype(op, a->dtype, b->dtype);
  if ((st = check_out(name, out, ndim, shape, cb_binary_result_dtype(op, a->dtype, b->dtype))) != CB_OK)
    return st;
  cb_tensor *ca = NULL, *cbt = NULL;
  if ((st = cb_tensor_to_dtype(&ca, a, compute)) != CB_OK) return st;
  if ((st = cb_tensor_to_dtype(&cbt, b, compute)) != CB_OK) {
    cb_tensor_release(ca);
    return st;
  }
  if (op == CB_REMAINDER && compute == CB_INT64 && has_zero_int64(cbt)) {
    cb_tensor_release(ca);
    cb_tensor_release(cbt);
    return cb_fail(CB_EINVAL, "remainder: integer remainder by zero");
  }
  cb_tensor_bump_version(out);
  const cb_tensor *ops[3] = {out, ca, cbt};
  cb_iter it;
  cb_iter_init(&it, 3, ops, ndim, shape);
  if (binop_gives_bool(op))
    cb_iter_run(&it, compute == CB_FLOAT32 ? compare_f32_row : compare_i64_row, &op);
  else
    cb_iter_run(&it, compute == CB_FLOAT32 ? binary_f32_row : binary_i64_row, &op);
  cb_tensor_release(ca);
  cb_tensor_release(cbt);
  return CB_OK;
}

/* ---- gradients of the binary operations ---- */

/* d(a op b)/da (which == 0) or d/db (which == 1), times g. */
static inline float binary_grad(cb_binop op, int which, float g, float a, float b) {
  switch (op) {
  case CB_ADD: return g;
  case CB_SUB: return which == 0 ? g : -g;
  case CB_MUL: return which == 0 ? g * b : g * a;
  case CB_DIV: return which == 0 ? g / b : -g * a / (b * b);
  case CB_POW:
    if (which == 0) return b == 0.0f ? 0.0f : g * b * powf(a, b - 1.0f);
    return a > 0 ? g * powf(a, b) * logf(a) : 0.0f;
  case CB_MAXIMUM: /* ties share the gradient, as in PyTorch */
    return (which == 0 ? a > b : b > a) ? g : a == b ? 0.5f * g : 0.0f;
  case CB_MINIMUM:
    return (which == 0 ? a < b : b < a) ? g : a == b ? 0.5f * g : 0.0f;
  case CB_REMAINDER: /* d/da = 1, d/db = -floor(a / b) */
    return which == 0 ? g : -g * floorf(a / b);
  default: return 0.0f;
  }
}

typedef struct {
  cb_binop op;
  int which;
} binary_grad_ctx;

/* operands: grad (broadcast shape), g, a, b */
static void binary_grad_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const binary_grad_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++)
    *(float *)(p[0] + i * s[0]) =
        binary_grad(c->op, c->which, *(const float *)(p[1] + i * s[1]),
                    *(const float *)(p[2] + i * s[2]), *(const float *)(p[3] + i * s[3]));
}

static const char *const binary_backward_names[] = {
    "AddBackward", "SubBackward", "MulBackward", "DivBackward", "PowBackward",
    "MaximumBackward", "MinimumBackward", "RemainderBackward"};

static cb_status binary_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *a, *b;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &a)) != CB_OK || (st = cb_node_saved(node, 1, &b)) != CB_OK)
    return st;
  cb_binop op = *CB_NODE_CTX(node, cb_binop);
  for (int which = 0; which < 2 && st == CB_OK; which++) {
    if (!cb_node_needs_grad(node, which)) continue;
    /* d(a + b)/da = d(a + b)/db = d(a - b)/da = 1: the gradient passes
     * through as it is (shared; autograd copies it before adding into it) */
    const struct cb_edge *in = &node->inputs[which];
    if ((op == CB_ADD || (op == CB_SUB && which == 0)) && in->ndim == g->ndim &&
        !memcmp(in->shape, g->shape, sizeof(int64_t) * (size_t)g->ndim)) {
      grad_in[which] = cb_tensor_retain((cb_tensor *)g);
      continue;
    }
    cb_tensor *full;
    if ((st = cb_tensor_empty_same_layout(&full, g, CB_FLOAT32)) != CB_OK) break;
    const cb_tensor *ops[4] = {full, g, a, b};
    cb_iter it;
    cb_iter_init(&it, 4, ops, g->ndim, g->shape);
    binary_grad_ctx ctx = {op, which};
    cb_iter_run(&it, binary_grad_row, &ctx);
    st = cb_sum_to_shape(&grad_in[which], full, node->inputs[which].ndim,
                         node->inputs[which].shape);
    cb_tensor_release(full);
  }
  return st;
}

/* The result of a binary op: in the memory order of an operand that already
 * has the result's shape (as PyTorch does), so channel-major activations
 * stay channel-major; else contiguous. */
static cb_status result_like_inputs(cb_tensor **out, const cb_tensor *a, const cb_tensor *b,
                                    int ndim, const int64_t *shape, cb_dtype dtype) {
  const cb_tensor *like = NULL;
  for (int i = 0; i < 2 && !like; i++) {
    const cb_tensor *t = i == 0 ? a : b;
    bool same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (same) like = t;
  }
  if (like) return cb_tensor_empty_same_layout(out, like, dtype);
  return cb_tensor_empty(out, ndim, shape, dtype);
}

cb_status cb_binary(cb_tensor **out, cb_binop op, const cb_tensor *a, const cb_tensor *b) {
  if ((unsigned)op >= CB_NUM_BINARY) return cb_fail(CB_EINVAL, "binary: invalid op %d", (int)op);
  const cb_tensor *inputs[2] = {a, b};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_status st = cb_broadcast_shapes(cb_binop_name(op), 2, inputs, &ndim, shape);
  if (st != CB_OK) return st;
  st = result_like_inputs(out, a, b, ndim, shape, cb_binary_result_dtype(op, a->dtype, b->dtype));
  if (st != CB_OK) return st;
  if ((st = cb_binary_into(*out, op, a, b)) != CB_OK) return cb_release_on_error(st, out);
  if ((*out)->dtype != CB_FLOAT32 || !cb_needs_record(2, inputs)) return CB_OK;
  /* the backward reads both operands as float32 */
  cb_tensor *fa = NULL, *fb = NULL;
  cb_node *node = NULL;
  if ((st = cb_tensor_to_dtype(&fa, a, CB_FLOAT32)) == CB_OK &&
      (st = cb_tensor_to_dtype(&fb, b, CB_FLOAT32)) == CB_OK) {
    const cb_tensor *save[2] = {fa, fb};
    st = cb_record(*out, binary_backward_names[op], binary_backward, 2, inputs, 2, save, &node);
    if (node) *CB_NODE_CTX(node, cb_binop) = op;
  }
  cb_tensor_release(fa);
  cb_tensor_release(fb);
  return cb_release_on_error(st, out);
}

cb_status cb_binary_scalar(cb_tensor **out, cb_binop op, const cb_tensor *a,
                           double scalar, bool scalar_is_integer) {
  cb_dtype sdtype = (scalar_is_integer && a->dtype != CB_FLOAT32) ? CB_INT64 : CB_FLOAT32;
  cb_tensor *s;
  cb_status st = cb_tensor_scalar(&s, scalar, sdtype);
  if (st != CB_OK) return st;
  st = cb_binary(out, op, a, s);
  cb_tensor_release(s);
  return st;
}

/* ---- clamp ---- */

typedef struct {
  double low, high;
} clamp_ctx;

static void clamp_f32_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const clamp_ctx *c = ctx;
  float lo = (float)c->low, hi = (float)c->high;
  for (int64_t i = 0; i < n; i++) {
    float x = *(const float *)(p[1] + i * s[1]);
    x = x < lo ? lo : x; /* NaN stays NaN */
    *(float *)(p[0] + i * s[0]) = x > hi ? hi : x;
  }
}

static void clamp_i64_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const clamp_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    double x = (double)*(const int64_t *)(p[1] + i * s[1]);
    x = x < c->low ? ceil(c->low) : x;
    *(int64_t *)(p[0] + i * s[0]) = (int64_t)(x > c->high ? floor(c->high) : x);
  }
}

cb_status cb_clamp_into(cb_tensor *out, const cb_tensor *a, double low, double high) {
  if (low > high) return cb_fail(CB_EINVAL, "clamp: min %g is greater than max %g", low, high);
  cb_dtype compute = a->dtype == CB_FLOAT32 ? CB_FLOAT32 : CB_INT64;
  cb_status st = check_out("clamp", out, a->ndim, a->shape, compute);
  if (st != CB_OK) return st;
  cb_tensor *input;
  if ((st = cb_tensor_to_dtype(&input, a, compute)) != CB_OK) return st;
  cb_tensor_bump_version(out);
  const cb_tensor *ops[2] = {out, input};
  cb_iter it;
  cb_iter_init(&it, 2, ops, out->ndim, out->shape);
  clamp_ctx ctx = {low, high};
  cb_iter_run(&it, compute == CB_FLOAT32 ? clamp_f32_row : clamp_i64_row, &ctx);
  cb_tensor_release(input);
  return CB_OK;
}

/* operands: grad_in, g, x; the gradient passes where low <= x <= high */
static void clamp_grad_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  const clamp_ctx *c = ctx;
  for (int64_t i = 0; i < n; i++) {
    float x = *(const float *)(p[2] + i * s[2]);
    *(float *)(p[0] + i * s[0]) =
        (x >= c->low && x <= c->high) ? *(const float *)(p[1] + i * s[1]) : 0.0f;
  }
}

static cb_status clamp_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *x;
  cb_status st = cb_node_saved(node, 0, &x);
  if (st != CB_OK || (st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) != CB_OK) return st;
  const cb_tensor *ops[3] = {grad_in[0], g, x};
  cb_iter it;
  cb_iter_init(&it, 3, ops, x->ndim, x->shape);
  cb_iter_run(&it, clamp_grad_row, CB_NODE_CTX(node, clamp_ctx));
  return CB_OK;
}

cb_status cb_clamp(cb_tensor **out, const cb_tensor *a, double low, double high) {
  cb_status st = cb_tensor_empty_same_layout(out, a, a->dtype == CB_FLOAT32 ? CB_FLOAT32 : CB_INT64);
  if (st != CB_OK) return st;
  if ((st = cb_clamp_into(*out, a, low, high)) != CB_OK) return cb_release_on_error(st, out);
  cb_node *node;
  st = cb_record(*out, "ClampBackward", clamp_backward, 1, &a, 1, &a, &node);
  if (node) *CB_NODE_CTX(node, clamp_ctx) = (clamp_ctx){low, high};
  return cb_release_on_error(st, out);
}

/* ---- where ---- */

static void where_row(void *ctx, int64_t n, char **p, const int64_t *s) {
  cb_dtype cond_dtype = ((const cb_dtype *)ctx)[0], dtype = ((const cb_dtype *)ctx)[1];
  int64_t esize = cb_dtype_size(dtype);
  for (int64_t i = 0; i < n; i++) {
    bool c = cond_dtype == CB_BOOL || cond_dtype == CB_UINT8
                 ? *(const uint8_t *)(p[1] + i * s[1]) != 0
                 : cb_load(p[1] + i * s[1], cond_dtype) != 0;
    memcpy(p[0] + i * s[0], c ? p[2] + i * s[2] : p[3] + i * s[3], (size_t)esize);
  }
}

/* The gradient goes to a where cond holds, to b elsewhere. */
static cb_status where_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *cond;
  cb_status st = cb_node_saved(node, 0, &cond);
  cb_tensor *zero = NULL;
  if (st == CB_OK) st = cb_tensor_scalar(&zero, 0, CB_FLOAT32);
  for (int which = 0; which < 2 && st == CB_OK; which++) {
    if (!cb_node_needs_grad(node, which)) continue;
    cb_tensor *full;
    st = which == 0 ? cb_where(&full, cond, g, zero) : cb_where(&full, cond, zero, g);
    if (st != CB_OK) break;
    st = cb_sum_to_shape(&grad_in[which], full, node->inputs[which].ndim,
                         node->inputs[which].shape);
    cb_tensor_release(full);
  }
  cb_tensor_release(zero);
  return st;
}

cb_status cb_where(cb_tensor **out, const cb_tensor *cond, const cb_tensor *a,
                   const cb_tensor *b) {
  const cb_tensor *inputs[3] = {cond, a, b};
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_status st = cb_broadcast_shapes("where", 3, inputs, &ndim, shape);
  if (st != CB_OK) return st;
  cb_dtype dtype = binary_compute_dtype(CB_ADD, a->dtype, b->dtype);
  if (a->dtype == b->dtype) dtype = a->dtype;
  cb_tensor *ca = NULL, *cbt = NULL;
  if ((st = cb_tensor_to_dtype(&ca, a, dtype)) != CB_OK) return st;
  if ((st = cb_tensor_to_dtype(&cbt, b, dtype)) != CB_OK) goto done;
  if ((st = cb_tensor_empty(out, ndim, shape, dtype)) != CB_OK) goto done;
  const cb_tensor *ops[4] = {*out, cond, ca, cbt};
  cb_iter it;
  cb_iter_init(&it, 4, ops, ndim, shape);
  cb_dtype types[2] = {cond->dtype, dtype};
  cb_iter_run(&it, where_row, types);
  if (dtype == CB_FLOAT32) {
    cb_node *node;
    st = cb_record(*out, "WhereBackward", where_backward, 2, &inputs[1], 1, &cond, &node);
    cb_release_on_error(st, out);
  }
done:
  cb_tensor_release(ca);
  cb_tensor_release(cbt);
  return st;
}
