// Fixtures for the GGUF tests: a hand-written GPT-2-style byte-level BPE tokenizer.json
// (256 byte tokens, a few merges, one special token) and a tiny Mixtral-style HF model
// directory (config.json + model.safetensors + tokenizer.json) with seeded random weights.
// Not a test file itself (no tests run here).
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { writeCheckpointTensors, type TensorToWrite } from "../src/io/safetensors.js";
import { parseHfConfig, resolveConfig, type ModelConfig } from "../src/model/config.js";
import { buildLayout } from "../src/model/params.js";
import { createRng } from "../src/core/rng.js";
import type { HfTokenizerJson } from "../src/model/gguf-model.js";

/** GPT-2's bytes_to_unicode: byte → printable character. */
export function byteToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map = new Array<string>(256);
  for (const b of bs) map[b] = String.fromCodePoint(b);
  let n = 0;
  for (let b = 0; b < 256; b++) if (map[b] === undefined) map[b] = String.fromCodePoint(256 + n++);
  return map;
}

export const MERGES: [string, string][] = [
  ["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"], ["e", "r"], ["o", "n"], ["Ġa", "n"],
];
export const EOS_TEXT = "<|endoftext|>";

/** tokenizer.json: ids 0..255 are the bytes, then the merge results, then <|endoftext|>. */
export function tinyTokenizer(): { json: HfTokenizerJson & Record<string, unknown>; eosId: number; size: number } {
  const b2u = byteToUnicode();
  const vocab: Record<string, number> = {};
  b2u.forEach((ch, b) => (vocab[ch] = b));
  let id = 256;
  for (const [a, b] of MERGES) vocab[a + b] = id++;
  const eosId = id++;
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: eosId, content: EOS_TEXT, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false,
      vocab, merges: MERGES.map(([a, b]) => `${a} ${b}`),
    },
  };
  return { json, eosId, size: id };
}

export const TINY_VOCAB = 272; // 265 tokens + 7 padding ids

export function tinyHfConfig(eosId: number): Record<string, unknown> {
  return {
    model_type: "mixtral", architectures: ["MixtralForCausalLM"], vocab_size: TINY_VOCAB, hidden_size: 64, intermediate_size: 96,
    num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2,
    rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 256, bos_token_id: eosId, eos_token_id: eosId,
    tie_word_embeddings: false, sliding_window: null,
  };
}

/**
 * Seeded parameters that give peaked (not flat) logits: matrices N(0, scale/√fan_in), norm
 * weights 1 + 0.2·N(0,1) (so a swapped norm shows), embeddings N(0, 1).
 */
export function tinyParams(cfg: ModelConfig, seed: number): Float32Array {
  const { layout } = buildLayout(cfg);
  const rng = createRng(seed);
  const p = new Float32Array(layout.size);
  for (const t of layout.tensors) {
    const a = p.subarray(t.offset, t.offset + t.size);
    const fanIn = t.shape[t.shape.length - 1]!;
    const isEmbed = t.name === "model.embed_tokens.weight";
    const std = t.init === "ones" ? 0.2 : isEmbed ? 1 : (t.name.includes("lm_head") ? 4 : t.name.endsWith(".gate.weight") ? 3 : 1.2) / Math.sqrt(fanIn);
    for (let i = 0; i < t.size; i++) a[i] = (t.init === "ones" ? 1 : 0) + std * rng.normal();
  }
  return p;
}

/** Writes the tiny model as an HF directory; returns its config and parameters. */
export function writeTinyModelDir(dir: string, seed = 1234): { cfg: ModelConfig; params: Float32Array; eosId: number; hf: Record<string, unknown> } {
  mkdirSync(dir, { recursive: true });
  const tok = tinyTokenizer();
  const hf = tinyHfConfig(tok.eosId);
  const cfg = resolveConfig(parseHfConfig(hf));
  const params = tinyParams(cfg, seed);
  const { layout } = buildLayout(cfg);
  const tensors: Record<string, TensorToWrite> = {};
  for (const s of layout.hfTensors) tensors[s.name] = { dtype: "F32", shape: s.shape, data: params.slice(s.offset, s.offset + s.size) };
  writeCheckpointTensors(dir, tensors);
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(hf, null, 2));
  writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tok.json));
  return { cfg, params, eosId: tok.eosId, hf };
}
