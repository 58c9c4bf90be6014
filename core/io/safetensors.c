#include "io/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/file.h"

#define MAX_HEADER (100 << 20) /* the format's own limit */

static const struct {
  const char *name;
  cb_dtype dtype;
} dtype_names[] = {{"F32", CB_FLOAT32}, {"I64", CB_INT64}, {"U8", CB_UINT8}, {"BOOL", CB_BOOL}};

void cb_safetensors_free(cb_safetensors *st) {
  if (!st) return;
  for (int i = 0; i < st->count; i++) {
    if (st->names) free(st->names[i]);
    if (st->tensors) cb_tensor_release(st->tensors[i]);
  }
  for (int i = 0; i < st->meta_count; i++) {
    if (st->meta_keys) free(st->meta_keys[i]);
    if (st->meta_values) free(st->meta_values[i]);
  }
  free(st->names);
  free(st->tensors);
  free(st->meta_keys);
  free(st->meta_values);
  memset(st, 0, sizeof *st);
}

/* ---- a strict reader for the header's JSON subset ---- */

typedef struct {
  const char *p, *end, *file;
  cb_status st;
} json;

static bool json_fail(json *j, const char *what) {
  if (j->st == CB_OK) j->st = cb_fail(CB_EFORMAT, "%s: bad safetensors header: %s", j->file, what);
  return false;
}

static void skip_space(json *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t')) j->p++;
}

static bool expect(json *j, char c) {
  skip_space(j);
  if (j->p < j->end && *j->p == c) {
    j->p++;
    return true;
  }
  char msg[32];
  snprintf(msg, sizeof msg, "expected '%c'", c);
  return json_fail(j, msg);
}

static bool peek(json *j, char c) {
  skip_space(j);
  return j->p < j->end && *j->p == c;
}

/* A string into a malloc'd buffer (escapes: \" \\ \/ \b \f \n \r \t; \u
 * for ASCII only, enough for names and metadata cbnet writes). */
static bool parse_string(json *j, char **out) {
  *out = NULL;
  if (!expect(j, '"')) return false;
  size_t cap = 16, len = 0;
  char *s = malloc(cap);
  if (!s) return json_fail(j, "out of memory");
  while (j->p < j->end && *j->p != '"') {
    char c = *j->p++;
    if ((unsigned char)c < 0x20) {
      free(s);
      return json_fail(j, "control character in a string");
    }
    if (c == '\\') {
      if (j->p >= j->end) break;
      char e = *j->p++;
      switch (e) {
      case '"': case '\\': case '/': c = e; break;
      case 'b': c = '\b'; break;
      case 'f': c = '\f'; break;
      case 'n': c = '\n'; break;
      case 'r': c = '\r'; break;
      case 't': c = '\t'; break;
      case 'u': {
        unsigned v = 0;
        for (int k = 0; k < 4; k++) {
          char h = j->p < j->end ? *j->p++ : 0;
          v = v * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                  : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 99);
        }
        if (v == 0 || v > 0x7f) {
          free(s);
          return json_fail(j, "only ASCII \\u escapes are supported");
        }
        c = (char)v;
        break;
      }
      default: free(s); return json_fail(j, "bad escape in a string");
      }
    }
    if (len + 2 > cap) {
      char *bigger = realloc(s, cap *= 2);
      if (!bigger) {
        free(s);
        return json_fail(j, "out of memory");
      }
      s = bigger;
    }
    s[len++] = c;
  }
  s[len] = 0;
  if (j->p >= j->end) {
    free(s);
    return json_fail(j, "unterminated string");
  }
  j->p++;
  *out = s;
  return true;
}

static bool parse_uint(json *j, int64_t *out) {
  skip_space(j);
  if (j->p >= j->end || *j->p < '0' || *j->p > '9') return json_fail(j, "expected a non-negative integer");
  int64_t v = 0;
  while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
    if (v > (INT64_MAX - 9) / 10) return json_fail(j, "integer too large");
    v = v * 10 + (*j->p++ - '0');
  }
  *out = v;
  return true;
}

/* [a, b, ...] of up to max integers */
static bool parse_uint_list(json *j, int64_t *values, int max, int *count) {
  *count = 0;
  if (!expect(j, '[')) return false;
  if (peek(j, ']')) return expect(j, ']');
  do {
    if (*count >= max) return json_fail(j, "too many dims");
    if (!parse_uint(j, &values[(*count)++])) return false;
  } while (peek(j, ',') && expect(j, ','));
  return expect(j, ']');
}

typedef struct {
  char *name;
  cb_dtype dtype;
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  int64_t begin, end;
} header_entry;

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]} in any order */
static bool parse_entry(json *j, header_entry *e) {
  bool have_dtype = false, have_shape = false, have_offsets = false;
  if (!expect(j, '{')) return false;
  do {
    char *key;
    if (!parse_string(j, &key)) return false;
    bool ok = expect(j, ':');
    if (ok && strcmp(key, "dtype") == 0) {
      char *d;
      ok = parse_string(j, &d);
      if (ok) {
        have_dtype = false;
        for (size_t k = 0; k < sizeof dtype_names / sizeof *dtype_names; k++)
          if (strcmp(d, dtype_names[k].name) == 0) {
            e->dtype = dtype_names[k].dtype;
            have_dtype = true;
          }
        if (!have_dtype) ok = json_fail(j, "unsupported dtype (F32, I64, U8 and BOOL are)");
        free(d);
      }
    } else if (ok && strcmp(key, "shape") == 0) {
      ok = have_shape = parse_uint_list(j, e->shape, CB_MAX_DIMS, &e->ndim);
    } else if (ok && strcmp(key, "data_offsets") == 0) {
      int64_t offsets[2];
      int n;
      ok = parse_uint_list(j, offsets, 2, &n) && (n == 2 || json_fail(j, "data_offsets needs 2 values"));
      e->begin = offsets[0];
      e->end = offsets[1];
      have_offsets = ok;
    } else if (ok) {
      ok = json_fail(j, "unknown field in a tensor entry");
    }
    free(key);
    if (!ok) return false;
  } while (peek(j, ',') && expect(j, ','));
  if (!expect(j, '}')) return false;
  if (!have_dtype || !have_shape || !have_offsets)
    return json_fail(j, "a tensor entry needs dtype, shape and data_offsets");
  return true;
}

static bool grow(void **items, int count, size_t size) {
  if (count % 16 != 0) return true;
  void *bigger = realloc(*items, size * (size_t)(count + 16));
  if (!bigger) return false;
  *items = bigger;
  return true;
}

static bool parse_metadata(json *j, cb_safetensors *out) {
  if (!expect(j, '{')) return false;
  if (peek(j, '}')) return expect(j, '}');
  do {
    if (!grow((void **)&out->meta_keys, out->meta_count, sizeof(char *)) ||
        !grow((void **)&out->meta_values, out->meta_count, sizeof(char *)))
      return json_fail(j, "out of memory");
    char *key = NULL, *value = NULL;
    bool ok = parse_string(j, &key) && expect(j, ':') && parse_string(j, &value);
    if (!ok) {
      free(key);
      free(value);
      return false;
    }
    out->meta_keys[out->meta_count] = key;
    out->meta_values[out->meta_count] = value;
    out->meta_count++;
  } while (peek(j, ',') && expect(j, ','));
  return expect(j, '}');
}

static int by_begin(const void *a, const void *b) {
  int64_t x = ((const header_entry *)a)->begin, y = ((const header_entry *)b)->begin;
  return x < y ? -1 : x > y;
}

cb_status cb_parse_safetensors(cb_safetensors *out, const uint8_t *bytes, size_t size,
                               const char *name) {
  memset(out, 0, sizeof *out);
  if (size < 8) return cb_fail(CB_EFORMAT, "%s: too short for a safetensors file", name);
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; i--) header_size = header_size << 8 | bytes[i];
  if (header_size > MAX_HEADER || header_size > size - 8)
    return cb_fail(CB_EFORMAT, "%s: header length %llu does not fit the file (%zu bytes)", name,
                   (unsigned long long)header_size, size);
  json j = {(const char *)bytes + 8, (const char *)bytes + 8 + header_size, name, CB_OK};
  const uint8_t *data = bytes + 8 + header_size;
  size_t data_size = size - 8 - (size_t)header_size;
  header_entry *entries = NULL;
  int n = 0;
  bool ok = expect(&j, '{');
  if (ok && !peek(&j, '}')) {
    do {
      char *key;
      if (!(ok = parse_string(&j, &key) && expect(&j, ':'))) {
        free(key); /* NULL when the string itself failed */
        break;
      }
      if (strcmp(key, "__metadata__") == 0) {
        free(key);
        ok = parse_metadata(&j, out);
        continue;
      }
      if (!grow((void **)&entries, n, sizeof *entries)) {
        free(key);
        ok = json_fail(&j, "out of memory");
        break;
      }
      memset(&entries[n], 0, sizeof entries[n]);
      entries[n].name = key;
      ok = parse_entry(&j, &entries[n]);
      n++;
    } while (ok && peek(&j, ',') && expect(&j, ','));
  }
  ok = ok && expect(&j, '}');
  skip_space(&j);
  if (ok && j.p != j.end) ok = json_fail(&j, "text after the header object");
  /* every entry: size from dtype and shape, inside the data, no overlaps */
  for (int i = 0; ok && i < n; i++) {
    header_entry *e = &entries[i];
    int64_t count = 1;
    for (int d = 0; d < e->ndim; d++) {
      if (e->shape[d] > 0 && count > INT64_MAX / 8 / e->shape[d]) count = -1;
      if (count >= 0) count *= e->shape[d];
    }
    if (count < 0 || e->end < e->begin || (uint64_t)e->end > data_size ||
        e->end - e->begin != count * cb_dtype_size(e->dtype)) {
      j.st = cb_fail(CB_EFORMAT, "%s: tensor '%s': offsets [%lld, %lld) do not hold its shape "
                     "in %zu data bytes", name, e->name, (long long)e->begin, (long long)e->end,
                     data_size);
      ok = false;
    }
  }
  if (ok && n > 1) {
    qsort(entries, (size_t)n, sizeof *entries, by_begin);
    for (int i = 1; ok && i < n; i++)
      if (entries[i].begin < entries[i - 1].end && entries[i].end > entries[i].begin) {
        j.st = cb_fail(CB_EFORMAT, "%s: tensors '%s' and '%s' overlap", name, entries[i - 1].name,
                       entries[i].name);
        ok = false;
      }
  }
  if (ok) {
    out->names = calloc((size_t)(n ? n : 1), sizeof *out->names);
    out->tensors = calloc((size_t)(n ? n : 1), sizeof *out->tensors);
    if (!out->names || !out->tensors) ok = json_fail(&j, "out of memory");
  }
  for (int i = 0; ok && i < n; i++) {
    header_entry *e = &entries[i];
    if (cb_tensor_empty(&out->tensors[i], e->ndim, e->shape, e->dtype) != CB_OK) {
      j.st = cb_fail(CB_ENOMEM, "%s: out of memory for '%s'", name, e->name);
      ok = false;
      break;
    }
    memcpy(cb_tensor_data(out->tensors[i]), data + e->begin, (size_t)(e->end - e->begin));
    if (e->dtype == CB_BOOL) { /* only 0 and 1 are booleans */
      uint8_t *b = cb_tensor_data(out->tensors[i]);
      for (int64_t k = 0; k < e->end - e->begin; k++) b[k] = b[k] != 0;
    }
    out->names[i] = e->name;
    e->name = NULL;
    out->count = i + 1;
  }
  for (int i = 0; i < n; i++) free(entries[i].name);
  free(entries);
  if (!ok) {
    cb_safetensors_free(out);
    return j.st != CB_OK ? j.st : cb_fail(CB_EFORMAT, "%s: bad safetensors file", name);
  }
  return CB_OK;
}

cb_status cb_load_safetensors(cb_safetensors *out, const char *path) {
  uint8_t *bytes;
  size_t size;
  cb_status st = cb_read_file(path, CB_SAFETENSORS_MAX_BYTES, &bytes, &size);
  if (st != CB_OK) return st;
  st = cb_parse_safetensors(out, bytes, size, path);
  free(bytes);
  return st;
}

/* ---- writing ---- */

typedef struct {
  char *s;
  size_t len, cap;
  bool oom;
} text;

static void append(text *t, const char *s, size_t n) {
  if (t->oom) return;
  if (t->len + n + 1 > t->cap) {
    size_t cap = (t->cap ? t->cap : 256);
    while (cap < t->len + n + 1) cap *= 2;
    char *bigger = realloc(t->s, cap);
    if (!bigger) {
      t->oom = true;
      return;
    }
    t->s = bigger;
    t->cap = cap;
  }
  memcpy(t->s + t->len, s, n);
  t->len += n;
  t->s[t->len] = 0;
}

static void append_str(text *t, const char *s) { append(t, s, strlen(s)); }

static void append_json_string(text *t, const char *s) {
  append_str(t, "\"");
  for (; *s; s++) {
    char buf[8];
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      buf[0] = '\\';
      buf[1] = (char)c;
      append(t, buf, 2);
    } else if (c < 0x20) {
      snprintf(buf, sizeof buf, "\\u%04x", c);
      append_str(t, buf);
    } else {
      append(t, (const char *)s, 1);
    }
  }
  append_str(t, "\"");
}

static const char *dtype_tag(cb_dtype d) {
  for (size_t k = 0; k < sizeof dtype_names / sizeof *dtype_names; k++)
    if (dtype_names[k].dtype == d) return dtype_names[k].name;
  return NULL;
}

cb_status cb_save_safetensors(const cb_safetensors *st, const char *path) {
  text h = {0};
  int64_t offset = 0;
  cb_tensor **contiguous = calloc((size_t)(st->count ? st->count : 1), sizeof *contiguous);
  if (!contiguous) return cb_fail(CB_ENOMEM, "%s: out of memory", path);
  cb_status status = CB_OK;
  append_str(&h, "{");
  if (st->meta_count > 0) {
    append_str(&h, "\"__metadata__\":{");
    for (int i = 0; i < st->meta_count; i++) {
      if (i) append_str(&h, ",");
      append_json_string(&h, st->meta_keys[i]);
      append_str(&h, ":");
      append_json_string(&h, st->meta_values[i]);
    }
    append_str(&h, "}");
  }
  for (int i = 0; i < st->count && status == CB_OK; i++)
    for (int j = 0; j < i && status == CB_OK; j++)
      if (strcmp(st->names[i], st->names[j]) == 0)
        status = cb_fail(CB_EINVAL, "%s: the name '%s' appears twice", path, st->names[i]);
  for (int i = 0; i < st->count && status == CB_OK; i++) {
    const cb_tensor *t = st->tensors[i];
    if (!dtype_tag(t->dtype)) {
      status = cb_fail(CB_ETYPE, "%s: cannot store dtype %s", path, cb_dtype_name(t->dtype));
      break;
    }
    if ((status = cb_tensor_contiguous(&contiguous[i], t)) != CB_OK) break;
    int64_t bytes = cb_tensor_numel(t) * cb_dtype_size(t->dtype);
    char buf[96];
    append_str(&h, (i || st->meta_count) ? "," : "");
    append_json_string(&h, st->names[i]);
    snprintf(buf, sizeof buf, ":{\"dtype\":\"%s\",\"shape\":[", dtype_tag(t->dtype));
    append_str(&h, buf);
    for (int d = 0; d < t->ndim; d++) {
      snprintf(buf, sizeof buf, d ? ",%lld" : "%lld", (long long)t->shape[d]);
      append_str(&h, buf);
    }
    snprintf(buf, sizeof buf, "],\"data_offsets\":[%lld,%lld]}", (long long)offset,
             (long long)(offset + bytes));
    append_str(&h, buf);
    offset += bytes;
  }
  append_str(&h, "}");
  while (h.len % 8) append_str(&h, " "); /* the data starts 8-byte aligned */
  if (h.oom && status == CB_OK) status = cb_fail(CB_ENOMEM, "%s: out of memory", path);
  cb_atomic_file f;
  if (status == CB_OK) status = cb_atomic_open(&f, path);
  if (status == CB_OK) {
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    status = cb_atomic_write(&f, len, 8);
    if (status == CB_OK) status = cb_atomic_write(&f, h.s, h.len);
    for (int i = 0; status == CB_OK && i < st->count; i++) {
      size_t bytes = (size_t)(cb_tensor_numel(contiguous[i]) * cb_dtype_size(contiguous[i]->dtype));
      status = cb_atomic_write(&f, cb_tensor_data(contiguous[i]), bytes);
    }
    if (status == CB_OK) status = cb_atomic_commit(&f);
  }
  for (int i = 0; i < st->count; i++) cb_tensor_release(contiguous[i]);
  free(contiguous);
  free(h.s);
  return status;
}
