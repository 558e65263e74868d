// Counter-based randomness for routing: SparseMixer Gumbel/Bernoulli noise and
// multiplicative input jitter.
//
// What it is: a stateless hash RNG. Every random number is a pure function of
// (seed, step, layer, stream, index), so results are reproducible, independent of
// thread count and of how tokens are sharded (pass the global token offset).
// What it is not: a general-purpose RNG object; there is no hidden state to advance.
//
// The hash is MurmurHash3's 32-bit word absorb + fmix32 finaliser over the words
// [seed, step, layer, stream, index_lo, index_hi, lane]; two lanes give a 53-bit
// uniform in the open interval (0, 1).
import type { FArr } from "../backend/spec.js";
import { SPARSEMIXER, type RouterNoise, type SparseMixerVariant } from "./router.js";

/** The coordinates of one random draw site. All fields are integers in [0, 2^32). */
export interface NoiseKey {
  seed: number;
  /** optimizer step (or any counter that must change between draws) */
  step: number;
  /** MoE layer index */
  layer: number;
}

/** Independent streams so Gumbel, Bernoulli and input jitter never share numbers. */
export const NOISE_STREAM = { gumbel: 1, bernoulli: 2, inputJitter: 3 } as const;

function absorb(h: number, k: number): number {
  k = Math.imul(k, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

function hash32(key: NoiseKey, stream: number, index: number, lane: number): number {
  const lo = index >>> 0;
  const hi = Math.floor(index / 4294967296) >>> 0;
  let h = 0x2545f491;
  h = absorb(h, key.seed >>> 0);
  h = absorb(h, key.step >>> 0);
  h = absorb(h, key.layer >>> 0);
  h = absorb(h, stream);
  h = absorb(h, lo);
  h = absorb(h, hi);
  h = absorb(h, lane);
  return fmix32(h ^ 28);
}

/**
 * Uniform in the open interval (0, 1) with 53 random bits, a pure function of
 * (key, stream, index). index is a non-negative integer < 2^53.
 */
export function uniformAt(key: NoiseKey, stream: number, index: number): number {
  const a = hash32(key, stream, index, 0) >>> 5; // 27 bits
  const b = hash32(key, stream, index, 1) >>> 6; // 26 bits
  return (a * 67108864 + b + 0.5) / 9007199254740992;
}

/** Standard Gumbel sample −log(−log u) at (key, stream, index). */
export function gumbelAt(key: NoiseKey, stream: number, index: number): number {
  return -Math.log(-Math.log(uniformAt(key, stream, index)));
}

/**
 * Noise for `routerForward` with kind "sparsemixer" in training mode.
 *   gumbel[n,k,j]  (N,K,E): standard Gumbel, element index ((tokenOffset+n)·K + k)·E + j
 *   bernoulli[n,k] (N,K):   1 with probability SPARSEMIXER[variant].pOne
 *                           (v2: 1/4, v2star: 5/8, v1: 1/2), index (tokenOffset+n)·K + k.
 * B = 1 means "use scale s = 1 even when the sampled expert is not the argmax".
 * tokenOffset is the global index of this micro-batch's first token, so the noise a
 * token gets does not depend on how tokens are split over ranks.
 */
export function sampleRouterNoise(key: NoiseKey, N: number, K: number, E: number, variant: SparseMixerVariant, tokenOffset = 0): RouterNoise {
  const pOne = SPARSEMIXER[variant].pOne;
  const gumbel = new Float64Array(N * K * E);
  const bernoulli = new Uint8Array(N * K);
  const g0 = tokenOffset * K * E;
  for (let i = 0; i < gumbel.length; i++) gumbel[i] = gumbelAt(key, NOISE_STREAM.gumbel, g0 + i);
  const b0 = tokenOffset * K;
  for (let i = 0; i < bernoulli.length; i++) bernoulli[i] = uniformAt(key, NOISE_STREAM.bernoulli, b0 + i) < pOne ? 1 : 0;
  return { gumbel, bernoulli };
}

/**
 * Multiplicative input jitter (Switch / GRIN `input_jitter_noise`), training only:
 * x_i ← x_i · u_i, u_i ~ U(1−ε, 1+ε), element i drawn at index offset + i of the
 * inputJitter stream. Overwrites x in place and returns the multipliers u (same
 * length) so the backward can apply dx_i = u_i · dx̃_i (see `inputJitterBackward`).
 * ε = 0 leaves x unchanged and returns all ones.
 */
export function inputJitter(x: FArr, eps: number, key: NoiseKey, offset = 0): Float64Array {
  const u = new Float64Array(x.length);
  if (eps === 0) {
    u.fill(1);
    return u;
  }
  for (let i = 0; i < x.length; i++) {
    const m = 1 - eps + 2 * eps * uniformAt(key, NOISE_STREAM.inputJitter, offset + i);
    u[i] = m;
    x[i] = x[i]! * m;
  }
  return u;
}

/** Backward of inputJitter: dx_i ← u_i · dx_i in place. */
export function inputJitterBackward(dx: FArr, multipliers: Float64Array): void {
  for (let i = 0; i < dx.length; i++) dx[i] = dx[i]! * multipliers[i]!;
}
