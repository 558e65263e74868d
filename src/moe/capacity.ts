// Expert capacity and token dropping (GShard / Switch / Megatron drop-and-pad).
//
// What it is: which of the N·K token-expert assignments fit under the per-expert
// capacity C, and the resulting drop statistics. Used both to drop for real and to
// measure the "virtual" drop rate in dropless training (the Skywork adaptive-α
// controller needs a drop rate either way).
// What it is not: the permutation/dispatch itself (bins, gather, scatter live in
// the dispatch code) — this only decides keep / drop.
//
// Dimension letters: N tokens, E experts, K picks per token (./dims.ts).
import type { FArr } from "../backend/spec.js";
import { checkExperts, checkF, checkNEK, fail } from "./dims.js";

/**
 * Per-expert capacity C = ⌈CF · K · N / E⌉ (GShard; spec §2). A product that lands
 * within 1e-9 (relative) above an integer is taken as that integer, so float error
 * in CF (1.1·10 = 11.000000000000002) does not add a slot. CF = Infinity → Infinity
 * (dropless).
 */
export function expertCapacity(N: number, K: number, E: number, capacityFactor: number): number {
  if (!(capacityFactor > 0)) fail("expertCapacity", `capacityFactor must be > 0, got ${capacityFactor}`);
  checkNEK("expertCapacity", N, E, K);
  const x = (capacityFactor * K * N) / E;
  if (!Number.isFinite(x)) return Infinity;
  const r = Math.round(x);
  if (Math.abs(x - r) <= 1e-9 * Math.max(1, x)) return r;
  return Math.ceil(x);
}

export type DropPolicy = "probs" | "position";

export interface CapacityResult {
  /** (N,K) 1 = assignment kept, 0 = dropped */
  keep: Uint8Array;
  /** number of dropped assignments */
  dropped: number;
  /** dropped / (K·N); 0 when N = 0 */
  dropRate: number;
  /** (E) assignments per expert before dropping */
  tokensPerExpert: Int32Array;
  /** (E) assignments per expert after dropping: min(tokensPerExpert, C) */
  keptPerExpert: Int32Array;
}

/**
 * Keeps at most `capacity` assignments per expert.
 *   policy "position": the first C in (token, slot) order (Switch/GShard).
 *   policy "probs":    the C with the highest weight; ties → earlier token, then lower
 *                      slot (Megatron drop_policy="probs").
 * Drop rate d = dropped / (K·N) (spec §2). A token whose every pick is dropped still
 * flows through the residual.
 */
export function capacityKeep(topExperts: Int32Array, weights: FArr, N: number, K: number, E: number, capacity: number, policy: DropPolicy): CapacityResult {
  const fn = "capacityKeep";
  checkNEK(fn, N, E, K);
  checkExperts(fn, "topExperts", topExperts, N * K, E);
  checkF(fn, "weights", weights, N * K);
  if (!(capacity >= 0)) fail(fn, `capacity must be ≥ 0, got ${capacity}`);
  if (policy !== "probs" && policy !== "position") fail(fn, `unknown policy ${String(policy)}`);
  const A = N * K;
  const keep = new Uint8Array(A);
  const tokensPerExpert = new Int32Array(E);
  const keptPerExpert = new Int32Array(E);
  for (let a = 0; a < A; a++) tokensPerExpert[topExperts[a]!]!++;
  if (policy === "position") {
    for (let a = 0; a < A; a++) {
      const e = topExperts[a]!;
      if (keptPerExpert[e]! < capacity) {
        keep[a] = 1;
        keptPerExpert[e]!++;
      }
    }
  } else {
    // bucket assignment ids by expert (ascending id inside a bucket), then sort each
    // over-full bucket by weight descending; ties keep ascending id = (token, slot) order
    const start = new Int32Array(E + 1);
    for (let e = 0; e < E; e++) start[e + 1] = start[e]! + tokensPerExpert[e]!;
    const fillPos = start.slice(0, E);
    const ids = new Int32Array(A);
    for (let a = 0; a < A; a++) ids[fillPos[topExperts[a]!]!++] = a;
    for (let e = 0; e < E; e++) {
      const n = tokensPerExpert[e]!;
      const bucket = ids.subarray(start[e]!, start[e + 1]!);
      if (n > capacity) bucket.sort((x, y) => weights[y]! - weights[x]! || x - y);
      const c = Math.min(n, capacity);
      for (let i = 0; i < c; i++) keep[bucket[i]!] = 1;
      keptPerExpert[e] = c;
    }
  }
  let kept = 0;
  for (let e = 0; e < E; e++) kept += keptPerExpert[e]!;
  const dropped = A - kept;
  return { keep, dropped, dropRate: A > 0 ? dropped / A : 0, tokensPerExpert, keptPerExpert };
}
