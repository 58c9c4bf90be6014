/* Batch norm's forward statistics and backward as parts, for an op that
 * applies the normalisation itself: batch norm + ReLU + conv2d (conv.c),
 * whose convolution normalises its input as it reads it, so the batch norm's
 * output is never written nor kept for backward. Internal to core/nn. */
#ifndef CB_NORM_PARTS_H
#define CB_NORM_PARTS_H

#include "nn/conv_direct.h"
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

/* ---- conv2d + batch norm + ReLU + 2x2 max pooling (conv.c) ----
 * The batch norm's pooled form (cb_batch_norm_relu_pool, no synchronised
 * statistics) with its backward in parts, so that conv.c's fused op can take
 * dx a stack of images at a time into the convolution's weight gradient,
 * never writing all of it. */

/* What the pooled backward needs (references the caller releases by
 * cb_bn_pool_parts_release): x with dense planes, the statistics, gamma as
 * read (NULL: none), and per window the winner's code and centred input
 * (only when keep_windows was set: backward follows). */
typedef struct {
  bool keep_windows;
  cb_tensor *x, *mean, *invstd, *gamma, *winners, *deviations;
} cb_bn_pool_parts;

/* The longest rows of x the fused pooling takes (its row buffers). */
#define CB_BN_POOL_ROW_MAX 2048

/* maxpool(max(0, batch norm(x))) into *out, nothing recorded; rows of x up
 * to CB_BN_POOL_ROW_MAX. */
cb_status cb_batch_norm_relu_pool_forward(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                                          const cb_tensor *bias, cb_tensor *running_mean,
                                          cb_tensor *running_var, bool training, double momentum,
                                          double eps, cb_bn_pool_parts *parts);
void cb_bn_pool_parts_release(cb_bn_pool_parts *parts);

/* Backward from the parts (kept windows) and the pooled output's gradient:
 * the gradient sums over all of x, *dgamma and *dbeta when asked for, then
 * dx image by image (cb_bn_pool_grad_images, from any thread, any order)
 * until cb_bn_pool_grad_end. */
typedef struct cb_bn_pool_grad cb_bn_pool_grad;
cb_status cb_bn_pool_grad_begin(const cb_bn_pool_parts *parts, bool training, const cb_tensor *grad,
                                bool need_gamma, bool need_beta, cb_tensor **dgamma,
                                cb_tensor **dbeta, cb_bn_pool_grad **state);
/* dx of images [n0, n1) into dx (image n0 at dx.base; planes with dense rows). */
void cb_bn_pool_grad_images(const cb_bn_pool_grad *state, int64_t n0, int64_t n1, cb_planes dx);
void cb_bn_pool_grad_end(cb_bn_pool_grad *state);

#endif
