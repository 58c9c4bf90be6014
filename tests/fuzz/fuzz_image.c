/* libFuzzer target: image decoding (PNG, JPEG, BMP through stb_image). */
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  cb_tensor *t = NULL;
  if (cb_decode_image(&t, bytes, size, "fuzz") == CB_OK) cb_tensor_release(t);
  return 0;
}
