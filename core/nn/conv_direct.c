/* Direct stride-1 convolution over zero-padded images: see conv_direct.h. */
#include "nn/conv_direct.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv_plan.h"
#include "ops/reduce.h"
#include "tensor/blas.h"
#include "tensor/threadpool.h"

/* ---- micro-kernels ----
 * out[o][v] = sum over c < channels, t < ntaps of w[(c*ntaps + t)*OBLOCK + o] *
 * in[c*plane + taps[t] + v], for o < OBLOCK and v < vectors * the vector
 * length; out has rows of ld floats. The two widths differ only in vector
 * length and full tile: 4 x 6 vectors of 16 on AVX-512 (24 of its 32
 * registers, with the 6 inputs; the weight is broadcast from memory) and
 * 4 x 3 vectors of 8 on AVX2 (12 of its 16, with the 3 inputs and the
 * broadcast weight). GCC 12 keeps them all in registers. Against the 4 x 4
 * and 4 x 2 before them, whose 16 and 8 accumulators hid the FMAs' latency
 * with less room and loaded 2 values per FMA's 1 more often: AVX-512,
 * ResNet-32's 16- and 32-channel layers 8-14 % faster forward and its step
 * ~4 %; AVX2 (this Xeon limited to it), the seed CNN's 32 -> 64 layer ~20 %
 * forward and its step ~10 %. Narrower tiles (fewer vectors) serve the last
 * tiles of a Winograd block: a stack of small images (8x8, 4x4) has a few
 * dozen tiles, and rounding them up to whole tiles (then 64 positions)
 * computed up to 40 % zeros. Each body is an always-inlined function whose vector count
 * is a constant at each call of the switch, so every variant is unrolled. */

#define NV16 6
__attribute__((target("avx512f"), always_inline)) static inline void
tile16(const float *in, int64_t plane, int64_t channels, const int64_t *taps, int ntaps,
       const float *w, float *out, int64_t ld, const int nv) {
  vec16 acc[OBLOCK][NV16] = {{{0}}};
  for (int64_t c = 0; c < channels; c++, in += plane)
    for (int t = 0; t < ntaps; t++, w += OBLOCK) {
      const float *src = in + taps[t];
      vec16 x[NV16];
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) x[v] = *(const vec16 *)(src + 16 * v);
#pragma GCC unroll 4
      for (int o = 0; o < OBLOCK; o++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) acc[o][v] += w[o] * x[v];
    }
#pragma GCC unroll 4
  for (int o = 0; o < OBLOCK; o++)
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) *(vec16 *)(out + o * ld + 16 * v) = acc[o][v];
}

__attribute__((target("avx512f"))) static void tile_avx512(const float *in, int64_t plane,
                                                          int64_t channels, const int64_t *taps,
                                                          int ntaps, const float *w, float *out,
                                                          int64_t ld, int vectors) {
  switch (vectors) {
  case 1: tile16(in, plane, channels, taps, ntaps, w, out, ld, 1); break;
  case 2: tile16(in, plane, channels, taps, ntaps, w, out, ld, 2); break;
  case 3: tile16(in, plane, channels, taps, ntaps, w, out, ld, 3); break;
  case 4: tile16(in, plane, channels, taps, ntaps, w, out, ld, 4); break;
  case 5: tile16(in, plane, channels, taps, ntaps, w, out, ld, 5); break;
  default: tile16(in, plane, channels, taps, ntaps, w, out, ld, NV16); break;
  }
}

#define NV8 3
__attribute__((target("avx2,fma"), always_inline)) static inline void
tile8(const float *in, int64_t plane, int64_t channels, const int64_t *taps, int ntaps,
      const float *w, float *out, int64_t ld, const int nv) {
  vec8 acc[OBLOCK][NV8] = {{{0}}};
  for (int64_t c = 0; c < channels; c++, in += plane)
    for (int t = 0; t < ntaps; t++, w += OBLOCK) {
      const float *src = in + taps[t];
      vec8 x[NV8];
#pragma GCC unroll 8
      for (int v = 0; v < nv; v++) x[v] = *(const vec8 *)(src + 8 * v);
#pragma GCC unroll 4
      for (int o = 0; o < OBLOCK; o++)
#pragma GCC unroll 8
        for (int v = 0; v < nv; v++) acc[o][v] += w[o] * x[v];
    }
#pragma GCC unroll 4
  for (int o = 0; o < OBLOCK; o++)
#pragma GCC unroll 8
    for (int v = 0; v < nv; v++) *(vec8 *)(out + o * ld + 8 * v) = acc[o][v];
}

__attribute__((target("avx2,fma"))) static void tile_avx2(const float *in, int64_t plane,
                                                         int64_t channels, const int64_t *taps,
                                                         int ntaps, const float *w, float *out,
                                                         int64_t ld, int vectors) {
  switch (vectors) {
  case 1: tile8(in, plane, channels, taps, ntaps, w, out, ld, 1); break;
  case 2: tile8(in, plane, channels, taps, ntaps, w, out, ld, 2); break;
  default: tile8(in, plane, channels, taps, ntaps, w, out, ld, NV8); break;
  }
}

/* ---- the weight gradient's micro-kernels ----
 * sums[o*nk + k] = sum over positions p of dy[o][p] * x[offs[k] + p], for
 * o < OBLOCK and k < nk (k numbers the pairs (input channel, tap): offs[k] =
 * c*plane + taps[t]). The positions come in runs (wgrad_runs): image i's row
 * r of dY at dy[o] + i*dy_image + r*dy_row, its stack positions from
 * i*x_image + r*x_row on, `columns` (whole vectors) each; dY read in place
 * from its tensor, or one run over a copy of dY on the stack's grid. The
 * same shifted runs of the padded stack as the forward tile, read in place:
 * for a layer of few input channels (the first, 3 channels: C x taps = 27
 * columns), 9 sgemm calls of 3 columns each spent more time packing dY than
 * multiplying (seed CNN's first layer, batch 128: backward 3.9 ms, 58
 * GFLOP/s). A tile is 4 output channels x KB16 (or KB8) pairs of
 * accumulators, each the sum of one lane over all runs, added across lanes
 * at the end. */
struct wgrad_runs {
  const float *dy[OBLOCK]; /* the tile's output channels' dY (repeats past the last channel) */
  int64_t images, rows, columns, dy_image, dy_row, x_image, x_row;
};

#define KB16 6 /* 24 accumulators, 4 dY vectors and the input's of AVX-512's 32 registers */
__attribute__((target("avx512f"), always_inline)) static inline void
wgrad16(const wgrad_runs *r, const float *x, const int64_t *offs, float *sums, const int nk) {
  vec16 acc[OBLOCK][KB16] = {{{0}}};
  for (int64_t i = 0; i < r->images; i++)
    for (int64_t row = 0; row < r->rows; row++) {
      int64_t at = i * r->dy_image + row * r->dy_row;
      const float *xr = x + i * r->x_image + row * r->x_row;
      for (int64_t p = 0; p < r->columns; p += 16) {
        vec16 g[OBLOCK];
#pragma GCC unroll 4
        for (int o = 0; o < OBLOCK; o++) g[o] = *(const vec16 *)(r->dy[o] + at + p);
#pragma GCC unroll 8
        for (int k = 0; k < nk; k++) {
          vec16 xv = *(const vec16 *)(xr + offs[k] + p);
#pragma GCC unroll 4
          for (int o = 0; o < OBLOCK; o++) acc[o][k] += g[o] * xv;
        }
      }
    }
  for (int o = 0; o < OBLOCK; o++)
    for (int k = 0; k < nk; k++) {
      vec16 v = acc[o][k];
      vec8 h = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
      vec4 q = __builtin_shufflevector(h, h, 0, 1, 2, 3) + __builtin_shufflevector(h, h, 4, 5, 6, 7);
      sums[o * nk + k] = (q[0] + q[1]) + (q[2] + q[3]);
    }
}

__attribute__((target("avx512f"))) static void wgrad_avx512(const wgrad_runs *r, const float *x,
                                                           const int64_t *offs, float *sums, int nk) {
  switch (nk) {
  case 1: wgrad16(r, x, offs, sums, 1); break;
  case 2: wgrad16(r, x, offs, sums, 2); break;
  case 3: wgrad16(r, x, offs, sums, 3); break;
  case 4: wgrad16(r, x, offs, sums, 4); break;
  case 5: wgrad16(r, x, offs, sums, 5); break;
  default: wgrad16(r, x, offs, sums, KB16); break;
  }
}

#define KB8 3 /* 12 accumulators, 3 input vectors and one dY vector of AVX2's 16 registers */
__attribute__((target("avx2,fma"), always_inline)) static inline void
wgrad8(const wgrad_runs *r, const float *x, const int64_t *offs, float *sums, const int nk) {
  vec8 acc[OBLOCK][KB8] = {{{0}}};
  for (int64_t i = 0; i < r->images; i++)
    for (int64_t row = 0; row < r->rows; row++) {
      int64_t at = i * r->dy_image + row * r->dy_row;
      const float *xr = x + i * r->x_image + row * r->x_row;
      for (int64_t p = 0; p < r->columns; p += 8) {
        vec8 xv[KB8];
#pragma GCC unroll 3
        for (int k = 0; k < nk; k++) xv[k] = *(const vec8 *)(xr + offs[k] + p);
#pragma GCC unroll 4
        for (int o = 0; o < OBLOCK; o++) {
          vec8 g = *(const vec8 *)(r->dy[o] + at + p);
#pragma GCC unroll 3
          for (int k = 0; k < nk; k++) acc[o][k] += g * xv[k];
        }
      }
    }
  for (int o = 0; o < OBLOCK; o++)
    for (int k = 0; k < nk; k++) {
      vec8 v = acc[o][k];
      vec4 q = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
      sums[o * nk + k] = (q[0] + q[1]) + (q[2] + q[3]);
    }
}

__attribute__((target("avx2,fma"))) static void wgrad_avx2(const wgrad_runs *r, const float *x,
                                                          const int64_t *offs, float *sums, int nk) {
  switch (nk) {
  case 1: wgrad8(r, x, offs, sums, 1); break;
  case 2: wgrad8(r, x, offs, sums, 2); break;
  default: wgrad8(r, x, offs, sums, KB8); break;
  }
}

/* ---- choosing the path ---- */

static const char *const path_names[CB_CONV_NUM_PATHS] = {"im2col", "avx2", "avx512",
                                                          "avx2-winograd", "avx512-winograd"};
static cb_conv_path active_path;
static pthread_once_t path_once = PTHREAD_ONCE_INIT;

const char *cb_conv_path_name(cb_conv_path path) {
  return path < CB_CONV_NUM_PATHS ? path_names[path] : "unknown";
}

cb_conv_path cb_conv_path_from_name(const char *name) {
  for (int p = 0; p < CB_CONV_NUM_PATHS; p++)
    if (name && !strcmp(name, path_names[p])) return (cb_conv_path)p;
  return CB_CONV_NUM_PATHS;
}

bool cb_conv_path_supported(cb_conv_path path) {
  cb_cpu_features f = cb_cpu_detect();
  switch (path) {
  case CB_CONV_IM2COL: return true;
  case CB_CONV_AVX2:
  case CB_CONV_AVX2_WINOGRAD: return f.avx2 && f.fma;
  case CB_CONV_AVX512:
  case CB_CONV_AVX512_WINOGRAD: return f.avx512f;
  default: return false;
  }
}

static void path_init(void) {
  cb_conv_path wanted = cb_conv_path_from_name(getenv("CBNET_CONV"));
  if (wanted != CB_CONV_NUM_PATHS && cb_conv_path_supported(wanted)) {
    active_path = wanted;
    return;
  }
  active_path = cb_conv_path_supported(CB_CONV_AVX512) ? CB_CONV_AVX512_WINOGRAD
                : cb_conv_path_supported(CB_CONV_AVX2) ? CB_CONV_AVX2_WINOGRAD
                                                       : CB_CONV_IM2COL;
}

cb_conv_path cb_conv_get_path(void) {
  pthread_once(&path_once, path_init);
  return active_path;
}

cb_status cb_conv_set_path(cb_conv_path path) {
  pthread_once(&path_once, path_init);
  if (!cb_conv_path_supported(path))
    return cb_fail(CB_EINVAL, "conv path '%s' is not supported by this CPU",
                   cb_conv_path_name(path));
  active_path = path;
  return CB_OK;
}

/* ---- plans ---- */

void cb_direct_conv_free(cb_direct_conv *conv) {
  if (!conv) return;
  free(conv->taps);
  free(conv->offs);
  free(conv->weight);
  cb_tensor_release(conv->scratch_storage);
  free(conv);
}

/* Images per stack: about 4096 positions, and stacks that the workers share
 * evenly (each worker's share of the batch in equal stacks). */
static int64_t stack_size(int64_t positions_per_image, int64_t batch, int workers) {
  int64_t target = 4096 / positions_per_image, share = (batch + workers - 1) / workers;
  if (target < 1) target = 1;
  int64_t stacks_per_worker = (share + target - 1) / target;
  return (share + stacks_per_worker - 1) / stacks_per_worker;
}
/* Zeroes what of a padded stack fill_stack never writes: every row but the
 * images' pixel rows, the pad_w columns left of those, and the floats past
 * the last plane (tiles read up to a tap's reach beyond it). A plan is made
 * per call, so zeroing its whole stack cost 1 % of a ResNet-32 step; the
 * borders are 6-21 % of it (32x32 to 8x8 images). */
static void zero_stack_borders(const cb_direct_conv *d, float *xpad) {
  int64_t rows = d->phase_plane / d->wp;
  for (int64_t c = 0; c < d->in_c * d->phases; c++) /* each channel's phases, one after another */
    for (int64_t r = 0; r < rows; r++) {
      float *row = xpad + c * d->phase_plane + r * d->wp;
      int64_t h = r - d->pad_h; /* image h / hp's row h % hp, if a pixel row */
      bool pixels = h >= 0 && h / d->hp < d->images && h % d->hp < d->in_h;
      memset(row, 0, sizeof(float) * (size_t)(pixels ? d->pad_w : d->wp));
    }
  int64_t tail = d->xpad_floats - d->in_c * d->plane;
  memset(xpad + d->in_c * d->plane, 0, sizeof(float) * (size_t)tail);
}

/* Where the packed weight of output channel o, input channel c, tap t goes:
 * per block of OBLOCK output channels, per output phase (one but for
 * stride 2's input gradient) its taps' weights, [in_c][the phase's taps][OBLOCK],
 * as the micro-kernel reads them in one call. */
static int64_t weight_index(const cb_direct_conv *d, int64_t o, int64_t c, int t) {
  int f = 0;
  while (t >= d->phase_taps[f + 1]) f++;
  int first = d->phase_taps[f], n = d->phase_taps[f + 1] - first;
  return ((o / OBLOCK) * d->in_c * d->ntaps + d->in_c * first + c * n + (t - first)) * OBLOCK +
         o % OBLOCK;
}

/* What a worker's scratch must hold before its first stack: zeros in its
 * padded stack's borders (where a stack is filled; else zeroed when one is)
 * and in its dY stack, for workers [begin, end). */
static void zero_worker_scratch(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const cb_direct_conv *d = arg;
  for (int64_t k = begin; k < end; k++) {
    float *mine = d->scratch + k * d->scratch_floats;
    if (!d->inputs_in_place) zero_stack_borders(d, mine);
    if (d->dy_floats)
      memset(mine + d->xpad_floats + d->v_floats + d->m_floats, 0, sizeof(float) * (size_t)d->dy_floats);
  }
}

cb_direct_conv *cb_direct_conv_new(const cb_direct_shape *shape, const float *weight,
                                   cb_direct_mode mode, int workers) {
  cb_direct_conv *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  cb_conv_path path = cb_conv_get_path();
  bool avx512 = path == CB_CONV_AVX512 || path == CB_CONV_AVX512_WINOGRAD;
  d->kernel = avx512 ? tile_avx512 : tile_avx2;
  /* AVX2's weight-gradient tile of 4 x 3 against sgemm by tap (OpenBLAS's
   * Haswell kernel; CBNET_CONV=avx2 bench/conv_layer.lua, batch 128, 3x3):
   * 16 channels 2.9-4.0 against 8.0-8.2 ms, 32 4.6-5.0 against 6.0, 64 at
   * 8x8 the same, 128 21.2-21.8 against 18.6-18.9: up to 64 x 9 (channel,
   * tap) pairs (with the 4 x 2 tile before it, sgemm won past 32 pairs);
   * AVX-512's 4 x 6 is as fast or faster at every width measured */
  int64_t pairs = shape->c * shape->kh * shape->kw; /* the weight gradient's in_c x taps */
  d->wgrad = avx512 ? wgrad_avx512 : pairs <= 64 * 9 ? wgrad_avx2 : NULL;
  d->kblock = avx512 ? KB16 : KB8;
  d->lanes = avx512 ? 16 : 8;
  d->tile = avx512 ? 16 * NV16 : 8 * NV8;
  int64_t kh = shape->kh, kw = shape->kw;
  bool transposed = mode == CB_DIRECT_INPUT_GRAD;
  d->weight_grad = mode == CB_DIRECT_WEIGHT_GRAD;
  /* the input gradient convolves dY, padded by k - 1 - pad */
  d->in_c = transposed ? shape->o : shape->c;
  d->out_c = transposed ? shape->c : shape->o;
  d->in_h = transposed ? shape->oh : shape->h;
  d->in_w = transposed ? shape->ow : shape->w;
  d->pad_h = transposed ? kh - 1 - shape->pad_h : shape->pad_h;
  d->pad_w = transposed ? kw - 1 - shape->pad_w : shape->pad_w;
  d->out_h = d->in_h + 2 * d->pad_h - kh + 1, d->out_w = d->in_w + 2 * d->pad_w - kw + 1;
  bool strided = shape->stride == 2; /* 3x3, padding 1, even sizes (conv_direct.h) */
  d->phases = strided && !transposed ? 4 : 1;
  d->out_phases = strided && transposed ? 4 : 1;
  if (d->phases == 4) { /* the stack's images are the phases, half the size */
    d->in_h = shape->h / 2, d->in_w = shape->w / 2;
    d->out_h = shape->oh, d->out_w = shape->ow;
  }
  /* Winograd from 16 channels: with fewer the transforms cost more than the
   * products save. Measured at batch 128 against the direct path: forward
   * 1.3-1.6x at 16 channels (32x32), 1.4-2x at 32-256 channels; input
   * gradient 1.1-1.2x at 16, 1.5-2.1x at 32-256; weight gradient 1.1x at 16,
   * 1.5-1.8x at 32-256. Padding over 1 would let the last tile of a row
   * reach into the next. */
  int64_t fewest = 16;
  d->winograd = (path == CB_CONV_AVX2_WINOGRAD || path == CB_CONV_AVX512_WINOGRAD) && !strided && kh == 3 &&
                kw == 3 && d->pad_h <= 1 && d->pad_w <= 1 && shape->c >= fewest && shape->o >= fewest;
  /* Padding shared between neighbours: a row is pad_w zeros then the in_w
   * pixels, so the zeros left of a row are also right of the row before; an
   * image is its in_h rows then pad_h zero rows, shared with the next image
   * the same way. Pixel (i, h, w) is at row i*hp + pad_h + h, column pad_w + w. */
  d->hp = d->in_h + d->pad_h, d->wp = d->in_w + d->pad_w;
  d->images = stack_size(d->hp * d->wp, shape->n, workers);
  d->grid = d->images * d->hp * d->wp;
  /* Winograd's planes 2 rows longer (zero): the 16-wide F(2x2) transforms'
   * last, even row of tiles reads up to there (inputs_in_place below) */
  d->phase_plane = (d->images * d->hp + d->pad_h + 1 + (d->winograd ? 2 : 0)) * d->wp;
  d->plane = d->phases * d->phase_plane;
  d->positions = ((d->images - 1) * d->hp + d->out_h) * d->wp;
  d->positions = (d->positions + d->tile - 1) / d->tile * d->tile;
  d->ntaps = (int)(kh * kw);
  /* tiles past the last plane read up to positions + the last tap's offset */
  d->xpad_floats = d->in_c * d->plane + d->positions + kh * d->wp + kw;
  d->xpad_floats = (d->xpad_floats + 15) / 16 * 16; /* what follows starts on a cache line */
  int64_t blocks = (d->out_c + OBLOCK - 1) / OBLOCK;
  /* rows of the stack's output 64 bytes longer than the grid: rows a
   * multiple of 4 KiB apart would share L1 sets (4K aliasing) */
  d->out_ld = d->positions + 16;
  d->out_floats = d->weight_grad ? 0 : d->out_phases * blocks * OBLOCK * d->out_ld;
  if (d->winograd) {
    int64_t out_rows = (d->images - 1) * d->hp + d->out_h;
    d->wino_m = cb_winograd_tile(d->in_c, d->out_c), d->wino_n = (d->wino_m + 2) * (d->wino_m + 2);
    d->tiles_r = (out_rows + d->wino_m - 1) / d->wino_m;
    d->tiles_c = (d->out_w + d->wino_m - 1) / d->wino_m;
    /* The AVX-512 path's input transforms read the images themselves: F(4x4)'s
     * always (16 tiles at a time wherever they lie), F(2x2)'s where it takes
     * every tile in a group of 16, rows of 16 tiles (32-wide outputs) or pairs
     * of rows of 8 (16-wide; an even count of them: a last row of tiles past
     * the outputs, all zero). The AVX2 path's F(2x2) likewise where rows are
     * 16 or 8 tiles, 8 at a time (f2_inputs8). */
    bool f2_wide = d->wino_m == 2 && (d->tiles_c == 16 || d->tiles_c == 8);
    d->inputs_in_place = d->lanes == 16 ? d->wino_m == 4 || f2_wide : f2_wide;
    if (d->inputs_in_place && d->lanes == 16 && d->wino_m == 2 && d->tiles_c == 8)
      d->tiles_r += d->tiles_r % 2;
    d->tiles = d->tiles_r * d->tiles_c;
    /* blocks of tiles whose transformed inputs (16 x in_c x block) fit in
     * about 256 KiB, so they stay in L2 between the transform and the GEMMs;
     * the weight gradient's GEMMs sum over the tiles: longer blocks, but at
     * F(4x4) (64 channels and more) 64 tiles, so that its V and P (36 x in_c
     * x block floats each: 2.4 MiB each at 64 channels and 256 tiles) stay in
     * L2 between the transforms and the products: the weight gradient of a
     * 64 -> 64 layer at 8x8 15 % faster, of 128 -> 128 at 16x16 13 % */
    d->block = d->weight_grad ? (d->wino_m == 4 ? CB_WINOGRAD_F4_WGRAD_BLOCK : CB_WINOGRAD_MAX_BLOCK)
                              : 16384 / (d->wino_n * d->in_c) / d->tile * d->tile;
    if (d->block < d->tile) d->block = d->tile;
    /* only the weight gradient's blocks reach the cap: its products do not
     * take the micro-kernel's tiles (256 is not a multiple of AVX2's 24) */
    if (d->block > CB_WINOGRAD_MAX_BLOCK) d->block = CB_WINOGRAD_MAX_BLOCK;
    int64_t whole = (d->tiles + d->tile - 1) / d->tile * d->tile;
    if (d->block > whole) d->block = whole;
    /* 64 bytes more than the data, so the 16 streams of a transform do not
     * fall on the same L1 sets (4K aliasing when the data is 4 KiB) */
    d->v_xi = d->in_c * d->block + 16, d->m_xi = blocks * OBLOCK * d->block + 16;
    d->v_floats = d->wino_n * d->v_xi, d->m_floats = d->wino_n * d->m_xi;
    /* the weight gradient's own products: with the tiles in the lanes (V as it
     * is) up to 16 channels in on AVX-512, where that was 15 % faster than
     * transposing V; beyond, V_xi (32 KiB at 32 channels) no longer stays in L1
     * while each 4 x 4 tile of S reads it, and they were 3-10 % slower. Else
     * on whole vectors of input channels of a transposed V */
    d->wgrad_in_lanes = d->weight_grad && d->lanes == 16 && d->in_c <= 16;
    d->vt_floats = d->weight_grad && !d->wgrad_in_lanes && d->in_c % d->lanes == 0
                       ? d->block * d->in_c : 0;
    d->v_floats += d->vt_floats;
    d->out_floats = 0; /* the output transform writes the outputs themselves */
  }
  d->scratch_floats = d->xpad_floats + d->out_floats + d->v_floats + d->m_floats;
  if (d->weight_grad) { /* the dY stack (out_c x grid; Winograd reads dY itself), dW by tap or
                        * by Winograd position */
    d->dy_ld = (d->grid + 15) / 16 * 16;
    d->dy_floats = d->winograd ? 0 : blocks * OBLOCK * d->dy_ld; /* rows past out_c stay zero */
    d->dw_floats = (d->winograd ? d->wino_n : d->ntaps) * d->out_c * d->in_c;
    d->scratch_floats += d->dy_floats + d->dw_floats + d->out_c;
  }
  d->scratch_floats = (d->scratch_floats + 15) / 16 * 16; /* each worker's on a cache line */
  d->taps = malloc(sizeof(int64_t) * (size_t)d->ntaps);
  d->offs = malloc(sizeof(int64_t) * (size_t)(d->in_c * d->ntaps));
  /* Winograd: 16 transformed 4x4 kernels in place of 9 taps */
  d->weight = calloc((size_t)(blocks * OBLOCK * d->in_c * (d->winograd ? d->wino_n : d->ntaps)),
                     sizeof(float));
  /* The scratch comes from tensor storage rather than calloc: the weight
   * gradient's of a 256-channel layer is over 32 MiB, which glibc would map
   * afresh for every call (fastnet spent 6 % of its step in page faults);
   * tensor.c keeps such blocks for the next step. Only what is read before
   * it is written starts at zero: each worker's padded stack's borders
   * (zero_stack_borders) and dY stack (between the outputs); the
   * transforms, products and parts are written whole (tiles past the last
   * as zeros) before they are read. */
  int64_t scratch_all = d->scratch_floats * workers;
  if (d->taps && d->offs && d->weight &&
      cb_tensor_empty(&d->scratch_storage, 1, &scratch_all, CB_FLOAT32) == CB_OK) {
    d->scratch = cb_tensor_data(d->scratch_storage);
    /* each worker's share by a thread of the pool: 2-3 ms of a ResNet-32
     * step, on one core, when the caller zeroed them all */
    cb_parallel_for(workers, 1, zero_worker_scratch, d);
  }
  if (!d->taps || !d->offs || !d->weight || !d->scratch) {
    cb_direct_conv_free(d);
    return NULL;
  }
  /* tap (ki, kj) reads row ki - pad_h and column kj - pad_w from the output's:
   * at stride 2, in phase (r mod 2, s mod 2) of input row 2i + r and column
   * 2j + s, pixel (i + floor(r / 2), j + floor(s / 2)) */
  int kernel_tap[CB_DIRECT_MAX_TAPS]; /* the kernel's tap at taps[t] */
  if (d->out_phases == 4) { /* dx's phase f: its taps in order, dY's pixel (i - di, j - dj) */
    int t = 0;
    for (int f = 0; f < 4; f++) {
      d->phase_taps[f] = t;
      for (int k = 0; k < d->ntaps; k++) {
        int64_t r = k / kw - shape->pad_h, s = k % kw - shape->pad_w, p = r & 1, q = s & 1;
        if (2 * p + q != f) continue;
        kernel_tap[t] = k;
        d->taps[t++] = (d->pad_h - (r - p) / 2) * d->wp + d->pad_w - (s - q) / 2;
      }
    }
    d->phase_taps[4] = t;
  } else {
    for (int t = 0; t < d->ntaps; t++) {
      int64_t r = t / kw - d->pad_h, s = t % kw - d->pad_w, phase = 0;
      if (d->phases == 4) {
        int64_t p = r & 1, q = s & 1; /* two's complement: -1 & 1 is 1 */
        phase = 2 * p + q, r = (r - p) / 2, s = (s - q) / 2;
      }
      kernel_tap[t] = t;
      d->taps[t] = phase * d->phase_plane + (d->pad_h + r) * d->wp + d->pad_w + s;
    }
    d->phase_taps[0] = 0, d->phase_taps[1] = d->ntaps;
  }
  for (int64_t k = 0; k < d->in_c * d->ntaps; k++)
    d->offs[k] = (k / d->ntaps) * d->plane + d->taps[k % d->ntaps];
  /* Forward: weight[o][c][t]. Input gradient: output channel c of the
   * transposed convolution takes weight[o][c][flipped t] from input channel o;
   * at stride 2 weight[o][c][kernel_tap[t]] (the taps' offsets flip). */
  if (d->winograd && !d->weight_grad) {
    cb_winograd_weights(d, weight, transposed);
    return d;
  }
  if (!d->weight_grad)
    for (int64_t o = 0; o < d->out_c; o++)
      for (int64_t c = 0; c < d->in_c; c++)
        for (int t = 0; t < d->ntaps; t++) {
          float value = !transposed ? weight[(o * d->in_c + c) * d->ntaps + t]
                        : d->out_phases == 4 ? weight[(c * d->out_c + o) * d->ntaps + kernel_tap[t]]
                                             : weight[(c * d->out_c + o) * d->ntaps + (d->ntaps - 1 - t)];
          d->weight[weight_index(d, o, c, t)] = value;
        }
  return d;
}

int64_t cb_direct_conv_stack(const cb_direct_conv *conv) { return conv->images; }

/* max(0, x * scale + shift): the input normalisation of fill_stack (both
 * strides) and cb_normalize_relu_images, one function so that all compute
 * the same values (a multiply and an add: this file's generic code has no
 * fused multiply-add); normalize_relu_row takes it over a row,
 * dst[w] from src[w * es] for w < n. */
static inline float normalize_relu(float x, float scale, float shift) {
  float v = x * scale + shift;
  return v > 0 ? v : 0.0f;
}

static inline void normalize_relu_row(const float *src, int64_t es, int64_t n, float scale,
                                      float shift, float *dst) {
  if (es == 1)
    for (int64_t w = 0; w < n; w++) dst[w] = normalize_relu(src[w], scale, shift);
  else
    for (int64_t w = 0; w < n; w++) dst[w] = normalize_relu(src[w * es], scale, shift);
}

/* Images [0, count) of `in` into the worker's padded stack; the borders and
 * the rows of missing images stay zero. Channel by channel: in the CNHW
 * layout a channel's images are one contiguous run, which the hardware
 * prefetcher streams, where image by image every 4 KiB plane of a 32x32
 * image started cold; and the next channel's rows are prefetched, its run
 * starting far from this one's end (ResNet-32 on one core, share of a step:
 * 11.8 % image by image, 9.5 % channel by channel, 8.0 % with the prefetch). */
/* fill_stack's body, inlined with `normalize` constant: the plain copy's loop
 * stays as it was without the normalisation. */
static inline __attribute__((always_inline)) void fill_stack_images(const cb_direct_conv *d,
                                                                    float *xpad, cb_planes in,
                                                                    int64_t count, bool normalize) {
  const float *affine = d->in_affine;
  for (int64_t c = 0; c < d->in_c; c++)
    for (int64_t i = 0; i < d->images; i++)
      for (int64_t h = 0; h < d->in_h; h++) {
        float *dst = xpad + c * d->plane + (i * d->hp + h + d->pad_h) * d->wp + d->pad_w;
        if (i >= count) {
          memset(dst, 0, sizeof(float) * (size_t)d->in_w);
          continue;
        }
        const float *src = in.base + i * in.ns + c * in.cs + h * in.rs;
        if (c + 1 < d->in_c) /* the next channel's row */
          for (int64_t w = 0; w < d->in_w * in.es; w += 16) __builtin_prefetch(src + in.cs + w);
        if (normalize)
          normalize_relu_row(src, in.es, d->in_w, affine[c], affine[d->in_c + c], dst);
        else if (in.es == 1) /* rows are short: a loop beats a call to memcpy */
          for (int64_t w = 0; w < d->in_w; w++) dst[w] = src[w];
        else
          for (int64_t w = 0; w < d->in_w; w++) dst[w] = src[w * in.es];
      }
}

/* even[w] = f(src[2w]), odd[w] = f(src[2w + 1]) for w < n (elements es
 * apart), f the input normalisation when `normalize`, else the value itself. */
static inline __attribute__((always_inline)) void split_row(const float *src, int64_t es, int64_t n,
                                                            bool normalize, float scale, float shift,
                                                            float *even, float *odd) {
  for (int64_t w = 0; w < n; w++) {
    float a = src[2 * w * es], b = src[(2 * w + 1) * es];
    even[w] = normalize ? normalize_relu(a, scale, shift) : a;
    odd[w] = normalize ? normalize_relu(b, scale, shift) : b;
  }
}

/* fill_stack at stride 2: row h of image i's phases (p, 0) and (p, 1) are
 * the even and odd pixels of the image's row 2h + p. */
static inline __attribute__((always_inline)) void fill_phases(const cb_direct_conv *d, float *xpad,
                                                              cb_planes in, int64_t count,
                                                              bool normalize) {
  const float *affine = d->in_affine;
  for (int64_t c = 0; c < d->in_c; c++) {
    float scale = normalize ? affine[c] : 1.0f, shift = normalize ? affine[d->in_c + c] : 0.0f;
    for (int64_t i = 0; i < d->images; i++)
      for (int64_t h = 0; h < d->in_h; h++)
        for (int p = 0; p < 2; p++) {
          float *even = xpad + c * d->plane + 2 * p * d->phase_plane +
                        (i * d->hp + h + d->pad_h) * d->wp + d->pad_w;
          float *odd = even + d->phase_plane;
          if (i >= count) {
            memset(even, 0, sizeof(float) * (size_t)d->in_w);
            memset(odd, 0, sizeof(float) * (size_t)d->in_w);
            continue;
          }
          const float *src = in.base + i * in.ns + c * in.cs + (2 * h + p) * in.rs;
          if (c + 1 < d->in_c) /* the next channel's row */
            for (int64_t w = 0; w < 2 * d->in_w * in.es; w += 16) __builtin_prefetch(src + in.cs + w);
          if (in.es == 1) split_row(src, 1, d->in_w, normalize, scale, shift, even, odd);
          else split_row(src, in.es, d->in_w, normalize, scale, shift, even, odd);
        }
  }
}

/* The plain copies in the widest vectors: the generic build's SSE made
 * them a sixth of the seed CNN's step on the AVX2 path, whose Winograd
 * transforms read the padded stack. The normalising fills stay in generic
 * code, where a multiply and an add are not fused into what the backward's
 * mask recomputes (cb_normalize_relu_run). */
CB_VECTOR_CLONES static void fill_plain(const cb_direct_conv *d, float *xpad, cb_planes in,
                                        int64_t count) {
  if (d->phases == 4) fill_phases(d, xpad, in, count, false);
  else fill_stack_images(d, xpad, in, count, false);
}

static float *fill_stack(const cb_direct_conv *d, int worker, cb_planes in, int64_t count) {
  float *xpad = d->scratch + worker * d->scratch_floats;
  if (!d->in_affine) fill_plain(d, xpad, in, count);
  else if (d->phases == 4) fill_phases(d, xpad, in, count, true);
  else fill_stack_images(d, xpad, in, count, true);
  return xpad;
}

void cb_direct_conv_normalize_input(cb_direct_conv *conv, const float *affine) {
  conv->in_affine = affine;
}

typedef struct {
  cb_planes in, out;
  int64_t n, c, h, w;
  const float *affine;
} normalize_job;

static void normalize_channels(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const normalize_job *j = arg;
  for (int64_t c = begin; c < end; c++)
    for (int64_t i = 0; i < j->n; i++)
      for (int64_t h = 0; h < j->h; h++) {
        const float *src = j->in.base + i * j->in.ns + c * j->in.cs + h * j->in.rs;
        float *row = j->out.base + i * j->out.ns + c * j->out.cs + h * j->out.rs;
        normalize_relu_row(src, j->in.es, j->w, j->affine[c], j->affine[j->c + c], row);
      }
}

void cb_normalize_relu_run(const float *src, int64_t n, float scale, float shift, float *dst) {
  normalize_relu_row(src, 1, n, scale, shift, dst);
}

void cb_normalize_relu_images(cb_planes in, cb_planes out, int64_t n, int64_t c, int64_t h, int64_t w,
                              const float *affine) {
  normalize_job job = {in, out, n, c, h, w, affine};
  cb_parallel_for(c, 1, normalize_channels, &job);
}

/* The real outputs of the stack's output grid (+ bias), row by row: every
 * image's out_h rows of out_w. */
CB_VECTOR_CLONES static void stack_outputs(const cb_direct_conv *d, const float *stack_out,
                                           cb_planes out, int64_t count, const float *bias) {
  for (int64_t o = 0; o < d->out_c; o++) {
    float b = bias ? bias[o] : 0.0f;
    for (int64_t image = 0; image < count; image++)
      for (int64_t oh = 0; oh < d->out_h; oh++) {
        const float *src = stack_out + o * d->out_ld + (image * d->hp + oh) * d->wp;
        float *dst = out.base + image * out.ns + o * out.cs + oh * out.rs;
        if (d->out_add)
          for (int64_t i = 0; i < d->out_w; i++) dst[i * out.es] += src[i] + b;
        else if (out.es == 1)
          for (int64_t i = 0; i < d->out_w; i++) dst[i] = src[i] + b;
        else
          for (int64_t i = 0; i < d->out_w; i++) dst[i * out.es] = src[i] + b;
      }
  }
}

/* stack_outputs for stride 2's input gradient: dx's rows 2i + p from its
 * phases (p, 0) and (p, 1), their columns interleaved (one phase at a time,
 * every other column, took 16 % of the layer's backward in strided stores). */
CB_VECTOR_CLONES static void stack_outputs_phases(const cb_direct_conv *d, const float *stack_out,
                                                  int64_t phase_floats, cb_planes out,
                                                  int64_t count, const float *bias) {
  for (int p = 0; p < 2; p++)
    for (int64_t o = 0; o < d->out_c; o++) {
      float b = bias ? bias[o] : 0.0f;
      for (int64_t image = 0; image < count; image++)
        for (int64_t i = 0; i < d->out_h; i++) {
          const float *even = stack_out + 2 * p * phase_floats + o * d->out_ld + (image * d->hp + i) * d->wp;
          const float *odd = even + phase_floats;
          float *dst = out.base + image * out.ns + o * out.cs + (2 * i + p) * out.rs;
          if (d->out_add)
            for (int64_t j = 0; j < d->out_w; j++)
              dst[2 * j * out.es] += even[j] + b, dst[(2 * j + 1) * out.es] += odd[j] + b;
          else if (out.es == 1)
            for (int64_t j = 0; j < d->out_w; j++) dst[2 * j] = even[j] + b, dst[2 * j + 1] = odd[j] + b;
          else
            for (int64_t j = 0; j < d->out_w; j++)
              dst[2 * j * out.es] = even[j] + b, dst[(2 * j + 1) * out.es] = odd[j] + b;
        }
    }
}

/* What the Winograd input transform of a stack of `in` reads: the images
 * where they are, or the worker's padded stack, filled. */
static cb_winograd_source winograd_source(const cb_direct_conv *d, int worker, cb_planes in,
                                          int64_t count) {
  if (d->inputs_in_place && in.es == 1) return (cb_winograd_source){NULL, in};
  /* a plan that reads in place zeroes a stack's borders only when it needs one
   * (strided input columns: rare), then for every stack it fills */
  if (d->inputs_in_place) zero_stack_borders(d, d->scratch + worker * d->scratch_floats);
  return (cb_winograd_source){fill_stack(d, worker, in, count), in};
}

void cb_direct_conv_add_to_output(cb_direct_conv *conv) { conv->out_add = true; }

void cb_direct_conv_images(const cb_direct_conv *d, int worker, cb_planes in, cb_planes out,
                           int64_t count, const float *bias) {
  if (d->winograd) {
    float *v = d->scratch + worker * d->scratch_floats + d->xpad_floats;
    cb_winograd_stack(d, winograd_source(d, worker, in, count), out, count, bias, v, v + d->v_floats);
    return;
  }
  float *xpad = fill_stack(d, worker, in, count);
  float *stack_out = xpad + d->xpad_floats; /* out_phases x out_c x positions, on the grid */
  int64_t weights_per_block = d->in_c * d->ntaps * OBLOCK;
  int64_t phase_floats = (d->out_c + OBLOCK - 1) / OBLOCK * OBLOCK * d->out_ld;
  /* tiles outside, channel blocks inside: the tile's input window (in_c
   * runs of tile + the taps' reach) stays in L1 while every block reads it */
  for (int64_t p0 = 0; p0 < d->positions; p0 += d->tile)
    for (int f = 0; f < d->out_phases; f++) {
      int first = d->phase_taps[f];
      for (int64_t o0 = 0; o0 < d->out_c; o0 += OBLOCK)
        d->kernel(xpad + p0, d->plane, d->in_c, d->taps + first, d->phase_taps[f + 1] - first,
                  d->weight + (o0 / OBLOCK) * weights_per_block + d->in_c * first * OBLOCK,
                  stack_out + f * phase_floats + o0 * d->out_ld + p0, d->out_ld, d->tile / d->lanes);
    }
  if (d->out_phases == 1) stack_outputs(d, stack_out, out, count, bias);
  else stack_outputs_phases(d, stack_out, phase_floats, out, count, bias);
}

/* dY's rows for the micro-kernel where they are: whole vectors of dense rows,
 * one plane of each image after another (the layouts conv2d writes). */
static bool dy_in_place(const cb_direct_conv *d, cb_planes dy) {
  return d->wgrad && dy.es == 1 && dy.rs == d->out_w && d->out_w % d->lanes == 0;
}

/* dW_t (O x C) (+)= dY (O x P) @ X_t^T, where X_t (C x P) is the padded stack
 * shifted by tap t, read in place by the wgrad micro-kernel; dY read in
 * place too where its rows allow (dy_in_place), else copied onto the same
 * grid of positions (rows of dy_ld), zero between outputs. */
void cb_direct_conv_weight_grad(const cb_direct_conv *d, int worker, cb_planes x, cb_planes dy,
                                int64_t count, bool accumulate, bool bias_grad) {
  float *xpad = d->scratch + worker * d->scratch_floats;
  float *v = xpad + d->xpad_floats, *p = v + d->v_floats; /* Winograd's transforms */
  float *dy_stack = p + d->m_floats;
  float *dw_taps = dy_stack + d->dy_floats, *bias = bias_grad ? dw_taps + d->dw_floats : NULL;
  if (d->winograd) {
    cb_winograd_weight_grad(d, winograd_source(d, worker, x, count), dy, count, v, p, dw_taps, bias,
                            accumulate);
    return;
  }
  fill_stack(d, worker, x, count);
  wgrad_runs runs = {.images = 1, .rows = 1, .columns = d->dy_ld}; /* the copy: one run */
  int64_t dy_channel = d->dy_ld;
  const float *dy_base = dy_stack;
  if (dy_in_place(d, dy)) {
    runs = (wgrad_runs){.images = count, .rows = d->out_h, .columns = d->out_w, .dy_image = dy.ns,
                        .dy_row = dy.rs, .x_image = d->hp * d->wp, .x_row = d->wp};
    dy_channel = dy.cs, dy_base = dy.base;
    for (int64_t o = 0; bias && o < d->out_c; o++) { /* the bias's sums bring dY into cache */
      double sum = 0;
      for (int64_t i = 0; i < count; i++)
        sum += cb_sum_floats(dy.base + o * dy.cs + i * dy.ns, d->out_h * d->out_w);
      bias[o] = accumulate ? bias[o] + (float)sum : (float)sum;
    }
  } else {
    for (int64_t o = 0; o < d->out_c; o++)
      for (int64_t i = 0; i < d->images; i++)
        for (int64_t oh = 0; oh < d->out_h; oh++) {
          float *dst = dy_stack + o * d->dy_ld + (i * d->hp + oh) * d->wp;
          if (i >= count) {
            memset(dst, 0, sizeof(float) * (size_t)d->out_w);
            continue;
          }
          const float *src = dy.base + i * dy.ns + o * dy.cs + oh * dy.rs;
          for (int64_t w = 0; w < d->out_w; w++) dst[w] = src[w * dy.es];
        }
    for (int64_t o = 0; bias && o < d->out_c; o++) { /* the stack's row is in cache: read again */
      float sum = (float)cb_sum_floats(dy_stack + o * d->dy_ld, d->grid);
      bias[o] = accumulate ? bias[o] + sum : sum;
    }
  }
  int64_t per_tap = d->out_c * d->in_c, pairs = d->in_c * d->ntaps;
  if (!d->wgrad) {
    for (int t = 0; t < d->ntaps; t++)
      cb_sgemm(false, true, d->out_c, d->in_c, d->grid, 1.0f, dy_stack, d->dy_ld, xpad + d->taps[t],
               d->plane, accumulate ? 1.0f : 0.0f, dw_taps + t * per_tap, d->in_c);
    return;
  }
  for (int64_t o0 = 0; o0 < d->out_c; o0 += OBLOCK) {
    for (int o = 0; o < OBLOCK; o++) /* past the last channel: the block's first again */
      runs.dy[o] = dy_base + (o0 + o < d->out_c ? o0 + o : o0) * dy_channel;
    for (int64_t k0 = 0; k0 < pairs; k0 += d->kblock) {
      int nk = (int)(pairs - k0 < d->kblock ? pairs - k0 : d->kblock);
      float sums[OBLOCK * KB16];
      d->wgrad(&runs, xpad, d->offs + k0, sums, nk);
      for (int64_t o = o0; o < o0 + OBLOCK && o < d->out_c; o++)
        for (int k = 0; k < nk; k++) {
          int64_t c = (k0 + k) / d->ntaps, t = (k0 + k) % d->ntaps;
          float *dst = dw_taps + t * per_tap + o * d->in_c + c, sum = sums[(o - o0) * nk + k];
          *dst = accumulate ? *dst + sum : sum;
        }
    }
  }
}

void cb_direct_conv_weight_grad_sum(const cb_direct_conv *d, int workers, float *dw, float *db) {
  int64_t per_tap = d->out_c * d->in_c;
  /* worker k's parts: dW by tap, after its padded stack, transforms and dY
   * stack, then the bias's */
  const float *parts = d->scratch + d->xpad_floats + d->v_floats + d->m_floats + d->dy_floats;
  for (int64_t o = 0; db && o < d->out_c; o++) {
    db[o] = 0;
    for (int k = 0; k < workers; k++) db[o] += parts[k * d->scratch_floats + d->dw_floats + o];
  }
  if (d->winograd) {
    cb_winograd_weight_grad_sum(d, parts, workers, dw);
    return;
  }
  for (int64_t o = 0; o < d->out_c; o++)
    for (int64_t c = 0; c < d->in_c; c++)
      for (int t = 0; t < d->ntaps; t++) {
        float sum = 0;
        for (int k = 0; k < workers; k++)
          sum += parts[k * d->scratch_floats + t * per_tap + o * d->in_c + c];
        dw[(o * d->in_c + c) * d->ntaps + t] = sum;
      }
}
