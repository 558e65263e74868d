// Self-attention sublayer: q/k/v projections (optional biases), optional q/k RMSNorm,
// RoPE, causal (optionally sliding-window) GQA attention, output projection.
// Explicit forward/backward over kernel-table calls; buffers are owned by the caller.
// Not: a KV-cache decoder (inference adds that on top of the same kernels).
import type { Backend } from "../backend/spec.js";
import type { FArr, FCtor } from "./dims.js";
import { linearBackward, linearForward } from "./linear.js";

export interface AttentionSpec {
  B: number;
  T: number;
  C: number;
  NH: number;
  KVH: number;
  HS: number;
  theta: number;
  rotaryDim: number;
  window: number;
  qkNorm: "none" | "head" | "full";
  normEps: number;
  /** Scaled RoPE (nn/rope-scaling.ts): inverse frequencies overriding θ, cos/sin factor. */
  invFreq?: Float64Array;
  ropeScale?: number;
  /** Clamp q, k, v to [−clip, clip] after the q/k norm (OLMoE clip_qkv); 0/absent = off. */
  clip?: number;
}

export interface AttentionWeights {
  q: FArr; k: FArr; v: FArr; o: FArr;
  qBias?: FArr; kBias?: FArr; vBias?: FArr; oBias?: FArr;
  qNorm?: FArr; kNorm?: FArr;
}

/** Saved activations of one attention sublayer. */
export class AttentionSaved {
  readonly qRaw: FArr; // (N, NH·HS) projection output (before q-norm); = q when no q-norm
  readonly kRaw: FArr;
  readonly q: FArr; // (N, NH·HS) after norm + RoPE
  readonly k: FArr; // (N, KVH·HS)
  readonly v: FArr;
  readonly qRstd: FArr;
  readonly kRstd: FArr;
  readonly att: FArr; // (N, NH·HS)
  readonly lse: FArr; // (B, NH, T)
  /** clip_qkv: 1 where q / k / v was clamped (its gradient is zero there). */
  readonly clipped: { q: Uint8Array; k: Uint8Array; v: Uint8Array } | null;
  constructor(Ctor: FCtor, s: AttentionSpec) {
    const N = s.B * s.T;
    const norm = s.qkNorm !== "none";
    this.q = new Ctor(N * s.NH * s.HS);
    this.k = new Ctor(N * s.KVH * s.HS);
    this.v = new Ctor(N * s.KVH * s.HS);
    this.qRaw = norm ? new Ctor(N * s.NH * s.HS) : this.q;
    this.kRaw = norm ? new Ctor(N * s.KVH * s.HS) : this.k;
    this.qRstd = new Ctor(norm ? (s.qkNorm === "head" ? N * s.NH : N) : 0);
    this.kRstd = new Ctor(norm ? (s.qkNorm === "head" ? N * s.KVH : N) : 0);
    this.att = new Ctor(N * s.NH * s.HS);
    this.lse = new Ctor(s.B * s.NH * s.T);
    this.clipped = s.clip ? { q: new Uint8Array(N * s.NH * s.HS), k: new Uint8Array(N * s.KVH * s.HS), v: new Uint8Array(N * s.KVH * s.HS) } : null;
  }
}

/** x ← clamp(x, −c, c); mask[i] = 1 where it clamped (torch.clamp passes the gradient at ±c). */
function clampForward(x: FArr, c: number, mask: Uint8Array): void {
  for (let i = 0; i < x.length; i++) {
    const v = x[i]!;
    if (v > c) {
      x[i] = c;
      mask[i] = 1;
    } else if (v < -c) {
      x[i] = -c;
      mask[i] = 1;
    } else mask[i] = 0;
  }
}

function clampBackward(dx: FArr, mask: Uint8Array): void {
  for (let i = 0; i < dx.length; i++) if (mask[i]) dx[i] = 0;
}

function ropeParams(s: AttentionSpec) {
  return { B: s.B, T: s.T, HS: s.HS, rotaryDim: s.rotaryDim, theta: s.theta, ...(s.invFreq ? { invFreq: s.invFreq } : {}), ...(s.ropeScale !== undefined ? { scale: s.ropeScale } : {}) };
}

/** Backward scratch shared by all layers. */
export class AttentionScratch {
  readonly dq: FArr;
  readonly dk: FArr;
  readonly dv: FArr;
  readonly datt: FArr;
  readonly dqRaw: FArr;
  readonly dkRaw: FArr;
  constructor(Ctor: FCtor, s: AttentionSpec) {
    const N = s.B * s.T;
    this.dq = new Ctor(N * s.NH * s.HS);
    this.dk = new Ctor(N * s.KVH * s.HS);
    this.dv = new Ctor(N * s.KVH * s.HS);
    this.datt = new Ctor(N * s.NH * s.HS);
    const norm = s.qkNorm !== "none";
    this.dqRaw = norm ? new Ctor(N * s.NH * s.HS) : this.dq;
    this.dkRaw = norm ? new Ctor(N * s.KVH * s.HS) : this.dk;
  }
}

function normRows(s: AttentionSpec, heads: number): { rows: number; width: number } {
  const N = s.B * s.T;
  return s.qkNorm === "head" ? { rows: N * heads, width: s.HS } : { rows: N, width: heads * s.HS };
}

/** out (N,C) = attention sublayer of x (N,C). pos (T) are the positions of the T steps. */
export function attentionForward(be: Backend, s: AttentionSpec, w: AttentionWeights, sv: AttentionSaved, out: FArr, x: FArr, pos: Int32Array): void {
  const N = s.B * s.T;
  const qd = s.NH * s.HS, kd = s.KVH * s.HS;
  linearForward(be, sv.qRaw, x, w.q, w.qBias, N, s.C, qd);
  linearForward(be, sv.kRaw, x, w.k, w.kBias, N, s.C, kd);
  linearForward(be, sv.v, x, w.v, w.vBias, N, s.C, kd);
  if (s.qkNorm !== "none") {
    const rq = normRows(s, s.NH), rk = normRows(s, s.KVH);
    be.rmsnormForward(sv.q, sv.qRstd, sv.qRaw, w.qNorm!, rq.rows, rq.width, s.normEps);
    be.rmsnormForward(sv.k, sv.kRstd, sv.kRaw, w.kNorm!, rk.rows, rk.width, s.normEps);
  }
  if (sv.clipped) {
    clampForward(sv.q, s.clip!, sv.clipped.q);
    clampForward(sv.k, s.clip!, sv.clipped.k);
    clampForward(sv.v, s.clip!, sv.clipped.v);
  }
  const rope = ropeParams(s);
  be.ropeForward(sv.q, sv.q, pos, { ...rope, H: s.NH });
  be.ropeForward(sv.k, sv.k, pos, { ...rope, H: s.KVH });
  be.attentionForward(sv.att, sv.lse, sv.q, sv.k, sv.v, { B: s.B, T: s.T, NH: s.NH, KVH: s.KVH, HS: s.HS, window: s.window });
  linearForward(be, out, sv.att, w.o, w.oBias, N, qd, s.C);
}

/**
 * dx (N,C): accumulated (+=) into dx when accumulateDx, else overwritten. Weight grads accumulated.
 */
export function attentionBackward(
  be: Backend, s: AttentionSpec, w: AttentionWeights, dw: AttentionWeights, sv: AttentionSaved, sc: AttentionScratch,
  dx: FArr, dout: FArr, x: FArr, pos: Int32Array, accumulateDx: boolean,
): void {
  const N = s.B * s.T;
  const qd = s.NH * s.HS, kd = s.KVH * s.HS;
  linearBackward(be, sc.datt, dw.o, dw.oBias, dout, sv.att, w.o, N, qd, s.C, false);
  be.attentionBackward(sc.dq, sc.dk, sc.dv, sc.datt, sv.q, sv.k, sv.v, sv.att, sv.lse, { B: s.B, T: s.T, NH: s.NH, KVH: s.KVH, HS: s.HS, window: s.window });
  const rope = ropeParams(s);
  be.ropeBackward(sc.dq, sc.dq, pos, { ...rope, H: s.NH });
  be.ropeBackward(sc.dk, sc.dk, pos, { ...rope, H: s.KVH });
  if (sv.clipped) {
    clampBackward(sc.dq, sv.clipped.q);
    clampBackward(sc.dk, sv.clipped.k);
    clampBackward(sc.dv, sv.clipped.v);
  }
  if (s.qkNorm !== "none") {
    const rq = normRows(s, s.NH), rk = normRows(s, s.KVH);
    be.rmsnormBackward(sc.dqRaw, dw.qNorm!, sc.dq, sv.qRaw, w.qNorm!, sv.qRstd, rq.rows, rq.width);
    be.rmsnormBackward(sc.dkRaw, dw.kNorm!, sc.dk, sv.kRaw, w.kNorm!, sv.kRstd, rk.rows, rk.width);
  }
  linearBackward(be, dx, dw.q, dw.qBias, sc.dqRaw, x, w.q, N, s.C, qd, accumulateDx);
  linearBackward(be, dx, dw.k, dw.kBias, sc.dkRaw, x, w.k, N, s.C, kd, true);
  linearBackward(be, dx, dw.v, dw.vBias, sc.dv, x, w.v, N, s.C, kd, true);
}
