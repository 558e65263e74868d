// Native GGUF block kernels: calls native/quant_blocks.cc (matrix-vector product with the
// blocks decoded in registers for M ≤ 8; panels dequantised to f32 and the built-in GEMM
// above). Arguments were validated by checks/quant-blocks.ts.
import type { BlockFormat, QuantBlockKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";

const FORMAT_CODE: { readonly [F in BlockFormat]: number } = { q8_0: 0, q4_0: 1, q4_k: 2, q6_k: 3 };

export function nativeQuantBlocks(addon: Addon, engine: EngineHandle): QuantBlockKernels {
  return {
    gemmQuantBlock: (x, w, y, p) => addon.gemmQuantBlock!(engine, x, w, y, p.M, p.N, p.K, FORMAT_CODE[p.format], p.beta ?? 0, p.activations === "q8"),
    dequantizeBlock: (out, w, format, n) => addon.dequantizeBlock!(engine, out, w, FORMAT_CODE[format], n),
  };
}
