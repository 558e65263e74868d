// Paged KV cache: a pool of fixed-size blocks holding every layer's keys and values, block
// tables per sequence, reference counts, prefix caching of full blocks and sliding-window
// release. The storage layout is the one the pagedAttention / pagedWrite kernels read
// (spec.ts): per layer, K and V are (numBlocks, blockSize, KVH, HS), as f32 values or bf16
// codes; a token in block b at offset o lives in slot b·blockSize + o of every layer.
//
// What it is not: a scheduler (it answers canAllocate / canAppend; the engine decides whom
// to preempt) and not the attention itself. It never computes keys or values: `append`
// reserves slots, the caller writes them with pagedWrite in the same step.
//
// Blocks and their life:
//   1. free: never used, or released without a hash. `allocate`/`append` take these first.
//   2. in use: reference count ≥ 1 (several sequences share a prefix block).
//   3. cached: reference count 0 but still holding a full block whose hash is in the prefix
//      cache; reused by a later prefix hit, or evicted (least recently released first) when
//      no free block is left. A sequence releases its blocks last-to-first, so a chain's tail
//      is evicted before its head (a hit needs the head).
// Prefix caching: a full block's key is hash(prevHash, its blockSize token ids) (SHA-256,
// chained from the first block), so a hit on block i implies the whole prefix matches. A block
// is published when `append` fills it (its contents are written by the caller in the same
// step, before any attention reads them). Hits are limited to the first len − 1 tokens of a
// prompt, so at least one token is always computed (its logits are needed).
// Sliding window: with window W > 0, a query at position p sees keys (p − W, p]; when a
// sequence appends tokens at positions ≥ L, blocks wholly before L − W + 1 are never read
// again and are released (their block-table entries become −1).
import { createHash } from "node:crypto";

export type KvDtype = "f32" | "bf16";
export type SeqId = number | string;

export interface KvCacheOptions {
  /** Layers (L). */
  numLayers: number;
  /** Key/value heads (KVH). */
  numKvHeads: number;
  /** Head size (HS). */
  headSize: number;
  /** Blocks in the pool, shared by all sequences (every block spans all layers). */
  numBlocks: number;
  /** Tokens per block. Default 16. */
  blockSize?: number;
  /** Storage: "f32" (default) or "bf16" (codes in Uint16Array, half the bytes). */
  dtype?: KvDtype;
  /**
   * Sliding window used to release blocks: the largest window of any layer, or 0 (default)
   * when some layer attends to every earlier token (then nothing is released).
   */
  window?: number;
  /** Prefix caching of full blocks. Default true. */
  prefixCaching?: boolean;
  /**
   * Most tokens one sequence may hold; sets the block-table width (⌈maxSeqLen / blockSize⌉).
   * Default numBlocks·blockSize without a window; 65536 with one (a windowed sequence outgrows
   * the pool): set it to the model's context length.
   */
  maxSeqLen?: number;
}

/** Bad options, unknown sequences, a full pool. */
export class KvCacheError extends Error {
  override name = "KvCacheError";
}

export interface KvCacheStats {
  numBlocks: number;
  /** Blocks with reference count ≥ 1. */
  usedBlocks: number;
  /** Blocks holding nothing. */
  freeBlocks: number;
  /** Blocks with reference count 0 kept for prefix hits (evictable). */
  cachedBlocks: number;
  /** usedBlocks / numBlocks. */
  usage: number;
  numSeqs: number;
  /** 2 (K and V) · L · KVH · HS · bytes per element (4 f32, 2 bf16). */
  bytesPerToken: number;
  /** Storage of the whole pool. */
  totalBytes: number;
  /** Prompt tokens looked up by allocate, and those found in the prefix cache. */
  prefixQueryTokens: number;
  prefixHitTokens: number;
}

interface Seq {
  /** Physical block per logical block; −1 once released by the window. */
  blocks: number[];
  /** Tokens held. */
  len: number;
  /** Hash of the last full block ("" before the first). */
  lastHash: string;
  /** Token ids of the partial last block. */
  pending: number[];
}

function fail(msg: string): never {
  throw new KvCacheError(msg);
}

function intOpt(name: string, v: unknown, def: number | undefined, min: number): number {
  if (v === undefined) {
    if (def === undefined) fail(`kv cache: ${name} is required`);
    return def;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) fail(`kv cache: ${name} must be an integer ≥ ${min}, got ${String(v)}`);
  return v;
}

/** 2 · L · KVH · HS · (4 for f32, 2 for bf16): bytes one token occupies across all layers. */
export function kvBytesPerToken(numLayers: number, numKvHeads: number, headSize: number, dtype: KvDtype = "f32"): number {
  return 2 * numLayers * numKvHeads * headSize * (dtype === "bf16" ? 2 : 4);
}

function blockHash(prev: string, tokens: readonly number[]): string {
  return createHash("sha256").update(prev).update(new Uint8Array(Int32Array.from(tokens).buffer)).digest("base64");
}

export class KvCachePool {
  readonly numLayers: number;
  readonly numKvHeads: number;
  readonly headSize: number;
  readonly numBlocks: number;
  readonly blockSize: number;
  readonly dtype: KvDtype;
  readonly window: number;
  readonly prefixCaching: boolean;
  readonly maxSeqLen: number;
  /** Width of a block table: ⌈maxSeqLen / blockSize⌉. */
  readonly maxBlocksPerSeq: number;
  readonly bytesPerToken: number;

  private readonly kStore: (Float32Array | Uint16Array)[];
  private readonly vStore: (Float32Array | Uint16Array)[];
  private readonly refCount: Int32Array;
  /** Hash a block is published under (its entry in `cached` points back to it), or undefined. */
  private readonly hashOf: (string | undefined)[];
  /** Free blocks; pop() takes the lowest index first. */
  private readonly freeList: number[] = [];
  /** Cached blocks with reference count 0, least recently released first. */
  private readonly evictable = new Map<number, true>();
  /** Prefix cache: block hash → block. */
  private readonly cached = new Map<string, number>();
  private readonly seqs = new Map<SeqId, Seq>();
  private prefixQueryTokens = 0;
  private prefixHitTokens = 0;

  constructor(opts: KvCacheOptions) {
    if (typeof opts !== "object" || opts === null) fail("kv cache: options must be an object");
    this.numLayers = intOpt("numLayers", opts.numLayers, undefined, 1);
    this.numKvHeads = intOpt("numKvHeads", opts.numKvHeads, undefined, 1);
    this.headSize = intOpt("headSize", opts.headSize, undefined, 1);
    this.numBlocks = intOpt("numBlocks", opts.numBlocks, undefined, 1);
    this.blockSize = intOpt("blockSize", opts.blockSize, 16, 1);
    this.window = intOpt("window", opts.window, 0, 0);
    this.maxSeqLen = intOpt("maxSeqLen", opts.maxSeqLen, this.window > 0 ? 65536 : this.numBlocks * this.blockSize, 1);
    const dtype = opts.dtype ?? "f32";
    if (dtype !== "f32" && dtype !== "bf16") fail(`kv cache: dtype must be "f32" or "bf16", got ${String(dtype)}`);
    this.dtype = dtype;
    if (opts.prefixCaching !== undefined && typeof opts.prefixCaching !== "boolean") fail(`kv cache: prefixCaching must be a boolean, got ${String(opts.prefixCaching)}`);
    this.prefixCaching = opts.prefixCaching ?? true;
    this.maxBlocksPerSeq = Math.ceil(this.maxSeqLen / this.blockSize);
    this.bytesPerToken = kvBytesPerToken(this.numLayers, this.numKvHeads, this.headSize, dtype);
    const perLayer = this.numBlocks * this.blockSize * this.numKvHeads * this.headSize;
    if (perLayer > 2 ** 32) fail(`kv cache: ${perLayer} elements per layer exceed 2^32; use fewer blocks`);
    const make = () => (dtype === "bf16" ? new Uint16Array(perLayer) : new Float32Array(perLayer));
    this.kStore = Array.from({ length: this.numLayers }, make);
    this.vStore = Array.from({ length: this.numLayers }, make);
    this.refCount = new Int32Array(this.numBlocks);
    this.hashOf = new Array<string | undefined>(this.numBlocks).fill(undefined);
    for (let b = this.numBlocks - 1; b >= 0; b--) this.freeList.push(b);
  }

  /** Keys of one layer, (numBlocks, blockSize, KVH, HS). */
  k(layer: number): Float32Array | Uint16Array {
    return this.kStore[this.layer(layer)]!;
  }

  /** Values of one layer, (numBlocks, blockSize, KVH, HS). */
  v(layer: number): Float32Array | Uint16Array {
    return this.vStore[this.layer(layer)]!;
  }

  has(id: SeqId): boolean {
    return this.seqs.has(id);
  }

  /** Tokens sequence id holds. */
  seqLen(id: SeqId): number {
    return this.seq(id).len;
  }

  /** Blocks that can be handed out now (free + evictable). */
  availableBlocks(): number {
    return this.freeList.length + this.evictable.size;
  }

  /** Whether n more blocks can be handed out now. */
  canAllocate(n: number): boolean {
    return n <= this.availableBlocks();
  }

  /** Tokens of `tokens` a later allocate would find in the prefix cache (no side effects). */
  lookupPrefix(tokens: ArrayLike<number>): number {
    return this.prefixHits(tokens).blocks.length * this.blockSize;
  }

  /**
   * Registers sequence id (which must be new) and attaches the cached blocks of the longest
   * cached prefix of `tokens` (the prompt). Returns the number of tokens found (a multiple of
   * blockSize, < tokens.length): the caller appends tokens from there on.
   */
  allocate(id: SeqId, tokens: ArrayLike<number>): number {
    if (this.seqs.has(id)) fail(`kv cache: sequence ${String(id)} is already allocated`);
    checkTokens(tokens);
    if (tokens.length > this.maxSeqLen) fail(`kv cache: prompt of ${tokens.length} tokens exceeds maxSeqLen ${this.maxSeqLen}`);
    const hit = this.prefixHits(tokens);
    for (const b of hit.blocks) this.attach(b);
    const len = hit.blocks.length * this.blockSize;
    this.seqs.set(id, { blocks: hit.blocks, len, lastHash: hit.lastHash, pending: [] });
    this.prefixQueryTokens += tokens.length;
    this.prefixHitTokens += len;
    return len;
  }

  /** New blocks an append of n tokens to id needs (before any window release). */
  blocksNeeded(id: SeqId, n: number): number {
    const s = this.seq(id);
    return Math.max(0, Math.ceil((s.len + n) / this.blockSize) - s.blocks.length);
  }

  /** Whether append(id, n tokens) would succeed now (counting blocks the window releases). */
  canAppend(id: SeqId, n: number): boolean {
    const s = this.seq(id);
    if (s.len + n > this.maxSeqLen) return false;
    return this.blocksNeeded(id, n) <= this.availableBlocks() + this.windowReleasable(s).filter((b) => this.refCount[b] === 1).length;
  }

  /**
   * Reserves slots for `tokens` (the next tokens of sequence id, whose keys and values the
   * caller computes in this step) and returns their slots (written into `out` at `offset` when
   * given). Blocks outside the window are released first. Throws KvCacheError when the pool
   * has too few blocks (then only out-of-window blocks were released) or maxSeqLen is passed.
   */
  append(id: SeqId, tokens: ArrayLike<number>, out?: Int32Array, offset = 0): Int32Array {
    const s = this.seq(id);
    checkTokens(tokens);
    const n = tokens.length;
    if (s.len + n > this.maxSeqLen) fail(`kv cache: sequence ${String(id)} would hold ${s.len + n} tokens, more than maxSeqLen ${this.maxSeqLen}`);
    const slots = out ?? new Int32Array(n);
    if (offset < 0 || !Number.isInteger(offset) || offset + n > slots.length) fail(`kv cache: out has room for ${slots.length - offset} slots at offset ${offset}, need ${n}`);
    for (const i of this.windowReleasableIndices(s)) {
      this.release(s.blocks[i]!);
      s.blocks[i] = -1;
    }
    const need = this.blocksNeeded(id, n);
    if (need > this.availableBlocks()) fail(`kv cache full: sequence ${String(id)} needs ${need} more blocks, ${this.availableBlocks()} available (of ${this.numBlocks})`);
    for (let i = 0; i < need; i++) s.blocks.push(this.take());
    const bs = this.blockSize;
    for (let t = 0; t < n; t++) {
      const pos = s.len + t;
      slots[offset + t] = s.blocks[Math.floor(pos / bs)]! * bs + (pos % bs);
      s.pending.push(tokens[t]!);
      if (s.pending.length === bs) {
        s.lastHash = blockHash(s.lastHash, s.pending);
        this.publish(s.blocks[Math.floor(pos / bs)]!, s.lastHash);
        s.pending = [];
      }
    }
    s.len += n;
    return slots;
  }

  /** Releases every block of sequence id (finished, cancelled or preempted) and forgets it. */
  free(id: SeqId): void {
    const s = this.seq(id);
    for (let i = s.blocks.length - 1; i >= 0; i--) if (s.blocks[i]! >= 0) this.release(s.blocks[i]!);
    this.seqs.delete(id);
  }

  /** A copy of id's block table (−1 where the window released a block). */
  blockTable(id: SeqId): Int32Array {
    return Int32Array.from(this.seq(id).blocks);
  }

  /**
   * Block tables of several sequences for pagedAttention: out (ids.length, maxBlocksPerSeq)
   * row-major, padded with −1. Allocates out when not given.
   */
  fillBlockTables(ids: readonly SeqId[], out?: Int32Array): Int32Array {
    const W = this.maxBlocksPerSeq;
    const t = out ?? new Int32Array(ids.length * W);
    if (t.length !== ids.length * W) fail(`kv cache: block-table array has ${t.length} entries, expected ${ids.length}·${W}`);
    t.fill(-1);
    ids.forEach((id, r) => {
      const b = this.seq(id).blocks;
      for (let i = 0; i < b.length; i++) t[r * W + i] = b[i]!;
    });
    return t;
  }

  /** Reference count of a block (for tests and metrics). */
  refCountOf(block: number): number {
    return this.refCount[block] ?? fail(`kv cache: block ${block} out of range [0, ${this.numBlocks})`);
  }

  stats(): KvCacheStats {
    let used = 0;
    for (let b = 0; b < this.numBlocks; b++) if (this.refCount[b]! > 0) used++;
    return {
      numBlocks: this.numBlocks,
      usedBlocks: used,
      freeBlocks: this.freeList.length,
      cachedBlocks: this.evictable.size,
      usage: used / this.numBlocks,
      numSeqs: this.seqs.size,
      bytesPerToken: this.bytesPerToken,
      totalBytes: this.bytesPerToken * this.numBlocks * this.blockSize,
      prefixQueryTokens: this.prefixQueryTokens,
      prefixHitTokens: this.prefixHitTokens,
    };
  }

  // ---------------------------------------------------------------------------

  private layer(l: number): number {
    if (!Number.isInteger(l) || l < 0 || l >= this.numLayers) fail(`kv cache: layer ${l} out of range [0, ${this.numLayers})`);
    return l;
  }

  private seq(id: SeqId): Seq {
    return this.seqs.get(id) ?? fail(`kv cache: unknown sequence ${String(id)}`);
  }

  private prefixHits(tokens: ArrayLike<number>): { blocks: number[]; lastHash: string } {
    const blocks: number[] = [];
    let h = "";
    if (!this.prefixCaching) return { blocks, lastHash: h };
    const bs = this.blockSize;
    for (let i = 0; (i + 1) * bs <= tokens.length - 1; i++) {
      const next = blockHash(h, Array.from({ length: bs }, (_, t) => tokens[i * bs + t]!));
      const b = this.cached.get(next);
      if (b === undefined) break;
      blocks.push(b);
      h = next;
    }
    return { blocks, lastHash: h };
  }

  /** Logical block indices of s that the next append releases (wholly before len − W + 1). */
  private windowReleasableIndices(s: Seq): number[] {
    if (this.window === 0) return [];
    const firstNeeded = Math.max(0, s.len - this.window + 1);
    const out: number[] = [];
    for (let i = 0; i < Math.floor(firstNeeded / this.blockSize); i++) if (s.blocks[i]! >= 0) out.push(i);
    return out;
  }

  private windowReleasable(s: Seq): number[] {
    return this.windowReleasableIndices(s).map((i) => s.blocks[i]!);
  }

  private attach(b: number): void {
    if (this.refCount[b] === 0) this.evictable.delete(b);
    this.refCount[b]!++;
  }

  private release(b: number): void {
    if (--this.refCount[b]! > 0) return;
    if (this.hashOf[b] !== undefined) this.evictable.set(b, true);
    else this.freeList.push(b);
  }

  /** A block with reference count 1: a free one, else the least recently released cached one. */
  private take(): number {
    let b = this.freeList.pop();
    if (b === undefined) {
      const first = this.evictable.keys().next();
      if (first.done) fail("kv cache full");
      b = first.value;
      this.evictable.delete(b);
      this.cached.delete(this.hashOf[b]!);
      this.hashOf[b] = undefined;
    }
    this.refCount[b] = 1;
    return b;
  }

  /** Makes full block b findable under hash h (unless another block already is). */
  private publish(b: number, h: string): void {
    if (!this.prefixCaching || this.cached.has(h)) return;
    this.cached.set(h, b);
    this.hashOf[b] = h;
  }
}

function checkTokens(tokens: ArrayLike<number>): void {
  if (tokens === null || typeof tokens !== "object" || typeof tokens.length !== "number") fail("kv cache: tokens must be an array of token ids");
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (!Number.isInteger(t) || t < 0 || t > 0x7fffffff) fail(`kv cache: tokens[${i}] = ${String(t)} is not a token id (a non-negative integer)`);
  }
}
