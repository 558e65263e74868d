// bf16 GEMM family for training (gemmBf16, batchedGemmBf16, groupedGemmBf16,
// groupedGemmWeightGradBf16) on CPUs with AVX512_BF16 (Zen 4, Zen 5, Cooper Lake, Sapphire Rapids+).
// Inputs and outputs are f32 in memory. The packing step rounds A and B to bf16 (round to nearest
// even, VCVTNE2PS2BF16) into k-pair-interleaved micro-panels; a 14×32 register micro-kernel runs
// VDPBF16PS (two bf16 products added into an f32 accumulator per lane and instruction), so C is
// the f32 sum of exact products of the bf16-rounded inputs (products of two bf16 are exact in f32;
// only the summation order and its f32 rounding differ from a reference dot product). VDPBF16PS
// treats denormal inputs as zero and flushes denormal results (DAZ/FTZ).
// Blocking and threading follow the f32 built-in path (native/gemm.cc): Goto loop nest, one task
// per rectangle of C over the full K, tasks sorted by cost and handed out through an atomic
// counter on the engine's pool, a thread reusing its packed B for its next row range.
// Not: used by default (train.gemm_dtype=bf16 selects it per call), nor an OpenBLAS path, nor a
// fallback: on a CPU without AVX512_BF16 every entry point throws (bf16GemmAvailable() says so).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
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

// element (i, j) = p[i*rs + j*cs]; one of rs, cs is 1 (the entry points only build such views).
struct View {
  const float* p;
  int64_t rs, cs;
};

// C (M,N) = alpha · A (M,K) · B (K,N) + beta · C, C row-major with row stride ldc.
struct Prob {
  int64_t M, N, K;
  View A, B;
  float* C;
  int64_t ldc;
  float alpha, beta;
};

struct Task {
  int32_t prob;
  int64_t m0, m1, n0, n1;
  double cost;
};

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

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

void ScaleC(float* C, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float beta) {
  if (beta == 1.0f) return;
  for (int64_t i = m0; i < m1; ++i) {
    float* ci = C + i * ldc;
    if (beta == 0.0f) {
      std::fill(ci + n0, ci + n1, 0.0f);
    } else {
      for (int64_t j = n0; j < n1; ++j) ci[j] *= beta;
    }
  }
}

#ifdef MOE_BF16_X86
// ---------------------------------------------------------------------------
// Micro-kernel. Packed layouts, in 32-bit units (one bf16 pair: k even in the low half, k odd in
// the high half): A micro-panel pa[p·MR + i] = (a(i,2p), a(i,2p+1)); B micro-panel
// pb[p·NR + j] = (b(2p,j), b(2p+1,j)); p < kp = ceil(kc/2), an odd kc padded with a zero k.

MOE_BF16_TARGET void MicroBf16(int64_t kp, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, float alpha,
                               float beta) {
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + NR - 1, 1, 3);
  }
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

// ---------------------------------------------------------------------------
// Packing (f32 → bf16 pairs)

// In-register 16×16 transpose of 32-bit lanes: r[i] holds row i on entry and column i on return
// (the same shuffle network as the f32 AVX-512 kernel's, native/gemm_kernel_avx512.cc).
MOE_BF16_TARGET inline void Transpose16(__m512 r[16]) {
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
MOE_BF16_TARGET void PackA(const View& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint32_t* out) {
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
MOE_BF16_TARGET void PackB(const View& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint32_t* out) {
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
#endif  // MOE_BF16_X86

// ---------------------------------------------------------------------------
// Per-thread packing buffers (as in gemm.cc): kept between calls, grown on demand, 64-byte aligned.
struct Workspace {
  std::unique_ptr<uint32_t[]> raw;
  int64_t capacity = 0;
  uint32_t* a = nullptr;
  uint32_t* b = nullptr;
  float* tmp = nullptr;
  // the B block `b` holds (valid within one call): a thread's next row range of it reuses it
  const float* bSrc = nullptr;
  int64_t bRs = 0, bCs = 0, bK0 = 0, bKc = 0, bJ0 = 0, bNc = 0;
  bool HoldsB(const View& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc) const {
    return bSrc != nullptr && bSrc == B.p && bRs == B.rs && bCs == B.cs && bK0 == k0 && bKc == kc && bJ0 == j0 && bNc == nc;
  }
  void SetB(const View& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    bSrc = B.p;
    bRs = B.rs;
    bCs = B.cs;
    bK0 = k0;
    bKc = kc;
    bJ0 = j0;
    bNc = nc;
  }
  bool Reserve(int64_t aLen, int64_t bLen, int64_t tLen) {
    const int64_t pad = 16;
    const int64_t total = aLen + bLen + tLen + 4 * pad;
    if (total > capacity) {
      bSrc = nullptr;
      raw.reset();
      raw.reset(new (std::nothrow) uint32_t[total]);
      capacity = raw ? total : 0;
      if (!raw) return false;
    }
    auto align = [](uint32_t* p) {
      return reinterpret_cast<uint32_t*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
    };
    a = align(raw.get());
    b = align(a + aLen + pad);
    tmp = reinterpret_cast<float*>(align(b + bLen + pad));
    return true;
  }
};

Workspace& ThreadWorkspace() {
  thread_local Workspace ws;
  return ws;
}

int64_t KBlock(int64_t K) {
  if (K <= KCMAX) return std::max<int64_t>(K, 1);
  const int64_t blocks = (K + KCMAX - 1) / KCMAX;
  return std::min<int64_t>(KCMAX, RoundUp((K + blocks - 1) / blocks, 32));
}

int64_t NBlock(int64_t kc) {
  if (kc <= KC) return NC;
  return std::max<int64_t>(NR, NC * KC / kc / NR * NR);
}

#ifdef MOE_BF16_X86
MOE_BF16_TARGET void Tile(int64_t kp, const uint32_t* pa, const uint32_t* pb, float* c, int64_t ldc, int64_t mb,
                          int64_t nb, float alpha, float beta, float* tmp) {
  if (mb == MR && nb == NR) {
    MicroBf16(kp, pa, pb, c, ldc, alpha, beta);
    return;
  }
  MicroBf16(kp, pa, pb, tmp, NR, alpha, 0.0f);
  for (int64_t i = 0; i < mb; ++i) {
    float* ci = c + i * ldc;
    const float* ti = tmp + i * NR;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < nb; ++j) ci[j] = ti[j];
    } else {
      for (int64_t j = 0; j < nb; ++j) ci[j] = ti[j] + beta * ci[j];
    }
  }
}

// One task with the Goto loop nest jc (NC) → pc (kc) → ic (mc) → jr (NR) → ir (MR).
MOE_BF16_TARGET void RunTask(const Prob& p, const Task& t, Workspace& ws) {
  if (p.K == 0 || p.alpha == 0.0f) {
    ScaleC(p.C, p.ldc, t.m0, t.m1, t.n0, t.n1, p.beta);
    return;
  }
  const int64_t kcP = KBlock(p.K), ncP = NBlock(kcP);
  for (int64_t jc = t.n0; jc < t.n1; jc += ncP) {
    const int64_t nc = std::min<int64_t>(ncP, t.n1 - jc);
    for (int64_t pc = 0; pc < p.K; pc += kcP) {
      const int64_t kc = std::min<int64_t>(kcP, p.K - pc), kp = (kc + 1) / 2;
      const float beta = pc == 0 ? p.beta : 1.0f;
      if (!ws.HoldsB(p.B, pc, kc, jc, nc)) {
        PackB(p.B, pc, kc, jc, nc, ws.b);
        ws.SetB(p.B, pc, kc, jc, nc);
      }
      const int64_t rows = t.m1 - t.m0, nBlocks = (rows + MC - 1) / MC;
      const int64_t mcEven = std::min<int64_t>(MC, RoundUp((rows + nBlocks - 1) / nBlocks, MR));
      for (int64_t ic = t.m0; ic < t.m1; ic += mcEven) {
        const int64_t mc = std::min<int64_t>(mcEven, t.m1 - ic);
        PackA(p.A, ic, mc, pc, kc, ws.a);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int64_t nb = std::min<int64_t>(NR, nc - jr);
          const uint32_t* pb = ws.b + jr * kp;
          for (int64_t ir = 0; ir < mc; ir += MR) {
            Tile(kp, ws.a + ir * kp, pb, p.C + (ic + ir) * p.ldc + jc + jr, p.ldc, std::min<int64_t>(MR, mc - ir), nb,
                 p.alpha, beta, ws.tmp);
          }
        }
      }
    }
  }
}
#endif

// ---------------------------------------------------------------------------
// Scheduling (the f32 built-in path's rules, native/gemm.cc)

double Cost(int64_t m, int64_t n, int64_t k) {
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(std::max<int64_t>(k, 1)) +
         static_cast<double>(m) * static_cast<double>(n);
}

void Split(int32_t pi, const Prob& p, int64_t parts, int64_t minParts, std::vector<Task>& out) {
  if (p.M == 0 || p.N == 0) return;
  const int64_t nPanels = (p.N + NR - 1) / NR, mStrips = (p.M + MR - 1) / MR;
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, std::max(nPanels, mStrips)));
  const bool splitN = parts > 1 && nPanels >= parts && (p.M <= p.N || mStrips < parts);
  const int64_t units = splitN ? nPanels : mStrips;
  parts = std::min(parts, units);
  if (!splitN && parts > minParts) {
    const int64_t kc = KBlock(p.K);
    if (kc < p.K || NBlock(kc) < p.N) parts = std::max<int64_t>(1, std::min(minParts, units));
  }
  for (int64_t s = 0; s < parts; ++s) {
    const int64_t u0 = units * s / parts, u1 = units * (s + 1) / parts;
    Task t{pi, 0, p.M, 0, p.N, 0.0};
    if (splitN) {
      t.n0 = u0 * NR;
      t.n1 = std::min(p.N, u1 * NR);
    } else {
      t.m0 = u0 * MR;
      t.m1 = std::min(p.M, u1 * MR);
    }
    if (t.m0 >= t.m1 || t.n0 >= t.n1) continue;
    t.cost = Cost(t.m1 - t.m0, t.n1 - t.n0, p.K);
    out.push_back(t);
  }
}

constexpr double kParallelMinCost = 2.0 * 128 * 128 * 128;
constexpr int64_t kPiecesPerThread = 4;
constexpr double kMinPieceCost = 2.0 * 256 * 256 * 512;

bool Run(Engine* e, const std::vector<Prob>& probs) {
#ifdef MOE_BF16_X86
  const int T = e->threads;
  double total = 0;
  for (const Prob& p : probs) total += Cost(p.M, p.N, p.K);
  const bool parallel = T > 1 && total >= kParallelMinCost;
  std::vector<Task> tasks;
  for (size_t i = 0; i < probs.size(); ++i) {
    const Prob& p = probs[i];
    int64_t parts = 1;
    if (parallel) {
      if (probs.size() == 1) {
        const double perThread = Cost(p.M, p.N, p.K) / T;
        parts = T * std::max<int64_t>(1, std::min<int64_t>(kPiecesPerThread, static_cast<int64_t>(perThread / kMinPieceCost)));
      } else {
        const double c = Cost(p.M, p.N, p.K), target = total / (2.0 * T);
        parts = static_cast<int64_t>(std::min<double>(2.0 * T, std::ceil(c / target - 1e-9)));
      }
    }
    Split(static_cast<int32_t>(i), p, parts, parallel ? T : 1, tasks);
  }
  if (tasks.empty()) return true;
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });
  int64_t aLen = 0, bLen = 0;
  for (const Task& t : tasks) {
    const int64_t kp = (KBlock(probs[t.prob].K) + 1) / 2;
    aLen = std::max(aLen, RoundUp(std::min<int64_t>(MC, t.m1 - t.m0), MR) * kp);
    bLen = std::max(bLen, RoundUp(std::min<int64_t>(NBlock(KBlock(probs[t.prob].K)), t.n1 - t.n0), NR) * kp);
  }
  const int64_t tLen = static_cast<int64_t>(MR) * NR;
  const int nThreads = parallel ? static_cast<int>(std::min<size_t>(T, tasks.size())) : 1;
  if (nThreads == 1) {
    Workspace& ws = ThreadWorkspace();
    if (!ws.Reserve(aLen, bLen, tLen)) return false;
    ws.bSrc = nullptr;
    for (const Task& t : tasks) RunTask(probs[t.prob], t, ws);
    return true;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  e->pool.run_dynamic([&](int tid) {
    if (tid >= nThreads) return;
    Workspace& ws = ThreadWorkspace();
    if (!ws.Reserve(aLen, bLen, tLen)) {
      failed.store(true);
      return;
    }
    ws.bSrc = nullptr;
    for (;;) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= tasks.size()) break;
      RunTask(probs[tasks[i].prob], tasks[i], ws);
    }
  });
  return !(failed.load() && next.load() < tasks.size());
#else
  (void)e;
  (void)probs;
  return false;
#endif
}

Prob Plain(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
           float alpha, float beta) {
  Prob p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.A = transA ? View{a, 1, M} : View{a, K, 1};
  p.B = transB ? View{b, 1, K} : View{b, N, 1};
  p.C = c;
  p.ldc = N;
  p.alpha = alpha;
  p.beta = beta;
  return p;
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

Napi::Value Done(Napi::Env env, bool ok, const char* kernel) {
  if (!ok) Napi::Error::New(env, std::string(kernel) + ": out of memory for packing buffers").ThrowAsJavaScriptException();
  return env.Undefined();
}

// gemmBf16(engine, a, b, c, M, N, K, transA, transB, alpha, beta)
Napi::Value GemmBf16Fn(const Napi::CallbackInfo& info) {
  if (!Require(info.Env(), "gemmBf16")) return info.Env().Undefined();
  Engine* e = GetEngine(info);
  std::vector<Prob> probs{Plain(Ptr<float>(info[1]), Ptr<float>(info[2]), Ptr<float>(info[3]), I64(info[4]), I64(info[5]),
                                I64(info[6]), Bool(info[7]), Bool(info[8]), static_cast<float>(F64(info[9])),
                                static_cast<float>(F64(info[10])))};
  return Done(info.Env(), Run(e, probs), "gemmBf16");
}

// batchedGemmBf16(engine, a, b, c, batch, M, N, K, transA, transB, alpha, beta)
Napi::Value BatchedGemmBf16Fn(const Napi::CallbackInfo& info) {
  if (!Require(info.Env(), "batchedGemmBf16")) return info.Env().Undefined();
  Engine* e = GetEngine(info);
  const float* a = Ptr<float>(info[1]);
  const float* b = Ptr<float>(info[2]);
  float* c = Ptr<float>(info[3]);
  const int64_t batch = I64(info[4]), M = I64(info[5]), N = I64(info[6]), K = I64(info[7]);
  const bool ta = Bool(info[8]), tb = Bool(info[9]);
  const float alpha = static_cast<float>(F64(info[10])), beta = static_cast<float>(F64(info[11]));
  std::vector<Prob> probs;
  probs.reserve(batch);
  for (int64_t i = 0; i < batch; ++i) probs.push_back(Plain(a + i * M * K, b + i * K * N, c + i * M * N, M, N, K, ta, tb, alpha, beta));
  return Done(info.Env(), Run(e, probs), "batchedGemmBf16");
}

// groupedGemmBf16(engine, x, w, y, sizes, K, N, transW, beta): y_g = x_g · op(w_g) + beta·y_g
Napi::Value GroupedGemmBf16Fn(const Napi::CallbackInfo& info) {
  if (!Require(info.Env(), "groupedGemmBf16")) return info.Env().Undefined();
  Engine* e = GetEngine(info);
  const float* x = Ptr<float>(info[1]);
  const float* w = Ptr<float>(info[2]);
  float* y = Ptr<float>(info[3]);
  const int32_t* sizes = Ptr<int32_t>(info[4]);
  const int64_t E = Len(info[4]), K = I64(info[5]), N = I64(info[6]);
  const bool transW = Bool(info[7]);
  const float beta = static_cast<float>(F64(info[8]));
  std::vector<Prob> probs;
  int64_t row = 0;
  for (int64_t g = 0; g < E; ++g) {
    const int64_t m = sizes[g];
    if (m > 0) probs.push_back(Plain(x + row * K, w + g * K * N, y + row * N, m, N, K, false, transW, 1.0f, beta));
    row += m;
  }
  return Done(info.Env(), Run(e, probs), "groupedGemmBf16");
}

// groupedGemmWeightGradBf16(engine, x, dy, dw, sizes, K, N, transW, beta)
Napi::Value GroupedGemmWeightGradBf16Fn(const Napi::CallbackInfo& info) {
  if (!Require(info.Env(), "groupedGemmWeightGradBf16")) return info.Env().Undefined();
  Engine* e = GetEngine(info);
  const float* x = Ptr<float>(info[1]);
  const float* dy = Ptr<float>(info[2]);
  float* dw = Ptr<float>(info[3]);
  const int32_t* sizes = Ptr<int32_t>(info[4]);
  const int64_t E = Len(info[4]), K = I64(info[5]), N = I64(info[6]);
  const bool transW = Bool(info[7]);
  const float beta = static_cast<float>(F64(info[8]));
  std::vector<Prob> probs;
  int64_t row = 0;
  for (int64_t g = 0; g < E; ++g) {
    const int64_t m = sizes[g];
    const float* xg = x + row * K;
    const float* dyg = dy + row * N;
    float* dwg = dw + g * K * N;
    if (!transW) {
      probs.push_back(Plain(xg, dyg, dwg, K, N, m, true, false, 1.0f, beta));
    } else {
      probs.push_back(Plain(dyg, xg, dwg, N, K, m, true, false, 1.0f, beta));
    }
    row += m;
  }
  return Done(info.Env(), Run(e, probs), "groupedGemmWeightGradBf16");
}

}  // namespace

void RegisterGemmBf16(Napi::Env env, Napi::Object exports) {
  exports.Set("gemmBf16", Napi::Function::New(env, GemmBf16Fn));
  exports.Set("batchedGemmBf16", Napi::Function::New(env, BatchedGemmBf16Fn));
  exports.Set("groupedGemmBf16", Napi::Function::New(env, GroupedGemmBf16Fn));
  exports.Set("groupedGemmWeightGradBf16", Napi::Function::New(env, GroupedGemmWeightGradBf16Fn));
  // bf16GemmAvailable(): whether this CPU (and MOE_GEMM_ISA) lets the bf16 entry points run.
  exports.Set("bf16GemmAvailable", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::Boolean::New(info.Env(), Bf16Available());
  }));
}

}  // namespace moe
