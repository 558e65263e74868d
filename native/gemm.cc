// GEMM family (gemm, batchedGemm, groupedGemm, groupedGemmWeightGrad) with two paths per engine:
//  - GemmPath::Blas: cblas_sgemm from OpenBLAS (only when built with MOE_HAVE_CBLAS).
//  - GemmPath::Builtin: our GotoBLAS/BLIS-style GEMM: pack B into kc×nc blocks of nr-wide
//    micro-panels, pack A into mc×kc blocks of mr-high micro-panels, and run a register
//    micro-kernel (AVX-512 14×32, AVX2/FMA 6×16 or scalar 4×8, picked at run time). The loop
//    nest, the split into tasks and the threading are the driver shared with the bf16 GEMM
//    (native/gemm_driver.h); this file holds the f32 packing and the kernel choice.
// Not: a general strided-BLAS; shapes are validated in TypeScript (src/backend/checks/gemm.ts).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "common.h"
#include "gemm_driver.h"
#include "gemm_internal.h"

#ifdef MOE_HAVE_CBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);
#endif

namespace moe {
namespace {

using gemm::Blocking;
using gemm::MatView;
using gemm::MicroKernel;
using gemm::Problem;

// The best micro-kernel this CPU runs. MOE_GEMM_ISA=avx2|scalar (read per call, so tests can
// flip it) caps the choice, to test the narrower kernels on a wider machine.
const MicroKernel& SelectKernel() {
  const char* cap = std::getenv("MOE_GEMM_ISA");
  const bool allow512 = cap == nullptr || std::strcmp(cap, "avx512") == 0 || cap[0] == 0;
  const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (allow512 && __builtin_cpu_supports("avx512f") && gemm::Avx512Kernel()) return *gemm::Avx512Kernel();
  if (allow2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && gemm::Avx2Kernel()) return *gemm::Avx2Kernel();
#else
  (void)allow2;
#endif
  return *gemm::ScalarKernel();
}

// ---------------------------------------------------------------------------
// Built-in path: packing and the macro-kernel

// Packs A rows [i0, i0+mc), cols [k0, k0+kc) into ceil(mc/mr) micro-panels of kc×mr (zero padded).
void PackAPanels(const MatView& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* out, gemm::PackAFn packA) {
  for (int64_t s = 0; s < mc; s += mr) {
    const int rows = static_cast<int>(std::min<int64_t>(mr, mc - s));
    float* o = out + s * kc;
    if (packA != nullptr && (A.cs == 1 || A.rs == 1)) {
      packA(A.p + (i0 + s) * A.rs + k0 * A.cs, A.rs, A.cs, kc, rows, o);
      continue;
    }
    if (A.cs == 1) {  // rows contiguous: read along k, write with stride mr
      for (int i = 0; i < rows; ++i) {
        const float* src = A.p + (i0 + s + i) * A.rs + k0;
        for (int64_t k = 0; k < kc; ++k) o[k * mr + i] = src[k];
      }
    } else {  // columns contiguous (transA): each k gives mr consecutive values
      for (int64_t k = 0; k < kc; ++k) {
        const float* src = A.p + (k0 + k) * A.cs + (i0 + s) * A.rs;
        float* ok = o + k * mr;
        if (A.rs == 1) {
          for (int i = 0; i < rows; ++i) ok[i] = src[i];
        } else {
          for (int i = 0; i < rows; ++i) ok[i] = src[i * A.rs];
        }
      }
    }
    if (rows < mr) {
      for (int64_t k = 0; k < kc; ++k)
        for (int i = rows; i < mr; ++i) o[k * mr + i] = 0.0f;
    }
  }
}

// Packs B rows [k0, k0+kc), cols [j0, j0+nc) into ceil(nc/nr) micro-panels of kc×nr (zero padded).
// With row-major B, also prefetches the next `pfCols` columns of each row (the next chunk the
// caller will pack), so the strided row segments arrive while this chunk is being computed.
void PackBPanels(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* out, gemm::PackBTFn packBT,
           gemm::PackBNFn packBN, int64_t pfCols = 0) {
  if (B.cs == 1) {  // rows contiguous: walk each row once, dealing nr-wide pieces to the panels
    const int64_t full = nc / nr * nr;
    if (packBN != nullptr && full == nc) {
      packBN(B.p + k0 * B.rs + j0, B.rs, kc, nc / nr, out, pfCols);
      return;
    }
    for (int64_t k = 0; k < kc; ++k) {
      const float* src = B.p + (k0 + k) * B.rs + j0;
      for (int64_t off = 0; off < pfCols; off += 16) __builtin_prefetch(src + nc + off);
      float* ok = out + k * nr;
      for (int64_t q = 0; q < full; q += nr) std::memcpy(ok + q * kc, src + q, sizeof(float) * nr);
      if (full < nc) {
        float* o = ok + full * kc;
        const int cols = static_cast<int>(nc - full);
        for (int j = 0; j < cols; ++j) o[j] = src[full + j];
        for (int j = cols; j < nr; ++j) o[j] = 0.0f;
      }
    }
    return;
  }
  for (int64_t q = 0; q < nc; q += nr) {  // transB: columns contiguous along k
    const int cols = static_cast<int>(std::min<int64_t>(nr, nc - q));
    float* o = out + q * kc;
    if (packBT != nullptr && B.rs == 1 && cols == nr) {
      packBT(B.p + (j0 + q) * B.cs + k0, B.cs, kc, o);
      continue;
    }
    for (int j = 0; j < cols; ++j) {
      const float* src = B.p + (j0 + q + j) * B.cs + k0 * B.rs;
      if (B.rs == 1) {
        for (int64_t k = 0; k < kc; ++k) o[k * nr + j] = src[k];
      } else {
        for (int64_t k = 0; k < kc; ++k) o[k * nr + j] = src[k * B.rs];
      }
    }
    if (cols < nr) {
      for (int64_t k = 0; k < kc; ++k)
        for (int j = cols; j < nr; ++j) o[k * nr + j] = 0.0f;
    }
  }
}

// The f32 kernel policy of the shared driver (gemm_driver.h): the selected micro-kernel with its
// optional fast packing routines.
struct F32Kernel {
  using Elem = float;
  static constexpr bool kFuseB = true;
  const MicroKernel& mk;
  Blocking blocking;
  explicit F32Kernel(const MicroKernel& m) : mk(m), blocking{m.mr, m.nr, m.mc, m.kc, m.nc, m.kcMax, 16} {}
  int64_t Depth(int64_t kc) const { return kc; }
  void PackA(const MatView& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, float* out) const {
    PackAPanels(A, i0, mc, k0, kc, mk.mr, out, mk.packA);
  }
  void PackB(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, float* out, int64_t pfCols) const {
    PackBPanels(B, k0, kc, j0, nc, mk.nr, out, mk.packBT, mk.packBN, pfCols);
  }
  void Micro(int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc, float alpha, float beta) const {
    mk.fn(kc, pa, pb, c, ldc, alpha, beta);
  }
};

// ---------------------------------------------------------------------------
// BLAS path
//
// Threading choice (measured on this 2-core machine, OpenBLAS 0.3.21 pthread build,
// 2048×1024×1024): OpenBLAS's own 2 threads reach ~230 GFLOP/s, while two of our pool threads
// each calling a 1-thread sgemm on half of C reach only ~115: that build serialises concurrent
// calls (one global buffer lock), so partitioning over our pool gains nothing. The BLAS path
// therefore leaves our pool idle and lets OpenBLAS thread each call with the engine's thread
// count. openblas_set_num_threads is process-wide, so each call re-asserts its engine's count
// (a cheap no-op when unchanged); engines of different sizes used concurrently from different
// JS threads would race on it (only the thread count, never correctness).
#ifdef MOE_HAVE_CBLAS
void SetBlasThreads(int threads) {
  if (openblas_get_num_threads() != threads) openblas_set_num_threads(threads);
}

void RunBlas(Engine* e, const std::vector<Problem>& probs) {
  SetBlasThreads(e->threads);
  for (const Problem& p : probs) {
    if (p.M == 0 || p.N == 0) continue;
    if (p.K == 0 || p.alpha == 0.0f) {
      gemm::ScaleC(p.C, p.ldc, 0, p.M, 0, p.N, p.beta);
      continue;
    }
    const bool ta = p.transA;  // stored (K, M)
    const bool tb = p.transB;  // stored (N, K)
    const int lda = static_cast<int>(ta ? p.A.cs : p.A.rs), ldb = static_cast<int>(tb ? p.B.cs : p.B.rs);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<int>(p.M),
                static_cast<int>(p.N), static_cast<int>(p.K), p.alpha, p.A.p, lda, p.B.p, ldb, p.beta, p.C,
                static_cast<int>(p.ldc));
  }
}
#endif

bool Run(Engine* e, const std::vector<Problem>& probs) {
#ifdef MOE_HAVE_CBLAS
  if (e->gemm == GemmPath::Blas) {
    RunBlas(e, probs);
    return true;
  }
#endif
  return gemm::RunTasks(e, probs, F32Kernel(SelectKernel()));
}

// Each entry point unpacks its arguments (gemm_driver.h, Call) and runs them on the engine's path.
template <gemm::Call kCall>
Napi::Value Entry(const Napi::CallbackInfo& info) {
  static constexpr const char* kNames[] = {"gemm", "batchedGemm", "groupedGemm", "groupedGemmWeightGrad"};
  return gemm::Done(info.Env(), Run(GetEngine(info), gemm::ProblemsFromArgs(kCall, info)), kNames[static_cast<int>(kCall)]);
}

}  // namespace

// For other native areas (quant_blocks.cc): C (M,N; row stride ldc) = alpha · A (M,K; row stride
// lda) · Bᵀ + beta · C with B stored (N,K), row stride ldb, on the engine's GEMM path.
bool GemmNT(Engine* e, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc, float alpha, float beta) {
  gemm::Problem p = gemm::Plain(a, b, c, M, N, K, false, true, alpha, beta);
  p.A = gemm::MatView{a, lda, 1};
  p.B = gemm::MatView{b, 1, ldb};
  p.ldc = ldc;
  return Run(e, std::vector<gemm::Problem>{p});
}

void RegisterGemm(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New(env, Entry<gemm::Call::Gemm>));
  exports.Set("batchedGemm", Napi::Function::New(env, Entry<gemm::Call::Batched>));
  exports.Set("groupedGemm", Napi::Function::New(env, Entry<gemm::Call::Grouped>));
  exports.Set("groupedGemmWeightGrad", Napi::Function::New(env, Entry<gemm::Call::WeightGrad>));
  // setGemmPath(engine, "blas" | "builtin"): the path of this engine's later GEMM calls (the
  // calibrated `auto` mode of the TypeScript backend switches it per shape class).
  exports.Set("setGemmPath", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    Engine* e = GetEngine(info);
    const std::string path = Str(info[1]);
    if (path == "builtin") {
      e->gemm = GemmPath::Builtin;
    } else if (path == "blas" && BlasLinked()) {
      e->gemm = GemmPath::Blas;
    } else {
      Napi::Error::New(info.Env(), "setGemmPath: expected 'builtin' or 'blas' (with OpenBLAS linked), got '" + path + "'")
          .ThrowAsJavaScriptException();
    }
    return info.Env().Undefined();
  }));
  // Name of the built-in micro-kernel this CPU gets ("builtin-avx512", "builtin-avx2", "builtin-scalar").
  exports.Set("builtinGemmKernel", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), SelectKernel().name);
  }));
}

std::string GemmPathName(const Engine& e) {
#ifdef MOE_HAVE_CBLAS
  if (e.gemm == GemmPath::Blas) return "openblas";
#else
  (void)e;
#endif
  return SelectKernel().name;
}

bool BlasLinked() {
#ifdef MOE_HAVE_CBLAS
  return true;
#else
  return false;
#endif
}

void ConfigureBlasThreads(int threads) {
#ifdef MOE_HAVE_CBLAS
  SetBlasThreads(threads);
#else
  (void)threads;
#endif
}

}  // namespace moe
