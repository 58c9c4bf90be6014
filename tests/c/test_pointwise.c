#include <string.h>

#include "check.h"

static void test_broadcast_add(void) {
  cb_tensor *a, *b, *c;
  a = make_tensor(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
  b = make_tensor(2, (int64_t[]){2, 1}, (float[]){10, 20});
  CHECK_OK(cb_binary(&c, CB_ADD, a, b));
  CHECK(c->shape[0] == 2 && c->shape[1] == 3);
  CHECK(at(c, 0, 2, 0) == 13.0f && at(c, 1, 0, 0) == 24.0f);
  cb_tensor_release(c);
  cb_tensor *bad = make_tensor(1, (int64_t[]){2}, (float[]){1, 2});
  CHECK_FAILS(cb_binary(&c, CB_MUL, a, bad), CB_ESHAPE);
  CHECK(strstr(cb_last_error(), "mul: shapes {2, 3} and {2} cannot be broadcast") != NULL);
  /* in place into a: a = a - b */
  CHECK_OK(cb_binary_into(a, CB_SUB, a, b));
  CHECK(at(a, 1, 2, 0) == -14.0f);
  CHECK_FAILS(cb_binary_into(b, CB_SUB, a, b), CB_ESHAPE); /* result is {2,3} */
  cb_tensor_release(bad);
  cb_tensor_release(a);
  cb_tensor_release(b);
}

static void test_types(void) {
  cb_tensor *i, *f, *r;
  CHECK_OK(cb_tensor_arange(&i, 0, 4, 1, CB_INT64));
  CHECK_OK(cb_binary_scalar(&r, CB_ADD, i, 2, true));
  CHECK(r->dtype == CB_INT64 && at(r, 3, 0, 0) == 5.0f);
  cb_tensor_release(r);
  CHECK_OK(cb_binary_scalar(&r, CB_MUL, i, 0.5, false));
  CHECK(r->dtype == CB_FLOAT32 && at(r, 3, 0, 0) == 1.5f);
  cb_tensor_release(r);
  CHECK_OK(cb_binary_scalar(&r, CB_DIV, i, 2, true)); /* true division */
  CHECK(r->dtype == CB_FLOAT32 && at(r, 3, 0, 0) == 1.5f);
  cb_tensor_release(r);
  CHECK_OK(cb_binary_scalar(&r, CB_GE, i, 2, true));
  CHECK(r->dtype == CB_BOOL && at(r, 1, 0, 0) == 0 && at(r, 2, 0, 0) == 1);
  cb_tensor *where, *zero;
  CHECK_OK(cb_tensor_scalar(&zero, -1, CB_INT64));
  CHECK_OK(cb_where(&where, r, i, zero));
  CHECK(where->dtype == CB_INT64 && at(where, 0, 0, 0) == -1 && at(where, 3, 0, 0) == 3);
  cb_tensor_release(where);
  cb_tensor_release(zero);
  cb_tensor_release(r);
  CHECK_OK(cb_unary(&f, CB_EXP, i));
  CHECK(f->dtype == CB_FLOAT32);
  CHECK_NEAR(at(f, 2, 0, 0), exp(2.0), 1e-5);
  cb_tensor_release(f);
  CHECK_OK(cb_clamp(&r, i, 1, 2));
  CHECK(at(r, 0, 0, 0) == 1 && at(r, 3, 0, 0) == 2);
  cb_tensor_release(r);
  CHECK_FAILS(cb_clamp(&r, i, 3, 2), CB_EINVAL);
  cb_tensor_release(i);
}

/* Every float op on a strided, broadcast input against a scalar loop. */
static void test_ops_against_reference(void) {
  cb_tensor *x = randn_tensor(2, (int64_t[]){7, 5}, 1), *y = randn_tensor(1, (int64_t[]){5}, 2);
  cb_tensor *xt, *xa;
  CHECK_OK(cb_tensor_transpose(&xt, x, 0, 1)); /* {5, 7}, non-contiguous */
  CHECK_OK(cb_unary(&xa, CB_ABS, x));
  int bad = 0;
  for (int op = 0; op < CB_NUM_BINARY; op++) {
    cb_tensor *r;
    const cb_tensor *lhs = op == CB_POW ? xa : x;
    if (cb_binary(&r, op, lhs, y) != CB_OK) {
      bad++;
      continue;
    }
    for (int i = 0; i < 7; i++)
      for (int j = 0; j < 5; j++) {
        double a = at(lhs, i, j, 0), b = at(y, j, 0, 0), want;
        switch (op) {
        case CB_ADD: want = (float)(a + b); break;
        case CB_SUB: want = (float)(a - b); break;
        case CB_MUL: want = (float)(a * b); break;
        case CB_DIV: want = (float)(a / b); break;
        case CB_POW: want = powf((float)a, (float)b); break;
        case CB_MAXIMUM: want = a > b ? a : b; break;
        case CB_MINIMUM: want = a < b ? a : b; break;
        case CB_REMAINDER: want = a - floor(a / b) * b; break;
        case CB_EQ: want = a == b; break;
        case CB_NE: want = a != b; break;
        case CB_LT: want = a < b; break;
        case CB_LE: want = a <= b; break;
        case CB_GT: want = a > b; break;
        case CB_GE: want = a >= b; break;
        case CB_LOGICAL_AND: want = a != 0 && b != 0; break;
        default: want = a != 0 || b != 0; break;
        }
        if (fabs(at(r, i, j, 0) - want) > 1e-6 * (1 + fabs(want))) bad++;
      }
    cb_tensor_release(r);
  }
  CHECK(bad == 0);
  bad = 0;
  for (int op = 0; op < CB_NUM_UNARY; op++) {
    cb_tensor *r;
    const cb_tensor *in = (op == CB_LOG || op == CB_SQRT || op == CB_RSQRT) ? xa : xt;
    if (cb_unary(&r, op, in) != CB_OK) {
      bad++;
      continue;
    }
    for (int i = 0; i < 5; i++)
      for (int j = 0; j < 7; j++) {
        double a = at(in, i, j, 0), want;
        switch (op) {
        case CB_NEG: want = -a; break;
        case CB_ABS: want = fabs(a); break;
        case CB_SIGN: want = (a > 0) - (a < 0); break;
        case CB_FLOOR: want = floor(a); break;
        case CB_CEIL: want = ceil(a); break;
        case CB_ROUND: want = nearbyint(a); break;
        case CB_RELU: want = a > 0 ? a : 0; break;
        case CB_EXP: want = exp(a); break;
        case CB_LOG: want = log(a); break;
        case CB_SQRT: want = sqrt(a); break;
        case CB_RSQRT: want = 1 / sqrt(a); break;
        case CB_SIGMOID: want = 1 / (1 + exp(-a)); break;
        case CB_TANH: want = tanh(a); break;
        case CB_SIN: want = sin(a); break;
        case CB_COS: want = cos(a); break;
        case CB_RECIPROCAL: want = 1 / a; break;
        default: want = a == 0; break;
        }
        if (fabs(at(r, i, j, 0) - want) > 1e-5 * (1 + fabs(want))) bad++;
      }
    cb_tensor_release(r);
  }
  CHECK(bad == 0);
  cb_tensor_release(xa);
  cb_tensor_release(xt);
  cb_tensor_release(x);
  cb_tensor_release(y);
}

void test_pointwise(void) {
  test_broadcast_add();
  test_types();
  test_ops_against_reference();
}
