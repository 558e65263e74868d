// STUB: replaced by the attention area implementation.
import type { AttentionKernels } from "../spec.js";
import type { Checks } from "./common.js";
export const checkAttention = {} as Checks<AttentionKernels>;

