/* libFuzzer target: the safetensors reader (header JSON, offsets, data). */
#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  cb_safetensors st;
  if (cb_parse_safetensors(&st, bytes, size, "fuzz") == CB_OK) cb_safetensors_free(&st);
  return 0;
}
