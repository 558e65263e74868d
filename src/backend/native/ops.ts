// STUB: replaced by the ops area implementation.
import type { OpsKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";
export function nativeOps(_a: Addon, _e: EngineHandle): OpsKernels { return {} as OpsKernels; }

