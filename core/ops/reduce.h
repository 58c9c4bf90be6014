/* Reductions over all dims or chosen dims, with keepdim.
 *
 * Sums, means and variances accumulate in double, so results do not depend
 * on the thread count beyond the last float32 rounding. max/min propagate
 * NaN, as PyTorch does; their indices are the first position of the extreme
 * value along the reduced dims (flattened, when several). */
#ifndef CB_REDUCE_H
#define CB_REDUCE_H

#include "tensor/tensor.h"

typedef enum {
  CB_SUM, CB_MEAN, CB_PROD, CB_MAX, CB_MIN, CB_ARGMAX, CB_ARGMIN, CB_VAR, CB_STD,
  CB_NUM_REDUCE
} cb_reduceop;

const char *cb_reduceop_name(cb_reduceop op);

/* Reduces a over dims[0..ndims-1] (ndims == 0: over every dim). correction
 * is for var/std: 1 for the unbiased estimate (the default), 0 for the
 * population one. Result dtype: sum/prod keep int64 for integer inputs,
 * mean/var/std give float32, max/min keep a's dtype, argmax/argmin int64. */
cb_status cb_reduce(cb_tensor **out, cb_reduceop op, const cb_tensor *a,
                    int ndims, const int *dims, bool keepdim, int64_t correction);

/* max (or min) along one dim: values and int64 indices. */
cb_status cb_max_dim(cb_tensor **values, cb_tensor **indices, const cb_tensor *a,
                     int dim, bool keepdim, bool take_min);

/* Sums of contiguous float runs, accumulated in double in several
 * independent lanes (vectorised, and far more accurate than one float sum):
 * sum p[i];  sum (p[i] - shift)^2. */
double cb_sum_floats(const float *p, int64_t n);
double cb_sum_squared_deviations(const float *p, int64_t n, double shift);

/* Sums grad over broadcast dims so that it has (ndim, shape): the gradient
 * of a broadcast operand. A new reference to grad when shapes match. */
cb_status cb_sum_to_shape(cb_tensor **out, const cb_tensor *grad, int ndim,
                          const int64_t *shape);

#endif
