// Fixtures for the quantised-GGUF tests: small models of four families whose every matrix has
// rows of 256 (so the k-quants apply), exported at any dtype. Not a test file itself.
import path from "node:path";
import { parseHfConfig, resolveConfig, type ModelConfig } from "../src/model/config.js";
import { exportModelGguf } from "../src/model/gguf-families.js";
import type { ExportDtype } from "../src/model/gguf-types.js";
import { TINY_VOCAB, tinyParams, tinyTokenizer } from "./gguf-fixture.js";

export const tok = tinyTokenizer();
const EOS = tok.eosId;
// hidden 256 and expert width 256 so every matrix takes the k-quants (block 256)
const common = { vocab_size: TINY_VOCAB, hidden_size: 256, num_hidden_layers: 3, num_attention_heads: 4, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 256, bos_token_id: EOS, eos_token_id: EOS };
export const QUANT_FAMILIES: Record<string, Record<string, unknown>> = {
  mixtral: { ...common, model_type: "mixtral", num_key_value_heads: 2, intermediate_size: 256, num_local_experts: 8, num_experts_per_tok: 2, tie_word_embeddings: false, sliding_window: null },
  qwen2_moe: { ...common, model_type: "qwen2_moe", num_key_value_heads: 2, intermediate_size: 512, moe_intermediate_size: 256, shared_expert_intermediate_size: 256, num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: false },
  qwen3_moe: { ...common, model_type: "qwen3_moe", num_key_value_heads: 2, head_dim: 64, intermediate_size: 512, moe_intermediate_size: 256, num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: true, tie_word_embeddings: true },
  olmoe: { ...common, model_type: "olmoe", num_key_value_heads: 4, intermediate_size: 256, num_experts: 4, num_experts_per_tok: 2, tie_word_embeddings: false },
};

export function quantFixture(family: string, seed = 7): { cfg: ModelConfig; params: Float32Array } {
  const cfg = resolveConfig(parseHfConfig(QUANT_FAMILIES[family]!));
  return { cfg, params: tinyParams(cfg, seed) };
}

export function exportQuant(dir: string, family: string, dtype: ExportDtype, seed = 7): string {
  const { cfg, params } = quantFixture(family, seed);
  const file = path.join(dir, `${family}-${dtype}.gguf`);
  exportModelGguf(file, { cfg, params, contextLength: 256, tokenizer: tok.json, bosTokenId: EOS, eosTokenId: EOS }, dtype);
  return file;
}

