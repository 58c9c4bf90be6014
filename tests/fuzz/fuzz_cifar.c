/* libFuzzer target: the CIFAR-10 and CIFAR-100 record parsers on arbitrary
 * bytes (the same bytes through both: 3073- and 3074-byte records). */
#include "data/data.h"

int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
  cb_dataset ds;
  if (cb_parse_cifar_records(&ds, bytes, size, "fuzz") == CB_OK) cb_dataset_free(&ds);
  if (cb_parse_cifar100_records(&ds, bytes, size, "fuzz") == CB_OK) cb_dataset_free(&ds);
  return 0;
}
