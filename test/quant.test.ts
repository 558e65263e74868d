// Tests of gemmQuant (QuantKernels): native against ref for every weight dtype ×
// per-tensor/per-row scales × odd shapes and the M = 1 decode case, beta handling,
// closed forms (int8 pattern, bf16 ones), and KernelArgErrors for bad arguments.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backends, assertClose, assertExact, assertKernelError, randn, rng, TOL } from "./util.js";
import type { QuantDtype } from "../src/backend/spec.js";
import { decode, encode } from "../src/core/dtype.js";

const { ref, natives } = backends();
const nat = natives.slice(0, 2);
const DTYPES: QuantDtype[] = ["bf16", "f16", "fp8_e4m3", "fp8_e5m2", "int8"];

/** Weight codes of a realistic (N,K) matrix: normals encoded in the dtype (int8: ±127 range). */
function weights(dtype: QuantDtype, n: number, seed: number): Uint16Array | Uint8Array | Int8Array {
  const v = randn(Float64Array, n, seed, dtype.startsWith("fp8") ? 4 : 0.5);
  if (dtype === "int8") return Int8Array.from(v, (x) => Math.max(-127, Math.min(127, Math.round(x * 60))));
  if (dtype === "bf16" || dtype === "f16") return Uint16Array.from(v, (x) => encode(dtype, x));
  return Uint8Array.from(v, (x) => encode(dtype, x));
}

const SHAPES: [number, number, number][] = [
  // [M, N, K]
  [1, 1, 1], [1, 7, 13], [3, 5, 17], [2, 3, 8], [1, 64, 256], [5, 33, 100], [17, 40, 9], [1, 250, 1030], [64, 96, 130], [130, 70, 64],
];

test("gemmQuant: native == ref for every dtype × scale kind × shape (1 and 2 threads)", () => {
  let seed = 1;
  const r = rng(5);
  for (const dtype of DTYPES) {
    for (const [M, N, K] of SHAPES) {
      const x = randn(Float32Array, M * K, seed++), w = weights(dtype, N * K, seed++);
      for (const perRow of [false, true]) {
        const scales = perRow ? Float32Array.from({ length: N }, () => 0.01 + r()) : Float32Array.of(0.037);
        for (const beta of [0, 0.5]) {
          const y0 = beta === 0 ? new Float32Array(M * N).fill(NaN) : randn(Float32Array, M * N, seed++);
          const ry = y0.slice();
          ref.gemmQuant(x, w, scales, ry, { M, N, K, dtype, beta });
          for (const { label, be } of nat) {
            const y = y0.slice();
            be.gemmQuant(x, w, scales, y, { M, N, K, dtype, beta });
            assertClose(y, ry, TOL.f32Reduce, `${label} ${dtype} ${perRow ? "per-row" : "per-tensor"} beta=${beta} ${M}x${N}x${K}`);
          }
        }
      }
    }
  }
});

test("gemmQuant: closed forms (int8 pattern, bf16/fp8 ones), exact", () => {
  const [M, N, K] = [3, 6, 11];
  // int8: w[n,k] = ((n + 2k) mod 7) − 3, x[m,k] = m + 1 ⇒ y[m,n] = s_n·(m+1)·Σ_k w[n,k].
  const w = Int8Array.from({ length: N * K }, (_, i) => ((Math.floor(i / K) + 2 * (i % K)) % 7) - 3);
  const x = Float32Array.from({ length: M * K }, (_, i) => Math.floor(i / K) + 1);
  const scales = Float32Array.from({ length: N }, (_, n) => 2 ** (n - 2));
  const want = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += ((n + 2 * k) % 7) - 3;
      want[m * N + n] = scales[n]! * (m + 1) * s;
    }
  }
  // bf16 0x3F80 = 1, e4m3 0x38 = 1, e5m2 0x3C = 1 ⇒ y = scale · Σ_k x[m,k].
  const ones: [QuantDtype, Uint16Array | Uint8Array][] = [["bf16", new Uint16Array(N * K).fill(0x3f80)], ["f16", new Uint16Array(N * K).fill(0x3c00)], ["fp8_e4m3", new Uint8Array(N * K).fill(0x38)], ["fp8_e5m2", new Uint8Array(N * K).fill(0x3c)]];
  const wantOnes = Float32Array.from({ length: M * N }, (_, i) => 0.5 * K * (Math.floor(i / N) + 1));
  for (const be of [ref, ...nat.map((n) => n.be)]) {
    const y = new Float32Array(M * N);
    be.gemmQuant(x, w, scales, y, { M, N, K, dtype: "int8" });
    assertExact(y, want, "int8 closed form");
    for (const [dtype, codes] of ones) {
      const y1 = new Float32Array(M * N);
      be.gemmQuant(x, codes, Float32Array.of(0.5), y1, { M, N, K, dtype });
      assertExact(y1, wantOnes, `${dtype} ones`);
    }
    // beta = 1 accumulates; K = 0 gives beta·y.
    const acc = want.slice();
    be.gemmQuant(x, w, scales, acc, { M, N, K, dtype: "int8", beta: 1 });
    assertExact(acc, Array.from(want, (v) => 2 * v), "beta = 1");
    const y0 = Float32Array.of(1, 2);
    be.gemmQuant(new Float32Array(0), new Int8Array(0), Float32Array.of(1), y0, { M: 1, N: 2, K: 0, dtype: "int8", beta: 3 });
    assertExact(y0, [3, 6], "K = 0");
  }
});

test("gemmQuant: every code of every dtype decodes exactly (NaN, ±Inf, subnormals)", () => {
  // Row n holds code n at column n mod K and zeros elsewhere; x = ones ⇒ y[n] = decode(code n)·s.
  const K = 19; // one 8-wide SIMD block, a second one, and a scalar tail
  for (const dtype of DTYPES) {
    const count = dtype === "bf16" || dtype === "f16" ? 65536 : 256;
    const w = dtype === "int8" ? new Int8Array(count * K) : count === 256 ? new Uint8Array(count * K) : new Uint16Array(count * K);
    for (let n = 0; n < count; n++) w[n * K + (n % K)] = dtype === "int8" ? (n << 24) >> 24 : n;
    const x = new Float32Array(K).fill(1);
    const scales = Float32Array.of(0.5);
    const ry = new Float32Array(count);
    ref.gemmQuant(x, w, scales, ry, { M: 1, N: count, K, dtype });
    const want = Float32Array.from({ length: count }, (_, n) => (dtype === "int8" ? ((n << 24) >> 24) * 0.5 : decode(dtype, n) * 0.5));
    for (const { label, be } of [{ label: "ref", be: ref }, ...nat]) {
      const y = label === "ref" ? ry : new Float32Array(count);
      if (label !== "ref") be.gemmQuant(x, w, scales, y, { M: 1, N: count, K, dtype });
      for (let n = 0; n < count; n++) {
        const ok = Number.isNaN(want[n]!) ? Number.isNaN(y[n]!) : y[n] === want[n];
        if (!ok) assert.fail(`${label} ${dtype} code 0x${n.toString(16)}: ${y[n]} vs ${want[n]}`);
      }
    }
  }
});

test("gemmQuant: bad arguments are KernelArgErrors", () => {
  const p = { M: 2, N: 3, K: 4 };
  const x = new Float32Array(8), y = new Float32Array(6), s1 = Float32Array.of(1);
  for (const be of [ref, nat[0]!.be]) {
    assertKernelError(() => be.gemmQuant(x, new Uint8Array(12), s1, y, { ...p, dtype: "bf16" }), /w must be a Uint16Array/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), s1, y, { ...p, dtype: "fp8_e4m3" }), /w must be a Uint8Array/);
    assertKernelError(() => be.gemmQuant(x, new Int8Array(12), s1, y, { ...p, dtype: "fp8_e5m2" }), /w must be a Uint8Array/);
    assertKernelError(() => be.gemmQuant(x, new Uint8Array(12), s1, y, { ...p, dtype: "int8" }), /w must be an Int8Array/);
    assertKernelError(() => be.gemmQuant(x, new Int8Array(11), s1, y, { ...p, dtype: "int8" }), /w has 11 elements, expected 12/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), new Float32Array(2), y, { ...p, dtype: "f16" }), /scales has 2 elements, expected 1 \(per tensor\) or N = 3/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), new Float64Array(3) as unknown as Float32Array, y, { ...p, dtype: "f16" }), /Float64Array/);
    assertKernelError(() => be.gemmQuant(new Float32Array(7), new Uint16Array(12), s1, y, { ...p, dtype: "f16" }), /x has 7 elements, expected 8/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), s1, new Float32Array(5), { ...p, dtype: "f16" }), /y has 5 elements, expected 6/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), s1, y, { ...p, dtype: "int4" as QuantDtype }), /dtype must be one of/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), s1, y, { ...p, dtype: "bf16", beta: NaN }), /beta must be a finite number/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), s1, y, { ...p, M: -1, dtype: "bf16" }), /M must be a non-negative integer/);
    const buf = new Float32Array(16);
    assertKernelError(() => be.gemmQuant(buf.subarray(0, 8), new Uint16Array(12), s1, buf.subarray(6, 12), { ...p, dtype: "bf16" }), /y and x overlap/);
    assertKernelError(() => be.gemmQuant(x, new Uint16Array(12), buf.subarray(0, 1), buf.subarray(0, 6), { ...p, dtype: "bf16" }), /y and scales overlap/);
  }
  assert.ok(true);
});
