/* Neural-network kernels: forward and backward of each in one file (conv.c
 * with conv_direct.c, norm.c, pool.c, linear.c, activation.c, softmax.c),
 * all differentiable through autograd. Images are N x C x H x W tensors with
 * any strides; conv2d writes the CNHW image layout and every kernel keeps
 * the layout it is given (see "image layouts" in tensor/tensor.h), so a
 * network never pays for transposes between layers. */
#ifndef CB_NN_H
#define CB_NN_H

#include "tensor/generator.h"
#include "tensor/tensor.h"

/* ---- conv.c ---- */
typedef struct {
  int64_t stride[2], padding[2], dilation[2], groups;
  bool relu; /* the output is max(0, conv + bias): clamped as each worker writes its
              * images when no gradient is recorded, else by a ReLU op after */
} cb_conv_params;

/* x: N x C x H x W; weight: O x C/groups x kh x kw; bias: O or NULL. */
cb_status cb_conv2d(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                    const cb_tensor *bias, const cb_conv_params *params);

/* conv2d(max(0, batch_norm(x))) in one op (the middle of a ResNet basic
 * block), with cb_batch_norm's arguments (no sync) and cb_conv2d's
 * (params->relu false): the convolution normalises x as it reads it, so the
 * batch norm's output is never written nor kept for backward, which
 * recomputes it. The values and gradients of the three ops to float rounding. */
cb_status cb_batch_norm_relu_conv2d(cb_tensor **out, const cb_tensor *x, const cb_tensor *bn_weight,
                                    const cb_tensor *bn_bias, cb_tensor *running_mean,
                                    cb_tensor *running_var, bool training, double momentum,
                                    double eps, const cb_tensor *weight, const cb_tensor *bias,
                                    const cb_conv_params *params);

/* max_pool2d(max(0, batch_norm(conv2d(x, weight, bias))), 2) in one op (the
 * seed CNN's first layer): conv2d's arguments (params->relu false), then
 * cb_batch_norm's (no sync). When x needs no gradient and the convolution
 * is direct, backward takes the convolution's weight gradient from the batch
 * norm's dx a stack of images at a time, never writing all of it. The values
 * and gradients of the four ops to float rounding. */
cb_status cb_conv2d_batch_norm_relu_pool(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                                         const cb_tensor *bias, const cb_conv_params *params,
                                         const cb_tensor *bn_weight, const cb_tensor *bn_bias,
                                         cb_tensor *running_mean, cb_tensor *running_var,
                                         bool training, double momentum, double eps);

/* ---- linear.c ---- */
/* y = x W^T + b for x: ... x in, W: out x in, b: out or NULL. */
cb_status cb_linear(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                    const cb_tensor *bias);

/* ---- norm.c ---- */
/* Sums count doubles over the processes of a data-parallel job, in place,
 * the same on every process (an MPI_Allreduce, supplied by the caller: the
 * core knows no MPI). Every process must call it the same number of times. */
typedef struct {
  void (*sum)(void *ctx, double *values, int64_t count);
  void *ctx;
} cb_reducer;

/* Batch normalisation over every dim but dim 1 (N x C or N x C x H x W).
 * Training: batch statistics, and running_mean/var (if given) move by
 * momentum towards them (the variance unbiased, as PyTorch does).
 * Evaluation: the running statistics. weight/bias may be NULL. relu: the
 * output is max(0, .), the ReLU that follows most batch norms, computed in
 * the same passes forward and backward (the gradient is masked by the
 * output's sign) instead of two more passes over memory each way. residual
 * (NULL for none; the input's shape, any layout): added before the ReLU,
 * y = max(0, batch norm(x) + residual), the end of a ResNet block; it gets
 * the masked gradient. sync
 * (training only; NULL for none): synchronised batch norm, the statistics
 * and in backward the gradient sums taken over every process's batch, so N
 * processes train as one with their batches together. */
cb_status cb_batch_norm(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                        const cb_tensor *bias, cb_tensor *running_mean,
                        cb_tensor *running_var, bool training, double momentum,
                        double eps, bool relu, const cb_tensor *residual,
                        const cb_reducer *sync);
/* max_pool2d(max(0, batch norm(x)), 2x2 windows, stride 2) in one pass forward
 * and backward: the batch norm's output is never written (norm.c says how).
 * x: N x C x H x W with H, W >= 2; the values and gradients of the three
 * ops, to float rounding (the order of the gradient sums, and an ulp where
 * short rows are computed with or without fused multiply-adds). */
cb_status cb_batch_norm_relu_pool(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                                  const cb_tensor *bias, cb_tensor *running_mean,
                                  cb_tensor *running_var, bool training, double momentum, double eps,
                                  const cb_reducer *sync);


/* ---- pool.c ---- */
typedef struct {
  int64_t kernel[2], stride[2], padding[2];
  bool count_include_pad; /* avg_pool2d: padding zeros count (PyTorch's default) */
} cb_pool_params;

cb_status cb_max_pool2d(cb_tensor **out, const cb_tensor *x, const cb_pool_params *params);
cb_status cb_avg_pool2d(cb_tensor **out, const cb_tensor *x, const cb_pool_params *params);
/* Averages into an out_h x out_w grid of (overlapping) windows, as
 * PyTorch's adaptive_avg_pool2d; 1 x 1 is global average pooling. */
cb_status cb_adaptive_avg_pool2d(cb_tensor **out, const cb_tensor *x, int64_t out_h,
                                 int64_t out_w);

/* ---- activation.c ---- */
typedef enum {
  CB_ACT_LEAKY_RELU, /* param: negative slope */
  CB_ACT_GELU,       /* exact (erf) form */
  CB_ACT_SOFTPLUS,   /* param: beta; linear above threshold 20 / beta */
  CB_NUM_ACT
} cb_actop;

cb_status cb_activation(cb_tensor **out, cb_actop op, const cb_tensor *x, double param);
/* Zeroes each element with probability p and scales the rest by 1/(1-p) in
 * training; the identity otherwise. */
cb_status cb_dropout(cb_tensor **out, const cb_tensor *x, double p, bool training,
                     cb_generator *g);

/* ---- softmax.c ---- */
cb_status cb_softmax(cb_tensor **out, const cb_tensor *x, int dim, bool log);

typedef enum { CB_REDUCE_MEAN, CB_REDUCE_SUM, CB_REDUCE_NONE } cb_reduction;

/* Cross-entropy of logits (N x C) against int64 class labels (N), as
 * PyTorch's F.cross_entropy: with class weights w (C, or NULL) and label
 * smoothing e, sample i costs
 *   (1 - e) w[y_i] (-log p_i[y_i]) + e/C sum_c w[c] (-log p_i[c]);
 * "mean" divides the sum by sum_i w[y_i] (N without weights). */
cb_status cb_cross_entropy(cb_tensor **out, const cb_tensor *logits, const cb_tensor *target,
                           const cb_tensor *weight, double label_smoothing,
                           cb_reduction reduction);

#endif
