// Shared SIMD decoding of ggml blocks into groups of 32 int8 codes plus their scales, included
// by quant_blocks_avx2.cc and quant_blocks_avx512.cc *after* each file's `#pragma GCC target`,
// inside an anonymous namespace, so every function here is compiled once per ISA.
// A group holds 32 consecutive values v_i = a(i) · q_i − b with a(i) = a0 for i < 16, a1 for
// i ≥ 16 (a0 = a1 except in q6_k, whose scales cover 16 values). Products are rounded as ggml's
// dequantize_row_* rounds them (a = f32(d·sc), b = f32(dmin·m)), so a · q − b with a separate
// multiply and subtract reproduces ggml's value exactly.
// Not: standalone (no includes of its own beyond what the including file has).

struct Group {
  __m256i q;  // 32 signed codes
  float a0, a1, b;
};

inline float F16At(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Calls sink(offset, group) for each group of 32 values of the block at `blk`, in order.
template <int Fmt, class Sink>
inline void DecodeBlock(const uint8_t* blk, Sink& sink) {
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  if constexpr (Fmt == qb::kQ8_0) {
    const float d = F16At(blk);
    sink(0, Group{_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2)), d, d, 0.0f});
  } else if constexpr (Fmt == qb::kQ4_0) {
    const float d = F16At(blk);
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2));
    const __m128i lo = _mm_and_si128(v, _mm_set1_epi8(0x0F));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), _mm_set1_epi8(0x0F));
    const __m256i q = _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
    sink(0, Group{q, d, d, 0.0f});
  } else if constexpr (Fmt == qb::kQ4_K) {
    const float d = F16At(blk), dmin = F16At(blk + 2);
    const uint8_t* s = blk + 4;
    uint8_t sc[8], mn[8];
    for (int j = 0; j < 4; ++j) {
      sc[j] = s[j] & 63;
      mn[j] = s[j + 4] & 63;
      sc[j + 4] = static_cast<uint8_t>((s[j + 8] & 15) | ((s[j] >> 6) << 4));
      mn[j + 4] = static_cast<uint8_t>((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
    for (int g = 0; g < 4; ++g) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * g));
      const float a1 = d * sc[2 * g], b1 = dmin * mn[2 * g], a2 = d * sc[2 * g + 1], b2 = dmin * mn[2 * g + 1];
      sink(64 * g, Group{_mm256_and_si256(v, m4), a1, a1, b1});
      sink(64 * g + 32, Group{_mm256_and_si256(_mm256_srli_epi16(v, 4), m4), a2, a2, b2});
    }
  } else {
    static_assert(Fmt == qb::kQ6_K, "unknown format");
    const float d = F16At(blk + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(blk + 192);
    const __m256i m3 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
    for (int h = 0; h < 2; ++h) {
      const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h));
      const __m256i ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 128 + 32 * h));
      // Upper two bits of each quadrant moved to bits 4..5 (16-bit shifts, then masked per byte).
      const __m256i h0 = _mm256_and_si256(_mm256_slli_epi16(qh, 4), m3);
      const __m256i h1 = _mm256_and_si256(_mm256_slli_epi16(qh, 2), m3);
      const __m256i h2 = _mm256_and_si256(qh, m3);
      const __m256i h3 = _mm256_and_si256(_mm256_srli_epi16(qh, 2), m3);
      const __m256i q1 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql0, m4), h0), k32);
      const __m256i q2 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(ql1, m4), h1), k32);
      const __m256i q3 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m4), h2), k32);
      const __m256i q4 = _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m4), h3), k32);
      const int8_t* s = sc + 8 * h;
      sink(128 * h, Group{q1, d * s[0], d * s[1], 0.0f});
      sink(128 * h + 32, Group{q2, d * s[2], d * s[3], 0.0f});
      sink(128 * h + 64, Group{q3, d * s[4], d * s[5], 0.0f});
      sink(128 * h + 96, Group{q4, d * s[6], d * s[7], 0.0f});
    }
  }
}

// ---------------------------------------------------------------------------
// Loops over blocks, generic over the vector traits T of the including file:
//   T::V (vector type), T::kLanes, T::kPerGroup = 32 / kLanes,
//   T::Values(const Group&, V out[kPerGroup])   exact values a·q − b (multiply, then subtract),
//   T::Zero(), T::Load(const float*), T::Store(float*, V), T::Fma(a, b, acc), T::Add, T::HSum(V).

template <class T, int Fmt>
void DequantBlocks(const uint8_t* w, int64_t nblocks, float* out) {
  constexpr int BS = qb::BlockSize(Fmt), BB = qb::BlockBytes(Fmt);
  for (int64_t b = 0; b < nblocks; ++b) {
    float* o = out + b * BS;
    auto sink = [&](int off, const Group& g) {
      typename T::V v[T::kPerGroup];
      T::Values(g, v);
      for (int j = 0; j < T::kPerGroup; ++j) T::Store(o + off + j * T::kLanes, v[j]);
    };
    DecodeBlock<Fmt>(w + b * BB, sink);
  }
}

// Dot products of one weight row with M rows of x: out[m] = Σ_k x[m·K + k] · w[k]. Each block is
// decoded once into registers and used for all M rows. Accumulators: kAcc per row (independent
// FMA chains so that M = 1 is not bound by FMA latency).
// - M = 1 and one scale per group (all but q6_k): t = Σ_j x_j·q_j on the raw codes, then
//   acc += a·t (fewer multiplies than scaling every vector).
// - q4_k: the min term is taken out of the loop: Σ x·(a·q − b) = Σ x·a·q − b·Σ x, with the
//   32-value sums of x (xs, M × K/32) computed once per call.
template <class T, int Fmt, int M>
inline void DotRow(const float* x, int64_t K, const float* xs, const uint8_t* wrow, int64_t nblocks, float* out) {
  constexpr int BS = qb::BlockSize(Fmt), BB = qb::BlockBytes(Fmt);
  constexpr bool kRawCodes = M == 1 && Fmt != qb::kQ6_K;
  constexpr int kAcc = kRawCodes ? (BS == 32 ? 4 : 2) : M == 1 ? T::kPerGroup : (M == 2 && T::kPerGroup >= 2 ? 2 : 1);
  const int64_t G = K / 32;
  typename T::V acc[M][kAcc];
  float off[M];
  for (int m = 0; m < M; ++m) {
    off[m] = 0.0f;
    for (int a = 0; a < kAcc; ++a) acc[m][a] = T::Zero();
  }
  if constexpr (kRawCodes && BS == 32) {
    // q8_0 / q4_0 at M = 1: one group per block, so blocks rotate over 4 accumulators (a single
    // chain would wait on the FMA latency once per block); the last nblocks % 4 go to the first.
    auto one = [&](int64_t b, auto slot) {
      constexpr int P = decltype(slot)::value;
      const float* xb = x + b * BS;
      auto sink = [&](int o, const Group& g) {
        typename T::V v[T::kPerGroup];
        Group gs = g;
        gs.b = 0.0f;
        gs.a0 = gs.a1 = 1.0f;
        T::Values(gs, v);  // codes as floats (· 1, exact)
        const float* xm = xb + o;
        typename T::V t = T::Mul(T::Load(xm), v[0]);
        for (int j = 1; j < T::kPerGroup; ++j) t = T::Fma(T::Load(xm + j * T::kLanes), v[j], t);
        acc[0][P] = T::Fma(t, T::Set1(g.a0), acc[0][P]);
      };
      DecodeBlock<Fmt>(wrow + b * BB, sink);
    };
    int64_t b = 0;
    for (; b + 4 <= nblocks; b += 4) {
      one(b, std::integral_constant<int, 0>{});
      one(b + 1, std::integral_constant<int, 1 % kAcc>{});
      one(b + 2, std::integral_constant<int, 2 % kAcc>{});
      one(b + 3, std::integral_constant<int, 3 % kAcc>{});
    }
    for (; b < nblocks; ++b) one(b, std::integral_constant<int, 0>{});
  } else
  for (int64_t b = 0; b < nblocks; ++b) {
    const float* xb = x + b * BS;
    auto sink = [&](int o, const Group& g) {
      typename T::V v[T::kPerGroup];
      Group gs = g;
      gs.b = 0.0f;
      if constexpr (Fmt == qb::kQ4_K) {
        const int64_t gi = (b * BS + o) / 32;
        for (int m = 0; m < M; ++m) off[m] += g.b * xs[m * G + gi];
      }
      if constexpr (kRawCodes) {
        gs.a0 = gs.a1 = 1.0f;
        T::Values(gs, v);  // codes as floats (· 1, exact)
        const float* xm = xb + o;
        typename T::V t = T::Mul(T::Load(xm), v[0]);
        for (int j = 1; j < T::kPerGroup; ++j) t = T::Fma(T::Load(xm + j * T::kLanes), v[j], t);
        const int par = (o >> 5) & 1;
        acc[0][par] = T::Fma(t, T::Set1(g.a0), acc[0][par]);
      } else {
        T::Values(gs, v);
        for (int m = 0; m < M; ++m) {
          const float* xm = xb + m * K + o;
          for (int j = 0; j < T::kPerGroup; ++j) acc[m][j % kAcc] = T::Fma(T::Load(xm + j * T::kLanes), v[j], acc[m][j % kAcc]);
        }
      }
    };
    DecodeBlock<Fmt>(wrow + b * BB, sink);
  }
  for (int m = 0; m < M; ++m) {
    typename T::V s = acc[m][0];
    for (int a = 1; a < kAcc; ++a) s = T::Add(s, acc[m][a]);
    out[m] = T::HSum(s) - off[m];
  }
}

template <class T, int Fmt, int M>
void MatvecRows(const float* x, int64_t K, const uint8_t* w, int64_t rowBytes, int64_t n0, int64_t n1, float* y, int64_t N,
                float beta) {
  const int64_t nblocks = K / qb::BlockSize(Fmt);
  std::vector<float> xs;
  if constexpr (Fmt == qb::kQ4_K) {
    xs.resize(static_cast<size_t>(M * (K / 32)));
    for (int m = 0; m < M; ++m)
      for (int64_t g = 0; g < K / 32; ++g) {
        float s = 0.0f;
        for (int j = 0; j < 32; ++j) s += x[m * K + 32 * g + j];
        xs[static_cast<size_t>(m * (K / 32) + g)] = s;
      }
  }
  for (int64_t n = n0; n < n1; ++n) {
    float d[M];
    DotRow<T, Fmt, M>(x, K, xs.data(), w + n * rowBytes, nblocks, d);
    for (int m = 0; m < M; ++m) {
      float* yp = y + m * N + n;
      *yp = beta == 0.0f ? d[m] : d[m] + beta * *yp;
    }
  }
}

template <class T, int Fmt>
void MatvecFmt(int M, const float* x, int64_t K, const uint8_t* w, int64_t rowBytes, int64_t n0, int64_t n1, float* y,
               int64_t N, float beta) {
  switch (M) {
    case 1: return MatvecRows<T, Fmt, 1>(x, K, w, rowBytes, n0, n1, y, N, beta);
    case 2: return MatvecRows<T, Fmt, 2>(x, K, w, rowBytes, n0, n1, y, N, beta);
    case 3: return MatvecRows<T, Fmt, 3>(x, K, w, rowBytes, n0, n1, y, N, beta);
    case 4: return MatvecRows<T, Fmt, 4>(x, K, w, rowBytes, n0, n1, y, N, beta);
    case 5: return MatvecRows<T, Fmt, 5>(x, K, w, rowBytes, n0, n1, y, N, beta);
    case 6: return MatvecRows<T, Fmt, 6>(x, K, w, rowBytes, n0, n1, y, N, beta);
    case 7: return MatvecRows<T, Fmt, 7>(x, K, w, rowBytes, n0, n1, y, N, beta);
    default: return MatvecRows<T, Fmt, 8>(x, K, w, rowBytes, n0, n1, y, N, beta);
  }
}

template <class T>
void Matvec(int fmt, int M, const float* x, int64_t K, const uint8_t* w, int64_t rowBytes, int64_t n0, int64_t n1,
            float* y, int64_t N, float beta) {
  switch (fmt) {
    case qb::kQ8_0: return MatvecFmt<T, qb::kQ8_0>(M, x, K, w, rowBytes, n0, n1, y, N, beta);
    case qb::kQ4_0: return MatvecFmt<T, qb::kQ4_0>(M, x, K, w, rowBytes, n0, n1, y, N, beta);
    case qb::kQ4_K: return MatvecFmt<T, qb::kQ4_K>(M, x, K, w, rowBytes, n0, n1, y, N, beta);
    default: return MatvecFmt<T, qb::kQ6_K>(M, x, K, w, rowBytes, n0, n1, y, N, beta);
  }
}

template <class T>
void Dequant(int fmt, const uint8_t* w, int64_t nblocks, float* out) {
  switch (fmt) {
    case qb::kQ8_0: return DequantBlocks<T, qb::kQ8_0>(w, nblocks, out);
    case qb::kQ4_0: return DequantBlocks<T, qb::kQ4_0>(w, nblocks, out);
    case qb::kQ4_K: return DequantBlocks<T, qb::kQ4_K>(w, nblocks, out);
    default: return DequantBlocks<T, qb::kQ6_K>(w, nblocks, out);
  }
}

// ---------------------------------------------------------------------------
// Dense narrow codes (gemmQuant's bf16 / f16 / fp8 e4m3 / fp8 e5m2 / int8, one code per weight)
// for M ≤ 8: each weight row is read once, widened in registers and multiplied into all M rows.
// T additionally provides T::Dense<D>(const uint8_t* p) → V: kLanes codes at p decoded exactly.
// E4M3 is widened through f16: (sign << 8 | (code & 0x7F) << 7) is an f16 whose value is the
// E4M3 value / 256 for every finite code, subnormals included; code & 0x7F == 0x7F is NaN.

enum DenseDtype { kBf16 = 0, kF16 = 1, kE4m3 = 2, kE5m2 = 3, kInt8 = 4 };

constexpr int DenseBytes(int d) { return d == kBf16 || d == kF16 ? 2 : 1; }

inline float DenseScalar(int d, const uint8_t* p) {
  switch (d) {
    case kBf16: {
      uint32_t u = static_cast<uint32_t>(p[0] | (p[1] << 8)) << 16;
      float f;
      std::memcpy(&f, &u, 4);
      return f;
    }
    case kF16:
      return _cvtsh_ss(static_cast<uint16_t>(p[0] | (p[1] << 8)));
    case kE4m3: {
      if ((p[0] & 0x7F) == 0x7F) return (p[0] & 0x80) ? -__builtin_nanf("") : __builtin_nanf("");
      return _cvtsh_ss(static_cast<uint16_t>(((p[0] & 0x80) << 8) | ((p[0] & 0x7F) << 7))) * 256.0f;
    }
    case kE5m2:
      return _cvtsh_ss(static_cast<uint16_t>(p[0] << 8));
    default:
      return static_cast<float>(static_cast<int8_t>(p[0]));
  }
}

template <class T, int D, int M>
void DenseRows(const float* x, int64_t K, const uint8_t* w, const float* scales, bool perRow, int64_t n0, int64_t n1,
               float* y, int64_t N, float beta) {
  constexpr int L = T::kLanes, B = DenseBytes(D);
  constexpr int kAcc = M == 1 ? 4 : (M == 2 ? 2 : 1);
  constexpr int kUnroll = kAcc;  // vectors per step, one accumulator each
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* wr = w + n * K * B;
    typename T::V acc[M][kAcc];
    for (int m = 0; m < M; ++m)
      for (int a = 0; a < kAcc; ++a) acc[m][a] = T::Zero();
    int64_t k = 0;
    for (; k + kUnroll * L <= K; k += kUnroll * L) {
      for (int u = 0; u < kUnroll; ++u) {
        const typename T::V v = T::template Dense<D>(wr + (k + u * L) * B);
        for (int m = 0; m < M; ++m) acc[m][u % kAcc] = T::Fma(T::Load(x + m * K + k + u * L), v, acc[m][u % kAcc]);
      }
    }
    for (; k + L <= K; k += L) {
      const typename T::V v = T::template Dense<D>(wr + k * B);
      for (int m = 0; m < M; ++m) acc[m][0] = T::Fma(T::Load(x + m * K + k), v, acc[m][0]);
    }
    const float s = scales[perRow ? n : 0];
    for (int m = 0; m < M; ++m) {
      typename T::V t = acc[m][0];
      for (int a = 1; a < kAcc; ++a) t = T::Add(t, acc[m][a]);
      float d = T::HSum(t);
      for (int64_t kk = k; kk < K; ++kk) d += x[m * K + kk] * DenseScalar(D, wr + kk * B);
      const float v = d * s;
      float* yp = y + m * N + n;
      *yp = beta == 0.0f ? v : v + beta * *yp;
    }
  }
}

template <class T, int D>
void DenseFmt(int M, const float* x, int64_t K, const uint8_t* w, const float* scales, bool perRow, int64_t n0, int64_t n1,
              float* y, int64_t N, float beta) {
  switch (M) {
    case 1: return DenseRows<T, D, 1>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    case 2: return DenseRows<T, D, 2>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    case 3: return DenseRows<T, D, 3>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    case 4: return DenseRows<T, D, 4>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    case 5: return DenseRows<T, D, 5>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    case 6: return DenseRows<T, D, 6>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    case 7: return DenseRows<T, D, 7>(x, K, w, scales, perRow, n0, n1, y, N, beta);
    default: return DenseRows<T, D, 8>(x, K, w, scales, perRow, n0, n1, y, N, beta);
  }
}

template <class T>
void DenseMatvec(int dtype, int M, const float* x, int64_t K, const uint8_t* w, const float* scales, bool perRow,
                 int64_t n0, int64_t n1, float* y, int64_t N, float beta) {
  switch (dtype) {
    case kBf16: return DenseFmt<T, kBf16>(M, x, K, w, scales, perRow, n0, n1, y, N, beta);
    case kF16: return DenseFmt<T, kF16>(M, x, K, w, scales, perRow, n0, n1, y, N, beta);
    case kE4m3: return DenseFmt<T, kE4m3>(M, x, K, w, scales, perRow, n0, n1, y, N, beta);
    case kE5m2: return DenseFmt<T, kE5m2>(M, x, K, w, scales, perRow, n0, n1, y, N, beta);
    default: return DenseFmt<T, kInt8>(M, x, K, w, scales, perRow, n0, n1, y, N, beta);
  }
}
