#include "nn/optim.h"

#include <math.h>
#include <stddef.h>

#include "tensor/threadpool.h"

#define PARALLEL_GRAIN 65536

static cb_status check_state(const char *op, const char *what, const cb_tensor *param,
                             const cb_tensor *t) {
  if (!t) return CB_OK;
  if (t->dtype != CB_FLOAT32 || !cb_same_shape(t, param) || !cb_tensor_is_contiguous(t)) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "%s: %s of shape %s (%s) does not fit the parameter of shape %s; "
                   "both must be contiguous float32", op, what,
                   cb_shape_str(a, 128, t->ndim, t->shape), cb_dtype_name(t->dtype),
                   cb_shape_str(b, 128, param->ndim, param->shape));
  }
  return CB_OK;
}

typedef struct {
  float *p, *buf, *m, *v;
  const float *g;
  cb_sgd_options sgd;
  cb_adam_options adam;
  bool first;
  double step_size, bias_correction2_sqrt;
} update_job;

static void sgd_range(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const update_job *j = arg;
  float lr = (float)j->sgd.lr, wd = (float)j->sgd.weight_decay, mu = (float)j->sgd.momentum;
  float keep = (float)(1.0 - j->sgd.dampening);
  for (int64_t i = begin; i < end; i++) {
    float d = j->g[i] + wd * j->p[i];
    if (j->buf) {
      float b = j->first ? d : mu * j->buf[i] + keep * d;
      j->buf[i] = b;
      d = j->sgd.nesterov ? d + mu * b : b;
    }
    j->p[i] -= lr * d;
  }
}

static void adam_range(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const update_job *j = arg;
  const cb_adam_options *o = &j->adam;
  float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
  float wd = (float)o->weight_decay, decay = (float)(1.0 - o->lr * o->weight_decay);
  float step_size = (float)j->step_size, c2 = (float)j->bias_correction2_sqrt;
  for (int64_t i = begin; i < end; i++) {
    float g = j->g[i];
    if (o->decoupled) j->p[i] *= decay;
    else g += wd * j->p[i];
    float m = b1 * j->m[i] + (1 - b1) * g;
    float v = b2 * j->v[i] + (1 - b2) * g * g;
    j->m[i] = m;
    j->v[i] = v;
    j->p[i] -= step_size * m / (sqrtf(v) / c2 + eps);
  }
}

/* A contiguous view of grad (a copy only if it is strided). */
static cb_status contiguous_grad(const char *op, const cb_tensor *param, const cb_tensor *grad,
                                 cb_tensor **out) {
  if (grad->dtype != CB_FLOAT32 || !cb_same_shape(grad, param) || param->dtype != CB_FLOAT32 ||
      !cb_tensor_is_contiguous(param)) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "%s: gradient of shape %s does not fit the parameter of shape %s "
                   "(both float32, the parameter contiguous)", op,
                   cb_shape_str(a, 128, grad->ndim, grad->shape),
                   cb_shape_str(b, 128, param->ndim, param->shape));
  }
  return cb_tensor_contiguous(out, grad);
}

cb_status cb_sgd_step(cb_tensor *param, const cb_tensor *grad, cb_tensor *momentum_buffer,
                      bool first_step, const cb_sgd_options *o) {
  if (!(o->lr >= 0) || o->momentum < 0 || o->weight_decay < 0)
    return cb_fail(CB_EINVAL, "sgd: lr, momentum and weight_decay must be >= 0");
  if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    return cb_fail(CB_EINVAL, "sgd: nesterov needs momentum > 0 and dampening 0");
  if (o->momentum > 0 && !momentum_buffer)
    return cb_fail(CB_EINVAL, "sgd: momentum needs a momentum buffer");
  cb_tensor *g;
  cb_status st = check_state("sgd", "momentum buffer", param, momentum_buffer);
  if (st != CB_OK || (st = contiguous_grad("sgd", param, grad, &g)) != CB_OK) return st;
  update_job j = {.p = cb_tensor_data(param), .g = cb_tensor_data(g), .sgd = *o,
                  .buf = o->momentum > 0 ? cb_tensor_data(momentum_buffer) : NULL,
                  .first = first_step};
  cb_tensor_bump_version(param);
  cb_parallel_for(cb_tensor_numel(param), PARALLEL_GRAIN, sgd_range, &j);
  cb_tensor_release(g);
  return CB_OK;
}

cb_status cb_adam_step(cb_tensor *param, const cb_tensor *grad, cb_tensor *exp_avg,
                       cb_tensor *exp_avg_sq, int64_t step, const cb_adam_options *o) {
  if (!(o->lr >= 0) || !(o->eps >= 0) || o->weight_decay < 0 || !(o->beta1 >= 0 && o->beta1 < 1) ||
      !(o->beta2 >= 0 && o->beta2 < 1))
    return cb_fail(CB_EINVAL, "adam: needs lr >= 0, eps >= 0, weight_decay >= 0, betas in [0, 1)");
  if (step < 1) return cb_fail(CB_EINVAL, "adam: steps count from 1, got %lld", (long long)step);
  if (!exp_avg || !exp_avg_sq) return cb_fail(CB_EINVAL, "adam: needs both moment tensors");
  cb_tensor *g;
  cb_status st;
  if ((st = check_state("adam", "exp_avg", param, exp_avg)) != CB_OK ||
      (st = check_state("adam", "exp_avg_sq", param, exp_avg_sq)) != CB_OK ||
      (st = contiguous_grad("adam", param, grad, &g)) != CB_OK)
    return st;
  update_job j = {.p = cb_tensor_data(param), .g = cb_tensor_data(g), .m = cb_tensor_data(exp_avg),
                  .v = cb_tensor_data(exp_avg_sq), .adam = *o};
  j.step_size = o->lr / (1.0 - pow(o->beta1, (double)step));
  j.bias_correction2_sqrt = sqrt(1.0 - pow(o->beta2, (double)step));
  cb_tensor_bump_version(param);
  cb_parallel_for(cb_tensor_numel(param), PARALLEL_GRAIN, adam_range, &j);
  cb_tensor_release(g);
  return CB_OK;
}
