/* CB_VECTOR_CLONES: compile a hot loop for AVX-512, AVX2 and plain x86-64;
 * the dynamic loader picks the best one the CPU has (the default build
 * targets x86-64-v2 so that the binaries run on any machine). */
#ifndef CB_VECTORIZE_H
#define CB_VECTORIZE_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CB_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CB_VECTOR_CLONES
#endif

#endif
