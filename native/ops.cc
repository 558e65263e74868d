// Native ops kernels: embedding, RMSNorm, LayerNorm, SiLU, GELU, fused SwiGLU,
// elementwise, bias, softmax / log-softmax, fused cross-entropy, reductions, AdamW.
//
// What it is: f32 storage, threaded over rows (or, for reductions across rows, over
// columns) with the engine pool. Row reductions (norm statistics, softmax sums, lse)
// accumulate in double with a fixed number of interleaved partial sums, so results
// are within ~1e-6 of the f64 reference and never depend on the thread count: every
// output element is computed by exactly one thread in an order fixed by the shapes.
// Whole-array reductions (sum, sumSquares, max) use fixed 8192-element blocks whose
// partials are combined in block order — also independent of the thread count.
// What it is not: a validator (TypeScript checked every shape and alias), or
// hand-vectorised (the loops are written so -O3 can vectorise them; they are memory
// bound except for exp/erf).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common.h"

// We never read FP exception flags; without this GCC will not if-convert float selects
// (clamps in ExpF), so the exp/sigmoid loops would stay scalar. Values are unchanged:
// it permits no reassociation.
#pragma GCC optimize("no-trapping-math")

namespace moe {
namespace {

// Below this many elements of work a call stays on the calling thread.
constexpr int64_t kGrain = 16384;
// Block size of whole-array reductions (fixed: results must not depend on threads).
constexpr int64_t kBlock = 8192;

// f(begin, end) over [0, rows), split across the pool when rows·rowCost is large.
template <class F>
void ParRows(Engine* e, int64_t rows, int64_t rowCost, const F& f) {
  ParallelRows(e, rows, rowCost, kGrain, f);
}

// Fixed-order double sums with four interleaved partials (vectorisable, deterministic).
inline float BitsToFloat(int32_t b) {
  float f;
  std::memcpy(&f, &b, sizeof f);
  return f;
}

inline double SumD(const float* x, int64_t n) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += x[i];
    a1 += x[i + 1];
    a2 += x[i + 2];
    a3 += x[i + 3];
  }
  for (; i < n; ++i) a0 += x[i];
  return (a0 + a1) + (a2 + a3);
}
inline double SumSqD(const float* x, int64_t n) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += double(x[i]) * x[i];
    a1 += double(x[i + 1]) * x[i + 1];
    a2 += double(x[i + 2]) * x[i + 2];
    a3 += double(x[i + 3]) * x[i + 3];
  }
  for (; i < n; ++i) a0 += double(x[i]) * x[i];
  return (a0 + a1) + (a2 + a3);
}
inline double DotD(const float* x, const float* y, int64_t n) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a0 += double(x[i]) * y[i];
    a1 += double(x[i + 1]) * y[i + 1];
    a2 += double(x[i + 2]) * y[i + 2];
    a3 += double(x[i + 3]) * y[i + 3];
  }
  for (; i < n; ++i) a0 += double(x[i]) * y[i];
  return (a0 + a1) + (a2 + a3);
}
inline float MaxF(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// e^x in f32 without a libm call, so loops around it vectorise (Cephes expf:
// x = n·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial in r, 2ⁿ built from exponent bits;
// max relative error ~2e-7). x < −87.34 gives 0 (so −Inf → 0), x > 88.72 gives +Inf
// (between 88.38 and 88.72 it saturates near 2.4e38); NaN stays NaN.
inline float ExpF(float x) {
  float xc = x < -87.33654f ? -87.33654f : x;  // value selects (not std::min/max) so GCC if-converts
  xc = xc > 88.37626f ? 88.37626f : xc;
  // Round-to-nearest by the 1.5·2²³ trick (plain SSE2, no roundps needed).
  const float big = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + big) - big;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  // 2ⁿ in two halves so n = 128 (x near 88.37) does not overflow the exponent field.
  const int32_t ni = static_cast<int32_t>(n);
  const int32_t h = ni >> 1;
  const float s1 = BitsToFloat((h + 127) << 23), s2 = BitsToFloat((ni - h + 127) << 23);
  const float v = p * s1 * s2;
  const float hi = x > 88.72283f ? std::numeric_limits<float>::infinity() : v;
  return x < -87.33654f ? 0.0f : hi;
}

// log Σ exp(x) of one row, in double (max-shifted); exps computed in vectorisable chunks.
inline double RowLse(const float* x, int64_t V) {
  const float m = MaxF(x, V);
  if (m == -std::numeric_limits<float>::infinity()) return -std::numeric_limits<double>::infinity();
  constexpr int64_t kChunk = 512;
  float tmp[kChunk];
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  for (int64_t j0 = 0; j0 < V; j0 += kChunk) {
    const int64_t len = std::min(kChunk, V - j0);
    for (int64_t j = 0; j < len; ++j) tmp[j] = ExpF(x[j0 + j] - m);
    int64_t j = 0;
    for (; j + 4 <= len; j += 4) {
      a0 += tmp[j];
      a1 += tmp[j + 1];
      a2 += tmp[j + 2];
      a3 += tmp[j + 3];
    }
    for (; j < len; ++j) a0 += tmp[j];
  }
  return double(m) + std::log((a0 + a1) + (a2 + a3));
}

inline float Sigmoid(float x) { return 1.0f / (1.0f + ExpF(-x)); }

constexpr float kSqrt1_2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kGeluK = 0.79788456080286536f;  // √(2/π)
constexpr float kGeluC = 0.044715f;

// Φ(x): erfc in the left tail avoids 1 + erf(x) cancelling.
inline float NormCdf(float x) {
  return x < 0 ? 0.5f * std::erfc(-x * kSqrt1_2) : 0.5f * (1.0f + std::erf(x * kSqrt1_2));
}

// ---------------------------------------------------------------------------
// Embedding

// embeddingForward(e, out, ids, wte, N, C)
void EmbeddingForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const int32_t* ids = Ptr<int32_t>(info[2]);
  const float* wte = Ptr<float>(info[3]);
  const int64_t N = I64(info[4]), C = I64(info[5]);
  ParRows(e, N, C, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) std::memcpy(out + n * C, wte + int64_t(ids[n]) * C, sizeof(float) * C);
  });
}

// embeddingBackward(e, dwte, dout, ids, N, C): parallel over columns; each column sums rows in order.
void EmbeddingBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dwte = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const int32_t* ids = Ptr<int32_t>(info[3]);
  const int64_t N = I64(info[4]), C = I64(info[5]);
  ParRows(e, C, N, [&](int64_t c0, int64_t c1) {
    for (int64_t n = 0; n < N; ++n) {
      float* dst = dwte + int64_t(ids[n]) * C;
      const float* src = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) dst[c] += src[c];
    }
  });
}

// ---------------------------------------------------------------------------
// RMSNorm / LayerNorm

// rmsnormForward(e, out, rstd, x, w, N, C, eps)
void RmsnormForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  float* rstd = Ptr<float>(info[2]);
  const float* x = Ptr<float>(info[3]);
  const float* w = Ptr<float>(info[4]);
  const int64_t N = I64(info[5]), C = I64(info[6]);
  const double eps = F64(info[7]);
  ParRows(e, N, C, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* xr = x + n * C;
      float* o = out + n * C;
      const double r = 1.0 / std::sqrt(SumSqD(xr, C) / double(C) + eps);
      for (int64_t c = 0; c < C; ++c) o[c] = float(double(xr[c]) * r * w[c]);
      rstd[n] = float(r);
    }
  });
}

// rmsnormBackward(e, dx, dw, dout, x, w, rstd, N, C)
void RmsnormBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  float* dw = Ptr<float>(info[2]);
  const float* dout = Ptr<float>(info[3]);
  const float* x = Ptr<float>(info[4]);
  const float* w = Ptr<float>(info[5]);
  const float* rstd = Ptr<float>(info[6]);
  const int64_t N = I64(info[7]), C = I64(info[8]);
  // dx = r·(dout⊙w − x·r·mean(dout⊙w⊙x·r)), per row.
  ParRows(e, N, C, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* d = dout + n * C;
      const float* xr = x + n * C;
      float* g = dx + n * C;
      const double r = rstd[n];
      double a0 = 0, a1 = 0;
      int64_t c = 0;
      for (; c + 2 <= C; c += 2) {
        a0 += double(d[c]) * w[c] * xr[c];
        a1 += double(d[c + 1]) * w[c + 1] * xr[c + 1];
      }
      for (; c < C; ++c) a0 += double(d[c]) * w[c] * xr[c];
      const double k = r * r * r * (a0 + a1) / double(C);
      for (c = 0; c < C; ++c) g[c] = float(r * double(d[c]) * w[c] - double(xr[c]) * k);
    }
  });
  // dw += Σ_n dout⊙x·r, per column in row order.
  ParRows(e, C, N, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(c1 - c0, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const float* d = dout + n * C;
      const float* xr = x + n * C;
      const double r = rstd[n];
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(d[c]) * (double(xr[c]) * r);
    }
    for (int64_t c = c0; c < c1; ++c) dw[c] = float(double(dw[c]) + acc[c - c0]);
  });
}

// layernormForward(e, out, mean, rstd, x, w, b, N, C, eps)
void LayernormForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  float* mean = Ptr<float>(info[2]);
  float* rstd = Ptr<float>(info[3]);
  const float* x = Ptr<float>(info[4]);
  const float* w = Ptr<float>(info[5]);
  const float* bias = Ptr<float>(info[6]);
  const int64_t N = I64(info[7]), C = I64(info[8]);
  const double eps = F64(info[9]);
  ParRows(e, N, C, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* xr = x + n * C;
      float* o = out + n * C;
      const double mu = SumD(xr, C) / double(C);
      double v0 = 0, v1 = 0;
      int64_t c = 0;
      for (; c + 2 <= C; c += 2) {
        const double d0 = xr[c] - mu, d1 = xr[c + 1] - mu;
        v0 += d0 * d0;
        v1 += d1 * d1;
      }
      for (; c < C; ++c) v0 += (xr[c] - mu) * (xr[c] - mu);
      const double r = 1.0 / std::sqrt((v0 + v1) / double(C) + eps);
      for (c = 0; c < C; ++c) o[c] = float((xr[c] - mu) * r * w[c] + bias[c]);
      mean[n] = float(mu);
      rstd[n] = float(r);
    }
  });
}

// layernormBackward(e, dx, dw, db, dout, x, w, mean, rstd, N, C)
void LayernormBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  float* dw = Ptr<float>(info[2]);
  float* db = Ptr<float>(info[3]);
  const float* dout = Ptr<float>(info[4]);
  const float* x = Ptr<float>(info[5]);
  const float* w = Ptr<float>(info[6]);
  const float* mean = Ptr<float>(info[7]);
  const float* rstd = Ptr<float>(info[8]);
  const int64_t N = I64(info[9]), C = I64(info[10]);
  // dx = (dout⊙w − mean(dout⊙w) − norm·mean(dout⊙w⊙norm))·r, per row.
  ParRows(e, N, C, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* d = dout + n * C;
      const float* xr = x + n * C;
      float* g = dx + n * C;
      const double mu = mean[n], r = rstd[n];
      double s0 = 0, s1 = 0, t0 = 0, t1 = 0;
      int64_t c = 0;
      for (; c + 2 <= C; c += 2) {
        const double dn0 = double(d[c]) * w[c], dn1 = double(d[c + 1]) * w[c + 1];
        s0 += dn0;
        s1 += dn1;
        t0 += dn0 * ((xr[c] - mu) * r);
        t1 += dn1 * ((xr[c + 1] - mu) * r);
      }
      for (; c < C; ++c) {
        const double dn = double(d[c]) * w[c];
        s0 += dn;
        t0 += dn * ((xr[c] - mu) * r);
      }
      const double dmean = (s0 + s1) / double(C), dnm = (t0 + t1) / double(C);
      for (c = 0; c < C; ++c) g[c] = float((double(d[c]) * w[c] - dmean - (xr[c] - mu) * r * dnm) * r);
    }
  });
  // dw += Σ_n dout⊙norm, db += Σ_n dout, per column in row order.
  ParRows(e, C, N, [&](int64_t c0, int64_t c1) {
    std::vector<double> aw(c1 - c0, 0.0), ab(c1 - c0, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const float* d = dout + n * C;
      const float* xr = x + n * C;
      const double mu = mean[n], r = rstd[n];
      for (int64_t c = c0; c < c1; ++c) {
        aw[c - c0] += double(d[c]) * ((xr[c] - mu) * r);
        ab[c - c0] += d[c];
      }
    }
    for (int64_t c = c0; c < c1; ++c) {
      dw[c] = float(double(dw[c]) + aw[c - c0]);
      db[c] = float(double(db[c]) + ab[c - c0]);
    }
  });
}

// ---------------------------------------------------------------------------
// Activations

// siluForward(e, out, x)
void SiluForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  ParRows(e, Len(info[2]), 4, [&](int64_t b, int64_t en) {
    for (int64_t i = b; i < en; ++i) out[i] = x[i] * Sigmoid(x[i]);
  });
}

// siluBackward(e, dx, dout, x)
void SiluBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const float* x = Ptr<float>(info[3]);
  ParRows(e, Len(info[3]), 4, [&](int64_t b, int64_t en) {
    for (int64_t i = b; i < en; ++i) {
      const float s = Sigmoid(x[i]);
      dx[i] = dout[i] * (s * (1.0f + x[i] * (1.0f - s)));
    }
  });
}

// geluForward(e, out, x, tanh: boolean)
void GeluForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const bool approxTanh = Bool(info[3]);
  // tanh form as x·σ(2u), u = k(x + c x³): 0.5(1 + tanh u) = σ(2u) without the 1 + tanh cancellation.
  ParRows(e, Len(info[2]), 8, [&](int64_t b, int64_t en) {
    if (approxTanh) {
      for (int64_t i = b; i < en; ++i) {
        const float v = x[i];
        out[i] = v * Sigmoid(2.0f * kGeluK * (v + kGeluC * v * v * v));
      }
    } else {
      for (int64_t i = b; i < en; ++i) out[i] = x[i] * NormCdf(x[i]);
    }
  });
}

// geluBackward(e, dx, dout, x, tanh: boolean)
void GeluBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const float* x = Ptr<float>(info[3]);
  const bool approxTanh = Bool(info[4]);
  // tanh form: d/dx = σ(2u) + 2x·σ(2u)(1 − σ(2u))·u'(x), since 1 − tanh²u = 4σ(2u)(1 − σ(2u)).
  ParRows(e, Len(info[3]), 8, [&](int64_t b, int64_t en) {
    if (approxTanh) {
      for (int64_t i = b; i < en; ++i) {
        const float v = x[i];
        const float s = Sigmoid(2.0f * kGeluK * (v + kGeluC * v * v * v));
        dx[i] = dout[i] * (s + 2.0f * v * s * (1.0f - s) * kGeluK * (1.0f + 3.0f * kGeluC * v * v));
      }
    } else {
      for (int64_t i = b; i < en; ++i) {
        const float v = x[i];
        dx[i] = dout[i] * (NormCdf(v) + v * kInvSqrt2Pi * ExpF(-0.5f * v * v));
      }
    }
  });
}

// The SwiGLU row loops dominate the non-GEMM time of an MoE layer; they are compiled for
// AVX-512 and AVX2 as well as the baseline and picked at load time (GCC target_clones/ifunc).
#define MOE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

MOE_CLONES void SwigluRowForward(float* o, const float* g, const float* u, int64_t F) {
  for (int64_t f = 0; f < F; ++f) o[f] = g[f] * Sigmoid(g[f]) * u[f];
}

MOE_CLONES void SwigluRowBackward(float* dg, float* du, const float* d, const float* g, const float* u, int64_t F) {
  for (int64_t f = 0; f < F; ++f) {
    const float s = Sigmoid(g[f]);
    dg[f] = d[f] * u[f] * (s * (1.0f + g[f] * (1.0f - s)));
    du[f] = d[f] * (g[f] * s);
  }
}

// swigluForward(e, out, gu, N, F)
void SwigluForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* gu = Ptr<float>(info[2]);
  const int64_t N = I64(info[3]), F = I64(info[4]);
  ParRows(e, N, F * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* g = gu + n * 2 * F;
      SwigluRowForward(out + n * F, g, g + F, F);
    }
  });
}

// swigluBackward(e, dgu, dout, gu, N, F)
void SwigluBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dgu = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const float* gu = Ptr<float>(info[3]);
  const int64_t N = I64(info[4]), F = I64(info[5]);
  ParRows(e, N, F * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* g = gu + n * 2 * F;
      float* dg = dgu + n * 2 * F;
      SwigluRowBackward(dg, dg + F, dout + n * F, g, g + F, F);
    }
  });
}

// ---------------------------------------------------------------------------
// Elementwise and bias

// add(e, out, a, b)
void Add(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* a = Ptr<float>(info[2]);
  const float* b = Ptr<float>(info[3]);
  ParRows(e, Len(info[1]), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = a[i] + b[i];
  });
}

// axpy(e, y, x, alpha): y += alpha·x with alpha kept in double.
void Axpy(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* y = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const double alpha = F64(info[3]);
  ParRows(e, Len(info[1]), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) y[i] = float(y[i] + alpha * x[i]);
  });
}

// scale(e, out, x, alpha)
void Scale(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const double alpha = F64(info[3]);
  ParRows(e, Len(info[1]), 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) out[i] = float(x[i] * alpha);
  });
}

// biasAddForward(e, x, bias, N, C)
void BiasAddForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* x = Ptr<float>(info[1]);
  const float* bias = Ptr<float>(info[2]);
  const int64_t N = I64(info[3]), C = I64(info[4]);
  ParRows(e, N, C, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      float* xr = x + n * C;
      for (int64_t c = 0; c < C; ++c) xr[c] += bias[c];
    }
  });
}

// biasAddBackward(e, dbias, dout, N, C): per column in row order.
void BiasAddBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dbias = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const int64_t N = I64(info[3]), C = I64(info[4]);
  ParRows(e, C, N, [&](int64_t c0, int64_t c1) {
    std::vector<double> acc(c1 - c0, 0.0);
    for (int64_t n = 0; n < N; ++n) {
      const float* d = dout + n * C;
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += d[c];
    }
    for (int64_t c = c0; c < c1; ++c) dbias[c] = float(double(dbias[c]) + acc[c - c0]);
  });
}

// ---------------------------------------------------------------------------
// Softmax family

// softmaxForward(e, out, x, N, V); out may be x.
void SoftmaxForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const int64_t N = I64(info[3]), V = I64(info[4]);
  ParRows(e, N, V * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* xr = x + n * V;
      float* o = out + n * V;
      const float m = MaxF(xr, V);
      for (int64_t j = 0; j < V; ++j) o[j] = ExpF(xr[j] - m);
      const double s = SumD(o, V);
      const float inv = float(1.0 / s);
      for (int64_t j = 0; j < V; ++j) o[j] *= inv;
    }
  });
}

// softmaxBackward(e, dx, dout, out, N, V)
void SoftmaxBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const float* out = Ptr<float>(info[3]);
  const int64_t N = I64(info[4]), V = I64(info[5]);
  ParRows(e, N, V, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* d = dout + n * V;
      const float* y = out + n * V;
      float* g = dx + n * V;
      const double s = DotD(d, y, V);
      for (int64_t j = 0; j < V; ++j) g[j] = float(double(y[j]) * (double(d[j]) - s));
    }
  });
}

// logSoftmaxForward(e, out, x, N, V)
void LogSoftmaxForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const int64_t N = I64(info[3]), V = I64(info[4]);
  ParRows(e, N, V * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* xr = x + n * V;
      float* o = out + n * V;
      const double lse = RowLse(xr, V);
      for (int64_t j = 0; j < V; ++j) o[j] = float(double(xr[j]) - lse);
    }
  });
}

// logSoftmaxBackward(e, dx, dout, out, N, V)
void LogSoftmaxBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dx = Ptr<float>(info[1]);
  const float* dout = Ptr<float>(info[2]);
  const float* out = Ptr<float>(info[3]);
  const int64_t N = I64(info[4]), V = I64(info[5]);
  ParRows(e, N, V * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* d = dout + n * V;
      const float* y = out + n * V;
      float* g = dx + n * V;
      const double s = SumD(d, V);
      for (int64_t j = 0; j < V; ++j) g[j] = float(double(d[j]) - double(ExpF(y[j])) * s);
    }
  });
}

// crossEntropyForward(e, losses, lse, logits, targets, N, V, ignoreIndex)
void CrossEntropyForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* losses = Ptr<float>(info[1]);
  float* lse = Ptr<float>(info[2]);
  const float* logits = Ptr<float>(info[3]);
  const int32_t* targets = Ptr<int32_t>(info[4]);
  const int64_t N = I64(info[5]), V = I64(info[6]);
  const int32_t ignore = I32(info[7]);
  ParRows(e, N, V * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      const float* xr = logits + n * V;
      const double l = RowLse(xr, V);
      const int32_t t = targets[n];
      lse[n] = float(l);
      losses[n] = t == ignore ? 0.0f : float(l - double(xr[t]));
    }
  });
}

// crossEntropyBackward(e, dlogits, logits, lse, targets, dlosses, N, V, ignoreIndex); dlogits may be logits.
void CrossEntropyBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* dl = Ptr<float>(info[1]);
  const float* logits = Ptr<float>(info[2]);
  const float* lse = Ptr<float>(info[3]);
  const int32_t* targets = Ptr<int32_t>(info[4]);
  const float* dlosses = Ptr<float>(info[5]);
  const int64_t N = I64(info[6]), V = I64(info[7]);
  const int32_t ignore = I32(info[8]);
  ParRows(e, N, V * 4, [&](int64_t b, int64_t en) {
    for (int64_t n = b; n < en; ++n) {
      float* g = dl + n * V;
      const int32_t t = targets[n];
      if (t == ignore) {
        std::fill(g, g + V, 0.0f);
        continue;
      }
      const float* xr = logits + n * V;
      const float l = lse[n], d = dlosses[n];
      const float pt = ExpF(xr[t] - l);  // read before g (possibly xr) is overwritten
      for (int64_t j = 0; j < V; ++j) g[j] = ExpF(xr[j] - l) * d;
      g[t] = (pt - 1.0f) * d;
    }
  });
}

// ---------------------------------------------------------------------------
// Whole-array reductions: fixed blocks, partials combined in block order.

template <class BlockFn, class Combine>
double Reduce(Engine* e, const float* x, int64_t n, double init, const BlockFn& block, const Combine& combine) {
  const int64_t nb = (n + kBlock - 1) / kBlock;
  std::vector<double> part(nb);
  ParRows(e, nb, kBlock, [&](int64_t b0, int64_t b1) {
    for (int64_t bi = b0; bi < b1; ++bi) {
      const int64_t s = bi * kBlock;
      part[bi] = block(x + s, std::min(kBlock, n - s));
    }
  });
  double r = init;
  for (int64_t bi = 0; bi < nb; ++bi) r = combine(r, part[bi]);
  return r;
}

Napi::Value Sum(const Napi::CallbackInfo& info) {
  const double r = Reduce(GetEngine(info), Ptr<float>(info[1]), Len(info[1]), 0.0, SumD,
                          [](double a, double b) { return a + b; });
  return Napi::Number::New(info.Env(), r);
}

Napi::Value SumSquares(const Napi::CallbackInfo& info) {
  const double r = Reduce(GetEngine(info), Ptr<float>(info[1]), Len(info[1]), 0.0, SumSqD,
                          [](double a, double b) { return a + b; });
  return Napi::Number::New(info.Env(), r);
}

Napi::Value Max(const Napi::CallbackInfo& info) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  auto block = [nan](const float* x, int64_t n) -> double {
    bool isNan = false;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < n; ++i) {
      isNan |= x[i] != x[i];
      m = x[i] > m ? x[i] : m;
    }
    return isNan ? nan : double(m);
  };
  auto combine = [](double a, double b) { return (a != a || b != b) ? std::numeric_limits<double>::quiet_NaN() : (b > a ? b : a); };
  const double r = Reduce(GetEngine(info), Ptr<float>(info[1]), Len(info[1]), -std::numeric_limits<double>::infinity(), block, combine);
  return Napi::Number::New(info.Env(), r);
}

// ---------------------------------------------------------------------------
// adamw(e, param, grad, m, v, lr, beta1, beta2, eps, weightDecay, step)

// The update loop (double math, memory bound) is cloned for AVX-512 and AVX2 like the SwiGLU rows.
MOE_CLONES void AdamWRange(float* p, const float* g, float* m, float* v, int64_t i0, int64_t i1, double lr, double b1, double b2,
                           double eps, double wd, double bc1, double bc2) {
  for (int64_t i = i0; i < i1; ++i) {
    const double gi = g[i];
    const double mi = b1 * m[i] + (1.0 - b1) * gi;
    const double vi = b2 * v[i] + (1.0 - b2) * gi * gi;
    m[i] = float(mi);
    v[i] = float(vi);
    const double pi = p[i];
    p[i] = float(pi - lr * ((mi / bc1) / (std::sqrt(vi / bc2) + eps) + wd * pi));
  }
}

void AdamW(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* p = Ptr<float>(info[1]);
  const float* g = Ptr<float>(info[2]);
  float* m = Ptr<float>(info[3]);
  float* v = Ptr<float>(info[4]);
  const double lr = F64(info[5]), b1 = F64(info[6]), b2 = F64(info[7]), eps = F64(info[8]), wd = F64(info[9]);
  const double step = F64(info[10]);
  const double bc1 = 1.0 - std::pow(b1, step), bc2 = 1.0 - std::pow(b2, step);
  ParRows(e, Len(info[1]), 8, [&](int64_t i0, int64_t i1) { AdamWRange(p, g, m, v, i0, i1, lr, b1, b2, eps, wd, bc1, bc2); });
}

}  // namespace

void RegisterOps(Napi::Env env, Napi::Object exports) {
  auto reg = [&](const char* name, Napi::Function::Callback fn) { exports.Set(name, Napi::Function::New(env, fn, name)); };
  reg("embeddingForward", Void<EmbeddingForward>);
  reg("embeddingBackward", Void<EmbeddingBackward>);
  reg("rmsnormForward", Void<RmsnormForward>);
  reg("rmsnormBackward", Void<RmsnormBackward>);
  reg("layernormForward", Void<LayernormForward>);
  reg("layernormBackward", Void<LayernormBackward>);
  reg("siluForward", Void<SiluForward>);
  reg("siluBackward", Void<SiluBackward>);
  reg("geluForward", Void<GeluForward>);
  reg("geluBackward", Void<GeluBackward>);
  reg("swigluForward", Void<SwigluForward>);
  reg("swigluBackward", Void<SwigluBackward>);
  reg("add", Void<Add>);
  reg("axpy", Void<Axpy>);
  reg("scale", Void<Scale>);
  reg("biasAddForward", Void<BiasAddForward>);
  reg("biasAddBackward", Void<BiasAddBackward>);
  reg("softmaxForward", Void<SoftmaxForward>);
  reg("softmaxBackward", Void<SoftmaxBackward>);
  reg("logSoftmaxForward", Void<LogSoftmaxForward>);
  reg("logSoftmaxBackward", Void<LogSoftmaxBackward>);
  reg("crossEntropyForward", Void<CrossEntropyForward>);
  reg("crossEntropyBackward", Void<CrossEntropyBackward>);
  reg("sum", Sum);
  reg("max", Max);
  reg("sumSquares", SumSquares);
  reg("adamw", Void<AdamW>);
}

}  // namespace moe
