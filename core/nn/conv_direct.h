/* Direct convolution: the fast path of conv2d for stride-1, undilated,
 * ungrouped convolutions (every 3x3 layer of the CIFAR ResNets but the two
 * that downsample), forward, input gradient and weight gradient.
 *
 * im2col + sgemm copies each input value kh*kw times, and BLAS then packs that
 * copy again; for 16- to 64-channel layers those copies cost as much as the
 * multiplications. The direct path copies each image once, into a zero-padded
 * buffer with rows of WP = W + 2*pad floats. Then, numbering output positions
 * p = oh*WP + ow (over the padded width: the last 2*pad of each row are
 * discarded), a tap (ki, kj) of the kernel reads the input at
 * p + ki*WP + kj: every tap is one contiguous shifted run of the buffer, and
 *   y[o][p] = sum over c, taps t of w[o][c][t] * xpad[c][p + offset[t]]
 * is a sum of vector FMAs over runs of positions. A micro-kernel keeps a tile
 * of 4 output channels x (vector width x NV) positions in registers for the
 * whole sum over channels and taps.
 *
 * The input gradient of a stride-1 convolution is itself a stride-1
 * convolution of dY (padded by k - 1 - pad) with the kernel flipped and its
 * two channel dims swapped, so the same code computes it.
 *
 * Stride 2 (3x3 kernels, padding 1, even sizes: ResNets' downsampling
 * layers), forward and weight gradient: each channel's plane of the stack
 * holds the images' four phases (even / odd rows x even / odd columns), each
 * a padded stack of half-size images, one after the other. Output (i, j)
 * then reads input (2i + ki - 1, 2j + kj - 1), which is pixel
 * (i + di, j + dj) of the phase that tap (ki, kj) falls in (di, dj in
 * {-1, 0}): again one shifted run per tap, the same micro-kernels over the
 * half-size grid, with each tap's offset pointing into its phase. The input
 * gradient is the other way round: dY is stacked as it is, and dx's phase
 * (p, q) is a stride-1 convolution of it with the taps of that phase alone
 * (1, 2, 2 and 4 of the 9), pixel (i, j) reading dY's (i - di, j - dj); the
 * four phases' outputs are written into every other row and column of dx.
 *
 * Paths, chosen at run time from CPUID: AVX-512 (16-float vectors), AVX2 with
 * FMA (8-float vectors), or im2col + sgemm (portable; also every convolution
 * the direct path does not take). CBNET_CONV=im2col|avx2|avx512|avx2-winograd|
 * avx512-winograd forces one,
 * as does cb_conv_set_path. */
#ifndef CB_CONV_DIRECT_H
#define CB_CONV_DIRECT_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/error.h"

/* The *_WINOGRAD paths compute forward, input gradient and weight gradient
 * of 3x3 kernels with 16 channels or more by Winograd's F(2x2, 3x3) (2.25x
 * fewer multiplications), or F(4x4, 3x3) (4x fewer) from 64 channels in and
 * out, with the same micro-kernels, everything else as their plain path.
 * CBNET_WINOGRAD_TILE=2|4 forces one tile size for every Winograd layer. */
typedef enum {
  CB_CONV_IM2COL,
  CB_CONV_AVX2,
  CB_CONV_AVX512,
  CB_CONV_AVX2_WINOGRAD,
  CB_CONV_AVX512_WINOGRAD,
  CB_CONV_NUM_PATHS
} cb_conv_path;

/* The path in use: CBNET_CONV if it names one this CPU runs, else the best. */
cb_conv_path cb_conv_get_path(void);
/* Forces a path; CB_EINVAL if this CPU cannot run it. */
cb_status cb_conv_set_path(cb_conv_path path);
bool cb_conv_path_supported(cb_conv_path path);
const char *cb_conv_path_name(cb_conv_path path);
/* The path named (im2col, avx2, avx512, avx2-winograd, avx512-winograd), or
 * CB_CONV_NUM_PATHS. */
cb_conv_path cb_conv_path_from_name(const char *name);

/* Images' planes: element (image i, c, h, w) at base[i*ns + c*cs + h*rs + w*es]. */
typedef struct {
  float *base;
  int64_t ns, cs, rs, es;
} cb_planes;

/* The forward convolution's shape: n images of c x h x w, o x c x kh x kw
 * weights, padding (less than the kernel size), oh x ow outputs, stride 1
 * or 2 (both dims; 2 only as above). */
typedef struct {
  int64_t n, c, h, w, o, kh, kw, pad_h, pad_w, oh, ow, stride;
} cb_direct_shape;
#define CB_DIRECT_MAX_TAPS 49 /* kh * kw: up to 7x7 */

typedef enum {
  CB_DIRECT_FORWARD,     /* y = conv(x) */
  CB_DIRECT_INPUT_GRAD,  /* dx = conv_transposed(dY) */
  CB_DIRECT_WEIGHT_GRAD  /* dW = sum over images of dY (x) x */
} cb_direct_mode;

/* One convolution's plan, for every image of a batch: the packed weights
 * (weight: the contiguous O x C x kh x kw weight; unused for WEIGHT_GRAD) and
 * a scratch buffer per worker. Images are processed in stacks of
 * cb_direct_conv_stack() images: one padded buffer holds them one above the
 * other, so small images fill the micro-kernel's tiles. NULL when out of
 * memory. */
typedef struct cb_direct_conv cb_direct_conv;
cb_direct_conv *cb_direct_conv_new(const cb_direct_shape *shape, const float *weight,
                                   cb_direct_mode mode, int workers);
void cb_direct_conv_free(cb_direct_conv *conv);
int64_t cb_direct_conv_stack(const cb_direct_conv *conv);

/* FORWARD, WEIGHT_GRAD: the input normalised as the stacks are filled, the convolution
 * taking max(0, x * scale[c] + shift[c]) for input channel c, with scale =
 * affine[c] and shift = affine[C + c] (kept by the caller; NULL: x as it is):
 * batch norm + ReLU before a convolution without their output written. */
void cb_direct_conv_normalize_input(cb_direct_conv *conv, const float *affine);
/* INPUT_GRAD: cb_direct_conv_images adds dx into `out` (the input's
 * gradient so far, autograd.h's cb_node_grad_so_far) instead of writing it:
 * out + dx, the same sum as the engine's separate pass would make. */
void cb_direct_conv_add_to_output(cb_direct_conv *conv);
/* out = max(0, in * scale[c] + shift[c]) for n images of c x h x w (affine
 * as above; out's rows dense, es 1), by the same operations as the stacks'
 * filling: the values the convolution took, bit for bit, for its backward. */
void cb_normalize_relu_images(cb_planes in, cb_planes out, int64_t n, int64_t c, int64_t h, int64_t w,
                              const float *affine);
/* dst[i] = max(0, src[i] * scale + shift) for i < n, the same operations: a
 * channel's run, for the mask of batch norm + ReLU's backward (norm.c). */
void cb_normalize_relu_run(const float *src, int64_t n, float scale, float shift, float *dst);

/* FORWARD / INPUT_GRAD: out = conv(in) (+ bias[o]) for count <= stack images,
 * in the worker's scratch; workers may run stacks in parallel. */
void cb_direct_conv_images(const cb_direct_conv *conv, int worker, cb_planes in, cb_planes out,
                           int64_t count, const float *bias);
/* WEIGHT_GRAD: the worker's part of dW and, when bias_grad, of the bias
 * gradient (dY summed per channel, as the pass reads dY anyway), over count
 * <= stack images (set on the worker's first stack, added on later ones);
 * then the parts summed into dw (O x C x kh x kw) and db (O; NULL: not
 * wanted, as bias_grad false) by cb_direct_conv_weight_grad_sum. */
void cb_direct_conv_weight_grad(const cb_direct_conv *conv, int worker, cb_planes x,
                                cb_planes dy, int64_t count, bool accumulate, bool bias_grad);
void cb_direct_conv_weight_grad_sum(const cb_direct_conv *conv, int workers, float *dw, float *db);

#endif
