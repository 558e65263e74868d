// Reference paged attention: the oracle for the native kernels. Plain loops, one query row
// at a time, scores and sums in JS numbers (f64); keys and values are looked up slot by slot
// through the block table (bf16 codes decoded exactly). Not: fast.
//
// Semantics (spec.ts PagedAttentionKernels): sequence s owns query rows
// [queryStart[s], queryStart[s+1]) at positions contextLen − qlen + i; position pos sees keys
// j ∈ (pos − window, pos] (window 0 = all j ≤ pos); query head h reads kv head ⌊h·KVH/NH⌋.
import { decodeBf16, encodeBf16 } from "../../core/dtype.js";
import type { KvArr, PagedAttentionKernels } from "../spec.js";
import { resolvePaged } from "../checks/paged-attention.js";

/** Value at element index i of a cache (bf16 codes decoded). */
function at(c: KvArr, i: number): number {
  return c instanceof Uint16Array ? decodeBf16(c[i]!) : c[i]!;
}

export const refPagedAttention: PagedAttentionKernels = {
  pagedAttention(out, q, kCache, vCache, blockTables, queryStart, contextLens, p) {
    const d = resolvePaged("pagedAttention", p);
    const { NH, KVH, HS, blockSize: bs } = d;
    const ldk = KVH * HS;
    for (let s = 0; s < d.numSeqs; s++) {
      const r0 = queryStart[s]!, qlen = queryStart[s + 1]! - r0, ctx = contextLens[s]!;
      const table = s * d.maxBlocksPerSeq;
      const scores = new Float64Array(ctx);
      for (let i = 0; i < qlen; i++) {
        const pos = ctx - qlen + i;
        const lo = d.window > 0 ? Math.max(0, pos - d.window + 1) : 0;
        for (let h = 0; h < NH; h++) {
          const g = Math.floor((h * KVH) / NH);
          const qo = ((r0 + i) * NH + h) * HS;
          let m = -Infinity;
          for (let j = lo; j <= pos; j++) {
            const ko = (blockTables[table + Math.floor(j / bs)]! * bs + (j % bs)) * ldk + g * HS;
            let dot = 0;
            for (let c = 0; c < HS; c++) dot += q[qo + c]! * at(kCache, ko + c);
            scores[j] = dot * d.scale;
            m = Math.max(m, scores[j]!);
          }
          let sum = 0;
          const acc = new Float64Array(HS);
          for (let j = lo; j <= pos; j++) {
            const e = Math.exp(scores[j]! - m);
            sum += e;
            const vo = (blockTables[table + Math.floor(j / bs)]! * bs + (j % bs)) * ldk + g * HS;
            for (let c = 0; c < HS; c++) acc[c] += e * at(vCache, vo + c);
          }
          for (let c = 0; c < HS; c++) out[qo + c] = acc[c]! / sum;
        }
      }
    }
  },

  pagedWrite(kCache, vCache, k, v, slotMapping, p) {
    const row = p.KVH * p.HS;
    for (let i = 0; i < slotMapping.length; i++) {
      const slot = slotMapping[i]!;
      if (slot === -1) continue;
      for (let c = 0; c < row; c++) {
        const kv = k[i * row + c]!, vv = v[i * row + c]!;
        if (kCache instanceof Uint16Array) kCache[slot * row + c] = encodeBf16(kv);
        else kCache[slot * row + c] = kv;
        if (vCache instanceof Uint16Array) vCache[slot * row + c] = encodeBf16(vv);
        else vCache[slot * row + c] = vv;
      }
    }
  },
};
