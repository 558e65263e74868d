// Attention kernels: flash-style tiled causal attention (GQA, sliding window, Tk ≥ T),
// forward and backward, with a runtime choice between an AVX2+FMA build and a baseline
// build of the same code (attention_impl.h, included twice).
// Not: an argument validator (TypeScript checked shapes, dtypes and aliasing), and not
// a general masked-attention kernel (the mask is always causal + optional window).
//
// Both N-API functions return the scratch bytes they allocated (all threads together),
// so callers can see that memory is O(threads · tile · HS) plus O(T) — never O(T·Tk).
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
#define MOE_ATTN_X86 1
#endif

// Vector helpers are always inlined; the psABI notes about 32-byte vectors in the baseline
// build do not apply to any real call boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace moe {
namespace attn {

// Query rows and key rows per tile. 48 is a multiple of the 6-row register block and of
// the 16-float vector pair, so full tiles run without remainder code.
constexpr int kBR = 48;
constexpr int kBC = 48;

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

// Shapes follow spec.ts: q, out, dout, dq (B,T,NH,HS); k, v, dk, dv (B,Tk,KVH,HS); lse (B,NH,T).
// Forward writes out and lse; backward reads them.
struct AttnArgs {
  int B, T, Tk, NH, KVH, HS, window;
  float scale;
  const float *q, *k, *v, *dout;
  float *out, *lse, *dq, *dk, *dv;
};

namespace generic {
#define MOE_ATTN_FMA(a, b, c) ((a) * (b) + (c))
#include "attention_impl.h"
#undef MOE_ATTN_FMA
}  // namespace generic

#ifdef MOE_ATTN_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
#define MOE_ATTN_FMA(a, b, c) ((v8)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#include "attention_impl.h"
#undef MOE_ATTN_FMA
}  // namespace avx2
#pragma GCC pop_options
#endif

// AVX2+FMA when the CPU has it, unless MOE_ATTN_ISA=generic (read per call; used by the
// tests to cover the baseline build on AVX2 machines).
bool UseAvx2() {
#ifdef MOE_ATTN_X86
  const char* isa = std::getenv("MOE_ATTN_ISA");
  if (isa != nullptr && std::strcmp(isa, "generic") == 0) return false;
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

double RunForward(Engine* e, const AttnArgs& a) {
#ifdef MOE_ATTN_X86
  if (UseAvx2()) return avx2::Forward(e->pool, a);
#endif
  return generic::Forward(e->pool, a);
}

double RunBackward(Engine* e, const AttnArgs& a) {
#ifdef MOE_ATTN_X86
  if (UseAvx2()) return avx2::Backward(e->pool, a);
#endif
  return generic::Backward(e->pool, a);
}

// Trailing numeric arguments shared by both functions: B, T, Tk, NH, KVH, HS, window, scale.
void ReadDims(const Napi::CallbackInfo& info, size_t at, AttnArgs& a) {
  a.B = I32(info[at]);
  a.T = I32(info[at + 1]);
  a.Tk = I32(info[at + 2]);
  a.NH = I32(info[at + 3]);
  a.KVH = I32(info[at + 4]);
  a.HS = I32(info[at + 5]);
  a.window = I32(info[at + 6]);
  a.scale = static_cast<float>(F64(info[at + 7]));
}

// attentionForward(engine, out, lse, q, k, v, B, T, Tk, NH, KVH, HS, window, scale) -> scratch bytes
Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  AttnArgs a{};
  a.out = Ptr<float>(info[1]);
  a.lse = Ptr<float>(info[2]);
  a.q = Ptr<float>(info[3]);
  a.k = Ptr<float>(info[4]);
  a.v = Ptr<float>(info[5]);
  ReadDims(info, 6, a);
  return Napi::Number::New(info.Env(), RunForward(e, a));
}

// attentionBackward(engine, dq, dk, dv, dout, q, k, v, out, lse, B, T, Tk, NH, KVH, HS, window, scale) -> scratch bytes
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  AttnArgs a{};
  a.dq = Ptr<float>(info[1]);
  a.dk = Ptr<float>(info[2]);
  a.dv = Ptr<float>(info[3]);
  a.dout = Ptr<float>(info[4]);
  a.q = Ptr<float>(info[5]);
  a.k = Ptr<float>(info[6]);
  a.v = Ptr<float>(info[7]);
  a.out = Ptr<float>(info[8]);  // read only in backward
  a.lse = Ptr<float>(info[9]);  // read only in backward
  ReadDims(info, 10, a);
  return Napi::Number::New(info.Env(), RunBackward(e, a));
}

}  // namespace attn

void RegisterAttention(Napi::Env env, Napi::Object exports) {
  exports.Set("attentionForward", Napi::Function::New(env, attn::AttentionForward));
  exports.Set("attentionBackward", Napi::Function::New(env, attn::AttentionBackward));
  exports.Set("attentionIsa", Napi::Function::New(env, [](const Napi::CallbackInfo& info) -> Napi::Value {
    return Napi::String::New(info.Env(), attn::UseAvx2() ? "avx2-fma" : "generic");
  }));
}

}  // namespace moe
