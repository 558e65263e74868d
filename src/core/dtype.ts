// Scalar encode/decode of the narrow float formats (bf16, IEEE f16, OCP FP8 E4M3 and
// E5M2) in plain TypeScript, plus array loops over them. This is the reference
// implementation the `ref` backend uses and the native C++ is tested against, and
// the codec the checkpoint readers/writers (safetensors, GGUF) reuse.
//
// It works arithmetically on numbers (exponent, quantum, round-half-to-even on the
// scaled significand), deliberately not by the f32 bit tricks the native code uses,
// so the two implementations check each other.
// Not: fast. Not: a tensor type. Codes are plain numbers (the bit pattern).
//
// Rules (the ConvertKernels contract in src/backend/spec.ts):
// - Encoding first rounds the input to f32 (kernels only ever see f32), then rounds
//   to nearest, ties to even, with subnormals in every format.
// - bf16 and f16 overflow to ±Inf (IEEE); ±Inf stays ±Inf.
// - E4M3 (no Inf; S.1111.111 is NaN) saturates: finite overflow and ±Inf → ±448.
// - E5M2 (IEEE-like, exponent 31 = Inf/NaN) saturates finite overflow to ±57344;
//   ±Inf stays ±Inf.
// - NaN encodes to the format's quiet NaN with the input's sign: bf16 0x7FC0,
//   f16 0x7E00, E4M3 0x7F, E5M2 0x7E (| sign bit).
// - Decoding is exact. In the f32 array loops a NaN code decodes to the quiet f32
//   NaN with the code's sign and the code's mantissa in the top mantissa bits
//   (what widening hardware does); bf16 decoding is the exact bit copy code << 16.

export type NarrowFloat = "bf16" | "f16" | "fp8_e4m3" | "fp8_e5m2";

interface Format {
  expBits: number;
  manBits: number;
  bias: number;
  /** "ieee": overflow → Inf. "fn": no Inf, all-ones code is NaN, saturate. "sat": IEEE codes, finite overflow saturates. */
  overflow: "ieee" | "fn" | "sat";
  /** Quiet NaN code without the sign. */
  nan: number;
}

const FORMATS: { readonly [K in NarrowFloat]: Readonly<Format> } = {
  bf16: { expBits: 8, manBits: 7, bias: 127, overflow: "ieee", nan: 0x7fc0 },
  f16: { expBits: 5, manBits: 10, bias: 15, overflow: "ieee", nan: 0x7e00 },
  fp8_e4m3: { expBits: 4, manBits: 3, bias: 7, overflow: "fn", nan: 0x7f },
  fp8_e5m2: { expBits: 5, manBits: 2, bias: 15, overflow: "sat", nan: 0x7e },
};

/** Largest finite value of a format. */
export function maxFinite(fmt: NarrowFloat): number {
  const f = FORMATS[fmt];
  const maxExpField = f.overflow === "ieee" || f.overflow === "sat" ? (1 << f.expBits) - 2 : (1 << f.expBits) - 1;
  const maxMan = f.overflow === "fn" ? (1 << f.manBits) - 2 : (1 << f.manBits) - 1;
  return ((1 << f.manBits) + maxMan) * 2 ** (maxExpField - f.bias - f.manBits);
}

const MAX_CODE: { readonly [K in NarrowFloat]: number } = {
  bf16: encodeFinite(FORMATS.bf16, maxFinite("bf16")),
  f16: encodeFinite(FORMATS.f16, maxFinite("f16")),
  fp8_e4m3: encodeFinite(FORMATS.fp8_e4m3, maxFinite("fp8_e4m3")),
  fp8_e5m2: encodeFinite(FORMATS.fp8_e5m2, maxFinite("fp8_e5m2")),
};

/** floor(log2(a)) for a finite a > 0, exact (Math.log2 may be off by one near powers of two). */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  else if (2 ** (e + 1) <= a) e++;
  return e;
}

/**
 * Code of x (rounded to f32 first) in the format. `negativeNaN` sets the sign bit for a
 * NaN input (a JS NaN has no observable sign); for other inputs the sign comes from x.
 */
export function encode(fmt: NarrowFloat, x: number, negativeNaN = false): number {
  const f = FORMATS[fmt];
  const v = Math.fround(x);
  const signBit = 1 << (f.expBits + f.manBits);
  const neg = Number.isNaN(v) ? negativeNaN : v < 0 || Object.is(v, -0);
  const sign = neg ? signBit : 0;
  if (Number.isNaN(v)) return sign | f.nan;
  const a = Math.abs(v);
  const infCode = ((1 << f.expBits) - 1) << f.manBits;
  const maxCode = MAX_CODE[fmt];
  if (a === Infinity) return sign | (f.overflow === "fn" ? maxCode : infCode);
  if (a === 0) return sign;
  const code = encodeFinite(f, a);
  if (code > maxCode) return sign | (f.overflow === "ieee" ? infCode : maxCode);
  return sign | code;
}

/** Unsigned code of a finite a ≥ 0 with unlimited exponent range above (may exceed the max code). */
function encodeFinite(f: Format, a: number): number {
  if (a === 0) return 0;
  const emin = 1 - f.bias;
  const e = Math.max(exponentOf(a), emin);
  const quantum = 2 ** (e - f.manBits);
  const m = a / quantum; // exact: division by a power of two, m < 2^(manBits+1)
  const fl = Math.floor(m);
  const frac = m - fl;
  let r = frac > 0.5 || (frac === 0.5 && fl % 2 === 1) ? fl + 1 : fl;
  let ee = e;
  const hidden = 2 ** f.manBits;
  if (r === 2 * hidden) {
    r = hidden;
    ee++;
  }
  if (r < hidden) return r; // subnormal (or zero): exponent field 0
  return (ee + f.bias) * hidden + (r - hidden);
}

/** Exact value of a code (NaN for NaN codes, ±Infinity for Inf codes). */
export function decode(fmt: NarrowFloat, code: number): number {
  const f = FORMATS[fmt];
  const nb = f.expBits + f.manBits;
  const neg = (code >> nb) & 1;
  const ef = (code >> f.manBits) & ((1 << f.expBits) - 1);
  const mf = code & ((1 << f.manBits) - 1);
  const allOnes = (1 << f.expBits) - 1;
  let v: number;
  if (f.overflow === "fn" && ef === allOnes && mf === (1 << f.manBits) - 1) return NaN;
  if (f.overflow !== "fn" && ef === allOnes) {
    if (mf !== 0) return NaN;
    v = Infinity;
  } else if (ef === 0) {
    v = mf * 2 ** (1 - f.bias - f.manBits);
  } else {
    v = (2 ** f.manBits + mf) * 2 ** (ef - f.bias - f.manBits);
  }
  return neg ? -v : v;
}

export function isNaNCode(fmt: NarrowFloat, code: number): boolean {
  return Number.isNaN(decode(fmt, code));
}

// Convenience scalar names.
export const encodeBf16 = (x: number): number => encode("bf16", x);
export const decodeBf16 = (c: number): number => decode("bf16", c);
export const encodeF16 = (x: number): number => encode("f16", x);
export const decodeF16 = (c: number): number => decode("f16", c);
export const encodeFp8E4m3 = (x: number): number => encode("fp8_e4m3", x);
export const decodeFp8E4m3 = (c: number): number => decode("fp8_e4m3", c);
export const encodeFp8E5m2 = (x: number): number => encode("fp8_e5m2", x);
export const decodeFp8E5m2 = (c: number): number => decode("fp8_e5m2", c);

// ---------------------------------------------------------------------------
// Array loops (f32 ↔ codes). out and x have equal length (callers check).

function bitsOf(x: Float32Array): Uint32Array {
  return new Uint32Array(x.buffer, x.byteOffset, x.length);
}

/**
 * f16 / bf16 codes of f32 bit patterns, by integer rounding on the bits (round to nearest even;
 * NaN → the sign and the format's quiet NaN, as `encode`): the same codes as `encode`, ~50× faster
 * (test/dtype-fast.test.ts checks them against `encode`). Used by encodeArray at scale 1.
 */
function encodeBitsF16(out: Uint16Array | Uint8Array, x: Float32Array, xb: Uint32Array): void {
  for (let i = 0; i < xb.length; i++) {
    const b = xb[i]!;
    const sign = (b >>> 16) & 0x8000;
    const a = b & 0x7fffffff;
    if (a > 0x7f800000) out[i] = sign | 0x7e00;
    else if (a >= 0x477ff000) out[i] = sign | 0x7c00; // ≥ 65520 rounds (ties to even) to Inf
    else if (a >= 0x38800000) {
      const m = a - 0x38000000; // exponent rebiased 127 → 15, mantissa kept
      out[i] = sign | ((m + 0xfff + ((m >>> 13) & 1)) >>> 13);
    } else {
      const v = Math.abs(x[i]!) * 16777216; // subnormal: multiples of 2^-24, exact in f64
      let r = Math.round(v);
      if (r - v === 0.5 && (r & 1) === 1) r -= 1;
      out[i] = sign | r;
    }
  }
}
function encodeBitsBf16(out: Uint16Array | Uint8Array, xb: Uint32Array): void {
  for (let i = 0; i < xb.length; i++) {
    const b = xb[i]!;
    const sign = (b >>> 16) & 0x8000;
    const a = b & 0x7fffffff;
    out[i] = a > 0x7f800000 ? sign | 0x7fc0 : sign | ((a + 0x7fff + ((a >>> 16) & 1)) >>> 16);
  }
}

/** out[i] = code of x[i] / scale (the division in f32). */
export function encodeArray(fmt: NarrowFloat, out: Uint16Array | Uint8Array, x: Float32Array, scale = 1): void {
  const xb = bitsOf(x);
  const s = Math.fround(scale);
  if (s === 1 && fmt === "f16") return encodeBitsF16(out, x, xb);
  if (s === 1 && fmt === "bf16") return encodeBitsBf16(out, xb);
  for (let i = 0; i < x.length; i++) {
    const v = s === 1 ? x[i]! : Math.fround(x[i]! / s);
    out[i] = encode(fmt, v, xb[i]! >>> 31 === 1);
  }
}

/** f32 bits of the NaN a NaN code widens to (sign, quiet bit, mantissa in the top bits). */
function nanBits(fmt: NarrowFloat, code: number): number {
  const f = FORMATS[fmt];
  if (fmt === "bf16") return (code << 16) >>> 0;
  const sign = (code >> (f.expBits + f.manBits)) & 1;
  const man = f.overflow === "fn" ? 0 : code & ((1 << f.manBits) - 1);
  return ((sign << 31) | 0x7fc00000 | (man << (23 - f.manBits))) >>> 0;
}

/** out[i] = decode(x[i]) · scale (the product rounded to f32). */
export function decodeArray(fmt: NarrowFloat, out: Float32Array, x: Uint16Array | Uint8Array, scale = 1): void {
  const ob = bitsOf(out);
  const s = Math.fround(scale);
  for (let i = 0; i < x.length; i++) {
    const v = decode(fmt, x[i]!);
    if (Number.isNaN(v)) ob[i] = nanBits(fmt, x[i]!);
    else out[i] = v * s; // exact product of two f32 values in f64, rounded once on store
  }
}

/**
 * Table of the exact values of every code (2^8 or 2^16 entries), for decoding large
 * arrays (quantised weights) without a per-element decode call.
 */
export function decodeTable(fmt: NarrowFloat): Float64Array {
  const f = FORMATS[fmt];
  const n = 1 << (1 + f.expBits + f.manBits);
  const t = new Float64Array(n);
  for (let c = 0; c < n; c++) t[c] = decode(fmt, c);
  return t;
}
