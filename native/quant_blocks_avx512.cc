// AVX-512 kernels of the GGUF block formats: blocks decoded with the shared AVX2 byte code,
// then widened in zmm registers (16 lanes), two vectors per group of 32 values. The whole file
// is compiled for that ISA by the pragma below; quant_blocks.cc calls it only when the CPU has
// avx512f/bw/vl (plus avx2, fma, f16c).
// Not: used off x86. The shared decoding and loops are in quant_blocks_simd.h.
#include "quant_blocks.h"

#if defined(__x86_64__)
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
// GCC 12 flags the deliberately undefined upper halves inside the avx512 intrinsic headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace moe {
namespace {
#include "quant_blocks_simd.h"

struct Avx512 {
  using V = __m512;
  static constexpr int kLanes = 16, kPerGroup = 2;
  static inline void Values(const Group& g, V out[2]) {
    const __m128i lo = _mm256_castsi256_si128(g.q), hi = _mm256_extracti128_si256(g.q, 1);
    out[0] = _mm512_mul_ps(_mm512_set1_ps(g.a0), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)));
    out[1] = _mm512_mul_ps(_mm512_set1_ps(g.a1), _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)));
    if (g.b != 0.0f || std::signbit(g.b)) {  // −0 too: −0 − (−0) is +0, as in ggml
      const __m512 b = _mm512_set1_ps(g.b);
      out[0] = _mm512_sub_ps(out[0], b);
      out[1] = _mm512_sub_ps(out[1], b);
    }
  }
  template <int D>
  static inline V Dense(const uint8_t* p) {
    if constexpr (D == kBf16) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(c), 16));
    } else if constexpr (D == kF16) {
      return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    } else if constexpr (D == kE5m2) {
      return _mm512_cvtph_ps(_mm256_slli_epi16(_mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 8));
    } else if constexpr (D == kE4m3) {
      const __m256i c = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
      const __m256i mag = _mm256_and_si256(c, _mm256_set1_epi16(0x7F));
      const __m256i h = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x80)), 8), _mm256_slli_epi16(mag, 7));
      const __m512 v = _mm512_mul_ps(_mm512_cvtph_ps(h), _mm512_set1_ps(256.0f));
      const __mmask16 nan = _mm256_cmpeq_epi16_mask(mag, _mm256_set1_epi16(0x7F));
      return _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(__builtin_nanf("")));
    } else {
      return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    }
  }
  static inline V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static inline V Set1(float a) { return _mm512_set1_ps(a); }
  static inline V Zero() { return _mm512_setzero_ps(); }
  static inline V Load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static inline V Fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static inline V Add(V a, V b) { return _mm512_add_ps(a, b); }
  static inline float HSum(V v) {
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
  }
};

const qb::Isa kAvx512{"avx512", &Dequant<Avx512>, &Matvec<Avx512>, &DenseMatvec<Avx512>};

}  // namespace

const qb::Isa* qb::Avx512Isa() { return &kAvx512; }

}  // namespace moe
#else
namespace moe {
const qb::Isa* qb::Avx512Isa() { return nullptr; }
}  // namespace moe
#endif
