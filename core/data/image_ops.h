/* Photometric and geometric operations on one uint8 image (C planes of H x W,
 * C = 1 or 3), the vocabulary of AutoAugment-style policies, and
 * TrivialAugment (Mueller & Hutter, ICCV 2021): each image gets one
 * operation drawn uniformly, at a magnitude drawn uniformly from 31 bins,
 * negated with probability 1/2 where the operation has a sign.
 *
 * The operations compute what torchvision's tensor implementations compute
 * (the calls TrivialAugmentWide makes), pixel for pixel
 * (bench/parity_augment.py), so that a recipe carries over:
 *   - geometric ones (shear, translate, rotate) map every output pixel back
 *     to its source pixel, nearest neighbour with half-way rounding to even
 *     (grid_sample's), 0 outside the image. Shear is about the image's
 *     top-left corner (half a pixel before the first pixel's centre),
 *     rotation about its centre, counter-clockwise for a positive angle.
 *     Where a source lies exactly half-way, torch's float32 grid may round
 *     the other way;
 *   - blends (brightness, color = saturation, contrast, sharpness) compute
 *     r * image + (1 - r) * degenerate in float with r and 1 - r rounded
 *     from double and no fused multiply-add, clamp to 0..255 and truncate,
 *     degenerate being black, the grayscale image (0.2989 R + 0.587 G +
 *     0.114 B, truncated), the grayscale mean, or the 3x3 smoothing
 *     [1 1 1; 1 5 1; 1 1 1] / 13 (rounded; the border is its own degenerate);
 *   - posterize keeps the top `bits` bits, solarize inverts values at or
 *     above the threshold, autocontrast stretches each channel's range to
 *     0..255, equalize flattens each channel's histogram (PIL's algorithm).
 * Operations that need colour (color) leave one-channel images unchanged. */
#ifndef CB_IMAGE_OPS_H
#define CB_IMAGE_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/tensor.h"

typedef enum {
  CB_IMAGE_IDENTITY,
  CB_IMAGE_SHEAR_X,     /* magnitude: the shear factor, x' = x + m y */
  CB_IMAGE_SHEAR_Y,
  CB_IMAGE_TRANSLATE_X, /* magnitude: pixels (truncated to an integer) */
  CB_IMAGE_TRANSLATE_Y,
  CB_IMAGE_ROTATE,      /* magnitude: degrees */
  CB_IMAGE_BRIGHTNESS,  /* the blends: magnitude = ratio - 1 */
  CB_IMAGE_COLOR,
  CB_IMAGE_CONTRAST,
  CB_IMAGE_SHARPNESS,
  CB_IMAGE_POSTERIZE,   /* magnitude: bits kept, 1..8 */
  CB_IMAGE_SOLARIZE,    /* magnitude: threshold, 0..256 */
  CB_IMAGE_AUTOCONTRAST,
  CB_IMAGE_EQUALIZE,
  CB_IMAGE_OP_COUNT
} cb_image_op;

/* Writes op(src) at magnitude m into dst; both c x h x w, not overlapping. */
void cb_image_op_apply(uint8_t *dst, const uint8_t *src, int64_t c, int64_t h, int64_t w,
                       cb_image_op op, double m);

/* TrivialAugmentWide's magnitude of op at bin 0..30, negated when negative
 * and the operation has a sign (shear, translate, rotate, the blends). */
double cb_trivial_augment_magnitude(cb_image_op op, int bin, bool negative);

#define CB_TRIVIAL_AUGMENT_BINS 31

/* The operation named name ("identity", "shear_x", "shear_y", "translate_x",
 * "translate_y", "rotate", "brightness", "color", "contrast", "sharpness",
 * "posterize", "solarize", "autocontrast", "equalize"), or -1. */
int cb_image_op_from_name(const char *name);
extern const char *const cb_image_op_names[CB_IMAGE_OP_COUNT];

/* *out = op at magnitude m applied to every image of a contiguous uint8
 * C x H x W or N x C x H x W tensor (C = 1 or 3), in parallel. */
cb_status cb_image_op_batch(cb_tensor **out, const cb_tensor *images, cb_image_op op, double m);

#endif
