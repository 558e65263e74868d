// Native paged attention: thin wrappers over native/paged_attention.cc.
// Not: validation (checks/paged-attention.ts runs first) or computation.
import type { PagedAttentionKernels } from "../spec.js";
import { resolvePaged } from "../checks/paged-attention.js";
import type { Addon, EngineHandle } from "./addon.js";

export function nativePagedAttention(a: Addon, e: EngineHandle): PagedAttentionKernels {
  return {
    pagedAttention(out, q, kCache, vCache, blockTables, queryStart, contextLens, p) {
      const d = resolvePaged("pagedAttention", p);
      a.pagedAttention!(e, out, q, kCache, vCache, blockTables, queryStart, contextLens, d.numSeqs, d.NH, d.KVH, d.HS, d.blockSize, d.maxBlocksPerSeq, d.window, d.scale, kCache instanceof Uint16Array);
    },
    pagedWrite(kCache, vCache, k, v, slotMapping, p) {
      a.pagedWrite!(e, kCache, vCache, k, v, slotMapping, p.KVH, p.HS, kCache instanceof Uint16Array);
    },
  };
}
