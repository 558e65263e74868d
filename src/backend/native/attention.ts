// STUB: replaced by the attention area implementation.
import type { AttentionKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";
export function nativeAttention(_a: Addon, _e: EngineHandle): AttentionKernels { return {} as AttentionKernels; }

