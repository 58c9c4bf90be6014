/* The Tensor userdata: one metatable, methods, operators, printing. */
#include <math.h>
#include <string.h>

#include "binding.h"

/* ---- life cycle ---- */

static int t_gc(lua_State *L) {
  tensor_box *box = luaL_checkudata(L, 1, TENSOR_MT);
  cb_tensor_release(box->t);
  box->t = NULL;
  return 0;
}

/* ---- shape queries ---- */

/* "{2, 3}": sizes and strides print readably (a plain Lua list otherwise). */
static int size_tostring(lua_State *L) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addchar(&b, '{');
  for (lua_Integer i = 1, n = cbl_list_len(L, 1); i <= n; i++) {
    if (i > 1) luaL_addstring(&b, ", ");
    lua_geti(L, 1, i);
    luaL_addvalue(&b);
  }
  luaL_addchar(&b, '}');
  luaL_pushresult(&b);
  return 1;
}

static void push_shape(lua_State *L, int ndim, const int64_t *values) {
  lua_createtable(L, ndim, 0);
  for (int d = 0; d < ndim; d++) {
    lua_pushinteger(L, values[d]);
    lua_rawseti(L, -2, d + 1);
  }
  if (luaL_newmetatable(L, "cbnet.Size")) {
    lua_pushcfunction(L, size_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_setmetatable(L, -2);
}

/* t:size() -> {sizes}; t:size(dim) -> size */
static int t_size(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  if (lua_isnoneornil(L, 2)) {
    push_shape(L, t->ndim, t->shape);
    return 1;
  }
  int d = cbl_check_dim(L, 2);
  cbl_check(L, cb_wrap_dim("size", &d, t->ndim));
  lua_pushinteger(L, t->shape[d]);
  return 1;
}

static int t_stride(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  if (lua_isnoneornil(L, 2)) {
    push_shape(L, t->ndim, t->stride);
    return 1;
  }
  int d = cbl_check_dim(L, 2);
  cbl_check(L, cb_wrap_dim("stride", &d, t->ndim));
  lua_pushinteger(L, t->stride[d]);
  return 1;
}

static int t_dim(lua_State *L) {
  lua_pushinteger(L, cbl_check_tensor(L, 1)->ndim);
  return 1;
}

static int t_numel(lua_State *L) {
  lua_pushinteger(L, cb_tensor_numel(cbl_check_tensor(L, 1)));
  return 1;
}

static int t_dtype(lua_State *L) {
  lua_pushstring(L, cb_dtype_name(cbl_check_tensor(L, 1)->dtype));
  return 1;
}

static int t_is_contiguous(lua_State *L) {
  lua_pushboolean(L, cb_tensor_is_contiguous(cbl_check_tensor(L, 1)));
  return 1;
}

static int t_len(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  if (t->ndim == 0) return luaL_error(L, "#: a 0-d tensor has no length (use :item())");
  lua_pushinteger(L, t->shape[0]);
  return 1;
}

/* ---- element access ---- */

static void push_element(lua_State *L, const cb_tensor *t, const int64_t *index) {
  switch (t->dtype) {
  case CB_FLOAT32: lua_pushnumber(L, cb_tensor_get(t, index)); break;
  case CB_BOOL: lua_pushboolean(L, cb_tensor_get(t, index) != 0); break;
  default: lua_pushinteger(L, cb_tensor_get_int64(t, index)); /* exact */
  }
}

static int t_item(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  if (cb_tensor_numel(t) != 1)
    return luaL_error(L, "item: tensor has %I elements, expected exactly 1",
                      (lua_Integer)cb_tensor_numel(t));
  int64_t index[CB_MAX_DIMS] = {0};
  push_element(L, t, index);
  return 1;
}

/* A 1-based (or negative) position along a dim of size n, to 0-based. */
static int64_t check_position(lua_State *L, int arg, int64_t n, int dim) {
  lua_Integer i = luaL_checkinteger(L, arg);
  int64_t pos = i > 0 ? i - 1 : n + i;
  if (i == 0 || pos < 0 || pos >= n)
    luaL_error(L, "index %I out of range for dim %d of size %I (indices are 1-based; "
               "negative ones count from the end)", i, dim + 1, (lua_Integer)n);
  return pos;
}

/* The fields read as t.name, besides the methods. */
static const char *const tensor_properties[] = {"grad", "requires_grad", "is_leaf", "grad_fn", NULL};

/* Fields read as t.name: false when the name is not a property. */
static bool push_property(lua_State *L, cb_tensor *t, const char *key) {
  if (strcmp(key, "grad") == 0) {
    cb_tensor *g = cb_grad(t);
    if (g) cbl_push_tensor(L, cb_tensor_retain(g));
    else lua_pushnil(L);
  } else if (strcmp(key, "requires_grad") == 0) {
    lua_pushboolean(L, cb_requires_grad(t));
  } else if (strcmp(key, "is_leaf") == 0) {
    lua_pushboolean(L, cb_is_leaf(t));
  } else if (strcmp(key, "grad_fn") == 0) {
    cb_node *fn = cb_grad_fn(t);
    if (fn) lua_pushstring(L, fn->name);
    else lua_pushnil(L);
  } else {
    return false;
  }
  return true;
}

/* t.requires_grad = bool; t.grad = tensor or nil */
static int set_property(lua_State *L, cb_tensor *t, const char *key) {
  if (strcmp(key, "requires_grad") == 0) {
    cbl_check(L, cb_set_requires_grad(t, lua_toboolean(L, 3)));
  } else if (strcmp(key, "grad") == 0) {
    cbl_check(L, cb_set_grad(t, lua_isnil(L, 3) ? NULL : cbl_check_tensor(L, 3)));
  } else {
    return luaL_error(L, "tensor field '%s' cannot be assigned (only requires_grad, grad "
                      "and integer positions can)", key);
  }
  return 0;
}

static int t_index(lua_State *L) {
  if (lua_type(L, 2) == LUA_TNUMBER) {
    cb_tensor *t = cbl_check_tensor(L, 1);
    if (!lua_isinteger(L, 2)) return luaL_error(L, "tensor index must be an integer");
    if (t->ndim == 0) return luaL_error(L, "cannot index a 0-d tensor (use :item())");
    int64_t pos = check_position(L, 2, t->shape[0], 0);
    if (t->ndim == 1) {
      push_element(L, t, &pos);
    } else {
      cb_tensor *v;
      cbl_check(L, cb_select(&v, t, 0, pos));
      cbl_push_tensor(L, v);
    }
    return 1;
  }
  if (lua_type(L, 2) == LUA_TSTRING && push_property(L, cbl_check_tensor(L, 1), lua_tostring(L, 2)))
    return 1;
  /* methods live in the metatable's "methods" field (upvalue 1) */
  lua_pushvalue(L, 2);
  lua_gettable(L, lua_upvalueindex(1));
  /* an unknown name is an error, as an unknown attribute is in PyTorch,
   * with the nearest name offered */
  if (lua_isnil(L, -1) && lua_type(L, 2) == LUA_TSTRING) {
    const char *key = lua_tostring(L, 2);
    lua_pushvalue(L, lua_upvalueindex(1));
    const char *near = cbl_nearest_key(L, -1, key, tensor_properties);
    if (near) return luaL_error(L, "a tensor has no method or field '%s' (did you mean '%s'?)", key, near);
    return luaL_error(L, "a tensor has no method or field '%s'", key);
  }
  return 1;
}

static int t_newindex(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  if (lua_type(L, 2) == LUA_TSTRING) return set_property(L, t, lua_tostring(L, 2));
  if (!lua_isinteger(L, 2)) return luaL_error(L, "only integer positions (t[i] = value) and "
                                              "the fields requires_grad and grad can be assigned");
  if (t->ndim == 0) return luaL_error(L, "cannot index a 0-d tensor");
  int64_t pos = check_position(L, 2, t->shape[0], 0);
  cbl_check(L, cb_check_inplace("t[i] = value", t));
  cb_tensor *v;
  cbl_check(L, cb_tensor_select(&v, t, 0, pos));
  cb_status st;
  cb_tensor *src = cbl_test_tensor(L, 3);
  if (src) st = cb_tensor_copy_(v, src);
  else if (lua_isboolean(L, 3) || lua_type(L, 3) == LUA_TNUMBER) st = cbl_fill_value(L, v, 3);
  else {
    cb_tensor_release(v);
    return luaL_typeerror(L, 3, "number or tensor");
  }
  cb_tensor_release(v);
  cbl_check(L, st);
  return 0;
}

/* Nested Lua tables of the tensor's values. */
static void push_table(lua_State *L, const cb_tensor *t, int dim, int64_t *index) {
  if (dim == t->ndim) {
    push_element(L, t, index);
    return;
  }
  lua_createtable(L, (int)t->shape[dim], 0);
  for (int64_t i = 0; i < t->shape[dim]; i++) {
    index[dim] = i;
    push_table(L, t, dim + 1, index);
    lua_rawseti(L, -2, i + 1);
  }
}

/* The most Lua values (numbers and tables) totable makes: past this the
 * Lua heap, not the tensor, is what runs out. */
#define TOTABLE_MAX_VALUES ((int64_t)1 << 27)

static int t_totable(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  int64_t index[CB_MAX_DIMS] = {0};
  if (t->ndim == 0) return t_item(L);
  int64_t values = 1, level = 1; /* tables at each depth, then the elements */
  for (int d = 0; d < t->ndim; d++) {
    level *= t->shape[d]; /* <= 2^48: the shape was checked */
    values += level;
    if (values > TOTABLE_MAX_VALUES || level == 0) break;
  }
  if (values > TOTABLE_MAX_VALUES) {
    char buf[160];
    return luaL_error(L, "totable: a tensor of shape %s makes too many Lua values (at most "
                      "2^27); take a smaller view first", cb_shape_str(buf, sizeof buf, t->ndim, t->shape));
  }
  push_table(L, t, 0, index);
  return 1;
}

/* ---- printing ---- */

typedef struct {
  const cb_tensor *t;
  luaL_Buffer *b;
  bool summarize;
  char fmt[16];
  int width;
} printer;

#define EDGE_ITEMS 3

static void format_value(const printer *p, const int64_t *index, char *out, size_t size) {
  double v = cb_tensor_get(p->t, index);
  switch (p->t->dtype) {
  case CB_BOOL: snprintf(out, size, "%s", v != 0 ? "true" : "false"); break;
  case CB_FLOAT32:
    if (isnan(v)) snprintf(out, size, "nan");
    else if (isinf(v)) snprintf(out, size, v > 0 ? "inf" : "-inf");
    else snprintf(out, size, p->fmt, v);
    break;
  default: snprintf(out, size, "%lld", (long long)v);
  }
}

static void print_dim(printer *p, int dim, int64_t *index, int indent) {
  luaL_Buffer *b = p->b;
  luaL_addchar(b, '{');
  int64_t n = p->t->shape[dim];
  for (int64_t i = 0; i < n; i++) {
    if (p->summarize && n > 2 * EDGE_ITEMS && i == EDGE_ITEMS) {
      luaL_addstring(b, dim == p->t->ndim - 1 ? "..., " : "...,\n");
      if (dim < p->t->ndim - 1)
        for (int s = 0; s < indent + 1; s++) luaL_addchar(b, ' ');
      i = n - EDGE_ITEMS - 1;
      continue;
    }
    index[dim] = i;
    if (dim == p->t->ndim - 1) {
      char cell[64];
      format_value(p, index, cell, sizeof cell);
      for (int pad = (int)strlen(cell); pad < p->width; pad++) luaL_addchar(b, ' ');
      luaL_addstring(b, cell);
    } else {
      print_dim(p, dim + 1, index, indent + 1);
    }
    if (i < n - 1) {
      luaL_addchar(b, ',');
      if (dim == p->t->ndim - 1) {
        luaL_addchar(b, ' ');
      } else {
        for (int gap = dim; gap < p->t->ndim - 1; gap++) luaL_addchar(b, '\n');
        for (int s = 0; s < indent + 1; s++) luaL_addchar(b, ' ');
      }
    }
  }
  luaL_addchar(b, '}');
}

/* Chooses one number format for all printed values, as PyTorch does: whole
 * numbers as "3.", moderate ones with 4 decimals, others in e-notation. */
static void choose_format(printer *p) {
  const cb_tensor *t = p->t;
  int64_t n = cb_tensor_numel(t), index[CB_MAX_DIMS] = {0};
  double max_abs = 0, min_abs = INFINITY;
  bool whole = true;
  p->width = 1;
  for (int64_t i = 0; i < n; i++) {
    double v = cb_tensor_get(t, index);
    if (isfinite(v)) {
      double a = fabs(v);
      if (a > max_abs) max_abs = a;
      if (a > 0 && a < min_abs) min_abs = a;
      if (v != floor(v)) whole = false;
    }
    for (int d = t->ndim - 1; d >= 0; d--) {
      if (++index[d] < t->shape[d]) break;
      index[d] = 0;
    }
  }
  if (whole && max_abs < 1e8) strcpy(p->fmt, "%.0f.");
  else if (max_abs < 1e5 && (min_abs >= 1e-4 || min_abs == INFINITY)) strcpy(p->fmt, "%.4f");
  else strcpy(p->fmt, "%.4e");
  /* width of the widest cell */
  for (int d = 0; d < t->ndim; d++) index[d] = 0;
  for (int64_t i = 0; i < n; i++) {
    char cell[64];
    format_value(p, index, cell, sizeof cell);
    if ((int)strlen(cell) > p->width) p->width = (int)strlen(cell);
    for (int d = t->ndim - 1; d >= 0; d--) {
      if (++index[d] < t->shape[d]) break;
      index[d] = 0;
    }
  }
}

static int t_tostring(lua_State *L) {
  tensor_box *box = luaL_checkudata(L, 1, TENSOR_MT);
  if (!box->t) {
    lua_pushstring(L, "cbnet.tensor (closed)");
    return 1;
  }
  const cb_tensor *t = box->t;
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  printer p = {t, &b, cb_tensor_numel(t) > 1000, "", 1};
  if (cb_tensor_numel(t) > 100000) strcpy(p.fmt, "%.4e"); /* not worth scanning */
  else choose_format(&p);
  luaL_addstring(&b, "cbnet.tensor(");
  int64_t index[CB_MAX_DIMS] = {0};
  if (t->ndim == 0) {
    char cell[64];
    format_value(&p, index, cell, sizeof cell);
    luaL_addstring(&b, cell);
  } else if (cb_tensor_numel(t) == 0) {
    luaL_addstring(&b, "{}");
  } else {
    print_dim(&p, 0, index, (int)strlen("cbnet.tensor("));
  }
  char shape[160];
  cb_shape_str(shape, sizeof shape, t->ndim, t->shape);
  luaL_addchar(&b, ')');
  luaL_addstring(&b, "  -- ");
  luaL_addstring(&b, cb_dtype_name(t->dtype));
  luaL_addchar(&b, ' ');
  luaL_addstring(&b, shape);
  luaL_pushresult(&b);
  return 1;
}

/* ---- views ---- */

typedef cb_status (*shape_fn)(cb_tensor **, const cb_tensor *, int, const int64_t *);

/* t:view(2, 3) / t:view({2, 3}), and reshape alike */
static int shape_op(lua_State *L, shape_fn op) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cbl_read_shape(L, 2, &ndim, shape);
  cbl_check(L, op(&v, t, ndim, shape));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_view(lua_State *L) { return shape_op(L, cb_view); }
static int t_reshape(lua_State *L) { return shape_op(L, cb_reshape); }

static int t_transpose(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int d0 = cbl_opt_dim(L, 2, 0), d1 = cbl_opt_dim(L, 3, 1);
  if (lua_isnoneornil(L, 2) && t->ndim != 2)
    return luaL_error(L, "transpose: without dims the tensor must be 2-d, got %d-d", t->ndim);
  cbl_check(L, cb_transpose(&v, t, d0, d1));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_permute(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int ndim;
  int64_t dims64[CB_MAX_DIMS];
  int dims[CB_MAX_DIMS];
  cbl_read_shape(L, 2, &ndim, dims64);
  if (ndim != t->ndim)
    return luaL_error(L, "permute: %d dims given for a %d-d tensor", ndim, t->ndim);
  for (int d = 0; d < ndim; d++) dims[d] = cbl_dim_from_lua(L, 2 + d, dims64[d]);
  cbl_check(L, cb_permute(&v, t, dims));
  cbl_push_tensor(L, v);
  return 1;
}

/* t:narrow(dim, start, length), start 1-based */
static int t_narrow(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dim = cbl_check_dim(L, 2);
  lua_Integer start = luaL_checkinteger(L, 3), length = luaL_checkinteger(L, 4);
  if (start < 1) luaL_argerror(L, 3, "start is 1-based");
  cbl_check(L, cb_narrow(&v, t, dim, start - 1, length));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_select(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dim = cbl_check_dim(L, 2);
  cbl_check(L, cb_wrap_dim("select", &dim, t->ndim));
  if (t->ndim == 0) return luaL_error(L, "select: cannot index a 0-d tensor");
  int64_t pos = check_position(L, 3, t->shape[dim], dim);
  cbl_check(L, cb_select(&v, t, dim, pos));
  cbl_push_tensor(L, v);
  return 1;
}

/* t:slice(dim, first, last[, step]): positions first..last inclusive, as
 * string.sub; negative positions count from the end. */
static int t_slice(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dim = cbl_check_dim(L, 2);
  cbl_check(L, cb_wrap_dim("slice", &dim, t->ndim));
  if (t->ndim == 0) return luaL_error(L, "slice: cannot slice a 0-d tensor");
  int64_t n = t->shape[dim];
  lua_Integer first = luaL_optinteger(L, 3, 1), last = luaL_optinteger(L, 4, -1);
  lua_Integer step = luaL_optinteger(L, 5, 1);
  int64_t start = first > 0 ? first - 1 : n + first;
  int64_t stop = last > 0 ? last : n + last + 1;
  if (start < 0) start = 0;
  cbl_check(L, cb_slice(&v, t, dim, start, stop, step));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_expand(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int ndim;
  int64_t shape[CB_MAX_DIMS];
  cb_tensor *like = cbl_test_tensor(L, 2);
  if (like) {
    ndim = like->ndim;
    memcpy(shape, like->shape, sizeof shape);
  } else {
    cbl_read_shape(L, 2, &ndim, shape);
  }
  cbl_check(L, cb_expand(&v, t, ndim, shape));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_squeeze(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  if (lua_isnoneornil(L, 2)) cbl_check(L, cb_squeeze_all(&v, t));
  else cbl_check(L, cb_squeeze(&v, t, cbl_check_dim(L, 2)));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_unsqueeze(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_unsqueeze(&v, t, cbl_check_dim(L, 2)));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_flatten(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_flatten(&v, t, cbl_opt_dim(L, 2, 0), cbl_opt_dim(L, 3, -1)));
  cbl_push_tensor(L, v);
  return 1;
}

/* ---- copies and conversions ---- */

static int t_contiguous(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_contiguous(&v, t));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_clone(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_clone(&v, t));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_to(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_tensor_to_dtype(&v, t, cbl_opt_dtype(L, 2, t->dtype)));
  cbl_push_tensor(L, v);
  return 1;
}

static int convert_to(lua_State *L, cb_dtype dtype) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_tensor_to_dtype(&v, t, dtype));
  cbl_push_tensor(L, v);
  return 1;
}
static int t_float(lua_State *L) { return convert_to(L, CB_FLOAT32); }
static int t_long(lua_State *L) { return convert_to(L, CB_INT64); }
static int t_byte(lua_State *L) { return convert_to(L, CB_UINT8); }
static int t_bool(lua_State *L) { return convert_to(L, CB_BOOL); }

/* In-place methods return the tensor itself, for chaining. */
static int t_copy_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("copy_", t));
  cbl_check(L, cb_tensor_copy_(t, cbl_check_tensor(L, 2)));
  lua_settop(L, 1);
  return 1;
}

static int t_fill_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("fill_", t));
  double v = lua_isboolean(L, 2) ? lua_toboolean(L, 2) : luaL_checknumber(L, 2);
  cbl_check(L, cb_tensor_fill_(t, v));
  lua_settop(L, 1);
  return 1;
}

static int t_zero_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("zero_", t));
  cbl_check(L, cb_tensor_fill_(t, 0));
  lua_settop(L, 1);
  return 1;
}

static int t_uniform_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("uniform_", t));
  double lo = luaL_optnumber(L, 2, 0), hi = luaL_optnumber(L, 3, 1);
  cbl_check(L, cb_uniform_(t, lo, hi, cbl_opt_generator(L, 4)));
  lua_settop(L, 1);
  return 1;
}

static int t_normal_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("normal_", t));
  double mean = luaL_optnumber(L, 2, 0), std = luaL_optnumber(L, 3, 1);
  cbl_check(L, cb_normal_(t, mean, std, cbl_opt_generator(L, 4)));
  lua_settop(L, 1);
  return 1;
}

/* ---- element-wise ---- */

static int unary(lua_State *L, cb_unop op) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_unary(&v, op, t));
  cbl_push_tensor(L, v);
  return 1;
}

static int unary_(lua_State *L, cb_unop op) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace(cb_unop_name(op), t));
  cbl_check(L, cb_unary_into(t, op, t));
  lua_settop(L, 1);
  return 1;
}

/* Binary operations accept a number on either side (for metamethods). */
static int binary(lua_State *L, cb_binop op) {
  cb_tensor *a = cbl_test_tensor(L, 1), *b = cbl_test_tensor(L, 2), *v;
  if (!a) a = cbl_check_operand(L, 1, b);
  if (!b) b = cbl_check_operand(L, 2, a);
  cbl_check(L, cb_binary(&v, op, a, b));
  cbl_push_tensor(L, v);
  return 1;
}

static int binary_(lua_State *L, cb_binop op) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace(cb_binop_name(op), t));
  cb_tensor *other = cbl_check_operand(L, 2, t);
  cbl_check(L, cb_binary_into(t, op, t, other));
  lua_settop(L, 1);
  return 1;
}

static int t_neg(lua_State *L) { return unary(L, CB_NEG); }
static int t_abs(lua_State *L) { return unary(L, CB_ABS); }
static int t_sign(lua_State *L) { return unary(L, CB_SIGN); }
static int t_floor(lua_State *L) { return unary(L, CB_FLOOR); }
static int t_ceil(lua_State *L) { return unary(L, CB_CEIL); }
static int t_round(lua_State *L) { return unary(L, CB_ROUND); }
static int t_relu(lua_State *L) { return unary(L, CB_RELU); }
static int t_exp(lua_State *L) { return unary(L, CB_EXP); }
static int t_log(lua_State *L) { return unary(L, CB_LOG); }
static int t_sqrt(lua_State *L) { return unary(L, CB_SQRT); }
static int t_rsqrt(lua_State *L) { return unary(L, CB_RSQRT); }
static int t_sigmoid(lua_State *L) { return unary(L, CB_SIGMOID); }
static int t_tanh(lua_State *L) { return unary(L, CB_TANH); }
static int t_sin(lua_State *L) { return unary(L, CB_SIN); }
static int t_cos(lua_State *L) { return unary(L, CB_COS); }
static int t_reciprocal(lua_State *L) { return unary(L, CB_RECIPROCAL); }
static int t_logical_not(lua_State *L) { return unary(L, CB_LOGICAL_NOT); }
static int t_neg_(lua_State *L) { return unary_(L, CB_NEG); }
static int t_abs_(lua_State *L) { return unary_(L, CB_ABS); }
static int t_relu_(lua_State *L) { return unary_(L, CB_RELU); }
static int t_exp_(lua_State *L) { return unary_(L, CB_EXP); }
static int t_log_(lua_State *L) { return unary_(L, CB_LOG); }
static int t_sqrt_(lua_State *L) { return unary_(L, CB_SQRT); }

static int t_add(lua_State *L) { return binary(L, CB_ADD); }
static int t_sub(lua_State *L) { return binary(L, CB_SUB); }
static int t_mul(lua_State *L) { return binary(L, CB_MUL); }
static int t_div(lua_State *L) { return binary(L, CB_DIV); }
static int t_pow(lua_State *L) { return binary(L, CB_POW); }
static int t_maximum(lua_State *L) { return binary(L, CB_MAXIMUM); }
static int t_minimum(lua_State *L) { return binary(L, CB_MINIMUM); }
static int t_remainder(lua_State *L) { return binary(L, CB_REMAINDER); }
static int t_eq(lua_State *L) { return binary(L, CB_EQ); }
static int t_ne(lua_State *L) { return binary(L, CB_NE); }
static int t_lt(lua_State *L) { return binary(L, CB_LT); }
static int t_le(lua_State *L) { return binary(L, CB_LE); }
static int t_gt(lua_State *L) { return binary(L, CB_GT); }
static int t_ge(lua_State *L) { return binary(L, CB_GE); }
static int t_logical_and(lua_State *L) { return binary(L, CB_LOGICAL_AND); }
static int t_logical_or(lua_State *L) { return binary(L, CB_LOGICAL_OR); }
static int t_add_(lua_State *L) { return binary_(L, CB_ADD); }
static int t_sub_(lua_State *L) { return binary_(L, CB_SUB); }
static int t_mul_(lua_State *L) { return binary_(L, CB_MUL); }
static int t_div_(lua_State *L) { return binary_(L, CB_DIV); }
static int t_pow_(lua_State *L) { return binary_(L, CB_POW); }

static int t_unm(lua_State *L) { return unary(L, CB_NEG); }

/* t:clamp(min, max): nil leaves a side open */
static int t_clamp(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  double lo = lua_isnoneornil(L, 2) ? -INFINITY : luaL_checknumber(L, 2);
  double hi = lua_isnoneornil(L, 3) ? INFINITY : luaL_checknumber(L, 3);
  cbl_check(L, cb_clamp(&v, t, lo, hi));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_clamp_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("clamp_", t));
  double lo = lua_isnoneornil(L, 2) ? -INFINITY : luaL_checknumber(L, 2);
  double hi = lua_isnoneornil(L, 3) ? INFINITY : luaL_checknumber(L, 3);
  cbl_check(L, cb_clamp_into(t, t, lo, hi));
  lua_settop(L, 1);
  return 1;
}

/* ---- reductions ---- */

/* Reads the dims argument at arg: nil (all), a dim, or a table of dims. */
static int read_dims(lua_State *L, int arg, int *dims) {
  if (lua_isnoneornil(L, arg)) return 0;
  if (lua_type(L, arg) == LUA_TTABLE) {
    lua_Integer len = cbl_list_len(L, arg);
    if (len > CB_MAX_DIMS) luaL_argerror(L, arg, "too many dims");
    int n = (int)len;
    for (int i = 0; i < n; i++) {
      lua_geti(L, arg, i + 1);
      dims[i] = cbl_check_dim(L, lua_gettop(L));
      lua_pop(L, 1);
    }
    if (n == 0) luaL_argerror(L, arg, "empty dims table (pass nil to reduce all)");
    return n;
  }
  dims[0] = cbl_check_dim(L, arg);
  return 1;
}

static int reduce(lua_State *L, cb_reduceop op) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dims[CB_MAX_DIMS];
  int ndims = read_dims(L, 2, dims);
  bool keepdim = lua_toboolean(L, 3);
  lua_Integer correction = luaL_optinteger(L, 4, 1);
  cbl_check(L, cb_reduce(&v, op, t, ndims, dims, keepdim, correction));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_sum(lua_State *L) { return reduce(L, CB_SUM); }
static int t_mean(lua_State *L) { return reduce(L, CB_MEAN); }
static int t_prod(lua_State *L) { return reduce(L, CB_PROD); }
static int t_var(lua_State *L) { return reduce(L, CB_VAR); }
static int t_std(lua_State *L) { return reduce(L, CB_STD); }
static int t_argmax(lua_State *L) { return reduce(L, CB_ARGMAX); }
static int t_argmin(lua_State *L) { return reduce(L, CB_ARGMIN); }

/* t:max() -> 0-d tensor; t:max(dim[, keepdim]) -> values, indices */
static int extreme(lua_State *L, bool take_min) {
  cb_tensor *t = cbl_check_tensor(L, 1), *values, *indices;
  if (lua_isnoneornil(L, 2)) return reduce(L, take_min ? CB_MIN : CB_MAX);
  int dim = cbl_check_dim(L, 2);
  cbl_check(L, cb_max_dim(&values, &indices, t, dim, lua_toboolean(L, 3), take_min));
  cbl_push_tensor(L, values);
  cbl_push_tensor(L, indices);
  return 2;
}
static int t_max(lua_State *L) { return extreme(L, false); }
static int t_min(lua_State *L) { return extreme(L, true); }

/* ---- products and indexing ---- */

static int t_matmul(lua_State *L) {
  cb_tensor *a = cbl_check_tensor(L, 1), *b = cbl_check_tensor(L, 2), *v;
  cbl_check(L, cb_matmul(&v, a, b));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_index_select(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dim = cbl_check_dim(L, 2);
  cbl_check(L, cb_index_select(&v, t, dim, cbl_check_tensor(L, 3)));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_gather(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dim = cbl_check_dim(L, 2);
  cbl_check(L, cb_gather(&v, t, dim, cbl_check_tensor(L, 3)));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_scatter_add_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("scatter_add_", t));
  int dim = cbl_check_dim(L, 2);
  cbl_check(L, cb_scatter_add_(t, dim, cbl_check_tensor(L, 3), cbl_check_tensor(L, 4)));
  lua_settop(L, 1);
  return 1;
}

/* t:scatter_(dim, index, src): t[..index..] = src along dim, in place; src
 * a tensor (at least index's size) or a number. */
static int t_scatter_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *index = cbl_check_tensor(L, 3), *src;
  cbl_check(L, cb_check_inplace("scatter_", t));
  int dim = cbl_check_dim(L, 2);
  if (lua_type(L, 4) == LUA_TNUMBER || lua_type(L, 4) == LUA_TBOOLEAN) {
    cb_tensor *value, *expanded;
    cbl_check(L, cb_tensor_empty(&value, 0, NULL, t->dtype));
    cbl_push_tensor(L, value);
    cbl_check(L, cbl_fill_value(L, value, 4));
    cbl_check(L, cb_tensor_expand(&expanded, value, index->ndim, index->shape));
    cbl_push_tensor(L, expanded);
    src = expanded;
  } else {
    src = cbl_check_tensor(L, 4);
  }
  cbl_check(L, cb_scatter_(t, dim, index, src));
  lua_settop(L, 1);
  return 1;
}

static int t_scatter_add(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  int dim = cbl_check_dim(L, 2);
  cb_tensor *index = cbl_check_tensor(L, 3), *src = cbl_check_tensor(L, 4);
  if (cb_grad_enabled() && (cb_requires_grad(t) || cb_requires_grad(src)))
    return luaL_error(L, "scatter_add: no gradient is defined (use it under no_grad)");
  cbl_check(L, cb_tensor_clone(&v, t));
  cbl_push_tensor(L, v);
  cbl_check(L, cb_scatter_add_(v, dim, index, src));
  return 1;
}

static int t_masked_fill_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_check_inplace("masked_fill_", t));
  double value = lua_isboolean(L, 3) ? lua_toboolean(L, 3) : luaL_checknumber(L, 3);
  cbl_check(L, cb_masked_fill_(t, cbl_check_tensor(L, 2), value));
  lua_settop(L, 1);
  return 1;
}

static int t_masked_fill(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *mask = cbl_check_tensor(L, 2), *v;
  double value = lua_isboolean(L, 3) ? lua_toboolean(L, 3) : luaL_checknumber(L, 3);
  cbl_check(L, cb_masked_fill(&v, t, mask, value));
  cbl_push_tensor(L, v);
  return 1;
}

static int t_masked_select(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_masked_select(&v, t, cbl_check_tensor(L, 2)));
  cbl_push_tensor(L, v);
  return 1;
}

/* ---- autograd ---- */

static int t_requires_grad_(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cbl_check(L, cb_set_requires_grad(t, lua_isnone(L, 2) ? true : lua_toboolean(L, 2)));
  lua_settop(L, 1);
  return 1;
}

/* t:backward([gradient]) */
static int t_backward(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1);
  cb_tensor *grad = lua_isnoneornil(L, 2) ? NULL : cbl_check_tensor(L, 2);
  cbl_check(L, cb_backward(t, grad));
  return 0;
}

static int t_detach(lua_State *L) {
  cb_tensor *t = cbl_check_tensor(L, 1), *v;
  cbl_check(L, cb_detach(&v, t));
  cbl_push_tensor(L, v);
  return 1;
}

static const luaL_Reg tensor_methods[] = {
    {"requires_grad_", t_requires_grad_}, {"backward", t_backward}, {"detach", t_detach},
    {"size", t_size}, {"stride", t_stride}, {"dim", t_dim}, {"numel", t_numel},
    {"dtype", t_dtype}, {"is_contiguous", t_is_contiguous}, {"item", t_item},
    {"totable", t_totable},
    {"view", t_view}, {"reshape", t_reshape}, {"transpose", t_transpose}, {"t", t_transpose},
    {"permute", t_permute}, {"narrow", t_narrow}, {"select", t_select}, {"slice", t_slice},
    {"expand", t_expand}, {"expand_as", t_expand}, {"squeeze", t_squeeze},
    {"unsqueeze", t_unsqueeze}, {"flatten", t_flatten},
    {"contiguous", t_contiguous}, {"clone", t_clone}, {"to", t_to}, {"float", t_float},
    {"long", t_long}, {"byte", t_byte}, {"bool", t_bool},
    {"copy_", t_copy_}, {"fill_", t_fill_}, {"zero_", t_zero_}, {"uniform_", t_uniform_},
    {"normal_", t_normal_},
    {"neg", t_neg}, {"abs", t_abs}, {"sign", t_sign}, {"floor", t_floor}, {"ceil", t_ceil},
    {"round", t_round}, {"relu", t_relu}, {"exp", t_exp}, {"log", t_log}, {"sqrt", t_sqrt},
    {"rsqrt", t_rsqrt}, {"sigmoid", t_sigmoid}, {"tanh", t_tanh}, {"sin", t_sin},
    {"cos", t_cos}, {"reciprocal", t_reciprocal}, {"logical_not", t_logical_not},
    {"neg_", t_neg_}, {"abs_", t_abs_}, {"relu_", t_relu_}, {"exp_", t_exp_},
    {"log_", t_log_}, {"sqrt_", t_sqrt_},
    {"add", t_add}, {"sub", t_sub}, {"mul", t_mul}, {"div", t_div}, {"pow", t_pow},
    {"maximum", t_maximum}, {"minimum", t_minimum}, {"remainder", t_remainder}, {"eq", t_eq}, {"ne", t_ne},
    {"lt", t_lt}, {"le", t_le}, {"gt", t_gt}, {"ge", t_ge}, {"logical_and", t_logical_and},
    {"logical_or", t_logical_or}, {"add_", t_add_}, {"sub_", t_sub_}, {"mul_", t_mul_},
    {"div_", t_div_}, {"pow_", t_pow_}, {"clamp", t_clamp}, {"clamp_", t_clamp_},
    {"sum", t_sum}, {"mean", t_mean}, {"prod", t_prod}, {"var", t_var}, {"std", t_std},
    {"max", t_max}, {"min", t_min}, {"argmax", t_argmax}, {"argmin", t_argmin},
    {"matmul", t_matmul}, {"mm", t_matmul}, {"index_select", t_index_select},
    {"gather", t_gather}, {"scatter_add", t_scatter_add}, {"scatter_add_", t_scatter_add_},
    {"scatter_", t_scatter_},
    {"masked_fill", t_masked_fill}, {"masked_fill_", t_masked_fill_},
    {"masked_select", t_masked_select},
    {NULL, NULL}};

static const luaL_Reg tensor_metamethods[] = {
    {"__gc", t_gc}, {"__close", t_gc}, {"__tostring", t_tostring}, {"__len", t_len},
    {"__newindex", t_newindex}, {"__add", t_add}, {"__sub", t_sub}, {"__mul", t_mul},
    {"__div", t_div}, {"__pow", t_pow}, {"__mod", t_remainder}, {"__unm", t_unm}, {"__index", NULL},
    {NULL, NULL}};

void cbl_open_tensor(lua_State *L) {
  luaL_newmetatable(L, TENSOR_MT);
  luaL_setfuncs(L, tensor_metamethods, 0);
  luaL_newlib(L, tensor_methods);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods"); /* Lua code may add methods here */
  lua_pushcclosure(L, t_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}
