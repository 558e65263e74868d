// Opening a model for inference from whatever MODEL names: an HF directory, a run directory
// (its latest checkpoint), or a `.gguf` file (metadata → config, tokenizer from the GGUF).
// openModel returns the f32 Weights, the tokenizer, the model's context length and chat template;
// openEngineModel returns the engine's (possibly compact) weights instead, reading a quantised
// GGUF's blocks as they are (infer/gguf-weights.ts).
//
// Not: checkpoint parsing (model/checkpoint.ts, model/gguf-model.ts).
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import type { Backend } from "../backend/spec.js";
import type { HfConfig, ModelConfig } from "../model/config.js";
import { loadHfWeights } from "../model/checkpoint.js";
import type { GgufTokenizer } from "../model/gguf-model.js";
import { importModelGguf, openGgufModel } from "../model/gguf-families.js";
import { ENGINE_DTYPES, engineWeights, type EngineDtype, type EngineWeights } from "./engine-weights.js";
import { ggufEngineWeights, type GgufEngineDtype } from "./gguf-weights.js";
import { DTYPE_BYTES } from "./load-memory.js";
import { GgufFile } from "../io/gguf.js";
import { Weights } from "../model/weights.js";
import type { Tokenizer } from "../data/types.js";
import { loadTokenizer, tokenizerFromJSON } from "../data/tokenizer.js";
import { resolveModelDir } from "../train/checkpoints.js";
import { DEFAULT_CHAT_TEMPLATE, loadChatTemplate, type LoadedChatTemplate } from "./chat.js";

export interface OpenedModel {
  /** The directory or file the weights came from. */
  source: string;
  hf: HfConfig;
  cfg: ModelConfig;
  weights: Weights;
  tokenizer: Tokenizer | null;
  /** max_position_embeddings. */
  contextLength: number;
  /** The model's chat template, or the documented default for models without one. */
  chatTemplate: LoadedChatTemplate;
}

/** A GGUF `gpt2` tokenizer as an HF tokenizer.json object (byte-level BPE). */
function ggufTokenizerJson(t: GgufTokenizer, file: string): unknown {
  if (t.model !== "gpt2") throw new Error(`${file}: tokenizer.ggml.model '${t.model}' is not supported (only gpt2 byte-level BPE)`);
  const vocab: Record<string, number> = {};
  t.tokens.forEach((tok, i) => (vocab[tok] = i));
  const added = t.tokens.flatMap((tok, i) => (t.tokenTypes?.[i] === 3 ? [{ id: i, content: tok, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }] : []));
  return {
    version: "1.0",
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: t.merges ?? [] },
  };
}

const GGUF_CHAT_TEMPLATE: LoadedChatTemplate = { template: DEFAULT_CHAT_TEMPLATE, source: "default", name: null, named: {}, bosToken: "", eosToken: "", isDefault: true };

/** The engine's view of MODEL, and what the commands need besides the weights. */
export interface OpenedEngineModel extends Omit<OpenedModel, "weights"> {
  engineWeights: EngineWeights;
}

/** The validated `--dtype` for MODEL: default "auto" for a .gguf (its own types), else f32. */
export function engineDtypeFor(model: string, dtype: string | undefined, cmd: string): GgufEngineDtype {
  const gguf = model.endsWith(".gguf");
  const d = dtype ?? (gguf ? "auto" : "f32");
  if (!(ENGINE_DTYPES as readonly string[]).includes(d) && !(gguf && d === "auto")) {
    throw new Error(`${cmd}: --dtype must be ${gguf ? "auto or " : ""}one of ${ENGINE_DTYPES.join(", ")}, got '${d}'${d === "auto" ? " (auto is for .gguf files)" : ""}`);
  }
  return d as GgufEngineDtype;
}

/**
 * The engine's weight bytes when openEngineModel reads a .gguf without an f32 copy (dtype auto:
 * the file's tensor bytes; another non-f32 dtype: its bytes per parameter), else undefined.
 */
export function engineLoadWeightBytes(model: string, dtype: GgufEngineDtype, parameters: number): number | undefined {
  if (!model.endsWith(".gguf") || dtype === "f32") return undefined;
  if (dtype !== "auto") return (DTYPE_BYTES[dtype] ?? 4) * parameters;
  let bytes = 0;
  for (const t of GgufFile.open(model).tensors.values()) bytes += t.byteLength;
  return bytes;
}

/**
 * Opens MODEL for the inference engine. `dtype` (the `--dtype` flag): for a .gguf the default
 * "auto" keeps the file's blocks (infer/gguf-weights.ts), and any dtype but f32 reads the file
 * without an f32 copy of the model; f32 (the default otherwise) builds the f32 arena.
 */
export function openEngineModel(model: string, be: Backend, dtype: string | undefined, cmd: string): OpenedEngineModel {
  const gguf = model.endsWith(".gguf");
  const d = engineDtypeFor(model, dtype, cmd);
  if (gguf && d !== "f32") {
    if (!existsSync(model) || !statSync(model).isFile()) throw new Error(`${model}: no such GGUF file`);
    const spec = openGgufModel(model);
    const tokenizer = spec.tokenizer ? tokenizerFromJSON(ggufTokenizerJson(spec.tokenizer, model), { source: model }) : null;
    if (tokenizer && tokenizer.vocabSize > spec.cfg.vocabSize) throw new Error(`${model}: the embedded tokenizer has ${tokenizer.vocabSize} tokens, the model's vocab_size is ${spec.cfg.vocabSize}`);
    const w = ggufEngineWeights(spec, { dtype: d as GgufEngineDtype });
    return { source: model, hf: spec.hf, cfg: spec.cfg, tokenizer, contextLength: spec.hf.max_position_embeddings, chatTemplate: GGUF_CHAT_TEMPLATE, engineWeights: w };
  }
  const { weights, ...rest } = openModel(model, be);
  return { ...rest, engineWeights: engineWeights(weights, { dtype: d as EngineDtype }) };
}

/** Opens MODEL (HF dir, run dir or .gguf) with f32 weights. */
export function openModel(model: string, be: Backend): OpenedModel {
  if (model.endsWith(".gguf")) {
    if (!existsSync(model) || !statSync(model).isFile()) throw new Error(`${model}: no such GGUF file`);
    const g = importModelGguf(model);
    const tokenizer = g.tokenizer ? tokenizerFromJSON(ggufTokenizerJson(g.tokenizer, model), { source: model }) : null;
    if (tokenizer && tokenizer.vocabSize > g.cfg.vocabSize) throw new Error(`${model}: the embedded tokenizer has ${tokenizer.vocabSize} tokens, the model's vocab_size is ${g.cfg.vocabSize}`);
    return { source: model, hf: g.hf, cfg: g.cfg, weights: new Weights(g.cfg, "f32", g.params), tokenizer, contextLength: g.hf.max_position_embeddings, chatTemplate: GGUF_CHAT_TEMPLATE };
  }
  const dir = resolveModelDir(model);
  const { weights, hf, cfg } = loadHfWeights(dir, be);
  const tokFile = path.join(dir, "tokenizer.json");
  const tokenizer = existsSync(tokFile) ? loadTokenizer(tokFile) : null;
  // a tokenizer that can produce ids the embedding table does not have is refused here, not at the first such id
  if (tokenizer && tokenizer.vocabSize > cfg.vocabSize) throw new Error(`${tokFile}: the tokenizer has ${tokenizer.vocabSize} tokens, the model's vocab_size is ${cfg.vocabSize}; use the model's own tokenizer`);
  const chatTemplate = loadChatTemplate(dir);
  return { source: dir, hf, cfg, weights, tokenizer, contextLength: hf.max_position_embeddings, chatTemplate };
}
