// Portable scalar GEMM micro-kernel (4×8): the fallback when the CPU has neither AVX2/FMA nor
// AVX-512. Plain C++ the compiler may vectorise for the baseline ISA. Not: tuned.
#include "gemm_internal.h"

namespace moe {
namespace gemm {
namespace {

constexpr int MR = 4, NR = 8;

void MicroScalar(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc, float alpha, float beta) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k) {
    for (int i = 0; i < MR; ++i) {
      const float a = pa[i];
      for (int j = 0; j < NR; ++j) acc[i][j] += a * pb[j];
    }
    pa += MR;
    pb += NR;
  }
  for (int i = 0; i < MR; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

const MicroKernel kScalar = {"builtin-scalar", MR, NR, 64, 256, 2048, 256, MicroScalar, nullptr, nullptr, nullptr};

}  // namespace

const MicroKernel* ScalarKernel() { return &kScalar; }

}  // namespace gemm
}  // namespace moe
