// Argument checks of the routing primitives: exact lengths, the range of every key and
// index (scanned in TypeScript), NaN-free topk input, K ≤ E, and no aliasing between
// outputs and inputs (cumsum alone may run in place, on exactly the same memory).
// Not: value checks on float data other than topk's NaN scan.
import type { RouteKernels } from "../spec.js";
import { dim, fail, farr, i32, indicesInRange, noAlias, sameDtype, type Checks } from "./common.js";

/** An Int32Array of any length; returns its length. */
function i32Any(kernel: string, name: string, x: unknown): number {
  const len = x instanceof Int32Array ? x.length : -1;
  i32(kernel, name, x, len);
  return len;
}

function noAliasAll(kernel: string, outs: Record<string, ArrayBufferView>, ins: Record<string, ArrayBufferView | null>): void {
  const o = Object.entries(outs);
  for (const [on, oa] of o) {
    for (const [inName, ia] of Object.entries(ins)) if (ia) noAlias(kernel, on, oa, inName, ia);
  }
  for (let a = 0; a < o.length; a++) for (let b = a + 1; b < o.length; b++) noAlias(kernel, o[a]![0], o[a]![1], o[b]![0], o[b]![1]);
}

export const checkRoute: Checks<RouteKernels> = {
  topk(values, indices, x, N, E, K) {
    const k = "topk";
    dim(k, "N", N);
    dim(k, "E", E);
    dim(k, "K", K);
    if (K > E) fail(k, `K = ${K} exceeds E = ${E}`);
    farr(k, "x", x, N * E);
    farr(k, "values", values, N * K);
    i32(k, "indices", indices, N * K);
    sameDtype(k, { values, x });
    noAliasAll(k, { values, indices }, { x });
    for (let i = 0; i < x.length; i++) {
      if (Number.isNaN(x[i]!)) fail(k, `x[${i}] is NaN (row ${Math.floor(i / E)}); top-k of NaN is undefined`);
    }
  },

  sortByKey(perm, keys, numKeys) {
    const k = "sortByKey";
    dim(k, "numKeys", numKeys);
    const n = i32Any(k, "keys", keys);
    i32(k, "perm", perm, n);
    noAlias(k, "perm", perm, "keys", keys);
    indicesInRange(k, "keys", keys, 0, numKeys);
  },

  histogram(counts, keys, numBins) {
    const k = "histogram";
    dim(k, "numBins", numBins);
    i32Any(k, "keys", keys);
    i32(k, "counts", counts, numBins);
    noAlias(k, "counts", counts, "keys", keys);
    indicesInRange(k, "keys", keys, 0, numBins);
  },

  cumsum(out, x, exclusive) {
    const k = "cumsum";
    const n = i32Any(k, "x", x);
    i32(k, "out", out, n);
    if (typeof exclusive !== "boolean") fail(k, `exclusive must be a boolean, got ${String(exclusive)}`);
    const inPlace = out.buffer === x.buffer && out.byteOffset === x.byteOffset;
    if (!inPlace) noAlias(k, "out", out, "x", x);
  },

  gather(out, x, idx, N, C) {
    const k = "gather";
    dim(k, "N", N);
    dim(k, "C", C);
    const M = i32Any(k, "idx", idx);
    farr(k, "x", x, N * C);
    farr(k, "out", out, M * C);
    sameDtype(k, { out, x });
    noAliasAll(k, { out }, { x, idx });
    indicesInRange(k, "idx", idx, 0, N);
  },

  scatterAdd(out, x, idx, w, N, C) {
    const k = "scatterAdd";
    dim(k, "N", N);
    dim(k, "C", C);
    const M = i32Any(k, "idx", idx);
    farr(k, "out", out, N * C);
    farr(k, "x", x, M * C);
    if (w !== null) farr(k, "w", w, M);
    sameDtype(k, { out, x, w });
    noAliasAll(k, { out }, { x, idx, w });
    indicesInRange(k, "idx", idx, 0, N);
  },

  scatterAddBackward(dx, dw, dout, x, idx, w, N, C) {
    const k = "scatterAddBackward";
    dim(k, "N", N);
    dim(k, "C", C);
    const M = i32Any(k, "idx", idx);
    farr(k, "dx", dx, M * C);
    farr(k, "dw", dw, M);
    farr(k, "dout", dout, N * C);
    farr(k, "x", x, M * C);
    farr(k, "w", w, M);
    sameDtype(k, { dx, dw, dout, x, w });
    noAliasAll(k, { dx, dw }, { dout, x, idx, w });
    indicesInRange(k, "idx", idx, 0, N);
  },
};

