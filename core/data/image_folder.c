/* Folders of images, one sub-folder per class, decoded with stb_image on the
 * thread pool; and an optional decoded cache. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <stb/stb_image.h>
#include <stb/stb_image_write.h>

#include "io/file.h"
#include "data/data.h"
#include "data/stb_impl.h"
#include "tensor/threadpool.h"

#define MAX_IMAGE_BYTES (64 << 20)

/* ---- JPEG Huffman tables, checked before stb_image reads them ----
 * Debian's stb_image (2022) trusts a JPEG's Huffman tables (found by
 * fuzz_image; stb issue 1289 and others, fixed upstream in 2.28):
 * - a DHT segment whose 16 code counts add up to more than 256 symbols
 *   writes past the table's arrays while it is built;
 * - a scan that uses a table no DHT segment defined decodes with whatever
 *   the heap held there, and reads symbols out of bounds.
 * So the markers are walked first as stb_image walks them, every table a
 * DHT segment defines is checked and remembered, and every scan's tables
 * must have been defined. Before the frame header stb_image skips bytes
 * that are not markers; after it, a scan's entropy-coded data runs to the
 * next marker that is not a restart; a marker it does not know ends its
 * decoding, and so the walk. Fill bytes may precede even the first marker
 * (0xFF 0xFF 0xD8 starts a JPEG for stb_image; found by fuzz_image). (stb_image's
 * own allocations are zeroed too, stb_impl.c.) */

/* Byte i of the file, 0 past its end (as stb_image reads a short file). */
static unsigned jpeg_byte(const uint8_t *p, size_t size, size_t i) { return i < size ? p[i] : 0; }

static size_t jpeg_length(const uint8_t *p, size_t size, size_t i) {
  return jpeg_byte(p, size, i) << 8 | jpeg_byte(p, size, i + 1);
}

/* The tables of the DHT segment whose length field is at i, read as
 * stb_image reads them: marked in defined[class][slot]; false when one has
 * more than 256 symbols. */
static bool jpeg_define_tables(const uint8_t *p, size_t size, size_t i, bool defined[2][4]) {
  long left = (long)jpeg_length(p, size, i) - 2;
  for (size_t at = i + 2; left > 0 && at < size;) {
    unsigned q = jpeg_byte(p, size, at++);
    long symbols = 0;
    for (int k = 0; k < 16; k++) symbols += jpeg_byte(p, size, at++);
    if (symbols > 256) return false;
    if (q >> 4 <= 1 && (q & 15) <= 3) defined[q >> 4][q & 15] = true; /* else stb_image refuses it */
    at += (size_t)symbols;
    left -= 17 + symbols;
  }
  return true;
}

/* Whether the scan whose header's length field is at i uses only defined
 * tables: a baseline scan a DC and an AC table per component; a progressive
 * scan its DC tables on a first DC pass, none on a DC refinement, its AC
 * tables on an AC pass. */
static bool jpeg_scan_tables_defined(const uint8_t *p, size_t size, size_t i, bool progressive,
                                     const bool defined[2][4]) {
  unsigned components = jpeg_byte(p, size, i + 2);
  size_t after = i + 3 + 2 * (size_t)components; /* spectral start, end, approximation */
  unsigned start = jpeg_byte(p, size, after), high = jpeg_byte(p, size, after + 2) >> 4;
  bool dc = !progressive || (start == 0 && high == 0), ac = !progressive || start > 0;
  for (unsigned k = 0; k < components; k++) {
    unsigned tables = jpeg_byte(p, size, i + 4 + 2 * (size_t)k), td = tables >> 4, ta = tables & 15;
    if (td > 3 || ta > 3) continue; /* stb_image refuses the scan itself */
    if ((dc && !defined[0][td]) || (ac && !defined[1][ta])) return false;
  }
  return true;
}

/* NULL for a file that is not a JPEG or whose Huffman tables are sound, else
 * what is wrong with them. */
static const char *jpeg_huffman_problem(const uint8_t *p, size_t size) {
  /* stb_image reads the start-of-image marker as it reads every marker:
   * 0xFF, any number of fill bytes 0xFF, then 0xD8 */
  if (size < 2 || p[0] != 0xFF) return NULL;
  size_t i = 1;
  while (i < size && p[i] == 0xFF) i++;
  if (i >= size || p[i] != 0xD8) return NULL;
  i++;
  bool frame = false, progressive = false, defined[2][4] = {{false}};
  while (i < size) {
    if (p[i] != 0xFF) {
      if (frame) return NULL; /* stb_image expects a marker here: it stops */
      i++;                    /* before the frame it skips such bytes */
      continue;
    }
    while (i < size && p[i] == 0xFF) i++; /* fill bytes */
    if (i >= size) return NULL;
    unsigned m = p[i++];
  marker:
    if (m == 0xD9) return NULL; /* end of image */
    if (m == 0xC4 && !jpeg_define_tables(p, size, i, defined))
      return "a Huffman table of more than 256 symbols";
    if (m == 0xDA && frame && !jpeg_scan_tables_defined(p, size, i, progressive, defined))
      return "a scan uses a Huffman table the file never defines";
    if (m == 0xDC && frame) { /* a DNL: four bytes */
      i += 4;
      continue;
    }
    bool known = m == 0xC4 || m == 0xDB || m == 0xDD || (m >= 0xE0 && m <= 0xEF) || m == 0xFE ||
                 m == 0xC0 || m == 0xC1 || m == 0xC2 || (frame && m == 0xDA);
    if (!known) return NULL; /* stb_image stops at a marker it does not know */
    if (m >= 0xC0 && m <= 0xC2) frame = true, progressive = m == 0xC2;
    i += jpeg_length(p, size, i);
    if (m != 0xDA) continue;
    /* a scan: its entropy-coded data, to the next marker that is not a
     * stuffed 0xFF 0x00 or a restart */
    while (i < size) {
      if (p[i++] != 0xFF) continue;
      while (i < size && p[i] == 0xFF) i++;
      if (i >= size) return NULL;
      m = p[i++];
      if (m != 0x00 && !(m >= 0xD0 && m <= 0xD7)) goto marker;
    }
  }
  return NULL;
}

/* Why the stb_image call just made failed (cb_stb_clear_failure before it). */
static const char *stb_failure(void) {
  const char *reason = stbi_failure_reason();
  return reason && *reason ? reason : "corrupt or unsupported image data";
}

cb_status cb_image_info(const uint8_t *bytes, size_t size, const char *name, int *w, int *h, int *c) {
  if (size == 0 || size > INT_MAX) return cb_fail(CB_EFORMAT, "%s: empty or too large to be an image", name);
  const char *problem = jpeg_huffman_problem(bytes, size);
  if (problem) return cb_fail(CB_EFORMAT, "%s: cannot decode (corrupt JPEG: %s)", name, problem);
  cb_stb_clear_failure();
  if (!stbi_info_from_memory(bytes, (int)size, w, h, c))
    return cb_fail(CB_EFORMAT, "%s: cannot decode (%s)", name, stb_failure());
  return CB_OK;
}

cb_status cb_decode_image(cb_tensor **out, const uint8_t *bytes, size_t size, const char *name) {
  *out = NULL;
  int w, h, c;
  cb_status st = cb_image_info(bytes, size, name, &w, &h, &c);
  if (st != CB_OK) return st;
  /* stb_image reports a top-down BMP's height as negative: the cap is on
   * the size, or a 38-byte BMP would decode to 80 million pixels */
  int64_t pixels_claimed = llabs((int64_t)w) * llabs((int64_t)h);
  if (pixels_claimed > 1 << 26)
    return cb_fail(CB_EFORMAT, "%s: %d x %d pixels is more than cbnet decodes", name, w, h < 0 ? -h : h);
  int want = (c == 1 || c == 2) ? 1 : 3; /* grey stays grey; alpha is dropped */
  cb_stb_clear_failure();
  uint8_t *pixels = stbi_load_from_memory(bytes, (int)size, &w, &h, &c, want);
  if (!pixels) return cb_fail(CB_EFORMAT, "%s: cannot decode (%s)", name, stb_failure());
  if (w <= 0 || h <= 0 || (int64_t)w * h > 1 << 26) {
    stbi_image_free(pixels);
    return cb_fail(CB_EFORMAT, "%s: decoded to %d x %d pixels", name, w, h);
  }
  int64_t shape[3] = {want, h, w};
  st = cb_tensor_empty(out, 3, shape, CB_UINT8);
  if (st == CB_OK) { /* interleaved HWC to planes CHW */
    uint8_t *dst = cb_tensor_data(*out);
    for (int64_t ch = 0; ch < want; ch++)
      for (int64_t i = 0; i < (int64_t)h * w; i++) dst[ch * h * w + i] = pixels[i * want + ch];
  }
  stbi_image_free(pixels);
  return st;
}

/* ---- listing ---- */

typedef struct {
  char *path;
  int64_t label;
  int64_t size, mtime;
} entry;

typedef struct {
  entry *items;
  int64_t count, capacity;
  char **classes;
  int nclasses;
} listing;

static void listing_free(listing *l) {
  for (int64_t i = 0; i < l->count; i++) free(l->items[i].path);
  free(l->items);
  for (int i = 0; i < l->nclasses; i++) free(l->classes[i]);
  free(l->classes);
  memset(l, 0, sizeof *l);
}

static int compare_names(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_image_name(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot || name[0] == '.') return false;
  return !strcasecmp(dot, ".png") || !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") ||
         !strcasecmp(dot, ".bmp");
}

/* Sorted names in dir that pass keep(dir, name). */
static cb_status sorted_names(const char *dir, bool (*keep)(const char *, const char *),
                              char ***names, int64_t *count) {
  *names = NULL;
  *count = 0;
  DIR *d = opendir(dir);
  if (!d) return cb_fail(CB_EIO, "%s: cannot open folder (%s)", dir, strerror(errno));
  int64_t capacity = 0;
  struct dirent *e;
  cb_status st = CB_OK;
  while ((e = readdir(d)) && st == CB_OK) {
    if (!keep(dir, e->d_name)) continue;
    if (*count == capacity) {
      capacity = capacity ? capacity * 2 : 64;
      char **bigger = realloc(*names, sizeof **names * (size_t)capacity);
      if (!bigger) {
        st = cb_fail(CB_ENOMEM, "out of memory listing %s", dir);
        break;
      }
      *names = bigger;
    }
    if (!((*names)[*count] = strdup(e->d_name))) st = cb_fail(CB_ENOMEM, "out of memory");
    else (*count)++;
  }
  closedir(d);
  if (st != CB_OK) { /* no partial list escapes */
    for (int64_t i = 0; i < *count; i++) free((*names)[i]);
    free(*names);
    *names = NULL;
    *count = 0;
  } else if (*count > 0) {
    qsort(*names, (size_t)*count, sizeof **names, compare_names);
  }
  return st;
}

static bool keep_class_dir(const char *root, const char *name) {
  if (name[0] == '.') return false;
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", root, name);
  struct stat s;
  return stat(path, &s) == 0 && S_ISDIR(s.st_mode);
}

static bool keep_image(const char *dir, const char *name) {
  (void)dir;
  return is_image_name(name);
}

static void free_names(char **names, int64_t count) {
  for (int64_t i = 0; i < count; i++) free(names[i]);
  free(names);
}

static cb_status list_folder(listing *l, const char *root) {
  memset(l, 0, sizeof *l);
  char **classes;
  int64_t nclasses;
  cb_status st = sorted_names(root, keep_class_dir, &classes, &nclasses);
  if (st != CB_OK) return st;
  if (nclasses == 0) {
    free(classes);
    return cb_fail(CB_EFORMAT, "%s: no class folders (expected ROOT/<class>/<image files>)", root);
  }
  l->classes = classes;
  l->nclasses = (int)nclasses;
  for (int c = 0; c < l->nclasses && st == CB_OK; c++) {
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s/%s", root, classes[c]);
    char **files;
    int64_t nfiles;
    if ((st = sorted_names(dir, keep_image, &files, &nfiles)) != CB_OK) break;
    if (nfiles == 0) st = cb_fail(CB_EFORMAT, "%s: class folder has no .png/.jpg/.jpeg/.bmp images", dir);
    for (int64_t i = 0; i < nfiles && st == CB_OK; i++) {
      if (l->count == l->capacity) {
        l->capacity = l->capacity ? l->capacity * 2 : 1024;
        entry *bigger = realloc(l->items, sizeof *bigger * (size_t)l->capacity);
        if (!bigger) {
          st = cb_fail(CB_ENOMEM, "out of memory listing %s", root);
          break;
        }
        l->items = bigger;
      }
      entry *e = &l->items[l->count];
      size_t len = strlen(dir) + strlen(files[i]) + 2;
      if (!(e->path = malloc(len))) {
        st = cb_fail(CB_ENOMEM, "out of memory");
        break;
      }
      snprintf(e->path, len, "%s/%s", dir, files[i]);
      struct stat s;
      if (stat(e->path, &s) != 0) {
        st = cb_fail(CB_EIO, "%s: cannot stat (%s)", e->path, strerror(errno));
        free(e->path);
        break;
      }
      e->label = c;
      e->size = s.st_size;
      e->mtime = (int64_t)s.st_mtim.tv_sec * 1000000000 + s.st_mtim.tv_nsec;
      l->count++;
    }
    free_names(files, nfiles);
  }
  if (st != CB_OK) listing_free(l);
  return st;
}

/* ---- decoding ---- */

static cb_status read_plain(const char *path, int64_t expected, uint8_t **bytes, size_t *size) {
  *bytes = NULL;
  if (expected <= 0 || expected > MAX_IMAGE_BYTES)
    return cb_fail(CB_EFORMAT, "%s: %lld bytes is not a plausible image file", path, (long long)expected);
  FILE *f = fopen(path, "rb");
  if (!f) return cb_fail(CB_EIO, "%s: cannot open (%s)", path, strerror(errno));
  *bytes = malloc((size_t)expected);
  *size = *bytes ? fread(*bytes, 1, (size_t)expected, f) : 0;
  fclose(f);
  if (!*bytes) return cb_fail(CB_ENOMEM, "out of memory reading %s", path);
  if (*size != (size_t)expected) {
    free(*bytes);
    *bytes = NULL;
    return cb_fail(CB_EIO, "%s: short read (%zu of %lld bytes)", path, *size, (long long)expected);
  }
  return CB_OK;
}

typedef struct {
  const listing *l;
  uint8_t *images; /* N x C x H x W */
  int64_t c, h, w;
  /* first failure per chunk: index and message */
  int64_t failed_at[64];
  char message[64][320];
  cb_status failed_status[64];
} decode_job;

static void decode_range(void *arg, int chunk, int64_t begin, int64_t end) {
  decode_job *j = arg;
  int64_t plane = j->c * j->h * j->w;
  for (int64_t i = begin; i < end; i++) {
    const entry *e = &j->l->items[i];
    uint8_t *bytes;
    size_t size;
    cb_tensor *img = NULL;
    cb_status st = read_plain(e->path, e->size, &bytes, &size);
    if (st == CB_OK) {
      st = cb_decode_image(&img, bytes, size, e->path);
      free(bytes);
    }
    if (st == CB_OK && (img->shape[0] != j->c || img->shape[1] != j->h || img->shape[2] != j->w)) {
      st = cb_fail(CB_EFORMAT, "%s: image is %lld x %lld x %lld (channels x height x width), the "
                   "first image is %lld x %lld x %lld; all images must have one size", e->path,
                   (long long)img->shape[0], (long long)img->shape[1], (long long)img->shape[2],
                   (long long)j->c, (long long)j->h, (long long)j->w);
    }
    if (st == CB_OK) memcpy(j->images + i * plane, cb_tensor_data(img), (size_t)plane);
    cb_tensor_release(img);
    if (st != CB_OK) {
      j->failed_at[chunk] = i;
      j->failed_status[chunk] = st;
      snprintf(j->message[chunk], sizeof j->message[chunk], "%s", cb_last_error());
      return;
    }
  }
}

/* ---- cache ---- */

#define CACHE_MAGIC "CBNETIMG"
#define CACHE_VERSION 2

/* The file: this header, the class names (each NUL-terminated), the labels
 * (int64), the pixels (uint8 N x C x H x W). The checksum covers all three,
 * so a flipped byte anywhere makes the cache rebuilt rather than trusted. */
typedef struct {
  char magic[8];
  uint32_t version, num_classes;
  int64_t n, c, h, w;
  uint64_t fingerprint;
  int64_t names_bytes;
  uint64_t checksum;
} cache_header;

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
  const uint8_t *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

/* A 64-bit checksum, eight bytes a step (the cache holds ~150 MB). */
static uint64_t checksum_of(uint64_t h, const void *data, size_t n) {
  const uint8_t *p = data;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t word;
    memcpy(&word, p + i, 8);
    h = (h ^ word) * 0x9e3779b97f4a7c15ULL;
    h ^= h >> 29;
  }
  return fnv1a(h, p + i, n - i);
}

static uint64_t cache_checksum(const char *names, int64_t names_bytes, const cb_dataset *ds) {
  uint64_t h = checksum_of(0xcbf29ce484222325ULL, names, (size_t)names_bytes);
  h = checksum_of(h, cb_tensor_data(ds->labels), (size_t)cb_tensor_numel(ds->labels) * 8);
  return checksum_of(h, cb_tensor_data(ds->images), (size_t)cb_tensor_numel(ds->images));
}

/* Changes when any file is added, removed, renamed, resized or touched. */
static uint64_t fingerprint_of(const listing *l) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int64_t i = 0; i < l->count; i++) {
    h = fnv1a(h, l->items[i].path, strlen(l->items[i].path));
    h = fnv1a(h, &l->items[i].size, sizeof l->items[i].size);
    h = fnv1a(h, &l->items[i].mtime, sizeof l->items[i].mtime);
  }
  return h;
}

static cb_status names_copy(cb_dataset *ds, char **names, int n) {
  if (n < 1) return cb_fail(CB_EINVAL, "a dataset needs at least one class");
  ds->class_names = calloc((size_t)n, sizeof *ds->class_names);
  if (!ds->class_names) return cb_fail(CB_ENOMEM, "out of memory");
  ds->num_classes = n;
  for (int i = 0; i < n; i++)
    if (!(ds->class_names[i] = strdup(names[i]))) return cb_fail(CB_ENOMEM, "out of memory");
  return CB_OK;
}

/* The names block of the listing's classes, as the cache stores it. */
static char *names_block(const listing *l, int64_t *bytes) {
  *bytes = 0;
  for (int i = 0; i < l->nclasses; i++) *bytes += (int64_t)strlen(l->classes[i]) + 1;
  char *block = malloc((size_t)*bytes), *p = block;
  for (int i = 0; block && i < l->nclasses; i++) p = stpcpy(p, l->classes[i]) + 1;
  return block;
}

/* The header fits the listing and the file's real size, before anything is
 * allocated from it. */
static bool header_fits(const cache_header *hd, const listing *l, uint64_t fp,
                        int64_t names_bytes, int64_t file_bytes) {
  if (memcmp(hd->magic, CACHE_MAGIC, 8) != 0 || hd->version != CACHE_VERSION ||
      hd->fingerprint != fp || hd->n != l->count || (int)hd->num_classes != l->nclasses ||
      hd->names_bytes != names_bytes || hd->c < 1 || hd->c > 3 || hd->h < 1 || hd->w < 1)
    return false;
  int64_t pixels, total;
  return !cb_mul_overflows(hd->n, hd->c, &pixels) && !cb_mul_overflows(pixels, hd->h, &pixels) &&
         !cb_mul_overflows(pixels, hd->w, &pixels) && pixels <= CB_MAX_NUMEL &&
         !cb_add_overflows((int64_t)sizeof *hd + names_bytes + 8 * hd->n, pixels, &total) &&
         total == file_bytes;
}

/* Loads the cache if it is whole and matches the listing; false otherwise
 * (no error: the caller decodes the folder and writes a fresh cache). */
static bool load_cache(cb_dataset *ds, const char *path, const listing *l, uint64_t fp) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  struct stat s;
  cache_header hd;
  int64_t names_bytes;
  char *expected_names = names_block(l, &names_bytes);
  char *names = expected_names ? malloc((size_t)names_bytes) : NULL;
  bool ok = names && fstat(fileno(f), &s) == 0 && S_ISREG(s.st_mode) &&
            fread(&hd, sizeof hd, 1, f) == 1 && header_fits(&hd, l, fp, names_bytes, s.st_size) &&
            fread(names, 1, (size_t)names_bytes, f) == (size_t)names_bytes &&
            memcmp(names, expected_names, (size_t)names_bytes) == 0;
  int64_t shape[4] = {hd.n, hd.c, hd.h, hd.w};
  ok = ok && cb_tensor_empty(&ds->labels, 1, &hd.n, CB_INT64) == CB_OK &&
       cb_tensor_empty(&ds->images, 4, shape, CB_UINT8) == CB_OK;
  ok = ok && fread(cb_tensor_data(ds->labels), 8, (size_t)hd.n, f) == (size_t)hd.n;
  size_t pixels = ok ? (size_t)cb_tensor_numel(ds->images) : 0;
  ok = ok && fread(cb_tensor_data(ds->images), 1, pixels, f) == pixels;
  fclose(f);
  ok = ok && cache_checksum(names, names_bytes, ds) == hd.checksum;
  /* labels follow from the listing: a cache that disagrees is not used */
  const int64_t *labels = ok ? cb_tensor_data(ds->labels) : NULL;
  for (int64_t i = 0; ok && i < l->count; i++) ok = labels[i] == l->items[i].label;
  free(names);
  free(expected_names);
  if (ok) ok = names_copy(ds, l->classes, l->nclasses) == CB_OK;
  if (!ok) cb_dataset_free(ds);
  return ok;
}

static void make_parent_dirs(const char *path) {
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", path);
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    mkdir(dir, 0755);
    *p = '/';
  }
}

/* Best effort: a cache that cannot be written is simply not there. Written
 * atomically, so readers never see half a file. */
static void save_cache(const cb_dataset *ds, const char *path, const listing *l, uint64_t fp) {
  make_parent_dirs(path);
  cache_header hd = {.version = CACHE_VERSION, .num_classes = (uint32_t)l->nclasses,
                     .n = ds->images->shape[0], .c = ds->images->shape[1],
                     .h = ds->images->shape[2], .w = ds->images->shape[3], .fingerprint = fp};
  memcpy(hd.magic, CACHE_MAGIC, 8);
  char *names = names_block(l, &hd.names_bytes);
  if (!names) return;
  hd.checksum = cache_checksum(names, hd.names_bytes, ds);
  cb_atomic_file f;
  cb_status st = cb_atomic_open(&f, path);
  if (st == CB_OK) st = cb_atomic_write(&f, &hd, sizeof hd);
  if (st == CB_OK) st = cb_atomic_write(&f, names, (size_t)hd.names_bytes);
  if (st == CB_OK) st = cb_atomic_write(&f, cb_tensor_data(ds->labels), (size_t)hd.n * 8);
  if (st == CB_OK)
    st = cb_atomic_write(&f, cb_tensor_data(ds->images), (size_t)cb_tensor_numel(ds->images));
  if (st == CB_OK) cb_atomic_commit(&f);
  free(names);
}

/* ---- the reader ---- */

cb_status cb_read_image_folder(cb_dataset *ds, const char *root, const char *cache_path) {
  memset(ds, 0, sizeof *ds);
  listing l;
  cb_status st = list_folder(&l, root);
  if (st != CB_OK) return st;
  uint64_t fp = fingerprint_of(&l);
  if (cache_path && load_cache(ds, cache_path, &l, fp)) {
    listing_free(&l);
    return CB_OK;
  }
  /* the first image fixes the size every other must have */
  uint8_t *bytes;
  size_t size;
  cb_tensor *first = NULL;
  if ((st = read_plain(l.items[0].path, l.items[0].size, &bytes, &size)) == CB_OK) {
    st = cb_decode_image(&first, bytes, size, l.items[0].path);
    free(bytes);
  }
  decode_job *job = NULL;
  if (st == CB_OK && !(job = calloc(1, sizeof *job))) st = cb_fail(CB_ENOMEM, "out of memory");
  if (st == CB_OK) {
    *job = (decode_job){.l = &l, .c = first->shape[0], .h = first->shape[1], .w = first->shape[2]};
    int64_t plane = job->c * job->h * job->w, total;
    if (cb_mul_overflows(plane, l.count, &total) || total > CB_IMAGE_FOLDER_MAX_BYTES)
      st = cb_fail(CB_EINVAL, "%s: %lld images of %lld x %lld x %lld would decode to more than "
                   "the %lld GiB cbnet holds in memory", root, (long long)l.count,
                   (long long)job->c, (long long)job->h, (long long)job->w,
                   (long long)(CB_IMAGE_FOLDER_MAX_BYTES >> 30));
  }
  if (st == CB_OK) {
    for (int i = 0; i < 64; i++) job->failed_at[i] = -1;
    int64_t shape[4] = {l.count, job->c, job->h, job->w};
    if ((st = cb_tensor_empty(&ds->images, 4, shape, CB_UINT8)) == CB_OK &&
        (st = cb_tensor_empty(&ds->labels, 1, &l.count, CB_INT64)) == CB_OK) {
      job->images = cb_tensor_data(ds->images);
      int64_t *labels = cb_tensor_data(ds->labels);
      for (int64_t i = 0; i < l.count; i++) labels[i] = l.items[i].label;
      cb_parallel_for(l.count, 64, decode_range, job);
      /* report the failure of the earliest file, whichever thread saw it */
      int worst = -1;
      for (int c = 0; c < 64; c++)
        if (job->failed_at[c] >= 0 && (worst < 0 || job->failed_at[c] < job->failed_at[worst])) worst = c;
      if (worst >= 0) st = cb_fail(job->failed_status[worst], "%s", job->message[worst]);
    }
  }
  if (st == CB_OK) st = names_copy(ds, l.classes, l.nclasses);
  if (st == CB_OK && cache_path) save_cache(ds, cache_path, &l, fp);
  if (st != CB_OK) cb_dataset_free(ds);
  cb_tensor_release(first);
  free(job);
  listing_free(&l);
  return st;
}

/* ---- writing ---- */

cb_status cb_write_image(const cb_tensor *image, const char *path) {
  if (image->dtype != CB_UINT8 || image->ndim != 3 || (image->shape[0] != 1 && image->shape[0] != 3))
    return cb_fail(CB_ESHAPE, "write_image: expected a uint8 C x H x W tensor with C = 1 or 3");
  int64_t c = image->shape[0], h = image->shape[1], w = image->shape[2];
  uint8_t *hwc = malloc((size_t)(c * h * w));
  if (!hwc) return cb_fail(CB_ENOMEM, "write_image: out of memory");
  int64_t index[3];
  for (index[0] = 0; index[0] < c; index[0]++)
    for (index[1] = 0; index[1] < h; index[1]++)
      for (index[2] = 0; index[2] < w; index[2]++)
        hwc[(index[1] * w + index[2]) * c + index[0]] = (uint8_t)cb_tensor_get(image, index);
  const char *dot = strrchr(path, '.');
  int ok;
  if (dot && !strcasecmp(dot, ".bmp")) ok = stbi_write_bmp(path, (int)w, (int)h, (int)c, hwc);
  else if (dot && (!strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")))
    ok = stbi_write_jpg(path, (int)w, (int)h, (int)c, hwc, 95);
  else ok = stbi_write_png(path, (int)w, (int)h, (int)c, hwc, (int)(w * c));
  free(hwc);
  return ok ? CB_OK : cb_fail(CB_EIO, "%s: cannot write image", path);
}
