/* A minimal C test harness: CHECK* record a pass or a failure (with file and
 * line); test_main.c runs every test function and prints the totals. */
#ifndef CB_CHECK_H
#define CB_CHECK_H

#include <math.h>
#include <stdio.h>

#include "cbnet.h"

extern int checks_passed, checks_failed;

void check_record(int ok, const char *file, int line, const char *what);

#define CHECK(cond) check_record(!!(cond), __FILE__, __LINE__, #cond)
#define CHECK_OK(call) check_record((call) == CB_OK, __FILE__, __LINE__, #call)
#define CHECK_FAILS(call, code) check_record((call) == (code), __FILE__, __LINE__, #call)
#define CHECK_NEAR(a, b, tol) \
  check_record(fabs((double)(a) - (double)(b)) <= (tol), __FILE__, __LINE__, #a " ~ " #b)

/* Helpers shared by the tests. */
cb_tensor *make_tensor(int ndim, const int64_t *shape, const float *values);
float at(const cb_tensor *t, int64_t i0, int64_t i1, int64_t i2);
cb_tensor *randn_tensor(int ndim, const int64_t *shape, uint64_t seed);

#endif
