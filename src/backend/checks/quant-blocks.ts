// Argument checks of the GGUF block-quantised kernels: dims, format name, K a whole number
// of blocks, w a Uint8Array of exactly N·K/blockSize blocks, x/y/out Float32Array of the
// right length, finite beta, and outputs not aliasing inputs.
// Not: value checks on the blocks (every byte pattern decodes; an f16 NaN/Inf scale
// propagates as it does in ggml).
import type { QuantBlockKernels } from "../spec.js";
import { BLOCK_FORMATS, BLOCK_LAYOUT } from "../../core/quant-blocks.js";
import { dim, f32, fail, finite, noAlias, u8, type Checks } from "./common.js";

function layout(k: string, format: unknown): { blockSize: number; blockBytes: number } {
  if (typeof format !== "string" || !(BLOCK_FORMATS as readonly string[]).includes(format)) {
    fail(k, `format must be one of ${BLOCK_FORMATS.join(", ")}, got ${String(format)}`);
  }
  return BLOCK_LAYOUT[format as keyof typeof BLOCK_LAYOUT];
}

export const checkQuantBlocks: Checks<QuantBlockKernels> = {
  gemmQuantBlock(x, w, y, p) {
    const k = "gemmQuantBlock";
    if (typeof p !== "object" || p === null) fail(k, "params must be an object {M, N, K, format, beta?}");
    const M = dim(k, "M", p.M), N = dim(k, "N", p.N), K = dim(k, "K", p.K);
    const l = layout(k, p.format);
    if (K % l.blockSize !== 0) fail(k, `K = ${K} must be a multiple of ${p.format}'s block size ${l.blockSize}`);
    if (p.beta !== undefined) finite(k, "beta", p.beta);
    if (p.activations !== undefined && p.activations !== "f32" && p.activations !== "q8") fail(k, `activations must be "f32" or "q8", got ${String(p.activations)}`);
    if (p.activations === "q8" && p.format !== "q8_0") fail(k, `activations "q8" needs format q8_0, got ${p.format}`);
    f32(k, "x", x, M * K);
    f32(k, "y", y, M * N);
    u8(k, "w", w, N * (K / l.blockSize) * l.blockBytes);
    noAlias(k, "y", y, "x", x);
    noAlias(k, "y", y, "w", w);
  },
  dequantizeBlock(out, w, format, n) {
    const k = "dequantizeBlock";
    dim(k, "n", n);
    const l = layout(k, format);
    if (n % l.blockSize !== 0) fail(k, `n = ${n} must be a multiple of ${format}'s block size ${l.blockSize}`);
    f32(k, "out", out, n);
    u8(k, "w", w, (n / l.blockSize) * l.blockBytes);
    noAlias(k, "out", out, "w", w);
  },
};
