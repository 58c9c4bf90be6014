/* 2-D pooling over each (n, c) plane: max (remembering where each maximum
 * came from), average, and adaptive average. Forward and backward share the
 * window arithmetic; backward sends each output's gradient to the input
 * elements its window read. Planes run in parallel; outputs keep the input's
 * N/C memory order. */
#include <math.h>
#include <string.h>

#include "autograd/autograd.h"
#include "nn/max_pool_2x2.h"
#include "nn/nn.h"
#include "tensor/threadpool.h"
#include "tensor/vectorize.h"

typedef enum { POOL_MAX, POOL_AVG, POOL_ADAPTIVE } pool_kind;

typedef struct {
  pool_kind kind;
  cb_pool_params p;
  int64_t n, c, h, w, oh, ow;
  bool max_2x2; /* max pooling by the 2x2 path: the backward pass finds the maxima again
                 * from the input (else their positions are saved) */
} pool_geometry;

/* Rows [h0, h1) x cols [w0, w1) of output (i, j)'s window, clipped to the
 * input, and the divisor of an average. */
static void window(const pool_geometry *g, int64_t i, int64_t j, int64_t *h0, int64_t *h1,
                   int64_t *w0, int64_t *w1, double *divisor) {
  if (g->kind == POOL_ADAPTIVE) {
    *h0 = i * g->h / g->oh;
    *h1 = ((i + 1) * g->h + g->oh - 1) / g->oh;
    *w0 = j * g->w / g->ow;
    *w1 = ((j + 1) * g->w + g->ow - 1) / g->ow;
    *divisor = (double)((*h1 - *h0) * (*w1 - *w0));
    return;
  }
  int64_t hs = i * g->p.stride[0] - g->p.padding[0], ws = j * g->p.stride[1] - g->p.padding[1];
  int64_t he = hs + g->p.kernel[0], we = ws + g->p.kernel[1];
  /* PyTorch's count_include_pad divisor: the window clipped to the padded input */
  int64_t ph = (he < g->h + g->p.padding[0] ? he : g->h + g->p.padding[0]) - hs;
  int64_t pw = (we < g->w + g->p.padding[1] ? we : g->w + g->p.padding[1]) - ws;
  *h0 = hs > 0 ? hs : 0;
  *w0 = ws > 0 ? ws : 0;
  *h1 = he < g->h ? he : g->h;
  *w1 = we < g->w ? we : g->w;
  *divisor = g->p.count_include_pad ? (double)(ph * pw) : (double)((*h1 - *h0) * (*w1 - *w0));
}

typedef struct {
  const pool_geometry *g;
  const float *x;
  float *y;
  int64_t *argmax;           /* max pooling: flat h * W + w of each maximum */
  const int64_t *xs, *ys;    /* strides (n, c, h, w) of x and y (and argmax) */
  /* backward */
  const float *gy;
  const int64_t *gs;
  float *gx;
  const int64_t *gxs;
} pool_job;

/* The common case: max over 2x2 windows with stride 2, no padding, rows
 * contiguous. Each window is read directly, with no bounds to check. */
static bool is_max_2x2(const pool_geometry *g, const int64_t *xs) {
  return g->kind == POOL_MAX && g->p.kernel[0] == 2 && g->p.kernel[1] == 2 &&
         g->p.stride[0] == 2 && g->p.stride[1] == 2 && g->p.padding[0] == 0 &&
         g->p.padding[1] == 0 && xs[3] == 1;
}

static void max_2x2_plane(const pool_job *j, const float *x, int64_t yoff) {
  const pool_geometry *g = j->g;
  for (int64_t i = 0; i < g->oh; i++) {
    const float *r0 = x + 2 * i * j->xs[2];
    float *y = j->y + yoff + i * j->ys[2];
    if (j->ys[3] == 1) {
      max_2x2_row(g->ow, r0, r0 + j->xs[2], y);
      continue;
    }
    for (int64_t k = 0; k < g->ow; k++) /* strided output: one at a time */
      max_2x2_row(1, r0 + 2 * k, r0 + 2 * k + j->xs[2], y + k * j->ys[3]);
  }
}

static void pool_forward_planes(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const pool_job *j = arg;
  const pool_geometry *g = j->g;
  if (g->max_2x2) {
    for (int64_t plane = begin; plane < end; plane++)
      max_2x2_plane(j, j->x + (plane / g->c) * j->xs[0] + (plane % g->c) * j->xs[1],
                    (plane / g->c) * j->ys[0] + (plane % g->c) * j->ys[1]);
    return;
  }
  for (int64_t plane = begin; plane < end; plane++) {
    int64_t n = plane / g->c, c = plane % g->c;
    const float *x = j->x + n * j->xs[0] + c * j->xs[1];
    int64_t yoff = n * j->ys[0] + c * j->ys[1];
    for (int64_t i = 0; i < g->oh; i++)
      for (int64_t k = 0; k < g->ow; k++) {
        int64_t h0, h1, w0, w1;
        double divisor;
        window(g, i, k, &h0, &h1, &w0, &w1, &divisor);
        int64_t at = yoff + i * j->ys[2] + k * j->ys[3];
        if (g->kind == POOL_MAX) {
          float best = -INFINITY;
          int64_t where = h0 * g->w + w0;
          for (int64_t a = h0; a < h1; a++)
            for (int64_t b = w0; b < w1; b++) {
              float v = x[a * j->xs[2] + b * j->xs[3]];
              if (v > best || isnan(v)) {
                best = v;
                where = a * g->w + b;
                if (isnan(v)) a = h1 - 1, b = w1 - 1; /* NaN wins, as in PyTorch */
              }
            }
          j->y[at] = best;
          j->argmax[at] = where;
        } else {
          double s = 0;
          for (int64_t a = h0; a < h1; a++)
            for (int64_t b = w0; b < w1; b++) s += x[a * j->xs[2] + b * j->xs[3]];
          j->y[at] = (float)(s / divisor);
        }
      }
  }
}

/* 2x2, stride 2: the windows do not overlap, so every input pixel gets
 * one output's gradient or zero, written once (no zero fill, no adds); a
 * last odd row or column, which no window reads, gets zeros. */
static void max_2x2_backward_plane(const pool_job *j, int64_t n, int64_t c) {
  const pool_geometry *g = j->g;
  const float *x = j->x + n * j->xs[0] + c * j->xs[1];
  const float *gy = j->gy + n * j->gs[0] + c * j->gs[1];
  float *gx = j->gx + n * j->gxs[0] + c * j->gxs[1];
  const int64_t rs = j->gxs[2];
  const int64_t es = j->gxs[3];
  float pair[2][2];
  for (int64_t i = 0; i < g->oh; i++) {
    const float *r0 = x + 2 * i * j->xs[2], *r1 = r0 + j->xs[2], *gy_row = gy + i * j->gs[2];
    float *g0 = gx + 2 * i * rs, *g1 = g0 + rs;
    if (j->gs[3] == 1 && es == 1) {
      max_2x2_backward_row(g->ow, r0, r1, gy_row, g0, g1);
    } else {
      for (int64_t k = 0; k < g->ow; k++) { /* strided gradients: one window at a time */
        max_2x2_backward_row(1, r0 + 2 * k, r1 + 2 * k, gy_row + k * j->gs[3], pair[0], pair[1]);
        for (int b = 0; b < 2; b++) g0[(2 * k + b) * es] = pair[0][b], g1[(2 * k + b) * es] = pair[1][b];
      }
    }
    if (g->w % 2) g0[(g->w - 1) * es] = g1[(g->w - 1) * es] = 0.0f;
  }
  if (g->h % 2)
    for (int64_t k = 0; k < g->w; k++) gx[(g->h - 1) * rs + k * es] = 0.0f;
}

static void pool_backward_planes(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const pool_job *j = arg;
  const pool_geometry *g = j->g;
  if (g->max_2x2) {
    for (int64_t plane = begin; plane < end; plane++)
      max_2x2_backward_plane(j, plane / g->c, plane % g->c);
    return;
  }
  for (int64_t plane = begin; plane < end; plane++) {
    int64_t n = plane / g->c, c = plane % g->c;
    float *gx = j->gx + n * j->gxs[0] + c * j->gxs[1];
    for (int64_t i = 0; i < g->oh; i++)
      for (int64_t k = 0; k < g->ow; k++) {
        float gy = j->gy[n * j->gs[0] + c * j->gs[1] + i * j->gs[2] + k * j->gs[3]];
        if (g->kind == POOL_MAX) {
          int64_t where = j->argmax[n * j->ys[0] + c * j->ys[1] + i * j->ys[2] + k * j->ys[3]];
          gx[(where / g->w) * j->gxs[2] + (where % g->w) * j->gxs[3]] += gy;
          continue;
        }
        int64_t h0, h1, w0, w1;
        double divisor;
        window(g, i, k, &h0, &h1, &w0, &w1, &divisor);
        float share = (float)(gy / divisor);
        for (int64_t a = h0; a < h1; a++)
          for (int64_t b = w0; b < w1; b++) gx[a * j->gxs[2] + b * j->gxs[3]] += share;
      }
  }
}

static cb_status pool_backward(cb_node *node, const cb_tensor *grad, cb_tensor **grad_in) {
  pool_geometry g;
  g = *CB_NODE_CTX(node, pool_geometry);
  const cb_tensor *argmax = NULL, *x = NULL;
  cb_status st = CB_OK;
  bool saved_argmax = g.kind == POOL_MAX && !g.max_2x2;
  if (saved_argmax && (st = cb_node_saved(node, 0, &argmax)) != CB_OK) return st;
  if ((st = cb_node_saved(node, saved_argmax ? 1 : 0, &x)) != CB_OK) return st;
  if ((st = cb_tensor_empty_same_layout(&grad_in[0], x, CB_FLOAT32)) != CB_OK) return st;
  /* the 2x2 path writes every element of the gradient */
  if (!g.max_2x2 && (st = cb_tensor_fill_(grad_in[0], 0)) != CB_OK) return st;
  pool_job j = {.g = &g, .x = cb_tensor_data(x), .xs = x->stride, .argmax = argmax ? cb_tensor_data(argmax) : NULL,
                .ys = argmax ? argmax->stride : NULL, .gy = cb_tensor_data(grad),
                .gs = grad->stride, .gx = cb_tensor_data(grad_in[0]), .gxs = grad_in[0]->stride};
  cb_parallel_for(g.n * g.c, 1, pool_backward_planes, &j);
  return CB_OK;
}

static const char *const pool_names[] = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"};

static cb_status pool(cb_tensor **out, const cb_tensor *x, pool_kind kind,
                      const cb_pool_params *params, int64_t out_h, int64_t out_w) {
  const char *name = pool_names[kind];
  char xs[128];
  if (x->dtype != CB_FLOAT32) return cb_fail(CB_ETYPE, "%s: expected a float32 input", name);
  if (x->ndim != 4)
    return cb_fail(CB_ESHAPE, "%s: expected an N x C x H x W input, got %s", name,
                   cb_shape_str(xs, 128, x->ndim, x->shape));
  pool_geometry g = {.kind = kind, .n = x->shape[0], .c = x->shape[1], .h = x->shape[2],
                     .w = x->shape[3]};
  cb_status st;
  if (kind == POOL_ADAPTIVE) {
    if (out_h < 1 || out_w < 1)
      return cb_fail(CB_EINVAL, "%s: output size must be positive", name);
    g.oh = out_h;
    g.ow = out_w;
  } else {
    g.p = *params;
    for (int i = 0; i < 2; i++)
      if (g.p.padding[i] < 0 || g.p.padding[i] > g.p.kernel[i] / 2)
        return cb_fail(CB_EINVAL, "%s: need 0 <= padding <= kernel/2", name);
    if ((st = cb_window_count(name, g.h, g.p.kernel[0], g.p.stride[0], g.p.padding[0], 1,
                              &g.oh)) != CB_OK ||
        (st = cb_window_count(name, g.w, g.p.kernel[1], g.p.stride[1], g.p.padding[1], 1,
                              &g.ow)) != CB_OK)
      return st;
    if (g.oh < 1 || g.ow < 1)
      return cb_fail(CB_ESHAPE, "%s: input %s is smaller than the %lldx%lld window", name,
                     cb_shape_str(xs, 128, x->ndim, x->shape), (long long)g.p.kernel[0],
                     (long long)g.p.kernel[1]);
  }
  int64_t numel;
  if ((st = cb_check_shape(name, 4, (int64_t[]){g.n, g.c, g.oh, g.ow}, &numel)) != CB_OK)
    return st;
  cb_tensor *argmax = NULL;
  g.max_2x2 = is_max_2x2(&g, x->stride);
  st = cb_tensor_empty_images_like(out, x, g.oh, g.ow, CB_FLOAT32);
  if (st == CB_OK && kind == POOL_MAX && !g.max_2x2) st = cb_tensor_empty_images_like(&argmax, x, g.oh, g.ow, CB_INT64);
  if (st != CB_OK) return cb_release_on_error(st, out);
  pool_job j = {.g = &g, .x = cb_tensor_data(x), .y = cb_tensor_data(*out),
                .argmax = argmax ? cb_tensor_data(argmax) : NULL, .xs = x->stride,
                .ys = (*out)->stride};
  cb_parallel_for(g.n * g.c, 1, pool_forward_planes, &j);
  const cb_tensor *save[2] = {argmax, x};
  cb_node *node;
  static const char *const backward_names[] = {"MaxPool2dBackward", "AvgPool2dBackward",
                                               "AdaptiveAvgPool2dBackward"};
  st = cb_record(*out, backward_names[kind], pool_backward, 1, &x, argmax ? 2 : 1,
                 argmax ? save : save + 1, &node);
  if (node) *CB_NODE_CTX(node, pool_geometry) = g;
  cb_tensor_release(argmax);
  return cb_release_on_error(st, out);
}

cb_status cb_max_pool2d(cb_tensor **out, const cb_tensor *x, const cb_pool_params *params) {
  return pool(out, x, POOL_MAX, params, 0, 0);
}

cb_status cb_avg_pool2d(cb_tensor **out, const cb_tensor *x, const cb_pool_params *params) {
  return pool(out, x, POOL_AVG, params, 0, 0);
}

cb_status cb_adaptive_avg_pool2d(cb_tensor **out, const cb_tensor *x, int64_t out_h,
                                 int64_t out_w) {
  return pool(out, x, POOL_ADAPTIVE, NULL, out_h, out_w);
}
