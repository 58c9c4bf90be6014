/* Batch norm's forward statistics and backward as parts, for an op that
 * applies the normalisation itself: batch norm + ReLU + conv2d (conv.c),
 * whose convolution normalises its input as it reads it, so the batch norm's
 * output is never written nor kept for backward. Internal to core/nn. */
#ifndef CB_NORM_PARTS_H
#define CB_NORM_PARTS_H

#include "tensor/tensor.h"

/* cb_batch_norm's checks and statistics without its output: *xd is x with
 * dense planes (x itself, or a copy), *stats the 2 x C floats mean, invstd
 * (the batch's in training, with running_mean/var moved; else the running
 * ones), *affine the 2 x C floats scale, shift of y = x * scale + shift. */
cb_status cb_batch_norm_prepare(const cb_tensor *x, const cb_tensor *weight, const cb_tensor *bias,
                                cb_tensor *running_mean, cb_tensor *running_var, bool training,
                                double momentum, double eps, cb_tensor **xd, cb_tensor **stats,
                                cb_tensor **affine);

/* The backward of y = max(0, batch norm(x)) from xd, stats and affine (as
 * above), gamma (the weight; NULL: none) and y's gradient: the gradients of
 * x, gamma and beta that need asks for, into grad_in[0..2]. The ReLU's mask
 * is y > 0 with y recomputed by cb_normalize_relu_run (conv_direct.h), the
 * operations that made the convolution's input. */
cb_status cb_batch_norm_relu_backward(const cb_tensor *xd, const cb_tensor *stats,
                                      const cb_tensor *gamma, const cb_tensor *affine, bool training,
                                      const cb_tensor *grad, const bool need[3], cb_tensor **grad_in);

#endif
