// Upcycling a dense (Llama-style) checkpoint into an MoE (Skywork-MoE §3, §5).
//
//  1. embeddings, attention, norms and the LM head are copied unchanged
//  2. every dense FFN (gate, up: (I, C); down: (C, I)) becomes `experts` experts per layer.
//     granularity g = 1: every expert is a copy of the FFN.
//     granularity g > 1 (Megatron --moe-upcycling-granularity): the FFN's I hidden units are cut
//     into g slices of I/g; each of the n = experts originals becomes g sub-experts (E = n·g,
//     expert e = slice e mod g of original ⌊e/g⌋), top-k becomes k·g, the sub-experts of one
//     original share one router row (so they are always picked together) and their down
//     projections are scaled by g, so that the MoE's output still equals the dense FFN.
//  3. the router is small-random: N(0, routerStd), Skywork 0.01
//  4. optional noise: each expert weight w ← w·(1 + s·N(0,1)), breaking the symmetry (and the
//     exact equality) on purpose
// With top-k renormalisation (Mixtral routing) and no noise, the MoE's logits equal the dense
// model's at step 0: Σ_k w_k·FFN(x) = FFN(x) because Σ_k w_k = 1.
//
// Not: a trainer. Expert similarity (below) is what training logs to watch the experts diverge.
import type { FArr } from "../nn/dims.js";
import type { LlamaHfConfig, MixtralHfConfig, ModelConfig } from "./config.js";
import { resolveConfig } from "./config.js";
import { buildLayout } from "./params.js";
import { createRng } from "../core/rng.js";
import { Weights } from "./weights.js";

export interface UpcycleOptions {
  /** Original experts n per layer (E = n·granularity). */
  experts: number;
  /** Experts per token k before granularity (K = k·granularity). */
  topK: number;
  /** Default 1. */
  granularity?: number;
  /** Relative noise s on expert weights. Default 0. */
  noise?: number;
  /** Router init std. Default 0.01 (Skywork). */
  routerStd?: number;
  seed?: number;
}

export class UpcycleError extends Error {
  override name = "UpcycleError";
}

/** Dense HF config → the MoE (mixtral) HF config of the upcycled model. */
export function upcycledHfConfig(dense: LlamaHfConfig, o: UpcycleOptions): MixtralHfConfig {
  const g = o.granularity ?? 1;
  if (!Number.isInteger(g) || g < 1) throw new UpcycleError(`granularity must be a positive integer, got ${g}`);
  if (dense.intermediate_size % g !== 0) throw new UpcycleError(`granularity ${g} must divide intermediate_size ${dense.intermediate_size}`);
  if (!Number.isInteger(o.experts) || o.experts < 1) throw new UpcycleError(`experts must be a positive integer, got ${o.experts}`);
  if (!Number.isInteger(o.topK) || o.topK < 1 || o.topK > o.experts) throw new UpcycleError(`top-k must be an integer in [1, experts=${o.experts}], got ${o.topK}`);
  if (dense.attention_bias) throw new UpcycleError("dense attention_bias true cannot become a mixtral model (no attention biases)");
  return {
    model_type: "mixtral",
    vocab_size: dense.vocab_size,
    hidden_size: dense.hidden_size,
    intermediate_size: dense.intermediate_size / g,
    num_hidden_layers: dense.num_hidden_layers,
    num_attention_heads: dense.num_attention_heads,
    num_key_value_heads: dense.num_key_value_heads ?? dense.num_attention_heads,
    head_dim: dense.head_dim ?? null,
    hidden_act: dense.hidden_act,
    max_position_embeddings: dense.max_position_embeddings,
    initializer_range: o.routerStd ?? 0.01,
    rms_norm_eps: dense.rms_norm_eps,
    tie_word_embeddings: dense.tie_word_embeddings,
    rope_theta: dense.rope_theta,
    rope_scaling: null,
    bos_token_id: dense.bos_token_id,
    eos_token_id: dense.eos_token_id,
    pad_token_id: dense.pad_token_id,
    sliding_window: null,
    num_local_experts: o.experts * g,
    num_experts_per_tok: o.topK * g,
    router_aux_loss_coef: 0.001,
    router_jitter_noise: 0,
  };
}

/** The upcycled model's Weights (no model or workspace is built). */
export function upcycleWeights(dense: Weights, denseHf: LlamaHfConfig, o: UpcycleOptions): { hf: MixtralHfConfig; cfg: ModelConfig; weights: Weights } {
  const up = upcycleParams(denseHf, dense.data, o);
  return { hf: up.hf, cfg: up.cfg, weights: new Weights(up.cfg, "f32", up.params) };
}

/** Builds the MoE parameter arena from the dense one. */
export function upcycleParams(dense: LlamaHfConfig, denseParams: FArr, o: UpcycleOptions): { hf: MixtralHfConfig; cfg: ModelConfig; params: Float32Array } {
  const denseCfg = resolveConfig(dense);
  const { layout: dl, names: dn } = buildLayout(denseCfg);
  if (denseParams.length !== dl.size) throw new UpcycleError(`dense parameters have ${denseParams.length} elements, the config needs ${dl.size}`);
  const hf = upcycledHfConfig(dense, o);
  const cfg = resolveConfig(hf);
  const { layout: ml, names: mn } = buildLayout(cfg);
  const params = new Float32Array(ml.size);
  const g = o.granularity ?? 1;
  const rng = createRng(o.seed ?? 0);
  const noise = o.noise ?? 0;
  const routerStd = o.routerStd ?? 0.01;
  const C = cfg.hiddenSize, I = dense.intermediate_size, F = I / g, E = cfg.moe.numExperts;

  // 1. shared tensors, by name (identical HF names in both layouts)
  const dByName = new Map(dl.hfTensors.map((t) => [t.name, t]));
  const mByName = new Map(ml.hfTensors.map((t) => [t.name, t]));
  for (const [name, t] of mByName) {
    const src = dByName.get(name);
    if (!src) continue;
    params.set(denseParams.subarray(src.offset, src.offset + src.size), t.offset);
  }
  for (let l = 0; l < cfg.numLayers; l++) {
    const d = dn.layers[l]!, m = mn.layers[l]!;
    const gu = dl.byName.get(d.gateUp!)!, down = dl.byName.get(d.down!)!;
    const w13 = ml.byName.get(m.w13!)!, w2 = ml.byName.get(m.w2!)!, router = ml.byName.get(m.router!)!;
    const jitter = (v: number) => (noise > 0 ? v * (1 + noise * rng.normal()) : v);
    for (let e = 0; e < E; e++) {
      const slice = e % g;
      // 2. gate rows [slice·F, (slice+1)·F) of gate_proj, then the same rows of up_proj
      for (let part = 0; part < 2; part++) {
        for (let r = 0; r < F; r++) {
          const srcRow = gu.offset + (part * I + slice * F + r) * C;
          const dstRow = w13.offset + ((e * 2 + part) * F + r) * C;
          for (let c = 0; c < C; c++) params[dstRow + c] = jitter(denseParams[srcRow + c]!);
        }
      }
      // down (C, I) columns of the slice, scaled by g
      for (let c = 0; c < C; c++) {
        for (let r = 0; r < F; r++) params[w2.offset + (e * C + c) * F + r] = jitter(g * denseParams[down.offset + c * I + slice * F + r]!);
      }
    }
    // 3. router: one row per original, shared by its g sub-experts
    for (let o2 = 0; o2 < o.experts; o2++) {
      const row = Array.from({ length: C }, () => routerStd * rng.normal());
      for (let s = 0; s < g; s++) params.set(row, router.offset + (o2 * g + s) * C);
    }
  }
  return { hf, cfg, params };
}

/**
 * Mean pairwise cosine similarity of the experts of each MoE layer (each expert's w13 and w2
 * flattened into one vector). 1 right after upcycling (g = 1, no noise); it should fall as the
 * experts specialise. Dense layers get NaN.
 */
export function expertSimilarity(cfg: ModelConfig, params: FArr): number[] {
  const { layout, names } = buildLayout(cfg);
  const E = cfg.moe.numExperts, C = cfg.hiddenSize, F = cfg.moe.expertIntermediateSize;
  const out: number[] = [];
  for (let l = 0; l < cfg.numLayers; l++) {
    const n = names.layers[l]!;
    if (!n.w13) {
      out.push(NaN);
      continue;
    }
    const w13 = layout.byName.get(n.w13)!, w2 = layout.byName.get(n.w2!)!;
    const a = 2 * F * C, b = C * F;
    const norms = new Float64Array(E);
    const vec = (e: number, i: number) => (i < a ? params[w13.offset + e * a + i]! : params[w2.offset + e * b + (i - a)]!);
    for (let e = 0; e < E; e++) {
      let s = 0;
      for (let i = 0; i < a + b; i++) s += vec(e, i) ** 2;
      norms[e] = Math.sqrt(s);
    }
    let sum = 0, pairs = 0;
    for (let e1 = 0; e1 < E; e1++) {
      for (let e2 = e1 + 1; e2 < E; e2++) {
        let dot = 0;
        for (let i = 0; i < a + b; i++) dot += vec(e1, i) * vec(e2, i);
        sum += dot / (norms[e1]! * norms[e2]! || 1);
        pairs++;
      }
    }
    out.push(pairs ? sum / pairs : 1);
  }
  return out;
}
