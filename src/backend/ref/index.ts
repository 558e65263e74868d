// The `ref` backend: plain TypeScript loops in f32 or f64. It is the oracle every other
// backend is tested against, and the f64 path of finite-difference gradient checks.
// Not: fast. Never used for benchmarks except as the slow baseline.
import type { Backend } from "../spec.js";
import { withChecks } from "../checks/common.js";
import { checkKernels } from "../checks/index.js";
import { refGemm } from "./gemm.js";
import { refQuant } from "./quant.js";
import { refQuantBlocks } from "./quant-blocks.js";
import { refConvert } from "./convert.js";
import { refOps } from "./ops.js";
import { refAttention } from "./attention.js";
import { refRoute } from "./route.js";
import { refPagedAttention } from "./paged-attention.js";

export function createRefBackend(): Backend {
  const kernels = withChecks({ ...refGemm, ...refQuant, ...refQuantBlocks, ...refConvert, ...refOps, ...refAttention, ...refRoute, ...refPagedAttention }, checkKernels, false);
  return {
    ...kernels,
    name: "ref",
    info: () => ({ backend: "ref", threads: 1, gemm: "ts", blasAvailable: false, cpuFeatures: [] }),
  };
}
