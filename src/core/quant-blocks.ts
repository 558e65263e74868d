// GGUF block-quantised weight formats Q8_0, Q4_0, Q4_K and Q6_K in plain TypeScript:
// byte layouts, dequantisation and quantisation. The `ref` backend's gemmQuantBlock and
// dequantizeBlock use it, native/quant-blocks.cc is tested against it, and GGUF export /
// import can reuse it.
//
// Byte layouts (ggml-common.h, little-endian; "f16" is an IEEE binary16 scale):
// - q8_0, 32 values, 34 bytes: f16 d, int8 q[32]; value = q·d.
// - q4_0, 32 values, 18 bytes: f16 d, u8 qs[16]; element j < 16 is the low nibble of
//   qs[j], element j + 16 its high nibble; value = (q − 8)·d.
// - q4_k, 256 values, 144 bytes: f16 d, f16 dmin, u8 scales[12], u8 qs[128]. Eight
//   sub-blocks of 32 with 6-bit scale sc_j and min m_j packed in `scales`
//   (ggml get_scale_min_k4: j < 4: sc = s[j] & 63, m = s[j+4] & 63; else
//   sc = (s[j+4] & 15) | (s[j−4] >> 6) << 4, m = (s[j+4] >> 4) | (s[j] >> 6) << 4).
//   qs holds four 64-value groups of 32 bytes: low nibbles are sub-block 2g, high
//   nibbles sub-block 2g+1; value = (d·sc_j)·q − dmin·m_j.
// - q6_k, 256 values, 210 bytes: u8 ql[128], u8 qh[64], int8 scales[16], f16 d. Two
//   halves of 128 values (ql 64 bytes, qh 32 bytes each); in a half, for l < 32:
//   q(l)    = (ql[l] & 15)    | ((qh[l] >> 0) & 3) << 4,
//   q(l+32) = (ql[l+32] & 15) | ((qh[l] >> 2) & 3) << 4,
//   q(l+64) = (ql[l] >> 4)    | ((qh[l] >> 4) & 3) << 4,
//   q(l+96) = (ql[l+32] >> 4) | ((qh[l] >> 6) & 3) << 4;
//   value = (d·scales[i/16])·(q − 32) for element i.
//
// Dequantisation reproduces ggml's dequantize_row_* bit for bit: every product and
// difference is rounded to f32 in the same order (Math.fround).
// Quantisation: llama.cpp's quantize_row_*_ref exactly, byte for byte (q4_k and q6_k with
// their scale searches live in core/ggml-quants-ref.ts).
// Not: importance-matrix quantisation, other ggml types, or a fast path (see native/).
import { decodeF16, encodeArray } from "./dtype.js";
import { quantizeQ4KBlockRef, quantizeQ6KBlockRef } from "./ggml-quants-ref.js";

export type BlockFormat = "q8_0" | "q4_0" | "q4_k" | "q6_k";

export const BLOCK_FORMATS: readonly BlockFormat[] = ["q8_0", "q4_0", "q4_k", "q6_k"];

export interface BlockLayout {
  /** Values per block. */
  readonly blockSize: number;
  /** Bytes per block. */
  readonly blockBytes: number;
  /** ggml_type id in GGUF files. */
  readonly ggmlType: number;
}

export const BLOCK_LAYOUT: { readonly [F in BlockFormat]: BlockLayout } = {
  q8_0: { blockSize: 32, blockBytes: 34, ggmlType: 8 },
  q4_0: { blockSize: 32, blockBytes: 18, ggmlType: 2 },
  q4_k: { blockSize: 256, blockBytes: 144, ggmlType: 12 },
  q6_k: { blockSize: 256, blockBytes: 210, ggmlType: 14 },
};

/** Bad arguments to the block codecs (unknown format, length not a whole number of blocks). */
export class QuantBlockError extends Error {
  override name = "QuantBlockError";
}

function layoutOf(format: BlockFormat, what: string): BlockLayout {
  const l = (BLOCK_LAYOUT as Record<string, BlockLayout | undefined>)[format];
  if (l === undefined) throw new QuantBlockError(`${what}: format must be one of ${BLOCK_FORMATS.join(", ")}, got ${String(format)}`);
  return l;
}

/** Bytes that n values take in `format` (n must be a multiple of the block size). */
export function blockBytes(format: BlockFormat, n: number): number {
  const l = layoutOf(format, "blockBytes");
  if (!Number.isInteger(n) || n < 0 || n % l.blockSize !== 0) {
    throw new QuantBlockError(`blockBytes: ${format} needs a non-negative multiple of ${l.blockSize} values, got ${n}`);
  }
  return (n / l.blockSize) * l.blockBytes;
}

const f32 = Math.fround;

function f16At(w: Uint8Array, o: number): number {
  return decodeF16(w[o]! | (w[o + 1]! << 8));
}

/** ggml get_scale_min_k4: the 6-bit scale and min of sub-block j (0..7) of a q4_k block at offset o. */
export function q4kScaleMin(w: Uint8Array, o: number, j: number): [number, number] {
  const s = o + 4;
  if (j < 4) return [w[s + j]! & 63, w[s + j + 4]! & 63];
  return [(w[s + j + 4]! & 15) | ((w[s + j - 4]! >> 6) << 4), (w[s + j + 4]! >> 4) | ((w[s + j]! >> 6) << 4)];
}

/**
 * out[0..n) = the values of the first n/blockSize blocks of w (ggml dequantize_row_*,
 * bit for bit). w must hold exactly that many blocks.
 */
export function dequantizeBlock(out: Float32Array, w: Uint8Array, format: BlockFormat, n: number): void {
  const bytes = blockBytes(format, n);
  if (w.length !== bytes) throw new QuantBlockError(`dequantizeBlock: ${format} w has ${w.length} bytes, expected ${bytes} for ${n} values`);
  if (out.length !== n) throw new QuantBlockError(`dequantizeBlock: out has ${out.length} elements, expected ${n}`);
  const { blockSize, blockBytes: bb } = BLOCK_LAYOUT[format];
  const nb = n / blockSize;
  for (let b = 0; b < nb; b++) {
    const o = b * bb, y = b * blockSize;
    switch (format) {
      case "q8_0": {
        const d = f16At(w, o);
        for (let j = 0; j < 32; j++) out[y + j] = ((w[o + 2 + j]! << 24) >> 24) * d;
        break;
      }
      case "q4_0": {
        const d = f16At(w, o);
        for (let j = 0; j < 16; j++) {
          const q = w[o + 2 + j]!;
          out[y + j] = ((q & 15) - 8) * d;
          out[y + j + 16] = ((q >> 4) - 8) * d;
        }
        break;
      }
      case "q4_k": {
        const d = f16At(w, o), dmin = f16At(w, o + 2);
        for (let g = 0; g < 4; g++) {
          const [sc1, m1i] = q4kScaleMin(w, o, 2 * g), [sc2, m2i] = q4kScaleMin(w, o, 2 * g + 1);
          const d1 = f32(d * sc1), m1 = f32(dmin * m1i), d2 = f32(d * sc2), m2 = f32(dmin * m2i);
          const q = o + 16 + 32 * g, yy = y + 64 * g;
          for (let l = 0; l < 32; l++) {
            out[yy + l] = f32(d1 * (w[q + l]! & 15)) - m1;
            out[yy + 32 + l] = f32(d2 * (w[q + l]! >> 4)) - m2;
          }
        }
        break;
      }
      case "q6_k": {
        const d = f16At(w, o + 208);
        for (let h = 0; h < 2; h++) {
          const ql = o + 64 * h, qh = o + 128 + 32 * h, sc = o + 192 + 8 * h, yy = y + 128 * h;
          for (let l = 0; l < 32; l++) {
            const is = l >> 4, hb = w[qh + l]!;
            const q1 = ((w[ql + l]! & 15) | ((hb & 3) << 4)) - 32;
            const q2 = ((w[ql + l + 32]! & 15) | (((hb >> 2) & 3) << 4)) - 32;
            const q3 = ((w[ql + l]! >> 4) | (((hb >> 4) & 3) << 4)) - 32;
            const q4 = ((w[ql + l + 32]! >> 4) | (((hb >> 6) & 3) << 4)) - 32;
            out[yy + l] = f32(d * ((w[sc + is]! << 24) >> 24)) * q1;
            out[yy + l + 32] = f32(d * ((w[sc + is + 2]! << 24) >> 24)) * q2;
            out[yy + l + 64] = f32(d * ((w[sc + is + 4]! << 24) >> 24)) * q3;
            out[yy + l + 96] = f32(d * ((w[sc + is + 6]! << 24) >> 24)) * q4;
          }
        }
        break;
      }
      default:
        format satisfies never;
    }
  }
}

// ---------------------------------------------------------------------------
// Quantisation

/** f32 → f16 code, round to nearest even (ggml GGML_FP32_TO_FP16). */
function f16Code(x: number): number {
  const c = new Uint16Array(1);
  encodeArray("f16", c, Float32Array.of(x));
  return c[0]!;
}

function putF16(out: Uint8Array, o: number, code: number): void {
  out[o] = code & 255;
  out[o + 1] = code >> 8;
}

/** C roundf: half away from zero. */
function roundf(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

function quantQ8_0(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  let amax = 0;
  for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[xo + j]!) || 0);
  const d = f32(amax / 127), id = d !== 0 ? f32(1 / d) : 0;
  putF16(out, o, f16Code(d));
  for (let j = 0; j < 32; j++) out[o + 2 + j] = roundf(f32(x[xo + j]! * id)) & 255;
}

function quantQ4_0(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  let amax = 0, max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[xo + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  const d = f32(max / -8), id = d !== 0 ? f32(1 / d) : 0;
  putF16(out, o, f16Code(d));
  for (let j = 0; j < 16; j++) {
    // (int8_t)(x·id + 8.5f) truncates toward zero; MIN(15, ·).
    const a = Math.min(15, Math.trunc(f32(f32(x[xo + j]! * id) + 8.5)));
    const b = Math.min(15, Math.trunc(f32(f32(x[xo + 16 + j]! * id) + 8.5)));
    out[o + 2 + j] = (a & 15) | ((b & 15) << 4);
  }
}

/**
 * Quantises x (length a multiple of the format's block size; every value finite) into
 * ggml blocks, equal to llama.cpp's quantize_row_*_ref byte for byte.
 */
export function quantizeBlock(x: Float32Array, format: BlockFormat): Uint8Array {
  const { blockSize, blockBytes: bb } = layoutOf(format, "quantizeBlock");
  if (!(x instanceof Float32Array)) throw new QuantBlockError("quantizeBlock: x must be a Float32Array");
  const out = new Uint8Array(blockBytes(format, x.length));
  for (let i = 0; i < x.length; i++) {
    if (!Number.isFinite(x[i]!)) throw new QuantBlockError(`quantizeBlock: x[${i}] is ${x[i]}; block formats hold finite values only`);
  }
  const nb = x.length / blockSize;
  for (let b = 0; b < nb; b++) {
    switch (format) {
      case "q8_0":
        quantQ8_0(x, b * 32, out, b * bb);
        break;
      case "q4_0":
        quantQ4_0(x, b * 32, out, b * bb);
        break;
      case "q4_k":
        quantizeQ4KBlockRef(x, b * 256, out, b * bb);
        break;
      case "q6_k":
        quantizeQ6KBlockRef(x, b * 256, out, b * bb);
        break;
      default:
        format satisfies never;
    }
  }
  return out;
}
