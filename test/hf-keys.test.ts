// Every forward-changing config key of the six families that moe-ts honours, each against a
// golden case from the float64 PyTorch reference (tools/reference/make_hf_fixtures.py →
// test/fixtures/hf-keys/<case>/): OLMoE clip_qkv, Qwen2/3 use_sliding_window with
// max_window_layers, rope_scaling linear / llama3 / yarn / longrope (short and long), tied
// embeddings, Skywork moe_expert_interval 2. Native f32 within 1e-4, ref f64 within 1e-9.
// Keys still refused are refused by name.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readdirSync } from "node:fs";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { loadHfModel } from "../src/model/checkpoint.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { createBackend } from "../src/backend/index.js";

const FIX = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures", "hf-keys");
const native = createBackend({ name: "native", threads: 1 });
const ref = createBackend({ name: "ref" });

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, what: string): number {
  let maxAbs = 0, maxErr = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!);
    maxErr = Math.max(maxErr, err);
    if (!(err <= rtol * maxAbs)) assert.fail(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]}`);
  }
  return maxErr / maxAbs;
}

const CASES = readdirSync(FIX).sort();

test("the golden cases cover every honoured key", () => {
  assert.deepEqual(CASES, [
    "mixtral_linear", "mixtral_llama3", "mixtral_tied", "olmoe_clip_qkv", "phimoe_longrope_long", "phimoe_longrope_short",
    "qwen2_moe_window", "qwen3_moe_window", "qwen3_moe_yarn", "skywork_interval2",
  ]);
});

for (const name of CASES) {
  test(`${name}: logits match the float64 reference (native f32 1e-4, ref f64 1e-9)`, (t) => {
    const f = SafetensorsFile.open(path.join(FIX, name, "logits.safetensors"));
    const ids = Int32Array.from(f.read("input_ids").data as Int32Array);
    const want = Float64Array.from(f.read("logits").data as Float64Array);
    const a = loadHfModel(path.join(FIX, name), native, { B: 1, T: ids.length });
    a.model.forward(ids, null, { train: false });
    const relN = close(a.model.lastLogits(), want, 1e-4, `${name} native`);
    const b = loadHfModel(path.join(FIX, name), ref, { B: 1, T: ids.length, dtype: "f64" });
    b.model.forward(ids, null, { train: false });
    const relR = close(b.model.lastLogits(), want, 1e-9, `${name} ref-f64`);
    t.diagnostic(`${name}: native ${relN.toExponential(2)}, ref ${relR.toExponential(2)}`);
    // the key really resolved onto the model
    const cfg = a.cfg;
    if (name === "olmoe_clip_qkv") assert.equal(cfg.clipQkv, 0.5);
    if (name === "qwen2_moe_window") assert.deepEqual([cfg.slidingWindow, cfg.windowFromLayer], [4, 1]);
    if (name === "mixtral_tied") assert.ok(cfg.tieEmbeddings && !a.model.layout.byName.has("lm_head.weight"));
    if (name === "skywork_interval2") assert.deepEqual(cfg.moe.moeLayers, [false, true]);
    if (name.includes("rope") || name.includes("yarn") || name.includes("linear") || name.includes("llama3")) assert.ok(cfg.rope.scaling, "rope scaling resolved");
  });
}

test("clip_qkv clamps in training too: the gradient through a clamped value is zero (finite differences)", () => {
  const b = loadHfModel(path.join(FIX, "olmoe_clip_qkv"), ref, { B: 1, T: 6, dtype: "f64" });
  const ids = Int32Array.from([1, 5, 9, 2, 7, 3]), targets = Int32Array.from([5, 9, 2, 7, 3, 1]);
  const m = b.model;
  m.zeroGrad();
  m.forward(ids, targets, { train: false });
  m.backward(1);
  const name = "model.layers.0.self_attn.v_proj.weight";
  const w = m.param(name), g = m.grad(name);
  let checked = 0;
  for (const i of [0, 7, 33, 101, 250]) {
    const x0 = w[i]!, h = 1e-6;
    w[i] = x0 + h;
    const lp = m.forward(ids, targets, { train: false }).loss;
    w[i] = x0 - h;
    const lm = m.forward(ids, targets, { train: false }).loss;
    w[i] = x0;
    const fd = (lp - lm) / (2 * h);
    assert.ok(Math.abs(fd - g[i]!) <= 1e-6 * Math.max(1, Math.abs(fd)), `${name}[${i}]: fd ${fd}, analytic ${g[i]}`);
    checked++;
  }
  assert.equal(checked, 5);
});

test("keys that are not honoured are refused by name", () => {
  const base = { model_type: "mixtral", vocab_size: 16, hidden_size: 8, intermediate_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1 };
  assert.throws(() => resolveConfig(parseHfConfig({ ...base, rope_scaling: { rope_type: "dynamic", factor: 2 } })), /rope_scaling type "dynamic" is not supported/);
  assert.throws(() => resolveConfig(parseHfConfig({ ...base, rope_scaling: { type: "longrope", short_factor: [1], long_factor: [1] } })), /short_factor must be 2 positive numbers/);
  assert.throws(() => resolveConfig(parseHfConfig({ ...base, model_type: "olmoe", num_experts: 2, num_experts_per_tok: 1, clip_qkv: -1 })), /clip_qkv must be positive/);
});
