// Tokenise-once cache: a corpus turned into binary shards of token ids, with an index that says
// which corpus and tokenizer produced them.
//
// Layout of a cache directory:
//   train-00000.bin, train-00001.bin, …   token ids of the train split, each shard ≤ shardTokens ids
//   val-00000.bin, …                      token ids of the val split
//   index.json                            ShardIndex; written last, so a directory without it is no cache
// Ids are little-endian uint16 when the vocabulary fits (V ≤ 65536), else uint32. Each split is one
// continuous stream cut into shards at fixed token counts (a document may continue in the next
// shard); every document is preceded by the tokenizer's eos id (llm.c convention), so the stream is
//   eos d0 eos d1 eos d2 …
// and every document's first token is predicted from an eos context. Documents go to val by
// position: document i (0-based, corpus order) is in val when (i + 1) % valEvery === 0.
//
// Deliberately not here: batching and sampling (loader.ts), reading corpora (corpus.ts).

import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, unlinkSync } from "node:fs";
import { createHash } from "node:crypto";
import { endianness } from "node:os";
import path from "node:path";
import { writeFileAtomic } from "../core/fs.js";
import { corpusFingerprint, iterateDocuments, type CorpusSpec } from "./corpus.js";
import type { Tokenizer } from "./types.js";

export type Split = "train" | "val";
export type ShardDtype = "uint16" | "uint32";

export interface ShardEntry {
  file: string;
  tokens: number;
}

export interface ShardIndex {
  version: 1;
  fingerprint: string;
  tokenizerHash: string;
  dtype: ShardDtype;
  vocabSize: number;
  eosId: number;
  /** Document i is in val when (i + 1) % valEvery === 0; 0 means no val split. */
  valEvery: number;
  /** Set when there were too few documents to hold out whole ones: tokens from here on are val. */
  valFromToken?: number;
  shardTokens: number;
  documents: { train: number; val: number };
  train: ShardEntry[];
  val: ShardEntry[];
  totalTokens: number;
}

export interface BuildProgress {
  documents: number;
  tokens: number;
  /** The document just tokenised. */
  source: string;
}

export interface BuildOptions {
  /** Ids per shard file (default 16M). */
  shardTokens?: number;
  /** Fraction of documents held out for val (default 0.05 → every 20th document). 0: no val split. */
  valFraction?: number;
  onProgress?: (p: BuildProgress) => void;
}

export const SHARD_INDEX_FILE = "index.json";
export const SHARD_FORMAT_VERSION = 1;

/** What is wrong with a cache directory: absent, built from other inputs, or damaged. */
export class ShardCacheError extends Error {
  override name = "ShardCacheError";
  constructor(
    message: string,
    readonly reason: "missing" | "stale" | "corrupt",
  ) {
    super(message);
  }
}

/** Document i goes to val when (i + 1) % valEvery === 0: valEvery = round(1 / valFraction), ≥ 2; 0 for no val. */
export function valEveryFor(valFraction: number): number {
  return valFraction === 0 ? 0 : Math.max(2, Math.round(1 / valFraction));
}

/** A tokenizer hash for cache keys: SHA-256 of its tokenizer.json. */
export function tokenizerHash(tok: Tokenizer): string {
  return createHash("sha256").update(JSON.stringify(tok.toJSON())).digest("hex");
}

const HOST_LE = endianness() === "LE";

function bytesPerToken(dtype: ShardDtype): 2 | 4 {
  return dtype === "uint16" ? 2 : 4;
}

/** Swaps the bytes of each `width`-byte word in place (only needed on big-endian hosts). */
function swapBytes(b: Uint8Array, width: 2 | 4): void {
  for (let i = 0; i + width <= b.length; i += width) {
    for (let j = 0; j < width / 2; j++) {
      const t = b[i + j];
      b[i + j] = b[i + width - 1 - j];
      b[i + width - 1 - j] = t;
    }
  }
}

/** Accumulates one split's stream and writes a shard each time shardTokens ids are buffered. */
class SplitWriter {
  readonly entries: ShardEntry[] = [];
  private readonly buf: Uint16Array | Uint32Array;
  private fill = 0;
  total = 0;

  constructor(
    private readonly dir: string,
    private readonly split: Split,
    private readonly dtype: ShardDtype,
    private readonly vocabSize: number,
    shardTokens: number,
  ) {
    this.buf = dtype === "uint16" ? new Uint16Array(shardTokens) : new Uint32Array(shardTokens);
  }

  push(id: number, source: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new Error(`tokenizer produced id ${id} outside [0, ${this.vocabSize}) for ${source}`);
    }
    this.buf[this.fill++] = id;
    this.total++;
    if (this.fill === this.buf.length) this.flush();
  }

  flush(): void {
    if (this.fill === 0) return;
    const file = `${this.split}-${String(this.entries.length).padStart(5, "0")}.bin`;
    const bytes = new Uint8Array(this.buf.buffer, 0, this.fill * this.buf.BYTES_PER_ELEMENT);
    if (!HOST_LE) swapBytes(bytes, bytesPerToken(this.dtype));
    writeFileAtomic(path.join(this.dir, file), bytes);
    this.entries.push({ file, tokens: this.fill });
    this.fill = 0;
  }
}

/**
 * Tokenises the corpus once into `dir` (created if needed). Any previous index.json is removed
 * first and written last, so an interrupted build leaves no valid-looking cache; shard files of an
 * earlier build that the new index does not list are deleted at the end.
 */
export function buildShards(spec: CorpusSpec, tokenizer: Tokenizer, tokHash: string, dir: string, opts: BuildOptions = {}): ShardSet {
  const shardTokens = opts.shardTokens ?? 16 * 1024 * 1024;
  const valFraction = opts.valFraction ?? 0.05;
  if (!Number.isInteger(shardTokens) || shardTokens < 1) throw new RangeError(`shardTokens must be a positive integer, got ${shardTokens}`);
  if (!(valFraction >= 0 && valFraction <= 0.5)) throw new RangeError(`valFraction must be in [0, 0.5], got ${valFraction}`);
  const eos = tokenizer.eosId;
  const V = tokenizer.vocabSize;
  if (eos === undefined) throw new Error("buildShards: the tokenizer has no eos id to separate documents");
  if (!Number.isInteger(V) || V < 1 || V > 2 ** 31) throw new RangeError(`bad tokenizer vocabSize ${V} (ids are int32)`);
  const valEvery = valEveryFor(valFraction);
  const dtype: ShardDtype = V <= 65536 ? "uint16" : "uint32";
  const fingerprint = corpusFingerprint(spec);

  mkdirSync(dir, { recursive: true });
  const indexPath = path.join(dir, SHARD_INDEX_FILE);
  if (existsSync(indexPath)) unlinkSync(indexPath);

  // pass 1 holds out whole documents; with too few documents for that (val empty, e.g. one .txt
  // file) pass 2 holds out the last valFraction of the token stream instead
  const pass = (valFromToken: number) => {
    const writers = {
      train: new SplitWriter(dir, "train", dtype, V, shardTokens),
      val: new SplitWriter(dir, "val", dtype, V, shardTokens),
    };
    const documents = { train: 0, val: 0 };
    let i = 0, seen = 0;
    const push = (split: Split, id: number, source: string) => {
      writers[valFromToken >= 0 ? (seen >= valFromToken ? "val" : "train") : split].push(id, source);
      seen++;
    };
    for (const doc of iterateDocuments(spec)) {
      const split: Split = valFromToken < 0 && valEvery > 0 && (i + 1) % valEvery === 0 ? "val" : "train";
      const docSplit: Split = valFromToken >= 0 && seen >= valFromToken ? "val" : split;
      push(split, eos, doc.source);
      for (const id of tokenizer.encode(doc.text)) push(split, id, doc.source);
      documents[docSplit]++;
      i++;
      opts.onProgress?.({ documents: i, tokens: writers.train.total + writers.val.total, source: doc.source });
    }
    writers.train.flush();
    writers.val.flush();
    return { writers, documents };
  };
  let { writers, documents } = pass(-1);
  let valFromToken: number | undefined;
  if (valEvery > 0 && writers.val.total === 0 && writers.train.total > 1) {
    const total = writers.train.total;
    valFromToken = total - Math.max(1, Math.min(total - 1, Math.ceil(total * valFraction)));
    ({ writers, documents } = pass(valFromToken));
  }
  if (writers.train.total === 0) throw new Error("buildShards: the corpus has no documents");

  const index: ShardIndex = {
    version: SHARD_FORMAT_VERSION,
    fingerprint,
    tokenizerHash: tokHash,
    dtype,
    vocabSize: V,
    eosId: eos,
    valEvery,
    ...(valFromToken !== undefined ? { valFromToken } : {}),
    shardTokens,
    documents,
    train: writers.train.entries,
    val: writers.val.entries,
    totalTokens: writers.train.total + writers.val.total,
  };
  writeFileAtomic(indexPath, JSON.stringify(index, null, 1) + "\n");
  const keep = new Set([...index.train, ...index.val].map((e) => e.file));
  for (const f of readdirSync(dir)) {
    if (/^(train|val)-\d{5,}\.bin$/.test(f) && !keep.has(f)) unlinkSync(path.join(dir, f));
  }
  return new ShardSet(dir, index);
}

/**
 * Opens a cache directory and validates it: the index's shape, that each listed shard exists with
 * exactly tokens × bytes-per-token bytes, and — when given — the corpus fingerprint and tokenizer
 * hash. Throws ShardCacheError ("missing" | "stale" | "corrupt") naming the problem.
 */
export function openShards(dir: string, expectFingerprint?: string, expectTokenizerHash?: string): ShardSet {
  const indexPath = path.join(dir, SHARD_INDEX_FILE);
  if (!existsSync(indexPath)) throw new ShardCacheError(`no token cache at ${dir} (missing ${SHARD_INDEX_FILE})`, "missing");
  let index: ShardIndex;
  try {
    index = JSON.parse(readFileSync(indexPath, "utf8")) as ShardIndex;
  } catch (e) {
    throw new ShardCacheError(`${indexPath}: unreadable index (${(e as Error).message})`, "corrupt");
  }
  const bad = (what: string) => new ShardCacheError(`${indexPath}: ${what}`, "corrupt");
  if (index === null || typeof index !== "object") throw bad("not an object");
  if (index.version !== SHARD_FORMAT_VERSION) {
    throw new ShardCacheError(`${indexPath}: cache format version ${String(index.version)}, expected ${SHARD_FORMAT_VERSION}; the cache is stale — rebuild it`, "stale");
  }
  if (index.dtype !== "uint16" && index.dtype !== "uint32") throw bad(`bad dtype ${JSON.stringify(index.dtype)}`);
  if (!Array.isArray(index.train) || !Array.isArray(index.val)) throw bad("train/val lists missing");
  if (!Number.isInteger(index.vocabSize) || index.vocabSize < 1) throw bad("bad vocabSize");
  if (expectFingerprint !== undefined && index.fingerprint !== expectFingerprint) {
    throw new ShardCacheError(`token cache at ${dir} was built from a different corpus (files, sizes or modification times changed); the cache is stale — rebuild it`, "stale");
  }
  if (expectTokenizerHash !== undefined && index.tokenizerHash !== expectTokenizerHash) {
    throw new ShardCacheError(`token cache at ${dir} was built with a different tokenizer; the cache is stale — rebuild it`, "stale");
  }
  const bpt = bytesPerToken(index.dtype);
  let total = 0;
  for (const e of [...index.train, ...index.val]) {
    if (typeof e?.file !== "string" || path.basename(e.file) !== e.file || !Number.isInteger(e.tokens) || e.tokens < 1) {
      throw bad(`bad shard entry ${JSON.stringify(e)}`);
    }
    const p = path.join(dir, e.file);
    if (!existsSync(p)) throw new ShardCacheError(`${p}: shard listed in the index is missing`, "corrupt");
    let size: number;
    const fd = openSync(p, "r");
    try {
      size = fstatSync(fd).size;
    } finally {
      closeSync(fd);
    }
    if (size !== e.tokens * bpt) {
      throw new ShardCacheError(`${p}: corrupt shard (${size} bytes, index says ${e.tokens} tokens × ${bpt} bytes = ${e.tokens * bpt})`, "corrupt");
    }
    total += e.tokens;
  }
  if (total !== index.totalTokens) throw bad(`totalTokens ${index.totalTokens} ≠ sum of shards ${total}`);
  return new ShardSet(dir, index);
}

/**
 * Opens the cache in `dir` if it was built from this corpus and tokenizer with the same val split;
 * otherwise (missing, stale, corrupt, other valFraction) rebuilds it. `rebuilt` says which
 * happened, `reason` why. A different shardTokens alone does not rebuild (the streams are the same).
 */
export function ensureShards(
  spec: CorpusSpec,
  tokenizer: Tokenizer,
  tokHash: string,
  dir: string,
  opts: BuildOptions = {},
): { shards: ShardSet; rebuilt: boolean; reason?: string } {
  try {
    const shards = openShards(dir, corpusFingerprint(spec), tokHash);
    const valEvery = valEveryFor(opts.valFraction ?? 0.05);
    const staleEmptyVal = valEvery > 0 && shards.splitTokens("val") === 0 && shards.splitTokens("train") > 1; // built before token hold-out
    if (shards.index.valEvery === valEvery && !staleEmptyVal) return { shards, rebuilt: false };
    const reason = `token cache at ${dir} holds out every ${shards.index.valEvery}-th document for val, this run every ${valEvery}-th; rebuilding`;
    return { shards: buildShards(spec, tokenizer, tokHash, dir, opts), rebuilt: true, reason };
  } catch (e) {
    if (!(e instanceof ShardCacheError)) throw e;
    return { shards: buildShards(spec, tokenizer, tokHash, dir, opts), rebuilt: true, reason: e.message };
  }
}

/** How many shard files a ShardSet keeps open at once. */
const MAX_OPEN_FDS = 4;

/**
 * A validated cache: reads any token range of a split by offset (fs.readSync at a byte position),
 * across shard boundaries, keeping a few file descriptors open (LRU). Call close() when done.
 */
export class ShardSet {
  readonly bytesPerToken: 2 | 4;
  /** Per split: starting token of each shard in the split's stream, plus the total at the end. */
  private readonly starts: Record<Split, number[]>;
  private readonly fds = new Map<string, number>(); // insertion order = LRU order
  private scratch = new Uint8Array(0); // own ArrayBuffer, offset 0: aligned for typed views

  constructor(
    readonly dir: string,
    readonly index: ShardIndex,
  ) {
    this.bytesPerToken = bytesPerToken(index.dtype);
    const prefix = (es: ShardEntry[]) => {
      const s = [0];
      for (const e of es) s.push(s[s.length - 1] + e.tokens);
      return s;
    };
    this.starts = { train: prefix(index.train), val: prefix(index.val) };
  }

  /** Tokens in a split's stream. */
  splitTokens(split: Split): number {
    const s = this.starts[split];
    return s[s.length - 1];
  }

  /** Copies tokens [start, start + out.length) of a split's stream into `out`. */
  read(split: Split, start: number, out: Int32Array | Uint32Array): void {
    const n = out.length;
    const starts = this.starts[split];
    if (!Number.isInteger(start) || start < 0 || start + n > starts[starts.length - 1]) {
      throw new RangeError(`read(${split}, ${start}, ${n}) outside the split's ${starts[starts.length - 1]} tokens`);
    }
    const entries = this.index[split];
    // binary search: last shard whose start ≤ start
    let lo = 0;
    let hi = entries.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= start) lo = mid;
      else hi = mid - 1;
    }
    let done = 0;
    for (let s = lo; done < n; s++) {
      const off = start + done - starts[s];
      const take = Math.min(n - done, entries[s].tokens - off);
      this.readShard(entries[s].file, off, take, out, done);
      done += take;
    }
  }

  private readShard(file: string, tokenOffset: number, count: number, out: Int32Array | Uint32Array, outOffset: number): void {
    const bpt = this.bytesPerToken;
    const nbytes = count * bpt;
    if (this.scratch.length < nbytes) this.scratch = new Uint8Array(Math.max(nbytes, 4096));
    const fd = this.fd(file);
    let got = 0;
    while (got < nbytes) {
      const r = readSync(fd, this.scratch, got, nbytes - got, tokenOffset * bpt + got);
      if (r === 0) throw new ShardCacheError(`${path.join(this.dir, file)}: corrupt shard (ends before token ${tokenOffset + count})`, "corrupt");
      got += r;
    }
    const b = this.scratch;
    if (!HOST_LE) swapBytes(b.subarray(0, nbytes), bpt);
    out.set(bpt === 2 ? new Uint16Array(b.buffer, 0, count) : new Uint32Array(b.buffer, 0, count), outOffset);
  }

  private fd(file: string): number {
    const have = this.fds.get(file);
    if (have !== undefined) {
      this.fds.delete(file);
      this.fds.set(file, have);
      return have;
    }
    if (this.fds.size >= MAX_OPEN_FDS) {
      const [oldest, ofd] = this.fds.entries().next().value as [string, number];
      closeSync(ofd);
      this.fds.delete(oldest);
    }
    const fd = openSync(path.join(this.dir, file), "r");
    this.fds.set(file, fd);
    return fd;
  }

  /** Closes the open shard files (reads reopen them as needed). */
  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

/** The one name of a corpus's token shards under a cache directory (by corpus and tokenizer). */
export function shardCacheDir(cacheDir: string, spec: CorpusSpec, tokHash: string): string {
  return path.join(cacheDir, `shards-${corpusFingerprint(spec).slice(0, 12)}-${tokHash.slice(0, 12)}`);
}
