// STUB: replaced by the route area implementation.
import type { RouteKernels } from "../spec.js";
import type { Checks } from "./common.js";
export const checkRoute = {} as Checks<RouteKernels>;

