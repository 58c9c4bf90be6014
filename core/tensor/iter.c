#include "tensor/iter.h"

#include <string.h>

#include "tensor/threadpool.h"

/* Below this many elements a loop runs on one thread: waking the pool costs
 * more than it saves. */
#define PARALLEL_GRAIN 32768

cb_status cb_broadcast_shapes(const char *op, int n, const cb_tensor *const *ts,
                              int *out_ndim, int64_t *out_shape) {
  int ndim = 0;
  for (int i = 0; i < n; i++)
    if (ts[i]->ndim > ndim) ndim = ts[i]->ndim;
  for (int d = 0; d < ndim; d++) out_shape[d] = 1;
  for (int i = 0; i < n; i++) {
    const cb_tensor *t = ts[i];
    int lead = ndim - t->ndim;
    for (int d = 0; d < t->ndim; d++) {
      int64_t s = t->shape[d], *o = &out_shape[lead + d];
      if (s == *o || s == 1) continue;
      if (*o == 1) {
        *o = s;
        continue;
      }
      char bufs[2][128];
      return cb_fail(CB_ESHAPE, "%s: shapes %s and %s cannot be broadcast together",
                     op, cb_shape_str(bufs[0], 128, ts[0]->ndim, ts[0]->shape),
                     cb_shape_str(bufs[1], 128, t->ndim, t->shape));
    }
  }
  *out_ndim = ndim;
  return CB_OK;
}

void cb_iter_init(cb_iter *it, int nops, const cb_tensor *const *ops, int ndim,
                  const int64_t *shape) {
  memset(it, 0, sizeof *it);
  it->nops = nops;
  int64_t strides[CB_ITER_MAX_OPS][CB_MAX_DIMS];
  for (int i = 0; i < nops; i++) {
    const cb_tensor *t = ops[i];
    int64_t esize = cb_dtype_size(t->dtype);
    int lead = ndim - t->ndim;
    for (int d = 0; d < ndim; d++) {
      int td = d - lead;
      strides[i][d] = (td < 0 || t->shape[td] == 1) ? 0 : t->stride[td] * esize;
    }
    it->base[i] = (char *)cb_tensor_data(t);
  }
  /* Drop size-1 dims, then merge dim d into d+1 where every operand steps
   * through d exactly as a continuation of d+1. */
  int out = 0;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 1) continue;
    if (out > 0) {
      bool mergeable = true;
      for (int i = 0; i < nops; i++)
        if (it->stride[i][out - 1] != strides[i][d] * shape[d]) mergeable = false;
      if (mergeable) {
        it->shape[out - 1] *= shape[d];
        for (int i = 0; i < nops; i++) it->stride[i][out - 1] = strides[i][d];
        continue;
      }
    }
    it->shape[out] = shape[d];
    for (int i = 0; i < nops; i++) it->stride[i][out] = strides[i][d];
    out++;
  }
  if (out == 0) { /* a single element */
    it->shape[0] = 1;
    for (int i = 0; i < nops; i++) it->stride[i][0] = 0;
    out = 1;
  }
  /* An empty tensor: shape holds a 0 somewhere; cb_iter_run sees numel 0. */
  for (int d = 0; d < ndim; d++)
    if (shape[d] == 0) {
      it->shape[0] = 0;
      out = 1;
    }
  it->ndim = out;
}

typedef struct {
  const cb_iter *it;
  cb_row_fn row;
  void *ctx;
} run_job;

/* Runs the linear index range [begin, end) of the iteration space, row by
 * row (the last dim is the row). */
static void run_range(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const run_job *job = arg;
  const cb_iter *it = job->it;
  int nd = it->ndim, nops = it->nops;
  int64_t inner = it->shape[nd - 1];
  int64_t index[CB_MAX_DIMS];
  int64_t row = begin / inner, col = begin % inner;
  for (int d = nd - 2; d >= 0; d--) {
    index[d] = row % it->shape[d];
    row /= it->shape[d];
  }
  int64_t inner_stride[CB_ITER_MAX_OPS];
  for (int i = 0; i < nops; i++) inner_stride[i] = it->stride[i][nd - 1];
  int64_t pos = begin;
  while (pos < end) {
    char *ptrs[CB_ITER_MAX_OPS];
    for (int i = 0; i < nops; i++) {
      char *p = it->base[i] + col * it->stride[i][nd - 1];
      for (int d = 0; d < nd - 1; d++) p += index[d] * it->stride[i][d];
      ptrs[i] = p;
    }
    int64_t n = inner - col;
    if (n > end - pos) n = end - pos;
    job->row(job->ctx, n, ptrs, inner_stride);
    pos += n;
    col = 0;
    for (int d = nd - 2; d >= 0; d--) {
      if (++index[d] < it->shape[d]) break;
      index[d] = 0;
    }
  }
}

static int64_t iter_numel(const cb_iter *it) {
  int64_t total = 1;
  for (int d = 0; d < it->ndim; d++) total *= it->shape[d];
  return total;
}

void cb_iter_run(const cb_iter *it, cb_row_fn row, void *ctx) {
  int64_t total = iter_numel(it);
  run_job job = {it, row, ctx};
  if (total > 0) cb_parallel_for(total, PARALLEL_GRAIN, run_range, &job);
}

void cb_iter_run_serial(const cb_iter *it, cb_row_fn row, void *ctx) {
  int64_t total = iter_numel(it);
  run_job job = {it, row, ctx};
  if (total > 0) run_range(&job, 0, 0, total);
}
