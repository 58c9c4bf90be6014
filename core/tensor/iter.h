/* Walking several strided tensors of one (broadcast) shape together.
 *
 * The pointwise kernels, copy and fill are all "for every index, combine the
 * elements of a few operands". cb_iter computes, for up to CB_ITER_MAX_OPS
 * operands, byte strides over the common shape (0 along broadcast dims),
 * merges dims that are contiguous for every operand, and hands the innermost
 * run to a row function, in parallel over the whole index space. */
#ifndef CB_ITER_H
#define CB_ITER_H

#include "tensor/tensor.h"

#define CB_ITER_MAX_OPS 4

typedef struct {
  int nops;
  int ndim; /* after merging; at least 1 */
  int64_t shape[CB_MAX_DIMS];
  int64_t stride[CB_ITER_MAX_OPS][CB_MAX_DIMS]; /* bytes */
  char *base[CB_ITER_MAX_OPS];
} cb_iter;

/* Broadcasts shapes NumPy-style into out_shape; op names the operation in
 * the error. */
cb_status cb_broadcast_shapes(const char *op, int n, const cb_tensor *const *ts,
                              int *out_ndim, int64_t *out_shape);

/* Sets up an iterator over ops[0..nops-1], each broadcast to (ndim, shape).
 * Operand 0 is usually the output. The caller checked broadcastability. */
void cb_iter_init(cb_iter *it, int nops, const cb_tensor *const *ops, int ndim,
                  const int64_t *shape);

/* row(ctx, n, ptrs, strides): n elements; ptrs[i] / strides[i] (bytes) of
 * operand i. */
typedef void (*cb_row_fn)(void *ctx, int64_t n, char **ptrs,
                          const int64_t *strides);

/* Runs row over the whole index space, split across the thread pool when
 * large enough. */
void cb_iter_run(const cb_iter *it, cb_row_fn row, void *ctx);
/* The same on the calling thread only (for scatters, whose rows may write to
 * the same element). */
void cb_iter_run_serial(const cb_iter *it, cb_row_fn row, void *ctx);

#endif
