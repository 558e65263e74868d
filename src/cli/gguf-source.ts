// `.gguf` as MODEL for the commands that read a model directory (`moe logits`, `moe eval`,
// `moe inspect`): the file is imported under its llama.cpp architecture (model/gguf-families.ts)
// into the family's HF config and f32 weights (f64 for the ref backend).
//
// Not: the importer itself, or inference (infer/open.ts opens .gguf for generate/chat/serve).
import { existsSync, statSync } from "node:fs";
import type { Backend } from "../backend/spec.js";
import type { HfConfig, ModelConfig } from "../model/config.js";
import { parameterCounts } from "../model/config.js";
import { importModelGguf } from "../model/gguf-families.js";
import { MoeModel } from "../model/model.js";
import { Weights } from "../model/weights.js";
import type { ModelShape } from "../model/forward.js";
import { GgufFile } from "../io/gguf.js";
import { estimateMemory } from "../train/memory.js";

export const isGgufPath = (p: string): boolean => p.endsWith(".gguf");

function checkFile(file: string): void {
  if (!existsSync(file) || !statSync(file).isFile()) throw new Error(`${file}: no such GGUF file`);
}

/** A model built from a GGUF file, as loadHfModel builds one from a directory. */
export function loadGgufModel(file: string, be: Backend, shape: ModelShape): { model: MoeModel; hf: HfConfig; cfg: ModelConfig } {
  checkFile(file);
  const g = importModelGguf(file);
  const weights = shape.dtype === "f64" ? new Weights(g.cfg, "f64", Float64Array.from(g.params)) : new Weights(g.cfg, "f32", g.params);
  return { model: new MoeModel(g.cfg, be, shape, weights), hf: g.hf, cfg: g.cfg };
}

/** What `moe inspect` reports for a GGUF file. */
export function inspectGguf(file: string): Record<string, unknown> {
  checkFile(file);
  const imp = importModelGguf(file);
  const g = GgufFile.open(file);
  const types: Record<string, number> = {};
  let bytes = 0;
  for (const t of g.tensors.values()) {
    types[t.type] = (types[t.type] ?? 0) + 1;
    bytes += t.byteLength;
  }
  const cfg = imp.cfg, counts = parameterCounts(cfg);
  return {
    file, architecture: imp.arch, family: imp.hf.model_type, layers: cfg.numLayers, moeLayers: cfg.moe.moeLayers.filter(Boolean).length,
    hiddenSize: cfg.hiddenSize, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim, vocab: cfg.vocabSize,
    experts: cfg.moe.numExperts, topK: cfg.moe.topK, expertSize: cfg.moe.expertIntermediateSize, sharedExpertSize: cfg.moe.sharedExpertIntermediateSize,
    router: cfg.moe.router, norm: cfg.norm.kind, totalParams: counts.total, activeParams: counts.active,
    tensors: g.tensors.size, tensorTypes: types, tensorBytes: bytes, fileBytes: statSync(file).size, tokenizer: imp.tokenizer ? imp.tokenizer.model : null,
    memory: (() => {
      const e = estimateMemory(cfg);
      return { weights: e.weights, trainingState: e.trainingState, activationsPerToken: e.activationsPerToken(128), activationsAtSeqLen: 128, kvCachePerToken: e.kvCachePerToken };
    })(),
  };
}
