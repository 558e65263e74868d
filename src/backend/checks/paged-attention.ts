// Argument checks for the paged-attention kernels, plus `resolvePaged`, which applies the
// parameter defaults (window 0, scale 1/√HS) the same way for every backend.
// Every block-table entry the kernel will read is range-checked here, so a native call never
// reads outside the cache. Not: a place for computation.
import type { FArr, KvArr, PagedAttentionKernels, PagedAttentionParams, PagedCacheParams } from "../spec.js";
import { type Checks, dim, fail, farr, finite, i32, noAlias, positive, sameDtype } from "./common.js";

/** PagedCacheParams validated. */
export interface PagedCacheDims {
  numBlocks: number;
  blockSize: number;
  KVH: number;
  HS: number;
}

/** PagedAttentionParams with defaults applied and validated. */
export interface PagedAttentionDims extends PagedCacheDims {
  numSeqs: number;
  NH: number;
  maxBlocksPerSeq: number;
  /** 0 = unlimited. */
  window: number;
  scale: number;
}

function resolveCache(kernel: string, p: PagedCacheParams): PagedCacheDims {
  if (typeof p !== "object" || p === null) fail(kernel, `params must be an object, got ${p === null ? "null" : typeof p}`);
  const numBlocks = positive(kernel, "numBlocks", p.numBlocks);
  const blockSize = positive(kernel, "blockSize", p.blockSize);
  const KVH = positive(kernel, "KVH", p.KVH);
  const HS = positive(kernel, "HS", p.HS);
  if (numBlocks * blockSize * KVH * HS > 2 ** 32) fail(kernel, "cache too large (more than 2^32 elements per layer)");
  return { numBlocks, blockSize, KVH, HS };
}

/** Validates p (dims, NH % KVH, window ≥ 0, finite scale) and applies defaults. */
export function resolvePaged(kernel: string, p: PagedAttentionParams): PagedAttentionDims {
  const c = resolveCache(kernel, p);
  const numSeqs = positive(kernel, "numSeqs", p.numSeqs);
  const NH = positive(kernel, "NH", p.NH);
  const maxBlocksPerSeq = positive(kernel, "maxBlocksPerSeq", p.maxBlocksPerSeq);
  if (NH % c.KVH !== 0) fail(kernel, `NH (${NH}) must be a multiple of KVH (${c.KVH})`);
  const window = p.window === undefined ? 0 : dim(kernel, "window", p.window);
  const scale = p.scale === undefined ? 1 / Math.sqrt(c.HS) : finite(kernel, "scale", p.scale);
  return { ...c, numSeqs, NH, maxBlocksPerSeq, window, scale };
}

/** kCache and vCache: both bf16 codes, or both float arrays of `like`'s dtype (`like` is q or k); exact length. */
function caches(kernel: string, kCache: unknown, vCache: unknown, likeName: string, like: FArr, len: number): void {
  for (const [name, c] of [["kCache", kCache], ["vCache", vCache]] as const) {
    if (c instanceof Uint16Array) {
      if (c.length !== len) fail(kernel, `${name} has ${c.length} elements, expected ${len} (numBlocks·blockSize·KVH·HS)`);
    } else {
      farr(kernel, name, c, len);
      sameDtype(kernel, { [name]: c as FArr, [likeName]: like });
    }
  }
  if ((kCache instanceof Uint16Array) !== (vCache instanceof Uint16Array)) fail(kernel, "kCache and vCache must both be bf16 (Uint16Array) or both float arrays");
  noAlias(kernel, "kCache", kCache as KvArr, "vCache", vCache as KvArr);
}

export const checkPagedAttention: Checks<PagedAttentionKernels> = {
  pagedAttention(out, q, kCache, vCache, blockTables, queryStart, contextLens, p) {
    const K = "pagedAttention";
    const d = resolvePaged(K, p);
    const S = d.numSeqs;
    i32(K, "queryStart", queryStart, S + 1);
    i32(K, "contextLens", contextLens, S);
    i32(K, "blockTables", blockTables, S * d.maxBlocksPerSeq);
    if (queryStart[0] !== 0) fail(K, `queryStart[0] must be 0, got ${queryStart[0]}`);
    const N = queryStart[S]!;
    farr(K, "q", q, N * d.NH * d.HS);
    farr(K, "out", out, N * d.NH * d.HS);
    sameDtype(K, { out, q });
    caches(K, kCache, vCache, "q", q, d.numBlocks * d.blockSize * d.KVH * d.HS);
    for (let s = 0; s < S; s++) {
      const qlen = queryStart[s + 1]! - queryStart[s]!;
      const ctx = contextLens[s]!;
      if (qlen < 0) fail(K, `queryStart must be non-decreasing (queryStart[${s + 1}] = ${queryStart[s + 1]} < queryStart[${s}] = ${queryStart[s]})`);
      if (ctx < qlen) fail(K, `contextLens[${s}] = ${ctx} is less than the sequence's ${qlen} new rows`);
      if (ctx > d.maxBlocksPerSeq * d.blockSize) fail(K, `contextLens[${s}] = ${ctx} exceeds maxBlocksPerSeq·blockSize = ${d.maxBlocksPerSeq * d.blockSize}`);
      if (qlen === 0) continue;
      const first = d.window > 0 ? Math.max(0, ctx - qlen - d.window + 1) : 0;
      for (let b = Math.floor(first / d.blockSize); b <= Math.floor((ctx - 1) / d.blockSize); b++) {
        const blk = blockTables[s * d.maxBlocksPerSeq + b]!;
        if (blk < 0 || blk >= d.numBlocks) fail(K, `blockTables[${s}][${b}] = ${blk} is out of range [0, ${d.numBlocks}) and is read (sequence ${s} sees keys ${first}..${ctx - 1})`);
      }
    }
    for (const [name, x] of Object.entries({ q, kCache, vCache, blockTables, queryStart, contextLens })) noAlias(K, "out", out, name, x);
  },
  pagedWrite(kCache, vCache, k, v, slotMapping, p) {
    const K = "pagedWrite";
    const d = resolveCache(K, p);
    if (!(slotMapping instanceof Int32Array)) fail(K, `slotMapping must be an Int32Array, got ${ArrayBuffer.isView(slotMapping) ? (slotMapping as ArrayBufferView).constructor.name : typeof slotMapping}`);
    const N = slotMapping.length;
    farr(K, "k", k, N * d.KVH * d.HS);
    farr(K, "v", v, N * d.KVH * d.HS);
    sameDtype(K, { k, v });
    caches(K, kCache, vCache, "k", k, d.numBlocks * d.blockSize * d.KVH * d.HS);
    const slots = d.numBlocks * d.blockSize;
    const seen = new Set<number>();
    for (let i = 0; i < N; i++) {
      const s = slotMapping[i]!;
      if (s === -1) continue;
      if (s < 0 || s >= slots) fail(K, `slotMapping[${i}] = ${s} is out of range [0, ${slots}) (or −1 to skip)`);
      if (seen.has(s)) fail(K, `slotMapping[${i}] = ${s} repeats an earlier slot; slots must be distinct`);
      seen.add(s);
    }
    for (const c of [["kCache", kCache], ["vCache", vCache]] as const) {
      for (const [name, x] of Object.entries({ k, v, slotMapping })) noAlias(K, c[0], c[1], name, x);
    }
  },
};
