/* Optimizer updates of a group of parameters that share their options, in
 * one call (the Lua optimizers keep the state and make one call per
 * parameter group). As PyTorch's "foreach" optimizers do, the group's
 * elements form one range that the pool's workers share: a net's hundred
 * small tensors cost one parallel loop, not a hundred calls each below the
 * loop's grain. Parameters, gradients and state tensors must be float32 and
 * contiguous (a strided gradient is copied), each state tensor of its
 * parameter's shape; no two parameters of a call may share memory. Every
 * entry is checked before any is updated. The formulas are PyTorch's. */
#ifndef CB_OPTIM_H
#define CB_OPTIM_H

#include "tensor/tensor.h"

typedef struct {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
} cb_sgd_options;

typedef struct {
  cb_tensor *param;
  const cb_tensor *grad;
  cb_tensor *momentum_buffer; /* NULL when momentum is 0 */
  bool first_step;            /* the buffer starts as d (no dampening) */
} cb_sgd_param;

/* SGD with momentum, for each of the n entries:  d = g + wd p;
 *   buf = d on the first step, else buf = momentum buf + (1 - dampening) d;
 *   d = nesterov ? d + momentum buf : buf;   p -= lr d. */
cb_status cb_sgd_step(int64_t n, const cb_sgd_param *params, const cb_sgd_options *options);

typedef struct {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled; /* AdamW: p *= 1 - lr wd, instead of adding wd p to g */
} cb_adam_options;

typedef struct {
  cb_tensor *param;
  const cb_tensor *grad;
  cb_tensor *exp_avg, *exp_avg_sq;
  int64_t step; /* this parameter's step, counting from 1 */
} cb_adam_param;

/* Adam (Kingma & Ba) with bias correction, for each of the n entries:
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
cb_status cb_adam_step(int64_t n, const cb_adam_param *params, const cb_adam_options *options);

#endif
