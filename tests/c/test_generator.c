#include <string.h>

#include "check.h"

void test_generator(void) {
  cb_generator g, zero;
  cb_generator_seed(&zero, 0);
  CHECK(memcmp(zero.s, cb_default_generator()->s, sizeof zero.s) == 0 ||
        cb_default_generator()->seed != 0);
  /* same seed, same stream; different seeds, different streams */
  cb_tensor *a, *b;
  CHECK_OK(cb_tensor_empty(&a, 1, (int64_t[]){1000}, CB_FLOAT32));
  CHECK_OK(cb_tensor_empty(&b, 1, (int64_t[]){1000}, CB_FLOAT32));
  cb_generator_seed(&g, 42);
  CHECK_OK(cb_normal_(a, 0, 1, &g));
  cb_generator_seed(&g, 42);
  CHECK_OK(cb_normal_(b, 0, 1, &g));
  CHECK(memcmp(cb_tensor_data(a), cb_tensor_data(b), 4000) == 0);
  double mean = 0, sq = 0;
  const float *p = cb_tensor_data(a);
  for (int i = 0; i < 1000; i++) {
    mean += p[i];
    sq += (double)p[i] * p[i];
  }
  mean /= 1000;
  CHECK(fabs(mean) < 0.15 && fabs(sq / 1000 - mean * mean - 1) < 0.15);
  CHECK_OK(cb_uniform_(a, 2, 3, &g));
  int outside = 0;
  for (int i = 0; i < 1000; i++) outside += p[i] < 2 || p[i] >= 3;
  CHECK(outside == 0);
  /* randint covers [0, 3) evenly enough; randperm is a permutation */
  cb_tensor *ints;
  CHECK_OK(cb_tensor_empty(&ints, 1, (int64_t[]){3000}, CB_INT64));
  CHECK_OK(cb_randint_(ints, 0, 3, &g));
  int count[3] = {0};
  const int64_t *ip = cb_tensor_data(ints);
  for (int i = 0; i < 3000; i++)
    if (ip[i] >= 0 && ip[i] < 3) count[ip[i]]++;
  CHECK(count[0] > 900 && count[1] > 900 && count[2] > 900 &&
        count[0] + count[1] + count[2] == 3000);
  cb_tensor *perm;
  CHECK_OK(cb_randperm(&perm, 100, &g));
  int seen[100] = {0}, dup = 0;
  const int64_t *pp = cb_tensor_data(perm);
  for (int i = 0; i < 100; i++) dup += (pp[i] < 0 || pp[i] >= 100) ? 1 : seen[pp[i]]++;
  CHECK(dup == 0);
  CHECK_FAILS(cb_randint_(ints, 3, 3, &g), CB_EINVAL);
  cb_tensor_release(perm);
  cb_tensor_release(ints);
  cb_tensor_release(a);
  cb_tensor_release(b);
}
