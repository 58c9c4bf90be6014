/* The image operations of TrivialAugment (core/data/image_ops.h) on small
 * images with answers worked out by hand. */
#include <string.h>

#include "check.h"
#include "data/image_ops.h"

static int same(const uint8_t *a, const uint8_t *b, size_t n) { return memcmp(a, b, n) == 0; }

static void test_pixelwise(void) {
  uint8_t src[4] = {183, 100, 200, 128}, out[4];
  cb_image_op_apply(out, src, 1, 1, 4, CB_IMAGE_POSTERIZE, 2); /* the top 2 bits */
  CHECK(same(out, (uint8_t[]){128, 64, 192, 128}, 4));
  cb_image_op_apply(out, src, 1, 1, 4, CB_IMAGE_SOLARIZE, 128); /* >= 128 inverted */
  CHECK(same(out, (uint8_t[]){72, 100, 55, 127}, 4));
  cb_image_op_apply(out, src, 1, 1, 4, CB_IMAGE_BRIGHTNESS, 0.5); /* x 1.5, clamped */
  CHECK(same(out, (uint8_t[]){255, 150, 255, 192}, 4));
  cb_image_op_apply(out, (uint8_t[]){101, 3, 0, 255}, 1, 1, 4, CB_IMAGE_BRIGHTNESS, -0.5); /* x 0.5, truncated */
  CHECK(same(out, (uint8_t[]){50, 1, 0, 127}, 4));
  cb_image_op_apply(out, src, 1, 1, 4, CB_IMAGE_IDENTITY, 7);
  CHECK(same(out, src, 4));
  /* contrast: blend with the mean (0 + 100) / 2 = 50 at ratio 2 */
  cb_image_op_apply(out, (uint8_t[]){0, 100}, 1, 1, 2, CB_IMAGE_CONTRAST, 1);
  CHECK(same(out, (uint8_t[]){0, 150}, 2));
  /* color: gray of (100, 50, 0) = trunc(29.89 + 29.35) = 59 */
  uint8_t rgb[3] = {100, 50, 0}, rgb_out[3];
  cb_image_op_apply(rgb_out, rgb, 3, 1, 1, CB_IMAGE_COLOR, -1); /* ratio 0: the gray */
  CHECK(same(rgb_out, (uint8_t[]){59, 59, 59}, 3));
  cb_image_op_apply(rgb_out, rgb, 3, 1, 1, CB_IMAGE_COLOR, 1); /* ratio 2: 2 v - 59 */
  CHECK(same(rgb_out, (uint8_t[]){141, 41, 0}, 3));
  cb_image_op_apply(out, src, 1, 1, 4, CB_IMAGE_COLOR, 1); /* one channel: unchanged */
  CHECK(same(out, src, 4));
  /* autocontrast stretches each channel: 50..150 -> 0..255 */
  cb_image_op_apply(rgb_out, (uint8_t[]){50, 100, 150}, 1, 1, 3, CB_IMAGE_AUTOCONTRAST, 0);
  CHECK(same(rgb_out, (uint8_t[]){0, 127, 255}, 3));
  cb_image_op_apply(rgb_out, (uint8_t[]){9, 9, 9}, 1, 1, 3, CB_IMAGE_AUTOCONTRAST, 0); /* flat: kept */
  CHECK(same(rgb_out, (uint8_t[]){9, 9, 9}, 3));
}

static void test_equalize_sharpness(void) {
  /* 512 pixels, half 10 and half 20: step = (512 - 256) / 255 = 1, so 10 -> 0
   * and 20 -> 256, clamped to 255 */
  uint8_t src[512], out[512];
  for (int i = 0; i < 512; i++) src[i] = i < 256 ? 10 : 20;
  cb_image_op_apply(out, src, 1, 16, 32, CB_IMAGE_EQUALIZE, 0);
  CHECK(out[0] == 0 && out[255] == 0 && out[256] == 255 && out[511] == 255);
  /* too few pixels below the top value: step 0, unchanged */
  cb_image_op_apply(out, (uint8_t[]){0, 0, 1, 2}, 1, 1, 4, CB_IMAGE_EQUALIZE, 0);
  CHECK(same(out, (uint8_t[]){0, 0, 1, 2}, 4));
  /* sharpness: 3x3 of 13 with 26 in the centre; smoothing (4 * 26 + 8 * 13 + 26) / 13 = 18;
   * ratio 2: 2 * 26 - 18 = 34 in the centre, the border kept */
  uint8_t s[9] = {13, 13, 13, 13, 26, 13, 13, 13, 13}, o[9];
  cb_image_op_apply(o, s, 1, 3, 3, CB_IMAGE_SHARPNESS, 1);
  CHECK(same(o, (uint8_t[]){13, 13, 13, 13, 34, 13, 13, 13, 13}, 9));
}

static void test_geometric(void) {
  uint8_t row[3] = {10, 20, 30}, out[9];
  cb_image_op_apply(out, row, 1, 1, 3, CB_IMAGE_TRANSLATE_X, 1.9); /* 1 pixel right, 0 in */
  CHECK(same(out, (uint8_t[]){0, 10, 20}, 3));
  cb_image_op_apply(out, row, 1, 1, 3, CB_IMAGE_TRANSLATE_X, -1);
  CHECK(same(out, (uint8_t[]){20, 30, 0}, 3));
  cb_image_op_apply(out, row, 1, 3, 1, CB_IMAGE_TRANSLATE_Y, 2); /* the same numbers as a column */
  CHECK(same(out, (uint8_t[]){0, 0, 10}, 3));
  /* shear x by 0.5 about the top-left corner: output (x, y) from (x + 0.5 (y + 0.5), y),
   * rounded: row 0 from x, row 1 from x + 1 */
  cb_image_op_apply(out, (uint8_t[]){1, 2, 3, 4}, 1, 2, 2, CB_IMAGE_SHEAR_X, 0.5);
  CHECK(same(out, (uint8_t[]){1, 2, 4, 0}, 4));
  cb_image_op_apply(out, (uint8_t[]){1, 2, 3, 4}, 1, 2, 2, CB_IMAGE_SHEAR_Y, 0.5); /* from (x, y + 0.5 (x + 0.5)) */
  CHECK(same(out, (uint8_t[]){1, 4, 3, 0}, 4));
  /* a source exactly half-way rounds to the even pixel (grid_sample's nearbyint): by 1,
   * row 0 samples x + 0.5, so x = 0 takes pixel 0 and x = 1 pixel 2 (outside) */
  cb_image_op_apply(out, (uint8_t[]){1, 2, 3, 4}, 1, 2, 2, CB_IMAGE_SHEAR_X, 1);
  CHECK(same(out, (uint8_t[]){1, 0, 0, 0}, 4));
  /* 90 degrees counter-clockwise: the top row becomes the left column, read upwards */
  uint8_t grid[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  cb_image_op_apply(out, grid, 1, 3, 3, CB_IMAGE_ROTATE, 90);
  CHECK(same(out, (uint8_t[]){3, 6, 9, 2, 5, 8, 1, 4, 7}, 9));
  cb_image_op_apply(out, grid, 1, 3, 3, CB_IMAGE_ROTATE, -90);
  CHECK(same(out, (uint8_t[]){7, 4, 1, 8, 5, 2, 9, 6, 3}, 9));
  /* every channel moves alike */
  uint8_t two[4] = {1, 2, 5, 6}, two_out[4];
  cb_image_op_apply(two_out, two, 2, 1, 2, CB_IMAGE_TRANSLATE_X, 1);
  CHECK(same(two_out, (uint8_t[]){0, 1, 0, 5}, 4));
}

static void test_magnitudes(void) {
  CHECK(cb_trivial_augment_magnitude(CB_IMAGE_POSTERIZE, 0, true) == 8); /* never negated */
  CHECK(cb_trivial_augment_magnitude(CB_IMAGE_POSTERIZE, 15, false) == 5);
  CHECK(cb_trivial_augment_magnitude(CB_IMAGE_POSTERIZE, 30, false) == 2);
  CHECK(cb_trivial_augment_magnitude(CB_IMAGE_SOLARIZE, 0, false) == 255);
  CHECK(cb_trivial_augment_magnitude(CB_IMAGE_SOLARIZE, 30, true) == 0);
  CHECK_NEAR(cb_trivial_augment_magnitude(CB_IMAGE_ROTATE, 30, true), -135, 1e-9);
  CHECK_NEAR(cb_trivial_augment_magnitude(CB_IMAGE_TRANSLATE_Y, 15, false), 16, 1e-9);
  CHECK_NEAR(cb_trivial_augment_magnitude(CB_IMAGE_SHEAR_X, 30, false), 0.99, 1e-12);
  CHECK_NEAR(cb_trivial_augment_magnitude(CB_IMAGE_CONTRAST, 10, true), -0.33, 1e-12);
  CHECK(cb_trivial_augment_magnitude(CB_IMAGE_EQUALIZE, 20, true) == 0);
}

void test_image_ops(void) {
  test_pixelwise();
  test_equalize_sharpness();
  test_geometric();
  test_magnitudes();
}
