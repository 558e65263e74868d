// Pipeline parallelism for training: a stage's share of the model (a contiguous range of layers;
// the embedding on the first stage, final norm + LM head + loss on the last), the 1F1B schedule
// (PipeDream-Flush / Megatron) over the step's micro-batches, and per-stage activation
// recomputation (the first `recompute` layers of a stage keep only their input after the forward
// and run their forward again in the backward; results are bit-identical).
//
// Layout: world rank = stage × dp + dpRank (the mesh order of mesh.ts with tp = 1; with tensor
// parallelism `dp` here counts the stage's dp × tp ranks, and TP rank t exchanges with TP rank t of
// the neighbour stage: the activations are whole on every TP rank). Every rank holds
// the whole parameter and gradient arena but computes (and accumulates gradients for) only its own
// layers; the trainer sums the gradients over all ranks, so untouched regions add zeros and tied
// embeddings get the first and last stages' parts summed. Activations and their gradients cross
// each stage boundary through a two-rank group per boundary (and per data-parallel replica), as
// blocking alltoallv calls issued in Megatron's order (send_forward_recv_backward and
// send_backward_recv_forward are one exchange each), so both sides of a boundary always issue the
// same sequence of exchanges: no deadlock with rendezvous transports (MPI) and no buffering needed.
//
// Not: the training loop (train/trainer.ts), interleaved or zero-bubble schedules, a sharded arena
// or optimizer (every rank steps the whole arena), nor the planner's cost model (plan/).
import type { Backend } from "../backend/spec.js";
import type { FArr } from "../nn/dims.js";
import type { ModelConfig } from "../model/config.js";
import type { Gradients, Weights } from "../model/weights.js";
import { MoeError } from "../moe/dims.js";
import type { MoeLayerStats } from "../moe/layer.js";
import {
  Workspace, embedBackward, embedForward, headBackward, headForward, layerInput, layersBackward, layersForward, type ModelShape, type StepOptions,
} from "../model/forward.js";
import { evenSplit, type ProcessGroup } from "./process-group.js";

/** A `parallel.pp_layers` / `parallel.recompute` list: `a,b,c` with one integer per stage. */
export function parseStageList(key: string, text: string, pp: number, min: number): number[] {
  const parts = text.split(",").map((s) => s.trim());
  const out = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : NaN));
  if (out.some((n) => !Number.isInteger(n) || n < min)) throw new RangeError(`${key} must be a comma-separated list of integers ≥ ${min} (one per stage), got '${text}'`);
  if (out.length !== pp) throw new RangeError(`${key} '${text}' has ${out.length} entr${out.length === 1 ? "y" : "ies"}, parallel.pp is ${pp}`);
  return out;
}

export interface PipelinePartition {
  /** Layers per stage (sum = the model's layers). */
  partition: number[];
  /** Layers recomputed in the backward per stage (the stage's first ones; ≤ partition[i]). */
  recompute: number[];
}

/**
 * The stages' layer counts and recompute counts from the options, checked against the model:
 * pp_layers null → the even split (the first L mod pp stages get one more); recompute null → 0.
 */
export function resolvePartition(numLayers: number, pp: number, ppLayers: string | null, recompute: string | null): PipelinePartition {
  if (!Number.isInteger(pp) || pp < 1) throw new RangeError(`parallel.pp must be a positive integer, got ${pp}`);
  if (pp > numLayers) throw new RangeError(`parallel.pp = ${pp} stages but the model has ${numLayers} layer(s): every stage needs at least one`);
  const partition = ppLayers === null ? evenSplit(numLayers, pp).counts : parseStageList("parallel.pp_layers", ppLayers, pp, 1);
  const sum = partition.reduce((s, n) => s + n, 0);
  if (sum !== numLayers) throw new RangeError(`parallel.pp_layers ${partition.join(",")} sums to ${sum}, the model has ${numLayers} layers`);
  const rc = recompute === null ? new Array<number>(pp).fill(0) : parseStageList("parallel.recompute", recompute, pp, 0);
  rc.forEach((r, i) => {
    if (r > partition[i]!) throw new RangeError(`parallel.recompute: stage ${i} recomputes ${r} layers but holds only ${partition[i]} (parallel.pp_layers ${partition.join(",")})`);
  });
  return { partition, recompute: rc };
}

/** This rank's place in the pipeline and its communication groups. */
export interface PipelineGroups {
  pp: number;
  dp: number;
  stage: number;
  dpRank: number;
  /** The stage's data-parallel replicas (size dp), null when dp = 1. */
  dpGroup: ProcessGroup | null;
  /** Two-rank groups to the previous / next stage of the same replica (group rank = stage order). */
  prev: ProcessGroup | null;
  next: ProcessGroup | null;
}

/** Collective over world (size pp × dp): the data-parallel group and one two-rank group per boundary. */
export async function createPipelineGroups(world: ProcessGroup, pp: number): Promise<PipelineGroups> {
  if (!Number.isInteger(pp) || pp < 1 || world.size % pp !== 0) throw new RangeError(`pipeline: ${world.size} rank(s) cannot form ${pp} stages of equal data-parallel width`);
  const dp = world.size / pp;
  const stage = Math.floor(world.rank / dp), dpRank = world.rank % dp;
  const dpGroup = dp > 1 ? await world.split(stage, dpRank) : null;
  let prev: ProcessGroup | null = null, next: ProcessGroup | null = null;
  for (let b = 0; b + 1 < pp; b++) {
    const mine = stage === b || stage === b + 1;
    const g = await world.split(mine ? dpRank : -1, stage);
    if (stage === b) next = g;
    if (stage === b + 1) prev = g;
  }
  return { pp, dp, stage, dpRank, dpGroup, prev, next };
}

/** One stage's view of a single-rank pipeline (pp = 1: recompute without pipelining). */
export function singleStageGroups(): PipelineGroups {
  return { pp: 1, dp: 1, stage: 0, dpRank: 0, dpGroup: null, prev: null, next: null };
}

export interface MicroBatch {
  inputs: Int32Array;
  targets: Int32Array;
}

/** What one micro-batch contributed on this stage. */
export interface StageMicroResult {
  /** This stage's share of the loss: its layers' balancing terms, plus the CE on the last stage; NaN when it failed. */
  loss: number;
  /** Mean CE (last stage), else 0. */
  ce: number;
  /** Non-ignored targets (last stage), else 0. */
  tokens: number;
  /** Per model layer: statistics of this stage's MoE layers, undefined elsewhere. */
  moe: (MoeLayerStats | undefined)[];
}

/**
 * One pipeline stage: layers [lo, hi) of the model over shared weights and gradients, with
 * activation slots for the micro-batches 1F1B keeps in flight (min(pp − stage, M)).
 */
export class PipelineStage {
  readonly lo: number;
  readonly hi: number;
  /** Layers recomputed in the backward (the stage's first ones). */
  readonly recompute: number;
  readonly first: boolean;
  readonly last: boolean;
  /** Micro-batches per step on this replica. */
  readonly microBatches: number;
  private readonly slots: Workspace[];
  /** Stage input per slot (only with recompute > 0: the recomputed layers keep nothing else). */
  private readonly inputs: FArr[];
  /** Forward and backward of the recomputed layers, one micro-batch at a time. */
  private readonly scratch: Workspace | null;
  private readonly empty: FArr;
  /** Timing of the last step on this rank: milliseconds computing and waiting in boundary exchanges. */
  lastTiming: { busyMs: number; waitMs: number } | null = null;
  private waitMs = 0;

  constructor(
    private readonly be: Backend, private readonly w: Weights, private readonly g: Gradients, readonly cfg: ModelConfig,
    shape: Pick<ModelShape, "B" | "T" | "tp">, readonly groups: PipelineGroups, layout: PipelinePartition, microBatches: number,
  ) {
    const { pp, stage } = groups;
    if (layout.partition.length !== pp || layout.recompute.length !== pp) throw new RangeError(`pipeline: partition and recompute need ${pp} entries`);
    if (!Number.isInteger(microBatches) || microBatches < 1) throw new RangeError(`pipeline: micro-batches must be a positive integer, got ${microBatches}`);
    if ((stage > 0) !== (groups.prev !== null) || (stage < pp - 1) !== (groups.next !== null)) throw new Error(`pipeline: stage ${stage} of ${pp} has the wrong boundary groups`);
    this.lo = layout.partition.slice(0, stage).reduce((s, n) => s + n, 0);
    this.hi = this.lo + layout.partition[stage]!;
    this.recompute = layout.recompute[stage]!;
    this.first = stage === 0;
    this.last = stage === pp - 1;
    this.microBatches = microBatches;
    const K = Math.min(pp - stage, microBatches);
    const r = this.recompute;
    this.slots = Array.from({ length: K }, () => new Workspace(cfg, { ...shape, layers: { lo: this.lo + r, hi: this.hi } }));
    this.scratch = r > 0 ? new Workspace(cfg, { ...shape, layers: { lo: this.lo, hi: this.lo + r } }) : null;
    const N = shape.B * shape.T, C = cfg.hiddenSize;
    const Ctor = this.slots[0]!.Ctor;
    this.inputs = r > 0 ? Array.from({ length: K }, () => new Ctor(N * C)) : [];
    this.empty = new Ctor(0);
  }

  /** Where micro-batch k's stage input lives (received into, or embedded into). */
  private inputBuf(k: number): FArr {
    const s = k % this.slots.length;
    return this.recompute > 0 ? this.inputs[s]! : layerInput(this.slots[s]!, this.lo);
  }

  /**
   * Runs the step's micro-batches through this stage in 1F1B order (gradients accumulated, each
   * micro-batch's loss gradient scaled by gradScale). opt(k) gives micro-batch k's step options
   * (the same on every stage: they key router noise by layer). Returns one result per micro-batch.
   */
  step(mbs: readonly MicroBatch[], opt: (k: number) => StepOptions, gradScale: number): StageMicroResult[] {
    const t0 = performance.now();
    this.waitMs = 0;
    const M = mbs.length;
    if (M !== this.microBatches) throw new RangeError(`pipeline: ${M} micro-batches given, the stage was built for ${this.microBatches}`);
    const { pp, stage, prev, next } = this.groups;
    const warm = Math.min(pp - stage - 1, M);
    const res: StageMicroResult[] = new Array(M);
    const failed = new Array<boolean>(M).fill(false);
    const out = (k: number) => this.slots[k % this.slots.length]!.residL;
    const gradIn = (k: number) => this.slots[k % this.slots.length]!.dresid;
    const F = (k: number) => (res[k] = this.forward(k, mbs[k]!, opt(k), failed));
    const B = (k: number) => this.backward(k, mbs[k]!, opt(k), gradScale, failed);
    // Megatron's forward_backward_pipelining_without_interleaving, one exchange per boundary call
    for (let k = 0; k < warm; k++) {
      this.link(prev, null, this.inputBuf(k));
      F(k);
      this.link(next, out(k), null);
    }
    if (M > warm) this.link(prev, null, this.inputBuf(warm));
    for (let j = 0; j < M - warm; j++) {
      const f = warm + j, lastIter = j === M - warm - 1;
      F(f);
      this.link(next, out(f), gradIn(j));
      const dx = B(j);
      this.link(prev, dx, lastIter ? null : this.inputBuf(f + 1));
    }
    for (let k = M - warm; k < M; k++) {
      this.link(next, null, gradIn(k));
      this.link(prev, B(k), null);
    }
    failed.forEach((f, k) => {
      if (f) res[k]!.loss = NaN;
    });
    const wall = performance.now() - t0;
    this.lastTiming = { busyMs: wall - this.waitMs, waitMs: this.waitMs };
    return res;
  }

  /** One blocking exchange with the other rank of a boundary group (either side may be empty). */
  private link(g: ProcessGroup | null, send: FArr | null, recv: FArr | null): void {
    if (!g) return;
    const peer = 1 - g.rank;
    const sc = [0, 0], rc = [0, 0];
    sc[peer] = send ? send.length : 0;
    rc[peer] = recv ? recv.length : 0;
    const t0 = performance.now();
    g.alltoallvSync((send ?? this.empty) as Float32Array, sc, (recv ?? this.empty) as Float32Array, rc);
    this.waitMs += performance.now() - t0;
  }

  private forward(k: number, mb: MicroBatch, opt: StepOptions, failed: boolean[]): StageMicroResult {
    const sl = this.slots[k % this.slots.length]!, r = this.recompute, sc = this.scratch;
    const moe = new Array<MoeLayerStats | undefined>(this.cfg.numLayers).fill(undefined);
    let aux = 0;
    try {
      if (this.first) {
        embedForward(this.be, this.w, sc ?? sl, mb.inputs);
        if (sc) this.inputBuf(k).set(layerInput(sc, this.lo));
      }
      if (sc) {
        if (!this.first) layerInput(sc, this.lo).set(this.inputBuf(k));
        const a = layersForward(this.be, this.w, sc, this.lo, this.lo + r, opt);
        a.moe.forEach((s, i) => (moe[this.lo + i] = s));
        aux += a.aux;
        layerInput(sl, this.lo + r).set(sc.residL);
      }
      const b = layersForward(this.be, this.w, sl, this.lo + r, this.hi, opt);
      b.moe.forEach((s, i) => (moe[this.lo + r + i] = s));
      aux += b.aux;
      if (this.last) {
        const { ce, tokens } = headForward(this.be, this.w, sl, mb.targets);
        return { loss: aux + ce, ce, tokens, moe };
      }
      return { loss: aux, ce: 0, tokens: 0, moe };
    } catch (e) {
      // routing refuses NaN scores: a non-finite micro-batch (the step is skipped), not a crash;
      // the schedule goes on with NaN activations so every stage stays in step
      if (!(e instanceof MoeError && /NaN/.test(e.message))) throw e;
      failed[k] = true;
      sl.residL.fill(NaN);
      return { loss: NaN, ce: NaN, tokens: 0, moe };
    }
  }

  /** Backward of micro-batch k; returns d(stage input) to send to the previous stage. */
  private backward(k: number, mb: MicroBatch, opt: StepOptions, gradScale: number, failed: boolean[]): FArr {
    const sl = this.slots[k % this.slots.length]!, r = this.recompute, sc = this.scratch;
    if (failed[k]) return sl.dresid.fill(NaN);
    try {
      if (this.last) headBackward(this.be, this.w, this.g, sl, gradScale);
      layersBackward(this.be, this.w, this.g, sl, this.lo + r, this.hi, gradScale);
      let dx = sl.dresid;
      if (sc) {
        // recompute: the forward of the first r layers again, from the stage input kept for k
        layerInput(sc, this.lo).set(this.inputBuf(k));
        layersForward(this.be, this.w, sc, this.lo, this.lo + r, opt);
        sc.dresid.set(sl.dresid);
        layersBackward(this.be, this.w, this.g, sc, this.lo, this.lo + r, gradScale);
        dx = sc.dresid;
      }
      if (this.first) embedBackward(this.be, this.w, this.g, dx, mb.inputs, sl.tp);
      return dx;
    } catch (e) {
      if (!(e instanceof MoeError && /NaN/.test(e.message))) throw e;
      failed[k] = true;
      return sl.dresid.fill(NaN);
    }
  }
}
