// Reference gemmQuant: decode every weight code to its exact value (src/core/dtype.ts),
// then y[m,n] = scale · Σ_k x[m,k]·decode(w[n,k]) summed in f64, + beta·y.
// Not: fast — the oracle for native/convert.cc's gemmQuant.
import type { QuantDtype, QuantGemmParams, QuantKernels } from "../spec.js";
import { decodeTable } from "../../core/dtype.js";

/** Exact value of every weight code, as a Float64Array (N·K). */
export function dequantCodes(w: Uint16Array | Uint8Array | Int8Array, dtype: QuantDtype): Float64Array {
  const out = new Float64Array(w.length);
  if (dtype === "int8") {
    for (let i = 0; i < w.length; i++) out[i] = w[i]!;
    return out;
  }
  const table = decodeTable(dtype);
  for (let i = 0; i < w.length; i++) out[i] = table[w[i]!]!;
  return out;
}

export const refQuant: QuantKernels = {
  gemmQuant(x: Float32Array, w: Uint16Array | Uint8Array | Int8Array, scales: Float32Array, y: Float32Array, p: QuantGemmParams): void {
    const { M, N, K } = p;
    const beta = p.beta ?? 0;
    const wd = dequantCodes(w, p.dtype);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k]! * wd[n * K + k]!;
        const v = s * scales[scales.length === 1 ? 0 : n]!;
        y[m * N + n] = beta === 0 ? v : v + beta * y[m * N + n]!;
      }
    }
  },
};
