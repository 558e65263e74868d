// Convert kernels (placeholder until implemented).
#include "common.h"
namespace moe {
void RegisterConvert(Napi::Env, Napi::Object) {}
}  // namespace moe
