// What the model code calls under tensor-parallel training (Megatron layout, no sequence
// parallelism): the per-rank context a Workspace carries, and the vocabulary-parallel embedding
// and cross-entropy (Megatron's VocabParallelEmbedding and vocab_parallel_cross_entropy).
//
// Each TP rank holds the rows [offset, offset+count) of the embedding and of the LM head (uneven
// split: `V mod tp` ranks hold one more row). The embedding of a token another rank owns is zero
// here; the all-reduce over the TP group sums the one owner's row into every rank. The LM head
// gives each rank the logits of its vocabulary slice; the cross-entropy needs only the row max
// (all-reduce max), the sum of exp (all-reduce sum) and the target's logit (all-reduce sum, the
// owner contributes), and its gradient softmax − onehot is local to each slice.
//
// Not: the slicing of weights or the trainer's use of it (tensor-parallel.ts), nor the layer
// math (model/forward.ts calls these where ws.tp is set).
import type { FArr } from "../nn/dims.js";
import type { Buf, ReduceOp } from "./process-group.js";

/** One TP rank's view of its group, set on the Workspace of a tensor-parallel model. */
export interface TensorParallelContext {
  readonly rank: number;
  readonly size: number;
  /** In place, blocking: the element-wise reduction over the TP group (same order on every rank). */
  allreduce(buf: Buf, op?: ReduceOp): void;
  /** This rank's rows of the embedding and LM head, and the full vocabulary size. */
  readonly vocab: { offset: number; count: number; total: number };
  /** EDP (Skywork App. B.1): the whole experts [first, end) this rank computes; the MoE output of
   * the others is zero here and comes from their owners through the TP all-reduce. Absent: ETP
   * (every expert here, its intermediate columns split). */
  readonly experts?: readonly [number, number];
}

/** out (N,C) = embedding rows of ids (global ids; the rows this rank owns), summed over the group. */
export function vocabEmbedForward(tp: TensorParallelContext, out: FArr, ids: Int32Array, embed: FArr, C: number): void {
  const { offset, count } = tp.vocab;
  for (let i = 0; i < ids.length; i++) {
    const r = ids[i]! - offset;
    if (r >= 0 && r < count) out.set(embed.subarray(r * C, (r + 1) * C), i * C);
    else out.fill(0, i * C, (i + 1) * C);
  }
  tp.allreduce(out);
}

/** dEmbed (+=) for the tokens this rank owns; dx (N,C) is the replicated input gradient. */
export function vocabEmbedBackward(tp: TensorParallelContext, dEmbed: FArr, dx: FArr, ids: Int32Array, C: number): void {
  const { offset, count } = tp.vocab;
  for (let i = 0; i < ids.length; i++) {
    const r = ids[i]! - offset;
    if (r < 0 || r >= count) continue;
    for (let c = 0; c < C; c++) dEmbed[r * C + c]! += dx[i * C + c]!;
  }
}

/**
 * Per-row loss lse − logit[target] (0 for ignored rows) and lse, from this rank's logits
 * (N, count) of the vocabulary slice; every rank gets the same losses and lse.
 */
export function vocabCrossEntropyForward(tp: TensorParallelContext, losses: FArr, lse: FArr, logits: FArr, targets: Int32Array, N: number, ignoreIndex: number): void {
  const { offset, count: V } = tp.vocab;
  const max = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let m = -Infinity;
    for (let j = 0; j < V; j++) m = Math.max(m, logits[n * V + j]!);
    max[n] = m;
  }
  tp.allreduce(max, "max");
  // [Σ exp(x − max) over the slice | the target's logit where this rank owns it]
  const sums = new Float64Array(2 * N);
  for (let n = 0; n < N; n++) {
    let s = 0;
    const m = max[n]!;
    for (let j = 0; j < V; j++) s += Math.exp(logits[n * V + j]! - m);
    sums[n] = s;
    const t = targets[n]! - offset;
    if (targets[n] !== ignoreIndex && t >= 0 && t < V) sums[N + n] = logits[n * V + t]!;
  }
  tp.allreduce(sums);
  for (let n = 0; n < N; n++) {
    const l = max[n]! + Math.log(sums[n]!);
    lse[n] = l;
    losses[n] = targets[n] === ignoreIndex ? 0 : l - sums[N + n]!;
  }
}

/** dlogits (N, count) = (softmax − onehot(target)) · dlosses on this slice; ignored rows zero. In place allowed. */
export function vocabCrossEntropyBackward(tp: TensorParallelContext, dlogits: FArr, logits: FArr, lse: FArr, targets: Int32Array, dlosses: FArr, N: number, ignoreIndex: number): void {
  const { offset, count: V } = tp.vocab;
  for (let n = 0; n < N; n++) {
    const o = n * V, t = targets[n]!;
    if (t === ignoreIndex) {
      dlogits.fill(0, o, o + V);
      continue;
    }
    const l = lse[n]!, d = dlosses[n]!, tl = t - offset;
    for (let j = 0; j < V; j++) dlogits[o + j] = (Math.exp(logits[o + j]! - l) - (j === tl ? 1 : 0)) * d;
  }
}
