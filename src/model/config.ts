// Typed model configuration.
//
// Two layers:
// 1. Per-family HF configs (`MixtralHfConfig`, `PhimoeHfConfig`, …): the HF config.json key
//    names are the field names, and `HF_DEFAULTS` holds each family's transformers defaults.
//    `parseHfConfig(json)` fills defaults, rejects unknown keys that would change numerics
//    (with the closest valid key suggested) and wrong types.
// 2. `ModelConfig`: the one resolved description the model code reads (camelCase, every
//    option explicit). `resolveConfig(hf)` maps a family config onto it; `toHfConfig` maps back.
//
// Not: training options (see train/) or parallel layout (see parallel/).
import type { DispatchConfig, MoeConfig } from "../moe/config.js";
import { parseRopeScaling, RopeScalingError, type RopeScaling } from "../nn/rope-scaling.js";

export type { DispatchConfig, MoeConfig } from "../moe/config.js";
import { closest } from "../core/suggest.js";

export type Family = "mixtral" | "phimoe" | "qwen2_moe" | "qwen3_moe" | "olmoe" | "skywork" | "llama";
/** Families with MoE layers, plus "llama": the dense model that upcycling starts from. */
export const FAMILIES: readonly Family[] = ["mixtral", "phimoe", "qwen2_moe", "qwen3_moe", "olmoe", "skywork", "llama"];

export interface ModelConfig {
  family: Family;
  vocabSize: number;
  hiddenSize: number; // C
  numLayers: number; // L
  numHeads: number; // NH
  numKvHeads: number; // KVH
  headDim: number; // HS
  norm: { kind: "rms" | "layer"; eps: number };
  rope: { theta: number; rotaryDim: number; scaling?: RopeScaling };
  /** Keys a query attends including itself; 0 = unlimited (see nn attention kernel). */
  slidingWindow: number;
  /** The window applies to layers ≥ this (Qwen's max_window_layers); default 0 = every layer. */
  windowFromLayer?: number;
  /** Clamp q, k, v (after q/k norm) to [−clip, clip] (OLMoE clip_qkv); default 0 = off. */
  clipQkv?: number;
  /** Biases on q/k/v projections, on o_proj. */
  qkvBias: boolean;
  oBias: boolean;
  /** q/k RMSNorm: per head over HS (Qwen3) or over the whole projection (OLMoE). */
  qkNorm: "none" | "head" | "full";
  tieEmbeddings: boolean;
  lmHeadBias: boolean;
  /** Dense FFN hidden size for non-MoE layers. */
  denseIntermediateSize: number;
  moe: MoeConfig;
}

// ---------------------------------------------------------------------------
// HF family configs: keys and defaults as transformers defines them.

interface HfCommon {
  model_type: Family;
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number | null;
  head_dim?: number | null;
  hidden_act: string;
  max_position_embeddings: number;
  initializer_range: number;
  rms_norm_eps: number;
  tie_word_embeddings: boolean;
  rope_theta: number;
  rope_scaling: null | Record<string, unknown>;
  bos_token_id: number | null;
  eos_token_id: number | number[] | null;
  pad_token_id: number | null;
  torch_dtype?: string;
  architectures?: string[];
  router_aux_loss_coef?: number;
}

export interface MixtralHfConfig extends HfCommon {
  model_type: "mixtral";
  num_local_experts: number;
  num_experts_per_tok: number;
  sliding_window: number | null;
  router_jitter_noise: number;
}

export interface PhimoeHfConfig extends HfCommon {
  model_type: "phimoe";
  num_local_experts: number;
  num_experts_per_tok: number;
  sliding_window: number | null;
  router_jitter_noise: number;
  input_jitter_noise: number;
  attention_bias: boolean;
  lm_head_bias: boolean;
}

export interface Qwen2MoeHfConfig extends HfCommon {
  model_type: "qwen2_moe";
  num_experts: number;
  num_experts_per_tok: number;
  moe_intermediate_size: number;
  shared_expert_intermediate_size: number;
  norm_topk_prob: boolean;
  decoder_sparse_step: number;
  mlp_only_layers: number[];
  use_sliding_window: boolean;
  sliding_window: number | null;
  max_window_layers: number;
}

export interface Qwen3MoeHfConfig extends HfCommon {
  model_type: "qwen3_moe";
  num_experts: number;
  num_experts_per_tok: number;
  moe_intermediate_size: number;
  norm_topk_prob: boolean;
  decoder_sparse_step: number;
  mlp_only_layers: number[];
  attention_bias: boolean;
  use_sliding_window: boolean;
  sliding_window: number | null;
  max_window_layers: number;
}

export interface OlmoeHfConfig extends HfCommon {
  model_type: "olmoe";
  num_experts: number;
  num_experts_per_tok: number;
  norm_topk_prob: boolean;
  attention_bias: boolean;
  clip_qkv: number | null;
}

/** Skywork-MoE (remote code, model_type "skywork"): num_experts is a list (one entry per MoE group). */
export interface SkyworkHfConfig extends HfCommon {
  model_type: "skywork";
  num_experts: number[];
  moe_expert_interval: number;
  moe_use_logits_norm: boolean;
  moe_gate_norm_std: number;
  moe_use_mixtral_gating: boolean;
  moe_2layer_gate: boolean;
  moe_feature_no_mul_topk: boolean;
  /** Not an HF key of the released config (top-2 is hard-coded there); we accept it, default 2. */
  num_experts_per_tok: number;
}

/** Dense Llama-style model (the source of upcycling). */
export interface LlamaHfConfig extends HfCommon {
  model_type: "llama";
  attention_bias: boolean;
  mlp_bias: boolean;
}

export type HfConfig = LlamaHfConfig | MixtralHfConfig | PhimoeHfConfig | Qwen2MoeHfConfig | Qwen3MoeHfConfig | OlmoeHfConfig | SkyworkHfConfig;

const COMMON_DEFAULTS = {
  hidden_act: "silu",
  initializer_range: 0.02,
  rope_scaling: null,
  pad_token_id: null,
  tie_word_embeddings: false,
} as const;

/** transformers' defaults per family (configuration_<family>.py), for keys a config.json may omit. */
export const HF_DEFAULTS: { [F in Family]: Omit<Extract<HfConfig, { model_type: F }>, "model_type"> } = {
  mixtral: {
    ...COMMON_DEFAULTS, vocab_size: 32000, hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: 8, head_dim: null, max_position_embeddings: 131072, rms_norm_eps: 1e-5,
    rope_theta: 1e6, sliding_window: null, num_experts_per_tok: 2, num_local_experts: 8, router_aux_loss_coef: 0.001,
    router_jitter_noise: 0, bos_token_id: 1, eos_token_id: 2,
  },
  phimoe: {
    ...COMMON_DEFAULTS, vocab_size: 32064, hidden_size: 4096, intermediate_size: 6400, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: 8, head_dim: null, max_position_embeddings: 131072, rms_norm_eps: 1e-5,
    rope_theta: 1e6, sliding_window: null, num_experts_per_tok: 2, num_local_experts: 16, router_aux_loss_coef: 0.001,
    router_jitter_noise: 0.01, input_jitter_noise: 0, attention_bias: false, lm_head_bias: false, bos_token_id: 1, eos_token_id: 2,
  },
  qwen2_moe: {
    ...COMMON_DEFAULTS, vocab_size: 151936, hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 24,
    num_attention_heads: 16, num_key_value_heads: 16, head_dim: null, max_position_embeddings: 32768, rms_norm_eps: 1e-6,
    rope_theta: 10000, use_sliding_window: false, sliding_window: 4096, max_window_layers: 28, decoder_sparse_step: 1, moe_intermediate_size: 1408,
    shared_expert_intermediate_size: 5632, num_experts_per_tok: 4, num_experts: 60, norm_topk_prob: false,
    router_aux_loss_coef: 0.001, mlp_only_layers: [], bos_token_id: null, eos_token_id: null,
  },
  qwen3_moe: {
    ...COMMON_DEFAULTS, vocab_size: 151936, hidden_size: 2048, intermediate_size: 6144, num_hidden_layers: 24,
    num_attention_heads: 32, num_key_value_heads: 4, head_dim: 128, max_position_embeddings: 32768, rms_norm_eps: 1e-6,
    rope_theta: 10000, attention_bias: false, use_sliding_window: false, sliding_window: 4096, max_window_layers: 28, decoder_sparse_step: 1,
    moe_intermediate_size: 768, num_experts_per_tok: 8, num_experts: 128, norm_topk_prob: false, router_aux_loss_coef: 0.001,
    mlp_only_layers: [], bos_token_id: null, eos_token_id: null,
  },
  olmoe: {
    ...COMMON_DEFAULTS, vocab_size: 50304, hidden_size: 2048, intermediate_size: 2048, num_hidden_layers: 16,
    num_attention_heads: 16, num_key_value_heads: null, head_dim: null, max_position_embeddings: 4096, rms_norm_eps: 1e-5,
    rope_theta: 10000, attention_bias: false, clip_qkv: null, num_experts_per_tok: 8, num_experts: 64, norm_topk_prob: false,
    router_aux_loss_coef: 0.01, pad_token_id: 1, bos_token_id: null, eos_token_id: 50279,
  },
  llama: {
    ...COMMON_DEFAULTS, vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: null, head_dim: null, max_position_embeddings: 2048, rms_norm_eps: 1e-6,
    rope_theta: 10000, attention_bias: false, mlp_bias: false, bos_token_id: 1, eos_token_id: 2,
  },
  skywork: {
    ...COMMON_DEFAULTS, vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32,
    num_attention_heads: 32, num_key_value_heads: null, head_dim: null, max_position_embeddings: 2048, rms_norm_eps: 1e-6,
    rope_theta: 10000, num_experts: [32], moe_expert_interval: 1, moe_use_logits_norm: false, moe_gate_norm_std: 1,
    moe_use_mixtral_gating: false, moe_2layer_gate: true, moe_feature_no_mul_topk: false, num_experts_per_tok: 2,
    bos_token_id: 1, eos_token_id: 2,
  },
};

/** Keys HF writes that do not affect the computation; accepted and kept, never an error. */
const INERT_KEYS = new Set([
  "_name_or_path", "transformers_version", "use_cache", "attention_dropout", "output_router_logits", "auto_map",
  "pretraining_tp", "max_window_layers", "torch_dtype", "architectures", "quantization_config",
  "hidden_dropout", "attention_probs_dropout_prob", "original_max_position_embeddings", "layer_types", "dtype",
]);

/**
 * Keys outside transformers' family configs that moe-ts reads when present (never filled in):
 * `scoring_func` ("softmax" default | "sigmoid", DeepSeek-V3's key) selects the sigmoid router
 * with the aux-free selection bias buffer `gate.e_score_correction_bias`.
 */
const EXTENSION_KEYS: Partial<Record<Family, Record<string, readonly string[]>>> = {
  mixtral: { scoring_func: ["softmax", "sigmoid"] },
  qwen2_moe: { scoring_func: ["softmax", "sigmoid"] },
  qwen3_moe: { scoring_func: ["softmax", "sigmoid"] },
  olmoe: { scoring_func: ["softmax", "sigmoid"] },
};

/** Keys that may be null in a config.json (HF writes null for "unset"). */
const NULLABLE_KEYS = new Set(["num_key_value_heads", "head_dim", "sliding_window", "rope_scaling", "bos_token_id", "eos_token_id", "pad_token_id", "clip_qkv"]);
/** Value types of keys whose default is null (or whose type the default does not show). */
const NULL_DEFAULT_TYPES: Record<string, string> = {
  num_key_value_heads: "number", head_dim: "number", sliding_window: "number", rope_scaling: "object",
  bos_token_id: "number", eos_token_id: "number|number[]", pad_token_id: "number", clip_qkv: "number",
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

/**
 * Validates a config.json object and fills the family's defaults. Unknown keys are errors
 * (with a suggestion), except keys known to be inert. A value whose type differs from the
 * default's type is an error.
 */
export function parseHfConfig(json: unknown, source = "config.json"): HfConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ConfigError(`${source}: not a JSON object`);
  const obj = json as Record<string, unknown>;
  const family = obj.model_type;
  if (typeof family !== "string" || !(FAMILIES as readonly string[]).includes(family)) {
    throw new ConfigError(`${source}: model_type ${JSON.stringify(family)} is not supported (supported: ${FAMILIES.join(", ")})`);
  }
  const defaults = HF_DEFAULTS[family as Family] as unknown as Record<string, unknown>;
  const out: Record<string, unknown> = { ...defaults, model_type: family };
  for (const [k, v] of Object.entries(obj)) {
    if (k === "model_type") continue;
    if (!(k in defaults)) {
      const ext = EXTENSION_KEYS[family as Family]?.[k];
      if (ext) {
        if (typeof v !== "string" || !ext.includes(v)) throw new ConfigError(`${source}: key '${k}' must be one of ${ext.map((x) => JSON.stringify(x)).join(", ")}, got ${JSON.stringify(v)}`);
        out[k] = v;
        continue;
      }
      if (INERT_KEYS.has(k)) {
        out[k] = v;
        continue;
      }
      const hint = closest(k, Object.keys(defaults));
      throw new ConfigError(`${source}: unknown key '${k}' for model_type ${family}${hint ? ` (did you mean '${hint}'?)` : ""}`);
    }
    const d = defaults[k];
    if (v === null) {
      if (!NULLABLE_KEYS.has(k)) throw new ConfigError(`${source}: key '${k}' must not be null`);
    } else {
      const expect = d === null || k in NULL_DEFAULT_TYPES ? NULL_DEFAULT_TYPES[k] ?? "number" : Array.isArray(d) ? "number[]" : typeof d;
      const ok =
        expect === "number[]" ? Array.isArray(v) && v.every((x) => typeof x === "number") :
        expect === "number|number[]" ? typeof v === "number" || (Array.isArray(v) && v.every((x) => typeof x === "number")) :
        expect === "object" ? typeof v === "object" && !Array.isArray(v) :
        typeof v === expect;
      if (!ok) throw new ConfigError(`${source}: key '${k}' must be ${expect === "number[]" ? "an array of numbers" : expect}, got ${JSON.stringify(v)}`);
    }
    out[k] = v;
  }
  return out as unknown as HfConfig;
}

function positiveInt(source: string, key: string, v: unknown): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) throw new ConfigError(`${source}: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

/** Qwen2/3-MoE apply their sliding window only to layers ≥ max_window_layers (HF modeling code). */
function qwenWindow(hf: Qwen2MoeHfConfig | Qwen3MoeHfConfig, source: string): { slidingWindow: number; windowFromLayer: number } {
  if (!hf.use_sliding_window || hf.sliding_window == null) return { slidingWindow: 0, windowFromLayer: 0 };
  if (!(Number.isInteger(hf.max_window_layers) && hf.max_window_layers >= 0)) throw new ConfigError(`${source}: max_window_layers must be a non-negative integer, got ${hf.max_window_layers}`);
  return { slidingWindow: hf.sliding_window, windowFromLayer: hf.max_window_layers };
}

/** Layers that are MoE under HF's decoder_sparse_step / mlp_only_layers rule (Qwen2/3-MoE). */
function sparseStepLayers(L: number, step: number, mlpOnly: number[]): boolean[] {
  return Array.from({ length: L }, (_, l) => !mlpOnly.includes(l) && step > 0 && (l + 1) % step === 0);
}

/** `scoring_func: "sigmoid"` swaps the family's softmax router for the sigmoid / aux-free-bias one. */
function withScoringFunc(cfg: ModelConfig, hf: HfConfig): ModelConfig {
  if ((hf as { scoring_func?: string }).scoring_func !== "sigmoid") return cfg;
  const r = cfg.moe.router;
  const norm = r.kind === "softmax_topk" ? r.normTopkProb : true;
  return { ...cfg, moe: { ...cfg.moe, router: { kind: "sigmoid_bias", topK: cfg.moe.topK, normTopkProb: norm } } };
}

/** Maps a family HF config onto the resolved ModelConfig. */
export function resolveConfig(hf: HfConfig, dispatch: DispatchConfig = { kind: "dropless" }, source = "config.json"): ModelConfig {
  const cfg = withScoringFunc(resolveUnchecked(hf, dispatch, source), hf);
  const { numExperts: E, topK: K } = cfg.moe;
  if (cfg.moe.moeLayers.some(Boolean) && !(Number.isInteger(K) && K >= 1 && K <= E)) {
    throw new ConfigError(`${source}: num_experts_per_tok must be an integer in [1, ${E}], got ${K}`);
  }
  return cfg;
}

function resolveUnchecked(hf: HfConfig, dispatch: DispatchConfig, source: string): ModelConfig {
  const L = positiveInt(source, "num_hidden_layers", hf.num_hidden_layers);
  const C = positiveInt(source, "hidden_size", hf.hidden_size);
  const NH = positiveInt(source, "num_attention_heads", hf.num_attention_heads);
  const KVH = hf.num_key_value_heads ?? NH;
  positiveInt(source, "num_key_value_heads", KVH);
  if (NH % KVH !== 0) throw new ConfigError(`${source}: num_attention_heads ${NH} is not a multiple of num_key_value_heads ${KVH}`);
  const HS = hf.head_dim ?? C / NH;
  if (!Number.isInteger(HS) || HS % 2 !== 0) throw new ConfigError(`${source}: head size ${HS} (hidden_size / num_attention_heads or head_dim) must be an even integer`);
  let scaling: RopeScaling | undefined;
  if (hf.rope_scaling != null) {
    const top = (hf as unknown as Record<string, unknown>).original_max_position_embeddings;
    try {
      scaling = parseRopeScaling(hf.rope_scaling, HS, hf.max_position_embeddings, typeof top === "number" ? top : undefined);
    } catch (e) {
      if (e instanceof RopeScalingError) throw new ConfigError(`${source}: ${e.message}`);
      throw e;
    }
  }
  if (hf.hidden_act !== "silu") throw new ConfigError(`${source}: hidden_act '${hf.hidden_act}' is not supported (experts are SwiGLU: 'silu')`);
  positiveInt(source, "vocab_size", hf.vocab_size);
  if (!(hf.rms_norm_eps > 0)) throw new ConfigError(`${source}: rms_norm_eps must be positive, got ${hf.rms_norm_eps}`);
  const window = (hf as { sliding_window?: number | null }).sliding_window;
  if (window != null && !(Number.isInteger(window) && window >= 0)) throw new ConfigError(`${source}: sliding_window must be a non-negative integer or null, got ${window}`);
  const base = {
    family: hf.model_type,
    vocabSize: hf.vocab_size,
    hiddenSize: C,
    numLayers: L,
    numHeads: NH,
    numKvHeads: KVH,
    headDim: HS,
    norm: { kind: "rms" as const, eps: hf.rms_norm_eps },
    rope: { theta: hf.rope_theta, rotaryDim: HS, ...(scaling ? { scaling } : {}) },
    slidingWindow: 0,
    qkvBias: false,
    oBias: false,
    qkNorm: "none" as const,
    tieEmbeddings: hf.tie_word_embeddings,
    lmHeadBias: false,
    denseIntermediateSize: hf.intermediate_size,
  };
  const allMoe = Array.from({ length: L }, () => true);
  switch (hf.model_type) {
    case "llama":
      if (hf.mlp_bias) throw new ConfigError(`${source}: mlp_bias true is not supported`);
      return {
        ...base,
        qkvBias: hf.attention_bias,
        oBias: hf.attention_bias,
        moe: {
          numExperts: 0, topK: 0, expertIntermediateSize: 0, moeLayers: Array.from({ length: L }, () => false), sharedExpertIntermediateSize: 0,
          router: { kind: "softmax_topk", topK: 0, normTopkProb: true }, dispatch, inputJitter: 0,
        },
      };
    case "mixtral":
      return {
        ...base,
        slidingWindow: hf.sliding_window ?? 0,
        moe: {
          numExperts: positiveInt(source, "num_local_experts", hf.num_local_experts), topK: hf.num_experts_per_tok,
          expertIntermediateSize: hf.intermediate_size, moeLayers: allMoe, sharedExpertIntermediateSize: 0,
          router: { kind: "softmax_topk", topK: hf.num_experts_per_tok, normTopkProb: true },
          dispatch, inputJitter: 0,
        },
      };
    case "phimoe":
      return {
        ...base,
        norm: { kind: "layer", eps: hf.rms_norm_eps },
        slidingWindow: hf.sliding_window ?? 0,
        qkvBias: hf.attention_bias,
        oBias: hf.attention_bias,
        lmHeadBias: hf.lm_head_bias,
        moe: {
          numExperts: positiveInt(source, "num_local_experts", hf.num_local_experts), topK: hf.num_experts_per_tok,
          expertIntermediateSize: hf.intermediate_size, moeLayers: allMoe, sharedExpertIntermediateSize: 0,
          router: { kind: "sparsemixer", variant: "v2", topK: hf.num_experts_per_tok, jitterEps: hf.router_jitter_noise, scaleExpertGrad: false },
          dispatch, inputJitter: hf.input_jitter_noise,
        },
      };
    case "qwen2_moe":
      return {
        ...base,
        ...qwenWindow(hf, source),
        qkvBias: true,
        moe: {
          numExperts: positiveInt(source, "num_experts", hf.num_experts), topK: hf.num_experts_per_tok,
          expertIntermediateSize: hf.moe_intermediate_size,
          moeLayers: sparseStepLayers(L, hf.decoder_sparse_step, hf.mlp_only_layers),
          sharedExpertIntermediateSize: hf.shared_expert_intermediate_size,
          router: { kind: "softmax_topk", topK: hf.num_experts_per_tok, normTopkProb: hf.norm_topk_prob },
          dispatch, inputJitter: 0,
        },
      };
    case "qwen3_moe":
      return {
        ...base,
        ...qwenWindow(hf, source),
        qkvBias: hf.attention_bias,
        oBias: hf.attention_bias,
        qkNorm: "head",
        moe: {
          numExperts: positiveInt(source, "num_experts", hf.num_experts), topK: hf.num_experts_per_tok,
          expertIntermediateSize: hf.moe_intermediate_size,
          moeLayers: sparseStepLayers(L, hf.decoder_sparse_step, hf.mlp_only_layers),
          sharedExpertIntermediateSize: 0,
          router: { kind: "softmax_topk", topK: hf.num_experts_per_tok, normTopkProb: hf.norm_topk_prob },
          dispatch, inputJitter: 0,
        },
      };
    case "olmoe":
      if (hf.clip_qkv != null && !(hf.clip_qkv > 0)) throw new ConfigError(`${source}: clip_qkv must be positive or null, got ${hf.clip_qkv}`);
      return {
        ...base,
        ...(hf.clip_qkv != null ? { clipQkv: hf.clip_qkv } : {}),
        qkvBias: hf.attention_bias,
        oBias: hf.attention_bias,
        qkNorm: "full",
        moe: {
          numExperts: positiveInt(source, "num_experts", hf.num_experts), topK: hf.num_experts_per_tok,
          expertIntermediateSize: hf.intermediate_size, moeLayers: allMoe, sharedExpertIntermediateSize: 0,
          router: { kind: "softmax_topk", topK: hf.num_experts_per_tok, normTopkProb: hf.norm_topk_prob },
          dispatch, inputJitter: 0,
        },
      };
    case "skywork": {
      if (!Array.isArray(hf.num_experts) || hf.num_experts.length !== 1) {
        throw new ConfigError(`${source}: num_experts must be a one-element list such as [16], got ${JSON.stringify(hf.num_experts)}`);
      }
      if (hf.moe_2layer_gate) throw new ConfigError(`${source}: moe_2layer_gate true (tanh two-layer router) is not supported; set it false`);
      // Skywork's released MoE layer multiplies the expert input by top_k unless one of these is set
      // (routing is the same either way: top-k of the softmax, renormalised).
      if (!hf.moe_use_mixtral_gating && !hf.moe_feature_no_mul_topk) {
        throw new ConfigError(`${source}: moe_use_mixtral_gating and moe_feature_no_mul_topk both false (expert input multiplied by top_k in Skywork's code) is not supported; set moe_feature_no_mul_topk true`);
      }
      const interval = positiveInt(source, "moe_expert_interval", hf.moe_expert_interval);
      return {
        ...base,
        moe: {
          numExperts: positiveInt(source, "num_experts[0]", hf.num_experts[0]), topK: hf.num_experts_per_tok,
          expertIntermediateSize: hf.intermediate_size,
          moeLayers: Array.from({ length: L }, (_, l) => (l + 1) % interval === 0),
          sharedExpertIntermediateSize: 0,
          router: {
            kind: "softmax_topk", topK: hf.num_experts_per_tok, normTopkProb: true,
            ...(hf.moe_use_logits_norm ? { logitsNormStd: hf.moe_gate_norm_std } : {}),
          },
          dispatch, inputJitter: 0,
        },
      };
    }
    default:
      hf satisfies never;
      throw new ConfigError(`${source}: unsupported model_type`);
  }
}

/** Total and active (per token) parameter counts of a resolved config. */
export function parameterCounts(cfg: ModelConfig): { total: number; active: number; experts: number } {
  const { hiddenSize: C, numHeads: NH, numKvHeads: KVH, headDim: HS, vocabSize: V } = cfg;
  const normP = cfg.norm.kind === "layer" ? 2 * C : C;
  const attn = C * NH * HS * 2 + C * KVH * HS * 2 + (cfg.qkvBias ? (NH + 2 * KVH) * HS : 0) + (cfg.oBias ? C : 0) +
    (cfg.qkNorm === "head" ? 2 * HS : cfg.qkNorm === "full" ? (NH + KVH) * HS : 0);
  const F = cfg.moe.expertIntermediateSize, E = cfg.moe.numExperts, K = cfg.moe.topK, S = cfg.moe.sharedExpertIntermediateSize;
  let total = V * C + (cfg.tieEmbeddings ? 0 : V * C) + (cfg.lmHeadBias ? V : 0) + normP;
  let active = total;
  let experts = 0;
  for (let l = 0; l < cfg.numLayers; l++) {
    const common = attn + 2 * normP;
    total += common;
    active += common;
    if (cfg.moe.moeLayers[l]) {
      const shared = S > 0 ? 3 * C * S + C : 0;
      total += E * 3 * C * F + E * C + shared;
      active += K * 3 * C * F + E * C + shared;
      experts += E;
    } else {
      total += 3 * C * cfg.denseIntermediateSize;
      active += 3 * C * cfg.denseIntermediateSize;
    }
  }
  return { total, active, experts };
}
