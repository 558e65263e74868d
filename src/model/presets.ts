// Named model presets: HF-style configs of small models that train on a CPU.
// Each is a complete config.json object of its family (HF keys), resolved like any
// checkpoint's config. Not: the real models' configs (load those from config.json).
import type { HfConfig } from "./config.js";
import { parseHfConfig } from "./config.js";

const PRESETS = {
  /** 0.06M parameters: unit tests and smoke runs. */
  "tiny-mixtral": {
    model_type: "mixtral", vocab_size: 256, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, rms_norm_eps: 1e-5,
    rope_theta: 10000, max_position_embeddings: 512,
  },
  /** GRIN-style (PhiMoE): SparseMixer-v2 router, LayerNorm, biases, sliding window. */
  "tiny-grin": {
    model_type: "phimoe", vocab_size: 256, hidden_size: 32, intermediate_size: 48, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2, rms_norm_eps: 1e-5,
    rope_theta: 10000, sliding_window: 64, attention_bias: true, lm_head_bias: true, router_jitter_noise: 0.01,
    max_position_embeddings: 512,
  },
  /** 9.1M parameters (3.7M active): the default CPU training model (8 experts, top-2). */
  "small-moe": {
    model_type: "mixtral", vocab_size: 4096, hidden_size: 192, intermediate_size: 384, num_hidden_layers: 4,
    num_attention_heads: 6, num_key_value_heads: 2, num_local_experts: 8, num_experts_per_tok: 2, rms_norm_eps: 1e-5,
    rope_theta: 10000, max_position_embeddings: 1024,
  },
  /** 51M parameters (19M active): the larger CPU benchmark model. */
  "moe-50m": {
    model_type: "mixtral", vocab_size: 8192, hidden_size: 384, intermediate_size: 768, num_hidden_layers: 6,
    num_attention_heads: 6, num_key_value_heads: 2, num_local_experts: 8, num_experts_per_tok: 2, rms_norm_eps: 1e-5,
    rope_theta: 10000, max_position_embeddings: 1024,
  },
} as const;

export type PresetName = keyof typeof PRESETS;
export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

export function preset(name: string): HfConfig {
  if (!(name in PRESETS)) throw new Error(`unknown model preset '${name}' (known: ${PRESET_NAMES.join(", ")})`);
  return parseHfConfig(PRESETS[name as PresetName], `preset ${name}`);
}
