/* OpenBLAS set-up: loading the library and choosing its CPU kernel.
 *
 * Debian's OpenBLAS 0.3.21 (a DYNAMIC_ARCH build) picks its kernel when it is
 * loaded, from CPUID, and does not know recent Xeons: it falls back to
 * 'Prescott' and sgemm runs ~5x slower than with the SkylakeX kernel. Its only
 * override is the OPENBLAS_CORETYPE environment variable, read once at load.
 * So cbnet does not link OpenBLAS: cb_blas_init() first decides the kernel
 * from the CPU's features (unless the user set OPENBLAS_CORETYPE), sets the
 * variable, then dlopen()s the library. This works the same for the cbnet
 * command and for `require "cbnet"` from a plain lua5.4. */
#ifndef CB_BLAS_H
#define CB_BLAS_H

#include <stdbool.h>
#include <stdint.h>

#include "tensor/error.h"

typedef enum {
  CB_KERNEL_FROM_USER,    /* OPENBLAS_CORETYPE was set before cbnet loaded */
  CB_KERNEL_FROM_CBNET,   /* cbnet set OPENBLAS_CORETYPE from CPU features */
  CB_KERNEL_FROM_OPENBLAS /* OpenBLAS's own detection (no better choice) */
} cb_kernel_source;

typedef struct {
  bool avx2, fma, avx512f, avx512bw, avx512dq, avx512vl, avx512_bf16, amx_bf16;
} cb_cpu_features;

cb_cpu_features cb_cpu_detect(void);
/* The OpenBLAS kernel cbnet wants for these features, or NULL to leave the
 * choice to OpenBLAS: AVX-512 with BF16 -> "Cooperlake", AVX-512 ->
 * "SkylakeX", AVX2 + FMA -> "Haswell". */
const char *cb_blas_kernel_for(cb_cpu_features features);

/* Loads OpenBLAS once (thread-safe); later calls return the first result. */
cb_status cb_blas_init(void);

typedef struct {
  const char *library;  /* path dlopen()ed */
  const char *config;   /* openblas_get_config() */
  const char *kernel;   /* openblas_get_corename(), e.g. "SkylakeX" */
  const char *wanted;   /* kernel cbnet asked for, or the user's value */
  cb_kernel_source source;
  int threads;          /* openblas_get_num_threads() */
} cb_blas_info;

cb_status cb_blas_get_info(cb_blas_info *info);

/* Row-major C = alpha * op(A) op(B) + beta * C, as cblas_sgemm. Large
 * products are split over cbnet's thread pool (OpenBLAS itself runs on one
 * thread); called from inside a parallel region, it runs in the caller. */
cb_status cb_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b,
                   int64_t ldb, float beta, float *c, int64_t ldc);

#endif
