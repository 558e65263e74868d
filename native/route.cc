// Route kernels (placeholder until implemented).
#include "common.h"
namespace moe {
void RegisterRoute(Napi::Env, Napi::Object) {}
}  // namespace moe
