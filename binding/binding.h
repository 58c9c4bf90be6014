/* Shared pieces of the Lua binding (the only code that sees both Lua and
 * the core). */
#ifndef CB_BINDING_H
#define CB_BINDING_H

#include <lauxlib.h>
#include <lua.h>

#include "cbnet.h"
#include "nn/nn.h"
#include "nn/optim.h"

#define TENSOR_MT "cbnet.Tensor"
#define GENERATOR_MT "cbnet.Generator"
/* A cb_reducer as a userdata: made by cbnet.mpi (reducer()), taken by
 * batch_norm for synchronised statistics. */
#define REDUCER_MT "cbnet.Reducer"

typedef struct {
  cb_tensor *t; /* NULL once closed */
} tensor_box;

/* Raises a Lua error with the core's message when st is not CB_OK, placed
 * at the first caller outside cbnet's own Lua modules (the user's line). */
void cbl_check(lua_State *L, cb_status st);
/* Pushes t as a Tensor userdata, taking over the caller's reference; new
 * storage is reported to the garbage collector. */
void cbl_push_tensor(lua_State *L, cb_tensor *t);
cb_tensor *cbl_check_tensor(lua_State *L, int arg);
cb_tensor *cbl_test_tensor(lua_State *L, int arg);
/* A tensor argument, or NULL when it is nil or absent. */
cb_tensor *cbl_opt_tensor(lua_State *L, int arg);
/* A tensor argument, or a number turned into a 0-d tensor (pushed on the
 * stack so the collector owns it); like gives the dtype class. */
cb_tensor *cbl_check_operand(lua_State *L, int arg, const cb_tensor *like);
/* A 1-based (or negative) dim argument, converted to the core's 0-based
 * (or still negative) form. */
int cbl_check_dim(lua_State *L, int arg);
/* The same for a dim value d read from argument arg (or from a list in it). */
int cbl_dim_from_lua(lua_State *L, int arg, lua_Integer d);
int cbl_opt_dim(lua_State *L, int arg, int def);
/* Reads sizes from arguments first.. (numbers, or one table of numbers);
 * returns the index of the first argument after them. */
int cbl_read_shape(lua_State *L, int first, int *ndim, int64_t *shape);
cb_dtype cbl_opt_dtype(lua_State *L, int arg, cb_dtype def);
cb_generator *cbl_opt_generator(lua_State *L, int arg);
/* A string argument handed to C as a C string (a path, a name): one with a
 * NUL byte inside would be cut short there, so it is an error. */
const char *cbl_check_cstring(lua_State *L, int arg);
const char *cbl_opt_cstring(lua_State *L, int arg, const char *def);
/* The key of the table at idx (or of extra, a NULL-terminated list) nearest
 * to key by edit distance, if near enough to be a likely typo; else NULL. */
const char *cbl_nearest_key(lua_State *L, int idx, const char *key, const char *const *extra);
/* The length of a Lua list of data (sizes, values, tensors): its raw
 * length, so a __len metamethod cannot make the binding loop or overrun. */
lua_Integer cbl_list_len(lua_State *L, int idx);
/* Fills t with the number or boolean at idx; an integer stays exact in an
 * int64 tensor (a double holds only 53 bits). */
cb_status cbl_fill_value(lua_State *L, cb_tensor *t, int idx);

void cbl_open_tensor(lua_State *L);  /* registers the Tensor metatable */
void cbl_open_nn(lua_State *L);      /* adds the nn kernels to the table on top */
void cbl_open_optim(lua_State *L);   /* adds the optimizer updates */
void cbl_open_data(lua_State *L);    /* adds the dataset readers and augmentation */

#endif
