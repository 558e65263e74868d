// What the model code calls under tensor-parallel training (Megatron layout, no sequence
// parallelism): the per-rank context a Workspace carries, and the vocabulary-parallel embedding
// and cross-entropy (Megatron's VocabParallelEmbedding and vocab_parallel_cross_entropy).
//
// Each TP rank holds the rows [offset, offset+count) of the embedding and of the LM head (uneven
// split: `V mod tp` ranks hold one more row). The embedding of a token another rank owns is zero
// here; the all-reduce over the TP group sums the one owner's row into every rank. The LM head
// gives each rank the logits of its vocabulary slice; the cross-entropy needs only each slice's
// log-sum-exp and the target's logit (one all-reduce; the owner contributes the logit), and its
// gradient softmax − onehot is local to each slice.
//
// Not: the slicing of weights or the trainer's use of it (tensor-parallel.ts), nor the layer
// math (model/forward.ts calls these where ws.tp is set).
import type { Backend } from "../backend/spec.js";
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

/** Targets as this slice's columns: t − offset where this rank owns t, else ignoreIndex (and `other` where given). */
function localTargets(tp: TensorParallelContext, targets: Int32Array, ignoreIndex: number, other = ignoreIndex): Int32Array {
  const { offset, count } = tp.vocab, out = new Int32Array(targets.length);
  for (let n = 0; n < targets.length; n++) {
    const t = targets[n]!, l = t - offset;
    out[n] = t === ignoreIndex ? ignoreIndex : l >= 0 && l < count ? l : other;
  }
  return out;
}

/**
 * Per-row loss lse − logit[target] (0 for ignored rows) and lse, from this rank's logits
 * (N, count) of the vocabulary slice; every rank gets the same losses and lse. The slice's
 * log-sum-exp comes from the backend's cross-entropy kernel; one all-reduce carries every
 * slice's and the target's logit (from its owner).
 */
export function vocabCrossEntropyForward(be: Backend, tp: TensorParallelContext, losses: FArr, lse: FArr, logits: FArr, targets: Int32Array, N: number, ignoreIndex: number): void {
  const V = tp.vocab.count, P = tp.size;
  const local = localTargets(tp, targets, ignoreIndex);
  be.crossEntropyForward(losses, lse, logits, local, N, V, ignoreIndex); // lse: this slice's
  // [each rank's slice lse (P × N) | the target's logit (N)]
  const buf = new Float64Array((P + 1) * N);
  for (let n = 0; n < N; n++) {
    buf[tp.rank * N + n] = lse[n]!;
    if (local[n] !== ignoreIndex) buf[P * N + n] = logits[n * V + local[n]!]!;
  }
  tp.allreduce(buf);
  for (let n = 0; n < N; n++) {
    let m = -Infinity, s = 0;
    for (let r = 0; r < P; r++) m = Math.max(m, buf[r * N + n]!);
    for (let r = 0; r < P; r++) s += Math.exp(buf[r * N + n]! - m);
    const l = m + Math.log(s);
    lse[n] = l;
    losses[n] = targets[n] === ignoreIndex ? 0 : l - buf[P * N + n]!;
  }
}

/**
 * dlogits (N, count) = (softmax − onehot(target)) · dlosses on this slice; ignored rows zero;
 * dlogits may be logits. The backend's kernel with the global lse; a row whose target another
 * rank owns is run with column 0 as its target and that one element recomputed without the −1.
 */
export function vocabCrossEntropyBackward(be: Backend, tp: TensorParallelContext, dlogits: FArr, logits: FArr, lse: FArr, targets: Int32Array, dlosses: FArr, N: number, ignoreIndex: number): void {
  const V = tp.vocab.count;
  const local = localTargets(tp, targets, ignoreIndex, -1);
  const x0 = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    if (local[n] !== -1) continue;
    x0[n] = logits[n * V]!; // read before the kernel overwrites it (in place)
    local[n] = 0;
  }
  be.crossEntropyBackward(dlogits, logits, lse, local, dlosses, N, V, ignoreIndex);
  for (let n = 0; n < N; n++) {
    const t = targets[n]!, l = t - tp.vocab.offset;
    if (t !== ignoreIndex && !(l >= 0 && l < V)) dlogits[n * V] = Math.exp(x0[n]! - lse[n]!) * dlosses[n]!;
  }
}
