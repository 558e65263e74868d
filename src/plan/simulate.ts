// Discrete-event simulation of the 1F1B (one-forward-one-backward, PipeDream-Flush / Megatron)
// pipeline schedule: p stages, m micro-batches, per-stage forward and backward times, and a
// transfer time on each stage boundary.
//
// 1. Each stage runs a fixed order of operations: min(p−1−i, m) warm-up forwards, then
//    alternating F/B for the remaining micro-batches, then the cool-down backwards.
// 2. F(i, j) waits for F(i−1, j) plus the boundary transfer; B(i, j) waits for B(i+1, j) plus
//    the transfer (the last stage's B(p−1, j) follows its own F).
// 3. Every operation starts at max(stage free, dependency ready); stages are swept until all
//    operations are placed (a sweep that places nothing means a broken schedule: an error).
//
// 4. With `cores` fewer than the ranks (CPU ranks sharing a machine), processor sharing: the
//    running operations split the cores equally; a waiting rank (on an exchange, or done and in
//    the gradient all-reduce) weighs `pollShare` of a running one (0: it sleeps and leaves its
//    core; 1: it polls like Open MPI's busy wait and competes as if it computed) (simulateShared).
//
// Not: interleaved (virtual-stage) or zero-bubble schedules, nor overlap of transfers with compute
// on the sending stage (a transfer delays only the receiver).
import { PlanError } from "./cluster.js";

export interface StageTimes {
  /** Forward seconds per micro-batch of each stage (length p). */
  fwd: number[];
  /** Backward seconds per micro-batch of each stage, recompute included (length p). */
  bwd: number[];
  /** Seconds to move one micro-batch's activations (or their gradients) over boundary i → i+1 (length p−1). */
  p2p: number[];
}

export interface ScheduledOp {
  stage: number;
  microBatch: number;
  kind: "F" | "B";
  start: number;
  end: number;
}

export interface PipelineResult {
  /** Seconds from the first forward to the last backward. */
  step: number;
  /** Idle share of all stages' time: 1 − Σ busy / (p · step). (p−1)/(m+p−1) for uniform stages. */
  bubble: number;
  /** Busy seconds per stage. */
  busy: number[];
  /** Every operation with its start and end (empty when not recorded). */
  ops: ScheduledOp[];
}

/** The per-stage operation order of 1F1B, as a list (the reference for `oneFOneBOp`). */
export function oneFOneBOrder(p: number, m: number, stage: number): { kind: "F" | "B"; mb: number }[] {
  const warm = Math.min(p - 1 - stage, m);
  const order: { kind: "F" | "B"; mb: number }[] = [];
  let f = 0, b = 0;
  for (; f < warm; f++) order.push({ kind: "F", mb: f });
  while (f < m) {
    order.push({ kind: "F", mb: f++ });
    order.push({ kind: "B", mb: b++ });
  }
  while (b < m) order.push({ kind: "B", mb: b++ });
  return order;
}

/** Operation k of stage i in 1F1B order, computed (no list): micro-batch index, negative for B (−1 − mb). */
export function oneFOneBOp(p: number, m: number, stage: number, k: number): number {
  const warm = Math.min(p - 1 - stage, m);
  if (k < warm) return k;
  const j = k - warm;
  if (j < 2 * (m - warm)) return j % 2 === 0 ? warm + j / 2 : -1 - (j - 1) / 2;
  return -1 - (k - m);
}

export interface SimulateOptions {
  /** Keep the per-operation list (default true; the search simulates thousands of layouts without). */
  record?: boolean;
  /**
   * CPU cores all ranks share (CPU ranks on one machine); absent: every rank has its own device.
   * With fewer cores than running ranks, the running operations share them equally (processor
   * sharing: each progresses at min(1, cores / running ranks)); a rank waiting on an exchange
   * uses none.
   */
  cores?: number;
  /** Ranks that run each stage's schedule at once (dp × tp replicas of the pipeline); default 1. */
  replicas?: number;
  /**
   * With `cores`: a waiting rank's CPU demand as a share of a running rank's, in [0, 1] (MPI ranks
   * poll while they wait; measured, bench/poll-share.ts). Default 0: waiting ranks use no CPU.
   */
  pollShare?: number;
}

/** Simulates 1F1B; stage times are at a full device (or core) each. */
export function simulate1F1B(t: StageTimes, m: number, opts: SimulateOptions = {}): PipelineResult {
  const record = opts.record ?? true;
  const replicas = opts.replicas ?? 1;
  if (!Number.isInteger(replicas) || replicas < 1) throw new PlanError(`simulate1F1B: replicas must be a positive integer, got ${replicas}`);
  if (opts.cores !== undefined && !(opts.cores > 0)) throw new PlanError(`simulate1F1B: cores must be > 0, got ${opts.cores}`);
  const poll = opts.pollShare ?? 0;
  if (!(poll >= 0 && poll <= 1)) throw new PlanError(`simulate1F1B: pollShare must be in [0, 1], got ${opts.pollShare}`);
  if (opts.cores !== undefined && opts.cores < t.fwd.length * replicas) return simulateShared(t, m, opts.cores, replicas, poll, record);
  const p = t.fwd.length;
  checkTimes(t, m);
  // end times, stage-major: fEnd[i*m + j]; −1 = not yet run
  const fEnd = new Float64Array(p * m).fill(-1);
  const bEnd = new Float64Array(p * m).fill(-1);
  const next = new Int32Array(p);
  const free = new Float64Array(p);
  const busy = new Float64Array(p);
  const ops: ScheduledOp[] = [];
  let remaining = 2 * m * p;
  while (remaining > 0) {
    let placed = 0;
    for (let i = 0; i < p; i++) {
      while (next[i]! < 2 * m) {
        const code = oneFOneBOp(p, m, i, next[i]!);
        const fwd = code >= 0;
        const mb = fwd ? code : -1 - code;
        let ready: number;
        if (fwd) ready = i === 0 ? 0 : fEnd[(i - 1) * m + mb]! < 0 ? -1 : fEnd[(i - 1) * m + mb]! + t.p2p[i - 1]!;
        else ready = i === p - 1 ? fEnd[i * m + mb]! : bEnd[(i + 1) * m + mb]! < 0 ? -1 : bEnd[(i + 1) * m + mb]! + t.p2p[i]!;
        if (ready < 0) break;
        const start = Math.max(free[i]!, ready);
        const dur = fwd ? t.fwd[i]! : t.bwd[i]!;
        const end = start + dur;
        (fwd ? fEnd : bEnd)[i * m + mb] = end;
        free[i] = end;
        busy[i]! += dur;
        if (record) ops.push({ stage: i, microBatch: mb, kind: fwd ? "F" : "B", start, end });
        next[i]!++;
        placed++;
        remaining--;
      }
    }
    if (placed === 0) throw new PlanError("simulate1F1B: schedule deadlocked (a bug in the operation order)");
  }
  let step = 0, total = 0;
  for (let i = 0; i < p; i++) {
    step = Math.max(step, free[i]!);
    total += busy[i]!;
  }
  return { step, bubble: step > 0 ? 1 - total / (p * step) : 0, busy: [...busy], ops };
}

/**
 * 1F1B with processor sharing: an event loop over operation starts, ends and transfer arrivals;
 * between events the n running stages (× replicas ranks) each progress at
 * min(1, cores / (replicas·(n + poll·(p − n)))) of their full rate, the p − n waiting stages'
 * ranks polling with weight `poll`. Same operation order and dependencies as simulate1F1B.
 */
function simulateShared(t: StageTimes, m: number, cores: number, replicas: number, poll: number, record: boolean): PipelineResult {
  const p = t.fwd.length;
  checkTimes(t, m);
  const fEnd = new Float64Array(p * m).fill(-1);
  const bEnd = new Float64Array(p * m).fill(-1);
  const next = new Int32Array(p);
  const left = new Float64Array(p).fill(-1); // remaining full-rate seconds of the running op; −1 idle
  const started = new Float64Array(p);
  const busy = new Float64Array(p);
  const ops: ScheduledOp[] = [];
  const eps = 1e-12;
  // ready time of stage i's next operation, or −1 while its dependency has not finished
  const readyAt = (i: number): number => {
    const code = oneFOneBOp(p, m, i, next[i]!);
    if (code >= 0) return i === 0 ? 0 : fEnd[(i - 1) * m + code]! < 0 ? -1 : fEnd[(i - 1) * m + code]! + t.p2p[i - 1]!;
    const mb = -1 - code;
    return i === p - 1 ? fEnd[i * m + mb]! : bEnd[(i + 1) * m + mb]! < 0 ? -1 : bEnd[(i + 1) * m + mb]! + t.p2p[i]!;
  };
  let now = 0, done = 0;
  while (done < 2 * m * p) {
    let wake = Infinity;
    for (let i = 0; i < p; i++) {
      if (left[i]! >= 0 || next[i]! >= 2 * m) continue;
      const r = readyAt(i);
      if (r < 0) continue;
      if (r <= now + eps) {
        left[i] = oneFOneBOp(p, m, i, next[i]!) >= 0 ? t.fwd[i]! : t.bwd[i]!;
        started[i] = now;
      } else wake = Math.min(wake, r);
    }
    let running = 0;
    for (let i = 0; i < p; i++) if (left[i]! >= 0) running++;
    const rate = Math.min(1, cores / ((running + poll * (p - running)) * replicas));
    let dt = wake - now;
    for (let i = 0; i < p; i++) if (left[i]! >= 0) dt = Math.min(dt, left[i]! / rate);
    if (!Number.isFinite(dt)) throw new PlanError("simulate1F1B: schedule deadlocked (a bug in the operation order)");
    now += dt;
    for (let i = 0; i < p; i++) {
      if (left[i]! < 0) continue;
      left[i] = left[i]! - dt * rate;
      if (left[i]! > eps) continue;
      const code = oneFOneBOp(p, m, i, next[i]!);
      const fwd = code >= 0, mb = fwd ? code : -1 - code;
      (fwd ? fEnd : bEnd)[i * m + mb] = now;
      busy[i]! += now - started[i]!;
      if (record) ops.push({ stage: i, microBatch: mb, kind: fwd ? "F" : "B", start: started[i]!, end: now });
      left[i] = -1;
      next[i]!++;
      done++;
    }
  }
  const total = busy.reduce((a, b) => a + b, 0);
  return { step: now, bubble: now > 0 ? 1 - total / (p * now) : 0, busy: [...busy], ops };
}

function checkTimes(t: StageTimes, m: number): void {
  const p = t.fwd.length;
  if (p < 1 || t.bwd.length !== p || t.p2p.length !== p - 1) throw new PlanError(`simulate1F1B: need p forward, p backward and p−1 transfer times (got ${t.fwd.length}, ${t.bwd.length}, ${t.p2p.length})`);
  if (!Number.isInteger(m) || m < 1) throw new PlanError(`simulate1F1B: micro-batches must be a positive integer, got ${m}`);
  for (const x of [...t.fwd, ...t.bwd, ...t.p2p]) if (!(x >= 0) || !Number.isFinite(x)) throw new PlanError(`simulate1F1B: times must be finite and ≥ 0, got ${x}`);
}

/** Closed form for p equal stages without transfer time: step (m+p−1)(f+b), bubble (p−1)/(m+p−1). */
export function uniformClosedForm(p: number, m: number, f: number, b: number): { step: number; bubble: number } {
  return { step: (m + p - 1) * (f + b), bubble: (p - 1) / (m + p - 1) };
}
