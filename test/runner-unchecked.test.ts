// The inference step's unchecked kernel path (runner.ts): after the first checked step of a
// shape, later steps call `be.unchecked` and give bit-identical logits to an always-checked
// backend; the step's data (KV slots, block tables, positions) is still checked every step.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createBackend, type Backend, type Kernels } from "../src/backend/index.js";
import { loadHfModel } from "../src/model/checkpoint.js";
import { engineWeights } from "../src/infer/engine-weights.js";
import { InferenceWorkspace, runStep, type StepBatch } from "../src/infer/runner.js";
import { KvCachePool } from "../src/infer/kv-cache.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures");
const be = createBackend({ name: "native", threads: 1 });

/** be with its unchecked table wrapped so calls are counted. */
function counting(b: Backend): { be: Backend; calls: () => number } {
  let n = 0;
  const raw = b.unchecked!;
  const wrapped = Object.fromEntries(Object.entries(raw).map(([k, f]) => [k, (...a: unknown[]) => (n++, (f as (...x: unknown[]) => unknown)(...a))])) as unknown as Kernels;
  return { be: { ...b, unchecked: wrapped }, calls: () => n };
}

function decodeRun(backend: Backend, dtype: "f32" | "f16", steps: number, corrupt?: (b: StepBatch) => void): Float32Array[] {
  const dir = path.join(ROOT, "hf", "mixtral");
  const { model, cfg } = loadHfModel(dir, be, { B: 1, T: 1 });
  const ew = engineWeights(model.weights, { dtype });
  const kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: 16, blockSize: 4, maxSeqLen: 64 });
  const ws = new InferenceWorkspace(cfg, 8, 1);
  const ids = [3, 17, 5];
  kv.allocate("s", ids);
  const out: Float32Array[] = [];
  let computed = 0;
  for (let s = 0; s < steps; s++) {
    const take = ids.length - computed;
    const slots = kv.append("s", ids.slice(computed));
    const b: StepBatch = {
      tokens: Int32Array.from(ids.slice(computed)), positions: Int32Array.from({ length: take }, (_, i) => computed + i),
      queryStart: Int32Array.from([0, take]), contextLens: Int32Array.from([computed + take]), slots, blockTables: kv.fillBlockTables(["s"]),
      logitRows: Int32Array.from([take - 1]),
    };
    if (s === steps - 1 && corrupt) corrupt(b);
    runStep(backend, ew, ws, kv, b);
    computed += take;
    const row = Float32Array.from(ws.logits.subarray(0, cfg.vocabSize));
    out.push(row);
    let best = 0;
    for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
    ids.push(best);
  }
  return out;
}

for (const dtype of ["f32", "f16"] as const) {
  test(`runStep (${dtype}): steps after the first of a shape run unchecked, with the checked path's logits bit for bit`, () => {
    const c = counting(be);
    const fast = decodeRun(c.be, dtype, 6);
    assert.ok(c.calls() > 0, "the unchecked table was never called");
    const slow = decodeRun({ ...be, unchecked: undefined }, dtype, 6);
    fast.forEach((row, i) => assert.deepEqual(row, slow[i], `step ${i}`));
  });
}

test("runStep: an unchecked step still rejects a bad KV slot, block table entry or position", () => {
  const bad: [string, (b: StepBatch) => void, RegExp][] = [
    ["slot", (b) => (b.slots[0] = 1 << 20), /pagedWrite: slotMapping\[0\]/],
    ["block table", (b) => b.blockTables.fill(999), /pagedAttention: blockTables/],
    ["position", (b) => (b.positions[0] = -1), /position -1/],
    ["logit row", (b) => (b.logitRows = Int32Array.from([5])), /logit row 5/],
  ];
  for (const [what, corrupt, re] of bad) {
    const c = counting(be);
    assert.throws(() => decodeRun(c.be, "f32", 4, corrupt), re, what);
  }
});

test("runStep with activations q8 (q8_0 weights): decode logits within 2% of the exact f32-activation logits, and not identical", async () => {
  const { parseHfConfig, resolveConfig } = await import("../src/model/config.js");
  const { Weights } = await import("../src/model/weights.js");
  const cfg = resolveConfig(parseHfConfig({
    model_type: "mixtral", vocab_size: 96, hidden_size: 64, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
    num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 64,
    tie_word_embeddings: false, sliding_window: null,
  }, "q8 test"));
  const ew = engineWeights(new Weights(cfg).init(3, 0.1), { dtype: "q8_0" });
  const run = (activations: "f32" | "q8"): Float32Array[] => {
    const kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: 8, blockSize: 4, maxSeqLen: 32 });
    const ws = new InferenceWorkspace(cfg, 8, 1, { activations });
    const ids = [5, 9, 2, 7, 1, 3, 8, 4, 6, 10];
    kv.allocate("s", ids);
    const out: Float32Array[] = [];
    for (let i = 0; i < ids.length; i++) {
      const slots = kv.append("s", [ids[i]!]);
      runStep(be, ew, ws, kv, {
        tokens: Int32Array.of(ids[i]!), positions: Int32Array.of(i), queryStart: Int32Array.of(0, 1), contextLens: Int32Array.of(i + 1),
        slots, blockTables: kv.fillBlockTables(["s"]), logitRows: Int32Array.of(0),
      });
      out.push(Float32Array.from(ws.logits.subarray(0, cfg.vocabSize)));
    }
    return out;
  };
  const exact = run("f32"), q8 = run("q8");
  let differs = false;
  exact.forEach((row, i) => {
    let m = 0, e = 0;
    for (let j = 0; j < row.length; j++) {
      m = Math.max(m, Math.abs(row[j]!));
      e = Math.max(e, Math.abs(row[j]! - q8[i]![j]!));
    }
    assert.ok(e <= 0.02 * m, `step ${i}: q8 logits differ by ${e} (max |logit| ${m})`);
    if (e > 0) differs = true;
  });
  assert.ok(differs, "activations q8 changed nothing");
  assert.throws(() => new InferenceWorkspace(cfg, 8, 1, { activations: "int4" as "q8" }), /activations must be "f32" or "q8"/);
});

test("Backend.unchecked is not enumerable: a wrapper spread from the backend does not inherit it", () => {
  assert.ok(be.unchecked !== undefined);
  const wrapped = { ...be };
  assert.equal(wrapped.unchecked, undefined);
});
