// Capacity dispatch with padding (every expert's group padded to C rows with zero-weight rows)
// gives the same outputs and gradients as without, and reports its padding rows.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { MoeConfig } from "../src/model/config.js";
import { MoeLayerState, MoeScratch, moeBackward, moeForward } from "../src/moe/layer.js";
import { expertCapacity } from "../src/moe/capacity.js";
import { singleProcessGroup } from "../src/parallel/group.js";
import { createBackend } from "../src/backend/index.js";
import { assertClose, randn } from "./util.js";

const N = 24, C = 8, E = 4, K = 2, F = 6;

function run(pad: boolean, Ctor: Float32ArrayConstructor | Float64ArrayConstructor, be = createBackend({ name: "ref" })) {
  const cfg: MoeConfig = {
    numExperts: E, topK: K, expertIntermediateSize: F, moeLayers: [true], sharedExpertIntermediateSize: 0,
    router: { kind: "softmax_topk", topK: K, normTopkProb: true }, dispatch: { kind: "capacity", capacityFactor: 1.0, policy: "probs", pad }, inputJitter: 0,
  };
  const st = new MoeLayerState(Ctor, N, C, cfg), sc = new MoeScratch(Ctor, N, C, cfg);
  const R = Ctor as Float64ArrayConstructor; // randn is generic over the array type
  const w = { router: randn(R, E * C, 1), w13: randn(R, E * 2 * F * C, 2, 0.3), w2: randn(R, E * C * F, 3, 0.3) };
  const dw = { router: new Ctor(E * C), w13: new Ctor(E * 2 * F * C), w2: new Ctor(E * C * F) };
  const x = randn(R, N * C, 4), dy = randn(R, N * C, 5), y = new Ctor(N * C), dx = new Ctor(N * C);
  const stats = moeForward(be, st, w, y, x, { train: true, balance: "skywork", auxCoef: 0.01, zCoef: 1e-3, group: singleProcessGroup(), virtualCapacityFactor: 1.25 });
  moeBackward(be, st, w, dw, sc, dx, dy, x, 1);
  return { y, dx, dw, stats, st };
}

for (const [label, Ctor, tol] of [["ref f64", Float64Array, { rtol: 1e-12, atol: 1e-14 }], ["native f32", Float32Array, { rtol: 1e-5, atol: 1e-6 }]] as const) {
  test(`capacity dispatch padded to C rows equals unpadded (${label})`, () => {
    const be = label === "ref f64" ? createBackend({ name: "ref" }) : createBackend({ name: "native", threads: 2 });
    const a = run(false, Ctor, be), b = run(true, Ctor, be);
    assert.ok(a.stats.dropRate > 0, "the case drops assignments");
    const cap = expertCapacity(N, K, E, 1.0);
    const kept = [...a.stats.keptPerExpert].reduce((s, v) => s + v, 0);
    assert.equal(b.st.M, E * cap);
    assert.equal(b.st.padRows, E * cap - kept);
    assert.deepEqual([...b.st.sizes], new Array(E).fill(cap));
    assert.equal(a.st.padRows, 0);
    assertClose(b.y, a.y, tol, "y");
    assertClose(b.dx, a.dx, tol, "dx");
    assertClose(b.dw.router, a.dw.router, tol, "d router");
    assertClose(b.dw.w13, a.dw.w13, tol, "d w13");
    assertClose(b.dw.w2, a.dw.w2, tol, "d w2");
  });
}
