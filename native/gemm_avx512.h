// AVX-512F pieces shared by the f32 micro-kernel and packing (native/gemm_kernel_avx512.cc) and
// the bf16 ones (native/gemm_bf16.cc): the in-register 16×16 transpose of 32-bit lanes (bf16
// pairs are 32-bit lanes too) and the C-tile prefetch and store of an MR×32 register tile.
// Include only on x86; callers carry (a superset of) the avx512f target attribute.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace moe {
namespace gemm {

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

// Touches the rows×32 C tile at c so its lines arrive during the k loop (a group's fresh output
// rows are 4 KB+ apart and otherwise miss at the stores).
__attribute__((target("avx512f"))) inline void PrefetchTile32(const float* c, int64_t ldc, int rows) {
  for (int i = 0; i < rows; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + 31, 1, 3);
  }
}

// C row i (32 floats at c + i·ldc) = alpha · (c0[i], c1[i]) + beta · C row i for i < rows; with
// beta == 0, C is not read.
__attribute__((target("avx512f"))) inline void StoreTile32(float* c, int64_t ldc, const __m512* c0, const __m512* c1,
                                                            int rows, float alpha, float beta) {
  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
    for (int i = 0; i < rows; ++i) {
      _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(va, c0[i]));
      _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(va, c1[i]));
    }
    return;
  }
  const __m512 vb = _mm512_set1_ps(beta);
  for (int i = 0; i < rows; ++i) {
    float* ci = c + i * ldc;
    _mm512_storeu_ps(ci, _mm512_fmadd_ps(va, c0[i], _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));
    _mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, c1[i], _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16))));
  }
}

}  // namespace gemm
}  // namespace moe
