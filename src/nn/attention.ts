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
  }
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
  const rope = { B: s.B, T: s.T, HS: s.HS, rotaryDim: s.rotaryDim, theta: s.theta };
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
  const rope = { B: s.B, T: s.T, HS: s.HS, rotaryDim: s.rotaryDim, theta: s.theta };
  be.ropeBackward(sc.dq, sc.dq, pos, { ...rope, H: s.NH });
  be.ropeBackward(sc.dk, sc.dk, pos, { ...rope, H: s.KVH });
  if (s.qkNorm !== "none") {
    const rq = normRows(s, s.NH), rk = normRows(s, s.KVH);
    be.rmsnormBackward(sc.dqRaw, dw.qNorm!, sc.dq, sv.qRaw, w.qNorm!, sv.qRstd, rq.rows, rq.width);
    be.rmsnormBackward(sc.dkRaw, dw.kNorm!, sc.dk, sv.kRaw, w.kNorm!, sv.kRstd, rk.rows, rk.width);
  }
  linearBackward(be, dx, dw.q, dw.qBias, sc.dqRaw, x, w.q, N, s.C, qd, accumulateDx);
  linearBackward(be, dx, dw.k, dw.kBias, sc.dkRaw, x, w.k, N, s.C, kd, true);
  linearBackward(be, dx, dw.v, dw.vBias, sc.dv, x, w.v, N, s.C, kd, true);
}
