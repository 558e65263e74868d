// Tests of the routing primitives (RouteKernels): ref against closed forms and hand
// examples, native against ref over a shape table (exact for permutations, top-k, counts
// and gathers; tolerance for weighted sums), native bitwise independent of the thread
// count, and KernelArgErrors for every kind of bad argument.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backends, assertClose, assertExact, assertKernelError, randInt, randn, rng, TOL } from "./util.js";
import type { FArr } from "../src/backend/spec.js";

const { ref, natives } = backends();
const nat = natives.slice(0, 2); // 1 and 2 threads (the gemm path does not matter here)
const bitsOf = (x: Float32Array): Uint32Array => new Uint32Array(x.buffer, x.byteOffset, x.length);

/** Rows with many exact ties (values drawn from a few levels, ±0 included). */
function tiedRows(n: number, seed: number): Float32Array {
  const r = rng(seed);
  const levels = [0, -0, 1, -1, 0.5, 2, -Infinity, Infinity];
  return Float32Array.from({ length: n }, () => levels[Math.floor(r() * levels.length)]!);
}

test("topk: hand example with ties, ±0 and ±Inf", () => {
  const x = Float32Array.of(1, 3, 3, -0, 0, 2, /* row 2 */ -Infinity, 0, -0, Infinity, 5, 5);
  const values = new Float32Array(8), indices = new Int32Array(8);
  for (const be of [ref, ...nat.map((n) => n.be)]) {
    be.topk(values, indices, x, 2, 6, 4);
    assertExact(indices, [1, 2, 5, 0, 3, 4, 5, 1]);
    assertExact(values, [3, 3, 2, 1, Infinity, 5, 5, 0]);
  }
  // −0 and +0 tie: the lower index wins, and the value is copied bit-exactly.
  const z = Float32Array.of(-0, 0), v = new Float32Array(1), ix = new Int32Array(1);
  for (const be of [ref, ...nat.map((n) => n.be)]) {
    be.topk(v, ix, z, 1, 2, 1);
    assert.equal(ix[0], 0);
    assert.ok(Object.is(v[0], -0));
  }
});

test("topk: native == ref exactly over a shape table", () => {
  const shapes: [number, number, number][] = [
    [1, 1, 1], [3, 5, 5], [7, 8, 2], [5, 16, 16], [33, 17, 3], [64, 64, 8], [100, 256, 8], [9, 300, 1],
    [4096, 8, 2], [2048, 64, 6], [257, 128, 4], [6, 1000, 40], [2, 50, 17],
  ];
  let seed = 1;
  for (const [N, E, K] of shapes) {
    for (const x of [randn(Float32Array, N * E, seed++), tiedRows(N * E, seed++)]) {
      const rv = new Float32Array(N * K), ri = new Int32Array(N * K);
      ref.topk(rv, ri, x, N, E, K);
      for (const { label, be } of nat) {
        const v = new Float32Array(N * K), ix = new Int32Array(N * K);
        be.topk(v, ix, x, N, E, K);
        assertExact(ix, ri, `${label} topk indices ${N}x${E} k${K}`);
        assertExact(bitsOf(v), bitsOf(rv), `${label} topk value bits ${N}x${E} k${K}`);
      }
    }
  }
  // f64 on ref (the oracle of f64 gradient checks) agrees with f32 on the same values.
  const x = randn(Float64Array, 5 * 9, 99), v = new Float64Array(15), ix = new Int32Array(15);
  ref.topk(v, ix, x, 5, 9, 3);
  for (let n = 0; n < 5; n++) {
    const row = Array.from(x.subarray(n * 9, n * 9 + 9));
    const sorted = [...row].sort((a, b) => b - a);
    assertExact(v.subarray(n * 3, n * 3 + 3), sorted.slice(0, 3));
    for (let k = 0; k < 3; k++) assert.equal(row[ix[n * 3 + k]!], v[n * 3 + k]);
  }
});

test("sortByKey, histogram, cumsum: closed forms and native == ref", () => {
  // Hand example.
  const keys = Int32Array.of(2, 0, 2, 1, 0, 2);
  for (const be of [ref, ...nat.map((n) => n.be)]) {
    const perm = new Int32Array(6);
    be.sortByKey(perm, keys, 3);
    assertExact(perm, [1, 4, 3, 0, 2, 5]);
    const counts = Int32Array.of(9, 9, 9, 9);
    be.histogram(counts, keys, 4);
    assertExact(counts, [2, 1, 3, 0]);
    const inc = new Int32Array(4), exc = new Int32Array(4);
    be.cumsum(inc, counts, false);
    be.cumsum(exc, counts, true);
    assertExact(inc, [2, 3, 6, 6]);
    assertExact(exc, [0, 2, 3, 6]);
    const inPlace = Int32Array.of(1, 2, 3);
    be.cumsum(inPlace, inPlace, true);
    assertExact(inPlace, [0, 1, 3]);
    const inPlace2 = Int32Array.of(1, 2, 3);
    be.cumsum(inPlace2, inPlace2, false);
    assertExact(inPlace2, [1, 3, 6]);
    const wrap = Int32Array.of(2 ** 31 - 1, 1);
    be.cumsum(wrap, wrap, false);
    assertExact(wrap, [2 ** 31 - 1, -(2 ** 31)]);
    be.sortByKey(new Int32Array(0), new Int32Array(0), 0);
  }
  // Shape table: sizes around the native parallel threshold (65536), key ranges 1..50k.
  let seed = 100;
  for (const [n, numKeys] of [[1, 1], [17, 3], [1000, 8], [8192, 64], [70000, 8], [200000, 1000], [100000, 50000]] as const) {
    const k = randInt(n, numKeys, seed++);
    const rp = new Int32Array(n), rc = new Int32Array(numKeys);
    ref.sortByKey(rp, k, numKeys);
    ref.histogram(rc, k, numKeys);
    // Sorted and stable, independent of ref's algorithm.
    for (let i = 1; i < n; i++) {
      const a = rp[i - 1]!, b = rp[i]!;
      assert.ok(k[a]! < k[b]! || (k[a] === k[b] && a < b), `ref sortByKey order at ${i}`);
    }
    const rcs = new Int32Array(numKeys), rce = new Int32Array(numKeys);
    ref.cumsum(rcs, rc, false);
    ref.cumsum(rce, rc, true);
    assert.equal(rcs[numKeys - 1], n);
    for (const { label, be } of nat) {
      const p = new Int32Array(n), c = new Int32Array(numKeys).fill(-1);
      be.sortByKey(p, k, numKeys);
      be.histogram(c, k, numKeys);
      assertExact(p, rp, `${label} sortByKey n=${n}`);
      assertExact(c, rc, `${label} histogram n=${n}`);
      const cs = new Int32Array(numKeys), ce = new Int32Array(numKeys);
      be.cumsum(cs, c, false);
      be.cumsum(ce, c, true);
      assertExact(cs, rcs, `${label} cumsum`);
      assertExact(ce, rce, `${label} exclusive cumsum`);
    }
  }
});

function gatherScatterShapes(): [number, number, number][] {
  // [N rows of x/out, C, M = idx length]
  return [[1, 1, 1], [3, 5, 7], [5, 1, 12], [8, 17, 33], [64, 64, 128], [50, 300, 100], [1024, 96, 2048], [16, 1000, 40], [7, 3, 0]];
}

test("gather: closed form and native == ref exactly", () => {
  let seed = 200;
  for (const [N, C, M] of gatherScatterShapes()) {
    const x = randn(Float32Array, N * C, seed++), idx = randInt(M, N, seed++);
    const ro = new Float32Array(M * C);
    ref.gather(ro, x, idx, N, C);
    for (let i = 0; i < M; i++) assertExact(ro.subarray(i * C, i * C + C), x.subarray(idx[i]! * C, idx[i]! * C + C));
    for (const { label, be } of nat) {
      const o = new Float32Array(M * C).fill(NaN);
      be.gather(o, x, idx, N, C);
      assertExact(bitsOf(o), bitsOf(ro), `${label} gather ${N}x${C} M=${M}`);
    }
  }
});

test("scatterAdd: closed form, ordering, native == ref, bitwise equal across threads", () => {
  // Closed form: every row of x is 1, unweighted: out[j] += count of j in idx.
  const idx0 = Int32Array.of(2, 0, 2, 2);
  for (const be of [ref, ...nat.map((n) => n.be)]) {
    const out = Float32Array.of(10, 10, 10, 10, 10, 10);
    be.scatterAdd(out, new Float32Array(8).fill(1), idx0, null, 3, 2);
    assertExact(out, [11, 11, 10, 10, 13, 13]);
    // Contributions in increasing i: 1e8 + 1 − 1e8 in f32 is 0 (the +1 is lost), order fixed.
    const o2 = new Float32Array(1);
    be.scatterAdd(o2, Float32Array.of(1e8, 1, -1e8), Int32Array.of(0, 0, 0), null, 1, 1);
    assert.equal(o2[0], 0);
    // Weighted, f64 on ref.
    if (be === ref) {
      const o3 = new Float64Array(4);
      be.scatterAdd(o3, Float64Array.of(1, 2, 3, 4), Int32Array.of(1, 1), Float64Array.of(0.5, -2), 2, 2);
      assertExact(o3, [0, 0, 0.5 - 6, 1 - 8]);
    }
  }
  let seed = 300;
  for (const [N, C, M] of gatherScatterShapes()) {
    const x = randn(Float32Array, M * C, seed++), idx = randInt(M, N, seed++), w = randn(Float32Array, M, seed++);
    const out0 = randn(Float32Array, N * C, seed++);
    for (const weights of [null, w]) {
      const ro = out0.slice();
      ref.scatterAdd(ro, x, idx, weights, N, C);
      const byThreads: Float32Array[] = [];
      for (const { label, be } of nat) {
        const o = out0.slice();
        be.scatterAdd(o, x, idx, weights, N, C);
        if (weights === null) assertExact(bitsOf(o), bitsOf(ro), `${label} scatterAdd unweighted ${N}x${C} M=${M}`);
        else assertClose(o, ro, TOL.f32, `${label} scatterAdd weighted ${N}x${C} M=${M}`);
        byThreads.push(o);
      }
      assertExact(bitsOf(byThreads[1]!), bitsOf(byThreads[0]!), `scatterAdd 2 threads == 1 thread ${N}x${C}`);
    }
  }
});

test("scatterAddBackward: vector–Jacobian check on ref (f64) and native == ref", () => {
  // Σ out⊙dout after scatterAdd is linear in x and w: its gradients are dx, dw.
  const [N, C, M] = [4, 3, 6];
  const x = randn(Float64Array, M * C, 1), w = randn(Float64Array, M, 2), dout = randn(Float64Array, N * C, 3);
  const idx = Int32Array.of(0, 3, 3, 1, 0, 2);
  const loss = (xx: FArr, ww: FArr): number => {
    const o = new Float64Array(N * C);
    ref.scatterAdd(o, xx, idx, ww, N, C);
    let s = 0;
    for (let i = 0; i < o.length; i++) s += o[i]! * dout[i]!;
    return s;
  };
  const dx = new Float64Array(M * C).fill(NaN), dw = new Float64Array(M).fill(NaN);
  ref.scatterAddBackward(dx, dw, dout, x, idx, w, N, C);
  const h = 1e-6;
  for (let i = 0; i < M * C; i++) {
    const xp = x.slice(), xm = x.slice();
    xp[i]! += h;
    xm[i]! -= h;
    assert.ok(Math.abs((loss(xp, w) - loss(xm, w)) / (2 * h) - dx[i]!) < 1e-7, `dx[${i}]`);
  }
  for (let i = 0; i < M; i++) {
    const wp = w.slice(), wm = w.slice();
    wp[i]! += h;
    wm[i]! -= h;
    assert.ok(Math.abs((loss(x, wp) - loss(x, wm)) / (2 * h) - dw[i]!) < 1e-7, `dw[${i}]`);
  }
  let seed = 400;
  for (const [N2, C2, M2] of gatherScatterShapes()) {
    const x2 = randn(Float32Array, M2 * C2, seed++), w2 = randn(Float32Array, M2, seed++), g = randn(Float32Array, N2 * C2, seed++);
    const i2 = randInt(M2, N2, seed++);
    const rdx = new Float32Array(M2 * C2), rdw = new Float32Array(M2);
    ref.scatterAddBackward(rdx, rdw, g, x2, i2, w2, N2, C2);
    for (const { label, be } of nat) {
      const ndx = new Float32Array(M2 * C2).fill(NaN), ndw = new Float32Array(M2).fill(NaN);
      be.scatterAddBackward(ndx, ndw, g, x2, i2, w2, N2, C2);
      assertExact(bitsOf(ndx), bitsOf(rdx), `${label} dx ${N2}x${C2}`);
      assertClose(ndw, rdw, TOL.f32, `${label} dw ${N2}x${C2}`);
    }
  }
});

test("route: bad arguments are KernelArgErrors", () => {
  const f = (n: number): Float32Array => new Float32Array(n);
  const i = (n: number): Int32Array => new Int32Array(n);
  for (const be of [ref, nat[0]!.be]) {
    // topk
    assertKernelError(() => be.topk(f(6), i(6), f(6), 2, 3, 4), /K = 4 exceeds E = 3/);
    assertKernelError(() => be.topk(f(3), i(4), f(6), 2, 3, 2), /values has 3 elements, expected 4/);
    assertKernelError(() => be.topk(f(4), i(3), f(6), 2, 3, 2), /indices has 3 elements, expected 4/);
    assertKernelError(() => be.topk(f(4), i(4), Float32Array.of(1, 2, NaN, 0, 0, 0), 2, 3, 2), /x\[2\] is NaN/);
    assertKernelError(() => be.topk(f(4), i(4), f(6), 2.5, 3, 2), /N must be a non-negative integer/);
    const buf = new ArrayBuffer(64);
    assertKernelError(() => be.topk(new Float32Array(buf, 0, 4), i(4), new Float32Array(buf, 8, 6), 2, 3, 2), /overlap/);
    assertKernelError(() => be.topk(f(4), new Int32Array(buf, 0, 4), new Float32Array(buf, 12, 6), 2, 3, 2), /overlap/);
    // sortByKey / histogram
    assertKernelError(() => be.sortByKey(i(3), Int32Array.of(0, 3, 1), 3), /keys\[1\] = 3 is out of range \[0, 3\)/);
    assertKernelError(() => be.sortByKey(i(3), Int32Array.of(0, -1, 1), 3), /keys\[1\] = -1/);
    assertKernelError(() => be.sortByKey(i(2), Int32Array.of(0, 1, 1), 3), /perm has 2 elements, expected 3/);
    assertKernelError(() => be.sortByKey(i(3), Float32Array.of(0, 1, 1) as unknown as Int32Array, 3), /keys must be an Int32Array/);
    const kb = new Int32Array(8);
    assertKernelError(() => be.sortByKey(kb.subarray(0, 4), kb.subarray(2, 6), 3), /overlap/);
    assertKernelError(() => be.histogram(i(2), Int32Array.of(0, 2), 2), /keys\[1\] = 2/);
    assertKernelError(() => be.histogram(i(3), Int32Array.of(0, 1), 2), /counts has 3 elements, expected 2/);
    assertKernelError(() => be.histogram(kb.subarray(0, 2), kb.subarray(1, 3), 2), /overlap/);
    // cumsum: exact in-place is allowed, partial overlap is not.
    assertKernelError(() => be.cumsum(kb.subarray(1, 5), kb.subarray(0, 4), false), /overlap/);
    assertKernelError(() => be.cumsum(i(3), i(4), false), /out has 3 elements, expected 4/);
    assertKernelError(() => be.cumsum(i(3), i(3), 1 as unknown as boolean), /exclusive must be a boolean/);
    // gather / scatterAdd / backward
    assertKernelError(() => be.gather(f(6), f(6), Int32Array.of(0, 3), 3, 2), /out has 6 elements, expected 4/);
    assertKernelError(() => be.gather(f(4), f(6), Int32Array.of(0, 3), 3, 2), /idx\[1\] = 3 is out of range/);
    assertKernelError(() => be.gather(f(4), new Float64Array(6) as unknown as Float32Array, Int32Array.of(0, 1), 3, 2), /Float64Array/);
    const g = new Float32Array(16);
    be.gather(g.subarray(0, 4), g.subarray(4, 10), Int32Array.of(0, 1), 3, 2); // adjacent, not overlapping: allowed
    assertKernelError(() => be.gather(g.subarray(0, 4), g.subarray(2, 8), Int32Array.of(0, 1), 3, 2), /overlap/);
    assertKernelError(() => be.scatterAdd(f(6), f(4), Int32Array.of(0, 3), null, 3, 2), /idx\[1\] = 3/);
    assertKernelError(() => be.scatterAdd(f(6), f(4), Int32Array.of(0, 1), f(3), 3, 2), /w has 3 elements, expected 2/);
    assertKernelError(() => be.scatterAdd(f(6), f(5), Int32Array.of(0, 1), null, 3, 2), /x has 5 elements, expected 4/);
    assertKernelError(() => be.scatterAdd(g.subarray(0, 6), g.subarray(4, 8), Int32Array.of(0, 1), null, 3, 2), /overlap/);
    assertKernelError(() => be.scatterAdd(g.subarray(0, 6), f(4), Int32Array.of(0, 1), g.subarray(5, 7), 3, 2), /overlap/);
    assertKernelError(() => be.scatterAddBackward(f(4), f(2), f(6), f(4), Int32Array.of(0, -1), f(2), 3, 2), /idx\[1\] = -1/);
    assertKernelError(() => be.scatterAddBackward(f(4), f(3), f(6), f(4), Int32Array.of(0, 1), f(2), 3, 2), /dw has 3 elements, expected 2/);
    assertKernelError(() => be.scatterAddBackward(f(4), f(2), f(6), f(4), Int32Array.of(0, 1), null as unknown as Float32Array, 3, 2), /w must be a Float32Array/);
    assertKernelError(() => be.scatterAddBackward(g.subarray(0, 4), g.subarray(3, 5), f(6), f(4), Int32Array.of(0, 1), f(2), 3, 2), /dx and dw overlap/);
    assertKernelError(() => be.scatterAddBackward(g.subarray(0, 4), f(2), g.subarray(2, 8), f(4), Int32Array.of(0, 1), f(2), 3, 2), /overlap/);
  }
  // Mixed float dtypes on ref.
  assertKernelError(() => ref.scatterAdd(new Float64Array(6), f(4), Int32Array.of(0, 1), null, 3, 2), /one call uses one float dtype/);
});
