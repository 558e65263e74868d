// Model families end to end from an HF config.json object: parseHfConfig → resolveConfig →
// MoeModel on the native backend (forward + backward at init), the HF tensor names of each
// family, that HF views tile the parameter arena exactly, config validation errors, and
// parameterCounts against a hand computation.
// Not: numerics against PyTorch (model-golden.test.ts) or gradient correctness (model-gradcheck).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../src/backend/index.js";
import { ConfigError, FAMILIES, parameterCounts, parseHfConfig, resolveConfig, type Family, type ModelConfig } from "../src/model/config.js";
import { MoeModel, initParams, type StepOptions } from "../src/model/model.js";
import { buildLayout } from "../src/model/params.js";
import { sampleRouterNoise } from "../src/moe/noise.js";
import { tinyHfConfig, tokens, type TinySizes } from "./model-util.js";
import { rng } from "./util.js";

const SIZES: TinySizes = { V: 64, C: 16, L: 2, NH: 4, KVH: 2, E: 4, K: 2, F: 12 };
const HS = SIZES.C / SIZES.NH;

function resolved(fam: Family, patch: Record<string, unknown> = {}): ModelConfig {
  return resolveConfig(parseHfConfig({ ...tinyHfConfig(fam, SIZES), ...patch }));
}

/** The HF checkpoint keys a family's model must have, written out from the HF modeling code's naming. */
function expectedHfNames(fam: Family, cfg: ModelConfig): Map<string, number[]> {
  const { V, C, E, F } = SIZES;
  const out = new Map<string, number[]>();
  const put = (n: string, shape: number[]) => out.set(n, shape);
  const LN = fam === "phimoe";
  const attnBias = fam === "phimoe" || fam === "qwen2_moe";
  put("model.embed_tokens.weight", [V, C]);
  for (let l = 0; l < SIZES.L; l++) {
    const p = `model.layers.${l}`;
    put(`${p}.input_layernorm.weight`, [C]);
    put(`${p}.post_attention_layernorm.weight`, [C]);
    if (LN) {
      put(`${p}.input_layernorm.bias`, [C]);
      put(`${p}.post_attention_layernorm.bias`, [C]);
    }
    const a = `${p}.self_attn`;
    put(`${a}.q_proj.weight`, [SIZES.NH * HS, C]);
    put(`${a}.k_proj.weight`, [SIZES.KVH * HS, C]);
    put(`${a}.v_proj.weight`, [SIZES.KVH * HS, C]);
    put(`${a}.o_proj.weight`, [C, SIZES.NH * HS]);
    if (attnBias) {
      put(`${a}.q_proj.bias`, [SIZES.NH * HS]);
      put(`${a}.k_proj.bias`, [SIZES.KVH * HS]);
      put(`${a}.v_proj.bias`, [SIZES.KVH * HS]);
    }
    if (fam === "phimoe") put(`${a}.o_proj.bias`, [C]); // qwen2: no o_proj bias
    if (fam === "qwen3_moe") {
      put(`${a}.q_norm.weight`, [HS]);
      put(`${a}.k_norm.weight`, [HS]);
    }
    if (fam === "olmoe") {
      put(`${a}.q_norm.weight`, [SIZES.NH * HS]);
      put(`${a}.k_norm.weight`, [SIZES.KVH * HS]);
    }
    const qwen = fam === "qwen2_moe" || fam === "qwen3_moe";
    if (fam === "qwen2_moe" && l === 0) {
      // decoder_sparse_step 2: layer 0 is a dense Qwen2MoeMLP
      const I = cfg.denseIntermediateSize;
      put(`${p}.mlp.gate_proj.weight`, [I, C]);
      put(`${p}.mlp.up_proj.weight`, [I, C]);
      put(`${p}.mlp.down_proj.weight`, [C, I]);
      continue;
    }
    const m = qwen || fam === "olmoe" ? `${p}.mlp` : `${p}.block_sparse_moe`;
    const [g, u, d] = qwen || fam === "olmoe" ? ["gate_proj", "up_proj", "down_proj"] : ["w1", "w3", "w2"];
    put(`${m}.gate.weight`, [E, C]);
    for (let e = 0; e < E; e++) {
      put(`${m}.experts.${e}.${g}.weight`, [F, C]);
      put(`${m}.experts.${e}.${u}.weight`, [F, C]);
      put(`${m}.experts.${e}.${d}.weight`, [C, F]);
    }
    if (fam === "qwen2_moe") {
      const S = cfg.moe.sharedExpertIntermediateSize;
      put(`${m}.shared_expert.gate_proj.weight`, [S, C]);
      put(`${m}.shared_expert.up_proj.weight`, [S, C]);
      put(`${m}.shared_expert.down_proj.weight`, [C, S]);
      put(`${m}.shared_expert_gate.weight`, [1, C]);
    }
  }
  put("model.norm.weight", [C]);
  if (LN) put("model.norm.bias", [C]);
  put("lm_head.weight", [V, C]);
  if (fam === "phimoe") put("lm_head.bias", [V]);
  return out;
}

/** The step options each family trains with (its own balancing loss; SparseMixer noise and jitter for PhiMoE). */
function stepOptions(cfg: ModelConfig, N: number): StepOptions {
  const L = cfg.numLayers, E = cfg.moe.numExperts, K = cfg.moe.topK, C = cfg.hiddenSize;
  const coefs = new Array(L).fill(0.01) as number[];
  switch (cfg.family) {
    case "phimoe": {
      const r = rng(5);
      return {
        train: true, balance: "global", auxCoefs: coefs,
        noise: Array.from({ length: L }, (_, l) => sampleRouterNoise({ seed: 1, step: 0, layer: l }, N, K, E, "v2")),
        jitter: Array.from({ length: L }, () => Float64Array.from({ length: N * C }, () => 1 - cfg.moe.inputJitter + 2 * cfg.moe.inputJitter * r())),
      };
    }
    case "skywork":
      return { train: true, balance: "skywork", auxCoefs: coefs };
    default:
      return { train: true, balance: "switch", auxCoefs: coefs, zCoef: 1e-3 };
  }
}

const be = createBackend({ name: "native", threads: 2 });

for (const fam of FAMILIES.filter((f) => f !== "llama")) {
  test(`${fam}: config.json → resolveConfig → native model; loss ≈ log V at init; every tensor gets a finite nonzero gradient`, () => {
    const cfg = resolved(fam);
    assert.equal(cfg.family, fam);
    const B = 4, T = 16, N = B * T;
    const m = new MoeModel(cfg, be, { B, T });
    initParams(m, 3, 0.02);
    const { ids, targets } = tokens(N, SIZES.V, 9);
    const r = m.forward(ids, targets, stepOptions(cfg, N));
    assert.ok(Number.isFinite(r.loss) && Number.isFinite(r.ce));
    assert.equal(r.tokens, N - 1);
    // init std 0.02: logits have std ≈ 0.02·√C = 0.08, so CE ≈ log V + 0.003 ± 0.01 (63 targets)
    assert.ok(Math.abs(r.ce - Math.log(SIZES.V)) < 0.06, `ce ${r.ce} vs log V ${Math.log(SIZES.V)}`);
    assert.ok(r.loss >= r.ce, "balancing terms are non-negative");
    r.moe.forEach((st, l) => assert.equal(st !== undefined, cfg.moe.moeLayers[l]));
    m.zeroGrad();
    m.backward(1);
    for (const t of m.layout.tensors) {
      const g = m.grad(t.name);
      assert.ok(g.every(Number.isFinite), `${fam}: ${t.name} gradient is finite`);
      assert.ok(g.some((v) => v !== 0), `${fam}: ${t.name} gradient is nonzero`);
    }
  });

  test(`${fam}: HF tensor names and shapes; HF views tile the arena exactly once`, () => {
    const cfg = resolved(fam);
    const { layout } = buildLayout(cfg);
    const want = expectedHfNames(fam, cfg);
    const got = new Map(layout.hfTensors.map((s) => [s.name, s.shape]));
    assert.equal(got.size, layout.hfTensors.length, "HF names are unique");
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), `${fam} HF names`);
    for (const [n, shape] of want) assert.deepEqual(got.get(n), shape, `${fam} shape of ${n}`);
    // disjoint, contiguous, covering [0, size)
    const views = [...layout.hfTensors].sort((a, b) => a.offset - b.offset);
    let end = 0, total = 0;
    for (const v of views) {
      assert.equal(v.size, v.shape.reduce((a, b) => a * b, 1), `${v.name} size = Π shape`);
      assert.equal(v.offset, end, `${v.name} starts where the previous view ends`);
      end = v.offset + v.size;
      total += v.size;
      const owners = layout.tensors.filter((t) => t.offset <= v.offset && v.offset + v.size <= t.offset + t.size);
      assert.equal(owners.length, 1, `${v.name} lies inside exactly one storage tensor`);
    }
    assert.equal(end, layout.size);
    assert.equal(total, layout.size);
    // storage tensors tile the arena too
    let s = 0;
    for (const t of layout.tensors) {
      assert.equal(t.offset, s);
      s += t.size;
    }
    assert.equal(s, layout.size);
    assert.equal(parameterCounts(cfg).total, layout.size, `${fam} parameterCounts.total = layout.size`);
  });
}

test("resolveConfig maps each family's routing and attention options", () => {
  const mix = resolved("mixtral");
  assert.deepEqual(mix.moe.router, { kind: "softmax_topk", topK: 2, normTopkProb: true });
  const phi = resolved("phimoe");
  assert.equal(phi.moe.router.kind, "sparsemixer");
  assert.ok(phi.moe.router.kind === "sparsemixer" && phi.moe.router.jitterEps === 0.01 && phi.moe.router.variant === "v2");
  assert.equal(phi.moe.inputJitter, 0.01);
  assert.equal(resolved("phimoe", { router_jitter_noise: 0.2, input_jitter_noise: 0 }).moe.inputJitter, 0, "the two jitter keys are separate");
  const q2 = resolved("qwen2_moe");
  assert.deepEqual(q2.moe.router, { kind: "softmax_topk", topK: 2, normTopkProb: false });
  assert.deepEqual(resolved("qwen2_moe", { decoder_sparse_step: 1, mlp_only_layers: [1] }).moe.moeLayers, [true, false]);
  assert.equal(resolved("qwen3_moe").headDim, HS);
  const sky = resolved("skywork");
  assert.deepEqual(sky.moe.router, { kind: "softmax_topk", topK: 2, normTopkProb: true, logitsNormStd: 1 });
  assert.deepEqual(resolved("skywork", { moe_use_logits_norm: false }).moe.router, { kind: "softmax_topk", topK: 2, normTopkProb: true });
  assert.equal(resolved("olmoe", { num_key_value_heads: null }).numKvHeads, SIZES.NH, "null KV heads = MHA");
});

test("parseHfConfig / resolveConfig reject bad configs with a useful message", () => {
  const err = (f: () => unknown, re: RegExp) => assert.throws(f, (e: unknown) => e instanceof ConfigError && re.test(e.message), String(re));
  const mix = tinyHfConfig("mixtral", SIZES);
  // unknown keys, with a suggestion when one is close
  err(() => parseHfConfig({ ...mix, num_local_expert: 8 }), /unknown key 'num_local_expert'.*did you mean 'num_local_experts'/);
  err(() => parseHfConfig({ ...tinyHfConfig("qwen2_moe", SIZES), norm_topk_probs: true }), /did you mean 'norm_topk_prob'/);
  err(() => parseHfConfig({ ...mix, completely_unrelated_option: 1 }), /unknown key 'completely_unrelated_option' for model_type mixtral$/);
  // a key of another family is unknown here
  err(() => parseHfConfig({ ...mix, shared_expert_intermediate_size: 8 }), /unknown key 'shared_expert_intermediate_size'/);
  // wrong types
  err(() => parseHfConfig({ ...mix, hidden_size: "16" }), /'hidden_size' must be number/);
  err(() => parseHfConfig({ ...tinyHfConfig("qwen2_moe", SIZES), norm_topk_prob: 1 }), /'norm_topk_prob' must be boolean/);
  err(() => parseHfConfig({ ...tinyHfConfig("qwen2_moe", SIZES), mlp_only_layers: ["1"] }), /'mlp_only_layers' must be an array of numbers/);
  // model_type
  err(() => parseHfConfig({ ...mix, model_type: "gpt2" }), /model_type "gpt2" is not supported/);
  err(() => parseHfConfig({ hidden_size: 8 }), /model_type undefined is not supported/);
  err(() => parseHfConfig([mix]), /not a JSON object/);
  // inert HF keys are accepted
  assert.doesNotThrow(() => parseHfConfig({ ...mix, _name_or_path: "x", transformers_version: "4.45", use_cache: true, torch_dtype: "bfloat16", output_router_logits: false }));
  // skywork: num_experts is a one-element list; the tanh 2-layer gate is rejected
  const sky = tinyHfConfig("skywork", SIZES);
  err(() => parseHfConfig({ ...sky, num_experts: 4 }), /'num_experts' must be an array of numbers/);
  err(() => resolveConfig(parseHfConfig({ ...sky, num_experts: [4, 4] })), /num_experts must be a one-element list/);
  err(() => resolveConfig(parseHfConfig({ ...sky, num_experts: [] })), /num_experts must be a one-element list/);
  err(() => resolveConfig(parseHfConfig({ ...sky, moe_2layer_gate: true })), /moe_2layer_gate true/);
  const skyDefaultGate = { ...sky };
  delete skyDefaultGate.moe_2layer_gate; // the Skywork default is true
  err(() => resolveConfig(parseHfConfig(skyDefaultGate)), /moe_2layer_gate true/);
  // unsupported options
  // clip_qkv and yarn are honoured now (test/hf-keys.test.ts); a bad value or an unknown type still names the key
  err(() => resolveConfig(parseHfConfig({ ...tinyHfConfig("olmoe", SIZES), clip_qkv: 0 })), /clip_qkv/);
  err(() => resolveConfig(parseHfConfig({ ...mix, rope_scaling: { type: "dynamic", factor: 4 } })), /rope_scaling/);
  err(() => resolveConfig(parseHfConfig({ ...mix, hidden_act: "gelu" })), /hidden_act 'gelu'/);
  err(() => resolveConfig(parseHfConfig({ ...mix, num_key_value_heads: 3 })), /not a multiple of num_key_value_heads 3/);
  err(() => resolveConfig(parseHfConfig({ ...mix, num_local_experts: 0 })), /num_local_experts must be a positive integer/);
});

test("parameterCounts: total and active equal a hand computation (Qwen2-MoE, one dense layer, shared expert)", () => {
  const cfg = resolved("qwen2_moe");
  const { V, C, E, K, F } = SIZES; // 64, 16, 4, 2, 12
  const I = cfg.denseIntermediateSize, S = cfg.moe.sharedExpertIntermediateSize; // 13, 11
  assert.deepEqual([I, S], [13, 11]);
  const embed = V * C, head = V * C, finalNorm = C; // 1024, 1024, 16
  const attn = C * C + 2 * (2 * HS) * C + C * C; // q 256 + k 128 + v 128 + o 256 = 768
  const qkvBias = C + 2 * 2 * HS; // 16 + 8 + 8 = 32
  const norms = 2 * C; // 32
  const layerCommon = attn + qkvBias + norms; // 832
  const dense = 3 * C * I; // 624
  const router = E * C; // 64
  const oneExpert = 3 * C * F; // 576
  const shared = 3 * C * S + C; // 528 + 16 (sigmoid gate)
  const total = embed + head + finalNorm + (layerCommon + dense) + (layerCommon + router + E * oneExpert + shared);
  const active = total - (E - K) * oneExpert;
  assert.equal(total, 7264);
  assert.equal(active, 6112);
  const pc = parameterCounts(cfg);
  assert.deepEqual(pc, { total, active, experts: E });
  assert.equal(buildLayout(cfg).layout.size, total);
});

test("parseHfConfig rejects a wrong type for a key whose default is null, and null for a non-nullable key", () => {
  const mix = tinyHfConfig("mixtral", SIZES);
  assert.throws(() => resolveConfig(parseHfConfig({ ...mix, sliding_window: "4096" })), ConfigError);
  assert.throws(() => resolveConfig(parseHfConfig({ ...mix, rms_norm_eps: null })), ConfigError);
  assert.throws(() => resolveConfig(parseHfConfig({ ...mix, num_experts_per_tok: null })), ConfigError);
});

test("resolveConfig rejects num_experts_per_tok outside 1..num_experts and a negative sliding window", () => {
  const mix = tinyHfConfig("mixtral", SIZES);
  for (const patch of [{ num_experts_per_tok: 0 }, { num_experts_per_tok: 5 }, { num_experts_per_tok: 1.5 }, { sliding_window: -3 }]) {
    assert.throws(() => resolveConfig(parseHfConfig({ ...mix, ...patch })), ConfigError, JSON.stringify(patch));
  }
});
