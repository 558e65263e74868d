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

/** `record: false` skips the per-operation list (the search simulates thousands of layouts). */
/** Operation k of stage i in 1F1B order, computed (no list): micro-batch index, negative for B (−1 − mb). */
export function oneFOneBOp(p: number, m: number, stage: number, k: number): number {
  const warm = Math.min(p - 1 - stage, m);
  if (k < warm) return k;
  const j = k - warm;
  if (j < 2 * (m - warm)) return j % 2 === 0 ? warm + j / 2 : -1 - (j - 1) / 2;
  return -1 - (k - m);
}

/** `record: false` skips the per-operation list (the search simulates thousands of layouts). */
export function simulate1F1B(t: StageTimes, m: number, opts: { record?: boolean } = {}): PipelineResult {
  const record = opts.record ?? true;
  const p = t.fwd.length;
  if (p < 1 || t.bwd.length !== p || t.p2p.length !== p - 1) throw new PlanError(`simulate1F1B: need p forward, p backward and p−1 transfer times (got ${t.fwd.length}, ${t.bwd.length}, ${t.p2p.length})`);
  if (!Number.isInteger(m) || m < 1) throw new PlanError(`simulate1F1B: micro-batches must be a positive integer, got ${m}`);
  for (const x of [...t.fwd, ...t.bwd, ...t.p2p]) if (!(x >= 0) || !Number.isFinite(x)) throw new PlanError(`simulate1F1B: times must be finite and ≥ 0, got ${x}`);
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

/** Closed form for p equal stages without transfer time: step (m+p−1)(f+b), bubble (p−1)/(m+p−1). */
export function uniformClosedForm(p: number, m: number, f: number, b: number): { step: number; bubble: number } {
  return { step: (m + p - 1) * (f + b), bubble: (p - 1) / (m + p - 1) };
}
