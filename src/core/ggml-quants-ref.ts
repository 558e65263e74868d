// llama.cpp's reference quantisers for the k-quants (quantize_row_q4_K_ref, quantize_row_q6_K_ref
// with their helpers make_qkx2_quants and make_qx_quants, ggml-quants.c) reproduced bit for bit,
// and the dequantisers of the GGUF tensor types the inference engine has no kernel for (Q4_1,
// Q5_0, Q5_1, Q5_K: they appear in llama.cpp's Q4_K_M files as fallbacks) and of BF16.
//
// Every f32 operation of the C code is rounded to f32 here in the same order (Math.fround);
// ggml-base is compiled without FMA contraction, so no fused multiply-adds are modelled.
// test/gguf-quant.test.ts checks the bytes and values against ggml's own functions (the
// libggml-base that node-llama-cpp ships) when a C compiler is present.
//
// Byte layouts (ggml-common.h; f16 scales little-endian):
// - q4_1, 32 values, 20 bytes: f16 d, f16 m, u8 qs[16]; value = q·d + m (low nibbles first).
// - q5_0, 32 values, 22 bytes: f16 d, u32 qh, u8 qs[16]; 5th bit of element j in qh bit j;
//   value = (q − 16)·d.
// - q5_1, 32 values, 24 bytes: f16 d, f16 m, u32 qh, u8 qs[16]; value = q·d + m.
// - q5_k, 256 values, 176 bytes: f16 d, f16 dmin, u8 scales[12] (as q4_k), u8 qh[32], u8 qs[128];
//   value = (d·sc)·q − dmin·m, q = 4 low bits | a high bit from qh.
// - bf16: the upper 16 bits of an f32.
//
// Not: the engine's formats' dequantisation (core/quant-blocks.ts), importance-matrix
// quantisation (quantize_row_*_impl with quant_weights), or any other ggml type.
import { decodeF16, encodeArray } from "./dtype.js";

const f32 = Math.fround;
const F01 = Math.fround(0.1);
const GROUP_MAX_EPS = Math.fround(1e-15);

/** Extra GGUF block types this module decodes. */
export type ExtraBlockType = "q4_1" | "q5_0" | "q5_1" | "q5_k";
export const EXTRA_BLOCK_LAYOUT: { readonly [T in ExtraBlockType]: { blockSize: number; blockBytes: number; ggmlType: number } } = {
  q4_1: { blockSize: 32, blockBytes: 20, ggmlType: 3 },
  q5_0: { blockSize: 32, blockBytes: 22, ggmlType: 6 },
  q5_1: { blockSize: 32, blockBytes: 24, ggmlType: 7 },
  q5_k: { blockSize: 256, blockBytes: 176, ggmlType: 13 },
};

function f16At(w: Uint8Array, o: number): number {
  return decodeF16(w[o]! | (w[o + 1]! << 8));
}

/** f32 → f16 code, round to nearest even (GGML_FP32_TO_FP16). */
function f16Code(x: number): number {
  const c = new Uint16Array(1);
  encodeArray("f16", c, Float32Array.of(x));
  return c[0]!;
}

function putF16(out: Uint8Array, o: number, x: number): void {
  const c = f16Code(x);
  out[o] = c & 255;
  out[o + 1] = c >> 8;
}

/** ggml nearest_int for an f32 value: round half to even. */
export function nearestInt(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** ggml get_scale_min_k4 over the 12 scale bytes at s. */
function scaleMinK4(w: Uint8Array, s: number, j: number): [number, number] {
  if (j < 4) return [w[s + j]! & 63, w[s + j + 4]! & 63];
  return [(w[s + j + 4]! & 15) | ((w[s + j - 4]! >> 6) << 4), (w[s + j + 4]! >> 4) | ((w[s + j]! >> 6) << 4)];
}

// ---------------------------------------------------------------------------
// make_qkx2_quants / make_qx_quants

/** make_qkx2_quants (use_mad false): codes into L[lo..lo+n), returns [scale, the_min]. */
function makeQkx2Quants(n: number, nmax: number, x: Float32Array, xo: number, weights: Float32Array, L: Uint8Array, lo: number, Laux: Uint8Array, rmin: number, rdelta: number, nstep: number): [number, number] {
  let min = x[xo]!, max = x[xo]!;
  let sumW = weights[0]!;
  let sumX = f32(sumW * x[xo]!);
  for (let i = 1; i < n; i++) {
    const v = x[xo + i]!;
    if (v < min) min = v;
    if (v > max) max = v;
    const w = weights[i]!;
    sumW = f32(sumW + w);
    sumX = f32(sumX + f32(w * v));
  }
  if (min > 0) min = 0;
  if (max === min) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return [0, -min];
  }
  let iscale = f32(nmax / f32(max - min));
  let scale = f32(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    const l = nearestInt(f32(iscale * f32(x[xo + i]! - min)));
    const q = Math.max(0, Math.min(nmax, l));
    L[lo + i] = q;
    let diff = f32(f32(f32(scale * q) + min) - x[xo + i]!);
    diff = f32(diff * diff);
    bestError = f32(bestError + f32(weights[i]! * diff));
  }
  if (nstep < 1) return [scale, -min];
  for (let is = 0; is <= nstep; is++) {
    // `min` moves when a step improves the error, so the range is recomputed as in C
    iscale = f32(f32(f32(rmin + f32(rdelta * is)) + nmax) / f32(max - min));
    let sumL = 0, sumL2 = 0, sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(f32(iscale * f32(x[xo + i]! - min)))));
      Laux[i] = l;
      const w = weights[i]!;
      const wl = f32(w * l);
      sumL = f32(sumL + wl);
      sumL2 = f32(sumL2 + f32(wl * l));
      sumXL = f32(sumXL + f32(wl * x[xo + i]!));
    }
    const D = f32(f32(sumW * sumL2) - f32(sumL * sumL));
    if (D > 0) {
      let thisScale = f32(f32(f32(sumW * sumXL) - f32(sumX * sumL)) / D);
      let thisMin = f32(f32(f32(sumL2 * sumX) - f32(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = f32(sumXL / sumL2);
      }
      let curError = 0;
      for (let i = 0; i < n; i++) {
        let diff = f32(f32(f32(thisScale * Laux[i]!) + thisMin) - x[xo + i]!);
        diff = f32(diff * diff);
        curError = f32(curError + f32(weights[i]! * diff));
      }
      if (curError < bestError) {
        for (let i = 0; i < n; i++) L[lo + i] = Laux[i]!;
        bestError = curError;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/** make_qx_quants with rmse_type 1 and no weights (x² weighting), codes L[i] + nmax into L. */
function makeQxQuants1(n: number, nmax: number, x: Float32Array, xo: number, L: Int8Array, lo: number): number {
  let max = 0, amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[xo + i]!);
    if (ax > amax) {
      amax = ax;
      max = x[xo + i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    for (let i = 0; i < n; i++) L[lo + i] = 0;
    return 0;
  }
  let iscale = f32(-nmax / max);
  let sumlx = 0, suml2 = 0;
  for (let i = 0; i < n; i++) {
    const v = x[xo + i]!;
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f32(iscale * v))));
    L[lo + i] = l + nmax;
    const w = f32(v * v);
    sumlx = f32(sumlx + f32(f32(w * v) * l));
    suml2 = f32(suml2 + f32(f32(w * l) * l));
  }
  let scale = suml2 ? f32(sumlx / suml2) : 0;
  let best = f32(scale * sumlx);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = f32(-f32(nmax + f32(F01 * is)) / max);
    sumlx = suml2 = 0;
    for (let i = 0; i < n; i++) {
      const v = x[xo + i]!;
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(f32(iscale * v))));
      const w = f32(v * v);
      sumlx = f32(sumlx + f32(f32(w * v) * l));
      suml2 = f32(suml2 + f32(f32(w * l) * l));
    }
    if (suml2 > 0 && f32(sumlx * sumlx) > f32(best * suml2)) {
      for (let i = 0; i < n; i++) L[lo + i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(f32(iscale * x[xo + i]!))));
      scale = f32(sumlx / suml2);
      best = f32(scale * sumlx);
    }
  }
  return scale;
}

// ---------------------------------------------------------------------------
// quantize_row_q4_K_ref / quantize_row_q6_K_ref

/** One q4_K block (256 values at x[xo]) into out[o..o+144): quantize_row_q4_K_ref. */
export function quantizeQ4KBlockRef(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Uint8Array(256), Laux = new Uint8Array(32), weights = new Float32Array(32);
  const mins = new Float32Array(8), scales = new Float32Array(8);
  let maxScale = 0, maxMin = 0;
  for (let j = 0; j < 8; j++) {
    let sumX2 = 0;
    for (let l = 0; l < 32; l++) {
      const v = x[xo + 32 * j + l]!;
      sumX2 = f32(sumX2 + f32(v * v));
    }
    const avX = f32(Math.sqrt(f32(sumX2 / 32)));
    for (let l = 0; l < 32; l++) weights[l] = f32(avX + Math.abs(x[xo + 32 * j + l]!));
    const [sc, mn] = makeQkx2Quants(32, 15, x, xo + 32 * j, weights, L, 32 * j, Laux, -1, F01, 20);
    scales[j] = sc;
    mins[j] = mn;
    if (scales[j]! > maxScale) maxScale = scales[j]!;
    if (mins[j]! > maxMin) maxMin = mins[j]!;
  }
  const invScale = maxScale > 0 ? f32(63 / maxScale) : 0;
  const invMin = maxMin > 0 ? f32(63 / maxMin) : 0;
  out.fill(0, o, o + 144);
  const s = o + 4;
  for (let j = 0; j < 8; j++) {
    const ls = Math.min(63, nearestInt(f32(invScale * scales[j]!)) & 255);
    const lm = Math.min(63, nearestInt(f32(invMin * mins[j]!)) & 255);
    if (j < 4) {
      out[s + j] = ls;
      out[s + j + 4] = lm;
    } else {
      out[s + j + 4] = (ls & 15) | ((lm & 15) << 4);
      out[s + j - 4]! |= (ls >> 4) << 6;
      out[s + j]! |= (lm >> 4) << 6;
    }
  }
  putF16(out, o, f32(maxScale / 63));
  putF16(out, o + 2, f32(maxMin / 63));
  const d = f16At(out, o), dmin = f16At(out, o + 2);
  for (let j = 0; j < 8; j++) {
    const [sc, m] = scaleMinK4(out, s, j);
    const dj = f32(d * sc);
    if (!dj) continue;
    const dm = f32(dmin * m);
    for (let ii = 0; ii < 32; ii++) L[32 * j + ii] = Math.max(0, Math.min(15, nearestInt(f32(f32(x[xo + 32 * j + ii]! + dm) / dj))));
  }
  for (let g = 0; g < 4; g++) {
    for (let l = 0; l < 32; l++) out[o + 16 + 32 * g + l] = L[64 * g + l]! | (L[64 * g + 32 + l]! << 4);
  }
}

/** One q6_K block (256 values at x[xo]) into out[o..o+210): quantize_row_q6_K_ref. */
export function quantizeQ6KBlockRef(x: Float32Array, xo: number, out: Uint8Array, o: number): void {
  const L = new Int8Array(256), scales = new Float32Array(16);
  let maxScale = 0, maxAbsScale = 0;
  for (let ib = 0; ib < 16; ib++) {
    const scale = makeQxQuants1(16, 32, x, xo + 16 * ib, L, 16 * ib);
    scales[ib] = scale;
    const a = Math.abs(scale);
    if (a > maxAbsScale) {
      maxAbsScale = a;
      maxScale = scale;
    }
  }
  out.fill(0, o, o + 210);
  if (maxAbsScale < GROUP_MAX_EPS) return; // d = f16(0) = 0x0000
  const iscale = f32(-128 / maxScale);
  putF16(out, o + 208, f32(1 / iscale));
  for (let ib = 0; ib < 16; ib++) out[o + 192 + ib] = Math.min(127, nearestInt(f32(iscale * scales[ib]!))) & 255;
  const d = f16At(out, o + 208);
  for (let j = 0; j < 16; j++) {
    const dj = f32(d * ((out[o + 192 + j]! << 24) >> 24));
    if (!dj) continue;
    for (let ii = 0; ii < 16; ii++) L[16 * j + ii] = Math.max(-32, Math.min(31, nearestInt(f32(x[xo + 16 * j + ii]! / dj)))) + 32;
  }
  for (let h = 0; h < 2; h++) {
    const ql = o + 64 * h, qh = o + 128 + 32 * h, b = 128 * h;
    for (let l = 0; l < 32; l++) {
      const a = L[b + l]!, c2 = L[b + l + 32]!, c3 = L[b + l + 64]!, c4 = L[b + l + 96]!;
      out[ql + l] = (a & 15) | ((c3 & 15) << 4);
      out[ql + l + 32] = (c2 & 15) | ((c4 & 15) << 4);
      out[qh + l] = (a >> 4) | ((c2 >> 4) << 2) | ((c3 >> 4) << 4) | ((c4 >> 4) << 6);
    }
  }
}

// ---------------------------------------------------------------------------
// Dequantisation of the extra types and BF16

/** ggml dequantize_row_* of the extra block types, bit for bit. */
export function dequantizeExtra(type: ExtraBlockType, w: Uint8Array, n: number): Float32Array {
  const { blockSize, blockBytes } = EXTRA_BLOCK_LAYOUT[type];
  if (n % blockSize !== 0 || w.length !== (n / blockSize) * blockBytes) throw new Error(`${type}: ${w.length} bytes for ${n} values`);
  const out = new Float32Array(n);
  for (let b = 0; b < n / blockSize; b++) {
    const o = b * blockBytes, y = b * blockSize;
    switch (type) {
      case "q4_1": {
        const d = f16At(w, o), m = f16At(w, o + 2);
        for (let j = 0; j < 16; j++) {
          out[y + j] = f32(f32((w[o + 4 + j]! & 15) * d) + m);
          out[y + j + 16] = f32(f32((w[o + 4 + j]! >> 4) * d) + m);
        }
        break;
      }
      case "q5_0":
      case "q5_1": {
        const one = type === "q5_1";
        const d = f16At(w, o), m = one ? f16At(w, o + 2) : 0;
        const hOff = one ? o + 4 : o + 2, qs = hOff + 4;
        const qh = (w[hOff]! | (w[hOff + 1]! << 8) | (w[hOff + 2]! << 16) | (w[hOff + 3]! << 24)) >>> 0;
        for (let j = 0; j < 16; j++) {
          const xh0 = ((qh >>> j) << 4) & 0x10, xh1 = (qh >>> (j + 12)) & 0x10;
          const x0 = (w[qs + j]! & 15) | xh0, x1 = (w[qs + j]! >> 4) | xh1;
          if (one) {
            out[y + j] = f32(f32(x0 * d) + m);
            out[y + j + 16] = f32(f32(x1 * d) + m);
          } else {
            out[y + j] = f32((x0 - 16) * d);
            out[y + j + 16] = f32((x1 - 16) * d);
          }
        }
        break;
      }
      case "q5_k": {
        const d = f16At(w, o), dmin = f16At(w, o + 2);
        const sc0 = o + 4, qh = o + 16, ql0 = o + 48;
        let u1 = 1, u2 = 2, yy = y;
        for (let g = 0; g < 4; g++) {
          const [s1, m1i] = scaleMinK4(w, sc0, 2 * g), [s2, m2i] = scaleMinK4(w, sc0, 2 * g + 1);
          const d1 = f32(d * s1), m1 = f32(dmin * m1i), d2 = f32(d * s2), m2 = f32(dmin * m2i);
          const ql = ql0 + 32 * g;
          for (let l = 0; l < 32; l++) out[yy++] = f32(f32(d1 * ((w[ql + l]! & 15) + (w[qh + l]! & u1 ? 16 : 0))) - m1);
          for (let l = 0; l < 32; l++) out[yy++] = f32(f32(d2 * ((w[ql + l]! >> 4) + (w[qh + l]! & u2 ? 16 : 0))) - m2);
          u1 <<= 2;
          u2 <<= 2;
        }
        break;
      }
      default:
        ((t: never) => t)(type);
    }
  }
  return out;
}

/** BF16 codes (u16) → f32 (exact). */
export function decodeBf16(codes: Uint16Array): Float32Array {
  const out = new Uint32Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = codes[i]! << 16;
  return new Float32Array(out.buffer);
}

/** f32 → BF16 codes as ggml_compute_fp32_to_bf16: NaN → quiet NaN, else round to nearest even. */
export function encodeBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const v = u[i]!;
    if ((v & 0x7fffffff) > 0x7f800000) out[i] = (v >>> 16) | 64;
    else out[i] = ((v + (0x7fff + ((v >>> 16) & 1))) >>> 16) & 0xffff;
  }
  return out;
}
