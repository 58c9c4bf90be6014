/* Neural-network kernels for Lua: cbnet.core.conv2d, batch_norm, pools,
 * activations, softmax and cross_entropy. lua/cbnet/functional.lua gives
 * them their documented Lua signatures. */
#include <string.h>

#include "binding.h"
#include "nn/conv_direct.h"

/* An integer or a {a, b} pair at arg (def when absent). */
static void check_pair(lua_State *L, int arg, int64_t def, int64_t *pair) {
  if (lua_isnoneornil(L, arg)) {
    pair[0] = pair[1] = def;
  } else if (lua_type(L, arg) == LUA_TTABLE) {
    for (int i = 0; i < 2; i++) {
      lua_geti(L, arg, i + 1);
      if (!lua_isinteger(L, -1)) luaL_argerror(L, arg, "expected an integer or a pair of integers");
      pair[i] = lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
  } else {
    pair[0] = pair[1] = luaL_checkinteger(L, arg);
  }
}

/* A convolution's stride, padding, dilation and groups from arguments
 * first.. first + 3 (no ReLU). */
static cb_conv_params check_conv_params(lua_State *L, int first) {
  cb_conv_params p = {.relu = false};
  check_pair(L, first, 1, p.stride);
  check_pair(L, first + 1, 0, p.padding);
  check_pair(L, first + 2, 1, p.dilation);
  p.groups = luaL_optinteger(L, first + 3, 1);
  return p;
}

/* conv2d(x, weight, bias, stride, padding, dilation, groups, relu) */
static int l_conv2d(lua_State *L) {
  cb_tensor *x = cbl_check_tensor(L, 1), *w = cbl_check_tensor(L, 2), *b = cbl_opt_tensor(L, 3), *y;
  cb_conv_params p = check_conv_params(L, 4);
  p.relu = lua_toboolean(L, 8);
  cbl_check(L, cb_conv2d(&y, x, w, b, &p));
  cbl_push_tensor(L, y);
  return 1;
}

static int l_linear(lua_State *L) {
  cb_tensor *x = cbl_check_tensor(L, 1), *w = cbl_check_tensor(L, 2), *b = cbl_opt_tensor(L, 3), *y;
  cbl_check(L, cb_linear(&y, x, w, b));
  cbl_push_tensor(L, y);
  return 1;
}

/* Arguments 1-8 of both batch norms: x, weight, bias, running_mean,
 * running_var, training, momentum, eps. */
typedef struct {
  cb_tensor *x, *w, *b, *rm, *rv;
  bool training;
  double momentum, eps;
} batch_norm_args;

static batch_norm_args check_batch_norm_args(lua_State *L) {
  batch_norm_args a; /* one after another: a bad argument is named in order */
  a.x = cbl_check_tensor(L, 1);
  a.w = cbl_opt_tensor(L, 2), a.b = cbl_opt_tensor(L, 3);
  a.rm = cbl_opt_tensor(L, 4), a.rv = cbl_opt_tensor(L, 5);
  a.training = lua_toboolean(L, 6);
  a.momentum = luaL_optnumber(L, 7, 0.1), a.eps = luaL_optnumber(L, 8, 1e-5);
  return a;
}

/* batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, relu,
 * sync, residual, pool): pool true = then 2x2 max pooling (relu, no residual) */
static int l_batch_norm(lua_State *L) {
  batch_norm_args a = check_batch_norm_args(L);
  cb_tensor *y;
  bool relu = lua_toboolean(L, 9);
  const cb_reducer *sync = NULL;
  if (!lua_isnoneornil(L, 10)) sync = luaL_checkudata(L, 10, REDUCER_MT);
  cb_tensor *residual = cbl_opt_tensor(L, 11);
  if (lua_toboolean(L, 12)) {
    if (!relu || residual) return luaL_argerror(L, 12, "pooling comes after the ReLU, without a residual");
    cbl_check(L, cb_batch_norm_relu_pool(&y, a.x, a.w, a.b, a.rm, a.rv, a.training, a.momentum, a.eps, sync));
  } else {
    cbl_check(L, cb_batch_norm(&y, a.x, a.w, a.b, a.rm, a.rv, a.training, a.momentum, a.eps, relu,
                               residual, sync));
  }
  cbl_push_tensor(L, y);
  return 1;
}

/* batch_norm_relu_conv2d(x, bn_weight, bn_bias, running_mean, running_var, training, momentum,
 * eps, weight, bias, stride, padding, dilation, groups) */
static int l_batch_norm_relu_conv2d(lua_State *L) {
  batch_norm_args a = check_batch_norm_args(L);
  cb_tensor *w = cbl_check_tensor(L, 9), *b = cbl_opt_tensor(L, 10), *y;
  cb_conv_params p = check_conv_params(L, 11);
  cbl_check(L, cb_batch_norm_relu_conv2d(&y, a.x, a.w, a.b, a.rm, a.rv, a.training, a.momentum, a.eps,
                                         w, b, &p));
  cbl_push_tensor(L, y);
  return 1;
}

/* conv2d_batch_norm_relu_pool(x, bn_weight, bn_bias, running_mean, running_var, training,
 * momentum, eps, weight, bias, stride, padding, dilation, groups): batch_norm_relu_conv2d's
 * arguments, the convolution first */
static int l_conv2d_batch_norm_relu_pool(lua_State *L) {
  batch_norm_args a = check_batch_norm_args(L);
  cb_tensor *w = cbl_check_tensor(L, 9), *b = cbl_opt_tensor(L, 10), *y;
  cb_conv_params p = check_conv_params(L, 11);
  cbl_check(L, cb_conv2d_batch_norm_relu_pool(&y, a.x, w, b, &p, a.w, a.b, a.rm, a.rv, a.training,
                                              a.momentum, a.eps));
  cbl_push_tensor(L, y);
  return 1;
}

/* max_pool2d / avg_pool2d(x, kernel, stride = kernel, padding = 0[, count_include_pad]) */
static int pool2d(lua_State *L, bool max) {
  cb_tensor *x = cbl_check_tensor(L, 1), *y;
  cb_pool_params p;
  check_pair(L, 2, 0, p.kernel);
  if (lua_isnoneornil(L, 3)) memcpy(p.stride, p.kernel, sizeof p.stride);
  else check_pair(L, 3, 1, p.stride);
  check_pair(L, 4, 0, p.padding);
  p.count_include_pad = lua_isnoneornil(L, 5) ? true : lua_toboolean(L, 5);
  cbl_check(L, max ? cb_max_pool2d(&y, x, &p) : cb_avg_pool2d(&y, x, &p));
  cbl_push_tensor(L, y);
  return 1;
}
static int l_max_pool2d(lua_State *L) { return pool2d(L, true); }
static int l_avg_pool2d(lua_State *L) { return pool2d(L, false); }

static int l_adaptive_avg_pool2d(lua_State *L) {
  cb_tensor *x = cbl_check_tensor(L, 1), *y;
  int64_t size[2];
  check_pair(L, 2, 1, size);
  cbl_check(L, cb_adaptive_avg_pool2d(&y, x, size[0], size[1]));
  cbl_push_tensor(L, y);
  return 1;
}

static int activation(lua_State *L, cb_actop op, double def) {
  cb_tensor *x = cbl_check_tensor(L, 1), *y;
  cbl_check(L, cb_activation(&y, op, x, luaL_optnumber(L, 2, def)));
  cbl_push_tensor(L, y);
  return 1;
}
static int l_leaky_relu(lua_State *L) { return activation(L, CB_ACT_LEAKY_RELU, 0.01); }
static int l_gelu(lua_State *L) { return activation(L, CB_ACT_GELU, 0); }
static int l_softplus(lua_State *L) { return activation(L, CB_ACT_SOFTPLUS, 1); }

/* dropout(x, p, training[, generator]) */
static int l_dropout(lua_State *L) {
  cb_tensor *x = cbl_check_tensor(L, 1), *y;
  double p = luaL_optnumber(L, 2, 0.5);
  bool training = lua_isnoneornil(L, 3) ? true : lua_toboolean(L, 3);
  cbl_check(L, cb_dropout(&y, x, p, training, cbl_opt_generator(L, 4)));
  cbl_push_tensor(L, y);
  return 1;
}

static int softmax(lua_State *L, bool log) {
  cb_tensor *x = cbl_check_tensor(L, 1), *y;
  cbl_check(L, cb_softmax(&y, x, cbl_opt_dim(L, 2, -1), log));
  cbl_push_tensor(L, y);
  return 1;
}
static int l_softmax(lua_State *L) { return softmax(L, false); }
static int l_log_softmax(lua_State *L) { return softmax(L, true); }

/* cross_entropy(logits, target, weight, label_smoothing, reduction) */
static int l_cross_entropy(lua_State *L) {
  cb_tensor *x = cbl_check_tensor(L, 1), *t = cbl_check_tensor(L, 2), *w = cbl_opt_tensor(L, 3), *y;
  double smoothing = luaL_optnumber(L, 4, 0);
  static const char *const reductions[] = {"mean", "sum", "none", NULL};
  cb_reduction reduction = (cb_reduction)luaL_checkoption(L, 5, "mean", reductions);
  cbl_check(L, cb_cross_entropy(&y, x, t, w, smoothing, reduction));
  cbl_push_tensor(L, y);
  return 1;
}

/* conv_path([name]) -> the convolution path in use, after switching to name
 * if given (im2col, avx2, avx512, avx2-winograd, avx512-winograd; see
 * core/nn/conv_direct.h). */
static int l_conv_path(lua_State *L) {
  if (!lua_isnoneornil(L, 1)) {
    const char *name = luaL_checkstring(L, 1);
    cb_conv_path path = cb_conv_path_from_name(name);
    if (path == CB_CONV_NUM_PATHS)
      return luaL_argerror(L, 1, lua_pushfstring(L, "unknown conv path '%s' (im2col, avx2, avx512, avx2-winograd, avx512-winograd)",
                                                 name));
    cbl_check(L, cb_conv_set_path(path));
  }
  lua_pushstring(L, cb_conv_path_name(cb_conv_get_path()));
  return 1;
}

/* conv_paths() -> the paths this CPU runs, slowest first. */
static int l_conv_paths(lua_State *L) {
  lua_newtable(L);
  for (int p = 0, n = 0; p < CB_CONV_NUM_PATHS; p++) {
    if (!cb_conv_path_supported((cb_conv_path)p)) continue;
    lua_pushstring(L, cb_conv_path_name((cb_conv_path)p));
    lua_rawseti(L, -2, ++n);
  }
  return 1;
}

static const luaL_Reg nn_functions[] = {
    {"conv_path", l_conv_path}, {"conv_paths", l_conv_paths},
    {"conv2d", l_conv2d}, {"linear", l_linear}, {"batch_norm", l_batch_norm},
    {"batch_norm_relu_conv2d", l_batch_norm_relu_conv2d},
    {"conv2d_batch_norm_relu_pool", l_conv2d_batch_norm_relu_pool},
    {"max_pool2d", l_max_pool2d}, {"avg_pool2d", l_avg_pool2d},
    {"adaptive_avg_pool2d", l_adaptive_avg_pool2d}, {"leaky_relu", l_leaky_relu},
    {"gelu", l_gelu}, {"softplus", l_softplus}, {"dropout", l_dropout}, {"softmax", l_softmax},
    {"log_softmax", l_log_softmax}, {"cross_entropy", l_cross_entropy}, {NULL, NULL}};

void cbl_open_nn(lua_State *L) { luaL_setfuncs(L, nn_functions, 0); }
