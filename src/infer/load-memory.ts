// The memory check of the commands that load a model to run it (`moe generate`, `chat`, `serve`,
// `logits`, `eval`): the bytes of the weights (f32 as loaded, plus their compact copy for
// --dtype), the KV cache and the workspaces, estimated from the model's config (config.json, or
// a GGUF's metadata and tensor shapes) before any tensor is read, and refused with the figure and
// the memory available when they do not fit (train/memory.ts checkFits).
// The figures are estimates (the main buffers), not measurements. Not: the training check
// (train/memory.ts checkTrainingFits) or the allocation itself.
import { existsSync, statSync } from "node:fs";
import { readHfConfig } from "../model/checkpoint.js";
import { parameterCounts, resolveConfig } from "../model/config.js";
import { GgufFile } from "../io/gguf.js";
import { resolveModelDir } from "../train/checkpoints.js";
import { checkFits, formatBytes } from "../train/memory.js";

/** What the estimate needs of a model: sizes only, read without the weights. */
export interface ModelSizes {
  parameters: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  hidden: number;
  vocab: number;
  /** FFN width active per token (top-k experts + shared, or the dense FFN). */
  ffnActive: number;
  /** The model's context (max_position_embeddings, GGUF context_length). */
  context: number;
}

/** Sizes of MODEL (HF directory, run directory or .gguf) from its config or GGUF header. */
export function modelSizes(model: string): ModelSizes {
  if (model.endsWith(".gguf")) {
    if (!existsSync(model) || !statSync(model).isFile()) throw new Error(`${model}: no such GGUF file`);
    const g = GgufFile.open(model);
    const A = g.getString("general.architecture");
    const num = (k: string, def?: number) => g.getNumber(`${A}.${k}`, def);
    const hidden = num("embedding_length"), heads = num("attention.head_count");
    let parameters = 0;
    for (const t of g.tensors.values()) parameters += t.ne.reduce((a, b) => a * b, 1);
    const experts = num("expert_count", 0);
    const ffnActive = experts > 0 ? num("expert_feed_forward_length", num("feed_forward_length")) * num("expert_used_count", 1) + num("expert_shared_feed_forward_length", 0) : num("feed_forward_length");
    return {
      parameters, layers: num("block_count"), heads, kvHeads: num("attention.head_count_kv", heads), headDim: num("attention.key_length", hidden / heads), hidden,
      vocab: g.has("token_embd.weight") ? g.info("token_embd.weight").shape[0]! : 0, ffnActive, context: num("context_length", 4096),
    };
  }
  const dir = resolveModelDir(model);
  const hf = readHfConfig(dir);
  const cfg = resolveConfig(hf, { kind: "dropless" }, `${dir}/config.json`);
  return {
    parameters: parameterCounts(cfg).total, layers: cfg.numLayers, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim, hidden: cfg.hiddenSize, vocab: cfg.vocabSize,
    ffnActive: Math.max(cfg.moe.expertIntermediateSize * cfg.moe.topK + cfg.moe.sharedExpertIntermediateSize, cfg.denseIntermediateSize), context: hf.max_position_embeddings,
  };
}

/** Bytes per parameter of each engine weight dtype (block formats with their scales). */
export const DTYPE_BYTES: Record<string, number> = {
  f64: 8, f32: 4, bf16: 2, f16: 2, fp8_e4m3: 1, fp8_e5m2: 1, int8: 1, q8_0: 34 / 32, q4_0: 18 / 32, q4_k: 144 / 256, q6_k: 210 / 256,
};

/** Tokens per KV block (the engine's default blockSize). */
const KV_BLOCK = 16;

export interface InferenceLoad {
  /** The compact weight dtype the engine keeps (f32: none besides the loaded f32; f64: the ref backend's copy). */
  dtype: string;
  /** KV cache: tokens held and bytes per element (f32 4, bf16 2); 0 tokens for a plain forward. */
  kvTokens: number;
  kvBytes: number;
  /** Sequences the engine runs at once (each gets one spare KV block of 16 tokens, as engine.ts allocates). */
  seqs?: number;
  /** Rows one forward computes (engine: max batched tokens; logits/eval: B × T) and the longest context a row attends to. */
  rows: number;
  context: number;
  /** A plain forward (logits/eval) keeps every layer's activations of its rows, not one layer's. */
  allLayers?: boolean;
}

/** The estimate: weights, KV cache, workspaces (bytes), and the detail line for the message. */
export function inferenceBytes(s: ModelSizes, o: InferenceLoad): { bytes: number; weights: number; kv: number; work: number; detail: string } {
  const f32 = 4 * s.parameters;
  const compact = o.dtype === "f32" ? 0 : (DTYPE_BYTES[o.dtype] ?? 4) * s.parameters;
  const kvAllocated = o.kvTokens ? KV_BLOCK * (Math.ceil(o.kvTokens / KV_BLOCK) + (o.seqs ?? 1)) : 0;
  const kv = kvAllocated * 2 * s.layers * s.kvHeads * s.headDim * o.kvBytes;
  // per row: residual, norms, q/k/v/o, the FFN hidden rows, logits; a plain forward also keeps the
  // attention probabilities over the context (the engine's paged attention streams them by block)
  const perLayer = 8 * s.hidden + 2 * (s.heads + 2 * s.kvHeads) * s.headDim + (o.allLayers ? s.heads * o.context : 0) + 3 * s.ffnActive;
  const work = 4 * o.rows * ((o.allLayers ? s.layers : 1) * perLayer + 2 * s.vocab);
  const parts = [`weights ${formatBytes(f32)} f32${compact ? ` + ${formatBytes(compact)} ${o.dtype}` : ""}`];
  if (o.kvTokens) parts.push(`KV cache ${formatBytes(kv)} for ${o.kvTokens} tokens`);
  parts.push(`workspaces ${formatBytes(work)} for ${o.rows} rows`);
  return { bytes: f32 + compact + kv + work, weights: f32 + compact, kv, work, detail: parts.join(" + ") };
}

/**
 * Refuses, before loading, a model whose run under `load(sizes)` does not fit in the memory
 * available. Returns the sizes (their `context` gives the default --max-model-len).
 */
export function checkInferenceFits(cmd: string, model: string, load: (s: ModelSizes) => InferenceLoad): ModelSizes {
  const s = modelSizes(model);
  const { bytes, detail } = inferenceBytes(s, load(s));
  checkFits(`${cmd} ${model}`, bytes, detail, 4 * s.parameters);
  return s;
}
