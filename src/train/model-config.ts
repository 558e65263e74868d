// The HF config of a model trained from scratch: family × router × preset sizes × overrides.
//
// `model.family` chooses the architecture (HF model_type), `model.router` the routing where the
// family allows it; the preset gives sizes and its own family-specific options, which are kept
// whenever the chosen family has the same key (biases, sliding window, LayerNorm eps, …).
//
//   family      routers (first = default)
//   mixtral     topk, sigmoid_bias
//   skywork     skywork (gating-logit normalisation), topk
//   phimoe      sparsemixer
//   qwen2_moe   topk, sigmoid_bias   (shared expert of the preset's, else of the expert size)
//   qwen3_moe   topk, sigmoid_bias
//   olmoe       topk, sigmoid_bias
//   llama       (dense: no router)
// With neither set, the router decides the family (topk/sigmoid_bias → mixtral,
// skywork → skywork, sparsemixer → phimoe), and the default router is skywork.
//
// Not: checkpoint loading (model/), or any training state.
import { HF_DEFAULTS, parseHfConfig, type Family, type HfConfig } from "../model/config.js";
import { preset } from "../model/presets.js";
import type { TrainConfig } from "./config.js";

export type RouterChoice = NonNullable<TrainConfig["model"]["router"]>;

export class ModelChoiceError extends Error {
  override name = "ModelChoiceError";
}

/** Routers each family can train with; the first is the family's own. */
export const FAMILY_ROUTERS: Record<Family, readonly RouterChoice[]> = {
  mixtral: ["topk", "sigmoid_bias"],
  skywork: ["skywork", "topk"],
  phimoe: ["sparsemixer"],
  qwen2_moe: ["topk", "sigmoid_bias"],
  qwen3_moe: ["topk", "sigmoid_bias"],
  olmoe: ["topk", "sigmoid_bias"],
  llama: [],
};

const ROUTER_FAMILY: Record<RouterChoice, Family> = { topk: "mixtral", sigmoid_bias: "mixtral", skywork: "skywork", sparsemixer: "phimoe" };

/** The (family, router) pair a config asks for, or an error naming what the family allows. */
export function chooseFamily(c: Pick<TrainConfig["model"], "family" | "router">): { family: Family; router: RouterChoice | null } {
  const family = c.family ?? ROUTER_FAMILY[c.router ?? "skywork"];
  const allowed = FAMILY_ROUTERS[family];
  if (family === "llama") {
    if (c.router !== null) throw new ModelChoiceError(`model.router=${c.router}: model.family=llama is dense and has no router (leave model.router unset)`);
    return { family, router: null };
  }
  const router = c.router ?? allowed[0]!;
  if (!allowed.includes(router)) {
    throw new ModelChoiceError(`model.router=${router} is not available for model.family=${family} (available: ${allowed.join(", ")})`);
  }
  return { family, router };
}

/** The HF config a run trains, from the preset, overrides, family and router. */
export function buildRunHfConfig(c: TrainConfig, vocabSize: number): HfConfig {
  const { family, router } = chooseFamily(c.model);
  const base = preset(c.model.preset) as unknown as Record<string, unknown>;
  const pick = <T>(v: T | null, d: unknown): T => (v === null ? (d as T) : v);
  const E = pick(c.model.num_experts, base.num_local_experts ?? base.num_experts);
  const K = pick(c.model.top_k, base.num_experts_per_tok);
  const F = pick(c.model.expert_size, base.moe_intermediate_size ?? base.intermediate_size);
  // the preset's own options the chosen family also has (biases, window, norm eps, …)
  const keys = new Set(Object.keys(HF_DEFAULTS[family]));
  const carried: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(base)) if (keys.has(k) && k !== "model_type") carried[k] = v;
  const common = {
    ...carried,
    vocab_size: vocabSize,
    hidden_size: pick(c.model.hidden_size, base.hidden_size),
    intermediate_size: F,
    num_hidden_layers: pick(c.model.num_layers, base.num_hidden_layers),
    num_attention_heads: pick(c.model.num_heads, base.num_attention_heads),
    num_key_value_heads: pick(c.model.num_kv_heads, base.num_key_value_heads),
    max_position_embeddings: Math.max(c.train.seq_len, Number(base.max_position_embeddings)),
    initializer_range: c.model.init_std,
    tie_word_embeddings: false,
    bos_token_id: null,
    eos_token_id: 0,
  };
  // head_dim from a preset of another head count would be wrong: derive it unless overridden nowhere
  if (c.model.hidden_size !== null || c.model.num_heads !== null) delete (common as Record<string, unknown>).head_dim;
  const scoring = router === "sigmoid_bias" ? { scoring_func: "sigmoid" } : {};
  const src = "train config";
  switch (family) {
    case "llama":
      return parseHfConfig({ model_type: "llama", ...common }, src);
    case "mixtral":
      return parseHfConfig({ model_type: "mixtral", ...common, num_local_experts: E, num_experts_per_tok: K, ...scoring }, src);
    case "phimoe":
      return parseHfConfig({ model_type: "phimoe", ...common, num_local_experts: E, num_experts_per_tok: K, router_jitter_noise: c.model.sparsemixer_eps }, src);
    case "skywork":
      return parseHfConfig({
        model_type: "skywork", ...common, num_experts: [E], num_experts_per_tok: K, moe_use_logits_norm: router === "skywork",
        moe_gate_norm_std: c.model.gate_norm_std, moe_2layer_gate: false, moe_use_mixtral_gating: true,
      }, src);
    case "qwen2_moe":
      return parseHfConfig({
        model_type: "qwen2_moe", ...common, num_experts: E, num_experts_per_tok: K, moe_intermediate_size: F,
        shared_expert_intermediate_size: base.shared_expert_intermediate_size ?? F, ...scoring,
      }, src);
    case "qwen3_moe":
      return parseHfConfig({ model_type: "qwen3_moe", ...common, num_experts: E, num_experts_per_tok: K, moe_intermediate_size: F, head_dim: (common as Record<string, unknown>).head_dim ?? null, ...scoring }, src);
    case "olmoe":
      return parseHfConfig({ model_type: "olmoe", ...common, num_experts: E, num_experts_per_tok: K, ...scoring }, src);
    default:
      family satisfies never;
      throw new ModelChoiceError(`unknown family ${String(family)}`);
  }
}
