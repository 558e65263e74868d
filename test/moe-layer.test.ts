// MoE layer invariants on moeForward/moeBackward directly, on the ref backend in f64 and on
// every native backend in f32 (compared with ref): E=1 equals the dense SwiGLU FFN; the
// dropless grouped path equals a naive HF-Mixtral-style per-expert loop (forward, and every
// gradient against finite differences of that loop); dispatch/combine round trip; hand-set
// routers; balancing-loss isolation; one-expert routing; capacity dropping; input jitter.
// Not: router math on its own (router.test.ts) or whole-model gradients (model-gradcheck).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Backend } from "../src/backend/index.js";
import type { FArr, FCtor } from "../src/nn/dims.js";
import type { MoeConfig } from "../src/model/config.js";
import { MoeLayerState, MoeScratch, moeBackward, moeForward, type MoeForwardOptions, type MoeLayerStats, type MoeWeights } from "../src/moe/layer.js";
import { ffnBackward, ffnForward } from "../src/nn/ffn.js";
import { capacityKeep, expertCapacity } from "../src/moe/capacity.js";
import { singleProcessGroup } from "../src/parallel/group.js";
import type { RouterConfig } from "../src/moe/router.js";
import { assertClose, assertExact, backends, dot, numericGrad, randn, rng } from "./util.js";

const { ref, natives } = backends();
const F32TOL = { rtol: 2e-4, atol: 2e-5 };

function moeCfg(p: { E: number; K: number; F: number; renorm?: boolean; router?: RouterConfig; dispatch?: MoeConfig["dispatch"]; inputJitter?: number; S?: number }): MoeConfig {
  return {
    numExperts: p.E, topK: p.K, expertIntermediateSize: p.F, moeLayers: [true], sharedExpertIntermediateSize: p.S ?? 0,
    router: p.router ?? { kind: "softmax_topk", topK: p.K, normTopkProb: p.renorm ?? true },
    dispatch: p.dispatch ?? { kind: "dropless" }, inputJitter: p.inputJitter ?? 0,
  };
}

/** Random f64 weights of one MoE layer. */
function randWeights(cfg: MoeConfig, C: number, seed: number, routerStd = 1): MoeWeights {
  const E = cfg.numExperts, F = cfg.expertIntermediateSize, S = cfg.sharedExpertIntermediateSize;
  const w: MoeWeights = {
    router: randn(Float64Array, E * C, seed, routerStd),
    w13: randn(Float64Array, E * 2 * F * C, seed + 1, 0.5),
    w2: randn(Float64Array, E * C * F, seed + 2, 0.5),
  };
  if (S > 0) {
    w.sharedGateUp = randn(Float64Array, 2 * S * C, seed + 3, 0.5);
    w.sharedDown = randn(Float64Array, C * S, seed + 4, 0.5);
    w.sharedGate = randn(Float64Array, C, seed + 5, 0.5);
  }
  return w;
}

const KEYS = ["router", "w13", "w2", "sharedGateUp", "sharedDown", "sharedGate"] as const;

function mapWeights(w: MoeWeights, f: (a: FArr) => FArr): MoeWeights {
  const out: Partial<MoeWeights> = {};
  for (const k of KEYS) if (w[k]) (out as Record<string, FArr>)[k] = f(w[k]!);
  return out as MoeWeights;
}

interface LayerRun {
  y: FArr;
  dx: FArr;
  dw: MoeWeights;
  stats: MoeLayerStats;
  st: MoeLayerState;
}

function runLayer(be: Backend, Ctor: FCtor, cfg: MoeConfig, N: number, C: number, w64: MoeWeights, x64: ArrayLike<number>, dy64: ArrayLike<number>, opt: Partial<MoeForwardOptions> = {}, gradScale = 1): LayerRun {
  const st = new MoeLayerState(Ctor, N, C, cfg);
  const sc = new MoeScratch(Ctor, N, C, cfg);
  const w = mapWeights(w64, (a) => Ctor.from(a));
  const dw = mapWeights(w64, (a) => new Ctor(a.length));
  const x = Ctor.from(x64), dy = Ctor.from(dy64);
  const y = new Ctor(N * C);
  const stats = moeForward(be, st, w, y, x, {
    train: true, balance: "none", auxCoef: 0, zCoef: 0, group: singleProcessGroup(), virtualCapacityFactor: 1.25, ...opt,
  });
  const dx = new Ctor(N * C).fill(NaN); // overwritten
  moeBackward(be, st, w, dw, sc, dx, dy, x, gradScale);
  return { y, dx, dw, stats, st };
}

/** Native f32 runs of the same case equal the ref f64 run. */
function nativeMatchesRef(r: LayerRun, run: (be: Backend) => LayerRun, what: string): void {
  for (const { label, be } of natives) {
    const n = run(be);
    assertClose(n.y, r.y, F32TOL, `${what} ${label} y`);
    assertClose(n.dx, r.dx, F32TOL, `${what} ${label} dx`);
    for (const k of KEYS) if (r.dw[k]) assertClose(n.dw[k]!, r.dw[k]!, F32TOL, `${what} ${label} d${k}`);
    assert.deepEqual([...n.stats.tokensPerExpert], [...r.stats.tokensPerExpert], `${what} ${label} routes`);
  }
}

// ---------------------------------------------------------------------------
// The naive reference (f64): HF Mixtral-style loop over experts, own softmax-top-k router.

const silu = (v: number) => v / (1 + Math.exp(-v));

/** Expert e's output for token row x (length C): down(silu(gate·x) ⊙ up·x). */
function expertOut(w: MoeWeights, e: number, x: ArrayLike<number>, xo: number, C: number, F: number): Float64Array {
  const a = new Float64Array(F);
  for (let f = 0; f < F; f++) {
    let g = 0, u = 0;
    const go = (e * 2 * F + f) * C, uo = (e * 2 * F + F + f) * C;
    for (let c = 0; c < C; c++) {
      g += w.w13[go + c]! * x[xo + c]!;
      u += w.w13[uo + c]! * x[xo + c]!;
    }
    a[f] = silu(g) * u;
  }
  const out = new Float64Array(C);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let f = 0; f < F; f++) s += w.w2[(e * C + c) * F + f]! * a[f]!;
    out[c] = s;
  }
  return out;
}

interface NaiveRoute {
  experts: Int32Array; // (N,K)
  weights: Float64Array; // (N,K)
  keep: Uint8Array; // (N,K)
}

/** Softmax over all experts, top-K (ties → lower index), optional renormalisation; optional capacity. */
function naiveRoute(cfg: MoeConfig, N: number, C: number, w: MoeWeights, x: ArrayLike<number>, cap?: { cf: number; policy: "probs" | "position" }): NaiveRoute {
  const E = cfg.numExperts, K = cfg.topK;
  const r = cfg.router;
  assert.ok(r.kind === "softmax_topk" && r.logitsNormStd === undefined);
  const experts = new Int32Array(N * K), weights = new Float64Array(N * K), keep = new Uint8Array(N * K).fill(1);
  for (let n = 0; n < N; n++) {
    const z = Array.from({ length: E }, (_, e) => {
      let s = 0;
      for (let c = 0; c < C; c++) s += w.router[e * C + c]! * x[n * C + c]!;
      return s;
    });
    const m = Math.max(...z);
    const ex = z.map((v) => Math.exp(v - m));
    const tot = ex.reduce((a, b) => a + b, 0);
    const p = ex.map((v) => v / tot);
    const order = Array.from({ length: E }, (_, e) => e).sort((a, b) => p[b]! - p[a]! || a - b);
    let sel = 0;
    for (let k = 0; k < K; k++) sel += p[order[k]!]!;
    for (let k = 0; k < K; k++) {
      experts[n * K + k] = order[k]!;
      weights[n * K + k] = r.normTopkProb ? p[order[k]!]! / sel : p[order[k]!]!;
    }
  }
  if (cap) {
    const capacity = Math.ceil((cap.cf * K * N) / E - 1e-9);
    for (let e = 0; e < E; e++) {
      const ids: number[] = [];
      for (let a = 0; a < N * K; a++) if (experts[a] === e) ids.push(a);
      if (cap.policy === "probs") ids.sort((a, b) => weights[b]! - weights[a]! || a - b);
      ids.forEach((a, i) => (keep[a] = i < capacity ? 1 : 0));
    }
  }
  return { experts, weights, keep };
}

/** y (N,C) = Σ_e Σ_{(n,k) routed to e, kept} weight·Expert_e(x_n)  (+ sigmoid-gated shared expert). */
function naiveMoe(cfg: MoeConfig, N: number, C: number, w: MoeWeights, x: ArrayLike<number>, cap?: { cf: number; policy: "probs" | "position" }): { y: Float64Array; route: NaiveRoute } {
  const E = cfg.numExperts, K = cfg.topK, F = cfg.expertIntermediateSize;
  const route = naiveRoute(cfg, N, C, w, x, cap);
  const y = new Float64Array(N * C);
  for (let e = 0; e < E; e++) {
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const a = n * K + k;
        if (route.experts[a] !== e || !route.keep[a]) continue;
        const o = expertOut(w, e, x, n * C, C, F);
        for (let c = 0; c < C; c++) y[n * C + c]! += route.weights[a]! * o[c]!;
      }
    }
  }
  const S = cfg.sharedExpertIntermediateSize;
  if (S > 0) {
    const sw: MoeWeights = { router: w.router, w13: w.sharedGateUp!, w2: w.sharedDown! };
    for (let n = 0; n < N; n++) {
      let g = 0;
      for (let c = 0; c < C; c++) g += w.sharedGate![c]! * x[n * C + c]!;
      const s = 1 / (1 + Math.exp(-g));
      const o = expertOut(sw, 0, x, n * C, C, S);
      for (let c = 0; c < C; c++) y[n * C + c]! += s * o[c]!;
    }
  }
  return { y, route };
}

/** Layer (ref f64) forward equals the naive loop; every gradient equals finite differences of Σ naive·dy. */
function checkAgainstNaive(cfg: MoeConfig, N: number, C: number, w: MoeWeights, x: Float64Array, dy: Float64Array, r: LayerRun, cap?: { cf: number; policy: "probs" | "position" }, what = "layer"): void {
  const nv = naiveMoe(cfg, N, C, w, x, cap);
  assertClose(r.y, nv.y, { rtol: 1e-10, atol: 1e-12 }, `${what} y vs naive loop`);
  const S = () => dot(naiveMoe(cfg, N, C, w, x, cap).y, dy);
  const fdTol = { rtol: 1e-6, atol: 1e-8 };
  assertClose(r.dx, numericGrad(x, S), fdTol, `${what} dx vs finite differences`);
  for (const k of KEYS) if (w[k]) assertClose(r.dw[k]!, numericGrad(w[k] as Float64Array, S), fdTol, `${what} d${k} vs finite differences`);
}

function data(N: number, C: number, seed: number): { x: Float64Array; dy: Float64Array } {
  return { x: randn(Float64Array, N * C, seed), dy: randn(Float64Array, N * C, seed + 50) };
}

// ---------------------------------------------------------------------------

test("(a) E=1, K=1 equals the dense SwiGLU FFN (output, dx, weight grads); router grad is 0", () => {
  const N = 9, C = 6, F = 5;
  const cfg = moeCfg({ E: 1, K: 1, F });
  const w = randWeights(cfg, C, 11);
  const { x, dy } = data(N, C, 12);
  for (const [label, be, Ctor, tol] of [["ref", ref, Float64Array, { rtol: 1e-12, atol: 1e-13 }] as const, ...natives.map((n) => [n.label, n.be, Float32Array, { rtol: 1e-5, atol: 1e-6 }] as const)]) {
    const r = runLayer(be, Ctor, cfg, N, C, w, x, dy);
    // dense FFN with gate_up = w13[0], down = w2[0], same backend and dtype
    const xs = Ctor.from(x), gu = Ctor.from(w.w13), dn = Ctor.from(w.w2);
    const y = new Ctor(N * C), saved = { gu: new Ctor(N * 2 * F), a: new Ctor(N * F) };
    ffnForward(be, y, saved, xs, gu, dn, N, C, F);
    const dx = new Ctor(N * C), dgu = new Ctor(2 * F * C), ddn = new Ctor(C * F);
    ffnBackward(be, dx, dgu, ddn, Ctor.from(dy), xs, saved, gu, dn, { da: new Ctor(N * F), dgu: new Ctor(N * 2 * F) }, N, C, F, false);
    assertClose(r.y, y, tol, `${label} y`);
    assertClose(r.dx, dx, tol, `${label} dx`);
    assertClose(r.dw.w13, dgu, tol, `${label} dw13`);
    assertClose(r.dw.w2, ddn, tol, `${label} dw2`);
    assertExact(r.dw.router, new Float64Array(C), `${label} router grad`);
  }
});

test("(b) dropless grouped path equals the naive per-expert loop: forward and every gradient (ref f64 + native f32)", () => {
  const N = 11, C = 6, F = 5;
  for (const renorm of [true, false]) {
    const cfg = moeCfg({ E: 4, K: 2, F, renorm });
    const w = randWeights(cfg, C, 21);
    const { x, dy } = data(N, C, 22);
    const r = runLayer(ref, Float64Array, cfg, N, C, w, x, dy);
    assert.equal(r.stats.dropRate, 0);
    assert.ok(r.stats.tokensPerExpert.every((c) => c > 0), "every expert gets tokens in this case");
    checkAgainstNaive(cfg, N, C, w, x, dy, r, undefined, `renorm=${renorm}`);
    nativeMatchesRef(r, (be) => runLayer(be, Float32Array, cfg, N, C, w, x, dy), `renorm=${renorm}`);
  }
  // with a sigmoid-gated shared expert (Qwen2-MoE)
  const cfg = moeCfg({ E: 3, K: 2, F, renorm: false, S: 4 });
  const w = randWeights(cfg, C, 23);
  const { x, dy } = data(N, C, 24);
  const r = runLayer(ref, Float64Array, cfg, N, C, w, x, dy);
  checkAgainstNaive(cfg, N, C, w, x, dy, r, undefined, "shared expert");
  nativeMatchesRef(r, (be) => runLayer(be, Float32Array, cfg, N, C, w, x, dy), "shared expert");
});

test("(c) dispatch/combine round trip through the backend: gather then weighted scatterAdd = x·Σ_k weights", () => {
  const N = 13, C = 7, E = 5, K = 3;
  const r = rng(31);
  const experts = new Int32Array(N * K);
  for (let n = 0; n < N; n++) {
    const pool = [0, 1, 2, 3, 4];
    for (let k = 0; k < K; k++) experts[n * K + k] = pool.splice(Math.floor(r() * pool.length), 1)[0]!;
  }
  const weights64 = Float64Array.from({ length: N * K }, () => r());
  const x64 = randn(Float64Array, N * C, 32);
  for (const [label, be, Ctor] of [["ref", ref, Float64Array] as const, ...natives.map((n) => [n.label, n.be, Float32Array] as const)]) {
    const perm = new Int32Array(N * K), counts = new Int32Array(E);
    be.sortByKey(perm, experts, E);
    be.histogram(counts, experts, E);
    // sorted by expert, stable
    for (let i = 1; i < N * K; i++) {
      const a = experts[perm[i - 1]!]!, b = experts[perm[i]!]!;
      assert.ok(a < b || (a === b && perm[i - 1]! < perm[i]!), `${label}: perm is a stable sort by expert`);
    }
    const tokenOf = Int32Array.from(perm, (a) => (a / K) | 0);
    const rowW = new Ctor(N * K);
    perm.forEach((a, i) => (rowW[i] = weights64[a]!));
    const x = Ctor.from(x64), xs = new Ctor(N * K * C), out = new Ctor(N * C);
    be.gather(xs, x, tokenOf, N, C);
    be.scatterAdd(out, xs, tokenOf, rowW, N, C);
    const want = new Float64Array(N * C);
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += Ctor === Float32Array ? Math.fround(weights64[n * K + k]!) : weights64[n * K + k]!;
      for (let c = 0; c < C; c++) want[n * C + c] = x[n * C + c]! * s;
    }
    assertClose(out, want, Ctor === Float64Array ? { rtol: 1e-14, atol: 1e-15 } : { rtol: 1e-6, atol: 1e-7 }, `${label} round trip`);
    assert.deepEqual([...counts], Array.from({ length: E }, (_, e) => experts.filter((v) => v === e).length));
  }
});

test("(d) hand-set router rows pick known experts; output equals the closed form", () => {
  // router row e = a·(unit vector e): logits z = a·x[:, 0..E)
  const N = 4, C = 6, E = 4, K = 2, F = 3, a = 2;
  const cfg = moeCfg({ E, K, F });
  const w = randWeights(cfg, C, 41);
  w.router.fill(0);
  for (let e = 0; e < E; e++) w.router[e * C + e] = a;
  const zs = [[1.5, 0.5, -0.5, -1], [-1, 0.25, 1, 0], [0, -2, 0.5, 1.25], [0.3, 0.2, 0.1, 2]];
  const picks = [[0, 1], [2, 1], [3, 2], [3, 0]];
  const x = randn(Float64Array, N * C, 42);
  for (let n = 0; n < N; n++) for (let e = 0; e < E; e++) x[n * C + e] = zs[n]![e]! / a;
  const dy = randn(Float64Array, N * C, 43);
  for (const [label, be, Ctor, tol] of [["ref", ref, Float64Array, { rtol: 1e-12, atol: 1e-13 }] as const, ...natives.map((n) => [n.label, n.be, Float32Array, F32TOL] as const)]) {
    const r = runLayer(be, Ctor, cfg, N, C, w, x, dy);
    assert.deepEqual([...r.st.route!.topExperts], picks.flat(), `${label} experts`);
    const want = new Float64Array(N * C);
    for (let n = 0; n < N; n++) {
      const [e1, e2] = picks[n]!;
      // renormalised top-2 softmax: w1 = 1/(1+exp(z2−z1)), w2 = 1 − w1
      const w1 = 1 / (1 + Math.exp(zs[n]![e2!]! - zs[n]![e1!]!)), w2 = 1 - w1;
      assertClose([r.st.route!.weights[n * K]!, r.st.route!.weights[n * K + 1]!], [w1, w2], tol, `${label} weights token ${n}`);
      const o1 = expertOut(w, e1!, x, n * C, C, F), o2 = expertOut(w, e2!, x, n * C, C, F);
      for (let c = 0; c < C; c++) want[n * C + c] = w1 * o1[c]! + w2 * o2[c]!;
    }
    assertClose(r.y, want, tol, `${label} y`);
    assert.deepEqual([...r.stats.tokensPerExpert], [2, 2, 2, 2]);
  }
});

test("(e) zero balancing coefficients give bitwise the 'none' gradients; nonzero ones change only router grad and dx", () => {
  const N = 10, C = 6, F = 4;
  const cfg = moeCfg({ E: 4, K: 2, F });
  const w = randWeights(cfg, C, 51);
  const { x, dy } = data(N, C, 52);
  for (const [label, be, Ctor] of [["ref", ref, Float64Array] as const, ...natives.map((n) => [n.label, n.be, Float32Array] as const)]) {
    const none = runLayer(be, Ctor, cfg, N, C, w, x, dy, { balance: "none" });
    for (const balance of ["skywork", "switch", "global"] as const) {
      const zero = runLayer(be, Ctor, cfg, N, C, w, x, dy, { balance, auxCoef: 0, zCoef: 0 });
      assert.ok(zero.stats.aux > 0 && zero.stats.z > 0, "the loss values are still reported");
      assertExact(zero.y, none.y, `${label} ${balance} y`);
      assertExact(zero.dx, none.dx, `${label} ${balance} dx`);
      for (const k of ["router", "w13", "w2"] as const) assertExact(zero.dw[k], none.dw[k], `${label} ${balance} zero-coef d${k}`);
      for (const [auxCoef, zCoef] of [[0.1, 0], [0, 0.05], [0.1, 0.05]]) {
        const on = runLayer(be, Ctor, cfg, N, C, w, x, dy, { balance, auxCoef, zCoef });
        assertExact(on.y, none.y, `${label} ${balance} y`);
        assertExact(on.dw.w13, none.dw.w13, `${label} ${balance} dw13 unchanged`);
        assertExact(on.dw.w2, none.dw.w2, `${label} ${balance} dw2 unchanged`);
        assert.ok(on.dw.router.some((v, i) => v !== none.dw.router[i]), `${label} ${balance} (${auxCoef}, ${zCoef}) changes the router grad`);
        assert.ok(on.dx.some((v, i) => v !== none.dx[i]), `${label} ${balance} (${auxCoef}, ${zCoef}) changes dx`);
      }
    }
  }
});

test("(e') the balancing-loss gradient in the layer equals finite differences of coef·aux + zCoef·z (ref f64)", () => {
  const N = 8, C = 5, F = 3;
  const cfg = moeCfg({ E: 4, K: 2, F });
  const w = randWeights(cfg, C, 55);
  const { x } = data(N, C, 56);
  const dy = new Float64Array(N * C); // only the balancing terms
  for (const balance of ["skywork", "switch", "global"] as const) {
    const coef = 0.3, zc = 0.02, gs = 0.5;
    const r = runLayer(ref, Float64Array, cfg, N, C, w, x, dy, { balance, auxCoef: coef, zCoef: zc }, gs);
    const loss = () => {
      const s = runLayer(ref, Float64Array, cfg, N, C, w, x, dy, { balance, auxCoef: coef, zCoef: zc }).stats;
      return gs * (coef * s.aux + zc * s.z);
    };
    const fdTol = { rtol: 1e-6, atol: 1e-9 };
    assertClose(r.dw.router, numericGrad(w.router as Float64Array, loss), fdTol, `${balance} router grad`);
    assertClose(r.dx, numericGrad(x, loss), fdTol, `${balance} dx`);
  }
});

test("(f) every token routed to one expert (other groups empty): forward/backward match the naive loop", () => {
  const N = 9, C = 6, F = 4, E = 4;
  for (const K of [1, 2]) {
    const cfg = moeCfg({ E, K, F });
    const w = randWeights(cfg, C, 61, 0.1);
    const { x, dy } = data(N, C, 62);
    for (let n = 0; n < N; n++) x[n * C] = 1 + Math.abs(x[n * C]!);
    // expert 2 (and 1 for K = 2) dominate for every token: z = 6·x0 (≥ 6), 3·x0
    w.router[2 * C] = 6;
    if (K === 2) w.router[1 * C] = 3;
    const r = runLayer(ref, Float64Array, cfg, N, C, w, x, dy);
    assert.deepEqual([...r.stats.tokensPerExpert], K === 1 ? [0, 0, N, 0] : [0, N, N, 0]);
    assert.equal(r.stats.maxOverMeanLoad, E / K);
    checkAgainstNaive(cfg, N, C, w, x, dy, r, undefined, `one expert K=${K}`);
    nativeMatchesRef(r, (be) => runLayer(be, Float32Array, cfg, N, C, w, x, dy), `one expert K=${K}`);
  }
});

test("(g) capacity mode: dropped assignments contribute nothing; dropRate = dropped/(K·N); virtual drop rate in dropless mode", () => {
  const N = 12, C = 6, F = 4, E = 4, K = 2;
  for (const policy of ["probs", "position"] as const) {
    for (const cf of [0.5, 1.0]) {
      const cfg = moeCfg({ E, K, F, dispatch: { kind: "capacity", capacityFactor: cf, policy } });
      const w = randWeights(cfg, C, 71);
      const { x, dy } = data(N, C, 72);
      const r = runLayer(ref, Float64Array, cfg, N, C, w, x, dy);
      const nv = naiveMoe(cfg, N, C, w, x, { cf, policy });
      const dropped = nv.route.keep.reduce((s, k) => s + (k ? 0 : 1), 0);
      assert.ok(dropped > 0, `CF ${cf} drops something`);
      assert.equal(r.stats.dropRate, dropped / (K * N), `${policy} CF ${cf} dropRate`);
      assert.equal(r.stats.virtualDropRate, r.stats.dropRate);
      const cap = Math.ceil((cf * K * N) / E);
      for (let e = 0; e < E; e++) assert.equal(r.stats.keptPerExpert[e], Math.min(cap, r.stats.tokensPerExpert[e]!));
      checkAgainstNaive(cfg, N, C, w, x, dy, r, { cf, policy }, `capacity ${policy} CF ${cf}`);
      nativeMatchesRef(r, (be) => runLayer(be, Float32Array, cfg, N, C, w, x, dy), `capacity ${policy} CF ${cf}`);
    }
  }
  // dropless: nothing dropped, and the virtual drop rate is what capacity CF 1.25 (probs) would drop
  const cfg = moeCfg({ E, K, F });
  const w = randWeights(cfg, C, 73);
  const { x, dy } = data(N, C, 74);
  // skew the load: expert 0 is in most tokens' top 2
  for (let n = 0; n < N; n++) x[n * C] = 1 + Math.abs(x[n * C]!);
  w.router[0] = 3;
  const r = runLayer(ref, Float64Array, cfg, N, C, w, x, dy, { virtualCapacityFactor: 1.25 });
  const route = r.st.route!;
  const ck = capacityKeep(route.topExperts, route.weights, N, K, E, expertCapacity(N, K, E, 1.25), "probs");
  const nv = naiveRoute(cfg, N, C, w, x, { cf: 1.25, policy: "probs" });
  const naiveDropped = nv.keep.reduce((s, k) => s + (k ? 0 : 1), 0);
  assert.ok(naiveDropped > 0, "CF 1.25 would drop something here");
  assert.equal(r.stats.dropRate, 0);
  assert.equal(r.stats.virtualDropRate, ck.dropRate);
  assert.equal(r.stats.virtualDropRate, naiveDropped / (K * N));
  checkAgainstNaive(cfg, N, C, w, x, dy, r, undefined, "dropless (virtual drops only)");
});

test("(h) input jitter: output = layer on x⊙u, dx = u ⊙ (dx of that run), same weight grads; eval ignores it", () => {
  const N = 8, C = 6, F = 4, eps = 0.1;
  const cfgJ = moeCfg({ E: 4, K: 2, F, inputJitter: eps, S: 3 });
  const cfg0 = moeCfg({ E: 4, K: 2, F, inputJitter: 0, S: 3 });
  const w = randWeights(cfgJ, C, 81);
  const { x, dy } = data(N, C, 82);
  const r = rng(83);
  const u = Float64Array.from({ length: N * C }, () => 1 - eps + 2 * eps * r());
  for (const [label, be, Ctor] of [["ref", ref, Float64Array] as const, ...natives.map((n) => [n.label, n.be, Float32Array] as const)]) {
    const xr = Ctor.from(x); // x as the layer sees it
    const xu = new Ctor(N * C);
    xr.forEach((v: number, i: number) => (xu[i] = v * u[i]!));
    const j = runLayer(be, Ctor, cfgJ, N, C, w, xr, dy, { jitter: u });
    const p = runLayer(be, Ctor, cfg0, N, C, w, xu, dy);
    assertExact(j.y, p.y, `${label} y`);
    assertClose(j.dx, Float64Array.from(p.dx, (v, i) => v * u[i]!), Ctor === Float64Array ? { rtol: 1e-15, atol: 0 } : { rtol: 1e-7, atol: 0 }, `${label} dx`);
    for (const k of KEYS) assertExact(j.dw[k]!, p.dw[k]!, `${label} d${k}`);
    // eval: no jitter
    const e = runLayer(be, Ctor, cfgJ, N, C, w, xr, dy, { train: false, jitter: u });
    const e0 = runLayer(be, Ctor, cfg0, N, C, w, xr, dy, { train: false });
    assertExact(e.y, e0.y, `${label} eval y`);
    assertExact(e.dx, e0.dx, `${label} eval dx`);
  }
  assert.throws(() => runLayer(ref, Float64Array, cfgJ, N, C, w, x, dy), /input jitter needs/);
});
