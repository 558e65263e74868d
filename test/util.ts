// Shared test helpers: seeded randomness, tolerance table, array comparison and
// finite-difference gradient checks. Independent of every backend.
import assert from "node:assert/strict";
import type { FArr } from "../src/backend/spec.js";
import { createBackend, type Backend } from "../src/backend/index.js";
import { loadAddon } from "../src/backend/native/addon.js";

/** xorshift-style seeded RNG (mulberry32) — deterministic across runs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal samples (Box–Muller) into a new array of the given type. */
export function randn<T extends FArr>(Ctor: { new (n: number): T }, n: number, seed: number, std = 1): T {
  const r = rng(seed);
  const out = new Ctor(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12), v = r();
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export function randInt(n: number, hi: number, seed: number): Int32Array {
  const r = rng(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * hi);
  return out;
}

/** Tolerances keyed by dtype for float kernels (native f32 vs ref f64/f32). */
export const TOL = {
  f32: { rtol: 1e-4, atol: 1e-5 },
  /** long reductions (GEMM with K in the thousands, attention over T in the thousands) */
  f32Reduce: { rtol: 2e-3, atol: 2e-4 },
  f64: { rtol: 1e-10, atol: 1e-12 },
} as const;

/**
 * Asserts |a−b| ≤ atol + rtol·|b| elementwise (b is the reference), reporting the
 * worst element. NaN must match NaN.
 */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: { rtol: number; atol: number }, what = "array"): void {
  assert.equal(actual.length, expected.length, `${what}: length ${actual.length} vs ${expected.length}`);
  let worst = -1, worstErr = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!, b = expected[i]!;
    if (Number.isNaN(b)) {
      if (!Number.isNaN(a)) assert.fail(`${what}[${i}]: expected NaN, got ${a}`);
      continue;
    }
    if (!Number.isFinite(b) && a === b) continue; // matching ±Inf
    const err = Math.abs(a - b) - (tol.atol + tol.rtol * Math.abs(b));
    if (!(err <= 0) && (worst < 0 || err > worstErr)) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) assert.fail(`${what}[${worst}]: got ${actual[worst]}, expected ${expected[worst]} (rtol ${tol.rtol}, atol ${tol.atol})`);
}

export function assertExact(actual: ArrayLike<number>, expected: ArrayLike<number>, what = "array"): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(actual[i], expected[i]) && actual[i] !== expected[i]) assert.fail(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]}`);
  }
}

/**
 * Central finite differences of a scalar function of one f64 input array:
 * returns dL/dx[i] ≈ (L(x+h e_i) − L(x−h e_i)) / 2h for every i (x restored after).
 */
export function numericGrad(x: Float64Array, loss: () => number, h = 1e-6): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    x[i] = x0 + h;
    const lp = loss();
    x[i] = x0 - h;
    const lm = loss();
    x[i] = x0;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

/** Σ out ⊙ dout — the scalar whose gradient w.r.t. out is dout (vector–Jacobian check). */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

export function f64(x: ArrayLike<number>): Float64Array {
  return Float64Array.from(x as ArrayLike<number>);
}
export function f32(x: ArrayLike<number>): Float32Array {
  return Float32Array.from(x as ArrayLike<number>);
}

/** The backends under test: ref always; native at 1 and 2 threads on both GEMM paths (OpenBLAS when linked). */
export function backends(): { ref: Backend; natives: { label: string; be: Backend }[] } {
  const ref = createBackend({ name: "ref" });
  const natives = [
    { label: "native-1t", be: createBackend({ name: "native", threads: 1 }) },
    { label: "native-2t", be: createBackend({ name: "native", threads: 2 }) },
    { label: "native-builtin-2t", be: createBackend({ name: "native", threads: 2, gemm: "builtin" }) },
  ];
  if (loadAddon().blasLinked) natives.push({ label: "native-blas-2t", be: createBackend({ name: "native", threads: 2, gemm: "blas" }) });
  return { ref, natives };
}

/** Asserts that fn throws a KernelArgError whose message matches re. */
export function assertKernelError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof Error && e.name === "KernelArgError" && re.test(e.message));
}

/** The MoE math refuses bad arguments with a MoeError (its own layer's error type). */
export function assertMoeError(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: unknown) => e instanceof Error && e.name === "MoeError" && re.test(e.message));
}
