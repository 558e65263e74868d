// Tests of the GEMM family (gemm, batchedGemm, groupedGemm, groupedGemmWeightGrad): every native
// variant (OpenBLAS and built-in paths, 1 and 2 threads) against the ref backend over a shape
// table, all transposes and alpha/beta combinations; the backward formulas of spec.ts checked by
// finite differences on ref in f64; argument errors. Not: a benchmark (see bench/kernels.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../src/backend/index.js";
import { loadAddon } from "../src/backend/native/addon.js";
import type { Backend, FArr, GemmParams } from "../src/backend/spec.js";
import { assertClose, assertExact, assertKernelError, backends, dot, f32, numericGrad, randn, TOL } from "./util.js";

const { ref, natives } = backends();
// backends() has the built-in path at 2 threads only; add it at 1 thread.
natives.push({ label: "native-builtin-1t", be: createBackend({ name: "native", threads: 1, gemm: "builtin" }) });

const SHAPES: [number, number, number][] = [
  // [M, K, N]
  [1, 1, 1],
  [3, 5, 7],
  [17, 33, 65],
  [127, 129, 131],
  [256, 512, 384],
  // K above one AVX-512 K block (1536) and between 512 and 1536: C written once vs split K blocks
  [37, 1100, 45],
  [20, 4200, 33],
];
const TRANS: [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];
const SCALARS: { alpha?: number; beta?: number }[] = [{}, { alpha: -1.5, beta: 0.75 }, { alpha: 0.5, beta: 0 }];

function tolFor(K: number) {
  return K > 32 ? TOL.f32Reduce : TOL.f32;
}

function nanFilled(n: number): Float32Array {
  return new Float32Array(n).fill(NaN);
}

/** Runs a kernel on ref (f32 inputs, f64 accumulation) and on every native, comparing outputs. */
function compareAll(what: string, out0: Float32Array, run: (be: Backend, out: Float32Array) => void, tol: { rtol: number; atol: number }) {
  const expected = out0.slice();
  run(ref, expected);
  for (const { label, be } of natives) {
    const out = out0.slice();
    run(be, out);
    assertClose(out, expected, tol, `${what} ${label}`);
  }
}

test("info reports the GEMM paths", () => {
  for (const { label, be } of natives) {
    const info = be.info();
    assert.match(info.gemm, /^(openblas|builtin-(avx512|avx2|scalar))$/, label);
    if (label.includes("builtin")) assert.match(info.gemm, /^builtin-/);
  }
});

test("gemm matches ref over shapes × transposes × alpha/beta", () => {
  let seed = 1;
  for (const [M, K, N] of SHAPES) {
    for (const [transA, transB] of TRANS) {
      for (const s of SCALARS) {
        const a = randn(Float32Array, M * K, seed++), b = randn(Float32Array, K * N, seed++);
        // beta = 0 must ignore C: start from NaN; otherwise from random values.
        const c0 = (s.beta ?? 0) === 0 ? nanFilled(M * N) : randn(Float32Array, M * N, seed++);
        const p: GemmParams = { M, N, K, transA, transB, ...s };
        compareAll(`gemm ${M}x${K}x${N} tA=${transA} tB=${transB} ${JSON.stringify(s)}`, c0, (be, c) => be.gemm(a, b, c, p), tolFor(K));
      }
    }
  }
});

test("gemm with zero sizes and alpha = 0", () => {
  for (const { label, be } of natives) {
    // M = 0 or N = 0: nothing to do, empty arrays accepted.
    be.gemm(new Float32Array(0), new Float32Array(12), new Float32Array(0), { M: 0, N: 4, K: 3 });
    be.gemm(new Float32Array(6), new Float32Array(0), new Float32Array(0), { M: 2, N: 0, K: 3 });
    // K = 0: C = beta·C (beta = 0 writes zeros over NaN).
    const c = nanFilled(6);
    be.gemm(new Float32Array(0), new Float32Array(0), c, { M: 2, N: 3, K: 0 });
    assertExact(c, new Float32Array(6), `${label} K=0 beta=0`);
    const c2 = f32([1, 2, 3, 4, 5, 6]);
    be.gemm(new Float32Array(0), new Float32Array(0), c2, { M: 2, N: 3, K: 0, beta: 2 });
    assertExact(c2, f32([2, 4, 6, 8, 10, 12]), `${label} K=0 beta=2`);
    // alpha = 0: C = beta·C.
    const c3 = f32([1, -1, 2, -2]);
    be.gemm(randn(Float32Array, 8, 3), randn(Float32Array, 8, 4), c3, { M: 2, N: 2, K: 4, alpha: 0, beta: -1 });
    assertExact(c3, f32([-1, 1, -2, 2]), `${label} alpha=0`);
  }
});

test("gemm closed form: identity and ones", () => {
  const n = 37;
  const eye = new Float32Array(n * n);
  for (let i = 0; i < n; i++) eye[i * n + i] = 1;
  const x = randn(Float32Array, n * 53, 7);
  for (const { label, be } of natives) {
    const y = nanFilled(n * 53);
    be.gemm(eye, x, y, { M: n, N: 53, K: n });
    assertExact(y, x, `${label} I·X = X`);
    const ones = new Float32Array(300).fill(1), out = nanFilled(1);
    be.gemm(ones, ones, out, { M: 1, N: 1, K: 300 });
    assert.equal(out[0], 300, `${label} ones·ones`);
  }
});

test("batchedGemm matches ref (few large and many small problems)", () => {
  let seed = 100;
  const cases: [number, number, number, number][] = [
    [3, 17, 33, 65],
    [9, 4, 8, 6],
    [2, 96, 64, 80],
    [4, 128, 96, 160],
    [1, 5, 3, 2],
    [0, 5, 3, 2],
  ];
  for (const [batch, M, K, N] of cases) {
    for (const [transA, transB] of TRANS) {
      for (const s of [{}, { alpha: 2, beta: -0.5 }]) {
        const a = randn(Float32Array, batch * M * K, seed++), b = randn(Float32Array, batch * K * N, seed++);
        const c0 = (s as { beta?: number }).beta ? randn(Float32Array, batch * M * N, seed++) : nanFilled(batch * M * N);
        compareAll(`batched ${batch}x${M}x${K}x${N} tA=${transA} tB=${transB}`, c0, (be, c) => be.batchedGemm(a, b, c, { batch, M, N, K, transA, transB, ...s }), tolFor(K));
      }
    }
  }
  // equals a loop of gemm
  const [batch, M, K, N] = [4, 7, 9, 11];
  const a = randn(Float32Array, batch * M * K, 1), b = randn(Float32Array, batch * K * N, 2);
  for (const { label, be } of natives) {
    const c = new Float32Array(batch * M * N), loop = new Float32Array(batch * M * N);
    be.batchedGemm(a, b, c, { batch, M, N, K, transB: true });
    for (let i = 0; i < batch; i++) {
      const ci = new Float32Array(M * N);
      be.gemm(a.subarray(i * M * K, (i + 1) * M * K), b.subarray(i * K * N, (i + 1) * K * N), ci, { M, N, K, transB: true });
      loop.set(ci, i * M * N);
    }
    assertClose(c, loop, TOL.f32, `${label} batched = loop of gemm`);
  }
});

const GROUPS: { sizes: number[]; K: number; N: number }[] = [
  { sizes: [0, 37, 0, 100, 1, 250, 0], K: 64, N: 96 },
  { sizes: [0, 0, 300, 0], K: 33, N: 17 },
  { sizes: [5, 3, 8], K: 7, N: 5 },
  { sizes: [0, 0], K: 4, N: 3 },
  { sizes: [900, 20, 300, 7, 0, 600, 150, 71], K: 128, N: 200 },
  // large K (single and split K blocks), with empty and one-row groups
  { sizes: [40, 0, 1, 23], K: 1100, N: 40 },
  { sizes: [0, 17, 30], K: 3100, N: 24 },
];

test("groupedGemm matches ref (zero-size groups, one group holding all rows, uneven groups)", () => {
  let seed = 200;
  for (const { sizes, K, N } of GROUPS) {
    const E = sizes.length, Ntot = sizes.reduce((s, v) => s + v, 0);
    const sz = Int32Array.from(sizes);
    for (const transW of [false, true]) {
      for (const beta of [undefined, 0.5]) {
        const x = randn(Float32Array, Ntot * K, seed++), w = randn(Float32Array, E * K * N, seed++);
        const y0 = beta ? randn(Float32Array, Ntot * N, seed++) : nanFilled(Ntot * N);
        compareAll(`grouped ${JSON.stringify(sizes)} K=${K} N=${N} transW=${transW} beta=${beta}`, y0, (be, y) => be.groupedGemm(x, w, y, sz, { K, N, transW, beta }), tolFor(K));
      }
    }
  }
});

test("groupedGemm with E = 1 equals plain gemm; groups equal a per-group gemm loop", () => {
  const [M, K, N] = [129, 65, 131];
  const x = randn(Float32Array, M * K, 1), w = randn(Float32Array, K * N, 2);
  for (const { label, be } of natives) {
    for (const transW of [false, true]) {
      const y = new Float32Array(M * N), c = new Float32Array(M * N);
      be.groupedGemm(x, w, y, Int32Array.from([M]), { K, N, transW });
      be.gemm(x, w, c, { M, N, K, transB: transW });
      assertExact(y, c, `${label} E=1 transW=${transW}`);
    }
  }
  const sizes = [40, 0, 89];
  const sz = Int32Array.from(sizes), W = randn(Float32Array, 3 * K * N, 3);
  for (const { label, be } of natives) {
    const y = new Float32Array(M * N), loop = new Float32Array(M * N);
    be.groupedGemm(x, W, y, sz, { K, N });
    let row = 0;
    for (let g = 0; g < 3; g++) {
      const m = sizes[g]!;
      const yg = new Float32Array(m * N);
      be.gemm(x.subarray(row * K, (row + m) * K), W.subarray(g * K * N, (g + 1) * K * N), yg, { M: m, N, K });
      loop.set(yg, row * N);
      row += m;
    }
    assertClose(y, loop, TOL.f32, `${label} grouped = loop of gemm`);
  }
});

test("groupedGemmWeightGrad matches ref and accumulates (default beta 1)", () => {
  let seed = 300;
  for (const { sizes, K, N } of GROUPS) {
    const E = sizes.length, Ntot = sizes.reduce((s, v) => s + v, 0);
    const sz = Int32Array.from(sizes);
    for (const transW of [false, true]) {
      for (const beta of [undefined, 0, 0.5]) {
        const x = randn(Float32Array, Ntot * K, seed++), dy = randn(Float32Array, Ntot * N, seed++);
        const dw0 = beta === 0 ? nanFilled(E * K * N) : randn(Float32Array, E * K * N, seed++);
        const tol = Ntot > 32 ? TOL.f32Reduce : TOL.f32;
        compareAll(`wgrad ${JSON.stringify(sizes)} K=${K} N=${N} transW=${transW} beta=${beta}`, dw0, (be, dw) => be.groupedGemmWeightGrad(x, dy, dw, sz, { K, N, transW, beta }), tol);
      }
    }
  }
  // Accumulation semantics: two calls with beta 1 = one call on doubled dy; a zero-size group keeps beta·dw_g.
  const sizes = Int32Array.from([3, 0, 4]);
  const [K, N] = [5, 6];
  const x = randn(Float32Array, 7 * K, 1), dy = randn(Float32Array, 7 * N, 2), init = randn(Float32Array, 3 * K * N, 3);
  for (const { label, be } of natives) {
    const twice = init.slice(), doubled = init.slice();
    be.groupedGemmWeightGrad(x, dy, twice, sizes, { K, N });
    be.groupedGemmWeightGrad(x, dy, twice, sizes, { K, N });
    be.groupedGemmWeightGrad(x, dy.map((v) => 2 * v), doubled, sizes, { K, N });
    assertClose(twice, doubled, TOL.f32, `${label} accumulate`);
    assertExact(twice.subarray(K * N, 2 * K * N), init.subarray(K * N, 2 * K * N), `${label} zero group, beta 1`);
    const scaled = init.slice();
    be.groupedGemmWeightGrad(x, dy, scaled, sizes, { K, N, beta: 0.5 });
    assertExact(scaled.subarray(K * N, 2 * K * N), init.subarray(K * N, 2 * K * N).map((v) => v * 0.5), `${label} zero group, beta 0.5`);
  }
});

test("gemm backward formulas of spec.ts hold (finite differences, ref f64)", () => {
  const [M, K, N] = [3, 4, 5];
  for (const [transA, transB] of TRANS) {
    const a = randn(Float64Array, M * K, 11), b = randn(Float64Array, K * N, 12), dc = randn(Float64Array, M * N, 13);
    const loss = () => {
      const c = new Float64Array(M * N);
      ref.gemm(a, b, c, { M, N, K, transA, transB });
      return dot(c, dc);
    };
    // dA = dC·op(B)ᵀ, stored like A; dB = op(A)ᵀ·dC, stored like B.
    const da = new Float64Array(M * K), db = new Float64Array(K * N);
    if (!transA) ref.gemm(dc, b, da, { M, N: K, K: N, transB: !transB });
    else ref.gemm(b, dc, da, { M: K, N: M, K: N, transA: transB, transB: true });
    if (!transB) ref.gemm(a, dc, db, { M: K, N, K: M, transA: !transA });
    else ref.gemm(dc, a, db, { M: N, N: K, K: M, transA: true, transB: transA });
    assertClose(da, numericGrad(a, loss), { rtol: 1e-6, atol: 1e-7 }, `dA tA=${transA} tB=${transB}`);
    assertClose(db, numericGrad(b, loss), { rtol: 1e-6, atol: 1e-7 }, `dB tA=${transA} tB=${transB}`);
  }
});

test("groupedGemm backward formulas of spec.ts hold (finite differences, ref f64)", () => {
  const sizes = Int32Array.from([2, 0, 3]);
  const [K, N, E, Ntot] = [4, 3, 3, 5];
  for (const transW of [false, true]) {
    const x = randn(Float64Array, Ntot * K, 21), w = randn(Float64Array, E * K * N, 22), dy = randn(Float64Array, Ntot * N, 23);
    const loss = () => {
      const y = new Float64Array(Ntot * N);
      ref.groupedGemm(x, w, y, sizes, { K, N, transW });
      return dot(y, dy);
    };
    const dx = new Float64Array(Ntot * K);
    ref.groupedGemm(dy, w, dx, sizes, { K: N, N: K, transW: !transW });
    const dw = new Float64Array(E * K * N);
    ref.groupedGemmWeightGrad(x, dy, dw, sizes, { K, N, transW });
    assertClose(dx, numericGrad(x, loss), { rtol: 1e-6, atol: 1e-7 }, `dx transW=${transW}`);
    assertClose(dw, numericGrad(w, loss), { rtol: 1e-6, atol: 1e-7 }, `dw transW=${transW}`);
  }
});

test("bad arguments are KernelArgErrors", () => {
  const a = new Float32Array(6), b = new Float32Array(12), c = new Float32Array(8);
  const p = { M: 2, N: 4, K: 3 };
  for (const be of [ref, natives[0]!.be]) {
    assertKernelError(() => be.gemm(a, b, new Float32Array(7), p), /c has 7 elements, expected 8/);
    assertKernelError(() => be.gemm(new Float32Array(5), b, c, p), /a has 5 elements/);
    assertKernelError(() => be.gemm(a, b, c, { ...p, M: -1 }), /M must be a non-negative integer/);
    assertKernelError(() => be.gemm(a, b, c, { ...p, K: 1.5 }), /K must be a non-negative integer/);
    assertKernelError(() => be.gemm(a, b, c, { ...p, alpha: NaN }), /alpha must be a finite number/);
    assertKernelError(() => be.gemm(a, b, c, { ...p, transA: 1 as unknown as boolean }), /transA must be a boolean/);
    assertKernelError(() => be.gemm(a, new Int32Array(12) as unknown as Float32Array, c, p), /b must be a Float32Array or Float64Array/);
    const buf = new Float32Array(20);
    assertKernelError(() => be.gemm(buf.subarray(0, 6), b, buf.subarray(4, 12), p), /c and a overlap/);
    assertKernelError(() => be.batchedGemm(a, b, c, { ...p, batch: 2 }), /a has 6 elements, expected 12/);
    const sizes = Int32Array.from([1, 1]);
    const x = new Float32Array(2 * 3), w = new Float32Array(2 * 3 * 4), y = new Float32Array(2 * 4);
    assertKernelError(() => be.groupedGemm(x, w, y, Int32Array.from([1, 2]), { K: 3, N: 4 }), /x has 6 elements, expected Σsizes·K/);
    assertKernelError(() => be.groupedGemm(x, w, y, Int32Array.from([3, -1]), { K: 3, N: 4 }), /sizes\[1\] = -1 is negative/);
    assertKernelError(() => be.groupedGemm(x, w, y, [1, 1] as unknown as Int32Array, { K: 3, N: 4 }), /sizes must be an Int32Array/);
    assertKernelError(() => be.groupedGemm(x, new Float32Array(23), y, sizes, { K: 3, N: 4 }), /w has 23 elements/);
    assertKernelError(() => be.groupedGemm(x, w, w.subarray(0, 8), sizes, { K: 3, N: 4 }), /y and w overlap/);
    assertKernelError(() => be.groupedGemmWeightGrad(x, y, new Float32Array(23), sizes, { K: 3, N: 4 }), /dw has 23 elements/);
    assertKernelError(() => be.groupedGemmWeightGrad(x, y, w, sizes, { K: 3, N: 4, beta: Infinity }), /beta must be a finite number/);
  }
  // ref: one dtype per call; native: f32 only.
  assertKernelError(() => ref.gemm(new Float64Array(6), b, c, p), /one call uses one float dtype/);
  assertKernelError(() => natives[0]!.be.gemm(new Float64Array(6), new Float64Array(12), new Float64Array(8), p), /Float64Array/);
});

test("native f32 is consistent across backends for a realistic MoE shape", () => {
  // The expert FFN shape of the benchmarks, scaled down: 4 uneven groups, K = 128, N = 352.
  const sizes = Int32Array.from([300, 12, 0, 200]);
  const [K, N, E, Ntot] = [128, 352, 4, 512];
  const x = randn(Float32Array, Ntot * K, 31), w = randn(Float32Array, E * N * K, 32);
  const outs: FArr[] = [];
  for (const { be } of natives) {
    const y = new Float32Array(Ntot * N);
    be.groupedGemm(x, w, y, sizes, { K, N, transW: true });
    outs.push(y);
  }
  for (let i = 1; i < outs.length; i++) assertClose(outs[i]!, outs[0]!, TOL.f32Reduce, `backend ${i} vs 0`);
});

test("every built-in micro-kernel (MOE_GEMM_ISA caps the ISA) matches ref", () => {
  const builtins = natives.filter((n) => n.label.includes("builtin"));
  const saved = process.env.MOE_GEMM_ISA;
  try {
    for (const isa of ["avx2", "scalar"]) {
      process.env.MOE_GEMM_ISA = isa;
      const name = builtins[0]!.be.info().gemm;
      // avx2 may be unavailable on the CPU: then the scalar kernel is what runs.
      assert.ok(name === `builtin-${isa}` || name === "builtin-scalar", `${isa}: got ${name}`);
      let seed = 500;
      for (const [M, K, N] of [[3, 5, 7], [17, 33, 65], [127, 129, 131]] as [number, number, number][]) {
        for (const [transA, transB] of TRANS) {
          const a = randn(Float32Array, M * K, seed++), b = randn(Float32Array, K * N, seed++), c0 = randn(Float32Array, M * N, seed++);
          const p = { M, N, K, transA, transB, alpha: 1.25, beta: -0.5 };
          const expected = c0.slice();
          ref.gemm(a, b, expected, p);
          for (const { label, be } of builtins) {
            const c = c0.slice();
            be.gemm(a, b, c, p);
            assertClose(c, expected, tolFor(K), `${name} ${label} ${M}x${K}x${N} tA=${transA} tB=${transB}`);
          }
        }
      }
      const sizes = Int32Array.from([0, 50, 3, 77]);
      const x = randn(Float32Array, 130 * 40, 1), w = randn(Float32Array, 4 * 40 * 30, 2);
      const expected = new Float32Array(130 * 30);
      ref.groupedGemm(x, w, expected, sizes, { K: 40, N: 30, transW: true });
      for (const { label, be } of builtins) {
        const y = nanFilled(130 * 30);
        be.groupedGemm(x, w, y, sizes, { K: 40, N: 30, transW: true });
        assertClose(y, expected, TOL.f32Reduce, `${name} ${label} grouped`);
      }
    }
  } finally {
    if (saved === undefined) delete process.env.MOE_GEMM_ISA;
    else process.env.MOE_GEMM_ISA = saved;
  }
});

test("a GEMM cut into several pieces per thread equals the 1-thread result bit for bit and ref (f32 and bf16)", () => {
  // Shapes large enough for up to 4 pieces per thread (native/gemm_driver.cc): 512³ split along M
  // (each thread packs B once and reuses it), 160×512×2048 split along N, and K above one K block
  // (B more than one packed block: at most one row piece per thread). Each element of C is one
  // task's full-K sum, so the split must not change a bit.
  const bf16 = loadAddon().bf16GemmAvailable!() as boolean;
  const one = createBackend({ name: "native", threads: 1, gemm: "builtin" });
  const many = [2, 3].map((t) => createBackend({ name: "native", threads: t, gemm: "builtin" }));
  let seed = 900;
  for (const [M, K, N] of [[512, 512, 512], [160, 512, 2048], [600, 1600, 300]] as [number, number, number][]) {
    const a = randn(Float32Array, M * K, seed++), b = randn(Float32Array, K * N, seed++), c0 = randn(Float32Array, M * N, seed++);
    for (const precision of bf16 ? (["f32", "bf16"] as const) : (["f32"] as const)) {
      const p: GemmParams = { M, N, K, transB: N === 300, alpha: 1.5, beta: 0.5, precision };
      const base = c0.slice();
      one.gemm(a, b, base, p);
      if (precision === "f32") {
        const expected = c0.slice();
        ref.gemm(a, b, expected, p);
        assertClose(base, expected, TOL.f32Reduce, `${M}x${K}x${N} 1 thread vs ref`);
      }
      for (const be of many) {
        const c = c0.slice();
        be.gemm(a, b, c, p);
        assertExact(c, base, `${M}x${K}x${N} ${precision} ${be.info().threads} threads vs 1`);
      }
    }
  }
});
