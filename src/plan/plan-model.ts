// What the planner needs to know about a model and a training run: layer shapes (from a resolved
// ModelConfig, or the papers' published sizes) and the batch (sequence length, micro-batch,
// global batch).
//
// Not: a model loader. Config files are read by model/config.ts; this file only maps the
// resolved config onto the few numbers the cost model uses.
import type { ModelConfig } from "../model/config.js";
import { PlanError } from "./cluster.js";

export interface PlanModel {
  name: string;
  layers: number; // L
  /** moeLayers[l]: layer l has experts (else a dense SwiGLU FFN of `denseHidden`). */
  moeLayers: boolean[];
  hidden: number; // C
  heads: number; // NH
  kvHeads: number; // KVH
  headDim: number; // HS
  experts: number; // E
  topK: number; // K
  expertHidden: number; // F
  denseHidden: number;
  /** Qwen2-MoE shared expert hidden size; 0 = none. */
  sharedExpertHidden: number;
  vocab: number; // V
  tiedEmbeddings: boolean;
  /** Keys a query attends (sliding window); 0 = unlimited. */
  slidingWindow: number;
  /** Parameters of one norm: C (RMSNorm) or 2C (LayerNorm with bias). */
  normParams: number;
  /** Per-layer attention parameters beyond the four projections: q/k/v and o biases, q/k norms. */
  attnExtraParams: number;
  lmHeadBias: boolean;
}

export interface PlanRun {
  /** Tokens per sequence (T). */
  seqLen: number;
  /** Sequences per micro-batch per data-parallel rank (B). */
  microBatch: number;
  /** Sequences per optimizer step over all ranks. */
  globalBatch: number;
}

export function planModelFromConfig(cfg: ModelConfig, name: string): PlanModel {
  return {
    name,
    layers: cfg.numLayers,
    moeLayers: [...cfg.moe.moeLayers],
    hidden: cfg.hiddenSize,
    heads: cfg.numHeads,
    kvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    experts: cfg.moe.numExperts,
    topK: cfg.moe.topK,
    expertHidden: cfg.moe.expertIntermediateSize,
    denseHidden: cfg.denseIntermediateSize,
    sharedExpertHidden: cfg.moe.sharedExpertIntermediateSize,
    vocab: cfg.vocabSize,
    tiedEmbeddings: cfg.tieEmbeddings,
    slidingWindow: cfg.slidingWindow,
    normParams: cfg.norm.kind === "layer" ? 2 * cfg.hiddenSize : cfg.hiddenSize,
    attnExtraParams: (cfg.qkvBias ? (cfg.numHeads + 2 * cfg.numKvHeads) * cfg.headDim : 0) + (cfg.oBias ? cfg.hiddenSize : 0) +
      (cfg.qkNorm === "head" ? 2 * cfg.headDim : cfg.qkNorm === "full" ? (cfg.numHeads + cfg.numKvHeads) * cfg.headDim : 0),
    lmHeadBias: cfg.lmHeadBias,
  };
}

interface PaperSizes {
  layers: number; hidden: number; heads: number; kvHeads: number; headDim: number; experts: number; topK: number;
  expertHidden: number; vocab: number; slidingWindow: number; layerNorm: boolean; biases: boolean;
}

/**
 * The real models' sizes as moe-techniques.md §1 lists them (every layer MoE, untied embeddings):
 * Skywork-MoE 146B/22B (RMSNorm, no biases) and GRIN-MoE 41.9B/6.6B (LayerNorm with bias,
 * attention and lm_head biases).
 */
const PAPER_MODELS: Record<string, PaperSizes> = {
  "skywork-moe": { layers: 52, hidden: 4608, heads: 36, kvHeads: 36, headDim: 128, experts: 16, topK: 2, expertHidden: 12288, vocab: 65536, slidingWindow: 0, layerNorm: false, biases: false },
  "grin-moe": { layers: 32, hidden: 4096, heads: 32, kvHeads: 8, headDim: 128, experts: 16, topK: 2, expertHidden: 6400, vocab: 32064, slidingWindow: 2048, layerNorm: true, biases: true },
};
export const PAPER_MODEL_NAMES = Object.keys(PAPER_MODELS);

export function paperModel(name: string): PlanModel {
  const p = PAPER_MODELS[name];
  if (!p) throw new PlanError(`unknown paper model '${name}' (known: ${PAPER_MODEL_NAMES.join(", ")})`);
  const { layerNorm, biases, ...sizes } = p;
  return {
    name, ...sizes, moeLayers: Array<boolean>(p.layers).fill(true), denseHidden: p.expertHidden, sharedExpertHidden: 0, tiedEmbeddings: false,
    normParams: layerNorm ? 2 * p.hidden : p.hidden,
    attnExtraParams: biases ? (p.heads + 2 * p.kvHeads) * p.headDim + p.hidden : 0,
    lmHeadBias: biases,
  };
}

/** Overrides layer and expert counts (e.g. Skywork's 24-layer App. B.2 example, GRIN at 52 experts). */
export function withSizes(m: PlanModel, o: { layers?: number; experts?: number }): PlanModel {
  let out = m;
  if (o.layers !== undefined) {
    if (!Number.isInteger(o.layers) || o.layers < 1) throw new PlanError(`layers must be a positive integer, got ${o.layers}`);
    const allMoe = m.moeLayers.every(Boolean);
    if (!allMoe && o.layers !== m.layers) throw new PlanError(`${m.name}: changing the layer count of a model with dense layers is not supported`);
    out = { ...out, layers: o.layers, moeLayers: Array<boolean>(o.layers).fill(true), name: `${out.name} L=${o.layers}` };
  }
  if (o.experts !== undefined) {
    if (!Number.isInteger(o.experts) || o.experts < m.topK) throw new PlanError(`experts must be an integer ≥ top-k ${m.topK}, got ${o.experts}`);
    out = { ...out, experts: o.experts, name: `${out.name} E=${o.experts}` };
  }
  return out;
}

export function validateRun(r: PlanRun): PlanRun {
  for (const k of ["seqLen", "microBatch", "globalBatch"] as const) {
    if (!Number.isInteger(r[k]) || r[k] < 1) throw new PlanError(`${k} must be a positive integer, got ${r[k]}`);
  }
  if (r.globalBatch % r.microBatch !== 0) throw new PlanError(`global batch ${r.globalBatch} is not a multiple of the micro-batch ${r.microBatch}`);
  return r;
}

/** Total parameters (all experts) and active parameters per token, for the report. */
export function planParameterCounts(m: PlanModel): { total: number; active: number } {
  const { hidden: C, heads: NH, kvHeads: KVH, headDim: HS, vocab: V } = m;
  const attn = 2 * C * NH * HS + 2 * C * KVH * HS + m.attnExtraParams + 2 * m.normParams;
  let total = V * C * (m.tiedEmbeddings ? 1 : 2) + (m.lmHeadBias ? V : 0) + m.normParams;
  let active = total;
  for (let l = 0; l < m.layers; l++) {
    total += attn;
    active += attn;
    const shared = m.sharedExpertHidden > 0 ? 3 * C * m.sharedExpertHidden + C : 0; // + its sigmoid gate [1, C]
    if (m.moeLayers[l]) {
      total += m.experts * 3 * C * m.expertHidden + m.experts * C + shared;
      active += m.topK * 3 * C * m.expertHidden + m.experts * C + shared;
    } else {
      total += 3 * C * m.denseHidden;
      active += 3 * C * m.denseHidden;
    }
  }
  return { total, active };
}
