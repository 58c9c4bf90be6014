/* Winograd convolutions for the direct path's 3x3 layers: F(2x2, 3x3) and
 * F(4x4, 3x3), forward, input gradient and weight gradient, their products
 * computed by the direct path's micro-kernels (see conv_plan.h). */
#include <immintrin.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "nn/conv_plan.h"
#include "ops/reduce.h"
#include "tensor/blas.h"
#include "tensor/threadpool.h"

/* ---- Winograd F(2x2, 3x3) ----
 * Lavin and Gray (2016): a 2x2 tile of outputs from a 4x4 tile d of the
 * padded input is A^T [ sum over c of (G g G^T) .* (B^T d B) ] A, 16
 * multiplications per tile and input channel where the direct sum takes 36:
 * 2.25x fewer. The 16 elementwise products, summed over channels, are 16
 * matrix products (out_c x in_c) @ (in_c x tiles), one per position xi of the
 * 4x4 tile, which the direct path's micro-kernels compute as 1-tap
 * convolutions. The tiles cover the stack's output grid (the rows between
 * images are computed and dropped, as in the direct path); they are taken in
 * blocks small enough that the transformed inputs and the products stay in
 * L2. F(2x2, 3x3)'s transforms only add and halve, so it stays as exact as
 * the direct sum to a few float ulps (checked against im2col in the specs).
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *   A^T = [1 1 1 0; 0 1 -1 -1] */

typedef struct {
  cb_direct_conv *plan;
  const float *weight;
  bool transposed;
} winograd_weights_job;

/* U[xi][o / OBLOCK][c][o % OBLOCK] = (G g G^T)[xi] for the kernel g of (o, c),
 * output channels [begin, end): the pool's workers share them (a 256 x 256
 * layer has 65,536 kernels, each transformed on every call). */
static void winograd_weights(void *arg, int worker, int64_t begin, int64_t end) {
  const winograd_weights_job *job = arg;
  cb_direct_conv *d = job->plan;
  const float *weight = job->weight;
  bool transposed = job->transposed;
  int64_t blocks = (d->out_c + OBLOCK - 1) / OBLOCK, per_xi = blocks * OBLOCK * d->in_c;
  for (int64_t o = begin; o < end; o++)
    for (int64_t c = 0; c < d->in_c; c++) {
      float g[3][3], gg[4][3], u[4][4];
      for (int t = 0; t < 9; t++) /* the input gradient takes the kernel flipped */
        g[t / 3][t % 3] = transposed ? weight[(c * d->out_c + o) * 9 + (8 - t)]
                                     : weight[(o * d->in_c + c) * 9 + t];
      for (int j = 0; j < 3; j++) { /* G g */
        gg[0][j] = g[0][j];
        gg[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
        gg[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
        gg[3][j] = g[2][j];
      }
      for (int i = 0; i < 4; i++) { /* (G g) G^T */
        u[i][0] = gg[i][0];
        u[i][1] = 0.5f * (gg[i][0] + gg[i][1] + gg[i][2]);
        u[i][2] = 0.5f * (gg[i][0] - gg[i][1] + gg[i][2]);
        u[i][3] = gg[i][2];
      }
      for (int xi = 0; xi < 16; xi++)
        d->weight[xi * per_xi + ((o / OBLOCK) * d->in_c + c) * OBLOCK + o % OBLOCK] = u[xi / 4][xi % 4];
    }
}

/* The transforms take 8 tiles of a tile row at once in AVX2 vectors
 * (every Winograd path runs on AVX2): tile k's 4 input columns 2k..2k+3 are
 * the even and odd elements of two overlapping loads, split by shuffles;
 * the 2 output columns of the 8 tiles are interleaved back the same way.
 * Rows of 4 tiles (8x8 outputs: ResNet-32's 64-channel stage) go two rows
 * at a time, one load from each. Other short runs (rows of fewer than 8
 * tiles) go one tile at a time.
 *
 * The 8 tiles sit in a vector's lanes in the order 0, 1, 4, 5, 2, 3, 6, 7:
 * the order in which one in-lane shuffle (shufps) takes the even elements of
 * two vectors, where the natural order takes three instructions on the one
 * shuffle port (two cross-lane permutes and a blend), which bound the
 * transforms. The products do not care which lane holds which tile, and the
 * output side's unpacks (unpcklps, unpckhps) put the tiles' columns back in
 * order. So every transform must take the same 8 tiles as a vector: the
 * input, output and dY transforms take their vectors from one list of a
 * block's tiles (f2_groups); where a vector of outputs is not 8 whole
 * columns (an odd width, a strided output) it goes through a small buffer. */
#define WINO_TARGET __attribute__((target("avx2,fma")))

/* The even / odd elements of a then b, lanes in the tile order above. */
WINO_TARGET static inline vec8 evens(vec8 a, vec8 b) {
  return (vec8)_mm256_shuffle_ps((__m256)a, (__m256)b, 0x88);
}
WINO_TARGET static inline vec8 odds(vec8 a, vec8 b) {
  return (vec8)_mm256_shuffle_ps((__m256)a, (__m256)b, 0xDD);
}
/* The first / last 4 tiles' columns from their even (a) and odd (b)
 * columns, lanes in the tile order above: evens' and odds' inverse. */
WINO_TARGET static inline vec8 interleave_low(vec8 a, vec8 b) {
  return (vec8)_mm256_unpacklo_ps((__m256)a, (__m256)b);
}
WINO_TARGET static inline vec8 interleave_high(vec8 a, vec8 b) {
  return (vec8)_mm256_unpackhi_ps((__m256)a, (__m256)b);
}

/* Stores the first n (<= 8) of v's 8 columns at dst, es floats apart
 * (nothing when dst is NULL); loads them, zero past n. */
WINO_TARGET static inline void store_columns(float *dst, vec8 v, int64_t n, int64_t es) {
  if (!dst) return;
  if (n >= 8 && es == 1) {
    *(vec8 *)dst = v;
    return;
  }
  float buffer[8];
  memcpy(buffer, &v, sizeof buffer);
  for (int64_t l = 0; l < n && l < 8; l++) dst[l * es] = buffer[l];
}
WINO_TARGET static inline vec8 load_columns(const float *src, int64_t n, int64_t es) {
  if (src && n >= 8 && es == 1) return *(const vec8 *)src;
  float buffer[8] = {0};
  for (int64_t l = 0; src && l < n && l < 8; l++) buffer[l] = src[l * es];
  vec8 v;
  memcpy(&v, buffer, sizeof v);
  return v;
}

/* store_columns of v, or (add) of v added to the columns there. */
WINO_TARGET static inline void put_columns(float *dst, vec8 v, int64_t n, int64_t es, bool add) {
  if (add && dst) v = load_columns(dst, n, es) + v;
  store_columns(dst, v, n, es);
}

/* How the vector transforms take the tiles from t on (of at most limit):
 * 1 when 8 lie in t's tile row; 2 when tile rows are 4 long (8x8 outputs)
 * and t starts one: 4 in its row, 4 in the next, the even / odd split then
 * taking one load from each row; 0 when tiles go one at a time. On the
 * AVX-512 path 16 at a time where they lie so: 3 when 16 lie in t's row, 4
 * when rows are 8 long (16x16 outputs) and t starts one (8 and 8). */
static int vector_tiles(const cb_direct_conv *d, int64_t t, int64_t limit) {
  if (limit > d->tiles - t) limit = d->tiles - t;
  int64_t in_row = d->tiles_c - t % d->tiles_c;
  if (d->lanes == 16 && limit >= 16) {
    if (in_row >= 16) return 3;
    if (d->tiles_c == 8 && t % 8 == 0) return 4;
  }
  if (limit < 8) return 0;
  if (in_row >= 8) return 1;
  return d->tiles_c == 4 && t % 4 == 0 ? 2 : 0;
}

/* Where a block's tiles lie, worked out once for every channel (the
 * divisions cost more than a channel's transform of 8 tiles): one entry per
 * vector of 8 tiles or single tile, in the order the transforms take them,
 * so that the input, output and dY transforms agree on the vectors. */
typedef struct {
  int64_t k;      /* index of its (first) tile in the block */
  int layout;     /* vector_tiles(): 1 or 2 for 8 tiles, 3 or 4 for 16, 0 one tile,
                   * -1 one past the last */
  int64_t x;      /* its input window's top-left corner in a plane of the padded stack */
  int64_t row0;   /* that corner's row of the stack */
  int64_t col;    /* its first output column */
  int64_t row[4]; /* output rows r0 .. r0 + 3 (channel 0 of `planes`), -1 for none:
                   * the rows between images and past the images-th */
} f2_group;

static int64_t f2_groups(const cb_direct_conv *d, const cb_planes *planes, int64_t images,
                         int64_t first, int64_t count, f2_group *groups) {
  int64_t n = 0;
  for (int64_t k = 0; k < count; n++) {
    f2_group *g = &groups[n];
    int64_t t = first + k, tr = t / d->tiles_c, tc = t % d->tiles_c;
    g->k = k;
    g->layout = t >= d->tiles ? -1 : vector_tiles(d, t, count - k);
    g->x = 2 * tr * d->wp + 2 * tc, g->row0 = 2 * tr;
    g->col = 2 * tc;
    for (int i = 0; i < 4; i++) {
      int64_t r = 2 * tr + i, image = r / d->hp, row = r % d->hp;
      g->row[i] = !planes || image >= images || row >= d->out_h ? -1 : image * planes->ns + row * planes->rs;
    }
    k += g->layout >= 3 ? 16 : g->layout > 0 ? 8 : 1;
  }
  return n;
}

/* Whether every one of n groups is 16 tiles wide: then the 8-tile and
 * single-tile loops over the channels have nothing to do. */
static bool all_wide(const f2_group *groups, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (groups[i].layout < 3) return false;
  return true;
}

/* Row i (0..3) of group g in channel ch of `planes`, NULL for none. */
static inline float *group_row(const f2_group *g, cb_planes planes, int64_t ch, int i) {
  return g->row[i] < 0 ? NULL : planes.base + ch * planes.cs + g->row[i];
}

/* ---- 16 tiles at a time, on the AVX-512 path ----
 * The same transforms as the 8-tile ones below, in 512-bit vectors, for the
 * groups of layout 3 and 4: half the instructions per tile, which bound the
 * 8-tile transforms (ResNet-32's 16- and 32-channel layers). shufps and
 * unpcklps / unpckhps work within 128-bit lanes at every width, so the
 * order of tiles in a vector is the 8-tile one's pattern continued, and the
 * unpacks restore the columns' order just the same. Each takes one group
 * through every channel. */
#define WINO512_TARGET __attribute__((target("avx512f")))

WINO512_TARGET static inline vec16 evens16(vec16 a, vec16 b) {
  return (vec16)_mm512_shuffle_ps((__m512)a, (__m512)b, 0x88);
}
WINO512_TARGET static inline vec16 odds16(vec16 a, vec16 b) {
  return (vec16)_mm512_shuffle_ps((__m512)a, (__m512)b, 0xDD);
}

/* The first n (<= 16) of v's columns at dst, es floats apart (nothing when
 * dst is NULL); loading them, zero past n. */
WINO512_TARGET static inline void store_columns16(float *dst, vec16 v, int64_t n, int64_t es) {
  if (!dst || n <= 0) return;
  if (es == 1) {
    _mm512_mask_storeu_ps(dst, (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1), (__m512)v);
    return;
  }
  float buffer[16];
  memcpy(buffer, &v, sizeof buffer);
  for (int64_t l = 0; l < n && l < 16; l++) dst[l * es] = buffer[l];
}
WINO512_TARGET static inline vec16 load_columns16(const float *src, int64_t n, int64_t es) {
  if (!src || n <= 0) return (vec16){0};
  if (es == 1)
    return (vec16)_mm512_maskz_loadu_ps((__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1), src);
  float buffer[16] = {0};
  for (int64_t l = 0; l < n && l < 16; l++) buffer[l] = src[l * es];
  vec16 v;
  memcpy(&v, buffer, sizeof v);
  return v;
}

/* store_columns16 of v, or (add) of v added to the columns there. */
WINO512_TARGET static inline void put_columns16(float *dst, vec16 v, int64_t n, int64_t es, bool add) {
  if (add && dst) v = load_columns16(dst, n, es) + v;
  store_columns16(dst, v, n, es);
}

/* max(0, x * scale + shift) in the lanes of `lanes`, zero in the others: the
 * input's normalisation read in place, computed as fill_stack does, a
 * multiply then an add (the _round_ forms, which the compiler does not fuse). */
WINO512_TARGET static inline __m512 normalize_relu16(__m512 x, __mmask16 lanes, __m512 scale,
                                                     __m512 shift) {
  __m512 y = _mm512_add_round_ps(_mm512_mul_round_ps(x, scale, _MM_FROUND_CUR_DIRECTION), shift,
                                 _MM_FROUND_CUR_DIRECTION);
  return _mm512_maskz_max_ps(lanes, y, _mm512_setzero_ps());
}

/* Lanes [0, 16) of a vector of row columns w0, w0 + 1, ... that are pixels
 * (0 <= w < in_w). */
static inline uint32_t pixel_lanes(int64_t w0, int64_t in_w) {
  int64_t lo = w0 < 0 ? -w0 : 0, hi = in_w - w0 < 16 ? in_w - w0 : 16;
  if (hi <= lo) return 0;
  return ((1u << hi) - 1) & ~((1u << lo) - 1);
}

/* Row r of the stack's grid (channel 0) where it lies in `in`'s first
 * `images` images, or NULL where the padded stack holds zeros: the padding
 * rows, between the images and past the images-th. */
static inline const float *image_row(const cb_direct_conv *d, cb_planes in, int64_t images, int64_t r) {
  int64_t h = r - d->pad_h;
  if (h < 0) return NULL;
  int64_t image = h / d->hp, hh = h % d->hp;
  return image < images && hh < d->in_h ? in.base + image * in.ns + hh * in.rs : NULL;
}

/* winograd_inputs' channel loop for one group of 16 tiles: its 8 window rows
 * (channel 0), the columns each of the 4 loads per row starts at and their
 * lanes, the rows' step from one channel to the next. Inlined with constant
 * flags, so that each case is straight-line code with everything in
 * registers: with tests per row left in the loop, the compiler kept the
 * 16 row vectors r on the stack, storing and reloading each (with the
 * output and dY transforms' tests per row, ResNet-32 steps 5 % slower). `in_place`: masked loads and the next group's
 * rows prefetched (row_step: the image rows' stride); `normalize`: the
 * input affine applied; `any_null`: some row is NULL (zero). */
WINO512_TARGET static inline __attribute__((always_inline)) void f2_inputs16_channels(
    const cb_direct_conv *d, const float *const rows[8], const int64_t starts[4],
    const __mmask16 lanes[4], int64_t channel, int64_t row_step, const float *affine, float *v,
    const f2_group *g, const bool in_place, const bool normalize, const bool any_null) {
  int64_t per_xi = d->v_xi;
  const int bottom = g->layout == 4 ? 4 : 0; /* the second half's rows: rows[bottom + i] */
  for (int64_t c = 0; c < d->in_c; c++) {
    float *vc = v + c * d->block + g->k;
    __m512 scale = _mm512_set1_ps(normalize ? affine[c] : 1.0f);
    __m512 shift = _mm512_set1_ps(normalize ? affine[d->in_c + c] : 0.0f);
    if (in_place && rows[0]) /* the rows the next group reads first */
      for (int64_t i = g->layout == 4 ? 6 : 4; i < (g->layout == 4 ? 10 : 6); i++)
        for (int64_t w = 0; w < d->in_w; w += 16)
          _mm_prefetch((const char *)(rows[0] + c * channel + i * row_step + w), _MM_HINT_T0);
    vec16 r[4][4]; /* d B */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
      __m512 x[4];
#pragma GCC unroll 4
      for (int q = 0; q < 4; q++) {
        const float *row = rows[q % 2 ? bottom + i : i];
        if (any_null && !row) {
          x[q] = _mm512_setzero_ps();
          continue;
        }
        const float *at = row + c * channel + starts[q];
        x[q] = in_place ? _mm512_maskz_loadu_ps(lanes[q], at) : _mm512_loadu_ps(at);
        if (normalize) x[q] = normalize_relu16(x[q], lanes[q], scale, shift);
      }
      vec16 x0 = evens16((vec16)x[0], (vec16)x[1]), x1 = odds16((vec16)x[0], (vec16)x[1]);
      vec16 x2 = evens16((vec16)x[2], (vec16)x[3]), x3 = odds16((vec16)x[2], (vec16)x[3]);
      r[i][0] = x0 - x2, r[i][1] = x1 + x2, r[i][2] = x2 - x1, r[i][3] = x1 - x3;
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) { /* B^T (d B) */
      *(vec16 *)(vc + (0 * 4 + j) * per_xi) = r[0][j] - r[2][j];
      *(vec16 *)(vc + (1 * 4 + j) * per_xi) = r[1][j] + r[2][j];
      *(vec16 *)(vc + (2 * 4 + j) * per_xi) = r[2][j] - r[1][j];
      *(vec16 *)(vc + (3 * 4 + j) * per_xi) = r[1][j] - r[3][j];
    }
  }
}

/* winograd_inputs for one group of 16 tiles, from the padded stack or, where
 * source.xpad is NULL, from the stack's images in source.in themselves (unit
 * column stride) where fill_stack would have copied them: a window row past
 * the images, between them or in the padding is then zero, as are the
 * columns left and right of the pixels (masked loads), and the plan's input
 * affine (if any) is applied on the way, zeroing those lanes after it as
 * fill_stack's borders are; the next group's rows are prefetched. */
WINO512_TARGET static void f2_inputs16(const cb_direct_conv *d, cb_winograd_source source,
                                       int64_t images, float *v, const f2_group *g) {
  /* the 4 window rows of the first half and of the second: layout 3 the
   * same rows, 16 columns on; layout 4 the next tile row's, 2 rows down */
  const float *rows[8];
  int64_t second = g->layout == 3 ? 16 : 0;
  int64_t starts[4] = {0, second, 2, second + 2}; /* the columns of a, b, a2, b2 */
  __mmask16 lanes[4] = {0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF};
  bool any_null = false;
  for (int i = 0; i < 8; i++) {
    int64_t r = g->row0 + (g->layout == 4 && i >= 4 ? 2 : 0) + i % 4;
    rows[i] = source.xpad ? source.xpad + r * d->wp + g->col : image_row(d, source.in, images, r);
    any_null = any_null || !rows[i];
  }
  if (source.xpad) {
    f2_inputs16_channels(d, rows, starts, lanes, d->plane, 0, NULL, v, g, false, false, false);
    return;
  }
  for (int q = 0; q < 4; q++) {
    starts[q] += g->col - d->pad_w;
    lanes[q] = (__mmask16)pixel_lanes(starts[q], d->in_w);
  }
  const float *affine = d->in_affine;
  int64_t channel = source.in.cs, step = source.in.rs;
  if (affine && any_null)
    f2_inputs16_channels(d, rows, starts, lanes, channel, step, affine, v, g, true, true, true);
  else if (affine)
    f2_inputs16_channels(d, rows, starts, lanes, channel, step, affine, v, g, true, true, false);
  else if (any_null)
    f2_inputs16_channels(d, rows, starts, lanes, channel, step, NULL, v, g, true, false, true);
  else
    f2_inputs16_channels(d, rows, starts, lanes, channel, step, NULL, v, g, true, false, false);
}

/* Whether every one of group g's output rows (4 for layout 4, else 2) lies
 * in the images, and `planes` has unit column stride: then the 16-tile
 * output and dY transforms take the straight-line case (no tests per row,
 * masked stores and loads), the rest the general one. */
static bool group_plain(const f2_group *g, cb_planes planes) {
  int rows = g->layout == 4 ? 4 : 2;
  for (int i = 0; i < rows; i++)
    if (g->row[i] < 0) return false;
  return planes.es == 1;
}

/* The mask of the first n (<= 16) lanes. */
static inline __mmask16 first_lanes(int64_t n) {
  return n <= 0 ? 0 : (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
}

/* winograd_outputs for one group of 16 tiles; `plain`: group_plain(). */
WINO512_TARGET static inline __attribute__((always_inline)) void f2_outputs16_channels(
    const cb_direct_conv *d, const float *m, cb_planes out, const float *bias, const f2_group *g,
    const bool plain) {
  int64_t per_xi = d->m_xi, col = g->col;
  /* the 16 tiles' 32 columns: the low 16 from the first 8 tiles, the high
   * 16 columns on in the row (layout 3) or in the next tile row's (4) */
  int64_t low_n = d->out_w - col, high_n = g->layout == 3 ? d->out_w - col - 16 : d->out_w;
  __mmask16 low_mask = first_lanes(low_n), high_mask = first_lanes(high_n);
  for (int64_t o = 0; o < d->out_c; o++) {
    const float *mo = m + o * d->block + g->k;
    float b = bias ? bias[o] : 0.0f;
    vec16 s[2][4]; /* A^T M */
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
      vec16 m0 = *(const vec16 *)(mo + (0 * 4 + j) * per_xi);
      vec16 m1 = *(const vec16 *)(mo + (1 * 4 + j) * per_xi);
      vec16 m2 = *(const vec16 *)(mo + (2 * 4 + j) * per_xi);
      vec16 m3 = *(const vec16 *)(mo + (3 * 4 + j) * per_xi);
      s[0][j] = m0 + m1 + m2, s[1][j] = m1 - m2 - m3;
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) { /* (A^T M) A */
      vec16 y0 = s[i][0] + s[i][1] + s[i][2] + b, y1 = s[i][1] - s[i][2] - s[i][3] + b;
      __m512 low_y = _mm512_unpacklo_ps((__m512)y0, (__m512)y1);
      __m512 high_y = _mm512_unpackhi_ps((__m512)y0, (__m512)y1);
      if (plain) {
        float *low = out.base + o * out.cs + g->row[i] + col;
        float *high = g->layout == 3 ? low + 16 : out.base + o * out.cs + g->row[2 + i];
        if (d->out_add) {
          low_y = _mm512_add_ps(_mm512_maskz_loadu_ps(low_mask, low), low_y);
          high_y = _mm512_add_ps(_mm512_maskz_loadu_ps(high_mask, high), high_y);
        }
        _mm512_mask_storeu_ps(low, low_mask, low_y);
        _mm512_mask_storeu_ps(high, high_mask, high_y);
        continue;
      }
      float *row = group_row(g, out, o, i);
      float *low = row ? row + col * out.es : NULL;
      float *high = g->layout == 3 ? (low ? low + 16 * out.es : NULL) : group_row(g, out, o, 2 + i);
      put_columns16(low, (vec16)low_y, low_n, out.es, d->out_add);
      put_columns16(high, (vec16)high_y, high_n, out.es, d->out_add);
    }
  }
}

WINO512_TARGET static void f2_outputs16(const cb_direct_conv *d, const float *m, cb_planes out,
                                        const float *bias, const f2_group *g) {
  if (group_plain(g, out)) f2_outputs16_channels(d, m, out, bias, g, true);
  else f2_outputs16_channels(d, m, out, bias, g, false);
}

/* winograd_dy for one group of 16 tiles; `plain`: group_plain(). */
WINO512_TARGET static inline __attribute__((always_inline)) void f2_dy16_channels(
    const cb_direct_conv *d, cb_planes dy, float *p, const f2_group *g, const bool plain) {
  int64_t col = g->col, per_xi = d->m_xi;
  int64_t low_n = d->out_w - col, high_n = g->layout == 3 ? d->out_w - col - 16 : d->out_w;
  __mmask16 low_mask = first_lanes(low_n), high_mask = first_lanes(high_n);
  for (int64_t o = 0; o < d->out_c; o++) {
    float *po = p + o * d->block + g->k;
    vec16 t0, t1, b0, b1;
    if (plain) {
      const float *top = dy.base + o * dy.cs + g->row[0] + col;
      const float *bottom = dy.base + o * dy.cs + g->row[1] + col;
      const float *top2 = g->layout == 3 ? top + 16 : dy.base + o * dy.cs + g->row[2];
      const float *bottom2 = g->layout == 3 ? bottom + 16 : dy.base + o * dy.cs + g->row[3];
      t0 = (vec16)_mm512_maskz_loadu_ps(low_mask, top);
      t1 = (vec16)_mm512_maskz_loadu_ps(high_mask, top2);
      b0 = (vec16)_mm512_maskz_loadu_ps(low_mask, bottom);
      b1 = (vec16)_mm512_maskz_loadu_ps(high_mask, bottom2);
    } else {
      const float *top = group_row(g, dy, o, 0), *bottom = group_row(g, dy, o, 1);
      const float *top2 = g->layout == 3 ? (top ? top + (col + 16) * dy.es : NULL) : group_row(g, dy, o, 2);
      const float *bottom2 = g->layout == 3 ? (bottom ? bottom + (col + 16) * dy.es : NULL)
                                            : group_row(g, dy, o, 3);
      t0 = load_columns16(top ? top + col * dy.es : NULL, low_n, dy.es);
      t1 = load_columns16(top2, high_n, dy.es);
      b0 = load_columns16(bottom ? bottom + col * dy.es : NULL, low_n, dy.es);
      b1 = load_columns16(bottom2, high_n, dy.es);
    }
    vec16 a = evens16(t0, t1), b = odds16(t0, t1), c = evens16(b0, b1), e = odds16(b0, b1);
    vec16 r[4][2] = {{a, b}, {a + c, b + e}, {a - c, b - e}, {-c, -e}}; /* A dy */
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* (A dy) A^T */
      *(vec16 *)(po + (i * 4 + 0) * per_xi) = r[i][0];
      *(vec16 *)(po + (i * 4 + 1) * per_xi) = r[i][0] + r[i][1];
      *(vec16 *)(po + (i * 4 + 2) * per_xi) = r[i][0] - r[i][1];
      *(vec16 *)(po + (i * 4 + 3) * per_xi) = -r[i][1];
    }
  }
}

WINO512_TARGET static void f2_dy16(const cb_direct_conv *d, cb_planes dy, float *p,
                                   const f2_group *g) {
  if (group_plain(g, dy)) f2_dy16_channels(d, dy, p, g, true);
  else f2_dy16_channels(d, dy, p, g, false);
}

/* ---- 8 tiles at a time, read in place, on the AVX2 path ----
 * f2_inputs16's reading for AVX2's groups of 8 tiles in a row (layout
 * 1; the plan's inputs_in_place: output rows 16 or 32 wide), so that no
 * padded stack is filled (a tenth of a ResNet-32 step on this path): window
 * rows past the images, between them or in the padding are zero, as are the
 * columns left and right of the pixels (masked loads, which do not touch
 * the lanes left out), and the plan's input affine, if any, is applied on
 * the way, its multiply and add kept apart as fill_stack computes them. */

/* max(0, x * scale + shift) in the lanes of `lanes`, zero in the others. */
WINO_TARGET static inline __m256 normalize_relu8(__m256 x, __m256i lanes, __m256 scale, __m256 shift) {
  __m256 product = _mm256_mul_ps(x, scale);
  __asm__("" : "+x"(product)); /* no fused multiply-add: fill_stack's values, bit for bit */
  __m256 y = _mm256_max_ps(_mm256_add_ps(product, shift), _mm256_setzero_ps());
  return _mm256_and_ps(y, _mm256_castsi256_ps(lanes));
}

WINO_TARGET static void f2_inputs8(const cb_direct_conv *d, cb_planes in, int64_t images, float *v,
                                   const f2_group *g) {
  const float *rows[4]; /* the window's rows in channel 0, NULL for a row of zeros */
  for (int i = 0; i < 4; i++) rows[i] = image_row(d, in, images, g->row0 + i);
  int64_t starts[4] = {0, 8, 2, 10}; /* the columns of a, b, a2, b2 (winograd_inputs) */
  __m256i lanes[4], bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (int q = 0; q < 4; q++) { /* pixel_lanes' first 8 as a vector mask */
    starts[q] += g->col - d->pad_w;
    __m256i bits = _mm256_set1_epi32((int)pixel_lanes(starts[q], d->in_w));
    lanes[q] = _mm256_cmpeq_epi32(_mm256_and_si256(bits, bit), bit);
  }
  const float *affine = d->in_affine;
  int64_t per_xi = d->v_xi;
  for (int64_t c = 0; c < d->in_c; c++) {
    float *vc = v + c * d->block + g->k;
    __m256 scale = _mm256_set1_ps(affine ? affine[c] : 1.0f);
    __m256 shift = _mm256_set1_ps(affine ? affine[d->in_c + c] : 0.0f);
    vec8 r[4][4]; /* d B */
    for (int i = 0; i < 4; i++) {
      __m256 x[4];
      for (int q = 0; q < 4; q++) {
        if (!rows[i]) {
          x[q] = _mm256_setzero_ps();
          continue;
        }
        x[q] = _mm256_maskload_ps(rows[i] + c * in.cs + starts[q], lanes[q]);
        if (affine) x[q] = normalize_relu8(x[q], lanes[q], scale, shift);
      }
      vec8 x0 = evens((vec8)x[0], (vec8)x[1]), x1 = odds((vec8)x[0], (vec8)x[1]);
      vec8 x2 = evens((vec8)x[2], (vec8)x[3]), x3 = odds((vec8)x[2], (vec8)x[3]);
      r[i][0] = x0 - x2, r[i][1] = x1 + x2, r[i][2] = x2 - x1, r[i][3] = x1 - x3;
    }
    for (int j = 0; j < 4; j++) { /* B^T (d B) */
      *(vec8 *)(vc + (0 * 4 + j) * per_xi) = r[0][j] - r[2][j];
      *(vec8 *)(vc + (1 * 4 + j) * per_xi) = r[1][j] + r[2][j];
      *(vec8 *)(vc + (2 * 4 + j) * per_xi) = r[2][j] - r[1][j];
      *(vec8 *)(vc + (3 * 4 + j) * per_xi) = r[1][j] - r[3][j];
    }
  }
}

/* V[xi][c][t - first] = (B^T d B)[xi] for tiles [first, first + count) of the
 * stack (at most CB_WINOGRAD_MAX_BLOCK); tiles past the last are zero. */
WINO_TARGET static void winograd_inputs(const cb_direct_conv *d, cb_winograd_source source,
                                        int64_t images, float *v, int64_t first, int64_t count) {
  const float *xpad = source.xpad; /* NULL: every group is 16 (8 on AVX2) wide, read in place */
  int64_t per_xi = d->v_xi;
  f2_group groups[CB_WINOGRAD_MAX_BLOCK];
  int64_t ngroups = f2_groups(d, NULL, 0, first, count, groups);
  if (!xpad && d->lanes == 8) { /* rows of 8 or 16 tiles, blocks of whole vectors: every
                                  * group is 8 tiles of a row (layout 1) */
    for (const f2_group *g = groups; g < groups + ngroups; g++) f2_inputs8(d, source.in, images, v, g);
    return;
  }
  bool narrow = !all_wide(groups, ngroups);
  for (int64_t c = 0; narrow && c < d->in_c; c++) {
    /* read in place (no stack), only the groups past the last tile come here */
    const float *plane = xpad ? xpad + c * d->plane : NULL;
    float *vc = v + c * d->block;
    for (const f2_group *g = groups; g < groups + ngroups; g++) {
      int64_t k = g->k;
      if (g->layout < 0) {
        for (int xi = 0; xi < 16; xi++) vc[xi * per_xi + k] = 0;
        continue;
      }
      if (g->layout >= 3) continue; /* f2_inputs16, below */
      const float *x = plane + g->x;
      if (g->layout) {
        /* the second half: 8 columns on, or the next tile row's (2 rows down) */
        int64_t second = g->layout == 1 ? 8 : 2 * d->wp;
        vec8 r[4][4]; /* d B for 8 tiles */
        for (int i = 0; i < 4; i++, x += d->wp) {
          vec8 a = *(const vec8 *)x, b = *(const vec8 *)(x + second);
          vec8 a2 = *(const vec8 *)(x + 2), b2 = *(const vec8 *)(x + second + 2);
          vec8 x0 = evens(a, b), x1 = odds(a, b);
          vec8 x2 = evens(a2, b2), x3 = odds(a2, b2);
          r[i][0] = x0 - x2, r[i][1] = x1 + x2, r[i][2] = x2 - x1, r[i][3] = x1 - x3;
        }
        for (int j = 0; j < 4; j++) { /* B^T (d B) */
          *(vec8 *)(vc + (0 * 4 + j) * per_xi + k) = r[0][j] - r[2][j];
          *(vec8 *)(vc + (1 * 4 + j) * per_xi + k) = r[1][j] + r[2][j];
          *(vec8 *)(vc + (2 * 4 + j) * per_xi + k) = r[2][j] - r[1][j];
          *(vec8 *)(vc + (3 * 4 + j) * per_xi + k) = r[1][j] - r[3][j];
        }
        continue;
      }
      float r[4][4];
      for (int i = 0; i < 4; i++, x += d->wp)
        r[i][0] = x[0] - x[2], r[i][1] = x[1] + x[2], r[i][2] = x[2] - x[1], r[i][3] = x[1] - x[3];
      for (int j = 0; j < 4; j++) {
        vc[(0 * 4 + j) * per_xi + k] = r[0][j] - r[2][j];
        vc[(1 * 4 + j) * per_xi + k] = r[1][j] + r[2][j];
        vc[(2 * 4 + j) * per_xi + k] = r[2][j] - r[1][j];
        vc[(3 * 4 + j) * per_xi + k] = r[1][j] - r[3][j];
      }
    }
  }
  for (const f2_group *g = groups; g < groups + ngroups; g++)
    if (g->layout >= 3) f2_inputs16(d, source, images, v, g);
}

/* The 2x2 outputs A^T M A (+ bias) of tiles [first, first + count) straight
 * into `out` (the stack's first `images` images): no output grid, no copy. */
WINO_TARGET static void winograd_outputs(const cb_direct_conv *d, const float *m, cb_planes out,
                                         int64_t images, const float *bias, int64_t first,
                                         int64_t count) {
  int64_t per_xi = d->m_xi;
  if (count > d->tiles - first) count = d->tiles - first;
  f2_group groups[CB_WINOGRAD_MAX_BLOCK];
  int64_t ngroups = f2_groups(d, &out, images, first, count, groups);
  bool narrow = !all_wide(groups, ngroups);
  for (int64_t o = 0; narrow && o < d->out_c; o++) {
    const float *mo = m + o * d->block;
    float b = bias ? bias[o] : 0.0f;
    for (const f2_group *g = groups; g < groups + ngroups; g++) {
      int64_t k = g->k, col = g->col;
      float *rows[2] = {group_row(g, out, o, 0), group_row(g, out, o, 1)};
      if (g->layout >= 3) continue; /* f2_outputs16, below */
      if (g->layout) {
        vec8 s[2][4]; /* A^T M for 8 tiles */
        for (int j = 0; j < 4; j++) {
          vec8 m0 = *(const vec8 *)(mo + (0 * 4 + j) * per_xi + k);
          vec8 m1 = *(const vec8 *)(mo + (1 * 4 + j) * per_xi + k);
          vec8 m2 = *(const vec8 *)(mo + (2 * 4 + j) * per_xi + k);
          vec8 m3 = *(const vec8 *)(mo + (3 * 4 + j) * per_xi + k);
          s[0][j] = m0 + m1 + m2, s[1][j] = m1 - m2 - m3;
        }
        /* the 8 tiles' 16 columns: the first 4 tiles' 8 and the last 4's,
         * 8 columns on in the row or the next tile row's (layout 2) */
        int64_t low_n = d->out_w - col, high_n = g->layout == 1 ? d->out_w - col - 8 : d->out_w;
        for (int i = 0; i < 2; i++) { /* (A^T M) A */
          float *low = rows[i] ? rows[i] + col * out.es : NULL;
          float *high = g->layout == 1 ? (low ? low + 8 * out.es : NULL) : group_row(g, out, o, 2 + i);
          vec8 y0 = s[i][0] + s[i][1] + s[i][2] + b, y1 = s[i][1] - s[i][2] - s[i][3] + b;
          put_columns(low, interleave_low(y0, y1), low_n, out.es, d->out_add);
          put_columns(high, interleave_high(y0, y1), high_n, out.es, d->out_add);
        }
        continue;
      }
      float s[2][4];
      for (int j = 0; j < 4; j++) {
        float m0 = mo[(0 * 4 + j) * per_xi + k], m1 = mo[(1 * 4 + j) * per_xi + k];
        float m2 = mo[(2 * 4 + j) * per_xi + k], m3 = mo[(3 * 4 + j) * per_xi + k];
        s[0][j] = m0 + m1 + m2, s[1][j] = m1 - m2 - m3;
      }
      for (int i = 0; i < 2; i++) {
        if (!rows[i]) continue;
        float y0 = s[i][0] + s[i][1] + s[i][2] + b, y1 = s[i][1] - s[i][2] - s[i][3] + b;
        float *y = rows[i] + col * out.es;
        y[0] = d->out_add ? y[0] + y0 : y0;
        if (col + 1 < d->out_w) y[out.es] = d->out_add ? y[out.es] + y1 : y1;
      }
    }
  }
  for (const f2_group *g = groups; g < groups + ngroups; g++)
    if (g->layout >= 3) f2_outputs16(d, m, out, bias, g);
}

/* The weight gradient by the same transforms: for one tile,
 *   dg = G^T [ (A dy A^T) .* (B^T d B) ] G
 * (the forward's bilinear form read the other way), so the sum over tiles is
 * taken in the transformed domain: 16 GEMMs S[xi] (out_c x in_c) +=
 * P[xi] (out_c x tiles) @ V[xi]^T, then one G^T S G per kernel at the end.
 * P[xi][o][t - first] = (A dy A^T)[xi] for tiles [first, first + count). */
WINO_TARGET static void winograd_dy(const cb_direct_conv *d, cb_planes dy, int64_t images,
                                    float *p, int64_t first, int64_t count) {
  f2_group groups[CB_WINOGRAD_MAX_BLOCK];
  int64_t ngroups = f2_groups(d, &dy, images, first, count, groups);
  bool narrow = !all_wide(groups, ngroups);
  for (int64_t o = 0; narrow && o < d->out_c; o++) {
    float *po = p + o * d->block;
    for (const f2_group *g = groups; g < groups + ngroups; g++) {
      int64_t k = g->k, col = g->col;
      const float *top = group_row(g, dy, o, 0), *bottom = group_row(g, dy, o, 1);
      if (g->layout >= 3) continue; /* f2_dy16, below */
      if (g->layout) {
        /* 8 tiles: dy's columns split into even and odd; the last 4 tiles'
         * 8 columns on, or in the next tile row (zero past the width) */
        const float *top2 = g->layout == 1 ? (top ? top + (col + 8) * dy.es : NULL) : group_row(g, dy, o, 2);
        const float *bottom2 = g->layout == 1 ? (bottom ? bottom + (col + 8) * dy.es : NULL)
                                              : group_row(g, dy, o, 3);
        int64_t low_n = d->out_w - col, high_n = g->layout == 1 ? d->out_w - col - 8 : d->out_w;
        vec8 t0 = load_columns(top ? top + col * dy.es : NULL, low_n, dy.es);
        vec8 t1 = load_columns(top2, high_n, dy.es);
        vec8 b0 = load_columns(bottom ? bottom + col * dy.es : NULL, low_n, dy.es);
        vec8 b1 = load_columns(bottom2, high_n, dy.es);
        vec8 a = evens(t0, t1), b = odds(t0, t1), c = evens(b0, b1), e = odds(b0, b1);
        vec8 r[4][2] = {{a, b}, {a + c, b + e}, {a - c, b - e}, {-c, -e}}; /* A dy */
        for (int i = 0; i < 4; i++) { /* (A dy) A^T */
          *(vec8 *)(po + (i * 4 + 0) * d->m_xi + k) = r[i][0];
          *(vec8 *)(po + (i * 4 + 1) * d->m_xi + k) = r[i][0] + r[i][1];
          *(vec8 *)(po + (i * 4 + 2) * d->m_xi + k) = r[i][0] - r[i][1];
          *(vec8 *)(po + (i * 4 + 3) * d->m_xi + k) = -r[i][1];
        }
        continue;
      }
      bool second = col + 1 < d->out_w; /* an odd last column is zero */
      float a = top ? top[col * dy.es] : 0, b = top && second ? top[(col + 1) * dy.es] : 0;
      float c = bottom ? bottom[col * dy.es] : 0, e = bottom && second ? bottom[(col + 1) * dy.es] : 0;
      float r[4][2] = {{a, b}, {a + c, b + e}, {a - c, b - e}, {-c, -e}};
      for (int i = 0; i < 4; i++) {
        po[(i * 4 + 0) * d->m_xi + k] = r[i][0];
        po[(i * 4 + 1) * d->m_xi + k] = r[i][0] + r[i][1];
        po[(i * 4 + 2) * d->m_xi + k] = r[i][0] - r[i][1];
        po[(i * 4 + 3) * d->m_xi + k] = -r[i][1];
      }
    }
  }
  for (const f2_group *g = groups; g < groups + ngroups; g++)
    if (g->layout >= 3) f2_dy16(d, dy, p, g);
}

typedef struct {
  const cb_direct_conv *plan;
  const float *parts;
  int parts_count;
  float *dw;
} winograd_sum_job;

/* dw[o][c] = G^T S[o][c] G for the kernels oc = o * in_c + c in [begin, end),
 * S summed over the workers' parts. */
static void winograd_weight_grad_sum(void *arg, int worker, int64_t begin, int64_t end) {
  const winograd_sum_job *job = arg;
  const cb_direct_conv *d = job->plan;
  const float *parts = job->parts;
  int workers = job->parts_count;
  float *dw = job->dw;
  int64_t per_xi = d->out_c * d->in_c;
  for (int64_t oc = begin; oc < end; oc++) {
    float m[4][4] = {{0}}, t[3][4];
    for (int xi = 0; xi < 16; xi++)
      for (int k = 0; k < workers; k++) m[xi / 4][xi % 4] += parts[k * d->scratch_floats + xi * per_xi + oc];
    for (int j = 0; j < 4; j++) { /* G^T S */
      t[0][j] = m[0][j] + 0.5f * (m[1][j] + m[2][j]);
      t[1][j] = 0.5f * (m[1][j] - m[2][j]);
      t[2][j] = 0.5f * (m[1][j] + m[2][j]) + m[3][j];
    }
    float *g = dw + oc * 9;
    for (int i = 0; i < 3; i++) { /* (G^T S) G */
      g[i * 3 + 0] = t[i][0] + 0.5f * (t[i][1] + t[i][2]);
      g[i * 3 + 1] = 0.5f * (t[i][1] - t[i][2]);
      g[i * 3 + 2] = 0.5f * (t[i][1] + t[i][2]) + t[i][3];
    }
  }
}

/* ---- Winograd F(4x4, 3x3) ----
 * A 4x4 output tile from a 6x6 input tile: 36 multiplications per tile and
 * channel pair where the direct sum takes 144 (4x fewer; F(2x2, 3x3): 2.25x),
 * and 2.25 transformed floats per output instead of 4. Its transforms scale
 * by up to 8 and 1/24, so its sums round a little more than F(2x2, 3x3)'s
 * (about 1e-6 relative; the specs check every path against im2col).
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *          0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
 *          1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]
 * The transforms take 8 tiles at once, wherever they lie (rows of 1, 2, 4
 * or 8 tiles alike): the input's 6x6 windows by gathers from the padded
 * stack, the 4x4 outputs and dY tiles by 4-float rows per tile, transposed
 * to and from vectors of 8 tiles with unpack shuffles. */

/* B^T x for 6 vectors (one row or column of 8 windows). */
WINO_TARGET static inline void f4_input_1d(const vec8 x[6], vec8 r[6]) {
  vec8 t0 = x[4] - 4.0f * x[2], t1 = x[3] - 4.0f * x[1];
  vec8 t2 = x[4] - x[2], t3 = 2.0f * (x[3] - x[1]);
  r[0] = 4.0f * x[0] - 5.0f * x[2] + x[4];
  r[1] = t0 + t1, r[2] = t0 - t1, r[3] = t2 + t3, r[4] = t2 - t3;
  r[5] = 4.0f * x[1] - 5.0f * x[3] + x[5];
}

/* A^T m for 6 vectors: 4. */
WINO_TARGET static inline void f4_output_1d(const vec8 m[6], vec8 y[4]) {
  vec8 s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  y[0] = m[0] + s12 + s34, y[1] = d12 + 2.0f * d34;
  y[2] = s12 + 4.0f * s34, y[3] = d12 + 8.0f * d34 + m[5];
}

/* A y for 4 vectors: 6 (dY's transform, A = (A^T)^T). */
WINO_TARGET static inline void f4_dy_1d(const vec8 y[4], vec8 p[6]) {
  vec8 e = y[0] + y[2], o = y[1] + y[3], e4 = y[0] + 4.0f * y[2], o8 = 2.0f * y[1] + 8.0f * y[3];
  p[0] = y[0], p[1] = e + o, p[2] = e - o, p[3] = e4 + o8, p[4] = e4 - o8, p[5] = y[3];
}

/* Where the rows of the stack's 8 tiles from t on start in `planes` (channel
 * 0; -1: rows between images or past the count-th image, or tiles past the
 * last) and how many of their 4 columns are outputs. */
typedef struct {
  int64_t row[8][4];
  int columns[8];
} f4_tiles;

static void f4_locate(const cb_direct_conv *d, cb_planes planes, int64_t images, int64_t t,
                      f4_tiles *at) {
  for (int l = 0; l < 8; l++, t++) {
    int64_t tr = t / d->tiles_c, col = 4 * (t % d->tiles_c);
    at->columns[l] = t >= d->tiles ? 0 : d->out_w - col < 4 ? (int)(d->out_w - col) : 4;
    for (int r = 0; r < 4; r++) {
      int64_t grid_r = 4 * tr + r, image = grid_r / d->hp, oh = grid_r % d->hp;
      at->row[l][r] = at->columns[l] == 0 || image >= images || oh >= d->out_h
                          ? -1
                          : image * planes.ns + oh * planes.rs + col * planes.es;
    }
  }
}

/* Columns 0..5 of 8 rows of 8 floats (rows[l] from tile l's window): the
 * first 6 columns of their 8x8 transpose, lanes = tiles. */
WINO_TARGET static void f4_columns(const float *const rows[8], vec8 x[6]) {
  __m256 r[8], t[8], u[8];
  for (int l = 0; l < 8; l++) r[l] = _mm256_loadu_ps(rows[l]);
  for (int l = 0; l < 8; l += 2) {
    t[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);
    t[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);
  }
  for (int l = 0; l < 8; l += 4) {
    u[l] = _mm256_shuffle_ps(t[l], t[l + 2], 0x44);
    u[l + 1] = _mm256_shuffle_ps(t[l], t[l + 2], 0xEE);
    u[l + 2] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0x44);
    u[l + 3] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0xEE);
  }
  for (int j = 0; j < 4; j++) x[j] = (vec8)_mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
  for (int j = 4; j < 6; j++) x[j] = (vec8)_mm256_permute2f128_ps(u[j - 4], u[j], 0x31);
}

/* f4_input_1d for 16 tiles. */
WINO512_TARGET static inline void f4_input_1d16(const vec16 x[6], vec16 r[6]) {
  vec16 t0 = x[4] - 4.0f * x[2], t1 = x[3] - 4.0f * x[1];
  vec16 t2 = x[4] - x[2], t3 = 2.0f * (x[3] - x[1]);
  r[0] = 4.0f * x[0] - 5.0f * x[2] + x[4];
  r[1] = t0 + t1, r[2] = t0 - t1, r[3] = t2 + t3, r[4] = t2 - t3;
  r[5] = 4.0f * x[1] - 5.0f * x[3] + x[5];
}

/* f4_columns for 16 tiles: rows l and l + 8 share a register, one per
 * 256-bit half, so the in-lane unpacks and shuffles transpose both halves
 * at once and one two-source permute gathers each column's four quarters.
 * Row l's lanes outside masks[l] are zero (not read); with an affine
 * (scale, shift) the rows are max(0, x * scale + shift) within the masks. */
WINO512_TARGET static void f4_columns16(const float *const rows[16], const uint8_t masks[16],
                                        const __m512 *affine, vec16 x[6]) {
  __m512 r[8], t[8], u[8];
  for (int l = 0; l < 8; l++) {
    __mmask16 both = (__mmask16)(masks[l] | masks[l + 8] << 8);
    /* row l + 8 into the high half: loaded from 8 floats before it, those lanes masked off */
    r[l] = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(masks[l], rows[l]), (__mmask16)(masks[l + 8] << 8),
                                rows[l + 8] - 8);
    if (affine) r[l] = normalize_relu16(r[l], both, affine[0], affine[1]);
  }
  for (int l = 0; l < 8; l += 2) {
    t[l] = _mm512_unpacklo_ps(r[l], r[l + 1]);
    t[l + 1] = _mm512_unpackhi_ps(r[l], r[l + 1]);
  }
  for (int l = 0; l < 8; l += 4) {
    u[l] = _mm512_shuffle_ps(t[l], t[l + 2], 0x44);
    u[l + 1] = _mm512_shuffle_ps(t[l], t[l + 2], 0xEE);
    u[l + 2] = _mm512_shuffle_ps(t[l + 1], t[l + 3], 0x44);
    u[l + 3] = _mm512_shuffle_ps(t[l + 1], t[l + 3], 0xEE);
  }
  /* u[j]'s 128-bit quarters: columns j (j < 4) or j - 4 of tiles 0-3, 4-7... as
   * f4_columns' u, for tiles 0-7 in the low half and 8-15 in the high */
  const __m512i low = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
  const __m512i high = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int j = 0; j < 4; j++) x[j] = (vec16)_mm512_permutex2var_ps(u[j], low, u[j + 4]);
  for (int j = 4; j < 6; j++) x[j] = (vec16)_mm512_permutex2var_ps(u[j - 4], high, u[j]);
}

/* f4_inputs for tiles [first, first + count), count a multiple of 16, from
 * the padded stack or (source.xpad NULL) the images in source.in themselves,
 * as f2_inputs16: rows outside the images and columns outside the pixels
 * zero, the plan's input affine applied on the way. */
WINO512_TARGET static void f4_inputs16(const cb_direct_conv *d, cb_winograd_source source,
                                       int64_t images, float *v, int64_t first, int64_t count) {
  bool in_place = !source.xpad;
  int64_t channel = in_place ? source.in.cs : d->plane;
  for (int64_t k = 0; k < count; k += 16) {
    const float *rows[6][16]; /* channel 0's window rows of each tile */
    uint8_t masks[6][16];
    for (int l = 0; l < 16; l++) {
      int64_t t = first + k + l, tr = t / d->tiles_c, tc = t % d->tiles_c;
      bool real = t < d->tiles; /* past the last: tile 0's window (stack) or zeros */
      for (int i = 0; i < 6; i++) {
        if (!in_place) {
          rows[i][l] = source.xpad + (real ? 4 * tr * d->wp + 4 * tc : 0) + i * d->wp;
          masks[i][l] = 0xFF;
          continue;
        }
        const float *row = real ? image_row(d, source.in, images, 4 * tr + i) : NULL;
        int64_t w0 = 4 * tc - d->pad_w;
        rows[i][l] = row ? row + w0 : source.in.base;
        masks[i][l] = row ? (uint8_t)pixel_lanes(w0, d->in_w) : 0;
      }
    }
    for (int64_t c = 0; c < d->in_c; c++) {
      __m512 affine[2];
      if (in_place && d->in_affine)
        affine[0] = _mm512_set1_ps(d->in_affine[c]), affine[1] = _mm512_set1_ps(d->in_affine[d->in_c + c]);
      vec16 r[6][6], x[6], col[6], out[6];
      for (int i = 0; i < 6; i++) { /* d B, row by row */
        const float *at[16];
        for (int l = 0; l < 16; l++) at[l] = rows[i][l] + c * channel;
        f4_columns16(at, masks[i], in_place && d->in_affine ? affine : NULL, x);
        f4_input_1d16(x, r[i]);
      }
      for (int j = 0; j < 6; j++) { /* B^T (d B), column by column */
        for (int i = 0; i < 6; i++) col[i] = r[i][j];
        f4_input_1d16(col, out);
        for (int i = 0; i < 6; i++) *(vec16 *)(v + (i * 6 + j) * d->v_xi + c * d->block + k) = out[i];
      }
    }
  }
}

/* V[xi][c][t - first] = (B^T d B)[xi] for tiles [first, first + count), count
 * a multiple of 8 (tiles past the last read tile 0: their products are
 * never used). Each window row is one 8-float load per tile (2 floats past
 * the window: the stack's margins cover them), transposed. */
WINO_TARGET static void f4_inputs(const cb_direct_conv *d, cb_winograd_source source,
                                  int64_t images, float *v, int64_t first, int64_t count) {
  if (d->lanes == 16) { /* the AVX-512 path: 16 at a time, the last 8 with 8 more that no
                         * product reads (a block is a multiple of 16 tiles) */
    f4_inputs16(d, source, images, v, first, (count + 15) / 16 * 16);
    return;
  }
  const float *xpad = source.xpad;
  for (int64_t k = 0; k < count; k += 8) {
    int64_t corner[8]; /* the windows' top-left corners in a plane */
    for (int l = 0; l < 8; l++) {
      int64_t t = first + k + l;
      corner[l] = t < d->tiles ? 4 * (t / d->tiles_c) * d->wp + 4 * (t % d->tiles_c) : 0;
    }
    for (int64_t c = 0; c < d->in_c; c++) {
      const float *plane = xpad + c * d->plane;
      vec8 r[6][6], x[6], col[6], out[6];
      for (int i = 0; i < 6; i++) { /* d B, row by row */
        const float *rows[8];
        for (int l = 0; l < 8; l++) rows[l] = plane + corner[l] + i * d->wp;
        f4_columns(rows, x);
        f4_input_1d(x, r[i]);
      }
      for (int j = 0; j < 6; j++) { /* B^T (d B), column by column */
        for (int i = 0; i < 6; i++) col[i] = r[i][j];
        f4_input_1d(col, out);
        for (int i = 0; i < 6; i++) *(vec8 *)(v + (i * 6 + j) * d->v_xi + c * d->block + k) = out[i];
      }
    }
  }
}

/* Four vectors of 8 tiles (q0..q3: a row's 4 columns) as 8 rows of 4 floats,
 * tile l in rows[l], and back. */
WINO_TARGET static void f4_to_rows(const vec8 q[4], vec4 rows[8]) {
  __m256 t0 = _mm256_unpacklo_ps((__m256)q[0], (__m256)q[1]);
  __m256 t1 = _mm256_unpackhi_ps((__m256)q[0], (__m256)q[1]);
  __m256 t2 = _mm256_unpacklo_ps((__m256)q[2], (__m256)q[3]);
  __m256 t3 = _mm256_unpackhi_ps((__m256)q[2], (__m256)q[3]);
  __m256 a[4] = {_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2))),
                 _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2))),
                 _mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3))),
                 _mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)))};
  for (int l = 0; l < 4; l++) {
    rows[l] = (vec4)_mm256_castps256_ps128(a[l]);
    rows[l + 4] = (vec4)_mm256_extractf128_ps(a[l], 1);
  }
}

WINO_TARGET static void f4_from_rows(const vec4 rows[8], vec8 q[4]) {
  __m256 a[4];
  for (int l = 0; l < 4; l++)
    a[l] = _mm256_insertf128_ps(_mm256_castps128_ps256((__m128)rows[l]), (__m128)rows[l + 4], 1);
  __m256 t0 = _mm256_unpacklo_ps(a[0], a[1]), t1 = _mm256_unpackhi_ps(a[0], a[1]);
  __m256 t2 = _mm256_unpacklo_ps(a[2], a[3]), t3 = _mm256_unpackhi_ps(a[2], a[3]);
  q[0] = (vec8)_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));
  q[1] = (vec8)_mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t0), _mm256_castps_pd(t2)));
  q[2] = (vec8)_mm256_castpd_ps(_mm256_unpacklo_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));
  q[3] = (vec8)_mm256_castpd_ps(_mm256_unpackhi_pd(_mm256_castps_pd(t1), _mm256_castps_pd(t3)));
}

/* The 4x4 outputs A^T M A (+ bias) of tiles [first, first + count) into
 * `out` (the stack's first `images` images). */
WINO_TARGET static void f4_outputs(const cb_direct_conv *d, const float *m, cb_planes out,
                                   int64_t images, const float *bias, int64_t first,
                                   int64_t count) {
  if (count > d->tiles - first) count = d->tiles - first;
  for (int64_t k = 0; k < count; k += 8) {
    f4_tiles at;
    f4_locate(d, out, images, first + k, &at);
    for (int64_t o = 0; o < d->out_c; o++) {
      const float *mo = m + o * d->block + k;
      float b = bias ? bias[o] : 0.0f;
      vec8 s[4][6], row[6], y[4];
      for (int j = 0; j < 6; j++) { /* A^T M, column by column */
        vec8 col[6];
        for (int i = 0; i < 6; i++) col[i] = *(const vec8 *)(mo + (i * 6 + j) * d->m_xi);
        f4_output_1d(col, y);
        for (int i = 0; i < 4; i++) s[i][j] = y[i];
      }
      for (int i = 0; i < 4; i++) { /* (A^T M) A, row i of the 8 tiles */
        for (int j = 0; j < 6; j++) row[j] = s[i][j];
        f4_output_1d(row, y);
        for (int q = 0; q < 4; q++) y[q] += b;
        vec4 rows[8];
        f4_to_rows(y, rows);
        for (int l = 0; l < 8; l++) {
          if (at.row[l][i] < 0) continue;
          float *dst = out.base + o * out.cs + at.row[l][i];
          if (at.columns[l] == 4 && out.es == 1) {
            vec4 sum = rows[l];
            if (d->out_add) sum += *(const vec4 *)dst;
            *(vec4 *)dst = sum;
            continue;
          }
          for (int q = 0; q < at.columns[l]; q++)
            dst[q * out.es] = d->out_add ? dst[q * out.es] + rows[l][q] : rows[l][q];
        }
      }
    }
  }
}

/* P[xi][o][t - first] = (A dy A^T)[xi] for tiles [first, first + count),
 * count a multiple of 8 (dY outside the outputs is zero). */
WINO_TARGET static void f4_dy(const cb_direct_conv *d, cb_planes dy, int64_t images, float *p,
                              int64_t first, int64_t count) {
  for (int64_t k = 0; k < count; k += 8) {
    f4_tiles at;
    f4_locate(d, dy, images, first + k, &at);
    for (int64_t o = 0; o < d->out_c; o++) {
      float *po = p + o * d->block + k;
      vec8 r[6][4], y[4], col[4], out[6];
      for (int i = 0; i < 4; i++) { /* row i of the 8 tiles, then A y over its columns */
        vec4 rows[8];
        for (int l = 0; l < 8; l++) {
          rows[l] = (vec4){0, 0, 0, 0};
          if (at.row[l][i] < 0) continue;
          const float *src = dy.base + o * dy.cs + at.row[l][i];
          if (at.columns[l] == 4 && dy.es == 1) rows[l] = *(const vec4 *)src;
          else
            for (int q = 0; q < at.columns[l]; q++) rows[l][q] = src[q * dy.es];
        }
        f4_from_rows(rows, y);
        f4_dy_1d(y, out);
        for (int j = 0; j < 6; j++) r[j][i] = out[j]; /* r[j][i]: (dy A^T)[i][j] */
      }
      for (int j = 0; j < 6; j++) { /* A (dy A^T), column j */
        for (int i = 0; i < 4; i++) col[i] = r[j][i];
        f4_dy_1d(col, out);
        for (int i = 0; i < 6; i++) *(vec8 *)(po + (i * 6 + j) * d->m_xi) = out[i];
      }
    }
  }
}

/* ---- F(4x4)'s output and dY transforms 16 tiles at a time (AVX-512) ----
 * f4_outputs' and f4_dy's arithmetic in 512-bit vectors, tile t in lane t as
 * f4_inputs16 leaves it. A tile's row is 4 floats: the 4 vectors of a row's
 * columns are transposed within each 128-bit quarter (f4_transpose16), so
 * that quarter m of vector l holds tile 4m + l's row, which one masked
 * store (or load) moves, its lanes outside the outputs (columns past the
 * edge, rows between the images) masked off: no branch per tile and row,
 * no extraction. Plain column stride only (the 8-wide ones take the rest). */

/* Within each 128-bit quarter, the 4x4 transpose of in[0..3]: its own inverse. */
WINO512_TARGET static inline void f4_transpose16(const __m512 in[4], __m512 out[4]) {
  __m512 t0 = _mm512_unpacklo_ps(in[0], in[1]), t1 = _mm512_unpackhi_ps(in[0], in[1]);
  __m512 t2 = _mm512_unpacklo_ps(in[2], in[3]), t3 = _mm512_unpackhi_ps(in[2], in[3]);
  out[0] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  out[1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t0), _mm512_castps_pd(t2)));
  out[2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
  out[3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t1), _mm512_castps_pd(t3)));
}

/* f4_output_1d and f4_dy_1d for 16 tiles. */
WINO512_TARGET static inline void f4_output_1d16(const vec16 m[6], vec16 y[4]) {
  vec16 s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  y[0] = m[0] + s12 + s34, y[1] = d12 + 2.0f * d34;
  y[2] = s12 + 4.0f * s34, y[3] = d12 + 8.0f * d34 + m[5];
}
WINO512_TARGET static inline void f4_dy_1d16(const vec16 y[4], vec16 p[6]) {
  vec16 e = y[0] + y[2], o = y[1] + y[3], e4 = y[0] + 4.0f * y[2], o8 = 2.0f * y[1] + 8.0f * y[3];
  p[0] = y[0], p[1] = e + o, p[2] = e - o, p[3] = e4 + o8, p[4] = e4 - o8, p[5] = y[3];
}

/* For 16 tiles from t on (tile k of them in quarter k / 4 of a vector) and
 * each of their 4 rows, in channel 0 of `planes`: the address for the
 * masked store or load (the row's start less 4 (k / 4) floats, so that the
 * quarter's lanes fall on the row) and those lanes, the row's outputs (none
 * for rows outside the images or tiles past the last). */
typedef struct {
  int64_t at[4][16];
  __mmask16 lanes[4][16];
} f4_quarters;

static void f4_locate16(const cb_direct_conv *d, cb_planes planes, int64_t images, int64_t t,
                        f4_quarters *q) {
  f4_tiles halves[2];
  f4_locate(d, planes, images, t, &halves[0]);
  f4_locate(d, planes, images, t + 8, &halves[1]);
  for (int k = 0; k < 16; k++) {
    const f4_tiles *h = &halves[k / 8];
    int l = k % 8, quarter = k / 4;
    for (int i = 0; i < 4; i++) {
      bool real = h->row[l][i] >= 0 && h->columns[l] > 0;
      q->lanes[i][k] = real ? (__mmask16)(((1u << h->columns[l]) - 1) << (4 * quarter)) : 0;
      q->at[i][k] = real ? h->row[l][i] - 4 * quarter : 0;
    }
  }
}

/* f4_outputs for 16 tiles at a time (out.es 1). */
WINO512_TARGET static void f4_outputs16(const cb_direct_conv *d, const float *m, cb_planes out,
                                        int64_t images, const float *bias, int64_t first,
                                        int64_t count) {
  if (count > d->tiles - first) count = d->tiles - first;
  for (int64_t k = 0; k < count; k += 16) {
    f4_quarters q;
    f4_locate16(d, out, images, first + k, &q);
    for (int64_t o = 0; o < d->out_c; o++) {
      const float *mo = m + o * d->block + k;
      float *base = out.base + o * out.cs;
      float b = bias ? bias[o] : 0.0f;
      vec16 s[4][6], col[6], row[6], y[4];
      for (int j = 0; j < 6; j++) { /* A^T M, column by column */
        for (int i = 0; i < 6; i++) col[i] = *(const vec16 *)(mo + (i * 6 + j) * d->m_xi);
        f4_output_1d16(col, y);
        for (int i = 0; i < 4; i++) s[i][j] = y[i];
      }
      for (int i = 0; i < 4; i++) { /* (A^T M) A, row i of the 16 tiles */
        for (int j = 0; j < 6; j++) row[j] = s[i][j];
        f4_output_1d16(row, y);
        __m512 columns[4], rows[4];
        for (int c = 0; c < 4; c++) columns[c] = (__m512)(y[c] + b);
        f4_transpose16(columns, rows);
        for (int t = 0; t < 16; t++) {
          float *dst = base + q.at[i][t];
          __m512 v = rows[t % 4];
          if (d->out_add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(q.lanes[i][t], dst));
          _mm512_mask_storeu_ps(dst, q.lanes[i][t], v);
        }
      }
    }
  }
}

/* f4_dy for 16 tiles at a time (dy.es 1; count a multiple of 16). */
WINO512_TARGET static void f4_dy16(const cb_direct_conv *d, cb_planes dy, int64_t images, float *p,
                                   int64_t first, int64_t count) {
  for (int64_t k = 0; k < count; k += 16) {
    f4_quarters q;
    f4_locate16(d, dy, images, first + k, &q);
    for (int64_t o = 0; o < d->out_c; o++) {
      float *po = p + o * d->block + k;
      const float *base = dy.base + o * dy.cs;
      vec16 r[6][4], col[4], out[6];
      for (int i = 0; i < 4; i++) { /* row i of the 16 tiles, then A y over its columns */
        __m512 rows[4], columns[4];
        for (int l = 0; l < 4; l++) rows[l] = _mm512_setzero_ps();
        for (int t = 0; t < 16; t++)
          rows[t % 4] = _mm512_mask_loadu_ps(rows[t % 4], q.lanes[i][t], base + q.at[i][t]);
        f4_transpose16(rows, columns);
        vec16 y[4] = {(vec16)columns[0], (vec16)columns[1], (vec16)columns[2], (vec16)columns[3]};
        f4_dy_1d16(y, out);
        for (int j = 0; j < 6; j++) r[j][i] = out[j]; /* r[j][i]: (dy A^T)[i][j] */
      }
      for (int j = 0; j < 6; j++) { /* A (dy A^T), column j */
        for (int i = 0; i < 4; i++) col[i] = r[j][i];
        f4_dy_1d16(col, out);
        for (int i = 0; i < 6; i++) *(vec16 *)(po + (i * 6 + j) * d->m_xi) = out[i];
      }
    }
  }
}

/* G x for 3 vectors: 6 (the kernel's transform). */
static inline void f4_kernel_1d(const vec4 g[3], vec4 r[6]) {
  vec4 e = g[0] + g[2], f = g[0] * (1.0f / 24) + g[2] * (1.0f / 6), h = g[1] * (1.0f / 12);
  r[0] = g[0] * 0.25f, r[1] = (e + g[1]) * (-1.0f / 6), r[2] = (e - g[1]) * (-1.0f / 6);
  r[3] = f + h, r[4] = f - h, r[5] = g[2];
}

/* U[xi][o / OBLOCK][c][o % OBLOCK] = (G g G^T)[xi] for the kernels of the
 * output channel blocks [begin, end), the OBLOCK channels of a block in the
 * lanes of 4-float vectors. */
static void f4_weights(void *arg, int worker, int64_t begin, int64_t end) {
  const winograd_weights_job *job = arg;
  cb_direct_conv *d = job->plan;
  int64_t per_xi = (d->out_c + OBLOCK - 1) / OBLOCK * OBLOCK * d->in_c;
  for (int64_t block = begin; block < end; block++)
    for (int64_t c = 0; c < d->in_c; c++) {
      vec4 g[3][3] = {{{0}}}, col[3], gg[6][3], u[6];
      for (int l = 0; l < OBLOCK && block * OBLOCK + l < d->out_c; l++) {
        int64_t o = block * OBLOCK + l;
        for (int t = 0; t < 9; t++) /* the input gradient takes the kernel flipped */
          g[t / 3][t % 3][l] = job->transposed ? job->weight[(c * d->out_c + o) * 9 + (8 - t)]
                                               : job->weight[(o * d->in_c + c) * 9 + t];
      }
      for (int q = 0; q < 3; q++) { /* G g, column by column */
        vec4 r[6];
        for (int p = 0; p < 3; p++) col[p] = g[p][q];
        f4_kernel_1d(col, r);
        for (int a = 0; a < 6; a++) gg[a][q] = r[a];
      }
      for (int a = 0; a < 6; a++) { /* (G g) G^T, row by row */
        f4_kernel_1d(gg[a], u);
        for (int b = 0; b < 6; b++)
          *(vec4 *)(d->weight + (a * 6 + b) * per_xi + (block * d->in_c + c) * OBLOCK) = u[b];
      }
    }
}

/* G^T s for 6 vectors: 3. */
WINO_TARGET static inline void f4_kernel_grad_1d(const vec8 s[6], vec8 g[3]) {
  vec8 s12 = s[1] + s[2], s34 = s[3] + s[4];
  g[0] = s[0] * 0.25f - s12 * (1.0f / 6) + s34 * (1.0f / 24);
  g[1] = (s[2] - s[1]) * (1.0f / 6) + (s[3] - s[4]) * (1.0f / 12);
  g[2] = (s34 - s12) * (1.0f / 6) + s[5];
}

/* dw[o][c] = G^T S[o][c] G for the kernels oc = o * in_c + c in [begin, end),
 * S summed over the workers' parts; 8 kernels in the lanes of a vector. */
WINO_TARGET static void f4_weight_grad_sum(void *arg, int worker, int64_t begin, int64_t end) {
  const winograd_sum_job *job = arg;
  const cb_direct_conv *d = job->plan;
  int64_t per_xi = d->out_c * d->in_c;
  for (int64_t oc = begin; oc < end; oc += 8) {
    int n = end - oc < 8 ? (int)(end - oc) : 8;
    vec8 s[6][6] = {{{0}}}, t[3][6], g[3][3], col[6];
    for (int xi = 0; xi < 36; xi++)
      for (int k = 0; k < job->parts_count; k++) {
        const float *part = job->parts + k * d->scratch_floats + xi * per_xi + oc;
        if (n == 8) s[xi / 6][xi % 6] += *(const vec8 *)part;
        else
          for (int l = 0; l < n; l++) s[xi / 6][xi % 6][l] += part[l];
      }
    for (int b = 0; b < 6; b++) { /* G^T S, column by column */
      vec8 r[3];
      for (int a = 0; a < 6; a++) col[a] = s[a][b];
      f4_kernel_grad_1d(col, r);
      for (int p = 0; p < 3; p++) t[p][b] = r[p];
    }
    for (int p = 0; p < 3; p++) f4_kernel_grad_1d(t[p], g[p]); /* (G^T S) G */
    for (int l = 0; l < n; l++)
      for (int p = 0; p < 3; p++)
        for (int q = 0; q < 3; q++) job->dw[(oc + l) * 9 + p * 3 + q] = g[p][q][l];
  }
}

/* ---- the weight gradient's products ----
 * Per position xi, S_xi (out_c x in_c) += P_xi (out_c x count) @ V_xi^T,
 * V_xi being in_c x count. By sgemm these are small products (count <= 256)
 * whose packing took as long as the arithmetic (the seed CNN's 32 -> 64
 * layer: 45 % of its sgemm time in OpenBLAS's copy routines). Instead V_xi is
 * transposed once (count x in_c, 8 x 8 blocks in AVX registers) and a
 * register tile of S, rows x (vectors of 16 or 8 input channels), sums
 * P's broadcast elements times Vt's rows: outer products, no horizontal
 * sums, P read once per tile and Vt (<= 64 KiB) from L1 or L2. At 16
 * channels on AVX-512, dot products of V's rows as they are instead
 * (wgrad_products_lanes, below). */

/* vt (count x in_c, rows in_c apart) = v^T, v being in_c x count with rows
 * ld apart; in_c a multiple of 8. */
WINO_TARGET static void transpose_v(const float *v, int64_t ld, int64_t in_c, int64_t count, float *vt) {
  int64_t t = 0;
  for (; t + 8 <= count; t += 8)
    for (int64_t c = 0; c < in_c; c += 8) {
      __m256 r[8], u[8], w[8];
      for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(v + (c + i) * ld + t);
      for (int i = 0; i < 8; i += 2) {
        u[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
      }
      for (int i = 0; i < 8; i += 4) {
        w[i] = _mm256_shuffle_ps(u[i], u[i + 2], 0x44);
        w[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], 0xEE);
        w[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0x44);
        w[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
      }
      for (int i = 0; i < 4; i++) { /* w[i]: columns i and i + 4 of rows 0-3; w[i + 4] of rows 4-7 */
        _mm256_storeu_ps(vt + (t + i) * in_c + c, _mm256_permute2f128_ps(w[i], w[i + 4], 0x20));
        _mm256_storeu_ps(vt + (t + i + 4) * in_c + c, _mm256_permute2f128_ps(w[i], w[i + 4], 0x31));
      }
    }
  for (; t < count; t++)
    for (int64_t c = 0; c < in_c; c++) vt[t * in_c + c] = v[c * ld + t];
}

/* s[r][16 v ..] (+= when add) sum over t < count of p[r * ldp + t] * vt[t * ldv + 16 v ..],
 * for r < rows, v < nc; rows and nc constants at each call. */
#define WG16_ROWS 8
__attribute__((target("avx512f"), always_inline)) static inline void
wgrad_tile16(const float *p, int64_t ldp, const float *vt, int64_t ldv, int64_t count, float *s,
             int64_t lds, bool add, const int rows, const int nc) {
  vec16 acc[WG16_ROWS][4] = {{{0}}};
  for (int64_t t = 0; t < count; t++, vt += ldv) {
    vec16 x[4];
#pragma GCC unroll 4
    for (int v = 0; v < nc; v++) x[v] = *(const vec16 *)(vt + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
      float pr = p[r * ldp + t];
#pragma GCC unroll 4
      for (int v = 0; v < nc; v++) acc[r][v] += pr * x[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++)
#pragma GCC unroll 4
    for (int v = 0; v < nc; v++) {
      vec16 *dst = (vec16 *)(s + r * lds + 16 * v);
      if (add) *dst += acc[r][v];
      else *dst = acc[r][v];
    }
}

/* S (+)= P @ Vt over all of S: 4 vectors of 16 channels by 4 rows, fewer
 * vectors by 8 rows (at most 24 accumulators and the 4 inputs of AVX-512's
 * 32 registers), the last rows one at a time. */
__attribute__((target("avx512f"))) static void wgrad_products16(const float *p, int64_t ldp,
                                                               const float *vt, int64_t out_c,
                                                               int64_t in_c, int64_t count, float *s,
                                                               bool add) {
  for (int64_t c = 0; c < in_c; c += 64) {
    int nc = in_c - c >= 64 ? 4 : (int)((in_c - c) / 16);
    int block = nc >= 3 ? 4 : 8;
    int64_t o = 0;
    for (; o + block <= out_c; o += block) {
      const float *po = p + o * ldp;
      float *so = s + o * in_c + c;
      switch (nc) {
      case 1: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 8, 1); break;
      case 2: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 8, 2); break;
      case 3: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 4, 3); break;
      default: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 4, 4); break;
      }
    }
    for (; o < out_c; o++) {
      const float *po = p + o * ldp;
      float *so = s + o * in_c + c;
      switch (nc) {
      case 1: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 1, 1); break;
      case 2: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 1, 2); break;
      case 3: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 1, 3); break;
      default: wgrad_tile16(po, ldp, vt + c, in_c, count, so, in_c, add, 1, 4); break;
      }
    }
  }
}

/* On AVX-512 with 16 channels in (the plan's wgrad_in_lanes), S_xi's
 * products take V_xi as the input transform wrote it, tiles in the lanes: a
 * register tile of 4 x 4 sums, each a vector of 16 partial sums over the
 * tiles, P's and V's rows loaded 16 tiles at a time (8 loads for 16
 * multiply-adds), the lanes added up at the end by a tree of shuffles
 * (sum_lanes16). No transposed copy of V, which at 16 channels cost 40 % of
 * the products: the weight gradient of ResNet-32's 16-channel layers is
 * 15-20 % faster. With more channels the transpose costs less against the
 * products and the outer products above win. */

/* r[4 j + m(i)] = the sum of a[4 i + j]'s 16 lanes, m = (0, 2, 1, 3): four
 * levels each halving the vectors, adding 256-bit, 128-bit, 64-bit and
 * 32-bit halves of two vectors in one. */
__attribute__((target("avx512f"))) static inline __m512 sum_lanes16(const __m512 a[16]) {
  __m512 x[8], z[4], w[2];
  for (int k = 0; k < 8; k++) /* quarters 0-1: a[2k]'s 8 partials, 2-3: a[2k + 1]'s */
    x[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xEE));
  for (int k = 0; k < 4; k++) /* quarter q: a[4k + q]'s 4 partials */
    z[k] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], 0x88),
                         _mm512_shuffle_f32x4(x[2 * k], x[2 * k + 1], 0xDD));
  for (int k = 0; k < 2; k++) /* in quarter q: z[2k]'s 2 partials at 0 and 2, z[2k + 1]'s at 1 and 3 */
    w[k] = _mm512_add_ps(_mm512_unpacklo_ps(z[2 * k], z[2 * k + 1]),
                         _mm512_unpackhi_ps(z[2 * k], z[2 * k + 1]));
  /* in quarter q: the sums of z[0], z[2], z[1], z[3]'s quarter q */
  return _mm512_add_ps(_mm512_unpacklo_ps(w[0], w[1]), _mm512_unpackhi_ps(w[0], w[1]));
}

/* S (+)= P @ V^T, P out_c x count (rows ldp apart), V in_c x count (rows ldv
 * apart), S out_c x in_c. Past the last row or column of a 4 x 4 tile the
 * last one is read again and its sums dropped. */
__attribute__((target("avx512f"))) static void wgrad_products_lanes(const float *p, int64_t ldp,
                                                                   const float *v, int64_t ldv,
                                                                   int64_t out_c, int64_t in_c,
                                                                   int64_t count, float *s, bool add) {
  __mmask16 tail = (__mmask16)((1u << (count % 16)) - 1);
  int64_t whole = count - count % 16;
  /* sum_lanes16's order back to a[4 i + j]'s: element 4 i + j from 4 j + m(i) */
  const __m512i order = _mm512_set_epi32(15, 11, 7, 3, 13, 9, 5, 1, 14, 10, 6, 2, 12, 8, 4, 0);
  for (int64_t o = 0; o < out_c; o += 4)
    for (int64_t c = 0; c < in_c; c += 4) {
      const float *pr[4], *vr[4];
      for (int i = 0; i < 4; i++) {
        pr[i] = p + (o + i < out_c ? o + i : out_c - 1) * ldp;
        vr[i] = v + (c + i < in_c ? c + i : in_c - 1) * ldv;
      }
      __m512 acc[16];
      for (int k = 0; k < 16; k++) acc[k] = _mm512_setzero_ps();
      for (int64_t t = 0; t < count; t += 16) {
        __m512 pv[4], vv[4];
        if (t < whole)
          for (int i = 0; i < 4; i++) pv[i] = _mm512_loadu_ps(pr[i] + t), vv[i] = _mm512_loadu_ps(vr[i] + t);
        else
          for (int i = 0; i < 4; i++)
            pv[i] = _mm512_maskz_loadu_ps(tail, pr[i] + t), vv[i] = _mm512_maskz_loadu_ps(tail, vr[i] + t);
        for (int i = 0; i < 4; i++)
          for (int j = 0; j < 4; j++) acc[4 * i + j] = _mm512_fmadd_ps(pv[i], vv[j], acc[4 * i + j]);
      }
      float sums[16];
      _mm512_storeu_ps(sums, _mm512_permutexvar_ps(order, sum_lanes16(acc)));
      for (int i = 0; i < 4 && o + i < out_c; i++)
        for (int j = 0; j < 4 && c + j < in_c; j++) {
          float *dst = s + (o + i) * in_c + c + j;
          *dst = add ? *dst + sums[4 * i + j] : sums[4 * i + j];
        }
    }
}

/* wgrad_tile16 for AVX2's 16 registers: vectors of 8 channels, at most 12
 * accumulators (2 vectors by 6 rows, 1 by 8), 2 inputs and the broadcast. */
#define WG8_ROWS 8
__attribute__((target("avx2,fma"), always_inline)) static inline void
wgrad_tile8(const float *p, int64_t ldp, const float *vt, int64_t ldv, int64_t count, float *s,
            int64_t lds, bool add, const int rows, const int nc) {
  vec8 acc[WG8_ROWS][2] = {{{0}}};
  for (int64_t t = 0; t < count; t++, vt += ldv) {
    vec8 x[2];
#pragma GCC unroll 2
    for (int v = 0; v < nc; v++) x[v] = *(const vec8 *)(vt + 8 * v);
#pragma GCC unroll 8
    for (int r = 0; r < rows; r++) {
      float pr = p[r * ldp + t];
#pragma GCC unroll 2
      for (int v = 0; v < nc; v++) acc[r][v] += pr * x[v];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
    for (int v = 0; v < nc; v++) {
      vec8 *dst = (vec8 *)(s + r * lds + 8 * v);
      if (add) *dst += acc[r][v];
      else *dst = acc[r][v];
    }
}

__attribute__((target("avx2,fma"))) static void wgrad_products8(const float *p, int64_t ldp,
                                                               const float *vt, int64_t out_c,
                                                               int64_t in_c, int64_t count, float *s,
                                                               bool add) {
  for (int64_t c = 0; c < in_c; c += 16) {
    int nc = in_c - c >= 16 ? 2 : 1, block = nc == 2 ? 6 : 8;
    int64_t o = 0;
    for (; o + block <= out_c; o += block) {
      if (nc == 2) wgrad_tile8(p + o * ldp, ldp, vt + c, in_c, count, s + o * in_c + c, in_c, add, 6, 2);
      else wgrad_tile8(p + o * ldp, ldp, vt + c, in_c, count, s + o * in_c + c, in_c, add, 8, 1);
    }
    for (; o < out_c; o++) {
      if (nc == 2) wgrad_tile8(p + o * ldp, ldp, vt + c, in_c, count, s + o * in_c + c, in_c, add, 1, 2);
      else wgrad_tile8(p + o * ldp, ldp, vt + c, in_c, count, s + o * in_c + c, in_c, add, 1, 1);
    }
  }
}

void cb_winograd_weight_grad(const cb_direct_conv *d, cb_winograd_source source, cb_planes dy,
                             int64_t images, float *v, float *p, float *s, float *bias,
                             bool accumulate) {
  /* A's row 1 is all ones (F(2x2): 1 1; F(4x4): 1 1 1 1), so position
   * (1, 1) of a tile's A dy A^T is the sum of its dy: the bias gradient is
   * the sum of P's row there, in cache (1/wino_n of P) */
  int64_t sum_xi = d->wino_m + 3;
  if (bias && !accumulate)
    for (int64_t o = 0; o < d->out_c; o++) bias[o] = 0;
  float *vt = v + d->wino_n * d->v_xi;
  /* the own products take the tiles in runs whose Vt rows (16 KiB) stay in L1
   * while every tile of S reads them */
  int64_t run = 4096 / d->in_c < 16 ? 16 : 4096 / d->in_c;
  for (int64_t first = 0; first < d->tiles; first += d->block) {
    int64_t count = d->tiles - first < d->block ? d->tiles - first : d->block;
    /* F(4x4) takes 8 tiles at a time: the last few are zero in P */
    int64_t rows = d->wino_m == 4 ? (count + 7) / 8 * 8 : count;
    if (d->wino_m == 4) {
      f4_inputs(d, source, images, v, first, rows);
      if (d->lanes == 16 && dy.es == 1) f4_dy16(d, dy, images, p, first, (rows + 15) / 16 * 16);
      else f4_dy(d, dy, images, p, first, rows);
    } else {
      winograd_inputs(d, source, images, v, first, count);
      winograd_dy(d, dy, images, p, first, count);
    }
    for (int64_t o = 0; bias && o < d->out_c; o++)
      bias[o] += (float)cb_sum_floats(p + sum_xi * d->m_xi + o * d->block, count);
    bool add = accumulate || first > 0;
    for (int xi = 0; xi < d->wino_n; xi++) {
      const float *p_xi = p + xi * d->m_xi;
      float *s_xi = s + xi * d->out_c * d->in_c;
      if (d->wgrad_in_lanes) {
        wgrad_products_lanes(p_xi, d->block, v + xi * d->v_xi, d->block, d->out_c, d->in_c, rows, s_xi, add);
        continue;
      }
      if (!d->vt_floats) {
        cb_sgemm(false, true, d->out_c, d->in_c, count, 1.0f, p_xi, d->block, v + xi * d->v_xi,
                 d->block, add ? 1.0f : 0.0f, s_xi, d->in_c);
        continue;
      }
      transpose_v(v + xi * d->v_xi, d->block, d->in_c, rows, vt);
      for (int64_t t = 0; t < rows; t += run) {
        int64_t n = rows - t < run ? rows - t : run;
        if (d->lanes == 16)
          wgrad_products16(p_xi + t, d->block, vt + t * d->in_c, d->out_c, d->in_c, n, s_xi, add || t > 0);
        else
          wgrad_products8(p_xi + t, d->block, vt + t * d->in_c, d->out_c, d->in_c, n, s_xi, add || t > 0);
      }
    }
  }
}

/* The stack's outputs by Winograd: per block of tiles, the input
 * transform, 16 products by the micro-kernel, the output transform. */
void cb_winograd_stack(const cb_direct_conv *d, cb_winograd_source source, cb_planes out,
                       int64_t images, const float *bias, float *v, float *m) {
  static const int64_t no_shift[1] = {0};
  int64_t blocks = (d->out_c + OBLOCK - 1) / OBLOCK;
  int64_t u_per_xi = blocks * OBLOCK * d->in_c;
  for (int64_t first = 0; first < d->tiles; first += d->block) {
    int64_t count = d->tiles - first < d->block ? d->tiles - first : d->block;
    /* whole vectors of tiles (the transforms take 8 at a time; lanes is 8 or 16) */
    int64_t whole = (count + d->lanes - 1) / d->lanes * d->lanes;
    if (d->wino_m == 4) f4_inputs(d, source, images, v, first, whole);
    else winograd_inputs(d, source, images, v, first, whole);
    for (int xi = 0; xi < d->wino_n; xi++)
      for (int64_t t0 = 0; t0 < whole; t0 += d->tile) {
        int vectors = (int)((whole - t0 < d->tile ? whole - t0 : d->tile) / d->lanes);
        for (int64_t o0 = 0; o0 < d->out_c; o0 += OBLOCK)
          d->kernel(v + xi * d->v_xi + t0, d->block, d->in_c, no_shift, 1,
                    d->weight + xi * u_per_xi + (o0 / OBLOCK) * d->in_c * OBLOCK,
                    m + xi * d->m_xi + o0 * d->block + t0, d->block, vectors);
      }
    if (d->wino_m == 4 && d->lanes == 16 && out.es == 1) f4_outputs16(d, m, out, images, bias, first, count);
    else if (d->wino_m == 4) f4_outputs(d, m, out, images, bias, first, count);
    else winograd_outputs(d, m, out, images, bias, first, count);
  }
}

/* Winograd's output tile m for a layer: F(4x4, 3x3) from 64 channels in
 * and out, F(2x2, 3x3) below; CBNET_WINOGRAD_TILE=2|4 forces one (for
 * measuring). Why not F(4x4) below 64 channels too, where it is faster
 * (measured on Zen 4 at batch 128, alternating runs: 16 -> 16 channels at
 * 32x32 ~7 %, 32 -> 64 at 32x32 and 16x16 ~17 %): its transforms round about
 * 3x more (logits 1.2e-6 against 4e-7 of float64), enough to flip ReLUs
 * whose input is within rounding of zero, and bench/parity.py then finds the
 * seed CNN's gradients 1.8e-3 off PyTorch's float64 (PyTorch float32: 1.1e-6).
 * Other interpolation points do not close that gap: in a float32 model of
 * one 32-channel tile sum, {0, -1, 1, 1/2, -2} rounds 1.7x less than these
 * {0, +-1, +-2}, {0, +-1, +-1/2} no less. */
static int forced_tile; /* 0: by the rule; read once, as CBNET_CONV is */
static pthread_once_t forced_once = PTHREAD_ONCE_INIT;

static void read_forced_tile(void) {
  const char *forced = getenv("CBNET_WINOGRAD_TILE");
  if (forced && (!strcmp(forced, "2") || !strcmp(forced, "4"))) forced_tile = forced[0] - '0';
}

int cb_winograd_tile(int64_t in_c, int64_t out_c) {
  pthread_once(&forced_once, read_forced_tile);
  if (forced_tile) return forced_tile;
  return in_c >= 64 && out_c >= 64 ? 4 : 2;
}

void cb_winograd_weights(cb_direct_conv *d, const float *weight, bool transposed) {
  winograd_weights_job job = {d, weight, transposed};
  if (d->wino_m == 4) cb_parallel_for((d->out_c + OBLOCK - 1) / OBLOCK, 4, f4_weights, &job);
  else cb_parallel_for(d->out_c, 16, winograd_weights, &job);
}

void cb_winograd_weight_grad_sum(const cb_direct_conv *d, const float *parts, int workers,
                                 float *dw) {
  winograd_sum_job job = {d, parts, workers, dw};
  cb_parallel_for(d->out_c * d->in_c, 4096,
                  d->wino_m == 4 ? f4_weight_grad_sum : winograd_weight_grad_sum, &job);
}
