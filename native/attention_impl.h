// Flash-style causal attention, forward and backward — the ISA-independent body.
//
// What it is: included twice by attention.cc, once under `#pragma GCC target("avx2,fma")`
// (namespace attn_avx2) and once for the baseline ISA (namespace attn_generic); the
// includer defines MOE_ATTN_FMA(a, b, c) = a·b + c for the 8-float vector type v8.
// Everything here is written with GCC vector extensions, so each copy compiles to the
// widest registers its ISA has (ymm for AVX2, pairs of xmm / NEON otherwise).
// What it is not: a standalone header (no include guard, no includes) or a GEMM library.
//
// Layout per work item, "transposed scores" form: a tile holds St = S^T (bc keys × ld
// queries, ld = query tile width rounded up to 8), so per-query softmax statistics are
// vectorised across queries, K/V rows are read straight from the inputs, and the only
// transposes are of the query-side tiles (Q, dO), once per tile.
//
// Forward (per b, h, query tile; online softmax over key tiles, FlashAttention-2):
//   1. QT = scale · Q_tileᵀ; m = −∞, l = 0, O = 0.
//   2. for each key tile overlapping the visible band: St = K_tile · QT; mask on boundary
//      tiles; m' = max(m, colmax St); P = exp(St − m'); l = l·e^(m−m') + colsum P;
//      O = O·e^(m−m') + Pᵀ·V_tile.
//   3. out = O / l, lse = m + log l.
// Backward (FlashAttention-2, D_i = rowsum(dout ⊙ out) precomputed):
//   per (key tile, query tile) pair: St = K·QT, P = exp(St − lse), dPt = V·dOT,
//   dS = P ⊙ (dP − D) · scale; dV += Pᵀ dO, dK += dSᵀ Q, dQ += dS K.
//   Mode "group": one work item per (b, kv head) owns dK, dV of its head and dQ of its
//   query heads — no races, nothing recomputed. Mode "split" (too few groups for the
//   threads): pass A per (b, kv head, key tile) → dK, dV; pass B per (b, head, query
//   tile) → dQ (recomputes S and dP). Both are deterministic for any thread count.

#define MOE_AI inline __attribute__((always_inline))

static MOE_AI v8 ld8(const float* p) { v8 r; __builtin_memcpy(&r, p, sizeof r); return r; }
static MOE_AI void st8(float* p, const v8& x) { __builtin_memcpy(p, &x, sizeof x); }
static MOE_AI v8 splat(float a) { return v8{} + a; }
static MOE_AI v8 vmax(const v8& a, const v8& b) { return a > b ? a : b; }

// exp for a vector (Cephes expf polynomial, ~1 ulp over the used range). Inputs below
// −87.3 (including −∞ from masking) give exactly 0; inputs are ≤ 0 in practice.
static MOE_AI v8 vexp(const v8& x) {
  const v8 lo = splat(-87.3f), hi = splat(88.0f);
  v8 xc = vmax(x, lo);
  xc = xc < hi ? xc : hi;
  v8 n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  v8 r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v8 p = splat(1.9875691500e-4f);
  p = MOE_ATTN_FMA(p, r, splat(1.3981999507e-3f));
  p = MOE_ATTN_FMA(p, r, splat(8.3334519073e-3f));
  p = MOE_ATTN_FMA(p, r, splat(4.1665795894e-2f));
  p = MOE_ATTN_FMA(p, r, splat(1.6666665459e-1f));
  p = MOE_ATTN_FMA(p, r, splat(5.0000001201e-1f));
  p = MOE_ATTN_FMA(p, r * r, r + 1.0f);
  v8i e = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8 res = p * (v8)e;
  return x < lo ? v8{} : res;
}

// C (MR × 8·NV block) (+)= A·B over k < K; A(m, k) = A[m·rsa + k·csa]; B, C row-major.
template <int MR, int NV>
static MOE_AI void Block(int K, const float* A, long rsa, long csa, const float* B, long ldb, float* C, long ldc, bool acc) {
  v8 c[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? ld8(C + r * ldc + 8 * v) : v8{};
  for (int k = 0; k < K; ++k) {
    v8 b[NV];
    for (int v = 0; v < NV; ++v) b[v] = ld8(B + k * ldb + 8 * v);
    for (int r = 0; r < MR; ++r) {
      v8 a = splat(A[r * rsa + k * csa]);
      for (int v = 0; v < NV; ++v) c[r][v] = MOE_ATTN_FMA(a, b[v], c[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) st8(C + r * ldc + 8 * v, c[r][v]);
}

template <int MR>
static MOE_AI void RowPanel(int N, int K, const float* A, long rsa, long csa, const float* B, long ldb, float* C, long ldc, bool acc) {
  int n = 0;
  for (; n + 16 <= N; n += 16) Block<MR, 2>(K, A, rsa, csa, B + n, ldb, C + n, ldc, acc);
  if (n + 8 <= N) {
    Block<MR, 1>(K, A, rsa, csa, B + n, ldb, C + n, ldc, acc);
    n += 8;
  }
  for (; n < N; ++n) {  // scalar tail columns (HS not a multiple of 8)
    for (int r = 0; r < MR; ++r) {
      float s = acc ? C[r * ldc + n] : 0.0f;
      for (int k = 0; k < K; ++k) s += A[r * rsa + k * csa] * B[k * ldb + n];
      C[r * ldc + n] = s;
    }
  }
}

// C (M × N) (+)= A (M × K, strided) · B (K × N, row-major). Tiles are ≤ 48 on M and N.
static void MatMul(int M, int N, int K, const float* A, long rsa, long csa, const float* B, long ldb, float* C, long ldc, bool acc) {
  int m = 0;
  for (; m + 6 <= M; m += 6) RowPanel<6>(N, K, A + m * rsa, rsa, csa, B, ldb, C + m * ldc, ldc, acc);
  for (; m < M; ++m) RowPanel<1>(N, K, A + m * rsa, rsa, csa, B, ldb, C + m * ldc, ldc, acc);
}

static inline int RoundUp8(int x) { return (x + 7) & ~7; }

// Visibility of key position j to query position pos.
static inline bool Visible(int j, int pos, int window) { return j <= pos && (window == 0 || j > pos - window); }

// Tile pair (keys [j0, j0+bc), query positions [p0, p0+br)): 0 fully masked, 1 partial, 2 fully visible.
static inline int PairKind(int j0, int bc, int p0, int br, int window) {
  int jl = j0 + bc - 1, pl = p0 + br - 1;
  if (j0 > pl) return 0;
  if (window > 0 && jl <= p0 - window) return 0;
  if (jl <= p0 && (window == 0 || j0 > pl - window)) return 2;
  return 1;
}

// Sets masked entries of St (bc × ld) to −∞.
static void MaskTile(float* St, int ld, int j0, int bc, int p0, int br, int window) {
  for (int jj = 0; jj < bc; ++jj)
    for (int i = 0; i < br; ++i)
      if (!Visible(j0 + jj, p0 + i, window)) St[jj * ld + i] = -__builtin_inff();
}

// Query-side tile, transposed: dst[d·ld + i] = s · src[i·ldsrc + d] for i < br, 0 for padding.
static void LoadTransposed(float* dst, int ld, const float* src, long ldsrc, int br, int HS, float s) {
  for (int d = 0; d < HS; ++d) {
    float* row = dst + d * ld;
    for (int i = 0; i < br; ++i) row[i] = s * src[i * ldsrc + d];
    for (int i = br; i < ld; ++i) row[i] = 0.0f;
  }
}

static double Forward(ThreadPool& pool, const AttnArgs& a) {
  const int B = a.B, T = a.T, Tk = a.Tk, NH = a.NH, KVH = a.KVH, HS = a.HS, W = a.window;
  const int off = Tk - T, G = NH / KVH;
  const long ldq = (long)NH * HS, ldk = (long)KVH * HS;
  const int nqt = (T + kBR - 1) / kBR;
  const int64_t items = (int64_t)nqt * B * NH;
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> scratchBytes{0};
  pool.run_on_all([&](int) {
    // Per-thread scratch: O(tile · HS + tile²), independent of T and Tk.
    const int LD = RoundUp8(kBR);
    std::vector<float> buf((size_t)HS * LD + (size_t)kBC * LD + (size_t)kBR * HS + 3 * LD);
    scratchBytes += (int64_t)(buf.size() * sizeof(float));
    float* QT = buf.data();
    float* St = QT + (size_t)HS * LD;
    float* O = St + (size_t)kBC * LD;
    float* m = O + (size_t)kBR * HS;
    float* l = m + LD;
    float* alpha = l + LD;
    for (int64_t it; (it = next.fetch_add(1)) < items;) {
      // Heaviest query tiles (last in the sequence) first.
      const int qt = nqt - 1 - (int)(it / ((int64_t)B * NH));
      const int bh = (int)(it % ((int64_t)B * NH));
      const int b = bh / NH, h = bh % NH, g = h / G;
      const int i0 = qt * kBR, br = std::min(kBR, T - i0), ld = RoundUp8(br);
      const int p0 = i0 + off, pl = p0 + br - 1;
      const float* q = a.q + ((size_t)b * T + i0) * ldq + (size_t)h * HS;
      const float* kb = a.k + (size_t)b * Tk * ldk + (size_t)g * HS;
      const float* vb = a.v + (size_t)b * Tk * ldk + (size_t)g * HS;
      LoadTransposed(QT, ld, q, ldq, br, HS, a.scale);
      for (int i = 0; i < ld; ++i) m[i] = -__builtin_inff(), l[i] = 0.0f;
      for (int i = 0; i < br * HS; ++i) O[i] = 0.0f;
      const int jlo = W > 0 ? std::max(0, p0 - W + 1) : 0;
      for (int j0 = jlo / kBC * kBC; j0 <= pl; j0 += kBC) {
        const int bc = std::min(kBC, Tk - j0);
        const int kind = PairKind(j0, bc, p0, br, W);
        if (kind == 0) continue;
        MatMul(bc, ld, HS, kb + j0 * ldk, ldk, 1, QT, ld, St, ld, false);
        if (kind == 1) MaskTile(St, ld, j0, bc, p0, br, W);
        for (int iv = 0; iv < ld; iv += 8) {
          v8 mt = splat(-__builtin_inff());
          for (int jj = 0; jj < bc; ++jj) mt = vmax(mt, ld8(St + jj * ld + iv));
          const v8 mold = ld8(m + iv), mnew = vmax(mold, mt);
          const v8 msafe = mnew == splat(-__builtin_inff()) ? v8{} : mnew;  // row fully masked so far
          const v8 al = vexp(mold - msafe);
          v8 sum{};
          for (int jj = 0; jj < bc; ++jj) {
            v8 p = vexp(ld8(St + jj * ld + iv) - msafe);
            st8(St + jj * ld + iv, p);
            sum += p;
          }
          st8(m + iv, mnew);
          st8(alpha + iv, al);
          st8(l + iv, ld8(l + iv) * al + sum);
        }
        for (int i = 0; i < br; ++i) {
          const float s = alpha[i];
          if (s != 1.0f)
            for (int d = 0; d < HS; ++d) O[i * HS + d] *= s;
        }
        // O (br × HS) += P (br × bc) · V_tile; P(i, j) = St[j·ld + i].
        MatMul(br, HS, bc, St, 1, ld, vb + j0 * ldk, ldk, O, HS, true);
      }
      float* out = a.out + ((size_t)b * T + i0) * ldq + (size_t)h * HS;
      float* lse = a.lse + ((size_t)b * NH + h) * T + i0;
      for (int i = 0; i < br; ++i) {
        const bool any = l[i] > 0.0f;  // always true when causal; guarded anyway
        const float inv = any ? 1.0f / l[i] : 0.0f;
        for (int d = 0; d < HS; ++d) out[i * ldq + d] = O[i * HS + d] * inv;
        lse[i] = any ? m[i] + std::log(l[i]) : -__builtin_inff();
      }
    }
  });
  return (double)scratchBytes.load();
}

// Per-thread backward scratch and the query tile it currently holds.
struct BwdTile {
  std::vector<float> buf;
  float *QT, *dOT, *St, *dPt, *lseT, *DT;
  int ld = 0;
  explicit BwdTile(int HS) {
    const int LD = RoundUp8(kBR);
    buf.resize((size_t)2 * HS * LD + (size_t)2 * kBC * LD + 2 * LD);
    QT = buf.data();
    dOT = QT + (size_t)HS * LD;
    St = dOT + (size_t)HS * LD;
    dPt = St + (size_t)kBC * LD;
    lseT = dPt + (size_t)kBC * LD;
    DT = lseT + LD;
  }
};

struct BwdCtx {
  const AttnArgs& a;
  const float* D;  // (B, NH, T) rowsum(dout ⊙ out)
  int off, G;
  long ldq, ldk;
};

static void LoadQueryTile(const BwdCtx& c, BwdTile& t, int b, int h, int i0, int br) {
  const AttnArgs& a = c.a;
  t.ld = RoundUp8(br);
  const size_t qo = ((size_t)b * a.T + i0) * c.ldq + (size_t)h * a.HS;
  LoadTransposed(t.QT, t.ld, a.q + qo, c.ldq, br, a.HS, a.scale);
  LoadTransposed(t.dOT, t.ld, a.dout + qo, c.ldq, br, a.HS, 1.0f);
  const size_t ro = ((size_t)b * a.NH + h) * a.T + i0;
  for (int i = 0; i < t.ld; ++i) {
    const float L = i < br ? a.lse[ro + i] : 0.0f;
    t.lseT[i] = L == -__builtin_inff() ? __builtin_inff() : L;  // no visible key → P = 0
    t.DT[i] = i < br ? c.D[ro + i] : 0.0f;
  }
}

// One (key tile, query tile) pair; the query tile is already in t.
static void BwdPair(const BwdCtx& c, BwdTile& t, int b, int h, int i0, int br, int j0, int bc, int kind, bool doKV, bool doQ) {
  const AttnArgs& a = c.a;
  const int HS = a.HS, ld = t.ld, g = h / c.G;
  const size_t ko = ((size_t)b * a.Tk + j0) * c.ldk + (size_t)g * HS;
  const size_t qo = ((size_t)b * a.T + i0) * c.ldq + (size_t)h * HS;
  MatMul(bc, ld, HS, a.k + ko, c.ldk, 1, t.QT, ld, t.St, ld, false);    // S^T = K·(scale·Q)^T
  MatMul(bc, ld, HS, a.v + ko, c.ldk, 1, t.dOT, ld, t.dPt, ld, false);  // dP^T = V·dO^T
  if (kind == 1) MaskTile(t.St, ld, j0, bc, i0 + c.off, br, a.window);
  const v8 sc = splat(a.scale);
  for (int jj = 0; jj < bc; ++jj) {
    float* s = t.St + jj * ld;
    float* dp = t.dPt + jj * ld;
    for (int iv = 0; iv < ld; iv += 8) {
      const v8 p = vexp(ld8(s + iv) - ld8(t.lseT + iv));
      st8(s + iv, p);
      st8(dp + iv, p * (ld8(dp + iv) - ld8(t.DT + iv)) * sc);  // dS · scale
    }
  }
  if (doKV) {
    float* dv = a.dv + ko;
    float* dk = a.dk + ko;
    MatMul(bc, HS, br, t.St, ld, 1, a.dout + qo, c.ldq, dv, c.ldk, true);  // dV += P^T dO
    MatMul(bc, HS, br, t.dPt, ld, 1, a.q + qo, c.ldq, dk, c.ldk, true);    // dK += dS^T Q
  }
  if (doQ) MatMul(br, HS, bc, t.dPt, 1, ld, a.k + ko, c.ldk, a.dq + qo, c.ldq, true);  // dQ += dS K
}

// Query tiles that see key tile [j0, j0+bc): query positions [j0, j0+bc−1+window).
static inline void QueryTileRange(const BwdCtx& c, int j0, int bc, int* qlo, int* qhi) {
  const AttnArgs& a = c.a;
  const int ilo = std::max(0, j0 - c.off);
  const int ihi = a.window > 0 ? std::min(a.T - 1, j0 + bc - 2 + a.window - c.off) : a.T - 1;
  *qlo = ilo / kBR;
  *qhi = ihi < ilo ? *qlo - 1 : ihi / kBR;
}

// dK, dV of key tile kt for kv head g (split mode, pass A).
static void BwdKeyTile(const BwdCtx& c, BwdTile& t, int b, int g, int kt) {
  const AttnArgs& a = c.a;
  const int j0 = kt * kBC, bc = std::min(kBC, a.Tk - j0);
  for (int jj = 0; jj < bc; ++jj) {
    const size_t ko = ((size_t)b * a.Tk + j0 + jj) * c.ldk + (size_t)g * a.HS;
    for (int d = 0; d < a.HS; ++d) a.dk[ko + d] = 0.0f, a.dv[ko + d] = 0.0f;
  }
  int qlo, qhi;
  QueryTileRange(c, j0, bc, &qlo, &qhi);
  for (int h = g * c.G; h < (g + 1) * c.G; ++h) {
    for (int qt = qlo; qt <= qhi; ++qt) {
      const int i0 = qt * kBR, br = std::min(kBR, a.T - i0);
      const int kind = PairKind(j0, bc, i0 + c.off, br, a.window);
      if (kind == 0) continue;
      LoadQueryTile(c, t, b, h, i0, br);
      BwdPair(c, t, b, h, i0, br, j0, bc, kind, true, false);
    }
  }
}

static void ZeroQueryRows(const BwdCtx& c, int b, int h, int i0, int n) {
  for (int i = 0; i < n; ++i) {
    float* dq = c.a.dq + ((size_t)b * c.a.T + i0 + i) * c.ldq + (size_t)h * c.a.HS;
    for (int d = 0; d < c.a.HS; ++d) dq[d] = 0.0f;
  }
}

// dQ of query tile qt of head h (and, with doKV, its contributions to dK, dV), sweeping
// the visible key tiles in ascending order.
static void QueryTileSweep(const BwdCtx& c, BwdTile& t, int b, int h, int qt, bool doKV) {
  const AttnArgs& a = c.a;
  const int i0 = qt * kBR, br = std::min(kBR, a.T - i0);
  const int p0 = i0 + c.off, pl = p0 + br - 1;
  ZeroQueryRows(c, b, h, i0, br);
  LoadQueryTile(c, t, b, h, i0, br);
  const int jlo = a.window > 0 ? std::max(0, p0 - a.window + 1) : 0;
  for (int j0 = jlo / kBC * kBC; j0 <= pl; j0 += kBC) {
    const int bc = std::min(kBC, a.Tk - j0);
    const int kind = PairKind(j0, bc, p0, br, a.window);
    if (kind != 0) BwdPair(c, t, b, h, i0, br, j0, bc, kind, doKV, true);
  }
}

static double Backward(ThreadPool& pool, const AttnArgs& a) {
  const int B = a.B, T = a.T, NH = a.NH, KVH = a.KVH, HS = a.HS;
  const long ldq = (long)NH * HS;
  // D (B, NH, T) = rowsum(dout ⊙ out): O(T) memory.
  std::vector<float> D((size_t)B * NH * T);
  pool.parallel_for((int64_t)B * T, [&](int, int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int b = (int)(r / T), i = (int)(r % T);
      for (int h = 0; h < NH; ++h) {
        const size_t o = (size_t)r * ldq + (size_t)h * HS;
        float s = 0.0f;
        for (int d = 0; d < HS; ++d) s += a.dout[o + d] * a.out[o + d];
        D[((size_t)b * NH + h) * T + i] = s;
      }
    }
  });
  const BwdCtx c{a, D.data(), a.Tk - a.T, NH / KVH, ldq, (long)KVH * HS};
  const int nkt = (a.Tk + kBC - 1) / kBC, nqt = (T + kBR - 1) / kBR;
  const int threads = pool.size();
  const int groups = B * KVH;
  std::atomic<int64_t> scratchBytes{(int64_t)(D.size() * sizeof(float))};
  if (threads == 1 || groups % threads == 0 || groups >= 4 * threads) {
    // Mode "group": one item per (b, kv head), fused dK/dV/dQ; each query tile is loaded
    // (transposed) once and swept over its visible key tiles.
    std::atomic<int64_t> next{0};
    pool.run_on_all([&](int) {
      BwdTile t(HS);
      scratchBytes += (int64_t)(t.buf.size() * sizeof(float));
      for (int64_t it; (it = next.fetch_add(1)) < groups;) {
        const int b = (int)(it / KVH), g = (int)(it % KVH);
        for (int j = 0; j < a.Tk; ++j) {
          const size_t ko = ((size_t)b * a.Tk + j) * c.ldk + (size_t)g * HS;
          for (int d = 0; d < HS; ++d) a.dk[ko + d] = 0.0f, a.dv[ko + d] = 0.0f;
        }
        for (int h = g * c.G; h < (g + 1) * c.G; ++h)
          for (int qt = 0; qt < nqt; ++qt) QueryTileSweep(c, t, b, h, qt, true);
      }
    });
  } else {
    // Mode "split": pass A (dK, dV) per key tile, pass B (dQ) per query tile.
    std::atomic<int64_t> nextA{0}, nextB{0};
    const int64_t itemsA = (int64_t)groups * nkt, itemsB = (int64_t)B * NH * nqt;
    pool.run_on_all([&](int) {
      BwdTile t(HS);
      scratchBytes += (int64_t)(t.buf.size() * sizeof(float));
      for (int64_t it; (it = nextA.fetch_add(1)) < itemsA;) {
        const int kt = (int)(it / groups), bg = (int)(it % groups);  // early key tiles (heaviest) first
        BwdKeyTile(c, t, bg / KVH, bg % KVH, kt);
      }
    });
    pool.run_on_all([&](int) {
      BwdTile t(HS);
      for (int64_t it; (it = nextB.fetch_add(1)) < itemsB;) {
        const int qt = nqt - 1 - (int)(it / ((int64_t)B * NH));  // late query tiles (heaviest) first
        const int bh = (int)(it % ((int64_t)B * NH)), b = bh / NH, h = bh % NH;
        QueryTileSweep(c, t, b, h, qt, false);
      }
    });
  }
  return (double)scratchBytes.load();
}

#undef MOE_AI
