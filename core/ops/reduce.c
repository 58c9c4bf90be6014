#include "ops/reduce.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <pthread.h>
#include <string.h>

#include "autograd/autograd.h"
#include "ops/index.h"
#include "ops/pointwise.h"
#include "tensor/blas.h"
#include "tensor/threadpool.h"
#include "tensor/vectorize.h"

#define PARALLEL_GRAIN 32768

static const char *const reduce_names[CB_NUM_REDUCE] = {
    "sum", "mean", "prod", "max", "min", "argmax", "argmin", "var", "std"};

const char *cb_reduceop_name(cb_reduceop op) {
  return (unsigned)op < CB_NUM_REDUCE ? reduce_names[op] : "?";
}

/* ---- sums of float runs in double ----
 * 32 double partial sums, lane j taking p[i + j] of every 32 floats, held
 * in 4 AVX-512 or 8 AVX2 vectors: the adds, 4 cycles apart on one
 * accumulator, overlap, and each vector converts its floats straight from
 * memory. (GCC compiles a generic float-to-double vector conversion as
 * halves split through the one shuffle port, which then bounded these
 * loops, batch norm's statistics among them: intrinsics here.) The lanes and
 * the order of the final additions are the same on every path; only the
 * fused multiply-add of the squares rounds differently where there is none. */
#define SUM_LANES 32

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) static void lane_sums_avx512(const float *p, int64_t n, double shift,
                                                                 bool squares, double *lanes) {
  __m512d acc[4], sh = _mm512_set1_pd(shift);
  for (int k = 0; k < 4; k++) acc[k] = _mm512_setzero_pd();
  for (int64_t i = 0; i + SUM_LANES <= n; i += SUM_LANES)
    for (int k = 0; k < 4; k++) {
      __m512d d = _mm512_cvtps_pd(_mm256_loadu_ps(p + i + 8 * k));
      if (squares) {
        d = _mm512_sub_pd(d, sh);
        acc[k] = _mm512_fmadd_pd(d, d, acc[k]);
      } else {
        acc[k] = _mm512_add_pd(acc[k], d);
      }
    }
  for (int k = 0; k < 4; k++) _mm512_storeu_pd(lanes + 8 * k, acc[k]);
}

__attribute__((target("avx2,fma"))) static void lane_sums_avx2(const float *p, int64_t n, double shift,
                                                                bool squares, double *lanes) {
  __m256d acc[8], sh = _mm256_set1_pd(shift);
  for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_pd();
  for (int64_t i = 0; i + SUM_LANES <= n; i += SUM_LANES)
    for (int k = 0; k < 8; k++) {
      __m256d d = _mm256_cvtps_pd(_mm_loadu_ps(p + i + 4 * k));
      if (squares) {
        d = _mm256_sub_pd(d, sh);
        acc[k] = _mm256_fmadd_pd(d, d, acc[k]);
      } else {
        acc[k] = _mm256_add_pd(acc[k], d);
      }
    }
  for (int k = 0; k < 8; k++) _mm256_storeu_pd(lanes + 4 * k, acc[k]);
}
#endif

/* One float's term of the sum: x, or (x - shift)^2. */
static inline double sum_term(float x, double shift, bool squares) {
  double d = squares ? x - shift : x;
  return squares ? d * d : d;
}

static void lane_sums_generic(const float *p, int64_t n, double shift, bool squares, double *lanes) {
  for (int j = 0; j < SUM_LANES; j++) lanes[j] = 0;
  for (int64_t i = 0; i + SUM_LANES <= n; i += SUM_LANES)
    for (int j = 0; j < SUM_LANES; j++) lanes[j] += sum_term(p[i + j], shift, squares);
}

/* The widest of the three the CPU has (cb_cpu_detect), chosen once. */
typedef void (*lane_sums_fn)(const float *p, int64_t n, double shift, bool squares, double *lanes);
static lane_sums_fn lane_sums = lane_sums_generic;
static pthread_once_t lane_sums_once = PTHREAD_ONCE_INIT;

static void choose_lane_sums(void) {
#if defined(__x86_64__) && defined(__GNUC__)
  cb_cpu_features f = cb_cpu_detect();
  if (f.avx512f) lane_sums = lane_sums_avx512;
  else if (f.avx2 && f.fma) lane_sums = lane_sums_avx2;
#endif
}

/* The sum of p[i] (squares false) or of (p[i] - shift)^2: the lanes' sums
 * over the first n - n % SUM_LANES floats, then the rest, then the lanes in
 * order. */
static double sum_run(const float *p, int64_t n, double shift, bool squares) {
  pthread_once(&lane_sums_once, choose_lane_sums);
  double lanes[SUM_LANES], s = 0;
  lane_sums(p, n, shift, squares, lanes);
  for (int64_t i = n - n % SUM_LANES; i < n; i++) s += sum_term(p[i], shift, squares);
  for (int j = 0; j < SUM_LANES; j++) s += lanes[j];
  return s;
}

double cb_sum_floats(const float *p, int64_t n) { return sum_run(p, n, 0, false); }

double cb_sum_squared_deviations(const float *p, int64_t n, double shift) {
  return sum_run(p, n, shift, true);
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
      s = cb_sum_floats((const float *)p, n);
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
    if ((job->op == CB_VAR || job->op == CB_STD) && job->sp->count > 0) {
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

/* ---- gradients ---- */

typedef struct {
  bool reduced[CB_MAX_DIMS]; /* the input's dims that were reduced */
  int64_t count;             /* elements reduced into each output */
  cb_reduceop op;
  int64_t correction;        /* var and std */
} reduce_ctx;

/* g viewed with the reduced dims kept (size 1), expanded to the input. */
static cb_status expand_grad(const cb_node *node, const cb_tensor *g, cb_tensor **out) {
  int ndim = node->inputs[0].ndim;
  int64_t kept[CB_MAX_DIMS];
  const reduce_ctx *ctx = CB_NODE_CTX(node, reduce_ctx);
  for (int d = 0; d < ndim; d++) kept[d] = ctx->reduced[d] ? 1 : node->inputs[0].shape[d];
  cb_tensor *v;
  cb_status st = cb_tensor_reshape(&v, g, ndim, kept);
  if (st != CB_OK) return st;
  st = cb_tensor_expand(out, v, ndim, node->inputs[0].shape);
  cb_tensor_release(v);
  return st;
}

static cb_status sum_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  return expand_grad(node, g, &grad_in[0]);
}

static cb_status mean_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  cb_tensor *e;
  cb_status st = expand_grad(node, g, &e);
  if (st != CB_OK) return st;
  int64_t count = CB_NODE_CTX(node, reduce_ctx)->count;
  st = cb_binary_scalar(&grad_in[0], CB_DIV, e, (double)(count > 0 ? count : 1), false);
  cb_tensor_release(e);
  return st;
}

static int reduced_dims(const cb_node *node, int *dims) {
  int n = 0;
  const reduce_ctx *ctx = CB_NODE_CTX(node, reduce_ctx);
  for (int d = 0; d < node->inputs[0].ndim; d++)
    if (ctx->reduced[d]) dims[n++] = d;
  return n;
}

/* var: g * 2 (x - mean) / (N - correction); std: g * (x - mean) / ((N - c) std) */
static cb_status var_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *x, *y;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &y)) != CB_OK)
    return st;
  const reduce_ctx *ctx = CB_NODE_CTX(node, reduce_ctx);
  bool is_std = ctx->op == CB_STD;
  double dof = (double)(ctx->count - ctx->correction);
  int dims[CB_MAX_DIMS], ndims = reduced_dims(node, dims);
  cb_tensor *mean = NULL, *diff = NULL, *ge = NULL, *scaled = NULL, *ye = NULL, *t = NULL;
  if ((st = cb_reduce(&mean, CB_MEAN, x, ndims, dims, true, 0)) != CB_OK) goto done;
  if ((st = cb_binary(&diff, CB_SUB, x, mean)) != CB_OK) goto done;
  if ((st = expand_grad(node, g, &ge)) != CB_OK) goto done;
  if ((st = cb_binary(&t, CB_MUL, diff, ge)) != CB_OK) goto done;
  if ((st = cb_binary_scalar(&scaled, CB_MUL, t, (is_std ? 1.0 : 2.0) / dof, false)) != CB_OK)
    goto done;
  if (!is_std) {
    grad_in[0] = scaled;
    scaled = NULL;
  } else if ((st = expand_grad(node, y, &ye)) == CB_OK) {
    st = cb_binary(&grad_in[0], CB_DIV, scaled, ye);
  }
done:
  cb_tensor_release(mean);
  cb_tensor_release(diff);
  cb_tensor_release(ge);
  cb_tensor_release(t);
  cb_tensor_release(scaled);
  cb_tensor_release(ye);
  return st;
}

/* max/min: the gradient is shared evenly by the elements equal to the
 * extreme (one element, unless there are ties). */
static cb_status extreme_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *x, *y;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &y)) != CB_OK)
    return st;
  int dims[CB_MAX_DIMS], ndims = reduced_dims(node, dims);
  cb_tensor *ye = NULL, *mask = NULL, *fmask = NULL, *count = NULL, *ge = NULL, *t = NULL;
  if ((st = expand_grad(node, y, &ye)) != CB_OK) goto done;
  if ((st = cb_binary(&mask, CB_EQ, x, ye)) != CB_OK) goto done;
  if ((st = cb_tensor_to_dtype(&fmask, mask, CB_FLOAT32)) != CB_OK) goto done;
  if ((st = cb_reduce(&count, CB_SUM, fmask, ndims, dims, true, 0)) != CB_OK) goto done;
  if ((st = expand_grad(node, g, &ge)) != CB_OK) goto done;
  if ((st = cb_binary(&t, CB_MUL, ge, fmask)) != CB_OK) goto done;
  st = cb_binary(&grad_in[0], CB_DIV, t, count);
done:
  cb_tensor_release(ye);
  cb_tensor_release(mask);
  cb_tensor_release(fmask);
  cb_tensor_release(count);
  cb_tensor_release(ge);
  cb_tensor_release(t);
  return st;
}

static cb_status record_reduce(cb_tensor **out, cb_reduceop op, const cb_tensor *a,
                               const bool *reduce, int64_t correction) {
  if ((*out)->dtype != CB_FLOAT32 || !cb_needs_record(1, &a)) return CB_OK;
  cb_backward_fn backward = NULL;
  const char *name = NULL;
  switch (op) {
  case CB_SUM: backward = sum_backward; name = "SumBackward"; break;
  case CB_MEAN: backward = mean_backward; name = "MeanBackward"; break;
  case CB_VAR: backward = var_backward; name = "VarBackward"; break;
  case CB_STD: backward = var_backward; name = "StdBackward"; break;
  case CB_MAX: backward = extreme_backward; name = "MaxBackward"; break;
  case CB_MIN: backward = extreme_backward; name = "MinBackward"; break;
  default:
    return cb_fail(CB_EINVAL, "%s: no gradient is defined; compute it under no_grad "
                   "or from differentiable operations", cb_reduceop_name(op));
  }
  /* var/std/max/min read the input and output; the output is saved as a
   * detached alias, so saving it creates no cycle */
  const cb_tensor *save[2] = {a, *out};
  int nsave = (op == CB_SUM || op == CB_MEAN) ? 0 : 2;
  cb_node *node;
  cb_status st = cb_record(*out, name, backward, 1, &a, nsave, save, &node);
  if (node) {
    reduce_ctx *ctx = CB_NODE_CTX(node, reduce_ctx);
    *ctx = (reduce_ctx){.count = 1, .op = op, .correction = correction};
    for (int d = 0; d < a->ndim; d++) {
      ctx->reduced[d] = reduce[d];
      if (reduce[d]) ctx->count *= a->shape[d];
    }
  }
  return st;
}

cb_status cb_reduce(cb_tensor **out, cb_reduceop op, const cb_tensor *a, int ndims,
                    const int *dims, bool keepdim, int64_t correction) {
  if ((unsigned)op >= CB_NUM_REDUCE) return cb_fail(CB_EINVAL, "reduce: invalid op %d", (int)op);
  const char *name = cb_reduceop_name(op);
  if (correction < 0 || correction > CB_MAX_NUMEL)
    return cb_fail(CB_EINVAL, "%s: correction must be in 0..2^48, got %lld", name,
                   (long long)correction);
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
  cb_status st = reduce_impl(name, op, a, reduce, keepdim, correction, out, NULL);
  if (st == CB_OK) st = cb_release_on_error(record_reduce(out, op, a, reduce, correction), out);
  return st;
}

static cb_status max_dim_backward(cb_node *node, const cb_tensor *g, cb_tensor **grad_in) {
  const cb_tensor *idx;
  cb_status st = cb_node_saved(node, 0, &idx);
  if (st != CB_OK) return st;
  int dim = CB_NODE_CTX(node, cb_dim_ctx)->dim;
  cb_tensor *gk = NULL;
  if ((st = cb_tensor_reshape(&gk, g, idx->ndim, idx->shape)) != CB_OK) return st;
  st = cb_tensor_zeros(&grad_in[0], node->inputs[0].ndim, node->inputs[0].shape, CB_FLOAT32);
  if (st == CB_OK) st = cb_scatter_add_(grad_in[0], dim, idx, gk);
  cb_tensor_release(gk);
  return st;
}

cb_status cb_max_dim(cb_tensor **values, cb_tensor **indices, const cb_tensor *a,
                     int dim, bool keepdim, bool take_min) {
  const char *name = take_min ? "min" : "max";
  cb_status st = cb_wrap_dim(name, &dim, a->ndim);
  if (st != CB_OK) return st;
  bool reduce[CB_MAX_DIMS] = {false};
  if (a->ndim > 0) reduce[dim] = true;
  st = reduce_impl(name, take_min ? CB_MIN : CB_MAX, a, reduce, keepdim, 0, values, indices);
  if (st != CB_OK || (*values)->dtype != CB_FLOAT32) return st;
  /* the gradient goes to the position each index names */
  cb_tensor *kept_indices = cb_tensor_retain(*indices);
  if (!keepdim && a->ndim > 0) {
    cb_tensor_release(kept_indices);
    st = cb_tensor_unsqueeze(&kept_indices, *indices, dim);
  }
  cb_node *node = NULL;
  if (st == CB_OK)
    st = cb_record(*values, take_min ? "MinBackward" : "MaxBackward", max_dim_backward, 1, &a,
                   1, (const cb_tensor *const *)&kept_indices, &node);
  if (node) CB_NODE_CTX(node, cb_dim_ctx)->dim = dim;
  cb_tensor_release(kept_indices);
  if (st != CB_OK) {
    cb_tensor_release(*values);
    cb_tensor_release(*indices);
    *values = *indices = NULL;
  }
  return st;
}

cb_status cb_sum_to_shape(cb_tensor **out, const cb_tensor *grad, int ndim,
                          const int64_t *shape) {
  int dims[CB_MAX_DIMS], ndims = 0, lead = grad->ndim - ndim;
  for (int d = 0; d < grad->ndim; d++)
    if (d < lead || (shape[d - lead] == 1 && grad->shape[d] != 1)) dims[ndims++] = d;
  if (ndims == 0 && grad->ndim == ndim) {
    *out = cb_tensor_retain((cb_tensor *)grad);
    return CB_OK;
  }
  cb_tensor *summed = NULL;
  cb_status st = CB_OK;
  if (ndims) st = cb_reduce(&summed, CB_SUM, grad, ndims, dims, true, 0);
  else summed = cb_tensor_retain((cb_tensor *)grad); /* only leading dims of size 1 */
  if (st != CB_OK) return st;
  st = cb_tensor_reshape(out, summed, ndim, shape);
  cb_tensor_release(summed);
  return st;
}
