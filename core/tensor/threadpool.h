/* A small fixed pool of worker threads for memory-bound loops.
 *
 * cb_parallel_for splits [0, n) into at most cb_get_num_threads() contiguous
 * chunks, runs them on the pool (the caller runs one chunk itself) and returns
 * when all are done. Work smaller than grain, calls made from inside a
 * parallel region, and calls made while another thread uses the pool run
 * serially in the caller, so the pool never oversubscribes the cores. It is
 * the only set of threads: OpenBLAS runs single-threaded inside its chunks.
 * Idle workers, and a caller waiting for them, spin briefly before they
 * sleep: loops come back to back in a training step, and a wake-up per loop
 * cost ResNet-32 5-10 % of its step on 2 threads. */
#ifndef CB_THREADPOOL_H
#define CB_THREADPOOL_H

#include <stdint.h>

#include "tensor/error.h"

/* The most threads the pool runs: callers may size per-worker arrays by it. */
#define CB_MAX_THREADS 64

/* fn(ctx, chunk, begin, end): chunk is 0..nchunks-1, in the order of [0, n). */
typedef void (*cb_range_fn)(void *ctx, int chunk, int64_t begin, int64_t end);

/* Returns the number of chunks used (1 when run serially). */
int cb_parallel_for(int64_t n, int64_t grain, cb_range_fn fn, void *ctx);

/* How many chunks cb_parallel_for(n, grain, ...) would use. */
int cb_parallel_chunks(int64_t n, int64_t grain);

/* Where the pool's time went since the process started or the last reset
 * (for profiles: are both cores busy?). A loop is a cb_parallel_for that ran
 * on the pool (more than one chunk); the time outside them, one core ran
 * alone. thread_seconds - busy_seconds is the time threads that took part
 * in a loop waited for the others (or to be woken). */
typedef struct {
  int64_t loops;
  double loop_seconds;   /* wall time inside the loops */
  double thread_seconds; /* each loop's wall time times its chunks */
  double busy_seconds;   /* the chunks' own run times */
} cb_pool_stats;
cb_pool_stats cb_pool_stats_get(void);
void cb_pool_stats_reset(void);

int cb_get_num_threads(void);
/* n >= 1. OpenBLAS always runs on one thread: see cb_sgemm. */
cb_status cb_set_num_threads(int n);

#endif
