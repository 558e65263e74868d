// Reference GGUF block kernels: dequantise every weight row with src/core/quant-blocks.ts
// (ggml's values bit for bit), then y[m,n] = Σ_k x[m,k]·w[n,k] summed in f64, + beta·y.
// activations "q8" (q8_0, M ≤ 8): llama.cpp's q8 activation rule (quantizeActivationsQ8), int block dots.
// Not: fast — the oracle for native/quant_blocks.cc and native/quant_q8act.cc.
import type { QuantBlockKernels } from "../spec.js";
import { dequantizeBlock } from "../../core/quant-blocks.js";
import { decodeF16 } from "../../core/dtype.js";

/** llama.cpp's q8 activation rule: per 32 values d = f32(max|x| / 127), q = round-half-even(f32(x · f32(1/d))). */
export function quantizeActivationsQ8(x: Float32Array, M: number, K: number): { q: Int8Array; d: Float32Array } {
  const nb = K / 32, q = new Int8Array(M * K), d = new Float32Array(M * nb);
  for (let m = 0; m < M; m++) {
    for (let b = 0; b < nb; b++) {
      const o = m * K + b * 32;
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[o + j]!));
      const db = Math.fround(amax / 127);
      const id = db !== 0 ? Math.fround(1 / db) : 0;
      d[m * nb + b] = db;
      for (let j = 0; j < 32; j++) {
        const v = Math.fround(x[o + j]! * id);
        let r = Math.round(v);
        if (r - v === 0.5 && r % 2 !== 0) r -= 1; // ties to even (Math.round takes ties up)
        q[o + j] = r;
      }
    }
  }
  return { q, d };
}

/** y = Σ_blocks f32(d_w · d_x) · (Σ q_w · q_x), in f64. */
function gemmQ8Activations(x: Float32Array, w: Uint8Array, y: Float32Array, M: number, N: number, K: number, beta: number): void {
  const { q, d } = quantizeActivationsQ8(x, M, K);
  const nb = K / 32;
  const dw = new Float32Array(N * nb);
  const wq = new Int8Array(w.buffer, w.byteOffset, w.length);
  for (let i = 0; i < N * nb; i++) dw[i] = decodeF16(w[34 * i]! | (w[34 * i + 1]! << 8));
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let b = 0; b < nb; b++) {
        const o = 34 * (n * nb + b) + 2, xo = m * K + 32 * b;
        let si = 0;
        for (let j = 0; j < 32; j++) si += wq[o + j]! * q[xo + j]!;
        s += Math.fround(dw[n * nb + b]! * d[m * nb + b]!) * si;
      }
      y[m * N + n] = beta === 0 ? s : s + beta * y[m * N + n]!;
    }
  }
}

export const refQuantBlocks: QuantBlockKernels = {
  gemmQuantBlock(x, w, y, p) {
    const { M, N, K } = p;
    const beta = p.beta ?? 0;
    if (p.activations === "q8" && M <= 8) return gemmQ8Activations(x, w, y, M, N, K, beta);
    const wd = new Float32Array(N * K);
    dequantizeBlock(wd, w, p.format, N * K);
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k]! * wd[n * K + k]!;
        y[m * N + n] = beta === 0 ? s : s + beta * y[m * N + n]!;
      }
    }
  },
  dequantizeBlock(out, w, format, n) {
    dequantizeBlock(out, w, format, n);
  },
};
