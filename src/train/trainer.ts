// The training loop.
//
// Setup (Trainer.create), numbered:
//  1. run directory: refuse to overwrite an existing run unless resuming
//  2. tokenizer: the configured tokenizer.json, else one trained on the corpus (cached by corpus
//     fingerprint and vocab size)
//  3. token shards: tokenised once into the cache, streamed by the loaders
//  4. model: from a checkpoint (model.from or the run's latest checkpoint on resume) or a preset
//     with overrides; the router choice decides the saved HF family (topk → mixtral,
//     skywork → skywork, sparsemixer → phimoe)
// Each step: grad_accum micro-batches forward+backward (gradients scaled 1/grad_accum), a
// finiteness check (non-finite steps are skipped and counted; too many in a row stop the run
// with the last good checkpoint intact), global-norm clipping, AdamW with the scheduled LR, and
// the Skywork adaptive α update from each layer's (virtual) drop rate.
// Deterministic: the same config, data and thread count give bit-identical losses, and a resumed
// run continues the uninterrupted run's loss sequence exactly (data cursor, α, optimizer state and
// counter-based router noise are all restored).
import { appendFileSync } from "node:fs";
import path from "node:path";
import type { Backend } from "../backend/index.js";
import type { HfConfig, ModelConfig } from "../model/config.js";
import { setupRun, TrainingError } from "./setup.js";
import { MoeError } from "../moe/dims.js";
import { MoeModel, type StepResult } from "../model/model.js";
import { expertSimilarity } from "../model/upcycle.js";
import { adaptiveAlphaInit, adaptiveAlphaStep, auxFreeBiasUpdate, type AdaptiveAlphaConfig, type AdaptiveAlphaState } from "../moe/balance.js";
import type { Tokenizer } from "../data/types.js";
import type { ShardSet } from "../data/shards.js";
import { TokenLoader, unigramBaseline } from "../data/loader.js";
import { generate } from "../infer/generate.js";
import type { TrainConfig } from "./config.js";
import { layerGroup, type ProcessGroup } from "../parallel/process-group.js";
import { evaluateLoss } from "./eval.js";
import type { Mesh } from "../parallel/mesh.js";
import { EpGradientReducer, ExpertParallel, ExpertShard, type SyncGroup } from "../parallel/expert-parallel.js";
import { EpZero } from "./ep-zero.js";
import { PipelineStage, resolvePartition, singleStageGroups, type PipelineGroups } from "../parallel/pipeline.js";
import { TensorParallelLayout } from "../parallel/tensor-parallel.js";
import { Weights } from "../model/weights.js";
import type { FArr } from "../nn/dims.js";

export { buildRunHfConfig } from "./model-config.js";
export { setupRun, type RunSetup } from "./setup.js";
import { createOptimState, gradNorm, learningRate, optimStep, optimStepRange, optimStepRanges, type OptimState, type ScheduleConfig } from "./optim.js";
import { latestCheckpoint, saveRunCheckpoint, type TrainerStateJson } from "./checkpoints.js";
import { loadOptimRange, saveShardedCheckpoint, zeroRange } from "./shard-checkpoint.js";
import { StepCounts } from "./global-balance.js";
import { OverlappedGradReduce, planGradBuckets, type OverlapTiming } from "./grad-overlap.js";

export { TrainingError } from "./setup.js";

/** What one optimizer step reports (also the metrics.jsonl record). */
export interface StepReport {
  step: number;
  loss: number;
  ce: number;
  /** Σ_l α_l·aux_l + c_z·Σ_l z_l of the step (mean over micro-batches). */
  balanceLoss: number;
  lr: number;
  gradNorm: number;
  skipped: boolean;
  tokens: number;
  ms: number;
  tokensPerSec: number;
  /** Data parallelism: ms in the step's collectives (gradient + statistics all-reduce, ZeRO-1 gather), including waits for the slowest rank; 0 on one rank. */
  commMs: number;
  /** Share of commMs that ran while this rank computed: the overlapped gradient all-reduce's transport time minus the time the step waited for it, over commMs (0 without overlap, and on the threads backend). */
  commHiddenShare: number;
  layers: LayerReport[];
  /** Expert parallelism: ms this rank (rank 0 in metrics.jsonl) spent in the MoE all-to-all-v calls, waiting for peers included. */
  epCommMs?: number;
  /** Tensor parallelism: ms this rank (rank 0 in metrics.jsonl) spent in the TP all-reduces of forward and backward, waiting for peers included. */
  tpCommMs?: number;
  /** Pipeline runs: this rank's stage, its compute and its waiting in boundary exchanges (ms). */
  pipeline?: { stage: number; busyMs: number; waitMs: number };
}

export interface LayerReport {
  layer: number;
  alpha: number;
  aux: number;
  z: number;
  dropRate: number;
  virtualDropRate: number;
  entropy: number;
  maxOverMeanLoad: number;
  tokensPerExpert: number[];
}



export interface TrainerOptions {
  resume: boolean;
  /** Replace an existing run in train.out_dir (a fresh run refuses one otherwise). */
  overwrite?: boolean;
  /** The world group (parallel.dp × parallel.pp ranks); null or absent: one rank. */
  group?: ProcessGroup | null;
  /** Pipeline groups (createPipelineGroups) when parallel.pp > 1. */
  pipeline?: PipelineGroups | null;
  /** Expert or tensor parallelism (parallel.ep > 1, parallel.tp > 1): the mesh of `group` (its ep, expDp, tp and dp groups). */
  mesh?: Mesh | null;
  /** Human-readable log lines (progress goes through onStep). */
  log: (line: string) => void;
}

export class Trainer {
  readonly backend: Backend;
  readonly model: MoeModel;
  readonly tokenizer: Tokenizer;
  readonly hf: HfConfig;
  readonly cfg: ModelConfig;
  step = 0;
  tokensSeen = 0;
  badSteps = 0;
  private alpha: AdaptiveAlphaState | null;
  private readonly optim: OptimState;
  private train: TokenLoader;
  private readonly shards: ShardSet;
  private readonly tokenizerFile: string;
  private readonly metricsFile: string;
  private sampler: MoeModel | null = null;
  /** Data parallelism: the world group, this rank, and the ZeRO-1 shard [lo, hi) of the arena. */
  readonly group: ProcessGroup | null;
  readonly rank: number;
  private readonly dp: number;
  /** This rank's data-parallel replica, and its pipeline stage (pp > 1 or recompute; else null). */
  private readonly dpRank: number;
  private readonly stage: PipelineStage | null;
  /** The MoE layers' group for GRIN's global balancing loss (expert counts summed over the DP ranks). */
  private readonly layerGroup: ReturnType<typeof layerGroup> | null;
  private readonly zero: { lo: number; hi: number; chunk: number; group: ProcessGroup } | null;
  /** Expert parallelism: the dispatch context of this rank's experts, the gradient reducer, the EP group, and the map of this rank's arena into the full one (this.model holds only its experts). */
  private readonly ep: { ctx: ExpertParallel; grads: EpGradientReducer; group: ProcessGroup; shard: ExpertShard } | null;
  /** ZeRO-1 under expert parallelism: the arena ranges whose moments this rank holds. */
  private readonly epZero: EpZero | null;
  /** parallel.overlap_grad_reduce (plain DP): the gradient all-reduce started during the last backward. */
  private readonly overlap: OverlappedGradReduce | null;
  /** Tensor parallelism (this.model is the rank's slice): the layout, the TP group, the stage's DP group of this TP rank, and the group its gradients sum over (that DP group; PP: then the same TP rank of every stage). */
  private readonly tp: { layout: TensorParallelLayout; group: ProcessGroup; dpGroup: ProcessGroup; gradGroup: SyncGroup } | null;

  private constructor(
    readonly c: TrainConfig, readonly outDir: string, args: {
      backend: Backend; model: MoeModel; tokenizer: Tokenizer; tokenizerFile: string; hf: HfConfig; cfg: ModelConfig; shards: ShardSet;
    },
    group: ProcessGroup | null,
    mesh: Mesh | null = null, pipeline: PipelineGroups | null = null,
  ) {
    this.group = group;
    this.rank = group?.rank ?? 0;
    const world = group?.size ?? 1, pp = c.parallel.pp, tp = c.parallel.tp;
    this.dp = c.parallel.dp;
    if (world !== this.dp * pp * tp) throw new TrainingError(`parallel.dp=${c.parallel.dp} × parallel.pp=${pp} × parallel.tp=${tp} but the run has ${world} rank(s); launch with moe launch --nproc ${this.dp * pp * tp} -- train …`);
    this.tp = null;
    if (tp > 1) {
      if (!mesh || mesh.sizes.tp !== tp) throw new TrainingError(`parallel.tp=${tp} needs the tensor-parallel mesh: launch with moe launch --nproc ${this.dp * tp} -- train parallel.dp=${this.dp} parallel.tp=${tp} …`);
      let layout: TensorParallelLayout;
      try {
        // (TP × EP: the rank stores only its EP rank's experts, each column-split over the TP group)
        layout = new TensorParallelLayout(args.cfg, mesh.coord.tp, tp, c.parallel.edp, c.parallel.ep > 1 ? { size: c.parallel.ep, rank: mesh.ep.rank } : null);
      } catch (e) {
        throw new TrainingError((e as Error).message);
      }
      // this rank's slice of the (initialised or loaded) full model; the full copy is dropped
      const full = args.model;
      const local = new MoeModel(layout.localCfg, args.backend, { ...full.shape, tp: layout.context(mesh.tp) }, layout.weights(full.weights.dtype));
      layout.slice(full.params, local.params);
      args = { ...args, model: local };
      this.tp = { layout, group: mesh.tp, dpGroup: mesh.dp, gradGroup: pp > 1 ? acrossStages(mesh.dp, mesh.pp) : mesh.dp };
    }
    if (pp > 1 && (!pipeline || pipeline.pp !== pp)) throw new TrainingError(`parallel.pp=${pp} needs the pipeline groups (createPipelineGroups) of ${pp} stages`);
    if (pp > 1 && mesh && mesh.sizes.pp !== pp) throw new TrainingError(`parallel.pp=${pp} needs a mesh of ${pp} stages`);
    // (TP × PP: the pipeline's replicas are dp × tp ranks per stage; the data replica is the mesh's dp)
    this.dpRank = this.tp ? mesh!.coord.dp : (pipeline?.dpRank ?? this.rank);
    // MoE global balancing sums expert counts over the replicas that run the same layers
    this.layerGroup = this.tp ? layerGroup(this.tp.dpGroup) : pipeline ? (pipeline.dpGroup ? layerGroup(pipeline.dpGroup) : null) : group ? layerGroup(group) : null;
    if (c.parallel.ep > 1) {
      const E = args.cfg.moe.numExperts;
      if (!mesh || mesh.sizes.ep !== c.parallel.ep) throw new TrainingError(`parallel.ep=${c.parallel.ep} needs the expert-parallel mesh: launch with moe launch --nproc ${this.dp * pp * tp} -- train parallel.dp=${c.parallel.dp} parallel.ep=${c.parallel.ep} …`);
      if (E % c.parallel.ep !== 0) throw new TrainingError(`parallel.ep=${c.parallel.ep} must divide the model's ${E} experts per layer`);
      // this rank stores only its experts (weights, gradients, moments; TP × EP: of its TP slice)
      const shard = new ExpertShard(this.tp ? this.tp.layout.localCfg : args.cfg, c.parallel.ep, mesh.ep.rank);
      const given = args.model.weights.experts;
      if (given && (given.first !== shard.experts.first || given.count !== shard.experts.count)) throw new TrainingError(`expert parallelism: the loaded weights hold experts [${given.first}, ${given.first + given.count}), this rank owns [${shard.experts.first}, ${shard.experts.first + shard.experts.count})`);
      if (this.tp && shard.localLayout.size !== args.model.params.length) throw new TrainingError(`tensor × expert parallelism: the rank's arena has ${args.model.params.length} values, its expert shard's layout ${shard.localLayout.size}`);
      if (!given && !this.tp) {
        // a fresh model is initialised whole (the same values at any layout), then cut to this rank's experts
        const full = args.model;
        const local = new MoeModel(args.cfg, args.backend, full.shape, new Weights(args.cfg, full.weights.dtype, undefined, shard.experts));
        shard.slice(full.params, local.params);
        args = { ...args, model: local };
      }
      // PP × EP: a stage's gradients are zero outside its layers, so the dense part sums over the
      // world and the experts over the same-expert ranks of every stage (its expDp, then pp group)
      // (TP × EP: the dense slice over the DP ranks of this TP rank (and its stages), the experts
      // over the ranks with the same experts and slice)
      const expDp = pp > 1 ? acrossStages(mesh.expDp, mesh.pp) : mesh.expDp;
      const groups = this.tp ? { dp: this.tp.gradGroup, ep: mesh.ep, expDp } : pp > 1 ? { dp: group!, ep: mesh.ep, expDp } : mesh;
      this.ep = { ctx: new ExpertParallel(mesh.ep, E), grads: new EpGradientReducer(shard.localRanges, groups), group: mesh.ep, shard };
    } else this.ep = null;
    // ZeRO-1 shards over every rank: after the gradient sum all ranks hold the whole gradient
    // (EP: the dense part over every rank, the experts over the ranks holding the same ones)
    // (TP: the TP ranks hold different slices, so each shards its own slice over its DP group)
    const zeroGroup = this.tp ? this.tp.dpGroup : group;
    this.zero = c.parallel.zero === 1 && zeroGroup && zeroGroup.size > 1 && !this.ep ? { ...zeroRange(args.model.params.length, zeroGroup.size, zeroGroup.rank), group: zeroGroup } : null;
    this.epZero = c.parallel.zero === 1 && this.ep ? new EpZero(this.ep.shard.localRanges, mesh!) : null;
    this.backend = args.backend;
    this.model = args.model;
    this.tokenizer = args.tokenizer;
    this.tokenizerFile = args.tokenizerFile;
    this.hf = args.hf;
    this.cfg = args.cfg;
    this.shards = args.shards;
    this.optim = createOptimState(this.zero ? this.model.params.subarray(this.zero.lo, this.zero.hi) : this.epZero ? new Float32Array(this.epZero.size) : this.model.params);
    this.alpha = c.balance.adaptive && c.balance.loss !== "none" ? adaptiveAlphaInit(this.alphaCfg(), this.cfg.numLayers) : null;
    this.train = new TokenLoader(this.shards, "train", c.train.batch_size, c.train.seq_len, c.train.seed);
    this.metricsFile = path.join(outDir, "metrics.jsonl");
    this.stage = null;
    if (pp > 1 || c.parallel.recompute !== null) {
      let layout;
      try {
        layout = resolvePartition(this.cfg.numLayers, pp, c.parallel.pp_layers, c.parallel.recompute);
      } catch (e) {
        throw new TrainingError((e as Error).message);
      }
      const m = this.model;
      // (TP: the rank's slice config and TP context, as its model's)
      this.stage = new PipelineStage(this.backend, m.weights, m.gradients, m.cfg, { B: c.train.batch_size, T: c.train.seq_len, tp: m.shape.tp }, pipeline ?? singleStageGroups(), layout, c.train.grad_accum / this.dp);
      if (c.balance.loss === "global" && c.balance.global_scope === "step") throw new TrainingError("balance.global_scope=step with parallel.pp > 1 or parallel.recompute: the step-wide counting pass does not run through the pipeline stage yet; use balance.global_scope=micro_batch");
    }
    // overlapped gradient reduction: plain data parallelism (EP, TP and pipeline stages reduce their own way)
    const m = this.model;
    this.overlap = group && world > 1 && !this.ep && !this.stage && !this.tp && c.parallel.overlap_grad_reduce && m.grads instanceof Float32Array
      ? new OverlappedGradReduce(group, m.grads, planGradBuckets(m.layout, m.names, 4, c.parallel.bucket_mb * 2 ** 20))
      : null;
  }

  private alphaCfg(): AdaptiveAlphaConfig {
    const b = this.c.balance;
    return { xi: b.xi, alphaMax: b.alpha_max, beta: b.beta, alpha0: b.alpha0 };
  }

  static create(c: TrainConfig, opts: TrainerOptions): Trainer {
    const group = opts.group ?? null;
    // expert parallelism: a checkpoint is read with this rank's experts only
    const mesh = opts.mesh ?? null;
    // (TP × EP: the whole model is read and the TP layout cuts the rank's slice of its experts)
    const expertShard = c.parallel.ep > 1 && c.parallel.tp === 1 && mesh?.sizes.ep === c.parallel.ep ? { ep: c.parallel.ep, rank: mesh.ep.rank } : null;
    const run = setupRun(c, { ...opts, writer: (group?.rank ?? 0) === 0, expertShard });
    const t = new Trainer(c, run.outDir, run, group, mesh, opts.pipeline ?? null);
    if (run.resumeFrom) {
      // sharded or gathered, written at any layout: a ZeRO-1 rank reads its own range only, a TP
      // rank its slice of the whole, an EP rank its experts (and the dense part)
      let st: TrainerStateJson;
      const slicer = t.tp?.layout ?? t.ep?.shard;
      if (slicer) {
        const size = slicer.fullLayout.size, full = createOptimState(new Float32Array(size));
        st = loadOptimRange(run.resumeFrom, full, 0, size, size);
        const local = t.epZero || t.zero ? createOptimState(t.model.params) : t.optim;
        slicer.slice(full.m, local.m);
        slicer.slice(full.v, local.v);
        t.epZero?.pick(local.m, t.optim.m);
        t.epZero?.pick(local.v, t.optim.v);
        // TP × ZeRO-1: this rank's range of its slice
        if (t.zero) {
          t.optim.m.set(local.m.subarray(t.zero.lo, t.zero.hi));
          t.optim.v.set(local.v.subarray(t.zero.lo, t.zero.hi));
        }
        t.optim.step = full.step;
      } else st = loadOptimRange(run.resumeFrom, t.optim, t.zero?.lo ?? 0, t.zero?.hi ?? t.model.params.length, t.model.params.length);
      t.step = st.step;
      t.tokensSeen = st.tokensSeen;
      t.badSteps = st.badSteps;
      t.alpha = st.alpha ? { alpha: Float64Array.from(st.alpha.alpha as unknown as number[]) } : null;
      t.train = TokenLoader.restore(run.shards, "train", c.train.batch_size, c.train.seq_len, st.loader);
      opts.log(`resumed from ${run.resumeFrom} at step ${st.step}`);
    }
    return t;
  }

  /** Per-layer α used this step (0 on dense layers and when balancing is off). */
  private coefs(): number[] {
    const L = this.cfg.numLayers;
    if (this.c.balance.loss === "none") return new Array(L).fill(0);
    return Array.from({ length: L }, (_, l) => (this.cfg.moe.moeLayers[l] ? (this.alpha ? this.alpha.alpha[l]! : this.c.balance.coef) : 0));
  }

  private schedule(): ScheduleConfig {
    const o = this.c.optim;
    return { lr: o.lr, minLr: o.min_lr, warmupSteps: o.warmup_steps, totalSteps: this.c.train.steps, schedule: o.schedule, wsdDecayFraction: o.wsd_decay_fraction };
  }

  /** One optimizer step. */
  trainStep(): StepReport {
    const t0 = performance.now(), comm0 = this.ep?.ctx.commMs ?? 0, tpComm0 = this.tp?.layout.commMs ?? 0;
    const c = this.c, A = c.train.grad_accum, L = this.cfg.numLayers;
    const coefs = this.coefs();
    const step = this.step + 1;
    this.model.zeroGrad();
    let loss = 0, ce = 0, tokens = 0;
    const E = this.cfg.moe.numExperts;
    const acc = Array.from({ length: L }, () => ({ aux: 0, z: 0, drop: 0, vdrop: 0, entropy: 0, load: 0, tpe: new Array<number>(E).fill(0) }));
    // data parallelism: every rank reads the step's A micro-batches, runs its own A/dp of them
    const mine = A / this.dp, first = this.dpRank * mine;
    const add = (r: Pick<StepResult, "loss" | "ce" | "tokens" | "moe">) => {
      loss += r.loss / A;
      ce += r.ce / A;
      tokens += r.tokens;
      r.moe.forEach((s, l) => {
        if (!s) return;
        const x = acc[l]!;
        x.aux += s.aux / A;
        x.z += s.z / A;
        x.drop += s.dropRate / A;
        x.vdrop += s.virtualDropRate / A;
        x.entropy += s.entropy / A;
        x.load += s.maxOverMeanLoad / A;
        s.tokensPerExpert.forEach((v, e) => (x.tpe[e] = (x.tpe[e] ?? 0) + v));
      });
    };
    if (this.stage) {
      // pipeline (and/or recompute): this replica's micro-batches through this stage in 1F1B order
      const batches = Array.from({ length: A }, () => this.train.next()).slice(first, first + mine);
      const opt = (k: number) => ({ train: true, seed: c.train.seed, step: (step - 1) * A + first + k, auxCoefs: coefs, group: this.layerGroup ?? undefined, ep: this.ep?.ctx });
      this.stage.step(batches, opt, 1 / A).forEach(add);
    }
    // GRIN global balance over the whole step: a counting pass first (train/global-balance.ts)
    const batches = this.stage ? [] : Array.from({ length: A }, () => this.train.next());
    const counts = !this.stage && c.balance.loss === "global" && c.balance.global_scope === "step" ? this.countExperts(batches.slice(first, first + mine), step, first, coefs) : null;
    for (let a = 0; a < A && !this.stage; a++) {
      const batch = batches[a]!;
      if (a < first || a >= first + mine) continue;
      let r: StepResult;
      try {
        r = this.model.forward(batch.inputs, batch.targets, { train: true, seed: c.train.seed, step: (step - 1) * A + a, auxCoefs: coefs, group: counts ? counts.group(a - first) : (this.layerGroup ?? undefined), ep: this.ep?.ctx });
      } catch (e) {
        // routing refuses NaN scores (it cannot rank them): that is a non-finite step, not a crash
        // (under EP the other ranks wait in this layer's all-to-all: fail the run instead)
        if (!(e instanceof MoeError && /NaN/.test(e.message)) || this.ep) throw e;
        loss = NaN;
        continue;
      }
      // the last micro-batch's backward starts each finished bucket's all-reduce (overlap)
      const ov = a === first + mine - 1 ? this.overlap : null;
      if (ov) this.model.backward(1 / A, (part) => ov.done(part));
      else this.model.backward(1 / A);
      add(r);
    }
    let commMs = 0, hiddenMs = 0;
    // TP: partial gradients of replicated per-head norms and kv heads summed over the TP group
    const tpStart = performance.now();
    this.tp?.layout.finishGradients(this.model.grads, this.tp.group);
    commMs += performance.now() - tpStart;
    if (this.group) {
      const red = this.reduceStep(loss, ce, tokens, acc);
      ({ loss, ce, tokens } = red);
      commMs += red.commMs;
      hiddenMs = red.hiddenMs;
    }
    // TP: every parameter counted once (replicated ones on TP rank 0); EP: each expert once (its owners' sum over the EP group)
    const norm = this.tp ? Math.sqrt(this.tp.layout.sumSquares(this.model.grads, this.tp.group, this.ep?.group, (x) => this.backend.sumSquares(x))) : this.ep ? Math.sqrt(this.ep.grads.sumSquares(this.model.grads)) : gradNorm(this.backend, this.model.grads);
    const lr = learningRate(this.schedule(), step);
    const finite = Number.isFinite(loss) && Number.isFinite(norm);
    if (finite) {
      this.badSteps = 0;
      const adam = { beta1: c.optim.beta1, beta2: c.optim.beta2, eps: c.optim.eps, weightDecay: c.optim.weight_decay, gradClip: c.optim.grad_clip };
      if (this.zero) {
        // ZeRO-1: clip, update this rank's shard, then every rank gathers every shard
        if (adam.gradClip > 0 && norm > adam.gradClip) this.backend.scale(this.model.grads, this.model.grads, adam.gradClip / norm);
        optimStepRange(this.backend, this.model.layout, this.model.params, this.model.grads, this.optim, adam, lr, this.zero.lo, this.zero.hi);
        const tg = performance.now();
        this.gatherShards(this.model.params as Float32Array);
        commMs += performance.now() - tg;
      } else if (this.epZero) {
        // ZeRO-1 under EP: the same, over this rank's dense and expert pieces
        if (adam.gradClip > 0 && norm > adam.gradClip) this.backend.scale(this.model.grads, this.model.grads, adam.gradClip / norm);
        optimStepRanges(this.backend, this.model.layout, this.model.params, this.model.grads, this.optim, adam, lr, this.epZero.ranges);
        const tg = performance.now();
        this.epZero.gather(this.model.params);
        commMs += performance.now() - tg;
      } else optimStep(this.backend, this.model.layout, this.model.params, this.model.grads, this.optim, adam, lr, norm);
      this.updateRouterBias(acc.map((x) => x.tpe));
      if (this.alpha) {
        const dropping = this.cfg.moe.dispatch.kind === "capacity";
        this.alpha = adaptiveAlphaStep(this.alpha, acc.map((x, l) => (this.cfg.moe.moeLayers[l] ? (dropping ? x.drop : x.vdrop) : 0)), this.alphaCfg());
      }
    } else {
      this.badSteps++;
      this.model.zeroGrad();
    }
    this.step = step;
    this.tokensSeen += tokens;
    const ms = performance.now() - t0;
    const report: StepReport = {
      step, loss, ce, balanceLoss: loss - ce, lr, gradNorm: norm, skipped: !finite, tokens, ms, tokensPerSec: (this.model.N * A) / (ms / 1e3), commMs, commHiddenShare: commMs > 0 ? hiddenMs / commMs : 0,
      layers: acc.flatMap((x, l) => (this.cfg.moe.moeLayers[l] ? [{
        layer: l, alpha: coefs[l]!, aux: x.aux, z: x.z, dropRate: x.drop, virtualDropRate: x.vdrop, entropy: x.entropy, maxOverMeanLoad: x.load, tokensPerExpert: x.tpe,
      }] : [])),
      ...(this.ep ? { epCommMs: this.ep.ctx.commMs - comm0 } : {}),
      ...(this.tp ? { tpCommMs: this.tp.layout.commMs - tpComm0 } : {}),
    };
    if (this.stage?.lastTiming && this.stage.groups.pp > 1) report.pipeline = { stage: this.stage.groups.stage, busyMs: +this.stage.lastTiming.busyMs.toFixed(2), waitMs: +this.stage.lastTiming.waitMs.toFixed(2) };
    if (this.rank === 0) appendFileSync(this.metricsFile, JSON.stringify(report) + "\n");
    if (!finite && this.badSteps > c.train.nan_tolerance) {
      throw new TrainingError(`step ${step}: ${this.badSteps} consecutive non-finite steps (loss ${loss}, grad norm ${norm}); stopping. The last good checkpoint is ${latestCheckpoint(this.outDir) ?? "(none yet)"}`);
    }
    return report;
  }

  /**
   * Data parallelism: gradients summed over the ranks (each backward was scaled 1/A, so the sum is
   * the global mean), and the step's statistics summed the same way. Fixed rank order: every rank
   * gets bit-identical values. Also the step's communication time (ms) and the part of it that ran
   * while this rank computed (the overlapped buckets' transport time minus the time waited for them).
   */
  private reduceStep(loss: number, ce: number, tokens: number, acc: { aux: number; z: number; drop: number; vdrop: number; entropy: number; load: number; tpe: number[] }[]) {
    // TP: the ranks of a TP group hold different slices and the same statistics: reduce over the DP group
    const g: SyncGroup = this.tp ? this.tp.gradGroup : this.group!, t0 = performance.now();
    let grad: OverlapTiming | null = null, finishMs = 0;
    if (this.ep) this.ep.grads.reduce(this.model.grads);
    else if (this.overlap) {
      grad = this.overlap.finish();
      finishMs = performance.now() - t0;
    } else g.allreduceSync(this.model.grads as Float32Array, "sum");
    const E = this.cfg.moe.numExperts;
    const pack = new Float64Array(3 + acc.length * (6 + E));
    pack[0] = loss;
    pack[1] = ce;
    pack[2] = tokens;
    acc.forEach((x, l) => {
      const o = 3 + l * (6 + E);
      pack.set([x.aux, x.z, x.drop, x.vdrop, x.entropy, x.load], o);
      pack.set(x.tpe, o + 6);
    });
    g.allreduceSync(pack, "sum");
    acc.forEach((x, l) => {
      const o = 3 + l * (6 + E);
      [x.aux, x.z, x.drop, x.vdrop, x.entropy, x.load] = Array.from(pack.subarray(o, o + 6));
      x.tpe = Array.from(pack.subarray(o + 6, o + 6 + E));
    });
    // wall time here, where the overlapped buckets count their transport time instead of the wait
    const wall = performance.now() - t0, hiddenMs = grad ? Math.max(0, grad.commMs - grad.exposedMs) : 0;
    return { loss: pack[0]!, ce: pack[1]!, tokens: pack[2]!, commMs: wall - finishMs + (grad?.commMs ?? 0), hiddenMs };
  }

  /** balance.global_scope=step: expert counts of this rank's micro-batches, summed over them and the DP group. */
  private countExperts(batches: { inputs: Int32Array; targets: Int32Array }[], step: number, first: number, coefs: number[]): StepCounts {
    const A = this.c.train.grad_accum, E = this.cfg.moe.numExperts;
    const shape = this.cfg.moe.moeLayers.flatMap((m) => (m ? [E, 1] : []));
    return StepCounts.count(batches.length, shape, this.layerGroup, (m, group) => {
      this.model.forward(batches[m]!.inputs, batches[m]!.targets, { train: true, seed: this.c.train.seed, step: (step - 1) * A + first + m, auxCoefs: coefs, group, ep: this.ep?.ctx });
    });
  }

  /** ZeRO-1's all-gather buffers (chunk and chunk × group size), allocated on the first gather and reused every step. */
  private gatherBufs: { send: Float32Array; recv: Float32Array } | null = null;

  /**
   * ZeRO-1: a (full-arena) array whose shard [lo, hi) this rank holds becomes whole on every rank
   * of the ZeRO group. The send buffer's tail past a short last shard stays zero (only its first
   * hi − lo elements are ever written).
   */
  private gatherShards(full: Float32Array, shard: Float32Array = full.subarray(this.zero!.lo, this.zero!.hi)): void {
    const { chunk, group, lo, hi } = this.zero!;
    if (shard.length !== hi - lo) throw new TrainingError(`ZeRO-1 gather: a shard of ${shard.length} elements, this rank holds ${hi - lo}`);
    const b = (this.gatherBufs ??= { send: new Float32Array(chunk), recv: new Float32Array(chunk * group.size) });
    b.send.set(shard);
    group.allgatherSync(b.send, b.recv);
    full.set(b.recv.subarray(0, full.length));
  }

  /** ZeRO-1: this rank's moment range made a whole local arena (collective over the ZeRO group). */
  private zeroExpand(piece: FArr): Float32Array {
    const arena = new Float32Array(this.model.params.length);
    this.gatherShards(arena, Float32Array.from(piece));
    return arena;
  }

  /** Aux-free balancing (sigmoid_bias router): each layer's selection bias moves toward equal load. */
  private updateRouterBias(tokensPerExpert: number[][]): void {
    const bal = this.cfg.moe.balance;
    if (this.cfg.moe.router.kind !== "sigmoid_bias" || !bal) return;
    this.model.weights.views.layers.forEach((lw, l) => {
      const b = lw.moe?.routerBias;
      if (!b) return;
      const next = auxFreeBiasUpdate(Float64Array.from(b), tokensPerExpert[l]!, bal.biasRate);
      b.set(next);
    });
  }

  /** Mean CE over `batches` held-out batches (the same batches every call). */
  evaluate(batches = this.c.eval.batches): { loss: number; perplexity: number } {
    // EP: through the EP dispatch (collective: every rank evaluates the same batches)
    const { loss, perplexity } = evaluateLoss(this.model, this.train.evalBatches(batches, "val"), this.ep?.ctx);
    return { loss, perplexity };
  }

  /** Cross-entropy of the train split's unigram distribution on the val split (the baseline to beat). */
  unigramBaseline(): number {
    return unigramBaseline(this.shards, this.tokenizer.vocabSize);
  }

  /** Tensor or expert parallelism (the weights are split): sample(), evaluate(), expertSimilarity() and save() are collective (every rank calls them). */
  get collective(): boolean {
    return this.tp !== null || this.ep !== null;
  }

  /** Elements of this rank's parameter arena (= of its gradient arena), of each of its AdamW moments (fewer under ZeRO-1) and of the whole model's parameters. */
  get storedParameters(): { local: number; moments: number; full: number } {
    return { local: this.model.params.length, moments: this.optim.m.length, full: this.tp?.layout.fullLayout.size ?? this.ep?.shard.fullLayout.size ?? this.model.params.length };
  }

  /** An arena of this rank (weights or moments) made whole: gathered from the TP slices or the EP experts (collective). */
  private gathered(local: FArr): Float32Array {
    if (this.tp) return this.tp.layout.gather(local, this.tp.group, this.ep?.group);
    return this.ep!.shard.gather(local, this.ep!.group);
  }

  /** TP / EP sharded: the whole model's weights gathered from the ranks (collective). */
  private gatheredWeights(): Weights {
    return new Weights(this.cfg, "f32", this.gathered(this.model.params));
  }

  /** Text sampled from the current weights (collective under TP: the weights are gathered first). */
  sample(prompt = this.c.sample.prompt, tokens = this.c.sample.tokens, temperature = this.c.sample.temperature): string {
    const T = this.c.train.seq_len;
    // a (1, T) model over the trainer's own weights: nothing is copied (TP: over the gathered ones)
    if (this.collective) this.sampler = new MoeModel(this.cfg, this.backend, { B: 1, T }, this.gatheredWeights());
    this.sampler ??= new MoeModel(this.cfg, this.backend, { B: 1, T }, this.model.weights);
    let ids = this.tokenizer.encode(prompt);
    if (ids.length === 0 && this.tokenizer.eosId !== undefined) ids = [this.tokenizer.eosId];
    if (ids.length === 0) return prompt;
    // keep at most T − 1 prompt tokens, then generate what still fits in the window
    ids = ids.slice(-Math.max(1, Math.min(ids.length, T - Math.min(tokens, T - 1))));
    const n = Math.min(tokens, T + 1 - ids.length);
    const out = generate(this.sampler, ids, { maxTokens: n, temperature, topP: 0.95, seed: this.c.train.seed + this.step });
    return prompt + this.tokenizer.decode(out);
  }

  expertSimilarity(): number[] {
    return expertSimilarity(this.cfg, this.collective ? this.gatheredWeights().data : this.model.params);
  }

  /** Writes a checkpoint of the current state. */
  save(): string {
    const state: TrainerStateJson = {
      version: 1, step: this.step, optimStep: this.optim.step,
      alpha: this.alpha ? ({ alpha: Array.from(this.alpha.alpha) } as unknown as AdaptiveAlphaState) : null,
      loader: this.train.state(), badSteps: this.badSteps, tokensSeen: this.tokensSeen, config: JSON.parse(JSON.stringify(this.c)),
    };
    // several ranks (weights whole on each, ZeRO-1 over all of them): every rank writes its shard
    // (train/shard-checkpoint.ts); one rank: the gathered format. TP: the slices (weights and
    // moments) are gathered first, so the checkpoint is the one-model format any layout resumes;
    // EP with sharded memory likewise (each rank's experts gathered over its EP group)
    if (this.collective) {
      // ZeRO-1 under EP: this rank's moment pieces made whole over its groups first
      // (TP × ZeRO-1: the ranges gathered over the DP group into the rank's slice first)
      const whole = (x: FArr) => this.gathered(this.epZero ? this.epZero.expand(x, this.model.params.length) : this.zero ? this.zeroExpand(x) : x);
      const optim = { m: whole(this.optim.m), v: whole(this.optim.v), step: this.optim.step };
      return saveShardedCheckpoint({ outDir: this.outDir, group: this.group!, weights: this.gatheredWeights(), hf: this.hf, tokenizerFile: this.tokenizerFile, optim, zero: 0, state, keepLast: this.c.checkpoint.keep_last });
    }
    if (this.group && this.group.size > 1) {
      return saveShardedCheckpoint({ outDir: this.outDir, group: this.group, weights: this.model.weights, hf: this.hf, tokenizerFile: this.tokenizerFile, optim: this.optim, zero: this.zero ? 1 : 0, state, keepLast: this.c.checkpoint.keep_last });
    }
    return saveRunCheckpoint(this.outDir, this.model, this.hf, this.tokenizerFile, this.optim, state, this.c.checkpoint.keep_last);
  }
}

/** Two groups summed one after the other as one: a sum over their product (PP × EP: a stage's expDp group, then the pp group). */
function acrossStages(inner: SyncGroup, outer: SyncGroup): SyncGroup {
  return {
    rank: outer.rank * inner.size + inner.rank, size: inner.size * outer.size,
    allreduceSync(buf, op) {
      inner.allreduceSync(buf, op);
      outer.allreduceSync(buf, op);
    },
  };
}
