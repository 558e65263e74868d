// STUB: replaced by the route area implementation.
import type { RouteKernels } from "../spec.js";
export const refRoute = {} as RouteKernels;

