// AVX-512F GEMM micro-kernel, 14×32 (28 zmm accumulators, 2 B loads and 14 broadcasts per k).
// Blocking mc=168, kc=512, nc=4096: kc swept 192..1024 on 2048×1024×1024 (1 thread): 150 → 190
// GFLOP/s from 192 to 512, flat beyond; mc 112..336 within noise. kcMax=1536: K up to 1536 runs as
// one K block (grouped K=1024..1408 shapes and weight gradients over ~1000-row groups: +4-9%).
// Compiled with a function-level target attribute so the rest of the addon stays baseline x86-64;
// gemm.cc calls it only when __builtin_cpu_supports("avx512f"). Not: used off x86.
#include "gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "gemm_avx512.h"

// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on _mm512_undefined_ps (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe {
namespace gemm {
namespace {

constexpr int MR = 14, NR = 32;

__attribute__((target("avx512f"))) void MicroAvx512(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
                                                      float alpha, float beta) {
  __m512 c0[MR], c1[MR];
  PrefetchTile32(c, ldc, MR);
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
  StoreTile32(c, ldc, c0, c1, MR, alpha, beta);
}

// Packs a full 32-wide panel from B stored (N,K): two 16-row halves, 16×16 blocks along k.
__attribute__((target("avx512f"))) void PackBTAvx512(const float* b, int64_t ldb, int64_t kc, float* out) {
  int64_t k = 0;
  for (; k + 16 <= kc; k += 16) {
    for (int h = 0; h < 2; ++h) {
      __m512 r[16];
      for (int i = 0; i < 16; ++i) {
        __builtin_prefetch(b + (16 * h + i) * ldb + k + 64);
        r[i] = _mm512_loadu_ps(b + (16 * h + i) * ldb + k);
      }
      Transpose16(r);
      for (int i = 0; i < 16; ++i) _mm512_store_ps(out + (k + i) * NR + 16 * h, r[i]);
    }
  }
  for (; k < kc; ++k)
    for (int j = 0; j < NR; ++j) out[k * NR + j] = b[j * ldb + k];
}

// Packs one 14-row A micro-panel. Rows contiguous (the usual x·W case): 16×16 in-register
// transposes of (up to) 14 rows × 16 k, each k's 14 values written with a masked store; the
// scalar version's stride-14 single-float stores made packing ~20% of small-group grouped GEMMs.
// Columns contiguous (transA, the weight gradient): one masked load/store per k.
__attribute__((target("avx512f"))) void PackAAvx512(const float* a, int64_t rs, int64_t cs, int64_t kc, int rows,
                                                     float* out) {
  const __mmask16 rowMask = static_cast<__mmask16>((1u << rows) - 1), outMask = (1u << MR) - 1;
  if (cs == 1) {
    for (int64_t k = 0; k < kc; k += 16) {
      const int64_t n = kc - k < 16 ? kc - k : 16;
      const __mmask16 kMask = static_cast<__mmask16>((1u << n) - 1);
      __m512 r[16];
      for (int i = 0; i < 16; ++i) r[i] = i < rows ? _mm512_maskz_loadu_ps(kMask, a + i * rs + k) : _mm512_setzero_ps();
      Transpose16(r);
      for (int j = 0; j < n; ++j) _mm512_mask_storeu_ps(out + (k + j) * MR, outMask, r[j]);
    }
    return;
  }
  if (rs == 1) {
    for (int64_t k = 0; k < kc; ++k) {
      __builtin_prefetch(a + (k + 8) * cs);  // rows of A's storage are far apart; hide the latency
      __builtin_prefetch(a + (k + 8) * cs + MR - 1);
      _mm512_mask_storeu_ps(out + k * MR, outMask, _mm512_maskz_loadu_ps(rowMask, a + k * cs));
    }
    return;
  }
  for (int64_t k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i) out[k * MR + i] = i < rows ? a[i * rs + k * cs] : 0.0f;
}

__attribute__((target("avx512f"))) void PackBNAvx512(const float* b, int64_t ldb, int64_t kc, int64_t panels, float* out,
                                                      int64_t pfCols) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = b + k * ldb;
    for (int64_t off = 0; off < pfCols; off += 16) __builtin_prefetch(src + panels * NR + off);
    float* o = out + k * NR;
    for (int64_t q = 0; q < panels; ++q) {
      _mm512_store_ps(o + q * kc * NR, _mm512_loadu_ps(src + q * NR));
      _mm512_store_ps(o + q * kc * NR + 16, _mm512_loadu_ps(src + q * NR + 16));
    }
  }
}

const MicroKernel kAvx512 = {"builtin-avx512", MR, NR, 14 * 12, 512, 4096, 1536, MicroAvx512, PackBTAvx512, PackAAvx512,
                             PackBNAvx512};

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
