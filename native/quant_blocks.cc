// GGUF block-quantised weights (Q8_0, Q4_0, Q4_K, Q6_K): gemmQuantBlock and dequantizeBlock.
//
// 1. Pick the ISA: AVX-512 (avx512f/bw/vl), else AVX2+FMA+F16C, else portable scalar, capped by
//    MOE_GEMM_ISA=avx2|scalar (read per call, as native/gemm.cc does, so tests reach every path).
// 2. M ≤ 8 (decode): a matrix-vector product. Each weight block is decoded in registers once and
//    multiplied into all M rows of x; threads take contiguous runs of weight rows. Memory traffic
//    is the compact weights once, so it runs at the memory bandwidth the format allows.
// 3. M > 8 (prefill): panels of weight rows are dequantised into an f32 buffer (parallel over
//    rows) and multiplied with the engine's GEMM (gemm.cc GemmNT) straight into y's columns.
// Dequantised values equal ggml's dequantize_row_* bit for bit on every path; dot products are
// f32 FMA sums whose order depends only on K and M (not on the thread count).
// Not: validating (checks/quant-blocks.ts did), not a quantiser (src/core/quant-blocks.ts is).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "common.h"
#include "quant_blocks.h"

namespace moe {

// native/gemm.cc: C (M,N; row stride ldc) = alpha · A (M,K; row stride lda) · Bᵀ + beta · C, with B
// stored (N,K), row stride ldb. False when packing buffers could not be allocated.
bool GemmNT(Engine* e, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc, float alpha, float beta);

// native/quant_q8act.cc: q8_0 weights × q8-quantised activation rows (M ≤ 8), and its ISA name.
void Q8ActMatvec(Engine* e, int M, const float* x, int64_t K, const uint8_t* w, int64_t N, float* y, float beta);
const char* Q8ActIsaName();

namespace {

// ---------------------------------------------------------------------------
// Portable scalar path: ggml's dequantize_row_* per block (same f32 rounding), then dots.

float F16(const uint8_t* p) {
  const uint32_t h = static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8);
  const uint32_t sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  uint32_t u;
  if (e == 31) {
    u = sign | 0x7F800000u | (m ? (0x400000u | (m << 13)) : 0u);
  } else if (e == 0) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;  // m · 2^-24, exact
    return sign ? -v : v;
  } else {
    u = sign | ((e + 112u) << 23) | (m << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

void DequantBlockScalar(int fmt, const uint8_t* b, float* y) {
  switch (fmt) {
    case qb::kQ8_0: {
      const float d = F16(b);
      for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
      break;
    }
    case qb::kQ4_0: {
      const float d = F16(b);
      for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>((b[2 + j] & 15) - 8) * d;
        y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
      }
      break;
    }
    case qb::kQ4_K: {
      const float d = F16(b), dmin = F16(b + 2);
      const uint8_t* s = b + 4;
      for (int j = 0; j < 8; ++j) {
        int sc, m;
        if (j < 4) {
          sc = s[j] & 63;
          m = s[j + 4] & 63;
        } else {
          sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
          m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
        }
        const float a = d * static_cast<float>(sc), mm = dmin * static_cast<float>(m);
        const uint8_t* q = b + 16 + 32 * (j / 2);
        const int shift = (j & 1) * 4;
        for (int l = 0; l < 32; ++l) {
          const float p = a * static_cast<float>((q[l] >> shift) & 15);
          y[32 * j + l] = p - mm;
        }
      }
      break;
    }
    default: {
      const float d = F16(b + 208);
      for (int h = 0; h < 2; ++h) {
        const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
        const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * h);
        float* yy = y + 128 * h;
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          yy[l] = (d * static_cast<float>(sc[is])) * static_cast<float>(q1);
          yy[l + 32] = (d * static_cast<float>(sc[is + 2])) * static_cast<float>(q2);
          yy[l + 64] = (d * static_cast<float>(sc[is + 4])) * static_cast<float>(q3);
          yy[l + 96] = (d * static_cast<float>(sc[is + 6])) * static_cast<float>(q4);
        }
      }
    }
  }
}

void DequantScalar(int fmt, const uint8_t* w, int64_t nblocks, float* out) {
  const int BS = qb::BlockSize(fmt), BB = qb::BlockBytes(fmt);
  for (int64_t b = 0; b < nblocks; ++b) DequantBlockScalar(fmt, w + b * BB, out + b * BS);
}

void MatvecScalar(int fmt, int M, const float* x, int64_t K, const uint8_t* w, int64_t rowBytes, int64_t n0, int64_t n1,
                  float* y, int64_t N, float beta) {
  const int BS = qb::BlockSize(fmt), BB = qb::BlockBytes(fmt);
  float buf[256];
  for (int64_t n = n0; n < n1; ++n) {
    float acc[8][8] = {};
    for (int64_t b = 0; b < K / BS; ++b) {
      DequantBlockScalar(fmt, w + n * rowBytes + b * BB, buf);
      for (int m = 0; m < M; ++m) {
        const float* xm = x + m * K + b * BS;
        for (int k = 0; k < BS; k += 8)
          for (int j = 0; j < 8; ++j) acc[m][j] += xm[k + j] * buf[k + j];
      }
    }
    for (int m = 0; m < M; ++m) {
      const float* a = acc[m];
      const float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
      float* yp = y + m * N + n;
      *yp = beta == 0.0f ? s : s + beta * *yp;
    }
  }
}

const qb::Isa kScalar{"scalar", &DequantScalar, &MatvecScalar, nullptr};

// ---------------------------------------------------------------------------
// Dispatch and threading

const qb::Isa& SelectIsa() {
  const char* cap = std::getenv("MOE_GEMM_ISA");
  const bool allow512 = cap == nullptr || cap[0] == 0 || std::strcmp(cap, "avx512") == 0;
  const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (allow512 && avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && qb::Avx512Isa())
    return *qb::Avx512Isa();
  if (allow2 && avx2 && qb::Avx2Isa()) return *qb::Avx2Isa();
#else
  (void)allow2;
#endif
  return kScalar;
}

// Below this many weight bytes a call stays on the calling thread (waking workers costs µs).
constexpr int64_t kParallelMinBytes = 1 << 16;

void MatvecAll(Engine* e, const qb::Isa& isa, int fmt, int M, const float* x, int64_t K, const uint8_t* w, int64_t N,
               float* y, float beta) {
  const int64_t rowBytes = K / qb::BlockSize(fmt) * qb::BlockBytes(fmt);
  if (e->threads == 1 || N < 2 || N * rowBytes < kParallelMinBytes) {
    isa.matvec(fmt, M, x, K, w, rowBytes, 0, N, y, N, beta);
    return;
  }
  e->pool.parallel_for(N, [&](int, int64_t n0, int64_t n1) { isa.matvec(fmt, M, x, K, w, rowBytes, n0, n1, y, N, beta); });
}

bool PanelGemm(Engine* e, const qb::Isa& isa, int fmt, int64_t M, const float* x, int64_t K, const uint8_t* w, int64_t N,
               float* y, float beta) {
  const int64_t nbRow = K / qb::BlockSize(fmt), rowBytes = nbRow * qb::BlockBytes(fmt);
  // About 2 MiB of f32 weights per panel (L2/L3-resident while the GEMM packs it), 16..1024 rows.
  const int64_t np = std::min<int64_t>(N, std::max<int64_t>(16, std::min<int64_t>(1024, ((1 << 19) / std::max<int64_t>(K, 1) + 15) / 16 * 16)));
  std::vector<float> panel;
  try {
    panel.resize(static_cast<size_t>(np * K));
  } catch (const std::bad_alloc&) {
    return false;
  }
  for (int64_t n0 = 0; n0 < N; n0 += np) {
    const int64_t rows = std::min(np, N - n0);
    const uint8_t* wp = w + n0 * rowBytes;
    if (e->threads == 1 || rows * rowBytes < kParallelMinBytes) {
      isa.dequant(fmt, wp, rows * nbRow, panel.data());
    } else {
      e->pool.parallel_for(rows, [&](int, int64_t r0, int64_t r1) {
        isa.dequant(fmt, wp + r0 * rowBytes, (r1 - r0) * nbRow, panel.data() + r0 * K);
      });
    }
    if (!GemmNT(e, M, rows, K, x, K, panel.data(), K, y + n0, N, 1.0f, beta)) return false;
  }
  return true;
}

// gemmQuantBlock(engine, x, w, y, M, N, K, format, beta, q8Activations): q8Activations (q8_0,
// M ≤ 8) runs native/quant_q8act.cc instead.
Napi::Value GemmQuantBlock(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  const float* x = Ptr<float>(info[1]);
  const uint8_t* w = Ptr<uint8_t>(info[2]);
  float* y = Ptr<float>(info[3]);
  const int64_t M = I64(info[4]), N = I64(info[5]), K = I64(info[6]);
  const int fmt = I32(info[7]);
  const float beta = static_cast<float>(F64(info[8]));
  if (M == 0 || N == 0) return info.Env().Undefined();
  const qb::Isa& isa = SelectIsa();
  const bool q8act = info.Length() > 9 && info[9].IsBoolean() && info[9].As<Napi::Boolean>().Value();
  if (q8act && fmt == qb::kQ8_0 && M <= 8) {
    Q8ActMatvec(e, static_cast<int>(M), x, K, w, N, y, beta);
  } else if (M <= 8) {
    MatvecAll(e, isa, fmt, static_cast<int>(M), x, K, w, N, y, beta);
  } else if (!PanelGemm(e, isa, fmt, M, x, K, w, N, y, beta)) {
    Napi::Error::New(info.Env(), "gemmQuantBlock: out of memory for the dequantised panel").ThrowAsJavaScriptException();
  }
  return info.Env().Undefined();
}

// dequantizeBlock(engine, out, w, format, n)
Napi::Value DequantizeBlock(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const uint8_t* w = Ptr<uint8_t>(info[2]);
  const int fmt = I32(info[3]);
  const int64_t nblocks = I64(info[4]) / qb::BlockSize(fmt);
  const qb::Isa& isa = SelectIsa();
  if (e->threads == 1 || nblocks * qb::BlockBytes(fmt) < kParallelMinBytes) {
    isa.dequant(fmt, w, nblocks, out);
  } else {
    e->pool.parallel_for(nblocks, [&](int, int64_t b0, int64_t b1) {
      isa.dequant(fmt, w + b0 * qb::BlockBytes(fmt), b1 - b0, out + b0 * qb::BlockSize(fmt));
    });
  }
  return info.Env().Undefined();
}

// readBandwidthProbe(engine, bytes: Uint8Array) -> number: a 64-bit sum of the array's words
// (4 independent accumulators, vectorised by the compiler), parallel over the engine's pool.
// For bench/quant-bench.ts: the read bandwidth the matvec kernels are compared with.
Napi::Value ReadBandwidthProbe(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  const uint64_t* p = Ptr<uint64_t>(info[1]);
  const int64_t n = Len(info[1]) / 8;
  std::vector<uint64_t> part(static_cast<size_t>(e->threads), 0);
  e->pool.parallel_for(n / 4, [&](int tid, int64_t b, int64_t en) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int64_t i = 4 * b; i < 4 * en; i += 4) {
      a0 += p[i];
      a1 += p[i + 1];
      a2 += p[i + 2];
      a3 += p[i + 3];
    }
    part[static_cast<size_t>(tid)] += a0 + a1 + a2 + a3;
  });
  uint64_t s = 0;
  for (uint64_t v : part) s += v;
  return Napi::Number::New(info.Env(), static_cast<double>(s & 0xFFFFFFFFu));
}

}  // namespace

// gemmQuant's M ≤ 8 path (called by convert.cc GemmQuant): dense codes widened in registers,
// parallel over weight rows. False when the CPU (or MOE_GEMM_ISA) gives no SIMD path.
bool DenseQuantMatvec(Engine* e, int dtype, int M, const float* x, int64_t K, const void* w, const float* scales,
                      bool perRow, int64_t N, float* y, float beta) {
  const qb::Isa& isa = SelectIsa();
  if (isa.dense == nullptr || M < 1 || M > 8) return false;
  const uint8_t* wb = static_cast<const uint8_t*>(w);
  const int64_t rowBytes = K * (dtype <= 1 ? 2 : 1);
  if (e->threads == 1 || N < 2 || N * rowBytes < kParallelMinBytes) {
    isa.dense(dtype, M, x, K, wb, scales, perRow, 0, N, y, N, beta);
  } else {
    e->pool.parallel_for(N, [&](int, int64_t n0, int64_t n1) { isa.dense(dtype, M, x, K, wb, scales, perRow, n0, n1, y, N, beta); });
  }
  return true;
}

void RegisterQuantBlocks(Napi::Env env, Napi::Object exports) {
  exports.Set("gemmQuantBlock", Napi::Function::New(env, GemmQuantBlock));
  exports.Set("dequantizeBlock", Napi::Function::New(env, DequantizeBlock));
  exports.Set("readBandwidthProbe", Napi::Function::New(env, ReadBandwidthProbe));
  // ISA the block kernels use on this CPU under the current MOE_GEMM_ISA ("avx512", "avx2", "scalar").
  exports.Set("quantBlockIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), SelectIsa().name);
  }));
  // ISA of the q8-activation path ("avx512vnni", "avx2", "scalar").
  exports.Set("q8ActIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), Q8ActIsaName());
  }));
}

}  // namespace moe
