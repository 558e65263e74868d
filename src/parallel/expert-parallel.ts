// Expert parallelism (EP) for training: the experts of every MoE layer are split over the ranks of
// an EP group (rank r owns experts [r·E/ep, (r+1)·E/ep)), tokens travel to their experts' owner by
// all-to-all-v and back, and expert gradients are reduced over the expert-data-parallel group only.
//
// Megatron's six stages, as the MoE layer (moe/layer.ts) and this file split them:
//  1. dispatchPreprocess   (layer.ts, unchanged): route, keep mask, stable sort of the kept
//     assignments by expert, gather token rows → xs (M rows, expert-major). Experts of one owner
//     are consecutive, so xs is already ordered by destination rank.
//  2. tokenDispatch        (here): per-expert row counts exchanged first (all-to-all-v of E/ep
//     int32 per peer), then the rows themselves (all-to-all-v of C floats per row).
//  3. dispatchPostprocess  (here): received rows (source-major) regrouped by local expert.
//     Then the experts: one grouped GEMM over this rank's E/ep experts, SwiGLU, grouped GEMM.
//  4. combinePreprocess    (here): output rows back to source-major order.
//  5. tokenCombine         (here): all-to-all-v with the counts reversed.
//  6. combinePostprocess   (layer.ts, unchanged): weighted scatter-add into the tokens.
// Backward runs the same exchanges: dy rows to the owners (dispatch), dx rows back (combine).
// Any count may be zero: a rank that sends or receives no rows for some or all experts runs
// grouped GEMMs with empty groups and still takes part in every collective (they must match).
//
// Memory (ExpertShard): a rank's arena holds the dense parameters, the whole router and only its
// own experts (model/params.ts `ExpertRange`); its gradients and optimizer moments are the same
// size (ZeRO-1 splits them further: train/ep-zero.ts). Expert gradients are summed over the
// expert-data-parallel group only (nothing is gathered), the gradient norm counts each expert
// once (EpGradientReducer.sumSquares), and the full model is gathered over the EP group for
// checkpoints and sampling (ExpertShard.gather). forward/backward also take whole-arena weights
// (every expert stored; only this rank's are used).
//
// Not: the mesh (mesh.ts), the router or the capacity rule (moe/), nor a transport.
import type { Backend } from "../backend/spec.js";
import type { FArr, FCtor } from "../nn/dims.js";
import { buildLayout, type ExpertRange, type ParamLayout } from "../model/params.js";
import type { ModelConfig } from "../model/config.js";
import type { ProcessGroup } from "./process-group.js";

/** The collectives EP needs from its group (a ProcessGroup satisfies it). */
export type EpGroup = Pick<ProcessGroup, "rank" | "size" | "alltoallvSync">;

/** What one MoE layer's EP forward keeps for its backward (grown on demand, reused every step). */
class LayerBuffers {
  /** (ep·El) row counts received: [src][local expert]. */
  readonly recvSizes: Int32Array;
  /** (El) rows per local expert, summed over sources. */
  readonly localSizes: Int32Array;
  /** Element counts (rows × C) sent to / received from each peer. */
  readonly sendCounts: number[];
  readonly recvCounts: number[];
  R = 0;
  cap = 0;
  /** (R) local row i (expert-major) ← received row perm[i] (source-major). */
  perm = new Int32Array(0);
  xl: FArr;
  hl: FArr;
  al: FArr;

  constructor(readonly Ctor: FCtor, ep: number, El: number) {
    this.recvSizes = new Int32Array(ep * El);
    this.localSizes = new Int32Array(El);
    this.sendCounts = new Array<number>(ep).fill(0);
    this.recvCounts = new Array<number>(ep).fill(0);
    this.xl = new Ctor(0);
    this.hl = new Ctor(0);
    this.al = new Ctor(0);
  }

  ensure(R: number, C: number, F: number): void {
    if (R <= this.cap) return;
    const cap = Math.max(R, Math.ceil(this.cap * 1.5));
    this.perm = new Int32Array(cap);
    this.xl = new this.Ctor(cap * C);
    this.hl = new this.Ctor(cap * 2 * F);
    this.al = new this.Ctor(cap * F);
    this.cap = cap;
  }
}

/** Scratch shared by all layers of one ExpertParallel (only used inside one call). */
class Scratch {
  cap = 0;
  a: FArr;
  b: FArr;
  da: FArr;
  dh: FArr;
  constructor(readonly Ctor: FCtor) {
    this.a = new Ctor(0);
    this.b = new Ctor(0);
    this.da = new Ctor(0);
    this.dh = new Ctor(0);
  }
  ensure(R: number, C: number, F: number): void {
    if (R <= this.cap) return;
    const cap = Math.max(R, Math.ceil(this.cap * 1.5));
    this.a = new this.Ctor(cap * C);
    this.b = new this.Ctor(cap * C);
    this.da = new this.Ctor(cap * F);
    this.dh = new this.Ctor(cap * 2 * F);
    this.cap = cap;
  }
}

export interface EpExpertWeights {
  w13: FArr; // (E, 2F, C)
  w2: FArr; // (E, C, F)
}

/** One rank's view of expert parallelism over `group` for models with `numExperts` experts per layer. */
export class ExpertParallel {
  readonly ep: number;
  readonly rank: number;
  /** Experts per rank. */
  readonly localExperts: number;
  /** This rank's first expert. */
  readonly firstExpert: number;
  private readonly layers = new WeakMap<object, LayerBuffers>();
  private scratch: Scratch | null = null;
  private readonly countsEl: number[];
  /** Milliseconds spent in this object's all-to-all-v calls (waiting included) and in its expert compute, since construction. */
  commMs = 0;
  computeMs = 0;

  constructor(readonly group: EpGroup, readonly numExperts: number) {
    const ep = group.size;
    if (!Number.isInteger(numExperts) || numExperts < 1) throw new RangeError(`expert parallelism: numExperts must be a positive integer, got ${numExperts}`);
    if (numExperts % ep !== 0) throw new RangeError(`expert parallelism: parallel.ep = ${ep} must divide the number of experts (${numExperts})`);
    this.ep = ep;
    this.rank = group.rank;
    this.localExperts = numExperts / ep;
    this.firstExpert = group.rank * this.localExperts;
    this.countsEl = new Array<number>(ep).fill(this.localExperts);
  }

  /** The rank that owns expert e. */
  ownerOf(e: number): number {
    return Math.floor(e / this.localExperts);
  }

  private buffers(key: object, Ctor: FCtor): LayerBuffers {
    let b = this.layers.get(key);
    if (!b || b.Ctor !== Ctor) {
      b = new LayerBuffers(Ctor, this.ep, this.localExperts);
      this.layers.set(key, b);
    }
    return b;
  }

  private scratchFor(Ctor: FCtor, R: number, C: number, F: number): Scratch {
    if (!this.scratch || this.scratch.Ctor !== Ctor) this.scratch = new Scratch(Ctor);
    this.scratch.ensure(R, C, F);
    return this.scratch;
  }

  /**
   * Stages 2–5 of the forward for one MoE layer (`key` identifies the layer's saved state across
   * forward and backward). xs: (M,C) dispatched rows, expert-major with sizes[e] rows of expert e
   * (E entries, padding rows included); yo: (M,C) receives every row's expert output.
   */
  forward(be: Backend, key: object, xs: FArr, sizes: Int32Array, M: number, C: number, F: number, w: EpExpertWeights, yo: FArr): void {
    const t0 = performance.now(), c0 = this.commMs;
    const { ep, localExperts: El, numExperts: E } = this;
    if (sizes.length !== E) throw new RangeError(`expert parallelism: ${sizes.length} expert sizes, expected ${E}`);
    const Ctor = xs.constructor as FCtor;
    const lb = this.buffers(key, Ctor);
    // 2a. counts first: rows of each of the peer's experts
    for (let r = 0; r < ep; r++) {
      let n = 0;
      for (let j = 0; j < El; j++) n += sizes[r * El + j]!;
      lb.sendCounts[r] = n * C;
    }
    this.a2a(sizes, this.countsEl, lb.recvSizes, this.countsEl);
    let R = 0;
    lb.localSizes.fill(0);
    for (let s = 0; s < ep; s++) {
      let n = 0;
      for (let j = 0; j < El; j++) {
        const k = lb.recvSizes[s * El + j]!;
        n += k;
        lb.localSizes[j]! += k;
      }
      lb.recvCounts[s] = n * C;
      R += n;
    }
    if (lb.sendCounts.reduce((a, b) => a + b, 0) !== M * C) throw new Error(`expert parallelism: sizes add up to ${lb.sendCounts.reduce((a, b) => a + b, 0) / C} rows, expected ${M}`);
    lb.R = R;
    lb.ensure(R, C, F);
    const sc = this.scratchFor(Ctor, R, C, F);
    // 2b. token rows
    const xr = sc.a.subarray(0, R * C);
    this.a2a(xs.subarray(0, M * C), lb.sendCounts, xr, lb.recvCounts);
    // 3. regroup by local expert: for expert j, the rows of source 0, then source 1, …
    const perm = lb.perm.subarray(0, R);
    const srcStart = new Int32Array(ep);
    for (let s = 1; s < ep; s++) srcStart[s] = srcStart[s - 1]! + lb.recvCounts[s - 1]! / C;
    const within = Int32Array.from(srcStart);
    let i = 0;
    for (let j = 0; j < El; j++) {
      for (let s = 0; s < ep; s++) {
        const n = lb.recvSizes[s * El + j]!;
        for (let t = 0; t < n; t++) perm[i++] = within[s]! + t;
        within[s]! += n;
      }
    }
    const xl = lb.xl.subarray(0, R * C), hl = lb.hl.subarray(0, R * 2 * F), al = lb.al.subarray(0, R * F);
    be.gather(xl, xr, perm, R, C);
    // the experts: this rank's slice of the fused weights
    const { w13, w2 } = this.localWeights(w, C, F);
    be.groupedGemm(xl, w13, hl, lb.localSizes, { K: C, N: 2 * F, transW: true });
    be.swigluForward(al, hl, R, F);
    const yl = sc.b.subarray(0, R * C);
    be.groupedGemm(al, w2, yl, lb.localSizes, { K: F, N: C, transW: true });
    // 4. back to source-major order; 5. combine exchange
    const yr = sc.a.subarray(0, R * C);
    unpermute(yr, yl, perm, R, C);
    this.a2a(yr, lb.recvCounts, yo.subarray(0, M * C), lb.sendCounts);
    this.computeMs += performance.now() - t0 - (this.commMs - c0);
  }

  /**
   * Backward of forward() for the same layer: dyo (M,C) gradient of the rows' expert outputs;
   * dxs (M,C) receives the gradient of the dispatched rows; this rank's experts' weight gradients
   * are accumulated (+=) into dw (the other experts' are left alone).
   */
  backward(be: Backend, key: object, dyo: FArr, M: number, C: number, F: number, w: EpExpertWeights, dw: EpExpertWeights, dxs: FArr): void {
    const t0 = performance.now(), c0 = this.commMs;
    const lb = this.layers.get(key);
    if (!lb) throw new Error("expert parallelism: backward called before forward for this layer");
    const R = lb.R;
    const sc = this.scratchFor(lb.Ctor, R, C, F);
    const perm = lb.perm.subarray(0, R);
    const xl = lb.xl.subarray(0, R * C), hl = lb.hl.subarray(0, R * 2 * F), al = lb.al.subarray(0, R * F);
    // dispatch the output gradients to the experts' owners
    const dyr = sc.a.subarray(0, R * C), dyl = sc.b.subarray(0, R * C);
    this.a2a(dyo.subarray(0, M * C), lb.sendCounts, dyr, lb.recvCounts);
    be.gather(dyl, dyr, perm, R, C);
    const { w13, w2 } = this.localWeights(w, C, F);
    const { w13: dw13, w2: dw2 } = this.localWeights(dw, C, F);
    const da = sc.da.subarray(0, R * F), dh = sc.dh.subarray(0, R * 2 * F);
    be.groupedGemmWeightGrad(al, dyl, dw2, lb.localSizes, { K: F, N: C, transW: true });
    be.groupedGemm(dyl, w2, da, lb.localSizes, { K: C, N: F, transW: false });
    be.swigluBackward(dh, da, hl, R, F);
    be.groupedGemmWeightGrad(xl, dh, dw13, lb.localSizes, { K: C, N: 2 * F, transW: true });
    const dxl = sc.b.subarray(0, R * C), dxr = sc.a.subarray(0, R * C);
    be.groupedGemm(dh, w13, dxl, lb.localSizes, { K: 2 * F, N: C, transW: false });
    unpermute(dxr, dxl, perm, R, C);
    // combine: the input gradients go back to the rows' ranks
    this.a2a(dxr, lb.recvCounts, dxs.subarray(0, M * C), lb.sendCounts);
    this.computeMs += performance.now() - t0 - (this.commMs - c0);
  }

  private a2a(send: FArr | Int32Array, sendCounts: ArrayLike<number>, recv: FArr | Int32Array, recvCounts: ArrayLike<number>): void {
    const t0 = performance.now();
    this.group.alltoallvSync(send, sendCounts, recv, recvCounts);
    this.commMs += performance.now() - t0;
  }

  private localWeights(w: EpExpertWeights, C: number, F: number): EpExpertWeights {
    // sharded storage holds exactly this rank's experts
    if (w.w13.length === this.localExperts * 2 * F * C && w.w2.length === this.localExperts * C * F) return w;
    const e0 = this.firstExpert, e1 = e0 + this.localExperts;
    return { w13: w.w13.subarray(e0 * 2 * F * C, e1 * 2 * F * C), w2: w.w2.subarray(e0 * C * F, e1 * C * F) };
  }
}

/** dst[perm[i]] = src[i] for R rows of C. */
function unpermute(dst: FArr, src: FArr, perm: Int32Array, R: number, C: number): void {
  for (let i = 0; i < R; i++) {
    const o = perm[i]! * C;
    dst.set(src.subarray(i * C, (i + 1) * C), o);
  }
}

// ---- gradient reduction ----------------------------------------------------------------------

/** The collectives the gradient reduction needs. */
export type SyncGroup = Pick<ProcessGroup, "rank" | "size" | "allreduceSync">;

/** Element ranges [lo, hi) of the arena: dense (everything but expert FFN weights) and per-rank expert slices. */
export interface EpRanges {
  dense: [number, number][];
  /** experts[r]: the ranges of rank r's experts, in the same tensor order for every r (one entry: a sharded arena holding only this rank's experts). */
  experts: [number, number][][];
}

/** The fused expert tensors (w13, w2) of every MoE layer of a layout's names. */
export function expertTensorNames(names: { layers: readonly { w13?: string; w2?: string }[] }): string[] {
  return names.layers.flatMap((l) => (l.w13 && l.w2 ? [l.w13, l.w2] : []));
}

/**
 * Splits the arena: every MoE layer's fused expert tensors (w13 (E,2F,C) and w2 (E,C,F)) are cut
 * into ep equal expert blocks; the rest is dense. `expertTensors` names those tensors.
 */
export function epRanges(layout: ParamLayout, expertTensors: readonly string[], numExperts: number, ep: number): EpRanges {
  if (numExperts % ep !== 0) throw new RangeError(`expert parallelism: parallel.ep = ${ep} must divide the number of experts (${numExperts})`);
  const ex = layout.tensors.filter((t) => expertTensors.includes(t.name)).sort((a, b) => a.offset - b.offset);
  if (ex.length !== expertTensors.length) throw new Error(`expert parallelism: the layout lacks some expert tensors (${expertTensors.join(", ")})`);
  const dense: [number, number][] = [];
  const experts: [number, number][][] = Array.from({ length: ep }, () => []);
  let at = 0;
  for (const t of ex) {
    if (t.offset > at) dense.push([at, t.offset]);
    if (t.size % ep !== 0) throw new Error(`expert parallelism: tensor ${t.name} (${t.size} elements) does not split into ${ep} expert blocks`);
    const per = t.size / ep;
    for (let r = 0; r < ep; r++) experts[r]!.push([t.offset + r * per, t.offset + (r + 1) * per]);
    at = t.offset + t.size;
  }
  if (at < layout.size) dense.push([at, layout.size]);
  return { dense, experts };
}

/** Copies the ranges of src one after the other into dst from `at`; returns the end. */
export function packRanges(src: FArr, ranges: readonly [number, number][], dst: FArr, at = 0): number {
  for (const [lo, hi] of ranges) {
    dst.set(src.subarray(lo, hi), at);
    at += hi - lo;
  }
  return at;
}

/** The inverse of packRanges. */
export function unpackRanges(dst: FArr, ranges: readonly [number, number][], src: FArr, at = 0): number {
  for (const [lo, hi] of ranges) {
    dst.set(src.subarray(at, at + hi - lo), lo);
    at += hi - lo;
  }
  return at;
}

/** Elements in the ranges. */
export const rangesSize = (ranges: readonly [number, number][]): number => ranges.reduce((s, [lo, hi]) => s + hi - lo, 0);

/** dst's ranges ← src's ranges, paired in order (equal lengths). */
function copyRanges(dst: FArr, dstRanges: readonly [number, number][], src: FArr, srcRanges: readonly [number, number][]): void {
  srcRanges.forEach(([lo, hi], i) => dst.set(src.subarray(lo, hi), dstRanges[i]![0]));
}

function sumSquares(a: FArr, ranges: readonly [number, number][]): number {
  let ss = 0;
  for (const [lo, hi] of ranges) for (let i = lo; i < hi; i++) ss += a[i]! * a[i]!;
  return ss;
}

/**
 * One EP rank's sharded arena against the whole model's: rank r of `ep` stores experts
 * [r·E/ep, (r+1)·E/ep) of every MoE layer and everything else whole. `slice` cuts a rank's arena
 * (weights, gradients or moments) out of a full one; `gather` (collective over the EP group)
 * assembles the full arena from every rank's experts.
 */
/** The experts [first, first + E/ep) of EP rank `rank` (an even split); throws a RangeError naming what does not fit. */
export function epExpertRange(E: number, ep: number, rank: number): ExpertRange {
  if (!(Number.isInteger(ep) && ep >= 1 && E % ep === 0)) throw new RangeError(`expert parallelism: parallel.ep = ${ep} must divide the number of experts (${E})`);
  if (!(Number.isInteger(rank) && rank >= 0 && rank < ep)) throw new RangeError(`expert parallelism: rank ${rank} is not in an EP group of ${ep}`);
  return { first: rank * (E / ep), count: E / ep };
}

export class ExpertShard {
  readonly experts: ExpertRange;
  readonly fullLayout: ParamLayout;
  readonly localLayout: ParamLayout;
  /** Ranges of the full arena (experts[q]: rank q's) and of this rank's arena (experts[0]: its own). */
  readonly fullRanges: EpRanges;
  readonly localRanges: EpRanges;

  constructor(readonly cfg: ModelConfig, readonly ep: number, readonly rank: number) {
    const E = cfg.moe.numExperts;
    this.experts = epExpertRange(E, ep, rank);
    const full = buildLayout(cfg), local = buildLayout(cfg, this.experts);
    this.fullLayout = full.layout;
    this.localLayout = local.layout;
    this.fullRanges = epRanges(full.layout, expertTensorNames(full.names), E, ep);
    this.localRanges = epRanges(local.layout, expertTensorNames(local.names), E / ep, 1);
  }

  /** Elements of the full arena this rank does not store (the other ranks' experts). */
  get savedElements(): number {
    return this.fullLayout.size - this.localLayout.size;
  }

  /** This rank's arena from a full one. */
  slice(full: FArr, local: FArr): void {
    this.checkSizes(full, local);
    copyRanges(local, this.localRanges.dense, full, this.fullRanges.dense);
    copyRanges(local, this.localRanges.experts[0]!, full, this.fullRanges.experts[this.rank]!);
  }

  /** Collective over the EP group: the full arena (f32), dense parts from this rank, every rank's experts from their owner. */
  gather(local: FArr, group: Pick<ProcessGroup, "rank" | "size" | "allgatherSync">): Float32Array {
    if (group.size !== this.ep || group.rank !== this.rank) throw new RangeError(`expert parallelism: the group is rank ${group.rank} of ${group.size}, the shard rank ${this.rank} of ${this.ep}`);
    const full = new Float32Array(this.fullLayout.size);
    this.checkSizes(full, local);
    copyRanges(full, this.fullRanges.dense, local, this.localRanges.dense);
    const mine = this.localRanges.experts[0]!, n = rangesSize(mine);
    const own = new Float32Array(n), all = new Float32Array(n * this.ep);
    packRanges(local, mine, own);
    group.allgatherSync(own, all);
    for (let q = 0; q < this.ep; q++) unpackRanges(full, this.fullRanges.experts[q]!, all, q * n);
    return full;
  }

  private checkSizes(full: FArr, local: FArr): void {
    if (full.length !== this.fullLayout.size || local.length !== this.localLayout.size) throw new RangeError(`expert parallelism: arenas of ${full.length} / ${local.length} values, the layouts need ${this.fullLayout.size} / ${this.localLayout.size}`);
  }
}

/**
 * Gradient reduction of an EP step on a sharded arena (dense parameters and this rank's experts),
 * in place: dense ranges summed over `dp` (every rank of the data-parallel group), this rank's
 * experts over `expDp` (the ranks that hold the same experts); nothing is gathered. Packing
 * buffers are kept between steps.
 */
export class EpGradientReducer {
  private bufs: { Ctor: FCtor; dense: FArr; own: FArr } | null = null;

  /** `ranges`: of the sharded arena (ExpertShard.localRanges: one expert range list, the rank's own). */
  constructor(readonly ranges: EpRanges, readonly groups: { dp: SyncGroup; ep: SyncGroup; expDp: SyncGroup }) {
    if (ranges.experts.length !== 1) throw new RangeError(`expert parallelism: the gradient reducer takes a sharded arena's ranges (one expert block), got ${ranges.experts.length}`);
  }

  reduce(grads: FArr): void {
    const { ranges: r, groups } = this;
    const Ctor = grads.constructor as FCtor;
    const mine = r.experts[0]!;
    if (!this.bufs || this.bufs.Ctor !== Ctor) this.bufs = { Ctor, dense: new Ctor(rangesSize(r.dense)), own: new Ctor(rangesSize(mine)) };
    const { dense, own } = this.bufs;
    packRanges(grads, r.dense, dense);
    groups.dp.allreduceSync(dense, "sum");
    unpackRanges(grads, r.dense, dense);
    if (groups.expDp.size > 1) {
      packRanges(grads, mine, own);
      groups.expDp.allreduceSync(own, "sum");
      unpackRanges(grads, mine, own);
    }
  }

  /**
   * Σ g² over the whole model after reduce(), each parameter counted once (collective over the EP
   * group): the dense part here (identical on every rank) plus every rank's experts.
   */
  sumSquares(grads: FArr): number {
    const b = Float64Array.of(sumSquares(grads, this.ranges.experts[0]!));
    this.groups.ep.allreduceSync(b, "sum");
    return sumSquares(grads, this.ranges.dense) + b[0]!;
  }
}
