// Weights apart from state: workspaces of different shapes over one Weights compute what
// separate models with copied parameters compute, and never write the weights. Expert-parallel
// shards store only their experts, each equal to the full model's tensor of the same HF name.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../src/backend/index.js";
import { MoeModel } from "../src/model/model.js";
import { Workspace, modelForward, modelBackward } from "../src/model/forward.js";
import { Gradients, Weights } from "../src/model/weights.js";
import { ExpertShard } from "../src/parallel/expert-parallel.js";
import { randomizeParams, tinyConfig, tokens } from "./model-util.js";
import { assertExact } from "./util.js";

test("two workspaces of different shapes over one Weights give the logits of separate models", () => {
  const be = createBackend({ name: "native", threads: 1 });
  const cfg = tinyConfig({ moe: { numExperts: 4, topK: 2 } });
  const ref = new MoeModel(cfg, be, { B: 2, T: 5 });
  randomizeParams(ref, 3);
  const shared = new Weights(cfg, "f32");
  shared.data.set(ref.params);
  const before = Float32Array.from(shared.data);
  const wsA = new Workspace(cfg, { B: 2, T: 5 });
  const wsB = new Workspace(cfg, { B: 1, T: 3 });
  const a = tokens(10, cfg.vocabSize, 1), b = tokens(3, cfg.vocabSize, 2);
  // separate models with their own copy of the parameters
  const sepB = new MoeModel(cfg, be, { B: 1, T: 3 });
  sepB.params.set(ref.params);
  const ra = ref.forward(a.ids, a.targets, { train: false });
  const rb = sepB.forward(b.ids, b.targets, { train: false });
  // interleave the shared workspaces: neither disturbs the other
  const sa = modelForward(be, shared, wsA, a.ids, a.targets, { train: false });
  const sb = modelForward(be, shared, wsB, b.ids, b.targets, { train: false });
  assertExact(wsA.logits, ref.lastLogits(), "logits (2,5)");
  assertExact(wsB.logits, sepB.lastLogits(), "logits (1,3)");
  assert.equal(sa.loss, ra.loss);
  assert.equal(sb.loss, rb.loss);
  // gradients of the shared weights equal the separate model's
  const g = new Gradients(shared);
  modelBackward(be, shared, g, wsA, 1);
  ref.zeroGrad();
  ref.backward(1);
  assertExact(g.data, ref.grads, "gradients");
  assertExact(shared.data, before, "weights untouched by forward/backward");
  // a MoeModel built over shared weights adopts them without copying
  const view = new MoeModel(cfg, be, { B: 1, T: 3 }, shared);
  assert.equal(view.params, shared.data);
});

test("Weights refuses data of the wrong size or type, and workspaces of another config", () => {
  const cfg = tinyConfig();
  const w = new Weights(cfg, "f32");
  assert.throws(() => new Weights(cfg, "f32", new Float32Array(w.size - 1)), /needs/);
  assert.throws(() => new Weights(cfg, "f32", new Float64Array(w.size) as unknown as Float32Array), /Float32Array/);
  const other = tinyConfig({ hiddenSize: 12, headDim: 6 });
  const ws = new Workspace(other, { B: 1, T: 2 });
  const be = createBackend({ name: "ref" });
  assert.throws(() => modelForward(be, w, ws, new Int32Array(2), null, { train: false }), /different model configs/);
});

test("step context: input jitter (PhiMoE input_jitter_noise) and SparseMixer noise are drawn from (seed, step)", () => {
  const be = createBackend({ name: "ref" });
  const cfg = tinyConfig({ moe: { inputJitter: 0.3, router: { kind: "sparsemixer", variant: "v2", topK: 2, jitterEps: 0.3, scaleExpertGrad: false } } });
  const m = new MoeModel(cfg, be, { B: 1, T: 6 });
  randomizeParams(m, 5);
  const { ids, targets } = tokens(6, cfg.vocabSize, 4);
  const run = (step: number) => m.forward(ids, targets, { train: true, seed: 7, step }).loss;
  assert.equal(run(3), run(3), "same (seed, step) → same draw");
  assert.notEqual(run(3), run(4), "another step → another draw");
  assert.throws(() => m.forward(ids, targets, { train: true }), /jitter|noise/, "training without a step context or explicit draws is refused");
  // eval ignores both
  assert.equal(m.forward(ids, targets, { train: false }).loss, m.forward(ids, targets, { train: false, seed: 1, step: 1 }).loss);
});

test("expert-parallel shard: Weights of an expert range store only those experts, under their global HF names", () => {
  const cfg = tinyConfig({ numLayers: 3, moe: { numExperts: 4, moeLayers: [true, false, true] } });
  const C = cfg.hiddenSize, F = cfg.moe.expertIntermediateSize;
  const be = createBackend({ name: "native", threads: 1 });
  const full = new MoeModel(cfg, be, { B: 1, T: 4 });
  randomizeParams(full, 9);
  const shard = new ExpertShard(cfg, 2, 1);
  assert.deepEqual(shard.experts, { first: 2, count: 2 });
  const local = new Weights(cfg, "f32", undefined, shard.experts);
  // closed form: 2 MoE layers × 2 experts not stored × (w1, w3, w2) of C·F each
  assert.equal(full.weights.size - local.size, 2 * 2 * 3 * C * F);
  assert.equal(shard.savedElements, 2 * 2 * 3 * C * F);
  shard.slice(full.params, local.data);
  // every HF tensor of the shard equals the full model's tensor of the same name
  const byName = new Map(full.layout.hfTensors.map((t) => [t.name, t]));
  const names = local.layout.hfTensors.map((t) => t.name);
  assert.ok(names.includes("model.layers.2.block_sparse_moe.experts.3.w2.weight") && !names.some((n) => /experts\.[01]\./.test(n)), names.join(" "));
  assert.ok(names.includes("model.layers.0.block_sparse_moe.gate.weight"), "the router stays whole");
  for (const t of local.layout.hfTensors) {
    const f = byName.get(t.name)!;
    assert.deepEqual(t.shape, f.shape, t.name);
    assertExact(local.data.subarray(t.offset, t.offset + t.size), full.params.subarray(f.offset, f.offset + f.size), t.name);
  }
  // without its EP context a shard cannot run an MoE layer
  const m = new MoeModel(cfg, be, { B: 1, T: 4 }, local);
  const { ids, targets } = tokens(4, cfg.vocabSize, 1);
  assert.throws(() => m.forward(ids, targets, { train: false }), /hold 2 of the 4 experts.*ExpertParallel/);
  assert.throws(() => new Weights(cfg, "f32", undefined, { first: 3, count: 2 }), /expert range \[3, 5\) is not a non-empty range of the 4 experts/);
  assert.throws(() => new ExpertShard(cfg, 3, 0), /parallel\.ep = 3 must divide the number of experts \(4\)/);
});
