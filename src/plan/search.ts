// The layout search: which dp × tp × pp × expert placement, pipeline partition and per-stage
// recompute trains a model fastest on a cluster within memory, and why the others lose.
//
// 1. Enumerate shapes: tp | devices (tp ≤ max TP, ≤ heads), pp | devices/tp (≤ layers),
//    dp = devices/(tp·pp); experts as etp, edp (tp > 1) or ep (each divisor of dp that divides E).
//    A shape that breaks a rule (batch not divisible, …) is rejected with the rule.
// 2. Per shape, the Megatron baseline: layers split evenly (the first L mod pp stages get one
//    more) and one recompute count for every stage, the fewest that fit.
// 3. Per shape, the planned partition (Skywork App. B.2): a dynamic programme over contiguous
//    partitions minimises the slowest stage's forward+backward (ties: the smaller sum), each
//    stage recomputing the fewest of its layers that fit its memory (1F1B keeps min(pp−i, m)
//    micro-batches in flight on stage i, so early stages need more).
// 4. The best shapes are refined by local search on the simulated step (moving one layer over a
//    stage boundary at a time), then ranked by step time.
//
// Not: a search over micro-batch size or sequence parallelism, or over device counts other than
// the one asked for.
import type { ClusterSpec } from "./cluster.js";
import { PlanError, worldSize } from "./cluster.js";
import { DEFAULT_COST, EXPERT_MODES, LayoutCost, evenSplit, type CostOptions, type ExpertMode, type Layout, type MemoryBreakdown, type StageCost } from "./cost.js";
import type { PlanModel, PlanRun } from "./plan-model.js";
import { simulate1F1B } from "./simulate.js";

export type Shape = Omit<Layout, "partition" | "recompute">;

export interface PlanOptions {
  cost: CostOptions;
  /** Devices to plan for; default all of the cluster. */
  devices?: number;
  /** Largest TP group; default the devices per node (TP across nodes is rejected). */
  maxTp?: number;
  /** Expert placements to consider; default all. */
  expertModes?: readonly ExpertMode[];
  /** Pin any of the degrees. */
  fix?: Partial<Pick<Layout, "dp" | "tp" | "pp" | "ep" | "expert">>;
  /** Evaluate this partition only (layers per stage; fixes pp); recompute is still chosen per stage. */
  partition?: number[];
  /** How many shapes get the local-search refinement; default 8. */
  refine?: number;
}

export interface Evaluation {
  layout: Layout;
  /** Seconds per optimizer step: the simulated 1F1B pipeline plus the gradient synchronisation. */
  step: number;
  /** Pipeline idle share from the simulation. */
  bubble: number;
  microBatches: number;
  tokensPerSec: number;
  tokensPerDeviceSec: number;
  /** Model FLOPs per step / (devices × FLOP/s × step). */
  mfu: number;
  /** Peak memory per stage (bytes) with its breakdown. */
  memory: MemoryBreakdown[];
  /** 1 − (step without any communication) / step. */
  commShare: number;
  /** Seconds of the simulated 1F1B schedule (forward, backward, transfers) within the step. */
  pipeline: number;
  /** Busy seconds of each stage in the schedule (the rest of `pipeline` it waits). */
  busy: number[];
  /** Seconds of the optimizer (update and gradient norm) on the slowest stage, within the step (0 when not modelled). */
  optimizer: number;
  /** Seconds per step of each kind of communication on the slowest stage. */
  comm: { tp: number; ep: number; pp: number; dp: number };
}

export interface LayoutPlan extends Evaluation {
  /** Megatron's layout of the same shape (even split, one recompute count), or why it does not fit. */
  uniform: Evaluation | { rejected: string };
  reasons: string[];
}

export interface Rejection {
  shape: string;
  reason: string;
}

export interface PlanReport {
  model: PlanModel;
  run: PlanRun;
  cluster: ClusterSpec;
  devices: number;
  /** Fitting layouts, fastest first. */
  layouts: LayoutPlan[];
  rejected: Rejection[];
}

/** Bytes in GB (decimal), or MB / kB below 1 GB. */
export function formatBytes(b: number): string {
  return b >= 1e9 ? `${(b / 1e9).toFixed(1)} GB` : b >= 1e6 ? `${(b / 1e6).toFixed(1)} MB` : `${(b / 1e3).toFixed(1)} kB`;
}
const fmtGB = formatBytes;
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export function shapeName(s: Shape): string {
  const ex = s.expert === "ep" ? `ep${s.ep}` : s.expert;
  return `dp${s.dp} tp${s.tp} pp${s.pp} ${ex}`;
}

function divisors(n: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= n; d++) if (n % d === 0) out.push(d);
  return out;
}

/** Simulated step (pipeline + gradient synchronisation) only: the search's inner objective. */
function stepTime(lc: LayoutCost, stages: StageCost[]): number {
  return simulate1F1B(lc.stageTimes(stages), lc.m, lc.simOptions()).step + Math.max(...stages.map((s) => lc.tail(s)));
}

/** Simulates a layout whose per-stage costs are known. */
function evaluate(lc: LayoutCost, stages: StageCost[]): Evaluation {
  const sim = simulate1F1B(lc.stageTimes(stages), lc.m, lc.simOptions());
  const bare = simulate1F1B(lc.stageTimes(stages, false), lc.m, lc.simOptions());
  const dp = Math.max(...stages.map((s) => lc.dpSync(s)));
  const optimizer = Math.max(...stages.map((s) => lc.optimizerTime(s)));
  const step = sim.step + Math.max(...stages.map((s) => lc.tail(s)));
  const tokens = lc.run.globalBatch * lc.run.seqLen;
  const slow = stages.reduce((bi, s, i) => (s.fwd + s.bwd > stages[bi]!.fwd + stages[bi]!.bwd ? i : bi), 0);
  const p2p = lc.p2pTimes();
  return {
    layout: { ...lc.shape, partition: stages.map((s) => s.layers), recompute: stages.map((s) => s.recompute) },
    step,
    bubble: sim.bubble,
    microBatches: lc.m,
    tokensPerSec: tokens / step,
    tokensPerDeviceSec: tokens / step / lc.world,
    mfu: lc.modelFlopsPerStep() / (lc.world * lc.cluster.flops * step),
    memory: stages.map((s) => s.memory),
    commShare: 1 - (bare.step + optimizer) / step,
    pipeline: sim.step,
    busy: sim.busy,
    optimizer,
    comm: {
      tp: lc.m * stages[slow]!.tpComm,
      ep: lc.m * stages[slow]!.epComm,
      pp: 2 * lc.m * Math.max(0, ...p2p),
      dp,
    },
  };
}

function stagesOf(lc: LayoutCost, partition: number[], recompute: (i: number, lo: number, hi: number) => StageCost | null): StageCost[] | null {
  const out: StageCost[] = [];
  let lo = 0;
  for (let i = 0; i < partition.length; i++) {
    const s = recompute(i, lo, lo + partition[i]!);
    if (!s) return null;
    out.push(s);
    lo += partition[i]!;
  }
  return out;
}

/** Megatron's layout: even split, one recompute count on every stage (the fewest that fit). */
function uniformStages(lc: LayoutCost): StageCost[] | null {
  const part = evenSplit(lc.model.layers, lc.shape.pp);
  for (let r = 0; r <= part[0]!; r++) {
    const st = stagesOf(lc, part, (i, lo, hi) => {
      const s = lc.stage(i, lo, hi, Math.min(r, hi - lo));
      return s.memory.total <= lc.cluster.memoryBytes ? s : null;
    });
    if (st) return st;
  }
  return null;
}

/** Why nothing fits: the worst stage of the even split with every layer recomputed. */
function memoryReason(lc: LayoutCost): string {
  const part = evenSplit(lc.model.layers, lc.shape.pp);
  let worst: { i: number; m: MemoryBreakdown } | null = null;
  let lo = 0;
  part.forEach((n, i) => {
    const m = lc.stage(i, lo, lo + n, n).memory;
    if (!worst || m.total > worst.m.total) worst = { i, m };
    lo += n;
  });
  const w = worst as unknown as { i: number; m: MemoryBreakdown };
  return `memory: even with every layer recomputed, stage ${w.i} needs ${fmtGB(w.m.total)} > ${fmtGB(lc.cluster.memoryBytes)} ` +
    `(weights ${fmtGB(w.m.weights)}, gradients ${fmtGB(w.m.grads)}, optimizer ${fmtGB(w.m.optimizer)}, activations ${fmtGB(w.m.activations + w.m.transient)})`;
}

/**
 * The partition minimising the slowest stage (ties: the smaller total), each stage with the
 * fewest recomputed layers that fit. Null when no partition fits.
 */
export function balancedPartition(lc: LayoutCost): StageCost[] | null {
  const L = lc.model.layers, p = lc.shape.pp;
  // g[k][h]: best (max, sum) over partitions of layers [0, h) into stages 0..k-1
  const gMax = Array.from({ length: p + 1 }, () => new Float64Array(L + 1).fill(Infinity));
  const gSum = Array.from({ length: p + 1 }, () => new Float64Array(L + 1).fill(Infinity));
  const from = Array.from({ length: p + 1 }, () => new Int32Array(L + 1).fill(-1));
  gMax[0]![0] = 0;
  gSum[0]![0] = 0;
  for (let k = 1; k <= p; k++) {
    for (let h = k; h <= L - (p - k); h++) {
      for (let lo = k - 1; lo < h; lo++) {
        const prevMax = gMax[k - 1]![lo]!;
        if (prevMax === Infinity) continue;
        const s = lc.minRecompute(k - 1, lo, h);
        if (!s) continue;
        const t = s.fwd + s.bwd;
        const mx = Math.max(prevMax, t), sm = gSum[k - 1]![lo]! + t;
        const cur = gMax[k]![h]!;
        if (mx < cur * (1 - 1e-12) || (mx <= cur * (1 + 1e-12) && sm < gSum[k]![h]!)) {
          gMax[k]![h] = mx;
          gSum[k]![h] = sm;
          from[k]![h] = lo;
        }
      }
    }
  }
  if (gMax[p]![L] === Infinity) return null;
  const part: number[] = [];
  for (let k = p, h = L; k > 0; k--) {
    const lo = from[k]![h]!;
    part.unshift(h - lo);
    h = lo;
  }
  return stagesOf(lc, part, (i, lo, hi) => lc.minRecompute(i, lo, hi));
}

/** Moves one layer over a stage boundary while the simulated step improves. */
function refineBySimulation(lc: LayoutCost, start: Evaluation): Evaluation {
  let bestStages: StageCost[] | null = null;
  let bestT = start.step;
  let part = start.layout.partition;
  for (let iter = 0; iter < 200; iter++) {
    let improved: { st: StageCost[]; t: number } | null = null;
    if (bestStages) part = bestStages.map((s) => s.layers);
    for (let b = 0; b + 1 < part.length; b++) {
      for (const d of [-1, 1]) {
        const q = [...part];
        q[b]! += d;
        q[b + 1]! -= d;
        if (q[b]! < 1 || q[b + 1]! < 1) continue;
        const st = stagesOf(lc, q, (i, lo, hi) => lc.minRecompute(i, lo, hi));
        if (!st) continue;
        const t = stepTime(lc, st);
        if (t < (improved?.t ?? bestT) * (1 - 1e-9)) improved = { st, t };
      }
    }
    if (!improved) break;
    bestStages = improved.st;
    bestT = improved.t;
  }
  return bestStages === null ? start : evaluate(lc, bestStages);
}

/** Shapes of `devices` ranks with their rule violations (null = allowed). */
export function enumerateShapes(model: PlanModel, run: PlanRun, devices: number, opts: { maxTp: number; expertModes: readonly ExpertMode[]; fix: PlanOptions["fix"] }): { shape: Shape; reason: string | null }[] {
  const out: { shape: Shape; reason: string | null }[] = [];
  const fix = opts.fix ?? {};
  for (const tp of divisors(devices)) {
    for (const pp of divisors(devices / tp)) {
      const dp = devices / tp / pp;
      const modes: Shape[] = [];
      for (const expert of opts.expertModes) {
        if (expert === "etp") modes.push({ dp, tp, pp, expert, ep: 1 });
        else if (expert === "edp") {
          if (tp > 1) modes.push({ dp, tp, pp, expert, ep: tp });
        } else for (const ep of divisors(dp)) if (ep > 1) modes.push({ dp, tp, pp, expert, ep });
      }
      for (const s of modes) {
        if ((fix.dp !== undefined && s.dp !== fix.dp) || (fix.tp !== undefined && s.tp !== fix.tp) || (fix.pp !== undefined && s.pp !== fix.pp)) continue;
        if ((fix.expert !== undefined && s.expert !== fix.expert) || (fix.ep !== undefined && s.ep !== fix.ep)) continue;
        let reason: string | null = null;
        if (tp > opts.maxTp) reason = `tp ${tp} > max TP ${opts.maxTp} (a TP group would leave the node)`;
        else if (tp > model.heads) reason = `tp ${tp} > ${model.heads} attention heads`;
        else if (pp > model.layers) reason = `pp ${pp} > ${model.layers} layers`;
        else if (run.globalBatch % (run.microBatch * dp) !== 0) reason = `global batch ${run.globalBatch} is not a multiple of micro-batch ${run.microBatch} × dp ${dp}`;
        else if (s.expert === "ep" && model.experts % s.ep !== 0) reason = `ep ${s.ep} does not divide ${model.experts} experts`;
        else if (s.expert === "edp" && tp > model.experts) reason = `edp: tp ${tp} > ${model.experts} experts (a rank would hold none)`;
        out.push({ shape: s, reason });
      }
    }
  }
  return out;
}

function reasonsFor(lc: LayoutCost, e: Evaluation, uniform: Evaluation | { rejected: string }): string[] {
  const r: string[] = [];
  const L = e.layout;
  if ("rejected" in uniform) r.push(`the even split ${evenSplit(lc.model.layers, L.pp).join(",")} with one recompute count does not fit (${uniform.rejected})`);
  else if (uniform.step > e.step * (1 + 1e-9)) {
    r.push(`partition ${L.partition.join(",")} with recompute ${L.recompute.join(",")} is ${pct(uniform.step / e.step - 1)} faster than the even split ` +
      `${uniform.layout.partition.join(",")} with ${uniform.layout.recompute[0]} recomputed per stage (bubble ${pct(uniform.bubble)} → ${pct(e.bubble)})`);
  } else r.push(`the even split ${L.partition.join(",")} with recompute ${L.recompute.join(",")} is already the best partition found`);
  r.push(`${e.microBatches} micro-batches on ${L.pp} stage(s): bubble ${pct(e.bubble)}`);
  const peak = e.memory.reduce((bi, m, i) => (m.total > e.memory[bi]!.total ? i : bi), 0);
  const m = e.memory[peak]!;
  r.push(`peak memory ${fmtGB(m.total)} of ${fmtGB(lc.cluster.memoryBytes)} on stage ${peak} (weights ${fmtGB(m.weights)}, gradients ${fmtGB(m.grads)}, optimizer ${fmtGB(m.optimizer)}, activations ${fmtGB(m.activations + m.transient)})`);
  const c = e.comm;
  r.push(`communication ${pct(e.commShare)} of the step (per step on the slowest stage: TP ${c.tp.toFixed(3)} s, EP ${c.ep.toFixed(3)} s, PP ${c.pp.toFixed(3)} s, DP ${c.dp.toFixed(3)} s)`);
  return r;
}

/** Plans the layouts of `model` training `run` on `cluster`. */
export function plan(model: PlanModel, run: PlanRun, cluster: ClusterSpec, o: Partial<PlanOptions> = {}): PlanReport {
  const cost = o.cost ?? DEFAULT_COST;
  const devices = o.devices ?? worldSize(cluster);
  if (!Number.isInteger(devices) || devices < 1 || devices > worldSize(cluster)) throw new PlanError(`devices must be an integer in [1, ${worldSize(cluster)}], got ${devices}`);
  const maxTp = o.maxTp ?? cluster.devicesPerNode;
  const fix = { ...(o.fix ?? {}) };
  if (o.partition) {
    if (o.partition.some((n) => !Number.isInteger(n) || n < 1)) throw new PlanError(`partition: layer counts must be positive integers, got ${o.partition.join(",")}`);
    const sum = o.partition.reduce((s, n) => s + n, 0);
    if (sum !== model.layers) throw new PlanError(`partition ${o.partition.join(",")} sums to ${sum}, the model has ${model.layers} layers`);
    if (fix.pp !== undefined && fix.pp !== o.partition.length) throw new PlanError(`partition has ${o.partition.length} stages but pp is ${fix.pp}`);
    fix.pp = o.partition.length;
  }
  const shapes = enumerateShapes(model, run, devices, { maxTp, expertModes: o.expertModes ?? EXPERT_MODES, fix });
  const rejected: Rejection[] = [];
  const found: { lc: LayoutCost; e: Evaluation; uniform: Evaluation | { rejected: string } }[] = [];
  for (const { shape, reason } of shapes) {
    if (reason) {
      rejected.push({ shape: shapeName(shape), reason });
      continue;
    }
    const lc = new LayoutCost(model, run, cluster, shape, cost);
    const us = uniformStages(lc);
    const uniform = us ? evaluate(lc, us) : { rejected: memoryReason(lc) };
    const st = o.partition ? stagesOf(lc, o.partition, (i, lo, hi) => lc.minRecompute(i, lo, hi)) : balancedPartition(lc);
    if (!st) {
      rejected.push({ shape: shapeName(shape), reason: o.partition ? `partition ${o.partition.join(",")}: a stage does not fit in memory even fully recomputed` : memoryReason(lc) });
      continue;
    }
    let e = evaluate(lc, st);
    if (!("rejected" in uniform) && uniform.step < e.step) e = uniform;
    found.push({ lc, e, uniform });
  }
  found.sort((a, b) => a.e.step - b.e.step);
  const refine = o.partition ? 0 : o.refine ?? 8;
  for (const f of found.slice(0, refine)) {
    f.e = refineBySimulation(f.lc, f.e);
  }
  found.sort((a, b) => a.e.step - b.e.step);
  const layouts = found.map(({ lc, e, uniform }) => ({ ...e, uniform, reasons: reasonsFor(lc, e, uniform) }));
  return { model, run, cluster, devices, layouts, rejected };
}

/**
 * Evaluates one fully given layout (partition and per-stage recompute). `fits` is false when a
 * stage's peak memory exceeds the device memory (the evaluation is still returned).
 */
export function evaluateLayout(model: PlanModel, run: PlanRun, cluster: ClusterSpec, layout: Layout, cost: CostOptions = DEFAULT_COST): Evaluation & { fits: boolean } {
  const { partition, recompute, ...shape } = layout;
  if (partition.length !== shape.pp || recompute.length !== shape.pp) throw new PlanError(`layout: partition and recompute need pp = ${shape.pp} entries`);
  if (partition.reduce((s, n) => s + n, 0) !== model.layers) throw new PlanError(`layout: partition ${partition.join(",")} does not sum to ${model.layers} layers`);
  const lc = new LayoutCost(model, run, cluster, shape, cost);
  const st = stagesOf(lc, partition, (i, lo, hi) => lc.stage(i, lo, hi, recompute[i]!))!;
  const e = evaluate(lc, st);
  return { ...e, fits: e.memory.every((m) => m.total <= cluster.memoryBytes) };
}
