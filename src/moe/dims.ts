// Dimension letters and small shared helpers for the MoE routing/balancing code.
//
// What it is: the one place that names the dimension letters used by src/moe/*
// and the argument checks those pure functions run before computing.
// What it is not: a tensor/shape library; nothing here holds state.
//
// Dimension letters (as in src/backend/spec.ts):
//   N  tokens in the micro-batch (= B·T)
//   E  experts
//   K  experts picked per token (top-k)
//   L  MoE layers (controller state)
import type { FArr } from "../backend/spec.js";

export type { FArr };

/** Bad arguments or non-finite values in MoE routing / balancing math (not a kernel argument error). */
export class MoeError extends Error {
  override name = "MoeError";
}

export function fail(fn: string, msg: string): never {
  throw new MoeError(`${fn}: ${msg}`);
}

export function dim(fn: string, name: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0) fail(fn, `${name} must be a non-negative integer, got ${String(v)}`);
  return v;
}

function positive(fn: string, name: string, v: unknown): number {
  dim(fn, name, v);
  if ((v as number) === 0) fail(fn, `${name} must be positive, got 0`);
  return v as number;
}

function describe(x: unknown): string {
  return ArrayBuffer.isView(x) ? `${x.constructor.name}(${(x as unknown as { length: number }).length})` : x === null ? "null" : typeof x;
}

function farr(fn: string, name: string, x: unknown, len: number): FArr {
  if (!(x instanceof Float32Array || x instanceof Float64Array)) fail(fn, `${name} must be a Float32Array or Float64Array, got ${describe(x)}`);
  if (x.length !== len) fail(fn, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

function i32(fn: string, name: string, x: unknown, len: number): Int32Array {
  if (!(x instanceof Int32Array)) fail(fn, `${name} must be an Int32Array, got ${describe(x)}`);
  if (x.length !== len) fail(fn, `${name} has ${x.length} elements, expected ${len}`);
  return x;
}

function indicesInRange(fn: string, name: string, idx: Int32Array, lo: number, hi: number): void {
  for (let i = 0; i < idx.length; i++) {
    const v = idx[i]!;
    if (v < lo || v >= hi) fail(fn, `${name}[${i}] = ${v} is out of range [${lo}, ${hi})`);
  }
}

/** A new array of the same float type as `like`, zero-filled. */
export function allocLike(like: FArr, n: number): FArr {
  return like instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
}

/** Validates N, E, K (1 ≤ K ≤ E). */
export function checkNEK(fn: string, N: number, E: number, K: number): void {
  dim(fn, "N", N);
  positive(fn, "E", E);
  positive(fn, "K", K);
  if (K > E) fail(fn, `K = ${K} exceeds E = ${E}`);
}

export function checkF(fn: string, name: string, x: unknown, len: number): FArr {
  return farr(fn, name, x, len);
}

export function checkExperts(fn: string, name: string, idx: unknown, len: number, E: number): Int32Array {
  const a = i32(fn, name, idx, len);
  indicesInRange(fn, name, a, 0, E);
  return a;
}

