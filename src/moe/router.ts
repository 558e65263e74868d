// MoE routers: logits (N,E) → chosen experts (N,K), combine weights (N,K) and the
// probability matrix (N,E) the balancing losses use; and the exact backward.
//
// What it is: pure functions over typed arrays (Float32Array or Float64Array;
// arithmetic in f64, results stored in the caller's float type). Router math is
// O(N·E·K), plain loops. Dimension letters: see ./dims.ts.
// What it is not: the router linear layer (logits = x·Wᵀ is a GEMM done by the
// caller), dispatch/combine, or a place that keeps statistics (all are returned).
//
// Routers (spec: docs/moe-techniques.md §2, §4):
//  1. softmax_topk  — GShard/Mixtral/Qwen/OLMoE top-k softmax, optional
//                     renormalisation, optional Skywork logit normalisation.
//  2. sparsemixer   — GRIN SparseMixer-v2 (and v2*, v1 options), K repeated picks.
//  3. sigmoid_bias  — DeepSeek-V3 aux-loss-free: select on sigmoid(z)+b, weigh by sigmoid(z).
// Top-k ties always go to the lower expert index.
import type { FArr } from "../backend/spec.js";
import { allocLike, checkF, checkNEK, fail } from "./dims.js";

export type SparseMixerVariant = "v2" | "v2star" | "v1";

export type RouterConfig =
  | {
      kind: "softmax_topk";
      topK: number;
      /** renormalise the K selected probabilities to sum to 1 (Mixtral, Skywork, Qwen norm_topk_prob) */
      normTopkProb: boolean;
      /** Skywork λ (`moe_gate_norm_std`, 1 in Skywork-MoE); absent = no logit normalisation */
      logitsNormStd?: number;
    }
  | {
      kind: "sparsemixer";
      variant: SparseMixerVariant;
      /** picks per token (2 in GRIN); general K = K repeated picks */
      topK: number;
      /** router_jitter_noise ε (GRIN 0.01; see SPARSEMIXER[variant].defaultJitterEps) */
      jitterEps: number;
      /** true: expert/input gradients scaled by s as in the released code; false: paper Algorithm 1 (unscaled) */
      scaleExpertGrad: boolean;
    }
  | {
      kind: "sigmoid_bias";
      topK: number;
      /** renormalise the K selected sigmoid scores to sum to 1 (DeepSeek-V3 does) */
      normTopkProb: boolean;
    };

/**
 * Constants of the SparseMixer variants.
 *  - temperature τ: p = softmax(ẑ/τ); D sampled from it (Gumbel on ẑ/τ).
 *  - pOne: P(B = 1); B = 1 forces s = 1 (first-order step) even if D ≠ argmax.
 *  - sLow: the scale s when D ≠ argmax and B = 0.
 *  - routerGradScale c: dL/dz_j += c · g · w · (1[j=D] − p_j) / τ.
 *  - defaultJitterEps: ε when a config does not say.
 *
 * v2 (GRIN, microsoft/SparseMixer sparsemixer_v2.py): τ 1, P(B)=1/4, s ∈ {1, 1/3}
 *   (Heun's third-order rule ¼f′(w)+¾f′(w/3)), c = 1. The released code writes
 *   1/3 as 0.3333; we use exactly 1/3.
 * v1 (SparseMixer, sparsemixer.py: mid-point rule): τ 1, P(B)=1/2, s ∈ {1, 1/2},
 *   ε 0.1; the released backward multiplies the router gradient by 2 (c = 2).
 * v2star (spec §4 option): τ 2, P(B)=5/8, y = 2h + detach(s·h − 2h), i.e. the
 *   forward value is s·w but every gradient flows as through 2·w: c = 2 and
 *   gradWeights = 2w (scaleExpertGrad is ignored). The spec gives no low scale for
 *   v2*: we use the v2 value 1/3 [our choice].
 */
export const SPARSEMIXER: Record<SparseMixerVariant, { temperature: number; pOne: number; sLow: number; routerGradScale: number; defaultJitterEps: number }> = {
  v2: { temperature: 1, pOne: 1 / 4, sLow: 1 / 3, routerGradScale: 1, defaultJitterEps: 0.01 },
  v2star: { temperature: 2, pOne: 5 / 8, sLow: 1 / 3, routerGradScale: 2, defaultJitterEps: 0.01 },
  v1: { temperature: 1, pOne: 1 / 2, sLow: 1 / 2, routerGradScale: 2, defaultJitterEps: 0.1 },
};

/**
 * SparseMixer training noise (see ./noise.ts `sampleRouterNoise`).
 * gumbel (N,K,E): standard Gumbel for pick k of token n; bernoulli (N,K): B ∈ {0,1},
 * B = 1 → s = 1 even when the sampled D is not the argmax; B = 0 → s = sLow unless D is the argmax.
 */
export interface RouterNoise {
  gumbel: Float64Array;
  bernoulli: Uint8Array;
}

/** What routerBackward needs; everything f64. Treat as opaque. */
export interface RouterSaved {
  N: number;
  E: number;
  K: number;
  mode: "train" | "eval";
  /** (N,E) softmax of (normalised) logits | unmasked softmax of raw logits (sparsemixer) | sigmoid scores */
  p: Float64Array;
  /** (N,E) raw logits, kept when Skywork normalisation is on */
  z: Float64Array | null;
  /** (N) unbiased std of each token's logits (Skywork), else null */
  sigma: Float64Array | null;
  /** (N) Σ of the selected p (renormalising routers), else null */
  denom: Float64Array | null;
  /** (N,K,E) masked, tempered softmax of each SparseMixer pick, else null */
  pickP: Float64Array | null;
  /** (N,K) unscaled SparseMixer weight w = p_D of each pick, else null */
  pickW: Float64Array | null;
}

export interface RouteResult {
  /** (N,K) chosen experts; top-k routers in descending score order, SparseMixer in pick order */
  topExperts: Int32Array;
  /** (N,K) forward combine weights (SparseMixer: w·s) */
  weights: FArr;
  /**
   * (N,K) the weights the combine backward multiplies dy by to get the expert-output
   * gradient: = weights, except SparseMixer training where it is w (scaleExpertGrad
   * false, Algorithm 1) or w·s (true, released code); v2star: 2w.
   */
  gradWeights: FArr;
  /** (N,E) the probabilities balancing losses use (see RouterSaved.p) */
  probs: FArr;
  /** (N,K) SparseMixer scale s per pick (1 outside SparseMixer training); for metrics and tests */
  scales: Float64Array;
  saved: RouterSaved;
}

// ---------------------------------------------------------------------------
// helpers

/** Top-k of row[off .. off+E) into out[o .. o+K), descending, ties → lower index. */
function topkRow(v: Float64Array, off: number, E: number, K: number, out: Int32Array, o: number): void {
  let cnt = 0;
  for (let j = 0; j < E; j++) {
    const x = v[off + j]!;
    if (cnt === K && !(x > v[off + out[o + K - 1]!]!)) continue;
    let pos = cnt < K ? cnt : K - 1;
    while (pos > 0 && x > v[off + out[o + pos - 1]!]!) {
      out[o + pos] = out[o + pos - 1]!;
      pos--;
    }
    out[o + pos] = j;
    if (cnt < K) cnt++;
  }
}

/** p[off..off+E) = softmax(z[off..off+E)) in place-safe f64. */
function softmaxRow(z: ArrayLike<number>, zoff: number, p: Float64Array, poff: number, E: number): void {
  let m = -Infinity;
  for (let j = 0; j < E; j++) m = Math.max(m, z[zoff + j]!);
  let s = 0;
  for (let j = 0; j < E; j++) {
    const e = Math.exp(z[zoff + j]! - m);
    p[poff + j] = e;
    s += e;
  }
  for (let j = 0; j < E; j++) p[poff + j]! /= s;
}

function checkLogits(fn: string, logits: FArr): void {
  for (let i = 0; i < logits.length; i++) if (Number.isNaN(logits[i]!)) fail(fn, `logits[${i}] is NaN`);
}

// ---------------------------------------------------------------------------
// forward

/**
 * Routes N tokens over E experts.
 *
 * softmax_topk:   z̃ = λ·z/σ_unbiased(z) if logitsNormStd = λ is set (Skywork-MoE §4.1
 *                 eq. 6; the released code's form without mean subtraction — softmax
 *                 is shift-invariant, so probabilities *and* gradients equal eq. 6 with
 *                 μ subtracted exactly; a token whose logits are all equal (σ = 0) gets
 *                 z̃ = 0, i.e. uniform probabilities, and no gradient through σ),
 *                 else z̃ = z. g = softmax(z̃); top-K of g; weight g_j, or
 *                 g_j / Σ_selected g with normTopkProb (GShard, Mixtral).
 * sparsemixer:    K picks of GRIN SparseMixer-v2 (arXiv 2409.12136 §2, Algorithm 1):
 *                 pick k on z_avail (earlier picks at −∞): m = max z_avail;
 *                 masked_j = (m − z_j)/max(|z_j|, m) > 2ε; ẑ = z_avail with masked at −∞;
 *                 p = softmax(ẑ/τ); D = argmax(ẑ/τ + G) (train) or argmax ẑ (eval);
 *                 w = p_D; s = 1 if D = argmax p or B = 1, else sLow (train only; eval s = 1).
 *                 weights = w·s, no renormalisation; probs = softmax(z) unmasked.
 * sigmoid_bias:   s = σ(z); selection = top-K of s + bias; weight s_j or s_j/Σ_sel s
 *                 (DeepSeek-V3 arXiv 2412.19437 §2.1.2, aux-loss-free balancing).
 *
 * noise is required for sparsemixer in "train" mode; bias (E) only for sigmoid_bias (default 0).
 */
export function routerForward(cfg: RouterConfig, logits: FArr, N: number, E: number, mode: "train" | "eval", noise?: RouterNoise, bias?: FArr): RouteResult {
  const fn = "routerForward";
  const K = cfg.topK;
  checkNEK(fn, N, E, K);
  checkF(fn, "logits", logits, N * E);
  checkLogits(fn, logits);
  const topExperts = new Int32Array(N * K);
  const weights = allocLike(logits, N * K);
  const gradWeights = allocLike(logits, N * K);
  const probs = allocLike(logits, N * E);
  const scales = new Float64Array(N * K).fill(1);
  const p = new Float64Array(N * E);
  const saved: RouterSaved = { N, E, K, mode, p, z: null, sigma: null, denom: null, pickP: null, pickW: null };

  if (cfg.kind === "softmax_topk") {
    const lam = cfg.logitsNormStd;
    const zt = new Float64Array(E);
    if (lam !== undefined) {
      if (!(E >= 2)) fail(fn, "Skywork logit normalisation needs E ≥ 2 (unbiased std)");
      saved.z = Float64Array.from(logits);
      saved.sigma = new Float64Array(N);
    }
    for (let n = 0; n < N; n++) {
      const off = n * E;
      if (lam !== undefined) {
        let mu = 0;
        for (let j = 0; j < E; j++) mu += logits[off + j]!;
        mu /= E;
        let ss = 0;
        for (let j = 0; j < E; j++) ss += (logits[off + j]! - mu) ** 2;
        const sigma = Math.sqrt(ss / (E - 1));
        saved.sigma![n] = sigma;
        for (let j = 0; j < E; j++) zt[j] = sigma > 0 ? (lam * logits[off + j]!) / sigma : 0;
        softmaxRow(zt, 0, p, off, E);
      } else softmaxRow(logits, off, p, off, E);
    }
    selectAndWeigh(p, p, N, E, K, cfg.normTopkProb, topExperts, weights, saved);
  } else if (cfg.kind === "sigmoid_bias") {
    if (bias !== undefined && bias.length !== E) fail(fn, `bias must have length E = ${E}, got ${bias.length}`);
    const sel = new Float64Array(N * E);
    for (let i = 0; i < N * E; i++) {
      const s = 1 / (1 + Math.exp(-logits[i]!));
      p[i] = s;
      sel[i] = s + (bias ? bias[i % E]! : 0);
    }
    selectAndWeigh(p, sel, N, E, K, cfg.normTopkProb, topExperts, weights, saved);
  } else {
    sparseMixerForward(cfg, logits, N, E, mode, noise, topExperts, weights, gradWeights, scales, saved);
    for (let n = 0; n < N; n++) softmaxRow(logits, n * E, p, n * E, E);
  }
  if (cfg.kind !== "sparsemixer") gradWeights.set(weights);
  probs.set(p);
  return { topExperts, weights, gradWeights, probs, scales, saved };
}

function selectAndWeigh(p: Float64Array, sel: Float64Array, N: number, E: number, K: number, renorm: boolean, topExperts: Int32Array, weights: FArr, saved: RouterSaved): void {
  if (renorm) saved.denom = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    topkRow(sel, n * E, E, K, topExperts, n * K);
    let s = 0;
    for (let k = 0; k < K; k++) s += p[n * E + topExperts[n * K + k]!]!;
    if (renorm) saved.denom![n] = s;
    for (let k = 0; k < K; k++) {
      const v = p[n * E + topExperts[n * K + k]!]!;
      weights[n * K + k] = renorm ? v / s : v;
    }
  }
}

function sparseMixerForward(
  cfg: Extract<RouterConfig, { kind: "sparsemixer" }>,
  logits: FArr,
  N: number,
  E: number,
  mode: "train" | "eval",
  noise: RouterNoise | undefined,
  topExperts: Int32Array,
  weights: FArr,
  gradWeights: FArr,
  scales: Float64Array,
  saved: RouterSaved,
): void {
  const fn = "routerForward(sparsemixer)";
  const K = cfg.topK;
  const c = SPARSEMIXER[cfg.variant];
  const tau = c.temperature;
  const eps2 = 2 * cfg.jitterEps;
  const train = mode === "train";
  if (train) {
    if (!noise) fail(fn, "training mode needs noise (sampleRouterNoise)");
    if (!(noise.gumbel instanceof Float64Array) || noise.gumbel.length !== N * K * E) fail(fn, `noise.gumbel must be a Float64Array of N·K·E = ${N * K * E}`);
    if (!(noise.bernoulli instanceof Uint8Array) || noise.bernoulli.length !== N * K) fail(fn, `noise.bernoulli must be a Uint8Array of N·K = ${N * K}`);
  }
  const pickP = new Float64Array(N * K * E);
  const pickW = new Float64Array(N * K);
  saved.pickP = pickP;
  saved.pickW = pickW;
  const chosen = new Uint8Array(E);
  const zh = new Float64Array(E);
  for (let n = 0; n < N; n++) {
    const off = n * E;
    chosen.fill(0);
    for (let k = 0; k < K; k++) {
      const nk = n * K + k;
      // 1. m and its index over the available experts (ties → lower index)
      let m = -Infinity, jmax = -1;
      for (let j = 0; j < E; j++) {
        if (chosen[j]) continue;
        const z = logits[off + j]!;
        if (jmax < 0 || z > m) {
          m = z;
          jmax = j;
        }
      }
      // 2. mask: (m − z_j) / max(|z_j|, m) > 2ε (NaN from 0/0 → not masked, as in torch)
      for (let j = 0; j < E; j++) {
        const z = logits[off + j]!;
        const masked = chosen[j] === 1 || (m - z) / Math.max(Math.abs(z), m) > eps2;
        zh[j] = masked ? -Infinity : z / tau;
      }
      // 3. p = softmax(ẑ/τ)
      const po = nk * E;
      softmaxRow(zh, 0, pickP, po, E);
      // 4. D: Gumbel-max sample (train) or argmax (eval)
      let D = jmax;
      if (train) {
        let best = -Infinity;
        D = -1;
        for (let j = 0; j < E; j++) {
          if (zh[j] === -Infinity) continue;
          const v = zh[j]! + noise!.gumbel[po + j]!;
          if (D < 0 || v > best) {
            best = v;
            D = j;
          }
        }
      }
      const w = pickP[po + D]!;
      const s = train && !(D === jmax || noise!.bernoulli[nk] === 1) ? c.sLow : 1;
      chosen[D] = 1;
      topExperts[nk] = D;
      pickW[nk] = w;
      scales[nk] = s;
      weights[nk] = w * s;
      if (!train) gradWeights[nk] = w;
      else if (cfg.variant === "v2star") gradWeights[nk] = 2 * w;
      else gradWeights[nk] = cfg.scaleExpertGrad ? w * s : w;
    }
  }
}

// ---------------------------------------------------------------------------
// backward

/**
 * dLogits (N,E) = dL/dz, overwritten, from dWeights (N,K) = dL/d(weights) (the
 * forward combine weights) and optional dProbs (N,E) = dL/d(probs) from balancing
 * losses. Add z-loss gradients afterwards (routerZLoss accumulates).
 *
 * softmax_topk: dg_j = [j selected]·(renorm ? (dW_j − Σ_k dW_k w_k)/Σ_sel g : dW_j) + dProbs_j;
 *   dz̃ = g ⊙ (dg − ⟨g, dg⟩); with Skywork z̃ = λz/σ:
 *   dz_k = (λ/σ)·[dz̃_k − (Σ_j dz̃_j z_j)·(z_k − μ)/((E−1)σ²)].
 * sigmoid_bias: ds as above (the bias gets no gradient); dz = ds ⊙ s(1−s).
 * sparsemixer: dz_j = Σ_k c·g_k·w_k·(1[j=D_k] − p_kj)/τ  (g_k = dWeights, not multiplied
 *   by s; zero on masked and already chosen experts since p_kj = 0 there) plus the
 *   softmax backward of dProbs through the unmasked softmax.
 */
export function routerBackward(cfg: RouterConfig, r: RouteResult, dWeights: FArr, dProbs: FArr | null, dLogits: FArr): void {
  const fn = "routerBackward";
  const { N, E, K, p } = r.saved;
  checkF(fn, "dWeights", dWeights, N * K);
  if (dProbs !== null) checkF(fn, "dProbs", dProbs, N * E);
  checkF(fn, "dLogits", dLogits, N * E);
  const dp = new Float64Array(E);
  const dzt = new Float64Array(E);
  for (let n = 0; n < N; n++) {
    const off = n * E;
    for (let j = 0; j < E; j++) dp[j] = dProbs ? dProbs[off + j]! : 0;
    if (cfg.kind === "sparsemixer") {
      // softmax backward of the balancing-loss gradient
      let dot = 0;
      for (let j = 0; j < E; j++) dot += p[off + j]! * dp[j]!;
      for (let j = 0; j < E; j++) dzt[j] = p[off + j]! * (dp[j]! - dot);
      const c = SPARSEMIXER[cfg.variant];
      const pickP = r.saved.pickP!, pickW = r.saved.pickW!;
      for (let k = 0; k < K; k++) {
        const nk = n * K + k;
        const a = (c.routerGradScale * dWeights[nk]! * pickW[nk]!) / c.temperature;
        if (a === 0) continue;
        const po = nk * E;
        for (let j = 0; j < E; j++) dzt[j] = dzt[j]! - a * pickP[po + j]!;
        dzt[r.topExperts[nk]!] = dzt[r.topExperts[nk]!]! + a;
      }
      for (let j = 0; j < E; j++) dLogits[off + j] = dzt[j]!;
      continue;
    }
    // weights → selected scores
    if (cfg.normTopkProb) {
      const S = r.saved.denom![n]!;
      let dw = 0;
      for (let k = 0; k < K; k++) dw += (dWeights[n * K + k]! * p[off + r.topExperts[n * K + k]!]!) / S;
      for (let k = 0; k < K; k++) {
        const j = r.topExperts[n * K + k]!;
        dp[j] = dp[j]! + (dWeights[n * K + k]! - dw) / S;
      }
    } else {
      for (let k = 0; k < K; k++) {
        const j = r.topExperts[n * K + k]!;
        dp[j] = dp[j]! + dWeights[n * K + k]!;
      }
    }
    if (cfg.kind === "sigmoid_bias") {
      for (let j = 0; j < E; j++) {
        const s = p[off + j]!;
        dLogits[off + j] = dp[j]! * s * (1 - s);
      }
      continue;
    }
    // softmax backward
    let dot = 0;
    for (let j = 0; j < E; j++) dot += p[off + j]! * dp[j]!;
    for (let j = 0; j < E; j++) dzt[j] = p[off + j]! * (dp[j]! - dot);
    const lam = cfg.logitsNormStd;
    if (lam === undefined) {
      for (let j = 0; j < E; j++) dLogits[off + j] = dzt[j]!;
      continue;
    }
    const z = r.saved.z!, sigma = r.saved.sigma![n]!;
    if (!(sigma > 0)) {
      for (let j = 0; j < E; j++) dLogits[off + j] = 0;
      continue;
    }
    let mu = 0, a = 0;
    for (let j = 0; j < E; j++) {
      mu += z[off + j]!;
      a += dzt[j]! * z[off + j]!;
    }
    mu /= E;
    const f = lam / sigma, g = a / ((E - 1) * sigma * sigma);
    for (let j = 0; j < E; j++) dLogits[off + j] = f * (dzt[j]! - g * (z[off + j]! - mu));
  }
}

/** Mean router entropy H = (1/N) Σ_t −Σ_j p_tj ln p_tj (nats; 0·ln 0 = 0). N = 0 → 0. */
export function routerEntropy(probs: FArr, N: number, E: number): number {
  checkF("routerEntropy", "probs", probs, N * E);
  if (N === 0) return 0;
  let h = 0;
  for (let i = 0; i < N * E; i++) {
    const v = probs[i]!;
    if (v > 0) h -= v * Math.log(v);
  }
  return h / N;
}
