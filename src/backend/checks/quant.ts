// Argument checks of gemmQuant: dims, dtype name, the weight array's class matching the
// dtype (Uint16Array for bf16/f16, Uint8Array for fp8, Int8Array for int8), exact
// lengths, scales of length 1 or N, finite beta, and y not aliasing any input.
// Not: value checks on the codes (every code, NaN codes included, decodes to something).
import type { QuantKernels } from "../spec.js";
import { dim, f32, fail, finite, noAlias, u16, u8, type Checks } from "./common.js";

const DTYPES = ["bf16", "f16", "fp8_e4m3", "fp8_e5m2", "int8"];

export const checkQuant: Checks<QuantKernels> = {
  gemmQuant(x, w, scales, y, p) {
    const k = "gemmQuant";
    if (typeof p !== "object" || p === null) fail(k, "params must be an object {M, N, K, dtype, beta?}");
    const M = dim(k, "M", p.M), N = dim(k, "N", p.N), K = dim(k, "K", p.K);
    if (!DTYPES.includes(p.dtype)) fail(k, `dtype must be one of ${DTYPES.join(", ")}, got ${String(p.dtype)}`);
    if (p.beta !== undefined) finite(k, "beta", p.beta);
    f32(k, "x", x, M * K);
    f32(k, "y", y, M * N);
    if (p.dtype === "bf16" || p.dtype === "f16") u16(k, "w", w, N * K);
    else if (p.dtype === "int8") {
      if (!(w instanceof Int8Array)) fail(k, `w must be an Int8Array for dtype int8, got ${ArrayBuffer.isView(w) ? w.constructor.name : typeof w}`);
      if (w.length !== N * K) fail(k, `w has ${w.length} elements, expected ${N * K}`);
    } else u8(k, "w", w, N * K);
    if (!(scales instanceof Float32Array)) fail(k, `scales must be a Float32Array, got ${ArrayBuffer.isView(scales) ? (scales as ArrayBufferView).constructor.name : typeof scales}`);
    if (scales.length !== 1 && scales.length !== N) fail(k, `scales has ${scales.length} elements, expected 1 (per tensor) or N = ${N} (per row)`);
    noAlias(k, "y", y, "x", x);
    noAlias(k, "y", y, "w", w);
    noAlias(k, "y", y, "scales", scales);
  },
};
