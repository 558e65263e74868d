// Per-sequence token sampler: one row of logits (V) → the next token id, its logprob and the
// top alternatives. The engine keeps one SequenceSampler per sequence and calls `sample` once
// per decode step; the sampler owns the sequence's seeded RNG and its token counts.
//
// Steps, in this order (f64 scratch row z, a copy of the logits):
//   1. logit_bias       z[i] += bias[i]
//   2. penalties        repetition (HF/vLLM) over tokens seen in prompt + output:
//                         z[i] = z[i] > 0 ? z[i] / r : z[i] · r
//                       then frequency and presence (OpenAI) over output counts c[i]:
//                         z[i] -= frequency · c[i] + presence · [c[i] > 0]
//   3. min_tokens       while fewer than min_tokens tokens were produced, stop_token_ids and EOS
//                       (unless ignore_eos) get z = -inf
//   4. greedy           temperature < 1e-5: argmax z, lowest id on ties — steps 5–9 are skipped
//   5. temperature      z /= T, p = softmax(z)
//   6. top_k            keep z ≥ the k-th largest z (ties at the boundary are all kept)
//   7. top_p            keep the shortest run of most probable tokens (ties: lower id first) whose
//                       mass reaches top_p, on the distribution left by step 6
//   8. min_p            keep p ≥ min_p · p_max (p_max survives 6 and 7, so renormalising
//                       between steps does not change this set)
//   9. sample           one uniform u from the sequence's RNG; inverse CDF over the kept tokens
//                       in ascending id order
// This is vLLM's order for steps 1–5 (v1 applies min_p before top-k/top-p; HF applies it last,
// as here). llama-server applies temperature last; its results differ when truncation is on.
//
// Logprobs (only with logprobs: true — a log-sum-exp pass over V): logprobs_mode "raw"
// (default, as vLLM) reports log_softmax of the logits exactly as the model produced them; "processed" reports the distribution actually sampled from (after
// step 8; -inf for removed tokens; for greedy, log_softmax after step 3 without temperature).
//
// Reproducibility: the RNG (core/rng.ts, sfc32) is seeded from (seed, sequence index) only, and
// each step draws exactly one uniform, so a seeded request gives the same tokens whatever else
// is in the batch — provided the logits themselves are the same (batched and unbatched matmuls
// may differ in the last bits; greedy comparisons are the robust test).
//
// Not here: stop strings and finish reasons (stop.ts), text (detok.ts), beam search, guided
// decoding, speculative decoding.
import { createRng, type Rng } from "../core/rng.js";
import type { SamplingParams } from "./sampling-params.js";

/** Temperatures below this decode greedily (vLLM's _SAMPLING_EPS). */
export const GREEDY_TEMPERATURE = 1e-5;

export interface TokenLogprob {
  id: number;
  logprob: number;
}

export interface SampledToken {
  id: number;
  /** Logprob of `id` in the distribution logprobs_mode names; only when params.logprobs (it costs a pass over V). */
  logprob?: number;
  /** The top_logprobs most likely tokens, most likely first (ties: lower id first); only when top_logprobs > 0. */
  topLogprobs?: TokenLogprob[];
}

/** A row the sampler cannot use (wrong width, NaN, every token masked). */
export class SamplerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SamplerError";
  }
}

/**
 * Scratch rows for sampling, V-sized. One workspace may serve every sampler of an engine, as
 * long as they run one at a time (the engine samples its sequences sequentially).
 */
export class SamplerWorkspace {
  readonly vocabSize: number;
  readonly z: Float64Array; // (V) processed logits
  readonly w: Float64Array; // (V) exp(z - max z) for candidates
  readonly cand: Int32Array; // (V) surviving ids, ascending
  readonly heap: Float64Array; // (V) top_k min-heap, top_p weights
  constructor(vocabSize: number) {
    if (!Number.isInteger(vocabSize) || vocabSize < 1) throw new RangeError(`SamplerWorkspace: vocabSize must be a positive integer, got ${vocabSize}`);
    this.vocabSize = vocabSize;
    this.z = new Float64Array(vocabSize);
    this.w = new Float64Array(vocabSize);
    this.cand = new Int32Array(vocabSize);
    this.heap = new Float64Array(vocabSize);
  }
}

export interface SequenceSamplerOptions {
  /** Width of the logits row. */
  vocabSize: number;
  /** The prompt's token ids (repetition_penalty counts them as seen). Default none. */
  promptIds?: ArrayLike<number>;
  /** EOS ids: masked while output < min_tokens unless ignore_eos. Default none. */
  eosTokenIds?: readonly number[];
  /** Index of this sequence among the request's n; seeds a distinct stream. Default 0. */
  index?: number;
  /** Shared scratch (see SamplerWorkspace); default: the sampler allocates its own. */
  workspace?: SamplerWorkspace;
}

function fmix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** 32-bit RNG seed for (request seed, sequence index): all 64 bits of the seed take part. */
export function streamSeed(seed: number, index: number): number {
  const b = BigInt.asUintN(64, BigInt(seed));
  const lo = Number(b & 0xffffffffn), hi = Number(b >> 32n);
  return fmix32(fmix32(lo ^ 0x9e3779b9) ^ fmix32((hi + 0x7f4a7c15) >>> 0) ^ fmix32((index + 0x165667b1) >>> 0));
}

function randomSeed(): number {
  const u = new Uint32Array(2);
  crypto.getRandomValues(u);
  return (u[0]! & 0x1fffff) * 4294967296 + u[1]!;
}

/** Sampler of one sequence; see the file header for the steps. */
export class SequenceSampler {
  readonly params: SamplingParams;
  readonly vocabSize: number;
  /** The seed in use: params.seed, or a random one when the request gave none. */
  readonly seed: number;
  private readonly rng: Rng;
  private readonly ws: SamplerWorkspace;
  private readonly counts = new Map<number, number>(); // output token → count
  private readonly seen: Set<number> | undefined; // prompt ∪ output, only with repetition_penalty ≠ 1
  private readonly minMask: Int32Array; // ids masked while output < min_tokens
  private readonly bias: Int32Array;
  private readonly biasVal: Float64Array;
  private nOut = 0;

  constructor(params: SamplingParams, opts: SequenceSamplerOptions) {
    const V = opts.vocabSize;
    if (!Number.isInteger(V) || V < 1) throw new RangeError(`SequenceSampler: vocabSize must be a positive integer, got ${V}`);
    if (opts.workspace && opts.workspace.vocabSize !== V) throw new RangeError(`SequenceSampler: workspace is for vocabSize ${opts.workspace.vocabSize}, not ${V}`);
    const index = opts.index ?? 0;
    if (!Number.isInteger(index) || index < 0) throw new RangeError(`SequenceSampler: index must be a non-negative integer, got ${index}`);
    const checkId = (what: string, id: number) => {
      if (!Number.isInteger(id) || id < 0 || id >= V) throw new RangeError(`SequenceSampler: ${what} id ${id} is not in [0, ${V})`);
    };
    this.params = params;
    this.vocabSize = V;
    this.ws = opts.workspace ?? new SamplerWorkspace(V);
    this.seed = params.seed ?? randomSeed();
    this.rng = createRng(streamSeed(this.seed, index));
    for (const [id] of params.logit_bias) checkId("logit_bias", id);
    this.bias = Int32Array.from(params.logit_bias, (e) => e[0]);
    this.biasVal = Float64Array.from(params.logit_bias, (e) => e[1]);
    const mask = new Set<number>(params.stop_token_ids);
    if (!params.ignore_eos) for (const id of opts.eosTokenIds ?? []) mask.add(id);
    for (const id of mask) checkId("stop/EOS", id);
    this.minMask = Int32Array.from(mask);
    if (params.repetition_penalty !== 1) {
      this.seen = new Set();
      const pr = opts.promptIds ?? [];
      for (let i = 0; i < pr.length; i++) {
        checkId("prompt", pr[i]!);
        this.seen.add(pr[i]!);
      }
    }
  }

  /** Output tokens recorded so far (sampled or forced). */
  get outputTokens(): number {
    return this.nOut;
  }

  /** Counts `id` as an output token (penalties, min_tokens); `sample` does this itself. */
  record(id: number): void {
    this.counts.set(id, (this.counts.get(id) ?? 0) + 1);
    this.seen?.add(id);
    this.nOut++;
  }

  /** Samples the next token from one row of logits and records it. */
  sample(logits: ArrayLike<number>): SampledToken {
    this.prepare(logits);
    const p = this.params;
    const ws = this.ws;
    const V = this.vocabSize;
    const processed = p.logprobs && p.logprobs_mode === "processed";
    const k = p.top_logprobs;
    let id: number;
    let logprob: number | undefined;
    let top: TokenLogprob[] | undefined;
    if (p.temperature < GREEDY_TEMPERATURE) {
      id = argmax(ws.z, V);
      if (processed) {
        const lse = logSumExp(ws.z, V);
        logprob = ws.z[id]! - lse;
        if (k > 0) top = topOfRow(ws.z, V, k, lse);
      }
    } else {
      const { n, sum } = this.truncate();
      id = this.draw(n, sum);
      if (processed) {
        const ls = Math.log(sum);
        logprob = Math.log(ws.w[id]!) - ls;
        if (k > 0) top = topOfCandidates(ws.w, ws.cand, n, k, ls);
      }
    }
    if (p.logprobs && !processed) {
      const lse = logSumExp(logits, V);
      logprob = logits[id]! - lse;
      if (k > 0) top = topOfRow(logits, V, k, lse);
    }
    this.record(id);
    if (logprob === undefined) return { id };
    return top ? { id, logprob, topLogprobs: top } : { id, logprob };
  }

  /**
   * The distribution `sample` would draw from for this row (probabilities, length V; one-hot
   * for greedy), without drawing or recording anything. For tests and diagnostics.
   */
  distribution(logits: ArrayLike<number>): Float64Array {
    this.prepare(logits);
    const V = this.vocabSize;
    const out = new Float64Array(V);
    if (this.params.temperature < GREEDY_TEMPERATURE) {
      out[argmax(this.ws.z, V)] = 1;
      return out;
    }
    const { n, sum } = this.truncate();
    for (let j = 0; j < n; j++) {
      const i = this.ws.cand[j]!;
      out[i] = this.ws.w[i]! / sum;
    }
    return out;
  }

  /** Steps 1–3 into ws.z. */
  private prepare(logits: ArrayLike<number>): void {
    const V = this.vocabSize;
    if (logits.length !== V) throw new SamplerError(`logits row has ${logits.length} entries, the sampler was built for vocabSize ${V}`);
    const p = this.params;
    const z = this.ws.z;
    if (logits instanceof Float32Array) z.set(logits); // one typed copy (the engine's rows)
    else for (let i = 0; i < V; i++) z[i] = logits[i]!;
    for (let i = 0; i < V; i++) if (z[i] !== z[i]) throw new SamplerError(`logits[${i}] is NaN`);
    // 1. logit_bias
    for (let j = 0; j < this.bias.length; j++) z[this.bias[j]!] += this.biasVal[j]!;
    // 2. penalties
    if (this.seen) {
      const r = p.repetition_penalty;
      for (const i of this.seen) z[i] = z[i]! > 0 ? z[i]! / r : z[i]! * r;
    }
    if (p.frequency_penalty !== 0 || p.presence_penalty !== 0) {
      for (const [i, c] of this.counts) z[i] -= p.frequency_penalty * c + p.presence_penalty;
    }
    // 3. min_tokens
    if (this.nOut < p.min_tokens) for (let j = 0; j < this.minMask.length; j++) z[this.minMask[j]!] = -Infinity;
  }

  /** Steps 5–8: leaves the kept ids ascending in ws.cand[0..n) and their weights in ws.w; returns n and Σw. */
  private truncate(): { n: number; sum: number } {
    const p = this.params;
    const V = this.vocabSize;
    const { z, w, cand } = this.ws;
    // 5. temperature (and the candidates: every token not at -inf)
    const T = p.temperature;
    let n = 0;
    let max = -Infinity;
    for (let i = 0; i < V; i++) {
      if (z[i] === -Infinity) continue;
      const v = z[i]! / T;
      z[i] = v;
      cand[n++] = i;
      if (v > max) max = v;
    }
    if (n === 0 || max === Infinity) throw new SamplerError(n === 0 ? "every token is masked (-inf) after logit_bias, penalties and min_tokens" : "a logit is +inf");
    // 6. top_k
    if (p.top_k > 0 && p.top_k < n) {
      const thr = kthLargest(z, cand, n, p.top_k, this.ws.heap);
      let m = 0;
      for (let j = 0; j < n; j++) if (z[cand[j]!]! >= thr) cand[m++] = cand[j]!;
      n = m;
    }
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const i = cand[j]!;
      const e = Math.exp(z[i]! - max);
      w[i] = e;
      sum += e;
    }
    // 7. top_p
    if (p.top_p < 1 && n > 1) {
      n = this.nucleus(n, p.top_p * sum);
      sum = 0;
      for (let j = 0; j < n; j++) sum += w[cand[j]!]!;
    }
    // 8. min_p (the largest weight is exp(0) = 1)
    if (p.min_p > 0) {
      let m = 0;
      sum = 0;
      for (let j = 0; j < n; j++) {
        const i = cand[j]!;
        if (w[i]! >= p.min_p) {
          cand[m++] = i;
          sum += w[i]!;
        }
      }
      n = m;
    }
    return { n, sum };
  }

  /** Step 7: keeps the top_p nucleus in cand (ascending); returns its size. */
  private nucleus(n: number, target: number): number {
    const { w, cand } = this.ws;
    const vals = this.ws.heap;
    // Gather the weights ≥ t, lowering t until their mass reaches the target: the nucleus is
    // a prefix of the descending order, so it lies inside that set.
    let k = 0;
    for (let t = 1 / 16; ; t /= 16) {
      k = 0;
      let mass = 0;
      for (let j = 0; j < n; j++) {
        const v = w[cand[j]!]!;
        if (v >= t) {
          vals[k++] = v;
          mass += v;
        }
      }
      if (mass >= target || k === n || t < 1e-300) break;
    }
    const cut = cutWeight(vals, k, target);
    if (cut === null) return n; // rounding left the target out of reach: keep all
    const [wc, above] = cut; // tokens above the cut weight are in; ties at it go lower id first
    let cb = above;
    let m = 0;
    let tiesOpen = true;
    for (let q = 0; q < n; q++) {
      const i = cand[q]!;
      const v = w[i]!;
      if (v > wc) cand[m++] = i;
      else if (v === wc && tiesOpen) {
        cand[m++] = i;
        cb += wc;
        if (cb >= target) tiesOpen = false;
      }
    }
    return m;
  }

  /** Step 9: inverse CDF with one uniform. */
  private draw(n: number, sum: number): number {
    const { w, cand } = this.ws;
    const target = this.rng.uniform() * sum;
    let cum = 0;
    for (let j = 0; j < n; j++) {
      cum += w[cand[j]!]!;
      if (cum > target) return cand[j]!;
    }
    return cand[n - 1]!;
  }
}

/**
 * The top_p cut: the weight w_c at which the descending cumulative sum of vals[0..k) first
 * reaches `target`, and the mass strictly above it. Weighted quickselect (expected O(k)),
 * finishing small ranges with a sort; vals is reordered. Null when the target is out of reach.
 */
export function cutWeight(vals: Float64Array, k: number, target: number): [cut: number, above: number] | null {
  let lo = 0, hi = k;
  let above = 0; // mass of the elements already known to rank above vals[lo..hi)
  while (hi - lo > 32) {
    const a = vals[lo]!, b = vals[(lo + hi) >> 1]!, c = vals[hi - 1]!;
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
    // three-way partition of [lo, hi): [< pivot | == pivot | > pivot]
    let lt = lo, i = lo, gt = hi;
    while (i < gt) {
      const v = vals[i]!;
      if (v < pivot) {
        vals[i++] = vals[lt]!;
        vals[lt++] = v;
      } else if (v > pivot) {
        vals[i] = vals[--gt]!;
        vals[gt] = v;
      } else i++;
    }
    let mg = 0;
    for (let q = gt; q < hi; q++) mg += vals[q]!;
    if (above + mg >= target) {
      lo = gt;
      continue;
    }
    const eqMass = (gt - lt) * pivot;
    if (above + mg + eqMass >= target) return [pivot, above + mg];
    above += mg + eqMass;
    hi = lt;
  }
  const part = vals.subarray(lo, hi).sort();
  let cum = above;
  for (let j = part.length - 1; j >= 0; j--) {
    const v = part[j]!;
    if (cum + v >= target) {
      let mass = above;
      for (let q = part.length - 1; q >= 0 && part[q]! > v; q--) mass += part[q]!;
      return [v, mass];
    }
    cum += v;
  }
  return null;
}

function argmax(z: Float64Array, V: number): number {
  let best = 0, bv = z[0]!;
  for (let i = 1; i < V; i++) {
    const v = z[i]!;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

function logSumExp(z: ArrayLike<number>, V: number): number {
  let m = -Infinity;
  for (let i = 0; i < V; i++) if (z[i]! > m) m = z[i]!;
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < V; i++) s += Math.exp(z[i]! - m);
  return m + Math.log(s);
}

/** k-th largest of z over cand[0..n) with a size-k min-heap (k < n). */
function kthLargest(z: Float64Array, cand: Int32Array, n: number, k: number, heap: Float64Array): number {
  let size = 0;
  for (let j = 0; j < n; j++) {
    const v = z[cand[j]!]!;
    if (size < k) {
      let c = size++;
      while (c > 0) {
        const par = (c - 1) >> 1;
        if (heap[par]! <= v) break;
        heap[c] = heap[par]!;
        c = par;
      }
      heap[c] = v;
    } else if (v > heap[0]!) {
      let c = 0;
      for (;;) {
        const l = 2 * c + 1;
        if (l >= size) break;
        const r = l + 1;
        const s = r < size && heap[r]! < heap[l]! ? r : l;
        if (heap[s]! >= v) break;
        heap[c] = heap[s]!;
        c = s;
      }
      heap[c] = v;
    }
  }
  return heap[0]!;
}

/** Inserts (id, v) into a list kept sorted by v desc (ids arrive ascending, so ties stay id-ascending). */
function pushTop(ids: number[], vals: number[], id: number, v: number, k: number): void {
  if (vals.length === k && !(v > vals[k - 1]!)) return;
  let j = vals.length < k ? vals.length : k - 1;
  if (vals.length < k) {
    ids.push(id);
    vals.push(v);
  }
  while (j > 0 && vals[j - 1]! < v) {
    ids[j] = ids[j - 1]!;
    vals[j] = vals[j - 1]!;
    j--;
  }
  ids[j] = id;
  vals[j] = v;
}

function topOfRow(z: ArrayLike<number>, V: number, k: number, lse: number): TokenLogprob[] {
  const ids: number[] = [], vals: number[] = [];
  for (let i = 0; i < V; i++) pushTop(ids, vals, i, z[i]!, Math.min(k, V));
  return ids.map((id, j) => ({ id, logprob: vals[j]! - lse }));
}

function topOfCandidates(w: Float64Array, cand: Int32Array, n: number, k: number, logSum: number): TokenLogprob[] {
  const ids: number[] = [], vals: number[] = [];
  for (let j = 0; j < n; j++) pushTop(ids, vals, cand[j]!, w[cand[j]!]!, Math.min(k, n));
  return ids.map((id, j) => ({ id, logprob: Math.log(vals[j]!) - logSum }));
}
