// STUB: replaced by the convert area implementation.
import type { ConvertKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";
export function nativeConvert(_a: Addon, _e: EngineHandle): ConvertKernels { return {} as ConvertKernels; }

