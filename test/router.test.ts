// Router tests: finite differences of routerBackward (softmax top-k with/without
// renormalisation and Skywork λ, sigmoid+bias), SparseMixer forward/backward against
// an independent re-derivation in this file, its sampling statistics, hand-set
// logits and ties, and the counter-based noise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { routerBackward, routerEntropy, routerForward, SPARSEMIXER, type RouterConfig, type SparseMixerVariant } from "../src/moe/router.js";
import { inputJitter, inputJitterBackward, sampleRouterNoise, uniformAt } from "../src/moe/noise.js";
import { assertClose, assertExact, assertMoeError, dot, numericGrad, randn } from "./util.js";

const FD_TOL = { rtol: 1e-6, atol: 1e-8 };

/** Random logits whose selection scores (sel(z)) have a gap ≥ 1e-3 between ranks K and K+1 on every row. */
function logitsAwayFromTies(N: number, E: number, K: number, seed: number, sel: (z: Float64Array, n: number) => number[] = (z, n) => Array.from(z.subarray(n * E, n * E + E))): Float64Array {
  for (let s = seed; ; s++) {
    const z = randn(Float64Array, N * E, s);
    let ok = true;
    for (let n = 0; n < N && ok; n++) {
      const v = sel(z, n).sort((a, b) => b - a);
      for (let i = 0; i + 1 < E; i++) if (v[i]! - v[i + 1]! < 1e-3) ok = false;
    }
    if (ok) return z;
  }
}

function fdCheck(cfg: RouterConfig, N: number, E: number, z: Float64Array, bias?: Float64Array): void {
  const K = cfg.topK;
  const dW = randn(Float64Array, N * K, 11);
  const dP = randn(Float64Array, N * E, 12);
  const loss = () => {
    const r = routerForward(cfg, z, N, E, "train", undefined, bias);
    return dot(r.weights, dW) + dot(r.probs, dP);
  };
  const r = routerForward(cfg, z, N, E, "train", undefined, bias);
  const dz = new Float64Array(N * E).fill(NaN); // overwritten
  routerBackward(cfg, r, dW, dP, dz);
  assertClose(dz, numericGrad(z, loss), FD_TOL, `${JSON.stringify(cfg)} dLogits`);
  // dProbs = null is the same as zeros
  const dz2 = new Float64Array(N * E);
  routerBackward(cfg, r, dW, null, dz2);
  const dz3 = new Float64Array(N * E);
  routerBackward(cfg, r, dW, new Float64Array(N * E), dz3);
  assertClose(dz2, dz3, { rtol: 0, atol: 1e-15 }, "null dProbs");
}

test("softmax_topk backward matches finite differences (renorm on/off, Skywork λ on/off, K=1..3)", () => {
  const N = 6, E = 7;
  for (const K of [1, 2, 3]) {
    const z = logitsAwayFromTies(N, E, K, 100 + K);
    for (const normTopkProb of [false, true]) {
      fdCheck({ kind: "softmax_topk", topK: K, normTopkProb }, N, E, z);
      fdCheck({ kind: "softmax_topk", topK: K, normTopkProb, logitsNormStd: 1 }, N, E, z);
      fdCheck({ kind: "softmax_topk", topK: K, normTopkProb, logitsNormStd: 2.5 }, N, E, z);
    }
  }
});

test("sigmoid_bias backward matches finite differences; bias only changes selection", () => {
  const N = 6, E = 8, K = 2;
  const bias = randn(Float64Array, E, 5, 0.5);
  const sel = (z: Float64Array, n: number) => Array.from({ length: E }, (_, j) => 1 / (1 + Math.exp(-z[n * E + j]!)) + bias[j]!);
  const z = logitsAwayFromTies(N, E, K, 300, sel);
  for (const normTopkProb of [false, true]) fdCheck({ kind: "sigmoid_bias", topK: K, normTopkProb }, N, E, z, bias);
  // weights use the unbiased scores
  const r = routerForward({ kind: "sigmoid_bias", topK: K, normTopkProb: false }, z, N, E, "train", undefined, bias);
  for (let n = 0; n < N; n++)
    for (let k = 0; k < K; k++) {
      const j = r.topExperts[n * K + k]!;
      assert.ok(Math.abs(r.weights[n * K + k]! - 1 / (1 + Math.exp(-z[n * E + j]!))) < 1e-15);
    }
});

test("Skywork normalisation equals eq. 6 with mean subtraction and unbiased std", () => {
  const N = 4, E = 6, lam = 1.7;
  const z = randn(Float64Array, N * E, 7, 3);
  const r = routerForward({ kind: "softmax_topk", topK: 2, normTopkProb: true, logitsNormStd: lam }, z, N, E, "eval");
  for (let n = 0; n < N; n++) {
    const row = Array.from(z.subarray(n * E, n * E + E));
    const mu = row.reduce((a, b) => a + b, 0) / E;
    const sd = Math.sqrt(row.reduce((a, b) => a + (b - mu) ** 2, 0) / (E - 1));
    const zt = row.map((v) => (lam * (v - mu)) / sd);
    const den = zt.reduce((a, v) => a + Math.exp(v), 0);
    assertClose(r.probs.subarray(n * E, n * E + E), zt.map((v) => Math.exp(v) / den), { rtol: 1e-12, atol: 1e-15 }, "skywork probs");
  }
  // all-equal logits: uniform probabilities, zero gradient, no NaN
  const flat = new Float64Array(E).fill(0.3);
  const rf = routerForward({ kind: "softmax_topk", topK: 2, normTopkProb: false, logitsNormStd: 1 }, flat, 1, E, "eval");
  assertClose(rf.probs, new Float64Array(E).fill(1 / E), { rtol: 1e-14, atol: 0 }, "uniform");
  assertExact(rf.topExperts, [0, 1], "ties → lower index");
  const d = new Float64Array(E);
  routerBackward({ kind: "softmax_topk", topK: 2, normTopkProb: false, logitsNormStd: 1 }, rf, new Float64Array([1, 2]), null, d);
  assertExact(d, new Float64Array(E), "zero grad at σ = 0");
});

test("hand-set logits pick known experts; ties pick the lower index", () => {
  const z = new Float64Array([0, 3, 1, 3, 2, /* row 2 */ 5, 5, 5, 5, 5]);
  const r2 = routerForward({ kind: "softmax_topk", topK: 2, normTopkProb: true }, z, 2, 5, "eval");
  assertExact(r2.topExperts, [1, 3, 0, 1]);
  assertClose(r2.weights, [0.5, 0.5, 0.5, 0.5], { rtol: 1e-15, atol: 0 });
  const r3 = routerForward({ kind: "softmax_topk", topK: 3, normTopkProb: false }, z, 2, 5, "eval");
  assertExact(r3.topExperts, [1, 3, 4, 0, 1, 2]);
  const e = [0, 3, 1, 3, 2].map(Math.exp), s = e.reduce((a, b) => a + b);
  assertClose(r3.weights.subarray(0, 3), [e[1]! / s, e[3]! / s, e[4]! / s], { rtol: 1e-14, atol: 0 });
  // f32 in → f32 out, same choice
  const r32 = routerForward({ kind: "softmax_topk", topK: 3, normTopkProb: false }, Float32Array.from(z), 2, 5, "eval");
  assert.ok(r32.weights instanceof Float32Array && r32.probs instanceof Float32Array);
  assertExact(r32.topExperts, [1, 3, 4, 0, 1, 2]);
  // sigmoid_bias: the bias moves the selection to expert 0, the weight stays σ(z_0)
  const zs = new Float64Array([0, 1, 2]);
  const rb = routerForward({ kind: "sigmoid_bias", topK: 1, normTopkProb: false }, zs, 1, 3, "eval", undefined, new Float64Array([1, 0, 0]));
  assertExact(rb.topExperts, [0]);
  assert.equal(rb.weights[0], 0.5);
  // SparseMixer eval on ties: lower index first, then the next lower index
  const rs = routerForward({ kind: "sparsemixer", variant: "v2", topK: 2, jitterEps: 0.01, scaleExpertGrad: false }, new Float64Array([1, 2, 2, 2]), 1, 4, "eval");
  assertExact(rs.topExperts, [1, 2]);
});

// --- SparseMixer: an independent re-derivation of one pick (spec §4 pseudo-code) ---
interface RefPick { D: number; p: number[]; masked: boolean[]; jmax: number }
function refPick(z: number[], chosen: Set<number>, eps: number, tau: number, gumbel: number[] | null): RefPick {
  const avail = z.map((v, j) => (chosen.has(j) ? -Infinity : v));
  const m = Math.max(...avail);
  const jmax = avail.indexOf(m);
  const masked = z.map((v, j) => chosen.has(j) || (m - v) / Math.max(Math.abs(v), m) > 2 * eps);
  const zh = avail.map((v, j) => (masked[j] ? -Infinity : v / tau));
  const mx = Math.max(...zh);
  const ex = zh.map((v) => Math.exp(v - mx));
  const S = ex.reduce((a, b) => a + b, 0);
  const p = ex.map((v) => v / S);
  let D = jmax;
  if (gumbel) {
    const y = zh.map((v, j) => v + gumbel[j]!);
    D = y.indexOf(Math.max(...y));
  }
  return { D, p, masked, jmax };
}

test("SparseMixer-v2 training: choice, weights and router gradient equal g·w·(1[j=D]−p_j) on fixed noise", () => {
  const N = 40, E = 6, K = 2, eps = 0.05;
  const z = randn(Float64Array, N * E, 21, 0.3);
  for (let i = 0; i < z.length; i++) z[i] = z[i]! + 2; // positive logits near each other → partial masks
  const noise = sampleRouterNoise({ seed: 9, step: 3, layer: 1 }, N, K, E, "v2");
  for (const scaleExpertGrad of [false, true]) {
    const cfg: RouterConfig = { kind: "sparsemixer", variant: "v2", topK: K, jitterEps: eps, scaleExpertGrad };
    const r = routerForward(cfg, z, N, E, "train", noise);
    const g = randn(Float64Array, N * K, 22);
    const dz = new Float64Array(N * E).fill(NaN);
    routerBackward(cfg, r, g, null, dz);
    let sawMasked = 0, sawLow = 0;
    for (let n = 0; n < N; n++) {
      const row = Array.from(z.subarray(n * E, n * E + E));
      const chosen = new Set<number>();
      const expect = new Array<number>(E).fill(0);
      const everActive = new Array<boolean>(E).fill(false);
      for (let k = 0; k < K; k++) {
        const nk = n * K + k;
        const pk = refPick(row, chosen, eps, 1, Array.from(noise.gumbel.subarray(nk * E, nk * E + E)));
        assert.equal(r.topExperts[nk], pk.D, `D n=${n} k=${k}`);
        const w = pk.p[pk.D]!;
        const s = pk.D === pk.jmax || noise.bernoulli[nk] === 1 ? 1 : 1 / 3;
        if (s !== 1) sawLow++;
        assert.ok(Math.abs(r.weights[nk]! - w * s) < 1e-14);
        assert.ok(Math.abs(r.gradWeights[nk]! - (scaleExpertGrad ? w * s : w)) < 1e-14);
        for (let j = 0; j < E; j++) {
          expect[j] = expect[j]! + g[nk]! * w * ((j === pk.D ? 1 : 0) - pk.p[j]!);
          if (!pk.masked[j]) everActive[j] = true;
        }
        chosen.add(pk.D);
      }
      assertClose(dz.subarray(n * E, n * E + E), expect, { rtol: 1e-12, atol: 1e-15 }, `dz row ${n}`);
      for (let j = 0; j < E; j++)
        if (!everActive[j]) {
          sawMasked++;
          assert.equal(dz[n * E + j], 0, "masked in every pick → exactly zero gradient");
        }
    }
    assert.ok(sawMasked > 0 && sawLow > 0, "the case exercises masks and the 1/3 scale");
  }
});

test("SparseMixer probs are the plain unmasked softmax; dProbs flows through it", () => {
  const N = 5, E = 5, K = 2;
  const z = randn(Float64Array, N * E, 31);
  const cfg: RouterConfig = { kind: "sparsemixer", variant: "v2", topK: K, jitterEps: 0.01, scaleExpertGrad: false };
  const noise = sampleRouterNoise({ seed: 1, step: 0, layer: 0 }, N, K, E, "v2");
  const dP = randn(Float64Array, N * E, 32);
  const loss = () => dot(routerForward(cfg, z, N, E, "train", noise).probs, dP);
  const r = routerForward(cfg, z, N, E, "train", noise);
  const dz = new Float64Array(N * E);
  routerBackward(cfg, r, new Float64Array(N * K), dP, dz);
  assertClose(dz, numericGrad(z, loss), FD_TOL, "probs grad");
});

test("SparseMixer eval: weights are the two masked-softmax probabilities, not renormalised", () => {
  const z = new Float64Array([1.0, 0.995, 0.99, 0.5]);
  const r = routerForward({ kind: "sparsemixer", variant: "v2", topK: 2, jitterEps: 0.01, scaleExpertGrad: false }, z, 1, 4, "eval");
  assertExact(r.topExperts, [0, 1]);
  // pick 1 keeps {0,1,2} ((1−0.5)/1 > 0.02 masks expert 3); pick 2 keeps {1,2}
  const w1 = Math.exp(1) / (Math.exp(1) + Math.exp(0.995) + Math.exp(0.99));
  const w2 = Math.exp(0.995) / (Math.exp(0.995) + Math.exp(0.99));
  assertClose(r.weights, [w1, w2], { rtol: 1e-14, atol: 0 });
  assertClose(r.gradWeights, [w1, w2], { rtol: 1e-14, atol: 0 });
  assert.ok(w1 + w2 < 0.9);
});

test("SparseMixer needs noise in training and validates it", () => {
  const cfg: RouterConfig = { kind: "sparsemixer", variant: "v2", topK: 2, jitterEps: 0.01, scaleExpertGrad: false };
  assertMoeError(() => routerForward(cfg, new Float64Array(8), 2, 4, "train"), /noise/);
  assertMoeError(() => routerForward(cfg, new Float64Array(8), 2, 4, "train", { gumbel: new Float64Array(3), bernoulli: new Uint8Array(4) }), /gumbel/);
  assertMoeError(() => routerForward({ kind: "softmax_topk", topK: 5, normTopkProb: false }, new Float64Array(8), 2, 4, "eval"), /K = 5/);
  assertMoeError(() => routerForward({ kind: "softmax_topk", topK: 1, normTopkProb: false }, new Float64Array(7), 2, 4, "eval"), /logits/);
  assertMoeError(() => routerForward({ kind: "softmax_topk", topK: 1, normTopkProb: false }, new Float64Array([0, NaN, 0, 0]), 1, 4, "eval"), /NaN/);
});

test("SparseMixer sampling statistics over 40k draws: P(D=j) = p_j and P(s=1) = P(argmax) + P(B)(1 − P(argmax)) within 4σ", () => {
  const E = 4, N = 40000, eps = 0.1;
  const row = [2.0, 1.8, 1.7, 0.5]; // ratios 0.1, 0.15 ≤ 0.2 kept, 0.75 masked
  const z = new Float64Array(N * E);
  for (let n = 0; n < N; n++) z.set(row, n * E);
  const variants: SparseMixerVariant[] = ["v2", "v2star", "v1"];
  for (const variant of variants) {
    const c = SPARSEMIXER[variant];
    const cfg: RouterConfig = { kind: "sparsemixer", variant, topK: 1, jitterEps: eps, scaleExpertGrad: true };
    const noise = sampleRouterNoise({ seed: 77, step: 5, layer: 2 }, N, 1, E, variant);
    const r = routerForward(cfg, z, N, E, "train", noise);
    const ref = refPick(row, new Set(), eps, c.temperature, null);
    assert.deepEqual(ref.masked, [false, false, false, true]);
    const counts = [0, 0, 0, 0];
    let ones = 0;
    for (let n = 0; n < N; n++) {
      counts[r.topExperts[n]!]!++;
      const s = r.scales[n]!;
      assert.ok(s === 1 || s === c.sLow);
      if (s === 1) ones++;
      assert.ok(Math.abs(r.weights[n]! - ref.p[r.topExperts[n]!]! * s) < 1e-14);
    }
    const within4 = (hits: number, q: number, what: string) => {
      const sd = Math.sqrt((q * (1 - q)) / N);
      assert.ok(Math.abs(hits / N - q) <= 4 * sd, `${variant} ${what}: ${hits / N} vs ${q} (σ ${sd})`);
    };
    for (let j = 0; j < E; j++) within4(counts[j]!, ref.p[j]!, `P(D=${j})`);
    const pm = ref.p[0]!;
    within4(ones, pm + c.pOne * (1 - pm), "P(s=1)");
  }
});

test("v2star: gradient flows as through 2w; v1: router gradient ×2, scales 1 or 1/2", () => {
  const N = 30, E = 5, eps = 0.1;
  const z = randn(Float64Array, N * E, 41, 0.2);
  for (let i = 0; i < z.length; i++) z[i] = z[i]! + 1.5;
  for (const variant of ["v2star", "v1"] as const) {
    const c = SPARSEMIXER[variant];
    const cfg: RouterConfig = { kind: "sparsemixer", variant, topK: 2, jitterEps: eps, scaleExpertGrad: false };
    const noise = sampleRouterNoise({ seed: 4, step: 0, layer: 0 }, N, 2, E, variant);
    const r = routerForward(cfg, z, N, E, "train", noise);
    const g = randn(Float64Array, N * 2, 42);
    const dz = new Float64Array(N * E);
    routerBackward(cfg, r, g, null, dz);
    for (let n = 0; n < N; n++) {
      const row = Array.from(z.subarray(n * E, n * E + E));
      const chosen = new Set<number>();
      const expect = new Array<number>(E).fill(0);
      for (let k = 0; k < 2; k++) {
        const nk = n * 2 + k;
        const pk = refPick(row, chosen, eps, c.temperature, Array.from(noise.gumbel.subarray(nk * E, nk * E + E)));
        assert.equal(r.topExperts[nk], pk.D);
        const w = pk.p[pk.D]!;
        const s = pk.D === pk.jmax || noise.bernoulli[nk] === 1 ? 1 : variant === "v1" ? 0.5 : 1 / 3;
        assert.ok(Math.abs(r.weights[nk]! - w * s) < 1e-14);
        assert.ok(Math.abs(r.gradWeights[nk]! - (variant === "v2star" ? 2 * w : w)) < 1e-14);
        // v2star: d(2w)/dz with p = softmax(ẑ/2) → 2·g·w(1[j=D]−p_j)/2; v1: 2·g·w(1[j=D]−p_j)
        for (let j = 0; j < E; j++) expect[j] = expect[j]! + (2 / c.temperature) * g[nk]! * w * ((j === pk.D ? 1 : 0) - pk.p[j]!);
        chosen.add(pk.D);
      }
      assertClose(dz.subarray(n * E, n * E + E), expect, { rtol: 1e-12, atol: 1e-15 }, `${variant} dz row ${n}`);
    }
  }
});

test("routerEntropy", () => {
  const p = new Float64Array([0.25, 0.25, 0.25, 0.25, 1, 0, 0, 0]);
  assert.ok(Math.abs(routerEntropy(p, 2, 4) - Math.log(4) / 2) < 1e-15);
  assert.equal(routerEntropy(new Float64Array(0), 0, 4), 0);
});

test("noise: reproducible, keyed, shard-independent, right distributions", () => {
  const key = { seed: 123, step: 7, layer: 3 };
  const a = sampleRouterNoise(key, 10, 2, 4, "v2");
  const b = sampleRouterNoise(key, 10, 2, 4, "v2");
  assertExact(a.gumbel, b.gumbel);
  assertExact(a.bernoulli, b.bernoulli);
  const c = sampleRouterNoise({ ...key, step: 8 }, 10, 2, 4, "v2");
  assert.notDeepEqual(Array.from(a.gumbel), Array.from(c.gumbel));
  // a micro-batch split in two shards with token offsets gives the same noise
  const s0 = sampleRouterNoise(key, 4, 2, 4, "v2", 0), s1 = sampleRouterNoise(key, 6, 2, 4, "v2", 4);
  assertExact(a.gumbel, [...s0.gumbel, ...s1.gumbel]);
  assertExact(a.bernoulli, [...s0.bernoulli, ...s1.bernoulli]);
  // moments: uniform mean 1/2, var 1/12; Gumbel mean γ ≈ 0.5772, var π²/6
  const M = 50000;
  let su = 0, su2 = 0;
  for (let i = 0; i < M; i++) {
    const u = uniformAt(key, 9, i);
    assert.ok(u > 0 && u < 1);
    su += u;
    su2 += u * u;
  }
  assert.ok(Math.abs(su / M - 0.5) < 4 * Math.sqrt(1 / 12 / M));
  assert.ok(Math.abs(su2 / M - (su / M) ** 2 - 1 / 12) < 2e-3);
  const big = sampleRouterNoise(key, M, 1, 1, "v2");
  let sg = 0;
  for (const v of big.gumbel) sg += v;
  assert.ok(Math.abs(sg / M - 0.5772156649) < 4 * Math.sqrt(Math.PI ** 2 / 6 / M));
  let nb = 0;
  for (const v of big.bernoulli) nb += v;
  assert.ok(Math.abs(nb / M - 0.25) < 4 * Math.sqrt((0.25 * 0.75) / M));
});

test("inputJitter multiplies by U(1−ε, 1+ε) and returns the multipliers; backward reuses them", () => {
  const key = { seed: 5, step: 1, layer: 0 };
  const x0 = randn(Float32Array, 1000, 51);
  const x = Float32Array.from(x0);
  const u = inputJitter(x, 0.01, key);
  for (let i = 0; i < x.length; i++) {
    assert.ok(u[i]! >= 0.99 && u[i]! <= 1.01);
    assert.equal(x[i], Math.fround(x0[i]! * u[i]!));
  }
  const dx = new Float64Array(1000).fill(2);
  inputJitterBackward(dx, u);
  assertClose(dx, Array.from(u, (v) => 2 * v), { rtol: 0, atol: 0 });
  const y = Float32Array.from(x0);
  assertExact(inputJitter(y, 0, key), new Float64Array(1000).fill(1));
  assertExact(y, x0);
});
