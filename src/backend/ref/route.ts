// Reference routing primitives (MoE dispatch): top-k, counting sort, histogram, prefix
// sums, row gather/scatter. Plain loops, generic over Float32Array/Float64Array; sums
// of products are formed in JS numbers (f64) and rounded once on store.
// Not: fast — topk sorts every full row, sortByKey uses Array.prototype.sort.
import type { FArr, RouteKernels } from "../spec.js";

export const refRoute: RouteKernels = {
  topk(values: FArr, indices: Int32Array, x: FArr, N: number, E: number, K: number): void {
    const order: number[] = new Array(E);
    for (let n = 0; n < N; n++) {
      const base = n * E;
      for (let e = 0; e < E; e++) order[e] = e;
      // Descending by value; ties (including −0 vs +0) by ascending index.
      order.sort((a, b) => {
        const va = x[base + a]!, vb = x[base + b]!;
        return va > vb ? -1 : va < vb ? 1 : a - b;
      });
      for (let k = 0; k < K; k++) {
        indices[n * K + k] = order[k]!;
        values[n * K + k] = x[base + order[k]!]!;
      }
    }
  },

  sortByKey(perm: Int32Array, keys: Int32Array, _numKeys: number): void {
    const order = Array.from({ length: keys.length }, (_, i) => i);
    order.sort((a, b) => keys[a]! - keys[b]! || a - b); // explicit tie-break: stable by position
    perm.set(order);
  },

  histogram(counts: Int32Array, keys: Int32Array, _numBins: number): void {
    counts.fill(0);
    for (let i = 0; i < keys.length; i++) counts[keys[i]!]!++;
  },

  cumsum(out: Int32Array, x: Int32Array, exclusive: boolean): void {
    let s = 0;
    for (let i = 0; i < x.length; i++) {
      const v = x[i]!; // read before the write: out may alias x
      if (exclusive) {
        out[i] = s;
        s = (s + v) | 0;
      } else {
        s = (s + v) | 0;
        out[i] = s;
      }
    }
  },

  gather(out: FArr, x: FArr, idx: Int32Array, _N: number, C: number): void {
    for (let i = 0; i < idx.length; i++) {
      const src = idx[i]! * C;
      for (let c = 0; c < C; c++) out[i * C + c] = x[src + c]!;
    }
  },

  scatterAdd(out: FArr, x: FArr, idx: Int32Array, w: FArr | null, _N: number, C: number): void {
    for (let i = 0; i < idx.length; i++) {
      const dst = idx[i]! * C;
      const wi = w ? w[i]! : 1;
      for (let c = 0; c < C; c++) out[dst + c] = out[dst + c]! + wi * x[i * C + c]!;
    }
  },

  scatterAddBackward(dx: FArr, dw: FArr, dout: FArr, x: FArr, idx: Int32Array, w: FArr, _N: number, C: number): void {
    for (let i = 0; i < idx.length; i++) {
      const src = idx[i]! * C;
      const wi = w[i]!;
      let s = 0;
      for (let c = 0; c < C; c++) {
        const g = dout[src + c]!;
        dx[i * C + c] = wi * g;
        s += g * x[i * C + c]!;
      }
      dw[i] = s;
    }
  },
};
