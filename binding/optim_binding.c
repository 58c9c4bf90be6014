/* The optimizer updates for Lua: cbnet.core.sgd_step and adam_step, one
 * parameter group a call (its parameters, gradients and state as parallel
 * lists). lua/cbnet/optim.lua keeps the optimizer state (groups, buffers,
 * step counts) and calls these. */
#include "binding.h"

/* Element i (from 1) of the list at arg: a tensor, or NULL where `optional`
 * and the element is nil (the list itself may then be nil). */
static cb_tensor *list_tensor(lua_State *L, int arg, lua_Integer i, bool optional) {
  if (optional && lua_isnoneornil(L, arg)) return NULL;
  lua_geti(L, arg, i);
  tensor_box *box = luaL_testudata(L, -1, TENSOR_MT);
  if (!box && !(optional && lua_isnil(L, -1)))
    luaL_argerror(L, arg, lua_pushfstring(L, "element %d is not a tensor", (int)i));
  if (box && !box->t) luaL_argerror(L, arg, lua_pushfstring(L, "element %d was closed", (int)i));
  lua_pop(L, 1); /* the list keeps the tensor alive */
  return box ? box->t : NULL;
}

/* The length of the parameter list at arg 1, after checking that the lists
 * at args [2, last] are tables as long (the one at `optional`, if any, may
 * be nil instead). */
static lua_Integer group_length(lua_State *L, int last, int optional) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = cbl_list_len(L, 1);
  for (int arg = 2; arg <= last; arg++) {
    if (arg == optional && lua_isnoneornil(L, arg)) continue;
    luaL_checktype(L, arg, LUA_TTABLE);
    if (cbl_list_len(L, arg) != n)
      luaL_argerror(L, arg, lua_pushfstring(L, "%I entries for %I parameters",
                                            cbl_list_len(L, arg), n));
  }
  return n;
}

/* sgd_step(params, grads, momentum_buffers or nil, first_steps, lr, momentum,
 * dampening, weight_decay, nesterov) */
static int l_sgd_step(lua_State *L) {
  lua_Integer n = group_length(L, 4, 3);
  cb_sgd_options o = {.lr = luaL_checknumber(L, 5), .momentum = luaL_optnumber(L, 6, 0),
                      .dampening = luaL_optnumber(L, 7, 0), .weight_decay = luaL_optnumber(L, 8, 0),
                      .nesterov = lua_toboolean(L, 9)};
  cb_sgd_param *entries = lua_newuserdatauv(L, sizeof *entries * (size_t)(n ? n : 1), 0);
  for (lua_Integer i = 0; i < n; i++) {
    entries[i] = (cb_sgd_param){.param = list_tensor(L, 1, i + 1, false),
                                .grad = list_tensor(L, 2, i + 1, false),
                                .momentum_buffer = list_tensor(L, 3, i + 1, true)};
    lua_geti(L, 4, i + 1);
    entries[i].first_step = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  cbl_check(L, cb_sgd_step(n, entries, &o));
  return 0;
}

/* adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2,
 * eps, weight_decay, decoupled) */
static int l_adam_step(lua_State *L) {
  lua_Integer n = group_length(L, 5, 0);
  cb_adam_options o = {.lr = luaL_checknumber(L, 6), .beta1 = luaL_checknumber(L, 7),
                       .beta2 = luaL_checknumber(L, 8), .eps = luaL_checknumber(L, 9),
                       .weight_decay = luaL_optnumber(L, 10, 0), .decoupled = lua_toboolean(L, 11)};
  cb_adam_param *entries = lua_newuserdatauv(L, sizeof *entries * (size_t)(n ? n : 1), 0);
  for (lua_Integer i = 0; i < n; i++) {
    entries[i] = (cb_adam_param){.param = list_tensor(L, 1, i + 1, false),
                                 .grad = list_tensor(L, 2, i + 1, false),
                                 .exp_avg = list_tensor(L, 3, i + 1, false),
                                 .exp_avg_sq = list_tensor(L, 4, i + 1, false)};
    lua_geti(L, 5, i + 1);
    int is_integer;
    entries[i].step = lua_tointegerx(L, -1, &is_integer);
    if (!is_integer) luaL_argerror(L, 5, lua_pushfstring(L, "step %d is not an integer", (int)i + 1));
    lua_pop(L, 1);
  }
  cbl_check(L, cb_adam_step(n, entries, &o));
  return 0;
}

static const luaL_Reg optim_functions[] = {
    {"sgd_step", l_sgd_step}, {"adam_step", l_adam_step}, {NULL, NULL}};

void cbl_open_optim(lua_State *L) { luaL_setfuncs(L, optim_functions, 0); }
