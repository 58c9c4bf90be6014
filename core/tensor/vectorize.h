/* CB_VECTOR_CLONES: compile a hot loop for AVX-512, AVX2 and plain x86-64;
 * the dynamic loader picks the best one the CPU has (the default build
 * targets x86-64-v2 so that the binaries run on any machine).
 *
 * vec16, vec8, vec4: GCC's generic vectors of floats (unaligned, may alias
 * float data), for kernels the auto-vectoriser leaves scalar; inside a
 * clone or a target attribute each compiles to that target's registers
 * (a vec16 is one AVX-512 register, two AVX2 ones, four SSE ones).
 * ivec4, ivec8, ivec16: the 32-bit lanes of a vec4's, vec8's or vec16's
 * comparisons (-1 true, 0 false). dvec8: 8 doubles, for sums of vec8s in double
 * (__builtin_convertvector). */
#ifndef CB_VECTORIZE_H
#define CB_VECTORIZE_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CB_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CB_VECTOR_CLONES
#endif

#include <stdint.h>

typedef float vec16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef float vec8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef float vec4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t ivec4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef int32_t ivec8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef int32_t ivec16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef double dvec8 __attribute__((vector_size(64), aligned(8)));

#endif
