// Reference dtype conversions: thin bindings of the scalar codecs in src/core/dtype.ts
// (arithmetic round-half-to-even, independent of the native bit manipulation).
// Not: fast — one scalar call per element.
import type { ConvertKernels, Fp8Format } from "../spec.js";
import { decodeArray, encodeArray, type NarrowFloat } from "../../core/dtype.js";

const fp8 = (format: Fp8Format): NarrowFloat => (format === "e4m3" ? "fp8_e4m3" : "fp8_e5m2");

export const refConvert: ConvertKernels = {
  f32ToBf16: (out, x) => encodeArray("bf16", out, x),
  bf16ToF32: (out, x) => decodeArray("bf16", out, x),
  f32ToF16: (out, x) => encodeArray("f16", out, x),
  f16ToF32: (out, x) => decodeArray("f16", out, x),
  f32ToFp8: (out, x, format, scale = 1) => encodeArray(fp8(format), out, x, scale),
  fp8ToF32: (out, x, format, scale = 1) => decodeArray(fp8(format), out, x, scale),
};
