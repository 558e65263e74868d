// Native dtype conversions: calls into native/convert.cc (bit manipulation, parallel
// over chunks). Arguments were validated by checks/convert.ts.
import type { ConvertKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";

export function nativeConvert(addon: Addon, engine: EngineHandle): ConvertKernels {
  return {
    f32ToBf16: (out, x) => addon.f32ToBf16!(engine, out, x),
    bf16ToF32: (out, x) => addon.bf16ToF32!(engine, out, x),
    f32ToF16: (out, x) => addon.f32ToF16!(engine, out, x),
    f16ToF32: (out, x) => addon.f16ToF32!(engine, out, x),
    f32ToFp8: (out, x, format, scale = 1) => addon.f32ToFp8!(engine, out, x, format === "e4m3" ? 0 : 1, scale),
    fp8ToF32: (out, x, format, scale = 1) => addon.fp8ToF32!(engine, out, x, format === "e4m3" ? 0 : 1, scale),
  };
}
