// Paged attention over a block-table KV cache — the ISA-independent body.
//
// What it is: included three times by paged_attention.cc (baseline, AVX2+FMA, AVX-512F),
// each time with VW (lanes), the vector types vf / vi / vu16 / vu32 of VW lanes and
// MOE_PA_FMA(a, b, c) = a·b + c and the horizontal reductions hsum, hmax and hsum4 (four
// vectors' sums stored to out[0..3]) defined. Written with GCC vector extensions, so each copy
// uses the widest registers of its ISA. Keys/values are read as f32 or as bf16 codes
// widened in registers (T = float or uint16_t).
// What it is not: a standalone header (no include guard).
//
// Work item = (sequence s, kv head g, tile of up to kRows query rows). Tiles with at least
// kGemmCols query columns (rows × G heads: prefill) take the GEMM path, TileGemm: per visible
// block, St = K·(scale·Q)ᵀ, mask, online softmax vectorised over the columns, O += Pᵀ·V — the
// structure of attention_impl.h with a block as the key tile. Other tiles (decode) take the
// dot-product path, TileDots: for each visible key block, for each row of the tile:
//   1. scores of the row's G query heads (sharing kv head g) for the row's visible keys of
//      the block: dot products along HS, four keys at a time (their horizontal sums reduced
//      together), q pre-scaled;
//   2. online softmax (FlashAttention-2): m' = max(m, max s); p = exp(s − m');
//      l = l·e^(m−m') + Σp; O = O·e^(m−m');
//   3. O += Σ_j p_j · v_j for the G heads (O chunks held in registers across the keys,
//      even and odd keys in separate FMA chains).
// Then out = O / l. Every output is computed by one thread in a fixed order: results do not
// depend on the thread count.

#define MOE_AI inline __attribute__((always_inline))

static MOE_AI vf ldf(const float* p) { vf r; __builtin_memcpy(&r, p, sizeof r); return r; }
static MOE_AI void stf(float* p, const vf& x) { __builtin_memcpy(p, &x, sizeof x); }
static MOE_AI vf splat(float a) { return vf{} + a; }
static MOE_AI vf vmax(const vf& a, const vf& b) { return a > b ? a : b; }
static MOE_AI vf ld(const float* p) { return ldf(p); }
static MOE_AI vf ld(const uint16_t* p) {
  vu16 h;
  __builtin_memcpy(&h, p, sizeof h);
  return (vf)(__builtin_convertvector(h, vu32) << 16);
}
static MOE_AI float tof(float x) { return x; }
static MOE_AI float tof(uint16_t x) {
  const uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
// exp (Cephes expf polynomial, as attention_impl.h). Inputs below −87.3, −∞ included, give 0.
static MOE_AI vf vexp(const vf& x) {
  const vf lo = splat(-87.3f), hi = splat(88.0f);
  vf xc = vmax(x, lo);
  xc = xc < hi ? xc : hi;
  vf n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = splat(1.9875691500e-4f);
  p = MOE_PA_FMA(p, r, splat(1.3981999507e-3f));
  p = MOE_PA_FMA(p, r, splat(8.3334519073e-3f));
  p = MOE_PA_FMA(p, r, splat(4.1665795894e-2f));
  p = MOE_PA_FMA(p, r, splat(1.6666665459e-1f));
  p = MOE_PA_FMA(p, r, splat(5.0000001201e-1f));
  p = MOE_PA_FMA(p, r * r, r + 1.0f);
  vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  vf res = p * (vf)e;
  return x < lo ? vf{} : res;
}

// sc[t] = ⟨q, k_t⟩ for NK keys k_t = kr + t·ldk (q has HS floats): NK accumulators in registers,
// reduced together (hsum4) so the horizontal sums cost little per key.
template <int NK, class T>
static MOE_AI void DotKeys(const float* q, int HS, const T* kr, long ldk, float* sc) {
  vf acc[NK];
  for (int t = 0; t < NK; ++t) acc[t] = vf{};
  // Key rows of one head are ldk apart (often a page apart): prefetch 8 keys ahead.
  for (int t = 0; t < NK; ++t)
    for (int c = 0; c < HS; c += 64 / (int)sizeof(T)) __builtin_prefetch(kr + (t + 8) * ldk + c);
  int c = 0;
  for (; c + VW <= HS; c += VW) {
    const vf qv = ldf(q + c);
    for (int t = 0; t < NK; ++t) acc[t] = MOE_PA_FMA(qv, ld(kr + t * ldk + c), acc[t]);
  }
  if constexpr (NK == 4) hsum4(acc[0], acc[1], acc[2], acc[3], sc);
  else
    for (int t = 0; t < NK; ++t) sc[t] = hsum(acc[t]);
  for (; c < HS; ++c)
    for (int t = 0; t < NK; ++t) sc[t] += q[c] * tof(kr[t * ldk + c]);
}

// Scores of G heads (rows of Q, HS apart) against keys [j0, j1] of one block (kb = key j0's row,
// rows ldk apart): sc[h·ldsc + (j − j0)].
template <class T>
static MOE_AI void Scores(int G, const float* Q, int HS, const T* kb, long ldk, int n, float* sc, int ldsc) {
  for (int h = 0; h < G; ++h) {
    int t = 0;
    for (; t + 4 <= n; t += 4) DotKeys<4>(Q + h * HS, HS, kb + t * ldk, ldk, sc + h * ldsc + t);
    for (; t < n; ++t) DotKeys<1>(Q + h * HS, HS, kb + t * ldk, ldk, sc + h * ldsc + t);
  }
}

// Oc[0 .. NC·VW) += Σ_{t<n} ph[t] · v_t[0 .. NC·VW) (v_t = vb + t·ldk): 2·NC independent FMA
// chains (even and odd keys), so the loop runs at FMA throughput rather than latency.
template <int NC, class T>
static MOE_AI void AccChunks(const float* ph, const T* vb, long ldk, int n, float* Oc) {
  vf a[NC], b[NC];
  for (int i = 0; i < NC; ++i) a[i] = ldf(Oc + i * VW), b[i] = vf{};
  int t = 0;
  for (; t + 2 <= n; t += 2) {
    const vf pa = splat(ph[t]), pb = splat(ph[t + 1]);
    for (int i = 0; i < NC; ++i) {
      a[i] = MOE_PA_FMA(pa, ld(vb + t * ldk + i * VW), a[i]);
      b[i] = MOE_PA_FMA(pb, ld(vb + (t + 1) * ldk + i * VW), b[i]);
    }
  }
  if (t < n) {
    const vf pa = splat(ph[t]);
    for (int i = 0; i < NC; ++i) a[i] = MOE_PA_FMA(pa, ld(vb + t * ldk + i * VW), a[i]);
  }
  for (int i = 0; i < NC; ++i) stf(Oc + i * VW, a[i] + b[i]);
}

// O[h] += Σ_{t<n} p[h·ldp + t] · v_t for the G heads of one row (vb = first value row, rows
// ldk apart).
template <class T>
static MOE_AI void AccumulateV(int G, const float* p, int ldp, int HS, const T* vb, long ldk, int n, float* O) {
  for (int h = 0; h < G; ++h) {
    const float* ph = p + h * ldp;
    float* Oh = O + h * HS;
    int c = 0;
    for (; c + 4 * VW <= HS; c += 4 * VW) AccChunks<4>(ph, vb + c, ldk, n, Oh + c);
    for (; c + 2 * VW <= HS; c += 2 * VW) AccChunks<2>(ph, vb + c, ldk, n, Oh + c);
    for (; c + VW <= HS; c += VW) AccChunks<1>(ph, vb + c, ldk, n, Oh + c);
    for (; c < HS; ++c) {
      float o = Oh[c];
      for (int t = 0; t < n; ++t) o += ph[t] * tof(vb[t * ldk + c]);
      Oh[c] = o;
    }
  }
}

// ---------------------------------------------------------------------------
// Prefill tiles: scores as a small GEMM (keys × query columns), as attention_impl.h does.

// C (MR × VW·NV) (+)= A·B over k < K; A(m, k) = A[m·rsa + k·csa]; B, C row-major.
template <int MR, int NV>
static MOE_AI void GBlock(int K, const float* A, long rsa, long csa, const float* B, long ldb, float* C, long ldc, bool acc) {
  vf c[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? ldf(C + r * ldc + VW * v) : vf{};
  for (int k = 0; k < K; ++k) {
    vf b[NV];
    for (int v = 0; v < NV; ++v) b[v] = ldf(B + k * ldb + VW * v);
    for (int r = 0; r < MR; ++r) {
      const vf x = splat(A[r * rsa + k * csa]);
      for (int v = 0; v < NV; ++v) c[r][v] = MOE_PA_FMA(x, b[v], c[r][v]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) stf(C + r * ldc + VW * v, c[r][v]);
}

template <int MR>
static MOE_AI void GRowPanel(int N, int K, const float* A, long rsa, long csa, const float* B, long ldb, float* C, long ldc, bool acc) {
  int n = 0;
  for (; n + 2 * VW <= N; n += 2 * VW) GBlock<MR, 2>(K, A, rsa, csa, B + n, ldb, C + n, ldc, acc);
  for (; n + VW <= N; n += VW) GBlock<MR, 1>(K, A, rsa, csa, B + n, ldb, C + n, ldc, acc);
  for (; n < N; ++n) {  // scalar tail columns (HS not a multiple of VW)
    for (int r = 0; r < MR; ++r) {
      float x = acc ? C[r * ldc + n] : 0.0f;
      for (int k = 0; k < K; ++k) x += A[r * rsa + k * csa] * B[k * ldb + n];
      C[r * ldc + n] = x;
    }
  }
}

// C (M × N) (+)= A (M × K, strided) · B (K × N, row-major).
static void GMatMul(int M, int N, int K, const float* A, long rsa, long csa, const float* B, long ldb, float* C, long ldc, bool acc) {
  int m = 0;
  for (; m + 4 <= M; m += 4) GRowPanel<4>(N, K, A + m * rsa, rsa, csa, B, ldb, C + m * ldc, ldc, acc);
  for (; m < M; ++m) GRowPanel<1>(N, K, A + m * rsa, rsa, csa, B, ldb, C + m * ldc, ldc, acc);
}

// Per-thread scratch of both tile paths.
struct Scratch {
  std::vector<float> buf;
  std::vector<int> colpos;
  float *Qs, *O, *sc, *mrow, *lrow, *QT, *St, *alpha, *Kf, *Vf;
  int ld;  // query columns of a GEMM tile, rounded up to VW
  Scratch(int G, int HS, int bs, int bsp) {
    const int M = kRows * G;
    ld = (M + VW - 1) / VW * VW;
    const size_t n[] = {(size_t)M * HS, (size_t)M * HS, (size_t)G * bsp, (size_t)ld, (size_t)ld,
                        (size_t)HS * ld, (size_t)bs * ld, (size_t)ld, (size_t)bs * HS, (size_t)bs * HS};
    size_t total = 0;
    for (size_t x : n) total += x;
    buf.assign(total, 0.0f);
    colpos.assign(ld, 0);
    float* p = buf.data();
    float** dst[] = {&Qs, &O, &sc, &mrow, &lrow, &QT, &St, &alpha, &Kf, &Vf};
    for (int i = 0; i < 10; ++i) *dst[i] = p, p += n[i];
  }
};

static MOE_AI const float* RowsF32(const float* src, long, int, int, float*) { return src; }
// bf16 rows (n rows of HS codes, ldk apart) widened into dst (n × HS).
static MOE_AI const float* RowsF32(const uint16_t* src, long ldk, int n, int HS, float* dst) {
  for (int t = 0; t < n; ++t)
    for (int c = 0; c < HS; ++c) dst[t * HS + c] = tof(src[t * ldk + c]);
  return dst;
}

// One work item through the GEMM path: M = nr·G query columns (column i·G + h = row i, head
// g·G + h, at position p0 + i). Per visible block: St (keys × ld) = K·QT, mask, online softmax
// vectorised over columns, O (M × HS) += Pᵀ·V.
template <class T>
static void TileGemm(const PagedArgs& a, Scratch& w, const T* kc, const T* vc, int s, int g, int r0, int nr, int p0) {
  const int HS = a.HS, bs = a.bs, W = a.window, G = a.NH / a.KVH, M = nr * G, ld = (M + VW - 1) / VW * VW;
  const long ldq = (long)a.NH * HS, ldk = (long)a.KVH * HS;
  const bool bf16 = sizeof(T) == 2;
  const long ldkv = bf16 ? HS : ldk;  // row stride of the K/V tile the GEMMs read
  for (int c = 0; c < HS; ++c)
    for (int col = 0; col < ld; ++col)
      w.QT[c * ld + col] = col < M ? a.scale * a.q[(size_t)(r0 + col / G) * ldq + (size_t)(g * G + col % G) * HS + c] : 0.0f;
  for (int col = 0; col < ld; ++col) {
    w.colpos[col] = col < M ? p0 + col / G : -1;  // padding columns see nothing
    w.mrow[col] = -__builtin_inff(), w.lrow[col] = 0.0f;
  }
  for (int x = 0; x < M * HS; ++x) w.O[x] = 0.0f;
  const int32_t* table = a.tables + (size_t)s * a.maxBlocks;
  const int jlo = W > 0 ? std::max(0, p0 - W + 1) : 0, jhi = p0 + nr - 1;
  for (int b = jlo / bs; b <= jhi / bs; ++b) {
    // Keys [k0, k1] of this block that some column sees (never a slot past the context).
    const int k0 = std::max(b * bs, jlo), k1 = std::min(b * bs + bs - 1, jhi), bc = k1 - k0 + 1;
    const size_t ro = ((size_t)table[b] * bs + (k0 - b * bs)) * ldk + (size_t)g * HS;
    const float* K = RowsF32(kc + ro, ldk, bc, HS, w.Kf);
    const float* V = RowsF32(vc + ro, ldk, bc, HS, w.Vf);
    GMatMul(bc, ld, HS, K, ldkv, 1, w.QT, ld, w.St, ld, false);
    for (int t = 0; t < bc; ++t) {
      const int j = k0 + t;
      float* row = w.St + t * ld;
      for (int col = 0; col < ld; ++col) {
        const int pos = w.colpos[col];
        if (!(j <= pos && (W == 0 || j > pos - W))) row[col] = -__builtin_inff();
      }
    }
    for (int iv = 0; iv < ld; iv += VW) {
      vf mt = splat(-__builtin_inff());
      for (int t = 0; t < bc; ++t) mt = vmax(mt, ldf(w.St + t * ld + iv));
      const vf mold = ldf(w.mrow + iv), mnew = vmax(mold, mt);
      const vf msafe = mnew == splat(-__builtin_inff()) ? vf{} : mnew;  // column sees nothing yet
      const vf al = vexp(mold - msafe);
      vf sum{};
      for (int t = 0; t < bc; ++t) {
        const vf p = vexp(ldf(w.St + t * ld + iv) - msafe);
        stf(w.St + t * ld + iv, p);
        sum += p;
      }
      stf(w.mrow + iv, mnew);
      stf(w.alpha + iv, al);
      stf(w.lrow + iv, ldf(w.lrow + iv) * al + sum);
    }
    for (int col = 0; col < M; ++col) {
      const float al = w.alpha[col];
      if (al != 1.0f)
        for (int c = 0; c < HS; ++c) w.O[col * HS + c] *= al;
    }
    // O (M × HS) += P (M × bc) · V (bc × HS); P(col, t) = St[t·ld + col].
    GMatMul(M, HS, bc, w.St, 1, ld, V, ldkv, w.O, HS, true);
  }
  for (int col = 0; col < M; ++col) {
    float* o = a.out + (size_t)(r0 + col / G) * ldq + (size_t)(g * G + col % G) * HS;
    const float inv = 1.0f / w.lrow[col];
    for (int c = 0; c < HS; ++c) o[c] = w.O[col * HS + c] * inv;
  }
}

// One work item through the dot-product path (decode: few query columns).
template <class T>
static void TileDots(const PagedArgs& a, Scratch& w, const T* kc, const T* vc, int s, int g, int r0, int nr, int p0) {
  const int HS = a.HS, bs = a.bs, W = a.window, G = a.NH / a.KVH;
  const int bsp = (bs + VW - 1) / VW * VW;
  const long ldq = (long)a.NH * HS, ldk = (long)a.KVH * HS;
  float *Qs = w.Qs, *O = w.O, *sc = w.sc, *mrow = w.mrow, *lrow = w.lrow;
  const int32_t* table = a.tables + (size_t)s * a.maxBlocks;
  for (int i = 0; i < nr; ++i) {
    const float* qr = a.q + (size_t)(r0 + i) * ldq + (size_t)g * G * HS;
    for (int x = 0; x < G * HS; ++x) Qs[(size_t)i * G * HS + x] = a.scale * qr[x];
  }
  for (int x = 0; x < nr * G * HS; ++x) O[x] = 0.0f;
  for (int x = 0; x < nr * G; ++x) mrow[x] = -__builtin_inff(), lrow[x] = 0.0f;
  const int jlo = W > 0 ? std::max(0, p0 - W + 1) : 0, jhi = p0 + nr - 1;
  for (int b = jlo / bs; b <= jhi / bs; ++b) {
    const int jb = b * bs;
    const size_t slot0 = (size_t)table[b] * bs;
    for (int i = 0; i < nr; ++i) {
      const int pos = p0 + i;
      const int a0 = std::max(jb, W > 0 ? pos - W + 1 : 0), a1 = std::min(jb + bs - 1, pos);
      if (a0 > a1) continue;
      const float* Q = Qs + (size_t)i * G * HS;
      float* Orow = O + (size_t)i * G * HS;
      for (int x = 0; x < G * bsp; ++x) sc[x] = -__builtin_inff();
      const size_t r0s = (slot0 + (a0 - jb)) * ldk + (size_t)g * HS;
      Scores(G, Q, HS, kc + r0s, ldk, a1 - a0 + 1, sc + (a0 - jb), bsp);
      for (int h = 0; h < G; ++h) {
        float* srow = sc + (size_t)h * bsp;
        vf mx = splat(-__builtin_inff());
        for (int x = 0; x < bsp; x += VW) mx = vmax(mx, ldf(srow + x));
        const float mold = mrow[i * G + h], mnew = std::max(mold, hmax(mx));
        const float alpha = mold == -__builtin_inff() ? 0.0f : std::exp(mold - mnew);
        vf sum{};
        const vf mv = splat(mnew);
        for (int x = 0; x < bsp; x += VW) {
          const vf p = vexp(ldf(srow + x) - mv);
          stf(srow + x, p);
          sum += p;
        }
        mrow[i * G + h] = mnew;
        lrow[i * G + h] = lrow[i * G + h] * alpha + hsum(sum);
        if (alpha != 1.0f)
          for (int c = 0; c < HS; ++c) Orow[h * HS + c] *= alpha;
      }
      AccumulateV(G, sc + (a0 - jb), bsp, HS, vc + r0s, ldk, a1 - a0 + 1, Orow);
    }
  }
  for (int i = 0; i < nr; ++i) {
    float* orow = a.out + (size_t)(r0 + i) * ldq + (size_t)g * G * HS;
    for (int h = 0; h < G; ++h) {
      const float inv = 1.0f / lrow[i * G + h];
      for (int c = 0; c < HS; ++c) orow[h * HS + c] = O[((size_t)i * G + h) * HS + c] * inv;
    }
  }
}

template <class T>
static void Run(ThreadPool& pool, const PagedArgs& a) {
  const int S = a.S, KVH = a.KVH, HS = a.HS, bs = a.bs, W = a.window, G = a.NH / a.KVH;
  const int bsp = (bs + VW - 1) / VW * VW;  // score row length, padded with −∞
  const T* kc = static_cast<const T*>(a.k);
  const T* vc = static_cast<const T*>(a.v);
  // Items of sequence s: [itemStart[s], itemStart[s+1]) = KVH × ⌈qlen / kRows⌉.
  std::vector<int64_t> itemStart(S + 1, 0);
  for (int s = 0; s < S; ++s) {
    const int qlen = a.qstart[s + 1] - a.qstart[s];
    itemStart[s + 1] = itemStart[s] + (int64_t)KVH * ((qlen + kRows - 1) / kRows);
  }
  const int64_t items = itemStart[S];
  // Multiply-adds of the whole call (visible keys per row, both matmuls): a call below
  // kSerialWork runs on the calling thread, since waking a worker costs more than it saves.
  double work = 0;
  for (int s = 0; s < S; ++s) {
    const int qlen = a.qstart[s + 1] - a.qstart[s];
    work += 2.0 * qlen * (W > 0 ? std::min(W, a.ctx[s]) : a.ctx[s]) * a.NH * HS;
  }
  std::atomic<int64_t> next{0};
  auto body = [&](int) {
    Scratch w(G, HS, bs, bsp);
    for (int64_t it; (it = next.fetch_add(1)) < items;) {
      const int s = (int)(std::upper_bound(itemStart.begin(), itemStart.end(), it) - itemStart.begin()) - 1;
      const int64_t local = it - itemStart[s];
      const int g = (int)(local % KVH), tile = (int)(local / KVH);
      const int qlen = a.qstart[s + 1] - a.qstart[s], ctx = a.ctx[s];
      const int r0 = a.qstart[s] + tile * kRows, nr = std::min(kRows, a.qstart[s + 1] - r0);
      const int p0 = ctx - qlen + tile * kRows;  // position of the tile's first row
      if (nr * G >= kGemmCols) TileGemm(a, w, kc, vc, s, g, r0, nr, p0);
      else TileDots(a, w, kc, vc, s, g, r0, nr, p0);
    }
  };
  if (work < kSerialWork || items == 1) body(0);
  else pool.run_on_all(body);
}

static void Forward(ThreadPool& pool, const PagedArgs& a) {
  if (a.bf16) Run<uint16_t>(pool, a);
  else Run<float>(pool, a);
}

#undef MOE_AI
