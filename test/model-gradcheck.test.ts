// Whole-model gradient check: central finite differences in f64 on the ref backend of
// forward(...).loss (CE with one ignored target + balancing terms) against model.backward,
// for EVERY parameter element, one tiny model per router type, dispatch mode and family.
// Every perturbation is verified not to change a routing decision (top-k choice, capacity
// cut, SparseMixer mask), so the loss is smooth where it is differentiated.
// Not: a comparison with PyTorch (model-golden.test.ts does that) nor a native test.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../src/backend/index.js";
import { parseHfConfig, resolveConfig, type DispatchConfig, type ModelConfig } from "../src/model/config.js";
import { MoeModel, type StepOptions } from "../src/model/model.js";
import { sampleRouterNoise } from "../src/moe/noise.js";
import { gradcheckModel, randomizeParams, tinyConfig, tinyHfConfig, tokens } from "./model-util.js";
import type { RouterConfig } from "../src/moe/router.js";

const be = createBackend({ name: "ref" });
const B = 2, T = 5;

function build(cfg: ModelConfig, seed: number): { m: MoeModel; ids: Int32Array; targets: Int32Array } {
  const m = new MoeModel(cfg, be, { B, T, dtype: "f64" });
  randomizeParams(m, seed);
  const { ids, targets } = tokens(B * T, cfg.vocabSize, seed + 1000);
  return { m, ids, targets };
}

function check(what: string, cfg: ModelConfig, opt: StepOptions, seed = 1, extra?: (m: MoeModel, r: ReturnType<MoeModel["forward"]>) => void): void {
  const { m, ids, targets } = build(cfg, seed);
  assert.ok(targets.includes(-100), "one target is ignored");
  const r = m.forward(ids, targets, opt);
  assert.ok(Number.isFinite(r.loss));
  assert.equal(r.tokens, B * T - 1);
  extra?.(m, r);
  const rep = gradcheckModel(m, ids, targets, opt, { what });
  assert.equal(rep.checked, m.layout.size, "every parameter element checked");
  // the check is not vacuous: every trainable tensor (routers included) received a nonzero gradient
  // (the aux-free router bias is a buffer: selection only, no gradient by construction)
  for (const t of m.layout.tensors.filter((x) => x.trainable)) {
    const g = m.grads.subarray(t.offset, t.offset + t.size);
    assert.ok(g.some((v) => Math.abs(v) > 1e-9), `${what}: ${t.name} has an all-zero gradient`);
  }
}

const L = 2;
const router = (r: RouterConfig) => ({ moe: { router: r, topK: r.topK } });
const coefs = (c: number) => new Array(L).fill(c) as number[];

test("gradcheck: softmax_topk with renormalisation (Mixtral), no balancing loss", () => {
  check("mixtral", tinyConfig(), { train: true });
});

test("gradcheck: softmax_topk without renormalisation + GRIN global LB loss", () => {
  check("softmax-norenorm", tinyConfig(router({ kind: "softmax_topk", topK: 2, normTopkProb: false })), {
    train: true, balance: "global", auxCoefs: coefs(0.01),
  });
});

test("gradcheck: Skywork logit normalisation λ=1 + Skywork aux (0.01) + z-loss (1e-3)", () => {
  check("skywork", tinyConfig(router({ kind: "softmax_topk", topK: 2, normTopkProb: true, logitsNormStd: 1 })), {
    train: true, balance: "skywork", auxCoefs: coefs(0.01), zCoef: 1e-3,
  }, 1, (_m, r) => {
    for (const st of r.moe) assert.ok(st && st.aux > 0 && st.z > 0);
  });
});

test("gradcheck: Switch aux loss (0.01) on top-k softmax", () => {
  check("switch", tinyConfig(), { train: true, balance: "switch", auxCoefs: coefs(0.01) });
});

test("gradcheck: sigmoid_bias router with a nonzero selection bias", () => {
  const bias = Float64Array.from([0.3, -0.25, 0.1, -0.4]);
  const cfg = tinyConfig(router({ kind: "sigmoid_bias", topK: 2, normTopkProb: true }));
  check("sigmoid_bias", cfg, { train: true, bias: [bias, bias] });
  const cfg2 = tinyConfig(router({ kind: "sigmoid_bias", topK: 2, normTopkProb: false }));
  // the bias must matter for selection in this setup (else the test would not cover it)
  const { m, ids, targets } = build(cfg2, 1);
  const a = m.forward(ids, targets, { train: true, bias: [bias, bias] }).moe.map((s) => [...s!.tokensPerExpert].join());
  const b = m.forward(ids, targets, { train: true }).moe.map((s) => [...s!.tokensPerExpert].join());
  assert.notDeepEqual(a, b, "the selection bias changes routing");
  check("sigmoid_bias-norenorm", cfg2, { train: true, bias: [bias, bias] });
});

for (const policy of ["probs", "position"] as const) {
  test(`gradcheck: capacity dispatch CF 1.0, policy ${policy} (some assignments dropped)`, () => {
    const dispatch: DispatchConfig = { kind: "capacity", capacityFactor: 1.0, policy };
    check(`capacity-${policy}`, tinyConfig({ moe: { dispatch } }), { train: true }, 1, (_m, r) => {
      const drops = r.moe.reduce((s, st) => s + st!.dropRate, 0);
      assert.ok(drops > 0, "capacity 1.0 drops something in this setup");
    });
  });
}

// ε = 0.3 (not GRIN's 0.01) so that several experts survive the mask: with ε = 0.01 and
// generic logits most picks keep only the argmax, w = 1 and the router gets no gradient.
const sparsemixer = (scaleExpertGrad: boolean, jitterEps = 0.3): RouterConfig => ({ kind: "sparsemixer", variant: "v2", topK: 2, jitterEps, scaleExpertGrad });

type SmActs = { acts: { moe: { route: { scales: Float64Array; saved: { pickP: Float64Array; pickW: Float64Array } } } }[] };

test("gradcheck: SparseMixer-v2 in eval mode (differentiable: w = p_D of the masked softmax)", () => {
  check("sparsemixer-eval", tinyConfig(router(sparsemixer(false))), { train: false, balance: "global", auxCoefs: coefs(0.01) }, 1, (m) => {
    // the mask is active somewhere, and some picks keep several experts (w < 1)
    let zeros = 0, partial = 0;
    for (const a of (m.workspace as unknown as SmActs).acts) {
      for (const v of a.moe.route.saved.pickP) if (v === 0) zeros++;
      for (const w of a.moe.route.saved.pickW) if (w < 0.99) partial++;
    }
    assert.ok(zeros > 0 && partial > 0, `masked ${zeros}, partial picks ${partial}`);
  });
});

function sparsemixerTrain(scaleExpertGrad: boolean): void {
  const cfg = tinyConfig(router(sparsemixer(scaleExpertGrad, 1.0)));
  const noise = [0, 1].map((l) => sampleRouterNoise({ seed: 7, step: 3, layer: l }, B * T, 2, 4, "v2"));
  const opt: StepOptions = { train: true, noise };
  const { m, ids, targets } = build(cfg, 1);
  m.forward(ids, targets, opt);
  // some pick of the last layer is a non-argmax sample with s = 1/3 (else scaleExpertGrad is moot)
  const acts = (m.workspace as unknown as SmActs).acts;
  assert.ok([...acts[L - 1]!.moe.route.scales].some((s) => Math.abs(s - 1 / 3) < 1e-15), "a scaled pick exists in the last layer");
  const n = m.names;
  const only = [n.lmHead!, n.normF, n.layers[L - 1]!.w13!, n.layers[L - 1]!.w2!];
  const rep = gradcheckModel(m, ids, targets, opt, { only, what: "sparsemixer-train" });
  assert.ok(rep.checked > 0);
}

test("gradcheck: SparseMixer-v2 train mode, parameters downstream of every router (scaleExpertGrad)", () => {
  sparsemixerTrain(true);
});

test("SparseMixer-v2 train mode without scaleExpertGrad (paper Algorithm 1): expert grads are NOT the true gradient", () => {
  // also shows the check has power: a gradient off by the factor s is caught
  assert.throws(() => sparsemixerTrain(false), /grad model\.layers\.1\.block_sparse_moe\.experts\.w(13|2)/);
});

function family(fam: ModelConfig["family"], patch: Record<string, unknown> = {}): ModelConfig {
  return resolveConfig(parseHfConfig({ ...tinyHfConfig(fam), ...patch }));
}

test("gradcheck: PhiMoE family (LayerNorm, q/k/v/o + lm_head bias, sliding window, SparseMixer eval)", () => {
  // router_jitter_noise 0.3 so several experts survive the SparseMixer mask (see above)
  const cfg = family("phimoe", { router_jitter_noise: 0.3 });
  assert.equal(cfg.norm.kind, "layer");
  assert.ok(cfg.qkvBias && cfg.oBias && cfg.lmHeadBias && cfg.slidingWindow === 3);
  check("phimoe", cfg, { train: false });
});

test("gradcheck: PhiMoE family with softmax_topk routing in training", () => {
  const cfg = family("phimoe", { input_jitter_noise: 0 });
  cfg.moe.router = { kind: "softmax_topk", topK: 2, normTopkProb: true };
  check("phimoe-softmax", cfg, { train: true, balance: "switch", auxCoefs: coefs(0.01), zCoef: 1e-3 });
});

test("gradcheck: Qwen2-MoE family (shared expert with sigmoid gate, qkv bias, one dense layer)", () => {
  const cfg = family("qwen2_moe");
  assert.deepEqual(cfg.moe.moeLayers, [false, true]);
  assert.ok(cfg.qkvBias && cfg.moe.sharedExpertIntermediateSize > 0);
  check("qwen2_moe", cfg, { train: true, balance: "switch", auxCoefs: coefs(0.01) });
});

test("gradcheck: Qwen3-MoE family (q/k RMSNorm per head)", () => {
  const cfg = family("qwen3_moe");
  assert.equal(cfg.qkNorm, "head");
  check("qwen3_moe", cfg, { train: true });
});

test("gradcheck: OLMoE family (q/k RMSNorm over the whole projection)", () => {
  const cfg = family("olmoe");
  assert.equal(cfg.qkNorm, "full");
  check("olmoe", cfg, { train: true, zCoef: 1e-3 });
});

test("backward(gradScale) scales every gradient (LM and balancing terms) and accumulates into grads", () => {
  const cfg = tinyConfig(router({ kind: "softmax_topk", topK: 2, normTopkProb: true, logitsNormStd: 1 }));
  const { m, ids, targets } = build(cfg, 2);
  const opt: StepOptions = { train: true, balance: "skywork", auxCoefs: coefs(0.5), zCoef: 0.1 };
  m.forward(ids, targets, opt);
  m.zeroGrad();
  m.backward(1);
  const g1 = Float64Array.from(m.grads);
  m.forward(ids, targets, opt);
  m.zeroGrad();
  m.backward(0.25);
  m.forward(ids, targets, opt);
  m.backward(0.5); // accumulates: 0.75 in all
  for (let i = 0; i < g1.length; i++) {
    assert.ok(Math.abs(m.grads[i]! - 0.75 * g1[i]!) <= 1e-12 * Math.abs(g1[i]!) + 1e-15, `grad[${i}]: ${m.grads[i]} vs 0.75·${g1[i]}`);
  }
});
