// Paged attention kernels against the dense causal attentionForward (the independent oracle):
// several sequences of different lengths in scattered, non-contiguous blocks, GQA/MQA, odd head
// and block sizes, sliding window (with released blocks marked −1), prefill chunks, decode,
// bf16 caches; native (every ISA build, 1 and 2 threads) vs ref; pagedWrite bit-exact; errors.
// Not: a benchmark (bench/paged-bench.ts) or a test of the pool (kv-cache.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import type { Backend, FArr, KvArr, PagedAttentionParams } from "../src/backend/spec.js";
import { decodeBf16, encodeBf16 } from "../src/core/dtype.js";
import { loadAddon } from "../src/backend/native/addon.js";
import { assertClose, assertExact, assertKernelError, backends, randn, rng, TOL } from "./util.js";

const { ref, natives } = backends();
type Ctor = { new (n: number): FArr };

interface Case {
  name: string;
  NH: number;
  KVH: number;
  HS: number;
  bs: number;
  /** Per sequence: context length (including the new rows) and new query rows. */
  ctx: number[];
  qlen: number[];
  window?: number;
  scale?: number;
}

const CASES: Case[] = [
  { name: "decode + prefill + chunk, GQA 4/2", NH: 4, KVH: 2, HS: 8, bs: 16, ctx: [37, 5, 70], qlen: [1, 5, 16] },
  { name: "MQA 6/1, odd HS 5, block 4", NH: 6, KVH: 1, HS: 5, bs: 4, ctx: [9, 1, 22], qlen: [9, 1, 3] },
  { name: "window 7, block 8", NH: 2, KVH: 1, HS: 12, bs: 8, ctx: [40, 23, 8], qlen: [1, 10, 8], window: 7 },
  { name: "window 20, odd block 5, a sequence with no rows", NH: 4, KVH: 4, HS: 6, bs: 5, ctx: [33, 12, 51], qlen: [2, 0, 17], window: 20 },
  { name: "HS 64 GQA 8/2 long", NH: 8, KVH: 2, HS: 64, bs: 16, ctx: [300, 129], qlen: [1, 129] },
  { name: "HS 128 G 8, custom scale", NH: 8, KVH: 1, HS: 128, bs: 16, ctx: [50, 17], qlen: [1, 17], scale: 0.3 },
  { name: "HS 24 (vector + tail), G 3, window ≥ ctx", NH: 6, KVH: 2, HS: 24, bs: 16, ctx: [45], qlen: [45], window: 64 },
];

/** A scenario: dense per-sequence q/k/v, a scattered block assignment, and the paged arrays. */
function scenario(c: Case, Ctor: Ctor, seed: number) {
  const S = c.ctx.length, row = c.KVH * c.HS;
  const maxBlocksPerSeq = Math.max(...c.ctx.map((n) => Math.ceil(n / c.bs))) + 1;
  const used = c.ctx.reduce((a, n) => a + Math.ceil(n / c.bs), 0);
  const numBlocks = used + 5; // spare blocks stay unwritten (NaN): reading one would show
  // Scattered: a shuffled permutation of the blocks, dealt out in order.
  const r = rng(seed);
  const perm = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = numBlocks - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [perm[i], perm[j]] = [perm[j]!, perm[i]!];
  }
  const blockTables = new Int32Array(S * maxBlocksPerSeq).fill(-1);
  let next = 0;
  const dense = c.ctx.map((n, s) => {
    for (let b = 0; b < Math.ceil(n / c.bs); b++) blockTables[s * maxBlocksPerSeq + b] = perm[next++]!;
    return {
      k: randn(Ctor, n * row, seed + 10 * s + 1),
      v: randn(Ctor, n * row, seed + 10 * s + 2),
      q: randn(Ctor, c.qlen[s]! * c.NH * c.HS, seed + 10 * s + 3),
    };
  });
  const queryStart = new Int32Array(S + 1);
  for (let s = 0; s < S; s++) queryStart[s + 1] = queryStart[s]! + c.qlen[s]!;
  const N = queryStart[S]!;
  const q = new Ctor(N * c.NH * c.HS);
  dense.forEach((d, s) => q.set(d.q, queryStart[s]! * c.NH * c.HS));
  // All keys/values of every sequence in one slot mapping.
  const total = c.ctx.reduce((a, n) => a + n, 0);
  const slotMapping = new Int32Array(total);
  const kAll = new Ctor(total * row), vAll = new Ctor(total * row);
  let t = 0;
  c.ctx.forEach((n, s) => {
    kAll.set(dense[s]!.k, t * row);
    vAll.set(dense[s]!.v, t * row);
    for (let j = 0; j < n; j++) slotMapping[t + j] = blockTables[s * maxBlocksPerSeq + Math.floor(j / c.bs)]! * c.bs + (j % c.bs);
    t += n;
  });
  // With a window, blocks no query of the sequence can see are released: mark them −1.
  if (c.window) {
    c.ctx.forEach((n, s) => {
      const first = Math.max(0, n - c.qlen[s]! - c.window! + 1);
      for (let b = 0; b < Math.floor(first / c.bs); b++) blockTables[s * maxBlocksPerSeq + b] = -1;
    });
  }
  const p: PagedAttentionParams = { numSeqs: S, NH: c.NH, KVH: c.KVH, HS: c.HS, blockSize: c.bs, numBlocks, maxBlocksPerSeq, window: c.window, scale: c.scale };
  return { dense, q, N, queryStart, contextLens: Int32Array.from(c.ctx), blockTables, slotMapping, kAll, vAll, p, cacheLen: numBlocks * c.bs * row };
}

type Scenario = ReturnType<typeof scenario>;

function makeCache(sc: Scenario, kind: "float" | "bf16", Ctor: Ctor): { k: KvArr; v: KvArr } {
  if (kind === "bf16") return { k: new Uint16Array(sc.cacheLen).fill(0x7fc0), v: new Uint16Array(sc.cacheLen).fill(0x7fc0) };
  return { k: new Ctor(sc.cacheLen).fill(NaN), v: new Ctor(sc.cacheLen).fill(NaN) };
}

function paged(be: Backend, sc: Scenario, cache: { k: KvArr; v: KvArr }, Ctor: Ctor): FArr {
  const out = new Ctor(sc.q.length).fill(NaN);
  be.pagedAttention(out, sc.q, cache.k, cache.v, sc.blockTables, sc.queryStart, sc.contextLens, sc.p);
  return out;
}

/** Dense causal attention per sequence (attentionForward, B = 1, T = qlen, Tk = ctx), concatenated. */
function denseOut(be: Backend, c: Case, sc: Scenario, Ctor: Ctor, kv?: (x: FArr) => FArr): FArr {
  const out = new Ctor(sc.q.length);
  sc.dense.forEach((d, s) => {
    const T = c.qlen[s]!;
    if (T === 0) return;
    const o = new Ctor(T * c.NH * c.HS), lse = new Ctor(c.NH * T);
    const k = kv ? kv(d.k) : d.k, v = kv ? kv(d.v) : d.v;
    be.attentionForward(o, lse, d.q, k, v, { B: 1, T, Tk: c.ctx[s]!, NH: c.NH, KVH: c.KVH, HS: c.HS, window: c.window, scale: c.scale });
    out.set(o, sc.queryStart[s]! * c.NH * c.HS);
  });
  return out;
}

function bf16Round(x: FArr): FArr {
  const y = new (x.constructor as Ctor)(x.length);
  for (let i = 0; i < x.length; i++) y[i] = decodeBf16(encodeBf16(x[i]!));
  return y;
}

for (const c of CASES) {
  test(`paged attention ref (f64) equals dense attention: ${c.name}`, () => {
    const sc = scenario(c, Float64Array, 3);
    const cache = makeCache(sc, "float", Float64Array);
    ref.pagedWrite(cache.k, cache.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
    assertClose(paged(ref, sc, cache, Float64Array), denseOut(ref, c, sc, Float64Array), TOL.f64, "ref paged vs dense");
  });

  test(`paged attention native vs dense and ref, f32 and bf16 caches: ${c.name}`, () => {
    const sc = scenario(c, Float32Array, 7);
    const long = Math.max(...c.ctx) > 64;
    const tol = long ? TOL.f32Reduce : TOL.f32;
    const want = denseOut(ref, c, sc, Float32Array);
    const fcache = makeCache(sc, "float", Float32Array);
    ref.pagedWrite(fcache.k, fcache.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
    const bcache = makeCache(sc, "bf16", Float32Array);
    ref.pagedWrite(bcache.k, bcache.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
    // bf16: equals dense attention on bf16-rounded keys/values, and dense f32 within bf16 error.
    const wantB = denseOut(ref, c, sc, Float32Array, bf16Round);
    assertClose(paged(ref, sc, bcache, Float32Array), wantB, TOL.f32, "ref bf16 vs dense(bf16-rounded k, v)");
    assertClose(paged(ref, sc, bcache, Float32Array), want, { rtol: 3e-2, atol: 3e-2 }, "ref bf16 vs dense f32");
    const outs: { label: string; f: FArr; b: FArr }[] = [];
    for (const { label, be } of natives) {
      // Each native backend writes its own caches (pagedWrite native vs ref compared exactly).
      const nf = makeCache(sc, "float", Float32Array), nb = makeCache(sc, "bf16", Float32Array);
      be.pagedWrite(nf.k, nf.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
      be.pagedWrite(nb.k, nb.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
      assertExact(nf.k, fcache.k, `${label} pagedWrite f32 k`);
      assertExact(nb.v, bcache.v, `${label} pagedWrite bf16 v`);
      const f = paged(be, sc, nf, Float32Array), b = paged(be, sc, nb, Float32Array);
      assertClose(f, want, tol, `${label} f32 cache vs dense`);
      assertClose(b, wantB, tol, `${label} bf16 cache vs dense(bf16-rounded)`);
      outs.push({ label, f, b });
    }
    for (const o of outs.slice(1)) {
      assertExact(o.f, outs[0]!.f, `${o.label} vs ${outs[0]!.label} (thread-count independent)`);
      assertExact(o.b, outs[0]!.b, `${o.label} bf16 vs ${outs[0]!.label}`);
    }
  });
}

test("paged attention: every native ISA build (MOE_ATTN_ISA caps it) vs ref", (t) => {
  const nat = natives[1]!.be;
  const addon = loadAddon();
  const prev = process.env.MOE_ATTN_ISA;
  const seen: string[] = [];
  try {
    for (const cap of ["generic", "avx2", ""]) {
      if (cap === "") delete process.env.MOE_ATTN_ISA;
      else process.env.MOE_ATTN_ISA = cap;
      seen.push(addon.pagedAttentionIsa!() as string);
      for (const c of [CASES[1]!, CASES[3]!, CASES[4]!]) {
        const sc = scenario(c, Float32Array, 11);
        for (const kind of ["float", "bf16"] as const) {
          const cache = makeCache(sc, kind, Float32Array);
          ref.pagedWrite(cache.k, cache.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
          assertClose(paged(nat, sc, cache, Float32Array), paged(ref, sc, cache, Float32Array), TOL.f32Reduce, `${seen.at(-1)} ${kind} ${c.name}`);
        }
      }
    }
  } finally {
    if (prev === undefined) delete process.env.MOE_ATTN_ISA;
    else process.env.MOE_ATTN_ISA = prev;
  }
  t.diagnostic(`ISA builds run: ${seen.join(", ")}`);
  assert.equal(seen[0], "generic");
});

// ref computes each row alone, so chunks reproduce it exactly; native rows in tiles of
// ≥ 8 query columns take the GEMM path and rows of smaller tiles the dot path (another
// summation order), so there the chunks agree within f32 tolerance.
test("paged attention: two prefill chunks give the rows of one", () => {
  const c: Case = { name: "chunks", NH: 4, KVH: 2, HS: 16, bs: 16, ctx: [53], qlen: [53], window: 30 };
  const sc = scenario(c, Float32Array, 21);
  for (const be of [ref, ...natives.map((n) => n.be)]) {
    for (const kind of ["float", "bf16"] as const) {
      const cache = makeCache(sc, kind, Float32Array);
      be.pagedWrite(cache.k, cache.v, sc.kAll, sc.vAll, sc.slotMapping, sc.p);
      const whole = paged(be, sc, cache, Float32Array);
      const row = c.NH * c.HS;
      for (const split of [1, 20, 37, 52]) {
        // Chunk 1: rows [0, split) with context split; chunk 2: rows [split, 53) with context 53.
        const parts = [
          [0, split],
          [split, 53],
        ] as const;
        const got = new Float32Array(sc.q.length);
        for (const [a, b] of parts) {
          const out = new Float32Array((b - a) * row);
          be.pagedAttention(out, sc.q.subarray(a * row, b * row), cache.k, cache.v, sc.blockTables, Int32Array.of(0, b - a), Int32Array.of(b), sc.p);
          got.set(out, a * row);
        }
        if (be === ref) assertExact(got, whole, `${be.name} ${kind} split at ${split}`);
        else assertClose(got, whole, TOL.f32, `${be.name} ${kind} split at ${split}`);
      }
    }
  }
});

test("pagedWrite: slot −1 skips the row; bf16 codes are round-to-nearest-even", () => {
  const p = { numBlocks: 2, blockSize: 2, KVH: 1, HS: 3 };
  const k = Float32Array.of(1, 2, 3, 4, 5, 6), v = Float32Array.of(-1, -2, -3, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -9);
  for (const be of [ref, ...natives.map((n) => n.be)]) {
    const kc = new Float32Array(12).fill(9), vc = new Float32Array(12).fill(9);
    be.pagedWrite(kc, vc, k, v, Int32Array.of(3, -1), p);
    assertExact(kc, [9, 9, 9, 9, 9, 9, 9, 9, 9, 1, 2, 3], `${be.name} k`);
    assertExact(vc, [9, 9, 9, 9, 9, 9, 9, 9, 9, -1, -2, -3], `${be.name} v`);
    const kb = new Uint16Array(12), vb = new Uint16Array(12);
    be.pagedWrite(kb, vb, k, v, Int32Array.of(0, 2), p);
    // 1 + 2^-8 is a tie → even (1.0 = 0x3f80); 1 + 3·2^-8 is a tie → up to 0x3f82; 1 + 2^-9 → 0x3f80.
    assertExact(vb.subarray(6, 9), [0x3f80, 0x3f82, 0x3f80], `${be.name} bf16 ties`);
    assertExact(kb.subarray(0, 3), [0x3f80, 0x4000, 0x4040], `${be.name} bf16 k`);
  }
});

test("paged attention argument errors", () => {
  const c = CASES[2]!;
  const sc = scenario(c, Float32Array, 5);
  const cache = makeCache(sc, "float", Float32Array);
  for (const be of [ref, natives[0]!.be]) {
    const out = new Float32Array(sc.q.length);
    const call = (o: Partial<{ tables: Int32Array; ctx: Int32Array; qs: Int32Array; k: KvArr; p: PagedAttentionParams }>) =>
      be.pagedAttention(out, sc.q, o.k ?? cache.k, cache.v, o.tables ?? sc.blockTables, o.qs ?? sc.queryStart, o.ctx ?? sc.contextLens, o.p ?? sc.p);
    // A released (−1) block inside the window is read: refused, never dereferenced.
    const t = sc.blockTables.slice();
    t[0 * sc.p.maxBlocksPerSeq + Math.floor((c.ctx[0]! - 1) / c.bs)] = -1;
    assertKernelError(() => call({ tables: t }), /blockTables\[0\]\[4\] = -1 is out of range/);
    assertKernelError(() => call({ ctx: Int32Array.of(0, 23, 8) }), /contextLens\[0\] = 0 is less than/);
    assertKernelError(() => call({ ctx: Int32Array.of(40, 23, 99) }), /exceeds maxBlocksPerSeq/);
    assertKernelError(() => call({ qs: Int32Array.of(0, 1, 0, 19) }), /non-decreasing/);
    assertKernelError(() => call({ k: new Uint16Array(sc.cacheLen) }), /both be bf16/);
    assertKernelError(() => call({ p: { ...sc.p, NH: 3, KVH: 2 } }), /multiple of KVH/);
    assertKernelError(() => be.pagedWrite(cache.k, cache.v, sc.kAll.subarray(0, 2 * c.KVH * c.HS), sc.vAll.subarray(0, 2 * c.KVH * c.HS), Int32Array.of(4, 4), sc.p), /repeats an earlier slot/);
    assertKernelError(() => be.pagedWrite(cache.k, cache.v, sc.kAll.subarray(0, c.KVH * c.HS), sc.vAll.subarray(0, c.KVH * c.HS), Int32Array.of(sc.p.numBlocks * c.bs), sc.p), /out of range/);
    assertKernelError(() => be.pagedAttention(cache.k.subarray(0, out.length) as Float32Array, sc.q, cache.k, cache.v, sc.blockTables, sc.queryStart, sc.contextLens, sc.p), /overlap/);
  }
  assertKernelError(() => natives[0]!.be.pagedAttention(new Float64Array(sc.q.length), Float64Array.from(sc.q), cache.k, cache.v, sc.blockTables, sc.queryStart, sc.contextLens, sc.p), /Float64Array/);
});
