// Autoregressive generation with a model built for a fixed (B = 1, T).
//
// Each step re-runs the full forward over the sequence so far, left-aligned in the T slots
// and padded with token 0, and reads the logits at the last real position. Attention is
// causal, so the logits at position t depend only on ids ≤ t and the padding never leaks
// in. This costs O(T²) per token (a full forward per step) — fine for the small models this
// is for; a KV cache comes later (infer/).
//
// Decoding: greedy (argmax, lowest id on ties) when temperature = 0; otherwise softmax of
// logits / temperature, restricted to the top-p nucleus (the smallest set of most probable
// tokens whose mass reaches topP), sampled with a seeded RNG (core/rng.ts): the same seed
// gives the same tokens.
//
// Not: batching, a KV cache, stop strings, or repetition penalties.
import type { MoeModel } from "../model/model.js";
import { createRng, type Rng } from "../core/rng.js";

export interface GenerateOptions {
  /** Most new tokens to produce. */
  maxTokens: number;
  /** 0 (default) = greedy. */
  temperature?: number;
  /** Nucleus mass in (0, 1]; default 1 (no truncation). */
  topP?: number;
  /** RNG seed for sampling; default 0. */
  seed?: number;
  /** Stop after producing this token (it is included in the output). */
  eosId?: number | number[];
}

/** The token to emit from one row of logits. */
export function pickToken(logits: ArrayLike<number>, temperature: number, topP: number, rng: Rng): number {
  const V = logits.length;
  if (temperature === 0) {
    let best = 0;
    for (let j = 1; j < V; j++) if (logits[j]! > logits[best]!) best = j;
    return best;
  }
  let m = -Infinity;
  for (let j = 0; j < V; j++) if (logits[j]! > m) m = logits[j]!;
  const p = new Float64Array(V);
  let sum = 0;
  for (let j = 0; j < V; j++) {
    p[j] = Math.exp((logits[j]! - m) / temperature);
    sum += p[j]!;
  }
  const order = Array.from({ length: V }, (_, j) => j).sort((a, b) => p[b]! - p[a]! || a - b);
  let keep = V;
  if (topP < 1) {
    let acc = 0;
    for (let r = 0; r < V; r++) {
      acc += p[order[r]!]! / sum;
      if (acc >= topP) {
        keep = r + 1;
        break;
      }
    }
  }
  let mass = 0;
  for (let r = 0; r < keep; r++) mass += p[order[r]!]!;
  let u = rng.uniform() * mass;
  for (let r = 0; r < keep; r++) {
    u -= p[order[r]!]!;
    if (u < 0) return order[r]!;
  }
  return order[keep - 1]!;
}

/**
 * Generates up to maxTokens tokens after promptIds; returns the new tokens only (ending with
 * the EOS token when one was produced). prompt length + maxTokens must be ≤ T + 1 (the last
 * token produced is never fed back).
 */
export function generate(model: MoeModel, promptIds: readonly number[], opts: GenerateOptions): number[] {
  const { B, T } = model.shape;
  const V = model.cfg.vocabSize;
  const temperature = opts.temperature ?? 0;
  const topP = opts.topP ?? 1;
  if (B !== 1) throw new Error(`generate: the model must be built with B = 1, got B = ${B}`);
  if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 0) throw new Error(`generate: maxTokens must be a non-negative integer, got ${opts.maxTokens}`);
  if (!(temperature >= 0) || !Number.isFinite(temperature)) throw new Error(`generate: temperature must be ≥ 0, got ${temperature}`);
  if (!(topP > 0 && topP <= 1)) throw new Error(`generate: topP must be in (0, 1], got ${topP}`);
  if (promptIds.length < 1) throw new Error("generate: the prompt must have at least one token");
  if (promptIds.length + opts.maxTokens > T + 1) {
    throw new Error(`generate: prompt (${promptIds.length}) + maxTokens (${opts.maxTokens}) exceeds the model's context T + 1 = ${T + 1}; build the model with a larger T`);
  }
  promptIds.forEach((t, i) => {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new Error(`generate: prompt token ${t} at position ${i} is out of range [0, ${V})`);
  });
  const eos = new Set(opts.eosId === undefined ? [] : Array.isArray(opts.eosId) ? opts.eosId : [opts.eosId]);
  const rng = createRng(opts.seed ?? 0);
  const ids = new Int32Array(T); // padding: token 0
  ids.set(promptIds);
  let len = promptIds.length;
  const out: number[] = [];
  for (let step = 0; step < opts.maxTokens; step++) {
    model.forward(ids, null, { train: false });
    const logits = model.lastLogits();
    const row = logits.subarray((len - 1) * V, len * V);
    const tok = pickToken(row, temperature, topP, rng);
    out.push(tok);
    if (eos.has(tok)) break;
    if (len < T) ids[len] = tok;
    len++;
  }
  return out;
}
