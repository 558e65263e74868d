// safetensors reader and writer (single files and sharded checkpoints).
//
// Format: 8-byte little-endian header length n, n bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the raw little-endian tensor bytes; offsets are relative to the end of the header.
// Sharded checkpoints add model.safetensors.index.json {metadata: {total_size}, weight_map: {name: file}}.
//
// Reading is lazy: opening a file parses and validates the header only; each tensor is
// read from disk on request (so a shard is never loaded whole when some tensors suffice).
// Every defect (bad header length, JSON error, unknown dtype, offsets past the end,
// overlapping ranges, size/shape mismatch) is refused with an error naming file and tensor.
// Writing is atomic: a temp file in the same directory, fsync, then rename.
//
// Not: a dtype converter (see core/dtype.ts) or a model loader (see model/).
import { closeSync, openSync, readSync, statSync, readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { atomicWrite, writeAll, writeFileAtomic } from "../core/fs.js";

export type StDtype = "F64" | "F32" | "F16" | "BF16" | "F8_E4M3" | "F8_E5M2" | "I64" | "I32" | "I16" | "I8" | "U8" | "BOOL";

export const DTYPE_BYTES: Record<StDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, F8_E4M3: 1, F8_E5M2: 1, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** The typed array each dtype is read into (raw codes for f16/bf16/fp8). */
export type StArray = Float64Array | Float32Array | Uint16Array | Uint8Array | BigInt64Array | Int32Array | Int16Array | Int8Array;

export interface TensorInfo {
  name: string;
  dtype: StDtype;
  shape: number[];
  /** Absolute byte offset of the tensor data in the file. */
  offset: number;
  byteLength: number;
}

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

const MAX_HEADER = 100 * 1024 * 1024;

function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function isDtype(x: unknown): x is StDtype {
  return typeof x === "string" && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, x);
}

/** A parsed, validated safetensors file whose tensors are read on demand. */
export class SafetensorsFile {
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  readonly metadata: Readonly<Record<string, string>>;

  private constructor(readonly file: string, tensors: Map<string, TensorInfo>, metadata: Record<string, string>) {
    this.tensors = tensors;
    this.metadata = metadata;
  }

  static open(file: string): SafetensorsFile {
    const fail = (msg: string): never => {
      throw new SafetensorsError(`${file}: ${msg}`);
    };
    let size: number;
    try {
      size = statSync(file).size;
    } catch (e) {
      return fail(`cannot open: ${(e as Error).message}`);
    }
    if (size < 8) fail(`truncated: ${size} bytes, a safetensors file has at least an 8-byte header length`);
    const fd = openSync(file, "r");
    try {
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const n64 = lenBuf.readBigUInt64LE(0);
      if (n64 > BigInt(MAX_HEADER)) fail(`bad header length ${n64} (more than ${MAX_HEADER} bytes)`);
      const n = Number(n64);
      if (8 + n > size) fail(`bad header length ${n}: the file has only ${size - 8} bytes after the length field`);
      const hdrBuf = Buffer.alloc(n);
      readSync(fd, hdrBuf, 0, n, 8);
      let header: unknown;
      try {
        header = JSON.parse(hdrBuf.toString("utf8"));
      } catch (e) {
        return fail(`header is not valid JSON: ${(e as Error).message}`);
      }
      if (typeof header !== "object" || header === null || Array.isArray(header)) fail("header is not a JSON object");
      const dataStart = 8 + n;
      const dataLen = size - dataStart;
      const tensors = new Map<string, TensorInfo>();
      let metadata: Record<string, string> = {};
      for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
        if (name === "__metadata__") {
          if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("__metadata__ must be an object of strings");
          for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
            if (typeof v !== "string") fail(`__metadata__.${k} must be a string`);
          }
          metadata = raw as Record<string, string>;
          continue;
        }
        const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
        if (typeof t !== "object" || t === null) fail(`tensor '${name}': entry is not an object`);
        if (!isDtype(t.dtype)) fail(`tensor '${name}': unknown dtype ${JSON.stringify(t.dtype)}`);
        const dtype = t.dtype as StDtype;
        if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) fail(`tensor '${name}': shape must be an array of non-negative integers`);
        const offs = t.data_offsets;
        if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isInteger(o) && o >= 0)) fail(`tensor '${name}': data_offsets must be two non-negative integers`);
        const [b, e] = offs as [number, number];
        if (e < b) fail(`tensor '${name}': data_offsets [${b}, ${e}] end before they begin`);
        if (e > dataLen) fail(`tensor '${name}': data_offsets [${b}, ${e}] run past the end of the data (${dataLen} bytes; file truncated?)`);
        const shape = t.shape as number[];
        const expect = numel(shape) * DTYPE_BYTES[dtype];
        if (e - b !== expect) fail(`tensor '${name}': ${e - b} bytes in data_offsets but dtype ${dtype} × shape [${shape}] needs ${expect}`);
        tensors.set(name, { name, dtype, shape, offset: dataStart + b, byteLength: e - b });
      }
      const sorted = [...tensors.values()].filter((t) => t.byteLength > 0).sort((x, y) => x.offset - y.offset);
      for (let i = 1; i < sorted.length; i++) {
        const prev = sorted[i - 1]!, cur = sorted[i]!;
        if (cur.offset < prev.offset + prev.byteLength) fail(`tensors '${prev.name}' and '${cur.name}' have overlapping data ranges`);
      }
      return new SafetensorsFile(file, tensors, metadata);
    } finally {
      closeSync(fd);
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new SafetensorsError(`${this.file}: no tensor '${name}'`);
    return t;
  }

  /** Reads one tensor's raw data into a fresh, aligned typed array of its dtype. */
  read(name: string): { info: TensorInfo; data: StArray } {
    const info = this.info(name);
    const buf = new ArrayBuffer(info.byteLength);
    const fd = openSync(this.file, "r");
    try {
      let got = 0;
      while (got < info.byteLength) {
        const r = readSync(fd, new Uint8Array(buf, got), 0, info.byteLength - got, info.offset + got);
        if (r === 0) throw new SafetensorsError(`${this.file}: tensor '${name}': unexpected end of file`);
        got += r;
      }
    } finally {
      closeSync(fd);
    }
    return { info, data: viewAs(info.dtype, buf) };
  }
}

export function viewAs(dtype: StDtype, buf: ArrayBuffer): StArray {
  switch (dtype) {
    case "F64": return new Float64Array(buf);
    case "F32": return new Float32Array(buf);
    case "F16": case "BF16": return new Uint16Array(buf);
    case "F8_E4M3": case "F8_E5M2": case "U8": case "BOOL": return new Uint8Array(buf);
    case "I64": return new BigInt64Array(buf);
    case "I32": return new Int32Array(buf);
    case "I16": return new Int16Array(buf);
    case "I8": return new Int8Array(buf);
    default:
      dtype satisfies never;
      throw new SafetensorsError(`unknown dtype ${String(dtype)}`);
  }
}

/** A tensor to write: raw data whose byte length must equal numel(shape)·bytes(dtype). */
export interface TensorToWrite {
  dtype: StDtype;
  shape: number[];
  data: ArrayBufferView;
}

/** Writes tensors atomically to `file` (temp file + fsync + rename). Names are written sorted. */
export function writeSafetensors(file: string, tensors: Record<string, TensorToWrite>, metadata: Record<string, string> = {}): void {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const name of names) {
    const t = tensors[name]!;
    if (!isDtype(t.dtype)) throw new SafetensorsError(`${file}: tensor '${name}': unknown dtype ${String(t.dtype)}`);
    const need = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== need) throw new SafetensorsError(`${file}: tensor '${name}': ${t.data.byteLength} bytes of data but ${t.dtype} × [${t.shape}] needs ${need}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + need] };
    off += need;
  }
  let json = JSON.stringify(header);
  const pad = (8 - (Buffer.byteLength(json) % 8)) % 8;
  json += " ".repeat(pad);
  const hdr = Buffer.from(json, "utf8");
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(hdr.length));
  atomicWrite(file, (fd) => {
    writeAll(fd, lenBuf);
    writeAll(fd, hdr);
    for (const name of names) {
      const d = tensors[name]!.data;
      writeAll(fd, new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    }
  });
}

export { atomicWrite, writeAll, writeFileAtomic } from "../core/fs.js";

// ---------------------------------------------------------------------------
// Checkpoint directories: one model.safetensors, or shards with an index.

export const INDEX_FILE = "model.safetensors.index.json";

/** Read access to every tensor of a checkpoint directory (single file or sharded). */
export class SafetensorsCheckpoint {
  private constructor(readonly dir: string, readonly files: SafetensorsFile[], private readonly where: Map<string, SafetensorsFile>) {}

  static open(dir: string): SafetensorsCheckpoint {
    const index = path.join(dir, INDEX_FILE);
    const single = path.join(dir, "model.safetensors");
    const where = new Map<string, SafetensorsFile>();
    if (existsSync(index)) {
      let parsed: { weight_map?: Record<string, string> };
      try {
        parsed = JSON.parse(readFileSync(index, "utf8"));
      } catch (e) {
        throw new SafetensorsError(`${index}: not valid JSON: ${(e as Error).message}`);
      }
      const map = parsed.weight_map;
      if (!map || typeof map !== "object") throw new SafetensorsError(`${index}: missing weight_map`);
      const opened = new Map<string, SafetensorsFile>();
      for (const [name, shard] of Object.entries(map)) {
        if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\")) throw new SafetensorsError(`${index}: tensor '${name}' maps to invalid shard ${JSON.stringify(shard)}`);
        let f = opened.get(shard);
        if (!f) {
          f = SafetensorsFile.open(path.join(dir, shard));
          opened.set(shard, f);
        }
        if (!f.has(name)) throw new SafetensorsError(`${index}: tensor '${name}' is mapped to ${shard}, which does not contain it`);
        where.set(name, f);
      }
      for (const f of opened.values()) {
        for (const name of f.tensors.keys()) {
          if (!where.has(name)) throw new SafetensorsError(`${f.file}: tensor '${name}' is not listed in ${INDEX_FILE}`);
        }
      }
      return new SafetensorsCheckpoint(dir, [...opened.values()], where);
    }
    if (existsSync(single)) {
      const f = SafetensorsFile.open(single);
      for (const name of f.tensors.keys()) where.set(name, f);
      return new SafetensorsCheckpoint(dir, [f], where);
    }
    throw new SafetensorsError(`${dir}: no model.safetensors or ${INDEX_FILE}`);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): TensorInfo {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError(`${this.dir}: no tensor '${name}'`);
    return f.info(name);
  }

  read(name: string): { info: TensorInfo; data: StArray } {
    const f = this.where.get(name);
    if (!f) throw new SafetensorsError(`${this.dir}: no tensor '${name}'`);
    return f.read(name);
  }
}

/**
 * Writes a checkpoint directory: one model.safetensors when the total is at most
 * maxShardBytes, else model-0000i-of-0000n.safetensors shards plus the index (written last,
 * so a reader never sees an index naming a missing shard). Each file is written atomically.
 */
export function writeCheckpointTensors(dir: string, tensors: Record<string, TensorToWrite>, maxShardBytes = 2 * 1024 ** 3, metadata: Record<string, string> = { format: "pt" }): string[] {
  const names = Object.keys(tensors).sort();
  let total = 0;
  for (const n of names) total += tensors[n]!.data.byteLength;
  if (total <= maxShardBytes) {
    writeSafetensors(path.join(dir, "model.safetensors"), tensors, metadata);
    return ["model.safetensors"];
  }
  const shards: string[][] = [[]];
  let cur = 0;
  for (const n of names) {
    const b = tensors[n]!.data.byteLength;
    if (cur > 0 && cur + b > maxShardBytes) {
      shards.push([]);
      cur = 0;
    }
    shards[shards.length - 1]!.push(n);
    cur += b;
  }
  const pad = (i: number) => String(i).padStart(5, "0");
  const files: string[] = [];
  const weightMap: Record<string, string> = {};
  shards.forEach((group, i) => {
    const fname = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    const part: Record<string, TensorToWrite> = {};
    for (const n of group) {
      part[n] = tensors[n]!;
      weightMap[n] = fname;
    }
    writeSafetensors(path.join(dir, fname), part, metadata);
    files.push(fname);
  });
  const indexJson = JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2) + "\n";
  writeFileAtomic(path.join(dir, INDEX_FILE), indexJson);
  files.push(INDEX_FILE);
  return files;
}
