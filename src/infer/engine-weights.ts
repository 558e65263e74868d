// The weights the inference engine reads: every matrix as a `Mat` (f32 view of a training
// `Weights` arena, never copied; or compact codes: bf16 / f16 / fp8 / int8 with per-row scales,
// or GGUF blocks q8_0 / q4_0 / q4_k / q6_k), and the small tensors (norms, biases, router,
// embedding) as f32 arrays.
//
// f32: `engineWeights(weights)` wraps the arena's views; the trainer, a workspace and the engine
// share one copy. Quantised: `engineWeights(weights, { dtype })` encodes each matrix once and
// copies only the small tensors out, so the f32 arena can be dropped after load.
// `matmul` computes y = x·Wᵀ for any Mat (dequantising in registers for codes and blocks).
//
// Not: the forward pass (infer/runner.ts), or checkpoint IO.
import type { Backend, QuantDtype } from "../backend/spec.js";
import type { FArr } from "../nn/dims.js";
import type { ModelConfig } from "../model/config.js";
import type { Weights } from "../model/weights.js";
import { encodeArray, type NarrowFloat } from "../core/dtype.js";
import { BLOCK_FORMATS, BLOCK_LAYOUT, quantizeBlock, type BlockFormat } from "../core/quant-blocks.js";
import type { TpShard } from "./tp-shard.js";

/** Storage of the engine's matrices. */
export type EngineDtype = "f32" | "bf16" | "f16" | "fp8_e4m3" | "fp8_e5m2" | "int8" | BlockFormat;
export const ENGINE_DTYPES: readonly EngineDtype[] = ["f32", "bf16", "f16", "fp8_e4m3", "fp8_e5m2", "int8", ...BLOCK_FORMATS];

/** One (rows, cols) matrix used as y = x·Wᵀ. */
export type Mat =
  | { format: "f32"; rows: number; cols: number; w: Float32Array }
  | { format: QuantDtype; rows: number; cols: number; codes: Uint16Array | Uint8Array | Int8Array; scales: Float32Array }
  | { format: BlockFormat; rows: number; cols: number; blocks: Uint8Array };

export interface EngineLayer {
  ln1: Float32Array;
  ln1Bias?: Float32Array;
  ln2: Float32Array;
  ln2Bias?: Float32Array;
  q: Mat; k: Mat; v: Mat; o: Mat;
  qBias?: Float32Array; kBias?: Float32Array; vBias?: Float32Array; oBias?: Float32Array;
  qNorm?: Float32Array; kNorm?: Float32Array;
  moe?: {
    router: Float32Array; // (E, C)
    routerBias?: Float32Array; // (E)
    /** f32 engines: the fused (E, 2F, C) / (E, C, F) arrays for one grouped GEMM. */
    w13All?: Float32Array;
    w2All?: Float32Array;
    w13: Mat[]; // per expert (2F, C)
    w2: Mat[]; // per expert (C, F)
    sharedGateUp?: Mat; sharedDown?: Mat; sharedGate?: Float32Array;
  };
  gateUp?: Mat; down?: Mat;
}

export interface EngineWeights {
  cfg: ModelConfig;
  dtype: EngineDtype;
  embed: Float32Array; // (V, C)
  normF: Float32Array;
  normFBias?: Float32Array;
  head: Mat; // (V, C)
  headBias?: Float32Array;
  layers: EngineLayer[];
  /** Bytes of every array the engine holds. */
  bytes: number;
  /** Set when these are one tensor-parallel rank's slice (cfg then holds the rank's heads and sizes; infer/tp.ts). */
  tp?: TpShard;
}

export class EngineWeightsError extends Error {
  override name = "EngineWeightsError";
}

/** Encodes one f32 matrix (rows, cols) in `dtype`. */
export function encodeMat(w: Float32Array, rows: number, cols: number, dtype: EngineDtype): Mat {
  if (dtype === "f32") return { format: "f32", rows, cols, w };
  if ((BLOCK_FORMATS as readonly string[]).includes(dtype)) {
    const f = dtype as BlockFormat;
    const bs = BLOCK_LAYOUT[f].blockSize;
    if (cols % bs !== 0) throw new EngineWeightsError(`${dtype}: a row of ${cols} values is not a multiple of the block size ${bs}`);
    return { format: f, rows, cols, blocks: quantizeBlock(w, f) };
  }
  const scales = new Float32Array(rows);
  if (dtype === "int8") {
    const codes = new Int8Array(rows * cols);
    for (let r = 0; r < rows; r++) {
      let m = 0;
      for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w[r * cols + c]!));
      const s = m > 0 ? m / 127 : 1;
      scales[r] = s;
      for (let c = 0; c < cols; c++) codes[r * cols + c] = Math.round(w[r * cols + c]! / s);
    }
    return { format: "int8", rows, cols, codes, scales };
  }
  const fmt = dtype as NarrowFloat;
  const codes = fmt === "bf16" || fmt === "f16" ? new Uint16Array(rows * cols) : new Uint8Array(rows * cols);
  const max = fmt === "fp8_e4m3" ? 448 : fmt === "fp8_e5m2" ? 57344 : 0;
  for (let r = 0; r < rows; r++) {
    const row = w.subarray(r * cols, (r + 1) * cols);
    let s = 1;
    if (max > 0) {
      let m = 0;
      for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(row[c]!));
      s = m > 0 ? m / max : 1;
    }
    scales[r] = s;
    encodeArray(fmt, codes.subarray(r * cols, (r + 1) * cols), row, s);
  }
  return { format: dtype as QuantDtype, rows, cols, codes, scales };
}

/** y (M, rows) = x (M, cols) · Wᵀ. */
export function matmul(be: Backend, y: FArr, x: FArr, m: Mat, M: number): void {
  switch (m.format) {
    case "f32":
      be.gemm(x, m.w, y, { M, N: m.rows, K: m.cols, transB: true });
      return;
    case "q8_0":
    case "q4_0":
    case "q4_k":
    case "q6_k":
      be.gemmQuantBlock(x as Float32Array, m.blocks, y as Float32Array, { M, N: m.rows, K: m.cols, format: m.format });
      return;
    default:
      be.gemmQuant(x as Float32Array, m.codes, m.scales, y as Float32Array, { M, N: m.rows, K: m.cols, dtype: m.format });
  }
}

export function matBytes(m: Mat): number {
  return m.format === "f32" ? m.w.byteLength : "blocks" in m ? m.blocks.byteLength : m.codes.byteLength + m.scales.byteLength;
}

/**
 * The engine's view of a model. f32: views of `weights` (no copy). Otherwise each matrix is
 * encoded and the small tensors copied, so `weights` may be released afterwards.
 */
export function engineWeights(weights: Weights, opts: { dtype?: EngineDtype } = {}): EngineWeights {
  const dtype = opts.dtype ?? "f32";
  if (!ENGINE_DTYPES.includes(dtype)) throw new EngineWeightsError(`dtype must be one of ${ENGINE_DTYPES.join(", ")}, got ${JSON.stringify(dtype)}`);
  if (!(weights.data instanceof Float32Array)) throw new EngineWeightsError("the engine needs f32 weights");
  const cfg = weights.cfg, C = cfg.hiddenSize, NH = cfg.numHeads, KVH = cfg.numKvHeads, HS = cfg.headDim;
  const quant = dtype !== "f32";
  let bytes = 0;
  const small = (a: FArr | undefined): Float32Array | undefined => {
    if (!a) return undefined;
    const out = quant ? Float32Array.from(a) : (a as Float32Array);
    bytes += out.byteLength;
    return out;
  };
  const mat = (a: FArr, rows: number, cols: number): Mat => {
    const m = encodeMat(a as Float32Array, rows, cols, dtype);
    bytes += matBytes(m);
    return m;
  };
  const V = weights.views;
  const E = cfg.moe.numExperts, F = cfg.moe.expertIntermediateSize, S = cfg.moe.sharedExpertIntermediateSize, I = cfg.denseIntermediateSize;
  const layers: EngineLayer[] = V.layers.map((lv) => {
    const a = lv.attn;
    const layer: EngineLayer = {
      ln1: small(lv.ln1)!, ln1Bias: small(lv.ln1Bias), ln2: small(lv.ln2)!, ln2Bias: small(lv.ln2Bias),
      q: mat(a.q, NH * HS, C), k: mat(a.k, KVH * HS, C), v: mat(a.v, KVH * HS, C), o: mat(a.o, C, NH * HS),
      qBias: small(a.qBias), kBias: small(a.kBias), vBias: small(a.vBias), oBias: small(a.oBias), qNorm: small(a.qNorm), kNorm: small(a.kNorm),
    };
    if (lv.moe) {
      const m = lv.moe;
      layer.moe = {
        router: small(m.router)!, routerBias: small(m.routerBias),
        w13: Array.from({ length: E }, (_, e) => mat(m.w13.subarray(e * 2 * F * C, (e + 1) * 2 * F * C), 2 * F, C)),
        w2: Array.from({ length: E }, (_, e) => mat(m.w2.subarray(e * C * F, (e + 1) * C * F), C, F)),
        ...(quant ? {} : { w13All: m.w13 as Float32Array, w2All: m.w2 as Float32Array }),
        ...(m.sharedGateUp ? { sharedGateUp: mat(m.sharedGateUp, 2 * S, C), sharedDown: mat(m.sharedDown!, C, S), sharedGate: small(m.sharedGate) } : {}),
      };
    } else {
      layer.gateUp = mat(lv.gateUp!, 2 * I, C);
      layer.down = mat(lv.down!, C, I);
    }
    return layer;
  });
  return {
    cfg, dtype, embed: small(V.embed)!, normF: small(V.normF)!, normFBias: small(V.normFBias),
    head: mat(V.head, cfg.vocabSize, C), headBias: small(V.headBias), layers,
    bytes: cfg.tieEmbeddings && !quant ? bytes - V.embed.byteLength : bytes,
  };
}
