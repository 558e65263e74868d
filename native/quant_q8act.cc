// q8_0 weights × q8-quantised activations (llama.cpp's vec_dot_q8_0_q8_0): the optional
// matrix-vector path of gemmQuantBlock for format q8_0, M ≤ 8 (`activations: "q8"`).
//
// 1. Each row of x is quantised per 32 values: d = max|x| / 127 (f32), q = x · (1/d) rounded to
//    nearest even (d = 0: q = 0). Same rule on every ISA (plain C++ loop).
// 2. Per weight block: s = Σ q_w · q_x in int32 (exact), then acc += f32(d_w · d_x) · s (FMA).
//    AVX-512 VNNI: vpdpbusd on |q_w| (u8, −128 → 128) and q_x with q_w's sign applied (q_x is in
//    [−127, 127], so negating it is exact); AVX2: the same sign trick with vpmaddubsw + vpmaddwd
//    (pair sums ≤ 2·128·127 never saturate), bit-identical to VNNI; scalar: one int sum per block
//    (its f32 sums are ordered differently). The order depends only on K and M, not on threads.
// 3. Threads take contiguous runs of weight rows.
// Numerics differ from the f32-activation path by the activation rounding: per block at most
// d_x / 2 · Σ|w| (test/quant-q8act.test.ts checks that bound and the ref backend's same rule).
// Not: a prefill path (M > 8 keeps f32 activations and the GEMM), not for other block formats.
#include <immintrin.h>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "common.h"

namespace moe {
namespace {

constexpr int kBlockBytes = 34;  // f16 scale + 32 int8 codes

inline float HalfToFloat(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  uint32_t u;
  if (e == 31) {
    u = sign | 0x7F800000u | (m ? (0x400000u | (m << 13)) : 0u);
  } else if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  } else {
    u = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// q (M·K int8), d (M·K/32): step 1.
void QuantizeRows(const float* x, int M, int64_t K, int8_t* q, float* d) {
  const int64_t nb = K / 32;
  for (int m = 0; m < M; ++m) {
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = x + m * K + b * 32;
      float amax = 0.0f;
      for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
      const float db = amax / 127.0f;
      const float id = db != 0.0f ? 1.0f / db : 0.0f;
      d[m * nb + b] = db;
      int8_t* qb = q + m * K + b * 32;
      for (int j = 0; j < 32; ++j) qb[j] = static_cast<int8_t>(std::nearbyint(xb[j] * id));
    }
  }
}

template <int M>
void RowsScalar(const int8_t* q, const float* d, int64_t K, const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t N,
                float beta) {
  const int64_t nb = K / 32;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * nb * kBlockBytes;
    float acc[M] = {};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * kBlockBytes;
      const float dw = HalfToFloat(blk);
      const int8_t* wq = reinterpret_cast<const int8_t*>(blk + 2);
      for (int m = 0; m < M; ++m) {
        const int8_t* xq = q + m * K + b * 32;
        int32_t s = 0;
        for (int j = 0; j < 32; ++j) s += static_cast<int32_t>(wq[j]) * static_cast<int32_t>(xq[j]);
        acc[m] = std::fma(static_cast<float>(s), dw * d[m * nb + b], acc[m]);
      }
    }
    for (int m = 0; m < M; ++m) {
      float* yp = y + m * N + n;
      *yp = beta == 0.0f ? acc[m] : acc[m] + beta * *yp;
    }
  }
}

#if defined(__x86_64__)
// f16 scale with the F16C instruction (exact, as HalfToFloat).
__attribute__((target("f16c"))) inline float F16c(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

__attribute__((target("avx2,fma"))) inline float HSum256(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// Both SIMD paths give bit-identical results: lane i of the int32 sums is bytes 4i..4i+3 in each
// (vpdpbusd; vpmaddubsw pairs then vpmaddwd pairs), then the same float operations:
// acc[b & 1] = fma(f32(lane), f32(d_w·d_x), acc), and (acc0 + acc1) summed across lanes.
// Two blocks per 512-bit step: lanes 0..7 accumulate the even blocks and lanes 8..15 the odd ones,
// exactly the AVX2 path's acc[0] and acc[1] (an odd last block goes to the low half alone).
template <int M>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx2,fma,f16c"))) void RowsVnni(
    const int8_t* q, const float* d, int64_t K, const uint8_t* w, int64_t n0, int64_t n1, float* y, int64_t N, float beta) {
  const int64_t nb = K / 32;
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * nb * kBlockBytes;
    __m512 acc[M];
    for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
      const uint8_t* blk = row + b * kBlockBytes;
      const float dw0 = F16c(blk), dw1 = F16c(blk + kBlockBytes);
      const __m512i wq = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2))),
                                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + kBlockBytes + 2)), 1);
      const __m512i aw = _mm512_abs_epi8(wq);
      const __mmask64 neg = _mm512_movepi8_mask(wq);
      for (int m = 0; m < M; ++m) {
        const __m512i xq = _mm512_loadu_si512(q + m * K + b * 32);
        const __m512i sx = _mm512_mask_sub_epi8(xq, neg, zero, xq);
        const __m512i s = _mm512_dpbusd_epi32(zero, aw, sx);
        const float* dm = d + m * nb + b;
        const __m512 sc = _mm512_insertf32x8(_mm512_set1_ps(dw0 * dm[0]), _mm256_set1_ps(dw1 * dm[1]), 1);
        acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[m]);
      }
    }
    __m256 lo[M], hi[M];
    for (int m = 0; m < M; ++m) {
      lo[m] = _mm512_castps512_ps256(acc[m]);
      hi[m] = _mm512_extractf32x8_ps(acc[m], 1);
    }
    if (b < nb) {
      const uint8_t* blk = row + b * kBlockBytes;
      const float dw = F16c(blk);
      const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      const __m256i aw = _mm256_abs_epi8(wq);
      const __mmask32 neg = _mm256_movepi8_mask(wq);
      for (int m = 0; m < M; ++m) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + m * K + b * 32));
        const __m256i sx = _mm256_mask_sub_epi8(xq, neg, _mm256_setzero_si256(), xq);
        const __m256i s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
        lo[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * d[m * nb + b]), lo[m]);
      }
    }
    for (int m = 0; m < M; ++m) {
      const float v = HSum256(_mm256_add_ps(lo[m], hi[m]));
      float* yp = y + m * N + n;
      *yp = beta == 0.0f ? v : v + beta * *yp;
    }
  }
}

template <int M>
__attribute__((target("avx2,fma,f16c"))) void RowsAvx2(const int8_t* q, const float* d, int64_t K, const uint8_t* w, int64_t n0,
                                                   int64_t n1, float* y, int64_t N, float beta) {
  const int64_t nb = K / 32;
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* row = w + n * nb * kBlockBytes;
    __m256 acc[M][2];
    for (int m = 0; m < M; ++m) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* blk = row + b * kBlockBytes;
      const float dw = F16c(blk);
      const __m256i wq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
      const __m256i aw = _mm256_sign_epi8(wq, wq);  // |w| as u8 (−128 → 0x80 = 128)
      for (int m = 0; m < M; ++m) {
        const __m256i xq = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + m * K + b * 32));
        const __m256i sx = _mm256_sign_epi8(xq, wq);  // x with w's sign (0 where w = 0)
        const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
        acc[m][b & 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dw * d[m * nb + b]), acc[m][b & 1]);
      }
    }
    for (int m = 0; m < M; ++m) {
      const float v = HSum256(_mm256_add_ps(acc[m][0], acc[m][1]));
      float* yp = y + m * N + n;
      *yp = beta == 0.0f ? v : v + beta * *yp;
    }
  }
}
#endif

using RowsFn = void (*)(const int8_t*, const float*, int64_t, const uint8_t*, int64_t, int64_t, float*, int64_t, float);

template <template <int> class Pick>
RowsFn ForM(int M) {
  switch (M) {
    case 1: return Pick<1>::fn;
    case 2: return Pick<2>::fn;
    case 3: return Pick<3>::fn;
    case 4: return Pick<4>::fn;
    case 5: return Pick<5>::fn;
    case 6: return Pick<6>::fn;
    case 7: return Pick<7>::fn;
    default: return Pick<8>::fn;
  }
}
template <int M>
struct PickScalar {
  static constexpr RowsFn fn = &RowsScalar<M>;
};
#if defined(__x86_64__)
template <int M>
struct PickVnni {
  static constexpr RowsFn fn = &RowsVnni<M>;
};
template <int M>
struct PickAvx2 {
  static constexpr RowsFn fn = &RowsAvx2<M>;
};
#endif

// 2 = AVX-512 VNNI, 1 = AVX2, 0 = scalar; capped by MOE_GEMM_ISA as the other kernels.
int Level() {
#if defined(__x86_64__)
  const char* cap = std::getenv("MOE_GEMM_ISA");
  const bool allow512 = cap == nullptr || cap[0] == 0 || std::strcmp(cap, "avx512") == 0;
  const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (allow512 && avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni"))
    return 2;
  if (allow2 && avx2) return 1;
#endif
  return 0;
}

}  // namespace

const char* Q8ActIsaName() {
  const int l = Level();
  return l == 2 ? "avx512vnni" : l == 1 ? "avx2" : "scalar";
}

// y (M,N) = q8(x) (M,K) · dequant(w)ᵀ + beta·y for q8_0 blocks w, 1 ≤ M ≤ 8, K a multiple of 32.
void Q8ActMatvec(Engine* e, int M, const float* x, int64_t K, const uint8_t* w, int64_t N, float* y, float beta) {
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> d;
  q.resize(static_cast<size_t>(M * K));
  d.resize(static_cast<size_t>(M * (K / 32)));
  QuantizeRows(x, M, K, q.data(), d.data());
  const int level = Level();
  RowsFn fn = ForM<PickScalar>(M);
#if defined(__x86_64__)
  if (level == 2) fn = ForM<PickVnni>(M);
  else if (level == 1) fn = ForM<PickAvx2>(M);
#else
  (void)level;
#endif
  const int8_t* qp = q.data();
  const float* dp = d.data();
  const int64_t rowBytes = K / 32 * kBlockBytes;
  if (e->threads == 1 || N < 2 || N * rowBytes < (1 << 16)) {
    fn(qp, dp, K, w, 0, N, y, N, beta);
    return;
  }
  e->pool.parallel_for(N, [&](int, int64_t n0, int64_t n1) { fn(qp, dp, K, w, n0, n1, y, N, beta); });
}

}  // namespace moe
