#include "check.h"

static void test_sum_mean_var(void) {
  cb_tensor *a = make_tensor(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6}), *r;
  CHECK_OK(cb_reduce(&r, CB_SUM, a, 0, NULL, false, 1));
  CHECK(r->ndim == 0 && at(r, 0, 0, 0) == 21.0f);
  cb_tensor_release(r);
  CHECK_OK(cb_reduce(&r, CB_SUM, a, 1, (int[]){0}, false, 1));
  CHECK(r->ndim == 1 && at(r, 0, 0, 0) == 5 && at(r, 2, 0, 0) == 9);
  cb_tensor_release(r);
  CHECK_OK(cb_reduce(&r, CB_MEAN, a, 1, (int[]){-1}, true, 1));
  CHECK(r->ndim == 2 && r->shape[1] == 1 && at(r, 1, 0, 0) == 5.0f);
  cb_tensor_release(r);
  CHECK_OK(cb_reduce(&r, CB_VAR, a, 1, (int[]){1}, false, 1)); /* unbiased: 1 */
  CHECK_NEAR(at(r, 0, 0, 0), 1.0, 1e-6);
  cb_tensor_release(r);
  CHECK_OK(cb_reduce(&r, CB_VAR, a, 0, NULL, false, 0)); /* population: 35/12 */
  CHECK_NEAR(at(r, 0, 0, 0), 35.0 / 12, 1e-6);
  cb_tensor_release(r);
  CHECK_OK(cb_reduce(&r, CB_PROD, a, 1, (int[]){1}, false, 1));
  CHECK(at(r, 1, 0, 0) == 120.0f);
  cb_tensor_release(r);
  CHECK_FAILS(cb_reduce(&r, CB_SUM, a, 1, (int[]){2}, false, 1), CB_ERANGE);
  CHECK_FAILS(cb_reduce(&r, CB_SUM, a, 2, (int[]){1, -1}, false, 1), CB_EINVAL);
  cb_tensor_release(a);
}

static void test_max_argmax(void) {
  cb_tensor *a = make_tensor(2, (int64_t[]){2, 3}, (float[]){1, 7, 7, -4, -5, NAN}), *v, *i;
  CHECK_OK(cb_max_dim(&v, &i, a, 1, false, false));
  CHECK(at(v, 0, 0, 0) == 7 && at(i, 0, 0, 0) == 1); /* first of the ties */
  CHECK(isnan(at(v, 1, 0, 0)) && at(i, 1, 0, 0) == 2); /* NaN propagates */
  cb_tensor_release(v);
  cb_tensor_release(i);
  CHECK_OK(cb_max_dim(&v, &i, a, 0, true, true));
  CHECK(v->ndim == 2 && at(v, 0, 0, 0) == -4 && at(i, 0, 1, 0) == 1);
  cb_tensor_release(v);
  cb_tensor_release(i);
  CHECK_OK(cb_reduce(&i, CB_ARGMAX, a, 0, NULL, false, 1)); /* flattened: the NaN */
  CHECK(i->dtype == CB_INT64 && at(i, 0, 0, 0) == 5);
  cb_tensor_release(i);
  cb_tensor *e;
  CHECK_OK(cb_tensor_zeros(&e, 2, (int64_t[]){3, 0}, CB_FLOAT32));
  CHECK_FAILS(cb_max_dim(&v, &i, e, 1, false, false), CB_EINVAL);
  CHECK_OK(cb_reduce(&v, CB_SUM, e, 1, (int[]){1}, false, 1));
  CHECK(v->shape[0] == 3 && at(v, 2, 0, 0) == 0);
  cb_tensor_release(v);
  cb_tensor_release(e);
  cb_tensor_release(a);
}

/* A large strided reduction (thread pool, chunked partial sums) against a
 * double loop. */
static void test_large(void) {
  cb_tensor *x = randn_tensor(2, (int64_t[]){300, 700}, 7), *t, *r, *full;
  CHECK_OK(cb_tensor_transpose(&t, x, 0, 1)); /* {700, 300} */
  CHECK_OK(cb_reduce(&r, CB_SUM, t, 1, (int[]){0}, false, 1)); /* {300} */
  CHECK_OK(cb_reduce(&full, CB_MEAN, t, 0, NULL, false, 1));
  int bad = 0;
  double total = 0;
  for (int i = 0; i < 300; i++) {
    double s = 0;
    for (int j = 0; j < 700; j++) s += at(x, i, j, 0);
    total += s;
    if (fabs(s - at(r, i, 0, 0)) > 1e-3) bad++;
  }
  CHECK(bad == 0);
  CHECK_NEAR(at(full, 0, 0, 0), total / 210000, 1e-6);
  cb_tensor_release(full);
  cb_tensor_release(r);
  cb_tensor_release(t);
  cb_tensor_release(x);
}

/* The double sums under batch norm's statistics (the CPU's widest path):
 * runs of every length around the 32 lanes, against long double. */
static void test_sum_floats(void) {
  static float p[1037];
  uint64_t state = 12345;
  for (int i = 0; i < 1037; i++) { /* values of very different sizes, both signs */
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    double u = (double)(state >> 11) / 9007199254740992.0;
    p[i] = (float)((u - 0.4) * (i % 7 == 0 ? 1e4 : 1.0));
  }
  int64_t lengths[] = {0, 1, 5, 31, 32, 33, 63, 64, 65, 100, 1037};
  for (size_t k = 0; k < sizeof lengths / sizeof *lengths; k++) {
    int64_t n = lengths[k];
    long double sum = 0, mass = 0, sq = 0;
    for (int64_t i = 0; i < n; i++) sum += p[i], mass += fabsl(p[i]);
    double shift = n ? (double)(sum / n) + 0.25 : 0.0;
    for (int64_t i = 0; i < n; i++) sq += ((long double)p[i] - shift) * ((long double)p[i] - shift);
    CHECK(fabsl(cb_sum_floats(p, n) - sum) <= 1e-13L * (mass + 1));
    CHECK(fabsl(cb_sum_squared_deviations(p, n, shift) - sq) <= 1e-13L * (sq + 1));
  }
  CHECK(cb_sum_floats(p, 0) == 0 && cb_sum_squared_deviations(p, 0, 1.0) == 0);
  float ones[40];
  for (int i = 0; i < 40; i++) ones[i] = 1.0f;
  CHECK(cb_sum_floats(ones, 40) == 40 && cb_sum_squared_deviations(ones, 40, 3.0) == 160);
}

void test_reduce(void) {
  test_sum_floats();
  test_sum_mean_var();
  test_max_argmax();
  test_large();
}
