// STUB: replaced by the gemm area implementation.
import type { GemmKernels, QuantKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";
export function nativeGemm(_a: Addon, _e: EngineHandle): GemmKernels { return {} as GemmKernels; }
export function nativeQuant(_a: Addon, _e: EngineHandle): QuantKernels { return {} as QuantKernels; }
