// Every MoE family ↔ GGUF under the llama.cpp architecture of that family.
//
//   family      GGUF architecture  notes (llama.cpp src/models/<arch>.cpp, node-llama-cpp 3.21's build)
//   mixtral     llama              model/gguf-model.ts (q/k rows permuted for llama's interleaved RoPE)
//   skywork     llama              only when equivalent to Mixtral (no router logit norm, every layer MoE)
//   qwen2_moe   qwen2moe           q/k/v biases; shared expert ffn_{gate,up,down}_shexp + ffn_gate_inp_shexp
//                                  (sigmoid gate, a vector [C]); expert_feed_forward_length,
//                                  expert_shared_feed_forward_length; top-k weights NOT renormalised
//   qwen3_moe   qwen3moe           attn_q_norm / attn_k_norm over one head [HS]; head_dim = key_length
//                                  (independent of C / NH); top-k weights renormalised
//   olmoe       olmoe              attn_q_norm / attn_k_norm over the whole projection [C] (so
//                                  llama.cpp needs num_key_value_heads = num_attention_heads); not renormalised
//   phimoe      phimoe             LayerNorm weight + bias (attn_norm, ffn_norm, output_norm), q/k/v/o
//                                  biases, output.bias. llama.cpp runs phimoe through its phi3 graph:
//                                  RMSNorm plus bias instead of LayerNorm, and softmax top-k renormalised
//                                  instead of SparseMixer: its logits differ from HF PhiMoE's (see README)
// Qwen, OLMoE and PhiMoE use NEOX RoPE in llama.cpp (rotate_half, as HF): q/k rows are NOT permuted.
// Tensors: HF storage (model/params.ts) ↔ GGUF row-major shapes (ne reversed); norms, biases and
// routers stay F32. Tied embeddings: qwen3moe omits output.weight; qwen2moe, olmoe and phimoe require
// it, so a copy is written, and import ties again when output.weight equals token_embd bit for bit.
// PhiMoE's SparseMixer jitter ε has no llama.cpp key: written as moe_ts.router_jitter_noise.
//
// Not: the container format (io/gguf.ts), the llama-arch tensor map (model/gguf-model.ts), a tokenizer.
import { buildLayout, type ModelNames, type ParamLayout } from "./params.js";
import { parseHfConfig, resolveConfig, type HfConfig, type ModelConfig } from "./config.js";
import { checkFiniteTensor } from "./finite.js";
import { GgufError, GgufFile, gv, writeGguf, type GgmlTypeName, type GgufTensorInput } from "../io/gguf.js";
import {
  archMetadata, EXPORT_DTYPES, ggufTokenizer, importLlamaGguf, llamaIncompatibility, modelToGguf, shortestF32, tokenizerMetadata,
  type ExportDtype, type GgufModelContent, type GgufTokenizer, type LlamaExportInput,
} from "./gguf-model.js";

export type GgufArch = "llama" | "qwen2moe" | "qwen3moe" | "olmoe" | "phimoe";
export const GGUF_ARCHS: readonly GgufArch[] = ["llama", "qwen2moe", "qwen3moe", "olmoe", "phimoe"];

/** llama_ftype of the file (general.file_type). */
const FILE_TYPE: Record<ExportDtype, number> = { f32: 0, f16: 1, q8_0: 7 };

type Params = Float32Array | Float64Array;

export interface FamilyExportInput extends LlamaExportInput {
  /** PhiMoE SparseMixer ε (HF router_jitter_noise); stored as moe_ts.router_jitter_noise. Default: the config's. */
  routerJitterNoise?: number;
}

/** The GGUF architecture a family exports to; throws naming the family when llama.cpp has none. */
export function ggufArchitecture(cfg: ModelConfig): GgufArch {
  switch (cfg.family) {
    case "mixtral": return "llama";
    case "qwen2_moe": return "qwen2moe";
    case "qwen3_moe": return "qwen3moe";
    case "olmoe": return "olmoe";
    case "phimoe": return "phimoe";
    case "skywork": return "llama";
    case "llama": throw new GgufError("family 'llama' is a dense model: GGUF export is for the MoE families (mixtral, qwen2_moe, qwen3_moe, olmoe, phimoe, skywork)");
  }
}

/** The first feature of `cfg` that llama.cpp's architecture for its family cannot run, or null. */
export function ggufIncompatibility(cfg: ModelConfig, contextLength: number): string | null {
  const arch = ggufArchitecture(cfg);
  if (arch === "llama") {
    const bad = llamaIncompatibility(cfg, contextLength);
    if (bad && cfg.family === "skywork") return `${bad} (Skywork-MoE has no llama.cpp architecture; only a Skywork model equivalent to Mixtral exports, as 'llama')`;
    return bad;
  }
  const r = cfg.moe.router;
  const L = cfg.numLayers;
  if (cfg.rope.scaling) return `RoPE scaling ('${cfg.rope.scaling.type}')`;
  if (cfg.rope.rotaryDim !== cfg.headDim) return `partial rotary embedding (rotary dim ${cfg.rope.rotaryDim} < head dim ${cfg.headDim})`;
  if (cfg.slidingWindow > 0 && cfg.slidingWindow < contextLength && (cfg.windowFromLayer ?? 0) < L) return `a sliding window of ${cfg.slidingWindow} shorter than the context length ${contextLength}`;
  if (!cfg.moe.moeLayers.every((m) => m)) return "dense (non-MoE) layers mixed with MoE layers";
  if (cfg.clipQkv) return `clip_qkv ${cfg.clipQkv} (llama.cpp's ${arch} does not clamp q/k/v)`;
  if (r.kind === "softmax_topk" && r.logitsNormStd !== undefined) return "router logit normalisation";
  const fullWidth = cfg.numHeads * cfg.headDim === cfg.hiddenSize ? null : `head_dim ${cfg.headDim} × ${cfg.numHeads} heads ≠ hidden_size ${cfg.hiddenSize} (llama.cpp's ${arch} needs C = NH·HS)`;
  const softmax = (renorm: boolean): string | null => {
    if (r.kind !== "softmax_topk") return `the '${r.kind}' router (llama.cpp's ${arch} uses softmax top-k)`;
    if (r.normTopkProb !== renorm) return `norm_topk_prob ${r.normTopkProb} (llama.cpp's ${arch} ${renorm ? "always renormalises" : "never renormalises"} the top-k weights)`;
    return null;
  };
  switch (arch) {
    case "qwen2moe":
      if (cfg.norm.kind !== "rms") return "LayerNorm";
      if (cfg.oBias) return "an o_proj bias";
      if (cfg.lmHeadBias) return "an lm_head bias";
      if (cfg.qkNorm !== "none") return `q/k normalisation ('${cfg.qkNorm}')`;
      if (cfg.moe.sharedExpertIntermediateSize <= 0) return "no shared expert (llama.cpp's qwen2moe requires one)";
      return fullWidth ?? softmax(false);
    case "qwen3moe":
      if (cfg.norm.kind !== "rms") return "LayerNorm";
      if (cfg.qkvBias || cfg.oBias) return "attention biases";
      if (cfg.lmHeadBias) return "an lm_head bias";
      if (cfg.qkNorm !== "head") return `q/k normalisation '${cfg.qkNorm}' (qwen3moe normalises per head)`;
      if (cfg.moe.sharedExpertIntermediateSize > 0) return "a shared expert";
      return softmax(true);
    case "olmoe":
      if (cfg.norm.kind !== "rms") return "LayerNorm";
      if (cfg.qkvBias || cfg.oBias) return "attention biases";
      if (cfg.lmHeadBias) return "an lm_head bias";
      if (cfg.qkNorm !== "full") return `q/k normalisation '${cfg.qkNorm}' (olmoe normalises the whole projection)`;
      if (cfg.numKvHeads !== cfg.numHeads) return `num_key_value_heads ${cfg.numKvHeads} ≠ num_attention_heads ${cfg.numHeads} (llama.cpp's olmoe k_norm has C entries)`;
      if (cfg.moe.sharedExpertIntermediateSize > 0) return "a shared expert";
      return fullWidth ?? softmax(false);
    case "phimoe":
      if (cfg.norm.kind !== "layer") return "RMSNorm (phimoe stores LayerNorm weight and bias)";
      if (cfg.qkNorm !== "none") return `q/k normalisation ('${cfg.qkNorm}')`;
      if (cfg.qkvBias !== cfg.oBias) return "q/k/v biases without an o_proj bias or the reverse";
      if (cfg.moe.sharedExpertIntermediateSize > 0) return "a shared expert";
      if (r.kind !== "sparsemixer") return `the '${r.kind}' router (PhiMoE uses SparseMixer)`;
      return fullWidth;
  }
}

/** Which GGUF type a tensor gets (vectors, norms and routers stay F32). */
function tensorType(dtype: ExportDtype, shape: number[], keepF32: boolean, warnings: string[], name: string): GgmlTypeName {
  if (keepF32 || shape.length === 1 || dtype === "f32") return "F32";
  if (dtype === "f16") return "F16";
  if (shape[shape.length - 1]! % 32 !== 0) {
    warnings.push(`${name}: row length ${shape[shape.length - 1]} is not a multiple of 32; written as F16 instead of Q8_0`);
    return "F16";
  }
  return "Q8_0";
}

/** One GGUF tensor: its row-major shape and where its values live in the arena. */
interface Entry {
  gguf: string;
  shape: number[];
  f32: boolean;
  /** Storage tensor and, per part, (offset in the storage tensor, length, stride between parts). */
  storage: string;
  parts?: { at: number; len: number; stride: number; count: number };
}

/** The tensor map of a non-llama architecture (no row permutation: NEOX RoPE as HF). */
function tensorPlan(cfg: ModelConfig, arch: Exclude<GgufArch, "llama">, names: ModelNames, tiedOutput: boolean): Entry[] {
  const { hiddenSize: C, numHeads: NH, numKvHeads: KVH, headDim: HS, vocabSize: V } = cfg;
  const E = cfg.moe.numExperts, F = cfg.moe.expertIntermediateSize, S = cfg.moe.sharedExpertIntermediateSize;
  const out: Entry[] = [];
  const add = (gguf: string, shape: number[], storage: string | undefined, f32 = false, parts?: Entry["parts"]) => {
    if (!storage) throw new GgufError(`internal: no storage tensor for ${gguf}`);
    out.push({ gguf, shape, f32, storage, ...(parts ? { parts } : {}) });
  };
  add("token_embd.weight", [V, C], names.embed);
  for (let l = 0; l < cfg.numLayers; l++) {
    const n = names.layers[l]!, b = `blk.${l}`;
    add(`${b}.attn_norm.weight`, [C], n.ln1, true);
    if (n.ln1Bias) add(`${b}.attn_norm.bias`, [C], n.ln1Bias, true);
    add(`${b}.attn_q.weight`, [NH * HS, C], n.q);
    add(`${b}.attn_k.weight`, [KVH * HS, C], n.k);
    add(`${b}.attn_v.weight`, [KVH * HS, C], n.v);
    if (n.qBias) add(`${b}.attn_q.bias`, [NH * HS], n.qBias, true);
    if (n.kBias) add(`${b}.attn_k.bias`, [KVH * HS], n.kBias, true);
    if (n.vBias) add(`${b}.attn_v.bias`, [KVH * HS], n.vBias, true);
    add(`${b}.attn_output.weight`, [C, NH * HS], n.o);
    if (n.oBias) add(`${b}.attn_output.bias`, [C], n.oBias, true);
    if (n.qNorm) add(`${b}.attn_q_norm.weight`, [cfg.qkNorm === "head" ? HS : NH * HS], n.qNorm, true);
    if (n.kNorm) add(`${b}.attn_k_norm.weight`, [cfg.qkNorm === "head" ? HS : KVH * HS], n.kNorm, true);
    add(`${b}.ffn_norm.weight`, [C], n.ln2, true);
    if (n.ln2Bias) add(`${b}.ffn_norm.bias`, [C], n.ln2Bias, true);
    add(`${b}.ffn_gate_inp.weight`, [E, C], n.router, true);
    add(`${b}.ffn_gate_exps.weight`, [E, F, C], n.w13, false, { at: 0, len: F * C, stride: 2 * F * C, count: E });
    add(`${b}.ffn_up_exps.weight`, [E, F, C], n.w13, false, { at: F * C, len: F * C, stride: 2 * F * C, count: E });
    add(`${b}.ffn_down_exps.weight`, [E, C, F], n.w2);
    if (arch === "qwen2moe") {
      add(`${b}.ffn_gate_inp_shexp.weight`, [C], n.sharedGate, true);
      add(`${b}.ffn_gate_shexp.weight`, [S, C], n.sharedGateUp, false, { at: 0, len: S * C, stride: 0, count: 1 });
      add(`${b}.ffn_up_shexp.weight`, [S, C], n.sharedGateUp, false, { at: S * C, len: S * C, stride: 0, count: 1 });
      add(`${b}.ffn_down_shexp.weight`, [C, S], n.sharedDown);
    }
  }
  add("output_norm.weight", [C], names.normF, true);
  if (names.normFBias) add("output_norm.bias", [C], names.normFBias, true);
  if (names.lmHead) add("output.weight", [V, C], names.lmHead);
  else if (!tiedOutput) add("output.weight", [V, C], names.embed);
  if (names.lmHeadBias) add("output.bias", [V], names.lmHeadBias, true);
  return out;
}

function gather(params: Params, layout: ParamLayout, e: Entry): Float32Array {
  const t = layout.byName.get(e.storage)!;
  const p = e.parts ?? { at: 0, len: t.size, stride: 0, count: 1 };
  const out = new Float32Array(p.len * p.count);
  for (let i = 0; i < p.count; i++) {
    const from = t.offset + p.at + i * p.stride;
    out.set(params.subarray(from, from + p.len), i * p.len);
  }
  return out;
}

function scatter(params: Float32Array, layout: ParamLayout, e: Entry, data: Float32Array): void {
  const t = layout.byName.get(e.storage)!;
  const p = e.parts ?? { at: 0, len: t.size, stride: 0, count: 1 };
  for (let i = 0; i < p.count; i++) params.set(data.subarray(i * p.len, (i + 1) * p.len), t.offset + p.at + i * p.stride);
}

/** Metadata and tensors of a model under its family's llama.cpp architecture. */
export function familyModelToGguf(input: FamilyExportInput, dtype: ExportDtype): GgufModelContent & { arch: GgufArch } {
  const { cfg, contextLength } = input;
  if (!EXPORT_DTYPES.includes(dtype)) throw new GgufError(`dtype '${dtype}' is not one of ${EXPORT_DTYPES.join(", ")}`);
  const A = ggufArchitecture(cfg);
  const bad = ggufIncompatibility(cfg, contextLength);
  if (bad) {
    const hint = cfg.family === "skywork" ? "train with model.router=topk (no gating-logit normalisation) or model.family=mixtral" : "train with the family's own router (model.router unset) and no rope scaling or sliding window";
    throw new GgufError(`cannot export ${cfg.family} to llama.cpp's ${A} architecture: ${bad} is not supported; ${hint}`);
  }
  if (A === "llama") return { ...modelToGguf(input, dtype), arch: A };
  const { layout, names } = buildLayout(cfg);
  if (input.params.length !== layout.size) throw new GgufError(`params has ${input.params.length} values, the config's layout needs ${layout.size}`);
  const warnings: string[] = [];
  const ffn = A === "qwen2moe" || A === "qwen3moe" ? cfg.denseIntermediateSize : cfg.moe.expertIntermediateSize;
  const md = archMetadata(A, cfg, input.name, FILE_TYPE[dtype], contextLength, ffn);
  if (A === "qwen2moe" || A === "qwen3moe") md.push([`${A}.expert_feed_forward_length`, gv.u32(cfg.moe.expertIntermediateSize)]);
  if (A === "qwen2moe") md.push([`${A}.expert_shared_feed_forward_length`, gv.u32(cfg.moe.sharedExpertIntermediateSize)]);
  if (A === "phimoe") {
    const r = cfg.moe.router;
    md.push(["moe_ts.router_jitter_noise", gv.f32(input.routerJitterNoise ?? (r.kind === "sparsemixer" ? r.jitterEps : 0))]);
  }
  if (dtype === "q8_0") md.push(["general.quantization_version", gv.u32(2)]);
  if (input.tokenizer) md.push(...tokenizerMetadata(input.tokenizer, cfg.vocabSize, { bos: input.bosTokenId, eos: input.eosTokenId, pad: input.padTokenId }, warnings));
  else warnings.push("no tokenizer embedded: llama.cpp needs tokenizer.ggml.* metadata to load the file");
  const tiedOk = A === "qwen3moe";
  if (cfg.tieEmbeddings && !tiedOk) warnings.push(`tied embeddings: llama.cpp's ${A} requires output.weight, written as a copy of token_embd`);
  const tensors: GgufTensorInput[] = tensorPlan(cfg, A, names, tiedOk).map((e) => ({
    name: e.gguf, shape: e.shape, data: gather(input.params, layout, e), type: tensorType(dtype, e.shape, e.f32, warnings, e.gguf),
  }));
  // llama.cpp's phimoe requires attn_output.bias and output.bias: zeros when the model has none
  if (A === "phimoe") {
    for (let l = 0; l < cfg.numLayers; l++) if (!cfg.oBias) tensors.push({ name: `blk.${l}.attn_output.bias`, shape: [cfg.hiddenSize], type: "F32", data: new Float32Array(cfg.hiddenSize) });
    if (!cfg.lmHeadBias) tensors.push({ name: "output.bias", shape: [cfg.vocabSize], type: "F32", data: new Float32Array(cfg.vocabSize) });
  }
  return { metadata: md, tensors, warnings, arch: A };
}

/** Writes a model as a GGUF file under its family's llama.cpp architecture (atomically). */
export function exportModelGguf(file: string, input: FamilyExportInput, dtype: ExportDtype): { warnings: string[]; tensors: number; arch: GgufArch } {
  const c = familyModelToGguf(input, dtype);
  writeGguf(file, c.metadata, c.tensors);
  return { warnings: c.warnings, tensors: c.tensors.length, arch: c.arch };
}

// ---------------------------------------------------------------------------
// Import

export interface ImportedGgufModel {
  arch: GgufArch;
  hf: HfConfig;
  cfg: ModelConfig;
  layout: ParamLayout;
  names: ModelNames;
  /** f32 arena laid out by buildLayout(cfg). */
  params: Float32Array;
  tokenizer?: GgufTokenizer;
}


const allZero = (a: Float32Array) => a.every((x) => x === 0);
const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));

/** Reads a GGUF of any supported architecture into our parameter arena and the family's HF config. */
export function importModelGguf(file: string): ImportedGgufModel {
  const g = GgufFile.open(file);
  const arch = g.getString("general.architecture");
  if (arch === "llama") return { arch: "llama", ...importLlamaGguf(file) };
  const fail = (msg: string): never => {
    throw new GgufError(`${file}: ${msg}`);
  };
  if (!(GGUF_ARCHS as readonly string[]).includes(arch)) fail(`architecture '${arch}' is not supported (supported: ${GGUF_ARCHS.join(", ")})`);
  const A = arch as Exclude<GgufArch, "llama">;
  const num = (k: string, def?: number) => g.getNumber(`${A}.${k}`, def);
  const E = num("expert_count", 0);
  if (E <= 0) fail(`${A}.expert_count is missing or 0`);
  const C = num("embedding_length"), NH = num("attention.head_count");
  const KVH = num("attention.head_count_kv", NH);
  const HS = num("attention.key_length", C / NH);
  if (num("attention.value_length", HS) !== HS) fail("attention.value_length differs from key_length: not supported");
  const rot = num("rope.dimension_count", HS);
  if (rot !== HS) fail(`rope.dimension_count ${rot} differs from the head size ${HS}: partial rotary is not supported`);
  const scaling = g.get(`${A}.rope.scaling.type`);
  if (scaling && !(scaling.type === "string" && scaling.value === "none")) fail(`rope scaling '${String(scaling.value)}' is not supported`);
  for (const k of [`${A}.attention.sliding_window`, `${A}.expert_weights_scale`, `${A}.attention.clamp_kqv`]) {
    if (g.get(k) !== undefined) fail(`metadata '${k}' is not supported`);
  }
  if (!g.has("token_embd.weight")) fail("missing tensor token_embd.weight");
  const V = g.info("token_embd.weight").shape[0]!;
  const tokens = g.getArray("tokenizer.ggml.tokens");
  if (tokens && tokens.length !== V) fail(`tokenizer.ggml.tokens has ${tokens.length} entries but token_embd has ${V} rows`);
  const bos = g.get("tokenizer.ggml.bos_token_id") ? g.getNumber("tokenizer.ggml.bos_token_id") : null;
  const eos = g.get("tokenizer.ggml.eos_token_id") ? g.getNumber("tokenizer.ggml.eos_token_id") : null;
  const read = (name: string, shape: number[]): Float32Array => {
    if (!g.has(name)) fail(`missing tensor ${name}`);
    const info = g.info(name);
    if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) fail(`tensor ${name} has shape [${info.shape}] (ne [${info.ne}]), expected [${shape}]`);
    return checkFiniteTensor(file, name, g.read(name));
  };
  const embed = read("token_embd.weight", [V, C]);
  const tied = !g.has("output.weight") || sameBits(read("output.weight", [V, C]), embed);
  const L = num("block_count");
  const common = {
    vocab_size: V, hidden_size: C, num_hidden_layers: L, num_attention_heads: NH, num_key_value_heads: KVH,
    max_position_embeddings: num("context_length"),
    rms_norm_eps: shortestF32(num("attention.layer_norm_rms_epsilon")),
    rope_theta: shortestF32(num("rope.freq_base", 10000)),
    num_experts_per_tok: num("expert_used_count"),
    tie_word_embeddings: tied, bos_token_id: bos, eos_token_id: eos,
  };
  const used = new Set<string>();
  const skipZero = (name: string): boolean => {
    // zero biases written only because llama.cpp's phimoe requires them
    if (!g.has(name)) return false;
    const ok = allZero(g.read(name));
    if (ok) used.add(name);
    return ok;
  };
  let json: Record<string, unknown>;
  switch (A) {
    case "qwen2moe":
      json = {
        model_type: "qwen2_moe", ...common, intermediate_size: num("feed_forward_length"), num_experts: E,
        moe_intermediate_size: num("expert_feed_forward_length"), shared_expert_intermediate_size: num("expert_shared_feed_forward_length"),
        norm_topk_prob: false, decoder_sparse_step: 1, mlp_only_layers: [], use_sliding_window: false, ...(HS !== C / NH ? { head_dim: HS } : {}),
      };
      break;
    case "qwen3moe":
      json = {
        model_type: "qwen3_moe", ...common, intermediate_size: num("feed_forward_length"), num_experts: E, head_dim: HS,
        moe_intermediate_size: num("expert_feed_forward_length"), norm_topk_prob: true, decoder_sparse_step: 1, mlp_only_layers: [],
        attention_bias: false, use_sliding_window: false,
      };
      break;
    case "olmoe":
      json = { model_type: "olmoe", ...common, intermediate_size: num("feed_forward_length"), num_experts: E, norm_topk_prob: false, attention_bias: false, clip_qkv: null };
      break;
    case "phimoe": {
      const qb = g.has("blk.0.attn_q.bias");
      const attentionBias = qb || !Array.from({ length: L }, (_, l) => skipZero(`blk.${l}.attn_output.bias`)).every(Boolean);
      if (attentionBias && !qb) fail("attn_output.bias without attn_q.bias: not representable as HF PhiMoE (attention_bias covers q/k/v/o)");
      const lmHeadBias = g.has("output.bias") && !skipZero("output.bias");
      const jitter = g.get("moe_ts.router_jitter_noise") ? shortestF32(g.getNumber("moe_ts.router_jitter_noise")) : 0.01;
      json = {
        model_type: "phimoe", ...common, intermediate_size: num("feed_forward_length"), num_local_experts: E,
        attention_bias: attentionBias, lm_head_bias: lmHeadBias, router_jitter_noise: jitter, sliding_window: null,
        ...(HS !== C / NH ? { head_dim: HS } : {}),
      };
      break;
    }
  }
  const hf = parseHfConfig(json, file);
  const cfg = resolveConfig(hf, { kind: "dropless" }, file);
  const { layout, names } = buildLayout(cfg);
  const params = new Float32Array(layout.size);
  for (const e of tensorPlan(cfg, A, names, tied)) {
    used.add(e.gguf);
    scatter(params, layout, e, e.gguf === "token_embd.weight" ? embed : read(e.gguf, e.shape));
  }
  if (tied) used.add("output.weight");
  for (const name of g.tensors.keys()) {
    if (!used.has(name)) fail(`tensor ${name} is not supported by this importer for ${A} (rope_freqs, dense layers and biases the HF family lacks are not)`);
  }
  const tokenizer = ggufTokenizer(g);
  return { arch: A, hf, cfg, layout, names, params, tokenizer };
}
