// Ops kernels (placeholder until implemented).
#include "common.h"
namespace moe {
void RegisterOps(Napi::Env, Napi::Object) {}
}  // namespace moe
