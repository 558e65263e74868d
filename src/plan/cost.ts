// The cost model of one training layout: FLOPs, memory and communication per rank, per layer and
// per pipeline stage, turned into per-micro-batch stage times for the 1F1B simulator.
//
// Layout = dp × tp × pp ranks; experts placed one of three ways (moe-techniques.md §6):
//   etp  every rank holds all E experts, each tensor-split over the TP group (GRIN: no EP);
//   ep   E/ep whole-expert groups over `ep` data-parallel ranks, tokens exchanged all-to-all,
//        each expert tensor-split over TP (Megatron's classic ETP = TP);
//   edp  Skywork App. B.1: the TP group doubles as the expert group; E/tp whole experts per rank,
//        tokens stay in the group (dispatch a local gather, combine a TP all-reduce).
// Rank order: TP fastest, then DP, then PP (Megatron's default), so a TP group is consecutive
// ranks and a group stays inside a node when stride × size ≤ devices per node.
//
// Formulas (N = B·T tokens per micro-batch, a = activation bytes, heads/vocab/FFN columns split
// unevenly over TP: the busiest rank holds ⌈total/tp⌉):
//   attention projections 2N·C·(nh+2kvh)·HS + 2N·nh·HS·C; attention core 4N·keys·nh·HS
//   (keys = mean keys per query, causal, window-capped); router 2N·C·E; experts 2·S·3·C·F_r with
//   S token-slots per rank (K·N for etp/ep, K·N/tp for edp, × imbalance for ep/edp); dense FFN
//   2N·3C·F_r; LM head 2N·C·V_r + 5N·V_r. Backward = 2 × forward; a recomputed layer adds its
//   forward (compute and communication) to the backward.
//   Collectives (α latency, β bandwidth of the slowest link the group spans, n bytes per rank):
//   ring all-reduce 2(p−1)α + 2(p−1)/p·n/β; reduce-scatter, all-gather and all-to-all
//   (p−1)α + (p−1)/p·n/β; send/recv α + n/β. TP: two all-reduces of a·N·C per layer forward and
//   two in backward (Megatron without sequence parallelism); EP: all-to-all dispatch and combine
//   of a·S·C each way; PP: a·N·C per boundary per micro-batch each way; DP: gradients once per
//   step, all-reduce, or with ZeRO-1 reduce-scatter of gradients + all-gather of parameters.
//   After the pipeline, once per step (`tail`): gradient synchronisation plus, when
//   `optimizerSecondsPerParam` > 0, the optimizer: AdamW over the parameters the rank updates
//   (its share under ZeRO-1) plus the gradient-norm pass over the gradients it holds
//   (`normSecondsPerParam`) plus the trainer's other passes over those gradients each step,
//   zeroing and clipping (`gradPassSecondsPerParam`). gradSync "stage" is Megatron's (each stage
//   reduces its own parameters over its DP group); "arena" is this engine's trainer: every rank
//   holds the whole model, gradients are all-reduced over all dp·pp ranks, ZeRO-1 then
//   all-gathers the parameters over all ranks, and the norm runs over the whole arena; TP: a TP
//   rank's slice all-reduced over its DP group and then across the stages, ZeRO-1 over the DP
//   group; EP (a rank stores only its experts): dense over dp, the held experts over the
//   expert-data-parallel group, nothing gathered, ZeRO-1 split the same way.
//   CPU ranks sharing a machine (cluster.concurrency < ranks): the 1F1B simulation shares the cores
//   among the ranks computing at each moment (waiting ranks use none), and the optimizer, which
//   all ranks run at once, gets concurrency / ranks of the rate.
//   LM head, loss and embedding run at cluster.flops × headEfficiency (their kernels are not the
//   layers': a (N × C)·(C × V) product plus a softmax over V per token).
//   Memory: weights + gradients + optimizer state (ZeRO-1 divides it by the group that reduces
//   those gradients) + activations of the micro-batches 1F1B holds in flight on the stage
//   (min(pp−i, m) on stage i; full per-layer activations, or only the layer input when the layer
//   is recomputed) + transients (one rematerialised layer; fp32 logits and their gradient).
//
// Not: a kernel-efficiency model by shape (one sustained FLOP/s for the layers, one factor for
// the head), overlap of communication
// with compute (all communication is on the critical path), or sequence/context parallelism.
import type { ClusterSpec, Link } from "./cluster.js";
import { PlanError } from "./cluster.js";
import type { PlanModel, PlanRun } from "./plan-model.js";
import type { SimulateOptions, StageTimes } from "./simulate.js";

export type ExpertMode = "etp" | "ep" | "edp";
export const EXPERT_MODES: readonly ExpertMode[] = ["etp", "ep", "edp"];

export interface Layout {
  dp: number;
  tp: number;
  pp: number;
  expert: ExpertMode;
  /** Expert-parallel group size: 1 for etp, tp for edp, a divisor of dp for ep. */
  ep: number;
  /** Layers per pipeline stage (length pp, sums to L). */
  partition: number[];
  /** Layers recomputed in the backward on each stage (≤ partition[i]); the stage's first ones. */
  recompute: number[];
}

export interface Precision {
  name: string;
  /** Bytes per weight held for compute. */
  paramBytes: number;
  /** Bytes per gradient element (fp32 main gradients in mixed precision). */
  gradBytes: number;
  /** Optimizer bytes per parameter (AdamW: fp32 master + m + v = 12 in mixed precision; m + v = 8 in f32). */
  optimBytes: number;
  /** Bytes per stored activation element. */
  actBytes: number;
}

export const PRECISIONS: Record<string, Precision> = {
  "bf16-mixed": { name: "bf16-mixed", paramBytes: 2, gradBytes: 4, optimBytes: 12, actBytes: 2 },
  f32: { name: "f32", paramBytes: 4, gradBytes: 4, optimBytes: 8, actBytes: 4 },
};

export interface CostOptions {
  /** Default bf16-mixed (PRECISIONS); f32 for this engine's CPU training. */
  precision: Precision;
  /** Shard AdamW state over the data-parallel group (ZeRO-1). Default true. */
  zero1: boolean;
  /** Attention stores only a log-sum-exp per query (flash); false stores the T×T probabilities. Default true. */
  flashAttention: boolean;
  /** Busiest rank's expert tokens over the mean (≥ 1), for ep and edp, where a rank owns whole experts. Default 1. */
  expertImbalance: number;
  /** Seconds per parameter of one AdamW update on a rank (measured); 0 leaves the optimizer out. Default 0. */
  optimizerSecondsPerParam: number;
  /** Seconds per gradient element of the gradient-norm pass (measured); default 0. */
  normSecondsPerParam: number;
  /** Seconds per gradient element of the step's other gradient passes, zeroing and clipping (measured); default 0. */
  gradPassSecondsPerParam: number;
  /** "stage" (Megatron: a stage reduces and steps its own parameters) or "arena" (this engine: the whole model on every rank). Default "stage". */
  gradSync: GradSync;
  /** Rate of LM head, loss and embedding relative to `cluster.flops` (> 0). Default 1. */
  headEfficiency: number;
}

export type GradSync = "stage" | "arena";

export const DEFAULT_COST: CostOptions = {
  precision: PRECISIONS["bf16-mixed"]!, zero1: true, flashAttention: true, expertImbalance: 1, optimizerSecondsPerParam: 0, normSecondsPerParam: 0, gradPassSecondsPerParam: 0, gradSync: "stage", headEfficiency: 1,
};

/** Checks the options a caller built (clear errors instead of NaN step times). */
export function validateCost(o: CostOptions): CostOptions {
  for (const k of ["optimizerSecondsPerParam", "normSecondsPerParam", "gradPassSecondsPerParam"] as const) {
    if (!(o[k] >= 0) || !Number.isFinite(o[k])) throw new PlanError(`cost option ${k} must be a finite number ≥ 0, got ${o[k]}`);
  }
  if (!(o.headEfficiency > 0) || !Number.isFinite(o.headEfficiency)) throw new PlanError(`cost option headEfficiency must be a finite number > 0, got ${o.headEfficiency}`);
  if (!(o.expertImbalance >= 1)) throw new PlanError(`cost option expertImbalance must be ≥ 1, got ${o.expertImbalance}`);
  if (o.gradSync !== "stage" && o.gradSync !== "arena") throw new PlanError(`cost option gradSync must be "stage" or "arena", got ${String(o.gradSync)}`);
  return o;
}

const cdiv = (a: number, b: number) => Math.ceil(a / b);

/** Per-layer quantities of one rank for one micro-batch (FLOPs forward, bytes, element counts). */
export interface LayerCost {
  fwdFlops: number;
  /** Parameters reduced over the DP group (attention, norms, router, dense/shared FFN). */
  denseParams: number;
  /** Expert parameters (reduced over the expert-data-parallel group). */
  expertParams: number;
  /** Activation bytes kept for the backward without recompute, and with (layer input only). */
  actFull: number;
  actCkpt: number;
  /** Forward communication seconds (backward repeats it). */
  fwdComm: number;
  tpComm: number;
  epComm: number;
}

export interface StageCost {
  layers: number;
  recompute: number;
  /** Seconds per micro-batch: forward, backward (recompute included). */
  fwd: number;
  bwd: number;
  /** Of which compute, and communication (TP/EP), forward and backward. */
  fwdCompute: number;
  bwdCompute: number;
  fwdComm: number;
  bwdComm: number;
  /** Of the communication per micro-batch (fwd + bwd): TP all-reduces and EP all-to-alls. */
  tpComm: number;
  epComm: number;
  fwdFlops: number;
  denseParams: number;
  expertParams: number;
  memory: MemoryBreakdown;
  /** Micro-batches whose activations the stage holds at once. */
  inFlight: number;
}

export interface MemoryBreakdown {
  weights: number;
  grads: number;
  optimizer: number;
  activations: number;
  transient: number;
  total: number;
}

function ring(kind: "allreduce" | "gather" | "p2p", bytes: number, p: number, link: Link): number {
  if (kind === "p2p") return link.latency + bytes / link.bandwidth;
  if (p <= 1) return 0;
  const k = kind === "allreduce" ? 2 : 1;
  return k * (p - 1) * link.latency + (k * (p - 1) / p) * (bytes / link.bandwidth);
}

/** Collective time of a group: ring all-reduce, reduce-scatter/all-gather/all-to-all, or send/recv. */
export const collective = ring;

/** Mean keys attended per query: causal, capped by the sliding window. */
export function meanKeys(T: number, window: number): number {
  if (window <= 0 || window >= T) return (T + 1) / 2;
  // queries t < w see t+1 keys; the rest see w
  return (window * (window + 1) / 2 + (T - window) * window) / T;
}

/** Everything about a layout that does not depend on the partition. */
export class LayoutCost {
  readonly N: number;
  readonly m: number;
  readonly world: number;
  readonly layer: LayerCost[];
  readonly linkTp: Link;
  readonly linkDp: Link;
  readonly linkEp: Link;
  /** Link of the expert-data-parallel group (reduces expert gradients; not Skywork's EDP). */
  readonly linkExpertDp: Link;
  /** Link of a TP rank's gradient group across the pipeline stages (same TP and DP coordinates). */
  readonly linkStages: Link;
  readonly expertDp: number;
  readonly vocabShard: number;
  private readonly moeFull: number;
  private readonly denseFull: number;
  /** Prefix sums over layers of the per-layer quantities (index l = sum of layers < l). */
  private readonly pre: Record<"flops" | "comm" | "tp" | "ep" | "dense" | "expert" | "full" | "ckpt" | "moe", Float64Array>;

  constructor(
    readonly model: PlanModel,
    readonly run: PlanRun,
    readonly cluster: ClusterSpec,
    readonly shape: Omit<Layout, "partition" | "recompute">,
    readonly opts: CostOptions,
  ) {
    validateCost(opts);
    const { dp, tp, pp, ep, expert } = shape;
    this.N = run.microBatch * run.seqLen;
    this.world = dp * tp * pp;
    const perStep = run.globalBatch / (run.microBatch * dp);
    if (!Number.isInteger(perStep)) throw new PlanError(`global batch ${run.globalBatch} is not a multiple of micro-batch ${run.microBatch} × dp ${dp}`);
    this.m = perStep;
    this.expertDp = expert === "ep" ? dp / ep : dp;
    this.vocabShard = cdiv(model.vocab, tp);
    const dpn = cluster.devicesPerNode;
    const link = (size: number, stride: number) => (size * stride <= dpn ? cluster.intraNode : cluster.interNode);
    this.linkTp = link(tp, 1);
    this.linkDp = link(dp, tp);
    this.linkEp = link(ep, tp);
    this.linkExpertDp = expert === "ep" ? link(dp, tp) : this.linkDp;
    this.linkStages = link(pp, dp * tp);
    this.layer = model.moeLayers.map((moe) => this.layerCost(moe));
    this.moeFull = this.layerCost(true).actFull;
    this.denseFull = this.layerCost(false).actFull;
    const L = model.layers;
    const mk = () => new Float64Array(L + 1);
    this.pre = { flops: mk(), comm: mk(), tp: mk(), ep: mk(), dense: mk(), expert: mk(), full: mk(), ckpt: mk(), moe: mk() };
    for (let l = 0; l < L; l++) {
      const c = this.layer[l]!, q = this.pre;
      const put = (x: Float64Array, v: number) => (x[l + 1] = x[l]! + v);
      put(q.flops, c.fwdFlops);
      put(q.comm, c.fwdComm);
      put(q.tp, c.tpComm);
      put(q.ep, c.epComm);
      put(q.dense, c.denseParams);
      put(q.expert, c.expertParams);
      put(q.full, c.actFull);
      put(q.ckpt, c.actCkpt);
      put(q.moe, model.moeLayers[l] ? 1 : 0);
    }
  }

  private layerCost(moe: boolean): LayerCost {
    const { model: M, N, opts } = this;
    const { tp, ep, expert } = this.shape;
    const a = opts.precision.actBytes;
    const C = M.hidden, HS = M.headDim;
    const nh = cdiv(M.heads, tp), kvh = cdiv(M.kvHeads, tp);
    const keys = meanKeys(this.run.seqLen, M.slidingWindow);
    let flops = 2 * N * C * (nh + 2 * kvh) * HS + 2 * N * nh * HS * C + 4 * N * keys * nh * HS;
    let dense = C * (nh + 2 * kvh) * HS + nh * HS * C + 2 * M.normParams + M.attnExtraParams; // biases counted unsplit
    let expertP = 0;
    let act = a * (2 * N * C + N * (nh + 2 * kvh) * HS + N * nh * HS) + 4 * N * nh + (opts.flashAttention ? 0 : a * N * nh * this.run.seqLen);
    const tpAr = tp > 1 ? 2 * ring("allreduce", a * N * C, tp, this.linkTp) : 0;
    let epComm = 0;
    if (moe) {
      const E = M.experts, K = M.topK, F = M.expertHidden;
      const imb = expert === "etp" ? 1 : opts.expertImbalance;
      const slots = expert === "edp" ? cdiv(K * N, tp) * imb : K * N * imb;
      const fr = expert === "edp" ? F : cdiv(F, tp);
      const held = expert === "etp" ? E : expert === "ep" ? cdiv(E, ep) : cdiv(E, tp);
      const fs = cdiv(M.sharedExpertHidden, tp);
      flops += 2 * N * C * E + 2 * slots * 3 * C * fr + 2 * N * 3 * C * fs;
      dense += E * C + (fs > 0 ? 3 * C * fs + C : 0);
      expertP = held * 3 * C * fr;
      act += a * 2 * N * C + 8 * N * E + a * slots * (C + 3 * fr) + a * N * 3 * fs;
      if (expert === "ep" && ep > 1) epComm = 2 * ring("gather", a * slots * C, ep, this.linkEp);
    } else {
      const fd = cdiv(M.denseHidden, tp);
      flops += 2 * N * 3 * C * fd;
      dense += 3 * C * fd;
      act += a * (2 * N * C + 3 * N * fd);
    }
    return { fwdFlops: flops, denseParams: dense, expertParams: expertP, actFull: act, actCkpt: a * N * C, fwdComm: tpAr + epComm, tpComm: tpAr, epComm };
  }

  /** Forward FLOPs of the LM head and loss on the last stage (per rank, per micro-batch). */
  headFlops(): number {
    return 2 * this.N * this.model.hidden * this.vocabShard + 5 * this.N * this.vocabShard;
  }

  /** Cost of stage i holding layers [lo, hi) with the first r of them recomputed (O(1): prefix sums). */
  stage(i: number, lo: number, hi: number, r: number): StageCost {
    if (!(lo >= 0 && lo < hi && hi <= this.model.layers && r >= 0 && r <= hi - lo)) throw new PlanError(`stage ${i}: bad layer range [${lo}, ${hi}) with ${r} recomputed`);
    const { pp, tp } = this.shape;
    const { N, model: M, opts, cluster, pre } = this;
    const p = opts.precision;
    const a = p.actBytes;
    const C = M.hidden;
    const first = i === 0, last = i === pp - 1;
    const sum = (x: Float64Array, from: number, to: number) => x[to]! - x[from]!;
    const mid = lo + r;
    let flops = sum(pre.flops, lo, hi), comm = sum(pre.comm, lo, hi);
    let dense = sum(pre.dense, lo, hi);
    const expertP = sum(pre.expert, lo, hi);
    const reFlops = sum(pre.flops, lo, mid), reComm = sum(pre.comm, lo, mid);
    let tpC = 2 * sum(pre.tp, lo, hi) + sum(pre.tp, lo, mid);
    const epC = 2 * sum(pre.ep, lo, hi) + sum(pre.ep, lo, mid);
    let actStored = sum(pre.ckpt, lo, mid) + sum(pre.full, mid, hi);
    let transient = 0;
    if (r > 0) {
      const moeIn = sum(pre.moe, lo, mid);
      transient = Math.max(moeIn > 0 ? this.moeFull : 0, moeIn < r ? this.denseFull : 0);
    }
    if (first) {
      dense += this.vocabShard * C;
      const e = tp > 1 ? ring("allreduce", a * N * C, tp, this.linkTp) : 0; // vocab-parallel embedding
      comm += e;
      tpC += 2 * e;
    }
    if (last) {
      if (!(M.tiedEmbeddings && pp === 1)) dense += this.vocabShard * C;
      dense += M.normParams + (M.lmHeadBias ? this.vocabShard : 0); // final norm, lm_head bias
      flops += this.headFlops();
      actStored += a * 2 * N * C;
      transient += 8 * N * this.vocabShard; // fp32 logits and their gradient
      const h = tp > 1 ? ring("allreduce", 3 * 4 * N, tp, this.linkTp) : 0; // vocab-parallel max, sum, target logit
      comm += h;
      tpC += 2 * h;
    }
    const inFlight = Math.min(pp - i, this.m);
    const weights = (dense + expertP) * p.paramBytes;
    const grads = (dense + expertP) * p.gradBytes;
    const optimizer = opts.zero1 ? (dense * p.optimBytes) / this.shape.dp + (expertP * p.optimBytes) / this.expertDp : (dense + expertP) * p.optimBytes;
    const activations = inFlight * actStored;
    const memory = { weights, grads, optimizer, activations, transient, total: weights + grads + optimizer + activations + transient };
    const rate = cluster.flops;
    // the head's FLOPs run at their own rate (headEfficiency); the layers' at cluster.flops
    const head = last ? this.headFlops() : 0;
    const fwdCompute = (flops - head) / rate + head / (rate * opts.headEfficiency);
    const bwdCompute = 2 * fwdCompute + reFlops / rate;
    const fwdComm = comm, bwdComm = comm + reComm;
    return {
      layers: hi - lo, recompute: r, fwd: fwdCompute + fwdComm, bwd: bwdCompute + bwdComm, fwdCompute, bwdCompute, fwdComm, bwdComm,
      tpComm: tpC, epComm: epC, fwdFlops: flops, denseParams: dense, expertParams: expertP, memory, inFlight,
    };
  }

  /** The fewest recomputed layers that fit stage i in memory, or null when none does. */
  minRecompute(i: number, lo: number, hi: number): StageCost | null {
    const cap = this.cluster.memoryBytes;
    const none = this.stage(i, lo, hi, 0);
    if (none.memory.total <= cap) return none;
    // memory falls as r grows except for the transient jump at r = 1: binary search on r ≥ 1
    let a = 1, b = hi - lo;
    if (b < 1 || this.stage(i, lo, hi, b).memory.total > cap) return null;
    while (a < b) {
      const mid = (a + b) >> 1;
      if (this.stage(i, lo, hi, mid).memory.total <= cap) b = mid;
      else a = mid + 1;
    }
    return this.stage(i, lo, hi, a);
  }

  /** Seconds for one micro-batch's activations to cross each stage boundary (rank placement TP, DP, PP). */
  p2pTimes(): number[] {
    const { tp, dp, pp } = this.shape;
    const span = tp * dp, dpn = this.cluster.devicesPerNode;
    const bytes = this.opts.precision.actBytes * this.N * this.model.hidden;
    const out: number[] = [];
    for (let i = 0; i + 1 < pp; i++) {
      let inter = false;
      for (let r = i * span; r < (i + 1) * span && !inter; r++) inter = Math.floor(r / dpn) !== Math.floor((r + span) / dpn);
      out.push(ring("p2p", bytes, 2, inter ? this.cluster.interNode : this.cluster.intraNode));
    }
    return out;
  }

  /** Parameters of the whole model on one rank of this layout: dense (embedding, head, norms included), experts held, experts of all ranks. */
  arenaParams(): { dense: number; expertHeld: number; expertAll: number } {
    const M = this.model, L = M.layers;
    const embed = this.vocabShard * M.hidden * (M.tiedEmbeddings ? 1 : 2);
    const dense = this.pre.dense[L]! + embed + M.normParams + (M.lmHeadBias ? this.vocabShard : 0);
    const expertHeld = this.pre.expert[L]!;
    return { dense, expertHeld, expertAll: this.shape.expert === "ep" ? expertHeld * this.shape.ep : expertHeld };
  }

  /** Seconds once per step after the pipeline on stage s: gradient synchronisation plus the optimizer. */
  tail(s: StageCost): number {
    return this.dpSync(s) + this.optimizerTime(s);
  }

  /** Options of the 1F1B simulation: processor sharing when the ranks share fewer cores (cluster.concurrency). */
  simOptions(): SimulateOptions {
    const c = this.cluster.concurrency, poll = this.cluster.pollShare;
    return { record: false, replicas: this.shape.dp * this.shape.tp, ...(c !== undefined ? { cores: c } : {}), ...(poll !== undefined ? { pollShare: poll } : {}) };
  }

  /**
   * AdamW over the parameters the rank updates plus the gradient norm over those it holds (0 when
   * not modelled); every rank runs it at once, so at cluster.concurrency / world of the rate when
   * the ranks share fewer cores.
   */
  optimizerTime(s: StageCost): number {
    const o = this.opts, { dp } = this.shape;
    const c = this.cluster.concurrency, slow = c !== undefined && c < this.world ? this.world / c : 1;
    if (o.gradSync === "arena") {
      const a = this.arenaParams();
      if (this.shape.expert === "ep" && this.shape.ep > 1) {
        // the rank's arena holds its experts only; ZeRO-1 splits dense over dp, experts over expDp
        const held = a.dense + a.expertHeld, updated = o.zero1 ? a.dense / dp + a.expertHeld / this.expertDp : held;
        return slow * (updated * o.optimizerSecondsPerParam + held * (o.normSecondsPerParam + o.gradPassSecondsPerParam));
      }
      // ZeRO-1 shards over every rank, or under TP each TP rank's slice over its DP group
      const all = a.dense + a.expertAll, zeroGroup = this.shape.tp > 1 ? dp : this.world;
      return slow * ((o.zero1 ? all / zeroGroup : all) * o.optimizerSecondsPerParam + all * (o.normSecondsPerParam + o.gradPassSecondsPerParam));
    }
    const updated = o.zero1 ? s.denseParams / dp + s.expertParams / this.expertDp : s.denseParams + s.expertParams;
    return slow * (updated * o.optimizerSecondsPerParam + (s.denseParams + s.expertParams) * (o.normSecondsPerParam + o.gradPassSecondsPerParam));
  }

  /** Gradient synchronisation of one stage once per step (seconds). */
  dpSync(s: StageCost): number {
    const p = this.opts.precision;
    const { dp } = this.shape;
    if (this.opts.gradSync === "arena") {
      // this engine: all-reduce of the whole gradient arena over every rank; ZeRO-1 then
      // all-gathers the updated parameters over every rank. TP: a TP rank's slice over its DP
      // group, then across the stages. EP (the rank stores only its experts): dense over dp,
      // held experts over expDp, ZeRO-1's gathers over the same groups
      const a = this.arenaParams(), w = this.world, link = this.linkDp;
      const ep = this.shape.expert === "ep" ? this.shape.ep : 1;
      if (ep > 1) {
        const grads = ring("allreduce", a.dense * p.gradBytes, dp, link) + ring("allreduce", a.expertHeld * p.gradBytes, this.expertDp, this.linkExpertDp);
        return grads + (this.opts.zero1 ? ring("gather", a.dense * p.paramBytes, dp, link) + ring("gather", a.expertHeld * p.paramBytes, this.expertDp, this.linkExpertDp) : 0);
      }
      const bytes = (a.dense + a.expertAll) * p.gradBytes, params = (a.dense + a.expertAll) * p.paramBytes;
      if (this.shape.tp > 1) {
        // TP (the trainer's gradGroup): each TP rank's slice all-reduced over its DP group, then
        // across the stages; ZeRO-1 gathers over the DP group
        const grads = ring("allreduce", bytes, dp, link) + ring("allreduce", bytes, this.shape.pp, this.linkStages);
        return grads + (this.opts.zero1 ? ring("gather", params, dp, link) : 0);
      }
      return ring("allreduce", bytes, w, link) + (this.opts.zero1 ? ring("gather", params, w, link) : 0);
    }
    const part = (params: number, size: number, link: Link) =>
      this.opts.zero1 ? ring("gather", params * p.gradBytes, size, link) + ring("gather", params * p.paramBytes, size, link) : ring("allreduce", params * p.gradBytes, size, link);
    return part(s.denseParams, dp, this.linkDp) + part(s.expertParams, this.expertDp, this.linkExpertDp);
  }

  /** Model FLOPs of one optimizer step (forward + backward, no recompute), for MFU. */
  modelFlopsPerStep(): number {
    const M = this.model, N = this.N, C = M.hidden, HS = M.headDim;
    const keys = meanKeys(this.run.seqLen, M.slidingWindow);
    let f = 2 * N * C * M.vocab;
    for (const moe of M.moeLayers) {
      f += 2 * N * C * (M.heads + 2 * M.kvHeads) * HS + 2 * N * M.heads * HS * C + 4 * N * keys * M.heads * HS;
      f += moe ? 2 * N * C * M.experts + 2 * M.topK * N * 3 * C * M.expertHidden + 2 * N * 3 * C * M.sharedExpertHidden : 2 * N * 3 * C * M.denseHidden;
    }
    return 3 * f * (this.run.globalBatch / this.run.microBatch);
  }

  /** Stage times for the simulator from per-stage costs. */
  stageTimes(stages: StageCost[], withComm = true): StageTimes {
    return {
      fwd: stages.map((s) => (withComm ? s.fwd : s.fwdCompute)),
      bwd: stages.map((s) => (withComm ? s.bwd : s.bwdCompute)),
      p2p: withComm ? this.p2pTimes() : this.p2pTimes().map(() => 0),
    };
  }
}

/** `total` items over `parts`: the first total mod parts get one more (moe-techniques.md §6). */
export function evenSplit(total: number, parts: number): number[] {
  const q = Math.floor(total / parts), r = total % parts;
  return Array.from({ length: parts }, (_, i) => q + (i < r ? 1 : 0));
}
