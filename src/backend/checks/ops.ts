// Argument checks for the ops kernels (embedding, norms, RoPE, activations,
// elementwise, softmax, cross-entropy, reductions, AdamW).
// What it is: exact lengths, dims, one float dtype per call, index ranges and the
// aliasing rules of spec.ts (only the pairs the spec names may alias, and then only
// exactly — the same view — never a partial overlap).
// What it is not: a numeric check (NaN/Inf in data are the caller's business).
import type { AdamWParams, FArr, GeluApprox, OpsKernels, RopeParams } from "../spec.js";
import { dim, fail, farr, finite, i32, indicesInRange, noAlias, positive, sameDtype, type Checks } from "./common.js";

type View = ArrayBufferView;

/** Every output is disjoint from every other listed array (outputs pairwise too). */
function disjoint(k: string, outs: Record<string, View>, ins: Record<string, View>): void {
  const o = Object.entries(outs);
  const i = Object.entries(ins);
  for (let a = 0; a < o.length; a++) {
    for (let b = a + 1; b < o.length; b++) noAlias(k, o[a]![0], o[a]![1], o[b]![0], o[b]![1]);
    for (const [n, v] of i) noAlias(k, o[a]![0], o[a]![1], n, v);
  }
}

/** a and b are either the very same view (allowed in-place) or disjoint. */
function sameOrDisjoint(k: string, aName: string, a: View, bName: string, b: View): void {
  if (a.buffer === b.buffer && a.byteOffset === b.byteOffset && a.byteLength === b.byteLength) return;
  noAlias(k, aName, a, bName, b);
}

/** A float array of any length (for kernels whose length is implied by a sibling). */
function anyF(k: string, name: string, x: unknown): FArr {
  if (!(x instanceof Float32Array || x instanceof Float64Array)) return farr(k, name, x, -1);
  return x;
}

function eps(k: string, v: unknown): void {
  finite(k, "eps", v);
  if ((v as number) < 0) fail(k, `eps must be ≥ 0, got ${v}`);
}

function integer(k: string, name: string, v: unknown): void {
  if (typeof v !== "number" || !Number.isInteger(v)) fail(k, `${name} must be an integer, got ${String(v)}`);
}

function approxArg(k: string, a: unknown): asserts a is GeluApprox {
  if (a !== "none" && a !== "tanh") fail(k, `approx must be "none" or "tanh", got ${String(a)}`);
}

/** Validates RoPE params; returns the element count B·T·H·HS. */
function rope(k: string, pos: unknown, p: RopeParams): number {
  if (typeof p !== "object" || p === null) fail(k, "params must be an object");
  const B = dim(k, "B", p.B), T = dim(k, "T", p.T), H = dim(k, "H", p.H), HS = dim(k, "HS", p.HS);
  const rd = p.rotaryDim ?? HS;
  dim(k, "rotaryDim", rd);
  if (rd % 2 !== 0) fail(k, `rotaryDim must be even, got ${rd}${p.rotaryDim === undefined ? " (defaulted to HS)" : ""}`);
  if (rd > HS) fail(k, `rotaryDim ${rd} exceeds HS ${HS}`);
  finite(k, "theta", p.theta);
  if (p.theta <= 0) fail(k, `theta must be > 0, got ${p.theta}`);
  if (p.invFreq !== undefined && !(p.invFreq instanceof Float64Array && p.invFreq.length === rd / 2)) fail(k, `invFreq must be a Float64Array of rotaryDim/2 = ${rd / 2} values`);
  if (p.scale !== undefined) finite(k, "scale", p.scale);
  const ps = i32(k, "pos", pos, T);
  indicesInRange(k, "pos", ps, 0, 2 ** 31);
  return B * T * H * HS;
}

/** Same-length elementwise pair/triple with one dtype. */
function elementwise(k: string, arrays: Record<string, unknown>, first: string): number {
  const n = anyF(k, first, arrays[first]).length;
  const fs: Record<string, FArr> = {};
  for (const [name, a] of Object.entries(arrays)) fs[name] = farr(k, name, a, n);
  sameDtype(k, fs);
  return n;
}

export const checkOps: Checks<OpsKernels> = {
  embeddingForward(out, ids, wte, V, C) {
    const k = "embeddingForward";
    dim(k, "V", V);
    dim(k, "C", C);
    const ix = i32(k, "ids", ids, (ids as Int32Array | undefined)?.length ?? -1);
    const N = ix.length;
    farr(k, "out", out, N * C);
    farr(k, "wte", wte, V * C);
    sameDtype(k, { out, wte });
    indicesInRange(k, "ids", ix, 0, V);
    disjoint(k, { out }, { wte, ids });
  },
  embeddingBackward(dwte, dout, ids, V, C) {
    const k = "embeddingBackward";
    dim(k, "V", V);
    dim(k, "C", C);
    const ix = i32(k, "ids", ids, (ids as Int32Array | undefined)?.length ?? -1);
    const N = ix.length;
    farr(k, "dwte", dwte, V * C);
    farr(k, "dout", dout, N * C);
    sameDtype(k, { dwte, dout });
    indicesInRange(k, "ids", ix, 0, V);
    disjoint(k, { dwte }, { dout, ids });
  },

  rmsnormForward(out, rstd, x, w, N, C, e) {
    const k = "rmsnormForward";
    dim(k, "N", N);
    dim(k, "C", C);
    eps(k, e);
    farr(k, "out", out, N * C);
    farr(k, "rstd", rstd, N);
    farr(k, "x", x, N * C);
    farr(k, "w", w, C);
    sameDtype(k, { out, rstd, x, w });
    disjoint(k, { out, rstd }, { x, w });
  },
  rmsnormBackward(dx, dw, dout, x, w, rstd, N, C) {
    const k = "rmsnormBackward";
    dim(k, "N", N);
    dim(k, "C", C);
    farr(k, "dx", dx, N * C);
    farr(k, "dw", dw, C);
    farr(k, "dout", dout, N * C);
    farr(k, "x", x, N * C);
    farr(k, "w", w, C);
    farr(k, "rstd", rstd, N);
    sameDtype(k, { dx, dw, dout, x, w, rstd });
    disjoint(k, { dx, dw }, { dout, x, w, rstd });
  },
  layernormForward(out, mean, rstd, x, w, b, N, C, e) {
    const k = "layernormForward";
    dim(k, "N", N);
    dim(k, "C", C);
    eps(k, e);
    farr(k, "out", out, N * C);
    farr(k, "mean", mean, N);
    farr(k, "rstd", rstd, N);
    farr(k, "x", x, N * C);
    farr(k, "w", w, C);
    farr(k, "b", b, C);
    sameDtype(k, { out, mean, rstd, x, w, b });
    disjoint(k, { out, mean, rstd }, { x, w, b });
  },
  layernormBackward(dx, dw, db, dout, x, w, mean, rstd, N, C) {
    const k = "layernormBackward";
    dim(k, "N", N);
    dim(k, "C", C);
    farr(k, "dx", dx, N * C);
    farr(k, "dw", dw, C);
    farr(k, "db", db, C);
    farr(k, "dout", dout, N * C);
    farr(k, "x", x, N * C);
    farr(k, "w", w, C);
    farr(k, "mean", mean, N);
    farr(k, "rstd", rstd, N);
    sameDtype(k, { dx, dw, db, dout, x, w, mean, rstd });
    disjoint(k, { dx, dw, db }, { dout, x, w, mean, rstd });
  },

  ropeForward(out, x, pos, p) {
    const k = "ropeForward";
    const n = rope(k, pos, p);
    farr(k, "out", out, n);
    farr(k, "x", x, n);
    sameDtype(k, { out, x });
    sameOrDisjoint(k, "out", out, "x", x);
    noAlias(k, "out", out, "pos", pos);
  },
  ropeBackward(dx, dout, pos, p) {
    const k = "ropeBackward";
    const n = rope(k, pos, p);
    farr(k, "dx", dx, n);
    farr(k, "dout", dout, n);
    sameDtype(k, { dx, dout });
    sameOrDisjoint(k, "dx", dx, "dout", dout);
    noAlias(k, "dx", dx, "pos", pos);
  },

  siluForward(out, x) {
    const k = "siluForward";
    elementwise(k, { out, x }, "x");
    disjoint(k, { out }, { x });
  },
  siluBackward(dx, dout, x) {
    const k = "siluBackward";
    elementwise(k, { dx, dout, x }, "x");
    disjoint(k, { dx }, { dout, x });
  },
  geluForward(out, x, approx) {
    const k = "geluForward";
    approxArg(k, approx);
    elementwise(k, { out, x }, "x");
    disjoint(k, { out }, { x });
  },
  geluBackward(dx, dout, x, approx) {
    const k = "geluBackward";
    approxArg(k, approx);
    elementwise(k, { dx, dout, x }, "x");
    disjoint(k, { dx }, { dout, x });
  },
  swigluForward(out, gu, N, F) {
    const k = "swigluForward";
    dim(k, "N", N);
    dim(k, "F", F);
    farr(k, "out", out, N * F);
    farr(k, "gu", gu, N * 2 * F);
    sameDtype(k, { out, gu });
    disjoint(k, { out }, { gu });
  },
  swigluBackward(dgu, dout, gu, N, F) {
    const k = "swigluBackward";
    dim(k, "N", N);
    dim(k, "F", F);
    farr(k, "dgu", dgu, N * 2 * F);
    farr(k, "dout", dout, N * F);
    farr(k, "gu", gu, N * 2 * F);
    sameDtype(k, { dgu, dout, gu });
    disjoint(k, { dgu }, { dout, gu });
  },

  add(out, a, b) {
    const k = "add";
    elementwise(k, { out, a, b }, "a");
    sameOrDisjoint(k, "out", out, "a", a);
    sameOrDisjoint(k, "out", out, "b", b);
  },
  axpy(y, x, alpha) {
    const k = "axpy";
    finite(k, "alpha", alpha);
    elementwise(k, { y, x }, "x");
    disjoint(k, { y }, { x });
  },
  scale(out, x, alpha) {
    const k = "scale";
    finite(k, "alpha", alpha);
    elementwise(k, { out, x }, "x");
    sameOrDisjoint(k, "out", out, "x", x);
  },
  biasAddForward(x, bias, N, C) {
    const k = "biasAddForward";
    dim(k, "N", N);
    dim(k, "C", C);
    farr(k, "x", x, N * C);
    farr(k, "bias", bias, C);
    sameDtype(k, { x, bias });
    disjoint(k, { x }, { bias });
  },
  biasAddBackward(dbias, dout, N, C) {
    const k = "biasAddBackward";
    dim(k, "N", N);
    dim(k, "C", C);
    farr(k, "dbias", dbias, C);
    farr(k, "dout", dout, N * C);
    sameDtype(k, { dbias, dout });
    disjoint(k, { dbias }, { dout });
  },

  softmaxForward(out, x, N, V) {
    const k = "softmaxForward";
    dim(k, "N", N);
    positive(k, "V", V);
    farr(k, "out", out, N * V);
    farr(k, "x", x, N * V);
    sameDtype(k, { out, x });
    sameOrDisjoint(k, "out", out, "x", x);
  },
  softmaxBackward(dx, dout, out, N, V) {
    const k = "softmaxBackward";
    dim(k, "N", N);
    positive(k, "V", V);
    farr(k, "dx", dx, N * V);
    farr(k, "dout", dout, N * V);
    farr(k, "out", out, N * V);
    sameDtype(k, { dx, dout, out });
    disjoint(k, { dx }, { dout, out });
  },
  logSoftmaxForward(out, x, N, V) {
    const k = "logSoftmaxForward";
    dim(k, "N", N);
    positive(k, "V", V);
    farr(k, "out", out, N * V);
    farr(k, "x", x, N * V);
    sameDtype(k, { out, x });
    disjoint(k, { out }, { x });
  },
  logSoftmaxBackward(dx, dout, out, N, V) {
    const k = "logSoftmaxBackward";
    dim(k, "N", N);
    positive(k, "V", V);
    farr(k, "dx", dx, N * V);
    farr(k, "dout", dout, N * V);
    farr(k, "out", out, N * V);
    sameDtype(k, { dx, dout, out });
    disjoint(k, { dx }, { dout, out });
  },

  crossEntropyForward(losses, lse, logits, targets, N, V, ignoreIndex) {
    const k = "crossEntropyForward";
    dim(k, "N", N);
    positive(k, "V", V);
    integer(k, "ignoreIndex", ignoreIndex);
    farr(k, "losses", losses, N);
    farr(k, "lse", lse, N);
    farr(k, "logits", logits, N * V);
    const t = i32(k, "targets", targets, N);
    sameDtype(k, { losses, lse, logits });
    targetsInRange(k, t, V, ignoreIndex);
    disjoint(k, { losses, lse }, { logits, targets });
  },
  crossEntropyBackward(dlogits, logits, lse, targets, dlosses, N, V, ignoreIndex) {
    const k = "crossEntropyBackward";
    dim(k, "N", N);
    positive(k, "V", V);
    integer(k, "ignoreIndex", ignoreIndex);
    farr(k, "dlogits", dlogits, N * V);
    farr(k, "logits", logits, N * V);
    farr(k, "lse", lse, N);
    const t = i32(k, "targets", targets, N);
    farr(k, "dlosses", dlosses, N);
    sameDtype(k, { dlogits, logits, lse, dlosses });
    targetsInRange(k, t, V, ignoreIndex);
    sameOrDisjoint(k, "dlogits", dlogits, "logits", logits);
    disjoint(k, { dlogits }, { lse, targets, dlosses });
  },

  sum(x) {
    anyF("sum", "x", x);
  },
  max(x) {
    anyF("max", "x", x);
  },
  sumSquares(x) {
    anyF("sumSquares", "x", x);
  },

  adamw(param, grad, m, v, p) {
    const k = "adamw";
    elementwise(k, { param, grad, m, v }, "param");
    adamParams(k, p);
    disjoint(k, { param, m, v }, { grad });
  },
};

function targetsInRange(k: string, t: Int32Array, V: number, ignoreIndex: number): void {
  for (let i = 0; i < t.length; i++) {
    const v = t[i]!;
    if (v !== ignoreIndex && (v < 0 || v >= V)) fail(k, `targets[${i}] = ${v} is out of range [0, ${V}) and is not ignoreIndex ${ignoreIndex}`);
  }
}

function adamParams(k: string, p: AdamWParams): void {
  if (typeof p !== "object" || p === null) fail(k, "params must be an object");
  finite(k, "lr", p.lr);
  for (const name of ["beta1", "beta2"] as const) {
    finite(k, name, p[name]);
    if (p[name] < 0 || p[name] >= 1) fail(k, `${name} must lie in [0, 1), got ${p[name]}`);
  }
  finite(k, "eps", p.eps);
  if (p.eps < 0) fail(k, `eps must be ≥ 0, got ${p.eps}`);
  finite(k, "weightDecay", p.weightDecay);
  positive(k, "step", p.step);
}
