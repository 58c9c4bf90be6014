/* Dataset readers, batch augmentation and weighted sampling for Lua. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/file.h"
#include "data/augment.h"
#include "data/image_ops.h"
#include "binding.h"
#include "data/data.h"
#include "io/safetensors.h"

/* Pushes images, labels and the class-name list; frees ds. */
static int push_dataset(lua_State *L, cb_dataset *ds) {
  cbl_push_tensor(L, ds->images);
  cbl_push_tensor(L, ds->labels);
  ds->images = ds->labels = NULL;
  lua_createtable(L, ds->num_classes, 0);
  for (int i = 0; i < ds->num_classes; i++) {
    lua_pushstring(L, ds->class_names[i]);
    lua_rawseti(L, -2, i + 1);
  }
  cb_dataset_free(ds);
  return 3;
}

/* read_cifar10(dir, train) -> images, labels, class_names */
static int l_read_cifar10(lua_State *L) {
  const char *dir = cbl_check_cstring(L, 1);
  cb_dataset ds;
  cbl_check(L, cb_read_cifar10(&ds, dir, lua_toboolean(L, 2)));
  return push_dataset(L, &ds);
}

/* read_cifar100(dir, train) -> images, labels, class_names */
static int l_read_cifar100(lua_State *L) {
  const char *dir = cbl_check_cstring(L, 1);
  cb_dataset ds;
  cbl_check(L, cb_read_cifar100(&ds, dir, lua_toboolean(L, 2)));
  return push_dataset(L, &ds);
}

/* read_image_folder(root[, cache_path]) -> images, labels, class_names */
static int l_read_image_folder(lua_State *L) {
  const char *root = cbl_check_cstring(L, 1), *cache = cbl_opt_cstring(L, 2, NULL);
  cb_dataset ds;
  cbl_check(L, cb_read_image_folder(&ds, root, cache));
  return push_dataset(L, &ds);
}

static int l_read_idx(lua_State *L) {
  cb_tensor *t;
  cbl_check(L, cb_read_idx(&t, cbl_check_cstring(L, 1)));
  cbl_push_tensor(L, t);
  return 1;
}

/* parse_idx(bytes[, name]) and decode_image(bytes[, name]): the parsers on a
 * Lua string (name is for messages) */
typedef cb_status (*bytes_parser)(cb_tensor **, const uint8_t *, size_t, const char *);

static int parse_string_with(lua_State *L, bytes_parser parse) {
  size_t size;
  const char *bytes = luaL_checklstring(L, 1, &size);
  cb_tensor *t;
  cbl_check(L, parse(&t, (const uint8_t *)bytes, size, cbl_opt_cstring(L, 2, "(bytes)")));
  cbl_push_tensor(L, t);
  return 1;
}

static int l_parse_idx(lua_State *L) { return parse_string_with(L, cb_parse_idx); }
static int l_decode_image(lua_State *L) { return parse_string_with(L, cb_decode_image); }

static int l_write_image(lua_State *L) {
  cbl_check(L, cb_write_image(cbl_check_tensor(L, 1), cbl_check_cstring(L, 2)));
  return 0;
}

static double opt_number_field(lua_State *L, int table, const char *key, double def) {
  lua_getfield(L, table, key);
  double v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
  lua_pop(L, 1);
  return v;
}

/* Reads a list of per-channel numbers from options[key] into values. */
static void channel_list(lua_State *L, int table, const char *key, double *values, double def) {
  for (int i = 0; i < CB_AUGMENT_MAX_CHANNELS; i++) values[i] = def;
  lua_getfield(L, table, key);
  if (lua_istable(L, -1)) {
    lua_Integer n = cbl_list_len(L, -1);
    for (int i = 0; i < n && i < CB_AUGMENT_MAX_CHANNELS; i++) {
      lua_geti(L, -1, i + 1);
      values[i] = luaL_checknumber(L, -1);
      lua_pop(L, 1);
    }
  }
  lua_pop(L, 1);
}

/* augment_batch(images, indices, {crop_padding, flip, cutout, trivial_augment,
 * scale, mean, std}[, generator]) -> float32 batch */
static int l_augment_batch(lua_State *L) {
  cb_tensor *images = cbl_check_tensor(L, 1), *indices = cbl_check_tensor(L, 2), *out;
  cb_augment_options o = {0};
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    o.crop_padding = (int64_t)opt_number_field(L, 3, "crop_padding", 0);
    o.cutout = (int64_t)opt_number_field(L, 3, "cutout", 0);
    lua_getfield(L, 3, "trivial_augment");
    o.trivial_augment = lua_toboolean(L, -1);
    lua_pop(L, 1);
    o.scale = opt_number_field(L, 3, "scale", 1.0 / 255);
    lua_getfield(L, 3, "flip");
    o.flip = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 3, "mean");
    o.normalize = !lua_isnil(L, -1);
    lua_pop(L, 1);
    channel_list(L, 3, "mean", o.mean, 0);
    channel_list(L, 3, "std", o.std, 1);
  } else {
    o.scale = 1.0 / 255;
  }
  cbl_check(L, cb_augment_batch(&out, images, indices, &o, cbl_opt_generator(L, 4)));
  cbl_push_tensor(L, out);
  return 1;
}

/* multinomial(weights, n, replacement[, generator]) -> int64 indices (0-based) */
static int l_multinomial(lua_State *L) {
  cb_tensor *w = cbl_check_tensor(L, 1), *out;
  cbl_check(L, cb_multinomial(&out, w, luaL_checkinteger(L, 2), lua_toboolean(L, 3),
                              cbl_opt_generator(L, 4)));
  cbl_push_tensor(L, out);
  return 1;
}

/* Sorted string keys of the table at idx, as a malloc'd array of borrowed
 * strings (kept alive by the table). */
static int sort_strings(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static const char **table_keys(lua_State *L, int idx, int *count) {
  *count = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "safetensors: names must be strings");
    const char *name = lua_tolstring(L, -2, &len);
    if (strlen(name) != len)
      luaL_error(L, "save_safetensors: name '%s...' contains a NUL byte", name);
    (*count)++;
    lua_pop(L, 1);
  }
  const char **keys = lua_newuserdatauv(L, sizeof *keys * (size_t)(*count ? *count : 1), 0);
  int i = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    keys[i++] = lua_tostring(L, -2);
    lua_pop(L, 1);
  }
  qsort(keys, (size_t)*count, sizeof *keys, sort_strings);
  return keys;
}

/* save_safetensors(path, {name = tensor}, {key = "value"}) */
static int l_save_safetensors(lua_State *L) {
  const char *path = cbl_check_cstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3); /* extra arguments would shift the slots used below */
  if (lua_isnil(L, 3)) {
    lua_newtable(L);
    lua_replace(L, 3);
  } else {
    luaL_checktype(L, 3, LUA_TTABLE);
  }
  cb_safetensors st = {0};
  const char **names = table_keys(L, 2, &st.count);   /* at 4 */
  const char **keys = table_keys(L, 3, &st.meta_count); /* at 5 */
  st.names = (char **)names;
  st.meta_keys = (char **)keys;
  st.tensors = lua_newuserdatauv(L, sizeof(cb_tensor *) * (size_t)(st.count ? st.count : 1), 0);
  st.meta_values = lua_newuserdatauv(L, sizeof(char *) * (size_t)(st.meta_count ? st.meta_count : 1), 0);
  for (int i = 0; i < st.count; i++) {
    lua_getfield(L, 2, names[i]);
    cb_tensor *t = cbl_test_tensor(L, -1);
    if (!t) return luaL_error(L, "save_safetensors: '%s' is not a tensor", names[i]);
    st.tensors[i] = t;
    lua_pop(L, 1);
  }
  for (int i = 0; i < st.meta_count; i++) {
    lua_getfield(L, 3, keys[i]);
    if (lua_type(L, -1) != LUA_TSTRING)
      return luaL_error(L, "save_safetensors: metadata '%s' must be a string", keys[i]);
    if (strlen(lua_tostring(L, -1)) != lua_rawlen(L, -1))
      return luaL_error(L, "save_safetensors: metadata '%s' contains a NUL byte", keys[i]);
    st.meta_values[i] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1); /* the string stays alive in the table */
  }
  cbl_check(L, cb_save_safetensors(&st, path));
  return 0;
}

/* file_info(path) -> {path = resolved absolute path, device, inode, size,
 * mtime, kind = "file" | "directory" | "other"}, or nil and a message */
static int l_file_info(lua_State *L) {
  const char *path = cbl_check_cstring(L, 1);
  char resolved[PATH_MAX];
  struct stat s;
  if (!realpath(path, resolved) || stat(resolved, &s) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  lua_createtable(L, 0, 6);
  lua_pushstring(L, resolved);
  lua_setfield(L, -2, "path");
  lua_pushinteger(L, (lua_Integer)s.st_dev);
  lua_setfield(L, -2, "device");
  lua_pushinteger(L, (lua_Integer)s.st_ino);
  lua_setfield(L, -2, "inode");
  lua_pushinteger(L, (lua_Integer)s.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)s.st_mtime);
  lua_setfield(L, -2, "mtime");
  lua_pushstring(L, S_ISREG(s.st_mode) ? "file" : S_ISDIR(s.st_mode) ? "directory" : "other");
  lua_setfield(L, -2, "kind");
  return 1;
}

/* write_file_atomic(path, bytes): the file is the old one or all of bytes */
static int l_write_file_atomic(lua_State *L) {
  size_t size;
  const char *path = cbl_check_cstring(L, 1), *bytes = luaL_checklstring(L, 2, &size);
  cbl_check(L, cb_write_file_atomic(path, bytes, size));
  return 0;
}

/* load_safetensors(path) -> {name = tensor}, {key = "value"} */
static int l_load_safetensors(lua_State *L) {
  cb_safetensors st;
  cbl_check(L, cb_load_safetensors(&st, cbl_check_cstring(L, 1)));
  lua_createtable(L, 0, st.count);
  for (int i = 0; i < st.count; i++) {
    cbl_push_tensor(L, st.tensors[i]);
    st.tensors[i] = NULL;
    lua_setfield(L, -2, st.names[i]);
  }
  lua_createtable(L, 0, st.meta_count);
  for (int i = 0; i < st.meta_count; i++) {
    lua_pushstring(L, st.meta_values[i]);
    lua_setfield(L, -2, st.meta_keys[i]);
  }
  cb_safetensors_free(&st);
  return 2;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* image_op(images, name, magnitude) -> uint8 images (data/image_ops.h) */
static int l_image_op(lua_State *L) {
  cb_tensor *images = cbl_check_tensor(L, 1), *out;
  const char *name = luaL_checkstring(L, 2);
  double magnitude = luaL_optnumber(L, 3, 0);
  int op = cb_image_op_from_name(name);
  if (op < 0) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < CB_IMAGE_OP_COUNT; i++) {
      luaL_addstring(&b, i ? ", " : "");
      luaL_addstring(&b, cb_image_op_names[i]);
    }
    luaL_pushresult(&b);
    return luaL_error(L, "image_op: unknown operation '%s' (known: %s)", name, lua_tostring(L, -1));
  }
  cbl_check(L, cb_image_op_batch(&out, images, (cb_image_op)op, magnitude));
  cbl_push_tensor(L, out);
  return 1;
}

static const luaL_Reg data_functions[] = {
    {"write_file_atomic", l_write_file_atomic}, {"file_info", l_file_info},
    {"save_safetensors", l_save_safetensors}, {"load_safetensors", l_load_safetensors},
    {"isatty", l_isatty},
    {"read_cifar10", l_read_cifar10}, {"read_cifar100", l_read_cifar100},
    {"read_image_folder", l_read_image_folder},
    {"read_idx", l_read_idx}, {"parse_idx", l_parse_idx}, {"decode_image", l_decode_image},
    {"write_image", l_write_image}, {"augment_batch", l_augment_batch}, {"image_op", l_image_op},
    {"multinomial", l_multinomial}, {NULL, NULL}};

void cbl_open_data(lua_State *L) { luaL_setfuncs(L, data_functions, 0); }
