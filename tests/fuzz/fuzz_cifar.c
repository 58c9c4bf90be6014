/* libFuzzer target: the CIFAR-10 record parser on arbitrary bytes. */
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  cb_dataset ds;
  if (cb_parse_cifar_records(&ds, bytes, size, "fuzz") == CB_OK) cb_dataset_free(&ds);
  return 0;
}
