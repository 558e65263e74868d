// Tensor-parallel layout of the inference engine (Megatron, with Skywork-MoE's uneven splits):
// which heads and which intermediate columns each rank holds, and one rank's slice of an
// engine's weights.
//
// The layout, for `size` ranks:
//  - attention: q/k/v column-parallel by whole heads, o row-parallel (its input columns split by
//    the same heads), one all-reduce after o. Heads that do not divide go as Skywork's:
//    `total mod size` ranks get one more (36 heads over 8 → [5,5,5,5,4,4,4,4]). GQA: with
//    KVH ≥ size the kv heads are split that way and every rank takes the q heads of its kv
//    heads; with KVH < size (size a multiple of KVH) each kv head is replicated on size/KVH
//    ranks, which split its q heads unevenly among themselves.
//  - dense FFN: gate/up column-parallel, down row-parallel; experts (ETP) and the shared expert
//    the same per expert: every rank computes a slice of every expert's intermediate columns;
//    one all-reduce after the MoE layer. The router is replicated (its logits are broadcast from
//    rank 0 so every rank routes identically).
//  - embedding replicated on every rank; final norm and LM head on rank 0 only (the other ranks
//    never compute logits).
// Slicing works on the engine's encoded matrices, so every rank uses exactly the values (codes,
// per-row scales, GGUF blocks) one rank would: a row-parallel slice keeps its rows' full scales.
// Block formats need their column slices on block boundaries; intermediate sizes are split in
// whole blocks, and a head slice that is not a whole number of blocks is refused.
//
// Not: the worker threads and the step protocol (tp.ts, tp-worker.ts), nor training TP.
import type { ModelConfig } from "../model/config.js";
import { evenSplit } from "../parallel/process-group.js";
import { BLOCK_FORMATS, BLOCK_LAYOUT, type BlockFormat } from "../core/quant-blocks.js";
import { matBytes, type Activations, type EngineDtype, type EngineLayer, type EngineWeights, type Mat } from "./engine-weights.js";
import type { StepBatch } from "./runner.js";
import type { KvCachePool } from "./kv-cache.js";

export class TensorParallelError extends Error {
  override name = "TensorParallelError";
}

/** What runStep needs to run one rank's slice (set on that rank's EngineWeights as `tp`). */
export interface TpShard {
  rank: number;
  size: number;
  /** In place: the element-wise sum over the ranks (blocking; every rank calls it in the same order). */
  allreduce(buf: Float32Array): void;
  /** In place: every rank's buf becomes rank 0's (blocking). */
  broadcast(buf: Float32Array): void;
  /** Rank 0 only: has the other ranks run this step with it (runStep calls it before the layers, with its workspace's row count and activation mode). */
  begin?(b: StepBatch, kv: KvCachePool, ws: { maxRows: number; activations: Activations }): void;
  /** Rank 0 only: the step's layers are done on every rank (not called when the step threw). */
  end?(): void;
  /** "full" q/k norms: the width their mean of squares is over, after the all-reduce (k: × replicas). */
  qNormWidth: number;
  kNormWidth: number;
}

/** One rank's share: heads [qOffset, qOffset+qHeads), kv heads likewise, intermediate columns. */
export interface TpRankPlan {
  qOffset: number;
  qHeads: number;
  kvOffset: number;
  kvHeads: number;
  /** Expert, dense-FFN and shared-expert intermediate columns: [offset, offset+count). */
  expert: { offset: number; count: number };
  dense: { offset: number; count: number };
  shared: { offset: number; count: number };
}

export interface TpPlan {
  size: number;
  /** Ranks holding a copy of each kv head (1 when the kv heads are split). */
  kvReplicas: number;
  ranks: TpRankPlan[];
}

function blockSizeOf(dtype: EngineDtype): number {
  return (BLOCK_FORMATS as readonly string[]).includes(dtype) ? BLOCK_LAYOUT[dtype as BlockFormat].blockSize : 1;
}

/** Splits `total` columns in whole units of `unit` over `size` ranks (first total mod size ranks one more unit). */
function splitColumns(what: string, total: number, unit: number, size: number, required: boolean): { offset: number; count: number }[] {
  // a kind of layer the model does not have, or an absent shared expert: nothing to split
  if (total === 0 || !required) return Array.from({ length: size }, () => ({ offset: 0, count: 0 }));
  if (total % unit !== 0) throw new TensorParallelError(`tensor parallel: ${what} ${total} is not a multiple of the block size ${unit}`);
  const { counts, offsets } = evenSplit(total / unit, size);
  if (counts.some((c) => c === 0)) throw new TensorParallelError(`tensor parallel: ${what} ${total} has ${total / unit} ${unit > 1 ? `blocks of ${unit}` : "columns"}, fewer than the ${size} ranks`);
  return counts.map((c, r) => ({ offset: offsets[r]! * unit, count: c * unit }));
}

/** The layout of `cfg` over `size` ranks for weights stored as `dtype`. */
export function planTensorParallel(cfg: ModelConfig, size: number, dtype: EngineDtype = "f32"): TpPlan {
  if (!(Number.isInteger(size) && size >= 1)) throw new TensorParallelError(`tensor parallel: the rank count must be a positive integer, got ${size}`);
  const NH = cfg.numHeads, KVH = cfg.numKvHeads, HS = cfg.headDim, g = NH / KVH;
  if (size > NH) throw new TensorParallelError(`tensor parallel: ${size} ranks but the model has only ${NH} attention heads (at most one rank per head)`);
  let heads: { qOffset: number; qHeads: number; kvOffset: number; kvHeads: number }[];
  let kvReplicas = 1;
  if (KVH >= size) {
    const { counts, offsets } = evenSplit(KVH, size);
    heads = counts.map((c, r) => ({ qOffset: offsets[r]! * g, qHeads: c * g, kvOffset: offsets[r]!, kvHeads: c }));
  } else {
    if (size % KVH !== 0) throw new TensorParallelError(`tensor parallel: ${size} ranks do not fit ${KVH} kv heads: use at most ${KVH} ranks or a multiple of ${KVH}`);
    kvReplicas = size / KVH;
    const sub = evenSplit(g, kvReplicas);
    heads = Array.from({ length: size }, (_, r) => {
      const kv = Math.floor(r / kvReplicas), j = r % kvReplicas;
      return { qOffset: kv * g + sub.offsets[j]!, qHeads: sub.counts[j]!, kvOffset: kv, kvHeads: 1 };
    });
  }
  const unit = blockSizeOf(dtype);
  if (unit > 1) for (const h of heads) {
    if ((h.qHeads * HS) % unit !== 0 || (h.qOffset * HS) % unit !== 0) throw new TensorParallelError(`tensor parallel: a rank's o_proj slice of ${h.qHeads} heads × ${HS} columns is not a whole number of ${dtype} blocks of ${unit}; use fewer ranks or another --dtype`);
  }
  const hasDense = cfg.moe.moeLayers.some((m) => !m), hasMoe = cfg.moe.moeLayers.some((m) => m);
  const expert = splitColumns("the expert intermediate size", hasMoe ? cfg.moe.expertIntermediateSize : 0, unit, size, hasMoe);
  const dense = splitColumns("the dense intermediate size", hasDense ? cfg.denseIntermediateSize : 0, unit, size, hasDense);
  const shared = splitColumns("the shared-expert intermediate size", hasMoe ? cfg.moe.sharedExpertIntermediateSize : 0, unit, size, hasMoe);
  return { size, kvReplicas, ranks: heads.map((h, r) => ({ ...h, expert: expert[r]!, dense: dense[r]!, shared: shared[r]! })) };
}

/** The model config one rank's weights describe (its heads and intermediate sizes). */
export function localConfig(cfg: ModelConfig, p: TpRankPlan): ModelConfig {
  return {
    ...cfg, numHeads: p.qHeads, numKvHeads: p.kvHeads,
    // sizes of a kind of layer the model does not have stay as they are (unused)
    denseIntermediateSize: cfg.moe.moeLayers.some((m) => !m) ? p.dense.count : cfg.denseIntermediateSize,
    moe: { ...cfg.moe, expertIntermediateSize: cfg.moe.moeLayers.some((m) => m) ? p.expert.count : cfg.moe.expertIntermediateSize, sharedExpertIntermediateSize: p.shared.count },
  };
}

// ---- slicing encoded matrices ----------------------------------------------------------------

/** Bytes of one row of a block-format matrix. */
function rowBytes(m: Mat & { blocks: Uint8Array }): number {
  const l = BLOCK_LAYOUT[m.format as BlockFormat];
  return (m.cols / l.blockSize) * l.blockBytes;
}

/** A new matrix of the rows [start, start+count) of each range, in order (fresh arrays). */
export function takeRows(m: Mat, ranges: readonly (readonly [number, number])[]): Mat {
  const rows = ranges.reduce((a, r) => a + r[1], 0);
  for (const [s, n] of ranges) if (s < 0 || n < 0 || s + n > m.rows) throw new TensorParallelError(`takeRows: rows [${s}, ${s + n}) outside a matrix of ${m.rows} rows`);
  if (m.format === "f32") {
    const w = new Float32Array(rows * m.cols);
    let o = 0;
    for (const [s, n] of ranges) {
      w.set(m.w.subarray(s * m.cols, (s + n) * m.cols), o * m.cols);
      o += n;
    }
    return { format: "f32", rows, cols: m.cols, w };
  }
  if ("blocks" in m) {
    const rb = rowBytes(m), blocks = new Uint8Array(rows * rb);
    let o = 0;
    for (const [s, n] of ranges) {
      blocks.set(m.blocks.subarray(s * rb, (s + n) * rb), o * rb);
      o += n;
    }
    return { format: m.format, rows, cols: m.cols, blocks };
  }
  const codes = new (m.codes.constructor as Uint16ArrayConstructor | Uint8ArrayConstructor | Int8ArrayConstructor)(rows * m.cols);
  const scales = new Float32Array(rows);
  let o = 0;
  for (const [s, n] of ranges) {
    codes.set(m.codes.subarray(s * m.cols, (s + n) * m.cols) as never, o * m.cols);
    scales.set(m.scales.subarray(s, s + n), o);
    o += n;
  }
  return { format: m.format, rows, cols: m.cols, codes, scales };
}

/** A new matrix of the columns [start, start+count) of every row; per-row scales kept whole. */
export function takeCols(m: Mat, start: number, count: number): Mat {
  if (start < 0 || count < 1 || start + count > m.cols) throw new TensorParallelError(`takeCols: columns [${start}, ${start + count}) outside a matrix of ${m.cols} columns`);
  const R = m.rows, C = m.cols;
  if (m.format === "f32") {
    const w = new Float32Array(R * count);
    for (let r = 0; r < R; r++) w.set(m.w.subarray(r * C + start, r * C + start + count), r * count);
    return { format: "f32", rows: R, cols: count, w };
  }
  if ("blocks" in m) {
    const { blockSize: bs, blockBytes: bb } = BLOCK_LAYOUT[m.format];
    if (start % bs !== 0 || count % bs !== 0) throw new TensorParallelError(`takeCols: columns [${start}, ${start + count}) of a ${m.format} matrix do not fall on blocks of ${bs}`);
    const rb = rowBytes(m), ob = (count / bs) * bb, b0 = (start / bs) * bb;
    const blocks = new Uint8Array(R * ob);
    for (let r = 0; r < R; r++) blocks.set(m.blocks.subarray(r * rb + b0, r * rb + b0 + ob), r * ob);
    return { format: m.format, rows: R, cols: count, blocks };
  }
  const codes = new (m.codes.constructor as Uint16ArrayConstructor | Uint8ArrayConstructor | Int8ArrayConstructor)(R * count);
  for (let r = 0; r < R; r++) codes.set(m.codes.subarray(r * C + start, r * C + start + count) as never, r * count);
  return { format: m.format, rows: R, cols: count, codes, scales: Float32Array.from(m.scales) };
}

/** Rows of a gate/up pair [gate (F rows) | up (F rows)] for columns [o, o+n) of F. */
function gateUpRows(m: Mat, F: number, o: number, n: number): Mat {
  return takeRows(m, [[o, n], [F + o, n]]);
}

/**
 * One rank's slice of `full` (fresh arrays for everything sliced; replicated arrays are copied
 * too when `copyReplicated`, so the slice can be transferred to a worker). Rank 0 keeps the
 * final norm and LM head; the other ranks get an empty head. f32 experts are fused again
 * (w13All/w2All) for the grouped GEMM. `tp` is left unset (the caller attaches its group).
 */
export function shardEngineWeights(full: EngineWeights, plan: TpPlan, rank: number, copyReplicated: boolean): EngineWeights {
  const cfg = full.cfg, p = plan.ranks[rank];
  if (!p) throw new TensorParallelError(`shardEngineWeights: rank ${rank} is not in a plan of ${plan.size} ranks`);
  const HS = cfg.headDim, C = cfg.hiddenSize;
  const rep = <T extends Float32Array | undefined>(a: T): T => (a && copyReplicated ? (a.slice() as T) : a);
  const vec = (a: Float32Array | undefined, s: number, n: number) => a?.slice(s, s + n);
  const q0 = p.qOffset * HS, qn = p.qHeads * HS, k0 = p.kvOffset * HS, kn = p.kvHeads * HS;
  const fullNorm = cfg.qkNorm === "full";
  const F = cfg.moe.expertIntermediateSize, S = cfg.moe.sharedExpertIntermediateSize, I = cfg.denseIntermediateSize;
  const layers: EngineLayer[] = full.layers.map((l) => {
    const out: EngineLayer = {
      ln1: rep(l.ln1), ln1Bias: rep(l.ln1Bias), ln2: rep(l.ln2), ln2Bias: rep(l.ln2Bias),
      q: takeRows(l.q, [[q0, qn]]), k: takeRows(l.k, [[k0, kn]]), v: takeRows(l.v, [[k0, kn]]), o: takeCols(l.o, q0, qn),
      qBias: vec(l.qBias, q0, qn), kBias: vec(l.kBias, k0, kn), vBias: vec(l.vBias, k0, kn),
      // the o bias is added once, by rank 0, before the all-reduce sums the partial outputs
      oBias: rank === 0 ? rep(l.oBias) : undefined,
      qNorm: fullNorm ? vec(l.qNorm, q0, qn) : rep(l.qNorm), kNorm: fullNorm ? vec(l.kNorm, k0, kn) : rep(l.kNorm),
    };
    if (l.moe) {
      const m = l.moe, e = p.expert, s = p.shared;
      out.moe = {
        router: rep(m.router), routerBias: rep(m.routerBias),
        w13: m.w13.map((w) => gateUpRows(w, F, e.offset, e.count)),
        w2: m.w2.map((w) => takeCols(w, e.offset, e.count)),
        ...(m.sharedGateUp ? { sharedGateUp: gateUpRows(m.sharedGateUp, S, s.offset, s.count), sharedDown: takeCols(m.sharedDown!, s.offset, s.count), sharedGate: rep(m.sharedGate) } : {}),
      };
    } else {
      out.gateUp = gateUpRows(l.gateUp!, I, p.dense.offset, p.dense.count);
      out.down = takeCols(l.down!, p.dense.offset, p.dense.count);
    }
    return out;
  });
  const head: Mat = rank === 0 ? full.head : { format: "f32", rows: 0, cols: C, w: new Float32Array(0) };
  const w: EngineWeights = {
    cfg: localConfig(cfg, p), dtype: full.dtype, embed: rep(full.embed), normF: rep(full.normF), normFBias: rep(full.normFBias),
    head: rank === 0 && copyReplicated && head.format === "f32" ? { ...head, w: head.w.slice() } : head, headBias: rank === 0 ? rep(full.headBias) : undefined, layers, bytes: 0,
  };
  if (w.dtype === "f32") fuseExperts(w);
  w.bytes = engineBytes(w);
  return w;
}

/** f32: the per-expert matrices of every MoE layer as one (E, 2F, C) / (E, C, F) array, each expert a view. */
export function fuseExperts(w: EngineWeights): void {
  for (const l of w.layers) {
    const m = l.moe;
    if (!m || m.w13.length === 0 || m.w13[0]!.format !== "f32") continue;
    const fuse = (mats: Mat[]) => {
      const n = mats.reduce((a, x) => a + (x as Mat & { w: Float32Array }).w.length, 0);
      const all = new Float32Array(n);
      let o = 0;
      const views = mats.map((x) => {
        const src = (x as Mat & { w: Float32Array }).w;
        all.set(src, o);
        const v: Mat = { format: "f32", rows: x.rows, cols: x.cols, w: all.subarray(o, o + src.length) };
        o += src.length;
        return v;
      });
      return { all, views };
    };
    const a = fuse(m.w13), b = fuse(m.w2);
    m.w13All = a.all;
    m.w13 = a.views;
    m.w2All = b.all;
    m.w2 = b.views;
  }
}

/** Bytes of every array a (sliced) engine holds; an f32 tied head is the embedding. */
export function engineBytes(w: EngineWeights): number {
  let bytes = 0;
  const seen = new Set<ArrayBufferLike>();
  const add = (a: { buffer: ArrayBufferLike; byteLength: number } | undefined) => {
    if (!a) return;
    if (seen.has(a.buffer) && a.byteLength === a.buffer.byteLength) return;
    seen.add(a.buffer);
    bytes += a.byteLength;
  };
  const mat = (m: Mat | undefined) => {
    if (!m) return;
    if (m.format === "f32") add(m.w);
    else bytes += matBytes(m);
  };
  add(w.embed);
  add(w.normF);
  add(w.normFBias);
  if (!(w.head.format === "f32" && w.head.w === w.embed)) mat(w.head);
  add(w.headBias);
  for (const l of w.layers) {
    for (const a of [l.ln1, l.ln1Bias, l.ln2, l.ln2Bias, l.qBias, l.kBias, l.vBias, l.oBias, l.qNorm, l.kNorm]) add(a);
    for (const m of [l.q, l.k, l.v, l.o, l.gateUp, l.down]) mat(m);
    if (l.moe) {
      add(l.moe.router);
      add(l.moe.routerBias);
      add(l.moe.sharedGate);
      if (l.moe.w13All && l.moe.w2All) {
        add(l.moe.w13All);
        add(l.moe.w2All);
      } else for (const m of [...l.moe.w13, ...l.moe.w2]) mat(m);
      mat(l.moe.sharedGateUp);
      mat(l.moe.sharedDown);
    }
  }
  return bytes;
}

/** Every ArrayBuffer a shard's arrays live in (to transfer it to a worker without a copy). */
export function shardBuffers(w: EngineWeights): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const walk = (x: unknown): void => {
    if (x === null || typeof x !== "object") return;
    if (ArrayBuffer.isView(x)) {
      if (x.buffer instanceof ArrayBuffer && x.buffer.byteLength > 0) out.add(x.buffer);
      return;
    }
    for (const v of Object.values(x as Record<string, unknown>)) walk(v);
  };
  walk(w);
  return [...out];
}

/**
 * RMS norm of rows whose columns are split over the ranks ("full" q/k norm under TP): the sum of
 * squares of each row's local columns is all-reduced, then y = x·w / sqrt(ss / fullWidth + eps).
 */
export function shardedRmsNorm(x: Float32Array, w: Float32Array, rows: number, width: number, fullWidth: number, eps: number, allreduce: (b: Float32Array) => void): void {
  const ss = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < width; c++) s += x[r * width + c]! * x[r * width + c]!;
    ss[r] = s;
  }
  allreduce(ss);
  for (let r = 0; r < rows; r++) {
    const k = 1 / Math.sqrt(ss[r]! / fullWidth + eps);
    for (let c = 0; c < width; c++) x[r * width + c] = x[r * width + c]! * k * w[c]!;
  }
}
