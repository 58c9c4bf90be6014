/* libFuzzer target: image decoding (PNG, JPEG, BMP through stb_image).
 *
 * A few kilobytes of PNG can describe a flat 8192 x 8192 image, which
 * cb_decode_image accepts (up to 2^26 pixels) and which takes longer than
 * libFuzzer's timeout to decode under ASan and coverage counters. Those inputs
 * exercise nothing new, so the harness skips images over 2^20 pixels (after
 * the header parsing, cb_image_info, which cb_decode_image starts with). */
#include <stdlib.h>

#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  int w, h, c;
  if (cb_image_info(bytes, size, "fuzz", &w, &h, &c) == CB_OK && llabs((int64_t)w * h) > (1 << 20))
    return 0;
  cb_tensor *t = NULL;
  if (cb_decode_image(&t, bytes, size, "fuzz") == CB_OK) cb_tensor_release(t);
  return 0;
}
