// `parallel.plan=auto`: the planner chooses the training layout of a run from the ranks it was
// launched with. The cluster is this launch: one node of `ranks` devices, each with the machine's
// available memory divided by the ranks and the engine's measured GEMM rate at the rank's thread
// count (the `auto` GEMM calibration), linked by the process-group backend's measured cost
// (platform.md: threads ≈ 3.5 GB/s bus bandwidth and 6 µs per collective on 2 ranks, MPI over
// shared memory ≈ 1.6 GB/s and 2.5 µs). Only the layouts the trainer can execute are searched:
// data parallelism always, expert parallelism and pipeline stages when the caller says they run.
// ZeRO-1 is chosen when optimizer state would not fit unsharded, or when dp > 1 and it costs no
// extra communication in the model (reduce-scatter + all-gather = one all-reduce).
//
// Not: a measurement (the caller passes the rates), nor the search itself (search.ts).
import type { ModelConfig } from "../model/config.js";
import { PlanError, type ClusterSpec, type Link } from "./cluster.js";
import { DEFAULT_COST, PRECISIONS, type ExpertMode } from "./cost.js";
import { planModelFromConfig } from "./plan-model.js";
import { plan, type LayoutPlan } from "./search.js";

/** Link cost of the process-group backends on one machine (measured, platform.md). */
export const BACKEND_LINKS: Readonly<Record<"threads" | "mpi", Link>> = {
  threads: { bandwidth: 3.5e9, latency: 6e-6 },
  mpi: { bandwidth: 1.6e9, latency: 2.5e-6 },
};

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
  /** Layouts the trainer executes besides plain data parallelism. */
  supports: { ep: boolean; pp: boolean };
}

export interface AutoLayout {
  dp: number;
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
  if (L.expert === "ep" && L.ep > 1) parts.push(`ep=${L.ep}`);
  if (L.pp > 1) parts.push(`pp=${L.pp} (${L.partition.join(",")})`);
  return parts.join(" ");
}

/** Chooses the fastest executable layout for the launch; throws PlanError when none fits. */
export function autoLayout(i: AutoPlanInput): AutoLayout {
  if (!Number.isInteger(i.ranks) || i.ranks < 1) throw new PlanError(`parallel.plan=auto: ranks must be a positive integer, got ${i.ranks}`);
  if (!(i.flopsPerRank > 0)) throw new PlanError(`parallel.plan=auto: the measured compute rate must be > 0, got ${i.flopsPerRank}`);
  if (!(i.availableMemory > 0)) throw new PlanError(`parallel.plan=auto: available memory must be > 0, got ${i.availableMemory}`);
  const model = planModelFromConfig(i.cfg, "run");
  const run = { seqLen: i.seqLen, microBatch: i.microBatch, globalBatch: i.microBatch * i.gradAccum };
  const link = BACKEND_LINKS[i.backend];
  const cluster: ClusterSpec = {
    nodes: 1, devicesPerNode: i.ranks, memoryBytes: i.availableMemory / i.ranks, flops: i.flopsPerRank,
    flopsSource: "the engine's GEMM calibration", intraNode: link, interNode: link,
  };
  const expertModes: ExpertMode[] = i.supports.ep ? ["etp", "ep"] : ["etp"];
  const fix = i.supports.pp ? {} : { pp: 1 };
  // the trainer keeps f32 weights, gradients and AdamW state; ZeRO-1 is decided below
  const cost = { ...DEFAULT_COST, precision: PRECISIONS["f32"]!, zero1: true };
  const report = plan(model, run, cluster, { cost, maxTp: 1, expertModes, fix });
  // grad_accum micro-batches must split evenly over dp (each rank runs whole micro-batches)
  const ok = report.layouts.filter((l) => i.gradAccum % l.layout.dp === 0);
  const best = ok[0];
  if (!best) {
    const why = report.rejected.slice(0, 4).map((r) => `${r.shape}: ${r.reason}`).join("; ");
    throw new PlanError(`parallel.plan=auto: no executable layout of ${i.ranks} rank(s) fits (${why || `grad_accum ${i.gradAccum} does not split over the data-parallel ranks`})`);
  }
  const L = best.layout;
  // ZeRO-1 where the unsharded optimizer state would not fit, or where data parallelism exists
  // (same communication volume in the model, less memory)
  const unsharded = plan(model, run, cluster, { cost: { ...cost, zero1: false }, maxTp: 1, expertModes: [L.expert], fix: { dp: L.dp, pp: L.pp, ep: L.ep, tp: 1 }, partition: L.partition, refine: 0 });
  const zero: 0 | 1 = L.dp > 1 || unsharded.layouts.length === 0 ? 1 : 0;
  return {
    dp: L.dp, ep: L.expert === "ep" ? L.ep : 1, pp: L.pp, zero, ppLayers: [...L.partition], recompute: [...L.recompute],
    predictedStep: best.step, predictedTokensPerSec: best.tokensPerSec,
    reasons: [`${describe(best)}${zero ? " zero=1" : ""}: predicted ${best.step.toFixed(3)} s/step`, ...best.reasons],
    others: ok.slice(1, 4).map((l) => ({ layout: describe(l), step: l.step })),
  };
}
