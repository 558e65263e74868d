// AVX-512F GEMM micro-kernel, 14×32 (28 zmm accumulators, 2 B loads and 14 broadcasts per k).
// Compiled with a function-level target attribute so the rest of the addon stays baseline x86-64;
// gemm.cc calls it only when __builtin_cpu_supports("avx512f"). Not: used off x86.
#include "gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace moe {
namespace gemm {
namespace {

constexpr int MR = 14, NR = 32;

__attribute__((target("avx512f"))) void MicroAvx512(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
                                                      float alpha, float beta) {
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t k = 0; k < kc; ++k) {
    const __m512 b0 = _mm512_load_ps(pb), b1 = _mm512_load_ps(pb + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(pa[i]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
    pa += MR;
    pb += NR;
  }
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
    for (int i = 0; i < MR; ++i) {
      _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(va, c0[i]));
      _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(va, c1[i]));
    }
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      _mm512_storeu_ps(ci, _mm512_fmadd_ps(va, c0[i], _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));
      _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, c1[i], _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16))));
    }
  }
}

const MicroKernel kAvx512 = {"builtin-avx512", MR, NR, 14 * 12, 256, 4096, MicroAvx512};

}  // namespace

const MicroKernel* Avx512Kernel() { return &kAvx512; }

}  // namespace gemm
}  // namespace moe

#else
namespace moe {
namespace gemm {
const MicroKernel* Avx512Kernel() { return nullptr; }
}  // namespace gemm
}  // namespace moe
#endif
