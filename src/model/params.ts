// Parameter layout: every weight of a model in one flat arena, with named views computed
// once from the config (llm.c `fill_in_parameter_sizes` / `malloc_and_point`).
//
// Storage tensors are what the compute uses; expert weights are stored fused per layer so
// one grouped GEMM covers all experts:
//   <moe>.experts.w13  (E, 2F, C)  rows [0,F) = w1/gate_proj of expert e, rows [F,2F) = w3/up_proj
//   <moe>.experts.w2   (E, C, F)   = w2/down_proj
// and dense FFNs likewise as mlp.gate_up (2I, C) + mlp.down_proj (C, I).
// HF tensors (`hfTensors`) are views into the same arena under the HF names of the
// family (per-expert keys), used for checkpoint load/save; every HF tensor is a contiguous
// sub-range of exactly one storage tensor.
//
// Not: an allocator for activations (see model/activations.ts) or a checkpoint reader.
import type { ModelConfig } from "./config.js";

export interface TensorSlot {
  name: string;
  shape: number[];
  /** Element offset in the arena. */
  offset: number;
  size: number;
}

export interface StorageTensor extends TensorSlot {
  /** AdamW applies weight decay (true for matrices except embeddings; false for norms, biases, embeddings). */
  decay: boolean;
  /** How it is initialised. */
  init: "normal" | "ones" | "zeros";
  /** false for buffers the optimizer never touches (the aux-free router bias). */
  trainable: boolean;
}

export interface ParamLayout {
  size: number;
  tensors: StorageTensor[];
  byName: Map<string, StorageTensor>;
  /** HF-named views (checkpoint keys), in a stable order. */
  hfTensors: TensorSlot[];
}

/** Names of one layer's storage tensors. */
export interface LayerNames {
  ln1: string; ln1Bias?: string; q: string; k: string; v: string; o: string;
  qBias?: string; kBias?: string; vBias?: string; oBias?: string; qNorm?: string; kNorm?: string;
  ln2: string; ln2Bias?: string;
  /** MoE layer */
  router?: string; routerBias?: string; w13?: string; w2?: string;
  sharedGateUp?: string; sharedDown?: string; sharedGate?: string;
  /** dense FFN layer */
  gateUp?: string; down?: string;
}

export interface ModelNames {
  embed: string;
  normF: string;
  normFBias?: string;
  lmHead?: string; // absent when tied
  lmHeadBias?: string;
  layers: LayerNames[];
}

/** The HF module name of the MoE block: Mixtral-style families use block_sparse_moe, Qwen/OLMoE use mlp. */
export function moeModuleName(cfg: ModelConfig): "block_sparse_moe" | "mlp" {
  return cfg.family === "mixtral" || cfg.family === "phimoe" || cfg.family === "skywork" ? "block_sparse_moe" : "mlp";
}

/** Per-expert HF key suffixes: (gate, up, down). */
function expertKeys(cfg: ModelConfig): [string, string, string] {
  return moeModuleName(cfg) === "block_sparse_moe" ? ["w1", "w3", "w2"] : ["gate_proj", "up_proj", "down_proj"];
}

/**
 * Expert parallelism with sharded memory: the experts [first, first + count) of every MoE layer
 * are the only ones stored (w13 (count, 2F, C), w2 (count, C, F)); the HF views keep the global
 * expert ids. Everything else (the router included, with all E outputs) is stored whole.
 */
export interface ExpertRange {
  first: number;
  count: number;
}

export function buildLayout(cfg: ModelConfig, experts?: ExpertRange): { layout: ParamLayout; names: ModelNames } {
  const { hiddenSize: C, numHeads: NH, numKvHeads: KVH, headDim: HS, vocabSize: V } = cfg;
  if (experts) {
    const { first, count } = experts, E = cfg.moe.numExperts;
    if (!(Number.isInteger(first) && Number.isInteger(count) && first >= 0 && count >= 1 && first + count <= E)) throw new RangeError(`expert range [${first}, ${first + count}) is not a non-empty range of the ${E} experts`);
  }
  const tensors: StorageTensor[] = [];
  const hf: TensorSlot[] = [];
  let offset = 0;
  const add = (name: string, shape: number[], init: StorageTensor["init"], decay: boolean, hfName: string | null = name, trainable = true): string => {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, shape, offset, size, decay, init, trainable });
    if (hfName) hf.push({ name: hfName, shape, offset, size });
    offset += size;
    return name;
  };
  const isLN = cfg.norm.kind === "layer";
  const embed = add("model.embed_tokens.weight", [V, C], "normal", false);
  const layers: LayerNames[] = [];
  const moeMod = moeModuleName(cfg);
  const [gk, uk, dk] = expertKeys(cfg);
  for (let l = 0; l < cfg.numLayers; l++) {
    const p = `model.layers.${l}`;
    const n: LayerNames = {
      ln1: add(`${p}.input_layernorm.weight`, [C], "ones", false),
      ln1Bias: isLN ? add(`${p}.input_layernorm.bias`, [C], "zeros", false) : undefined,
      q: add(`${p}.self_attn.q_proj.weight`, [NH * HS, C], "normal", true),
      qBias: cfg.qkvBias ? add(`${p}.self_attn.q_proj.bias`, [NH * HS], "zeros", false) : undefined,
      k: add(`${p}.self_attn.k_proj.weight`, [KVH * HS, C], "normal", true),
      kBias: cfg.qkvBias ? add(`${p}.self_attn.k_proj.bias`, [KVH * HS], "zeros", false) : undefined,
      v: add(`${p}.self_attn.v_proj.weight`, [KVH * HS, C], "normal", true),
      vBias: cfg.qkvBias ? add(`${p}.self_attn.v_proj.bias`, [KVH * HS], "zeros", false) : undefined,
      o: add(`${p}.self_attn.o_proj.weight`, [C, NH * HS], "normal", true),
      oBias: cfg.oBias ? add(`${p}.self_attn.o_proj.bias`, [C], "zeros", false) : undefined,
      qNorm: cfg.qkNorm === "none" ? undefined : add(`${p}.self_attn.q_norm.weight`, [cfg.qkNorm === "head" ? HS : NH * HS], "ones", false),
      kNorm: cfg.qkNorm === "none" ? undefined : add(`${p}.self_attn.k_norm.weight`, [cfg.qkNorm === "head" ? HS : KVH * HS], "ones", false),
      ln2: add(`${p}.post_attention_layernorm.weight`, [C], "ones", false),
      ln2Bias: isLN ? add(`${p}.post_attention_layernorm.bias`, [C], "zeros", false) : undefined,
    };
    if (cfg.moe.moeLayers[l]) {
      const E = cfg.moe.numExperts, F = cfg.moe.expertIntermediateSize;
      // stored experts: all of them, or the rank's range (global ids first + e in the HF names)
      const e0 = experts?.first ?? 0, El = experts?.count ?? E;
      const m = `${p}.${moeMod}`;
      n.router = add(`${m}.gate.weight`, [E, C], "normal", true);
      // DeepSeek-V3's name for the aux-free selection bias (a buffer, updated by the trainer)
      if (cfg.moe.router.kind === "sigmoid_bias") n.routerBias = add(`${m}.gate.e_score_correction_bias`, [E], "zeros", false, undefined, false);
      // fused expert storage with per-expert HF views
      const w13Off = offset;
      n.w13 = add(`${m}.experts.w13`, [El, 2 * F, C], "normal", true, null);
      for (let e = 0; e < El; e++) {
        hf.push({ name: `${m}.experts.${e0 + e}.${gk}.weight`, shape: [F, C], offset: w13Off + e * 2 * F * C, size: F * C });
        hf.push({ name: `${m}.experts.${e0 + e}.${uk}.weight`, shape: [F, C], offset: w13Off + e * 2 * F * C + F * C, size: F * C });
      }
      const w2Off = offset;
      n.w2 = add(`${m}.experts.w2`, [El, C, F], "normal", true, null);
      for (let e = 0; e < El; e++) hf.push({ name: `${m}.experts.${e0 + e}.${dk}.weight`, shape: [C, F], offset: w2Off + e * C * F, size: C * F });
      const S = cfg.moe.sharedExpertIntermediateSize;
      if (S > 0) {
        const guOff = offset;
        n.sharedGateUp = add(`${m}.shared_expert.gate_up`, [2 * S, C], "normal", true, null);
        hf.push({ name: `${m}.shared_expert.gate_proj.weight`, shape: [S, C], offset: guOff, size: S * C });
        hf.push({ name: `${m}.shared_expert.up_proj.weight`, shape: [S, C], offset: guOff + S * C, size: S * C });
        n.sharedDown = add(`${m}.shared_expert.down_proj.weight`, [C, S], "normal", true);
        n.sharedGate = add(`${m}.shared_expert_gate.weight`, [1, C], "normal", true);
      }
    } else {
      const I = cfg.denseIntermediateSize;
      const guOff = offset;
      n.gateUp = add(`${p}.mlp.gate_up`, [2 * I, C], "normal", true, null);
      hf.push({ name: `${p}.mlp.gate_proj.weight`, shape: [I, C], offset: guOff, size: I * C });
      hf.push({ name: `${p}.mlp.up_proj.weight`, shape: [I, C], offset: guOff + I * C, size: I * C });
      n.down = add(`${p}.mlp.down_proj.weight`, [C, I], "normal", true);
    }
    layers.push(n);
  }
  const normF = add("model.norm.weight", [C], "ones", false);
  const normFBias = isLN ? add("model.norm.bias", [C], "zeros", false) : undefined;
  const lmHead = cfg.tieEmbeddings ? undefined : add("lm_head.weight", [V, C], "normal", true);
  const lmHeadBias = cfg.lmHeadBias ? add("lm_head.bias", [V], "zeros", false) : undefined;
  const layout: ParamLayout = { size: offset, tensors, byName: new Map(tensors.map((t) => [t.name, t])), hfTensors: hf };
  return { layout, names: { embed, normF, normFBias, lmHead, lmHeadBias, layers } };
}

/** A view of one storage tensor inside an arena. */
export function view<T extends Float32Array | Float64Array>(arena: T, layout: ParamLayout, name: string): T {
  const t = layout.byName.get(name);
  if (!t) throw new Error(`no parameter '${name}' in this model`);
  return arena.subarray(t.offset, t.offset + t.size) as T;
}
