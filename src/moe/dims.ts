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
import { farr, fail, i32, positive, dim, indicesInRange } from "../backend/checks/common.js";

export type { FArr };

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

export { fail, dim };
