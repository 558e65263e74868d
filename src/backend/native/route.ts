// STUB: replaced by the route area implementation.
import type { RouteKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";
export function nativeRoute(_a: Addon, _e: EngineHandle): RouteKernels { return {} as RouteKernels; }

