#include "data/image_ops.h"

#include <math.h>
#include <string.h>

#include "tensor/threadpool.h"

static uint8_t clamp_truncate(float v) {
  if (!(v > 0)) return 0; /* NaN too */
  if (v >= 255) return 255;
  return (uint8_t)v;
}

/* ---- geometric: every output pixel from its source (nearest; outside: 0) ---- */

/* The source of output pixel (x, y) is a x + b y + tx, d x + e y + ty. */
typedef struct {
  double a, b, tx, d, e, ty;
} inverse_map;

static void remap(uint8_t *dst, const uint8_t *src, int64_t c, int64_t h, int64_t w, inverse_map m) {
  int64_t plane = h * w;
  for (int64_t y = 0; y < h; y++)
    for (int64_t x = 0; x < w; x++) {
      /* nearest: half-way rounds to even, as grid_sample */
      double sx = nearbyint(m.a * (double)x + m.b * (double)y + m.tx);
      double sy = nearbyint(m.d * (double)x + m.e * (double)y + m.ty);
      bool inside = sx >= 0 && sx < (double)w && sy >= 0 && sy < (double)h;
      int64_t from = inside ? (int64_t)sy * w + (int64_t)sx : 0;
      for (int64_t k = 0; k < c; k++) dst[k * plane + y * w + x] = inside ? src[k * plane + from] : 0;
    }
}

static inverse_map rotation(int64_t h, int64_t w, double degrees) {
  /* counter-clockwise as seen (y points down): the source of offset (dx, dy)
   * from the centre is (dx cos - dy sin, dx sin + dy cos) */
  double t = degrees * 3.14159265358979323846 / 180, cs = cos(t), sn = sin(t);
  double cx = (double)(w - 1) / 2, cy = (double)(h - 1) / 2;
  return (inverse_map){cs, -sn, cx - cs * cx + sn * cy, sn, cs, cy - sn * cx - cs * cy};
}

/* ---- photometric ---- */

static float gray_of(const uint8_t *src, int64_t plane, int64_t i) {
  /* truncated to an integer, as torchvision's rgb_to_grayscale of a uint8 image */
  return (float)(uint8_t)(0.2989f * src[i] + 0.587f * src[plane + i] + 0.114f * src[2 * plane + i]);
}

/* The blends' weights: ratio and 1 - ratio, each rounded to float from double
 * as torch does with the Python floats it is given. */
typedef struct {
  float self, other;
} weights;

static weights blend_weights(double ratio) { return (weights){(float)ratio, (float)(1.0 - ratio)}; }

/* dst = clamp(ratio * src + (1 - ratio) * degenerate) for one channel */
static void blend_constant(uint8_t *dst, const uint8_t *src, int64_t n, weights r, float degenerate) {
  for (int64_t i = 0; i < n; i++) dst[i] = clamp_truncate(r.self * src[i] + r.other * degenerate);
}

static void color(uint8_t *dst, const uint8_t *src, int64_t c, int64_t plane, weights r) {
  if (c != 3) {
    memcpy(dst, src, (size_t)(c * plane));
    return;
  }
  for (int64_t i = 0; i < plane; i++) {
    float g = gray_of(src, plane, i);
    for (int64_t k = 0; k < 3; k++)
      dst[k * plane + i] = clamp_truncate(r.self * src[k * plane + i] + r.other * g);
  }
}

static void contrast(uint8_t *dst, const uint8_t *src, int64_t c, int64_t plane, weights r) {
  double sum = 0;
  for (int64_t i = 0; i < plane; i++) sum += c == 3 ? gray_of(src, plane, i) : src[i];
  float mean = (float)(sum / (double)plane);
  for (int64_t k = 0; k < c; k++) blend_constant(dst + k * plane, src + k * plane, plane, r, mean);
}

static void sharpness(uint8_t *dst, const uint8_t *src, int64_t c, int64_t h, int64_t w, weights r) {
  int64_t plane = h * w;
  if (h <= 2 || w <= 2) {
    memcpy(dst, src, (size_t)(c * plane));
    return;
  }
  /* the border blends with itself (its degenerate is the image), which float
   * rounding may still move by one, as it does in torchvision */
  for (int64_t i = 0; i < c * plane; i++) dst[i] = clamp_truncate(r.self * src[i] + r.other * src[i]);
  for (int64_t k = 0; k < c; k++) {
    const uint8_t *s = src + k * plane;
    for (int64_t y = 1; y < h - 1; y++)
      for (int64_t x = 1; x < w - 1; x++) {
        int sum = 4 * s[y * w + x];
        for (int64_t dy = -1; dy <= 1; dy++)
          for (int64_t dx = -1; dx <= 1; dx++) sum += s[(y + dy) * w + x + dx];
        float smooth = nearbyintf((float)sum / 13);
        dst[k * plane + y * w + x] = clamp_truncate(r.self * s[y * w + x] + r.other * smooth);
      }
  }
}

static void autocontrast(uint8_t *dst, const uint8_t *src, int64_t n) {
  uint8_t lo = 255, hi = 0;
  for (int64_t i = 0; i < n; i++) {
    if (src[i] < lo) lo = src[i];
    if (src[i] > hi) hi = src[i];
  }
  if (hi <= lo) {
    memcpy(dst, src, (size_t)n);
    return;
  }
  float scale = (1.0f / (float)(hi - lo)) * 255.0f; /* torch's 255 / t is reciprocal(t) * 255 */
  for (int64_t i = 0; i < n; i++) dst[i] = clamp_truncate((float)(src[i] - lo) * scale);
}

static void equalize(uint8_t *dst, const uint8_t *src, int64_t n) {
  int64_t hist[256] = {0}, last = 0;
  for (int64_t i = 0; i < n; i++) hist[src[i]]++;
  for (int v = 0; v < 256; v++)
    if (hist[v]) last = hist[v]; /* the count of the highest value present */
  int64_t step = (n - last) / 255;
  if (step == 0) {
    memcpy(dst, src, (size_t)n);
    return;
  }
  uint8_t lut[256];
  int64_t below = 0; /* images below value v */
  for (int v = 0; v < 256; v++) {
    int64_t level = (below + step / 2) / step;
    lut[v] = (uint8_t)(level > 255 ? 255 : level);
    below += hist[v];
  }
  for (int64_t i = 0; i < n; i++) dst[i] = lut[src[i]];
}

void cb_image_op_apply(uint8_t *dst, const uint8_t *src, int64_t c, int64_t h, int64_t w,
                       cb_image_op op, double m) {
  int64_t plane = h * w, n = c * plane;
  weights ratio = blend_weights(1 + m);
  switch (op) {
  /* about the image's top-left corner, half a pixel before the first pixel's centre */
  case CB_IMAGE_SHEAR_X: remap(dst, src, c, h, w, (inverse_map){1, m, m / 2, 0, 1, 0}); break;
  case CB_IMAGE_SHEAR_Y: remap(dst, src, c, h, w, (inverse_map){1, 0, 0, m, 1, m / 2}); break;
  case CB_IMAGE_TRANSLATE_X: remap(dst, src, c, h, w, (inverse_map){1, 0, -trunc(m), 0, 1, 0}); break;
  case CB_IMAGE_TRANSLATE_Y: remap(dst, src, c, h, w, (inverse_map){1, 0, 0, 0, 1, -trunc(m)}); break;
  case CB_IMAGE_ROTATE: remap(dst, src, c, h, w, rotation(h, w, m)); break;
  case CB_IMAGE_BRIGHTNESS: blend_constant(dst, src, n, ratio, 0); break;
  case CB_IMAGE_COLOR: color(dst, src, c, plane, ratio); break;
  case CB_IMAGE_CONTRAST: contrast(dst, src, c, plane, ratio); break;
  case CB_IMAGE_SHARPNESS: sharpness(dst, src, c, h, w, ratio); break;
  case CB_IMAGE_POSTERIZE: {
    int bits = m < 1 ? 1 : m > 8 ? 8 : (int)m;
    uint8_t mask = (uint8_t)(0xFF << (8 - bits));
    for (int64_t i = 0; i < n; i++) dst[i] = src[i] & mask;
    break;
  }
  case CB_IMAGE_SOLARIZE:
    for (int64_t i = 0; i < n; i++) dst[i] = (double)src[i] >= m ? (uint8_t)(255 - src[i]) : src[i];
    break;
  case CB_IMAGE_AUTOCONTRAST:
    for (int64_t k = 0; k < c; k++) autocontrast(dst + k * plane, src + k * plane, plane);
    break;
  case CB_IMAGE_EQUALIZE:
    for (int64_t k = 0; k < c; k++) equalize(dst + k * plane, src + k * plane, plane);
    break;
  case CB_IMAGE_IDENTITY:
  case CB_IMAGE_OP_COUNT:
  default: memcpy(dst, src, (size_t)n); break;
  }
}

const char *const cb_image_op_names[CB_IMAGE_OP_COUNT] = {
    "identity",   "shear_x", "shear_y",  "translate_x", "translate_y",  "rotate",  "brightness",
    "color",      "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize"};

int cb_image_op_from_name(const char *name) {
  for (int i = 0; i < CB_IMAGE_OP_COUNT; i++)
    if (strcmp(name, cb_image_op_names[i]) == 0) return i;
  return -1;
}

typedef struct {
  const uint8_t *src;
  uint8_t *dst;
  int64_t c, h, w;
  cb_image_op op;
  double m;
} image_op_job;

static void image_op_range(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const image_op_job *j = arg;
  int64_t size = j->c * j->h * j->w;
  for (int64_t i = begin; i < end; i++)
    cb_image_op_apply(j->dst + i * size, j->src + i * size, j->c, j->h, j->w, j->op, j->m);
}

cb_status cb_image_op_batch(cb_tensor **out, const cb_tensor *images, cb_image_op op, double m) {
  *out = NULL;
  if (images->dtype != CB_UINT8 || (images->ndim != 3 && images->ndim != 4) || !cb_tensor_is_contiguous(images))
    return cb_fail(CB_ETYPE, "image_op: images must be a contiguous uint8 C x H x W or N x C x H x W tensor");
  if ((int)op < 0 || op >= CB_IMAGE_OP_COUNT) return cb_fail(CB_EINVAL, "image_op: no operation %d", (int)op);
  if (!isfinite(m)) return cb_fail(CB_EINVAL, "image_op: the magnitude must be finite");
  int first = images->ndim - 3;
  int64_t c = images->shape[first], h = images->shape[first + 1], w = images->shape[first + 2];
  if (c != 1 && c != 3) return cb_fail(CB_ESHAPE, "image_op: images must have 1 or 3 channels, got %lld", (long long)c);
  cb_status st = cb_tensor_empty(out, images->ndim, images->shape, CB_UINT8);
  if (st != CB_OK) return st;
  image_op_job j = {cb_tensor_data(images), cb_tensor_data(*out), c, h, w, op, m};
  cb_parallel_for(first ? images->shape[0] : 1, 1, image_op_range, &j);
  return CB_OK;
}

double cb_trivial_augment_magnitude(cb_image_op op, int bin, bool negative) {
  double t = (double)bin / (CB_TRIVIAL_AUGMENT_BINS - 1), sign = negative ? -1 : 1;
  switch (op) {
  case CB_IMAGE_SHEAR_X:
  case CB_IMAGE_SHEAR_Y:
  case CB_IMAGE_BRIGHTNESS:
  case CB_IMAGE_COLOR:
  case CB_IMAGE_CONTRAST:
  case CB_IMAGE_SHARPNESS: return sign * 0.99 * t;
  case CB_IMAGE_TRANSLATE_X:
  case CB_IMAGE_TRANSLATE_Y: return sign * 32 * t;
  case CB_IMAGE_ROTATE: return sign * 135 * t;
  case CB_IMAGE_POSTERIZE: return 8 - nearbyint(6 * t); /* 8 bits down to 2 */
  case CB_IMAGE_SOLARIZE: return 255 * (1 - t);
  default: return 0;
  }
}
