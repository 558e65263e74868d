// bf16 GEMM family for training (gemmBf16, batchedGemmBf16, groupedGemmBf16,
// groupedGemmWeightGradBf16) on CPUs with AVX512_BF16 (Zen 4, Zen 5, Cooper Lake, Sapphire Rapids+).
// Inputs and outputs are f32 in memory. The packing step rounds A and B to bf16 (round to nearest
// even, VCVTNE2PS2BF16) into k-pair-interleaved micro-panels; a 14×32 register micro-kernel runs
// VDPBF16PS (two bf16 products added into an f32 accumulator per lane and instruction), so C is
// the f32 sum of exact products of the bf16-rounded inputs (products of two bf16 are exact in f32;
// only the summation order and its f32 rounding differ from a reference dot product). VDPBF16PS
// treats denormal inputs as zero and flushes denormal results (DAZ/FTZ).
// Blocking and threading are the driver shared with the f32 built-in path (native/gemm_driver.h):
// Goto loop nest, one task per rectangle of C over the full K, tasks sorted by cost and handed out
// through an atomic counter on the engine's pool, a thread reusing its packed B for its next row
// range; this file holds the bf16 packing and micro-kernel (the driver's kernel policy).
// Not: used by default (train.gemm_dtype=bf16 selects it per call), nor an OpenBLAS path, nor a
// fallback: on a CPU without AVX512_BF16 every entry point throws (bf16GemmAvailable() says so).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"
#include "gemm_driver.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "gemm_avx512.h"
#define MOE_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512bf16")))
#define MOE_BF16_X86 1
#endif

namespace moe {
namespace {

// Register tile and cache blocking. kc is in k (bf16 elements; even). Measured on Zen 5 (1 thread,
// 2048×1024×1024): see README "bf16 GEMM". A micro-panel pair count kp = kc/2; the packed A block
// is MC×KC bf16 (2 bytes each), half the bytes of the f32 kernel's at the same kc.
constexpr int MR = 14, NR = 32;
constexpr int64_t MC = 14 * 12, KC = 1024, NC = 4096, KCMAX = 2048;

using gemm::MatView;
#ifdef MOE_BF16_X86
using gemm::PrefetchTile32;
using gemm::StoreTile32;
using gemm::Transpose16;
#endif

// The CPU runs VDPBF16PS and VPERMW, and MOE_GEMM_ISA (which caps the f32 kernel's ISA, read per
// call so tests can flip it) does not forbid AVX-512.
bool Bf16Available() {
#ifdef MOE_BF16_X86
  const char* cap = std::getenv("MOE_GEMM_ISA");
  if (cap != nullptr && cap[0] != 0 && std::strcmp(cap, "avx512") != 0) return false;
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

#ifdef MOE_BF16_X86
// ---------------------------------------------------------------------------
// Micro-kernel. Packed layouts, in 32-bit units (one bf16 pair: k even in the low half, k odd in
// the high half): A micro-panel pa[p·MR + i] = (a(i,2p), a(i,2p+1)); B micro-panel
// pb[p·NR + j] = (b(2p,j), b(2p+1,j)); p < kp = ceil(kc/2), an odd kc padded with a zero k.

MOE_BF16_TARGET void MicroBf16(int64_t kp, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, float alpha,
                               float beta) {
  __m512 c0[MR], c1[MR];
  PrefetchTile32(c, ldc, MR);
  for (int i = 0; i < MR; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
#pragma GCC unroll 2
  for (int64_t p = 0; p < kp; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(pb), b1 = (__m512bh)_mm512_load_si512(pb + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(pa[i]));
      c0[i] = _mm512_dpbf16_ps(c0[i], a, b0);
      c1[i] = _mm512_dpbf16_ps(c1[i], a, b1);
    }
    pa += MR;
    pb += NR;
  }
  StoreTile32(c, ldc, c0, c1, MR, alpha, beta);
}

// ---------------------------------------------------------------------------
// Packing (f32 → bf16 pairs)

inline __mmask16 Mask16(int64_t n) { return n >= 16 ? __mmask16(0xFFFF) : n <= 0 ? __mmask16(0) : __mmask16((1u << n) - 1); }

// Lines contiguous along k (a row of A, or a column of B stored (N,K)): `lines` (≤ 16) lines
// line l = src + l·ld, k in [0, kc). Writes out[p·stride + l] = pair(line l, k = 2p, 2p+1) for
// every p < ceil(kc/2) and l < 16 (lines ≥ `lines` get zeros; lanes ≥ `width` are not written).
MOE_BF16_TARGET void PackKContig(const float* src, int64_t ld, int lines, int64_t kc, uint32_t* out, int64_t stride,
                                 int width) {
  const __mmask16 wmask = Mask16(width);
  for (int64_t k = 0; k < kc; k += 32) {
    const int64_t n = std::min<int64_t>(32, kc - k);
    const __mmask16 mlo = Mask16(n), mhi = Mask16(n - 16);
    __m512 r[16];
    for (int l = 0; l < 16; ++l) {
      if (l < lines) {
        const float* s = src + l * ld + k;
        __builtin_prefetch(s + 64);
        const __m512 lo = _mm512_maskz_loadu_ps(mlo, s), hi = _mm512_maskz_loadu_ps(mhi, s + 16);
        r[l] = _mm512_castsi512_ps((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
      } else {
        r[l] = _mm512_setzero_ps();
      }
    }
    Transpose16(r);
    const int64_t np = (n + 1) / 2;
    for (int64_t p = 0; p < np; ++p) _mm512_mask_storeu_ps(reinterpret_cast<float*>(out + (k / 2 + p) * stride), wmask, r[p]);
  }
}

// Lines strided along k (k-th line at src + k·ld, contiguous along m or n): writes
// out[p·stride + j] = pair(k = 2p, 2p+1; element j) for p < ceil(kc/2), j < 16 (elements
// ≥ `cols` zero; lanes ≥ `width` not written).
MOE_BF16_TARGET void PackKStrided(const float* src, int64_t ld, int cols, int64_t kc, uint32_t* out, int64_t stride,
                                  int width) {
  const __mmask16 cmask = Mask16(cols), wmask = Mask16(width);
  // bf16 word 2j ← word j (row k), 2j+1 ← word 16+j (row k+1) of cvtne2ps(row k+1, row k)
  alignas(64) static constexpr uint16_t kIdx[32] = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23,
                                                     8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i idx = _mm512_load_si512(kIdx);
  for (int64_t k = 0; k < kc; k += 2) {
    const float* s = src + k * ld;
    __builtin_prefetch(s + 8 * ld);
    const __m512 r0 = _mm512_maskz_loadu_ps(cmask, s);
    const __m512 r1 = k + 1 < kc ? _mm512_maskz_loadu_ps(cmask, s + ld) : _mm512_setzero_ps();
    const __m512i v = _mm512_permutexvar_epi16(idx, (__m512i)_mm512_cvtne2ps_pbh(r1, r0));
    _mm512_mask_storeu_epi32(out + (k / 2) * stride, wmask, v);
  }
}

// A rows [i0, i0+mc), k [k0, k0+kc) → ceil(mc/MR) micro-panels of kp×MR pairs (zero padded).
MOE_BF16_TARGET void PackAPairs(const MatView& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint32_t* out) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t s = 0; s < mc; s += MR) {
    const int rows = static_cast<int>(std::min<int64_t>(MR, mc - s));
    uint32_t* o = out + s * kp;
    const float* a = A.p + (i0 + s) * A.rs + k0 * A.cs;
    if (A.cs == 1) {
      PackKContig(a, A.rs, rows, kc, o, MR, MR);
    } else {
      PackKStrided(a, A.cs, rows, kc, o, MR, MR);
    }
  }
}

// B k [k0, k0+kc), cols [j0, j0+nc) → ceil(nc/NR) micro-panels of kp×NR pairs (zero padded).
MOE_BF16_TARGET void PackBPairs(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint32_t* out) {
  const int64_t kp = (kc + 1) / 2;
  for (int64_t q = 0; q < nc; q += NR) {
    uint32_t* o = out + q * kp;
    for (int h = 0; h < 2; ++h) {
      const int cols = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(16, nc - q - 16 * h)));
      const float* b = B.p + k0 * B.rs + (j0 + q + 16 * h) * B.cs;
      if (cols == 0) {
        for (int64_t p = 0; p < kp; ++p) _mm512_store_si512(o + p * NR + 16 * h, _mm512_setzero_si512());
      } else if (B.rs == 1) {
        PackKContig(b, B.cs, cols, kc, o + 16 * h, NR, 16);
      } else {
        PackKStrided(b, B.rs, cols, kc, o + 16 * h, NR, 16);
      }
    }
  }
}

// The bf16 kernel policy of the shared driver (gemm_driver.h): packed elements are bf16 pairs
// (32 bits), Depth(kc) = ceil(kc/2) of them per micro-panel row.
struct Bf16Kernel {
  using Elem = uint32_t;
  static constexpr bool kFuseB = false;
  gemm::Blocking blocking{MR, NR, MC, KC, NC, KCMAX, 32};
  int64_t Depth(int64_t kc) const { return (kc + 1) / 2; }
  void PackA(const MatView& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint32_t* out) const {
    PackAPairs(A, i0, mc, k0, kc, out);
  }
  void PackB(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint32_t* out, int64_t) const {
    PackBPairs(B, k0, kc, j0, nc, out);
  }
  void Micro(int64_t kc, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, float alpha, float beta) const {
    MicroBf16(Depth(kc), pa, pb, c, ldc, alpha, beta);
  }
};
#endif  // MOE_BF16_X86

bool Run(Engine* e, const std::vector<gemm::Problem>& probs) {
#ifdef MOE_BF16_X86
  return gemm::RunTasks(e, probs, Bf16Kernel());
#else
  (void)e;
  (void)probs;
  return false;
#endif
}

// Throws (and returns false) when the CPU cannot run the bf16 kernel.
bool Require(Napi::Env env, const char* kernel) {
  if (Bf16Available()) return true;
  Napi::Error::New(env, std::string(kernel) +
                            ": the bf16 GEMM needs a CPU with AVX512_BF16 (avx512f, avx512bw and avx512bf16; "
                            "or MOE_GEMM_ISA caps the ISA below avx512); this one cannot run it")
      .ThrowAsJavaScriptException();
  return false;
}

// Each entry point checks the CPU, unpacks its arguments (gemm_driver.h, Call) and runs them.
template <gemm::Call kCall>
Napi::Value Entry(const Napi::CallbackInfo& info) {
  static constexpr const char* kNames[] = {"gemmBf16", "batchedGemmBf16", "groupedGemmBf16", "groupedGemmWeightGradBf16"};
  const char* name = kNames[static_cast<int>(kCall)];
  if (!Require(info.Env(), name)) return info.Env().Undefined();
  return gemm::Done(info.Env(), Run(GetEngine(info), gemm::ProblemsFromArgs(kCall, info)), name);
}

}  // namespace

void RegisterGemmBf16(Napi::Env env, Napi::Object exports) {
  exports.Set("gemmBf16", Napi::Function::New(env, Entry<gemm::Call::Gemm>));
  exports.Set("batchedGemmBf16", Napi::Function::New(env, Entry<gemm::Call::Batched>));
  exports.Set("groupedGemmBf16", Napi::Function::New(env, Entry<gemm::Call::Grouped>));
  exports.Set("groupedGemmWeightGradBf16", Napi::Function::New(env, Entry<gemm::Call::WeightGrad>));
  // bf16GemmAvailable(): whether this CPU (and MOE_GEMM_ISA) lets the bf16 entry points run.
  exports.Set("bf16GemmAvailable", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), Bf16Available());
  }));
}

}  // namespace moe
