// A view of a backend whose GEMMs run at a chosen input precision (GemmPrecision in spec.ts), for
// training with train.gemm_dtype=bf16: every gemm / batchedGemm / groupedGemm /
// groupedGemmWeightGrad call that names no precision gets this one, while calls that name "f32"
// keep f32 (the model does so for the router, the shared-expert gate and the LM head:
// moe/layer.ts, model/forward.ts). Every other kernel is the base backend's own.
// Not: a second engine (the view shares the base backend's), nor a fallback: a precision the
// backend cannot run (bf16 on a CPU without AVX512_BF16) is refused when the view is made.
import type { Backend, GemmPrecision } from "./spec.js";
import { loadAddon } from "./native/addon.js";

export class GemmPrecisionError extends Error {
  override name = "GemmPrecisionError";
}

/** Throws GemmPrecisionError when the native engine cannot run `precision` on this CPU (no backend needed). */
export function checkNativeGemmPrecision(precision: GemmPrecision): void {
  if (precision === "f32" || loadAddon().bf16GemmAvailable!()) return;
  throw new GemmPrecisionError(`${precision} GEMMs are not available on the native backend: this CPU lacks AVX512_BF16 (or MOE_GEMM_ISA caps the ISA below avx512). Use train.gemm_dtype=f32.`);
}

/** be itself for "f32"; for "bf16", a view that defaults its GEMMs to bf16 (after a 1×1×1 probe call). */
export function withGemmPrecision(be: Backend, precision: GemmPrecision): Backend {
  if (precision !== "f32" && precision !== "bf16") throw new GemmPrecisionError(`gemm precision must be 'f32' or 'bf16', got ${JSON.stringify(precision)}`);
  if (precision === "f32") return be;
  try {
    const c = new Float32Array(1);
    be.gemm(Float32Array.of(1), Float32Array.of(1), c, { M: 1, N: 1, K: 1, precision });
    if (c[0] !== 1) throw new Error(`a 1×1×1 probe returned ${c[0]}, expected 1`);
  } catch (e) {
    const cpu = be.name === "native" ? ` (CPU features: ${be.info().cpuFeatures.join(" ") || "none reported"})` : "";
    throw new GemmPrecisionError(`${precision} GEMMs are not available on the ${be.name} backend${cpu}: ${(e as Error).message}. Use train.gemm_dtype=f32.`);
  }
  const at = <P extends { precision?: GemmPrecision }>(p: P): P => (p.precision === undefined ? { ...p, precision } : p);
  return {
    ...be,
    gemm: (a, b, c, p) => be.gemm(a, b, c, at(p)),
    batchedGemm: (a, b, c, p) => be.batchedGemm(a, b, c, at(p)),
    groupedGemm: (x, w, y, sizes, p) => be.groupedGemm(x, w, y, sizes, at(p)),
    groupedGemmWeightGrad: (x, dy, dw, sizes, p) => be.groupedGemmWeightGrad(x, dy, dw, sizes, at(p)),
  };
}
