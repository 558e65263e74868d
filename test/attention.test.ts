// Attention kernels: native (1 and 2 threads) vs the ref oracle over a shape table,
// f64 finite-difference gradients of ref, closed forms, determinism across thread
// counts, and argument errors. Not: a benchmark (bench/attention-bench.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { AttentionParams, Backend, FArr } from "../src/backend/spec.js";
import { assertClose, assertExact, assertKernelError, backends, dot, numericGrad, randn, TOL } from "./util.js";

const { ref, natives } = backends();

interface Case {
  name: string;
  p: AttentionParams;
}

// Tiles are 48 rows/keys in the native kernel: 197 and 256 cover multi-tile, ragged and aligned.
const CASES: Case[] = [
  { name: "tiny", p: { B: 1, T: 1, NH: 1, KVH: 1, HS: 1 } },
  { name: "odd T=7 HS=5 MQA 3/1, B=2", p: { B: 2, T: 7, NH: 3, KVH: 1, HS: 5 } },
  { name: "GQA 8/2", p: { B: 1, T: 20, NH: 8, KVH: 2, HS: 8 } },
  { name: "window 3", p: { B: 1, T: 13, NH: 4, KVH: 2, HS: 6, window: 3 } },
  { name: "window >= T", p: { B: 1, T: 13, NH: 2, KVH: 1, HS: 6, window: 20 } },
  { name: "decode T=1 Tk=9", p: { B: 2, T: 1, Tk: 9, NH: 4, KVH: 2, HS: 8 } },
  { name: "T=4 Tk=9 window 5", p: { B: 1, T: 4, Tk: 9, NH: 2, KVH: 1, HS: 7, window: 5 } },
  { name: "custom scale", p: { B: 1, T: 11, NH: 2, KVH: 2, HS: 4, scale: 0.9 } },
  { name: "T=197 GQA 8/2 HS=16", p: { B: 1, T: 197, NH: 8, KVH: 2, HS: 16 } },
  { name: "T=197 window 61, Tk=230", p: { B: 1, T: 197, Tk: 230, NH: 2, KVH: 1, HS: 12, window: 61 } },
  { name: "HS=64 T=256 GQA 4/2", p: { B: 1, T: 256, NH: 4, KVH: 2, HS: 64 } },
  { name: "HS=128 T=100 B=3 (split backward at 2 threads)", p: { B: 3, T: 100, NH: 2, KVH: 1, HS: 128 } },
];

function sizes(p: AttentionParams) {
  const Tk = p.Tk ?? p.T;
  return { nq: p.B * p.T * p.NH * p.HS, nk: p.B * Tk * p.KVH * p.HS, nl: p.B * p.NH * p.T };
}

function inputs<T extends FArr>(Ctor: { new (n: number): T }, p: AttentionParams, seed: number) {
  const { nq, nk } = sizes(p);
  return {
    q: randn(Ctor, nq, seed),
    k: randn(Ctor, nk, seed + 1),
    v: randn(Ctor, nk, seed + 2),
    dout: randn(Ctor, nq, seed + 3),
  };
}

function forward(be: Backend, x: { q: FArr; k: FArr; v: FArr }, p: AttentionParams, Ctor: { new (n: number): FArr } = Float32Array) {
  const { nq, nl } = sizes(p);
  const out = new Ctor(nq).fill(NaN), lse = new Ctor(nl).fill(NaN);
  be.attentionForward(out, lse, x.q, x.k, x.v, p);
  return { out, lse };
}

function backward(be: Backend, x: { q: FArr; k: FArr; v: FArr; dout: FArr }, out: FArr, lse: FArr, p: AttentionParams, Ctor: { new (n: number): FArr } = Float32Array) {
  const { nq, nk } = sizes(p);
  // Pre-filled with NaN: backward must overwrite, never read.
  const dq = new Ctor(nq).fill(NaN), dk = new Ctor(nk).fill(NaN), dv = new Ctor(nk).fill(NaN);
  be.attentionBackward(dq, dk, dv, x.dout, x.q, x.k, x.v, out, lse, p);
  return { dq, dk, dv };
}

for (const c of CASES) {
  test(`attention native vs ref: ${c.name}`, () => {
    const x = inputs(Float32Array, c.p, 17);
    const want = forward(ref, x, c.p);
    const gwant = backward(ref, x, want.out, want.lse, c.p);
    const long = (c.p.Tk ?? c.p.T) > 64;
    const tol = long ? TOL.f32Reduce : TOL.f32;
    const results: { label: string; dq: FArr; dk: FArr; dv: FArr; out: FArr }[] = [];
    for (const { label, be } of natives) {
      const got = forward(be, x, c.p);
      assertClose(got.out, want.out, tol, `${label} out`);
      assertClose(got.lse, want.lse, tol, `${label} lse`);
      const g = backward(be, x, want.out, want.lse, c.p);
      assertClose(g.dq, gwant.dq, tol, `${label} dq`);
      assertClose(g.dk, gwant.dk, tol, `${label} dk`);
      assertClose(g.dv, gwant.dv, tol, `${label} dv`);
      results.push({ label, out: got.out, ...g });
    }
    // Deterministic and thread-count independent (the 2-thread engines use the split
    // backward when B·KVH is odd, which sums in the same order as the fused one).
    for (const r of results.slice(1)) {
      assertExact(r.out, results[0]!.out, `${r.label} out vs ${results[0]!.label}`);
      assertExact(r.dq, results[0]!.dq, `${r.label} dq`);
      assertExact(r.dk, results[0]!.dk, `${r.label} dk`);
      assertExact(r.dv, results[0]!.dv, `${r.label} dv`);
    }
  });
}

test("attention baseline (non-AVX2) build vs ref", (t) => {
  const nat = natives[1]!.be;
  const prev = process.env.MOE_ATTN_ISA;
  process.env.MOE_ATTN_ISA = "generic";
  try {
    for (const c of [CASES[1]!, CASES[6]!, CASES[9]!]) {
      const x = inputs(Float32Array, c.p, 23);
      const want = forward(ref, x, c.p);
      const gwant = backward(ref, x, want.out, want.lse, c.p);
      const got = forward(nat, x, c.p);
      const g = backward(nat, x, want.out, want.lse, c.p);
      assertClose(got.out, want.out, TOL.f32Reduce, `${c.name} out`);
      assertClose(got.lse, want.lse, TOL.f32Reduce, `${c.name} lse`);
      assertClose(g.dq, gwant.dq, TOL.f32Reduce, `${c.name} dq`);
      assertClose(g.dk, gwant.dk, TOL.f32Reduce, `${c.name} dk`);
      assertClose(g.dv, gwant.dv, TOL.f32Reduce, `${c.name} dv`);
    }
  } finally {
    if (prev === undefined) delete process.env.MOE_ATTN_ISA;
    else process.env.MOE_ATTN_ISA = prev;
  }
  t.diagnostic("MOE_ATTN_ISA=generic forces the baseline build");
});

test("attention window >= Tk equals unlimited window", () => {
  const p = { B: 1, T: 60, Tk: 70, NH: 2, KVH: 1, HS: 8 };
  const x = inputs(Float32Array, p, 5);
  for (const be of [ref, ...natives.map((n) => n.be)]) {
    const a = forward(be, x, p), b = forward(be, x, { ...p, window: 70 }), z = forward(be, x, { ...p, window: 0 });
    assertExact(b.out, a.out, `${be.name} window 70`);
    assertExact(z.out, a.out, `${be.name} window 0`);
  }
});

test("attention decode rows equal the last rows of full-length attention", () => {
  const full = { B: 1, T: 50, NH: 4, KVH: 2, HS: 8, window: 17 };
  const x = inputs(Float32Array, full, 9);
  for (const be of [ref, natives[0]!.be]) {
    const want = forward(be, x, full);
    for (const T of [1, 4]) {
      const dec = { ...full, T, Tk: 50 };
      const rows = full.NH * full.HS;
      const q = x.q.subarray((50 - T) * rows);
      const got = forward(be, { q, k: x.k, v: x.v }, dec);
      assertClose(got.out, want.out.subarray((50 - T) * rows), TOL.f32, `${be.name} T=${T} out`);
    }
  }
});

test("attention finite-difference gradients of ref in f64 (GQA, window, Tk > T, scale)", () => {
  const shapes: AttentionParams[] = [
    { B: 1, T: 4, Tk: 5, NH: 4, KVH: 2, HS: 3, window: 2, scale: 0.7 },
    { B: 2, T: 3, NH: 2, KVH: 1, HS: 2 },
  ];
  for (const p of shapes) {
    const x = inputs(Float64Array, p, 31);
    const { out, lse } = forward(ref, x, p, Float64Array);
    const g = backward(ref, x, out, lse, p, Float64Array);
    // loss = Σ out ⊙ dout, whose gradient w.r.t. out is dout.
    const loss = () => dot(forward(ref, x, p, Float64Array).out, x.dout);
    assertClose(g.dq, numericGrad(x.q as Float64Array, loss), { rtol: 1e-6, atol: 1e-8 }, "dq");
    assertClose(g.dk, numericGrad(x.k as Float64Array, loss), { rtol: 1e-6, atol: 1e-8 }, "dk");
    assertClose(g.dv, numericGrad(x.v as Float64Array, loss), { rtol: 1e-6, atol: 1e-8 }, "dv");
  }
});

test("attention closed forms: one key → out = v, lse = score; identical keys → mean of visible v", () => {
  for (const be of [ref, ...natives.map((n) => n.be)]) {
    // T = Tk = 1: each query head sees only key 0 of its kv head.
    const p1 = { B: 2, T: 1, NH: 4, KVH: 2, HS: 3, scale: 0.5 };
    const x = inputs(Float32Array, p1, 3);
    const { out, lse } = forward(be, x, p1);
    for (let b = 0; b < 2; b++) {
      for (let h = 0; h < 4; h++) {
        const g = Math.floor((h * 2) / 4);
        let s = 0;
        for (let c = 0; c < 3; c++) {
          assert.ok(Math.abs(out[(b * 4 + h) * 3 + c]! - x.v[(b * 2 + g) * 3 + c]!) < 1e-6, `${be.name} out`);
          s += x.q[(b * 4 + h) * 3 + c]! * x.k[(b * 2 + g) * 3 + c]!;
        }
        assert.ok(Math.abs(lse[b * 4 + h]! - 0.5 * s) < 1e-5, `${be.name} lse`);
      }
    }
    // All keys identical → uniform weights over the visible keys (window 3, Tk > T).
    const p2 = { B: 1, T: 6, Tk: 8, NH: 2, KVH: 1, HS: 4, window: 3 };
    const y = inputs(Float32Array, p2, 4);
    for (let j = 1; j < 8; j++) for (let c = 0; c < 4; c++) y.k[j * 4 + c] = y.k[c]!;
    const r = forward(be, y, p2);
    for (let i = 0; i < 6; i++) {
      const pos = i + 2, lo = Math.max(0, pos - 2);
      for (let h = 0; h < 2; h++) {
        for (let c = 0; c < 4; c++) {
          let m = 0;
          for (let j = lo; j <= pos; j++) m += y.v[j * 4 + c]!;
          m /= pos - lo + 1;
          assert.ok(Math.abs(r.out[(i * 2 + h) * 4 + c]! - m) < 1e-5, `${be.name} mean i=${i} h=${h}`);
        }
      }
    }
  }
});

test("attention rejects bad arguments", () => {
  const p = { B: 1, T: 4, NH: 2, KVH: 1, HS: 3 };
  const { nq, nk, nl } = sizes(p);
  const f = (n: number) => new Float32Array(n);
  for (const be of [ref, natives[0]!.be]) {
    const q = f(nq), k = f(nk), v = f(nk), out = f(nq), lse = f(nl);
    const fwd = (o: unknown, l: unknown, qq: unknown, kk: unknown, vv: unknown, pp: unknown) =>
      be.attentionForward(o as FArr, l as FArr, qq as FArr, kk as FArr, vv as FArr, pp as AttentionParams);
    assertKernelError(() => fwd(out, lse, new Int32Array(nq), k, v, p), /q must be a Float32Array/);
    assertKernelError(() => fwd(out, lse, f(nq + 1), k, v, p), /q has 25 elements, expected 24/);
    assertKernelError(() => fwd(out, f(nl - 1), q, k, v, p), /lse has/);
    assertKernelError(() => fwd(out, lse, q, k, f(nk * 2), p), /v has/);
    assertKernelError(() => fwd(out, lse, q, k, v, { ...p, KVH: 3 }), /multiple of KVH/);
    assertKernelError(() => fwd(out, lse, q, k, v, { ...p, Tk: 3 }), /Tk \(3\) must be ≥ T/);
    assertKernelError(() => fwd(out, lse, q, k, v, { ...p, window: -1 }), /window must be a non-negative integer/);
    assertKernelError(() => fwd(out, lse, q, k, v, { ...p, window: 1.5 }), /window/);
    assertKernelError(() => fwd(out, lse, q, k, v, { ...p, scale: NaN }), /scale must be a finite number/);
    assertKernelError(() => fwd(out, lse, q, k, v, { ...p, HS: 0 }), /HS must be positive/);
    assertKernelError(() => fwd(out, lse, q, k, v, null), /params must be an object/);
    assertKernelError(() => fwd(q, lse, q, k, v, p), /out and q overlap/);
    const buf = f(nq + nl);
    assertKernelError(() => fwd(buf.subarray(0, nq), buf.subarray(nq - 1, nq - 1 + nl), q, k, v, p), /out and lse overlap/);
    const dq = f(nq), dk = f(nk), dv = f(nk);
    assertKernelError(() => be.attentionBackward(dq, dk, dk, q, q, k, v, out, lse, p), /dk and dv overlap/);
    assertKernelError(() => be.attentionBackward(dq, dk, dv, dq, q, k, v, out, lse, p), /dq and dout overlap/);
    be.attentionBackward(dq, dk, dv, q, q, k, v, out, lse, p); // inputs may share memory with each other
    assertKernelError(() => be.attentionBackward(dq, dk, dv, f(nq), q, k, v, out, dq.subarray(0, nl), p), /dq and lse overlap/);
    assertKernelError(() => be.attentionBackward(dq, dk, dv, f(nq), q, k, v, out, f(nl + 1), p), /lse has/);
  }
  // Mixed dtypes (ref accepts f64, but not mixed with f32); native refuses f64.
  assertKernelError(() => ref.attentionForward(new Float64Array(nq), new Float64Array(nl), f(nq), f(nk), f(nk), p), /one call uses one float dtype/);
  assertKernelError(() => natives[0]!.be.attentionForward(new Float64Array(nq), new Float64Array(nl), new Float64Array(nq), new Float64Array(nk), new Float64Array(nk), p), /native backend computes in f32/);
});
