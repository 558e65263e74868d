// Argument checks of the dtype conversions: exact types and lengths (out and x have
// the same element count), fp8 format name, scale a positive finite f32, no aliasing.
// Not: value checks — every f32 (NaN and ±Inf included) has a defined conversion.
import type { ConvertKernels } from "../spec.js";
import { f32, fail, noAlias, u16, u8, type Checks } from "./common.js";

function lengthOf(kernel: string, x: unknown): number {
  if (!ArrayBuffer.isView(x)) fail(kernel, `x must be a typed array, got ${x === null ? "null" : typeof x}`);
  return (x as unknown as { length: number }).length;
}

function format(kernel: string, v: unknown): void {
  if (v !== "e4m3" && v !== "e5m2") fail(kernel, `format must be 'e4m3' or 'e5m2', got ${String(v)}`);
}

function scale(kernel: string, v: unknown): void {
  if (v === undefined) return;
  if (typeof v !== "number" || !(Math.fround(v) > 0) || !Number.isFinite(Math.fround(v))) {
    fail(kernel, `scale must be a positive number finite and non-zero in f32, got ${String(v)}`);
  }
}

export const checkConvert: Checks<ConvertKernels> = {
  f32ToBf16(out, x) {
    const n = lengthOf("f32ToBf16", x);
    f32("f32ToBf16", "x", x, n);
    u16("f32ToBf16", "out", out, n);
    noAlias("f32ToBf16", "out", out, "x", x);
  },
  bf16ToF32(out, x) {
    const n = lengthOf("bf16ToF32", x);
    u16("bf16ToF32", "x", x, n);
    f32("bf16ToF32", "out", out, n);
    noAlias("bf16ToF32", "out", out, "x", x);
  },
  f32ToF16(out, x) {
    const n = lengthOf("f32ToF16", x);
    f32("f32ToF16", "x", x, n);
    u16("f32ToF16", "out", out, n);
    noAlias("f32ToF16", "out", out, "x", x);
  },
  f16ToF32(out, x) {
    const n = lengthOf("f16ToF32", x);
    u16("f16ToF32", "x", x, n);
    f32("f16ToF32", "out", out, n);
    noAlias("f16ToF32", "out", out, "x", x);
  },
  f32ToFp8(out, x, fmt, s) {
    const n = lengthOf("f32ToFp8", x);
    f32("f32ToFp8", "x", x, n);
    u8("f32ToFp8", "out", out, n);
    format("f32ToFp8", fmt);
    scale("f32ToFp8", s);
    noAlias("f32ToFp8", "out", out, "x", x);
  },
  fp8ToF32(out, x, fmt, s) {
    const n = lengthOf("fp8ToF32", x);
    u8("fp8ToF32", "x", x, n);
    f32("fp8ToF32", "out", out, n);
    format("fp8ToF32", fmt);
    scale("fp8ToF32", s);
    noAlias("fp8ToF32", "out", out, "x", x);
  },
};
