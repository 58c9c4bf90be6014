/* CIFAR's binary layouts: CIFAR-10 records are 1 label byte and 3072 pixel
 * bytes (red, green, blue planes of 32 x 32, row by row); CIFAR-100 records
 * are a coarse and a fine label byte, then the same pixels (the fine label,
 * 0..99, is the class). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "io/file.h"

#define PIXELS 3072

typedef struct {
  const char *name;        /* for messages */
  int label_bytes, label;  /* bytes before the pixels; which one is the class */
  int classes;
  const char *names_file;  /* class names, one per line, beside the batches */
  const char *const *standard_names; /* when that file is absent (NULL: "class N") */
} cifar_format;

static const char *const cifar10_names[10] = {
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"};

static const cifar_format CIFAR10 = {"CIFAR-10", 1, 0, 10, "batches.meta.txt", cifar10_names};
static const cifar_format CIFAR100 = {"CIFAR-100", 2, 1, 100, "fine_label_names.txt", NULL};

static cb_status parse_records(cb_dataset *ds, const uint8_t *bytes, size_t size, const char *name,
                               const cifar_format *f) {
  memset(ds, 0, sizeof *ds);
  size_t record = (size_t)(f->label_bytes + PIXELS);
  if (size == 0 || size % record != 0)
    return cb_fail(CB_EFORMAT, "%s: %zu bytes is not a whole number of %zu-byte %s records "
                   "(truncated or not a %s batch)", name, size, record, f->name, f->name);
  int64_t n = (int64_t)(size / record);
  for (int64_t i = 0; i < n; i++)
    if (bytes[(size_t)i * record + (size_t)f->label] >= f->classes)
      return cb_fail(CB_EFORMAT, "%s: record %lld has label %d, %s labels are 0..%d", name,
                     (long long)i + 1, bytes[(size_t)i * record + (size_t)f->label], f->name,
                     f->classes - 1);
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
    lab[i] = bytes[(size_t)i * record + (size_t)f->label];
    memcpy(img + i * PIXELS, bytes + (size_t)i * record + (size_t)f->label_bytes, PIXELS);
  }
  return CB_OK;
}

cb_status cb_parse_cifar_records(cb_dataset *ds, const uint8_t *bytes, size_t size,
                                 const char *name) {
  return parse_records(ds, bytes, size, name, &CIFAR10);
}

cb_status cb_parse_cifar100_records(cb_dataset *ds, const uint8_t *bytes, size_t size,
                                    const char *name) {
  return parse_records(ds, bytes, size, name, &CIFAR100);
}

/* Class names, one per line; the standard ones (or "class N") where the
 * file is missing or short. */
static cb_status read_names(cb_dataset *ds, const char *dir, const cifar_format *f) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, f->names_file);
  ds->class_names = calloc((size_t)f->classes, sizeof *ds->class_names);
  if (!ds->class_names) return cb_fail(CB_ENOMEM, "out of memory");
  ds->num_classes = f->classes;
  uint8_t *text = NULL;
  size_t size = 0;
  if (access(path, F_OK) == 0) { /* optional; when present it must be a small regular file */
    cb_status st = cb_read_file(path, 1 << 16, &text, &size);
    if (st != CB_OK) return st;
  }
  size_t pos = 0;
  for (int c = 0; c < f->classes; c++) {
    const char *line = (const char *)text + pos;
    size_t len = 0;
    while (pos + len < size && line[len] != '\n') len++;
    pos += len < size - pos ? len + 1 : len;
    if (len > 0 && line[len - 1] == '\r') len--;
    char fallback[32];
    snprintf(fallback, sizeof fallback, "class %d", c);
    ds->class_names[c] = len > 0 ? strndup(line, len)
                                 : strdup(f->standard_names ? f->standard_names[c] : fallback);
    if (!ds->class_names[c]) {
      free(text);
      return cb_fail(CB_ENOMEM, "out of memory");
    }
  }
  free(text);
  return CB_OK;
}

/* Reads and validates the named batch files, one after another. */
static cb_status read_batches(cb_dataset *ds, const char *dir, const char *const *files, int count,
                              const cifar_format *f) {
  memset(ds, 0, sizeof *ds);
  uint8_t *all = NULL;
  size_t total = 0;
  cb_status st = CB_OK;
  for (int i = 0; i < count && st == CB_OK; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    uint8_t *bytes;
    size_t size;
    if ((st = cb_read_file(path, CB_CIFAR_MAX_FILE_BYTES, &bytes, &size)) != CB_OK) break;
    cb_dataset one;
    if ((st = parse_records(&one, bytes, size, path, f)) == CB_OK) { /* validates */
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
  if (st == CB_OK) st = parse_records(ds, all, total, dir, f);
  free(all);
  if (st == CB_OK) st = read_names(ds, dir, f);
  if (st != CB_OK) cb_dataset_free(ds);
  return st;
}

cb_status cb_read_cifar10(cb_dataset *ds, const char *dir, bool train) {
  static const char *const train_files[] = {"data_batch_1.bin", "data_batch_2.bin",
                                            "data_batch_3.bin", "data_batch_4.bin",
                                            "data_batch_5.bin"};
  static const char *const test_files[] = {"test_batch.bin"};
  return train ? read_batches(ds, dir, train_files, 5, &CIFAR10)
               : read_batches(ds, dir, test_files, 1, &CIFAR10);
}

cb_status cb_read_cifar100(cb_dataset *ds, const char *dir, bool train) {
  static const char *const train_files[] = {"train.bin"}, *const test_files[] = {"test.bin"};
  return read_batches(ds, dir, train ? train_files : test_files, 1, &CIFAR100);
}
