// AVX2/FMA GEMM micro-kernel, 6×16 (12 ymm accumulators, 2 B loads and 6 broadcasts per k).
// Compiled with a function-level target attribute so the rest of the addon stays baseline x86-64;
// gemm.cc calls it only when __builtin_cpu_supports("avx2") && ("fma"). Not: used off x86.
#include "gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

namespace moe {
namespace gemm {
namespace {

constexpr int MR = 6, NR = 16;

__attribute__((target("avx2,fma"))) void MicroAvx2(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
                                                    float alpha, float beta) {
  __m256 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_load_ps(pb), b1 = _mm256_load_ps(pb + 8);
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(pa + i);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
    pa += MR;
    pb += NR;
  }
  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.0f) {
    for (int i = 0; i < MR; ++i) {
      _mm256_storeu_ps(c + i * ldc, _mm256_mul_ps(va, c0[i]));
      _mm256_storeu_ps(c + i * ldc + 8, _mm256_mul_ps(va, c1[i]));
    }
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
    for (int i = 0; i < MR; ++i) {
      float* ci = c + i * ldc;
      _mm256_storeu_ps(ci, _mm256_fmadd_ps(va, c0[i], _mm256_mul_ps(vb, _mm256_loadu_ps(ci))));
      _mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(va, c1[i], _mm256_mul_ps(vb, _mm256_loadu_ps(ci + 8))));
    }
  }
}

const MicroKernel kAvx2 = {"builtin-avx2", MR, NR, 96, 256, 4096, 256, MicroAvx2, nullptr, nullptr, nullptr};

}  // namespace

const MicroKernel* Avx2Kernel() { return &kAvx2; }

}  // namespace gemm
}  // namespace moe

#else
namespace moe {
namespace gemm {
const MicroKernel* Avx2Kernel() { return nullptr; }
}  // namespace gemm
}  // namespace moe
#endif
