// GEMM family (gemm, batchedGemm, groupedGemm, groupedGemmWeightGrad) with two paths per engine:
//  - GemmPath::Blas: cblas_sgemm from OpenBLAS (only when built with MOE_HAVE_CBLAS).
//  - GemmPath::Builtin: our GotoBLAS/BLIS-style GEMM: pack B into kc×nc blocks of nr-wide
//    micro-panels, pack A into mc×kc blocks of mr-high micro-panels, and run a register
//    micro-kernel (AVX-512 14×32, AVX2/FMA 6×16 or scalar 4×8, picked at run time).
// Threading (builtin): every call becomes a list of independent sub-GEMM tasks (a problem of a
// batch/group × a row or column range of its C); tasks are sorted by cost (largest first) and
// handed out through an atomic counter on the engine's pool, so uneven groups keep every thread
// busy; one large problem becomes up to 4 pieces per thread, so that a thread slowed by another
// process on its core hands its share to the others, and workers the OS has not yet scheduled
// when the caller is done are not waited for (ThreadPool::run_dynamic). Each thread packs its own
// A and B blocks (a task owns whole columns or rows of C, so no packed buffer is shared and no
// barrier is needed) and re-uses its packed B when its next task is another row range of it.
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
#include "gemm_internal.h"

#ifdef MOE_HAVE_CBLAS
#include <cblas.h>
extern "C" void openblas_set_num_threads(int);
extern "C" int openblas_get_num_threads(void);
#endif

namespace moe {
namespace {

using gemm::MicroKernel;

// ---------------------------------------------------------------------------
// Problem description

// element (i, j) = p[i*rs + j*cs]; covers both stored and transposed operands.
struct MatView {
  const float* p;
  int64_t rs, cs;
};

// C (M,N) = alpha · A (M,K) · B (K,N) + beta · C, C row-major with row stride ldc.
struct Problem {
  int64_t M, N, K;
  MatView A, B;
  bool transA, transB;  // how A and B are stored (the BLAS path needs it; views already fold it in)
  float* C;
  int64_t ldc;
  float alpha, beta;
};

// A rectangle [m0,m1)×[n0,n1) of one problem's C, computed over the full K.
struct Task {
  int32_t prob;
  int64_t m0, m1, n0, n1;
  double cost;
};

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

// C block ← beta · C block (beta == 0 writes zeros without reading C).
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

// ---------------------------------------------------------------------------
// Built-in path: packing and the macro-kernel

// Packs A rows [i0, i0+mc), cols [k0, k0+kc) into ceil(mc/mr) micro-panels of kc×mr (zero padded).
void PackA(const MatView& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, int mr, float* out, gemm::PackAFn packA) {
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
void PackB(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, int nr, float* out, gemm::PackBTFn packBT,
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

// Per-thread packing buffers, 64-byte aligned, kept by each thread (thread_local) between calls
// and grown on demand: allocating them per call cost page faults on every call (measured ~5% of
// a 2-thread 512³ GEMM). At most mc·kcMax + kc·nc floats per thread (9.4 MB with AVX-512), released
// when the thread (an engine's pool worker, or the JS thread) exits. Allocation never throws:
// a failure is reported and the call answers with a JS error.
struct Workspace {
  std::unique_ptr<float[]> raw;
  int64_t capacity = 0;
  float* a = nullptr;    // mc × kc
  float* b = nullptr;    // kc × nc
  float* tmp = nullptr;  // mr × nr edge tile
  // Which B block `b` holds (source pointer, strides, k and n range), valid only within the call
  // that packed it (BeginCall clears it): a thread that takes a second row range of the same
  // problem reuses its packed B instead of packing it again.
  const float* bSrc = nullptr;
  int64_t bRs = 0, bCs = 0, bK0 = 0, bKc = 0, bJ0 = 0, bNc = 0;
  void BeginCall() { bSrc = nullptr; }
  bool HoldsB(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc) const {
    return bSrc == B.p && bSrc != nullptr && bRs == B.rs && bCs == B.cs && bK0 == k0 && bKc == kc && bJ0 == j0 && bNc == nc;
  }
  void SetB(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc) {
    bSrc = B.p;
    bRs = B.rs;
    bCs = B.cs;
    bK0 = k0;
    bKc = kc;
    bJ0 = j0;
    bNc = nc;
  }
  bool Reserve(int64_t aLen, int64_t bLen, int64_t tLen) {
    const int64_t pad = 16;  // floats = 64 bytes
    const int64_t total = aLen + bLen + tLen + 4 * pad;
    if (total > capacity) {
      bSrc = nullptr;
      raw.reset();
      raw.reset(new (std::nothrow) float[total]);
      capacity = raw ? total : 0;
      if (!raw) return false;
    }
    auto align = [](float* p) {
      return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
    };
    a = align(raw.get());
    b = align(a + aLen + pad);
    tmp = align(b + bLen + pad);
    return true;
  }
};

Workspace& ThreadWorkspace() {
  thread_local Workspace ws;
  return ws;
}

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// One mr×nr tile of C from packed panels; edge tiles (mb < mr or nb < nr) go through tmp.
inline void Tile(const MicroKernel& mk, int64_t kc, const float* pa, const float* pb, float* c, int64_t ldc, int64_t mb,
                 int64_t nb, float alpha, float beta, float* tmp) {
  if (mb == mk.mr && nb == mk.nr) {
    mk.fn(kc, pa, pb, c, ldc, alpha, beta);
    return;
  }
  mk.fn(kc, pa, pb, tmp, mk.nr, alpha, 0.0f);
  for (int64_t i = 0; i < mb; ++i) {
    float* ci = c + i * ldc;
    const float* ti = tmp + i * mk.nr;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < nb; ++j) ci[j] = ti[j];
    } else {
      for (int64_t j = 0; j < nb; ++j) ci[j] = ti[j] + beta * ci[j];
    }
  }
}

// K block for a problem: K itself up to kcMax, else K cut into equal blocks of at most kcMax
// (rounded to 16). Fewer K blocks mean fewer read-modify-write passes over C and fewer A/B
// re-packs; measured (1 thread, 8 groups): K = 1024..1408 and the weight gradient's K = group
// rows ~1000 gain 4-9% over kc = 512, even though the packed A block then exceeds half of L2.
int64_t KBlock(const MicroKernel& mk, int64_t K) {
  const int64_t kmax = std::max<int64_t>(mk.kc, mk.kcMax);
  if (K <= kmax) return std::max<int64_t>(K, 1);
  const int64_t blocks = (K + kmax - 1) / kmax;
  return std::min<int64_t>(kmax, RoundUp((K + blocks - 1) / blocks, 16));
}

// N block for a K block of kc: nc shrinks as kc grows past the kernel's kc, so the packed B block
// (kc×nc) never exceeds the tuned kc·nc floats.
int64_t NBlock(const MicroKernel& mk, int64_t kc) {
  if (kc <= mk.kc) return mk.nc;
  return std::max<int64_t>(mk.nr, static_cast<int64_t>(mk.nc) * mk.kc / kc / mk.nr * mk.nr);
}

// Computes one task with the Goto loop nest: jc (nc) → pc (kc) → ic (mc) → jr (nr) → ir (mr).
// When the task's rows fit one A block (small M: decode, thin groups) every B micro-panel is
// packed right before its use and stays in L1, instead of a whole kc×nc block going out to L2/L3
// and back: there B packing, not arithmetic, is the bottleneck.
void RunTaskBuiltin(const MicroKernel& mk, const Problem& p, const Task& t, Workspace& ws) {
  const int mr = mk.mr, nr = mk.nr;
  if (p.K == 0 || p.alpha == 0.0f) {
    ScaleC(p.C, p.ldc, t.m0, t.m1, t.n0, t.n1, p.beta);
    return;
  }
  const bool fuseB = t.m1 - t.m0 <= mk.mc;
  const int64_t kcP = KBlock(mk, p.K), ncP = NBlock(mk, kcP);
  for (int64_t jc = t.n0; jc < t.n1; jc += ncP) {
    const int64_t nc = std::min<int64_t>(ncP, t.n1 - jc);
    for (int64_t pc = 0; pc < p.K; pc += kcP) {
      const int64_t kc = std::min<int64_t>(kcP, p.K - pc);
      const float beta = pc == 0 ? p.beta : 1.0f;
      if (fuseB) {
        ws.bSrc = nullptr;  // ws.b now holds chunks, not a whole block
        const int64_t mc = t.m1 - t.m0;
        PackA(p.A, t.m0, mc, pc, kc, mr, ws.a, mk.packA);
        const int64_t chunk = 4 * static_cast<int64_t>(nr);  // 4 panels per packed chunk (measured: 2-32 within 5%)
        for (int64_t jf = 0; jf < nc; jf += chunk) {
          const int64_t nf = std::min<int64_t>(chunk, nc - jf);
          PackB(p.B, pc, kc, jc + jf, nf, nr, ws.b, mk.packBT, mk.packBN, std::min<int64_t>(chunk, nc - jf - nf));
          for (int64_t jr = 0; jr < nf; jr += nr) {
            const int64_t nb = std::min<int64_t>(nr, nf - jr);
            for (int64_t ir = 0; ir < mc; ir += mr) {
              Tile(mk, kc, ws.a + ir * kc, ws.b + jr * kc, p.C + (t.m0 + ir) * p.ldc + jc + jf + jr, p.ldc,
                   std::min<int64_t>(mr, mc - ir), nb, p.alpha, beta, ws.tmp);
            }
          }
        }
        continue;
      }
      if (!ws.HoldsB(p.B, pc, kc, jc, nc)) {
        PackB(p.B, pc, kc, jc, nc, nr, ws.b, mk.packBT, mk.packBN);
        ws.SetB(p.B, pc, kc, jc, nc);
      }
      // Rows in A blocks of equal height (a multiple of mr, at most mc): a range of 512 rows runs
      // as 4×140 instead of 3×168 + 8, whose thin last block would sweep all of B for few rows.
      const int64_t rows = t.m1 - t.m0, nBlocks = (rows + mk.mc - 1) / mk.mc;
      const int64_t mcEven = std::min<int64_t>(mk.mc, RoundUp((rows + nBlocks - 1) / nBlocks, mr));
      for (int64_t ic = t.m0; ic < t.m1; ic += mcEven) {
        const int64_t mc = std::min<int64_t>(mcEven, t.m1 - ic);
        PackA(p.A, ic, mc, pc, kc, mr, ws.a, mk.packA);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const int64_t nb = std::min<int64_t>(nr, nc - jr);
          const float* pb = ws.b + jr * kc;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            Tile(mk, kc, ws.a + ir * kc, pb, p.C + (ic + ir) * p.ldc + jc + jr, p.ldc, std::min<int64_t>(mr, mc - ir), nb,
                 p.alpha, beta, ws.tmp);
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Scheduling

double Cost(int64_t m, int64_t n, int64_t k) {
  // Flops plus a small per-task/packing term so empty-K tasks still count.
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(std::max<int64_t>(k, 1)) +
         static_cast<double>(m) * static_cast<double>(n);
}

// Splits one problem into `parts` tasks along N (each thread then re-packs all of A) or along M
// (each re-packs all of B), whichever repeats less packing, at micro-tile granularity. Split
// along M, a problem whose B is more than one packed block (K > kcMax or N > nc) is cut into at
// most `minParts` tasks: a thread's second row range would re-pack every block of B, while with
// one block it reuses the B it already packed (Workspace::HoldsB).
void SplitProblem(int32_t pi, const Problem& p, int64_t parts, int64_t minParts, const MicroKernel& mk,
                  std::vector<Task>& out) {
  if (p.M == 0 || p.N == 0) return;
  const int mr = mk.mr, nr = mk.nr;
  const int64_t nPanels = (p.N + nr - 1) / nr, mStrips = (p.M + mr - 1) / mr;
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, std::max(nPanels, mStrips)));
  const bool splitN = parts > 1 && nPanels >= parts && (p.M <= p.N || mStrips < parts);
  const int64_t units = splitN ? nPanels : mStrips;
  parts = std::min(parts, units);
  if (!splitN && parts > minParts) {
    const int64_t kc = KBlock(mk, p.K);
    if (kc < p.K || NBlock(mk, kc) < p.N) parts = std::max<int64_t>(1, std::min(minParts, units));
  }
  for (int64_t s = 0; s < parts; ++s) {
    const int64_t u0 = units * s / parts, u1 = units * (s + 1) / parts;
    Task t{pi, 0, p.M, 0, p.N, 0.0};
    if (splitN) {
      t.n0 = u0 * nr;
      t.n1 = std::min(p.N, u1 * nr);
    } else {
      t.m0 = u0 * mr;
      t.m1 = std::min(p.M, u1 * mr);
    }
    if (t.m0 >= t.m1 || t.n0 >= t.n1) continue;
    t.cost = Cost(t.m1 - t.m0, t.n1 - t.n0, p.K);
    out.push_back(t);
  }
}

// Below this many flops (~25 µs of one core) a call runs on the calling thread: waking the
// pool's workers costs several µs, more than a smaller GEMM gains from a second core.
constexpr double kParallelMinCost = 2.0 * 128 * 128 * 128;

// A single problem is cut into up to kPiecesPerThread tasks per thread, each of at least
// kMinPieceCost flops (~0.3 ms), handed out dynamically. With one task per thread (the former
// split) a thread that shares its core with another process holds the whole call back: measured
// here with a busy loop on one of 2 cores, a 2-thread 2048×1024×1024 ran at the 1-thread speed
// (165 vs 161 GFLOP/s); with pieces the other thread takes over the slowed thread's share.
constexpr int64_t kPiecesPerThread = 4;
constexpr double kMinPieceCost = 2.0 * 256 * 256 * 512;

// Runs all problems of one call on the engine's pool with the built-in kernel.
// One problem: threads × (1..kPiecesPerThread) tasks. Several: each problem is cut into pieces
// no larger than total / (2·threads). The tasks go out largest first (LPT) through an atomic
// counter.
bool RunBuiltin(Engine* e, const std::vector<Problem>& probs) {
  const MicroKernel& mk = SelectKernel();
  const int T = e->threads;
  double total = 0;
  for (const Problem& p : probs) total += Cost(p.M, p.N, p.K);
  const bool parallel = T > 1 && total >= kParallelMinCost;
  std::vector<Task> tasks;
  tasks.reserve(probs.size() * (parallel ? kPiecesPerThread * T : 1));
  for (size_t i = 0; i < probs.size(); ++i) {
    const Problem& p = probs[i];
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
    SplitProblem(static_cast<int32_t>(i), p, parts, parallel ? T : 1, mk, tasks);
  }
  if (tasks.empty()) return true;
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });

  // Workspace sizes from the largest task.
  int64_t aLen = 0, bLen = 0;
  for (const Task& t : tasks) {
    const int64_t kc = KBlock(mk, probs[t.prob].K);
    aLen = std::max(aLen, RoundUp(std::min<int64_t>(mk.mc, t.m1 - t.m0), mk.mr) * kc);
    bLen = std::max(bLen, RoundUp(std::min<int64_t>(NBlock(mk, kc), t.n1 - t.n0), mk.nr) * kc);
  }
  const int nThreads = parallel ? static_cast<int>(std::min<size_t>(T, tasks.size())) : 1;
  const int64_t tLen = static_cast<int64_t>(mk.mr) * mk.nr;
  if (nThreads == 1) {
    Workspace& ws = ThreadWorkspace();
    if (!ws.Reserve(aLen, bLen, tLen)) return false;
    ws.BeginCall();
    for (const Task& t : tasks) RunTaskBuiltin(mk, probs[t.prob], t, ws);
    return true;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  // run_dynamic: a worker not yet scheduled when the caller has taken all tasks is not waited for.
  e->pool.run_dynamic([&](int tid) {
    if (tid >= nThreads) return;
    Workspace& ws = ThreadWorkspace();
    if (!ws.Reserve(aLen, bLen, tLen)) {
      failed.store(true);
      return;  // the other threads take this thread's share of the tasks
    }
    ws.BeginCall();
    for (;;) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= tasks.size()) break;
      RunTaskBuiltin(mk, probs[tasks[i].prob], tasks[i], ws);
    }
  });
  if (failed.load() && next.load() < tasks.size()) return false;
  return true;
}

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
      ScaleC(p.C, p.ldc, 0, p.M, 0, p.N, p.beta);
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
  return RunBuiltin(e, probs);
}

// A plain (M,N,K) problem over contiguous row-major operands with optional transposes.
Problem Plain(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
              float alpha, float beta) {
  Problem p;
  p.M = M;
  p.N = N;
  p.K = K;
  p.A = transA ? MatView{a, 1, M} : MatView{a, K, 1};
  p.B = transB ? MatView{b, 1, K} : MatView{b, N, 1};
  p.transA = transA;
  p.transB = transB;
  p.C = c;
  p.ldc = N;
  p.alpha = alpha;
  p.beta = beta;
  return p;
}

Napi::Value Done(Napi::Env env, bool ok, const char* kernel) {
  if (!ok) Napi::Error::New(env, std::string(kernel) + ": out of memory for packing buffers").ThrowAsJavaScriptException();
  return env.Undefined();
}

// ---------------------------------------------------------------------------
// N-API entry points (shapes validated in TypeScript)

// gemm(engine, a, b, c, M, N, K, transA, transB, alpha, beta)
Napi::Value GemmFn(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  std::vector<Problem> probs{Plain(Ptr<float>(info[1]), Ptr<float>(info[2]), Ptr<float>(info[3]), I64(info[4]),
                                   I64(info[5]), I64(info[6]), Bool(info[7]), Bool(info[8]),
                                   static_cast<float>(F64(info[9])), static_cast<float>(F64(info[10])))};
  return Done(info.Env(), Run(e, probs), "gemm");
}

// batchedGemm(engine, a, b, c, batch, M, N, K, transA, transB, alpha, beta)
Napi::Value BatchedGemmFn(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  const float* a = Ptr<float>(info[1]);
  const float* b = Ptr<float>(info[2]);
  float* c = Ptr<float>(info[3]);
  const int64_t batch = I64(info[4]), M = I64(info[5]), N = I64(info[6]), K = I64(info[7]);
  const bool ta = Bool(info[8]), tb = Bool(info[9]);
  const float alpha = static_cast<float>(F64(info[10])), beta = static_cast<float>(F64(info[11]));
  std::vector<Problem> probs;
  probs.reserve(batch);
  for (int64_t i = 0; i < batch; ++i) probs.push_back(Plain(a + i * M * K, b + i * K * N, c + i * M * N, M, N, K, ta, tb, alpha, beta));
  return Done(info.Env(), Run(e, probs), "batchedGemm");
}

// groupedGemm(engine, x, w, y, sizes, K, N, transW, beta): y_g = x_g · op(w_g) + beta·y_g
Napi::Value GroupedGemmFn(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  const float* x = Ptr<float>(info[1]);
  const float* w = Ptr<float>(info[2]);
  float* y = Ptr<float>(info[3]);
  const int32_t* sizes = Ptr<int32_t>(info[4]);
  const int64_t E = Len(info[4]), K = I64(info[5]), N = I64(info[6]);
  const bool transW = Bool(info[7]);
  const float beta = static_cast<float>(F64(info[8]));
  std::vector<Problem> probs;
  probs.reserve(E);
  int64_t row = 0;
  for (int64_t g = 0; g < E; ++g) {
    const int64_t m = sizes[g];
    if (m > 0) probs.push_back(Plain(x + row * K, w + g * K * N, y + row * N, m, N, K, false, transW, 1.0f, beta));
    row += m;
  }
  return Done(info.Env(), Run(e, probs), "groupedGemm");
}

// groupedGemmWeightGrad(engine, x, dy, dw, sizes, K, N, transW, beta):
//   dw_g (K,N) = x_gᵀ·dy_g + beta·dw_g, or with transW dw_g (N,K) = dy_gᵀ·x_g + beta·dw_g.
Napi::Value GroupedGemmWeightGradFn(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  const float* x = Ptr<float>(info[1]);
  const float* dy = Ptr<float>(info[2]);
  float* dw = Ptr<float>(info[3]);
  const int32_t* sizes = Ptr<int32_t>(info[4]);
  const int64_t E = Len(info[4]), K = I64(info[5]), N = I64(info[6]);
  const bool transW = Bool(info[7]);
  const float beta = static_cast<float>(F64(info[8]));
  std::vector<Problem> probs;
  probs.reserve(E);
  int64_t row = 0;
  for (int64_t g = 0; g < E; ++g) {
    const int64_t m = sizes[g];
    const float* xg = x + row * K;
    const float* dyg = dy + row * N;
    float* dwg = dw + g * K * N;
    // Zero-size groups stay in the list: K = 0 makes them dw_g = beta·dw_g.
    if (!transW) {
      probs.push_back(Plain(xg, dyg, dwg, K, N, m, true, false, 1.0f, beta));
    } else {
      probs.push_back(Plain(dyg, xg, dwg, N, K, m, true, false, 1.0f, beta));
    }
    row += m;
  }
  return Done(info.Env(), Run(e, probs), "groupedGemmWeightGrad");
}

}  // namespace

// For other native areas (quant_blocks.cc): C (M,N; row stride ldc) = alpha · A (M,K; row stride
// lda) · Bᵀ + beta · C with B stored (N,K), row stride ldb, on the engine's GEMM path.
bool GemmNT(Engine* e, int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, const float* b, int64_t ldb,
            float* c, int64_t ldc, float alpha, float beta) {
  Problem p = Plain(a, b, c, M, N, K, false, true, alpha, beta);
  p.A = MatView{a, lda, 1};
  p.B = MatView{b, 1, ldb};
  p.ldc = ldc;
  return Run(e, std::vector<Problem>{p});
}

void RegisterGemm(Napi::Env env, Napi::Object exports) {
  exports.Set("gemm", Napi::Function::New(env, GemmFn));
  exports.Set("batchedGemm", Napi::Function::New(env, BatchedGemmFn));
  exports.Set("groupedGemm", Napi::Function::New(env, GroupedGemmFn));
  exports.Set("groupedGemmWeightGrad", Napi::Function::New(env, GroupedGemmWeightGradFn));
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
