#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "check.h"

/* c[i][j] = sum_k a[i][k] b[k][j], in double, through cb_tensor_get so any
 * strides work. */
static double naive(const cb_tensor *a, const cb_tensor *b, int64_t i, int64_t j) {
  double s = 0;
  for (int64_t k = 0; k < a->shape[1]; k++)
    s += cb_tensor_get(a, (int64_t[]){i, k}) * cb_tensor_get(b, (int64_t[]){k, j});
  return s;
}

static int compare_mm(const cb_tensor *a, const cb_tensor *b) {
  cb_tensor *c;
  if (cb_matmul(&c, a, b) != CB_OK) return 1;
  int bad = 0;
  for (int64_t i = 0; i < a->shape[0]; i++)
    for (int64_t j = 0; j < b->shape[1]; j++)
      if (fabs(cb_tensor_get(c, (int64_t[]){i, j}) - naive(a, b, i, j)) > 1e-3) bad++;
  cb_tensor_release(c);
  return bad;
}

static void test_mm_shapes(void) {
  /* sizes around the kernel's block sizes, plain and transposed operands */
  static const int64_t sizes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 9}, {64, 64, 64},
                                     {129, 65, 31}, {200, 300, 100}};
  for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
    int64_t n = sizes[s][0], k = sizes[s][1], m = sizes[s][2];
    cb_tensor *a = randn_tensor(2, (int64_t[]){n, k}, 10 + s);
    cb_tensor *b = randn_tensor(2, (int64_t[]){k, m}, 20 + s);
    cb_tensor *at_ = randn_tensor(2, (int64_t[]){k, n}, 30 + s), *a_t;
    CHECK_OK(cb_tensor_transpose(&a_t, at_, 0, 1));
    CHECK(compare_mm(a, b) == 0);
    CHECK(compare_mm(a_t, b) == 0);
    cb_tensor *sl; /* a column slice: neither row- nor column-contiguous */
    cb_tensor *wide = randn_tensor(2, (int64_t[]){n, 2 * k}, 40 + s);
    CHECK_OK(cb_tensor_slice(&sl, wide, 1, 0, 2 * k, 2));
    CHECK(compare_mm(sl, b) == 0);
    cb_tensor_release(sl);
    cb_tensor_release(wide);
    cb_tensor_release(a_t);
    cb_tensor_release(at_);
    cb_tensor_release(a);
    cb_tensor_release(b);
  }
}

static void test_batched(void) {
  cb_tensor *a = randn_tensor(3, (int64_t[]){4, 5, 6}, 1), *b = randn_tensor(2, (int64_t[]){6, 3}, 2);
  cb_tensor *c, *b3 = randn_tensor(4, (int64_t[]){2, 1, 6, 3}, 3);
  CHECK_OK(cb_matmul(&c, a, b)); /* shared b: one sgemm over stacked rows */
  CHECK(c->ndim == 3 && c->shape[0] == 4 && c->shape[2] == 3);
  int bad = 0;
  for (int64_t i = 0; i < 4; i++) {
    cb_tensor *ai, *ci;
    cb_tensor_select(&ai, a, 0, i);
    cb_tensor_select(&ci, c, 0, i);
    for (int64_t r = 0; r < 5; r++)
      for (int64_t q = 0; q < 3; q++)
        bad += fabs(cb_tensor_get(ci, (int64_t[]){r, q}) - naive(ai, b, r, q)) > 1e-4;
    cb_tensor_release(ai);
    cb_tensor_release(ci);
  }
  CHECK(bad == 0);
  cb_tensor_release(c);
  CHECK_OK(cb_matmul(&c, a, b3)); /* broadcast batch: {2, 4, 5, 3} */
  CHECK(c->ndim == 4 && c->shape[0] == 2 && c->shape[1] == 4);
  cb_tensor *b31, *b31m, *c13, *a3;
  cb_tensor_select(&b31, b3, 0, 1);
  cb_tensor_select(&b31m, b31, 0, 0);
  cb_tensor_select(&c13, c, 0, 1);
  cb_tensor *c13_3;
  cb_tensor_select(&c13_3, c13, 0, 3);
  cb_tensor_select(&a3, a, 0, 3);
  CHECK_NEAR(cb_tensor_get(c13_3, (int64_t[]){4, 2}), naive(a3, b31m, 4, 2), 1e-4);
  cb_tensor_release(c13_3);
  cb_tensor_release(a3);
  cb_tensor_release(c13);
  cb_tensor_release(b31m);
  cb_tensor_release(b31);
  cb_tensor_release(c);
  /* vectors */
  cb_tensor *v = randn_tensor(1, (int64_t[]){6}, 4), *d;
  CHECK_OK(cb_matmul(&d, v, v));
  double dot = 0;
  for (int i = 0; i < 6; i++) dot += at(v, i, 0, 0) * at(v, i, 0, 0);
  CHECK(d->ndim == 0);
  CHECK_NEAR(at(d, 0, 0, 0), dot, 1e-4);
  cb_tensor_release(d);
  CHECK_OK(cb_matmul(&d, a, v)); /* {4, 5} */
  CHECK(d->ndim == 2 && d->shape[0] == 4 && d->shape[1] == 5);
  cb_tensor_release(d);
  CHECK_FAILS(cb_matmul(&d, b, b), CB_ESHAPE);
  CHECK(strstr(cb_last_error(), "{6, 3} and {6, 3}") != NULL);
  cb_tensor *iv;
  cb_tensor_arange(&iv, 0, 6, 1, CB_INT64);
  CHECK_FAILS(cb_matmul(&d, iv, v), CB_ETYPE);
  cb_tensor_release(iv);
  cb_tensor_release(v);
  cb_tensor_release(b3);
  cb_tensor_release(a);
  cb_tensor_release(b);
}

/* cbnet picks OpenBLAS's kernel from the CPU unless OPENBLAS_CORETYPE was set
 * (the test binary never sets it itself). */
static void test_kernel_choice(void) {
  cb_cpu_features none = {0}, avx2 = {.avx2 = true, .fma = true},
                  skx = {.avx2 = true, .fma = true, .avx512f = true, .avx512bw = true,
                         .avx512dq = true, .avx512vl = true},
                  cpx = skx;
  cpx.avx512_bf16 = true;
  CHECK(cb_blas_kernel_for(none) == NULL);
  CHECK(strcmp(cb_blas_kernel_for(avx2), "Haswell") == 0);
  CHECK(strcmp(cb_blas_kernel_for(skx), "SkylakeX") == 0);
  CHECK(strcmp(cb_blas_kernel_for(cpx), "Cooperlake") == 0);
  const char *user = getenv("OPENBLAS_CORETYPE");
  char user_copy[64] = "";
  if (user) snprintf(user_copy, sizeof user_copy, "%s", user);
  cb_blas_info info;
  CHECK_OK(cb_blas_get_info(&info));
  const char *want = info.source == CB_KERNEL_FROM_USER ? user_copy
                                                        : cb_blas_kernel_for(cb_cpu_detect());
  if (want) {
    CHECK(strcasecmp(info.kernel, want) == 0);
    if (strcasecmp(info.kernel, want) != 0)
      fprintf(stderr, "  OpenBLAS runs '%s', cbnet wanted '%s'\n", info.kernel, want);
  }
  CHECK(strcasecmp(info.kernel, "Prescott") != 0 || !cb_cpu_detect().avx2);
}

void test_matmul(void) {
  test_kernel_choice(); /* first: loads OpenBLAS */
  test_mm_shapes();
  test_batched();
}
