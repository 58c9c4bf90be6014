/* Dataset readers: whole datasets into memory as uint8 images (N x C x H x W)
 * and int64 labels, from CIFAR-10's binary batches, IDX files (MNIST,
 * Fashion-MNIST; plain or gzip) and folders of images (one folder per class,
 * decoded with stb_image). Every parser works on bytes in memory, so the
 * fuzz targets (tests/fuzz) drive exactly the code that reads files; a bad
 * file gives an error naming it, never a crash. */
#ifndef CB_DATA_H
#define CB_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "tensor/tensor.h"

typedef struct {
  cb_tensor *images; /* uint8 N x C x H x W */
  cb_tensor *labels; /* int64 N, 0..num_classes-1 */
  int num_classes;
  char **class_names; /* num_classes strings */
} cb_dataset;

void cb_dataset_free(cb_dataset *ds);

/* ---- IDX (idx.c) ---- */
/* Parses an IDX file's bytes (name is for messages) into a tensor of its
 * dims: uint8 data stays uint8, signed and wider integers become int64,
 * float/double become float32. */
cb_status cb_parse_idx(cb_tensor **out, const uint8_t *bytes, size_t size, const char *name);
/* Reads an IDX file, gzip-compressed or not. */
cb_status cb_read_idx(cb_tensor **out, const char *path);

/* ---- CIFAR-10 binary (cifar.c) ---- */
/* Parses concatenated 3073-byte records (label, then 3 x 32 x 32 pixels)
 * into ds (images and labels only). */
cb_status cb_parse_cifar_records(cb_dataset *ds, const uint8_t *bytes, size_t size,
                                 const char *name);
/* Reads dir/data_batch_1..5.bin (train) or dir/test_batch.bin, and the class
 * names from dir/batches.meta.txt (or the standard ten when it is absent). */
cb_status cb_read_cifar10(cb_dataset *ds, const char *dir, bool train);
/* CIFAR-100's binary version (cifar-100-binary): records of a coarse and a
 * fine label byte and 3 x 32 x 32 pixels; labels are the fine ones (0..99),
 * names from dir/fine_label_names.txt ("class N" when absent). train.bin or
 * test.bin. */
cb_status cb_parse_cifar100_records(cb_dataset *ds, const uint8_t *bytes, size_t size,
                                    const char *name);
cb_status cb_read_cifar100(cb_dataset *ds, const char *dir, bool train);

/* ---- image folders (image_folder.c) ---- */
/* Decodes one PNG/JPEG/BMP image from memory into a uint8 C x H x W tensor
 * (C = 1 for grey images, 3 otherwise). */
cb_status cb_decode_image(cb_tensor **out, const uint8_t *bytes, size_t size, const char *name);
/* The width, height and channels an image's header claims, read safely
 * (what cb_decode_image checks first; a top-down BMP's height is negative). */
cb_status cb_image_info(const uint8_t *bytes, size_t size, const char *name, int *w, int *h, int *c);
/* Reads root/<class>/<file>.{png,jpg,jpeg,bmp}: classes sorted by name get
 * labels 0..C-1, files sorted by name within each; all images must have one
 * size. Decoding runs on the thread pool. With cache_path, the decoded
 * dataset is stored there (atomically) and reused while the folder's file
 * list, sizes and times are unchanged. */
cb_status cb_read_image_folder(cb_dataset *ds, const char *root, const char *cache_path);
/* Writes a uint8 C x H x W tensor as PNG (or BMP/JPEG by the extension). */
cb_status cb_write_image(const cb_tensor *image, const char *path);

/* The caps the readers pass: well above any real file of the format. */
#define CB_IDX_MAX_BYTES ((int64_t)1 << 33)        /* 8 GiB decompressed */
#define CB_CIFAR_MAX_FILE_BYTES ((int64_t)1 << 28) /* a batch is 30.7 MB */
#define CB_IMAGE_FOLDER_MAX_BYTES ((int64_t)1 << 34) /* decoded pixels */

#endif
