#include "tensor/threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>


#define MAX_THREADS CB_MAX_THREADS

/* A worker that has finished a job, and a caller waiting for its workers,
 * spin this many pauses (some tens of microseconds) before they sleep on a
 * condition variable: a training step is hundreds of parallel loops in a
 * row, and a futex wake-up per loop (tens of microseconds each, while the
 * caller runs the chunks alone) costs more than the spinning. */
#define SPIN_PAUSES 4000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/* One job at a time; the caller that holds busy_lock owns the pool. */
typedef struct {
  pthread_mutex_t busy_lock;
  pthread_mutex_t lock;
  pthread_cond_t work_ready;
  pthread_cond_t work_done;
  pthread_t workers[MAX_THREADS];
  int nworkers;    /* started workers */
  int nthreads;    /* chunks per job, including the caller */
  _Atomic uint64_t generation; /* a new job; written under lock, read also without */
  _Atomic int pending;          /* chunks not yet finished; likewise */
  /* the current job */
  cb_range_fn fn;
  void *ctx;
  int64_t n;
  int nchunks;
  int next_chunk;
  cb_pool_stats stats; /* under lock */
} pool_t;

static pool_t pool = {
    .busy_lock = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .work_ready = PTHREAD_COND_INITIALIZER,
    .work_done = PTHREAD_COND_INITIALIZER,
};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static _Thread_local bool in_parallel_region;

static double seconds_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void chunk_bounds(int64_t n, int nchunks, int chunk, int64_t *begin,
                         int64_t *end) {
  *begin = n * chunk / nchunks;
  *end = n * (chunk + 1) / nchunks;
}

/* Takes chunks of the current job until none are left. Called with lock
 * held; returns with it held. */
static void run_chunks(void) {
  while (pool.next_chunk < pool.nchunks) {
    int chunk = pool.next_chunk++;
    cb_range_fn fn = pool.fn;
    void *ctx = pool.ctx;
    int64_t begin, end;
    chunk_bounds(pool.n, pool.nchunks, chunk, &begin, &end);
    pthread_mutex_unlock(&pool.lock);
    double start = seconds_now();
    fn(ctx, chunk, begin, end);
    double took = seconds_now() - start;
    pthread_mutex_lock(&pool.lock);
    pool.stats.busy_seconds += took;
    if (--pool.pending == 0) pthread_cond_broadcast(&pool.work_done);
  }
}

static void *worker_main(void *arg) {
  (void)arg;
  in_parallel_region = true;
  pthread_mutex_lock(&pool.lock);
  uint64_t seen = pool.generation;
  for (;;) {
    if (pool.generation == seen) { /* spin a while for the next job, then sleep */
      pthread_mutex_unlock(&pool.lock);
      for (int i = 0; i < SPIN_PAUSES && atomic_load_explicit(&pool.generation, memory_order_acquire) == seen; i++)
        cpu_relax();
      pthread_mutex_lock(&pool.lock);
    }
    while (pool.generation == seen) pthread_cond_wait(&pool.work_ready, &pool.lock);
    seen = pool.generation;
    run_chunks();
  }
  return NULL;
}

static int default_thread_count(void) {
  const char *env = getenv("CBNET_NUM_THREADS");
  int n = env ? atoi(env) : 0;
  if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n <= 0) n = 1;
  return n > MAX_THREADS ? MAX_THREADS : n;
}

static void pool_init(void) { pool.nthreads = default_thread_count(); }

int cb_get_num_threads(void) {
  pthread_once(&pool_once, pool_init);
  return pool.nthreads;
}

cb_status cb_set_num_threads(int n) {
  if (n < 1 || n > MAX_THREADS)
    return cb_fail(CB_EINVAL, "set_num_threads: expected 1..%d threads, got %d",
                   MAX_THREADS, n);
  pthread_once(&pool_once, pool_init);
  pthread_mutex_lock(&pool.busy_lock);
  pool.nthreads = n;
  pthread_mutex_unlock(&pool.busy_lock);
  return CB_OK;
}

int cb_parallel_chunks(int64_t n, int64_t grain) {
  int nthreads = cb_get_num_threads();
  if (grain < 1) grain = 1;
  int64_t chunks = n / grain;
  if (chunks > nthreads) chunks = nthreads;
  return chunks < 1 ? 1 : (int)chunks;
}

/* Starts workers up to nthreads - 1; called with busy_lock held. */
static void ensure_workers(int want) {
  while (pool.nworkers < want) {
    if (pthread_create(&pool.workers[pool.nworkers], NULL, worker_main, NULL) != 0)
      break; /* fewer workers: the caller runs the remaining chunks */
    pthread_detach(pool.workers[pool.nworkers]);
    pool.nworkers++;
  }
}

int cb_parallel_for(int64_t n, int64_t grain, cb_range_fn fn, void *ctx) {
  if (n <= 0) return 1;
  int nchunks = cb_parallel_chunks(n, grain);
  if (nchunks == 1 || in_parallel_region ||
      pthread_mutex_trylock(&pool.busy_lock) != 0) {
    fn(ctx, 0, 0, n);
    return 1;
  }
  ensure_workers(nchunks - 1);
  double start = seconds_now();
  pthread_mutex_lock(&pool.lock);
  pool.fn = fn;
  pool.ctx = ctx;
  pool.n = n;
  pool.nchunks = nchunks;
  pool.next_chunk = 0;
  pool.pending = nchunks;
  pool.generation++;
  pthread_cond_broadcast(&pool.work_ready);
  in_parallel_region = true;
  run_chunks();
  if (pool.pending > 0) { /* the workers' chunks: spin a while, then sleep */
    pthread_mutex_unlock(&pool.lock);
    for (int i = 0; i < SPIN_PAUSES && atomic_load_explicit(&pool.pending, memory_order_acquire) > 0; i++)
      cpu_relax();
    pthread_mutex_lock(&pool.lock);
  }
  while (pool.pending > 0) pthread_cond_wait(&pool.work_done, &pool.lock);
  in_parallel_region = false;
  double took = seconds_now() - start;
  pool.stats.loops++;
  pool.stats.loop_seconds += took;
  pool.stats.thread_seconds += took * nchunks;
  pthread_mutex_unlock(&pool.lock);
  pthread_mutex_unlock(&pool.busy_lock);
  return nchunks;
}

cb_pool_stats cb_pool_stats_get(void) {
  pthread_mutex_lock(&pool.lock);
  cb_pool_stats stats = pool.stats;
  pthread_mutex_unlock(&pool.lock);
  return stats;
}

void cb_pool_stats_reset(void) {
  pthread_mutex_lock(&pool.lock);
  pool.stats = (cb_pool_stats){0};
  pthread_mutex_unlock(&pool.lock);
}
