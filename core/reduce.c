#include "reduce.h"

#include <math.h>
#include <string.h>

#include "threadpool.h"

#define PARALLEL_GRAIN 32768

static const char *const reduce_names[CB_NUM_REDUCE] = {
    "sum", "mean", "prod", "max", "min", "argmax", "argmin", "var", "std"};

const char *cb_reduceop_name(cb_reduceop op) {
  return (unsigned)op < CB_NUM_REDUCE ? reduce_names[op] : "?";
}

/* The reduced dims of one output element: coalesced shape and byte strides. */
typedef struct {
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  int64_t stride[CB_MAX_DIMS];
  int64_t count; /* product of shape */
} span;

typedef struct {
  double sum;         /* sum, or sum of squared deviations for var */
  double prod;
  double best;        /* max or min so far */
  int64_t best_index; /* -1: none yet */
} accum;

static void accum_init(accum *a) {
  a->sum = 0;
  a->prod = 1;
  a->best = 0;
  a->best_index = -1;
}

static bool is_max_op(cb_reduceop op) { return op == CB_MAX || op == CB_ARGMAX; }
static bool is_extreme_op(cb_reduceop op) {
  return op == CB_MAX || op == CB_MIN || op == CB_ARGMAX || op == CB_ARGMIN;
}

/* Whether x replaces best: strictly better, or the first NaN. */
static inline bool better(bool want_max, double x, double best) {
  if (isnan(best)) return false;
  if (isnan(x)) return true;
  return want_max ? x > best : x < best;
}

/* Folds n elements at p (byte stride) with linear indices first.. into acc.
 * mean is used by var/std (second pass: squared deviations). */
static void accumulate_run(accum *acc, cb_reduceop op, cb_dtype dtype, const char *p,
                           int64_t n, int64_t stride, int64_t first, double mean) {
  if (dtype == CB_FLOAT32 && (op == CB_SUM || op == CB_MEAN)) {
    double s = 0;
    if (stride == 4) {
      /* eight independent partial sums: a dependency chain of one would
       * stall on the add latency and could not use vector lanes */
      const float *f = (const float *)p;
      double lanes[8] = {0};
      int64_t i = 0;
      for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) lanes[j] += f[i + j];
      for (; i < n; i++) s += f[i];
      for (int j = 0; j < 8; j++) s += lanes[j];
    } else {
      for (int64_t i = 0; i < n; i++) s += *(const float *)(p + i * stride);
    }
    acc->sum += s;
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    double x = cb_load(p + i * stride, dtype);
    switch (op) {
    case CB_SUM:
    case CB_MEAN: acc->sum += x; break;
    case CB_PROD: acc->prod *= x; break;
    case CB_VAR:
    case CB_STD: acc->sum += (x - mean) * (x - mean); break;
    default:
      if (acc->best_index < 0 || better(is_max_op(op), x, acc->best)) {
        acc->best = x;
        acc->best_index = first + i;
      }
    }
  }
}

/* Folds the elements begin..end-1 (linear, over sp) starting at base. */
static void accumulate_span(accum *acc, cb_reduceop op, cb_dtype dtype, const char *base,
                            const span *sp, int64_t begin, int64_t end, double mean) {
  int nd = sp->ndim;
  int64_t inner = sp->shape[nd - 1], index[CB_MAX_DIMS];
  int64_t rest = begin / inner, col = begin % inner;
  for (int d = nd - 2; d >= 0; d--) {
    index[d] = rest % sp->shape[d];
    rest /= sp->shape[d];
  }
  int64_t pos = begin;
  while (pos < end) {
    const char *p = base + col * sp->stride[nd - 1];
    for (int d = 0; d < nd - 1; d++) p += index[d] * sp->stride[d];
    int64_t n = inner - col;
    if (n > end - pos) n = end - pos;
    accumulate_run(acc, op, dtype, p, n, sp->stride[nd - 1], pos, mean);
    pos += n;
    col = 0;
    for (int d = nd - 2; d >= 0; d--) {
      if (++index[d] < sp->shape[d]) break;
      index[d] = 0;
    }
  }
}

/* Combines partial accumulators of consecutive ranges, in order. */
static void accum_merge(accum *into, const accum *part, cb_reduceop op) {
  into->sum += part->sum;
  into->prod *= part->prod;
  if (is_extreme_op(op) && part->best_index >= 0 &&
      (into->best_index < 0 || better(is_max_op(op), part->best, into->best))) {
    into->best = part->best;
    into->best_index = part->best_index;
  }
}

typedef struct {
  cb_reduceop op;
  const cb_tensor *a;
  const span *sp;
  /* the kept dims, walked by index to find each output's first element */
  int kept_ndim;
  int64_t kept_shape[CB_MAX_DIMS], kept_stride[CB_MAX_DIMS]; /* bytes in a */
  cb_tensor *values;  /* may be NULL */
  cb_tensor *indices; /* may be NULL */
  int64_t correction;
  /* for a single output split into chunks */
  accum partial[64];
  double mean;
} reduce_job;

static double finish(const reduce_job *job, const accum *acc) {
  int64_t count = job->sp->count;
  switch (job->op) {
  case CB_SUM: return acc->sum;
  case CB_MEAN: return count ? acc->sum / (double)count : NAN;
  case CB_PROD: return acc->prod;
  case CB_VAR:
  case CB_STD: {
    double dof = (double)(count - job->correction);
    double var = dof > 0 ? acc->sum / dof : NAN;
    return job->op == CB_STD ? sqrt(var) : var;
  }
  default: return acc->best;
  }
}

static void store_result(reduce_job *job, int64_t out_index, const accum *acc) {
  if (job->values) {
    char *p = cb_tensor_data(job->values);
    cb_store(p + out_index * cb_dtype_size(job->values->dtype), job->values->dtype,
             finish(job, acc));
  }
  if (job->indices) ((int64_t *)cb_tensor_data(job->indices))[out_index] = acc->best_index;
}

/* Reduces the output elements [begin, end). */
static void reduce_outputs(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  reduce_job *job = arg;
  const char *base = cb_tensor_data(job->a);
  int64_t index[CB_MAX_DIMS];
  int64_t rest = begin;
  for (int d = job->kept_ndim - 1; d >= 0; d--) {
    index[d] = rest % job->kept_shape[d];
    rest /= job->kept_shape[d];
  }
  for (int64_t o = begin; o < end; o++) {
    const char *p = base;
    for (int d = 0; d < job->kept_ndim; d++) p += index[d] * job->kept_stride[d];
    accum acc;
    accum_init(&acc);
    double mean = 0;
    if (job->op == CB_VAR || job->op == CB_STD) {
      accum first;
      accum_init(&first);
      accumulate_span(&first, CB_SUM, job->a->dtype, p, job->sp, 0, job->sp->count, 0);
      mean = job->sp->count ? first.sum / (double)job->sp->count : 0;
    }
    if (job->sp->count > 0)
      accumulate_span(&acc, job->op, job->a->dtype, p, job->sp, 0, job->sp->count, mean);
    store_result(job, o, &acc);
    for (int d = job->kept_ndim - 1; d >= 0; d--) {
      if (++index[d] < job->kept_shape[d]) break;
      index[d] = 0;
    }
  }
}

typedef struct {
  reduce_job *job;
  cb_reduceop pass_op;
} chunk_pass;

/* One chunk of a single-output reduction. */
static void reduce_chunk(void *arg, int chunk, int64_t begin, int64_t end) {
  chunk_pass *pass = arg;
  reduce_job *job = pass->job;
  accum_init(&job->partial[chunk]);
  accumulate_span(&job->partial[chunk], pass->pass_op, job->a->dtype,
                  cb_tensor_data(job->a), job->sp, begin, end, job->mean);
}

static void reduce_single_output(reduce_job *job) {
  int64_t count = job->sp->count;
  accum total;
  accum_init(&total);
  if (count > 0) {
    chunk_pass pass = {job, job->op};
    if (job->op == CB_VAR || job->op == CB_STD) {
      pass.pass_op = CB_SUM;
      int nchunks = cb_parallel_for(count, PARALLEL_GRAIN, reduce_chunk, &pass);
      accum sum;
      accum_init(&sum);
      for (int c = 0; c < nchunks; c++) accum_merge(&sum, &job->partial[c], CB_SUM);
      job->mean = sum.sum / (double)count;
      pass.pass_op = job->op;
    }
    int nchunks = cb_parallel_for(count, PARALLEL_GRAIN, reduce_chunk, &pass);
    for (int c = 0; c < nchunks; c++) accum_merge(&total, &job->partial[c], job->op);
  }
  store_result(job, 0, &total);
}

static cb_dtype result_dtype(cb_reduceop op, cb_dtype in) {
  switch (op) {
  case CB_SUM:
  case CB_PROD: return in == CB_FLOAT32 ? CB_FLOAT32 : CB_INT64;
  case CB_MAX:
  case CB_MIN: return in;
  case CB_ARGMAX:
  case CB_ARGMIN: return CB_INT64;
  default: return CB_FLOAT32;
  }
}

/* Shared by cb_reduce and cb_max_dim: reduce[] marks the reduced dims. */
static cb_status reduce_impl(const char *name, cb_reduceop op, const cb_tensor *a,
                             const bool *reduce, bool keepdim, int64_t correction,
                             cb_tensor **values, cb_tensor **indices) {
  int64_t esize = cb_dtype_size(a->dtype);
  span sp = {.ndim = 0, .count = 1};
  reduce_job job = {.op = op, .a = a, .sp = &sp, .correction = correction};
  int out_ndim = 0;
  int64_t out_shape[CB_MAX_DIMS];
  for (int d = 0; d < a->ndim; d++) {
    if (reduce[d]) {
      if (keepdim) out_shape[out_ndim++] = 1;
      sp.count *= a->shape[d];
      /* merge with the previous reduced dim when contiguous with it */
      if (sp.ndim > 0 && sp.stride[sp.ndim - 1] == a->stride[d] * a->shape[d] * esize) {
        sp.shape[sp.ndim - 1] *= a->shape[d];
        sp.stride[sp.ndim - 1] = a->stride[d] * esize;
      } else {
        sp.shape[sp.ndim] = a->shape[d];
        sp.stride[sp.ndim] = a->stride[d] * esize;
        sp.ndim++;
      }
    } else {
      out_shape[out_ndim++] = a->shape[d];
      job.kept_shape[job.kept_ndim] = a->shape[d];
      job.kept_stride[job.kept_ndim] = a->stride[d] * esize;
      job.kept_ndim++;
    }
  }
  if (sp.ndim == 0) { /* nothing reduced (0-d input): one element */
    sp.ndim = 1;
    sp.shape[0] = 1;
    sp.stride[0] = 0;
  }
  if (sp.count == 0 && is_extreme_op(op))
    return cb_fail(CB_EINVAL, "%s: cannot reduce over an empty dim (no identity)", name);
  cb_status st;
  if (values) {
    *values = NULL;
    if ((st = cb_tensor_empty(values, out_ndim, out_shape, result_dtype(op, a->dtype))) != CB_OK)
      return st;
    job.values = *values;
  }
  if (indices) {
    *indices = NULL;
    if ((st = cb_tensor_empty(indices, out_ndim, out_shape, CB_INT64)) != CB_OK) {
      if (values) cb_tensor_release(*values);
      return st;
    }
    job.indices = *indices;
  }
  int64_t nout = 1;
  for (int d = 0; d < job.kept_ndim; d++) nout *= job.kept_shape[d];
  if (nout == 1) {
    reduce_single_output(&job);
  } else if (nout > 0) {
    int64_t per_output = sp.count > 0 ? sp.count : 1;
    int64_t grain = PARALLEL_GRAIN / per_output + 1;
    cb_parallel_for(nout, grain, reduce_outputs, &job);
  }
  return CB_OK;
}

cb_status cb_reduce(cb_tensor **out, cb_reduceop op, const cb_tensor *a, int ndims,
                    const int *dims, bool keepdim, int64_t correction) {
  if ((unsigned)op >= CB_NUM_REDUCE) return cb_fail(CB_EINVAL, "reduce: invalid op %d", (int)op);
  const char *name = cb_reduceop_name(op);
  bool reduce[CB_MAX_DIMS] = {false};
  if (ndims == 0) {
    for (int d = 0; d < a->ndim; d++) reduce[d] = true;
  } else {
    for (int i = 0; i < ndims; i++) {
      int d = dims[i];
      cb_status st = cb_wrap_dim(name, &d, a->ndim);
      if (st != CB_OK) return st;
      if (a->ndim == 0) continue;
      if (reduce[d]) return cb_fail(CB_EINVAL, "%s: dim %d given twice", name, d + 1);
      reduce[d] = true;
    }
  }
  if (op == CB_ARGMAX || op == CB_ARGMIN)
    return reduce_impl(name, op, a, reduce, keepdim, correction, NULL, out);
  return reduce_impl(name, op, a, reduce, keepdim, correction, out, NULL);
}

cb_status cb_max_dim(cb_tensor **values, cb_tensor **indices, const cb_tensor *a,
                     int dim, bool keepdim, bool take_min) {
  const char *name = take_min ? "min" : "max";
  cb_status st = cb_wrap_dim(name, &dim, a->ndim);
  if (st != CB_OK) return st;
  bool reduce[CB_MAX_DIMS] = {false};
  if (a->ndim > 0) reduce[dim] = true;
  return reduce_impl(name, take_min ? CB_MIN : CB_MAX, a, reduce, keepdim, 0, values, indices);
}
