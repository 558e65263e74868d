// Data parallelism: the gradient all-reduce overlapped with the backward of the step's last
// micro-batch (parallel.overlap_grad_reduce). The gradient arena is cut on layer boundaries into
// buckets of at least parallel.bucket_mb, in the backward's order: final norm and LM head, layers
// L−1 … 0, embedding — a walk down the arena (model/params.ts lays it out as embedding, layers,
// final norm, LM head). The backward reports each finished part (modelBackward's `done` hook) and
// a bucket's all-reduce starts (ProcessGroup.allreduceStart) once every part it covers is done;
// finish() waits for all of them. Every element is still summed over the ranks in rank order, so
// the gradients are bit-identical to one all-reduce of the whole arena after the backward.
// Not: the reduction itself (the process group), nor EP's expert-group reduction (parallel/expert-parallel.ts).
import type { ModelNames, ParamLayout } from "../model/params.js";
import type { ProcessGroup, StartedOp } from "../parallel/process-group.js";

/** One bucket: the arena range [lo, hi), complete once the backward part `after` is done. */
export interface GradBucket {
  lo: number;
  hi: number;
  /** The backward part (modelBackward's numbering: L head, L−1 … 0 layers, −1 embedding). */
  after: number;
}

/**
 * Buckets over the whole arena in backward order (descending offsets), each at least
 * `bucketBytes` (the last one may be smaller), cut only between backward parts.
 */
export function planGradBuckets(layout: ParamLayout, names: ModelNames, bytesPerElem: number, bucketBytes: number): GradBucket[] {
  if (!(bucketBytes > 0)) throw new RangeError(`gradient buckets: the bucket size must be positive, got ${bucketBytes} bytes`);
  const L = names.layers.length;
  const start = (n: string) => layout.byName.get(n)!.offset;
  // part boundaries: layer l starts at its first tensor (ln1); the head part at the final norm
  const bounds = [...names.layers.map((n) => start(n.ln1)), start(names.normF), layout.size];
  for (let l = 0; l < L; l++) {
    for (const t of Object.values(names.layers[l]!)) {
      if (typeof t !== "string") continue;
      const o = start(t), e = o + layout.byName.get(t)!.size;
      if (o < bounds[l]! || e > bounds[l + 1]!) throw new Error(`gradient buckets: tensor ${t} lies outside layer ${l}'s arena range`);
    }
  }
  // parts in backward order with their ranges
  const parts: { part: number; lo: number; hi: number }[] = [{ part: L, lo: bounds[L]!, hi: layout.size }];
  for (let l = L - 1; l >= 0; l--) parts.push({ part: l, lo: bounds[l]!, hi: bounds[l + 1]! });
  parts.push({ part: -1, lo: 0, hi: bounds[0]! });
  const out: GradBucket[] = [];
  let hi = layout.size;
  parts.forEach((p, i) => {
    if ((hi - p.lo) * bytesPerElem >= bucketBytes || i === parts.length - 1) {
      if (hi > p.lo) out.push({ lo: p.lo, hi, after: p.part });
      hi = p.lo;
    }
  });
  return out;
}

/** What one overlapped reduction cost: the transport's time on the buckets, and how much of it the step waited for. */
export interface OverlapTiming {
  /** ms the transport worked on the buckets (mpi: its communication thread). */
  commMs: number;
  /** ms this thread spent starting buckets and blocked waiting for them. */
  exposedMs: number;
}

/** One step's overlapped gradient all-reduce over `group` (sum). */
export class OverlappedGradReduce {
  private started: StartedOp[] = [];
  private exposed = 0;

  constructor(private readonly group: ProcessGroup, private readonly grads: Float32Array, readonly buckets: readonly GradBucket[]) {}

  /** Backward part `part` is done: start every bucket it completes (call in the backward's order). */
  done(part: number): void {
    const t0 = performance.now();
    while (this.started.length < this.buckets.length && this.buckets[this.started.length]!.after >= part) this.start();
    this.exposed += performance.now() - t0;
  }

  private start(): void {
    const b = this.buckets[this.started.length]!;
    this.started.push(this.group.allreduceStart(this.grads.subarray(b.lo, b.hi), "sum"));
  }

  /** Starts what has not started (e.g. the last micro-batch was skipped) and waits for every bucket. */
  finish(): OverlapTiming {
    const t0 = performance.now();
    while (this.started.length < this.buckets.length) this.start();
    let commMs = 0;
    for (const op of this.started) commMs += op.wait();
    const exposedMs = this.exposed + performance.now() - t0;
    this.started = [];
    this.exposed = 0;
    return { commMs, exposedMs };
  }
}
