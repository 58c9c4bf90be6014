#include <string.h>

#include "check.h"

static cb_tensor *long_tensor(int ndim, const int64_t *shape, const int64_t *values) {
  cb_tensor *t = NULL;
  cb_tensor_empty(&t, ndim, shape, CB_INT64);
  memcpy(cb_tensor_data(t), values, sizeof(int64_t) * (size_t)cb_tensor_numel(t));
  return t;
}

void test_index(void) {
  cb_tensor *a = make_tensor(2, (int64_t[]){3, 2}, (float[]){1, 2, 3, 4, 5, 6}), *r;
  cb_tensor *idx = long_tensor(1, (int64_t[]){4}, (int64_t[]){2, 0, 2, 1});
  CHECK_OK(cb_index_select(&r, a, 0, idx));
  CHECK(r->shape[0] == 4 && at(r, 0, 1, 0) == 6 && at(r, 3, 0, 0) == 3);
  cb_tensor_release(r);
  cb_tensor *bad = long_tensor(1, (int64_t[]){1}, (int64_t[]){3});
  CHECK_FAILS(cb_index_select(&r, a, 0, bad), CB_ERANGE);
  CHECK(strstr(cb_last_error(), "index 3 out of range for dim 1 of size 3") != NULL);
  cb_tensor_release(bad);
  /* gather: pick one column per row (the cross-entropy pattern) */
  cb_tensor *g = long_tensor(2, (int64_t[]){3, 1}, (int64_t[]){1, 0, 1});
  CHECK_OK(cb_gather(&r, a, 1, g));
  CHECK(r->shape[0] == 3 && at(r, 0, 0, 0) == 2 && at(r, 1, 0, 0) == 3 && at(r, 2, 0, 0) == 6);
  cb_tensor_release(r);
  /* scatter_add: class counts from labels */
  cb_tensor *counts, *ones, *labels = long_tensor(1, (int64_t[]){6}, (int64_t[]){0, 2, 2, 1, 2, 0});
  CHECK_OK(cb_tensor_zeros(&counts, 1, (int64_t[]){3}, CB_FLOAT32));
  CHECK_OK(cb_tensor_full(&ones, 1, (int64_t[]){6}, CB_FLOAT32, 1));
  CHECK_OK(cb_scatter_add_(counts, 0, labels, ones));
  CHECK(at(counts, 0, 0, 0) == 2 && at(counts, 1, 0, 0) == 1 && at(counts, 2, 0, 0) == 3);
  cb_tensor *three = long_tensor(1, (int64_t[]){2}, (int64_t[]){0, 3});
  CHECK_FAILS(cb_scatter_add_(counts, 0, three, ones), CB_ERANGE);
  CHECK(at(counts, 0, 0, 0) == 2); /* nothing written before the error */
  cb_tensor_release(three);
  cb_tensor_release(ones);
  cb_tensor_release(counts);
  cb_tensor_release(labels);
  /* masks */
  cb_tensor *mask;
  CHECK_OK(cb_binary_scalar(&mask, CB_GT, a, 3.5, false));
  CHECK_OK(cb_masked_select(&r, a, mask));
  CHECK(r->ndim == 1 && r->shape[0] == 3 && at(r, 0, 0, 0) == 4 && at(r, 2, 0, 0) == 6);
  cb_tensor_release(r);
  CHECK_OK(cb_masked_fill_(a, mask, 0));
  CHECK(at(a, 1, 0, 0) == 3 && at(a, 1, 1, 0) == 0);
  cb_tensor_release(mask);
  /* cat / stack */
  cb_tensor *b = make_tensor(2, (int64_t[]){1, 2}, (float[]){9, 8});
  CHECK_OK(cb_cat(&r, 2, (const cb_tensor *[]){a, b}, 0));
  CHECK(r->shape[0] == 4 && at(r, 3, 1, 0) == 8);
  cb_tensor_release(r);
  CHECK_FAILS(cb_cat(&r, 2, (const cb_tensor *[]){a, b}, 1), CB_ESHAPE);
  CHECK_OK(cb_stack(&r, 2, (const cb_tensor *[]){b, b}, 1));
  CHECK(r->ndim == 3 && r->shape[0] == 1 && r->shape[1] == 2 && r->shape[2] == 2);
  cb_tensor_release(r);
  CHECK_FAILS(cb_stack(&r, 2, (const cb_tensor *[]){a, b}, 0), CB_ESHAPE);
  cb_tensor_release(b);
  cb_tensor_release(g);
  cb_tensor_release(idx);
  cb_tensor_release(a);
}
