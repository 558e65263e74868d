// STUB: replaced by the gemm area implementation.
import type { GemmKernels, QuantKernels } from "../spec.js";
import type { Checks } from "./common.js";
export const checkGemm = {} as Checks<GemmKernels>;
export const checkQuant = {} as Checks<QuantKernels>;
