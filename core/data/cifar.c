/* CIFAR-10's binary layout: records of 1 label byte and 3072 pixel bytes
 * (red, green, blue planes of 32 x 32, row by row). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "io/file.h"

#define RECORD 3073
#define CLASSES 10

static const char *const standard_names[CLASSES] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};

cb_status cb_parse_cifar_records(cb_dataset *ds, const uint8_t *bytes, size_t size,
                                 const char *name) {
  memset(ds, 0, sizeof *ds);
  if (size == 0 || size % RECORD != 0)
    return cb_fail(CB_EFORMAT, "%s: %zu bytes is not a whole number of 3073-byte CIFAR-10 records "
                   "(truncated or not a CIFAR-10 batch)", name, size);
  int64_t n = (int64_t)(size / RECORD);
  for (int64_t i = 0; i < n; i++)
    if (bytes[i * RECORD] >= CLASSES)
      return cb_fail(CB_EFORMAT, "%s: record %lld has label %d, CIFAR-10 labels are 0..9", name,
                     (long long)i + 1, bytes[i * RECORD]);
  int64_t shape[4] = {n, 3, 32, 32};
  cb_status st = cb_tensor_empty(&ds->images, 4, shape, CB_UINT8);
  if (st == CB_OK) st = cb_tensor_empty(&ds->labels, 1, &n, CB_INT64);
  if (st != CB_OK) {
    cb_dataset_free(ds);
    return st;
  }
  uint8_t *img = cb_tensor_data(ds->images);
  int64_t *lab = cb_tensor_data(ds->labels);
  for (int64_t i = 0; i < n; i++) {
    lab[i] = bytes[i * RECORD];
    memcpy(img + i * (RECORD - 1), bytes + i * RECORD + 1, RECORD - 1);
  }
  return CB_OK;
}

/* Class names, one per line; the standard ten if the file is missing. */
static cb_status read_names(cb_dataset *ds, const char *dir) {
  char path[4096];
  snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
  ds->class_names = calloc(CLASSES, sizeof *ds->class_names);
  if (!ds->class_names) return cb_fail(CB_ENOMEM, "out of memory");
  ds->num_classes = CLASSES;
  uint8_t *text = NULL;
  size_t size = 0;
  if (access(path, F_OK) == 0) { /* optional; when present it must be a small regular file */
    cb_status st = cb_read_file(path, 1 << 16, &text, &size);
    if (st != CB_OK) return st;
  }
  size_t pos = 0;
  for (int c = 0; c < CLASSES; c++) {
    const char *line = (const char *)text + pos;
    size_t len = 0;
    while (pos + len < size && line[len] != '\n') len++;
    pos += len < size - pos ? len + 1 : len;
    if (len > 0 && line[len - 1] == '\r') len--;
    ds->class_names[c] = len > 0 ? strndup(line, len) : strdup(standard_names[c]);
    if (!ds->class_names[c]) {
      free(text);
      return cb_fail(CB_ENOMEM, "out of memory");
    }
  }
  free(text);
  return CB_OK;
}

cb_status cb_read_cifar10(cb_dataset *ds, const char *dir, bool train) {
  memset(ds, 0, sizeof *ds);
  int files = train ? 5 : 1;
  uint8_t *all = NULL;
  size_t total = 0;
  cb_status st = CB_OK;
  for (int i = 0; i < files && st == CB_OK; i++) {
    char path[4096];
    if (train) snprintf(path, sizeof path, "%s/data_batch_%d.bin", dir, i + 1);
    else snprintf(path, sizeof path, "%s/test_batch.bin", dir);
    uint8_t *bytes;
    size_t size;
    if ((st = cb_read_file(path, CB_CIFAR_MAX_FILE_BYTES, &bytes, &size)) != CB_OK) break;
    cb_dataset one;
    if ((st = cb_parse_cifar_records(&one, bytes, size, path)) == CB_OK) { /* validates */
      cb_dataset_free(&one);
      uint8_t *bigger = realloc(all, total + size);
      if (!bigger) st = cb_fail(CB_ENOMEM, "out of memory reading %s", path);
      else {
        all = bigger;
        memcpy(all + total, bytes, size);
        total += size;
      }
    }
    free(bytes);
  }
  if (st == CB_OK) st = cb_parse_cifar_records(ds, all, total, dir);
  free(all);
  if (st == CB_OK) st = read_names(ds, dir);
  if (st != CB_OK) cb_dataset_free(ds);
  return st;
}
