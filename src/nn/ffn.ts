// Dense SwiGLU FFN: y = down(silu(gate·x) ⊙ up·x), with gate and up fused in one
// (2I, C) weight (rows [0,I) gate, [I,2I) up) so one GEMM produces [gate | up].
import type { Backend } from "../backend/spec.js";
import type { FArr } from "./dims.js";
import { linearBackward, linearForward } from "./linear.js";

export interface FfnSaved {
  gu: FArr; // (N, 2I)
  a: FArr; // (N, I)
}

export function ffnForward(be: Backend, y: FArr, saved: FfnSaved, x: FArr, wGateUp: FArr, wDown: FArr, N: number, C: number, I: number): void {
  linearForward(be, saved.gu, x, wGateUp, undefined, N, C, 2 * I);
  be.swigluForward(saved.a, saved.gu, N, I);
  linearForward(be, y, saved.a, wDown, undefined, N, I, C);
}

/** dx overwritten (or accumulated with accumulateDx); weight grads accumulated. scratch: dgu (N,2I), da (N,I). */
export function ffnBackward(
  be: Backend, dx: FArr, dWGateUp: FArr, dWDown: FArr, dy: FArr, x: FArr, saved: FfnSaved, wGateUp: FArr, wDown: FArr,
  scratch: { da: FArr; dgu: FArr }, N: number, C: number, I: number, accumulateDx: boolean,
): void {
  linearBackward(be, scratch.da, dWDown, undefined, dy, saved.a, wDown, N, I, C, false);
  be.swigluBackward(scratch.dgu, scratch.da, saved.gu, N, I);
  linearBackward(be, dx, dWGateUp, undefined, scratch.dgu, x, wGateUp, N, C, 2 * I, accumulateDx);
}
