/* The optimizer updates for Lua: cbnet.core.sgd_step and adam_step, one
 * parameter tensor a call. lua/cbnet/optim.lua keeps the optimizer state
 * (groups, buffers, step counts) and calls these. */
#include "binding.h"

/* sgd_step(param, grad, momentum_buffer, first_step, lr, momentum, dampening,
 * weight_decay, nesterov) */
static int l_sgd_step(lua_State *L) {
  cb_tensor *p = cbl_check_tensor(L, 1), *g = cbl_check_tensor(L, 2), *buf = cbl_opt_tensor(L, 3);
  cb_sgd_options o = {.lr = luaL_checknumber(L, 5), .momentum = luaL_optnumber(L, 6, 0),
                      .dampening = luaL_optnumber(L, 7, 0), .weight_decay = luaL_optnumber(L, 8, 0),
                      .nesterov = lua_toboolean(L, 9)};
  cbl_check(L, cb_sgd_step(p, g, buf, lua_toboolean(L, 4), &o));
  return 0;
}

/* adam_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
 * weight_decay, decoupled) */
static int l_adam_step(lua_State *L) {
  cb_tensor *p = cbl_check_tensor(L, 1), *g = cbl_check_tensor(L, 2);
  cb_tensor *m = cbl_check_tensor(L, 3), *v = cbl_check_tensor(L, 4);
  cb_adam_options o = {.lr = luaL_checknumber(L, 6), .beta1 = luaL_checknumber(L, 7),
                       .beta2 = luaL_checknumber(L, 8), .eps = luaL_checknumber(L, 9),
                       .weight_decay = luaL_optnumber(L, 10, 0), .decoupled = lua_toboolean(L, 11)};
  cbl_check(L, cb_adam_step(p, g, m, v, luaL_checkinteger(L, 5), &o));
  return 0;
}

static const luaL_Reg optim_functions[] = {
    {"sgd_step", l_sgd_step}, {"adam_step", l_adam_step}, {NULL, NULL}};

void cbl_open_optim(lua_State *L) { luaL_setfuncs(L, optim_functions, 0); }
