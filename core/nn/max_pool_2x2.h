/* 2x2 max pooling with stride 2, by rows, shared by pool.c (max_pool2d)
 * and norm.c (batch norm + ReLU + 2x2 max pooling in one pass): one output
 * row from two input rows, and the input gradient of two rows from one row
 * of output gradients. Internal to core/nn. */
#ifndef CB_MAX_POOL_2X2_H
#define CB_MAX_POOL_2X2_H

#include <stdint.h>
#include <string.h>

#include "tensor/vectorize.h"

/* 2x2 maxima, 4 windows at a time in vectors (GCC leaves a scalar loop
 * unvectorised, its loads and stores interleaving two columns, and branches
 * on every comparison), the last 1-3 windows of a row through zero-padded
 * copies. Memory-bound: wider vectors gain nothing. The first of equal
 * values wins and a NaN wins its window, as in PyTorch; pool.c's backward
 * finds the maxima again from the saved input, so no argmax is stored
 * (norm.c's fused pooling keeps a byte per window instead). */
static inline ivec4 wins4(vec4 challenger, vec4 holder) {
  return (holder == holder) & ~(challenger <= holder);
}

static inline vec4 select4(ivec4 mask, vec4 yes, vec4 no) {
  return (vec4)((mask & (ivec4)yes) | (~mask & (ivec4)no));
}

/* The 4 windows of 8 columns of rows r0 and r1 as 4 vectors of their
 * top-left, top-right, bottom-left and bottom-right elements. */
static inline void windows_2x2_4(const float *r0, const float *r1, vec4 corner[4]) {
  vec4 x0 = *(const vec4 *)r0, x1 = *(const vec4 *)(r0 + 4);
  vec4 x2 = *(const vec4 *)r1, x3 = *(const vec4 *)(r1 + 4);
  corner[0] = __builtin_shufflevector(x0, x1, 0, 2, 4, 6);
  corner[1] = __builtin_shufflevector(x0, x1, 1, 3, 5, 7);
  corner[2] = __builtin_shufflevector(x2, x3, 0, 2, 4, 6);
  corner[3] = __builtin_shufflevector(x2, x3, 1, 3, 5, 7);
}

/* The 4 windows of 8 columns of rows r0 and r1: their maxima and, per
 * window, whether it is in the right column (*right) and bottom row (*bottom). */
static inline vec4 max_2x2_4(const float *r0, const float *r1, ivec4 *right, ivec4 *bottom) {
  vec4 w[4];
  windows_2x2_4(r0, r1, w);
  vec4 a = w[0], b = w[1], c = w[2], d = w[3];
  ivec4 pick_b = wins4(b, a), pick_d = wins4(d, c);
  vec4 top = select4(pick_b, b, a), bot = select4(pick_d, d, c);
  *bottom = wins4(bot, top);
  *right = (ivec4)select4(*bottom, (vec4)pick_d, (vec4)pick_b);
  return select4(*bottom, bot, top);
}

/* Of the 4 windows of 8 columns of rows r0 and r1, the elements at the
 * places max_2x2_4 chose (right column where *right, bottom row where
 * *bottom): another tensor's values at the maxima. */
static inline vec4 pick_2x2_4(const float *r0, const float *r1, ivec4 right, ivec4 bottom) {
  vec4 w[4];
  windows_2x2_4(r0, r1, w);
  return select4(bottom, select4(right, w[3], w[2]), select4(right, w[1], w[0]));
}

/* One output row of 2x2 maxima from input rows r0 and r1. */
static inline void max_2x2_row(int64_t ow, const float *r0, const float *r1, float *y) {
  ivec4 right, bottom;
  int64_t k = 0;
  for (; k + 4 <= ow; k += 4) *(vec4 *)(y + k) = max_2x2_4(r0 + 2 * k, r1 + 2 * k, &right, &bottom);
  if (k < ow) {
    float p0[8] = {0}, p1[8] = {0}, out[4] = {0};
    memcpy(p0, r0 + 2 * k, sizeof(float) * 2 * (size_t)(ow - k));
    memcpy(p1, r1 + 2 * k, sizeof(float) * 2 * (size_t)(ow - k));
    *(vec4 *)out = max_2x2_4(p0, p1, &right, &bottom);
    memcpy(y + k, out, sizeof(float) * (size_t)(ow - k));
  }
}

/* The input gradient of one row of 2x2 maxima (rows g0 and g1 of it): each
 * output's gradient to its window's maximum, zeros to the other three. */
static inline void max_2x2_backward_4(const float *r0, const float *r1, const float *gy, float *g0,
                               float *g1) {
  ivec4 right, bottom;
  (void)max_2x2_4(r0, r1, &right, &bottom);
  vec4 g = *(const vec4 *)gy, zero = {0};
  vec4 top = select4(bottom, zero, g), bot = select4(bottom, g, zero);
  vec4 tl = select4(right, zero, top), tr = select4(right, top, zero);
  vec4 bl = select4(right, zero, bot), br = select4(right, bot, zero);
  *(vec4 *)g0 = __builtin_shufflevector(tl, tr, 0, 4, 1, 5);
  *(vec4 *)(g0 + 4) = __builtin_shufflevector(tl, tr, 2, 6, 3, 7);
  *(vec4 *)g1 = __builtin_shufflevector(bl, br, 0, 4, 1, 5);
  *(vec4 *)(g1 + 4) = __builtin_shufflevector(bl, br, 2, 6, 3, 7);
}

static inline void max_2x2_backward_row(int64_t ow, const float *r0, const float *r1, const float *gy,
                                 float *g0, float *g1) {
  int64_t k = 0;
  for (; k + 4 <= ow; k += 4) max_2x2_backward_4(r0 + 2 * k, r1 + 2 * k, gy + k, g0 + 2 * k, g1 + 2 * k);
  if (k < ow) {
    size_t n = (size_t)(ow - k);
    float p0[8] = {0}, p1[8] = {0}, pg[4] = {0}, o0[8], o1[8];
    memcpy(p0, r0 + 2 * k, sizeof(float) * 2 * n);
    memcpy(p1, r1 + 2 * k, sizeof(float) * 2 * n);
    memcpy(pg, gy + k, sizeof(float) * n);
    max_2x2_backward_4(p0, p1, pg, o0, o1);
    memcpy(g0 + 2 * k, o0, sizeof(float) * 2 * n);
    memcpy(g1 + 2 * k, o1, sizeof(float) * 2 * n);
  }
}

#endif
