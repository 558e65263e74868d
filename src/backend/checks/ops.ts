// STUB: replaced by the ops area implementation.
import type { OpsKernels } from "../spec.js";
import type { Checks } from "./common.js";
export const checkOps = {} as Checks<OpsKernels>;

