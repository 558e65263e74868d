// Paged attention over a block-table KV cache — the ISA-independent body.
//
// What it is: included three times by paged_attention.cc (baseline, AVX2+FMA, AVX-512F),
// each time with VW (lanes), the vector types vf / vi / vu16 / vu32 of VW lanes and
// MOE_PA_FMA(a, b, c) = a·b + c defined. Written with GCC vector extensions, so each copy
// uses the widest registers of its ISA. Keys/values are read as f32 or as bf16 codes
// widened in registers (T = float or uint16_t).
// What it is not: a standalone header (no include guard) or a prefill GEMM: scores are dot
// products along HS, which is what decode (one query row per sequence) needs.
//
// Work item = (sequence s, kv head g, tile of up to kRows query rows). For each visible key
// block (through the block table), for each row of the tile:
//   1. scores of the row's G query heads (sharing kv head g) for the row's visible keys of
//      the block: G dot products per key row, the key row loaded once (q pre-scaled);
//   2. online softmax (FlashAttention-2): m' = max(m, max s); p = exp(s − m');
//      l = l·e^(m−m') + Σp; O = O·e^(m−m');
//   3. O += Σ_j p_j · v_j for the G heads, each value row loaded once.
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
static MOE_AI float hsum(const vf& x) {
  float s = 0.0f;
  for (int i = 0; i < VW; ++i) s += x[i];
  return s;
}
static MOE_AI float hmax(const vf& x) {
  float s = x[0];
  for (int i = 1; i < VW; ++i) s = s > x[i] ? s : x[i];
  return s;
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

// sc[h·ldsc] = ⟨Q[h·HS …], kr⟩ for NQ consecutive query heads (NQ accumulators live in registers).
template <int NQ, class T>
static MOE_AI void DotsN(const float* Q, int HS, const T* kr, float* sc, int ldsc) {
  vf acc[NQ];
  for (int h = 0; h < NQ; ++h) acc[h] = vf{};
  int c = 0;
  for (; c + VW <= HS; c += VW) {
    const vf kv = ld(kr + c);
    for (int h = 0; h < NQ; ++h) acc[h] = MOE_PA_FMA(ldf(Q + h * HS + c), kv, acc[h]);
  }
  for (int h = 0; h < NQ; ++h) {
    float s = hsum(acc[h]);
    for (int cc = c; cc < HS; ++cc) s += Q[h * HS + cc] * tof(kr[cc]);
    sc[h * ldsc] = s;
  }
}

template <class T>
static MOE_AI void Dots(int G, const float* Q, int HS, const T* kr, float* sc, int ldsc) {
  int h = 0;
  for (; h + 4 <= G; h += 4) DotsN<4>(Q + h * HS, HS, kr, sc + h * ldsc, ldsc);
  for (; h < G; ++h) DotsN<1>(Q + h * HS, HS, kr, sc + h * ldsc, ldsc);
}

// O[h] += p[h·ldp] · vr for the G heads of one row (O is G × HS).
template <class T>
static MOE_AI void AccumulateV(int G, const float* p, int ldp, int HS, const T* vr, float* O) {
  int c = 0;
  for (; c + VW <= HS; c += VW) {
    const vf vv = ld(vr + c);
    for (int h = 0; h < G; ++h) stf(O + h * HS + c, MOE_PA_FMA(splat(p[h * ldp]), vv, ldf(O + h * HS + c)));
  }
  for (; c < HS; ++c) {
    const float x = tof(vr[c]);
    for (int h = 0; h < G; ++h) O[h * HS + c] += p[h * ldp] * x;
  }
}

template <class T>
static void Run(ThreadPool& pool, const PagedArgs& a) {
  const int S = a.S, KVH = a.KVH, HS = a.HS, bs = a.bs, W = a.window, G = a.NH / a.KVH;
  const int bsp = (bs + VW - 1) / VW * VW;  // score row length, padded with −∞
  const long ldq = (long)a.NH * HS, ldk = (long)KVH * HS;
  const T* kc = static_cast<const T*>(a.k);
  const T* vc = static_cast<const T*>(a.v);
  // Items of sequence s: [itemStart[s], itemStart[s+1]) = KVH × ⌈qlen / kRows⌉.
  std::vector<int64_t> itemStart(S + 1, 0);
  for (int s = 0; s < S; ++s) {
    const int qlen = a.qstart[s + 1] - a.qstart[s];
    itemStart[s + 1] = itemStart[s] + (int64_t)KVH * ((qlen + kRows - 1) / kRows);
  }
  const int64_t items = itemStart[S];
  std::atomic<int64_t> next{0};
  pool.run_on_all([&](int) {
    const int M = kRows * G;
    std::vector<float> buf((size_t)2 * M * HS + (size_t)G * bsp + 2 * (size_t)M);
    float* Qs = buf.data();                // (rows, G, HS) scaled queries
    float* O = Qs + (size_t)M * HS;        // (rows, G, HS) accumulators
    float* sc = O + (size_t)M * HS;        // (G, bsp) scores → probabilities of one row and block
    float* mrow = sc + (size_t)G * bsp;    // (rows, G) running max
    float* lrow = mrow + M;                // (rows, G) running sum
    for (int64_t it; (it = next.fetch_add(1)) < items;) {
      const int s = (int)(std::upper_bound(itemStart.begin(), itemStart.end(), it) - itemStart.begin()) - 1;
      const int64_t local = it - itemStart[s];
      const int g = (int)(local % KVH), tile = (int)(local / KVH);
      const int qlen = a.qstart[s + 1] - a.qstart[s], ctx = a.ctx[s];
      const int r0 = a.qstart[s] + tile * kRows, nr = std::min(kRows, a.qstart[s + 1] - r0);
      const int p0 = ctx - qlen + tile * kRows;  // position of the tile's first row
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
          for (int j = a0; j <= a1; ++j) Dots(G, Q, HS, kc + (slot0 + (j - jb)) * ldk + (size_t)g * HS, sc + (j - jb), bsp);
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
          for (int j = a0; j <= a1; ++j) AccumulateV(G, sc + (j - jb), bsp, HS, vc + (slot0 + (j - jb)) * ldk + (size_t)g * HS, Orow);
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
  });
}

static void Forward(ThreadPool& pool, const PagedArgs& a) {
  if (a.bf16) Run<uint16_t>(pool, a);
  else Run<float>(pool, a);
}

#undef MOE_AI
