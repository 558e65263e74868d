// Mixtral-style MoE models ↔ GGUF as llama.cpp loads them (architecture `llama` with experts).
//
// Tensor map (HF/our storage → GGUF; GGUF dims ne are the reversed row-major shape):
//   model.embed_tokens.weight (V,C)          → token_embd.weight          ne [C, V]
//   layers.l.input_layernorm (C)             → blk.l.attn_norm.weight      F32
//   self_attn.{q,k,v,o}_proj (rows, C)       → blk.l.attn_{q,k,v,output}.weight
//   post_attention_layernorm (C)             → blk.l.ffn_norm.weight       F32
//   block_sparse_moe.gate (E,C)              → blk.l.ffn_gate_inp.weight   F32, ne [C, E]
//   experts w1 / w3 stacked (E,F,C)          → blk.l.ffn_gate_exps / ffn_up_exps.weight  ne [C, F, E]
//   experts w2 stacked (E,C,F)               → blk.l.ffn_down_exps.weight  ne [F, C, E]
//   model.norm (C)                           → output_norm.weight          F32
//   lm_head (V,C)                            → output.weight (absent when tied: llama.cpp reuses token_embd)
// RoPE: HF rotates halves (rotate_half: pairs (i, i+HS/2)); llama.cpp's `llama` arch rotates
// adjacent pairs (2i, 2i+1). As convert_hf_to_gguf.py's LlamaModel.permute, the rows of
// q_proj (per query head) and k_proj (per KV head) are permuted: GGUF row h·HS + 2i + j =
// HF row h·HS + j·HS/2 + i; import applies the inverse.
// Only what llama.cpp runs as `llama` MoE is exported: RMSNorm, no biases, no q/k norm, full
// rotary, softmax top-k renormalised, every layer MoE, no shared expert, no sliding window
// shorter than the context. Anything else is refused naming the feature.
// The tokenizer is embedded from an HF byte-level BPE tokenizer.json (tokenizer.ggml.model
// "gpt2", tokens, token_type, merges, bos/eos, tokenizer.ggml.pre).
//
// Not: the container format (io/gguf.ts), the HF checkpoint loader (model/), or a tokenizer.
import { buildLayout, type ModelNames, type ParamLayout } from "./params.js";
import { parseHfConfig, resolveConfig, type MixtralHfConfig, type ModelConfig } from "./config.js";
import { checkFiniteTensor } from "./finite.js";
import { GgufError, GgufFile, gv, writeGguf, type GgmlTypeName, type GgufTensorInput, type GgufValue } from "../io/gguf.js";

export type ExportDtype = "f32" | "f16" | "q8_0";
export const EXPORT_DTYPES: readonly ExportDtype[] = ["f32", "f16", "q8_0"];

/** llama_ftype of the file (general.file_type). */
const FILE_TYPE: Record<ExportDtype, number> = { f32: 0, f16: 1, q8_0: 7 };

/** Token types (llama_token_type / gguf TokenType). */
export const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

type Params = Float32Array | Float64Array;

/** The part of an HF tokenizer.json this module reads. */
export interface HfTokenizerJson {
  model: { type: string; vocab: Record<string, number>; merges?: (string | [string, string])[] };
  added_tokens?: { id: number; content: string; special?: boolean }[];
  pre_tokenizer?: unknown;
  post_processor?: unknown;
  decoder?: unknown;
}

export interface LlamaExportInput {
  cfg: ModelConfig;
  /** Parameter arena laid out by buildLayout(cfg). */
  params: Params;
  /** llama.context_length (HF max_position_embeddings). */
  contextLength: number;
  name?: string;
  tokenizer?: HfTokenizerJson;
  bosTokenId?: number | null;
  eosTokenId?: number | null;
  padTokenId?: number | null;
}

/** The first feature llama.cpp's `llama` MoE architecture cannot run, or null. */
export function llamaIncompatibility(cfg: ModelConfig, contextLength: number): string | null {
  const r = cfg.moe.router;
  if (cfg.norm.kind !== "rms") return "LayerNorm (llama.cpp's llama architecture uses RMSNorm)";
  if (cfg.qkvBias) return "q/k/v projection biases";
  if (cfg.oBias) return "an o_proj bias";
  if (cfg.lmHeadBias) return "an lm_head bias";
  if (cfg.qkNorm !== "none") return `q/k normalisation ('${cfg.qkNorm}')`;
  if (cfg.rope.rotaryDim !== cfg.headDim) return `partial rotary embedding (rotary dim ${cfg.rope.rotaryDim} < head dim ${cfg.headDim})`;
  if (cfg.slidingWindow > 0 && cfg.slidingWindow < contextLength) return `a sliding window of ${cfg.slidingWindow} shorter than the context length ${contextLength}`;
  if (!cfg.moe.moeLayers.every((m) => m)) return "dense (non-MoE) layers mixed with MoE layers";
  if (cfg.moe.sharedExpertIntermediateSize > 0) return "a shared expert";
  if (r.kind !== "softmax_topk") return `the '${r.kind}' router (llama.cpp uses softmax top-k)`;
  if (!r.normTopkProb) return "top-k routing weights without renormalisation (norm_topk_prob false)";
  if (r.logitsNormStd !== undefined) return "router logit normalisation (moe_use_logits_norm)";
  return null;
}

/** Row permutation HF (rotate_half) → GGUF (interleaved pairs), per head of HS rows; `inverse` undoes it. */
export function permuteRopeRows(w: Float32Array, heads: number, HS: number, C: number, inverse = false): Float32Array {
  if (w.length !== heads * HS * C) throw new GgufError(`permuteRopeRows: ${w.length} values for ${heads}×${HS} rows of ${C}`);
  const out = new Float32Array(w.length);
  const half = HS / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const g = h * HS + 2 * i + j, f = h * HS + j * half + i;
        const [dst, src] = inverse ? [f, g] : [g, f];
        out.set(w.subarray(src * C, (src + 1) * C), dst * C);
      }
    }
  }
  return out;
}

function slice(params: Params, layout: ParamLayout, name: string, from = 0, len?: number): Float32Array {
  const t = layout.byName.get(name);
  if (!t) throw new GgufError(`no parameter '${name}'`);
  const n = len ?? t.size - from;
  return Float32Array.from(params.subarray(t.offset + from, t.offset + from + n));
}

/** Which GGUF type a tensor gets for the requested dtype (norms and the router stay F32). */
function tensorType(dtype: ExportDtype, shape: number[], keepF32: boolean, warnings: string[], name: string): GgmlTypeName {
  if (keepF32 || shape.length === 1 || dtype === "f32") return "F32";
  if (dtype === "f16") return "F16";
  if (shape[shape.length - 1]! % 32 !== 0) {
    warnings.push(`${name}: row length ${shape[shape.length - 1]} is not a multiple of 32; written as F16 instead of Q8_0`);
    return "F16";
  }
  return "Q8_0";
}

/** The llama-arch tensors of a model (row-major shapes; q/k rows permuted). */
function modelTensors(cfg: ModelConfig, layout: ParamLayout, names: ModelNames, params: Params, dtype: ExportDtype, warnings: string[]): GgufTensorInput[] {
  const { hiddenSize: C, numHeads: NH, numKvHeads: KVH, headDim: HS, vocabSize: V } = cfg;
  const E = cfg.moe.numExperts, F = cfg.moe.expertIntermediateSize;
  const out: GgufTensorInput[] = [];
  const add = (name: string, shape: number[], data: Float32Array, keepF32 = false) =>
    out.push({ name, shape, data, type: tensorType(dtype, shape, keepF32, warnings, name) });
  add("token_embd.weight", [V, C], slice(params, layout, names.embed));
  for (let l = 0; l < cfg.numLayers; l++) {
    const n = names.layers[l]!, b = `blk.${l}`;
    add(`${b}.attn_norm.weight`, [C], slice(params, layout, n.ln1), true);
    add(`${b}.attn_q.weight`, [NH * HS, C], permuteRopeRows(slice(params, layout, n.q), NH, HS, C));
    add(`${b}.attn_k.weight`, [KVH * HS, C], permuteRopeRows(slice(params, layout, n.k), KVH, HS, C));
    add(`${b}.attn_v.weight`, [KVH * HS, C], slice(params, layout, n.v));
    add(`${b}.attn_output.weight`, [C, NH * HS], slice(params, layout, n.o));
    add(`${b}.ffn_norm.weight`, [C], slice(params, layout, n.ln2), true);
    add(`${b}.ffn_gate_inp.weight`, [E, C], slice(params, layout, n.router!), true);
    const w13 = slice(params, layout, n.w13!);
    const gate = new Float32Array(E * F * C), up = new Float32Array(E * F * C);
    for (let e = 0; e < E; e++) {
      gate.set(w13.subarray(e * 2 * F * C, e * 2 * F * C + F * C), e * F * C);
      up.set(w13.subarray(e * 2 * F * C + F * C, (e + 1) * 2 * F * C), e * F * C);
    }
    add(`${b}.ffn_gate_exps.weight`, [E, F, C], gate);
    add(`${b}.ffn_up_exps.weight`, [E, F, C], up);
    add(`${b}.ffn_down_exps.weight`, [E, C, F], slice(params, layout, n.w2!));
  }
  add("output_norm.weight", [C], slice(params, layout, names.normF), true);
  if (names.lmHead) add("output.weight", [V, C], slice(params, layout, names.lmHead));
  return out;
}

// ---------------------------------------------------------------------------
// Tokenizer

const LLAMA3_REGEX = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** Llama-3's pattern with single digits (\\p{N} instead of \\p{N}{1,3}): Qwen2/2.5/3 tokenizer.json. */
const QWEN2_REGEX = LLAMA3_REGEX.replace("\\p{N}{1,3}", "\\p{N}");

type Json = Record<string, unknown>;
const isObj = (x: unknown): x is Json => typeof x === "object" && x !== null && !Array.isArray(x);

/** Flattens a pre_tokenizer / decoder (Sequence or single) into its parts. */
function parts(x: unknown, key: "pretokenizers" | "decoders" | "processors"): Json[] {
  if (!isObj(x)) return [];
  if (x.type === "Sequence" && Array.isArray(x[key])) return (x[key] as unknown[]).filter(isObj);
  return [x];
}

/** tokenizer.ggml.pre for a byte-level BPE tokenizer.json, with a warning when it is a guess. */
function preTokenizerType(tok: HfTokenizerJson, warnings: string[]): string {
  const pre = parts(tok.pre_tokenizer, "pretokenizers");
  const byteLevel = pre.find((p) => p.type === "ByteLevel");
  if (pre.length === 1 && byteLevel && byteLevel.use_regex !== false) return "gpt-2";
  const split = pre.find((p) => p.type === "Split");
  const re = split && isObj(split.pattern) ? split.pattern.Regex : undefined;
  if (re === LLAMA3_REGEX) return "llama-bpe";
  if (re === QWEN2_REGEX) return "qwen2";
  warnings.push("tokenizer.json pre-tokenizer is not one of GPT-2, Llama-3, Qwen2: tokenizer.ggml.pre set to 'gpt-2' (llama.cpp splits text by GPT-2 rules; token ids fed directly are unaffected)");
  return "gpt-2";
}

/** The tokenizer.ggml.* metadata of a byte-level BPE tokenizer.json, padded to V tokens. */
export function tokenizerMetadata(tok: HfTokenizerJson, V: number, ids: { bos?: number | null; eos?: number | null; pad?: number | null }, warnings: string[]): [string, GgufValue][] {
  if (!isObj(tok) || !isObj(tok.model)) throw new GgufError("tokenizer.json: missing 'model'");
  if (tok.model.type !== "BPE") throw new GgufError(`tokenizer.json: model type '${String(tok.model.type)}' is not supported (only byte-level BPE exports to llama.cpp's 'gpt2' tokenizer)`);
  const isByteLevel = parts(tok.pre_tokenizer, "pretokenizers").some((p) => p.type === "ByteLevel") || parts(tok.decoder, "decoders").some((p) => p.type === "ByteLevel");
  if (!isByteLevel) throw new GgufError("tokenizer.json: not a byte-level BPE tokenizer (no ByteLevel pre-tokenizer or decoder); SentencePiece-style BPE is not supported");
  const tokens: (string | undefined)[] = new Array(V);
  const types = new Array<number>(V).fill(TOKEN_TYPE.normal);
  const place = (content: string, id: number, type: number) => {
    if (!Number.isInteger(id) || id < 0) throw new GgufError(`tokenizer.json: token ${JSON.stringify(content)} has invalid id ${id}`);
    if (id >= V) throw new GgufError(`tokenizer.json: token ${JSON.stringify(content)} has id ${id}, outside the model's vocabulary of ${V}`);
    tokens[id] = content;
    types[id] = type;
  };
  for (const [content, id] of Object.entries(tok.model.vocab)) place(content, id, TOKEN_TYPE.normal);
  for (const a of tok.added_tokens ?? []) place(a.content, a.id, a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined);
  let padded = 0;
  for (let i = 0; i < V; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TOKEN_TYPE.unused;
      padded++;
    }
  }
  if (padded) warnings.push(`tokenizer: ${padded} ids without a token padded as [PAD<id>] (vocab_size ${V})`);
  const merges = (tok.model.merges ?? []).map((m, i) => {
    if (typeof m === "string") return m;
    if (Array.isArray(m) && m.length === 2 && m.every((x) => typeof x === "string")) return `${m[0]} ${m[1]}`;
    throw new GgufError(`tokenizer.json: merge #${i} is neither "a b" nor ["a", "b"]`);
  });
  const md: [string, GgufValue][] = [
    ["tokenizer.ggml.model", gv.str("gpt2")],
    ["tokenizer.ggml.pre", gv.str(preTokenizerType(tok, warnings))],
    ["tokenizer.ggml.tokens", gv.arr("string", tokens as string[])],
    ["tokenizer.ggml.token_type", gv.arr("i32", types)],
    ["tokenizer.ggml.merges", gv.arr("string", merges)],
  ];
  const idKey = (key: string, id: number | null | undefined) => {
    if (id == null) return;
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new GgufError(`${key} ${id} is outside the vocabulary of ${V}`);
    md.push([key, gv.u32(id)]);
  };
  idKey("tokenizer.ggml.bos_token_id", ids.bos);
  idKey("tokenizer.ggml.eos_token_id", ids.eos);
  idKey("tokenizer.ggml.padding_token_id", ids.pad);
  md.push(["tokenizer.ggml.add_bos_token", gv.bool(addsBos(tok, ids.bos))]);
  md.push(["tokenizer.ggml.add_eos_token", gv.bool(false)]);
  return md;
}

/** Whether the post-processor's single-sequence template starts with the BOS token. */
function addsBos(tok: HfTokenizerJson, bos: number | null | undefined): boolean {
  if (bos == null) return false;
  for (const p of parts(tok.post_processor, "processors")) {
    if (p.type !== "TemplateProcessing" || !Array.isArray(p.single)) continue;
    const first = p.single[0];
    if (isObj(first) && isObj(first.SpecialToken)) {
      const name = first.SpecialToken.id;
      const bosContent = (tok.added_tokens ?? []).find((a) => a.id === bos)?.content;
      return name === bosContent;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// Export

export interface GgufModelContent {
  metadata: [string, GgufValue][];
  tensors: GgufTensorInput[];
  warnings: string[];
}

/** The general and architecture metadata every MoE GGUF architecture shares (A: llama.cpp's name). */
export function archMetadata(A: string, cfg: ModelConfig, name: string | undefined, fileType: number, contextLength: number, ffn: number): [string, GgufValue][] {
  return [
    ["general.architecture", gv.str(A)],
    ["general.name", gv.str(name ?? "moe-ts model")],
    ["general.file_type", gv.u32(fileType)],
    [`${A}.vocab_size`, gv.u32(cfg.vocabSize)],
    [`${A}.context_length`, gv.u32(contextLength)],
    [`${A}.embedding_length`, gv.u32(cfg.hiddenSize)],
    [`${A}.block_count`, gv.u32(cfg.numLayers)],
    [`${A}.feed_forward_length`, gv.u32(ffn)],
    [`${A}.attention.head_count`, gv.u32(cfg.numHeads)],
    [`${A}.attention.head_count_kv`, gv.u32(cfg.numKvHeads)],
    [`${A}.attention.key_length`, gv.u32(cfg.headDim)],
    [`${A}.attention.value_length`, gv.u32(cfg.headDim)],
    // every MoE architecture reads its norm eps (LayerNorm's too, for phimoe) from this key
    [`${A}.attention.layer_norm_rms_epsilon`, gv.f32(cfg.norm.eps)],
    [`${A}.rope.freq_base`, gv.f32(cfg.rope.theta)],
    [`${A}.rope.dimension_count`, gv.u32(cfg.rope.rotaryDim)],
    [`${A}.expert_count`, gv.u32(cfg.moe.numExperts)],
    [`${A}.expert_used_count`, gv.u32(cfg.moe.topK)],
  ];
}

/** Metadata and tensors of a model as llama.cpp's `llama` MoE architecture. */
export function modelToGguf(input: LlamaExportInput, dtype: ExportDtype): GgufModelContent {
  const { cfg, contextLength } = input;
  if (!EXPORT_DTYPES.includes(dtype)) throw new GgufError(`dtype '${dtype}' is not one of ${EXPORT_DTYPES.join(", ")}`);
  const bad = llamaIncompatibility(cfg, contextLength);
  if (bad) throw new GgufError(`cannot export to llama.cpp's llama architecture: ${bad} is not supported`);
  const { layout, names } = buildLayout(cfg);
  if (input.params.length !== layout.size) throw new GgufError(`params has ${input.params.length} values, the config's layout needs ${layout.size}`);
  const warnings: string[] = [];
  const A = "llama";
  const md = archMetadata(A, cfg, input.name, FILE_TYPE[dtype], input.contextLength, cfg.moe.expertIntermediateSize);
  if (dtype === "q8_0") md.push(["general.quantization_version", gv.u32(2)]);
  if (input.tokenizer) md.push(...tokenizerMetadata(input.tokenizer, cfg.vocabSize, { bos: input.bosTokenId, eos: input.eosTokenId, pad: input.padTokenId }, warnings));
  else warnings.push("no tokenizer embedded: llama.cpp needs tokenizer.ggml.* metadata to load the file");
  const tensors = modelTensors(cfg, layout, names, input.params, dtype, warnings);
  return { metadata: md, tensors, warnings };
}

/** Writes a model as a llama-arch GGUF file (atomically). */
export function exportLlamaGguf(file: string, input: LlamaExportInput, dtype: ExportDtype): { warnings: string[]; tensors: number } {
  const c = modelToGguf(input, dtype);
  writeGguf(file, c.metadata, c.tensors);
  return { warnings: c.warnings, tensors: c.tensors.length };
}

// ---------------------------------------------------------------------------
// Import

export interface GgufTokenizer {
  model: string;
  pre?: string;
  tokens: string[];
  tokenTypes?: number[];
  merges?: string[];
  bosTokenId?: number;
  eosTokenId?: number;
}

export interface ImportedModel {
  hf: MixtralHfConfig;
  cfg: ModelConfig;
  layout: ParamLayout;
  names: ModelNames;
  /** f32 arena laid out by buildLayout(cfg). */
  params: Float32Array;
  tokenizer?: GgufTokenizer;
}

/** The tokenizer a GGUF file embeds (tokenizer.ggml.*), or undefined when it has none. */
export function ggufTokenizer(g: GgufFile): GgufTokenizer | undefined {
  const tokens = g.getArray("tokenizer.ggml.tokens");
  if (!tokens) return undefined;
  const id = (k: string) => (g.get(k) ? g.getNumber(k) : undefined);
  return {
    model: g.getString("tokenizer.ggml.model", ""),
    pre: g.get("tokenizer.ggml.pre") ? g.getString("tokenizer.ggml.pre") : undefined,
    tokens: tokens.map(String),
    tokenTypes: g.getArray("tokenizer.ggml.token_type")?.map(Number),
    merges: g.getArray("tokenizer.ggml.merges")?.map(String),
    bosTokenId: id("tokenizer.ggml.bos_token_id"),
    eosTokenId: id("tokenizer.ggml.eos_token_id"),
  };
}

/** The shortest decimal that rounds to the same f32 (GGUF stores eps and θ as f32: 1e-5, not 9.99999974e-6). */
export function shortestF32(x: number): number {
  for (let p = 1; p <= 9; p++) {
    const v = Number(x.toPrecision(p));
    if (Math.fround(v) === Math.fround(x)) return v;
  }
  return x;
}

/** Reads a llama-arch MoE GGUF (F32/F16/Q8_0 tensors) into our parameter arena and a Mixtral config. */
export function importLlamaGguf(file: string): ImportedModel {
  const g = GgufFile.open(file);
  const fail = (msg: string): never => {
    throw new GgufError(`${file}: ${msg}`);
  };
  const arch = g.getString("general.architecture");
  if (arch !== "llama") fail(`architecture '${arch}' is not supported (only 'llama' with experts, Mixtral-style)`);
  const A = "llama";
  const num = (k: string, def?: number) => g.getNumber(`${A}.${k}`, def);
  const E = num("expert_count", 0);
  if (E <= 0) fail("llama.expert_count is missing or 0: a dense llama model is not a Mixture-of-Experts model");
  const C = num("embedding_length"), NH = num("attention.head_count");
  const KVH = num("attention.head_count_kv", NH);
  const HS = num("attention.key_length", C / NH);
  if (num("attention.value_length", HS) !== HS) fail("attention.value_length differs from key_length: not supported");
  const rot = num("rope.dimension_count", HS);
  if (rot !== HS) fail(`rope.dimension_count ${rot} differs from the head size ${HS}: partial rotary is not supported`);
  const scaling = g.get(`${A}.rope.scaling.type`);
  if (scaling && !(scaling.type === "string" && scaling.value === "none")) fail(`rope scaling '${String(scaling.value)}' is not supported`);
  for (const k of [`${A}.attention.sliding_window`, `${A}.expert_shared_count`, `${A}.expert_weights_scale`]) {
    if (g.get(k) !== undefined) fail(`metadata '${k}' is not supported`);
  }
  if (!g.has("token_embd.weight")) fail("missing tensor token_embd.weight");
  const V = g.info("token_embd.weight").shape[0]!;
  const tokens = g.getArray("tokenizer.ggml.tokens");
  if (tokens && tokens.length !== V) fail(`tokenizer.ggml.tokens has ${tokens.length} entries but token_embd has ${V} rows`);
  const bos = g.get("tokenizer.ggml.bos_token_id") ? g.getNumber("tokenizer.ggml.bos_token_id") : null;
  const eos = g.get("tokenizer.ggml.eos_token_id") ? g.getNumber("tokenizer.ggml.eos_token_id") : null;
  const hf = parseHfConfig({
    model_type: "mixtral",
    vocab_size: V,
    hidden_size: C,
    intermediate_size: num("feed_forward_length"),
    num_hidden_layers: num("block_count"),
    num_attention_heads: NH,
    num_key_value_heads: KVH,
    head_dim: HS,
    max_position_embeddings: num("context_length"),
    rms_norm_eps: shortestF32(num("attention.layer_norm_rms_epsilon")),
    rope_theta: shortestF32(num("rope.freq_base", 10000)),
    num_local_experts: E,
    num_experts_per_tok: num("expert_used_count"),
    tie_word_embeddings: !g.has("output.weight"),
    sliding_window: null,
    bos_token_id: bos,
    eos_token_id: eos,
  }, file) as MixtralHfConfig;
  const cfg = resolveConfig(hf, { kind: "dropless" }, file);
  const { layout, names } = buildLayout(cfg);
  const params = new Float32Array(layout.size);
  const used = new Set<string>();
  const F = cfg.moe.expertIntermediateSize;
  const take = (gname: string, shape: number[]): Float32Array => {
    if (!g.has(gname)) fail(`missing tensor ${gname}`);
    const info = g.info(gname);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) fail(`tensor ${gname} has shape [${info.shape}] (ne [${info.ne}]), expected [${shape}]`);
    used.add(gname);
    return checkFiniteTensor(file, gname, g.read(gname));
  };
  const put = (storage: string, data: Float32Array, at = 0) => params.set(data, layout.byName.get(storage)!.offset + at);
  put(names.embed, take("token_embd.weight", [V, C]));
  for (let l = 0; l < cfg.numLayers; l++) {
    const n = names.layers[l]!, b = `blk.${l}`;
    put(n.ln1, take(`${b}.attn_norm.weight`, [C]));
    put(n.q, permuteRopeRows(take(`${b}.attn_q.weight`, [NH * HS, C]), NH, HS, C, true));
    put(n.k, permuteRopeRows(take(`${b}.attn_k.weight`, [KVH * HS, C]), KVH, HS, C, true));
    put(n.v, take(`${b}.attn_v.weight`, [KVH * HS, C]));
    put(n.o, take(`${b}.attn_output.weight`, [C, NH * HS]));
    put(n.ln2, take(`${b}.ffn_norm.weight`, [C]));
    put(n.router!, take(`${b}.ffn_gate_inp.weight`, [E, C]));
    const gate = take(`${b}.ffn_gate_exps.weight`, [E, F, C]);
    const up = take(`${b}.ffn_up_exps.weight`, [E, F, C]);
    for (let e = 0; e < E; e++) {
      put(n.w13!, gate.subarray(e * F * C, (e + 1) * F * C), e * 2 * F * C);
      put(n.w13!, up.subarray(e * F * C, (e + 1) * F * C), e * 2 * F * C + F * C);
    }
    put(n.w2!, take(`${b}.ffn_down_exps.weight`, [E, C, F]));
  }
  put(names.normF, take("output_norm.weight", [C]));
  if (names.lmHead) put(names.lmHead, take("output.weight", [V, C]));
  for (const name of g.tensors.keys()) {
    if (!used.has(name)) fail(`tensor ${name} is not supported by this importer (biases, rope_freqs, shared experts and dense layers are not)`);
  }
  const tokenizer = ggufTokenizer(g);
  return { hf, cfg, layout, names, params, tokenizer };
}
