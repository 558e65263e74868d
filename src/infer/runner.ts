// One inference step of the whole model over a flat batch of new rows from many sequences,
// against the paged KV cache (vLLM's model runner; llama.cpp's batch with mul_mat_id experts).
//
// Numbered, per layer:
//  1. norm → q, k, v projections (+bias, q/k norm, clip_qkv) → RoPE at each row's position
//  2. pagedWrite of the new keys/values into their slots, pagedAttention of each sequence's
//     new rows against its cached keys (causal, sliding window per layer), output projection
//  3. norm → MoE: router (eval mode) over all rows of the step together, rows sorted by expert,
//     one grouped GEMM per projection (f32) or one compact matmul per active expert, SwiGLU,
//     weighted combine, shared expert; or the dense FFN
// Then the final norm and the LM head on the rows that need logits only.
// Tensor parallel (weights.tp set, infer/tp-shard.ts): the same step on one rank's heads and
// intermediate columns, with an all-reduce after o_proj and after the FFN / MoE layer.
// Each step returns the tokens routed to each expert per MoE layer (server metrics).
// Validation: the first step of each shape (rows N, logit rows R) on a workspace, weights and KV
// pool runs every kernel through the backend's checked table; later steps of that shape use
// `be.unchecked` (when the backend has one), and only the step's data — token ids, KV slots,
// block tables, query/context lengths (checkPagedAttention, once per step and window, not once
// per layer) and the routed expert ids — is checked each step. Every other kernel argument is a
// view of the workspace or weights whose length is a function of (N, R) alone.
//
// Not: scheduling or sampling (engine.ts), or training (model/forward.ts).
import type { Backend, Kernels } from "../backend/spec.js";
import { checkPagedAttention } from "../backend/checks/paged-attention.js";
import type { ModelConfig } from "../model/config.js";
import { routerForward } from "../moe/router.js";
import { ropeFrequencies } from "../nn/rope-scaling.js";
import { matmul, type Activations, type EngineLayer, type EngineWeights, type Mat } from "./engine-weights.js";
import type { KvCachePool } from "./kv-cache.js";
import { shardedRmsNorm, type TpShard } from "./tp-shard.js";

/** The rows of one step: sequence s owns rows [queryStart[s], queryStart[s+1]). */
export interface StepBatch {
  /** Token id of each new row (N). */
  tokens: Int32Array;
  /** Position of each row in its sequence (N). */
  positions: Int32Array;
  /** (S+1) row offsets per sequence. */
  queryStart: Int32Array;
  /** (S) each sequence's length including its new rows. */
  contextLens: Int32Array;
  /** (N) KV-cache slot of each new row. */
  slots: Int32Array;
  /** (S · maxBlocksPerSeq) block tables. */
  blockTables: Int32Array;
  /** Rows whose logits are wanted (R), in the order logits are returned. */
  logitRows: Int32Array;
}

export interface StepStats {
  /** Per layer: tokens routed to each expert (top-k assignments) in this step; null on dense layers. */
  tokensPerExpert: (Int32Array | null)[];
  rows: number;
}

/** Buffers for up to maxRows rows per step and maxLogitRows logits rows. */
export class InferenceWorkspace {
  readonly x: Float32Array; // (maxRows, C) residual stream
  readonly ln: Float32Array; // (maxRows, C)
  readonly q: Float32Array; // (maxRows, NH·HS)
  readonly k: Float32Array; // (maxRows, KVH·HS)
  readonly v: Float32Array;
  readonly att: Float32Array; // (maxRows, NH·HS)
  readonly out: Float32Array; // (maxRows, C)
  readonly rstd: Float32Array; // (maxRows·NH)
  readonly mean: Float32Array;
  readonly h: Float32Array; // (maxRows·K, 2·max(F, I, S))
  readonly a: Float32Array; // (maxRows·K, max(F, I, S))
  readonly xs: Float32Array; // (maxRows·K, C)
  readonly yo: Float32Array; // (maxRows·K, C)
  readonly routerLogits: Float32Array; // (maxRows, E)
  readonly keys: Int32Array;
  readonly perm: Int32Array;
  readonly counts: Int32Array;
  readonly tokenOf: Int32Array;
  readonly rowW: Float32Array;
  readonly gate: Float32Array; // (maxRows)
  readonly sel: Float32Array; // (maxLogitRows, C)
  readonly logits: Float32Array; // (maxLogitRows, V)
  /** Step shapes ("N,R") that ran fully checked with `validatedWith`'s weights and KV pool. */
  readonly validatedShapes = new Set<string>();
  validatedWith: { w: EngineWeights; kv: KvCachePool } | null = null;

  /** How q8_0 matrices take their activations at M ≤ 8 rows (see EngineOptions.activations). */
  readonly activations: Activations;

  constructor(readonly cfg: ModelConfig, readonly maxRows: number, readonly maxLogitRows: number, opts: { activations?: Activations } = {}) {
    if (!(Number.isInteger(maxRows) && maxRows >= 1)) throw new Error(`inference workspace: maxRows must be a positive integer, got ${maxRows}`);
    const act = opts.activations ?? "f32";
    if (act !== "f32" && act !== "q8") throw new Error(`inference workspace: activations must be "f32" or "q8", got ${JSON.stringify(act)}`);
    this.activations = act;
    const C = cfg.hiddenSize, NH = cfg.numHeads, KVH = cfg.numKvHeads, HS = cfg.headDim;
    const K = Math.max(1, cfg.moe.topK), E = Math.max(1, cfg.moe.numExperts);
    const W = Math.max(cfg.moe.expertIntermediateSize, cfg.denseIntermediateSize, cfg.moe.sharedExpertIntermediateSize);
    const R = maxRows;
    this.x = new Float32Array(R * C);
    this.ln = new Float32Array(R * C);
    this.q = new Float32Array(R * NH * HS);
    this.k = new Float32Array(R * KVH * HS);
    this.v = new Float32Array(R * KVH * HS);
    this.att = new Float32Array(R * NH * HS);
    this.out = new Float32Array(R * C);
    this.rstd = new Float32Array(R * NH);
    this.mean = new Float32Array(R * NH);
    this.h = new Float32Array(R * K * 2 * W);
    this.a = new Float32Array(R * K * W);
    this.xs = new Float32Array(R * K * C);
    this.yo = new Float32Array(R * K * C);
    this.routerLogits = new Float32Array(R * E);
    this.keys = new Int32Array(R * K);
    this.perm = new Int32Array(R * K);
    this.counts = new Int32Array(E);
    this.tokenOf = new Int32Array(R * K);
    this.rowW = new Float32Array(R * K);
    this.gate = new Float32Array(R);
    this.sel = new Float32Array(maxLogitRows * C);
    this.logits = new Float32Array(maxLogitRows * cfg.vocabSize);
  }
}

function norm(be: Kernels, cfg: ModelConfig, ws: InferenceWorkspace, out: Float32Array, x: Float32Array, w: Float32Array, b: Float32Array | undefined, N: number): void {
  const C = cfg.hiddenSize;
  if (cfg.norm.kind === "rms") be.rmsnormForward(out, ws.rstd.subarray(0, N), x, w, N, C, cfg.norm.eps);
  else be.layernormForward(out, ws.mean.subarray(0, N), ws.rstd.subarray(0, N), x, w, b!, N, C, cfg.norm.eps);
}

function linear(be: Kernels, y: Float32Array, x: Float32Array, m: Mat, bias: Float32Array | undefined, N: number, act: Activations): void {
  matmul(be, y, x, m, N, act);
  if (bias) be.biasAddForward(y, bias, N, m.rows);
}

function clamp(x: Float32Array, c: number): void {
  for (let i = 0; i < x.length; i++) x[i] = Math.min(c, Math.max(-c, x[i]!));
}

/** Steps 1–2: attention of the new rows; ws.out (N,C) receives the sublayer output. */
function attention(be: Kernels, w: EngineWeights, lw: EngineLayer, l: number, ws: InferenceWorkspace, kv: KvCachePool, b: StepBatch, N: number, rope: { invFreq?: Float64Array; scale: number }): void {
  const cfg = w.cfg, C = cfg.hiddenSize, NH = cfg.numHeads, KVH = cfg.numKvHeads, HS = cfg.headDim;
  const ln = ws.ln.subarray(0, N * C), q = ws.q.subarray(0, N * NH * HS), k = ws.k.subarray(0, N * KVH * HS), v = ws.v.subarray(0, N * KVH * HS);
  norm(be, cfg, ws, ln, ws.x.subarray(0, N * C), lw.ln1, lw.ln1Bias, N);
  linear(be, q, ln, lw.q, lw.qBias, N, ws.activations);
  linear(be, k, ln, lw.k, lw.kBias, N, ws.activations);
  linear(be, v, ln, lw.v, lw.vBias, N, ws.activations);
  if (cfg.qkNorm === "full" && w.tp) {
    // tensor parallel: a whole-projection norm over columns split across the ranks
    shardedRmsNorm(q, lw.qNorm!, N, NH * HS, w.tp.qNormWidth, cfg.norm.eps, w.tp.allreduce);
    shardedRmsNorm(k, lw.kNorm!, N, KVH * HS, w.tp.kNormWidth, cfg.norm.eps, w.tp.allreduce);
  } else if (cfg.qkNorm !== "none") {
    // the kernel does not alias: normalise from a copy in the attention-output buffer
    const head = cfg.qkNorm === "head";
    const tq = ws.att.subarray(0, q.length), tk = ws.att.subarray(0, k.length);
    tq.set(q);
    be.rmsnormForward(q, ws.rstd.subarray(0, head ? N * NH : N), tq, lw.qNorm!, head ? N * NH : N, head ? HS : NH * HS, cfg.norm.eps);
    tk.set(k);
    be.rmsnormForward(k, ws.rstd.subarray(0, head ? N * KVH : N), tk, lw.kNorm!, head ? N * KVH : N, head ? HS : KVH * HS, cfg.norm.eps);
  }
  if (cfg.clipQkv) {
    clamp(q, cfg.clipQkv);
    clamp(k, cfg.clipQkv);
    clamp(v, cfg.clipQkv);
  }
  const rp = { B: 1, T: N, HS, rotaryDim: cfg.rope.rotaryDim, theta: cfg.rope.theta, ...(rope.invFreq ? { invFreq: rope.invFreq } : {}), scale: rope.scale };
  be.ropeForward(q, q, b.positions, { ...rp, H: NH });
  be.ropeForward(k, k, b.positions, { ...rp, H: KVH });
  const cache = { numBlocks: kv.numBlocks, blockSize: kv.blockSize, KVH, HS };
  be.pagedWrite(kv.k(l), kv.v(l), k, v, b.slots, cache);
  const S = b.contextLens.length;
  const window = l >= (cfg.windowFromLayer ?? 0) ? cfg.slidingWindow : 0;
  const att = ws.att.subarray(0, N * NH * HS);
  be.pagedAttention(att, q, kv.k(l), kv.v(l), b.blockTables, b.queryStart, b.contextLens, { ...cache, numSeqs: S, NH, maxBlocksPerSeq: kv.maxBlocksPerSeq, window });
  linear(be, ws.out.subarray(0, N * C), att, lw.o, lw.oBias, N, ws.activations);
  w.tp?.allreduce(ws.out.subarray(0, N * C)); // tensor parallel: sum the ranks' partial outputs
}

/** Step 3 for an MoE layer: ws.out (N,C) = MoE(ws.ln). Returns the tokens per expert. */
function moe(be: Kernels, cfg: ModelConfig, m: NonNullable<EngineLayer["moe"]>, ws: InferenceWorkspace, N: number, checkRoutes: boolean, tp?: TpShard): Int32Array {
  const C = cfg.hiddenSize, E = cfg.moe.numExperts, K = cfg.moe.topK, F = cfg.moe.expertIntermediateSize;
  const x = ws.ln.subarray(0, N * C), y = ws.out.subarray(0, N * C);
  const z = ws.routerLogits.subarray(0, N * E);
  be.gemm(x, m.router, z, { M: N, N: E, K: C, transB: true });
  tp?.broadcast(z); // tensor parallel: every rank routes by rank 0's logits
  const route = routerForward(cfg.moe.router, z, N, E, "eval", undefined, m.routerBias);
  const NK = N * K;
  const keys = ws.keys.subarray(0, NK), perm = ws.perm.subarray(0, NK);
  keys.set(route.topExperts);
  if (checkRoutes) {
    for (let i = 0; i < NK; i++) if (!(keys[i]! >= 0 && keys[i]! < E)) throw new Error(`runStep: routed expert id ${keys[i]} is out of range [0, ${E})`);
  }
  be.sortByKey(perm, keys, E);
  be.histogram(ws.counts, keys, E);
  const tokenOf = ws.tokenOf.subarray(0, NK), rowW = ws.rowW.subarray(0, NK);
  for (let i = 0; i < NK; i++) {
    const a = perm[i]!;
    tokenOf[i] = (a / K) | 0;
    rowW[i] = route.weights[a]!;
  }
  const xs = ws.xs.subarray(0, NK * C), h = ws.h.subarray(0, NK * 2 * F), act = ws.a.subarray(0, NK * F), yo = ws.yo.subarray(0, NK * C);
  be.gather(xs, x, tokenOf, N, C);
  if (m.w13All && m.w2All) {
    be.groupedGemm(xs, m.w13All, h, ws.counts, { K: C, N: 2 * F, transW: true });
    be.swigluForward(act, h, NK, F);
    be.groupedGemm(act, m.w2All, yo, ws.counts, { K: F, N: C, transW: true });
  } else {
    let r0 = 0;
    for (let e = 0; e < E; e++) {
      const n = ws.counts[e]!;
      if (n === 0) continue;
      const r1 = r0 + n;
      matmul(be, h.subarray(r0 * 2 * F, r1 * 2 * F), xs.subarray(r0 * C, r1 * C), m.w13[e]!, n, ws.activations);
      r0 = r1;
    }
    be.swigluForward(act, h, NK, F);
    r0 = 0;
    for (let e = 0; e < E; e++) {
      const n = ws.counts[e]!;
      if (n === 0) continue;
      const r1 = r0 + n;
      matmul(be, yo.subarray(r0 * C, r1 * C), act.subarray(r0 * F, r1 * F), m.w2[e]!, n, ws.activations);
      r0 = r1;
    }
  }
  y.fill(0);
  be.scatterAdd(y, yo, tokenOf, rowW, N, C);
  if (m.sharedGateUp) {
    const S = cfg.moe.sharedExpertIntermediateSize;
    const sh = ws.h.subarray(0, N * 2 * S), sa = ws.a.subarray(0, N * S), sy = ws.xs.subarray(0, N * C), g = ws.gate.subarray(0, N);
    matmul(be, sh, x, m.sharedGateUp, N, ws.activations);
    be.swigluForward(sa, sh, N, S);
    matmul(be, sy, sa, m.sharedDown!, N, ws.activations);
    be.gemm(x, m.sharedGate!, g, { M: N, N: 1, K: C, transB: true });
    for (let n = 0; n < N; n++) {
      const s = 1 / (1 + Math.exp(-g[n]!));
      for (let c = 0; c < C; c++) y[n * C + c]! += s * sy[n * C + c]!;
    }
  }
  return Int32Array.from(ws.counts);
}

/**
 * Runs one step: embeds b.tokens, runs every layer (writing the new keys/values into kv),
 * and leaves the logits of b.logitRows in ws.logits (R, V).
 */
export function runStep(be: Backend, w: EngineWeights, ws: InferenceWorkspace, kv: KvCachePool, b: StepBatch): StepStats {
  const cfg = w.cfg, C = cfg.hiddenSize, V = cfg.vocabSize, N = b.tokens.length;
  if (N < 1 || N > ws.maxRows) throw new Error(`runStep: ${N} rows, the workspace holds 1..${ws.maxRows}`);
  const R = b.logitRows.length;
  if (R > ws.maxLogitRows) throw new Error(`runStep: ${R} logit rows, the workspace holds ${ws.maxLogitRows}`);
  for (let i = 0; i < N; i++) {
    const t = b.tokens[i]!;
    if (!(t >= 0 && t < V)) throw new Error(`runStep: token id ${t} is out of range [0, ${V})`);
  }
  let maxLen = 0;
  for (const n of b.contextLens) maxLen = Math.max(maxLen, n);
  const shape = `${N},${R}`;
  if (ws.validatedWith === null || ws.validatedWith.w !== w || ws.validatedWith.kv !== kv) {
    ws.validatedShapes.clear();
    ws.validatedWith = { w, kv };
  }
  const checked = be.unchecked === undefined || !ws.validatedShapes.has(shape);
  if (!checked) checkStepData(cfg, ws, kv, b, N); // before tp.begin: a bad batch never engages other ranks
  w.tp?.begin?.(b, kv, ws); // tensor parallel, rank 0: the other ranks run this step too
  const rope = ropeFrequencies(cfg.rope.theta, cfg.rope.rotaryDim, cfg.rope.scaling, maxLen);
  const k: Kernels = checked ? be : be.unchecked!;
  const stats = layers(k, w, ws, kv, b, N, R, rope, !checked);
  w.tp?.end?.();
  if (checked) ws.validatedShapes.add(shape);
  return stats;
}

/** The per-step data checks of an unchecked step: the paged kernels' index checks, once per distinct window. */
function checkStepData(cfg: ModelConfig, ws: InferenceWorkspace, kv: KvCachePool, b: StepBatch, N: number): void {
  const KVH = cfg.numKvHeads, HS = cfg.headDim, NH = cfg.numHeads;
  const cache = { numBlocks: kv.numBlocks, blockSize: kv.blockSize, KVH, HS };
  checkPagedAttention.pagedWrite(kv.k(0), kv.v(0), ws.k.subarray(0, N * KVH * HS), ws.v.subarray(0, N * KVH * HS), b.slots, cache);
  const windows = new Set<number>();
  for (let l = 0; l < cfg.numLayers; l++) windows.add(l >= (cfg.windowFromLayer ?? 0) ? cfg.slidingWindow : 0);
  for (const window of windows) {
    checkPagedAttention.pagedAttention(ws.att.subarray(0, N * NH * HS), ws.q.subarray(0, N * NH * HS), kv.k(0), kv.v(0), b.blockTables, b.queryStart, b.contextLens, {
      ...cache, numSeqs: b.contextLens.length, NH, maxBlocksPerSeq: kv.maxBlocksPerSeq, window,
    });
  }
  if (b.positions.length !== N) throw new Error(`runStep: ${b.positions.length} positions for ${N} rows`);
  for (let i = 0; i < N; i++) if (!(b.positions[i]! >= 0)) throw new Error(`runStep: position ${b.positions[i]} of row ${i} is negative`);
  for (let r = 0; r < b.logitRows.length; r++) {
    const row = b.logitRows[r]!;
    if (!(row >= 0 && row < N)) throw new Error(`runStep: logit row ${row} is out of range [0, ${N})`);
  }
}

function layers(be: Kernels, w: EngineWeights, ws: InferenceWorkspace, kv: KvCachePool, b: StepBatch, N: number, R: number, rope: { invFreq?: Float64Array; scale: number }, checkRoutes: boolean): StepStats {
  const cfg = w.cfg, C = cfg.hiddenSize, V = cfg.vocabSize;
  const x = ws.x.subarray(0, N * C), out = ws.out.subarray(0, N * C), ln = ws.ln.subarray(0, N * C);
  be.embeddingForward(x, b.tokens, w.embed, V, C);
  const stats: StepStats = { tokensPerExpert: [], rows: N };
  for (let l = 0; l < cfg.numLayers; l++) {
    const lw = w.layers[l]!;
    attention(be, w, lw, l, ws, kv, b, N, rope);
    be.add(x, x, out);
    norm(be, cfg, ws, ln, x, lw.ln2, lw.ln2Bias, N);
    if (lw.moe) stats.tokensPerExpert.push(moe(be, cfg, lw.moe, ws, N, checkRoutes, w.tp));
    else {
      const I = cfg.denseIntermediateSize;
      const h = ws.h.subarray(0, N * 2 * I), act = ws.a.subarray(0, N * I);
      matmul(be, h, ln, lw.gateUp!, N, ws.activations);
      be.swigluForward(act, h, N, I);
      matmul(be, out, act, lw.down!, N, ws.activations);
      stats.tokensPerExpert.push(null);
    }
    w.tp?.allreduce(out); // tensor parallel: sum the ranks' partial FFN / MoE outputs
    be.add(x, x, out);
  }
  if (R > 0) {
    const sel = ws.sel.subarray(0, R * C);
    for (let r = 0; r < R; r++) sel.set(x.subarray(b.logitRows[r]! * C, (b.logitRows[r]! + 1) * C), r * C);
    const selN = ws.ln.subarray(0, R * C);
    norm(be, cfg, ws, selN, sel, w.normF, w.normFBias, R);
    linear(be, ws.logits.subarray(0, R * V), selN, w.head, w.headBias, R, ws.activations);
  }
  return stats;
}
