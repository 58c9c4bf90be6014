/* Optimizer updates, one parameter tensor at a time (the Lua optimizers keep
 * the state and call these). Parameters, gradients and state tensors must be
 * float32 and contiguous, of one shape. The formulas are PyTorch's. */
#ifndef CB_OPTIM_H
#define CB_OPTIM_H

#include "tensor/tensor.h"

typedef struct {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
} cb_sgd_options;

/* SGD with momentum:  d = g + wd p;
 *   buf = d on the first step, else buf = momentum buf + (1 - dampening) d;
 *   d = nesterov ? d + momentum buf : buf;   p -= lr d.
 * momentum_buffer may be NULL when momentum is 0. */
cb_status cb_sgd_step(cb_tensor *param, const cb_tensor *grad, cb_tensor *momentum_buffer,
                      bool first_step, const cb_sgd_options *options);

typedef struct {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled; /* AdamW: p *= 1 - lr wd, instead of adding wd p to g */
} cb_adam_options;

/* Adam (Kingma & Ba) with bias correction; step counts from 1:
 *   m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
cb_status cb_adam_step(cb_tensor *param, const cb_tensor *grad, cb_tensor *exp_avg,
                       cb_tensor *exp_avg_sq, int64_t step, const cb_adam_options *options);

#endif
