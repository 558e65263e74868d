// GEMM kernels (placeholder until implemented).
#include "common.h"
namespace moe {
void RegisterGemm(Napi::Env, Napi::Object) {}
std::string GemmPathName(const Engine& e) { return e.gemm == GemmPath::Blas ? "openblas" : "builtin-scalar"; }
bool BlasLinked() {
#ifdef MOE_HAVE_CBLAS
  return true;
#else
  return false;
#endif
}
void ConfigureBlasThreads(int) {}
}  // namespace moe
