#include <stdlib.h>
#include <string.h>

#include "check.h"

int checks_passed, checks_failed;

void check_record(int ok, const char *file, int line, const char *what) {
  if (ok) {
    checks_passed++;
  } else {
    checks_failed++;
    fprintf(stderr, "FAIL %s:%d: %s  [%s]\n", file, line, what, cb_last_error());
  }
}

cb_tensor *make_tensor(int ndim, const int64_t *shape, const float *values) {
  cb_tensor *t = NULL;
  if (cb_tensor_empty(&t, ndim, shape, CB_FLOAT32) != CB_OK) abort();
  memcpy(cb_tensor_data(t), values, sizeof(float) * (size_t)cb_tensor_numel(t));
  return t;
}

/* Element of a tensor of up to 3 dims (trailing indices ignored). */
float at(const cb_tensor *t, int64_t i0, int64_t i1, int64_t i2) {
  int64_t idx[3] = {i0, i1, i2};
  return (float)cb_tensor_get(t, idx);
}

cb_tensor *randn_tensor(int ndim, const int64_t *shape, uint64_t seed) {
  cb_tensor *t = NULL;
  cb_generator g;
  cb_generator_seed(&g, seed);
  if (cb_tensor_empty(&t, ndim, shape, CB_FLOAT32) != CB_OK) abort();
  if (cb_normal_(t, 0, 1, &g) != CB_OK) abort();
  return t;
}

void test_tensor(void);
void test_pointwise(void);
void test_reduce(void);
void test_matmul(void);
void test_index(void);
void test_generator(void);
void test_image_ops(void);

int main(void) {
  static const struct { const char *name; void (*fn)(void); } tests[] = {
      {"tensor", test_tensor},   {"pointwise", test_pointwise}, {"reduce", test_reduce},
      {"matmul", test_matmul},   {"index", test_index},         {"generator", test_generator},
      {"image_ops", test_image_ops}};
  for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
    int before = checks_failed;
    tests[i].fn();
    printf("%-10s %s\n", tests[i].name, checks_failed == before ? "ok" : "FAILED");
  }
  if (cb_storage_live_bytes() != 0) {
    fprintf(stderr, "FAIL: %lld bytes of tensor storage leaked\n",
            (long long)cb_storage_live_bytes());
    checks_failed++;
  } else {
    checks_passed++;
  }
  printf("c: %d passed, %d failed\n", checks_passed, checks_failed);
  return checks_failed ? 1 : 0;
}
