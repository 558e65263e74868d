// Routing primitives for MoE dispatch: top-k per row, stable counting sort, histogram,
// prefix sums, row gather, deterministic row scatter-add and its backward.
// Every kernel gives bitwise the same result at any thread count: work is split so that
// each output element is produced by one thread in a fixed order.
// Not: validating — shapes, index ranges and aliasing were checked in TypeScript.
#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>
#include "common.h"

namespace moe {
namespace {

// Below this many elements of work a kernel runs on the calling thread only.
constexpr int64_t kParallelMin = 1 << 14;

template <class F>
void ForRows(Engine* e, int64_t rows, int64_t workPerRow, F&& f) {
  ParallelRows(e, rows, workPerRow, kParallelMin, f);
}

// ---------------------------------------------------------------------------
// topk

// K largest of one row, descending, ties to the lower index. Small K: insertion into a
// sorted buffer (strict comparisons keep the earlier index first on ties).
void TopKRowSmall(const float* row, int64_t E, int K, float* vals, int32_t* idx) {
  float bv[16] = {};
  int32_t bi[16] = {};
  // 1. The first K elements, insertion-sorted.
  for (int e = 0; e < K; ++e) {
    const float v = row[e];
    int p = e;
    while (p > 0 && bv[p - 1] < v) {
      bv[p] = bv[p - 1];
      bi[p] = bi[p - 1];
      --p;
    }
    bv[p] = v;
    bi[p] = e;
  }
  // 2. The rest: only a value strictly above the current K-th enters (a tie keeps the
  //    earlier index); it sinks past strictly smaller values.
  float thr = bv[K - 1];
  for (int64_t e = K; e < E; ++e) {
    const float v = row[e];
    if (!(v > thr)) continue;
    int p = K - 1;
    while (p > 0 && bv[p - 1] < v) {
      bv[p] = bv[p - 1];
      bi[p] = bi[p - 1];
      --p;
    }
    bv[p] = v;
    bi[p] = static_cast<int32_t>(e);
    thr = bv[K - 1];
  }
  for (int k = 0; k < K; ++k) {
    vals[k] = bv[k];
    idx[k] = bi[k];
  }
}

void TopKRowLarge(const float* row, int64_t E, int64_t K, float* vals, int32_t* idx, std::vector<int32_t>& order) {
  order.resize(E);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + K, order.end(), [row](int32_t a, int32_t b) {
    return row[a] > row[b] || (row[a] == row[b] && a < b);
  });
  for (int64_t k = 0; k < K; ++k) {
    idx[k] = order[k];
    vals[k] = row[order[k]];
  }
}

// topk(engine, values, indices, x, N, E, K)
Napi::Value TopK(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  float* values = Ptr<float>(info[1]);
  int32_t* indices = Ptr<int32_t>(info[2]);
  const float* x = Ptr<float>(info[3]);
  const int64_t N = I64(info[4]), E = I64(info[5]), K = I64(info[6]);
  if (K == 0) return info.Env().Undefined();
  ForRows(eng, N, E, [&](int64_t n0, int64_t n1) {
    std::vector<int32_t> order;
    for (int64_t n = n0; n < n1; ++n) {
      if (K <= 16) TopKRowSmall(x + n * E, E, static_cast<int>(K), values + n * K, indices + n * K);
      else TopKRowLarge(x + n * E, E, K, values + n * K, indices + n * K, order);
    }
  });
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// sortByKey, histogram, cumsum

// Per-chunk counts for a parallel counting pass: counts[t * numKeys + key].
// Chunk t covers keys[n*t/T, n*(t+1)/T) — the same split parallel_for uses.
int ChunkCount(Engine* e, int64_t n) { return (e->threads == 1 || n < 4 * kParallelMin) ? 1 : static_cast<int>(std::min<int64_t>(e->threads, n)); }

void CountChunks(Engine* e, const int32_t* keys, int64_t n, int64_t numKeys, int T, std::vector<int32_t>& counts) {
  counts.assign(static_cast<size_t>(T) * numKeys, 0);
  auto body = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int32_t* c = counts.data() + t * numKeys;
      for (int64_t i = n * t / T, end = n * (t + 1) / T; i < end; ++i) ++c[keys[i]];
    }
  };
  if (T == 1) body(0, 1);
  else e->pool.parallel_for(T, [&](int, int64_t b, int64_t en) { body(b, en); });
}

// sortByKey(engine, perm, keys, numKeys): stable counting sort.
// 1. count keys per chunk; 2. start offset of (key, chunk) = keys before it in key order,
//    then earlier chunks; 3. each chunk scatters its positions in order (stable).
Napi::Value SortByKey(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  int32_t* perm = Ptr<int32_t>(info[1]);
  const int32_t* keys = Ptr<int32_t>(info[2]);
  const int64_t n = Len(info[2]);
  const int64_t numKeys = I64(info[3]);
  if (n == 0) return info.Env().Undefined();
  const int T = ChunkCount(eng, n);
  std::vector<int32_t> counts;
  CountChunks(eng, keys, n, numKeys, T, counts);
  int64_t run = 0;
  for (int64_t k = 0; k < numKeys; ++k) {
    for (int t = 0; t < T; ++t) {
      int32_t& c = counts[static_cast<size_t>(t) * numKeys + k];
      const int32_t here = c;
      c = static_cast<int32_t>(run);
      run += here;
    }
  }
  auto scatter = [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      int32_t* off = counts.data() + t * numKeys;
      for (int64_t i = n * t / T, end = n * (t + 1) / T; i < end; ++i) perm[off[keys[i]]++] = static_cast<int32_t>(i);
    }
  };
  if (T == 1) scatter(0, 1);
  else eng->pool.parallel_for(T, [&](int, int64_t b, int64_t en) { scatter(b, en); });
  return info.Env().Undefined();
}

// histogram(engine, counts, keys, numBins)
Napi::Value Histogram(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  int32_t* out = Ptr<int32_t>(info[1]);
  const int32_t* keys = Ptr<int32_t>(info[2]);
  const int64_t n = Len(info[2]);
  const int64_t numBins = I64(info[3]);
  const int T = ChunkCount(eng, n);
  if (T == 1) {
    std::fill(out, out + numBins, 0);
    for (int64_t i = 0; i < n; ++i) ++out[keys[i]];
    return info.Env().Undefined();
  }
  std::vector<int32_t> counts;
  CountChunks(eng, keys, n, numBins, T, counts);
  for (int64_t b = 0; b < numBins; ++b) {
    int32_t s = 0;
    for (int t = 0; t < T; ++t) s += counts[static_cast<size_t>(t) * numBins + b];
    out[b] = s;
  }
  return info.Env().Undefined();
}

// cumsum(engine, out, x, exclusive); out may be x. Wraps modulo 2^32 like the TS ref.
Napi::Value Cumsum(const Napi::CallbackInfo& info) {
  int32_t* out = Ptr<int32_t>(info[1]);
  const int32_t* x = Ptr<int32_t>(info[2]);
  const int64_t n = Len(info[2]);
  const bool exclusive = Bool(info[3]);
  uint32_t s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t v = static_cast<uint32_t>(x[i]);
    if (exclusive) {
      out[i] = static_cast<int32_t>(s);
      s += v;
    } else {
      s += v;
      out[i] = static_cast<int32_t>(s);
    }
  }
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// gather, scatterAdd, scatterAddBackward

// gather(engine, out, x, idx, N, C): out[i] = x[idx[i]].
Napi::Value Gather(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const int32_t* idx = Ptr<int32_t>(info[3]);
  const int64_t M = Len(info[3]);
  const int64_t C = I64(info[5]);
  if (C == 0) return info.Env().Undefined();
  ForRows(eng, M, C, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) std::memcpy(out + i * C, x + idx[i] * C, sizeof(float) * C);
  });
  return info.Env().Undefined();
}

// scatterAdd(engine, out, x, idx, w|null, N, C): out[idx[i]] += w[i]·x[i].
// Parallel over blocks of 16 columns (one cache line): each thread walks i = 0..M−1 in
// order for its columns, so every out element sums its contributions in increasing i.
Napi::Value ScatterAdd(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const int32_t* idx = Ptr<int32_t>(info[3]);
  const float* w = PtrOrNull<float>(info[4]);
  const int64_t M = Len(info[3]);
  const int64_t C = I64(info[6]);
  constexpr int64_t kBlock = 16;
  const int64_t blocks = (C + kBlock - 1) / kBlock;
  auto body = [&](int64_t b0, int64_t b1) {
    const int64_t c0 = b0 * kBlock, c1 = std::min(C, b1 * kBlock);
    for (int64_t i = 0; i < M; ++i) {
      float* dst = out + static_cast<int64_t>(idx[i]) * C;
      const float* src = x + i * C;
      if (w) {
        const float wi = w[i];
        for (int64_t c = c0; c < c1; ++c) dst[c] += wi * src[c];
      } else {
        for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }
  };
  if (eng->threads == 1 || blocks < 2 || M * C < kParallelMin) body(0, blocks);
  else eng->pool.parallel_for(blocks, [&](int, int64_t b, int64_t en) { body(b, en); });
  return info.Env().Undefined();
}

// scatterAddBackward(engine, dx, dw, dout, x, idx, w, N, C):
// dx[i] = w[i]·dout[idx[i]]; dw[i] = ⟨dout[idx[i]], x[i]⟩ (accumulated in f64).
Napi::Value ScatterAddBackward(const Napi::CallbackInfo& info) {
  Engine* eng = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  float* dw = Ptr<float>(info[2]);
  const float* dout = Ptr<float>(info[3]);
  const float* x = Ptr<float>(info[4]);
  const int32_t* idx = Ptr<int32_t>(info[5]);
  const float* w = Ptr<float>(info[6]);
  const int64_t M = Len(info[5]);
  const int64_t C = I64(info[8]);
  ForRows(eng, M, C + 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* g = dout + static_cast<int64_t>(idx[i]) * C;
      const float* xi = x + i * C;
      float* dxi = dx + i * C;
      const float wi = w[i];
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t c = 0;
      for (; c + 4 <= C; c += 4) {
        s0 += static_cast<double>(g[c]) * xi[c];
        s1 += static_cast<double>(g[c + 1]) * xi[c + 1];
        s2 += static_cast<double>(g[c + 2]) * xi[c + 2];
        s3 += static_cast<double>(g[c + 3]) * xi[c + 3];
      }
      for (; c < C; ++c) s0 += static_cast<double>(g[c]) * xi[c];
      for (c = 0; c < C; ++c) dxi[c] = wi * g[c];
      dw[i] = static_cast<float>((s0 + s1) + (s2 + s3));
    }
  });
  return info.Env().Undefined();
}

}  // namespace

void RegisterRoute(Napi::Env env, Napi::Object exports) {
  exports.Set("topk", Napi::Function::New(env, TopK));
  exports.Set("sortByKey", Napi::Function::New(env, SortByKey));
  exports.Set("histogram", Napi::Function::New(env, Histogram));
  exports.Set("cumsum", Napi::Function::New(env, Cumsum));
  exports.Set("gather", Napi::Function::New(env, Gather));
  exports.Set("scatterAdd", Napi::Function::New(env, ScatterAdd));
  exports.Set("scatterAddBackward", Napi::Function::New(env, ScatterAddBackward));
}

}  // namespace moe
