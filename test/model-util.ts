// Helpers shared by the whole-model and MoE-layer tests: tiny configs, generic parameter
// randomisation, a route signature (to prove finite differences did not flip a routing
// decision) and a whole-model finite-difference gradient check.
// Not: a reference implementation of anything (the tests hold their own naive loops).
import assert from "node:assert/strict";
import type { ModelConfig } from "../src/model/config.js";
import { MoeModel, type StepOptions } from "../src/model/model.js";
import { rng } from "./util.js";

/** A tiny Mixtral-style resolved config; `patch` overrides fields (moe fields merged one level). */
export function tinyConfig(patch: Partial<Omit<ModelConfig, "moe">> & { moe?: Partial<ModelConfig["moe"]> } = {}): ModelConfig {
  const L = patch.numLayers ?? 2;
  const base: ModelConfig = {
    family: "mixtral", vocabSize: 11, hiddenSize: 8, numLayers: L, numHeads: 2, numKvHeads: 1, headDim: 4,
    norm: { kind: "rms", eps: 1e-5 }, rope: { theta: 10000, rotaryDim: 4 }, slidingWindow: 0, qkvBias: false, oBias: false,
    qkNorm: "none", tieEmbeddings: false, lmHeadBias: false, denseIntermediateSize: 7,
    moe: {
      numExperts: 4, topK: 2, expertIntermediateSize: 6, moeLayers: Array.from({ length: L }, () => true),
      sharedExpertIntermediateSize: 0, router: { kind: "softmax_topk", topK: 2, normTopkProb: true },
      dispatch: { kind: "dropless" }, inputJitter: 0,
    },
  };
  const { moe, ...rest } = patch;
  return { ...base, ...rest, moe: { ...base.moe, ...(moe ?? {}) } };
}

/**
 * Fills every parameter with generic values (not the ones/zeros init): matrices N(0, std),
 * norm weights 1 + 0.2·N(0,1), biases 0.2·N(0,1) — so every gradient formula is exercised
 * with non-trivial values.
 */
export function randomizeParams(model: MoeModel, seed: number, std = 0.4): void {
  const r = rng(seed);
  const normal = () => {
    const u = Math.max(r(), 1e-12), v = r();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  };
  for (const t of model.layout.tensors) {
    const a = model.params.subarray(t.offset, t.offset + t.size);
    for (let i = 0; i < t.size; i++) a[i] = t.init === "ones" ? 1 + 0.2 * normal() : t.init === "zeros" ? 0.2 * normal() : std * normal();
  }
}

/**
 * Every discrete routing decision of the last forward: chosen experts, dispatch keys (a
 * dropped assignment has key E) and, for SparseMixer, which experts each pick masked.
 * Reads the model's private per-layer MoE state (test-only introspection).
 */
export function routeSignature(model: MoeModel): string {
  const acts = (model.workspace as unknown as { acts: { moe?: { route: { topExperts: Int32Array; saved: { pickP: Float64Array | null } } | null; keys: Int32Array } }[] }).acts;
  const parts: string[] = [];
  for (const a of acts) {
    if (!a.moe || !a.moe.route) continue;
    parts.push([...a.moe.route.topExperts].join(","), [...a.moe.keys].join(","));
    const pp = a.moe.route.saved.pickP;
    if (pp) parts.push([...pp].map((v) => (v > 0 ? 1 : 0)).join(""));
  }
  return parts.join("|");
}

export interface GradcheckReport {
  checked: number;
  maxRelErr: number;
  worst: string;
}

/**
 * Central differences of forward(...).loss w.r.t. every parameter element (or those of the
 * storage tensors `only` names), compared with model.backward grads:
 * |fd − an| ≤ rtol·max(|an|, |fd|) + atol. Asserts that no perturbation changed a routing
 * decision.
 */
export function gradcheckModel(
  model: MoeModel, ids: Int32Array, targets: Int32Array, opt: StepOptions,
  { h = 1e-6, rtol = 1e-5, atol = 1e-8, only, what = "model" }: { h?: number; rtol?: number; atol?: number; only?: string[]; what?: string } = {},
): GradcheckReport {
  const P = model.params as Float64Array;
  assert.ok(P instanceof Float64Array, "gradcheck needs an f64 model");
  model.zeroGrad();
  model.forward(ids, targets, opt);
  const sig0 = routeSignature(model);
  model.backward(1);
  const an = Float64Array.from(model.grads);
  const tensors = only ? only.map((n) => { const t = model.layout.byName.get(n); assert.ok(t, `no tensor ${n}`); return t; }) : model.layout.tensors;
  let checked = 0, maxRel = 0, worst = "";
  for (const t of tensors) {
    for (let j = 0; j < t.size; j++) {
      const i = t.offset + j;
      const x0 = P[i]!;
      P[i] = x0 + h;
      const lp = model.forward(ids, targets, opt).loss;
      const sp = routeSignature(model);
      P[i] = x0 - h;
      const lm = model.forward(ids, targets, opt).loss;
      const sm = routeSignature(model);
      P[i] = x0;
      assert.ok(sp === sig0 && sm === sig0, `${what}: perturbing ${t.name}[${j}] by ±${h} changed a routing decision; pick another seed`);
      const fd = (lp - lm) / (2 * h);
      const a = an[i]!;
      const err = Math.abs(fd - a);
      const scale = Math.max(Math.abs(fd), Math.abs(a));
      if (!(err <= rtol * scale + atol)) assert.fail(`${what}: grad ${t.name}[${j}]: backward ${a}, finite difference ${fd} (rtol ${rtol}, atol ${atol})`);
      const rel = err / (scale + atol);
      if (rel > maxRel) [maxRel, worst] = [rel, `${t.name}[${j}]`];
      checked++;
    }
  }
  return { checked, maxRelErr: maxRel, worst };
}

/** Token ids and targets for (B, T) with one IGNORE_INDEX target. */
export function tokens(N: number, V: number, seed: number): { ids: Int32Array; targets: Int32Array } {
  const r = rng(seed);
  const ids = Int32Array.from({ length: N }, () => Math.floor(r() * V));
  const targets = Int32Array.from({ length: N }, () => Math.floor(r() * V));
  targets[Math.min(2, N - 1)] = -100;
  return { ids, targets };
}

export interface TinySizes {
  V: number; C: number; L: number; NH: number; KVH: number; E: number; K: number; F: number;
}
export const TINY: TinySizes = { V: 11, C: 8, L: 2, NH: 2, KVH: 1, E: 4, K: 2, F: 6 };

/** A tiny config.json object (HF keys only) of one family. */
export function tinyHfConfig(family: ModelConfig["family"], s: TinySizes = TINY): Record<string, unknown> {
  const common = {
    model_type: family, vocab_size: s.V, hidden_size: s.C, num_hidden_layers: s.L, num_attention_heads: s.NH,
    num_key_value_heads: s.KVH, rope_theta: 10000, tie_word_embeddings: false,
  };
  switch (family) {
    case "mixtral":
      return { ...common, intermediate_size: s.F, num_local_experts: s.E, num_experts_per_tok: s.K, rms_norm_eps: 1e-5, architectures: ["MixtralForCausalLM"] };
    case "phimoe":
      return {
        ...common, intermediate_size: s.F, num_local_experts: s.E, num_experts_per_tok: s.K, rms_norm_eps: 1e-5,
        sliding_window: 3, attention_bias: true, lm_head_bias: true, router_jitter_noise: 0.01, input_jitter_noise: 0.01,
      };
    case "qwen2_moe":
      return {
        ...common, intermediate_size: s.F + 1, moe_intermediate_size: s.F, shared_expert_intermediate_size: s.F - 1,
        num_experts: s.E, num_experts_per_tok: s.K, norm_topk_prob: false, decoder_sparse_step: 2, rms_norm_eps: 1e-6,
        use_sliding_window: false, max_window_layers: 2,
      };
    case "qwen3_moe":
      return {
        ...common, head_dim: s.C / s.NH, intermediate_size: s.F + 1, moe_intermediate_size: s.F, num_experts: s.E,
        num_experts_per_tok: s.K, norm_topk_prob: true, rms_norm_eps: 1e-6,
      };
    case "olmoe":
      return { ...common, intermediate_size: s.F, num_experts: s.E, num_experts_per_tok: s.K, norm_topk_prob: false, rms_norm_eps: 1e-5, clip_qkv: null };
    case "skywork":
      return {
        ...common, intermediate_size: s.F, num_experts: [s.E], num_experts_per_tok: s.K, moe_use_logits_norm: true,
        moe_gate_norm_std: 1, moe_2layer_gate: false, moe_use_mixtral_gating: true, rms_norm_eps: 1e-6,
      };
    case "llama":
      return { ...common, intermediate_size: s.F, rms_norm_eps: 1e-5 };
  }
}
