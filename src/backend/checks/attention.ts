// Argument checks for the attention kernels, plus `resolveAttention`, which fills in the
// parameter defaults (Tk = T, window = 0, scale = 1/√HS) the same way for every backend.
// Not: a place for computation.
import type { AttentionKernels, AttentionParams, FArr } from "../spec.js";
import { type Checks, dim, fail, farr, finite, noAlias, positive, sameDtype } from "./common.js";

/** AttentionParams with defaults applied and validated. */
export interface AttentionDims {
  B: number;
  T: number;
  Tk: number;
  NH: number;
  KVH: number;
  HS: number;
  /** 0 = unlimited. */
  window: number;
  scale: number;
}

/** Validates p (dims, NH % KVH, Tk ≥ T, window ≥ 0, finite scale) and applies defaults. */
export function resolveAttention(kernel: string, p: AttentionParams): AttentionDims {
  if (typeof p !== "object" || p === null) fail(kernel, `params must be an object, got ${p === null ? "null" : typeof p}`);
  const B = positive(kernel, "B", p.B);
  const T = positive(kernel, "T", p.T);
  const NH = positive(kernel, "NH", p.NH);
  const KVH = positive(kernel, "KVH", p.KVH);
  const HS = positive(kernel, "HS", p.HS);
  const Tk = p.Tk === undefined ? T : positive(kernel, "Tk", p.Tk);
  if (Tk < T) fail(kernel, `Tk (${Tk}) must be ≥ T (${T}); queries are aligned to the end of the keys`);
  if (NH % KVH !== 0) fail(kernel, `NH (${NH}) must be a multiple of KVH (${KVH})`);
  const window = p.window === undefined ? 0 : dim(kernel, "window", p.window);
  const scale = p.scale === undefined ? 1 / Math.sqrt(HS) : finite(kernel, "scale", p.scale);
  // The native engine indexes with 32-bit ints per dimension and size_t offsets.
  if (B * Math.max(T, Tk) * Math.max(NH, KVH) * HS > 2 ** 31 - 1) fail(kernel, "tensor too large (more than 2^31-1 elements)");
  return { B, T, Tk, NH, KVH, HS, window, scale };
}

function noAliasAll(kernel: string, outs: Record<string, FArr>, ins: Record<string, FArr>): void {
  const outNames = Object.keys(outs);
  for (let i = 0; i < outNames.length; i++) {
    const a = outNames[i]!;
    for (const [b, y] of Object.entries(ins)) noAlias(kernel, a, outs[a]!, b, y);
    for (let j = i + 1; j < outNames.length; j++) noAlias(kernel, a, outs[a]!, outNames[j]!, outs[outNames[j]!]!);
  }
}

export const checkAttention: Checks<AttentionKernels> = {
  attentionForward(out, lse, q, k, v, p) {
    const K = "attentionForward";
    const d = resolveAttention(K, p);
    const nq = d.B * d.T * d.NH * d.HS, nk = d.B * d.Tk * d.KVH * d.HS;
    farr(K, "out", out, nq);
    farr(K, "lse", lse, d.B * d.NH * d.T);
    farr(K, "q", q, nq);
    farr(K, "k", k, nk);
    farr(K, "v", v, nk);
    sameDtype(K, { out, lse, q, k, v });
    noAliasAll(K, { out, lse }, { q, k, v });
  },
  attentionBackward(dq, dk, dv, dout, q, k, v, out, lse, p) {
    const K = "attentionBackward";
    const d = resolveAttention(K, p);
    const nq = d.B * d.T * d.NH * d.HS, nk = d.B * d.Tk * d.KVH * d.HS;
    farr(K, "dq", dq, nq);
    farr(K, "dk", dk, nk);
    farr(K, "dv", dv, nk);
    farr(K, "dout", dout, nq);
    farr(K, "q", q, nq);
    farr(K, "k", k, nk);
    farr(K, "v", v, nk);
    farr(K, "out", out, nq);
    farr(K, "lse", lse, d.B * d.NH * d.T);
    sameDtype(K, { dq, dk, dv, dout, q, k, v, out, lse });
    noAliasAll(K, { dq, dk, dv }, { dout, q, k, v, out, lse });
  },
};
