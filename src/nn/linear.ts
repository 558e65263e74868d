// Linear layer y = x·Wᵀ (+ b) with W in HF layout (out, in), as kernel-table calls.
// Not: a module object. Callers own the buffers.
import type { Backend, GemmPrecision } from "../backend/spec.js";
import type { FArr } from "./dims.js";

/** y (N, out) = x (N, in) · Wᵀ + b. Overwrites y. precision: of the GEMM (default: the backend's). */
export function linearForward(be: Backend, y: FArr, x: FArr, w: FArr, b: FArr | undefined, N: number, inF: number, outF: number, precision?: GemmPrecision): void {
  be.gemm(x, w, y, { M: N, N: outF, K: inF, transB: true, precision });
  if (b) be.biasAddForward(y, b, N, outF);
}

/**
 * Backward of linearForward. dw (+=), db (+=). dx: overwritten when `accumulateDx` is false,
 * accumulated when true; pass null to skip it (e.g. the first layer's input).
 */
export function linearBackward(
  be: Backend, dx: FArr | null, dw: FArr, db: FArr | undefined, dy: FArr, x: FArr, w: FArr,
  N: number, inF: number, outF: number, accumulateDx: boolean, precision?: GemmPrecision,
): void {
  // dW (out, in) += dyᵀ (out, N) · x (N, in)
  be.gemm(dy, x, dw, { M: outF, N: inF, K: N, transA: true, beta: 1, precision });
  if (db) be.biasAddBackward(db, dy, N, outF);
  // dx (N, in) = dy (N, out) · W (out, in)
  if (dx) be.gemm(dy, w, dx, { M: N, N: inF, K: outF, beta: accumulateDx ? 1 : 0, precision });
}
