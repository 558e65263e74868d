// Learning-rate schedules (closed forms) and the AdamW step over the arena: weight decay only on
// tensors marked for it, global-norm clipping.
import { test } from "node:test";
import assert from "node:assert/strict";
import { learningRate, optimStep, createOptimState, gradNorm, type ScheduleConfig } from "../src/train/optim.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { MoeModel, initParams } from "../src/model/model.js";
import { createBackend } from "../src/backend/index.js";

const base: ScheduleConfig = { lr: 1e-3, minLr: 1e-4, warmupSteps: 10, totalSteps: 110, schedule: "cosine", wsdDecayFraction: 0.2 };
const near = (a: number, b: number) => assert.ok(Math.abs(a - b) <= 1e-15 + 1e-12 * Math.abs(b), `${a} vs ${b}`);

test("warmup is linear from lr/warmup to lr", () => {
  near(learningRate(base, 1), 1e-4);
  near(learningRate(base, 5), 5e-4);
  near(learningRate(base, 10), 1e-3);
});

test("cosine, linear, constant and WSD match their closed forms", () => {
  // cosine: midpoint of the decay is the mean of lr and minLr, the end is minLr
  near(learningRate(base, 60), (1e-3 + 1e-4) / 2);
  near(learningRate(base, 110), 1e-4);
  near(learningRate(base, 35), 1e-4 + 0.5 * 9e-4 * (1 + Math.cos(Math.PI * 0.25)));
  const lin = { ...base, schedule: "linear" as const };
  near(learningRate(lin, 60), 5.5e-4);
  near(learningRate(lin, 110), 1e-4);
  near(learningRate({ ...base, schedule: "constant" }, 90), 1e-3);
  const wsd = { ...base, schedule: "wsd" as const }; // decay over the last 22 steps (88 → 110)
  near(learningRate(wsd, 88), 1e-3);
  near(learningRate(wsd, 99), 1e-3 + (1e-4 - 1e-3) * 0.5);
  near(learningRate(wsd, 110), 1e-4);
  near(learningRate({ ...base, warmupSteps: 0, schedule: "constant" }, 1), 1e-3);
});

test("AdamW step: decay only on decay tensors; clipping scales gradients to the clip norm", () => {
  const be = createBackend({ name: "ref" });
  const hf = parseHfConfig({ model_type: "mixtral", vocab_size: 20, hidden_size: 8, intermediate_size: 12, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, num_local_experts: 2, num_experts_per_tok: 1 });
  const m = new MoeModel(resolveConfig(hf), be, { B: 1, T: 2, dtype: "f64" });
  initParams(m, 1, 0.5);
  const before = Float64Array.from(m.params);
  // zero gradients: Adam's update is 0, only decoupled decay moves decay tensors by lr·wd·p
  const st = createOptimState(m.params);
  optimStep(be, m.layout, m.params, m.grads, st, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 0 }, 1e-2, 0);
  for (const t of m.layout.tensors) {
    for (let i = t.offset; i < t.offset + t.size; i++) near(m.params[i]!, t.decay ? before[i]! * (1 - 1e-3) : before[i]!);
  }
  assert.ok(m.layout.byName.get("model.embed_tokens.weight")!.decay === false);
  assert.ok(m.layout.byName.get("model.layers.0.input_layernorm.weight")!.decay === false);
  assert.ok(m.layout.byName.get("model.layers.0.self_attn.q_proj.weight")!.decay === true);
  // clipping: a gradient of norm 5 is scaled to norm 1 before the update
  m.grads.fill(0);
  m.grads[0] = 3;
  m.grads[1] = 4;
  const r = optimStep(be, m.layout, m.params, m.grads, createOptimState(m.params), { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, gradClip: 1 }, 1e-2, gradNorm(be, m.grads));
  assert.equal(r.clipped, true);
  near(r.gradNorm, 5);
  near(gradNorm(be, m.grads), 1);
});
