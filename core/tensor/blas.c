#include "tensor/blas.h"
#include "tensor/threadpool.h"

#include <cpuid.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The cblas enum values, fixed by the CBLAS standard. */
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

typedef void (*sgemm_fn)(int order, int trans_a, int trans_b, int m, int n,
                         int k, float alpha, const float *a, int lda,
                         const float *b, int ldb, float beta, float *c,
                         int ldc);
typedef char *(*string_fn)(void);
typedef int (*get_threads_fn)(void);
typedef void (*set_threads_fn)(int);

static struct {
  cb_status status;
  char error[256];
  void *handle;
  const char *library;
  const char *wanted;
  cb_kernel_source source;
  sgemm_fn sgemm;
  string_fn get_config, get_corename;
  get_threads_fn get_num_threads;
  set_threads_fn set_num_threads;
} blas;

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

cb_cpu_features cb_cpu_detect(void) {
  cb_cpu_features f = {0};
  __builtin_cpu_init();
  /* libgcc checks XGETBV too: a feature counts only if the OS saves its
   * registers. */
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  /* gcc 12 has no __builtin_cpu_supports name for these: CPUID leaf 7. */
  unsigned eax, ebx, ecx, edx;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx))
    f.avx512_bf16 = f.avx512f && (eax & (1u << 5));
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
    f.amx_bf16 = (edx & (1u << 22)) != 0;
  return f;
}

const char *cb_blas_kernel_for(cb_cpu_features f) {
  bool avx512 = f.avx512f && f.avx512bw && f.avx512dq && f.avx512vl;
  if (avx512 && f.avx512_bf16) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (f.avx2 && f.fma) return "Haswell";
  return NULL;
}

static void *load_symbol(const char *name) { return dlsym(blas.handle, name); }

static void blas_load(void) {
  const char *user = getenv("OPENBLAS_CORETYPE");
  if (user && *user) {
    blas.source = CB_KERNEL_FROM_USER;
    blas.wanted = user;
  } else {
    blas.wanted = cb_blas_kernel_for(cb_cpu_detect());
    if (blas.wanted) {
      /* OpenBLAS reads this in its load-time constructor; child processes
       * (sweep jobs) inherit it, which is what we want. */
      setenv("OPENBLAS_CORETYPE", blas.wanted, 1);
      blas.source = CB_KERNEL_FROM_CBNET;
    } else {
      blas.source = CB_KERNEL_FROM_OPENBLAS;
    }
  }
  /* OpenBLAS's idle threads spin (calling sched_yield) for 2^28 cycles after
   * each call before sleeping: between BLAS calls they would take the cores
   * from cbnet's own pool. 2^4 cycles makes them sleep at once; waking them
   * costs microseconds against milliseconds of work per sgemm. */
  if (!getenv("OPENBLAS_THREAD_TIMEOUT")) setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
  static const char *const candidates[] = {
      "libopenblas.so.0", "libopenblas.so",
      "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0"};
  for (size_t i = 0; i < sizeof candidates / sizeof *candidates; i++) {
    blas.handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
    if (blas.handle) {
      blas.library = candidates[i];
      break;
    }
  }
  if (!blas.handle) {
    blas.status = CB_EIO;
    snprintf(blas.error, sizeof blas.error,
             "OpenBLAS could not be loaded (%s); install Debian's "
             "libopenblas0 (make deps)", dlerror());
    return;
  }
  blas.sgemm = (sgemm_fn)load_symbol("cblas_sgemm");
  blas.get_config = (string_fn)load_symbol("openblas_get_config");
  blas.get_corename = (string_fn)load_symbol("openblas_get_corename");
  blas.get_num_threads = (get_threads_fn)load_symbol("openblas_get_num_threads");
  blas.set_num_threads = (set_threads_fn)load_symbol("openblas_set_num_threads");
  if (!blas.sgemm) {
    blas.status = CB_EIO;
    snprintf(blas.error, sizeof blas.error,
             "%s has no cblas_sgemm: not an OpenBLAS library", blas.library);
    return;
  }
  /* OpenBLAS runs single-threaded, always: cb_sgemm splits a product over
   * cbnet's own pool, and the convolutions run whole images per worker, each
   * worker calling BLAS on its share. One set of threads keeps both cores busy
   * in every phase (im2col, col2im, the memory-bound ops between GEMMs), and
   * nobody spins in sched_yield waiting for the other set. */
  if (blas.set_num_threads) blas.set_num_threads(1);
  blas.status = CB_OK;
}

cb_status cb_blas_init(void) {
  pthread_once(&blas_once, blas_load);
  if (blas.status != CB_OK) return cb_fail(blas.status, "%s", blas.error);
  return CB_OK;
}

cb_status cb_blas_get_info(cb_blas_info *info) {
  cb_status st = cb_blas_init();
  if (st != CB_OK) return st;
  info->library = blas.library;
  info->config = blas.get_config ? blas.get_config() : "unknown";
  info->kernel = blas.get_corename ? blas.get_corename() : "unknown";
  info->wanted = blas.wanted ? blas.wanted : "(OpenBLAS's own choice)";
  info->source = blas.source;
  info->threads = blas.get_num_threads ? blas.get_num_threads() : 1;
  return CB_OK;
}

static void sgemm_call(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                       const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                       float *c, int64_t ldc) {
  blas.sgemm(ROW_MAJOR, trans_a ? TRANS : NO_TRANS, trans_b ? TRANS : NO_TRANS, (int)m, (int)n,
             (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* One product split over the pool: each worker computes a block of C's
 * columns (or of its rows, when C is taller than wide) with its own
 * single-threaded BLAS call. Blocks are whole multiples of SPLIT_ALIGN so that
 * every worker's block starts on a vector boundary. */
#define SPLIT_ALIGN 16
#define SPLIT_MIN_WORK ((int64_t)1 << 20) /* multiply-adds per worker */

typedef struct {
  bool trans_a, trans_b, by_columns;
  int64_t m, n, k, lda, ldb, ldc;
  float alpha, beta;
  const float *a, *b;
  float *c;
} sgemm_job;

static void sgemm_block(void *arg, int chunk, int64_t begin, int64_t end) {
  (void)chunk;
  const sgemm_job *j = arg;
  int64_t limit = j->by_columns ? j->n : j->m;
  int64_t lo = begin * SPLIT_ALIGN, hi = end * SPLIT_ALIGN < limit ? end * SPLIT_ALIGN : limit;
  if (hi <= lo) return;
  if (j->by_columns) /* columns lo..hi of op(B) and of C */
    sgemm_call(j->trans_a, j->trans_b, j->m, hi - lo, j->k, j->alpha, j->a, j->lda,
               j->b + (j->trans_b ? lo * j->ldb : lo), j->ldb, j->beta, j->c + lo, j->ldc);
  else /* rows lo..hi of op(A) and of C */
    sgemm_call(j->trans_a, j->trans_b, hi - lo, j->n, j->k, j->alpha,
               j->a + (j->trans_a ? lo : lo * j->lda), j->lda, j->b, j->ldb, j->beta,
               j->c + lo * j->ldc, j->ldc);
}

cb_status cb_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b,
                   int64_t ldb, float beta, float *c, int64_t ldc) {
  cb_status st = cb_blas_init();
  if (st != CB_OK) return st;
  if (m > INT_MAX || n > INT_MAX || k > INT_MAX || lda > INT_MAX ||
      ldb > INT_MAX || ldc > INT_MAX)
    return cb_fail(CB_EINVAL, "matmul: sizes (%lld x %lld x %lld) exceed what BLAS takes",
                   (long long)m, (long long)k, (long long)n);
  if (m == 0 || n == 0) return CB_OK;
  if (k == 0) { /* C = beta C; BLAS would also refuse the zero leading dims */
    for (int64_t i = 0; i < m; i++)
      for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0 ? 0.0f : beta * c[i * ldc + j];
    return CB_OK;
  }
  sgemm_job job = {trans_a, trans_b, n >= m, m, n, k, lda, ldb, ldc, alpha, beta, a, b, c};
  int64_t blocks = ((job.by_columns ? n : m) + SPLIT_ALIGN - 1) / SPLIT_ALIGN;
  int64_t work_per_block = (job.by_columns ? m : n) * k * SPLIT_ALIGN;
  int64_t grain = SPLIT_MIN_WORK / work_per_block + 1;
  cb_parallel_for(blocks, grain, sgemm_block, &job);
  return CB_OK;
}
