// Non-template parts of the shared GEMM driver (native/gemm_driver.h): blocking rules, the split
// of a call into tasks, and the unpacking of the entry points' arguments.
#include "gemm_driver.h"

#include <cmath>

namespace moe {
namespace gemm {
namespace {

double Cost(int64_t m, int64_t n, int64_t k) {
  // Flops plus a small per-task/packing term so empty-K tasks still count.
  return 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(std::max<int64_t>(k, 1)) +
         static_cast<double>(m) * static_cast<double>(n);
}

// Splits one problem into `parts` tasks along N or along M at micro-tile granularity, whichever
// packs fewer elements: along N every task packs all of A (parts·M·K) and its columns of B (K·N
// in all); along M the tasks pack A once (M·K) and each thread packs B, once when B is a single
// packed block (a thread's next row range reuses it, Workspace::HoldsB), else once per task.
// Measured (2 threads, 512³ as 4 pieces): along M (B packed twice) 390-410 GFLOP/s against
// 371-394 along N (A packed 4 times), and when the second core is taken by another process the
// caller alone then runs at its 1-thread speed. Split along M, a problem whose B is more than
// one packed block (K > kcMax or N > nc) is cut into at most `minParts` tasks: a thread's
// second row range would re-pack every block of B.
void SplitProblem(int32_t pi, const Problem& p, int64_t parts, int64_t minParts, const Blocking& bk,
                  std::vector<Task>& out) {
  if (p.M == 0 || p.N == 0) return;
  const int mr = bk.mr, nr = bk.nr;
  const int64_t nPanels = (p.N + nr - 1) / nr, mStrips = (p.M + mr - 1) / mr;
  parts = std::max<int64_t>(1, std::min<int64_t>(parts, std::max(nPanels, mStrips)));
  const int64_t kc = KBlock(bk, p.K);
  const bool oneBBlock = kc >= p.K && NBlock(bk, kc) >= p.N;
  bool splitN = parts > 1 && nPanels >= parts && (p.M <= p.N || mStrips < parts);
  if (splitN && mStrips >= parts) {
    const double mk = static_cast<double>(p.M) * p.K, kn = static_cast<double>(p.K) * p.N;
    const double packN = parts * mk + kn, packM = mk + (oneBBlock ? std::min(parts, minParts) : parts) * kn;
    if (packM < packN) splitN = false;
  }
  const int64_t units = splitN ? nPanels : mStrips;
  parts = std::min(parts, units);
  if (!splitN && parts > minParts && !oneBBlock) parts = std::max<int64_t>(1, std::min(minParts, units));
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

}  // namespace

int64_t KBlock(const Blocking& bk, int64_t K) {
  const int64_t kmax = std::max(bk.kc, bk.kcMax);
  if (K <= kmax) return std::max<int64_t>(K, 1);
  const int64_t blocks = (K + kmax - 1) / kmax;
  return std::min<int64_t>(kmax, RoundUp((K + blocks - 1) / blocks, bk.kRound));
}

int64_t NBlock(const Blocking& bk, int64_t kc) {
  if (kc <= bk.kc) return bk.nc;
  return std::max<int64_t>(bk.nr, bk.nc * bk.kc / kc / bk.nr * bk.nr);
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

// One problem: threads × (1..kPiecesPerThread) tasks. Several: each problem is cut into pieces
// no larger than total / (2·threads). Sorted largest first (LPT).
std::vector<Task> PlanTasks(const std::vector<Problem>& probs, int threads, const Blocking& bk, bool* parallel) {
  const int T = threads;
  double total = 0;
  for (const Problem& p : probs) total += Cost(p.M, p.N, p.K);
  *parallel = T > 1 && total >= kParallelMinCost;
  std::vector<Task> tasks;
  tasks.reserve(probs.size() * (*parallel ? kPiecesPerThread * T : 1));
  for (size_t i = 0; i < probs.size(); ++i) {
    const Problem& p = probs[i];
    int64_t parts = 1;
    if (*parallel) {
      if (probs.size() == 1) {
        const double perThread = Cost(p.M, p.N, p.K) / T;
        parts = T * std::max<int64_t>(1, std::min<int64_t>(kPiecesPerThread, static_cast<int64_t>(perThread / kMinPieceCost)));
      } else {
        const double c = Cost(p.M, p.N, p.K), target = total / (2.0 * T);
        parts = static_cast<int64_t>(std::min<double>(2.0 * T, std::ceil(c / target - 1e-9)));
      }
    }
    SplitProblem(static_cast<int32_t>(i), p, parts, *parallel ? T : 1, bk, tasks);
  }
  std::stable_sort(tasks.begin(), tasks.end(), [](const Task& a, const Task& b) { return a.cost > b.cost; });
  return tasks;
}

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

std::vector<Problem> ProblemsFromArgs(Call call, const Napi::CallbackInfo& info) {
  const float* a = Ptr<float>(info[1]);
  const float* b = Ptr<float>(info[2]);
  float* c = Ptr<float>(info[3]);
  std::vector<Problem> probs;
  if (call == Call::Gemm) {
    probs.push_back(Plain(a, b, c, I64(info[4]), I64(info[5]), I64(info[6]), Bool(info[7]), Bool(info[8]),
                          static_cast<float>(F64(info[9])), static_cast<float>(F64(info[10]))));
    return probs;
  }
  if (call == Call::Batched) {
    const int64_t batch = I64(info[4]), M = I64(info[5]), N = I64(info[6]), K = I64(info[7]);
    const bool ta = Bool(info[8]), tb = Bool(info[9]);
    const float alpha = static_cast<float>(F64(info[10])), beta = static_cast<float>(F64(info[11]));
    probs.reserve(batch);
    for (int64_t i = 0; i < batch; ++i) probs.push_back(Plain(a + i * M * K, b + i * K * N, c + i * M * N, M, N, K, ta, tb, alpha, beta));
    return probs;
  }
  // Grouped and WeightGrad: a = x (rows, K), b = w (E, K·N) or dy (rows, N), c = y or dw.
  const int32_t* sizes = Ptr<int32_t>(info[4]);
  const int64_t E = Len(info[4]), K = I64(info[5]), N = I64(info[6]);
  const bool transW = Bool(info[7]);
  const float beta = static_cast<float>(F64(info[8]));
  probs.reserve(E);
  int64_t row = 0;
  for (int64_t g = 0; g < E; ++g) {
    const int64_t m = sizes[g];
    if (call == Call::Grouped) {
      if (m > 0) probs.push_back(Plain(a + row * K, b + g * K * N, c + row * N, m, N, K, false, transW, 1.0f, beta));
    } else {
      const float* xg = a + row * K;
      const float* dyg = b + row * N;
      float* dwg = c + g * K * N;
      // Zero-size groups stay in the list: K = 0 makes them dw_g = beta·dw_g.
      if (!transW) {
        probs.push_back(Plain(xg, dyg, dwg, K, N, m, true, false, 1.0f, beta));
      } else {
        probs.push_back(Plain(dyg, xg, dwg, N, K, m, true, false, 1.0f, beta));
      }
    }
    row += m;
  }
  return probs;
}

Napi::Value Done(Napi::Env env, bool ok, const char* kernel) {
  if (!ok) Napi::Error::New(env, std::string(kernel) + ": out of memory for packing buffers").ThrowAsJavaScriptException();
  return env.Undefined();
}

}  // namespace gemm
}  // namespace moe
