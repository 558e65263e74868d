// STUB: replaced by the ops area implementation.
import type { OpsKernels } from "../spec.js";
export const refOps = {} as OpsKernels;

