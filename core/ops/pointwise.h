/* Element-wise operations with NumPy broadcasting.
 *
 * Type rules (PyTorch's, restricted to cbnet's dtypes): if either operand is
 * float32 the computation is float32, otherwise int64 (uint8 and bool inputs
 * count as integers); div and the float-only unary functions (exp, log, ...)
 * always give float32; comparisons and logical operations give bool.
 *
 * Each operation has an allocating form, cb_X(&out, ...), and a form writing
 * into a caller-provided tensor, cb_X_into(out, ...), which must already
 * have the result's shape and dtype; out may be one of the inputs (in-place
 * update), which is how buffers are reused without per-call allocation. */
#ifndef CB_POINTWISE_H
#define CB_POINTWISE_H

#include "tensor/tensor.h"

typedef enum {
  CB_NEG, CB_ABS, CB_SIGN, CB_FLOOR, CB_CEIL, CB_ROUND, CB_RELU,
  /* float only: */
  CB_EXP, CB_LOG, CB_SQRT, CB_RSQRT, CB_SIGMOID, CB_TANH, CB_SIN, CB_COS,
  CB_RECIPROCAL,
  CB_LOGICAL_NOT, /* gives bool */
  CB_NUM_UNARY
} cb_unop;

typedef enum {
  CB_ADD, CB_SUB, CB_MUL, CB_DIV, CB_POW, CB_MAXIMUM, CB_MINIMUM,
  CB_REMAINDER, /* a - floor(a / b) * b: the sign of b, as Lua's % and PyTorch's */
  CB_EQ, CB_NE, CB_LT, CB_LE, CB_GT, CB_GE, CB_LOGICAL_AND, CB_LOGICAL_OR,
  CB_NUM_BINARY
} cb_binop;

const char *cb_unop_name(cb_unop op);
const char *cb_binop_name(cb_binop op);

/* The dtype of op's result for inputs of these dtypes. */
cb_dtype cb_unary_result_dtype(cb_unop op, cb_dtype a);
cb_dtype cb_binary_result_dtype(cb_binop op, cb_dtype a, cb_dtype b);

cb_status cb_unary(cb_tensor **out, cb_unop op, const cb_tensor *a);
cb_status cb_unary_into(cb_tensor *out, cb_unop op, const cb_tensor *a);
cb_status cb_binary(cb_tensor **out, cb_binop op, const cb_tensor *a,
                    const cb_tensor *b);
cb_status cb_binary_into(cb_tensor *out, cb_binop op, const cb_tensor *a,
                         const cb_tensor *b);
/* a op scalar, the scalar taking a's dtype class (an integer-valued scalar
 * with an int64 tensor stays int64). */
cb_status cb_binary_scalar(cb_tensor **out, cb_binop op, const cb_tensor *a,
                           double scalar, bool scalar_is_integer);

/* Clamps into [low, high]; pass -INFINITY / INFINITY to leave a side open. */
cb_status cb_clamp(cb_tensor **out, const cb_tensor *a, double low, double high);
cb_status cb_clamp_into(cb_tensor *out, const cb_tensor *a, double low,
                        double high);

/* cond ? a : b element-wise, all three broadcast together; cond is read as
 * "non-zero". */
cb_status cb_where(cb_tensor **out, const cb_tensor *cond, const cb_tensor *a,
                   const cb_tensor *b);

#endif
