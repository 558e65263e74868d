// STUB: replaced by the attention area implementation.
import type { AttentionKernels } from "../spec.js";
export const refAttention = {} as AttentionKernels;

