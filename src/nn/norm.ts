// Pre-norm wrapper: RMSNorm or LayerNorm (with bias) behind one call, per the model config.
import type { Backend } from "../backend/spec.js";
import type { FArr } from "./dims.js";

export interface NormSpec {
  kind: "rms" | "layer";
  eps: number;
}

/** Saved statistics of one norm call: rstd (N) and, for LayerNorm, mean (N). */
export interface NormSaved {
  mean: FArr;
  rstd: FArr;
}

export function normForward(be: Backend, spec: NormSpec, out: FArr, saved: NormSaved, x: FArr, w: FArr, b: FArr | undefined, N: number, C: number): void {
  if (spec.kind === "rms") be.rmsnormForward(out, saved.rstd, x, w, N, C, spec.eps);
  else {
    if (!b) throw new Error("LayerNorm needs a bias tensor");
    be.layernormForward(out, saved.mean, saved.rstd, x, w, b, N, C, spec.eps);
  }
}

/** dx overwritten; dw, db accumulated. */
export function normBackward(be: Backend, spec: NormSpec, dx: FArr, dw: FArr, db: FArr | undefined, dout: FArr, x: FArr, w: FArr, saved: NormSaved, N: number, C: number): void {
  if (spec.kind === "rms") be.rmsnormBackward(dx, dw, dout, x, w, saved.rstd, N, C);
  else {
    if (!db) throw new Error("LayerNorm needs a bias gradient tensor");
    be.layernormBackward(dx, dw, db, dout, x, w, saved.mean, saved.rstd, N, C);
  }
}
