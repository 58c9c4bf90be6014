/* 2-D convolution. Stride-1, undilated, ungrouped convolutions go to the
 * direct path (conv_direct.h) unless the im2col path is forced; the rest, and
 * every convolution on CPUs without AVX2, run as below.
 *
 * im2col over a piece of the batch, then one sgemm per group:
 * Y_g (O_g x N*OH*OW) = W_g (O_g x K) @ col_g (K x N*OH*OW), K = C_g*kh*kw,
 * computed a piece of the batch at a time (the piece's columns of Y) so that
 * col stays about a MiB, in cache. Y is the CNHW image layout (tensor.h):
 * each output channel a row of the GEMM; the following layers keep that
 * layout, and the gradient arriving in backward usually has it.
 * Backward: dW_g = dY_g @ col_g^T, dcol_g = W_g^T @ dY_g (then col2im into
 * dx), db = row sums of dY. col is recomputed in backward rather than kept.
 *
 * Threads: the pieces are shared out among the pool's workers, each with its
 * own col buffer, doing im2col, sgemm (single-threaded) and col2im for its
 * images. The small matrices of CIFAR-sized layers (16 output rows) split
 * badly inside one sgemm; whole images split evenly and keep both cores busy
 * in the copies too. Each worker sums its own part of dW; the parts are added
 * at the end. */
#include <limits.h>
#include <string.h>

#include "autograd/autograd.h"
#include "tensor/blas.h"
#include "nn/conv_direct.h"
#include "nn/nn.h"
#include "nn/norm_parts.h"
#include "ops/pointwise.h"
#include "ops/reduce.h"
#include "tensor/threadpool.h"
#include "tensor/vectorize.h"

typedef struct {
  int64_t n, c, h, w;  /* input */
  int64_t o, kh, kw;   /* weight */
  int64_t oh, ow;      /* output */
  int64_t groups, cg, og, k, m; /* per group: channels in/out, K = cg*kh*kw, M = n*oh*ow */
  cb_conv_params p;
} conv_geometry;

static cb_status conv_geometry_of(conv_geometry *cg, const cb_tensor *x, const cb_tensor *w,
                                  const cb_tensor *b, const cb_conv_params *p) {
  char xs[128], ws[128];
  cb_shape_str(xs, sizeof xs, x->ndim, x->shape);
  cb_shape_str(ws, sizeof ws, w->ndim, w->shape);
  if (x->dtype != CB_FLOAT32 || w->dtype != CB_FLOAT32 || (b && b->dtype != CB_FLOAT32))
    return cb_fail(CB_ETYPE, "conv2d: expected float32 input, weight and bias");
  if (x->ndim != 4 || w->ndim != 4)
    return cb_fail(CB_ESHAPE, "conv2d: expected a 4-d input (N x C x H x W) and weight "
                   "(O x C/groups x kh x kw), got %s and %s", xs, ws);
  if (p->groups < 1 || x->shape[1] % p->groups || w->shape[0] % p->groups ||
      w->shape[1] * p->groups != x->shape[1])
    return cb_fail(CB_ESHAPE, "conv2d: input %s and weight %s do not fit with groups=%lld "
                   "(weight dim 2 must be C/groups, and groups must divide C and O)",
                   xs, ws, (long long)p->groups);
  if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
    return cb_fail(CB_ESHAPE, "conv2d: bias must have shape {%lld}", (long long)w->shape[0]);
  *cg = (conv_geometry){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2], .w = x->shape[3],
                        .o = w->shape[0], .kh = w->shape[2], .kw = w->shape[3],
                        .groups = p->groups, .p = *p};
  cb_status st;
  if ((st = cb_window_count("conv2d", cg->h, cg->kh, p->stride[0], p->padding[0],
                            p->dilation[0], &cg->oh)) != CB_OK ||
      (st = cb_window_count("conv2d", cg->w, cg->kw, p->stride[1], p->padding[1],
                            p->dilation[1], &cg->ow)) != CB_OK)
    return st;
  if (cg->oh < 1 || cg->ow < 1)
    return cb_fail(CB_ESHAPE, "conv2d: input %s is smaller than the (dilated) kernel %s", xs, ws);
  cg->cg = cg->c / cg->groups;
  cg->og = cg->o / cg->groups;
  cg->k = cg->cg * cg->kh * cg->kw;
  /* the output and one image's column matrix must be representable */
  int64_t numel;
  if ((st = cb_check_shape("conv2d", 4, (int64_t[]){cg->n, cg->o, cg->oh, cg->ow}, &numel)) ||
      (st = cb_check_shape("conv2d", 3, (int64_t[]){cg->k, cg->oh, cg->ow}, &numel)))
    return st;
  cg->m = cg->n * cg->oh * cg->ow;
  return CB_OK;
}

/* ---- im2col / col2im ---- */

typedef struct {
  const conv_geometry *g;
  const float *x;     /* input (im2col) or NULL */
  float *dx;          /* input gradient (col2im) or NULL */
  const int64_t *xs;  /* strides of x / dx, in elements */
  float *col;         /* K x (n1 - n0)*OH*OW */
  int64_t channel0;   /* first input channel of the group */
  int64_t n0, n1;     /* the chunk of images */
} col_job;

/* The batch cut into pieces of `images` images for the workers: col (K x
 * images*OH*OW floats) within about COL_FLOATS, and a number of pieces that
 * the workers share evenly. */
#define COL_FLOATS ((int64_t)1 << 18)

typedef struct {
  int64_t images, count; /* images per piece, pieces */
  int workers;
  int64_t col_floats;    /* per worker */
} batch_pieces;

static batch_pieces pieces_of(const conv_geometry *g) {
  int64_t per_image = g->k * g->oh * g->ow, threads = cb_get_num_threads();
  int64_t images = COL_FLOATS / (per_image ? per_image : 1);
  if (images < 1) images = 1;
  int64_t count = (g->n + images - 1) / images;
  if (count < threads) count = threads < g->n ? threads : g->n;
  count = (count + threads - 1) / threads * threads; /* a multiple of the workers */
  if (count > g->n) count = g->n;
  images = (g->n + count - 1) / count;
  count = (g->n + images - 1) / images;
  batch_pieces b = {images, count, cb_parallel_chunks(count, 1), per_image * images};
  return b;
}

/* Rows of strided columns go through gather_columns / scatter_add_columns from
 * this many output columns on; shorter ones (the 8-wide outputs of a 16x16
 * layer's downsampling) were 3-7 % slower that way than column by column. */
#define VECTOR_COLUMNS 16

/* The output columns [lo, hi) whose input column ow * stride + dj lies
 * inside the image (the rest read the zero padding); the same for every
 * row of a (channel, ki, kj) row of col. */
static void valid_columns(const conv_geometry *g, int64_t dj, int64_t *lo, int64_t *hi) {
  int64_t sw = g->p.stride[1];
  *lo = dj < 0 ? (-dj + sw - 1) / sw : 0;
  *hi = g->w - dj > 0 ? (g->w - dj + sw - 1) / sw : 0;
  if (*hi > g->ow) *hi = g->ow;
  if (*hi < *lo) *hi = *lo;
}

/* dst[i] = src[i * step] for i < n: a row of im2col with strided columns.
 * Step 2 (a downsampling convolution's) is its own loop, which the
 * vectoriser turns into permutes of whole vectors; the general loop stays
 * scalar. */
CB_VECTOR_CLONES static void gather_columns(float *dst, const float *src, int64_t n, int64_t step) {
  if (step == 2)
    for (int64_t i = 0; i < n; i++) dst[i] = src[2 * i];
  else
    for (int64_t i = 0; i < n; i++) dst[i] = src[i * step];
}

/* dst[i * step] += src[i] for i < n: col2im's row with strided columns.
 * The first `pairs` columns of step 2 add src and -0.0 (which changes no
 * float) to dst[2i] and dst[2i + 1]: a whole group of two is what the
 * vectoriser interleaves, so dst[2i + 1] must be this row's own column. */
CB_VECTOR_CLONES static void scatter_add_columns(float *dst, const float *src, int64_t n,
                                                 int64_t step, int64_t pairs) {
  int64_t i = 0;
  if (step == 2)
    for (; i < pairs; i++) {
      dst[2 * i] += src[i];
      dst[2 * i + 1] += -0.0f;
    }
  for (; i < n; i++) dst[i * step] += src[i];
}

/* Rows [begin, end) of col: row r is (channel, ki, kj). */
static void im2col_rows(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const col_job *j = arg;
  const conv_geometry *g = j->g;
  const int64_t *xs = j->xs;
  int64_t sh = g->p.stride[0], sw = g->p.stride[1], ph = g->p.padding[0], pw = g->p.padding[1];
  for (int64_t r = begin; r < end; r++) {
    int64_t c = j->channel0 + r / (g->kh * g->kw), ki = (r / g->kw) % g->kh, kj = r % g->kw;
    int64_t di = ki * g->p.dilation[0] - ph, dj = kj * g->p.dilation[1] - pw;
    float *dst = j->col + r * (j->n1 - j->n0) * g->oh * g->ow;
    int64_t lo, hi;
    valid_columns(g, dj, &lo, &hi);
    for (int64_t n = j->n0; n < j->n1; n++) {
      const float *plane = j->x + n * xs[0] + c * xs[1];
      for (int64_t oh = 0; oh < g->oh; oh++, dst += g->ow) {
        int64_t ih = oh * sh + di;
        if (ih < 0 || ih >= g->h) {
          memset(dst, 0, sizeof(float) * (size_t)g->ow);
          continue;
        }
        const float *row = plane + ih * xs[2];
        if (sw == 1 && xs[3] == 1) { /* the common case: a shifted copy */
          for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0;
          memcpy(dst + lo, row + lo + dj, sizeof(float) * (size_t)(hi - lo));
          for (int64_t ow = hi; ow < g->ow; ow++) dst[ow] = 0;
        } else if (g->ow >= VECTOR_COLUMNS) { /* strided columns: a vector loop over the pixels */
          for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0;
          if (hi > lo) gather_columns(dst + lo, row + (lo * sw + dj) * xs[3], hi - lo, sw * xs[3]);
          for (int64_t ow = hi; ow < g->ow; ow++) dst[ow] = 0;
        } else { /* short rows: column by column */
          for (int64_t ow = 0; ow < g->ow; ow++) {
            int64_t iw = ow * sw + dj;
            dst[ow] = (iw >= 0 && iw < g->w) ? row[iw * xs[3]] : 0.0f;
          }
        }
      }
    }
  }
}

/* Input channels [begin, end) of the group: adds their col rows into dx
 * (each channel's rows touch only that channel, so chunks never collide). */
static void col2im_channels(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const col_job *j = arg;
  const conv_geometry *g = j->g;
  const int64_t *xs = j->xs;
  int64_t sh = g->p.stride[0], sw = g->p.stride[1], ph = g->p.padding[0], pw = g->p.padding[1];
  for (int64_t cl = begin; cl < end; cl++) {
    for (int64_t ki = 0; ki < g->kh; ki++)
      for (int64_t kj = 0; kj < g->kw; kj++) {
        int64_t r = (cl * g->kh + ki) * g->kw + kj;
        int64_t di = ki * g->p.dilation[0] - ph, dj = kj * g->p.dilation[1] - pw;
        const float *src = j->col + r * (j->n1 - j->n0) * g->oh * g->ow;
        int64_t lo, hi;
        valid_columns(g, dj, &lo, &hi);
        for (int64_t n = j->n0; n < j->n1; n++) {
          float *plane = j->dx + n * xs[0] + (j->channel0 + cl) * xs[1];
          for (int64_t oh = 0; oh < g->oh; oh++, src += g->ow) {
            int64_t ih = oh * sh + di;
            if (ih < 0 || ih >= g->h) continue;
            float *row = plane + ih * xs[2];
            if (sw == 1 && xs[3] == 1) { /* the common case: a shifted add */
              for (int64_t ow = lo; ow < hi; ow++) row[ow + dj] += src[ow];
              continue;
            }
            if (g->ow < VECTOR_COLUMNS) { /* short rows, as in im2col_rows */
              for (int64_t ow = 0; ow < g->ow; ow++) {
                int64_t iw = ow * sw + dj;
                if (iw >= 0 && iw < g->w) row[iw * xs[3]] += src[ow];
              }
              continue;
            }
            if (hi == lo) continue; /* every column in the padding */
            int64_t first = lo * sw + dj, pairs = sw == 2 && xs[3] == 1 ? (g->w - first) / 2 : 0;
            scatter_add_columns(row + first * xs[3], src + lo, hi - lo, sw * xs[3],
                                pairs < hi - lo ? pairs : hi - lo);
          }
        }
      }
  }
}

/* Serial within a worker (nested parallel calls run in the caller). */
static void im2col(const conv_geometry *g, const cb_tensor *x, int64_t group, int64_t n0,
                   int64_t n1, float *col) {
  col_job job = {g, cb_tensor_data(x), NULL, x->stride, col, group * g->cg, n0, n1};
  cb_parallel_for(g->k, 1, im2col_rows, &job);
}

/* What every worker needs for its pieces of the batch. */
typedef struct {
  const conv_geometry *g;
  batch_pieces b;
  const cb_tensor *x;      /* input */
  const float *w;          /* weight, contiguous O x K */
  float *y;                /* forward: output, O x M; holds the bias if has_bias */
  bool has_bias, relu;     /* forward: clamp each piece's outputs at 0 */
  const float *dy;         /* backward: output gradient, O x M */
  cb_tensor *dx;           /* backward: input gradient (zeroed), or NULL */
  float *dw;               /* backward: one O x K part per worker, or NULL */
  float *col;              /* one col buffer per worker */
  cb_status *status;       /* one per worker */
} conv_job;

/* The images [n0, n1) of a piece of the batch. */
static void piece_images(const conv_job *j, int64_t piece, int64_t *n0, int64_t *n1) {
  *n0 = piece * j->b.images;
  *n1 = *n0 + j->b.images < j->g->n ? *n0 + j->b.images : j->g->n;
}

/* Outputs of images [n0, n1) clamped at 0, while they are in cache: y is
 * CNHW, so each channel's are one run. */
static void relu_images(float *y, int64_t channels, int64_t m, int64_t plane, int64_t n0,
                        int64_t n1) {
  for (int64_t o = 0; o < channels; o++) {
    float *run = y + o * m + n0 * plane;
    for (int64_t i = 0; i < (n1 - n0) * plane; i++) run[i] = run[i] > 0 ? run[i] : 0.0f;
  }
}

/* Pieces [begin, end) of the batch, forward. */
static void conv_forward_pieces(void *arg, int worker, int64_t begin, int64_t end) {
  const conv_job *j = arg;
  const conv_geometry *g = j->g;
  float *col = j->col + worker * j->b.col_floats;
  int64_t plane = g->oh * g->ow;
  cb_status st = CB_OK;
  for (int64_t piece = begin; piece < end && st == CB_OK; piece++) {
    int64_t n0, n1;
    piece_images(j, piece, &n0, &n1);
    int64_t cols = (n1 - n0) * plane;
    for (int64_t grp = 0; grp < g->groups && st == CB_OK; grp++) {
      im2col(g, j->x, grp, n0, n1, col);
      st = cb_sgemm(false, false, g->og, cols, g->k, 1.0f, j->w + grp * g->og * g->k, g->k, col,
                    cols, j->has_bias ? 1.0f : 0.0f, j->y + grp * g->og * g->m + n0 * plane, g->m);
    }
    if (j->relu && st == CB_OK) relu_images(j->y, g->o, g->m, plane, n0, n1);
  }
  j->status[worker] = st;
}

/* Pieces [begin, end) of the batch, backward: this worker's part of dW (its
 * first piece overwrites, later ones add) and its images' rows of dx. */
static void conv_backward_pieces(void *arg, int worker, int64_t begin, int64_t end) {
  const conv_job *j = arg;
  const conv_geometry *g = j->g;
  float *col = j->col + worker * j->b.col_floats;
  float *dw = j->dw ? j->dw + worker * g->o * g->k : NULL;
  int64_t plane = g->oh * g->ow;
  cb_status st = CB_OK;
  for (int64_t piece = begin; piece < end && st == CB_OK; piece++) {
    int64_t n0, n1;
    piece_images(j, piece, &n0, &n1);
    int64_t cols = (n1 - n0) * plane;
    for (int64_t grp = 0; grp < g->groups && st == CB_OK; grp++) {
      const float *dy_g = j->dy + grp * g->og * g->m + n0 * plane; /* this piece's columns */
      if (dw) {
        im2col(g, j->x, grp, n0, n1, col);
        st = cb_sgemm(false, true, g->og, g->k, cols, 1.0f, dy_g, g->m, col, cols,
                      piece == begin ? 0.0f : 1.0f, dw + grp * g->og * g->k, g->k);
      }
      if (j->dx && st == CB_OK) {
        st = cb_sgemm(true, false, g->k, cols, g->og, 1.0f, j->w + grp * g->og * g->k, g->k,
                      dy_g, g->m, 0.0f, col, cols);
        col_job job = {g, NULL, cb_tensor_data(j->dx), j->dx->stride, col, grp * g->cg, n0, n1};
        if (st == CB_OK) cb_parallel_for(g->cg, 1, col2im_channels, &job);
      }
    }
  }
  j->status[worker] = st;
}

static cb_status first_failure(const cb_status *status, int workers) {
  for (int i = 0; i < workers; i++)
    if (status[i] != CB_OK) return status[i];
  return CB_OK;
}

/* BLAS takes int sizes: the output's columns per channel and a piece's col. */
static cb_status check_blas_sizes(const conv_geometry *g, const batch_pieces *b) {
  cb_status st = cb_blas_init();
  if (st != CB_OK) return st;
  if (g->m > INT_MAX || b->col_floats > INT_MAX || g->o * g->k > INT_MAX)
    return cb_fail(CB_EINVAL, "conv2d: %lld output positions per channel exceed what BLAS takes",
                   (long long)g->m);
  return CB_OK;
}

/* ---- the direct path (conv_direct.h) ---- */

static bool direct_applies(const conv_geometry *g) {
  return cb_conv_get_path() != CB_CONV_IM2COL && g->groups == 1 && g->p.stride[0] == 1 &&
         g->p.stride[1] == 1 && g->p.dilation[0] == 1 && g->p.dilation[1] == 1 &&
         g->p.padding[0] < g->kh && g->p.padding[1] < g->kw &&
         g->kh * g->kw <= CB_DIRECT_MAX_TAPS;
}

/* Stride 2 on the direct path (its four phases, conv_direct.h): 3x3 kernels,
 * padding 1, even sizes. */
static bool direct_strided_applies(const conv_geometry *g) {
  return cb_conv_get_path() != CB_CONV_IM2COL && g->groups == 1 && g->p.stride[0] == 2 &&
         g->p.stride[1] == 2 && g->p.dilation[0] == 1 && g->p.dilation[1] == 1 && g->kh == 3 &&
         g->kw == 3 && g->p.padding[0] == 1 && g->p.padding[1] == 1 && g->h % 2 == 0 &&
         g->w % 2 == 0;
}

/* ... and its weight gradient where the outputs are 16 wide or more: at 8x8
 * (ResNet-32's 32 -> 64 layer) the padded half-size grid is 27 % padding
 * and dY no longer goes in place, and sgemm on im2col's columns was faster
 * (2.2-2.7 against 2.9-3.2 ms; at 16x16 outputs 3.4-3.7 against 2.4-2.6). */
static bool direct_strided_weight_grad(const conv_geometry *g) {
  return direct_strided_applies(g) && g->ow >= 16;
}

typedef struct {
  const cb_direct_conv *conv;
  cb_direct_mode mode;
  cb_planes in, out; /* WEIGHT_GRAD: in is x, out is dY */
  int64_t n;
  const float *bias;
  bool relu;        /* forward: clamp each stack's outputs at 0 (out is CNHW) */
  int64_t channels; /* forward with relu: the output's */
  /* INPUT_GRAD: the weight gradient's plan, or NULL; its stacks are conv's,
   * and each stack's part of dW follows its dx, while dY is in cache */
  const cb_direct_conv *weight_grad;
  cb_planes x;
  bool bias_grad; /* the weight gradient's pass sums dY's channels for the bias's */
} direct_job;

static void direct_stacks(void *arg, int worker, int64_t begin, int64_t end) {
  const direct_job *j = arg;
  int64_t stack = cb_direct_conv_stack(j->conv);
  for (int64_t s = begin; s < end; s++) {
    int64_t n0 = s * stack, count = j->n - n0 < stack ? j->n - n0 : stack;
    cb_planes in = j->in, out = j->out;
    in.base += n0 * in.ns;
    out.base += n0 * out.ns;
    if (j->mode == CB_DIRECT_WEIGHT_GRAD)
      cb_direct_conv_weight_grad(j->conv, worker, in, out, count, s != begin, j->bias_grad);
    else
      cb_direct_conv_images(j->conv, worker, in, out, count, j->bias);
    if (j->relu) relu_images(j->out.base, j->channels, j->out.cs, j->out.ns, n0, n0 + count);
    if (j->weight_grad) {
      cb_planes x = j->x;
      x.base += n0 * x.ns;
      cb_direct_conv_weight_grad(j->weight_grad, worker, x, in, count, s != begin, j->bias_grad);
    }
  }
}

static cb_direct_conv *direct_plan(const conv_geometry *g, const float *weight, cb_direct_mode mode) {
  cb_direct_shape shape = {g->n, g->c, g->h, g->w, g->o, g->kh, g->kw,
                           g->p.padding[0], g->p.padding[1], g->oh, g->ow, g->p.stride[0]};
  return cb_direct_conv_new(&shape, weight, mode, cb_parallel_chunks(g->n, 1));
}

/* The job's passes over the batch's stacks (its plan's), shared out to the
 * pool's workers; how many took part. */
static int direct_stacks_run(const conv_geometry *g, direct_job *job) {
  int64_t stack = cb_direct_conv_stack(job->conv);
  job->n = g->n;
  return cb_parallel_for((g->n + stack - 1) / stack, 1, direct_stacks, job);
}

/* The forward pass of the direct path over the batch. */
static cb_status direct_forward(const conv_geometry *g, const float *weight, const float *affine,
                                direct_job job) {
  cb_direct_conv *conv = direct_plan(g, weight, CB_DIRECT_FORWARD);
  if (!conv) return cb_fail(CB_ENOMEM, "conv2d: out of memory");
  cb_direct_conv_normalize_input(conv, affine);
  job.conv = conv;
  direct_stacks_run(g, &job);
  cb_direct_conv_free(conv);
  return CB_OK;
}

/* Backward on the direct path: dx (when dx.base; added into it when dx_add)
 * and dW (when dw), with
 * dW's pass the bias gradient db (when db). Both in one pass over the
 * stacks when their plans stack the same images (3x3 layers with padding 1:
 * dY's padding is 1 too), so each stack's dY is read from memory once; else
 * a pass each. */
static cb_status direct_backward(const conv_geometry *g, const float *weight, cb_planes dy,
                                 cb_planes dx, bool dx_add, cb_planes x, const float *affine, float *dw,
                                 float *db) {
  direct_job input_grad = {.mode = CB_DIRECT_INPUT_GRAD, .in = dy, .out = dx, .bias_grad = db != NULL};
  direct_job weight_grad = {.mode = CB_DIRECT_WEIGHT_GRAD, .in = x, .out = dy, .bias_grad = db != NULL};
  cb_direct_conv *dx_plan = dx.base ? direct_plan(g, weight, CB_DIRECT_INPUT_GRAD) : NULL;
  cb_direct_conv *dw_plan = dw ? direct_plan(g, NULL, CB_DIRECT_WEIGHT_GRAD) : NULL;
  if (dw_plan) cb_direct_conv_normalize_input(dw_plan, affine);
  if (dx_plan && dx_add) cb_direct_conv_add_to_output(dx_plan);
  cb_status st = CB_OK;
  if ((dx.base && !dx_plan) || (dw && !dw_plan)) {
    st = cb_fail(CB_ENOMEM, "conv2d: out of memory");
  } else if (dx_plan && dw_plan && cb_direct_conv_stack(dx_plan) == cb_direct_conv_stack(dw_plan)) {
    input_grad.conv = dx_plan, input_grad.weight_grad = dw_plan, input_grad.x = x;
    cb_direct_conv_weight_grad_sum(dw_plan, direct_stacks_run(g, &input_grad), dw, db);
  } else {
    if (dx_plan) input_grad.conv = dx_plan, direct_stacks_run(g, &input_grad);
    if (dw_plan) {
      weight_grad.conv = dw_plan;
      cb_direct_conv_weight_grad_sum(dw_plan, direct_stacks_run(g, &weight_grad), dw, db);
    }
  }
  cb_direct_conv_free(dx_plan);
  cb_direct_conv_free(dw_plan);
  return st;
}

/* ---- forward ---- */

/* *z = max(0, x * scale + shift) per input channel (affine: scales, then
 * shifts), written out for the im2col path, by the direct path's function. */
static cb_status normalized_input(const conv_geometry *g, const cb_tensor *x, const float *affine,
                                  cb_tensor **z) {
  cb_status st = cb_tensor_empty_same_layout(z, x, CB_FLOAT32);
  if (st != CB_OK) return st;
  const int64_t *xs = x->stride, *zs = (*z)->stride;
  cb_normalize_relu_images((cb_planes){cb_tensor_data(x), xs[0], xs[1], xs[2], xs[3]},
                           (cb_planes){cb_tensor_data(*z), zs[0], zs[1], zs[2], zs[3]}, g->n, g->c,
                           g->h, g->w, affine);
  return CB_OK;
}

static cb_status conv_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in);

/* The output y (CNHW) of the convolution of x (normalised on the way in by
 * affine, cb_direct_conv_normalize_input, when not NULL) with the contiguous
 * weight w, clamped at 0 when relu; nothing recorded. */
static cb_status conv_forward(cb_tensor **out, const conv_geometry *g, const cb_tensor *x,
                              const cb_tensor *w, const cb_tensor *bias, bool relu,
                              const float *affine) {
  *out = NULL;
  batch_pieces b = pieces_of(g);
  cb_status st = check_blas_sizes(g, &b);
  if (st != CB_OK) return st;
  cb_tensor *col = NULL, *y = NULL, *z = NULL;
  /* the output in CNHW layout: row o of the GEMM's Y is channel o's block */
  if ((st = cb_tensor_empty_images(&y, g->n, g->o, g->oh, g->ow, CB_FLOAT32, CB_LAYOUT_CNHW)) != CB_OK)
    goto done;
  float *yp = cb_tensor_data(y);
  if (direct_applies(g) || direct_strided_applies(g)) {
    cb_tensor *bc = NULL;
    if (bias && (st = cb_tensor_contiguous(&bc, bias)) != CB_OK) goto done;
    const int64_t *xs = x->stride;
    direct_job job = {.mode = CB_DIRECT_FORWARD, .in = {cb_tensor_data(x), xs[0], xs[1], xs[2], xs[3]},
                      .out = {yp, g->oh * g->ow, g->m, g->ow, 1},
                      .bias = bc ? cb_tensor_data(bc) : NULL, .relu = relu, .channels = g->o};
    st = direct_forward(g, cb_tensor_data(w), affine, job);
    cb_tensor_release(bc);
    goto done;
  }
  if (affine) { /* im2col reads x itself: the normalised input, written out */
    if ((st = normalized_input(g, x, affine, &z)) != CB_OK) goto done;
    x = z;
  }
  int64_t col_shape[2] = {b.workers, b.col_floats};
  if ((st = cb_tensor_empty(&col, 2, col_shape, CB_FLOAT32)) != CB_OK) goto done;
  if (bias) { /* start from the bias; sgemm then adds W @ col */
    for (int64_t o = 0; o < g->o; o++) {
      float bo = (float)cb_tensor_get(bias, &o);
      for (int64_t i = 0; i < g->m; i++) yp[o * g->m + i] = bo;
    }
  }
  cb_status status[CB_MAX_THREADS];
  conv_job job = {.g = g, .b = b, .x = x, .w = cb_tensor_data(w), .y = yp,
                  .has_bias = bias != NULL, .relu = relu, .col = cb_tensor_data(col),
                  .status = status};
  int used = cb_parallel_for(b.count, 1, conv_forward_pieces, &job);
  st = first_failure(status, used);
done:
  if (st == CB_OK) *out = cb_tensor_retain(y);
  cb_tensor_release(y);
  cb_tensor_release(col);
  cb_tensor_release(z);
  return st;
}

cb_status cb_conv2d(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                    const cb_tensor *bias, const cb_conv_params *params) {
  *out = NULL;
  conv_geometry g;
  cb_status st = conv_geometry_of(&g, x, weight, bias, params);
  if (st != CB_OK) return st;
  cb_tensor *w = NULL;
  if ((st = cb_tensor_contiguous(&w, weight)) != CB_OK) return st;
  const cb_tensor *inputs[3] = {x, weight, bias};
  /* with a gradient to record, the ReLU is its own op (it keeps its mask) */
  bool fused_relu = g.p.relu && !cb_needs_record(3, inputs);
  st = conv_forward(out, &g, x, w, bias, fused_relu, NULL);
  if (st == CB_OK) {
    const cb_tensor *save[2] = {x, w};
    cb_node *node;
    st = cb_record(*out, "Conv2dBackward", conv_backward, 3, inputs, 2, save, &node);
    if (node) *CB_NODE_CTX(node, cb_conv_params) = g.p;
    cb_release_on_error(st, out);
  }
  if (st == CB_OK && g.p.relu && !fused_relu) {
    cb_tensor *linear = *out;
    st = cb_unary(out, CB_RELU, linear);
    cb_tensor_release(linear);
    if (st != CB_OK) *out = NULL;
  }
  cb_tensor_release(w);
  return st;
}

/* ---- backward ---- */

typedef struct {
  const float *dy; /* O x m */
  float *db;
  int64_t m;
} bias_grad_job;

static void bias_grad_rows(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const bias_grad_job *j = arg;
  for (int64_t o = begin; o < end; o++) j->db[o] = (float)cb_sum_floats(j->dy + o * j->m, j->m);
}

/* The gradients of x, w (contiguous) and the bias that need asks for, into
 * grad_in, from the output's gradient; x normalised by affine as in
 * conv_forward (NULL: none). dx_into (or NULL): x's gradient so far
 * (cb_node_grad_so_far), which the direct path adds dx into, grad_in[0]
 * then left NULL; im2col hands dx out all the same. */
static cb_status conv_backward_of(const cb_tensor *x, const cb_tensor *w, const cb_conv_params *p,
                                  const cb_tensor *grad, const bool need[3], const float *affine,
                                  cb_tensor *dx_into, cb_tensor **grad_in) {
  cb_status st;
  conv_geometry g;
  if ((st = conv_geometry_of(&g, x, w, NULL, p)) != CB_OK) return st;
  batch_pieces b = pieces_of(&g);
  if ((st = check_blas_sizes(&g, &b)) != CB_OK) return st;
  cb_tensor *dy = NULL, *col = NULL, *dw_parts = NULL, *z = NULL;
  /* dY as O x (N*OH*OW), i.e. CNHW: free when grad has the layout conv2d
   * produced, as it has when the layers after keep layouts */
  if (cb_image_layout(grad) == CB_LAYOUT_CNHW) {
    dy = cb_tensor_retain((cb_tensor *)grad);
  } else if ((st = cb_tensor_empty_images(&dy, g.n, g.o, g.oh, g.ow, CB_FLOAT32,
                                          CB_LAYOUT_CNHW)) != CB_OK ||
             (st = cb_tensor_copy_(dy, grad)) != CB_OK) {
    goto done;
  }
  const float *dyp = cb_tensor_data(dy);
  bool need_dx = need[0], need_dw = need[1];
  /* the direct path's weight gradient sums dY's channels on its way */
  bool db_with_dw = need_dw && (direct_applies(&g) || direct_strided_weight_grad(&g));
  if (need[2]) {
    int64_t shape = g.o;
    if ((st = cb_tensor_empty(&grad_in[2], 1, &shape, CB_FLOAT32)) != CB_OK) goto done;
    if (!db_with_dw) {
      bias_grad_job job = {dyp, cb_tensor_data(grad_in[2]), g.m};
      cb_parallel_for(g.o, 1, bias_grad_rows, &job);
    }
  }
  if (!need_dx && !need_dw) goto done;
  bool strided = direct_strided_applies(&g); /* direct_applies takes stride 1 alone */
  if (direct_applies(&g) || strided) { /* no col buffer (at stride 2 maybe for dW, below) */
    bool dw_direct = need_dw && (!strided || direct_strided_weight_grad(&g));
    cb_planes dy_planes = {(float *)dyp, g.oh * g.ow, g.m, g.ow, 1}, dx_planes = {0};
    /* dx: a stride-1 convolution of dY (at stride 2, four: its phases), which
     * writes every element of it */
    if (need_dx) {
      if (!dx_into && (st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) != CB_OK) goto done;
      cb_tensor *dx = dx_into ? dx_into : grad_in[0];
      const int64_t *dxs = dx->stride;
      dx_planes = (cb_planes){cb_tensor_data(dx), dxs[0], dxs[1], dxs[2], dxs[3]};
    }
    if (dw_direct && (st = cb_tensor_empty(&grad_in[1], 4, w->shape, CB_FLOAT32)) != CB_OK) goto done;
    const int64_t *xs = x->stride;
    cb_planes x_planes = {cb_tensor_data(x), xs[0], xs[1], xs[2], xs[3]};
    st = direct_backward(&g, cb_tensor_data(w), dy_planes, dx_planes, dx_into != NULL, x_planes, affine,
                         dw_direct ? cb_tensor_data(grad_in[1]) : NULL,
                         dw_direct && grad_in[2] ? cb_tensor_data(grad_in[2]) : NULL);
    if (st != CB_OK || !need_dw || dw_direct) goto done;
    need_dx = false; /* dW by im2col, below */
  }
  if (affine && need_dw) { /* im2col reads x itself: the normalised input, written out */
    if ((st = normalized_input(&g, x, affine, &z)) != CB_OK) goto done;
    x = z;
  }
  int64_t col_shape[2] = {b.workers, b.col_floats};
  int64_t parts_shape[3] = {b.workers, g.o, g.k};
  if ((st = cb_tensor_empty(&col, 2, col_shape, CB_FLOAT32)) != CB_OK) goto done;
  if (need_dw && (st = cb_tensor_empty(&dw_parts, 3, parts_shape, CB_FLOAT32)) != CB_OK) goto done;
  /* col2im adds dx up tap by tap: into zeros, and handed out (into dx_into
   * the sum would round differently from the engine's dx_into + dx) */
  if (need_dx) {
    if ((st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) != CB_OK) goto done;
    if ((st = cb_tensor_fill_(grad_in[0], 0)) != CB_OK) goto done;
  }
  cb_status status[CB_MAX_THREADS];
  conv_job job = {.g = &g, .b = b, .x = x, .w = cb_tensor_data(w), .dy = dyp,
                  .dx = need_dx ? grad_in[0] : NULL,
                  .dw = need_dw ? cb_tensor_data(dw_parts) : NULL,
                  .col = cb_tensor_data(col), .status = status};
  int used = cb_parallel_for(b.count, 1, conv_backward_pieces, &job);
  if ((st = first_failure(status, used)) != CB_OK) goto done;
  if (need_dw) { /* dW = the sum of the workers' parts */
    if ((st = cb_tensor_empty(&grad_in[1], 4, w->shape, CB_FLOAT32)) != CB_OK) goto done;
    float *dw = cb_tensor_data(grad_in[1]);
    const float *parts = cb_tensor_data(dw_parts);
    int64_t size = g.o * g.k;
    memcpy(dw, parts, sizeof(float) * (size_t)size);
    for (int part = 1; part < used; part++)
      for (int64_t i = 0; i < size; i++) dw[i] += parts[part * size + i];
  }
done:
  cb_tensor_release(dy);
  cb_tensor_release(col);
  cb_tensor_release(dw_parts);
  cb_tensor_release(z);
  return st;
}

static cb_status conv_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const cb_tensor *x, *w;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &w)) != CB_OK)
    return st;
  bool need[3] = {cb_node_needs_grad(node, 0), cb_node_needs_grad(node, 1), cb_node_needs_grad(node, 2)};
  /* dx added into the input's gradient so far, when it has one (a residual
   * block's first convolution: the shortcut's), not handed out */
  cb_tensor *dx_into = need[0] ? cb_node_grad_so_far(node, 0) : NULL;
  return conv_backward_of(x, w, CB_NODE_CTX(node, cb_conv_params), grad, need, NULL, dx_into, grad_in);
}

/* ---- batch norm + ReLU + conv2d (nn.h) ----
 * The convolution reads max(0, x * scale + shift) per input channel as it
 * fills its padded stacks (cb_direct_conv_normalize_input), forward and for
 * the weight gradient, so the batch norm's output is neither written nor
 * kept; batch norm's backward recomputes it for the ReLU's mask, a piece at a
 * time, by the same operations (cb_normalize_relu_run), so the mask is the
 * one the convolution's input had. The im2col path writes the normalised
 * input out for the call and drops it. */

typedef struct {
  cb_conv_params conv;
  bool training, has_gamma;
} bn_conv_ctx;

static cb_status bn_conv_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const bn_conv_ctx *ctx = CB_NODE_CTX(node, bn_conv_ctx);
  const cb_tensor *xd, *stats, *affine, *w, *gamma = NULL;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &xd)) != CB_OK || (st = cb_node_saved(node, 1, &stats)) != CB_OK ||
      (st = cb_node_saved(node, 2, &affine)) != CB_OK || (st = cb_node_saved(node, 3, &w)) != CB_OK ||
      (ctx->has_gamma && (st = cb_node_saved(node, 4, &gamma)) != CB_OK))
    return st;
  bool need_bn[3] = {cb_node_needs_grad(node, 0), cb_node_needs_grad(node, 1), cb_node_needs_grad(node, 2)};
  bool need_conv[3] = {need_bn[0] || need_bn[1] || need_bn[2], cb_node_needs_grad(node, 3),
                       cb_node_needs_grad(node, 4)};
  cb_tensor *conv_grads[3] = {NULL, NULL, NULL};
  st = conv_backward_of(xd, w, &ctx->conv, grad, need_conv, cb_tensor_data(affine), NULL, conv_grads);
  if (st == CB_OK && need_conv[0])
    st = cb_batch_norm_relu_backward(xd, stats, gamma, affine, ctx->training, conv_grads[0], need_bn,
                                     grad_in);
  grad_in[3] = conv_grads[1];
  grad_in[4] = conv_grads[2];
  cb_tensor_release(conv_grads[0]);
  return st;
}

cb_status cb_batch_norm_relu_conv2d(cb_tensor **out, const cb_tensor *x, const cb_tensor *bn_weight,
                                    const cb_tensor *bn_bias, cb_tensor *running_mean,
                                    cb_tensor *running_var, bool training, double momentum,
                                    double eps, const cb_tensor *weight, const cb_tensor *bias,
                                    const cb_conv_params *params) {
  *out = NULL;
  conv_geometry g;
  cb_status st = conv_geometry_of(&g, x, weight, bias, params);
  if (st != CB_OK) return st;
  if (params->relu)
    return cb_fail(CB_EINVAL, "batch_norm_relu_conv2d: the convolution's own ReLU is not fused here");
  cb_tensor *xd = NULL, *stats = NULL, *affine = NULL, *w = NULL, *gamma = NULL;
  if ((st = cb_batch_norm_prepare(x, bn_weight, bn_bias, running_mean, running_var, training,
                                  momentum, eps, &xd, &stats, &affine)) != CB_OK)
    return st;
  if ((st = cb_tensor_contiguous(&w, weight)) != CB_OK ||
      (bn_weight && (st = cb_tensor_contiguous(&gamma, bn_weight)) != CB_OK))
    goto done;
  st = conv_forward(out, &g, xd, w, bias, false, cb_tensor_data(affine));
  if (st == CB_OK) {
    const cb_tensor *inputs[5] = {x, bn_weight, bn_bias, weight, bias};
    const cb_tensor *save[5] = {xd, stats, affine, w, gamma};
    cb_node *node;
    st = cb_record(*out, "BatchNormReluConv2dBackward", bn_conv_backward, 5, inputs, gamma ? 5 : 4,
                   save, &node);
    if (node) *CB_NODE_CTX(node, bn_conv_ctx) = (bn_conv_ctx){g.p, training, gamma != NULL};
    cb_release_on_error(st, out);
  }
done:
  cb_tensor_release(xd);
  cb_tensor_release(stats);
  cb_tensor_release(affine);
  cb_tensor_release(w);
  cb_tensor_release(gamma);
  return st;
}

/* ---- conv2d + batch norm + ReLU + 2x2 max pooling ----
 * maxpool(max(0, batch norm(conv2d(x)))) as one op, each of the seed CNN's
 * two layers. Forward is the two ops' forwards (the convolution's output kept,
 * as the batch norm's node would keep it). Backward, when x needs no
 * gradient (a net's first layer) and the convolution takes the direct path,
 * computes the batch norm's dx a stack of images at a time into a buffer and
 * takes the convolution's weight gradient from it while it is in cache:
 * the full dx (as large as the convolution's output) is neither written nor
 * read back, which were two of the largest memory passes of a seed CNN step.
 * Otherwise dx is written out and the convolution's backward takes it. */

typedef struct {
  cb_conv_params conv;
  bool training, has_gamma;
} conv_bn_pool_ctx;

/* The parts a node saved, slots 2-7 (x and w are 0 and 1), borrowed from
 * the node: not for cb_bn_pool_parts_release. */
static cb_status saved_pool_parts(cb_node *node, bool has_gamma, cb_bn_pool_parts *parts) {
  const cb_tensor *t[6] = {NULL};
  for (int i = 0; i < (has_gamma ? 6 : 5); i++) {
    cb_status st = cb_node_saved(node, 2 + i, &t[i]);
    if (st != CB_OK) return st;
  }
  *parts = (cb_bn_pool_parts){.keep_windows = true, .x = (cb_tensor *)t[0], .mean = (cb_tensor *)t[1],
                              .invstd = (cb_tensor *)t[2], .winners = (cb_tensor *)t[3],
                              .deviations = (cb_tensor *)t[4], .gamma = (cb_tensor *)t[5]};
  return CB_OK;
}

typedef struct {
  const cb_direct_conv *plan;
  const cb_bn_pool_grad *bn;
  cb_planes x;
  float *dy;             /* per worker: a stack's dx of the batch norm, NCHW */
  int64_t dy_floats, n, channels, h, w;
  bool bias_grad;
} pool_wgrad_job;

static void pool_wgrad_stacks(void *arg, int worker, int64_t begin, int64_t end) {
  const pool_wgrad_job *j = arg;
  int64_t stack = cb_direct_conv_stack(j->plan);
  float *dy = j->dy + worker * j->dy_floats;
  for (int64_t s = begin; s < end; s++) {
    int64_t n0 = s * stack, count = j->n - n0 < stack ? j->n - n0 : stack;
    cb_planes dy_planes = {dy, j->channels * j->h * j->w, j->h * j->w, j->w, 1};
    cb_bn_pool_grad_images(j->bn, n0, n0 + count, dy_planes);
    cb_planes x = j->x;
    x.base += n0 * x.ns;
    cb_direct_conv_weight_grad(j->plan, worker, x, dy_planes, count, s != begin, j->bias_grad);
  }
}

typedef struct {
  const cb_bn_pool_grad *bn;
  cb_planes dx;
} pool_dx_job;

static void pool_dx_images(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const pool_dx_job *j = arg;
  cb_planes dx = j->dx;
  dx.base += begin * dx.ns;
  cb_bn_pool_grad_images(j->bn, begin, end, dx);
}

static cb_status conv_bn_pool_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  const conv_bn_pool_ctx *ctx = CB_NODE_CTX(node, conv_bn_pool_ctx);
  const cb_tensor *x, *w;
  cb_bn_pool_parts parts;
  cb_status st;
  if ((st = cb_node_saved(node, 0, &x)) != CB_OK || (st = cb_node_saved(node, 1, &w)) != CB_OK ||
      (st = saved_pool_parts(node, ctx->has_gamma, &parts)) != CB_OK)
    return st;
  bool need[5];
  for (int i = 0; i < 5; i++) need[i] = cb_node_needs_grad(node, i);
  cb_bn_pool_grad *bn = NULL;
  if ((st = cb_bn_pool_grad_begin(&parts, ctx->training, grad, need[3], need[4], &grad_in[3],
                                  &grad_in[4], &bn)) != CB_OK)
    return st;
  conv_geometry g;
  cb_tensor *dy = NULL, *dw = NULL;
  cb_direct_conv *plan = NULL;
  if (!need[0] && !need[1] && !need[2]) goto done;
  if ((st = conv_geometry_of(&g, x, w, NULL, &ctx->conv)) != CB_OK) goto done;
  if (need[0] || !direct_applies(&g)) { /* dx written out, then the convolution's backward */
    const cb_tensor *x1 = parts.x;
    if ((st = cb_tensor_empty_same_layout(&dy, x1, CB_FLOAT32)) != CB_OK) goto done;
    const int64_t *ds = dy->stride;
    pool_dx_job job = {bn, {cb_tensor_data(dy), ds[0], ds[1], ds[2], ds[3]}};
    cb_parallel_for(g.n, 1, pool_dx_images, &job);
    st = conv_backward_of(x, w, &ctx->conv, dy, need, NULL, need[0] ? cb_node_grad_so_far(node, 0) : NULL,
                          grad_in);
    goto done;
  }
  /* the weight gradient from each stack's dx, in cache */
  if (!(plan = direct_plan(&g, NULL, CB_DIRECT_WEIGHT_GRAD))) {
    st = cb_fail(CB_ENOMEM, "conv2d: out of memory");
    goto done;
  }
  int workers = cb_parallel_chunks(g.n, 1);
  int64_t dy_floats = cb_direct_conv_stack(plan) * g.o * g.oh * g.ow; /* a stack's images, NCHW */
  int64_t dy_shape = dy_floats * workers, bias_shape = g.o;
  if ((st = cb_tensor_empty(&dy, 1, &dy_shape, CB_FLOAT32)) != CB_OK ||
      (st = cb_tensor_empty(&dw, 4, w->shape, CB_FLOAT32)) != CB_OK ||
      (need[2] && (st = cb_tensor_empty(&grad_in[2], 1, &bias_shape, CB_FLOAT32)) != CB_OK))
    goto done;
  const int64_t *xs = x->stride;
  pool_wgrad_job job = {plan, bn, {cb_tensor_data(x), xs[0], xs[1], xs[2], xs[3]}, cb_tensor_data(dy),
                        dy_floats, g.n, g.o, g.oh, g.ow, need[2]};
  int64_t stack = cb_direct_conv_stack(plan);
  int used = cb_parallel_for((g.n + stack - 1) / stack, 1, pool_wgrad_stacks, &job);
  cb_direct_conv_weight_grad_sum(plan, used, cb_tensor_data(dw),
                                 need[2] ? cb_tensor_data(grad_in[2]) : NULL);
  if (need[1]) grad_in[1] = cb_tensor_retain(dw);
done:
  cb_direct_conv_free(plan);
  cb_tensor_release(dy);
  cb_tensor_release(dw);
  cb_bn_pool_grad_end(bn);
  return st;
}

cb_status cb_conv2d_batch_norm_relu_pool(cb_tensor **out, const cb_tensor *x, const cb_tensor *weight,
                                         const cb_tensor *bias, const cb_conv_params *params,
                                         const cb_tensor *bn_weight, const cb_tensor *bn_bias,
                                         cb_tensor *running_mean, cb_tensor *running_var,
                                         bool training, double momentum, double eps) {
  *out = NULL;
  conv_geometry g;
  cb_status st = conv_geometry_of(&g, x, weight, bias, params);
  if (st != CB_OK) return st;
  if (params->relu)
    return cb_fail(CB_EINVAL, "conv2d_batch_norm_relu_pool: the convolution's own ReLU is not fused here");
  if (g.ow > CB_BN_POOL_ROW_MAX) { /* rows too long for the fused pooling: the two ops */
    cb_tensor *y;
    if ((st = cb_conv2d(&y, x, weight, bias, params)) != CB_OK) return st;
    st = cb_batch_norm_relu_pool(out, y, bn_weight, bn_bias, running_mean, running_var, training,
                                 momentum, eps, NULL);
    cb_tensor_release(y);
    return st;
  }
  const cb_tensor *inputs[5] = {x, weight, bias, bn_weight, bn_bias};
  cb_bn_pool_parts parts = {.keep_windows = cb_needs_record(5, inputs)};
  cb_tensor *w = NULL, *x1 = NULL;
  if ((st = cb_tensor_contiguous(&w, weight)) != CB_OK) return st;
  if ((st = conv_forward(&x1, &g, x, w, bias, false, NULL)) != CB_OK ||
      (st = cb_batch_norm_relu_pool_forward(out, x1, bn_weight, bn_bias, running_mean, running_var,
                                            training, momentum, eps, &parts)) != CB_OK)
    goto done;
  if (parts.keep_windows) {
    const cb_tensor *save[8] = {x, w, parts.x, parts.mean, parts.invstd, parts.winners,
                                parts.deviations, parts.gamma};
    cb_node *node;
    st = cb_record(*out, "Conv2dBatchNormReluPoolBackward", conv_bn_pool_backward, 5, inputs,
                   parts.gamma ? 8 : 7, save, &node);
    if (node) *CB_NODE_CTX(node, conv_bn_pool_ctx) = (conv_bn_pool_ctx){g.p, training, parts.gamma != NULL};
    cb_release_on_error(st, out);
  }
done:
  cb_bn_pool_parts_release(&parts);
  cb_tensor_release(w);
  cb_tensor_release(x1);
  return st;
}
