// Native routing primitives: calls into native/route.cc (parallel over rows or column
// blocks, bitwise independent of the thread count). Arguments were validated by
// checks/route.ts.
import type { RouteKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";

export function nativeRoute(addon: Addon, engine: EngineHandle): RouteKernels {
  return {
    topk: (values, indices, x, N, E, K) => addon.topk!(engine, values, indices, x, N, E, K),
    sortByKey: (perm, keys, numKeys) => addon.sortByKey!(engine, perm, keys, numKeys),
    histogram: (counts, keys, numBins) => addon.histogram!(engine, counts, keys, numBins),
    cumsum: (out, x, exclusive) => addon.cumsum!(engine, out, x, exclusive),
    gather: (out, x, idx, N, C) => addon.gather!(engine, out, x, idx, N, C),
    scatterAdd: (out, x, idx, w, N, C) => addon.scatterAdd!(engine, out, x, idx, w, N, C),
    scatterAddBackward: (dx, dw, dout, x, idx, w, N, C) => addon.scatterAddBackward!(engine, dx, dw, dout, x, idx, w, N, C),
  };
}
