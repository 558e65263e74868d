// Attention kernels (placeholder until implemented).
#include "common.h"
namespace moe {
void RegisterAttention(Napi::Env, Napi::Object) {}
}  // namespace moe
