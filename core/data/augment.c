#include "data/augment.h"

#include "data/image_ops.h"

#include <stdlib.h>
#include <string.h>

#include "tensor/threadpool.h"

typedef struct {
  int64_t dy, dx, cy, cx;
  bool flip;
  cb_image_op op; /* TrivialAugment's, at magnitude */
  double magnitude;
} draw;

typedef struct {
  const uint8_t *images;
  const int64_t *index;
  const draw *draws;
  uint8_t *scratch; /* TrivialAugment's output, an image per batch slot */
  float *out;
  int64_t c, h, w;
  const cb_augment_options *o;
  float gain[CB_AUGMENT_MAX_CHANNELS], offset[CB_AUGMENT_MAX_CHANNELS]; /* v * gain + offset */
} augment_job;

static void augment_range(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const augment_job *j = arg;
  int64_t h = j->h, w = j->w, pad = j->o->crop_padding, plane = h * w;
  for (int64_t s = begin; s < end; s++) {
    const draw *d = &j->draws[s];
    const uint8_t *src = j->images + j->index[s] * j->c * plane;
    if (j->scratch) {
      uint8_t *changed = j->scratch + s * j->c * plane;
      cb_image_op_apply(changed, src, j->c, h, w, d->op, d->magnitude);
      src = changed;
    }
    float *dst = j->out + s * j->c * plane;
    int64_t oy = d->dy - pad, ox = d->dx - pad; /* source offset of the crop */
    for (int64_t c = 0; c < j->c; c++) {
      float gain = j->gain[c], zero = j->offset[c]; /* zero: a padding pixel */
      for (int64_t y = 0; y < h; y++) {
        float *row = dst + c * plane + y * w;
        int64_t sy = y + oy;
        if (sy < 0 || sy >= h) {
          for (int64_t x = 0; x < w; x++) row[x] = zero;
          continue;
        }
        const uint8_t *line = src + c * plane + sy * w;
        for (int64_t x = 0; x < w; x++) {
          int64_t sx = (d->flip ? w - 1 - x : x) + ox;
          row[x] = (sx >= 0 && sx < w) ? line[sx] * gain + zero : zero;
        }
      }
    }
    if (j->o->cutout > 0) { /* a square centred at (cy, cx), clipped to the image */
      int64_t half = j->o->cutout / 2;
      int64_t y0 = d->cy - half < 0 ? 0 : d->cy - half, y1 = d->cy - half + j->o->cutout;
      int64_t x0 = d->cx - half < 0 ? 0 : d->cx - half, x1 = d->cx - half + j->o->cutout;
      if (y1 > h) y1 = h;
      if (x1 > w) x1 = w;
      for (int64_t c = 0; c < j->c; c++)
        for (int64_t y = y0; y < y1; y++)
          memset(dst + c * plane + y * w + x0, 0, sizeof(float) * (size_t)(x1 > x0 ? x1 - x0 : 0));
    }
  }
}

cb_status cb_augment_batch(cb_tensor **out, const cb_tensor *images, const cb_tensor *indices,
                           const cb_augment_options *o, cb_generator *g) {
  *out = NULL;
  if (images->dtype != CB_UINT8 || images->ndim != 4 || !cb_tensor_is_contiguous(images))
    return cb_fail(CB_ETYPE, "augment: images must be a contiguous uint8 N x C x H x W tensor");
  if (indices->dtype != CB_INT64 || indices->ndim != 1)
    return cb_fail(CB_ETYPE, "augment: indices must be a 1-d int64 tensor");
  int64_t c = images->shape[1], h = images->shape[2], w = images->shape[3];
  if (c > CB_AUGMENT_MAX_CHANNELS)
    return cb_fail(CB_ESHAPE, "augment: at most %d channels", CB_AUGMENT_MAX_CHANNELS);
  if (o->trivial_augment && c != 1 && c != 3)
    return cb_fail(CB_ESHAPE, "augment: TrivialAugment takes 1- or 3-channel images, got %lld channels", (long long)c);
  if (o->crop_padding < 0 || o->cutout < 0 || !(o->scale > 0))
    return cb_fail(CB_EINVAL, "augment: padding and cutout must be >= 0 and scale > 0");
  for (int64_t i = 0; o->normalize && i < c; i++)
    if (!(o->std[i] > 0)) return cb_fail(CB_EINVAL, "augment: std of channel %lld must be > 0", (long long)i + 1);
  cb_tensor *idx;
  cb_status st = cb_tensor_contiguous(&idx, indices);
  if (st != CB_OK) return st;
  int64_t n = idx->shape[0];
  const int64_t *ip = cb_tensor_data(idx);
  for (int64_t i = 0; i < n; i++)
    if (ip[i] < 0 || ip[i] >= images->shape[0]) {
      cb_tensor_release(idx);
      return cb_fail(CB_ERANGE, "augment: index %lld out of range for %lld images (0-based)",
                     (long long)ip[i], (long long)images->shape[0]);
    }
  draw *draws = calloc((size_t)(n > 0 ? n : 1), sizeof *draws);
  uint8_t *scratch = o->trivial_augment ? malloc((size_t)(n > 0 ? n * c * h * w : 1)) : NULL;
  if (!draws || (o->trivial_augment && !scratch)) {
    free(draws);
    free(scratch);
    cb_tensor_release(idx);
    return cb_fail(CB_ENOMEM, "augment: out of memory");
  }
  for (int64_t i = 0; i < n; i++) { /* serially, in a fixed order: reproducible */
    draw *d = &draws[i];
    d->dy = o->crop_padding ? (int64_t)cb_random_below(g, (uint64_t)(2 * o->crop_padding + 1)) : o->crop_padding;
    d->dx = o->crop_padding ? (int64_t)cb_random_below(g, (uint64_t)(2 * o->crop_padding + 1)) : o->crop_padding;
    d->flip = o->flip && cb_random_below(g, 2) == 1;
    if (o->cutout) {
      d->cy = (int64_t)cb_random_below(g, (uint64_t)h);
      d->cx = (int64_t)cb_random_below(g, (uint64_t)w);
    }
    if (o->trivial_augment) {
      d->op = (cb_image_op)cb_random_below(g, CB_IMAGE_OP_COUNT);
      int bin = (int)cb_random_below(g, CB_TRIVIAL_AUGMENT_BINS);
      d->magnitude = cb_trivial_augment_magnitude(d->op, bin, cb_random_below(g, 2) == 1);
    }
  }
  int64_t shape[4] = {n, c, h, w};
  if ((st = cb_tensor_empty(out, 4, shape, CB_FLOAT32)) == CB_OK) {
    augment_job j = {cb_tensor_data(images), ip, draws, scratch, cb_tensor_data(*out), c, h, w, o, {0}, {0}};
    for (int64_t i = 0; i < c; i++) {
      double mean = o->normalize ? o->mean[i] : 0, std = o->normalize ? o->std[i] : 1;
      j.gain[i] = (float)(o->scale / std);
      j.offset[i] = (float)(-mean / std);
    }
    cb_parallel_for(n, 16, augment_range, &j);
  }
  free(draws);
  free(scratch);
  cb_tensor_release(idx);
  return st;
}
