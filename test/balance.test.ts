// Balancing tests: every loss equals its formula (computed separately here), its
// gradient matches finite differences through routerBackward to the logits, a zero
// coefficient leaves gradients exactly untouched; controllers follow their recurrences.
import { test } from "node:test";
import assert from "node:assert/strict";
import { routerBackward, routerForward, type RouterConfig } from "../src/moe/router.js";
import { sampleRouterNoise } from "../src/moe/noise.js";
import {
  adaptiveAlphaInit,
  adaptiveAlphaStep,
  auxFreeBiasUpdate,
  DEFAULT_ADAPTIVE_ALPHA,
  globalLoadBalancingLoss,
  loadStats,
  routerZLoss,
  skyworkAuxLoss,
  switchAuxLoss,
  type BalanceResult,
} from "../src/moe/balance.js";
import type { FArr } from "../src/backend/spec.js";
import { assertClose, assertExact, assertMoeError, numericGrad, randn } from "./util.js";

const FD_TOL = { rtol: 1e-6, atol: 1e-9 };
const close = (a: number, b: number, tol = 1e-14) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

// fixed inputs: 3 tokens, 4 experts, top-2
const P3 = new Float64Array([0.1, 0.2, 0.3, 0.4, 0.5, 0.25, 0.125, 0.125, 0.25, 0.25, 0.25, 0.25]);
const TOP3 = new Int32Array([3, 2, 0, 1, 0, 1]);

test("Skywork aux loss equals Σ_j (1/E − mean_t g_tj)²", () => {
  const P = [(0.1 + 0.5 + 0.25) / 3, (0.2 + 0.25 + 0.25) / 3, (0.3 + 0.125 + 0.25) / 3, (0.4 + 0.125 + 0.25) / 3];
  const L = P.reduce((a, p) => a + (0.25 - p) ** 2, 0);
  const r = skyworkAuxLoss(P3, 3, 4, 0.01, null);
  close(r.loss, L);
  close(r.weighted, 0.01 * L);
  // perfectly balanced → 0
  assert.equal(skyworkAuxLoss(new Float64Array(8).fill(0.25), 2, 4, 1, null).loss, 0);
});

test("Switch aux loss equals E·Σ f_i P_i with f_i = count_i/(K·N); = coef when balanced", () => {
  // counts: e0 2, e1 2, e2 1, e3 1 over K·N = 6
  const f = [2 / 6, 2 / 6, 1 / 6, 1 / 6];
  const P = [(0.1 + 0.5 + 0.25) / 3, (0.2 + 0.25 + 0.25) / 3, (0.3 + 0.125 + 0.25) / 3, (0.4 + 0.125 + 0.25) / 3];
  const L = 4 * f.reduce((a, fi, i) => a + fi * P[i]!, 0);
  close(switchAuxLoss(P3, TOP3, 3, 4, 2, 0.1, null).loss, L);
  close(switchAuxLoss(P3, TOP3, 3, 4, 2, 0.1, null).weighted, 0.1 * L);
  // explicit counts give the same value
  close(switchAuxLoss(P3, TOP3, 3, 4, 2, 0.1, null, [2, 2, 1, 1]).loss, L);
  // perfectly balanced: weighted = coef · 1
  const bal = switchAuxLoss(new Float64Array(16).fill(0.25), new Int32Array([0, 1, 2, 3]), 4, 4, 1, 0.01, null);
  close(bal.loss, 1);
  close(bal.weighted, 0.01);
  assertMoeError(() => switchAuxLoss(P3, new Int32Array([0, 1, 2, 3, 4, 0]), 3, 4, 2, 1, null), /out of range/);
});

test("GRIN global LB: f from global counts; equals Switch when the counts are local", () => {
  const g = [10, 30, 40, 20];
  const P = [(0.1 + 0.5 + 0.25) / 3, (0.2 + 0.25 + 0.25) / 3, (0.3 + 0.125 + 0.25) / 3, (0.4 + 0.125 + 0.25) / 3];
  const L = 4 * g.reduce((a, c, i) => a + (c / 100) * P[i]!, 0);
  close(globalLoadBalancingLoss(P3, 3, 4, 2, g, 100, 0.01, null).loss, L);
  const local = switchAuxLoss(P3, TOP3, 3, 4, 2, 0.01, null);
  close(globalLoadBalancingLoss(P3, 3, 4, 2, [2, 2, 1, 1], 6, 0.01, null).loss, local.loss);
});

test("z-loss equals mean_t (logsumexp_j z_tj)²", () => {
  const z = new Float64Array([1, 2, 3, -1, 0, 0.5]);
  const l0 = Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3));
  const l1 = Math.log(Math.exp(-1) + 1 + Math.exp(0.5));
  const r = routerZLoss(z, 2, 3, 1e-3, null);
  close(r.loss, (l0 * l0 + l1 * l1) / 2);
  close(r.weighted, 1e-3 * r.loss);
  // large logits stay finite
  close(routerZLoss(new Float64Array([1000, 1000]), 1, 2, 1, null).loss, (1000 + Math.log(2)) ** 2, 1e-15);
});

/** loss(z) = coef·L(probs(z)) via the router; analytic grad via the loss's dProbs + routerBackward. */
function gradThroughRouter(cfg: RouterConfig, N: number, E: number, z: Float64Array, lossFn: (probs: FArr, topExperts: Int32Array, dProbs: FArr | null) => BalanceResult, mode: "train" | "eval" = "eval", noise?: ReturnType<typeof sampleRouterNoise>): void {
  const K = cfg.topK;
  const r = routerForward(cfg, z, N, E, mode, noise);
  const dP = new Float64Array(N * E);
  lossFn(r.probs, r.topExperts, dP);
  const dz = new Float64Array(N * E);
  routerBackward(cfg, r, new Float64Array(N * K), dP, dz);
  const num = numericGrad(z, () => {
    const rr = routerForward(cfg, z, N, E, mode, noise);
    return lossFn(rr.probs, rr.topExperts, null).weighted;
  });
  assertClose(dz, num, FD_TOL, `${cfg.kind} grad`);
}

test("balancing-loss gradients match finite differences through routerBackward to the logits", () => {
  const N = 8, E = 6, K = 2;
  const z = randn(Float64Array, N * E, 61);
  const soft: RouterConfig = { kind: "softmax_topk", topK: K, normTopkProb: true, logitsNormStd: 1 };
  gradThroughRouter(soft, N, E, z, (p, _t, d) => skyworkAuxLoss(p, N, E, 0.3, d));
  gradThroughRouter(soft, N, E, z, (p, t, d) => switchAuxLoss(p, t, N, E, K, 0.7, d));
  const sm: RouterConfig = { kind: "sparsemixer", variant: "v2", topK: K, jitterEps: 0.01, scaleExpertGrad: false };
  const noise = sampleRouterNoise({ seed: 3, step: 0, layer: 0 }, N, K, E, "v2");
  gradThroughRouter(sm, N, E, z, (p, _t, d) => globalLoadBalancingLoss(p, N, E, K, [5, 1, 0, 9, 2, 3], 20, 0.5, d), "train", noise);
  // z-loss directly on the logits; accumulates
  const dz = new Float64Array(N * E).fill(1);
  routerZLoss(z, N, E, 0.2, dz);
  const num = numericGrad(z, () => routerZLoss(z, N, E, 0.2, null).weighted);
  assertClose(dz.map((v) => v - 1), num, FD_TOL, "z-loss grad (+=)");
});

test("zero coefficient → exactly zero gradient contribution (arrays untouched)", () => {
  const N = 3, E = 4, K = 2;
  const init = randn(Float64Array, N * E, 71);
  for (const fn of [
    (d: Float64Array) => skyworkAuxLoss(P3, N, E, 0, d),
    (d: Float64Array) => switchAuxLoss(P3, TOP3, N, E, K, 0, d),
    (d: Float64Array) => globalLoadBalancingLoss(P3, N, E, K, [1, 2, 3, 4], 10, 0, d),
    (d: Float64Array) => routerZLoss(P3, N, E, 0, d),
  ]) {
    const d = Float64Array.from(init);
    const r = fn(d);
    assertExact(d, init);
    assert.equal(r.weighted, 0);
    assert.ok(r.loss > 0);
  }
  // and a zero-gradient router backward from zero dWeights and the untouched-zero dProbs
  const cfg: RouterConfig = { kind: "softmax_topk", topK: K, normTopkProb: true };
  const rr = routerForward(cfg, init, N, E, "eval");
  const dP = new Float64Array(N * E);
  skyworkAuxLoss(rr.probs, N, E, 0, dP);
  switchAuxLoss(rr.probs, rr.topExperts, N, E, K, 0, dP);
  const dz = new Float64Array(N * E).fill(NaN);
  routerBackward(cfg, rr, new Float64Array(N * K), dP, dz);
  for (const v of dz) assert.ok(v === 0);
});

test("adaptive α: recurrence matches hand computation; 5%+ saturates at 0.01; 1% → 0.002", () => {
  const cfg = DEFAULT_ADAPTIVE_ALPHA;
  assert.deepEqual({ ...cfg }, { xi: 0.2, alphaMax: 0.01, beta: 0.99, alpha0: 0.01 });
  let s = adaptiveAlphaInit(cfg, 2);
  assertExact(s.alpha, [0.01, 0.01]);
  // layer 0 drop rates 0, 1%, 6%, 3%; layer 1 constant 10%
  const d0 = [0, 0.01, 0.06, 0.03];
  // hand: α1 = .99·.01 + .01·0 = .0099; α2 = .99·.0099 + .01·.002 = .009821;
  //       α3 = .99·.009821 + .01·.01 = .00982279; α4 = .99·.00982279 + .01·.006 = .0097845621
  const hand = [0.0099, 0.009821, 0.00982279, 0.0097845621];
  const before = s;
  for (let i = 0; i < 4; i++) {
    s = adaptiveAlphaStep(s, [d0[i]!, 0.1], cfg);
    close(s.alpha[0]!, hand[i]!, 1e-15);
    close(s.alpha[1]!, 0.01, 1e-15);
  }
  assertExact(before.alpha, [0.01, 0.01]); // pure: the old state is unchanged
  // from α0 = 0: constant 5% and 20% saturate at α_max; constant 1% converges to 0.002
  let t = adaptiveAlphaInit({ ...cfg, alpha0: 0 }, 3);
  let u = adaptiveAlphaInit(cfg, 1);
  for (let i = 0; i < 3000; i++) {
    t = adaptiveAlphaStep(t, [0.05, 0.2, 0.01], cfg);
    u = adaptiveAlphaStep(u, [0.01], cfg);
  }
  close(t.alpha[0]!, 0.01, 1e-9);
  close(t.alpha[1]!, 0.01, 1e-9);
  close(t.alpha[2]!, 0.002, 1e-9);
  close(u.alpha[0]!, 0.002, 1e-9);
  assert.throws(() => adaptiveAlphaStep(t, [0.1], cfg), /L = 3/);
});

test("aux-loss-free bias update and load statistics", () => {
  const b = new Float64Array([0, 0.5, -0.5, 0]);
  const nb = auxFreeBiasUpdate(b, [10, 2, 6, 6], 1e-3);
  assertClose(nb, [-1e-3, 0.501, -0.5, 0], { rtol: 1e-15, atol: 0 });
  assertExact(b, [0, 0.5, -0.5, 0]);
  const st = loadStats(new Int32Array([2, 4, 6, 0]));
  close(st.maxOverMean, 2);
  assert.equal(st.min, 0);
  assert.equal(st.max, 6);
  close(st.cv, Math.sqrt(5) / 3);
  assert.deepEqual(loadStats([0, 0]), { maxOverMean: 0, min: 0, max: 0, cv: 0 });
  assert.deepEqual(loadStats([3, 3, 3]), { maxOverMean: 1, min: 3, max: 3, cv: 0 });
});
