// Reference GEMM family: plain loops over Float32Array or Float64Array, every dot product
// accumulated in a JS number (f64). The oracle for the native GEMM paths.
// precision "bf16" rounds copies of the inputs to bf16 first (GemmPrecision).
// Not: fast (no blocking, no threads). The quantised GEMM (`refQuant`) lives with the quant area.
import { decodeBf16, encodeBf16 } from "../../core/dtype.js";
import type { BatchedGemmParams, FArr, GemmKernels, GemmParams, GroupedGemmParams } from "../spec.js";

/**
 * C[cOff..] (M,N) = alpha·op(A)·op(B) + beta·C over sub-arrays starting at the given offsets.
 * beta = 0 never reads C (NaN in C is ignored).
 */
function gemmAt(
  a: FArr, aOff: number, b: FArr, bOff: number, c: FArr, cOff: number,
  M: number, N: number, K: number, transA: boolean, transB: boolean, alpha: number, beta: number,
): void {
  // element strides of op(A) (M,K) and op(B) (K,N)
  const aRs = transA ? 1 : K, aCs = transA ? M : 1;
  const bRs = transB ? 1 : N, bCs = transB ? K : 1;
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[aOff + i * aRs + k * aCs]! * b[bOff + k * bRs + j * bCs]!;
      const ci = cOff + i * N + j;
      c[ci] = beta === 0 ? alpha * s : alpha * s + beta * c[ci]!;
    }
  }
}

/** x (taken as f32) rounded to the nearest bf16, ties to even (core/dtype.ts: NaN stays NaN, overflow → ±Inf). */
export function roundBf16(x: number): number {
  return decodeBf16(encodeBf16(x));
}

/** With precision "bf16": copies of the inputs rounded to bf16 (GemmPrecision); else the inputs. */
function inputs(precision: GemmParams["precision"], a: FArr, b: FArr): [FArr, FArr] {
  if ((precision ?? "f32") === "f32") return [a, b];
  return [a.map(roundBf16), b.map(roundBf16)];
}

export const refGemm: GemmKernels = {
  gemm(a0: FArr, b0: FArr, c: FArr, p: GemmParams): void {
    const [a, b] = inputs(p.precision, a0, b0);
    gemmAt(a, 0, b, 0, c, 0, p.M, p.N, p.K, p.transA ?? false, p.transB ?? false, p.alpha ?? 1, p.beta ?? 0);
  },

  batchedGemm(a0: FArr, b0: FArr, c: FArr, p: BatchedGemmParams): void {
    const [a, b] = inputs(p.precision, a0, b0);
    const { M, N, K } = p;
    for (let i = 0; i < p.batch; i++) {
      gemmAt(a, i * M * K, b, i * K * N, c, i * M * N, M, N, K, p.transA ?? false, p.transB ?? false, p.alpha ?? 1, p.beta ?? 0);
    }
  },

  groupedGemm(x0: FArr, w0: FArr, y: FArr, sizes: Int32Array, p: GroupedGemmParams): void {
    const [x, w] = inputs(p.precision, x0, w0);
    const { K, N } = p;
    let row = 0;
    for (let g = 0; g < sizes.length; g++) {
      const m = sizes[g]!;
      // y_g (m,N) = x_g (m,K) · op(w_g); w_g stored (K,N), or (N,K) with transW
      gemmAt(x, row * K, w, g * K * N, y, row * N, m, N, K, false, p.transW ?? false, 1, p.beta ?? 0);
      row += m;
    }
  },

  groupedGemmWeightGrad(x0: FArr, dy0: FArr, dw: FArr, sizes: Int32Array, p: GroupedGemmParams): void {
    const [x, dy] = inputs(p.precision, x0, dy0);
    const { K, N } = p;
    const beta = p.beta ?? 1;
    let row = 0;
    for (let g = 0; g < sizes.length; g++) {
      const m = sizes[g]!;
      if (p.transW ?? false) {
        // dw_g (N,K) = dy_gᵀ (N,m) · x_g (m,K) + beta·dw_g
        gemmAt(dy, row * N, x, row * K, dw, g * K * N, N, K, m, true, false, 1, beta);
      } else {
        // dw_g (K,N) = x_gᵀ (K,m) · dy_g (m,N) + beta·dw_g
        gemmAt(x, row * K, dy, row * N, dw, g * K * N, K, N, m, true, false, 1, beta);
      }
      row += m;
    }
  },
};

// STUB: the quant area replaces this export.
