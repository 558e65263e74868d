// Internal interface of the GGUF block-quantised kernels (native/quant_blocks*.cc): the
// per-ISA entry points that quant_blocks.cc dispatches to after CPU detection.
// Byte layouts: src/core/quant-blocks.ts (the TS reference these kernels are tested against).
// Not: a public API, not validating (TypeScript checked every argument).
#pragma once
#include <cstdint>

namespace moe {
namespace qb {

enum Format { kQ8_0 = 0, kQ4_0 = 1, kQ4_K = 2, kQ6_K = 3 };

constexpr int BlockSize(int f) { return f == kQ4_K || f == kQ6_K ? 256 : 32; }
constexpr int BlockBytes(int f) { return f == kQ8_0 ? 34 : f == kQ4_0 ? 18 : f == kQ4_K ? 144 : 210; }

// out[0 .. nblocks·BlockSize) = ggml's dequantize_row_* of w (bit for bit).
using DequantFn = void (*)(int fmt, const uint8_t* w, int64_t nblocks, float* out);

// For weight rows n in [n0, n1) (each rowBytes bytes from w) and the M ≤ 8 rows of x (M,K):
// y[m·N + n] = Σ_k x[m,k]·dequant(w)[n,k] (+ beta·y[m·N + n] when beta ≠ 0; y not read when 0).
using MatvecFn = void (*)(int fmt, int M, const float* x, int64_t K, const uint8_t* w, int64_t rowBytes, int64_t n0,
                          int64_t n1, float* y, int64_t N, float beta);

// gemmQuant's dense codes (dtype 0 bf16, 1 f16, 2 fp8 e4m3, 3 fp8 e5m2, 4 int8; one code of
// 1 or 2 bytes per weight, rows of K codes), M ≤ 8, weight rows [n0, n1):
// y[m·N + n] = (Σ_k x[m,k]·decode(w[n,k])) · scales[perRow ? n : 0] (+ beta·y when beta ≠ 0).
using DenseMatvecFn = void (*)(int dtype, int M, const float* x, int64_t K, const uint8_t* w, const float* scales,
                               bool perRow, int64_t n0, int64_t n1, float* y, int64_t N, float beta);

struct Isa {
  const char* name;  // "avx512" | "avx2" | "scalar"
  DequantFn dequant;
  MatvecFn matvec;
  DenseMatvecFn dense;  // nullptr: gemmQuant keeps its portable decode-to-tile path
};

// nullptr when not compiled (non-x86); the caller checks the CPU before using one.
const Isa* Avx512Isa();
const Isa* Avx2Isa();
const Isa* ScalarIsa();

}  // namespace qb
}  // namespace moe
