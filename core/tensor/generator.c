#include "tensor/generator.h"

#include <math.h>
#include <stdlib.h>

#include "tensor/iter.h"

static cb_generator default_generator = {
    /* cb_generator_seed(&g, 0), precomputed so no initialisation call is
     * needed; tests/c check that the two agree. */
    .s = {0xe220a8397b1dcdafULL, 0x6e789e6aa1b965f4ULL, 0x06c45d188009454fULL,
          0xf88bb8a8724c81ecULL},
    .seed = 0};

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void cb_generator_seed(cb_generator *g, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) g->s[i] = splitmix64(&x);
  g->seed = seed;
}

cb_generator *cb_default_generator(void) { return &default_generator; }

void cb_manual_seed(uint64_t seed) { cb_generator_seed(&default_generator, seed); }

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t cb_random_u64(cb_generator *g) {
  if (!g) g = &default_generator;
  uint64_t *s = g->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double cb_random_double(cb_generator *g) {
  return (double)(cb_random_u64(g) >> 11) * 0x1.0p-53;
}

uint64_t cb_random_below(cb_generator *g, uint64_t n) {
  /* Lemire's multiply-and-reject: unbiased, one multiplication usually. */
  uint64_t x = cb_random_u64(g);
  __uint128_t m = (__uint128_t)x * n;
  uint64_t low = (uint64_t)m;
  if (low < n) {
    uint64_t threshold = -n % n;
    while (low < threshold) {
      x = cb_random_u64(g);
      m = (__uint128_t)x * n;
      low = (uint64_t)m;
    }
  }
  return (uint64_t)(m >> 64);
}

double cb_random_normal(cb_generator *g) {
  double u1 = cb_random_double(g), u2 = cb_random_double(g);
  /* 1 - u1 lies in (0, 1], so the log is finite. */
  return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

/* Visits every element of t in index order (serially, so the stream of
 * numbers does not depend on the thread count). */
typedef double (*draw_fn)(cb_generator *g, const double *params);

static cb_status fill_random(const char *op, cb_tensor *t, draw_fn draw,
                             const double *params, cb_generator *g) {
  if (cb_tensor_overlaps(t))
    return cb_fail(CB_EINVAL, "%s: tensor is an expanded view; clone it first", op);
  cb_tensor_bump_version(t);
  int64_t n = cb_tensor_numel(t), index[CB_MAX_DIMS] = {0};
  int64_t esize = cb_dtype_size(t->dtype);
  char *base = cb_tensor_data(t);
  for (int64_t i = 0; i < n; i++) {
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) off += index[d] * t->stride[d];
    cb_store(base + off * esize, t->dtype, draw(g, params));
    for (int d = t->ndim - 1; d >= 0; d--) {
      if (++index[d] < t->shape[d]) break;
      index[d] = 0;
    }
  }
  return CB_OK;
}

static double draw_uniform(cb_generator *g, const double *p) {
  return p[0] + (p[1] - p[0]) * cb_random_double(g);
}

static double draw_normal(cb_generator *g, const double *p) {
  return p[0] + p[1] * cb_random_normal(g);
}

static double draw_int(cb_generator *g, const double *p) {
  return p[0] + (double)cb_random_below(g, (uint64_t)(p[1] - p[0]));
}

cb_status cb_uniform_(cb_tensor *t, double low, double high, cb_generator *g) {
  if (!(low <= high) || !isfinite(low) || !isfinite(high))
    return cb_fail(CB_EINVAL, "rand: expected finite low <= high, got [%g, %g)", low, high);
  double params[2] = {low, high};
  cb_status st = fill_random("rand", t, draw_uniform, params, g);
  /* float32 rounding can turn a value just below high into high itself. */
  if (st == CB_OK && t->dtype == CB_FLOAT32 && cb_tensor_is_contiguous(t)) {
    float *p = cb_tensor_data(t), top = (float)high;
    for (int64_t i = 0, n = cb_tensor_numel(t); i < n; i++)
      if (p[i] >= top && high > low) p[i] = nextafterf(top, (float)low);
  }
  return st;
}

cb_status cb_normal_(cb_tensor *t, double mean, double std, cb_generator *g) {
  if (!(std >= 0) || !isfinite(mean) || !isfinite(std))
    return cb_fail(CB_EINVAL, "randn: expected finite mean and std >= 0, got %g, %g", mean, std);
  double params[2] = {mean, std};
  return fill_random("randn", t, draw_normal, params, g);
}

cb_status cb_randint_(cb_tensor *t, int64_t low, int64_t high, cb_generator *g) {
  if (low >= high)
    return cb_fail(CB_EINVAL, "randint: expected low < high, got [%lld, %lld)",
                   (long long)low, (long long)high);
  double params[2] = {(double)low, (double)high};
  return fill_random("randint", t, draw_int, params, g);
}

cb_status cb_randperm(cb_tensor **out, int64_t n, cb_generator *g) {
  if (n < 0) return cb_fail(CB_EINVAL, "randperm: negative size %lld", (long long)n);
  cb_status st = cb_tensor_empty(out, 1, &n, CB_INT64);
  if (st != CB_OK) return st;
  int64_t *p = cb_tensor_data(*out);
  for (int64_t i = 0; i < n; i++) p[i] = i;
  for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
    int64_t j = (int64_t)cb_random_below(g, (uint64_t)i + 1);
    int64_t tmp = p[i];
    p[i] = p[j];
    p[j] = tmp;
  }
  return CB_OK;
}

typedef struct {
  double key;
  int64_t index;
} keyed;

static int by_key_descending(const void *a, const void *b) {
  double x = ((const keyed *)a)->key, y = ((const keyed *)b)->key;
  return x < y ? 1 : x > y ? -1 : 0;
}

cb_status cb_multinomial(cb_tensor **out, const cb_tensor *weights, int64_t n, bool replacement,
                         cb_generator *g) {
  *out = NULL;
  if (weights->dtype != CB_FLOAT32 || weights->ndim != 1 || weights->shape[0] < 1)
    return cb_fail(CB_ETYPE, "multinomial: weights must be a non-empty 1-d float32 tensor");
  if (n < 0) return cb_fail(CB_EINVAL, "multinomial: negative count %lld", (long long)n);
  int64_t k = weights->shape[0], positive = 0;
  double *cdf = malloc(sizeof *cdf * (size_t)k);
  if (!cdf) return cb_fail(CB_ENOMEM, "multinomial: out of memory");
  double total = 0;
  for (int64_t i = 0; i < k; i++) {
    double w = cb_tensor_get(weights, &i);
    if (!(w >= 0) || !isfinite(w)) {
      free(cdf);
      return cb_fail(CB_EINVAL, "multinomial: weight %lld is %g; weights must be finite and >= 0",
                     (long long)i + 1, w);
    }
    positive += w > 0;
    total += w;
    cdf[i] = total;
  }
  cb_status st = CB_OK;
  if (positive == 0) st = cb_fail(CB_EINVAL, "multinomial: every weight is zero");
  else if (!replacement && n > positive)
    st = cb_fail(CB_EINVAL, "multinomial: %lld draws without replacement from %lld non-zero "
                 "weights", (long long)n, (long long)positive);
  if (st == CB_OK) st = cb_tensor_empty(out, 1, &n, CB_INT64);
  if (st != CB_OK) {
    free(cdf);
    return st;
  }
  int64_t *result = cb_tensor_data(*out);
  if (replacement) {
    for (int64_t s = 0; s < n; s++) {
      double u = cb_random_double(g) * total;
      int64_t lo = 0, hi = k - 1; /* first i with cdf[i] > u */
      while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (cdf[mid] > u) hi = mid;
        else lo = mid + 1;
      }
      result[s] = lo;
    }
  } else { /* keys log(u) / w: the n largest are a weighted sample */
    keyed *keys = malloc(sizeof *keys * (size_t)k);
    if (!keys) {
      free(cdf);
      cb_tensor_release(*out);
      *out = NULL;
      return cb_fail(CB_ENOMEM, "multinomial: out of memory");
    }
    for (int64_t i = 0; i < k; i++) {
      double w = cdf[i] - (i ? cdf[i - 1] : 0);
      double u = 1.0 - cb_random_double(g); /* in (0, 1] */
      keys[i] = (keyed){w > 0 ? log(u) / w : -INFINITY, i};
    }
    qsort(keys, (size_t)k, sizeof *keys, by_key_descending);
    for (int64_t s = 0; s < n; s++) result[s] = keys[s].index;
    free(keys);
  }
  free(cdf);
  return CB_OK;
}
