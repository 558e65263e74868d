// GGUF v3 container: reader and writer (llama.cpp's model file format).
//
// Layout (all little-endian): magic "GGUF", u32 version, u64 tensor_count, u64 kv_count;
// kv_count × (string key, u32 value type, value); tensor_count × (string name, u32 n_dims,
// n_dims × u64 ne, u32 ggml type, u64 offset); padding to `general.alignment` (default 32);
// then the tensor data, each tensor at its offset (relative to the data start, a multiple
// of the alignment). Strings are u64 length + UTF-8 bytes; arrays are u32 item type,
// u64 count, items. GGUF dims are reversed vs row-major: ne[0] is the fastest dim, so a
// row-major (rows, cols) matrix has ne = [cols, rows]. This module takes and returns
// row-major `shape`s and keeps `ne` alongside.
//
// Tensor types: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K are written (llama.cpp's
// quantize_row_*_ref / ggml_fp32_to_bf16_row_ref byte for byte: core/quant-blocks.ts,
// core/ggml-quants-ref.ts) and read; Q4_1, Q5_0, Q5_1, Q5_K (fallbacks inside llama.cpp's
// k-quant mixes) are read too. `read` dequantises to f32 as ggml's dequantize_row_* (bit for
// bit); `readRaw` returns the blocks for callers that keep them compact. Q8_0 is blocks of 32
// along ne[0]; d = max|x|/127 (f32), stored as f16; q = roundf(x · (1/d)); value q · f16(d).
// Other ggml types are recognised (so offsets can be checked and the file inspected) but
// their data is refused.
//
// Reading is lazy: the header is parsed and validated on open; tensor data is read on
// request. Every defect (bad magic or version, truncated header or data, unknown value or
// tensor type, offsets misaligned or past the end, overlapping data, duplicate keys or
// names) is refused with an error naming the file and the item. Writing is atomic.
//
// Not: the model mapping (see model/gguf-model.ts, model/gguf-families.ts).
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { atomicWrite, writeAll } from "./safetensors.js";
import { decodeArray, decodeF16, encodeArray } from "../core/dtype.js";
import { dequantizeBlock, quantizeBlock, type BlockFormat } from "../core/quant-blocks.js";
import { decodeBf16, dequantizeExtra, encodeBf16, type ExtraBlockType } from "../core/ggml-quants-ref.js";

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;
export const QK8_0 = 32;

export class GgufError extends Error {
  override name = "GgufError";
}

// ---------------------------------------------------------------------------
// Metadata values

export type GgufScalarType = "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "bool" | "string" | "u64" | "i64" | "f64";

/** GGUF value type ids (gguf_type). */
const VALUE_TYPE_ID: Record<GgufScalarType | "array", number> = {
  u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, string: 8, array: 9, u64: 10, i64: 11, f64: 12,
};
const VALUE_TYPE_NAME: (GgufScalarType | "array")[] = ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"];

export type GgufItem = number | bigint | boolean | string;

export type GgufValue =
  | { type: "u8" | "i8" | "u16" | "i16" | "u32" | "i32" | "f32" | "f64"; value: number }
  | { type: "u64" | "i64"; value: bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; itemType: GgufScalarType; value: GgufItem[] };

/** Constructors for metadata values. */
export const gv = {
  u8: (value: number): GgufValue => ({ type: "u8", value }),
  i8: (value: number): GgufValue => ({ type: "i8", value }),
  u16: (value: number): GgufValue => ({ type: "u16", value }),
  i16: (value: number): GgufValue => ({ type: "i16", value }),
  u32: (value: number): GgufValue => ({ type: "u32", value }),
  i32: (value: number): GgufValue => ({ type: "i32", value }),
  f32: (value: number): GgufValue => ({ type: "f32", value }),
  f64: (value: number): GgufValue => ({ type: "f64", value }),
  u64: (value: bigint | number): GgufValue => ({ type: "u64", value: BigInt(value) }),
  i64: (value: bigint | number): GgufValue => ({ type: "i64", value: BigInt(value) }),
  bool: (value: boolean): GgufValue => ({ type: "bool", value }),
  str: (value: string): GgufValue => ({ type: "string", value }),
  arr: (itemType: GgufScalarType, value: GgufItem[]): GgufValue => ({ type: "array", itemType, value }),
};

// ---------------------------------------------------------------------------
// Tensor types

/** The tensor types the writer encodes. */
export type GgmlTypeName = "F32" | "F16" | "BF16" | "Q8_0" | "Q4_0" | "Q4_K" | "Q6_K";
/** The tensor types `read` decodes (the writer's and the extra block types). */
export const GGUF_READABLE_TYPES: readonly string[] = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K", "Q4_1", "Q5_0", "Q5_1", "Q5_K"];
/** The engine block format of a GGUF type name, or undefined. */
export const GGUF_BLOCK_FORMAT: Readonly<Record<string, BlockFormat | undefined>> = { Q8_0: "q8_0", Q4_0: "q4_0", Q4_K: "q4_k", Q6_K: "q6_k" };
const EXTRA_TYPE: Readonly<Record<string, ExtraBlockType | undefined>> = { Q4_1: "q4_1", Q5_0: "q5_0", Q5_1: "q5_1", Q5_K: "q5_k" };

interface GgmlTypeInfo {
  name: string;
  /** Elements per block and bytes per block. */
  blck: number;
  bytes: number;
}

/** ggml_type ids with their block sizes (ggml.c type_traits), for the types whose layout we know. */
const GGML_TYPES: ReadonlyMap<number, GgmlTypeInfo> = new Map([
  [0, { name: "F32", blck: 1, bytes: 4 }],
  [1, { name: "F16", blck: 1, bytes: 2 }],
  [2, { name: "Q4_0", blck: 32, bytes: 18 }],
  [3, { name: "Q4_1", blck: 32, bytes: 20 }],
  [6, { name: "Q5_0", blck: 32, bytes: 22 }],
  [7, { name: "Q5_1", blck: 32, bytes: 24 }],
  [8, { name: "Q8_0", blck: 32, bytes: 34 }],
  [9, { name: "Q8_1", blck: 32, bytes: 36 }],
  [10, { name: "Q2_K", blck: 256, bytes: 84 }],
  [11, { name: "Q3_K", blck: 256, bytes: 110 }],
  [12, { name: "Q4_K", blck: 256, bytes: 144 }],
  [13, { name: "Q5_K", blck: 256, bytes: 176 }],
  [14, { name: "Q6_K", blck: 256, bytes: 210 }],
  [15, { name: "Q8_K", blck: 256, bytes: 292 }],
  [24, { name: "I8", blck: 1, bytes: 1 }],
  [25, { name: "I16", blck: 1, bytes: 2 }],
  [26, { name: "I32", blck: 1, bytes: 4 }],
  [27, { name: "I64", blck: 1, bytes: 8 }],
  [28, { name: "F64", blck: 1, bytes: 8 }],
  [30, { name: "BF16", blck: 1, bytes: 2 }],
]);
export const GGML_TYPE_ID: Record<GgmlTypeName, number> = { F32: 0, F16: 1, BF16: 30, Q8_0: 8, Q4_0: 2, Q4_K: 12, Q6_K: 14 };
const TYPE_ID = GGML_TYPE_ID;

/** Elements per block of a writable type. */
export function ggmlBlockSize(type: GgmlTypeName): number {
  return GGML_TYPES.get(TYPE_ID[type])!.blck;
}

/** Bytes of a tensor of `type` with dims ne (ne[0] must be a multiple of the block size). */
function tensorBytes(info: GgmlTypeInfo, ne: readonly number[]): number {
  let rows = 1;
  for (let i = 1; i < ne.length; i++) rows *= ne[i]!;
  return (ne[0]! / info.blck) * info.bytes * rows;
}

// ---------------------------------------------------------------------------
// Q8_0 and f16 codecs

/** llama.cpp quantize_row_q8_0_ref over x (length a multiple of 32): 34-byte blocks. */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % QK8_0 !== 0) throw new GgufError(`Q8_0 needs a multiple of ${QK8_0} values, got ${x.length}`);
  const nb = x.length / QK8_0;
  const out = new Uint8Array(nb * 34);
  const dv = new DataView(out.buffer);
  const dCode = new Uint16Array(1);
  const dArr = new Float32Array(1);
  for (let b = 0; b < nb; b++) {
    const o = b * QK8_0;
    let amax = 0;
    for (let j = 0; j < QK8_0; j++) {
      const a = Math.abs(x[o + j]!);
      if (a > amax) amax = a; // fmaxf ignores NaN; so does this comparison
    }
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    dArr[0] = d;
    encodeArray("f16", dCode, dArr);
    dv.setUint16(b * 34, dCode[0]!, true);
    for (let j = 0; j < QK8_0; j++) {
      const v = Math.fround(x[o + j]! * id);
      const r = v < 0 ? -Math.round(-v) : Math.round(v); // roundf: half away from zero
      dv.setInt8(b * 34 + 2 + j, r);
    }
  }
  return out;
}

/** Dequantises Q8_0 blocks: x = q · f16(d), the product in f32. */
export function dequantizeQ8_0(bytes: Uint8Array, n: number): Float32Array {
  if (bytes.length !== (n / QK8_0) * 34) throw new GgufError(`Q8_0: ${bytes.length} bytes for ${n} values`);
  const out = new Float32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < n / QK8_0; b++) {
    const d = decodeF16(dv.getUint16(b * 34, true)); // |q·d| has ≤ 18 significant bits: exact in f32
    for (let j = 0; j < QK8_0; j++) out[b * QK8_0 + j] = dv.getInt8(b * 34 + 2 + j) * d;
  }
  return out;
}

function encodeTensor(type: GgmlTypeName, x: Float32Array): Uint8Array {
  switch (type) {
    case "F32":
      return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    case "F16": {
      const codes = new Uint16Array(x.length);
      encodeArray("f16", codes, x);
      return new Uint8Array(codes.buffer);
    }
    case "BF16": {
      const codes = encodeBf16(x);
      return new Uint8Array(codes.buffer);
    }
    case "Q8_0":
      return quantizeQ8_0(x);
    case "Q4_0":
      return quantizeBlock(x, "q4_0");
    case "Q4_K":
      return quantizeBlock(x, "q4_k");
    case "Q6_K":
      return quantizeBlock(x, "q6_k");
    default:
      ((x: never) => x)(type);
      throw new GgufError(`unknown tensor type ${String(type)}`);
  }
}

// ---------------------------------------------------------------------------
// Writer

export interface GgufTensorInput {
  name: string;
  /** Row-major shape (outermost first); written as ne = reversed shape. */
  shape: number[];
  type: GgmlTypeName;
  /** f32 values in row-major order; encoded to `type` on write. */
  data: Float32Array;
}

export interface GgufWriteOptions {
  alignment?: number;
  version?: 2 | 3;
}

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: bigint | number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, "utf8");
    this.u64(b.length);
    this.push(b);
  }
  concat(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

function checkInt(where: string, v: unknown, lo: number, hi: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < lo || v > hi) throw new GgufError(`${where}: ${String(v)} is not an integer in [${lo}, ${hi}]`);
  return v;
}

function writeItem(s: ByteSink, type: GgufScalarType, v: unknown, where: string): void {
  let b: Buffer;
  switch (type) {
    case "u8": b = Buffer.alloc(1); b.writeUInt8(checkInt(where, v, 0, 0xff)); break;
    case "i8": b = Buffer.alloc(1); b.writeInt8(checkInt(where, v, -0x80, 0x7f)); break;
    case "u16": b = Buffer.alloc(2); b.writeUInt16LE(checkInt(where, v, 0, 0xffff)); break;
    case "i16": b = Buffer.alloc(2); b.writeInt16LE(checkInt(where, v, -0x8000, 0x7fff)); break;
    case "u32": b = Buffer.alloc(4); b.writeUInt32LE(checkInt(where, v, 0, 0xffffffff)); break;
    case "i32": b = Buffer.alloc(4); b.writeInt32LE(checkInt(where, v, -0x80000000, 0x7fffffff)); break;
    case "f32":
      if (typeof v !== "number") throw new GgufError(`${where}: f32 value must be a number`);
      b = Buffer.alloc(4); b.writeFloatLE(v); break;
    case "f64":
      if (typeof v !== "number") throw new GgufError(`${where}: f64 value must be a number`);
      b = Buffer.alloc(8); b.writeDoubleLE(v); break;
    case "u64":
      if (typeof v !== "bigint" || v < 0n || v >= 1n << 64n) throw new GgufError(`${where}: u64 value must be a bigint in [0, 2^64)`);
      b = Buffer.alloc(8); b.writeBigUInt64LE(v); break;
    case "i64":
      if (typeof v !== "bigint" || v < -(1n << 63n) || v >= 1n << 63n) throw new GgufError(`${where}: i64 value must be a bigint in [-2^63, 2^63)`);
      b = Buffer.alloc(8); b.writeBigInt64LE(v); break;
    case "bool":
      if (typeof v !== "boolean") throw new GgufError(`${where}: bool value must be a boolean`);
      b = Buffer.from([v ? 1 : 0]); break;
    case "string":
      if (typeof v !== "string") throw new GgufError(`${where}: string value must be a string`);
      s.str(v);
      return;
    default:
      ((x: never) => x)(type);
      throw new GgufError(`${where}: unknown value type ${String(type)}`);
  }
  s.push(b);
}

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/**
 * Writes a GGUF file atomically. Metadata keys keep their order; `general.alignment` is
 * written (u32) when absent. Tensors are written in the given order, each padded to the
 * alignment.
 */
export function writeGguf(file: string, metadata: Iterable<[string, GgufValue]> | Record<string, GgufValue>, tensors: GgufTensorInput[], opts: GgufWriteOptions = {}): void {
  const entries: [string, GgufValue][] = Symbol.iterator in Object(metadata) ? [...(metadata as Iterable<[string, GgufValue]>)] : Object.entries(metadata);
  const alignment = opts.alignment ?? GGUF_DEFAULT_ALIGNMENT;
  if (!Number.isInteger(alignment) || alignment <= 0 || (alignment & (alignment - 1)) !== 0) throw new GgufError(`${file}: alignment ${alignment} must be a power of two`);
  const keys = new Set<string>();
  for (const [k] of entries) {
    if (keys.has(k)) throw new GgufError(`${file}: duplicate metadata key '${k}'`);
    keys.add(k);
  }
  const alignEntry = entries.find(([k]) => k === "general.alignment");
  if (alignEntry) {
    if (alignEntry[1].type !== "u32" || alignEntry[1].value !== alignment) throw new GgufError(`${file}: general.alignment must be u32 ${alignment} (the alignment written)`);
  } else entries.push(["general.alignment", gv.u32(alignment)]);

  const h = new ByteSink();
  h.u32(GGUF_MAGIC);
  h.u32(opts.version ?? GGUF_VERSION);
  h.u64(tensors.length);
  h.u64(entries.length);
  for (const [k, v] of entries) {
    h.str(k);
    h.u32(VALUE_TYPE_ID[v.type]);
    if (v.type === "array") {
      if (v.itemType === ("array" as GgufScalarType)) throw new GgufError(`${file}: '${k}': nested arrays are not supported`);
      if (!(v.itemType in VALUE_TYPE_ID)) throw new GgufError(`${file}: '${k}': unknown array item type ${String(v.itemType)}`);
      h.u32(VALUE_TYPE_ID[v.itemType]);
      h.u64(v.value.length);
      for (let i = 0; i < v.value.length; i++) writeItem(h, v.itemType, v.value[i], `${file}: '${k}'[${i}]`);
    } else writeItem(h, v.type, v.value, `${file}: '${k}'`);
  }
  const names = new Set<string>();
  const plan: { t: GgufTensorInput; ne: number[]; bytes: number; offset: number }[] = [];
  let off = 0;
  for (const t of tensors) {
    if (names.has(t.name)) throw new GgufError(`${file}: duplicate tensor name '${t.name}'`);
    names.add(t.name);
    if (t.shape.length < 1 || t.shape.length > 4 || !t.shape.every((d) => Number.isInteger(d) && d > 0)) throw new GgufError(`${file}: tensor '${t.name}': shape [${t.shape}] must have 1-4 positive dims`);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== n) throw new GgufError(`${file}: tensor '${t.name}': ${t.data.length} values for shape [${t.shape}]`);
    const ne = [...t.shape].reverse();
    const info = GGML_TYPES.get(TYPE_ID[t.type]);
    if (!info) throw new GgufError(`${file}: tensor '${t.name}': unknown type ${String(t.type)}`);
    if (ne[0]! % info.blck !== 0) throw new GgufError(`${file}: tensor '${t.name}': ${t.type} needs the innermost dim (${ne[0]}) to be a multiple of ${info.blck}`);
    const bytes = tensorBytes(info, ne);
    plan.push({ t, ne, bytes, offset: off });
    off = alignUp(off + bytes, alignment);
  }
  for (const p of plan) {
    h.str(p.t.name);
    h.u32(p.ne.length);
    for (const d of p.ne) h.u64(d);
    h.u32(TYPE_ID[p.t.type]);
    h.u64(p.offset);
  }
  const headerLen = h.length;
  h.push(Buffer.alloc(alignUp(headerLen, alignment) - headerLen));
  const header = h.concat();
  atomicWrite(file, (fd) => {
    writeAll(fd, header);
    let pos = 0;
    for (const p of plan) {
      const bytes = encodeTensor(p.t.type, p.t.data);
      if (bytes.length !== p.bytes) throw new GgufError(`${file}: tensor '${p.t.name}': encoded ${bytes.length} bytes, expected ${p.bytes}`);
      writeAll(fd, bytes);
      pos = p.offset + p.bytes;
      const pad = alignUp(pos, alignment) - pos;
      if (pad) writeAll(fd, new Uint8Array(pad));
    }
  });
}

// ---------------------------------------------------------------------------
// Reader

export interface GgufTensorInfo {
  name: string;
  /** GGUF dims, ne[0] fastest. */
  ne: number[];
  /** Row-major shape (reversed ne). */
  shape: number[];
  /** ggml type name ("F32", "Q8_0", "Q4_K", …). */
  type: string;
  typeId: number;
  /** Absolute byte offset of the data in the file. */
  offset: number;
  byteLength: number;
}

/** Growing read-ahead over a file descriptor, for parsing the header without reading the data. */
class Cursor {
  private buf = Buffer.alloc(0);
  private bufStart = 0;
  pos = 0;
  constructor(private readonly fd: number, readonly size: number, readonly fail: (msg: string) => never) {}

  private ensure(n: number, what: string): number {
    if (this.pos + n > this.size) this.fail(`truncated: ${what} at byte ${this.pos} needs ${n} bytes, the file has ${this.size}`);
    const end = this.pos + n;
    if (end > this.bufStart + this.buf.length) {
      const want = Math.min(this.size - this.pos, Math.max(n, 1 << 20, this.buf.length * 2));
      const b = Buffer.alloc(want);
      let got = 0;
      while (got < want) {
        const r = readSync(this.fd, b, got, want - got, this.pos + got);
        if (r === 0) this.fail(`unexpected end of file reading ${what}`);
        got += r;
      }
      this.buf = b;
      this.bufStart = this.pos;
    }
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }
  u8(w: string) { const at = this.ensure(1, w); return this.buf.readUInt8(at); } // ensure may replace buf
  i8(w: string) { const at = this.ensure(1, w); return this.buf.readInt8(at); } // ensure may replace buf
  u16(w: string) { const at = this.ensure(2, w); return this.buf.readUInt16LE(at); } // ensure may replace buf
  i16(w: string) { const at = this.ensure(2, w); return this.buf.readInt16LE(at); } // ensure may replace buf
  u32(w: string) { const at = this.ensure(4, w); return this.buf.readUInt32LE(at); } // ensure may replace buf
  i32(w: string) { const at = this.ensure(4, w); return this.buf.readInt32LE(at); } // ensure may replace buf
  f32(w: string) { const at = this.ensure(4, w); return this.buf.readFloatLE(at); } // ensure may replace buf
  f64(w: string) { const at = this.ensure(8, w); return this.buf.readDoubleLE(at); } // ensure may replace buf
  u64(w: string) { const at = this.ensure(8, w); return this.buf.readBigUInt64LE(at); } // ensure may replace buf
  i64(w: string) { const at = this.ensure(8, w); return this.buf.readBigInt64LE(at); } // ensure may replace buf
  /** A u64 that must fit a JS number and be at most `max`. */
  count(w: string, max: number): number {
    const v = this.u64(w);
    if (v > BigInt(max)) this.fail(`${w} ${v} is impossible for a file of ${this.size} bytes (corrupt header?)`);
    return Number(v);
  }
  str(w: string): string {
    const n = this.count(`length of ${w}`, this.size - this.pos);
    const at = this.ensure(n, w);
    return this.buf.toString("utf8", at, at + n);
  }
}

/** A parsed, validated GGUF file; tensors are read on demand. */
export class GgufFile {
  private constructor(
    readonly file: string,
    readonly version: number,
    readonly metadata: ReadonlyMap<string, GgufValue>,
    readonly tensors: ReadonlyMap<string, GgufTensorInfo>,
    readonly alignment: number,
    readonly dataOffset: number,
  ) {}

  static open(file: string): GgufFile {
    const fail = (msg: string): never => {
      throw new GgufError(`${file}: ${msg}`);
    };
    let fd: number;
    try {
      fd = openSync(file, "r");
    } catch (e) {
      return fail(`cannot open: ${(e as Error).message}`);
    }
    try {
      const size = fstatSync(fd).size;
      const c = new Cursor(fd, size, fail);
      if (size < 4) fail(`truncated: ${size} bytes, not a GGUF file`);
      const magic = c.u32("magic");
      if (magic !== GGUF_MAGIC) fail(`bad magic 0x${magic.toString(16).padStart(8, "0")} (expected "GGUF"): not a GGUF file`);
      const version = c.u32("version");
      if (version !== 2 && version !== 3) fail(`unsupported GGUF version ${version} (this reader handles 2 and 3)`);
      const nTensors = c.count("tensor count", size);
      const nKv = c.count("metadata count", size);
      const metadata = new Map<string, GgufValue>();
      for (let i = 0; i < nKv; i++) {
        const key = c.str(`metadata key #${i}`);
        if (metadata.has(key)) fail(`duplicate metadata key '${key}'`);
        const tid = c.u32(`type of '${key}'`);
        const tname = VALUE_TYPE_NAME[tid];
        if (tname === undefined) fail(`metadata '${key}': unknown value type ${tid}`);
        if (tname === "array") {
          const itid = c.u32(`item type of '${key}'`);
          const iname = VALUE_TYPE_NAME[itid];
          if (iname === undefined) fail(`metadata '${key}': unknown array item type ${itid}`);
          if (iname === "array") fail(`metadata '${key}': nested arrays are not supported`);
          const n = c.count(`item count of '${key}'`, size - c.pos);
          const items: GgufItem[] = new Array(n);
          for (let j = 0; j < n; j++) items[j] = readItem(c, iname as GgufScalarType, key);
          metadata.set(key, { type: "array", itemType: iname as GgufScalarType, value: items });
        } else {
          metadata.set(key, { type: tname, value: readItem(c, tname, key) } as GgufValue);
        }
      }
      let alignment = GGUF_DEFAULT_ALIGNMENT;
      const al = metadata.get("general.alignment");
      if (al) {
        if (al.type !== "u32" || al.value === 0 || (al.value & (al.value - 1)) !== 0) fail(`general.alignment must be a u32 power of two, got ${JSON.stringify(String(al.value))}`);
        alignment = al.value as number;
      }
      const raw: { name: string; ne: number[]; typeId: number; rel: number }[] = [];
      const seen = new Set<string>();
      for (let i = 0; i < nTensors; i++) {
        const name = c.str(`name of tensor #${i}`);
        if (seen.has(name)) fail(`duplicate tensor name '${name}'`);
        seen.add(name);
        const nd = c.u32(`n_dims of '${name}'`);
        if (nd < 1 || nd > 4) fail(`tensor '${name}': n_dims ${nd} is not in 1..4`);
        const ne: number[] = [];
        for (let d = 0; d < nd; d++) ne.push(c.count(`ne[${d}] of '${name}'`, Number.MAX_SAFE_INTEGER));
        const typeId = c.u32(`type of '${name}'`);
        const rel = c.count(`offset of '${name}'`, Number.MAX_SAFE_INTEGER);
        raw.push({ name, ne, typeId, rel });
      }
      const dataOffset = alignUp(c.pos, alignment);
      const tensors = new Map<string, GgufTensorInfo>();
      for (const r of raw) {
        const info = GGML_TYPES.get(r.typeId);
        if (!info) fail(`tensor '${r.name}': unknown ggml type id ${r.typeId}`);
        if (r.ne[0]! % info!.blck !== 0) fail(`tensor '${r.name}': ne[0] = ${r.ne[0]} is not a multiple of the ${info!.name} block size ${info!.blck}`);
        if (r.rel % alignment !== 0) fail(`tensor '${r.name}': data offset ${r.rel} is not a multiple of the alignment ${alignment}`);
        const byteLength = tensorBytes(info!, r.ne);
        const offset = dataOffset + r.rel;
        if (offset + byteLength > size) fail(`tensor '${r.name}': data [${offset}, ${offset + byteLength}) runs past the end of the file (${size} bytes; truncated?)`);
        tensors.set(r.name, { name: r.name, ne: r.ne, shape: [...r.ne].reverse(), type: info!.name, typeId: r.typeId, offset, byteLength });
      }
      const sorted = [...tensors.values()].filter((t) => t.byteLength > 0).sort((a, b) => a.offset - b.offset);
      for (let i = 1; i < sorted.length; i++) {
        const p = sorted[i - 1]!, q = sorted[i]!;
        if (q.offset < p.offset + p.byteLength) fail(`tensors '${p.name}' and '${q.name}' have overlapping data`);
      }
      return new GgufFile(file, version, metadata, tensors, alignment, dataOffset);
    } finally {
      closeSync(fd);
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): GgufTensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new GgufError(`${this.file}: no tensor '${name}'`);
    return t;
  }

  /** Raw bytes of one tensor. */
  readRaw(name: string): Uint8Array {
    const t = this.info(name);
    const out = new Uint8Array(t.byteLength);
    const fd = openSync(this.file, "r");
    try {
      let got = 0;
      while (got < t.byteLength) {
        const r = readSync(fd, out, got, t.byteLength - got, t.offset + got);
        if (r === 0) throw new GgufError(`${this.file}: tensor '${name}': unexpected end of file`);
        got += r;
      }
    } finally {
      closeSync(fd);
    }
    return out;
  }

  /** One tensor as f32 in row-major order (F32 copied, every other readable type dequantised). */
  read(name: string): Float32Array {
    const t = this.info(name);
    const n = t.ne.reduce((a, b) => a * b, 1);
    const raw = this.readRaw(name);
    switch (t.type) {
      case "F32":
        return new Float32Array(raw.buffer, raw.byteOffset, n);
      case "F16": {
        const out = new Float32Array(n);
        decodeArray("f16", out, new Uint16Array(raw.buffer, raw.byteOffset, n));
        return out;
      }
      case "BF16":
        return decodeBf16(new Uint16Array(raw.buffer, raw.byteOffset, n));
      case "Q8_0":
        return dequantizeQ8_0(raw, n);
      case "Q4_0":
      case "Q4_K":
      case "Q6_K": {
        const out = new Float32Array(n);
        dequantizeBlock(out, raw, GGUF_BLOCK_FORMAT[t.type]!, n);
        return out;
      }
      default: {
        const extra = EXTRA_TYPE[t.type];
        if (extra) return dequantizeExtra(extra, raw, n);
        throw new GgufError(`${this.file}: tensor '${name}' has type ${t.type}; readable types are ${GGUF_READABLE_TYPES.join(", ")}`);
      }
    }
  }

  /** A metadata value, or undefined. */
  get(key: string): GgufValue | undefined {
    return this.metadata.get(key);
  }

  /** A numeric scalar (any integer or float type); `def` when absent; an error for another type. */
  getNumber(key: string, def?: number): number {
    const v = this.metadata.get(key);
    if (v === undefined) {
      if (def !== undefined) return def;
      throw new GgufError(`${this.file}: missing metadata '${key}'`);
    }
    if (v.type === "u64" || v.type === "i64") {
      if (v.value > BigInt(Number.MAX_SAFE_INTEGER) || v.value < -BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(`${this.file}: '${key}' = ${v.value} does not fit a number`);
      return Number(v.value);
    }
    if (typeof v.value !== "number") throw new GgufError(`${this.file}: '${key}' must be a number, found ${v.type}`);
    return v.value;
  }

  getString(key: string, def?: string): string {
    const v = this.metadata.get(key);
    if (v === undefined) {
      if (def !== undefined) return def;
      throw new GgufError(`${this.file}: missing metadata '${key}'`);
    }
    if (v.type !== "string") throw new GgufError(`${this.file}: '${key}' must be a string, found ${v.type}`);
    return v.value;
  }

  getArray(key: string): GgufItem[] | undefined {
    const v = this.metadata.get(key);
    if (v === undefined) return undefined;
    if (v.type !== "array") throw new GgufError(`${this.file}: '${key}' must be an array, found ${v.type}`);
    return v.value;
  }
}

function readItem(c: Cursor, t: GgufScalarType, key: string): GgufItem {
  const w = `value of '${key}'`;
  switch (t) {
    case "u8": return c.u8(w);
    case "i8": return c.i8(w);
    case "u16": return c.u16(w);
    case "i16": return c.i16(w);
    case "u32": return c.u32(w);
    case "i32": return c.i32(w);
    case "f32": return c.f32(w);
    case "f64": return c.f64(w);
    case "u64": return c.u64(w);
    case "i64": return c.i64(w);
    case "bool": {
      const b = c.u8(w);
      if (b > 1) return c.fail(`bool ${w} is ${b}, not 0 or 1`);
      return b === 1;
    }
    case "string": return c.str(w);
    default:
      t satisfies never;
      throw new GgufError(`unknown value type ${String(t)}`);
  }
}
