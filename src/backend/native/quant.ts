// Native gemmQuant: calls native/convert.cc (weight panels decoded into f32 tiles, then
// FMA dot products, parallel over N). Arguments were validated by checks/quant.ts.
import type { QuantDtype, QuantKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";

const DTYPE_CODE: { readonly [K in QuantDtype]: number } = { bf16: 0, f16: 1, fp8_e4m3: 2, fp8_e5m2: 3, int8: 4 };

export function nativeQuant(addon: Addon, engine: EngineHandle): QuantKernels {
  return {
    gemmQuant: (x, w, scales, y, p) => addon.gemmQuant!(engine, x, w, scales, y, p.M, p.N, p.K, DTYPE_CODE[p.dtype], p.beta ?? 0),
  };
}
