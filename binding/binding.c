/* luaopen_cbnet_core: the module table of the C binding (creation,
 * generators, threads, machine info). lua/cbnet/init.lua builds the `cbnet`
 * module on top of it. */
#include <dlfcn.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "binding.h"

/* ---- helpers shared by the binding files (declared in binding.h) ---- */

/* A chunk of cbnet's own Lua modules: a file in a folder named cbnet (or
 * cbnet/nn). */
static bool is_library_source(const char *source) {
  if (source[0] != '@') return false;
  const char *slash = strrchr(source, '/');
  if (!slash) return false;
  size_t dir_len = (size_t)(slash - source);
  static const char *const dirs[] = {"/cbnet", "/cbnet/nn"};
  for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
    size_t n = strlen(dirs[i]);
    if (dir_len >= n && strncmp(slash - n, dirs[i], n) == 0) return true;
  }
  return false;
}

/* "file:line: " of the first caller outside cbnet's modules, so an error in
 * a layer points at the user's line that called it (luaL_where(L, 1) when
 * every caller is cbnet's). */
static void push_user_where(lua_State *L) {
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    lua_getinfo(L, "Sl", &ar);
    if (ar.currentline > 0 && !is_library_source(ar.source)) {
      lua_pushfstring(L, "%s:%d: ", ar.short_src, ar.currentline);
      return;
    }
  }
  luaL_where(L, 1);
}

void cbl_check(lua_State *L, cb_status st) {
  if (st == CB_OK) return;
  push_user_where(L);
  lua_pushstring(L, cb_last_error());
  lua_concat(L, 2);
  lua_error(L);
}

/* Garbage tensors hold memory until the collector finalizes them, and Lua's
 * pacing sees only its own small heap (a tensor is a few dozen bytes to
 * it): left alone, a training loop lets hundreds of MiB of dead activations
 * pile up, and every step page-faults fresh memory in (about 1 ms per
 * 4 MiB). So the binding paces full collections by the tensors' memory
 * itself: whenever the storage alive (cb_storage_live_bytes, garbage
 * included) has grown GARBAGE_BYTES above its lowest level since the last
 * full collection, it collects. Dead tensors then hold at most about
 * GARBAGE_BYTES more than the program's own peak. A collection of Lua's
 * heap takes about 0.1 ms: ResNet-32 at batch 128 pays 1.4 ms a step
 * (14 collections), peak memory 290 MiB. (Reporting each tensor's bytes to
 * the collector as debt instead, every 64 KiB, ran most of a cycle per
 * report: 3.8 ms a step, 282 MiB. 32 MiB here: 0.9 ms, 291 MiB, but
 * fastnet's peak 300 against 285.) */
#define GARBAGE_BYTES ((int64_t)16 << 20)

/* The least storage alive since the last full collection (-1: none yet),
 * per thread as Lua states are. */
static _Thread_local int64_t live_floor = -1;

void cbl_push_tensor(lua_State *L, cb_tensor *t) {
  tensor_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->t = t;
  luaL_setmetatable(L, TENSOR_MT);
  int64_t live = cb_storage_live_bytes();
  if (live_floor < 0 || live < live_floor) live_floor = live;
  if (live - live_floor >= GARBAGE_BYTES) {
    lua_gc(L, LUA_GCCOLLECT);
    live_floor = cb_storage_live_bytes();
  }
}

cb_tensor *cbl_test_tensor(lua_State *L, int arg) {
  tensor_box *box = luaL_testudata(L, arg, TENSOR_MT);
  if (!box) return NULL;
  if (!box->t) luaL_argerror(L, arg, "tensor was closed");
  return box->t;
}

cb_tensor *cbl_check_tensor(lua_State *L, int arg) {
  cb_tensor *t = cbl_test_tensor(L, arg);
  if (!t) luaL_typeerror(L, arg, "tensor");
  return t;
}

cb_tensor *cbl_check_operand(lua_State *L, int arg, const cb_tensor *like) {
  cb_tensor *t = cbl_test_tensor(L, arg);
  if (t) return t;
  if (lua_type(L, arg) == LUA_TBOOLEAN) {
    cbl_check(L, cb_tensor_scalar(&t, lua_toboolean(L, arg), CB_BOOL));
  } else if (lua_type(L, arg) == LUA_TNUMBER) {
    bool integer = lua_isinteger(L, arg);
    cb_dtype dtype = (integer && like && like->dtype != CB_FLOAT32) ? CB_INT64 : CB_FLOAT32;
    cbl_check(L, cb_tensor_empty(&t, 0, NULL, dtype));
    cb_status st = cbl_fill_value(L, t, arg);
    if (st != CB_OK) cb_tensor_release(t);
    cbl_check(L, st);
  } else {
    luaL_typeerror(L, arg, "tensor or number");
  }
  cbl_push_tensor(L, t);
  lua_replace(L, arg); /* keep it alive (and collectable) in its own slot */
  return t;
}

int cbl_dim_from_lua(lua_State *L, int arg, lua_Integer d) {
  if (d == 0) luaL_argerror(L, arg, "dims are 1-based (or negative, counting from the end)");
  if (d > CB_MAX_DIMS || d < -CB_MAX_DIMS)
    luaL_argerror(L, arg, lua_pushfstring(L, "dim %I out of range (a tensor has at most %d)",
                                          d, CB_MAX_DIMS));
  return d > 0 ? (int)d - 1 : (int)d;
}

int cbl_check_dim(lua_State *L, int arg) {
  return cbl_dim_from_lua(L, arg, luaL_checkinteger(L, arg));
}

int cbl_opt_dim(lua_State *L, int arg, int def) {
  return lua_isnoneornil(L, arg) ? def : cbl_check_dim(L, arg);
}

/* An integer, or a float with an integral value (as luaL_checkinteger). */
static int64_t check_size(lua_State *L, int arg) {
  int is_integer;
  lua_Integer v = lua_tointegerx(L, arg, &is_integer);
  if (!is_integer) {
    if (lua_type(L, arg) == LUA_TNUMBER) luaL_argerror(L, arg, "size must be an integer");
    luaL_typeerror(L, arg, "integer size");
  }
  return v;
}

int cbl_read_shape(lua_State *L, int first, int *ndim, int64_t *shape) {
  *ndim = 0;
  if (lua_type(L, first) == LUA_TTABLE) {
    lua_Integer n = cbl_list_len(L, first);
    if (n > CB_MAX_DIMS)
      luaL_argerror(L, first, lua_pushfstring(L, "%d dims given, at most %d are supported",
                                              (int)n, CB_MAX_DIMS));
    for (lua_Integer i = 1; i <= n; i++) {
      lua_geti(L, first, i);
      int is_integer;
      shape[(*ndim)++] = lua_tointegerx(L, -1, &is_integer);
      if (!is_integer)
        luaL_argerror(L, first, lua_pushfstring(L, "size %d is not an integer", (int)i));
      lua_pop(L, 1);
    }
    return first + 1;
  }
  int arg = first;
  while (lua_type(L, arg) == LUA_TNUMBER) {
    if (*ndim >= CB_MAX_DIMS)
      luaL_argerror(L, arg, lua_pushfstring(L, "at most %d dims are supported", CB_MAX_DIMS));
    shape[(*ndim)++] = check_size(L, arg);
    arg++;
  }
  return arg;
}

cb_dtype cbl_opt_dtype(lua_State *L, int arg, cb_dtype def) {
  if (lua_isnoneornil(L, arg)) return def;
  cb_dtype dtype;
  if (cb_dtype_parse(luaL_checkstring(L, arg), &dtype) != CB_OK)
    luaL_argerror(L, arg, cb_last_error());
  return dtype;
}

const char *cbl_check_cstring(lua_State *L, int arg) {
  size_t len;
  const char *s = luaL_checklstring(L, arg, &len);
  if (strlen(s) != len) luaL_argerror(L, arg, "string contains a NUL byte");
  return s;
}

const char *cbl_opt_cstring(lua_State *L, int arg, const char *def) {
  return lua_isnoneornil(L, arg) ? def : cbl_check_cstring(L, arg);
}

/* Levenshtein distance of a and b (short names; longer ones count as far). */
static int edit_distance(const char *a, const char *b) {
  enum { MAX = 64 };
  size_t n = strlen(a), m = strlen(b);
  if (n >= MAX || m >= MAX) return MAX;
  int row[MAX + 1];
  for (size_t j = 0; j <= m; j++) row[j] = (int)j;
  for (size_t i = 1; i <= n; i++) {
    int diagonal = row[0];
    row[0] = (int)i;
    for (size_t j = 1; j <= m; j++) {
      int above = row[j];
      int best = diagonal + (a[i - 1] != b[j - 1]);
      if (above + 1 < best) best = above + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diagonal = above;
    }
  }
  return row[m];
}

const char *cbl_nearest_key(lua_State *L, int idx, const char *key, const char *const *extra) {
  idx = lua_absindex(L, idx);
  int limit = (int)strlen(key) / 3 + 1, best = limit + 1;
  const char *nearest = NULL;
  for (int i = 0; extra && extra[i]; i++) {
    int d = edit_distance(key, extra[i]);
    if (d < best) best = d, nearest = extra[i];
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING) continue;
    int d = edit_distance(key, lua_tostring(L, -1));
    if (d < best) best = d, nearest = lua_tostring(L, -1); /* kept alive by the table */
  }
  return best <= limit ? nearest : NULL;
}

lua_Integer cbl_list_len(lua_State *L, int idx) {
  return (lua_Integer)lua_rawlen(L, idx);
}

cb_status cbl_fill_value(lua_State *L, cb_tensor *t, int idx) {
  if (lua_isinteger(L, idx)) return cb_tensor_fill_int64_(t, lua_tointeger(L, idx));
  if (lua_isboolean(L, idx)) return cb_tensor_fill_(t, lua_toboolean(L, idx));
  return cb_tensor_fill_(t, lua_tonumber(L, idx));
}

cb_tensor *cbl_opt_tensor(lua_State *L, int arg) {
  return lua_isnoneornil(L, arg) ? NULL : cbl_check_tensor(L, arg);
}

cb_generator *cbl_opt_generator(lua_State *L, int arg) {
  if (lua_isnoneornil(L, arg)) return cb_default_generator();
  return luaL_checkudata(L, arg, GENERATOR_MT);
}

/* ---- cbnet.tensor(nested table[, dtype]) ---- */

typedef struct {
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  bool all_integers, all_booleans;
} table_info;

/* Finds the shape from the first element at each depth. */
static void scan_shape(lua_State *L, int idx, table_info *info) {
  lua_pushvalue(L, idx);
  while (lua_type(L, -1) == LUA_TTABLE) {
    if (info->ndim >= CB_MAX_DIMS)
      luaL_error(L, "tensor: table nested deeper than %d levels", CB_MAX_DIMS);
    lua_Integer n = cbl_list_len(L, -1);
    info->shape[info->ndim++] = n;
    if (n == 0) break;
    lua_geti(L, -1, 1);
    lua_remove(L, -2);
  }
  lua_pop(L, 1);
}

/* Checks every sub-table against the shape and writes values in order. */
static void fill_from_table(lua_State *L, int dim, table_info *info, cb_tensor *t,
                            int64_t *offset) {
  int top = lua_gettop(L);
  if (dim == info->ndim) {
    int type = lua_type(L, top);
    char *p = (char *)t->storage->data + *offset * cb_dtype_size(t->dtype);
    if (lua_isinteger(L, top)) cb_store_int64(p, t->dtype, lua_tointeger(L, top));
    else if (type == LUA_TNUMBER) cb_store(p, t->dtype, lua_tonumber(L, top));
    else if (type == LUA_TBOOLEAN) cb_store(p, t->dtype, lua_toboolean(L, top));
    else luaL_error(L, "tensor: element %I is a %s, expected a number or boolean",
                    (lua_Integer)*offset + 1, luaL_typename(L, top));
    (*offset)++;
    return;
  }
  if (lua_type(L, top) != LUA_TTABLE || cbl_list_len(L, top) != info->shape[dim])
    luaL_error(L, "tensor: ragged nested table: expected %d elements at depth %d, got %s",
               (int)info->shape[dim], dim + 1,
               lua_type(L, top) == LUA_TTABLE
                   ? lua_pushfstring(L, "%I", cbl_list_len(L, top))
                   : luaL_typename(L, top));
  for (int64_t i = 1; i <= info->shape[dim]; i++) {
    lua_geti(L, top, i);
    fill_from_table(L, dim + 1, info, t, offset);
    lua_pop(L, 1);
  }
}

/* Integer/boolean inference over all leaves (PyTorch infers int64 from
 * integers, bool from booleans). */
static void scan_types(lua_State *L, int idx, int depth, int ndim, table_info *info) {
  if (depth == ndim) {
    if (!lua_isinteger(L, idx)) info->all_integers = false;
    if (lua_type(L, idx) != LUA_TBOOLEAN) info->all_booleans = false;
    return;
  }
  if (lua_type(L, idx) != LUA_TTABLE) return; /* reported by fill_from_table */
  lua_Integer n = cbl_list_len(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    scan_types(L, lua_gettop(L), depth + 1, ndim, info);
    lua_pop(L, 1);
  }
}

static int l_tensor(lua_State *L) {
  cb_tensor *t;
  if (lua_type(L, 1) == LUA_TNUMBER || lua_type(L, 1) == LUA_TBOOLEAN) {
    cb_dtype def = lua_isinteger(L, 1) ? CB_INT64 : lua_isboolean(L, 1) ? CB_BOOL : CB_FLOAT32;
    cbl_check(L, cb_tensor_empty(&t, 0, NULL, cbl_opt_dtype(L, 2, def)));
    cbl_push_tensor(L, t);
    cbl_check(L, cbl_fill_value(L, t, 1));
    return 1;
  }
  luaL_checktype(L, 1, LUA_TTABLE);
  table_info info = {0, {0}, true, true};
  scan_shape(L, 1, &info);
  scan_types(L, 1, 0, info.ndim, &info);
  bool empty = false;
  for (int d = 0; d < info.ndim; d++) empty |= info.shape[d] == 0;
  cb_dtype def = empty               ? CB_FLOAT32
                 : info.all_booleans ? CB_BOOL
                 : info.all_integers ? CB_INT64
                                     : CB_FLOAT32;
  cb_dtype dtype = cbl_opt_dtype(L, 2, def);
  cbl_check(L, cb_tensor_empty(&t, info.ndim, info.shape, dtype));
  cbl_push_tensor(L, t); /* owned by Lua before anything can raise */
  lua_pushvalue(L, 1);
  int64_t offset = 0;
  fill_from_table(L, 0, &info, t, &offset);
  lua_pop(L, 1);
  return 1;
}

/* ---- creation from shapes ---- */

/* cbnet.zeros(2, 3[, dtype]) or cbnet.zeros({2, 3}[, dtype]) */
static int create_filled(lua_State *L, double value) {
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  int next = cbl_read_shape(L, 1, &ndim, shape);
  cb_tensor *t;
  cbl_check(L, cb_tensor_full(&t, ndim, shape, cbl_opt_dtype(L, next, CB_FLOAT32), value));
  cbl_push_tensor(L, t);
  return 1;
}

static int l_zeros(lua_State *L) { return create_filled(L, 0); }
static int l_ones(lua_State *L) { return create_filled(L, 1); }

static int l_empty(lua_State *L) {
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  int next = cbl_read_shape(L, 1, &ndim, shape);
  cb_tensor *t;
  cbl_check(L, cb_tensor_empty(&t, ndim, shape, cbl_opt_dtype(L, next, CB_FLOAT32)));
  cbl_push_tensor(L, t);
  return 1;
}

/* cbnet.full({2, 3}, value[, dtype]) */
static int l_full(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cbl_read_shape(L, 1, &ndim, shape);
  cb_dtype def = lua_isinteger(L, 2) ? CB_INT64 : lua_isboolean(L, 2) ? CB_BOOL : CB_FLOAT32;
  if (!lua_isboolean(L, 2)) luaL_checknumber(L, 2);
  cb_tensor *t;
  cbl_check(L, cb_tensor_empty(&t, ndim, shape, cbl_opt_dtype(L, 3, def)));
  cbl_push_tensor(L, t);
  cbl_check(L, cbl_fill_value(L, t, 2));
  return 1;
}

/* cbnet.arange(stop) / arange(start, stop[, step][, dtype]): stop excluded */
static int l_arange(lua_State *L) {
  int nnum = 0;
  while (nnum < 3 && lua_type(L, nnum + 1) == LUA_TNUMBER) nnum++;
  if (nnum == 0) return luaL_typeerror(L, 1, "number");
  double start = 0, stop, step = 1;
  bool integers = true;
  for (int i = 1; i <= nnum; i++) integers = integers && lua_isinteger(L, i);
  if (nnum == 1) stop = lua_tonumber(L, 1);
  else {
    start = lua_tonumber(L, 1);
    stop = lua_tonumber(L, 2);
    if (nnum == 3) step = lua_tonumber(L, 3);
  }
  cb_tensor *t;
  cb_dtype dtype = cbl_opt_dtype(L, nnum + 1, integers ? CB_INT64 : CB_FLOAT32);
  cbl_check(L, cb_tensor_arange(&t, start, stop, step, dtype));
  cbl_push_tensor(L, t);
  return 1;
}

/* ---- random ---- */

/* The remaining arguments after a shape: an optional dtype string and an
 * optional generator, in either order. */
static void read_random_options(lua_State *L, int first, cb_dtype *dtype, cb_generator **g) {
  *g = cb_default_generator();
  for (int arg = first; arg <= lua_gettop(L); arg++) {
    if (lua_type(L, arg) == LUA_TSTRING) *dtype = cbl_opt_dtype(L, arg, *dtype);
    else if (!lua_isnil(L, arg)) *g = luaL_checkudata(L, arg, GENERATOR_MT);
  }
}

static int random_fill(lua_State *L, bool normal) {
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  int next = cbl_read_shape(L, 1, &ndim, shape);
  cb_dtype dtype = CB_FLOAT32;
  cb_generator *g;
  read_random_options(L, next, &dtype, &g);
  if (dtype != CB_FLOAT32) return luaL_error(L, "%s: only float32 is supported",
                                             normal ? "randn" : "rand");
  cb_tensor *t;
  cbl_check(L, cb_tensor_empty(&t, ndim, shape, dtype));
  cbl_push_tensor(L, t);
  cbl_check(L, normal ? cb_normal_(t, 0, 1, g) : cb_uniform_(t, 0, 1, g));
  return 1;
}

static int l_rand(lua_State *L) { return random_fill(L, false); }
static int l_randn(lua_State *L) { return random_fill(L, true); }

/* cbnet.randint(low, high, shape[, generator]): integers in [low, high) */
static int l_randint(lua_State *L) {
  lua_Integer low = luaL_checkinteger(L, 1), high = luaL_checkinteger(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cbl_read_shape(L, 3, &ndim, shape);
  cb_dtype dtype = CB_INT64;
  cb_generator *g;
  read_random_options(L, 4, &dtype, &g);
  cb_tensor *t;
  cbl_check(L, cb_tensor_empty(&t, ndim, shape, dtype));
  cbl_push_tensor(L, t);
  cbl_check(L, cb_randint_(t, low, high, g));
  return 1;
}

/* cbnet.randperm(n[, generator]): 0-based positions, like every index tensor */
static int l_randperm(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  cb_tensor *t;
  cbl_check(L, cb_randperm(&t, n, cbl_opt_generator(L, 2)));
  cbl_push_tensor(L, t);
  return 1;
}

static uint64_t check_seed(lua_State *L, int arg) {
  lua_Integer s = luaL_checkinteger(L, arg);
  return (uint64_t)s;
}

static int l_manual_seed(lua_State *L) {
  cb_manual_seed(check_seed(L, 1));
  return 0;
}

static int l_generator(lua_State *L) {
  uint64_t seed = lua_isnoneornil(L, 1) ? 0 : check_seed(L, 1);
  cb_generator *g = lua_newuserdatauv(L, sizeof *g, 0);
  cb_generator_seed(g, seed);
  luaL_setmetatable(L, GENERATOR_MT);
  return 1;
}

static int g_seed(lua_State *L) {
  cb_generator *g = luaL_checkudata(L, 1, GENERATOR_MT);
  cb_generator_seed(g, check_seed(L, 2));
  lua_settop(L, 1);
  return 1;
}

static int g_initial_seed(lua_State *L) {
  cb_generator *g = luaL_checkudata(L, 1, GENERATOR_MT);
  lua_pushinteger(L, (lua_Integer)g->seed);
  return 1;
}

/* Uniform float in [0, 1), or integer in [1, n] like math.random(n). */
static int g_random(lua_State *L) {
  cb_generator *g = luaL_checkudata(L, 1, GENERATOR_MT);
  if (lua_isnoneornil(L, 2)) {
    lua_pushnumber(L, cb_random_double(g));
    return 1;
  }
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_argcheck(L, n >= 1, 2, "interval is empty");
  lua_pushinteger(L, 1 + (lua_Integer)cb_random_below(g, (uint64_t)n));
  return 1;
}

static int g_tostring(lua_State *L) {
  cb_generator *g = luaL_checkudata(L, 1, GENERATOR_MT);
  lua_pushfstring(L, "cbnet.Generator(seed %I)", (lua_Integer)g->seed);
  return 1;
}

/* ---- joining and products ---- */

/* Reads a Lua list of tensors into a malloc'd array (owned by a temporary
 * userdata so an error cannot leak it). */
static const cb_tensor **check_tensor_list(lua_State *L, int arg, int *n) {
  luaL_checktype(L, arg, LUA_TTABLE);
  lua_Integer len = cbl_list_len(L, arg);
  if (len < 1) luaL_argerror(L, arg, "expected a non-empty list of tensors");
  if (len > INT_MAX) luaL_argerror(L, arg, "too many tensors");
  *n = (int)len;
  const cb_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)*n, 0);
  for (int i = 0; i < *n; i++) {
    lua_geti(L, arg, i + 1);
    cb_tensor *t = cbl_test_tensor(L, -1);
    if (!t) luaL_argerror(L, arg, lua_pushfstring(L, "element %d is not a tensor", i + 1));
    ts[i] = t;
    lua_pop(L, 1);
  }
  return ts;
}

static int join(lua_State *L, bool stack) {
  int n, dim = cbl_opt_dim(L, 2, 0);
  lua_settop(L, 2);
  const cb_tensor **ts = check_tensor_list(L, 1, &n);
  cb_tensor *out;
  cbl_check(L, stack ? cb_stack(&out, n, ts, dim) : cb_cat(&out, n, ts, dim));
  cbl_push_tensor(L, out);
  return 1;
}

static int l_cat(lua_State *L) { return join(L, false); }
static int l_stack(lua_State *L) { return join(L, true); }

static int l_where(lua_State *L) {
  cb_tensor *cond = cbl_check_tensor(L, 1);
  cb_tensor *a = cbl_test_tensor(L, 2), *b = cbl_test_tensor(L, 3), *out;
  if (!a) a = cbl_check_operand(L, 2, b);
  if (!b) b = cbl_check_operand(L, 3, a);
  cbl_check(L, cb_where(&out, cond, a, b));
  cbl_push_tensor(L, out);
  return 1;
}

/* Returns the previous setting. */
static int l_set_grad_enabled(lua_State *L) {
  luaL_checktype(L, 1, LUA_TBOOLEAN);
  lua_pushboolean(L, cb_set_grad_enabled(lua_toboolean(L, 1)));
  return 1;
}

static int l_is_grad_enabled(lua_State *L) {
  lua_pushboolean(L, cb_grad_enabled());
  return 1;
}

static int l_is_tensor(lua_State *L) {
  lua_pushboolean(L, luaL_testudata(L, 1, TENSOR_MT) != NULL);
  return 1;
}

/* ---- threads, memory, info ---- */

static int l_set_num_threads(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  /* the core checks the range; clamp only so the int it gets is not a wrapped one */
  cbl_check(L, cb_set_num_threads(n > INT_MAX ? INT_MAX : n < INT_MIN ? INT_MIN : (int)n));
  return 0;
}

static int l_get_num_threads(lua_State *L) {
  lua_pushinteger(L, cb_get_num_threads());
  return 1;
}

/* pool_stats() -> {loops, loop_seconds, thread_seconds, busy_seconds}: where
 * the thread pool's time went since the start or pool_stats_reset()
 * (cb_pool_stats, threadpool.h). */
static int l_pool_stats(lua_State *L) {
  cb_pool_stats stats = cb_pool_stats_get();
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, stats.loops);
  lua_setfield(L, -2, "loops");
  lua_pushnumber(L, stats.loop_seconds);
  lua_setfield(L, -2, "loop_seconds");
  lua_pushnumber(L, stats.thread_seconds);
  lua_setfield(L, -2, "thread_seconds");
  lua_pushnumber(L, stats.busy_seconds);
  lua_setfield(L, -2, "busy_seconds");
  return 1;
}

static int l_pool_stats_reset(lua_State *L) {
  (void)L;
  cb_pool_stats_reset();
  return 0;
}

/* Seconds on a monotonic clock (for timing; os.clock() is CPU time, which
 * threads inflate). */
static int l_clock(lua_State *L) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  lua_pushnumber(L, (double)t.tv_sec + (double)t.tv_nsec * 1e-9);
  return 1;
}

/* sleep(seconds): waits; a signal (Ctrl-C) ends the wait early. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  if (!(s >= 0 && s <= 86400)) return luaL_argerror(L, 1, "seconds must be in 0..86400");
  struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  nanosleep(&t, NULL);
  return 0;
}

static int l_memory(lua_State *L) {
  lua_pushinteger(L, cb_storage_live_bytes());
  return 1;
}

static void set_string(lua_State *L, const char *key, const char *value) {
  lua_pushstring(L, value);
  lua_setfield(L, -2, key);
}

static void set_bool(lua_State *L, const char *key, bool value) {
  lua_pushboolean(L, value);
  lua_setfield(L, -2, key);
}

static int l_info(lua_State *L) {
  cb_blas_info blas;
  cbl_check(L, cb_blas_get_info(&blas));
  lua_newtable(L);
  set_string(L, "version", CBNET_VERSION);
  set_string(L, "lua", LUA_RELEASE);
  set_string(L, "blas_library", blas.library);
  set_string(L, "blas_config", blas.config);
  set_string(L, "blas_kernel", blas.kernel);
  set_string(L, "blas_kernel_wanted", blas.wanted);
  static const char *const sources[] = {"OPENBLAS_CORETYPE set by the user",
                                        "chosen by cbnet from the CPU's features",
                                        "OpenBLAS's own detection"};
  set_string(L, "blas_kernel_source", sources[blas.source]);
  set_bool(L, "blas_kernel_from_user", blas.source == CB_KERNEL_FROM_USER);
  cb_cpu_features f = cb_cpu_detect();
  /* what cbnet would choose here: a user's OPENBLAS_CORETYPE may be slower */
  const char *for_cpu = cb_blas_kernel_for(f);
  if (for_cpu) set_string(L, "blas_kernel_for_cpu", for_cpu);
  lua_pushinteger(L, blas.threads);
  lua_setfield(L, -2, "blas_threads");
  lua_pushinteger(L, cb_get_num_threads());
  lua_setfield(L, -2, "threads");
  lua_newtable(L);
  set_bool(L, "avx2", f.avx2);
  set_bool(L, "fma", f.fma);
  set_bool(L, "avx512f", f.avx512f);
  set_bool(L, "avx512bw", f.avx512bw);
  set_bool(L, "avx512dq", f.avx512dq);
  set_bool(L, "avx512vl", f.avx512vl);
  set_bool(L, "avx512_bf16", f.avx512_bf16);
  set_bool(L, "amx_bf16", f.amx_bf16);
  lua_setfield(L, -2, "cpu");
  return 1;
}

static const luaL_Reg core_functions[] = {
    {"tensor", l_tensor}, {"zeros", l_zeros}, {"ones", l_ones}, {"empty", l_empty},
    {"full", l_full}, {"arange", l_arange}, {"rand", l_rand}, {"randn", l_randn},
    {"randint", l_randint}, {"randperm", l_randperm}, {"manual_seed", l_manual_seed},
    {"Generator", l_generator}, {"cat", l_cat}, {"stack", l_stack}, {"where", l_where},
    {"is_tensor", l_is_tensor}, {"set_grad_enabled", l_set_grad_enabled},
    {"is_grad_enabled", l_is_grad_enabled}, {"set_num_threads", l_set_num_threads},
    {"get_num_threads", l_get_num_threads}, {"pool_stats", l_pool_stats},
    {"pool_stats_reset", l_pool_stats_reset}, {"memory", l_memory}, {"clock", l_clock},
    {"sleep", l_sleep},
    {"info", l_info},
    {NULL, NULL}};

static const luaL_Reg generator_methods[] = {
    {"seed", g_seed}, {"initial_seed", g_initial_seed}, {"random", g_random}, {NULL, NULL}};

/* lua_close() unloads C modules, but the thread pool's workers live in this
 * library's code until the process ends: unloading it under them makes a
 * worker that wakes up jump into unmapped memory. Loaded as a module (not
 * linked into the cbnet command), the library pins itself. */
static void pin_this_library(void) {
  Dl_info self;
  if (dladdr((void *)pin_this_library, &self) && self.dli_fname)
    dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

int luaopen_cbnet_core(lua_State *L) {
  pin_this_library();
  /* Load OpenBLAS now, before anything else in the process can, so that
   * the kernel choice applies (see core/blas.h). */
  cb_status st = cb_blas_init();
  if (st != CB_OK) return luaL_error(L, "cbnet: %s", cb_last_error());
  cbl_open_tensor(L);
  luaL_newmetatable(L, GENERATOR_MT);
  luaL_newlib(L, generator_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, g_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);
  luaL_newlib(L, core_functions);
  cbl_open_nn(L);
  cbl_open_optim(L);
  cbl_open_data(L);
  luaL_getmetatable(L, TENSOR_MT);
  lua_setfield(L, -2, "Tensor");
  return 1;
}
