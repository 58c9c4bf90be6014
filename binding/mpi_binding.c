/* cbnet.mpi: the few MPI calls data-parallel training needs, as a module of
 * its own (build/lib/cbnet/mpi.so, built only where Open MPI's headers are
 * installed), so cbnet builds and runs without MPI. It reads the tensors of
 * the cbnet.core module loaded in the same process through their struct
 * alone (tensor.h), calling none of the core's functions: Lua loads each C
 * module with its symbols private. */
#include <lauxlib.h>
#include <lua.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>

#include "binding.h"

/* init() -> rank, size (MPI_Init once; MPI errors abort the whole job, so a
 * rank that fails never leaves the others waiting). */
static int l_init(lua_State *L) {
  int ready = 0;
  MPI_Initialized(&ready);
  if (!ready && MPI_Init(NULL, NULL) != MPI_SUCCESS) return luaL_error(L, "mpi: MPI_Init failed");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  lua_pushinteger(L, rank);
  lua_pushinteger(L, size);
  return 2;
}

/* The float32 elements of a contiguous tensor argument, and their count. */
static float *check_flat_float(lua_State *L, int arg, int64_t *n) {
  tensor_box *box = luaL_checkudata(L, arg, TENSOR_MT);
  cb_tensor *t = box->t;
  if (!t) luaL_argerror(L, arg, "tensor was closed");
  int64_t expected = 1;
  for (int d = t->ndim - 1; d >= 0; d--) {
    if (t->shape[d] != 1 && t->stride[d] != expected)
      luaL_argerror(L, arg, "expected a contiguous float32 tensor");
    expected *= t->shape[d];
  }
  if (t->dtype != CB_FLOAT32) luaL_argerror(L, arg, "expected a contiguous float32 tensor");
  *n = expected;
  atomic_fetch_add(&t->storage->version, 1); /* written in place */
  return (float *)t->storage->data + t->offset;
}

/* allreduce_sum_(t): t = the sum of t over all ranks, in place (a
 * contiguous float32 tensor: one flat buffer of gradients). */
static int l_allreduce_sum_(lua_State *L) {
  int64_t n;
  float *p = check_flat_float(L, 1, &n);
  for (int64_t done = 0; done < n;) { /* MPI counts are ints */
    int count = n - done > (1 << 30) ? (1 << 30) : (int)(n - done);
    MPI_Allreduce(MPI_IN_PLACE, p + done, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    done += count;
  }
  lua_settop(L, 1);
  return 1;
}

/* The sum of doubles over all ranks, in place: synchronised batch norm's
 * statistics (a cb_reducer). */
static void sum_over_ranks(void *ctx, double *values, int64_t n) {
  (void)ctx;
  for (int64_t done = 0; done < n;) {
    int count = n - done > (1 << 30) ? (1 << 30) : (int)(n - done);
    MPI_Allreduce(MPI_IN_PLACE, values + done, count, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    done += count;
  }
}

/* reducer() -> the reducer that batch_norm's sync option takes, or nil when
 * MPI is not initialised or the job has one rank. */
static int l_reducer(lua_State *L) {
  int ready = 0, done = 0, size = 1;
  MPI_Initialized(&ready);
  MPI_Finalized(&done);
  if (ready && !done) MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size <= 1) {
    lua_pushnil(L);
    return 1;
  }
  cb_reducer *r = lua_newuserdatauv(L, sizeof *r, 0);
  r->sum = sum_over_ranks;
  r->ctx = NULL;
  luaL_newmetatable(L, REDUCER_MT);
  lua_setmetatable(L, -2);
  return 1;
}

static int l_barrier(lua_State *L) {
  (void)L;
  MPI_Barrier(MPI_COMM_WORLD);
  return 0;
}

/* abort(message): ends every rank of the job (after an error on this one). */
static int l_abort(lua_State *L) {
  const char *msg = luaL_optstring(L, 1, "aborted");
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  fprintf(stderr, "cbnet: rank %d: %s\n", rank, msg);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 1);
  return 0;
}

static int l_finalize(lua_State *L) {
  (void)L;
  int ready = 0, done = 0;
  MPI_Initialized(&ready);
  MPI_Finalized(&done);
  if (ready && !done) MPI_Finalize();
  return 0;
}

static const luaL_Reg mpi_functions[] = {
    {"init", l_init}, {"allreduce_sum_", l_allreduce_sum_}, {"reducer", l_reducer},
    {"barrier", l_barrier},
    {"abort", l_abort}, {"finalize", l_finalize}, {NULL, NULL}};

int luaopen_cbnet_mpi(lua_State *L) {
  luaL_newlib(L, mpi_functions);
  return 1;
}
