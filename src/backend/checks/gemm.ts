// Argument checks for the GEMM family: dimensions, exact array lengths, one float dtype per
// call, finite alpha/beta, group sizes ≥ 0 summing to the row count, and no output aliasing an
// input. Not: the quantised GEMM's checks (`checkQuant` belongs to the quant area).
import type { BatchedGemmParams, FArr, GemmKernels, GemmParams, GroupedGemmParams } from "../spec.js";
import { type Checks, dim, fail, farr, finite, i32, noAlias, sameDtype } from "./common.js";

function params(kernel: string, p: unknown): void {
  if (typeof p !== "object" || p === null) fail(kernel, `params must be an object, got ${p === null ? "null" : typeof p}`);
}

function flag(kernel: string, name: string, v: unknown): void {
  if (v !== undefined && typeof v !== "boolean") fail(kernel, `${name} must be a boolean, got ${String(v)}`);
}

function optFinite(kernel: string, name: string, v: unknown): void {
  if (v !== undefined) finite(kernel, name, v);
}

function precision(kernel: string, v: unknown): void {
  if (v !== undefined && v !== "f32" && v !== "bf16") fail(kernel, `precision must be 'f32' or 'bf16', got ${JSON.stringify(v)}`);
}

/** Checks M, N, K, flags, alpha/beta; returns [M, N, K]. */
function gemmDims(kernel: string, p: GemmParams): [number, number, number] {
  params(kernel, p);
  const M = dim(kernel, "M", p.M), N = dim(kernel, "N", p.N), K = dim(kernel, "K", p.K);
  flag(kernel, "transA", p.transA);
  flag(kernel, "transB", p.transB);
  optFinite(kernel, "alpha", p.alpha);
  optFinite(kernel, "beta", p.beta);
  precision(kernel, p.precision);
  return [M, N, K];
}

function operands(kernel: string, a: FArr, aName: string, b: FArr, bName: string, c: FArr, cName: string): void {
  sameDtype(kernel, { [aName]: a, [bName]: b, [cName]: c });
  noAlias(kernel, cName, c, aName, a);
  noAlias(kernel, cName, c, bName, b);
}

/** Group sizes: Int32Array, every entry ≥ 0, summing to the row count implied by x. Returns [E, Ntot]. */
function groups(kernel: string, sizes: Int32Array, x: unknown, K: number): [number, number] {
  if (!(sizes instanceof Int32Array)) fail(kernel, `sizes must be an Int32Array, got ${sizes === null ? "null" : typeof sizes}`);
  let total = 0;
  for (let g = 0; g < sizes.length; g++) {
    const s = sizes[g]!;
    if (s < 0) fail(kernel, `sizes[${g}] = ${s} is negative`);
    total += s;
  }
  if (!(x instanceof Float32Array || x instanceof Float64Array)) fail(kernel, "x must be a Float32Array or Float64Array");
  const expected = total * K;
  if (x.length !== expected) fail(kernel, `x has ${x.length} elements, expected Σsizes·K = ${total}·${K} = ${expected}`);
  return [sizes.length, total];
}

function groupedDims(kernel: string, p: GroupedGemmParams): [number, number] {
  params(kernel, p);
  const K = dim(kernel, "K", p.K), N = dim(kernel, "N", p.N);
  flag(kernel, "transW", p.transW);
  optFinite(kernel, "beta", p.beta);
  precision(kernel, p.precision);
  return [K, N];
}

export const checkGemm: Checks<GemmKernels> = {
  gemm(a, b, c, p) {
    const k = "gemm";
    const [M, N, K] = gemmDims(k, p);
    farr(k, "a", a, M * K);
    farr(k, "b", b, K * N);
    farr(k, "c", c, M * N);
    operands(k, a, "a", b, "b", c, "c");
  },

  batchedGemm(a, b, c, p: BatchedGemmParams) {
    const k = "batchedGemm";
    const [M, N, K] = gemmDims(k, p);
    const batch = dim(k, "batch", p.batch);
    farr(k, "a", a, batch * M * K);
    farr(k, "b", b, batch * K * N);
    farr(k, "c", c, batch * M * N);
    operands(k, a, "a", b, "b", c, "c");
  },

  groupedGemm(x, w, y, sizes, p) {
    const k = "groupedGemm";
    const [K, N] = groupedDims(k, p);
    const [E, Ntot] = groups(k, sizes, x, K);
    farr(k, "w", w, E * K * N);
    farr(k, "y", y, Ntot * N);
    operands(k, x, "x", w, "w", y, "y");
  },

  groupedGemmWeightGrad(x, dy, dw, sizes, p) {
    const k = "groupedGemmWeightGrad";
    const [K, N] = groupedDims(k, p);
    const [E, Ntot] = groups(k, sizes, x, K);
    farr(k, "dy", dy, Ntot * N);
    farr(k, "dw", dw, E * K * N);
    operands(k, x, "x", dy, "dy", dw, "dw");
  },
};

// STUB: the quant area replaces this export.
