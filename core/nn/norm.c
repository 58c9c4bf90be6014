/* Batch normalisation, per channel (dim 1) over every other dim.
 *
 * Forward (training): mean and biased variance of the batch (two passes, in
 * double), y = (x - mean) * invstd * gamma + beta, running statistics moved
 * by momentum (with the unbiased variance, as PyTorch). Evaluation uses the
 * running statistics. Backward (training), per channel over its M elements:
 *   dbeta = sum g, dgamma = sum g xhat,
 *   dx = gamma invstd (g - dbeta/M - xhat dgamma/M);
 * in evaluation the statistics are constants: dx = gamma invstd g.
 *
 * Optionally a residual r is added to the output and a ReLU applied,
 * y = max(0, batch norm(x) + r), the end of a ResNet block in one pass: the
 * gradient reaching the normalisation, g masked by y's sign, is also r's.
 *
 * Or the ReLU's output is max-pooled over 2x2 windows (stride 2) in the same
 * pass, y = maxpool(max(0, batch norm(x))), the seed CNN's conv-BN-ReLU-pool:
 * the batch norm's output is never written. Each pair of input rows is
 * normalised into a row buffer and pooled from there (the same float
 * operations as the separate ops: the same values, but for an ulp where a
 * row shorter than a vector takes the compiler's scalar path with or
 * without a fused multiply-add). When backward will follow, forward also
 * keeps per window a byte, where its winner was (or that the ReLU clamped
 * it), and the winner's input less the mean, a sixteenth and a quarter of
 * x's size: backward's gradient sums then read those and the pooled
 * gradient, not x (the sums took 12 % of the seed CNN's step when they
 * normalised x again to find the winners). Backward sends each output's
 * gradient to its window's winner and takes batch norm's two phases on that
 * sparse gradient, which is never written either: its second phase reads x
 * and writes dx. About half the memory traffic of batch norm + ReLU, then
 * pooling, forward and backward. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "autograd/autograd.h"
#include "nn/conv_direct.h"
#include "nn/max_pool_2x2.h"
#include "nn/nn.h"
#include "nn/norm_parts.h"
#include "ops/reduce.h"
#include "tensor/threadpool.h"
#include "tensor/vectorize.h"

/* x viewed as N x C x S, each (n, c) plane of S elements contiguous. */
typedef struct {
  int64_t n, c, s;
  int64_t sn, sc; /* strides of n and c, elements */
} bn_layout;

/* Whether the dims after 1 form contiguous planes; fills the layout. */
static bool planes_of(const cb_tensor *x, bn_layout *l) {
  l->n = x->shape[0];
  l->c = x->shape[1];
  l->s = 1;
  int64_t expected = 1;
  bool dense = true;
  for (int d = x->ndim - 1; d >= 2; d--) {
    if (x->shape[d] != 1 && x->stride[d] != expected) dense = false;
    expected *= x->shape[d];
    l->s *= x->shape[d];
  }
  l->sn = x->stride[0];
  l->sc = x->stride[1];
  return dense;
}

/* Whether each of l's images follows the one before within a channel. */
static bool planes_follow(const bn_layout *l) { return l->n == 1 || l->sn == l->s; }

typedef struct {
  bn_layout l;
  const float *x, *gamma, *beta;
  const float *r;   /* the residual added before the ReLU, or NULL */
  bn_layout rl;     /* its layout */
  float *y;
  float *mean, *invstd;       /* batch statistics out (training) or in (eval) */
  float *running_mean, *running_var;
  bool training;
  double momentum, eps;
  bool relu;        /* y = max(0, batch norm): the ReLU fused in */
  double *stats;    /* per channel, 2 values: the sums a reducer adds over processes */
  const double *local_stats; /* backward: the sums before that (or stats itself) */
  double count;     /* values per channel behind the statistics (all processes) */
  bool sync;        /* the statistics are summed over processes */
  const float *y_saved; /* backward with relu: the output, whose sign masks g */
  const float *mask_affine; /* or NULL, and the output recomputed from x by
                             * cb_normalize_relu_run with these scales and shifts */
  /* backward */
  const float *g;
  float *dx, *dgamma, *dbeta;
  float *masked;    /* relu: where g masked by the output's sign goes (dx, or the
                     * residual's gradient); NULL when no one needs it */
  bn_layout gl, dl, ml; /* layouts of g, dx and masked */
  /* relu + 2x2 max pooling: x's rows are w long; y (forward) and g (backward)
   * are oh x ow pooled planes in layout pl */
  int64_t w, oh, ow;
  bn_layout pl;
  uint8_t *winners;  /* per window (n, c, row, column), its winner's code and */
  float *deviations; /* input less the mean (pool_windows_4): forward writes them
                      * when backward will follow (else NULL), backward reads them */
  /* Channel c's values as `runs` runs of `run` floats, run k where image k's
   * plane starts (set_runs): one run of N x S when, in every layout a loop
   * touches, each image's plane follows the one before (the CNHW layout),
   * else N runs of S. One long run spares the per-run sums' set-up and
   * horizontal adds, which 8x8 planes (64 floats) pay every 64 values. */
  int64_t runs, run;
} bn_job;

/* j's runs: one per channel when `follow` (every layout the loops touch has
 * planes_follow), else one per image. */
static void set_runs(bn_job *j, bool follow) {
  j->runs = follow ? 1 : j->l.n;
  j->run = follow ? j->l.n * j->l.s : j->l.s;
}

/* What backward needs besides the saved tensors: x, mean, invstd, then
 * gamma and the output (relu) when present. */
typedef struct {
  bool training, relu, residual;
  int gamma_slot, output_slot; /* -1 when not saved */
  int winners_slot;            /* pooled: the windows' codes and deviations (-1: not saved) */
  double count;                /* values per channel the statistics came from */
  cb_reducer sync;             /* sync.sum == NULL: this process's batch only */
} batch_norm_ctx;

/* Training, phase 1: per channel, this batch's sum and sum of squares, the
 * latter as the sum of squared deviations from this batch's mean plus
 * count * mean^2 (two passes, so that alone it is exact to rounding; the
 * statistics of several processes then add up). */
CB_VECTOR_CLONES static void bn_statistics_channels(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  const bn_layout *l = &j->l;
  double count = (double)(l->n * l->s);
  for (int64_t c = begin; c < end; c++) {
    double sum = 0, sq = 0;
    for (int64_t n = 0; n < j->runs; n++) sum += cb_sum_floats(j->x + n * l->sn + c * l->sc, j->run);
    double mean = sum / count;
    for (int64_t n = 0; n < j->runs; n++)
      sq += cb_sum_squared_deviations(j->x + n * l->sn + c * l->sc, j->run, mean);
    j->stats[2 * c] = sum;
    j->stats[2 * c + 1] = j->sync ? sq + count * mean * mean : sq;
  }
}

/* Training, between the phases: mean, invstd and the running statistics
 * of channels [begin, end) from the (summed) statistics over count values
 * per channel. */
static void bn_finish_statistics(bn_job *j, double count, int64_t begin, int64_t end) {
  for (int64_t c = begin; c < end; c++) {
    double mean = j->stats[2 * c] / count;
    double sq = j->stats[2 * c + 1]; /* the sum of squared deviations */
    if (j->sync) sq -= count * mean * mean;
    if (sq < 0) sq = 0;
    double var = sq / count;
    j->mean[c] = (float)mean;
    j->invstd[c] = (float)(1.0 / sqrt(var + j->eps));
    if (j->running_mean) {
      double unbiased = count > 1 ? sq / (count - 1) : var;
      j->running_mean[c] = (float)((1 - j->momentum) * j->running_mean[c] + j->momentum * mean);
      j->running_var[c] = (float)((1 - j->momentum) * j->running_var[c] + j->momentum * unbiased);
    }
  }
}

/* Channel c's y = x * scale + shift: invstd * gamma and beta - mean * scale. */
static inline void channel_affine(const bn_job *j, int64_t c, float *scale, float *shift) {
  *scale = j->invstd[c] * (j->gamma ? j->gamma[c] : 1.0f);
  *shift = (j->beta ? j->beta[c] : 0.0f) - j->mean[c] * *scale;
}

/* Phase 2: y = (x - mean) * invstd * gamma + beta (+ the residual, then the ReLU). */
CB_VECTOR_CLONES static void bn_forward_channels(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  const bn_layout *l = &j->l;
  for (int64_t c = begin; c < end; c++) {
    float scale, shift;
    channel_affine(j, c, &scale, &shift);
    int64_t s = j->run;
    for (int64_t n = 0; n < j->runs; n++) {
      const float *p = j->x + n * l->sn + c * l->sc;
      float *q = j->y + n * l->sn + c * l->sc;
      if (j->r) {
        const float *r = j->r + n * j->rl.sn + c * j->rl.sc;
        if (j->relu)
          for (int64_t i = 0; i < s; i++) {
            float v = p[i] * scale + shift + r[i];
            q[i] = v > 0 ? v : 0.0f;
          }
        else
          for (int64_t i = 0; i < s; i++) q[i] = p[i] * scale + shift + r[i];
      } else if (j->relu) /* a comparison, as the ReLU op, where fmaxf would not vectorise */
        for (int64_t i = 0; i < s; i++) {
          float v = p[i] * scale + shift;
          q[i] = v > 0 ? v : 0.0f;
        }
      else
        for (int64_t i = 0; i < s; i++) q[i] = p[i] * scale + shift;
    }
  }
}

/* Backward, phase 1, over one run of n values: sums[0] += the sum of the
 * gradient g reaching the normalisation, sums[1] += the sum of g (x - mean),
 * in 8 double lanes each (cb_sum_floats's accuracy). With the ReLU fused
 * in (mask: y, the output, given), g is masked by y's sign, and the masked g
 * is written into `masked` when `write`. One pass: g, x and y read once,
 * in generic vectors (the auto-vectoriser leaves the masked sums scalar);
 * inlined with constant flags, so that each case is its own loop. */
static inline __attribute__((always_inline)) void gradient_sums_loop(
    const float *g, const float *x, const float *y, float *masked, int64_t n, double mean,
    double sums[2], bool mask, bool write) {
  dvec8 sum_g = {0}, sum_gx = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    vec8 v = *(const vec8 *)(g + i);
    if (mask) v = (vec8)((ivec8)v & (*(const vec8 *)(y + i) > 0)); /* g where y > 0, else +0 */
    if (write) *(vec8 *)(masked + i) = v;
    dvec8 vd = __builtin_convertvector(v, dvec8);
    sum_g += vd;
    sum_gx += vd * (__builtin_convertvector(*(const vec8 *)(x + i), dvec8) - mean);
  }
  for (; i < n; i++) {
    float v = mask && !(y[i] > 0) ? 0.0f : g[i];
    if (write) masked[i] = v;
    sum_g[0] += v;
    sum_gx[0] += (double)v * (x[i] - mean);
  }
  for (int k = 0; k < 8; k++) sums[0] += sum_g[k], sums[1] += sum_gx[k];
}

/* gradient_sums_loop for y (NULL: no mask) and masked (NULL: not written). */
CB_VECTOR_CLONES static void gradient_sums_run(const float *g, const float *x, const float *y,
                                               float *masked, int64_t n, double mean,
                                               double sums[2]) {
  if (!y) gradient_sums_loop(g, x, y, masked, n, mean, sums, false, false);
  else if (!masked) gradient_sums_loop(g, x, y, masked, n, mean, sums, true, false);
  else gradient_sums_loop(g, x, y, masked, n, mean, sums, true, true);
}

/* Backward, phase 1: per channel, the sums of the gradient g reaching the
 * normalisation and of g * (x - mean) (stats[2c], stats[2c+1]). With the
 * ReLU fused in, that g is masked by the output's sign; the masked copy is
 * written into `masked` (dx, computed from it in place then, or the
 * residual's gradient) when there is one. */
static void bn_gradient_sums_channels(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  const bn_layout *l = &j->l;
  for (int64_t c = begin; c < end; c++) {
    double sums[2] = {0, 0};
    for (int64_t n = 0; n < j->runs; n++) {
      const float *g = j->g + n * j->gl.sn + c * j->gl.sc, *x = j->x + n * l->sn + c * l->sc;
      float *masked = j->relu && j->masked ? j->masked + n * j->ml.sn + c * j->ml.sc : NULL;
      if (j->relu && j->mask_affine) { /* the output again, a piece at a time, in L1 */
        float y[1024];
        for (int64_t at = 0; at < j->run; at += 1024) {
          int64_t len = j->run - at < 1024 ? j->run - at : 1024;
          cb_normalize_relu_run(x + at, len, j->mask_affine[c], j->mask_affine[l->c + c], y);
          gradient_sums_run(g + at, x + at, y, masked ? masked + at : NULL, len, j->mean[c], sums);
        }
        continue;
      }
      gradient_sums_run(g, x, j->relu ? j->y_saved + n * l->sn + c * l->sc : NULL, masked, j->run,
                        j->mean[c], sums);
    }
    j->stats[2 * c] = sums[0];
    j->stats[2 * c + 1] = sums[1];
  }
}

/* Channel c's dgamma and dbeta (from this process's sums) and its dx
 * coefficients: dx = k (g - a - (x - mean) b), in training
 * k (g - sum_g/M - xhat dgamma/M) with xhat = (x - mean) invstd, in
 * evaluation k g. */
static inline void backward_coefficients(const bn_job *j, int64_t c, float *k, float *a, float *b) {
  double invstd = j->invstd[c], sum_g = j->stats[2 * c], sum_gx = j->stats[2 * c + 1];
  double dgamma = sum_gx * invstd;
  if (j->dgamma) j->dgamma[c] = (float)(j->local_stats[2 * c + 1] * invstd);
  if (j->dbeta) j->dbeta[c] = (float)j->local_stats[2 * c];
  double gamma = j->gamma ? j->gamma[c] : 1.0;
  *k = (float)(gamma * invstd);
  *a = j->training ? (float)(sum_g / j->count) : 0.0f;
  *b = j->training ? (float)(dgamma * invstd / j->count) : 0.0f;
}

/* Backward, phase 2: dgamma and dbeta from this process's sums
 * (local_stats: data-parallel training averages them over the processes
 * afterwards, as every parameter's gradient), dx from the (summed) sums. */
CB_VECTOR_CLONES static void bn_backward_channels(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  const bn_layout *l = &j->l;
  for (int64_t c = begin; c < end; c++) {
    float k, a, b, m = j->mean[c];
    backward_coefficients(j, c, &k, &a, &b);
    if (!j->dx) continue;
    for (int64_t n = 0; n < j->runs; n++) {
      const float *x = j->x + n * l->sn + c * l->sc;
      /* the gradient reaching the normalisation: masked already */
      const float *g = j->relu ? j->masked + n * j->ml.sn + c * j->ml.sc : j->g + n * j->gl.sn + c * j->gl.sc;
      float *dx = j->dx + n * j->dl.sn + c * j->dl.sc;
      for (int64_t i = 0; i < j->run; i++) dx[i] = k * (g[i] - a - (x[i] - m) * b);
    }
  }
}

/* The gradients backward hands out: dx (in x's layout) and dgamma, dbeta,
 * each only when its input needs one; j points at them. */
static cb_status backward_outputs(const bool need[3], const cb_tensor *x, bn_job *j, cb_tensor **grad_in) {
  int64_t c = j->l.c;
  cb_status st = CB_OK;
  if (need[0] && (st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) == CB_OK) {
    planes_of(grad_in[0], &j->dl);
    j->dx = cb_tensor_data(grad_in[0]);
  }
  if (st == CB_OK && need[1] && (st = cb_tensor_empty(&grad_in[1], 1, &c, CB_FLOAT32)) == CB_OK)
    j->dgamma = cb_tensor_data(grad_in[1]);
  if (st == CB_OK && need[2] && (st = cb_tensor_empty(&grad_in[2], 1, &c, CB_FLOAT32)) == CB_OK)
    j->dbeta = cb_tensor_data(grad_in[2]);
  return st;
}

/* Which of x, gamma, beta the node's inputs 0-2 want gradients for. */
static void node_needs(const cb_node *node, bool need[3]) {
  for (int i = 0; i < 3; i++) need[i] = cb_node_needs_grad(node, i);
}

/* A kernel's two phases over the channels, one channel at a time (when no
 * sums cross processes in between): the second reads what the first just
 * brought into cache (a channel of a 128 x 16 x 32 x 32 batch is 512 KiB),
 * where two passes over every channel read it from memory twice. */
typedef struct {
  bn_job *j;
  cb_range_fn first, second;
  bool statistics; /* forward: the channel's statistics finished in between */
} channel_phases;

static void run_channel_phases(void *arg, int chunk, int64_t begin, int64_t end) {
  const channel_phases *p = arg;
  for (int64_t c = begin; c < end; c++) {
    p->first(p->j, chunk, c, c + 1);
    if (p->statistics) bn_finish_statistics(p->j, p->j->count, c, c + 1);
    p->second(p->j, chunk, c, c + 1);
  }
}

/* Backward's two phases over the channels: the gradient sums (sums), summed
 * over the processes when the statistics were (dx then comes from the sums
 * over every process's batch, as the statistics did; dgamma and dbeta from
 * this process's own), then dgamma, dbeta and dx (apply). */
static cb_status backward_phases(bn_job *j, const batch_norm_ctx *ctx, cb_range_fn sums, cb_range_fn apply) {
  int64_t c = j->l.c;
  double *stats = malloc(sizeof(double) * (size_t)(4 * c + 1)); /* never 0 bytes: NULL means failure */
  if (!stats) return cb_fail(CB_ENOMEM, "batch_norm: out of memory");
  j->stats = stats;
  j->local_stats = stats;
  j->count = ctx->count;
  if (ctx->training && ctx->sync.sum) {
    cb_parallel_for(c, 1, sums, j);
    memcpy(stats + 2 * c, stats, sizeof(double) * (size_t)(2 * c));
    j->local_stats = stats + 2 * c;
    ctx->sync.sum(ctx->sync.ctx, stats, 2 * c);
    cb_parallel_for(c, 1, apply, j);
  } else {
    channel_phases phases = {j, sums, apply, false};
    cb_parallel_for(c, 1, run_channel_phases, &phases);
  }
  free(stats);
  return CB_OK;
}

/* ---- batch norm + ReLU + 2x2 max pooling (see the top) ---- */


/* dst[i] = max(0, x[i] * scale + shift) for i < n: bn_forward_channels's
 * operations. */
static inline void bn_relu_row(const float *x, int64_t n, float scale, float shift, float *dst) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i] * scale + shift;
    dst[i] = v > 0 ? v : 0.0f;
  }
}

/* Output row i of plane (n, c): the input rows 2i and 2i + 1 normalised into
 * rows[0] and rows[1] (their first 2 ow values, all a window reads). */
static inline void bn_relu_row_pair(const bn_job *j, const float *plane, int64_t i, float scale,
                                    float shift, float rows[2][CB_BN_POOL_ROW_MAX]) {
  for (int r = 0; r < 2; r++) bn_relu_row(plane + (2 * i + r) * j->w, 2 * j->ow, scale, shift, rows[r]);
}

/* Of 4 windows of the normalised rows y0, y1 (raw rows x0, x1): the maxima
 * into y, each window's winner code (bit 0: right column, bit 1: bottom row;
 * 4: the ReLU clamped it, no gradient) and its raw input less the mean
 * into deviations: all backward's first phase needs. */
static inline void pool_windows_4(const float *y0, const float *y1, const float *x0, const float *x1,
                                  float mean, float *y, uint8_t *codes, float *deviations) {
  ivec4 right, bottom;
  const vec4 zero = {0};
  vec4 top = max_2x2_4(y0, y1, &right, &bottom);
  ivec4 passed = top > zero; /* the ReLU let the winner through */
  ivec4 code = ((right & 1) | (bottom & 2) | (~passed & 4)) & (passed | 4);
  typedef uint8_t bytes16 __attribute__((vector_size(16)));
  typedef uint8_t bytes4 __attribute__((vector_size(4)));
  bytes16 code_lanes = (bytes16)code;
  bytes4 code_bytes = __builtin_shufflevector(code_lanes, code_lanes, 0, 4, 8, 12); /* one shuffle */
  *(vec4 *)y = top;
  *(vec4 *)deviations = pick_2x2_4(x0, x1, right, bottom) - mean; /* the winners' inputs, centred */
  memcpy(codes, &code_bytes, 4);
}

/* 8 windows in AVX registers (two SSE ones in the default clone; AVX-512's
 * comparisons would give mask registers, which AVX-512F alone cannot turn
 * into vectors): pool_windows_4's results for the 16 columns of raw rows x0
 * and x1, normalised here (max(0, x * scale + shift), as bn_relu_row) and
 * split into the windows' four corners; the comparisons are max_2x2_4's,
 * so the winners are the same. */
/* (GCC warns, to the end of the file, that these pass AVX vectors: an ABI
 * question only for calls that are not inlined, and they are, into the
 * clones.) */
#pragma GCC diagnostic ignored "-Wpsabi"
static inline ivec8 wins8(vec8 challenger, vec8 holder) {
  return (holder == holder) & ~(challenger <= holder);
}

static inline vec8 select8(ivec8 mask, vec8 yes, vec8 no) {
  return (vec8)((mask & (ivec8)yes) | (~mask & (ivec8)no));
}

static inline void pool_windows_8(const float *x0, const float *x1, float scale, float shift,
                                  float mean, float *y, uint8_t *codes, float *deviations) {
  const vec8 zero = {0};
  vec8 raw[4] = {*(const vec8 *)x0, *(const vec8 *)(x0 + 8), *(const vec8 *)x1, *(const vec8 *)(x1 + 8)};
  vec8 z[4];
  for (int r = 0; r < 4; r++) {
    vec8 v = raw[r] * scale + shift;
    z[r] = select8(v > zero, v, zero);
  }
  vec8 a = __builtin_shufflevector(z[0], z[1], 0, 2, 4, 6, 8, 10, 12, 14);
  vec8 b = __builtin_shufflevector(z[0], z[1], 1, 3, 5, 7, 9, 11, 13, 15);
  vec8 c = __builtin_shufflevector(z[2], z[3], 0, 2, 4, 6, 8, 10, 12, 14);
  vec8 d = __builtin_shufflevector(z[2], z[3], 1, 3, 5, 7, 9, 11, 13, 15);
  ivec8 pick_b = wins8(b, a), pick_d = wins8(d, c);
  vec8 top = select8(pick_b, b, a), bot = select8(pick_d, d, c);
  ivec8 bottom = wins8(bot, top);
  ivec8 right = (ivec8)select8(bottom, (vec8)pick_d, (vec8)pick_b);
  vec8 best = select8(bottom, bot, top);
  vec8 xa = __builtin_shufflevector(raw[0], raw[1], 0, 2, 4, 6, 8, 10, 12, 14);
  vec8 xb = __builtin_shufflevector(raw[0], raw[1], 1, 3, 5, 7, 9, 11, 13, 15);
  vec8 xc = __builtin_shufflevector(raw[2], raw[3], 0, 2, 4, 6, 8, 10, 12, 14);
  vec8 xd = __builtin_shufflevector(raw[2], raw[3], 1, 3, 5, 7, 9, 11, 13, 15);
  vec8 xw = select8(bottom, select8(right, xd, xc), select8(right, xb, xa));
  ivec8 passed = best > zero;
  ivec8 code = ((right & 1) | (bottom & 2) | (~passed & 4)) & (passed | 4);
  typedef uint8_t bytes32 __attribute__((vector_size(32)));
  typedef uint8_t bytes8 __attribute__((vector_size(8)));
  bytes32 code_lanes = (bytes32)code; /* each code's low byte: shuffles, not 8 extracts */
  bytes8 code_bytes = __builtin_shufflevector(code_lanes, code_lanes, 0, 4, 8, 12, 16, 20, 24, 28);
  *(vec8 *)y = best;
  *(vec8 *)deviations = xw - mean;
  memcpy(codes, &code_bytes, 8);
}

/* pool_windows_4 for the ow windows of a row pair (y0, y1 normalised; x0,
 * x1 raw) into y, codes and deviations; the last 1-3 through zero-padded
 * copies. */
static inline void pool_windows_row(int64_t ow, const float *y0, const float *y1, const float *x0,
                                    const float *x1, float mean, float *y, uint8_t *codes,
                                    float *deviations) {
  int64_t k = 0;
  for (; k + 4 <= ow; k += 4)
    pool_windows_4(y0 + 2 * k, y1 + 2 * k, x0 + 2 * k, x1 + 2 * k, mean, y + k, codes + k,
                   deviations + k);
  if (k == ow) return;
  size_t n = (size_t)(ow - k);
  float pad[4][8] = {{0}}, top[4], deviation[4];
  uint8_t code[4];
  memcpy(pad[0], y0 + 2 * k, sizeof(float) * 2 * n);
  memcpy(pad[1], y1 + 2 * k, sizeof(float) * 2 * n);
  memcpy(pad[2], x0 + 2 * k, sizeof(float) * 2 * n);
  memcpy(pad[3], x1 + 2 * k, sizeof(float) * 2 * n);
  pool_windows_4(pad[0], pad[1], pad[2], pad[3], mean, top, code, deviation);
  memcpy(y + k, top, sizeof(float) * n);
  memcpy(codes + k, code, n);
  memcpy(deviations + k, deviation, sizeof(float) * n);
}

/* Forward, phase 2 pooled: y = maxpool(max(0, x * scale + shift)), and when
 * backward will follow (j->winners), the windows' codes and deviations
 * (pool_windows_4). */
CB_VECTOR_CLONES static void bn_pool_forward_channels(void *arg, int chunk, int64_t begin,
                                                      int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  const bn_layout *l = &j->l;
  float rows[2][CB_BN_POOL_ROW_MAX];
  for (int64_t c = begin; c < end; c++) {
    float scale, shift, mean = j->mean[c];
    channel_affine(j, c, &scale, &shift);
    for (int64_t n = 0; n < l->n; n++) {
      const float *plane = j->x + n * l->sn + c * l->sc;
      float *y = j->y + n * j->pl.sn + c * j->pl.sc;
      int64_t window = (n * l->c + c) * j->oh * j->ow;
      for (int64_t i = 0; i < j->oh; i++) {
        if (!j->winners) {
          bn_relu_row_pair(j, plane, i, scale, shift, rows);
          max_2x2_row(j->ow, rows[0], rows[1], y + i * j->ow);
          continue;
        }
        const float *x0 = plane + 2 * i * j->w, *x1 = x0 + j->w;
        int64_t at = window + i * j->ow, k = 0;
        for (; k + 8 <= j->ow; k += 8)
          pool_windows_8(x0 + 2 * k, x1 + 2 * k, scale, shift, mean, y + i * j->ow + k,
                          j->winners + at + k, j->deviations + at + k);
        if (k < j->ow) { /* the rest of the row, 4 windows at a time */
          bn_relu_row(x0 + 2 * k, 2 * (j->ow - k), scale, shift, rows[0]);
          bn_relu_row(x1 + 2 * k, 2 * (j->ow - k), scale, shift, rows[1]);
          pool_windows_row(j->ow - k, rows[0], rows[1], x0 + 2 * k, x1 + 2 * k, mean,
                           y + i * j->ow + k, j->winners + at + k, j->deviations + at + k);
        }
      }
    }
  }
}

/* Backward, phase 1 pooled: per channel, the sums of the gradient reaching
 * the normalisation, which is the output's gradient at the windows' winners
 * (none where the ReLU clamped them): sum g and sum g (x - mean), from the
 * codes and deviations forward kept. 4 windows at a time (the row's last
 * 1-3 in the first lanes), a row's sums added up in double. */
CB_VECTOR_CLONES static void bn_pool_gradient_sums(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  const bn_layout *l = &j->l;
  const vec4 zero = {0};
  for (int64_t c = begin; c < end; c++) {
    double sum_g = 0, sum_gx = 0;
    for (int64_t n = 0; n < l->n; n++) {
      const float *gy = j->g + n * j->pl.sn + c * j->pl.sc;
      int64_t window = (n * l->c + c) * j->oh * j->ow;
      const uint8_t *codes = j->winners + window;
      const float *deviations = j->deviations + window;
      for (int64_t i = 0; i < j->oh; i++) {
        const float *g_row = gy + i * j->ow, *d_row = deviations + i * j->ow;
        const uint8_t *code_row = codes + i * j->ow;
        vec4 sg = zero, sgx = zero;
        int64_t k = 0;
        for (; k + 4 <= j->ow; k += 4) {
          ivec4 code = {code_row[k], code_row[k + 1], code_row[k + 2], code_row[k + 3]};
          vec4 g = select4(code < 4, *(const vec4 *)(g_row + k), zero);
          sg += g;
          sgx += g * *(const vec4 *)(d_row + k);
        }
        for (int lane = 0; k < j->ow; k++, lane++) {
          float g = code_row[k] < 4 ? g_row[k] : 0.0f;
          sg[lane] += g;
          sgx[lane] += g * d_row[k];
        }
        sum_g += (double)sg[0] + sg[1] + sg[2] + sg[3];
        sum_gx += (double)sgx[0] + sgx[1] + sgx[2] + sgx[3];
      }
    }
    j->stats[2 * c] = sum_g;
    j->stats[2 * c + 1] = sum_gx;
  }
}

/* Backward, phase 2 pooled, for plane (n, c) into dx (dense rows of w):
 * dx = k (0 - a - (x - mean) b) everywhere, plus k g at each window's winner
 * (from forward's codes). */
static inline void pool_dx_plane(const bn_job *j, int64_t n, int64_t c, float k, float a, float b,
                                 float *dx) {
  const bn_layout *l = &j->l;
  float m = j->mean[c];
  const float *x = j->x + n * l->sn + c * l->sc;
  const float *gy = j->g + n * j->pl.sn + c * j->pl.sc;
  const uint8_t *codes = j->winners + (n * l->c + c) * j->oh * j->ow;
  for (int64_t q = 0; q < l->s; q++) dx[q] = k * (0.0f - a - (x[q] - m) * b);
  for (int64_t i = 0; i < j->oh; i++) {
    float *d0 = dx + 2 * i * j->w, *d1 = d0 + j->w;
    const float *g_row = gy + i * j->ow;
    const uint8_t *code_row = codes + i * j->ow;
    int64_t q = 0;
    for (; q + 8 <= j->ow; q += 8) { /* 8 windows: k g to the winner of each, in vectors */
      typedef uint8_t bytes8 __attribute__((vector_size(8), aligned(1)));
      ivec8 code = __builtin_convertvector(*(const bytes8 *)(code_row + q), ivec8);
      ivec8 kg = (ivec8)(*(const vec8 *)(g_row + q) * k); /* k g, masked to a corner below */
      vec8 tl = (vec8)(kg & (code == 0)), tr = (vec8)(kg & (code == 1));
      vec8 bl = (vec8)(kg & (code == 2)), br = (vec8)(kg & (code == 3));
      *(vec8 *)(d0 + 2 * q) += __builtin_shufflevector(tl, tr, 0, 8, 1, 9, 2, 10, 3, 11);
      *(vec8 *)(d0 + 2 * q + 8) += __builtin_shufflevector(tl, tr, 4, 12, 5, 13, 6, 14, 7, 15);
      *(vec8 *)(d1 + 2 * q) += __builtin_shufflevector(bl, br, 0, 8, 1, 9, 2, 10, 3, 11);
      *(vec8 *)(d1 + 2 * q + 8) += __builtin_shufflevector(bl, br, 4, 12, 5, 13, 6, 14, 7, 15);
    }
    for (; q + 4 <= j->ow; q += 4) { /* 4 windows: the same, in the row's last 4-7 */
      ivec4 code = {code_row[q], code_row[q + 1], code_row[q + 2], code_row[q + 3]};
      vec4 kg = *(const vec4 *)(g_row + q) * k, zero = {0};
      vec4 tl = select4(code == 0, kg, zero), tr = select4(code == 1, kg, zero);
      vec4 bl = select4(code == 2, kg, zero), br = select4(code == 3, kg, zero);
      *(vec4 *)(d0 + 2 * q) += __builtin_shufflevector(tl, tr, 0, 4, 1, 5);
      *(vec4 *)(d0 + 2 * q + 4) += __builtin_shufflevector(tl, tr, 2, 6, 3, 7);
      *(vec4 *)(d1 + 2 * q) += __builtin_shufflevector(bl, br, 0, 4, 1, 5);
      *(vec4 *)(d1 + 2 * q + 4) += __builtin_shufflevector(bl, br, 2, 6, 3, 7);
    }
    for (; q < j->ow; q++)
      if (code_row[q] < 4) (code_row[q] & 2 ? d1 : d0)[2 * q + (code_row[q] & 1)] += k * g_row[q];
  }
}

/* Backward, phase 2 pooled, channels [begin, end): dgamma, dbeta and dx. */
CB_VECTOR_CLONES static void bn_pool_backward_channels(void *arg, int chunk, int64_t begin,
                                                       int64_t end) {
  (void)chunk;
  bn_job *j = arg;
  for (int64_t c = begin; c < end; c++) {
    float k, a, b;
    backward_coefficients(j, c, &k, &a, &b);
    if (!j->dx) continue;
    for (int64_t n = 0; n < j->l.n; n++) pool_dx_plane(j, n, c, k, a, b, j->dx + n * j->dl.sn + c * j->dl.sc);
  }
}

/* j for the pooled backward from forward's saved tensors and the pooled
 * output's gradient: *g is grad, or a copy with dense planes (the caller
 * releases it). */
static cb_status pool_backward_job(bn_job *j, const cb_tensor *x, const cb_tensor *mean,
                                   const cb_tensor *invstd, const cb_tensor *gamma,
                                   const cb_tensor *winners, const cb_tensor *deviations,
                                   bool training, const cb_tensor *grad, cb_tensor **g) {
  *j = (bn_job){.training = training, .relu = true, .x = cb_tensor_data(x),
                .mean = cb_tensor_data(mean), .invstd = cb_tensor_data(invstd),
                .gamma = gamma ? cb_tensor_data(gamma) : NULL, .winners = cb_tensor_data(winners),
                .deviations = cb_tensor_data(deviations),
                .w = x->shape[3], .oh = grad->shape[2], .ow = grad->shape[3]};
  planes_of(x, &j->l); /* x was saved with dense planes */
  cb_status st;
  if (planes_of(grad, &j->pl)) *g = cb_tensor_retain((cb_tensor *)grad);
  else if ((st = cb_tensor_contiguous(g, grad)) != CB_OK) return st;
  planes_of(*g, &j->pl);
  j->g = cb_tensor_data(*g);
  set_runs(j, false); /* the pooled loops go row by row */
  return CB_OK;
}

static cb_status bn_pool_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const batch_norm_ctx *ctx = CB_NODE_CTX(node, batch_norm_ctx);
  const cb_tensor *x, *mean, *invstd, *gamma = NULL, *winners, *deviations;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &mean)) != CB_OK ||
      (st = cb_node_saved(node, 2, &invstd)) != CB_OK ||
      (ctx->gamma_slot >= 0 && (st = cb_node_saved(node, ctx->gamma_slot, &gamma)) != CB_OK) ||
      (st = cb_node_saved(node, ctx->winners_slot, &winners)) != CB_OK ||
      (st = cb_node_saved(node, ctx->winners_slot + 1, &deviations)) != CB_OK)
    return st;
  cb_tensor *g = NULL;
  bn_job j;
  if ((st = pool_backward_job(&j, x, mean, invstd, gamma, winners, deviations, ctx->training, grad,
                              &g)) != CB_OK)
    return st;
  bool need[3];
  node_needs(node, need);
  st = backward_outputs(need, x, &j, grad_in);
  if (st == CB_OK) st = backward_phases(&j, ctx, bn_pool_gradient_sums, bn_pool_backward_channels);
  cb_tensor_release(g);
  return st;
}

/* A contiguous float32 copy of an optional per-channel tensor of size c. */
static cb_status channel_vector(const char *what, const cb_tensor *t, int64_t c, cb_tensor **out) {
  *out = NULL;
  if (!t) return CB_OK;
  if (t->dtype != CB_FLOAT32 || t->ndim != 1 || t->shape[0] != c)
    return cb_fail(CB_ESHAPE, "batch_norm: %s must be a float32 tensor of shape {%lld}", what,
                   (long long)c);
  return cb_tensor_contiguous(out, t);
}

/* Running statistics are updated in place: contiguous float32 of size c. */
static cb_status check_running(const char *what, const cb_tensor *t, int64_t c) {
  if (t->dtype != CB_FLOAT32 || t->ndim != 1 || t->shape[0] != c || !cb_tensor_is_contiguous(t))
    return cb_fail(CB_ESHAPE, "batch_norm: %s must be a contiguous float32 tensor of shape {%lld}",
                   what, (long long)c);
  return CB_OK;
}

/* Batch norm's backward from x, mean and invstd (float arrays of C), gamma
 * (NULL: none), with relu the output y or, when y is NULL, the scales and
 * shifts to recompute it from (mask_affine), and the output's gradient: the
 * gradients need asks for (x, gamma, beta, then the residual's) into grad_in. */
static cb_status bn_backward_from(const batch_norm_ctx *ctx, const cb_tensor *x, const float *mean,
                                  const float *invstd, const cb_tensor *gamma, const cb_tensor *y,
                                  const float *mask_affine, const cb_tensor *grad, const bool need[4],
                                  cb_tensor **grad_in) {
  cb_status st;
  cb_tensor *g = NULL;
  bn_job j = {.training = ctx->training, .relu = ctx->relu, .x = cb_tensor_data(x),
              .mean = (float *)mean, .invstd = (float *)invstd,
              .gamma = gamma ? cb_tensor_data(gamma) : NULL,
              .y_saved = y ? cb_tensor_data(y) : NULL, .mask_affine = mask_affine};
  planes_of(x, &j.l); /* x was saved with dense planes, and y has x's layout */
  if (planes_of(grad, &j.gl)) g = cb_tensor_retain((cb_tensor *)grad);
  else if ((st = cb_tensor_contiguous(&g, grad)) != CB_OK) return st;
  planes_of(g, &j.gl);
  j.g = cb_tensor_data(g);
  st = backward_outputs(need, x, &j, grad_in);
  j.masked = j.dx, j.ml = j.dl;
  if (st == CB_OK && ctx->residual && need[3]) {
    if (!ctx->relu) { /* d(bn + r)/dr = 1: the gradient passes through, shared */
      grad_in[3] = cb_tensor_retain((cb_tensor *)grad);
    } else if ((st = cb_tensor_empty_same_layout(&grad_in[3], x, CB_FLOAT32)) == CB_OK) {
      j.masked = cb_tensor_data(grad_in[3]); /* the masked g, for dx to read too */
      planes_of(grad_in[3], &j.ml);
    }
  }
  set_runs(&j, planes_follow(&j.l) && planes_follow(&j.gl) && (!j.dx || planes_follow(&j.dl)) &&
                   (!j.masked || planes_follow(&j.ml)));
  if (st == CB_OK) st = backward_phases(&j, ctx, bn_gradient_sums_channels, bn_backward_channels);
  cb_tensor_release(g);
  return st;
}

static cb_status bn_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const batch_norm_ctx *ctx = CB_NODE_CTX(node, batch_norm_ctx);
  const cb_tensor *x, *mean, *invstd, *gamma = NULL, *y = NULL;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &mean)) != CB_OK ||
      (st = cb_node_saved(node, 2, &invstd)) != CB_OK)
    return st;
  if (ctx->gamma_slot >= 0 && (st = cb_node_saved(node, ctx->gamma_slot, &gamma)) != CB_OK)
    return st;
  if (ctx->output_slot >= 0 && (st = cb_node_saved(node, ctx->output_slot, &y)) != CB_OK)
    return st;
  bool need[4];
  node_needs(node, need);
  need[3] = ctx->residual && cb_node_needs_grad(node, 3);
  return bn_backward_from(ctx, x, cb_tensor_data(mean), cb_tensor_data(invstd), gamma, y, NULL, grad,
                          need, grad_in);
}

/* The checks of every batch norm's input and options. */
static cb_status check_arguments(const cb_tensor *x, const cb_tensor *running_mean,
                                 const cb_tensor *running_var, bool training, double momentum,
                                 double eps) {
  if (x->dtype != CB_FLOAT32) return cb_fail(CB_ETYPE, "batch_norm: expected a float32 input");
  if (x->ndim < 2) {
    char xs[128];
    return cb_fail(CB_ESHAPE, "batch_norm: expected N x C (x ...) input, got %s",
                   cb_shape_str(xs, 128, x->ndim, x->shape));
  }
  if (!(eps > 0) || momentum < 0 || momentum > 1)
    return cb_fail(CB_EINVAL, "batch_norm: needs eps > 0 and momentum in [0, 1]");
  if (!training && (!running_mean || !running_var))
    return cb_fail(CB_EINVAL, "batch_norm: evaluation mode needs running statistics");
  if ((running_mean == NULL) != (running_var == NULL))
    return cb_fail(CB_EINVAL, "batch_norm: give both running_mean and running_var, or neither");
  int64_t c = x->shape[1];
  if (training && cb_tensor_numel(x) / (c ? c : 1) < 2)
    return cb_fail(CB_EINVAL, "batch_norm: training needs more than one value per channel");
  cb_status st = CB_OK;
  if (running_mean && (st = check_running("running_mean", running_mean, c)) == CB_OK)
    st = check_running("running_var", running_var, c);
  return st;
}

/* Evaluation: mean and invstd (c floats each) from the running statistics.
 * Training: j is to move the running statistics (when there are any). */
static void use_running_statistics(bn_job *j, int64_t c, cb_tensor *running_mean,
                                   cb_tensor *running_var, float *mean, float *invstd) {
  if (!j->training) {
    const float *rm = cb_tensor_data(running_mean), *rv = cb_tensor_data(running_var);
    for (int64_t i = 0; i < c; i++) {
      mean[i] = rm[i];
      invstd[i] = (float)(1.0 / sqrt((double)rv[i] + j->eps));
    }
  } else if (running_mean) {
    j->running_mean = cb_tensor_data(running_mean);
    j->running_var = cb_tensor_data(running_var);
    cb_tensor_bump_version(running_mean);
    cb_tensor_bump_version(running_var);
  }
}

/* cb_batch_norm, and with pool its 2x2 max-pooled form (relu set, no residual);
 * with parts (pooled only), nothing recorded: what backward needs goes to
 * *parts instead (cb_batch_norm_relu_pool_forward). */
static cb_status batch_norm(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                            const cb_tensor *bias, cb_tensor *running_mean, cb_tensor *running_var,
                            bool training, double momentum, double eps, bool relu,
                            const cb_tensor *residual, const cb_reducer *sync, bool pool,
                            cb_bn_pool_parts *parts) {
  cb_status st = check_arguments(x, running_mean, running_var, training, momentum, eps);
  if (st != CB_OK) return st;
  int64_t c = x->shape[1];
  if (residual && (residual->dtype != CB_FLOAT32 || residual->ndim != x->ndim ||
                   memcmp(residual->shape, x->shape, sizeof(int64_t) * (size_t)x->ndim))) {
    char xs[128], rs[128];
    return cb_fail(CB_ESHAPE, "batch_norm: the residual must be float32 of the input's shape %s, got %s %s",
                   cb_shape_str(xs, 128, x->ndim, x->shape), cb_dtype_name(residual->dtype),
                   cb_shape_str(rs, 128, residual->ndim, residual->shape));
  }
  cb_tensor *xd = NULL, *rd = NULL, *gamma = NULL, *beta = NULL, *mean = NULL, *invstd = NULL;
  cb_tensor *winners = NULL, *deviations = NULL;
  const cb_tensor *inputs[4] = {x, weight, bias, residual};
  bn_job j = {.training = training, .momentum = momentum, .eps = eps, .relu = relu,
              .sync = training && sync && sync->sum};
  double *stats = NULL;
  /* dense planes: the input's own layout when it has them, else a copy */
  if (planes_of(x, &j.l)) xd = cb_tensor_retain((cb_tensor *)x);
  else if ((st = cb_tensor_contiguous(&xd, x)) != CB_OK) return st;
  planes_of(xd, &j.l);
  if (residual) {
    if (planes_of(residual, &j.rl)) rd = cb_tensor_retain((cb_tensor *)residual);
    else if ((st = cb_tensor_contiguous(&rd, residual)) != CB_OK) goto done;
    planes_of(rd, &j.rl);
    j.r = cb_tensor_data(rd);
  }
  if ((st = channel_vector("weight", weight, c, &gamma)) != CB_OK ||
      (st = channel_vector("bias", bias, c, &beta)) != CB_OK)
    goto done;
  if ((st = cb_tensor_empty(&mean, 1, &c, CB_FLOAT32)) != CB_OK ||
      (st = cb_tensor_empty(&invstd, 1, &c, CB_FLOAT32)) != CB_OK)
    goto done;
  use_running_statistics(&j, c, running_mean, running_var, cb_tensor_data(mean), cb_tensor_data(invstd));
  if (pool) { /* x is 4-d with rows of w <= CB_BN_POOL_ROW_MAX (cb_batch_norm_relu_pool) */
    j.w = x->shape[3], j.oh = x->shape[2] / 2, j.ow = x->shape[3] / 2;
    int64_t windows = j.l.n * j.l.c * j.oh * j.ow;
    st = cb_tensor_empty_images_like(out, xd, j.oh, j.ow, CB_FLOAT32);
    bool keep = parts ? parts->keep_windows : cb_needs_record(3, inputs);
    if (st == CB_OK && keep &&
        ((st = cb_tensor_empty(&winners, 1, &windows, CB_UINT8)) != CB_OK ||
         (st = cb_tensor_empty(&deviations, 1, &windows, CB_FLOAT32)) != CB_OK))
      cb_release_on_error(st, out);
    if (winners && deviations) {
      j.winners = cb_tensor_data(winners);
      j.deviations = cb_tensor_data(deviations);
    }
  } else {
    st = cb_tensor_empty_same_layout(out, xd, CB_FLOAT32);
  }
  if (st != CB_OK) goto done;
  planes_of(*out, &j.pl);
  /* the statistics read x alone; the unpooled forward x, y (in x's layout) and r */
  set_runs(&j, planes_follow(&j.l) && (pool || (planes_follow(&j.pl) && (!j.r || planes_follow(&j.rl)))));
  j.x = cb_tensor_data(xd);
  j.y = cb_tensor_data(*out);
  j.gamma = gamma ? cb_tensor_data(gamma) : NULL;
  j.beta = beta ? cb_tensor_data(beta) : NULL;
  j.mean = cb_tensor_data(mean);
  j.invstd = cb_tensor_data(invstd);
  j.count = (double)(j.l.n * j.l.s);
  if (training) {
    if (!(stats = malloc(sizeof(double) * (size_t)(2 * c + 1)))) {
      st = cb_fail(CB_ENOMEM, "batch_norm: out of memory");
      cb_release_on_error(st, out);
      goto done;
    }
    j.stats = stats;
  }
  cb_range_fn forward = pool ? bn_pool_forward_channels : bn_forward_channels;
  if (training && !j.sync) { /* both phases channel by channel, x still in cache */
    channel_phases phases = {&j, bn_statistics_channels, forward, true};
    cb_parallel_for(c, 1, run_channel_phases, &phases);
  } else {
    if (training) {
      cb_parallel_for(c, 1, bn_statistics_channels, &j);
      if (j.sync) { /* the statistics of every process's batch, and their count */
        stats[2 * c] = j.count;
        sync->sum(sync->ctx, stats, 2 * c + 1);
        j.count = stats[2 * c];
      }
      bn_finish_statistics(&j, j.count, 0, c);
    }
    cb_parallel_for(c, 1, forward, &j);
  }
  if (parts) { /* the caller records: the parts, and gamma as this op read it */
    parts->x = cb_tensor_retain(xd), parts->mean = cb_tensor_retain(mean);
    parts->invstd = cb_tensor_retain(invstd);
    parts->gamma = gamma ? cb_tensor_retain(gamma) : NULL;
    parts->winners = winners ? cb_tensor_retain(winners) : NULL;
    parts->deviations = deviations ? cb_tensor_retain(deviations) : NULL;
    goto done;
  }
  const cb_tensor *save[6] = {xd, mean, invstd};
  batch_norm_ctx ctx = {.training = training, .relu = relu, .residual = residual != NULL,
                        .gamma_slot = -1, .output_slot = -1, .winners_slot = -1, .count = j.count};
  if (j.sync) ctx.sync = *sync;
  int nsave = 3;
  if (gamma) save[ctx.gamma_slot = nsave++] = gamma;
  if (pool && winners) {
    save[ctx.winners_slot = nsave++] = winners;
    save[nsave++] = deviations;
  } else if (relu && !pool) {
    save[ctx.output_slot = nsave++] = *out;
  }
  cb_node *node;
  st = cb_record(*out, pool ? "BatchNormReluPoolBackward" : relu ? "BatchNormReluBackward" : "BatchNormBackward",
                 pool ? bn_pool_backward : bn_backward, residual ? 4 : 3, inputs, nsave, save, &node);
  if (node) *CB_NODE_CTX(node, batch_norm_ctx) = ctx;
  cb_release_on_error(st, out);
done:
  free(stats);
  cb_tensor_release(xd);
  cb_tensor_release(rd);
  cb_tensor_release(gamma);
  cb_tensor_release(beta);
  cb_tensor_release(mean);
  cb_tensor_release(invstd);
  cb_tensor_release(winners);
  cb_tensor_release(deviations);
  return st;
}

cb_status cb_batch_norm(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                        const cb_tensor *bias, cb_tensor *running_mean, cb_tensor *running_var,
                        bool training, double momentum, double eps, bool relu,
                        const cb_tensor *residual, const cb_reducer *sync) {
  return batch_norm(out, x, weight, bias, running_mean, running_var, training, momentum, eps, relu,
                    residual, sync, false, NULL);
}

/* The pooled form's input: 4-d, at least one window. */
static cb_status check_pool_input(const cb_tensor *x) {
  char xs[128];
  if (x->ndim != 4)
    return cb_fail(CB_ESHAPE, "batch_norm: pooling needs an N x C x H x W input, got %s",
                   cb_shape_str(xs, 128, x->ndim, x->shape));
  if (x->shape[2] < 2 || x->shape[3] < 2)
    return cb_fail(CB_ESHAPE, "batch_norm: input %s is smaller than the 2x2 pooling window",
                   cb_shape_str(xs, 128, x->ndim, x->shape));
  return CB_OK;
}

cb_status cb_batch_norm_relu_pool(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                                  const cb_tensor *bias, cb_tensor *running_mean,
                                  cb_tensor *running_var, bool training, double momentum, double eps,
                                  const cb_reducer *sync) {
  *out = NULL;
  cb_status st = check_pool_input(x);
  if (st != CB_OK) return st;
  if (x->shape[3] <= CB_BN_POOL_ROW_MAX)
    return batch_norm(out, x, weight, bias, running_mean, running_var, training, momentum, eps, true,
                      NULL, sync, true, NULL);
  /* rows too long for the row buffers: the two ops */
  cb_tensor *y;
  st = batch_norm(&y, x, weight, bias, running_mean, running_var, training, momentum, eps,
                            true, NULL, sync, false, NULL);
  if (st != CB_OK) return st;
  cb_pool_params two = {.kernel = {2, 2}, .stride = {2, 2}, .padding = {0, 0}};
  st = cb_max_pool2d(out, y, &two);
  cb_tensor_release(y);
  return st;
}

/* ---- parts, for conv2d + batch norm + ReLU + pooling (norm_parts.h) ---- */

cb_status cb_batch_norm_relu_pool_forward(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                                          const cb_tensor *bias, cb_tensor *running_mean,
                                          cb_tensor *running_var, bool training, double momentum,
                                          double eps, cb_bn_pool_parts *parts) {
  *out = NULL;
  cb_status st = check_pool_input(x);
  if (st != CB_OK) return st;
  if (x->shape[3] > CB_BN_POOL_ROW_MAX)
    return cb_fail(CB_ESHAPE, "batch_norm: rows of %lld exceed the fused pooling's %d",
                   (long long)x->shape[3], CB_BN_POOL_ROW_MAX);
  return batch_norm(out, x, weight, bias, running_mean, running_var, training, momentum, eps, true,
                    NULL, NULL, true, parts);
}

void cb_bn_pool_parts_release(cb_bn_pool_parts *parts) {
  cb_tensor_release(parts->x);
  cb_tensor_release(parts->mean);
  cb_tensor_release(parts->invstd);
  cb_tensor_release(parts->gamma);
  cb_tensor_release(parts->winners);
  cb_tensor_release(parts->deviations);
  *parts = (cb_bn_pool_parts){.keep_windows = parts->keep_windows};
}

struct cb_bn_pool_grad {
  bn_job j;
  cb_tensor *g;   /* the pooled gradient (dense planes) */
  double *stats;  /* phase 1's sums */
  float *coef;    /* per channel k, a, b (backward_coefficients) */
};

cb_status cb_bn_pool_grad_begin(const cb_bn_pool_parts *parts, bool training, const cb_tensor *grad,
                                bool need_gamma, bool need_beta, cb_tensor **dgamma,
                                cb_tensor **dbeta, cb_bn_pool_grad **state) {
  *dgamma = *dbeta = NULL;
  cb_bn_pool_grad *s = *state = calloc(1, sizeof *s);
  if (!s) return cb_fail(CB_ENOMEM, "batch_norm: out of memory");
  cb_status st = pool_backward_job(&s->j, parts->x, parts->mean, parts->invstd, parts->gamma,
                                   parts->winners, parts->deviations, training, grad, &s->g);
  int64_t c = s->j.l.c;
  bool need[3] = {false, need_gamma, need_beta};
  cb_tensor *outs[3] = {NULL, NULL, NULL};
  if (st == CB_OK) st = backward_outputs(need, parts->x, &s->j, outs);
  *dgamma = outs[1], *dbeta = outs[2];
  if (st == CB_OK && (!(s->stats = malloc(sizeof(double) * (size_t)(2 * c + 1))) ||
                      !(s->coef = malloc(sizeof(float) * (size_t)(3 * c + 1)))))
    st = cb_fail(CB_ENOMEM, "batch_norm: out of memory");
  if (st != CB_OK) {
    cb_bn_pool_grad_end(s);
    *state = NULL;
    cb_tensor_release(*dgamma), cb_tensor_release(*dbeta);
    *dgamma = *dbeta = NULL;
    return st;
  }
  s->j.stats = s->stats;
  s->j.local_stats = s->stats;
  s->j.count = (double)(s->j.l.n * s->j.l.s);
  cb_parallel_for(c, 1, bn_pool_gradient_sums, &s->j);
  for (int64_t ch = 0; ch < c; ch++)
    backward_coefficients(&s->j, ch, &s->coef[3 * ch], &s->coef[3 * ch + 1], &s->coef[3 * ch + 2]);
  return CB_OK;
}

CB_VECTOR_CLONES void cb_bn_pool_grad_images(const cb_bn_pool_grad *state, int64_t n0, int64_t n1,
                                             cb_planes dx) {
  const bn_job *j = &state->j;
  for (int64_t n = n0; n < n1; n++)
    for (int64_t c = 0; c < j->l.c; c++) {
      const float *coef = state->coef + 3 * c;
      pool_dx_plane(j, n, c, coef[0], coef[1], coef[2], dx.base + (n - n0) * dx.ns + c * dx.cs);
    }
}

void cb_bn_pool_grad_end(cb_bn_pool_grad *state) {
  if (!state) return;
  cb_tensor_release(state->g);
  free(state->stats);
  free(state->coef);
  free(state);
}

/* ---- parts, for batch norm + ReLU + conv2d (norm_parts.h) ---- */

cb_status cb_batch_norm_prepare(const cb_tensor *x, const cb_tensor *weight, const cb_tensor *bias,
                                cb_tensor *running_mean, cb_tensor *running_var, bool training,
                                double momentum, double eps, cb_tensor **xd, cb_tensor **stats,
                                cb_tensor **affine) {
  *xd = *stats = *affine = NULL;
  cb_status st = check_arguments(x, running_mean, running_var, training, momentum, eps);
  if (st != CB_OK) return st;
  int64_t c = x->shape[1], two_c = 2 * c;
  cb_tensor *gamma = NULL, *beta = NULL;
  double *sums = NULL;
  bn_job j = {.training = training, .momentum = momentum, .eps = eps};
  if (planes_of(x, &j.l)) *xd = cb_tensor_retain((cb_tensor *)x);
  else if ((st = cb_tensor_contiguous(xd, x)) != CB_OK) return st;
  planes_of(*xd, &j.l);
  set_runs(&j, planes_follow(&j.l));
  if ((st = channel_vector("weight", weight, c, &gamma)) != CB_OK ||
      (st = channel_vector("bias", bias, c, &beta)) != CB_OK ||
      (st = cb_tensor_empty(stats, 1, &two_c, CB_FLOAT32)) != CB_OK ||
      (st = cb_tensor_empty(affine, 1, &two_c, CB_FLOAT32)) != CB_OK)
    goto done;
  j.x = cb_tensor_data(*xd);
  j.mean = cb_tensor_data(*stats);
  j.invstd = j.mean + c;
  j.gamma = gamma ? cb_tensor_data(gamma) : NULL;
  j.beta = beta ? cb_tensor_data(beta) : NULL;
  use_running_statistics(&j, c, running_mean, running_var, j.mean, j.invstd);
  if (training) {
    if (!(sums = malloc(sizeof(double) * (size_t)(2 * c + 1)))) {
      st = cb_fail(CB_ENOMEM, "batch_norm: out of memory");
      goto done;
    }
    j.stats = sums;
    cb_parallel_for(c, 1, bn_statistics_channels, &j);
    bn_finish_statistics(&j, (double)(j.l.n * j.l.s), 0, c);
  }
  float *scale_shift = cb_tensor_data(*affine);
  for (int64_t k = 0; k < c; k++) channel_affine(&j, k, &scale_shift[k], &scale_shift[c + k]);
done:
  free(sums);
  cb_tensor_release(gamma);
  cb_tensor_release(beta);
  if (st != CB_OK) {
    cb_tensor_release(*xd);
    cb_tensor_release(*stats);
    cb_tensor_release(*affine);
    *xd = *stats = *affine = NULL;
  }
  return st;
}

cb_status cb_batch_norm_relu_backward(const cb_tensor *xd, const cb_tensor *stats,
                                      const cb_tensor *gamma, const cb_tensor *affine, bool training,
                                      const cb_tensor *grad, const bool need[3], cb_tensor **grad_in) {
  int64_t c = xd->shape[1];
  batch_norm_ctx ctx = {.training = training, .relu = true, .gamma_slot = -1, .output_slot = -1,
                        .winners_slot = -1, .count = (double)(cb_tensor_numel(xd) / c)};
  bool need_all[4] = {need[0], need[1], need[2], false};
  const float *mean = cb_tensor_data(stats);
  return bn_backward_from(&ctx, xd, mean, mean + c, gamma, NULL, cb_tensor_data(affine), grad,
                          need_all, grad_in);
}
