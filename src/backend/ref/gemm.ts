// STUB: replaced by the gemm area implementation.
import type { GemmKernels, QuantKernels } from "../spec.js";
export const refGemm = {} as GemmKernels;
export const refQuant = {} as QuantKernels;
