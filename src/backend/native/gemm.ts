// Native GEMM family: thin wrappers over the addon (native/gemm.cc). Arguments were validated
// by checks/gemm.ts; defaults of the spec (alpha 1, beta 0, weight-grad beta 1) are applied here.
// Not: the quantised GEMM (`nativeQuant` belongs to the quant area).
import type { GemmKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";
import { denseClass, groupedClass, type GemmRouter } from "./gemm-calibrate.js";

/** router: the calibrated `auto` mode picks the path per call; absent, the engine's fixed path. */
export function nativeGemm(addon: Addon, engine: EngineHandle, router?: GemmRouter): GemmKernels {
  // precision "bf16": the AVX512_BF16 kernel (native/gemm_bf16.cc), which throws on other CPUs
  return {
    gemm(a, b, c, p) {
      if (p.precision === "bf16") return void addon.gemmBf16!(engine, a, b, c, p.M, p.N, p.K, p.transA ?? false, p.transB ?? false, p.alpha ?? 1, p.beta ?? 0);
      router?.use(denseClass(p.M, p.N, p.K));
      addon.gemm!(engine, a, b, c, p.M, p.N, p.K, p.transA ?? false, p.transB ?? false, p.alpha ?? 1, p.beta ?? 0);
    },
    batchedGemm(a, b, c, p) {
      if (p.precision === "bf16") return void addon.batchedGemmBf16!(engine, a, b, c, p.batch, p.M, p.N, p.K, p.transA ?? false, p.transB ?? false, p.alpha ?? 1, p.beta ?? 0);
      router?.use(denseClass(p.M, p.N, p.K, 2 * p.batch * p.M * p.N * p.K));
      addon.batchedGemm!(engine, a, b, c, p.batch, p.M, p.N, p.K, p.transA ?? false, p.transB ?? false, p.alpha ?? 1, p.beta ?? 0);
    },
    groupedGemm(x, w, y, sizes, p) {
      if (p.precision === "bf16") return void addon.groupedGemmBf16!(engine, x, w, y, sizes, p.K, p.N, p.transW ?? false, p.beta ?? 0);
      router?.use(groupedClass(sizes, p.K, p.N));
      addon.groupedGemm!(engine, x, w, y, sizes, p.K, p.N, p.transW ?? false, p.beta ?? 0);
    },
    groupedGemmWeightGrad(x, dy, dw, sizes, p) {
      if (p.precision === "bf16") return void addon.groupedGemmWeightGradBf16!(engine, x, dy, dw, sizes, p.K, p.N, p.transW ?? false, p.beta ?? 1);
      router?.use(groupedClass(sizes, p.K, p.N));
      addon.groupedGemmWeightGrad!(engine, x, dy, dw, sizes, p.K, p.N, p.transW ?? false, p.beta ?? 1);
    },
  };
}

// STUB: the quant area replaces this export.
