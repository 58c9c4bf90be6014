/* Checkpoint files in the safetensors format (Hugging Face): an 8-byte
 * little-endian header length, a JSON header mapping each tensor's name to
 * its dtype, shape and [begin, end) byte offsets into the data that follows,
 * plus an optional "__metadata__" object of string values; then the raw
 * little-endian data. Files cbnet writes are read by Python's safetensors.
 * Writes are atomic: a temporary file, fsync, then rename. */
#ifndef CB_SAFETENSORS_H
#define CB_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

typedef struct {
  int count;
  char **names;
  cb_tensor **tensors;
  int meta_count;
  char **meta_keys, **meta_values;
} cb_safetensors;

void cb_safetensors_free(cb_safetensors *st);

/* Parses a whole file's bytes (name is for messages). */
cb_status cb_parse_safetensors(cb_safetensors *out, const uint8_t *bytes, size_t size,
                               const char *name);
cb_status cb_load_safetensors(cb_safetensors *out, const char *path);
/* Writes st (names, tensors of dtype float32/int64/uint8/bool, metadata). */
cb_status cb_save_safetensors(const cb_safetensors *st, const char *path);

/* The largest file cb_load_safetensors reads (the file's real size is
 * what it allocates). */
#define CB_SAFETENSORS_MAX_BYTES ((int64_t)1 << 36)

#endif
