// Reference causal attention: the oracle for the native kernels and the f64 path of
// gradient checks. Materialises one query row's scores at a time and accumulates in JS
// numbers (f64). Not: tiled, fast, or memory-frugal beyond O(Tk) per row.
//
// Semantics (spec.ts AttentionKernels): query i sits at key position pos = i + Tk − T and
// sees keys j ∈ (pos − window, pos] (window 0 = all j ≤ pos); query head h reads kv head
// ⌊h·KVH/NH⌋; score = scale·⟨q, k⟩; lse = log Σ_j exp(score).
import type { AttentionKernels, FArr } from "../spec.js";
import { resolveAttention, type AttentionDims } from "../checks/attention.js";

/** Visible key range [lo, pos] of query i. */
function keyRange(d: AttentionDims, i: number): [number, number] {
  const pos = i + d.Tk - d.T;
  const lo = d.window > 0 ? Math.max(0, pos - d.window + 1) : 0;
  return [lo, pos];
}

function scores(d: AttentionDims, q: FArr, k: FArr, qo: number, kb: number, lo: number, hi: number, s: Float64Array): void {
  const ldk = d.KVH * d.HS;
  for (let j = lo; j <= hi; j++) {
    const ko = kb + j * ldk;
    let dot = 0;
    for (let c = 0; c < d.HS; c++) dot += q[qo + c]! * k[ko + c]!;
    s[j - lo] = dot * d.scale;
  }
}

export const refAttention: AttentionKernels = {
  attentionForward(out, lse, q, k, v, p) {
    const d = resolveAttention("attentionForward", p);
    const { B, T, Tk, NH, KVH, HS } = d;
    const s = new Float64Array(Tk);
    const acc = new Float64Array(HS);
    const ldk = KVH * HS;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < NH; h++) {
        const g = Math.floor((h * KVH) / NH);
        const kb = b * Tk * ldk + g * HS;
        for (let i = 0; i < T; i++) {
          const qo = ((b * T + i) * NH + h) * HS;
          const [lo, hi] = keyRange(d, i);
          scores(d, q, k, qo, kb, lo, hi, s);
          let m = -Infinity;
          for (let j = 0; j <= hi - lo; j++) m = Math.max(m, s[j]!);
          let sum = 0;
          acc.fill(0);
          for (let j = 0; j <= hi - lo; j++) {
            const e = Math.exp(s[j]! - m);
            sum += e;
            const vo = kb + (lo + j) * ldk;
            for (let c = 0; c < HS; c++) acc[c] += e * v[vo + c]!;
          }
          // hi ≥ lo always (each query sees itself); an empty row would give out 0, lse −∞.
          const any = hi >= lo;
          for (let c = 0; c < HS; c++) out[qo + c] = any ? acc[c]! / sum : 0;
          lse[(b * NH + h) * T + i] = any ? m + Math.log(sum) : -Infinity;
        }
      }
    }
  },

  attentionBackward(dq, dk, dv, dout, q, k, v, _out, lse, p) {
    const d = resolveAttention("attentionBackward", p);
    const { B, T, Tk, NH, KVH, HS } = d;
    const ldk = KVH * HS;
    const s = new Float64Array(Tk);
    const dp = new Float64Array(Tk);
    const dqRow = new Float64Array(HS);
    const dk64 = new Float64Array(dk.length);
    const dv64 = new Float64Array(dv.length);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < NH; h++) {
        const g = Math.floor((h * KVH) / NH);
        const kb = b * Tk * ldk + g * HS;
        for (let i = 0; i < T; i++) {
          const qo = ((b * T + i) * NH + h) * HS;
          const L = lse[(b * NH + h) * T + i]!;
          const [lo, hi] = keyRange(d, i);
          scores(d, q, k, qo, kb, lo, hi, s);
          // P_j = exp(s_j − lse); dP_j = ⟨dout, v_j⟩; D = Σ_j P_j dP_j (= ⟨dout, out⟩).
          let D = 0;
          for (let j = lo; j <= hi; j++) {
            const P = L === -Infinity ? 0 : Math.exp(s[j - lo]! - L);
            s[j - lo] = P;
            const vo = kb + j * ldk;
            let x = 0;
            for (let c = 0; c < HS; c++) x += dout[qo + c]! * v[vo + c]!;
            dp[j - lo] = x;
            D += P * x;
          }
          dqRow.fill(0);
          for (let j = lo; j <= hi; j++) {
            const P = s[j - lo]!;
            const dS = P * (dp[j - lo]! - D) * d.scale;
            const ko = kb + j * ldk;
            for (let c = 0; c < HS; c++) {
              dqRow[c] += dS * k[ko + c]!;
              dk64[ko + c] += dS * q[qo + c]!;
              dv64[ko + c] += P * dout[qo + c]!;
            }
          }
          for (let c = 0; c < HS; c++) dq[qo + c] = dqRow[c]!;
        }
      }
    }
    dk.set(dk64);
    dv.set(dv64);
  },
};
