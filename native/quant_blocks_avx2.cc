// AVX2/FMA/F16C kernels of the GGUF block formats: blocks decoded in ymm registers (8 lanes),
// four vectors per group of 32 values. The whole file is compiled for that ISA by the pragma
// below; quant_blocks.cc calls it only when the CPU has avx2, fma and f16c.
// Not: used off x86. The shared decoding and loops are in quant_blocks_simd.h.
#include "quant_blocks.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace moe {
namespace {
#include "quant_blocks_simd.h"

struct Avx2 {
  using V = __m256;
  static constexpr int kLanes = 8, kPerGroup = 4;
  static inline void Values(const Group& g, V out[4]) {
    const __m128i lo = _mm256_castsi256_si128(g.q), hi = _mm256_extracti128_si256(g.q, 1);
    const __m256 a0 = _mm256_set1_ps(g.a0), a1 = _mm256_set1_ps(g.a1);
    out[0] = _mm256_mul_ps(a0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)));
    out[1] = _mm256_mul_ps(a0, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))));
    out[2] = _mm256_mul_ps(a1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)));
    out[3] = _mm256_mul_ps(a1, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))));
    if (g.b != 0.0f || std::signbit(g.b)) {  // −0 too: −0 − (−0) is +0, as in ggml
      const __m256 b = _mm256_set1_ps(g.b);
      for (int j = 0; j < 4; ++j) out[j] = _mm256_sub_ps(out[j], b);
    }
  }
  template <int D>
  static inline V Dense(const uint8_t* p) {
    if constexpr (D == kBf16) {
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(c), 16));
    } else if constexpr (D == kF16) {
      return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    } else if constexpr (D == kE5m2) {
      return _mm256_cvtph_ps(_mm_slli_epi16(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))), 8));
    } else if constexpr (D == kE4m3) {
      const __m128i c = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
      const __m128i mag = _mm_and_si128(c, _mm_set1_epi16(0x7F));
      const __m128i h = _mm_or_si128(_mm_slli_epi16(_mm_and_si128(c, _mm_set1_epi16(0x80)), 8), _mm_slli_epi16(mag, 7));
      const __m256 v = _mm256_mul_ps(_mm256_cvtph_ps(h), _mm256_set1_ps(256.0f));
      const __m256 nan = _mm256_castsi256_ps(_mm256_cvtepi16_epi32(_mm_cmpeq_epi16(mag, _mm_set1_epi16(0x7F))));
      return _mm256_blendv_ps(v, _mm256_set1_ps(__builtin_nanf("")), nan);
    } else {
      return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
    }
  }
  static inline V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static inline V Set1(float a) { return _mm256_set1_ps(a); }
  static inline V Zero() { return _mm256_setzero_ps(); }
  static inline V Load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static inline V Fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static inline V Add(V a, V b) { return _mm256_add_ps(a, b); }
  static inline float HSum(V v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
};

const qb::Isa kAvx2{"avx2", &Dequant<Avx2>, &Matvec<Avx2>, &DenseMatvec<Avx2>};

}  // namespace

const qb::Isa* qb::Avx2Isa() { return &kAvx2; }

}  // namespace moe
#else
namespace moe {
const qb::Isa* qb::Avx2Isa() { return nullptr; }
}  // namespace moe
#endif
