// Dtype conversions (f32 ↔ bf16 / f16 / OCP FP8 E4M3, E5M2) by bit manipulation, and
// gemmQuant: y = x · dequant(w)ᵀ with bf16/f16/fp8/int8 weight codes decoded on the fly
// into f32 tiles. Rounding is to nearest even; the exact rules are the ConvertKernels
// comments in src/backend/spec.ts and the header of src/core/dtype.ts (the TS ref these
// functions must match bit for bit).
// Not: validating (TypeScript checked every argument), not a general quantisation
// library (no block scales, no int4).
#include <immintrin.h>
#include <algorithm>
#include <cstring>
#include <vector>
#include "common.h"

namespace moe {
namespace {

inline uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// m >> shift rounded to nearest, ties to even; shift in [1, 31].
inline uint32_t ShiftRne(uint32_t m, int shift) {
  const uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
  return r + ((rem > half || (rem == half && (r & 1))) ? 1 : 0);
}

// ---------------------------------------------------------------------------
// Scalar codecs

inline uint16_t EncBf16(float f) {
  const uint32_t u = Bits(f);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);
  // Adding 0x7FFF + lsb rounds half to even; a carry may reach the exponent (→ Inf on overflow).
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float DecBf16(uint16_t c) { return FromBits(static_cast<uint32_t>(c) << 16); }

inline uint16_t EncF16(float f) {
  const uint32_t u = Bits(f), sign = (u >> 16) & 0x8000u, a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint16_t>(sign | 0x7E00u);  // NaN
  if (a >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // ≥ 65520 (RNE → Inf), Inf
  if (a >= 0x38800000u) {                                            // normal f16 (≥ 2^-14)
    const uint32_t r = a - 0x38000000u;                              // rebias exponent 127 → 15
    return static_cast<uint16_t>(sign | ((r + 0xFFFu + ((r >> 13) & 1u)) >> 13));
  }
  const int e = static_cast<int>(a >> 23);
  if (e < 102) return static_cast<uint16_t>(sign);  // < 2^-25: rounds to ±0
  const uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
  return static_cast<uint16_t>(sign | ShiftRne(m, 126 - e));  // units of 2^-24
}
inline float DecF16(uint16_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x8000u) << 16, e = (c >> 10) & 0x1Fu, m = c & 0x3FFu;
  if (e == 31) return FromBits(sign | 0x7F800000u | (m ? (0x400000u | (m << 13)) : 0u));
  if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m · 2^-24, exact
    return sign ? -v : v;
  }
  return FromBits(sign | ((e + 112u) << 23) | (m << 13));
}

// OCP FP8. E4M3 (FN): bias 7, no Inf, S.1111.111 = NaN, max 448, saturating.
// E5M2: bias 15, IEEE specials, max 57344, finite overflow saturates, Inf kept.
template <int MB, int BIAS, bool FN>
inline uint8_t EncFp8(float f) {
  constexpr uint32_t kMax = FN ? 0x7Eu : 0x7Bu, kNan = FN ? 0x7Fu : 0x7Eu, kInf = FN ? 0x7Eu : 0x7Cu;
  constexpr uint32_t kMaxBits = FN ? 0x43E00000u : 0x47600000u;  // 448, 57344
  constexpr uint32_t kMinNormalBits = static_cast<uint32_t>(127 + 1 - BIAS) << 23;
  constexpr int kShift = 23 - MB;
  const uint32_t u = Bits(f), sign = (u >> 24) & 0x80u, a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<uint8_t>(sign | kNan);
  if (a == 0x7F800000u) return static_cast<uint8_t>(sign | kInf);
  if (a >= kMaxBits) return static_cast<uint8_t>(sign | kMax);  // saturate
  if (a >= kMinNormalBits) {
    const uint32_t r = a - (static_cast<uint32_t>(127 - BIAS) << 23);
    return static_cast<uint8_t>(sign | ((r + (1u << (kShift - 1)) - 1u + ((r >> kShift) & 1u)) >> kShift));
  }
  const int shift = (151 - BIAS - MB) - static_cast<int>(a >> 23);  // subnormal: units of 2^(1-BIAS-MB)
  if (shift >= 25) return static_cast<uint8_t>(sign);              // below half the smallest subnormal
  return static_cast<uint8_t>(sign | ShiftRne((a & 0x7FFFFFu) | 0x800000u, shift));
}
inline uint8_t EncE4m3(float f) { return EncFp8<3, 7, true>(f); }
inline uint8_t EncE5m2(float f) { return EncFp8<2, 15, false>(f); }

inline float DecE4m3(uint8_t c) {
  const uint32_t sign = static_cast<uint32_t>(c & 0x80u) << 24, e = (c >> 3) & 0xFu, m = c & 7u;
  if (e == 15 && m == 7) return FromBits(sign | 0x7FC00000u);
  if (e == 0) {
    const float v = static_cast<float>(m) * 0.001953125f;  // m · 2^-9
    return sign ? -v : v;
  }
  return FromBits(sign | ((e + 120u) << 23) | (m << 20));
}
inline float DecE5m2(uint8_t c) { return DecF16(static_cast<uint16_t>(c << 8)); }  // E5M2 is truncated f16

void Fp8Table(bool e4m3, float* lut) {
  for (int c = 0; c < 256; ++c) lut[c] = e4m3 ? DecE4m3(static_cast<uint8_t>(c)) : DecE5m2(static_cast<uint8_t>(c));
}

// ---------------------------------------------------------------------------
// Array conversions, parallel over contiguous chunks

template <class F>
void Chunks(Engine* e, int64_t n, F&& f) {
  constexpr int64_t kMin = 1 << 15;
  if (e->threads == 1 || n < 2 * kMin) {
    f(0, n);
    return;
  }
  e->pool.parallel_for(n, [&](int, int64_t b, int64_t en) { f(b, en); });
}

Napi::Value F32ToBf16(const Napi::CallbackInfo& info) {
  uint16_t* out = Ptr<uint16_t>(info[1]);
  const float* x = Ptr<float>(info[2]);
  Chunks(GetEngine(info), Len(info[2]), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = EncBf16(x[i]);
  });
  return info.Env().Undefined();
}

Napi::Value Bf16ToF32(const Napi::CallbackInfo& info) {
  float* out = Ptr<float>(info[1]);
  const uint16_t* x = Ptr<uint16_t>(info[2]);
  Chunks(GetEngine(info), Len(info[2]), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = DecBf16(x[i]);
  });
  return info.Env().Undefined();
}

Napi::Value F32ToF16(const Napi::CallbackInfo& info) {
  uint16_t* out = Ptr<uint16_t>(info[1]);
  const float* x = Ptr<float>(info[2]);
  Chunks(GetEngine(info), Len(info[2]), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = EncF16(x[i]);
  });
  return info.Env().Undefined();
}

Napi::Value F16ToF32(const Napi::CallbackInfo& info) {
  float* out = Ptr<float>(info[1]);
  const uint16_t* x = Ptr<uint16_t>(info[2]);
  Chunks(GetEngine(info), Len(info[2]), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = DecF16(x[i]);
  });
  return info.Env().Undefined();
}

// f32ToFp8(engine, out, x, format (0 e4m3 | 1 e5m2), scale): out = encode(x / scale), the
// division in f32.
Napi::Value F32ToFp8(const Napi::CallbackInfo& info) {
  uint8_t* out = Ptr<uint8_t>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const bool e4m3 = I32(info[3]) == 0;
  const float s = static_cast<float>(F64(info[4]));
  Chunks(GetEngine(info), Len(info[2]), [&](int64_t b, int64_t e) {
    if (s == 1.0f) {
      if (e4m3) for (int64_t i = b; i < e; ++i) out[i] = EncE4m3(x[i]);
      else for (int64_t i = b; i < e; ++i) out[i] = EncE5m2(x[i]);
    } else {
      if (e4m3) for (int64_t i = b; i < e; ++i) out[i] = EncE4m3(x[i] / s);
      else for (int64_t i = b; i < e; ++i) out[i] = EncE5m2(x[i] / s);
    }
  });
  return info.Env().Undefined();
}

// fp8ToF32(engine, out, x, format, scale): out = decode(x) · scale, the product in f32.
Napi::Value Fp8ToF32(const Napi::CallbackInfo& info) {
  float* out = Ptr<float>(info[1]);
  const uint8_t* x = Ptr<uint8_t>(info[2]);
  const bool e4m3 = I32(info[3]) == 0;
  const float s = static_cast<float>(F64(info[4]));
  float lut[256];
  Fp8Table(e4m3, lut);
  Chunks(GetEngine(info), Len(info[2]), [&](int64_t b, int64_t e) {
    if (s == 1.0f) for (int64_t i = b; i < e; ++i) out[i] = lut[x[i]];
    else for (int64_t i = b; i < e; ++i) out[i] = lut[x[i]] * s;
  });
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// gemmQuant: y (M,N) = x (M,K) · dequant(w (N,K))ᵀ · scale + beta·y
//
// 1. Split N into panels of kPanel weight rows; threads take contiguous runs of panels.
// 2. Decode a panel's codes into an f32 tile (kPanel × K, zero rows past N).
// 3. For every x row, four tile rows at a time: four dot products with 8-lane
//    accumulators (AVX2 FMA, and F16C decoding, when the CPU has them; else portable).
// 4. y = dot · scale[n or 0] (+ beta·y when beta ≠ 0; y is not read when beta = 0).
// The summation order depends on K only, so the result is the same at any thread count.

enum QuantDtype { kBf16 = 0, kF16 = 1, kE4m3 = 2, kE5m2 = 3, kInt8 = 4 };
constexpr int kPanel = 16;

struct QuantArgs {
  const float* x;
  const void* w;
  const float* scales;
  float* y;
  int64_t M, N, K;
  int dtype;
  bool perRow;
  float beta;
  const float* lut8;  // fp8 decode table
};

void DecodeF16Row(const uint16_t* w, int64_t K, float* dst);

void DecodeRow(const QuantArgs& a, int64_t n, float* dst, bool avx2) {
  const int64_t K = a.K, off = n * K;
  switch (a.dtype) {
    case kBf16: {
      const uint16_t* w = static_cast<const uint16_t*>(a.w) + off;
      for (int64_t k = 0; k < K; ++k) dst[k] = DecBf16(w[k]);
      break;
    }
    case kF16: {
      const uint16_t* w = static_cast<const uint16_t*>(a.w) + off;
      if (avx2) DecodeF16Row(w, K, dst);
      else for (int64_t k = 0; k < K; ++k) dst[k] = DecF16(w[k]);
      break;
    }
    case kE4m3:
    case kE5m2: {
      const uint8_t* w = static_cast<const uint8_t*>(a.w) + off;
      for (int64_t k = 0; k < K; ++k) dst[k] = a.lut8[w[k]];
      break;
    }
    default: {
      const int8_t* w = static_cast<const int8_t*>(a.w) + off;
      for (int64_t k = 0; k < K; ++k) dst[k] = static_cast<float>(w[k]);
      break;
    }
  }
}

// out[r] = Σ_k x[k] · t[r·K + k] for r < 4.
void Dot4Portable(const float* x, const float* t, int64_t K, float* out) {
  float acc[4][8] = {};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    for (int r = 0; r < 4; ++r) {
      const float* tr = t + r * K + k;
      for (int j = 0; j < 8; ++j) acc[r][j] += x[k + j] * tr[j];
    }
  }
  for (int r = 0; r < 4; ++r) {
    float s = ((acc[r][0] + acc[r][4]) + (acc[r][1] + acc[r][5])) + ((acc[r][2] + acc[r][6]) + (acc[r][3] + acc[r][7]));
    for (int64_t kk = k; kk < K; ++kk) s += x[kk] * t[r * K + kk];
    out[r] = s;
  }
}

#if defined(__x86_64__)
__attribute__((target("avx2,fma"))) void Dot4Avx2(const float* x, const float* t, int64_t K, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  const float *t0 = t, *t1 = t + K, *t2 = t + 2 * K, *t3 = t + 3 * K;
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    const __m256 xv = _mm256_loadu_ps(x + k);
    a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(t0 + k), a0);
    a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(t1 + k), a1);
    a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(t2 + k), a2);
    a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(t3 + k), a3);
  }
  __m256 acc[4] = {a0, a1, a2, a3};
  for (int r = 0; r < 4; ++r) {
    alignas(32) float l[8];
    _mm256_store_ps(l, acc[r]);
    float s = ((l[0] + l[4]) + (l[1] + l[5])) + ((l[2] + l[6]) + (l[3] + l[7]));
    for (int64_t kk = k; kk < K; ++kk) s += x[kk] * t[r * K + kk];
    out[r] = s;
  }
}
// f16 row decode with the F16C instruction (exact; NaN quieted with its payload, as DecF16).
__attribute__((target("avx2,f16c"))) void DecodeF16Row(const uint16_t* w, int64_t K, float* dst) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) _mm256_storeu_ps(dst + k, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k))));
  for (; k < K; ++k) dst[k] = DecF16(w[k]);
}
bool HaveAvx2Fma() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}
#else
void Dot4Avx2(const float* x, const float* t, int64_t K, float* out) { Dot4Portable(x, t, K, out); }
void DecodeF16Row(const uint16_t* w, int64_t K, float* dst) {
  for (int64_t k = 0; k < K; ++k) dst[k] = DecF16(w[k]);
}
bool HaveAvx2Fma() { return false; }
#endif

void QuantPanels(const QuantArgs& a, int64_t p0, int64_t p1, bool avx2) {
  std::vector<float> tile(static_cast<size_t>(kPanel) * a.K);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n0 = p * kPanel, rows = std::min<int64_t>(kPanel, a.N - n0);
    const int64_t rows4 = (rows + 3) & ~int64_t(3);
    for (int64_t r = 0; r < rows; ++r) DecodeRow(a, n0 + r, tile.data() + r * a.K, avx2);
    std::fill(tile.begin() + rows * a.K, tile.begin() + rows4 * a.K, 0.0f);
    for (int64_t m = 0; m < a.M; ++m) {
      const float* xm = a.x + m * a.K;
      float* ym = a.y + m * a.N + n0;
      for (int64_t r = 0; r < rows4; r += 4) {
        float d[4];
        if (avx2) Dot4Avx2(xm, tile.data() + r * a.K, a.K, d);
        else Dot4Portable(xm, tile.data() + r * a.K, a.K, d);
        for (int64_t j = r; j < std::min<int64_t>(r + 4, rows); ++j) {
          const float v = d[j - r] * a.scales[a.perRow ? n0 + j : 0];
          ym[j] = a.beta == 0.0f ? v : v + a.beta * ym[j];
        }
      }
    }
  }
}

}  // namespace

// native/quant_blocks.cc: the M ≤ 8 (decode) path, weights widened in registers; false when
// the CPU has no SIMD path for it.
bool DenseQuantMatvec(Engine* e, int dtype, int M, const float* x, int64_t K, const void* w, const float* scales,
                      bool perRow, int64_t N, float* y, float beta);
// native/gemm.cc: C (M,N; ldc) = alpha · A (M,K; lda) · Bᵀ + beta · C, B stored (N,K) row stride ldb.
bool GemmNT(Engine* e, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc, float alpha, float beta);


namespace {

// gemmQuant's M > 8 (prefill) path: panels of weight rows decoded to f32 (exact, parallel over
// rows), then the engine's GEMM (packed micro-kernel or OpenBLAS) into a panel of y's columns:
// y[m, n] = (x·wᵀ)[m, n] · scale[n or 0] + beta·y[m, n]. Scale 1 everywhere (bf16 / f16 as the
// engine encodes them) writes y directly; otherwise the product goes through a temporary and the
// scale is applied after the sum, as in the panel-dot path. False when a buffer cannot be allocated.
bool QuantPanelGemm(Engine* e, const QuantArgs& a, bool avx2) {
  const int64_t M = a.M, N = a.N, K = a.K;
  // About 2 MiB of f32 weights per panel (cache-resident while the GEMM packs it), 16..1024 rows.
  const int64_t np = std::min<int64_t>(N, std::max<int64_t>(16, std::min<int64_t>(1024, ((1 << 19) / std::max<int64_t>(K, 1) + 15) / 16 * 16)));
  bool unit = true;
  for (int64_t n = 0; n < (a.perRow ? N : 1) && unit; ++n) unit = a.scales[n] == 1.0f;
  std::vector<float> panel, tmp;
  try {
    panel.resize(static_cast<size_t>(np * K));
    if (!unit) tmp.resize(static_cast<size_t>(M * np));
  } catch (const std::bad_alloc&) {
    return false;
  }
  for (int64_t n0 = 0; n0 < N; n0 += np) {
    const int64_t rows = std::min(np, N - n0);
    if (e->threads == 1 || rows * K < (1 << 15)) {
      for (int64_t r = 0; r < rows; ++r) DecodeRow(a, n0 + r, panel.data() + r * K, avx2);
    } else {
      e->pool.parallel_for(rows, [&](int, int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) DecodeRow(a, n0 + r, panel.data() + r * K, avx2);
      });
    }
    if (unit) {
      if (!GemmNT(e, M, rows, K, a.x, K, panel.data(), K, a.y + n0, N, 1.0f, a.beta)) return false;
      continue;
    }
    if (!GemmNT(e, M, rows, K, a.x, K, panel.data(), K, tmp.data(), rows, 1.0f, 0.0f)) return false;
    for (int64_t m = 0; m < M; ++m) {
      float* ym = a.y + m * N + n0;
      const float* tm = tmp.data() + m * rows;
      for (int64_t j = 0; j < rows; ++j) {
        const float v = tm[j] * a.scales[a.perRow ? n0 + j : 0];
        ym[j] = a.beta == 0.0f ? v : v + a.beta * ym[j];
      }
    }
  }
  return true;
}

// gemmQuant(engine, x, w, scales, y, M, N, K, dtype, beta)
Napi::Value GemmQuant(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  QuantArgs a;
  a.x = Ptr<float>(info[1]);
  a.w = Ptr<uint8_t>(info[2]);
  a.scales = Ptr<float>(info[3]);
  a.y = Ptr<float>(info[4]);
  a.M = I64(info[5]);
  a.N = I64(info[6]);
  a.K = I64(info[7]);
  a.dtype = I32(info[8]);
  a.beta = static_cast<float>(F64(info[9]));
  a.perRow = Len(info[3]) != 1;
  float lut[256];
  if (a.dtype == kE4m3 || a.dtype == kE5m2) Fp8Table(a.dtype == kE4m3, lut);
  a.lut8 = lut;
  if (a.M == 0 || a.N == 0) return info.Env().Undefined();
  if (a.M <= 8 && a.K > 0 && DenseQuantMatvec(eng, a.dtype, static_cast<int>(a.M), a.x, a.K, a.w, a.scales, a.perRow, a.N, a.y, a.beta))
    return info.Env().Undefined();
  const bool avx2 = HaveAvx2Fma();
  if (a.M > 8 && a.K > 0) {
    if (!QuantPanelGemm(eng, a, avx2)) Napi::Error::New(info.Env(), "gemmQuant: out of memory for the decoded panel").ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
  const int64_t panels = (a.N + kPanel - 1) / kPanel;
  if (eng->threads == 1 || panels < 2 || a.M * a.N * a.K < (1 << 16)) {
    QuantPanels(a, 0, panels, avx2);
  } else {
    eng->pool.parallel_for(panels, [&](int, int64_t b, int64_t e) { QuantPanels(a, b, e, avx2); });
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterConvert(Napi::Env env, Napi::Object exports) {
  exports.Set("f32ToBf16", Napi::Function::New(env, F32ToBf16));
  exports.Set("bf16ToF32", Napi::Function::New(env, Bf16ToF32));
  exports.Set("f32ToF16", Napi::Function::New(env, F32ToF16));
  exports.Set("f16ToF32", Napi::Function::New(env, F16ToF32));
  exports.Set("f32ToFp8", Napi::Function::New(env, F32ToFp8));
  exports.Set("fp8ToF32", Napi::Function::New(env, Fp8ToF32));
  exports.Set("gemmQuant", Napi::Function::New(env, GemmQuant));
}

}  // namespace moe
