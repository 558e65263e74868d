// Native RoPE (HF rotate_half), forward and backward (the backward is the rotation by −angle).
// The cos/sin table is built in double per call from positions and inverse frequencies (given
// by the TypeScript rope-scaling code, or θ^(−2i/rd)); rotation in double, stored as f32.
// What it is not: a validator (TypeScript checked shapes and aliasing), or a cache of tables.
#include <cmath>
#include <cstring>
#include <vector>

#include "common.h"

namespace moe {
namespace {

// Below this many elements of work a call stays on the calling thread.
constexpr int64_t kGrain = 16384;

// RoPE (HF rotate_half). ropeForward / ropeBackward(e, out, x, pos, B, T, H, HS, rotaryDim, theta,
// invFreq (Float64Array(rotaryDim/2) or null: θ^(−2i/rd)), scale (cos and sin multiplied by it))

template <int Sign>
void Rope(const Napi::CallbackInfo& info) {
  Engine* e = GetEngine(info);
  float* out = Ptr<float>(info[1]);
  const float* x = Ptr<float>(info[2]);
  const int32_t* pos = Ptr<int32_t>(info[3]);
  const int64_t B = I64(info[4]), T = I64(info[5]), H = I64(info[6]), HS = I64(info[7]), rd = I64(info[8]);
  const double theta = F64(info[9]);
  const double* givenFreq = PtrOrNull<double>(info[10]);
  const double scale = F64(info[11]);
  const int64_t half = rd / 2;
  // cos/sin table (T, half) in double; angle = pos·invFreq[i], invFreq = θ^(−2i/rd) unless given.
  std::vector<double> invFreq(half), cs(T * half), sn(T * half);
  for (int64_t i = 0; i < half; ++i) invFreq[i] = givenFreq ? givenFreq[i] : std::pow(theta, -2.0 * double(i) / double(rd));
  ParallelRows(e, T, half * 8, kGrain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t i = 0; i < half; ++i) {
        const double a = double(pos[t]) * invFreq[i];
        cs[t * half + i] = scale * std::cos(a);
        sn[t * half + i] = Sign * scale * std::sin(a);
      }
    }
  });
  const bool inPlace = out == x;
  ParallelRows(e, B * T * H, HS, kGrain, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t t = (row / H) % T;
      const double* c = cs.data() + t * half;
      const double* s = sn.data() + t * half;
      const float* xi = x + row * HS;
      float* o = out + row * HS;
      for (int64_t i = 0; i < half; ++i) {
        const double x1 = xi[i], x2 = xi[i + half];
        o[i] = float(x1 * c[i] - x2 * s[i]);
        o[i + half] = float(x2 * c[i] + x1 * s[i]);
      }
      if (!inPlace && rd < HS) std::memcpy(o + rd, xi + rd, sizeof(float) * (HS - rd));
    }
  });
}

}  // namespace

void RegisterRope(Napi::Env env, Napi::Object exports) {
  exports.Set("ropeForward", Napi::Function::New(env, Void<Rope<1>>, "ropeForward"));
  exports.Set("ropeBackward", Napi::Function::New(env, Void<Rope<-1>>, "ropeBackward"));
}

}  // namespace moe
