// The GEMM driver shared by the built-in f32 GEMM (native/gemm.cc) and the bf16 GEMM
// (native/gemm_bf16.cc): problem and task description, the GotoBLAS/BLIS loop nest over a
// kernel policy (its packing routines and register micro-kernel), per-thread packing buffers,
// the split of a call into tasks, their dynamic hand-out on the engine's pool, and the unpacking
// of the four N-API entry points' arguments (gemm, batchedGemm, groupedGemm,
// groupedGemmWeightGrad share one signature per kind across both precisions).
// Threading: every call becomes a list of independent sub-GEMM tasks (a problem of a
// batch/group × a row or column range of its C); tasks are sorted by cost (largest first) and
// handed out through an atomic counter (ThreadPool::run_dynamic), so uneven groups keep every
// thread busy and a worker the OS has not scheduled by the time the caller is done is not waited
// for. Each thread packs its own A and B blocks (a task owns whole rows or columns of C, so no
// packed buffer is shared and no barrier is needed) and re-uses its packed B when its next task
// is another row range of it.
// Not: a micro-kernel or packing routine (those belong to the policies), nor the BLAS path.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

#include "common.h"

namespace moe {
namespace gemm {

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

// Register tile and cache blocking of one kernel: A block mc×kc (L2), B micro-panel kc×nr (L1),
// B block kc×nc (L3). A problem with K ≤ kcMax runs as one K block (C written once); a larger K is
// cut into equal blocks of at most kcMax, rounded up to a multiple of kRound (see KBlock).
struct Blocking {
  int mr, nr;
  int64_t mc, kc, nc, kcMax, kRound;
};

inline int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// K block for a problem: K itself up to kcMax, else K cut into equal blocks of at most kcMax.
// Fewer K blocks mean fewer read-modify-write passes over C and fewer A/B re-packs; measured (1
// thread, 8 groups): K = 1024..1408 and the weight gradient's K = group rows ~1000 gain 4-9% over
// kc = 512, even though the packed A block then exceeds half of L2.
int64_t KBlock(const Blocking& bk, int64_t K);

// N block for a K block of kc: nc shrinks as kc grows past the tuned kc, so the packed B block
// (kc×nc) never exceeds the tuned kc·nc elements.
int64_t NBlock(const Blocking& bk, int64_t kc);

// C block ← beta · C block (beta == 0 writes zeros without reading C).
void ScaleC(float* C, int64_t ldc, int64_t m0, int64_t m1, int64_t n0, int64_t n1, float beta);

// The tasks of one call on `threads` threads, largest first; *parallel says whether the call is
// large enough to use the pool.
std::vector<Task> PlanTasks(const std::vector<Problem>& probs, int threads, const Blocking& bk, bool* parallel);

// A plain (M,N,K) problem over contiguous row-major operands with optional transposes.
Problem Plain(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K, bool transA, bool transB,
              float alpha, float beta);

// The four entry points, with the same arguments in every precision:
//   Gemm:       (engine, a, b, c, M, N, K, transA, transB, alpha, beta)
//   Batched:    (engine, a, b, c, batch, M, N, K, transA, transB, alpha, beta)
//   Grouped:    (engine, x, w, y, sizes, K, N, transW, beta): y_g = x_g · op(w_g) + beta·y_g
//   WeightGrad: (engine, x, dy, dw, sizes, K, N, transW, beta): dw_g (K,N) = x_gᵀ·dy_g + beta·dw_g,
//               or with transW dw_g (N,K) = dy_gᵀ·x_g + beta·dw_g
enum class Call { Gemm, Batched, Grouped, WeightGrad };
std::vector<Problem> ProblemsFromArgs(Call call, const Napi::CallbackInfo& info);

// undefined, or a thrown JS error when the packing buffers could not be allocated.
Napi::Value Done(Napi::Env env, bool ok, const char* kernel);

// Per-thread packing buffers of element type T, 64-byte aligned, kept by each thread (thread_local,
// one per T) between calls and grown on demand: allocating them per call cost page faults on every
// call (measured ~5% of a 2-thread 512³ GEMM). Released when the thread (an engine's pool worker,
// or the JS thread) exits. Allocation never throws: a failure is reported and the call answers
// with a JS error.
template <class T>
struct Workspace {
  std::unique_ptr<T[]> raw;
  int64_t capacity = 0;
  T* a = nullptr;        // packed A block
  T* b = nullptr;        // packed B block
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
    static_assert(sizeof(T) == sizeof(float), "tmp (floats) is carved from the same buffer");
    const int64_t pad = 16;  // elements = 64 bytes
    const int64_t total = aLen + bLen + tLen + 4 * pad;
    if (total > capacity) {
      bSrc = nullptr;
      raw.reset();
      raw.reset(new (std::nothrow) T[total]);
      capacity = raw ? total : 0;
      if (!raw) return false;
    }
    auto align = [](T* p) { return reinterpret_cast<T*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63)); };
    a = align(raw.get());
    b = align(a + aLen + pad);
    tmp = reinterpret_cast<float*>(align(b + bLen + pad));
    return true;
  }
};

template <class T>
Workspace<T>& ThreadWorkspace() {
  thread_local Workspace<T> ws;
  return ws;
}

// A kernel policy K provides:
//   using Elem;                        packed element type (4 bytes)
//   static constexpr bool kFuseB;      whether small-M tasks pack B panel by panel (below)
//   Blocking blocking;
//   int64_t Depth(int64_t kc) const;   packed elements per micro-panel row for a K block of kc
//   void PackA(const MatView& A, int64_t i0, int64_t mc, int64_t k0, int64_t kc, Elem* out) const;
//     rows [i0, i0+mc), k [k0, k0+kc) → ceil(mc/mr) zero-padded micro-panels of Depth(kc)×mr
//   void PackB(const MatView& B, int64_t k0, int64_t kc, int64_t j0, int64_t nc, Elem* out, int64_t pfCols) const;
//     k [k0, k0+kc), cols [j0, j0+nc) → ceil(nc/nr) zero-padded micro-panels of Depth(kc)×nr;
//     may prefetch the pfCols columns after them (the next chunk the caller packs)
//   void Micro(int64_t kc, const Elem* pa, const Elem* pb, float* c, int64_t ldc, float alpha, float beta) const;
//     one full mr×nr tile: C = alpha · pa·pb + beta · C (beta == 0: C not read)

// One mr×nr tile of C from packed panels; edge tiles (mb < mr or nb < nr) go through tmp.
template <class K>
inline void Tile(const K& k, int64_t kc, const typename K::Elem* pa, const typename K::Elem* pb, float* c, int64_t ldc,
                 int64_t mb, int64_t nb, float alpha, float beta, float* tmp) {
  const Blocking& bk = k.blocking;
  if (mb == bk.mr && nb == bk.nr) {
    k.Micro(kc, pa, pb, c, ldc, alpha, beta);
    return;
  }
  k.Micro(kc, pa, pb, tmp, bk.nr, alpha, 0.0f);
  for (int64_t i = 0; i < mb; ++i) {
    float* ci = c + i * ldc;
    const float* ti = tmp + i * bk.nr;
    if (beta == 0.0f) {
      for (int64_t j = 0; j < nb; ++j) ci[j] = ti[j];
    } else {
      for (int64_t j = 0; j < nb; ++j) ci[j] = ti[j] + beta * ci[j];
    }
  }
}

// Computes one task with the Goto loop nest: jc (nc) → pc (kc) → ic (mc) → jr (nr) → ir (mr).
// With K::kFuseB, when the task's rows fit one A block (small M: decode, thin groups) every B
// micro-panel is packed right before its use and stays in L1, instead of a whole kc×nc block going
// out to L2/L3 and back: there B packing, not arithmetic, is the bottleneck.
template <class K>
void RunTask(const K& k, const Problem& p, const Task& t, Workspace<typename K::Elem>& ws) {
  const Blocking& bk = k.blocking;
  const int mr = bk.mr, nr = bk.nr;
  if (p.K == 0 || p.alpha == 0.0f) {
    ScaleC(p.C, p.ldc, t.m0, t.m1, t.n0, t.n1, p.beta);
    return;
  }
  const int64_t kcP = KBlock(bk, p.K), ncP = NBlock(bk, kcP);
  for (int64_t jc = t.n0; jc < t.n1; jc += ncP) {
    const int64_t nc = std::min<int64_t>(ncP, t.n1 - jc);
    for (int64_t pc = 0; pc < p.K; pc += kcP) {
      const int64_t kc = std::min<int64_t>(kcP, p.K - pc), depth = k.Depth(kc);
      const float beta = pc == 0 ? p.beta : 1.0f;
      if constexpr (K::kFuseB) {
        if (t.m1 - t.m0 <= bk.mc) {
          ws.bSrc = nullptr;  // ws.b now holds chunks, not a whole block
          const int64_t mc = t.m1 - t.m0;
          k.PackA(p.A, t.m0, mc, pc, kc, ws.a);
          const int64_t chunk = 4 * static_cast<int64_t>(nr);  // 4 panels per packed chunk (measured: 2-32 within 5%)
          for (int64_t jf = 0; jf < nc; jf += chunk) {
            const int64_t nf = std::min<int64_t>(chunk, nc - jf);
            k.PackB(p.B, pc, kc, jc + jf, nf, ws.b, std::min<int64_t>(chunk, nc - jf - nf));
            for (int64_t jr = 0; jr < nf; jr += nr) {
              const int64_t nb = std::min<int64_t>(nr, nf - jr);
              for (int64_t ir = 0; ir < mc; ir += mr) {
                Tile(k, kc, ws.a + ir * depth, ws.b + jr * depth, p.C + (t.m0 + ir) * p.ldc + jc + jf + jr, p.ldc,
                     std::min<int64_t>(mr, mc - ir), nb, p.alpha, beta, ws.tmp);
              }
            }
          }
          continue;
        }
      }
      if (!ws.HoldsB(p.B, pc, kc, jc, nc)) {
        k.PackB(p.B, pc, kc, jc, nc, ws.b, 0);
        ws.SetB(p.B, pc, kc, jc, nc);
      }
      // Rows in A blocks of equal height (a multiple of mr, at most mc): a range of 512 rows runs
      // as 4×140 instead of 3×168 + 8, whose thin last block would sweep all of B for few rows.
      const int64_t rows = t.m1 - t.m0, nBlocks = (rows + bk.mc - 1) / bk.mc;
      const int64_t mcEven = std::min<int64_t>(bk.mc, RoundUp((rows + nBlocks - 1) / nBlocks, mr));
      for (int64_t ic = t.m0; ic < t.m1; ic += mcEven) {
        const int64_t mc = std::min<int64_t>(mcEven, t.m1 - ic);
        k.PackA(p.A, ic, mc, pc, kc, ws.a);
        for (int64_t jr = 0; jr < nc; jr += nr) {
          const int64_t nb = std::min<int64_t>(nr, nc - jr);
          const typename K::Elem* pb = ws.b + jr * depth;
          for (int64_t ir = 0; ir < mc; ir += mr) {
            Tile(k, kc, ws.a + ir * depth, pb, p.C + (ic + ir) * p.ldc + jc + jr, p.ldc, std::min<int64_t>(mr, mc - ir),
                 nb, p.alpha, beta, ws.tmp);
          }
        }
      }
    }
  }
}

// Runs all problems of one call on the engine's pool with kernel policy k (tasks from PlanTasks,
// handed out largest first through an atomic counter). False when packing buffers could not be
// allocated for work that no other thread took over.
template <class K>
bool RunTasks(Engine* e, const std::vector<Problem>& probs, const K& k) {
  const Blocking& bk = k.blocking;
  bool parallel = false;
  const std::vector<Task> tasks = PlanTasks(probs, e->threads, bk, &parallel);
  if (tasks.empty()) return true;
  // Workspace sizes from the largest task.
  int64_t aLen = 0, bLen = 0;
  for (const Task& t : tasks) {
    const int64_t kc = KBlock(bk, probs[t.prob].K), depth = k.Depth(kc);
    aLen = std::max(aLen, RoundUp(std::min<int64_t>(bk.mc, t.m1 - t.m0), bk.mr) * depth);
    bLen = std::max(bLen, RoundUp(std::min<int64_t>(NBlock(bk, kc), t.n1 - t.n0), bk.nr) * depth);
  }
  const int nThreads = parallel ? static_cast<int>(std::min<size_t>(e->threads, tasks.size())) : 1;
  const int64_t tLen = static_cast<int64_t>(bk.mr) * bk.nr;
  using Elem = typename K::Elem;
  if (nThreads == 1) {
    Workspace<Elem>& ws = ThreadWorkspace<Elem>();
    if (!ws.Reserve(aLen, bLen, tLen)) return false;
    ws.BeginCall();
    for (const Task& t : tasks) RunTask(k, probs[t.prob], t, ws);
    return true;
  }
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  // run_dynamic: a worker not yet scheduled when the caller has taken all tasks is not waited for.
  e->pool.run_dynamic([&](int tid) {
    if (tid >= nThreads) return;
    Workspace<Elem>& ws = ThreadWorkspace<Elem>();
    if (!ws.Reserve(aLen, bLen, tLen)) {
      failed.store(true);
      return;  // the other threads take this thread's share of the tasks
    }
    ws.BeginCall();
    for (;;) {
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= tasks.size()) break;
      RunTask(k, probs[tasks[i].prob], tasks[i], ws);
    }
  });
  return !(failed.load() && next.load() < tasks.size());
}

}  // namespace gemm
}  // namespace moe
