#include "nn/optim.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "tensor/threadpool.h"
#include "tensor/vectorize.h"

/* Elements below which one thread updates the whole group. */
#define PARALLEL_GRAIN 65536

/* One parameter of a group: its data, and where its elements begin in the
 * group's range [0, total). */
typedef struct {
  cb_tensor *param;
  float *p, *buf, *m, *v;
  const float *g;
  int64_t start;
  bool first;                          /* SGD: the buffer starts as d */
  float step_size, bias_correction2_sqrt; /* Adam, from this parameter's step */
} param_span;

typedef struct {
  const param_span *spans;
  int64_t count;
  cb_sgd_options sgd;
  cb_adam_options adam;
} group_job;

/* The SGD update of n elements (restrict: the tensors are distinct, so the
 * loop vectorises; the branches are the same for every element). */
CB_VECTOR_CLONES static void sgd_run(int64_t n, float *restrict p, const float *restrict g,
                                     float *restrict buf, bool first, const cb_sgd_options *o) {
  float lr = (float)o->lr, wd = (float)o->weight_decay, mu = (float)o->momentum;
  float keep = (float)(1.0 - o->dampening);
  if (!buf) {
    for (int64_t i = 0; i < n; i++) p[i] -= lr * (g[i] + wd * p[i]);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    float d = g[i] + wd * p[i];
    float b = first ? d : mu * buf[i] + keep * d;
    buf[i] = b;
    p[i] -= lr * (o->nesterov ? d + mu * b : b);
  }
}

CB_VECTOR_CLONES static void adam_run(int64_t n, float *restrict p, const float *restrict g,
                                      float *restrict m, float *restrict v, float step_size,
                                      float c2, const cb_adam_options *o) {
  float b1 = (float)o->beta1, b2 = (float)o->beta2, eps = (float)o->eps;
  float wd = (float)o->weight_decay, decay = (float)(1.0 - o->lr * o->weight_decay);
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i];
    if (o->decoupled) p[i] *= decay;
    else gi += wd * p[i];
    float mi = b1 * m[i] + (1 - b1) * gi;
    float vi = b2 * v[i] + (1 - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] -= step_size * mi / (sqrtf(vi) / c2 + eps);
  }
}

/* The last span that begins at or before element i (spans[0] begins at 0). */
static int64_t span_at(const group_job *j, int64_t i) {
  int64_t lo = 0, hi = j->count - 1;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo + 1) / 2;
    if (j->spans[mid].start <= i) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/* Elements [begin, end) of the group: the parts of the spans they cover. */
static void group_range(void *arg, int chunk, int64_t begin, int64_t end, bool adam) {
  (void)chunk;
  const group_job *j = arg;
  for (int64_t s = span_at(j, begin); s < j->count && j->spans[s].start < end; s++) {
    const param_span *sp = &j->spans[s];
    int64_t next = s + 1 < j->count ? j->spans[s + 1].start : end;
    int64_t lo = (begin > sp->start ? begin : sp->start) - sp->start;
    int64_t hi = (end < next ? end : next) - sp->start;
    if (hi <= lo) continue;
    if (adam)
      adam_run(hi - lo, sp->p + lo, sp->g + lo, sp->m + lo, sp->v + lo, sp->step_size,
               sp->bias_correction2_sqrt, &j->adam);
    else
      sgd_run(hi - lo, sp->p + lo, sp->g + lo, sp->buf ? sp->buf + lo : NULL, sp->first, &j->sgd);
  }
}
static void sgd_range(void *arg, int chunk, int64_t begin, int64_t end) {
  group_range(arg, chunk, begin, end, false);
}
static void adam_range(void *arg, int chunk, int64_t begin, int64_t end) {
  group_range(arg, chunk, begin, end, true);
}

static cb_status check_state(const char *op, int64_t index, const char *what,
                             const cb_tensor *param, const cb_tensor *t) {
  if (t->dtype != CB_FLOAT32 || !cb_same_shape(t, param) || !cb_tensor_is_contiguous(t)) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "%s: parameter %lld: %s of shape %s (%s) does not fit the "
                   "parameter of shape %s; both must be contiguous float32", op,
                   (long long)index + 1, what, cb_shape_str(a, 128, t->ndim, t->shape),
                   cb_dtype_name(t->dtype), cb_shape_str(b, 128, param->ndim, param->shape));
  }
  return CB_OK;
}

static cb_status check_grad(const char *op, int64_t index, const cb_tensor *param,
                            const cb_tensor *grad) {
  if (!param || !grad) return cb_fail(CB_EINVAL, "%s: parameter %lld: needs a parameter and "
                                      "its gradient", op, (long long)index + 1);
  if (grad->dtype != CB_FLOAT32 || !cb_same_shape(grad, param) || param->dtype != CB_FLOAT32 ||
      !cb_tensor_is_contiguous(param)) {
    char a[128], b[128];
    return cb_fail(CB_ESHAPE, "%s: parameter %lld: gradient of shape %s does not fit the "
                   "parameter of shape %s (both float32, the parameter contiguous)", op,
                   (long long)index + 1, cb_shape_str(a, 128, grad->ndim, grad->shape),
                   cb_shape_str(b, 128, param->ndim, param->shape));
  }
  return CB_OK;
}

/* The bytes [lo, hi) one tensor of an entry occupies: what (a name for
 * errors) of parameter `index`, written by the update or only read. */
typedef struct {
  uintptr_t lo, hi;
  int64_t index;
  const char *what;
  bool written;
} extent;

static int by_start(const void *a, const void *b) {
  const extent *x = a, *y = b;
  return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static cb_status shared_memory(const char *op, const extent *a, const extent *b) {
  if (a->index > b->index || (a->index == b->index && !a->written)) {
    const extent *t = a;
    a = b;
    b = t;
  }
  return cb_fail(CB_EINVAL, "%s: parameter %lld's %s and parameter %lld's %s share memory%s", op,
                 (long long)a->index + 1, a->what, (long long)b->index + 1, b->what,
                 a->written && b->written && a->index != b->index ? " (a parameter listed twice?)"
                                                                  : "");
}

/* The workers update the group's elements at once, each reading its
 * gradients and writing its parameters and state: no memory an update
 * writes may be read or written by another (or the result would depend on
 * the order), so any such overlap is an error, as a parameter listed twice
 * is in PyTorch. Sorted by start, an extent overlaps an earlier one iff it
 * starts before the largest end seen so far: of the written ones, or (when
 * it is written itself) of all. extents has room for 4 per entry. */
static cb_status check_distinct(const char *op, int64_t n, const param_span *spans,
                                extent *extents) {
  int64_t count = 0;
  for (int64_t i = 0; i < n; i++) {
    int64_t numel = spans[i + 1].start - spans[i].start;
    if (numel == 0) continue;
    const float *data[4] = {spans[i].p, spans[i].g, spans[i].buf ? spans[i].buf : spans[i].m,
                            spans[i].v};
    const char *what[4] = {"values", "gradient", spans[i].buf ? "momentum buffer" : "exp_avg",
                           "exp_avg_sq"};
    for (int k = 0; k < 4; k++)
      if (data[k])
        extents[count++] = (extent){(uintptr_t)data[k], (uintptr_t)(data[k] + numel), i, what[k],
                                    k != 1};
  }
  qsort(extents, (size_t)count, sizeof *extents, by_start);
  const extent *last_any = NULL, *last_written = NULL; /* the largest ends so far */
  for (int64_t i = 0; i < count; i++) {
    const extent *e = &extents[i];
    if (last_written && e->lo < last_written->hi) return shared_memory(op, last_written, e);
    if (e->written && last_any && e->lo < last_any->hi) return shared_memory(op, last_any, e);
    if (!last_any || e->hi > last_any->hi) last_any = e;
    if (e->written && (!last_written || e->hi > last_written->hi)) last_written = e;
  }
  return CB_OK;
}

/* The spans of a group (n + 1 of them: the last only marks the end), with
 * contiguous copies of strided gradients in copies[] (NULL where none). */
typedef struct {
  param_span *spans;
  cb_tensor **copies;
  extent *extents;
  int64_t n;
} group_data;

static cb_status group_alloc(const char *op, int64_t n, group_data *gd) {
  *gd = (group_data){.n = n};
  if (n < 0) return cb_fail(CB_EINVAL, "%s: %lld parameters", op, (long long)n);
  gd->spans = calloc((size_t)n + 1, sizeof *gd->spans);
  gd->copies = calloc((size_t)n + 1, sizeof *gd->copies);
  gd->extents = calloc(4 * ((size_t)n + 1), sizeof *gd->extents);
  if (!gd->spans || !gd->copies || !gd->extents)
    return cb_fail(CB_ENOMEM, "%s: out of memory for %lld parameters", op, (long long)n);
  return CB_OK;
}

static void group_free(group_data *gd) {
  for (int64_t i = 0; gd->copies && i < gd->n; i++) cb_tensor_release(gd->copies[i]);
  free(gd->spans);
  free(gd->copies);
  free(gd->extents);
}

/* Entry i's parameter and gradient into span i, after span i - 1. */
static cb_status group_add(const char *op, group_data *gd, int64_t i, cb_tensor *param,
                           const cb_tensor *grad) {
  cb_status st = check_grad(op, i, param, grad);
  if (st != CB_OK) return st;
  const cb_tensor *g = grad;
  if (!cb_tensor_is_contiguous(grad)) {
    if ((st = cb_tensor_contiguous(&gd->copies[i], grad)) != CB_OK) return st;
    g = gd->copies[i];
  }
  gd->spans[i].param = param;
  gd->spans[i].p = cb_tensor_data(param);
  gd->spans[i].g = cb_tensor_data(g);
  gd->spans[i + 1].start = gd->spans[i].start + cb_tensor_numel(param);
  return CB_OK;
}

/* The group's update, once every entry has passed its checks (st): no two
 * parameters may share memory; then the versions are bumped (autograd then
 * refuses graphs that saved the old values) and fn runs over all the
 * group's elements. gd is freed either way. */
static cb_status group_finish(const char *op, group_data *gd, cb_status st, group_job *job,
                              cb_range_fn fn) {
  if (st == CB_OK) st = check_distinct(op, gd->n, gd->spans, gd->extents);
  if (st == CB_OK) {
    for (int64_t i = 0; i < gd->n; i++) cb_tensor_bump_version(gd->spans[i].param);
    job->spans = gd->spans;
    job->count = gd->n;
    if (gd->n > 0) cb_parallel_for(gd->spans[gd->n].start, PARALLEL_GRAIN, fn, job);
  }
  group_free(gd);
  return st;
}

cb_status cb_sgd_step(int64_t n, const cb_sgd_param *params, const cb_sgd_options *o) {
  if (!(o->lr >= 0) || o->momentum < 0 || o->weight_decay < 0)
    return cb_fail(CB_EINVAL, "sgd: lr, momentum and weight_decay must be >= 0");
  if (o->nesterov && (o->momentum <= 0 || o->dampening != 0))
    return cb_fail(CB_EINVAL, "sgd: nesterov needs momentum > 0 and dampening 0");
  group_data gd;
  cb_status st = group_alloc("sgd", n, &gd);
  for (int64_t i = 0; st == CB_OK && i < n; i++) {
    const cb_sgd_param *e = &params[i];
    if ((st = group_add("sgd", &gd, i, e->param, e->grad)) != CB_OK) break;
    if (o->momentum > 0 && !e->momentum_buffer)
      st = cb_fail(CB_EINVAL, "sgd: parameter %lld: momentum needs a momentum buffer",
                   (long long)i + 1);
    else if (o->momentum > 0)
      st = check_state("sgd", i, "momentum buffer", e->param, e->momentum_buffer);
    if (st != CB_OK) break;
    gd.spans[i].buf = o->momentum > 0 ? cb_tensor_data(e->momentum_buffer) : NULL;
    gd.spans[i].first = e->first_step;
  }
  group_job job = {.sgd = *o};
  return group_finish("sgd", &gd, st, &job, sgd_range);
}

cb_status cb_adam_step(int64_t n, const cb_adam_param *params, const cb_adam_options *o) {
  if (!(o->lr >= 0) || !(o->eps >= 0) || o->weight_decay < 0 || !(o->beta1 >= 0 && o->beta1 < 1) ||
      !(o->beta2 >= 0 && o->beta2 < 1))
    return cb_fail(CB_EINVAL, "adam: needs lr >= 0, eps >= 0, weight_decay >= 0, betas in [0, 1)");
  group_data gd;
  cb_status st = group_alloc("adam", n, &gd);
  for (int64_t i = 0; st == CB_OK && i < n; i++) {
    const cb_adam_param *e = &params[i];
    if (e->step < 1)
      st = cb_fail(CB_EINVAL, "adam: parameter %lld: steps count from 1, got %lld",
                   (long long)i + 1, (long long)e->step);
    else if (!e->exp_avg || !e->exp_avg_sq)
      st = cb_fail(CB_EINVAL, "adam: parameter %lld: needs both moment tensors", (long long)i + 1);
    if (st != CB_OK || (st = group_add("adam", &gd, i, e->param, e->grad)) != CB_OK ||
        (st = check_state("adam", i, "exp_avg", e->param, e->exp_avg)) != CB_OK ||
        (st = check_state("adam", i, "exp_avg_sq", e->param, e->exp_avg_sq)) != CB_OK)
      break;
    param_span *sp = &gd.spans[i];
    sp->m = cb_tensor_data(e->exp_avg);
    sp->v = cb_tensor_data(e->exp_avg_sq);
    sp->step_size = (float)(o->lr / (1.0 - pow(o->beta1, (double)e->step)));
    sp->bias_correction2_sqrt = (float)sqrt(1.0 - pow(o->beta2, (double)e->step));
  }
  group_job job = {.adam = *o};
  return group_finish("adam", &gd, st, &job, adam_range);
}
