// `parallel.plan=auto`: the planner chooses the training layout of a run from the ranks it was
// launched with. The cluster is this launch: one node of `ranks` devices, each with the machine's
// available memory divided by the ranks and the engine's measured GEMM rate at the rank's thread
// count (the `auto` GEMM calibration), linked by the process-group backend's measured cost
// (platform.md: threads ≈ 3.5 GB/s bus bandwidth and 6 µs per collective on 2 ranks, MPI over
// shared memory ≈ 1.6 GB/s and 2.5 µs). Only the layouts the trainer can execute are searched:
// data parallelism always, expert parallelism and pipeline stages when the caller says they run
// (not both in one layout).
// ZeRO-1 is chosen when optimizer state would not fit unsharded, or when dp > 1 and it costs no
// extra communication in the model (reduce-scatter + all-gather = one all-reduce).
//
// Not: a measurement (the caller passes the rates), nor the search itself (search.ts).
import type { ModelConfig } from "../model/config.js";
import { PlanError, type ClusterSpec, type Link } from "./cluster.js";
import { DEFAULT_COST, PRECISIONS, type ExpertMode, type Layout } from "./cost.js";
import { planModelFromConfig } from "./plan-model.js";
import { plan, type LayoutPlan } from "./search.js";

/** Link cost of the process-group backends on one machine (measured, platform.md). */
export const BACKEND_LINKS: Readonly<Record<"threads" | "mpi", Link>> = {
  threads: { bandwidth: 3.5e9, latency: 6e-6 },
  mpi: { bandwidth: 1.6e9, latency: 2.5e-6 },
};

/** One measured collective: `ranks` ranks, `bytes` per rank's buffer, median seconds. */
export interface LinkSample {
  ranks: number;
  bytes: number;
  seconds: number;
}

/**
 * α–β of a link from measured collectives of one kind ("allreduce": the ring's 2(p−1)α +
 * 2(p−1)/p·n/β; "gather": (p−1)α + (p−1)/p·n/β), by least squares on the relative error (each
 * sample weighted 1/t², so microsecond latencies count as much as millisecond transfers).
 * α is clamped at 0; throws when the samples cannot give a positive bandwidth.
 */
export function fitLink(samples: readonly LinkSample[], kind: "allreduce" | "gather"): Link {
  const k = kind === "allreduce" ? 2 : 1;
  const pts = samples.filter((s) => s.ranks > 1 && s.bytes > 0 && s.seconds > 0);
  if (pts.length < 2 || new Set(pts.map((s) => s.bytes)).size < 2) throw new PlanError(`fitLink: need ≥ 2 samples of different sizes on > 1 rank (got ${pts.length})`);
  // t = x1·α + x2·(1/β), x1 = k(p−1), x2 = k(p−1)/p·n; weighted normal equations
  let a11 = 0, a12 = 0, a22 = 0, b1 = 0, b2 = 0;
  for (const s of pts) {
    const x1 = k * (s.ranks - 1), x2 = ((k * (s.ranks - 1)) / s.ranks) * s.bytes, w = 1 / (s.seconds * s.seconds);
    a11 += w * x1 * x1;
    a12 += w * x1 * x2;
    a22 += w * x2 * x2;
    b1 += w * x1 * s.seconds;
    b2 += w * x2 * s.seconds;
  }
  const det = a11 * a22 - a12 * a12;
  let alpha = (b1 * a22 - b2 * a12) / det, invBeta = (a11 * b2 - a12 * b1) / det;
  if (!(alpha >= 0)) {
    // no latency term: refit the bandwidth alone
    alpha = 0;
    invBeta = b2 / a22;
  }
  if (!(invBeta > 0) || !Number.isFinite(invBeta)) throw new PlanError("fitLink: the samples give no positive bandwidth (times do not grow with size)");
  return { latency: alpha, bandwidth: 1 / invBeta };
}

/**
 * One machine as a cluster of `ranks` devices: the memory divided over the ranks, each rank's
 * measured rate (on `threads` engine threads), and concurrency = cores / threads: when more ranks
 * than that compute at once they share the cores (4 one-thread ranks all computing on 2 cores:
 * half the rate each; a rank waiting on an exchange leaves its share to the others, except the
 * `pollShare` (0..1, default 0) it takes by polling).
 */
export function machineCluster(i: { ranks: number; cores: number; threads: number; flopsPerRank: number; memory: number; link: Link; source: string; pollShare?: number }): ClusterSpec {
  for (const k of ["ranks", "cores", "threads"] as const) if (!Number.isInteger(i[k]) || i[k] < 1) throw new PlanError(`machineCluster: ${k} must be a positive integer, got ${i[k]}`);
  if (!(i.flopsPerRank > 0) || !(i.memory > 0)) throw new PlanError(`machineCluster: rate and memory must be > 0 (got ${i.flopsPerRank}, ${i.memory})`);
  const concurrency = i.cores / i.threads;
  return {
    nodes: 1, devicesPerNode: i.ranks, memoryBytes: i.memory / i.ranks, flops: i.flopsPerRank,
    flopsSource: i.ranks > concurrency ? `${i.source}; ${i.ranks} rank(s) × ${i.threads} thread(s) share ${i.cores} core(s)` : i.source,
    intraNode: i.link, interNode: i.link, concurrency,
    ...(i.pollShare !== undefined ? { pollShare: i.pollShare } : {}),
  };
}

export interface AutoPlanInput {
  cfg: ModelConfig;
  /** Ranks launched (the world size). */
  ranks: number;
  backend: "threads" | "mpi";
  seqLen: number;
  /** Sequences per micro-batch (train.batch_size). */
  microBatch: number;
  /** Micro-batches per optimizer step over all ranks (train.grad_accum). */
  gradAccum: number;
  /** Memory the run may use on this machine, bytes (all ranks together). */
  availableMemory: number;
  /** Sustained GEMM FLOP/s of one rank. */
  flopsPerRank: number;
  /**
   * Layouts the trainer executes besides plain data parallelism; tp: tensor parallelism with
   * column-split (ETP) or whole experts per TP rank (EDP), combined as executableLayout allows
   * (with pp only when pp is supported too; default false).
   */
  supports: { ep: boolean; pp: boolean; tp?: boolean };
  /** CPU cores the ranks share and engine threads per rank; default: a core per thread (no sharing). */
  cores?: number;
  threads?: number;
}

export interface AutoLayout {
  dp: number;
  /** Tensor-parallel ranks per replica (1: none) and whether experts are whole per TP rank (EDP). */
  tp: number;
  edp: boolean;
  ep: number;
  pp: number;
  zero: 0 | 1;
  /** Layers per pipeline stage (length pp). */
  ppLayers: number[];
  /** Layers recomputed in the backward, per stage (length pp). */
  recompute: number[];
  /** Predicted seconds per optimizer step and tokens per second. */
  predictedStep: number;
  predictedTokensPerSec: number;
  /** One line per reason, for the run's log. */
  reasons: string[];
  /** The runner-up layouts considered (name and predicted step), for the log. */
  others: { layout: string; step: number }[];
}

function describe(l: LayoutPlan): string {
  const L = l.layout;
  const parts = [`dp=${L.dp}`];
  if (L.tp > 1) parts.push(`tp=${L.tp}${L.expert === "edp" ? " edp" : ""}`);
  if (L.expert === "ep" && L.ep > 1) parts.push(`ep=${L.ep}`);
  if (L.pp > 1) parts.push(`pp=${L.pp} (${L.partition.join(",")})`);
  return parts.join(" ");
}

/**
 * The one filter of the layouts the trainer executes (extend it here as the trainer learns more
 * combinations): grad_accum micro-batches split evenly over dp (each rank runs whole
 * micro-batches); no pipeline stages with expert parallelism; tensor parallelism with column-split
 * experts (ETP) or whole experts per TP rank (EDP) with dp, pp, recompute and ZeRO-1, and
 * tp × ep (EP × ETP: experts over the dp replicas of each TP rank) with dp, recompute and ZeRO-1
 * (test/train-tp.test.ts).
 */
export function executableLayout(L: Layout, gradAccum: number): boolean {
  if (gradAccum % L.dp !== 0) return false;
  if (L.pp > 1 && L.expert === "ep" && L.ep > 1) return false;
  return true;
}

/** Chooses the fastest executable layout for the launch; throws PlanError when none fits. */
export function autoLayout(i: AutoPlanInput): AutoLayout {
  if (!Number.isInteger(i.ranks) || i.ranks < 1) throw new PlanError(`parallel.plan=auto: ranks must be a positive integer, got ${i.ranks}`);
  if (!(i.flopsPerRank > 0)) throw new PlanError(`parallel.plan=auto: the measured compute rate must be > 0, got ${i.flopsPerRank}`);
  if (!(i.availableMemory > 0)) throw new PlanError(`parallel.plan=auto: available memory must be > 0, got ${i.availableMemory}`);
  const model = planModelFromConfig(i.cfg, "run");
  const run = { seqLen: i.seqLen, microBatch: i.microBatch, globalBatch: i.microBatch * i.gradAccum };
  const link = BACKEND_LINKS[i.backend];
  const threads = i.threads ?? 1;
  const cluster = machineCluster({ ranks: i.ranks, cores: i.cores ?? i.ranks * threads, threads, flopsPerRank: i.flopsPerRank, memory: i.availableMemory, link, source: "the engine's GEMM calibration" });
  const expertModes: ExpertMode[] = i.supports.ep ? ["etp", "ep"] : ["etp"];
  const fix = i.supports.pp ? {} : { pp: 1 };
  // the trainer keeps f32 weights, gradients and AdamW state of the whole model on every rank and
  // all-reduces the whole gradient arena (gradSync "arena"); ZeRO-1 is decided below
  const cost = { ...DEFAULT_COST, precision: PRECISIONS["f32"]!, zero1: true, gradSync: "arena" as const };
  const report = plan(model, run, cluster, { cost, maxTp: 1, expertModes, fix });
  const candidates = [...report.layouts];
  if (i.supports.tp && i.ranks > 1) {
    // tensor-parallel layouts (with pipeline stages where the trainer runs them: supports.pp)
    const tpReport = plan(model, run, cluster, { cost, maxTp: i.ranks, expertModes: i.supports.ep ? ["etp", "edp", "ep"] : ["etp", "edp"], fix });
    candidates.push(...tpReport.layouts.filter((l) => l.layout.tp > 1));
    candidates.sort((a, b) => a.step - b.step);
  }
  const ok = candidates.filter((l) => executableLayout(l.layout, i.gradAccum));
  const best = ok[0];
  if (!best) {
    const why = report.rejected.slice(0, 4).map((r) => `${r.shape}: ${r.reason}`).join("; ");
    throw new PlanError(`parallel.plan=auto: no executable layout of ${i.ranks} rank(s) fits (${why || `grad_accum ${i.gradAccum} does not split over the data-parallel ranks`})`);
  }
  const L = best.layout;
  // ZeRO-1 where the unsharded optimizer state would not fit, or where data parallelism exists
  // (same communication volume in the model, less memory)
  // (under TP each rank's slice shards over its DP group)
  const unsharded = plan(model, run, cluster, { cost: { ...cost, zero1: false }, maxTp: L.tp, expertModes: [L.expert], fix: { dp: L.dp, pp: L.pp, ep: L.ep, tp: L.tp }, partition: L.partition, refine: 0 });
  const zero: 0 | 1 = L.dp > 1 || unsharded.layouts.length === 0 ? 1 : 0;
  return {
    dp: L.dp, tp: L.tp, edp: L.expert === "edp", ep: L.expert === "ep" ? L.ep : 1, pp: L.pp, zero, ppLayers: [...L.partition], recompute: [...L.recompute],
    predictedStep: best.step, predictedTokensPerSec: best.tokensPerSec,
    reasons: [`${describe(best)}${zero ? " zero=1" : ""}: predicted ${best.step.toFixed(3)} s/step`, ...best.reasons],
    others: ok.slice(1, 4).map((l) => ({ layout: describe(l), step: l.step })),
  };
}
