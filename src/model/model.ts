// The decoder-only MoE transformer with an explicit forward and backward.
//
// Parameters, gradients and activations are allocated once, from the config and (B, T),
// when the model is built (llm.c style); forward/backward only call kernels of the Backend
// the model was given. Layer l (pre-norm):
//   mid   = resid[l] + Attn(Norm1(resid[l]))
//   resid[l+1] = mid + FFN_or_MoE(Norm2(mid))
// logits = LMHead(NormF(resid[L])); loss = mean CE over non-ignored targets
//        + Σ_l α_l·aux_l + c_z·Σ_l z_l   (balancing terms only on MoE layers).
//
// Not: the optimizer or training loop (train/), checkpoint IO (model/checkpoint.ts), or inference
// with a KV cache (infer/).
import type { Backend } from "../backend/spec.js";
import type { FArr, FCtor } from "../nn/dims.js";
import type { ModelConfig } from "./config.js";
import { buildLayout, view, type ModelNames, type ParamLayout } from "./params.js";
import { normBackward, normForward, type NormSaved, type NormSpec } from "../nn/norm.js";
import { AttentionSaved, AttentionScratch, attentionBackward, attentionForward, type AttentionSpec, type AttentionWeights } from "../nn/attention.js";
import { ffnBackward, ffnForward, type FfnSaved } from "../nn/ffn.js";
import { linearBackward, linearForward } from "../nn/linear.js";
import { MoeLayerState, MoeScratch, moeBackward, moeForward, type BalanceLoss, type MoeLayerStats, type MoeWeights } from "../moe/layer.js";
import type { RouterNoise } from "../moe/router.js";
import { singleProcessGroup, type ProcessGroup } from "../parallel/group.js";
import { createRng } from "../core/rng.js";

export const IGNORE_INDEX = -100;

export interface ModelShape {
  B: number;
  T: number;
  /** "f32" (default) or "f64" (ref backend only: finite-difference checks). */
  dtype?: "f32" | "f64";
}

export interface StepOptions {
  train: boolean;
  /** Balancing loss on MoE layers. Default "none". */
  balance?: BalanceLoss;
  /** Per-layer coefficient α_l (index by layer; ignored on dense layers). Default 0. */
  auxCoefs?: number[];
  /** Router z-loss coefficient. Default 0. */
  zCoef?: number;
  /** Router noise per layer (SparseMixer training). */
  noise?: (RouterNoise | undefined)[];
  /** Input-jitter multipliers per layer (N·C each). */
  jitter?: (Float64Array | undefined)[];
  /** Aux-free bias per layer (sigmoid_bias router). */
  bias?: (Float64Array | undefined)[];
  group?: ProcessGroup;
  /** Capacity factor for the virtual drop rate in dropless mode. Default 1.25. */
  virtualCapacityFactor?: number;
}

export interface StepResult {
  /** Total loss: CE + balancing terms. */
  loss: number;
  ce: number;
  /** Non-ignored targets counted by ce. */
  tokens: number;
  /** Per layer (undefined for dense layers). */
  moe: (MoeLayerStats | undefined)[];
}

interface LayerActs {
  resid: FArr; // (N,C) input of the layer
  ln1: FArr;
  ln1s: NormSaved;
  attn: AttentionSaved;
  mid: FArr; // (N,C)
  ln2: FArr;
  ln2s: NormSaved;
  moe?: MoeLayerState;
  ffn?: FfnSaved;
}

/** Views of one arena (parameters or gradients) under the model's names, computed once. */
interface LayerViews {
  ln1: FArr;
  ln1Bias?: FArr;
  ln2: FArr;
  ln2Bias?: FArr;
  attn: AttentionWeights;
  moe?: MoeWeights;
  gateUp?: FArr;
  down?: FArr;
}
interface ArenaViews {
  embed: FArr;
  normF: FArr;
  normFBias?: FArr;
  /** The LM head (the embedding when tied). */
  head: FArr;
  headBias?: FArr;
  layers: LayerViews[];
}

function arenaViews(arena: FArr, layout: ParamLayout, names: ModelNames): ArenaViews {
  const v = (name: string | undefined) => (name ? view(arena, layout, name) : undefined);
  return {
    embed: v(names.embed)!,
    normF: v(names.normF)!,
    normFBias: v(names.normFBias),
    head: v(names.lmHead ?? names.embed)!,
    headBias: v(names.lmHeadBias),
    layers: names.layers.map((n) => ({
      ln1: v(n.ln1)!, ln1Bias: v(n.ln1Bias), ln2: v(n.ln2)!, ln2Bias: v(n.ln2Bias),
      attn: {
        q: v(n.q)!, k: v(n.k)!, v: v(n.v)!, o: v(n.o)!, qBias: v(n.qBias), kBias: v(n.kBias), vBias: v(n.vBias), oBias: v(n.oBias),
        qNorm: v(n.qNorm), kNorm: v(n.kNorm),
      },
      moe: n.router ? { router: v(n.router)!, w13: v(n.w13)!, w2: v(n.w2)!, sharedGateUp: v(n.sharedGateUp), sharedDown: v(n.sharedDown), sharedGate: v(n.sharedGate) } : undefined,
      gateUp: v(n.gateUp),
      down: v(n.down),
    })),
  };
}

export class MoeModel {
  readonly layout: ParamLayout;
  readonly names: ModelNames;
  readonly params: FArr;
  readonly grads: FArr;
  readonly N: number;
  /** Named views of params and grads. */
  private readonly P: ArenaViews;
  private readonly G: ArenaViews;
  private readonly Ctor: FCtor;
  private readonly acts: LayerActs[];
  private readonly residL: FArr;
  private readonly lnf: FArr;
  private readonly lnfs: NormSaved;
  private readonly logits: FArr;
  private readonly lse: FArr;
  private readonly losses: FArr;
  private readonly pos: Int32Array;
  private readonly attnSpec: AttentionSpec;
  private readonly normSpec: NormSpec;
  // backward scratch
  private readonly dresid: FArr;
  private readonly dtmp: FArr;
  private readonly dln: FArr;
  private readonly dlosses: FArr;
  private readonly attnScratch: AttentionScratch;
  private readonly moeScratch?: MoeScratch;
  private readonly ffnScratch?: { da: FArr; dgu: FArr };
  private readonly ffnOut: FArr;
  private ids: Int32Array | null = null;
  private targets: Int32Array | null = null;
  private validTokens = 0;

  constructor(readonly cfg: ModelConfig, readonly be: Backend, readonly shape: ModelShape) {
    const { B, T } = shape;
    if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 1) throw new Error(`model shape B=${B}, T=${T} must be positive integers`);
    const dtype = shape.dtype ?? "f32";
    if (dtype === "f64" && be.name !== "ref") throw new Error("dtype f64 needs the ref backend");
    const Ctor: FCtor = dtype === "f64" ? Float64Array : Float32Array;
    this.Ctor = Ctor;
    const { layout, names } = buildLayout(cfg);
    this.layout = layout;
    this.names = names;
    this.params = new Ctor(layout.size);
    this.grads = new Ctor(layout.size);
    this.P = arenaViews(this.params, layout, names);
    this.G = arenaViews(this.grads, layout, names);
    const N = B * T;
    this.N = N;
    const C = cfg.hiddenSize;
    this.normSpec = cfg.norm;
    this.attnSpec = {
      B, T, C, NH: cfg.numHeads, KVH: cfg.numKvHeads, HS: cfg.headDim, theta: cfg.rope.theta, rotaryDim: cfg.rope.rotaryDim,
      window: cfg.slidingWindow, qkNorm: cfg.qkNorm, normEps: cfg.norm.eps,
    };
    const normSaved = (): NormSaved => ({ mean: new Ctor(N), rstd: new Ctor(N) });
    this.acts = [];
    let anyMoe = false, anyDense = false;
    for (let l = 0; l < cfg.numLayers; l++) {
      const isMoe = cfg.moe.moeLayers[l]!;
      anyMoe ||= isMoe;
      anyDense ||= !isMoe;
      const I = cfg.denseIntermediateSize;
      this.acts.push({
        resid: new Ctor(N * C), ln1: new Ctor(N * C), ln1s: normSaved(), attn: new AttentionSaved(Ctor, this.attnSpec),
        mid: new Ctor(N * C), ln2: new Ctor(N * C), ln2s: normSaved(),
        moe: isMoe ? new MoeLayerState(Ctor, N, C, cfg.moe) : undefined,
        ffn: isMoe ? undefined : { gu: new Ctor(N * 2 * I), a: new Ctor(N * I) },
      });
    }
    this.residL = new Ctor(N * C);
    this.lnf = new Ctor(N * C);
    this.lnfs = normSaved();
    this.logits = new Ctor(N * cfg.vocabSize);
    this.lse = new Ctor(N);
    this.losses = new Ctor(N);
    this.pos = Int32Array.from({ length: T }, (_, t) => t);
    this.dresid = new Ctor(N * C);
    this.dtmp = new Ctor(N * C);
    this.dln = new Ctor(N * C);
    this.ffnOut = new Ctor(N * C);
    this.dlosses = new Ctor(N);
    this.attnScratch = new AttentionScratch(Ctor, this.attnSpec);
    if (anyMoe) this.moeScratch = new MoeScratch(Ctor, N, C, cfg.moe);
    if (anyDense) this.ffnScratch = { da: new Ctor(N * cfg.denseIntermediateSize), dgu: new Ctor(N * 2 * cfg.denseIntermediateSize) };
  }

  /** A parameter (storage) tensor by name. */
  param(name: string): FArr {
    return view(this.params, this.layout, name);
  }
  grad(name: string): FArr {
    return view(this.grads, this.layout, name);
  }

  /** The logits of the last forward, (B·T, V). */
  lastLogits(): FArr {
    return this.logits;
  }

  zeroGrad(): void {
    this.grads.fill(0);
  }

  /**
   * Forward pass. ids (B·T) token ids; targets (B·T) with IGNORE_INDEX for positions without a
   * target, or null for logits only. Returns the loss and per-layer MoE statistics.
   */
  forward(ids: Int32Array, targets: Int32Array | null, opt: StepOptions): StepResult {
    const { cfg, be, N } = this;
    const C = cfg.hiddenSize, V = cfg.vocabSize;
    if (ids.length !== N) throw new Error(`forward: ids has ${ids.length} tokens, the model was built for B·T = ${N}`);
    for (let i = 0; i < N; i++) {
      const t = ids[i]!;
      if (!(t >= 0 && t < V)) throw new Error(`forward: token id ${t} at position ${i} is out of range [0, ${V})`);
    }
    if (targets && targets.length !== N) throw new Error(`forward: targets has ${targets.length} entries, expected ${N}`);
    this.ids = ids;
    this.targets = targets;
    const P = this.P;
    be.embeddingForward(this.acts[0]?.resid ?? this.residL, ids, P.embed, V, C);
    const group = opt.group ?? singleProcessGroup();
    const moeStats: (MoeLayerStats | undefined)[] = [];
    let auxTotal = 0;
    for (let l = 0; l < cfg.numLayers; l++) {
      const a = this.acts[l]!, w = P.layers[l]!;
      const next = l + 1 < cfg.numLayers ? this.acts[l + 1]!.resid : this.residL;
      normForward(be, this.normSpec, a.ln1, a.ln1s, a.resid, w.ln1, w.ln1Bias, N, C);
      attentionForward(be, this.attnSpec, w.attn, a.attn, a.mid, a.ln1, this.pos);
      be.add(a.mid, a.mid, a.resid);
      normForward(be, this.normSpec, a.ln2, a.ln2s, a.mid, w.ln2, w.ln2Bias, N, C);
      if (a.moe) {
        const coef = opt.auxCoefs?.[l] ?? 0;
        const zCoef = opt.zCoef ?? 0;
        const st = moeForward(be, a.moe, w.moe!, this.ffnOut, a.ln2, {
          train: opt.train, noise: opt.noise?.[l], jitter: opt.jitter?.[l], bias: opt.bias?.[l], balance: opt.balance ?? "none",
          auxCoef: coef, zCoef, group, virtualCapacityFactor: opt.virtualCapacityFactor ?? 1.25,
        });
        moeStats.push(st);
        if ((opt.balance ?? "none") !== "none") auxTotal += coef * st.aux;
        auxTotal += zCoef * st.z;
      } else {
        ffnForward(be, this.ffnOut, a.ffn!, a.ln2, w.gateUp!, w.down!, N, C, cfg.denseIntermediateSize);
        moeStats.push(undefined);
      }
      be.add(next, a.mid, this.ffnOut);
    }
    normForward(be, this.normSpec, this.lnf, this.lnfs, this.residL, P.normF, P.normFBias, N, C);
    linearForward(be, this.logits, this.lnf, P.head, P.headBias, N, C, V);
    let ce = 0, tokens = 0;
    if (targets) {
      be.crossEntropyForward(this.losses, this.lse, this.logits, targets, N, V, IGNORE_INDEX);
      for (let i = 0; i < N; i++) {
        if (targets[i] !== IGNORE_INDEX) {
          ce += this.losses[i]!;
          tokens++;
        }
      }
      ce = tokens > 0 ? ce / tokens : 0;
    }
    this.validTokens = tokens;
    return { loss: ce + auxTotal, ce, tokens, moe: moeStats };
  }

  /**
   * Backward of the last forward (which must have had targets). Gradients are accumulated
   * into `grads` (call zeroGrad first for a fresh step). gradScale multiplies the whole loss
   * gradient (e.g. 1/micro-batches for accumulation).
   */
  backward(gradScale = 1): void {
    const { cfg, be, N } = this;
    const C = cfg.hiddenSize, V = cfg.vocabSize;
    const targets = this.targets, ids = this.ids;
    if (!targets || !ids) throw new Error("backward: call forward with targets first");
    const P = this.P, G = this.G;
    // loss → logits (dlogits overwrites logits in place)
    const scale = this.validTokens > 0 ? gradScale / this.validTokens : 0;
    for (let i = 0; i < N; i++) this.dlosses[i] = targets[i] === IGNORE_INDEX ? 0 : scale;
    be.crossEntropyBackward(this.logits, this.logits, this.lse, targets, this.dlosses, N, V, IGNORE_INDEX);
    linearBackward(be, this.dln, G.head, G.headBias, this.logits, this.lnf, P.head, N, C, V, false);
    normBackward(be, this.normSpec, this.dresid, G.normF, G.normFBias, this.dln, this.residL, P.normF, this.lnfs, N, C);
    for (let l = cfg.numLayers - 1; l >= 0; l--) {
      const a = this.acts[l]!, w = P.layers[l]!, dw = G.layers[l]!;
      // resid[l+1] = mid + f(ln2(mid)): dresid is both d(mid) (residual path) and d(f output)
      if (a.moe) {
        moeBackward(be, a.moe, w.moe!, dw.moe!, this.moeScratch!, this.dln, this.dresid, a.ln2, gradScale);
      } else {
        ffnBackward(be, this.dln, dw.gateUp!, dw.down!, this.dresid, a.ln2, a.ffn!, w.gateUp!, w.down!, this.ffnScratch!, N, C, cfg.denseIntermediateSize, false);
      }
      normBackward(be, this.normSpec, this.dtmp, dw.ln2, dw.ln2Bias, this.dln, a.mid, w.ln2, a.ln2s, N, C);
      be.add(this.dresid, this.dresid, this.dtmp);
      // mid = resid + attn(ln1(resid))
      attentionBackward(be, this.attnSpec, w.attn, dw.attn, a.attn, this.attnScratch, this.dln, this.dresid, a.ln1, this.pos, false);
      normBackward(be, this.normSpec, this.dtmp, dw.ln1, dw.ln1Bias, this.dln, a.resid, w.ln1, a.ln1s, N, C);
      be.add(this.dresid, this.dresid, this.dtmp);
    }
    be.embeddingBackward(G.embed, this.dresid, ids, V, C);
  }
}

/** Fills parameters: normal(0, std) matrices, ones for norm weights, zeros for biases. Deterministic in seed. */
export function initParams(model: MoeModel, seed: number, std: number): void {
  const rng = createRng(seed);
  for (const t of model.layout.tensors) {
    const a = model.params.subarray(t.offset, t.offset + t.size);
    if (t.init === "ones") a.fill(1);
    else if (t.init === "zeros") a.fill(0);
    else for (let i = 0; i < t.size; i++) a[i] = std * rng.normal();
  }
}
