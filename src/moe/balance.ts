// Load-balancing losses, their gradients, and the per-layer balancing controllers.
//
// What it is: pure functions. Each loss returns { loss, weighted } — loss is the
// formula's value, weighted = coef·loss is the term added to the training loss — and
// *accumulates* coef·∂loss/∂(probs or logits) into a caller-provided array (+=).
// coef = 0 (or a null gradient array) skips the gradient work entirely, so the
// gradient contribution is exactly zero. Controllers (adaptive α, aux-free bias)
// take a state and return a new one.
// What it is not: a place that remembers anything between steps (no module state;
// megablocks' global _LOAD_BALANCING_LOSS is the anti-example), nor the all-reduce
// of counts (the caller does that and passes the global counts in).
//
// Dimension letters: N tokens, E experts, K picks per token, L layers (./dims.ts).
import type { FArr } from "../backend/spec.js";
import { checkExperts, checkF, checkNEK, dim, fail } from "./dims.js";

export interface BalanceResult {
  /** the loss formula's value (without the coefficient) */
  loss: number;
  /** coef · loss — the term added to the training loss */
  weighted: number;
}

/** P_j = (1/N) Σ_t probs_tj, in f64. */
function meanProbs(probs: FArr, N: number, E: number): Float64Array {
  const P = new Float64Array(E);
  for (let t = 0; t < N; t++) for (let j = 0; j < E; j++) P[j] = P[j]! + probs[t * E + j]!;
  if (N > 0) for (let j = 0; j < E; j++) P[j] = P[j]! / N;
  return P;
}

/**
 * Skywork-MoE auxiliary loss (arXiv 2406.06563 §2.2, eq. 4) — not the Switch product:
 *   L = Σ_j (1/E − P_j)²,  P_j = (1/N) Σ_t g_tj  (g = the router's probs).
 *   ∂L/∂g_tj = −2(1/E − P_j)/N;  dProbs += coef·∂L/∂g.
 * The training loss gets Σ_layers α^(l)·L^(l) (α from the adaptive controller).
 */
export function skyworkAuxLoss(probs: FArr, N: number, E: number, coef: number, dProbs: FArr | null): BalanceResult {
  const fn = "skyworkAuxLoss";
  checkNEK(fn, N, E, 1);
  checkF(fn, "probs", probs, N * E);
  if (dProbs) checkF(fn, "dProbs", dProbs, N * E);
  const P = meanProbs(probs, N, E);
  let loss = 0;
  for (let j = 0; j < E; j++) loss += (1 / E - P[j]!) ** 2;
  if (coef !== 0 && dProbs && N > 0) {
    for (let j = 0; j < E; j++) {
      const g = (-2 * coef * (1 / E - P[j]!)) / N;
      for (let t = 0; t < N; t++) dProbs[t * E + j] = dProbs[t * E + j]! + g;
    }
  }
  return { loss, weighted: coef * loss };
}

/** L = E·Σ_i f_i·P_i with given f, gradient E·f_i/N into every token's column i. */
function fpLoss(probs: FArr, N: number, E: number, f: Float64Array, coef: number, dProbs: FArr | null): BalanceResult {
  const P = meanProbs(probs, N, E);
  let loss = 0;
  for (let i = 0; i < E; i++) loss += f[i]! * P[i]!;
  loss *= E;
  if (coef !== 0 && dProbs && N > 0) {
    for (let i = 0; i < E; i++) {
      const g = (coef * E * f[i]!) / N;
      if (g === 0) continue;
      for (let t = 0; t < N; t++) dProbs[t * E + i] = dProbs[t * E + i]! + g;
    }
  }
  return { loss, weighted: coef * loss };
}

/**
 * Switch / GShard load-balancing loss (Switch Transformer arXiv 2101.03961 eq. 4–6,
 * Megatron switch_load_balancing_loss_func):
 *   L = E · Σ_i f_i · P_i,  f_i = count_i / (K·N)  (share of the K·N token-expert
 *   assignments routed to i; not differentiated),  P_i = (1/N) Σ_t probs_ti.
 *   ∂L/∂probs_ti = E·f_i/N.  L = 1 when perfectly balanced.
 * counts (E), if given, replace the histogram of topExperts (e.g. counts before
 * dropping computed elsewhere); f_i = counts_i / Σ counts.
 */
export function switchAuxLoss(probs: FArr, topExperts: Int32Array, N: number, E: number, K: number, coef: number, dProbs: FArr | null, counts?: ArrayLike<number>): BalanceResult {
  const fn = "switchAuxLoss";
  checkNEK(fn, N, E, K);
  checkF(fn, "probs", probs, N * E);
  if (dProbs) checkF(fn, "dProbs", dProbs, N * E);
  const f = new Float64Array(E);
  if (counts) {
    if (counts.length !== E) fail(fn, `counts has ${counts.length} elements, expected ${E}`);
    let tot = 0;
    for (let i = 0; i < E; i++) tot += counts[i]!;
    if (tot > 0) for (let i = 0; i < E; i++) f[i] = counts[i]! / tot;
  } else {
    checkExperts(fn, "topExperts", topExperts, N * K, E);
    for (let a = 0; a < N * K; a++) f[topExperts[a]!] = f[topExperts[a]!]! + 1;
    if (N > 0) for (let i = 0; i < E; i++) f[i] = f[i]! / (K * N);
  }
  return fpLoss(probs, N, E, f, coef, dProbs);
}

/**
 * GRIN global load balancing (arXiv 2409.12136 §3.3; Megatron global_aux_loss):
 * the Switch form with f_i from counts all-reduced over the data-parallel group
 * and summed over the gradient-accumulation micro-batches:
 *   L = E · Σ_i f_i · P_i,  f_i = globalCounts_i / globalAssignments,
 *   P_i = local mean of the plain unmasked softmax over all E experts (the
 *   sparsemixer router's probs). globalAssignments = K · (global tokens), counting
 *   every pick. GRIN gives no α: 0.01 [our default].
 */
export function globalLoadBalancingLoss(probs: FArr, N: number, E: number, K: number, globalCounts: ArrayLike<number>, globalAssignments: number, coef: number, dProbs: FArr | null): BalanceResult {
  const fn = "globalLoadBalancingLoss";
  checkNEK(fn, N, E, K);
  checkF(fn, "probs", probs, N * E);
  if (dProbs) checkF(fn, "dProbs", dProbs, N * E);
  if (globalCounts.length !== E) fail(fn, `globalCounts has ${globalCounts.length} elements, expected ${E}`);
  if (!(globalAssignments >= 0)) fail(fn, `globalAssignments must be ≥ 0, got ${globalAssignments}`);
  const f = new Float64Array(E);
  if (globalAssignments > 0) for (let i = 0; i < E; i++) f[i] = globalCounts[i]! / globalAssignments;
  return fpLoss(probs, N, E, f, coef, dProbs);
}

/**
 * Router z-loss (ST-MoE arXiv 2202.08906 eq. 5): L = (1/N) Σ_t (logsumexp_j z_tj)²,
 * on the raw router logits; c_z = 1e-3 in ST-MoE.
 *   ∂L/∂z_tj = 2·lse_t·softmax(z_t)_j / N;  dLogits += coef·∂L/∂z.
 * Call after routerBackward (which overwrites dLogits).
 */
export function routerZLoss(logits: FArr, N: number, E: number, coef: number, dLogits: FArr | null): BalanceResult {
  const fn = "routerZLoss";
  checkNEK(fn, N, E, 1);
  checkF(fn, "logits", logits, N * E);
  if (dLogits) checkF(fn, "dLogits", dLogits, N * E);
  let loss = 0;
  const grad = coef !== 0 && dLogits !== null;
  for (let t = 0; t < N; t++) {
    const off = t * E;
    let m = -Infinity;
    for (let j = 0; j < E; j++) m = Math.max(m, logits[off + j]!);
    let s = 0;
    for (let j = 0; j < E; j++) s += Math.exp(logits[off + j]! - m);
    const lse = m + Math.log(s);
    loss += lse * lse;
    if (grad) {
      const a = (2 * coef * lse) / N;
      for (let j = 0; j < E; j++) dLogits![off + j] = dLogits![off + j]! + (a * Math.exp(logits[off + j]! - m)) / s;
    }
  }
  if (N > 0) loss /= N;
  return { loss, weighted: coef * loss };
}

// ---------------------------------------------------------------------------
// Controllers

export interface AdaptiveAlphaConfig {
  /** ξ, slope of the drop-rate → target map (Skywork 1/5) */
  xi: number;
  /** α_max (Skywork 0.01) */
  alphaMax: number;
  /** β, EMA factor (Skywork 0.99) */
  beta: number;
  /** α_0 for every layer ([our default] α_max) */
  alpha0: number;
}

export const DEFAULT_ADAPTIVE_ALPHA: Readonly<AdaptiveAlphaConfig> = Object.freeze({ xi: 0.2, alphaMax: 0.01, beta: 0.99, alpha0: 0.01 });

/** Per-layer coefficients α^(l) (L); a value, replaced by each step. */
export interface AdaptiveAlphaState {
  readonly alpha: Float64Array;
}

/** α^(l) = α_0 for each of the L layers. */
export function adaptiveAlphaInit(cfg: AdaptiveAlphaConfig, L: number): AdaptiveAlphaState {
  dim("adaptiveAlphaInit", "L", L);
  return { alpha: new Float64Array(L).fill(cfg.alpha0) };
}

/** f(d) = ξ·d if d ≤ α_max/ξ, else α_max (Skywork eq. 9). */
export function adaptiveAlphaTarget(d: number, cfg: AdaptiveAlphaConfig): number {
  return d <= cfg.alphaMax / cfg.xi ? cfg.xi * d : cfg.alphaMax;
}

/**
 * Skywork-MoE adaptive auxiliary-loss coefficient (arXiv 2406.06563 §4.2, eqs. 7–9),
 * per layer l, from that layer's token drop rate d_i^(l) of step i (the "virtual"
 * rate capacity C would have dropped, in dropless training):
 *   α̂_{i+1} = f(d_i),  α_{i+1} = β·α_i + (1−β)·α̂_{i+1}.
 * A constant d ≥ α_max/ξ (5%) converges to α_max = 0.01; constant 1% to 0.002.
 * Returns a new state; the input is not modified.
 */
export function adaptiveAlphaStep(state: AdaptiveAlphaState, dropRates: ArrayLike<number>, cfg: AdaptiveAlphaConfig): AdaptiveAlphaState {
  const L = state.alpha.length;
  if (dropRates.length !== L) fail("adaptiveAlphaStep", `dropRates has ${dropRates.length} elements, expected L = ${L}`);
  const alpha = new Float64Array(L);
  for (let l = 0; l < L; l++) alpha[l] = cfg.beta * state.alpha[l]! + (1 - cfg.beta) * adaptiveAlphaTarget(dropRates[l]!, cfg);
  return { alpha };
}

/**
 * DeepSeek-V3 auxiliary-loss-free balancing (arXiv 2412.19437 §2.1.2): after each
 * step, b_i ← b_i + γ·sign(mean_j count_j − count_i) (γ = 1e-3; counts all-reduced
 * over DP by the caller). Overloaded experts move down, underloaded up. Returns a new
 * bias array (E).
 */
export function auxFreeBiasUpdate(bias: Float64Array, counts: ArrayLike<number>, gamma: number): Float64Array {
  const E = bias.length;
  if (counts.length !== E) fail("auxFreeBiasUpdate", `counts has ${counts.length} elements, expected ${E}`);
  let mean = 0;
  for (let i = 0; i < E; i++) mean += counts[i]!;
  mean /= E || 1;
  const out = new Float64Array(E);
  for (let i = 0; i < E; i++) out[i] = bias[i]! + gamma * Math.sign(mean - counts[i]!);
  return out;
}

export interface LoadStats {
  /** max load / mean load (1 = perfectly balanced) */
  maxOverMean: number;
  min: number;
  max: number;
  /** coefficient of variation: population std / mean */
  cv: number;
}

/** Load statistics of tokensPerExpert (E). No tokens at all (mean 0) → maxOverMean = cv = 0. */
export function loadStats(tokensPerExpert: ArrayLike<number>): LoadStats {
  const E = tokensPerExpert.length;
  if (E === 0) fail("loadStats", "tokensPerExpert is empty");
  let min = Infinity, max = -Infinity, sum = 0;
  for (let i = 0; i < E; i++) {
    const v = tokensPerExpert[i]!;
    min = Math.min(min, v);
    max = Math.max(max, v);
    sum += v;
  }
  const mean = sum / E;
  let v2 = 0;
  for (let i = 0; i < E; i++) v2 += (tokensPerExpert[i]! - mean) ** 2;
  const std = Math.sqrt(v2 / E);
  return { maxOverMean: mean > 0 ? max / mean : 0, min, max, cv: mean > 0 ? std / mean : 0 };
}
