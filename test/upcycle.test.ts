// Upcycling: at step 0 the MoE's logits equal the dense model's (granularity 1 and 2),
// expert similarity is 1 after plain copying and falls with noise.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseHfConfig, resolveConfig, type LlamaHfConfig } from "../src/model/config.js";
import { MoeModel, initParams } from "../src/model/model.js";
import { expertSimilarity, upcycleParams } from "../src/model/upcycle.js";
import { createBackend } from "../src/backend/index.js";
import { assertClose } from "./util.js";

const dense = parseHfConfig({
  model_type: "llama", vocab_size: 50, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2,
  num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5,
}) as LlamaHfConfig;

function denseLogits(be = createBackend({ name: "ref" })) {
  const m = new MoeModel(resolveConfig(dense), be, { B: 2, T: 6, dtype: "f64" });
  initParams(m, 3, 0.3);
  const ids = Int32Array.from({ length: 12 }, (_, i) => (i * 7 + 3) % 50);
  m.forward(ids, null, { train: false });
  return { m, ids, logits: Float64Array.from(m.lastLogits()) };
}

for (const g of [1, 2]) {
  test(`upcycled MoE (8 experts, top-2, granularity ${g}) reproduces the dense logits at step 0`, () => {
    const { m, ids, logits } = denseLogits();
    const up = upcycleParams(dense, Float32Array.from(m.params), { experts: 8, topK: 2, granularity: g, seed: 5 });
    assert.equal(up.cfg.moe.numExperts, 8 * g);
    assert.equal(up.cfg.moe.topK, 2 * g);
    assert.equal(up.cfg.moe.expertIntermediateSize, 24 / g);
    const moe = new MoeModel(up.cfg, createBackend({ name: "ref" }), { B: 2, T: 6, dtype: "f64" });
    moe.params.set(up.params);
    const r = moe.forward(ids, null, { train: false });
    // the dense params went through f32, so compare with the f32-rounded dense model
    const m32 = new MoeModel(resolveConfig(dense), createBackend({ name: "ref" }), { B: 2, T: 6, dtype: "f64" });
    m32.params.set(Float32Array.from(m.params));
    m32.forward(ids, null, { train: false });
    assertClose(moe.lastLogits(), m32.lastLogits(), { rtol: 1e-9, atol: 1e-9 }, "logits");
    assert.ok(Math.abs(logits[0]! - m32.lastLogits()[0]!) < 1e-5);
    // every token used 2·g experts, spread over them
    for (const st of r.moe) assert.equal(st!.tokensPerExpert.reduce((a, b) => a + b, 0), 12 * 2 * g);
  });
}

test("expert similarity: 1 after copying, below 1 with noise; noise breaks exact equality", () => {
  const { m } = denseLogits();
  const plain = upcycleParams(dense, Float32Array.from(m.params), { experts: 4, topK: 2 });
  for (const s of expertSimilarity(plain.cfg, plain.params)) assert.ok(Math.abs(s - 1) < 1e-6, `similarity ${s}`);
  const noisy = upcycleParams(dense, Float32Array.from(m.params), { experts: 4, topK: 2, noise: 0.5, seed: 9 });
  for (const s of expertSimilarity(noisy.cfg, noisy.params)) assert.ok(s < 0.95 && s > 0.5, `similarity ${s}`);
});

test("upcycling refuses bad options", () => {
  const { m } = denseLogits();
  const p = Float32Array.from(m.params);
  assert.throws(() => upcycleParams(dense, p, { experts: 4, topK: 5 }), /top-k must be an integer in \[1, experts=4\]/);
  assert.throws(() => upcycleParams(dense, p, { experts: 4, topK: 2, granularity: 5 }), /granularity 5 must divide intermediate_size 24/);
  assert.throws(() => upcycleParams(dense, p.subarray(1), { experts: 4, topK: 2 }), /dense parameters have/);
});
