// Optimizer step over the model's parameter arena: global-norm gradient clipping, then
// AdamW per storage tensor (weight decay only where the layout marks `decay`: matrices,
// not norms, biases or embeddings), with the learning rate from the schedule.
// Moments live in two arenas laid out like the parameters. Not: an optimizer zoo.
import type { Backend } from "../backend/spec.js";
import type { FArr } from "../nn/dims.js";
import type { ParamLayout } from "../model/params.js";

export type Schedule = "cosine" | "linear" | "constant" | "wsd";

export interface ScheduleConfig {
  lr: number;
  minLr: number;
  warmupSteps: number;
  totalSteps: number;
  schedule: Schedule;
  /** WSD: fraction of totalSteps spent in the final linear decay. */
  wsdDecayFraction: number;
}

/**
 * Learning rate at optimizer step `step` (1-based): linear warmup from lr/warmup to lr over
 * warmupSteps, then cosine / linear decay to minLr at totalSteps, constant, or WSD
 * (warmup–stable–decay: constant lr, then linear to minLr over the last fraction).
 */
export function learningRate(c: ScheduleConfig, step: number): number {
  if (c.warmupSteps > 0 && step <= c.warmupSteps) return (c.lr * step) / c.warmupSteps;
  const span = Math.max(1, c.totalSteps - c.warmupSteps);
  const p = Math.min(1, Math.max(0, (step - c.warmupSteps) / span));
  switch (c.schedule) {
    case "constant":
      return c.lr;
    case "linear":
      return c.lr + (c.minLr - c.lr) * p;
    case "cosine":
      return c.minLr + 0.5 * (c.lr - c.minLr) * (1 + Math.cos(Math.PI * p));
    case "wsd": {
      const decaySteps = Math.max(1, Math.round(c.wsdDecayFraction * c.totalSteps));
      const decayStart = c.totalSteps - decaySteps;
      if (step <= decayStart) return c.lr;
      return c.lr + (c.minLr - c.lr) * Math.min(1, (step - decayStart) / decaySteps);
    }
    default:
      c.schedule satisfies never;
      throw new Error(`unknown schedule ${String(c.schedule)}`);
  }
}

export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this; 0 = off. */
  gradClip: number;
}

export interface OptimState {
  m: FArr;
  v: FArr;
  /** Optimizer steps taken. */
  step: number;
}

export function createOptimState(params: FArr): OptimState {
  const Ctor = params.constructor as Float32ArrayConstructor | Float64ArrayConstructor;
  return { m: new Ctor(params.length), v: new Ctor(params.length), step: 0 };
}

/** √Σ g² over the whole gradient arena (f64 accumulation). */
export function gradNorm(be: Backend, grads: FArr): number {
  return Math.sqrt(be.sumSquares(grads));
}

export interface OptimStepResult {
  lr: number;
  /** Gradient norm before clipping. */
  gradNorm: number;
  clipped: boolean;
}

/**
 * One optimizer step: clip (in place) when the norm exceeds gradClip, then AdamW. The caller
 * checks `gradNorm` for finiteness before calling (a non-finite step must be skipped).
 */
/**
 * ZeRO-1: AdamW on the element range [lo, hi) of the arena only; st.m / st.v hold that range
 * (element lo at index 0). Gradients must already be clipped (scaled) by the caller.
 */
export function optimStepRange(be: Backend, layout: ParamLayout, params: FArr, grads: FArr, st: OptimState, c: AdamWConfig, lr: number, lo: number, hi: number): void {
  optimStepRanges(be, layout, params, grads, st, c, lr, [[lo, hi]]);
}

/**
 * AdamW on several disjoint element ranges of the arena (ZeRO-1 under expert parallelism);
 * st.m / st.v hold the ranges' elements one after the other, in the order given.
 */
export function optimStepRanges(be: Backend, layout: ParamLayout, params: FArr, grads: FArr, st: OptimState, c: AdamWConfig, lr: number, ranges: readonly [number, number][]): void {
  st.step++;
  let at = 0;
  for (const [lo, hi] of ranges) {
    for (const t of layout.tensors) {
      if (!t.trainable) continue;
      const a = Math.max(lo, t.offset), b = Math.min(hi, t.offset + t.size);
      if (a >= b) continue;
      be.adamw(params.subarray(a, b), grads.subarray(a, b), st.m.subarray(at + a - lo, at + b - lo), st.v.subarray(at + a - lo, at + b - lo), {
        lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: t.decay ? c.weightDecay : 0, step: st.step,
      });
    }
    at += hi - lo;
  }
  if (at !== st.m.length) throw new RangeError(`optimizer: the ranges cover ${at} elements, the state holds ${st.m.length}`);
}

export function optimStep(be: Backend, layout: ParamLayout, params: FArr, grads: FArr, st: OptimState, c: AdamWConfig, lr: number, norm: number): OptimStepResult {
  let clipped = false;
  if (c.gradClip > 0 && norm > c.gradClip) {
    be.scale(grads, grads, c.gradClip / norm);
    clipped = true;
  }
  st.step++;
  for (const t of layout.tensors) {
    if (!t.trainable) continue;
    const a = t.offset, b = t.offset + t.size;
    be.adamw(params.subarray(a, b), grads.subarray(a, b), st.m.subarray(a, b), st.v.subarray(a, b), {
      lr, beta1: c.beta1, beta2: c.beta2, eps: c.eps, weightDecay: t.decay ? c.weightDecay : 0, step: st.step,
    });
  }
  return { lr, gradNorm: norm, clipped };
}
