// The decoder-only MoE transformer as functions of (weights, workspace, inputs).
//
// Layer l (pre-norm):
//   mid   = resid[l] + Attn(Norm1(resid[l]))
//   resid[l+1] = mid + FFN_or_MoE(Norm2(mid))
// logits = LMHead(NormF(resid[L])); loss = mean CE over non-ignored targets
//        + Σ_l α_l·aux_l + c_z·Σ_l z_l   (balancing terms only on MoE layers).
//
// A `Workspace` holds the activations and backward scratch of one (B, T), allocated once
// (llm.c style). `modelForward` reads a `Weights` and writes the workspace; `modelBackward`
// reads both and accumulates into a `Gradients`. Any number of workspaces may share one
// Weights: they never write it.
//
// Not: the optimizer or training loop (train/), checkpoint IO (model/checkpoint.ts), or
// KV-cached inference (infer/).
import type { Backend } from "../backend/spec.js";
import type { FArr, FCtor } from "../nn/dims.js";
import type { ModelConfig } from "./config.js";
import type { Gradients, Weights } from "./weights.js";
import { normBackward, normForward, type NormSaved, type NormSpec } from "../nn/norm.js";
import { AttentionSaved, AttentionScratch, attentionBackward, attentionForward, type AttentionSpec } from "../nn/attention.js";
import { ffnBackward, ffnForward, type FfnSaved } from "../nn/ffn.js";
import { linearBackward, linearForward } from "../nn/linear.js";
import { MoeLayerState, MoeScratch, moeBackward, moeForward, type BalanceLoss, type MoeLayerStats } from "../moe/layer.js";
import type { RouterNoise } from "../moe/router.js";
import { singleProcessGroup, type ProcessGroup } from "../parallel/group.js";
import type { ExpertParallel } from "../parallel/expert-parallel.js";
import { DEFAULT_BALANCE } from "../moe/config.js";
import { ropeFrequencies } from "../nn/rope-scaling.js";
import { inputJitter, sampleRouterNoise } from "../moe/noise.js";
import { vocabCrossEntropyBackward, vocabCrossEntropyForward, vocabEmbedBackward, vocabEmbedForward, type TensorParallelContext } from "../parallel/tp-ops.js";

export const IGNORE_INDEX = -100;

export interface ModelShape {
  B: number;
  T: number;
  /** "f32" (default) or "f64" (ref backend only: finite-difference checks). */
  dtype?: "f32" | "f64";
  /** Allocate the activations of layers [lo, hi) only (a pipeline stage); logits only when hi is
   * the last layer. Default: every layer. */
  layers?: { lo: number; hi: number };
  /** Tensor-parallel training: this rank's group and vocabulary slice; the config is then the
   * rank's slice (parallel/tensor-parallel.ts): sublayer outputs and input gradients are summed
   * over the group, embedding and loss are vocabulary-parallel. Default: one rank. */
  tp?: TensorParallelContext;
}

/**
 * The per-step context of a forward (moe/config.ts's MoeStepContext for the whole model).
 * Static balancing options come from cfg.moe.balance; `balance` and `zCoef` here override them
 * for one call (tests). Router noise and input jitter are drawn counter-based from
 * (seed, step, layer, tokenOffset + row) when `seed` and `step` are given and the arrays are not.
 */
export interface StepOptions {
  train: boolean;
  /** Seed of the run's counter-based randomness (router noise, input jitter). */
  seed?: number;
  /** Counter that changes between draws (the trainer passes the micro-step). */
  step?: number;
  /** Global index of this batch's first token (parallel ranks draw disjoint noise). Default 0. */
  tokenOffset?: number;
  /** Balancing loss on MoE layers. Default cfg.moe.balance.loss ("none"). */
  balance?: BalanceLoss;
  /** Per-layer coefficient α_l (index by layer; ignored on dense layers). Default 0. */
  auxCoefs?: number[];
  /** Router z-loss coefficient. Default cfg.moe.balance.zCoef (0). */
  zCoef?: number;
  /** Router noise per layer (SparseMixer training). */
  noise?: (RouterNoise | undefined)[];
  /** Input-jitter multipliers per layer (N·C each). */
  jitter?: (Float64Array | undefined)[];
  /** Aux-free bias per layer (sigmoid_bias router). Default: the weights' router bias buffer. */
  bias?: (Float64Array | undefined)[];
  group?: ProcessGroup;
  /** Expert parallelism (training over an EP group); absent: every expert runs here. */
  ep?: ExpertParallel;
  /** Capacity factor for the virtual drop rate in dropless mode. Default cfg.moe.balance (1.25). */
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
  ln1: FArr; // (N,C)
  ln1s: NormSaved;
  attn: AttentionSaved;
  mid: FArr; // (N,C)
  ln2: FArr; // (N,C)
  ln2s: NormSaved;
  moe?: MoeLayerState;
  ffn?: FfnSaved;
}

/** Activations and backward scratch of one (B, T), for one model config. */
export class Workspace {
  readonly N: number;
  readonly B: number;
  readonly T: number;
  /** The layers [lo, hi) whose activations this workspace holds (acts[l] is absent outside). */
  readonly lo: number;
  readonly hi: number;
  readonly Ctor: FCtor;
  readonly dtype: "f32" | "f64";
  readonly acts: LayerActs[];
  readonly residL: FArr; // (N,C)
  readonly lnf: FArr; // (N,C)
  readonly lnfs: NormSaved;
  /** (N,V) logits of the last forward; overwritten by dlogits in backward. */
  readonly logits: FArr;
  readonly lse: FArr; // (N)
  readonly losses: FArr; // (N)
  readonly pos: Int32Array; // (T)
  /** Per layer: the window and scaled RoPE may differ between layers. */
  readonly attnSpecs: AttentionSpec[];
  readonly normSpec: NormSpec;
  readonly dresid: FArr; // (N,C)
  readonly dtmp: FArr; // (N,C)
  readonly dln: FArr; // (N,C)
  readonly dlosses: FArr; // (N)
  readonly ffnOut: FArr; // (N,C)
  readonly attnScratch: AttentionScratch;
  readonly moeScratch?: MoeScratch;
  readonly ffnScratch?: { da: FArr; dgu: FArr };
  /** Inputs of the last forward (backward needs them). */
  ids: Int32Array | null = null;
  targets: Int32Array | null = null;
  validTokens = 0;
  readonly tp?: TensorParallelContext;

  constructor(readonly cfg: ModelConfig, shape: ModelShape) {
    const { B, T } = shape;
    if (!Number.isInteger(B) || B < 1 || !Number.isInteger(T) || T < 1) throw new Error(`model shape B=${B}, T=${T} must be positive integers`);
    this.dtype = shape.dtype ?? "f32";
    if (shape.tp) {
      if (shape.tp.vocab.count !== cfg.vocabSize) throw new Error(`workspace: the tensor-parallel vocabulary slice has ${shape.tp.vocab.count} rows, the config ${cfg.vocabSize}`);
      this.tp = shape.tp;
    }
    const Ctor: FCtor = this.dtype === "f64" ? Float64Array : Float32Array;
    this.Ctor = Ctor;
    this.B = B;
    this.T = T;
    const N = B * T;
    this.N = N;
    const C = cfg.hiddenSize;
    this.normSpec = cfg.norm;
    this.attnSpecs = attentionSpecs(cfg, B, T);
    const spec0 = this.attnSpecs[0]!;
    const normSaved = (): NormSaved => ({ mean: new Ctor(N), rstd: new Ctor(N) });
    this.acts = [];
    const { lo, hi } = shape.layers ?? { lo: 0, hi: cfg.numLayers };
    if (!(Number.isInteger(lo) && Number.isInteger(hi) && lo >= 0 && lo <= hi && hi <= cfg.numLayers)) throw new Error(`workspace layers [${lo}, ${hi}) must lie in [0, ${cfg.numLayers}]`);
    this.lo = lo;
    this.hi = hi;
    let anyMoe = false, anyDense = false;
    for (let l = lo; l < hi; l++) {
      const isMoe = cfg.moe.moeLayers[l]!;
      anyMoe ||= isMoe;
      anyDense ||= !isMoe;
      const I = cfg.denseIntermediateSize;
      this.acts[l] = {
        resid: new Ctor(N * C), ln1: new Ctor(N * C), ln1s: normSaved(), attn: new AttentionSaved(Ctor, this.attnSpecs[l]!),
        mid: new Ctor(N * C), ln2: new Ctor(N * C), ln2s: normSaved(),
        moe: isMoe ? new MoeLayerState(Ctor, N, C, cfg.moe) : undefined,
        ffn: isMoe ? undefined : { gu: new Ctor(N * 2 * I), a: new Ctor(N * I) },
      };
    }
    this.residL = new Ctor(N * C);
    this.lnf = new Ctor(N * C);
    this.lnfs = normSaved();
    this.logits = new Ctor(hi === cfg.numLayers ? N * cfg.vocabSize : 0);
    this.lse = new Ctor(N);
    this.losses = new Ctor(N);
    this.pos = Int32Array.from({ length: T }, (_, t) => t);
    this.dresid = new Ctor(N * C);
    this.dtmp = new Ctor(N * C);
    this.dln = new Ctor(N * C);
    this.ffnOut = new Ctor(N * C);
    this.dlosses = new Ctor(N);
    this.attnScratch = new AttentionScratch(Ctor, spec0);
    if (anyMoe) this.moeScratch = new MoeScratch(Ctor, N, C, cfg.moe);
    if (anyDense) this.ffnScratch = { da: new Ctor(N * cfg.denseIntermediateSize), dgu: new Ctor(N * 2 * cfg.denseIntermediateSize) };
  }
}

/** The attention sublayer spec of every layer for a (B, T) forward (positions 0..T−1). */
export function attentionSpecs(cfg: ModelConfig, B: number, T: number): AttentionSpec[] {
  const { invFreq, scale } = ropeFrequencies(cfg.rope.theta, cfg.rope.rotaryDim, cfg.rope.scaling, T);
  return Array.from({ length: cfg.numLayers }, (_, l) => ({
    B, T, C: cfg.hiddenSize, NH: cfg.numHeads, KVH: cfg.numKvHeads, HS: cfg.headDim, theta: cfg.rope.theta, rotaryDim: cfg.rope.rotaryDim,
    window: l >= (cfg.windowFromLayer ?? 0) ? cfg.slidingWindow : 0, qkNorm: cfg.qkNorm, normEps: cfg.norm.eps,
    ...(invFreq ? { invFreq } : {}), ...(scale !== 1 ? { ropeScale: scale } : {}), ...(cfg.clipQkv ? { clip: cfg.clipQkv } : {}),
  }));
}

/** Router noise and input jitter of MoE layer l for this step: given, or drawn from (seed, step). */
function stepRandomness(cfg: ModelConfig, opt: StepOptions, l: number, N: number): { noise?: RouterNoise; jitter?: Float64Array } {
  let noise = opt.noise?.[l], jitter = opt.jitter?.[l];
  if (!opt.train || opt.seed === undefined || opt.step === undefined) return { noise, jitter };
  const key = { seed: opt.seed, step: opt.step, layer: l };
  const r = cfg.moe.router, off = opt.tokenOffset ?? 0;
  if (!noise && r.kind === "sparsemixer") noise = sampleRouterNoise(key, N, cfg.moe.topK, cfg.moe.numExperts, r.variant, off);
  if (!jitter && cfg.moe.inputJitter > 0) jitter = inputJitter(new Float64Array(N * cfg.hiddenSize), cfg.moe.inputJitter, key, off * cfg.hiddenSize); // multipliers only
  return { noise, jitter };
}

function checkPair(be: Backend, w: Weights, ws: Workspace): void {
  if (w.cfg !== ws.cfg && JSON.stringify(w.cfg) !== JSON.stringify(ws.cfg)) throw new Error("workspace and weights were built for different model configs");
  if (w.dtype !== ws.dtype) throw new Error(`workspace dtype ${ws.dtype} differs from the weights' ${w.dtype}`);
  if (ws.dtype === "f64" && be.name !== "ref") throw new Error("dtype f64 needs the ref backend");
}

/**
 * Forward pass. ids (B·T) token ids; targets (B·T) with IGNORE_INDEX for positions without a
 * target, or null for logits only (then in ws.logits). Returns the loss and per-layer MoE statistics.
 * The composition of embedForward, layersForward over every layer, and headForward (a pipeline
 * stage calls the pieces it owns).
 */
export function modelForward(be: Backend, w: Weights, ws: Workspace, ids: Int32Array, targets: Int32Array | null, opt: StepOptions): StepResult {
  checkPair(be, w, ws);
  const L = ws.cfg.numLayers;
  if (ws.lo !== 0 || ws.hi !== L) throw new Error(`forward: the workspace holds layers [${ws.lo}, ${ws.hi}) only; the whole model needs [0, ${L})`);
  embedForward(be, w, ws, ids);
  if (targets) checkTargets(ws, targets);
  const { moe, aux } = layersForward(be, w, ws, 0, L, opt);
  const { ce, tokens } = headForward(be, w, ws, targets);
  return { loss: ce + aux, ce, tokens, moe };
}

function checkTargets(ws: Workspace, targets: Int32Array): void {
  if (targets.length !== ws.N) throw new Error(`forward: targets has ${targets.length} entries, expected ${ws.N}`);
}

/** The input of layer l in ws: acts[l].resid, or residL past the workspace's last layer. */
export function layerInput(ws: Workspace, l: number): FArr {
  return l < ws.hi ? ws.acts[l]!.resid : ws.residL;
}

/** Embedding lookup of ids (checked) into the input of the workspace's first layer; remembers ids. */
export function embedForward(be: Backend, w: Weights, ws: Workspace, ids: Int32Array): void {
  const N = ws.N, V = ws.tp?.vocab.total ?? ws.cfg.vocabSize;
  if (ids.length !== N) throw new Error(`forward: ids has ${ids.length} tokens, the workspace was built for B·T = ${N}`);
  for (let i = 0; i < N; i++) {
    const t = ids[i]!;
    if (!(t >= 0 && t < V)) throw new Error(`forward: token id ${t} at position ${i} is out of range [0, ${V})`);
  }
  ws.ids = ids;
  if (ws.tp) vocabEmbedForward(ws.tp, layerInput(ws, ws.lo), ids, w.views.embed, ws.cfg.hiddenSize);
  else be.embeddingForward(layerInput(ws, ws.lo), ids, w.views.embed, V, ws.cfg.hiddenSize);
}

/**
 * Layers [lo, hi) (within the workspace's own): reads layerInput(lo), writes each layer's output
 * into the next layer's input and the last one's into ws.residL. Returns the MoE statistics of
 * layers lo..hi−1 (index 0 = layer lo) and their balancing loss Σ α_l·aux_l + c_z·Σ z_l.
 */
export function layersForward(be: Backend, w: Weights, ws: Workspace, lo: number, hi: number, opt: StepOptions): { moe: (MoeLayerStats | undefined)[]; aux: number } {
  checkPair(be, w, ws);
  if (lo < ws.lo || hi > ws.hi || lo > hi) throw new Error(`forward: layers [${lo}, ${hi}) are not within the workspace's [${ws.lo}, ${ws.hi})`);
  const cfg = ws.cfg, N = ws.N;
  const C = cfg.hiddenSize;
  const P = w.views;
  const group = opt.group ?? singleProcessGroup();
  const bal = cfg.moe.balance ?? DEFAULT_BALANCE;
  const balance = opt.balance ?? bal.loss;
  const zCoef = opt.zCoef ?? bal.zCoef;
  const moeStats: (MoeLayerStats | undefined)[] = [];
  let auxTotal = 0;
  for (let l = lo; l < hi; l++) {
    const a = ws.acts[l]!, lw = P.layers[l]!;
    const next = l + 1 < hi ? ws.acts[l + 1]!.resid : ws.residL;
    normForward(be, ws.normSpec, a.ln1, a.ln1s, a.resid, lw.ln1, lw.ln1Bias, N, C);
    attentionForward(be, ws.attnSpecs[l]!, lw.attn, a.attn, a.mid, a.ln1, ws.pos);
    ws.tp?.allreduce(a.mid); // row-parallel o_proj: partial sums over the TP ranks' heads
    be.add(a.mid, a.mid, a.resid);
    normForward(be, ws.normSpec, a.ln2, a.ln2s, a.mid, lw.ln2, lw.ln2Bias, N, C);
    if (a.moe) {
      const coef = opt.auxCoefs?.[l] ?? 0;
      const { noise, jitter } = stepRandomness(cfg, opt, l, N);
      const st = moeForward(be, a.moe, lw.moe!, ws.ffnOut, a.ln2, {
        train: opt.train, noise, jitter, bias: opt.bias?.[l] ?? lw.moe!.routerBias, balance,
        auxCoef: coef, zCoef, group, virtualCapacityFactor: opt.virtualCapacityFactor ?? bal.virtualCapacityFactor, ep: opt.ep, tp: ws.tp,
      });
      moeStats.push(st);
      if (balance !== "none") auxTotal += coef * st.aux;
      auxTotal += zCoef * st.z;
    } else {
      ffnForward(be, ws.ffnOut, a.ffn!, a.ln2, lw.gateUp!, lw.down!, N, C, cfg.denseIntermediateSize);
      moeStats.push(undefined);
    }
    ws.tp?.allreduce(ws.ffnOut); // row-parallel down projections: partial sums over the TP ranks' columns
    be.add(next, a.mid, ws.ffnOut);
  }
  return { moe: moeStats, aux: auxTotal };
}

/** Final norm, LM head and (with targets) the mean cross-entropy, from ws.residL; remembers targets. */
export function headForward(be: Backend, w: Weights, ws: Workspace, targets: Int32Array | null): { ce: number; tokens: number } {
  const cfg = ws.cfg, N = ws.N;
  const C = cfg.hiddenSize, V = cfg.vocabSize;
  if (ws.hi !== cfg.numLayers) throw new Error(`forward: the LM head follows layer ${cfg.numLayers - 1}; this workspace ends at layer ${ws.hi}`);
  if (targets) checkTargets(ws, targets);
  ws.targets = targets;
  const P = w.views;
  normForward(be, ws.normSpec, ws.lnf, ws.lnfs, ws.residL, P.normF, P.normFBias, N, C);
  linearForward(be, ws.logits, ws.lnf, P.head, P.headBias, N, C, V, "f32"); // the LM head stays f32 (GemmPrecision)
  let ce = 0, tokens = 0;
  if (targets) {
    if (ws.tp) vocabCrossEntropyForward(be, ws.tp, ws.losses, ws.lse, ws.logits, targets, N, IGNORE_INDEX);
    else be.crossEntropyForward(ws.losses, ws.lse, ws.logits, targets, N, V, IGNORE_INDEX);
    for (let i = 0; i < N; i++) {
      if (targets[i] !== IGNORE_INDEX) {
        ce += ws.losses[i]!;
        tokens++;
      }
    }
    ce = tokens > 0 ? ce / tokens : 0;
  }
  ws.validTokens = tokens;
  return { ce, tokens };
}

/**
 * Backward of the workspace's last forward (which must have had targets). Gradients are
 * accumulated (+=) into g. gradScale multiplies the whole loss gradient (e.g. 1/micro-batches).
 * The composition of headBackward, layersBackward over every layer, and embedBackward.
 * `done(part)`, when given, is called as each part's gradients are complete: part L (final norm
 * and LM head), then each layer L−1 … 0, then −1 (the embedding; with tied embeddings the LM
 * head's share of it too). Data parallelism starts reducing those gradients while the rest runs.
 */
export function modelBackward(be: Backend, w: Weights, g: Gradients, ws: Workspace, gradScale = 1, done?: (part: number) => void): void {
  checkPair(be, w, ws);
  if (!ws.targets || !ws.ids) throw new Error("backward: call forward with targets first");
  const L = ws.cfg.numLayers;
  headBackward(be, w, g, ws, gradScale);
  if (!done) layersBackward(be, w, g, ws, 0, L, gradScale);
  else {
    done(L);
    for (let l = L - 1; l >= 0; l--) {
      layersBackward(be, w, g, ws, l, l + 1, gradScale);
      done(l);
    }
  }
  embedBackward(be, w, g, ws.dresid, ws.ids, ws.tp);
  done?.(-1);
}

/** Loss → d(residL), written into ws.dresid; LM head and final-norm gradients accumulated. */
export function headBackward(be: Backend, w: Weights, g: Gradients, ws: Workspace, gradScale = 1): void {
  checkPair(be, w, ws);
  if (g.weights.layout !== w.layout) throw new Error("backward: gradients belong to other weights");
  const cfg = ws.cfg, N = ws.N;
  const C = cfg.hiddenSize, V = cfg.vocabSize;
  const targets = ws.targets;
  if (!targets) throw new Error("backward: call forward with targets first");
  const P = w.views, G = g.views;
  // loss → logits (dlogits overwrites logits in place)
  const scale = ws.validTokens > 0 ? gradScale / ws.validTokens : 0;
  for (let i = 0; i < N; i++) ws.dlosses[i] = targets[i] === IGNORE_INDEX ? 0 : scale;
  if (ws.tp) vocabCrossEntropyBackward(be, ws.tp, ws.logits, ws.logits, ws.lse, targets, ws.dlosses, N, IGNORE_INDEX);
  else be.crossEntropyBackward(ws.logits, ws.logits, ws.lse, targets, ws.dlosses, N, V, IGNORE_INDEX);
  linearBackward(be, ws.dln, G.head, G.headBias, ws.logits, ws.lnf, P.head, N, C, V, false, "f32");
  ws.tp?.allreduce(ws.dln); // vocabulary-parallel head: partial over the slices
  normBackward(be, ws.normSpec, ws.dresid, G.normF, G.normFBias, ws.dln, ws.residL, P.normF, ws.lnfs, N, C);
}

/**
 * Backward through layers hi−1 … lo of the workspace's last forward over them: ws.dresid holds
 * d(output of layer hi−1) on entry and d(input of layer lo) on exit.
 */
export function layersBackward(be: Backend, w: Weights, g: Gradients, ws: Workspace, lo: number, hi: number, gradScale = 1): void {
  checkPair(be, w, ws);
  if (g.weights.layout !== w.layout) throw new Error("backward: gradients belong to other weights");
  if (lo < ws.lo || hi > ws.hi || lo > hi) throw new Error(`backward: layers [${lo}, ${hi}) are not within the workspace's [${ws.lo}, ${ws.hi})`);
  const cfg = ws.cfg, N = ws.N;
  const C = cfg.hiddenSize;
  const P = w.views, G = g.views;
  for (let l = hi - 1; l >= lo; l--) {
    const a = ws.acts[l]!, lw = P.layers[l]!, dw = G.layers[l]!;
    // resid[l+1] = mid + f(ln2(mid)): dresid is both d(mid) (residual path) and d(f output)
    if (a.moe) {
      moeBackward(be, a.moe, lw.moe!, dw.moe!, ws.moeScratch!, ws.dln, ws.dresid, a.ln2, gradScale);
    } else {
      ffnBackward(be, ws.dln, dw.gateUp!, dw.down!, ws.dresid, a.ln2, a.ffn!, lw.gateUp!, lw.down!, ws.ffnScratch!, N, C, cfg.denseIntermediateSize, false);
    }
    ws.tp?.allreduce(ws.dln); // column-parallel gate/up: partial input gradients
    normBackward(be, ws.normSpec, ws.dtmp, dw.ln2, dw.ln2Bias, ws.dln, a.mid, lw.ln2, a.ln2s, N, C);
    be.add(ws.dresid, ws.dresid, ws.dtmp);
    // mid = resid + attn(ln1(resid))
    attentionBackward(be, ws.attnSpecs[l]!, lw.attn, dw.attn, a.attn, ws.attnScratch, ws.dln, ws.dresid, a.ln1, ws.pos, false);
    if (ws.tp) {
      ws.tp.allreduce(ws.dln); // column-parallel q/k/v: partial input gradients
      if (ws.tp.rank !== 0) dw.attn.oBias?.fill(0); // the row-parallel o bias lives on TP rank 0
    }
    normBackward(be, ws.normSpec, ws.dtmp, dw.ln1, dw.ln1Bias, ws.dln, a.resid, lw.ln1, a.ln1s, N, C);
    be.add(ws.dresid, ws.dresid, ws.dtmp);
  }
}

/** d(input of layer 0) → embedding gradients (accumulated) for the tokens ids (under TP: the rows this rank owns). */
export function embedBackward(be: Backend, w: Weights, g: Gradients, dx: FArr, ids: Int32Array, tp?: TensorParallelContext): void {
  if (g.weights.layout !== w.layout) throw new Error("backward: gradients belong to other weights");
  if (tp) vocabEmbedBackward(tp, g.views.embed, dx, ids, w.cfg.hiddenSize);
  else be.embeddingBackward(g.views.embed, dx, ids, w.cfg.vocabSize, w.cfg.hiddenSize);
}
