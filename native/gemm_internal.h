// Internal interface of the built-in GEMM: the register micro-kernels (one per ISA, each in
// its own file and compiled with a function-level target attribute) and their blocking.
// Not: a public API. Only native/gemm.cc includes this; the packing lives there, and the cache
// blocking, loop nest and threading in the driver shared with the bf16 GEMM (native/gemm_driver.h).
#pragma once
#include <cstdint>

namespace moe {
namespace gemm {

// Computes one MR×NR tile of C (row-major, row stride ldc):
//   C = alpha · Σ_k pa[k·MR + i] · pb[k·NR + j] + beta · C,   and when beta == 0 C is not read.
// pa is a packed A micro-panel (kc × MR, k-major), pb a packed B micro-panel (kc × NR, k-major),
// both 64-byte aligned.
using MicroFn = void (*)(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc, float alpha, float beta);

// Optional fast packing of one full B micro-panel from B stored transposed (N,K) (rows contiguous
// along k): out[k·NR + j] = b[j·ldb + k] for j < NR, k < kc.
using PackBTFn = void (*)(const float* b, int64_t ldb, int64_t kc, float* out);

// Optional fast packing of one A micro-panel: out[k·MR + i] = a[i·rs + k·cs] for i < rows (≤ MR),
// k < kc, and zeros for rows ≤ i < MR. Called only with rs == 1 or cs == 1.
using PackAFn = void (*)(const float* a, int64_t rs, int64_t cs, int64_t kc, int rows, float* out);

// Optional fast packing of `panels` full B micro-panels from row-major B (rows contiguous along
// n): out[q·kc·NR + k·NR + j] = b[k·ldb + q·NR + j]; also prefetches the pfCols columns after
// them in each row (the next chunk the caller packs).
using PackBNFn = void (*)(const float* b, int64_t ldb, int64_t kc, int64_t panels, float* out, int64_t pfCols);

struct MicroKernel {
  const char* name;  // "builtin-avx512", ...
  int mr, nr;        // register tile
  int mc, kc, nc;    // cache blocking: A block mc×kc (L2), B micro-panel kc×nr (L1), B block kc×nc (L3)
  int kcMax;         // a problem with K ≤ kcMax runs as one K block (C written once); larger K
                     // is cut into equal blocks of at most kcMax (see KBlock in gemm.cc)
  MicroFn fn;
  PackBTFn packBT;  // nullptr: the generic scalar packing is used
  PackAFn packA;    // nullptr: the generic scalar packing is used
  PackBNFn packBN;  // nullptr: the generic packing (memcpy per panel row) is used
};

// nullptr when the ISA's code was not compiled (non-x86 builds); the caller checks the CPU.
const MicroKernel* Avx512Kernel();
const MicroKernel* Avx2Kernel();
const MicroKernel* ScalarKernel();

}  // namespace gemm
}  // namespace moe
