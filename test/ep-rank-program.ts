// The program every rank runs in test/train-ep.test.ts's layer-level checks (threads workers or
// mpirun ranks): one MoE layer with its experts split over the world (expert parallelism) against
// the same layer run whole on one rank. Each rank generates every rank's inputs from a seed, runs
// the EP forward/backward on its own tokens, and compares with plain single-rank runs of the
// layer: its output and input gradient equal the single-rank ones for its tokens, its router
// gradient equals the single-rank one, its own experts' weight gradients equal the single-rank
// gradients summed over every rank's tokens, and the experts it does not own get no gradient.
// Cases: a skewed router that sends every token of every rank to the first experts (ranks beyond
// them receive zero rows for all their experts), random routing dropless, capacity with drops and
// padding rows, and the SparseMixer router with noise; on the ref backend (f64) and native (f32).
// Prints `EP-OK <rank> <cases>` at the end; any mismatch throws (the rank fails).
// Run directly (not as a rank) it does nothing, so `node --test dist/test/` may load it harmlessly.
import { createBackend, type Backend } from "../src/backend/index.js";
import type { FArr, FCtor } from "../src/nn/dims.js";
import type { MoeConfig } from "../src/model/config.js";
import { MoeLayerState, MoeScratch, moeBackward, moeForward, type MoeWeights } from "../src/moe/layer.js";
import { sampleRouterNoise } from "../src/moe/noise.js";
import type { RouterNoise } from "../src/moe/router.js";
import { singleProcessGroup } from "../src/parallel/group.js";
import { ExpertParallel } from "../src/parallel/expert-parallel.js";
import { detectBackend, initWorld } from "../src/parallel/world.js";
import { randn } from "./util.js";

interface Case {
  name: string;
  cfg: MoeConfig;
  skew: boolean;
}

const E = 4, K = 2, F = 6, C = 8, N = 5;

function cases(): Case[] {
  const base = (p: Partial<MoeConfig>): MoeConfig => ({
    numExperts: E, topK: K, expertIntermediateSize: F, moeLayers: [true], sharedExpertIntermediateSize: 0,
    router: { kind: "softmax_topk", topK: K, normTopkProb: true }, dispatch: { kind: "dropless" }, inputJitter: 0, ...p,
  });
  return [
    { name: "zero-token ranks (skewed router)", cfg: base({}), skew: true },
    { name: "dropless", cfg: base({}), skew: false },
    { name: "capacity with drops and padding", cfg: base({ dispatch: { kind: "capacity", capacityFactor: 0.6, policy: "probs", pad: true } }), skew: false },
    { name: "sparsemixer", cfg: base({ router: { kind: "sparsemixer", variant: "v2", topK: K, jitterEps: 0.3, scaleExpertGrad: true } }), skew: false },
  ];
}

/** Weights (f64): the skewed router scores expert e by (4 − 2e)·x₀ with x₀ ≈ 3, so every token picks experts 0 and 1. */
function weights(c: Case): MoeWeights {
  const router = randn(Float64Array, E * C, 11, 0.3);
  if (c.skew) for (let e = 0; e < E; e++) router[e * C] = 4 - 2 * e;
  return { router, w13: randn(Float64Array, E * 2 * F * C, 12, 0.5), w2: randn(Float64Array, E * C * F, 13, 0.5) };
}

function inputs(c: Case, rank: number): { x: Float64Array; dy: Float64Array } {
  const x = randn(Float64Array, N * C, 100 + rank, 1);
  if (c.skew) for (let n = 0; n < N; n++) x[n * C] = 3 + 0.1 * x[n * C]!;
  return { x, dy: randn(Float64Array, N * C, 200 + rank, 1) };
}

function noise(c: Case, rank: number): RouterNoise | undefined {
  const r = c.cfg.router;
  return r.kind === "sparsemixer" ? sampleRouterNoise({ seed: 7, step: 0, layer: 0 }, N, K, E, r.variant, rank * N) : undefined;
}

interface Out {
  y: FArr;
  dx: FArr;
  dw: MoeWeights;
}

function runLayer(be: Backend, Ctor: FCtor, c: Case, rank: number, ep?: ExpertParallel): Out {
  const st = new MoeLayerState(Ctor, N, C, c.cfg);
  const sc = new MoeScratch(Ctor, N, C, c.cfg);
  const w64 = weights(c);
  const w: MoeWeights = { router: Ctor.from(w64.router), w13: Ctor.from(w64.w13), w2: Ctor.from(w64.w2) };
  const dw: MoeWeights = { router: new Ctor(E * C), w13: new Ctor(E * 2 * F * C), w2: new Ctor(E * C * F) };
  const { x: x64, dy: dy64 } = inputs(c, rank);
  const x = Ctor.from(x64), dy = Ctor.from(dy64), y = new Ctor(N * C), dx = new Ctor(N * C);
  moeForward(be, st, w, y, x, { train: true, noise: noise(c, rank), balance: "none", auxCoef: 0, zCoef: 0, group: singleProcessGroup(), virtualCapacityFactor: 1.25, ep });
  moeBackward(be, st, w, dw, sc, dx, dy, x, 1);
  return { y, dx, dw };
}

function close(a: ArrayLike<number>, b: ArrayLike<number>, tol: { rtol: number; atol: number }, what: string): void {
  if (a.length !== b.length) throw new Error(`${what}: length ${a.length} vs ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= tol.atol + tol.rtol * Math.abs(b[i]!))) throw new Error(`${what}[${i}]: ${a[i]} vs single-rank ${b[i]}`);
  }
}

async function main(): Promise<void> {
  const world = await initWorld();
  const P = world.size, rank = world.rank;
  const ep = new ExpertParallel(world, E);
  const El = E / P, e0 = ep.firstExpert, e1 = e0 + El;
  const engines: [string, Backend, FCtor, { rtol: number; atol: number }][] = [
    ["ref", createBackend({ name: "ref" }), Float64Array, { rtol: 1e-11, atol: 1e-12 }],
    ["native", createBackend({ name: "native", threads: 1 }), Float32Array, { rtol: 2e-4, atol: 2e-5 }],
  ];
  let checked = 0;
  for (const [label, be, Ctor, tol] of engines) {
    for (const c of cases()) {
      const what = `${label} ${c.name} rank ${rank}`;
      const got = runLayer(be, Ctor, c, rank, ep);
      const mine = runLayer(be, Ctor, c, rank);
      close(got.y, mine.y, tol, `${what} y`);
      close(got.dx, mine.dx, tol, `${what} dx`);
      close(got.dw.router, mine.dw.router, tol, `${what} d router`);
      // own experts: the single-rank gradients summed over every rank's tokens (in rank order)
      const sum13 = new Float64Array(E * 2 * F * C), sum2 = new Float64Array(E * C * F);
      for (let r = 0; r < P; r++) {
        const o = r === rank ? mine : runLayer(be, Ctor, c, r);
        for (let i = 0; i < sum13.length; i++) sum13[i]! += o.dw.w13[i]!;
        for (let i = 0; i < sum2.length; i++) sum2[i]! += o.dw.w2[i]!;
      }
      const per13 = 2 * F * C, per2 = C * F;
      close(got.dw.w13.subarray(e0 * per13, e1 * per13), sum13.subarray(e0 * per13, e1 * per13), tol, `${what} d w13 (own experts)`);
      close(got.dw.w2.subarray(e0 * per2, e1 * per2), sum2.subarray(e0 * per2, e1 * per2), tol, `${what} d w2 (own experts)`);
      for (let i = 0; i < got.dw.w13.length; i++) if ((i < e0 * per13 || i >= e1 * per13) && got.dw.w13[i] !== 0) throw new Error(`${what}: expert gradient computed for an expert this rank does not own (w13[${i}])`);
      for (let i = 0; i < got.dw.w2.length; i++) if ((i < e0 * per2 || i >= e1 * per2) && got.dw.w2[i] !== 0) throw new Error(`${what}: expert gradient computed for an expert this rank does not own (w2[${i}])`);
      if (c.skew && rank >= Math.ceil(2 / El) && sum13.subarray(e0 * per13, e1 * per13).some((v) => v !== 0)) throw new Error(`${what}: the skewed router was meant to leave this rank without tokens`);
      checked++;
    }
  }
  console.log(`EP-OK ${rank} ${checked}`);
  await world.close();
}

if (detectBackend() !== "single") await main();
