// Native ops kernels: thin wrappers that pass the engine handle and the already
// validated arrays/shapes to native/ops.cc.
// Not: validation (withChecks runs ../checks/ops.ts first) or any computation.
import type { OpsKernels } from "../spec.js";
import type { Addon, EngineHandle } from "./addon.js";

export function nativeOps(a: Addon, e: EngineHandle): OpsKernels {
  return {
    embeddingForward: (out, ids, wte, _V, C) => a.embeddingForward!(e, out, ids, wte, ids.length, C),
    embeddingBackward: (dwte, dout, ids, _V, C) => a.embeddingBackward!(e, dwte, dout, ids, ids.length, C),
    rmsnormForward: (out, rstd, x, w, N, C, eps) => a.rmsnormForward!(e, out, rstd, x, w, N, C, eps),
    rmsnormBackward: (dx, dw, dout, x, w, rstd, N, C) => a.rmsnormBackward!(e, dx, dw, dout, x, w, rstd, N, C),
    layernormForward: (out, mean, rstd, x, w, b, N, C, eps) => a.layernormForward!(e, out, mean, rstd, x, w, b, N, C, eps),
    layernormBackward: (dx, dw, db, dout, x, w, mean, rstd, N, C) =>
      a.layernormBackward!(e, dx, dw, db, dout, x, w, mean, rstd, N, C),
    ropeForward: (out, x, pos, p) => a.ropeForward!(e, out, x, pos, p.B, p.T, p.H, p.HS, p.rotaryDim ?? p.HS, p.theta, p.invFreq ?? null, p.scale ?? 1),
    ropeBackward: (dx, dout, pos, p) => a.ropeBackward!(e, dx, dout, pos, p.B, p.T, p.H, p.HS, p.rotaryDim ?? p.HS, p.theta, p.invFreq ?? null, p.scale ?? 1),
    siluForward: (out, x) => a.siluForward!(e, out, x),
    siluBackward: (dx, dout, x) => a.siluBackward!(e, dx, dout, x),
    geluForward: (out, x, approx) => a.geluForward!(e, out, x, approx === "tanh"),
    geluBackward: (dx, dout, x, approx) => a.geluBackward!(e, dx, dout, x, approx === "tanh"),
    swigluForward: (out, gu, N, F) => a.swigluForward!(e, out, gu, N, F),
    swigluBackward: (dgu, dout, gu, N, F) => a.swigluBackward!(e, dgu, dout, gu, N, F),
    add: (out, x, y) => a.add!(e, out, x, y),
    axpy: (y, x, alpha) => a.axpy!(e, y, x, alpha),
    scale: (out, x, alpha) => a.scale!(e, out, x, alpha),
    biasAddForward: (x, bias, N, C) => a.biasAddForward!(e, x, bias, N, C),
    biasAddBackward: (dbias, dout, N, C) => a.biasAddBackward!(e, dbias, dout, N, C),
    softmaxForward: (out, x, N, V) => a.softmaxForward!(e, out, x, N, V),
    softmaxBackward: (dx, dout, out, N, V) => a.softmaxBackward!(e, dx, dout, out, N, V),
    logSoftmaxForward: (out, x, N, V) => a.logSoftmaxForward!(e, out, x, N, V),
    logSoftmaxBackward: (dx, dout, out, N, V) => a.logSoftmaxBackward!(e, dx, dout, out, N, V),
    crossEntropyForward: (losses, lse, logits, targets, N, V, ignoreIndex) =>
      a.crossEntropyForward!(e, losses, lse, logits, targets, N, V, ignoreIndex),
    crossEntropyBackward: (dlogits, logits, lse, targets, dlosses, N, V, ignoreIndex) =>
      a.crossEntropyBackward!(e, dlogits, logits, lse, targets, dlosses, N, V, ignoreIndex),
    sum: (x) => a.sum!(e, x) as number,
    max: (x) => a.max!(e, x) as number,
    sumSquares: (x) => a.sumSquares!(e, x) as number,
    adamw: (param, grad, m, v, p) => a.adamw!(e, param, grad, m, v, p.lr, p.beta1, p.beta2, p.eps, p.weightDecay, p.step),
  };
}
