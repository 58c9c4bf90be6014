/* Seedable pseudo-random generator (xoshiro256**, seeded through splitmix64).
 *
 * Every random function takes a generator; NULL means the process-wide default
 * generator (the only global mutable state in the core), seeded with 0 until
 * cb_manual_seed(). The same seed gives the same numbers on every machine and
 * at every thread count: random fills run on one thread. */
#ifndef CB_GENERATOR_H
#define CB_GENERATOR_H

#include <stdint.h>

#include "tensor/tensor.h"

typedef struct cb_generator {
  uint64_t s[4];
  uint64_t seed;
} cb_generator;

void cb_generator_seed(cb_generator *g, uint64_t seed);
cb_generator *cb_default_generator(void);
void cb_manual_seed(uint64_t seed);

uint64_t cb_random_u64(cb_generator *g);
/* Uniform in [0, 1) with 53 random bits. */
double cb_random_double(cb_generator *g);
/* Uniform integer in [0, n), unbiased; n >= 1. */
uint64_t cb_random_below(cb_generator *g, uint64_t n);
/* Standard normal (Box-Muller). */
double cb_random_normal(cb_generator *g);

/* Fills in place: uniform [low, high), normal(mean, std), integers in
 * [low, high). */
cb_status cb_uniform_(cb_tensor *t, double low, double high, cb_generator *g);
cb_status cb_normal_(cb_tensor *t, double mean, double std, cb_generator *g);
cb_status cb_randint_(cb_tensor *t, int64_t low, int64_t high, cb_generator *g);
/* n draws of indices 0..K-1 with probability proportional to weights (a
 * float32 K tensor, entries >= 0): with replacement by inverse CDF, without
 * by Efraimidis-Spirakis keys (then n may not exceed the non-zero weights).
 * int64 result. */
cb_status cb_multinomial(cb_tensor **out, const cb_tensor *weights, int64_t n, bool replacement,
                         cb_generator *g);
/* A random permutation of 0..n-1 as an int64 tensor. */
cb_status cb_randperm(cb_tensor **out, int64_t n, cb_generator *g);

#endif
