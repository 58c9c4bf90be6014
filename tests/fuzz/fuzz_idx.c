/* libFuzzer target: the IDX parser on arbitrary bytes. */
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  cb_tensor *t = NULL;
  if (cb_parse_idx(&t, bytes, size, "fuzz") == CB_OK) cb_tensor_release(t);
  return 0;
}
