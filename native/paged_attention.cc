// Paged attention kernels (inference): pagedAttention over a block-table KV cache (f32 or
// bf16 codes) and pagedWrite, which stores new key/value rows into cache slots.
// The attention body (paged_attention_impl.h) is compiled three times — baseline, AVX2+FMA,
// AVX-512F — and chosen per call from the CPU (MOE_ATTN_ISA=generic|avx2 caps it, for tests).
// Not: an argument validator (TypeScript checked shapes, dtypes, slots and every block-table
// entry that is read).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "common.h"
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOE_PA_X86 1
#endif

#pragma GCC diagnostic ignored "-Wpsabi"
// GCC 12 reports its own _mm512_reduce_* / cast intrinsics as reading an uninitialised value.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace moe {
namespace paged {

// Query rows per work item (prefill chunks are split into tiles of this many rows).
constexpr int kRows = 16;
// Tiles with at least this many query columns (rows × query heads per KV head) use the GEMM path.
constexpr int kGemmCols = 8;
// Calls with fewer multiply-adds than this (≈ 20 µs on one core) run single-threaded.
constexpr double kSerialWork = 1 << 19;

struct PagedArgs {
  int S, NH, KVH, HS, bs, maxBlocks, window;
  float scale;
  bool bf16;
  const float* q;
  float* out;
  const void* k;  // (numBlocks, bs, KVH, HS) float or uint16_t (bf16)
  const void* v;
  const int32_t* tables;  // (S, maxBlocks)
  const int32_t* qstart;  // (S + 1)
  const int32_t* ctx;     // (S)
};

namespace generic {
constexpr int VW = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef uint16_t vu16 __attribute__((vector_size(16)));
typedef uint32_t vu32 __attribute__((vector_size(32)));
#define MOE_PA_FMA(a, b, c) ((a) * (b) + (c))
static inline float hsum(const vf& x) {
  float s = 0.0f;
  for (int i = 0; i < VW; ++i) s += x[i];
  return s;
}
static inline float hmax(const vf& x) {
  float s = x[0];
  for (int i = 1; i < VW; ++i) s = s > x[i] ? s : x[i];
  return s;
}
static inline void hsum4(const vf& a, const vf& b, const vf& c, const vf& d, float* out) {
  out[0] = hsum(a), out[1] = hsum(b), out[2] = hsum(c), out[3] = hsum(d);
}
#include "paged_attention_impl.h"
#undef MOE_PA_FMA
}  // namespace generic

#ifdef MOE_PA_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
constexpr int VW = 8;
typedef float vf __attribute__((vector_size(32)));
typedef int32_t vi __attribute__((vector_size(32)));
typedef uint16_t vu16 __attribute__((vector_size(16)));
typedef uint32_t vu32 __attribute__((vector_size(32)));
#define MOE_PA_FMA(a, b, c) ((vf)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
static inline float hsum(const vf& x) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128((__m256)x), _mm256_extractf128_ps((__m256)x, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}
static inline float hmax(const vf& x) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128((__m256)x), _mm256_extractf128_ps((__m256)x, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
// hadd(hadd(a,b), hadd(c,d)) holds the four sums split across the two 128-bit halves.
static inline void hsum4(const vf& a, const vf& b, const vf& c, const vf& d, float* out) {
  const __m256 x = _mm256_hadd_ps(_mm256_hadd_ps((__m256)a, (__m256)b), _mm256_hadd_ps((__m256)c, (__m256)d));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)));
}
#include "paged_attention_impl.h"
#undef MOE_PA_FMA
}  // namespace avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace avx512 {
constexpr int VW = 16;
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint16_t vu16 __attribute__((vector_size(32)));
typedef uint32_t vu32 __attribute__((vector_size(64)));
#define MOE_PA_FMA(a, b, c) ((vf)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
static inline float hsum(const vf& x) { return _mm512_reduce_add_ps((__m512)x); }
static inline float hmax(const vf& x) { return _mm512_reduce_max_ps((__m512)x); }
static inline __m256 Fold(const vf& x) {
  return _mm256_add_ps(_mm512_castps512_ps256((__m512)x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd((__m512)x), 1)));
}
static inline void hsum4(const vf& a, const vf& b, const vf& c, const vf& d, float* out) {
  const __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(Fold(a), Fold(b)), _mm256_hadd_ps(Fold(c), Fold(d)));
  _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1)));
}
#include "paged_attention_impl.h"
#undef MOE_PA_FMA
}  // namespace avx512
#pragma GCC pop_options
#endif

// "avx512", "avx2" or "generic": the best the CPU has, capped by MOE_ATTN_ISA (read per call).
const char* Isa() {
#ifdef MOE_PA_X86
  const char* cap = std::getenv("MOE_ATTN_ISA");
  const bool noAvx2 = cap != nullptr && std::strcmp(cap, "generic") == 0;
  const bool noAvx512 = noAvx2 || (cap != nullptr && std::strcmp(cap, "avx2") == 0);
  if (!noAvx512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx512";
  if (!noAvx2 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "generic";
}

// pagedAttention(engine, out, q, kCache, vCache, blockTables, queryStart, contextLens,
//                S, NH, KVH, HS, blockSize, maxBlocksPerSeq, window, scale, bf16)
Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  PagedArgs a{};
  a.out = Ptr<float>(info[1]);
  a.q = Ptr<float>(info[2]);
  a.k = Ptr<void>(info[3]);
  a.v = Ptr<void>(info[4]);
  a.tables = Ptr<int32_t>(info[5]);
  a.qstart = Ptr<int32_t>(info[6]);
  a.ctx = Ptr<int32_t>(info[7]);
  a.S = I32(info[8]);
  a.NH = I32(info[9]);
  a.KVH = I32(info[10]);
  a.HS = I32(info[11]);
  a.bs = I32(info[12]);
  a.maxBlocks = I32(info[13]);
  a.window = I32(info[14]);
  a.scale = static_cast<float>(F64(info[15]));
  a.bf16 = Bool(info[16]);
  const char* isa = Isa();
#ifdef MOE_PA_X86
  if (std::strcmp(isa, "avx512") == 0) avx512::Forward(e->pool, a);
  else if (std::strcmp(isa, "avx2") == 0) avx2::Forward(e->pool, a);
  else generic::Forward(e->pool, a);
#else
  generic::Forward(e->pool, a);
#endif
  return info.Env().Undefined();
}

inline uint16_t EncBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>(((u >> 16) & 0x8000u) | 0x7FC0u);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// pagedWrite(engine, kCache, vCache, k, v, slotMapping, KVH, HS, bf16)
Napi::Value PagedWrite(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  void* kc = Ptr<void>(info[1]);
  void* vc = Ptr<void>(info[2]);
  const float* k = Ptr<float>(info[3]);
  const float* v = Ptr<float>(info[4]);
  const int32_t* slots = Ptr<int32_t>(info[5]);
  const int64_t N = Len(info[5]);
  const size_t row = (size_t)I32(info[6]) * I32(info[7]);
  const bool bf16 = Bool(info[8]);
  // A few rows per call in decode: threads only pay off for prefill chunks.
  auto body = [&](int, int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      if (slots[i] < 0) continue;
      const size_t d = (size_t)slots[i] * row, s = (size_t)i * row;
      if (bf16) {
        uint16_t* kd = static_cast<uint16_t*>(kc) + d;
        uint16_t* vd = static_cast<uint16_t*>(vc) + d;
        for (size_t c = 0; c < row; ++c) kd[c] = EncBf16(k[s + c]), vd[c] = EncBf16(v[s + c]);
      } else {
        std::memcpy(static_cast<float*>(kc) + d, k + s, row * sizeof(float));
        std::memcpy(static_cast<float*>(vc) + d, v + s, row * sizeof(float));
      }
    }
  };
  if ((size_t)N * row < (1u << 16)) body(0, 0, N);
  else e->pool.parallel_for(N, body);
  return info.Env().Undefined();
}

}  // namespace paged

void RegisterPagedAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("pagedAttention", Napi::Function::New(env, paged::PagedAttention));
  exports.Set("pagedWrite", Napi::Function::New(env, paged::PagedWrite));
  exports.Set("pagedAttentionIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::String::New(info.Env(), paged::Isa());
  }));
}

}  // namespace moe
