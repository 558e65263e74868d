// Reference GGUF block kernels: dequantise every weight row with src/core/quant-blocks.ts
// (ggml's values bit for bit), then y[m,n] = Σ_k x[m,k]·w[n,k] summed in f64, + beta·y.
// Not: fast — the oracle for native/quant_blocks.cc.
import type { QuantBlockKernels } from "../spec.js";
import { dequantizeBlock } from "../../core/quant-blocks.js";

export const refQuantBlocks: QuantBlockKernels = {
  gemmQuantBlock(x, w, y, p) {
    const { M, N, K } = p;
    const beta = p.beta ?? 0;
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
