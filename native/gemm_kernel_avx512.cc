// AVX-512F GEMM micro-kernel, 14×32 (28 zmm accumulators, 2 B loads and 14 broadcasts per k).
// Blocking mc=168, kc=512, nc=4096: kc swept 192..1024 on 2048×1024×1024 (1 thread): 150 → 190
// GFLOP/s from 192 to 512, flat beyond; mc 112..336 within noise. kcMax=1536: K up to 1536 runs as
// one K block (grouped K=1024..1408 shapes and weight gradients over ~1000-row groups: +4-9%).
// Compiled with a function-level target attribute so the rest of the addon stays baseline x86-64;
// gemm.cc calls it only when __builtin_cpu_supports("avx512f"). Not: used off x86.
#include "gemm_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized on _mm512_undefined_ps (a known false positive).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe {
namespace gemm {
namespace {

constexpr int MR = 14, NR = 32;

__attribute__((target("avx512f"))) void MicroAvx512(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc,
                                                      float alpha, float beta) {
  __m512 c0[MR], c1[MR];
  // Touch the C tile now so its lines arrive during the k loop (a group's fresh output rows are
  // 4 KB+ apart and otherwise miss at the stores).
  for (int i = 0; i < MR; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
  }
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

// In-register 16×16 transpose: r[i] holds row i on entry and column i on return.
__attribute__((target("avx512f"))) inline void Transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  // r[4q + m] now holds, in 128-bit lane L, element m of column 4L.. of rows 4q..4q+3
  for (int q = 0; q < 2; ++q) {
    for (int m = 0; m < 4; ++m) {
      t[8 * q + m] = _mm512_shuffle_f32x4(r[8 * q + m], r[8 * q + 4 + m], 0x88);
      t[8 * q + 4 + m] = _mm512_shuffle_f32x4(r[8 * q + m], r[8 * q + 4 + m], 0xdd);
    }
  }
  for (int m = 0; m < 8; ++m) {
    r[m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0x88);
    r[8 + m] = _mm512_shuffle_f32x4(t[m], t[8 + m], 0xdd);
  }
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
