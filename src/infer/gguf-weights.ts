// The inference engine's weights read straight from a GGUF file, keeping the file's blocks.
//
// Every matrix (q/k/v/o, experts, shared expert, LM head) whose GGUF type the engine runs —
// Q8_0, Q4_0, Q4_K, Q6_K as block Mats, F16 / BF16 as 16-bit codes (scale 1), F32 — becomes a
// Mat over the file's bytes (one read, no f32 round trip) when it matches the requested dtype;
// "auto" (the default for a .gguf) matches whatever each tensor's type is, so mixed files
// (Q4_K_M's Q4_K + Q6_K + Q8_0) stay mixed. A tensor in another type (Q4_1, Q5_0, Q5_1, Q5_K),
// or any tensor when an explicit dtype differs, is dequantised one storage tensor at a time
// (ggml's dequantize_row_*) and encoded in the dtype ("auto": q8_0 for those types). Expert
// slices and `llama` q/k rows (RoPE-permuted in the file) are rearranged as whole rows of bytes.
// Norms, biases, routers and the token embedding are f32 (the engine's embedding lookup reads
// f32 rows, so token_embd is dequantised: V·C·4 bytes).
//
// NaN/Inf are refused at load, naming the tensor, as the f32 import does (block types: by their
// f16 scales, since integer codes times finite scales are finite).
// Not: the GGUF parser (io/gguf.ts), the tensor map (model/gguf-families.ts), or the f32 path
// (`--dtype f32` builds the f32 arena and uses engineWeights for its fused expert GEMM).
import type { GgufEntry, GgufModelSpec } from "../model/gguf-families.js";
import { BLOCK_LAYOUT, type BlockFormat } from "../core/quant-blocks.js";
import { checkFiniteTensor, firstNonFinite } from "../model/finite.js";
import { ENGINE_DTYPES, EngineWeightsError, encodeMat, matBytes, type EngineDtype, type EngineLayer, type EngineWeights, type Mat } from "./engine-weights.js";

/** `--dtype` for a GGUF: "auto" keeps each tensor's own type where the engine runs it. */
export type GgufEngineDtype = EngineDtype | "auto";

/** The engine format a GGUF tensor type is used as directly, if any. */
const DIRECT: Readonly<Record<string, EngineDtype | undefined>> = { F32: "f32", F16: "f16", BF16: "bf16", Q8_0: "q8_0", Q4_0: "q4_0", Q4_K: "q4_k", Q6_K: "q6_k" };

/** Bytes of one row of `cols` values stored as engine format f. */
function rowBytes(f: EngineDtype, cols: number): number {
  if (f === "f32") return cols * 4;
  if (f === "f16" || f === "bf16") return cols * 2;
  const l = BLOCK_LAYOUT[f as BlockFormat];
  return (cols / l.blockSize) * l.blockBytes;
}

/** Rows of `src` (rowLen units each) in GGUF order → HF order (inverse of permuteRopeRows), per head of HS rows. */
function unpermuteRows(src: Uint8Array, heads: number, HS: number, rowLen: number): Uint8Array {
  const out = new Uint8Array(src.length);
  const half = HS / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const g = h * HS + 2 * i + j, f = h * HS + j * half + i;
        out.set(src.subarray(g * rowLen, (g + 1) * rowLen), f * rowLen);
      }
    }
  }
  return out;
}

/** f16 scale offsets per block of the block types (a non-finite value needs a non-finite scale). */
const SCALES: Readonly<Record<string, { bytes: number; at: number[] } | undefined>> = {
  Q8_0: { bytes: 34, at: [0] }, Q4_0: { bytes: 18, at: [0] }, Q4_K: { bytes: 144, at: [0, 2] }, Q6_K: { bytes: 210, at: [208] },
};

/** Refuses a tensor holding NaN/Inf (as the f32 import does, naming it and the first bad index). */
function checkFiniteRaw(g: GgufModelSpec["g"], name: string, type: string, raw: Uint8Array): void {
  let bad = false;
  if (type === "F32") bad = firstNonFinite(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4)) >= 0;
  else if (type === "F16" || type === "BF16") {
    const c = new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength / 2), m = type === "F16" ? 0x7c00 : 0x7f80;
    for (let i = 0; i < c.length && !bad; i++) bad = (c[i]! & m) === m;
  } else {
    const sc = SCALES[type];
    for (let b = 0; sc && b < raw.length && !bad; b += sc.bytes) for (const o of sc.at) if ((raw[b + o + 1]! & 0x7c) === 0x7c) bad = true;
  }
  if (bad) checkFiniteTensor(g.file, name, g.read(name));
}

interface MatSource {
  /** Rows [r0, r0 + rows) as a Mat. */
  slice(r0: number, rows: number): Mat;
  /** The whole storage tensor when it is f32 (for the engine's fused expert GEMM). */
  f32All?: Float32Array;
}

/** Counts of the formats the engine holds, e.g. { q4_k: 10, q6_k: 3 }. */
export type FormatCounts = Partial<Record<EngineDtype, number>>;

/**
 * The engine's weights of a GGUF model (`spec` from openGgufModel). dtype "auto" (default)
 * keeps every matrix in its file type when the engine has a kernel for it.
 */
export function ggufEngineWeights(spec: GgufModelSpec, opts: { dtype?: GgufEngineDtype } = {}): EngineWeights & { formats: FormatCounts } {
  const dtype = opts.dtype ?? "auto";
  if (dtype !== "auto" && !ENGINE_DTYPES.includes(dtype)) throw new EngineWeightsError(`dtype must be auto or one of ${ENGINE_DTYPES.join(", ")}, got ${JSON.stringify(dtype)}`);
  const { g, cfg, layout, names } = spec;
  const byStorage = new Map<string, GgufEntry[]>();
  for (const e of spec.entries) byStorage.set(e.storage, [...(byStorage.get(e.storage) ?? []), e]);
  const HS = cfg.headDim;
  let bytes = 0;
  const formats: FormatCounts = {};

  /** One storage tensor in f32 (dequantised, un-permuted, parts scattered); zeros when the file has none. */
  const f32Storage = (storage: string): Float32Array => {
    const t = layout.byName.get(storage);
    if (!t) throw new EngineWeightsError(`internal: no storage tensor ${storage}`);
    const out = new Float32Array(t.size);
    for (const e of byStorage.get(storage) ?? []) {
      let data = checkFiniteTensor(g.file, e.gguf, g.read(e.gguf));
      const cols = e.shape[e.shape.length - 1]!;
      if (e.ropeHeads) data = new Float32Array(unpermuteRows(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), e.ropeHeads, HS, cols * 4).buffer);
      const p = e.parts ?? { at: 0, len: t.size, stride: 0, count: 1 };
      for (let i = 0; i < p.count; i++) out.set(data.subarray(i * p.len, (i + 1) * p.len), p.at + i * p.stride);
    }
    return out;
  };
  const small = (storage: string | undefined): Float32Array | undefined => {
    if (!storage) return undefined;
    const a = f32Storage(storage);
    bytes += a.byteLength;
    return a;
  };
  const source = (storage: string, cols: number): MatSource => {
    const entries = byStorage.get(storage);
    if (!entries?.length) throw new EngineWeightsError(`${g.file}: no GGUF tensor holds ${storage}`);
    const types = new Set(entries.map((e) => g.info(e.gguf).type));
    const fileFmt = types.size === 1 ? DIRECT[[...types][0]!] : undefined;
    const target: EngineDtype = dtype === "auto" ? (fileFmt ?? "q8_0") : dtype;
    if (fileFmt !== undefined && fileFmt === target) {
      const size = layout.byName.get(storage)!.size, rows = size / cols, rb = rowBytes(target, cols);
      const buf = new Uint8Array(rows * rb);
      for (const e of entries) {
        let raw = g.readRaw(e.gguf);
        checkFiniteRaw(g, e.gguf, g.info(e.gguf).type, raw);
        if (e.ropeHeads) raw = unpermuteRows(raw, e.ropeHeads, HS, rb);
        const p = e.parts ?? { at: 0, len: size, stride: 0, count: 1 };
        for (let i = 0; i < p.count; i++) buf.set(raw.subarray((i * p.len / cols) * rb, ((i + 1) * p.len / cols) * rb), ((p.at + i * p.stride) / cols) * rb);
      }
      const slice = (r0: number, n: number): Mat => {
        const at = r0 * rb;
        if (target === "f32") return { format: "f32", rows: n, cols, w: new Float32Array(buf.buffer, at, n * cols) };
        if (target === "f16" || target === "bf16") return { format: target, rows: n, cols, codes: new Uint16Array(buf.buffer, at, n * cols), scales: new Float32Array(n).fill(1) };
        return { format: target as BlockFormat, rows: n, cols, blocks: buf.subarray(at, at + n * rb) };
      };
      return { slice, ...(target === "f32" ? { f32All: new Float32Array(buf.buffer) } : {}) };
    }
    const data = f32Storage(storage);
    return { slice: (r0, n) => encodeMat(data.subarray(r0 * cols, (r0 + n) * cols), n, cols, target), ...(target === "f32" ? { f32All: data } : {}) };
  };
  const count = (m: Mat): Mat => {
    bytes += matBytes(m);
    formats[m.format] = (formats[m.format] ?? 0) + 1;
    return m;
  };
  const whole = (storage: string, rows: number, cols: number): Mat => count(source(storage, cols).slice(0, rows));

  const C = cfg.hiddenSize, NH = cfg.numHeads, KVH = cfg.numKvHeads, V = cfg.vocabSize;
  const E = cfg.moe.numExperts, F = cfg.moe.expertIntermediateSize, S = cfg.moe.sharedExpertIntermediateSize, I = cfg.denseIntermediateSize;
  const layers: EngineLayer[] = names.layers.map((n) => {
    const layer: EngineLayer = {
      ln1: small(n.ln1)!, ln1Bias: small(n.ln1Bias), ln2: small(n.ln2)!, ln2Bias: small(n.ln2Bias),
      q: whole(n.q, NH * HS, C), k: whole(n.k, KVH * HS, C), v: whole(n.v, KVH * HS, C), o: whole(n.o, C, NH * HS),
      qBias: small(n.qBias), kBias: small(n.kBias), vBias: small(n.vBias), oBias: small(n.oBias), qNorm: small(n.qNorm), kNorm: small(n.kNorm),
    };
    if (n.router) {
      const w13 = source(n.w13!, C), w2 = source(n.w2!, F);
      layer.moe = {
        router: small(n.router)!, routerBias: small(n.routerBias),
        w13: Array.from({ length: E }, (_, e) => count(w13.slice(e * 2 * F, 2 * F))),
        w2: Array.from({ length: E }, (_, e) => count(w2.slice(e * C, C))),
        ...(w13.f32All && w2.f32All ? { w13All: w13.f32All, w2All: w2.f32All } : {}),
        ...(n.sharedGateUp ? { sharedGateUp: whole(n.sharedGateUp, 2 * S, C), sharedDown: whole(n.sharedDown!, C, S), sharedGate: small(n.sharedGate) } : {}),
      };
    } else {
      layer.gateUp = whole(n.gateUp!, 2 * I, C);
      layer.down = whole(n.down!, C, I);
    }
    return layer;
  });
  const embed = small(names.embed)!;
  let head: Mat;
  if (names.lmHead) head = whole(names.lmHead, V, C);
  else {
    // tied: the file's token_embd blocks as the head, or the f32 embedding itself
    const m = source(names.embed, C).slice(0, V);
    head = m.format === "f32" ? { format: "f32", rows: V, cols: C, w: embed } : count(m);
  }
  const main = Object.entries(formats).sort((a, b) => b[1]! - a[1]!)[0]?.[0] as EngineDtype | undefined;
  return {
    cfg, dtype: dtype === "auto" ? (main ?? "f32") : dtype, embed, normF: small(names.normF)!, normFBias: small(names.normFBias),
    head, headBias: small(names.lmHeadBias), layers, bytes, formats,
  };
}
