// Shared helpers for the native kernels: the Engine (thread pool + GEMM path) and
// typed-array argument access. Argument *validation* happens in TypeScript
// (src/backend/checks); the native side trusts shapes and only unpacks pointers.
#pragma once
#include <napi.h>
#include <cstdint>
#include <string>
#include "pool.h"

namespace moe {

enum class GemmPath { Blas, Builtin };

// One engine per native backend instance. Created by createEngine(threads, gemmPath).
struct Engine {
  explicit Engine(int threads, GemmPath path) : pool(threads), threads(threads), gemm(path) {}
  ThreadPool pool;
  int threads;
  GemmPath gemm;
};

// f(begin, end) over [0, rows): on the calling thread when rows·workPerRow < minWork (or one
// thread), else split across the engine's pool. Each row is processed by exactly one thread.
template <class F>
void ParallelRows(Engine* e, int64_t rows, int64_t workPerRow, int64_t minWork, const F& f) {
  if (rows <= 0) return;
  if (e->threads == 1 || rows < 2 || rows * (workPerRow > 1 ? workPerRow : 1) < minWork) {
    f(int64_t{0}, rows);
    return;
  }
  e->pool.parallel_for(rows, [&](int, int64_t b, int64_t en) { f(b, en); });
}

// A kernel that returns nothing, as an N-API callback returning undefined.
template <void (*Fn)(const Napi::CallbackInfo&)>
Napi::Value Void(const Napi::CallbackInfo& info) {
  Fn(info);
  return info.Env().Undefined();
}

inline Engine* GetEngine(const Napi::CallbackInfo& info) {
  return info[0].As<Napi::External<Engine>>().Data();
}

// Raw data pointer of a TypedArray argument (no copy), byte offset applied. Taken from
// napi_get_typedarray_info, which also serves arrays over a SharedArrayBuffer (the ArrayBuffer()
// route gives a null pointer for those: a crash, not an error).
template <class T>
inline T* Ptr(const Napi::Value& v) {
  void* data = nullptr;
  napi_status st = napi_get_typedarray_info(v.Env(), v, nullptr, nullptr, &data, nullptr, nullptr);
  if (st != napi_ok) Napi::Error::Fatal("moe_native", "a kernel argument is not a TypedArray (the TypeScript wrapper checks this)");
  return static_cast<T*>(data);
}
// Pointer or nullptr when the argument is null/undefined.
template <class T>
inline T* PtrOrNull(const Napi::Value& v) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return Ptr<T>(v);
}
inline int64_t Len(const Napi::Value& v) { return static_cast<int64_t>(v.As<Napi::TypedArray>().ElementLength()); }
inline int64_t I64(const Napi::Value& v) { return v.As<Napi::Number>().Int64Value(); }
inline int I32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
inline double F64(const Napi::Value& v) { return v.As<Napi::Number>().DoubleValue(); }
inline bool Bool(const Napi::Value& v) { return v.As<Napi::Boolean>().Value(); }
inline std::string Str(const Napi::Value& v) { return v.As<Napi::String>().Utf8Value(); }

// Each area registers its functions on `exports`. Every kernel function takes the
// engine External as its first argument.
void RegisterGemm(Napi::Env env, Napi::Object exports);
void RegisterGemmBf16(Napi::Env env, Napi::Object exports);  // native/gemm_bf16.cc
void RegisterAttention(Napi::Env env, Napi::Object exports);
void RegisterOps(Napi::Env env, Napi::Object exports);
void RegisterRoute(Napi::Env env, Napi::Object exports);
void RegisterConvert(Napi::Env env, Napi::Object exports);
void RegisterPagedAttention(Napi::Env env, Napi::Object exports);
void RegisterQuantBlocks(Napi::Env env, Napi::Object exports);
void RegisterRope(Napi::Env env, Napi::Object exports);

// Area-provided facts for info(): GEMM path name actually used, whether CBLAS is linked.
std::string GemmPathName(const Engine& e);
bool BlasLinked();
// Called when an engine is created, so the GEMM area can configure the BLAS thread count.
void ConfigureBlasThreads(int threads);

}  // namespace moe
