#include <string.h>

#include "check.h"

static void test_views(void) {
  cb_tensor *a, *t, *n, *s, *v, *c;
  CHECK_OK(cb_tensor_arange(&a, 0, 24, 1, CB_FLOAT32));
  CHECK_OK(cb_tensor_view(&v, a, 3, (int64_t[]){2, 3, 4}));
  CHECK(cb_tensor_is_contiguous(v));
  CHECK(at(v, 1, 2, 3) == 23.0f);
  /* transpose shares storage: a write through it is seen by the original */
  CHECK_OK(cb_tensor_transpose(&t, v, 0, 2)); /* {4, 3, 2} */
  CHECK(t->shape[0] == 4 && t->shape[2] == 2 && !cb_tensor_is_contiguous(t));
  CHECK(at(t, 3, 2, 1) == 23.0f);
  cb_tensor_set(t, (int64_t[]){0, 0, 1}, -5);
  CHECK(at(v, 1, 0, 0) == -5.0f);
  CHECK(t->storage == a->storage);
  /* contiguous copies a non-contiguous view into index order */
  CHECK_OK(cb_tensor_contiguous(&c, t));
  CHECK(cb_tensor_is_contiguous(c) && c->storage != a->storage);
  float *cd = cb_tensor_data(c);
  CHECK(cd[0] == 0 && cd[1] == -5 && cd[2] == 4 && cd[23] == 23);
  /* view of a transposed tensor needs a copy; reshape does it */
  CHECK_FAILS(cb_tensor_view(&n, t, 1, (int64_t[]){24}), CB_ESHAPE);
  cb_tensor *r;
  CHECK_OK(cb_tensor_reshape(&r, t, 2, (int64_t[]){-1, 6}));
  CHECK(r->shape[0] == 4 && at(r, 0, 1, 0) == -5.0f);
  cb_tensor_release(r);
  /* narrow / select / slice */
  CHECK_OK(cb_tensor_narrow(&n, v, 2, 1, 2)); /* {2, 3, 2} values 1,2 / 5,6 ... */
  CHECK(n->shape[2] == 2 && at(n, 1, 1, 1) == 18.0f);
  CHECK_OK(cb_tensor_select(&s, v, 1, 2)); /* {2, 4}: rows 8..11 and 20..23 */
  CHECK(s->ndim == 2 && at(s, 1, 0, 0) == 20.0f);
  cb_tensor *sl;
  CHECK_OK(cb_tensor_slice(&sl, a, 0, 1, 24, 5)); /* 1, 6, 11, 16, 21 */
  CHECK(sl->shape[0] == 5 && at(sl, 4, 0, 0) == 21.0f);
  CHECK_FAILS(cb_tensor_narrow(&n, v, 2, 3, 2), CB_ERANGE);
  CHECK_FAILS(cb_tensor_select(&s, v, 5, 0), CB_ERANGE);
  CHECK_FAILS(cb_tensor_select(&s, v, 0, 2), CB_ERANGE);
  CHECK(strstr(cb_last_error(), "index 3 out of range for dim 1 of size 2") != NULL);
  cb_tensor_release(sl);
  cb_tensor_release(n);
  cb_tensor_release(s);
  cb_tensor_release(c);
  cb_tensor_release(t);
  cb_tensor_release(v);
  cb_tensor_release(a);
}

static void test_expand_squeeze(void) {
  cb_tensor *a, *e, *u, *q, *p;
  CHECK_OK(cb_tensor_arange(&a, 0, 3, 1, CB_FLOAT32));
  CHECK_OK(cb_tensor_unsqueeze(&u, a, 1)); /* {3, 1} */
  CHECK(u->ndim == 2 && u->shape[0] == 3 && u->shape[1] == 1);
  CHECK_OK(cb_tensor_expand(&e, u, 3, (int64_t[]){2, 3, 4}));
  CHECK(e->stride[0] == 0 && e->stride[2] == 0 && at(e, 1, 2, 3) == 2.0f);
  CHECK_FAILS(cb_tensor_fill_(e, 1), CB_EINVAL); /* overlapping elements */
  CHECK_FAILS(cb_tensor_expand(&q, a, 1, (int64_t[]){4}), CB_ESHAPE);
  CHECK_OK(cb_tensor_squeeze(&q, u, -1));
  CHECK(q->ndim == 1 && q->shape[0] == 3);
  cb_tensor_release(q);
  CHECK_OK(cb_tensor_squeeze_all(&q, u));
  CHECK(q->ndim == 1 && q->shape[0] == 3);
  cb_tensor_release(q);
  CHECK_OK(cb_tensor_permute(&p, e, (int[]){2, 0, 1}));
  CHECK(p->shape[0] == 4 && p->shape[1] == 2 && p->shape[2] == 3 && at(p, 3, 1, 2) == 2.0f);
  CHECK_FAILS(cb_tensor_permute(&q, e, (int[]){0, 0, 1}), CB_EINVAL);
  cb_tensor *f;
  CHECK_OK(cb_tensor_flatten(&f, p, 0, -1));
  CHECK(f->ndim == 1 && f->shape[0] == 24 && cb_tensor_is_contiguous(f));
  cb_tensor_release(f);
  cb_tensor_release(p);
  cb_tensor_release(e);
  cb_tensor_release(u);
  cb_tensor_release(a);
}

static void test_creation_errors(void) {
  cb_tensor *t = NULL;
  CHECK_FAILS(cb_tensor_zeros(&t, 2, (int64_t[]){2, -1}, CB_FLOAT32), CB_EINVAL);
  CHECK(strstr(cb_last_error(), "negative size -1 in dim 2") != NULL);
  int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  CHECK_FAILS(cb_tensor_zeros(&t, 9, nine, CB_FLOAT32), CB_EINVAL);
  CHECK_FAILS(cb_tensor_arange(&t, 0, 1, 0, CB_FLOAT32), CB_EINVAL);
  CHECK(t == NULL);
  CHECK_OK(cb_tensor_zeros(&t, 2, (int64_t[]){0, 3}, CB_INT64));
  CHECK(cb_tensor_numel(t) == 0);
  cb_tensor_release(t);
  cb_dtype dt;
  CHECK_FAILS(cb_dtype_parse("float64", &dt), CB_EINVAL);
  CHECK_OK(cb_dtype_parse("long", &dt));
  CHECK(dt == CB_INT64);
}

static void test_copy_broadcast(void) {
  cb_tensor *dst, *row, *t;
  CHECK_OK(cb_tensor_zeros(&dst, 2, (int64_t[]){3, 4}, CB_FLOAT32));
  CHECK_OK(cb_tensor_arange(&row, 0, 4, 1, CB_INT64));
  CHECK_OK(cb_tensor_copy_(dst, row)); /* broadcast along rows, int64 -> float32 */
  CHECK(at(dst, 2, 3, 0) == 3.0f && at(dst, 0, 1, 0) == 1.0f);
  CHECK_OK(cb_tensor_arange(&t, 0, 3, 1, CB_FLOAT32));
  CHECK_FAILS(cb_tensor_copy_(dst, t), CB_ESHAPE);
  CHECK(strstr(cb_last_error(), "{3}") != NULL && strstr(cb_last_error(), "{3, 4}") != NULL);
  cb_tensor_release(t);
  cb_tensor_release(row);
  cb_tensor_release(dst);
}

static void test_big_parallel_copy(void) {
  /* Large enough to run on the thread pool: a transposed copy must land
   * every element exactly once. */
  cb_tensor *a, *t, *c;
  CHECK_OK(cb_tensor_arange(&a, 0, 600 * 500, 1, CB_INT64));
  cb_tensor *m;
  CHECK_OK(cb_tensor_view(&m, a, 2, (int64_t[]){600, 500}));
  CHECK_OK(cb_tensor_transpose(&t, m, 0, 1));
  CHECK_OK(cb_tensor_contiguous(&c, t));
  const int64_t *p = cb_tensor_data(c);
  int bad = 0;
  for (int64_t i = 0; i < 500; i++)
    for (int64_t j = 0; j < 600; j++) bad += p[i * 600 + j] != j * 500 + i;
  CHECK(bad == 0);
  cb_tensor_release(c);
  cb_tensor_release(t);
  cb_tensor_release(m);
  cb_tensor_release(a);
}

void test_tensor(void) {
  test_views();
  test_expand_squeeze();
  test_creation_errors();
  test_copy_broadcast();
  test_big_parallel_copy();
}
