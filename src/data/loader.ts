// Batches of token windows from a shard cache, deterministic and resumable.
//
// Sampling, per split stream of N tokens (see shards.ts; the stream continues across shard files,
// so a window may span two shards — it is read in two pieces):
//   1. epoch e has a phase p_e (0 for epoch 0, else drawn in [0, min(T, N−T)) from the epoch's RNG)
//      and the fixed chunks c = 0 … floor((N−1−p_e)/T) − 1, chunk c being the T+1 tokens starting
//      at p_e + c·T (consecutive chunks overlap by the one token that is the last target of one and
//      the first input of the next, so every token is a target once per epoch);
//   2. the chunks are visited in a Fisher–Yates order drawn from createRng(mix(seed, e));
//   3. a batch takes the next B chunks of that order, continuing into epoch e+1 when e runs out.
// The whole state is (seed, epoch, cursor into the epoch's order): state() / TokenLoader.restore()
// resume with exactly the batches an uninterrupted run would have drawn.
//
// Deliberately not here: tokenisation (shards.ts), document-boundary masking (windows run across
// the eos separators, as in GPT-2 / llm.c training), multi-process sharding of batches.

import { createRng } from "../core/rng.js";
import type { ShardSet, Split } from "./shards.js";

export interface Batch {
  /** (B, T) token ids, row-major. */
  inputs: Int32Array;
  /** (B, T): targets[b, t] = the token after inputs[b, t]. */
  targets: Int32Array;
}

/** JSON-serialisable loader position. */
export interface LoaderState {
  version: 1;
  split: Split;
  B: number;
  T: number;
  seed: number;
  epoch: number;
  /** Chunks of the current epoch's order already handed out. */
  cursor: number;
  /** The split's token count when the state was taken (guards against resuming on another cache). */
  splitTokens: number;
}

/** Per-epoch seed: the run seed mixed with the epoch number (splitmix-style). */
function epochSeed(seed: number, epoch: number): number {
  let z = (seed ^ Math.imul(epoch + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return (z ^ (z >>> 16)) >>> 0;
}

export class TokenLoader {
  readonly N: number;
  private epoch = 0;
  private cursor = 0;
  private phase = 0;
  private order = new Int32Array(0);
  private readonly window: Int32Array;

  constructor(
    readonly shards: ShardSet,
    readonly split: Split,
    readonly B: number,
    readonly T: number,
    readonly seed: number,
  ) {
    if (!Number.isInteger(B) || B < 1) throw new RangeError(`TokenLoader: B must be a positive integer, got ${B}`);
    if (!Number.isInteger(T) || T < 1) throw new RangeError(`TokenLoader: T must be a positive integer, got ${T}`);
    if (!Number.isInteger(seed)) throw new RangeError(`TokenLoader: seed must be an integer, got ${seed}`);
    this.N = shards.splitTokens(split);
    if (this.N < T + 1) {
      throw new Error(`TokenLoader: the ${split} split has ${this.N} tokens, fewer than one window of T+1 = ${T + 1}` + (split === "val" ? " (too few documents for a val split? see valFraction)" : ""));
    }
    this.window = new Int32Array(T + 1);
    this.startEpoch(0);
  }

  /** Resumes a loader from state(): the next batch is the one the saved loader would have returned. */
  static restore(shards: ShardSet, split: Split, B: number, T: number, state: LoaderState): TokenLoader {
    if (state?.version !== 1) throw new Error(`TokenLoader.restore: unknown state version ${String(state?.version)}`);
    const want = { split, B, T, splitTokens: shards.splitTokens(split) };
    for (const k of ["split", "B", "T", "splitTokens"] as const) {
      if (state[k] !== want[k]) throw new Error(`TokenLoader.restore: saved ${k} = ${state[k]} but this run has ${want[k]}`);
    }
    const l = new TokenLoader(shards, split, B, T, state.seed);
    if (!Number.isInteger(state.epoch) || state.epoch < 0) throw new Error(`TokenLoader.restore: bad epoch ${state.epoch}`);
    l.startEpoch(state.epoch);
    if (!Number.isInteger(state.cursor) || state.cursor < 0 || state.cursor >= l.order.length) {
      throw new Error(`TokenLoader.restore: cursor ${state.cursor} outside epoch ${state.epoch}'s ${l.order.length} chunks`);
    }
    l.cursor = state.cursor;
    return l;
  }

  state(): LoaderState {
    return { version: 1, split: this.split, B: this.B, T: this.T, seed: this.seed, epoch: this.epoch, cursor: this.cursor, splitTokens: this.N };
  }

  /** Current epoch (0-based) and the fraction of it consumed. */
  get progress(): { epoch: number; fraction: number } {
    return { epoch: this.epoch, fraction: this.cursor / this.order.length };
  }

  private startEpoch(e: number): void {
    const { N, T } = this;
    const rng = createRng(epochSeed(this.seed, e));
    this.phase = e === 0 ? 0 : rng.int(Math.min(T, N - T));
    const n = Math.floor((N - 1 - this.phase) / T);
    const order = new Int32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    for (let i = n - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      const t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    this.order = order;
    this.epoch = e;
    this.cursor = 0;
  }

  /** The next (B, T) batch. Arrays are fresh each call. */
  next(): Batch {
    const { B, T } = this;
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    for (let b = 0; b < B; b++) {
      if (this.cursor === this.order.length) this.startEpoch(this.epoch + 1);
      const start = this.phase + this.order[this.cursor++] * T;
      this.fillRow(start, inputs, targets, b);
    }
    return { inputs, targets };
  }

  private fillRow(start: number, inputs: Int32Array, targets: Int32Array, b: number): void {
    const T = this.T;
    this.shards.read(this.split, start, this.window);
    inputs.set(this.window.subarray(0, T), b * T);
    targets.set(this.window.subarray(1, T + 1), b * T);
  }

  /**
   * n deterministic batches of a split (default val), independent of this loader's state: the
   * same batches on every call. The windows are chunks (phase 0) spread evenly over the whole
   * split; if it holds fewer than n·B chunks, it yields floor(chunks / B) batches (at least one,
   * repeating chunks when there are fewer than B).
   */
  *evalBatches(n: number, split: Split = "val"): Generator<Batch> {
    const { B, T } = this;
    if (!Number.isInteger(n) || n < 1) throw new RangeError(`evalBatches: n must be a positive integer, got ${n}`);
    const N = this.shards.splitTokens(split);
    const chunks = Math.floor((N - 1) / T);
    if (chunks < 1) throw new Error(`evalBatches: the ${split} split has ${N} tokens, fewer than one window of T+1 = ${T + 1}`);
    const count = chunks >= n * B ? n * B : B * Math.max(1, Math.floor(chunks / B));
    const window = new Int32Array(T + 1);
    for (let k = 0; k < count; k += B) {
      const inputs = new Int32Array(B * T);
      const targets = new Int32Array(B * T);
      for (let b = 0; b < B; b++) {
        const c = Math.floor(((k + b) * chunks) / count);
        this.shards.read(split, c * T, window);
        inputs.set(window.subarray(0, T), b * T);
        targets.set(window.subarray(1, T + 1), b * T);
      }
      yield { inputs, targets };
    }
  }
}

/** Streams a split's tokens in chunks of up to `chunk` ids. */
function* splitChunks(shards: ShardSet, split: Split, chunk = 1 << 20): Generator<Int32Array> {
  const N = shards.splitTokens(split);
  const buf = new Int32Array(Math.min(chunk, Math.max(N, 1)));
  for (let s = 0; s < N; s += buf.length) {
    const view = buf.subarray(0, Math.min(buf.length, N - s));
    shards.read(split, s, view);
    yield view;
  }
}

/**
 * Cross-entropy (nats/token) of the train split's add-one-smoothed unigram distribution,
 * p(v) = (count_train(v) + 1) / (N_train + V), evaluated on every token of the val split:
 *   H = −(1/N_val) Σ_{t ∈ val} ln p(t).
 * A trained model's val loss should be below this; log(V) is the uniform baseline above it.
 */
export function unigramBaseline(shards: ShardSet, vocabSize: number): number {
  const V = vocabSize;
  const count = (split: Split): { counts: Float64Array; total: number } => {
    const counts = new Float64Array(V);
    let total = 0;
    for (const ids of splitChunks(shards, split)) {
      for (let i = 0; i < ids.length; i++) {
        const v = ids[i];
        if (v < 0 || v >= V) throw new RangeError(`unigramBaseline: ${split} token ${v} outside [0, ${V})`);
        counts[v]++;
      }
      total += ids.length;
    }
    return { counts, total };
  };
  const train = count("train");
  const val = count("val");
  if (val.total === 0) throw new Error("unigramBaseline: the val split is empty");
  const denom = Math.log(train.total + V);
  let sum = 0;
  for (let v = 0; v < V; v++) {
    if (val.counts[v] > 0) sum += val.counts[v] * (Math.log(train.counts[v] + 1) - denom);
  }
  return -sum / val.total;
}
