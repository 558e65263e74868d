// N-API entry: engine lifecycle, CPU facts, and each kernel area's registration.
#include <napi.h>
#include <thread>
#include <vector>
#include "common.h"

namespace moe {
namespace {

std::vector<std::string> CpuFeatures() {
  std::vector<std::string> f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("sse4.2")) f.push_back("sse4.2");
  if (__builtin_cpu_supports("avx")) f.push_back("avx");
  if (__builtin_cpu_supports("avx2")) f.push_back("avx2");
  if (__builtin_cpu_supports("fma")) f.push_back("fma");
  if (__builtin_cpu_supports("avx512f")) f.push_back("avx512f");
  if (__builtin_cpu_supports("avx512bw")) f.push_back("avx512bw");
  if (__builtin_cpu_supports("avx512vl")) f.push_back("avx512vl");
#endif
  return f;
}

// createEngine(threads: number, gemm: "blas" | "builtin") -> External<Engine>
Napi::Value CreateEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int threads = I32(info[0]);
  std::string path = Str(info[1]);
  if (threads < 1 || threads > 1024) {
    Napi::RangeError::New(env, "createEngine: threads must be in [1, 1024]").ThrowAsJavaScriptException();
    return env.Null();
  }
  GemmPath gp = path == "blas" ? GemmPath::Blas : GemmPath::Builtin;
  if (gp == GemmPath::Blas && !BlasLinked()) {
    Napi::Error::New(env, "createEngine: gemm 'blas' requested but the engine was built without CBLAS").ThrowAsJavaScriptException();
    return env.Null();
  }
  auto* e = new Engine(threads, gp);
  ConfigureBlasThreads(threads);
  return Napi::External<Engine>::New(env, e, [](Napi::Env, Engine* p) { delete p; });
}

Napi::Value EngineInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Engine* e = GetEngine(info);
  Napi::Object o = Napi::Object::New(env);
  o.Set("threads", e->threads);
  o.Set("gemm", GemmPathName(*e));
  o.Set("blasAvailable", BlasLinked());
  auto feats = CpuFeatures();
  Napi::Array a = Napi::Array::New(env, feats.size());
  for (size_t i = 0; i < feats.size(); ++i) a.Set(static_cast<uint32_t>(i), feats[i]);
  o.Set("cpuFeatures", a);
  return o;
}

Napi::Value HardwareThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), std::thread::hardware_concurrency());
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("createEngine", Napi::Function::New(env, CreateEngine));
  exports.Set("engineInfo", Napi::Function::New(env, EngineInfo));
  exports.Set("hardwareThreads", Napi::Function::New(env, HardwareThreads));
  exports.Set("blasLinked", Napi::Boolean::New(env, BlasLinked()));
  RegisterGemm(env, exports);
  RegisterAttention(env, exports);
  RegisterOps(env, exports);
  RegisterRoute(env, exports);
  RegisterConvert(env, exports);
  RegisterPagedAttention(env, exports);
  RegisterQuantBlocks(env, exports);
  RegisterRope(env, exports);
  return exports;
}

}  // namespace moe

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return moe::Init(env, exports); }
NODE_API_MODULE(moe_native, InitModule)
