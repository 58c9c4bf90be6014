/* The direct convolution's plan, shared by its two files: conv_direct.c
 * (paths, plans, the micro-kernels, the direct sum) and winograd.c (the
 * Winograd transforms, which feed the same micro-kernels). Internal to
 * core/nn: the public interface is conv_direct.h. */
#ifndef CB_CONV_PLAN_H
#define CB_CONV_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "nn/conv_direct.h"
#include "tensor/tensor.h"
#include "tensor/vectorize.h"

#define OBLOCK 4 /* output channels per micro-kernel tile */
#define CB_WINOGRAD_MAX_BLOCK 256 /* the most tiles a Winograd block takes (cb_direct_conv.block) */
#define CB_WINOGRAD_F4_WGRAD_BLOCK 64 /* F(4x4)'s weight gradient: V and P stay in L2 */


/* out[o][v] = sum over c < channels, t < ntaps of w[(c*ntaps + t)*OBLOCK + o] *
 * in[c*plane + taps[t] + v], for o < OBLOCK and v < vectors * lanes (at most
 * the plan's tile). */
typedef void (*tile_fn)(const float *in, int64_t plane, int64_t channels, const int64_t *taps,
                        int ntaps, const float *w, float *out, int64_t ld, int vectors);
/* sums[o*nk + k] = sum over the runs' positions p of dy[o][p] * x[offs[k] + p],
 * o < OBLOCK, k < nk <= the plan's kblock (the direct weight gradient:
 * conv_direct.c, where wgrad_runs is). */
typedef struct wgrad_runs wgrad_runs;
typedef void (*wgrad_fn)(const wgrad_runs *runs, const float *x, const int64_t *offs, float *sums,
                         int nk);

struct cb_direct_conv {
  int64_t in_c, in_h, in_w, out_c, out_h, out_w;
  int64_t pad_h, pad_w, hp, wp;    /* stacked images: hp rows of wp floats each */
  int64_t images;                  /* images stacked in one buffer */
  int64_t grid;                    /* positions of the stack: images * hp * wp */
  int64_t plane;                   /* one channel of the stack: its phases' grids */
  int64_t phase_plane;             /* one phase: the grid and its margins (= plane at stride 1) */
  int phases;                      /* 1, or 4 at stride 2 (conv_direct.h) */
  int out_phases;                  /* 1, or 4 for stride 2's input gradient: dx's phases, each
                                    * from taps[phase_taps[f] .. phase_taps[f + 1]) of dY */
  int phase_taps[5];
  int64_t positions;               /* the stack's output rows * wp, whole tiles */
  int64_t out_ld;                  /* row length of the stack's output */
  int64_t xpad_floats, out_floats, scratch_floats; /* per worker */
  int64_t dy_floats;               /* dW's dY stack per worker (none for Winograd) */
  int64_t dy_ld;                   /* its rows: the grid, whole vectors */
  int64_t dw_floats;               /* dW's parts per worker: by tap or Winograd position */
  int ntaps, tile;                 /* tile: positions of the micro-kernel's widest tile */
  int lanes;                       /* positions per vector (16 or 8): tiles come in multiples */
  bool weight_grad;
  bool winograd;                   /* 3x3 by Winograd: winograd.c */
  int wino_m, wino_n;              /* F(m x m, 3x3): 2 or 4; (m + 2)^2 products per tile */
  int64_t tiles_r, tiles_c, tiles; /* m x m output tiles of the stack: rows, columns, all */
  int64_t block;                   /* tiles transformed at once (a multiple of tile) */
  int64_t v_xi, m_xi;              /* floats from one of the wino_n positions xi to the next */
  int64_t v_floats, m_floats;      /* per worker: transformed inputs, products */
  bool wgrad_in_lanes;             /* dW on the AVX-512 path up to 16 channels in: the
                                    * products take V_xi as it is, tiles in the lanes */
  int64_t vt_floats;               /* dW otherwise: of v_floats, a transposed V_xi for the
                                    * products (winograd.c), or 0: the products by sgemm */
  bool inputs_in_place;            /* Winograd on the AVX-512 path (F(2x2): with every
                                    * group of tiles 16 wide): the input transform reads
                                    * the images where they are (no padded stack) */
  bool out_add;                    /* INPUT_GRAD: the outputs added into `out` (the
                                    * input's gradient so far), not written */
  const float *in_affine;          /* forward, dW: the input normalised on the way in
                                    * (cb_direct_conv_normalize_input), or NULL */
  tile_fn kernel;
  wgrad_fn wgrad;                  /* dW's tiles of OBLOCK x kblock (NULL: by sgemm) */
  int kblock;
  int64_t *taps;                   /* ki*wp + kj (stride 2: + its phase's plane, shifted) */
  int64_t *offs;                   /* dW: per (input channel c, tap t), c*plane + taps[t] */
  float *weight;                   /* [out_c / OBLOCK][in_c][taps][OBLOCK] (stride 2's dx:
                                    * [out_c / OBLOCK][phase][in_c][its taps][OBLOCK]);
                                    * Winograd: [wino_n][out_c / OBLOCK][in_c][OBLOCK] */
  cb_tensor *scratch_storage;      /* owns scratch: a tensor's storage, whose large
                                    * blocks are kept for reuse (tensor.c) */
  float *scratch;                  /* per worker: padded stack, the stack's output (out_c x
                                    * positions; none for dW), Winograd's blocks V and M
                                    * (dW: P), then for dW the dY stack, dW parts
                                    * and bias parts (out_c) */
};

/* ---- winograd.c ---- */

/* The output tile m (2 or 4) for a layer of in_c -> out_c channels. */
int cb_winograd_tile(int64_t in_c, int64_t out_c);
/* d->weight = the kernels' transforms (transposed: the input gradient's). */
void cb_winograd_weights(cb_direct_conv *d, const float *weight, bool transposed);
/* What the input transform reads: the padded stack xpad, or where xpad is
 * NULL (the plan's inputs_in_place) the stack's images in `in` themselves. */
typedef struct {
  const float *xpad;
  cb_planes in;
} cb_winograd_source;
/* The outputs of the stack's images (source), written into `out` (+ bias)
 * for its first `images` images; v and m: the worker's transform blocks. */
void cb_winograd_stack(const cb_direct_conv *d, cb_winograd_source source, cb_planes out,
                       int64_t images, const float *bias, float *v, float *m);
/* s (wino_n x out_c x in_c) = (accumulate ? s : 0) + the stack's weight
 * gradient in the transformed domain; bias (out_c; NULL: not wanted)
 * likewise + the sums of dY's channels. */
void cb_winograd_weight_grad(const cb_direct_conv *d, cb_winograd_source source, cb_planes dy,
                             int64_t images, float *v, float *p, float *s, float *bias,
                             bool accumulate);
/* dw = the workers' parts summed and transformed back to 3x3 kernels. */
void cb_winograd_weight_grad_sum(const cb_direct_conv *d, const float *parts, int workers,
                                 float *dw);

#endif
