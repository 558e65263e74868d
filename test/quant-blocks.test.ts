// Tests of the GGUF block formats (src/core/quant-blocks.ts, gemmQuantBlock / dequantizeBlock):
// 1. hand-built blocks of every format packed here from the documented byte layouts, against
//    closed-form values computed in this file (ref and native dequantisation, exact);
// 2. llama.cpp's own values (test/golden/ggml_quant.bin, tools/golden/ggml_quant_golden.c ran
//    libggml-base from node-llama-cpp): our dequantisation of llama.cpp's blocks is bit-identical
//    to its dequantize_row_*, our q8_0/q4_0 quantisation byte-identical to quantize_row_*_ref, our
//    q4_k/q6_k error close to llama.cpp's;
// 3. round-trip error bounds of quantizeBlock (each value on its nearest level, worst cases);
// 4. native gemmQuantBlock (every ISA, 1 and 2 threads, matvec and panel-GEMM paths) against ref
//    within a rigorous f32 summation bound, thread-count independence, native dequantizeBlock of
//    arbitrary bytes bit-identical to ref; KernelArgErrors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { assertKernelError, backends, randn, rng } from "./util.js";
import type { Backend, BlockFormat } from "../src/backend/spec.js";
import { BLOCK_FORMATS, BLOCK_LAYOUT, QuantBlockError, blockBytes, dequantizeBlock, quantizeBlock } from "../src/core/quant-blocks.js";
import { decodeF16, encodeF16 } from "../src/core/dtype.js";

const { ref, natives } = backends();
const nat = natives.slice(0, 2);
const ISAS = ["avx512", "avx2", "scalar"];

function withIsa<T>(isa: string, fn: () => T): T {
  const saved = process.env.MOE_GEMM_ISA;
  process.env.MOE_GEMM_ISA = isa;
  try {
    return fn();
  } finally {
    if (saved === undefined) delete process.env.MOE_GEMM_ISA;
    else process.env.MOE_GEMM_ISA = saved;
  }
}

function sameBits(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (!Object.is(got[i], want[i])) assert.fail(`${what}[${i}]: got ${got[i]}, expected ${want[i]}`);
  }
}

function dequantWith(be: Backend | null, w: Uint8Array, format: BlockFormat, n: number): Float32Array {
  const out = new Float32Array(n);
  if (be === null) dequantizeBlock(out, w, format, n);
  else be.dequantizeBlock(out, w, format, n);
  return out;
}

const f32 = Math.fround;
const put16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 255;
  b[o + 1] = v >> 8;
};

// ---------------------------------------------------------------------------
// 1. Hand-built blocks, closed forms

/** Two blocks of each format packed from the layout description, and their values. */
function handBuilt(format: BlockFormat): { w: Uint8Array; want: Float32Array } {
  if (format === "q8_0") {
    // d = 0.5 (f16 0x3800), then d = −0.25 (0xB400); q_j = j − 16 + block.
    const w = new Uint8Array(68), want = new Float32Array(64);
    for (let b = 0; b < 2; b++) {
      put16(w, 34 * b, b === 0 ? 0x3800 : 0xb400);
      for (let j = 0; j < 32; j++) {
        w[34 * b + 2 + j] = (j - 16 + b) & 255;
        want[32 * b + j] = (j - 16 + b) * (b === 0 ? 0.5 : -0.25);
      }
    }
    return { w, want };
  }
  if (format === "q4_0") {
    // d = 2 (0x4000); byte j = low nibble j, high nibble 15 − j ⇒ x_j = (j − 8)·2, x_{j+16} = (7 − j)·2.
    const w = new Uint8Array(18), want = new Float32Array(32);
    put16(w, 0, 0x4000);
    for (let j = 0; j < 16; j++) {
      w[2 + j] = j | ((15 - j) << 4);
      want[j] = (j - 8) * 2;
      want[j + 16] = (7 - j) * 2;
    }
    return { w, want };
  }
  if (format === "q4_k") {
    // d = 1/8 (0x3000), dmin = 1/2 (0x3800); sub-block j: sc = 3 + 7j (up to 52: high bits
    // used), m = 60 − 5j; code of value 32j + l is (l·7 + j) mod 16.
    const w = new Uint8Array(144), want = new Float32Array(256);
    put16(w, 0, 0x3000);
    put16(w, 2, 0x3800);
    const sc = Array.from({ length: 8 }, (_, j) => 3 + 7 * j), mn = Array.from({ length: 8 }, (_, j) => 60 - 5 * j);
    // scales[0..3] = sc0..3 low 6 bits | (sc4..7 >> 4) << 6; scales[4..7] = m0..3 | (m4..7 >> 4) << 6;
    // scales[8..11] = (sc4..7 & 15) | (m4..7 & 15) << 4.
    for (let j = 0; j < 4; j++) {
      w[4 + j] = sc[j]! | ((sc[j + 4]! >> 4) << 6);
      w[8 + j] = mn[j]! | ((mn[j + 4]! >> 4) << 6);
      w[12 + j] = (sc[j + 4]! & 15) | ((mn[j + 4]! & 15) << 4);
    }
    for (let j = 0; j < 8; j++) {
      for (let l = 0; l < 32; l++) {
        const q = (l * 7 + j) % 16;
        // qs: group g = ⌊j/2⌋ of 32 bytes; even sub-block in the low nibble, odd in the high.
        w[16 + 32 * (j >> 1) + l]! |= j % 2 === 0 ? q : q << 4;
        want[32 * j + l] = f32(f32((1 / 8) * sc[j]!) * q) - f32(0.5 * mn[j]!);
      }
    }
    return { w, want };
  }
  // q6_k: d = 1/4 (0x3400); scales[i] = i − 8 (negative ones too); value i has code (5i + 3) mod 64.
  const w = new Uint8Array(210), want = new Float32Array(256);
  put16(w, 208, 0x3400);
  for (let i = 0; i < 16; i++) w[192 + i] = (i - 8) & 255;
  for (let i = 0; i < 256; i++) {
    const q = (5 * i + 3) % 64;
    // half h = ⌊i/128⌋, r = i mod 128, quadrant c = ⌊r/32⌋, l = r mod 32: low 4 bits in
    // ql[64h + l + 32·(c odd)] (low nibble for c < 2, high for c ≥ 2), high 2 bits in
    // qh[32h + l] at bit 2c.
    const h = i >> 7, r = i & 127, c = r >> 5, l = r & 31;
    w[64 * h + l + 32 * (c & 1)]! |= c < 2 ? q & 15 : (q & 15) << 4;
    w[128 + 32 * h + l]! |= (q >> 4) << (2 * c);
    want[i] = f32(0.25 * (Math.floor(i / 16) - 8)) * (q - 32);
  }
  return { w, want };
}

test("hand-built blocks of every format decode to closed-form values (ref and native, exact)", () => {
  for (const format of BLOCK_FORMATS) {
    const { w, want } = handBuilt(format);
    sameBits(dequantWith(null, w, format, want.length), want, `core ${format}`);
    sameBits(dequantWith(ref, w, format, want.length), want, `ref ${format}`);
    for (const isa of ISAS) {
      for (const { label, be } of nat) sameBits(withIsa(isa, () => dequantWith(be, w, format, want.length)), want, `${label} ${isa} ${format}`);
    }
    // One weight row; x = e_k picks value k; x = ones sums the row (every path).
    const K = want.length;
    let sum = 0;
    for (const v of want) sum += v;
    for (const { label, be } of [{ label: "ref", be: ref }, ...nat]) {
      for (const isa of ISAS) {
        const y = new Float32Array(1);
        withIsa(isa, () => be.gemmQuantBlock(new Float32Array(K).fill(1), w, y, { M: 1, N: 1, K, format }));
        assert.ok(Math.abs(y[0]! - sum) <= 1e-6 * Math.abs(sum) + 1e-6, `${label} ${isa} ${format} row sum ${y[0]} vs ${sum}`);
        const x = new Float32Array(K * K);
        for (let k = 0; k < K; k++) x[k * K + k] = 1;
        const yk = new Float32Array(K);
        withIsa(isa, () => be.gemmQuantBlock(x, w, yk, { M: K, N: 1, K, format }));
        for (let k = 0; k < K; k++) assert.ok(yk[k] === want[k], `${label} ${isa} ${format} one-hot x[${k}]: ${yk[k]} vs ${want[k]}`);
      }
    }
  }
});

test("layout constants and codec errors", () => {
  assert.deepEqual(
    BLOCK_FORMATS.map((f) => [f, BLOCK_LAYOUT[f].blockSize, BLOCK_LAYOUT[f].blockBytes, BLOCK_LAYOUT[f].ggmlType]),
    [["q8_0", 32, 34, 8], ["q4_0", 32, 18, 2], ["q4_k", 256, 144, 12], ["q6_k", 256, 210, 14]],
  );
  assert.equal(blockBytes("q6_k", 512), 420);
  assert.throws(() => blockBytes("q4_k", 100), (e: unknown) => e instanceof QuantBlockError && /multiple of 256/.test(e.message));
  assert.throws(() => quantizeBlock(new Float32Array(32), "q5_0" as BlockFormat), /format must be one of q8_0, q4_0, q4_k, q6_k/);
  assert.throws(() => quantizeBlock(Float32Array.of(...new Array(31).fill(0), NaN), "q8_0"), /x\[31\] is NaN/);
  assert.throws(() => dequantizeBlock(new Float32Array(32), new Uint8Array(17), "q4_0", 32), /w has 17 bytes, expected 18/);
});

// ---------------------------------------------------------------------------
// 2. llama.cpp's values

interface Golden {
  rows: number;
  K: number;
  x: Float32Array;
  formats: Map<BlockFormat, { blocks: Uint8Array; deq: Float32Array }>;
}

function readGolden(): Golden {
  const buf = readFileSync(new URL("../../test/golden/ggml_quant.bin", import.meta.url));
  assert.equal(buf.subarray(0, 4).toString("latin1"), "MOEQ");
  const rows = buf.readUInt32LE(4), K = buf.readUInt32LE(8);
  let o = 12;
  const floats = (n: number): Float32Array => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = buf.readFloatLE(o + 4 * i);
    o += 4 * n;
    return a;
  };
  const x = floats(rows * K);
  const formats = new Map<BlockFormat, { blocks: Uint8Array; deq: Float32Array }>();
  for (const f of BLOCK_FORMATS) {
    assert.equal(buf.readUInt32LE(o), BLOCK_LAYOUT[f].ggmlType, `golden ${f} ggml type`);
    const nb = buf.readUInt32LE(o + 4);
    o += 8;
    const blocks = new Uint8Array(buf.subarray(o, o + nb));
    o += nb;
    formats.set(f, { blocks, deq: floats(rows * K) });
  }
  assert.equal(o, buf.length);
  return { rows, K, x, formats };
}

test("llama.cpp golden: dequantisation bit-identical (core, ref, native every ISA)", () => {
  const g = readGolden();
  for (const f of BLOCK_FORMATS) {
    const { blocks, deq } = g.formats.get(f)!;
    sameBits(dequantWith(null, blocks, f, g.rows * g.K), deq, `core ${f}`);
    sameBits(dequantWith(ref, blocks, f, g.rows * g.K), deq, `ref ${f}`);
    for (const isa of ISAS) for (const { label, be } of nat) sameBits(withIsa(isa, () => dequantWith(be, blocks, f, g.rows * g.K)), deq, `${label} ${isa} ${f}`);
  }
});

test("llama.cpp golden: q8_0/q4_0 quantisation byte-identical; q4_k/q6_k error close to llama.cpp's", () => {
  const g = readGolden();
  for (const f of BLOCK_FORMATS) {
    const { blocks, deq } = g.formats.get(f)!;
    const ours = quantizeBlock(g.x, f);
    assert.equal(ours.length, blocks.length);
    if (f === "q8_0" || f === "q4_0") {
      for (let i = 0; i < ours.length; i++) if (ours[i] !== blocks[i]) assert.fail(`${f} byte ${i}: ${ours[i]} vs llama.cpp ${blocks[i]}`);
      continue;
    }
    const mine = dequantWith(null, ours, f, g.rows * g.K);
    for (let r = 0; r < g.rows; r++) {
      let eOurs = 0, eLlama = 0, s = 0;
      for (let k = 0; k < g.K; k++) {
        const i = r * g.K + k;
        eOurs += (mine[i]! - g.x[i]!) ** 2;
        eLlama += (deq[i]! - g.x[i]!) ** 2;
        s += g.x[i]! ** 2;
      }
      const ro = Math.sqrt(eOurs / s), rl = Math.sqrt(eLlama / s);
      assert.ok(ro <= 1.3 * rl + 0.005, `${f} row ${r}: relative RMS error ${ro.toExponential(2)} vs llama.cpp ${rl.toExponential(2)}`);
    }
  }
});

// ---------------------------------------------------------------------------
// 3. Round-trip bounds

test("quantizeBlock round trip: worst-case bounds (q8_0, q4_0) and nearest-level codes (q4_k, q6_k)", () => {
  const n = 256 * 24;
  const x = randn(Float32Array, n, 11);
  const r = rng(12);
  for (let i = 0; i < n; i++) x[i]! *= 2 ** Math.floor(r() * 8 - 4) * (Math.floor(i / 256) % 3 === 0 ? 1 : 0.01); // scales vary per block
  for (const f of BLOCK_FORMATS) {
    const w = quantizeBlock(x, f);
    assert.equal(w.length, blockBytes(f, n));
    const y = dequantWith(null, w, f, n);
    let e2 = 0, s2 = 0;
    for (let i = 0; i < n; i++) {
      e2 += (y[i]! - x[i]!) ** 2;
      s2 += x[i]! ** 2;
    }
    if (f === "q8_0" || f === "q4_0") {
      // d = amax/127 (q8_0) or amax/8 (q4_0), stored as f16 (relative error ≤ 2^-11): every value is
      // within d/2 + 127·d·2^-11 (q8_0); within d + 8·d·2^-11 (q4_0: the code 16 is clamped to 15).
      for (let b = 0; b < n / 32; b++) {
        let amax = 0;
        for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]!));
        const bound = f === "q8_0" ? (amax / 127) * (0.5 + 127 / 2048) : (amax / 8) * (1 + 8 / 2048);
        for (let j = 0; j < 32; j++) {
          const i = 32 * b + j;
          assert.ok(Math.abs(y[i]! - x[i]!) <= bound * (1 + 1e-6), `${f} value ${i}: |${y[i]} − ${x[i]}| > ${bound}`);
        }
      }
    } else {
      // Each value sits on the level nearest to it given its sub-block's stored scale a (and
      // offset b for q4_k), parsed here from the layout: t = (x + b)/a is within ½ of the code,
      // or beyond the code range and clamped to its end.
      const bb = BLOCK_LAYOUT[f].blockBytes;
      for (let i = 0; i < n; i++) {
        const blk = Math.floor(i / 256), o = blk * bb, e = i % 256;
        let a: number, b: number, lo: number, hi: number;
        if (f === "q4_k") {
          const j = e >> 5, s = o + 4;
          const sc = j < 4 ? w[s + j]! & 63 : (w[s + j + 4]! & 15) | ((w[s + j - 4]! >> 6) << 4);
          const m = j < 4 ? w[s + j + 4]! & 63 : (w[s + j + 4]! >> 4) | ((w[s + j]! >> 6) << 4);
          a = f32(decodeF16(w[o]! | (w[o + 1]! << 8)) * sc);
          b = f32(decodeF16(w[o + 2]! | (w[o + 3]! << 8)) * m);
          [lo, hi] = [0, 15];
        } else {
          const sc = (w[o + 192 + (e >> 4)]! << 24) >> 24;
          a = f32(decodeF16(w[o + 208]! | (w[o + 209]! << 8)) * sc);
          b = 0;
          [lo, hi] = [-32, 31];
        }
        if (a === 0) continue;
        const code = (y[i]! + b) / a, t = (x[i]! + b) / a;
        assert.ok(Math.abs(code - Math.round(code)) < 1e-3, `${f} value ${i}: ${y[i]} is not on a level`);
        const c = Math.round(code);
        const ok = Math.abs(t - c) <= 0.5 + 1e-4 || (c === lo && t < lo) || (c === hi && t > hi);
        assert.ok(ok, `${f} value ${i}: x = ${x[i]} (level ${t.toFixed(3)}) stored as code ${c}`);
      }
    }
    const rel = Math.sqrt(e2 / s2);
    // Relative RMS over this mix of block scales (measured 0.0088, 0.107, 0.104, 0.027), ~30% margin.
    const maxRel = { q8_0: 0.012, q4_0: 0.14, q4_k: 0.13, q6_k: 0.035 }[f];
    assert.ok(rel < maxRel, `${f}: relative RMS error ${rel} ≥ ${maxRel}`);
  }
});

// ---------------------------------------------------------------------------
// 4. Native against ref

/** Blocks of realistic weights: normals (std 0.5) quantised with quantizeBlock. */
function weights(format: BlockFormat, N: number, K: number, seed: number): Uint8Array {
  const w = quantizeBlock(randn(Float32Array, N * K, seed, 0.5), format);
  return w;
}

/** |native − ref| ≤ (K + 8)·2^-23 · Σ_k |x_k·w_k| (+ the beta·y term): f32 summation, any order. */
function assertWithinSumBound(got: Float32Array, want: Float32Array, x: Float32Array, wd: Float32Array, y0: Float32Array, beta: number, M: number, N: number, K: number, what: string): void {
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let abs = 0;
      for (let k = 0; k < K; k++) abs += Math.abs(x[m * K + k]! * wd[n * K + k]!);
      const bound = (K + 8) * 2 ** -23 * (abs + Math.abs(beta * y0[m * N + n]!)) + 1e-30;
      const i = m * N + n;
      if (!(Math.abs(got[i]! - want[i]!) <= bound)) assert.fail(`${what} y[${m},${n}]: ${got[i]} vs ref ${want[i]} (bound ${bound})`);
    }
  }
}

const SHAPES: [number, number][] = [
  // [M, N]; K comes per format (1, 3 and 17 blocks).
  [1, 1], [1, 7], [2, 33], [3, 5], [5, 2], [8, 19], [9, 3], [17, 40], [64, 70],
];

test("gemmQuantBlock: native (every ISA, 1 and 2 threads, matvec and panel paths) == ref within the f32 bound", () => {
  let seed = 100;
  for (const format of BLOCK_FORMATS) {
    const bs = BLOCK_LAYOUT[format].blockSize;
    for (const blocks of [1, 3, 17]) {
      const K = bs * blocks;
      for (const [M, N] of SHAPES) {
        if (blocks === 17 && M * N > 200) continue; // keep the f64 ref affordable
        const x = randn(Float32Array, M * K, seed++);
        const w = weights(format, N, K, seed++);
        const wd = dequantWith(null, w, format, N * K);
        for (const beta of [0, 0.5]) {
          const y0 = beta === 0 ? new Float32Array(M * N).fill(NaN) : randn(Float32Array, M * N, seed++);
          const want = y0.slice();
          ref.gemmQuantBlock(x, w, want, { M, N, K, format, beta });
          for (const isa of ISAS) {
            for (const { label, be } of nat) {
              const y = y0.slice();
              withIsa(isa, () => be.gemmQuantBlock(x, w, y, { M, N, K, format, beta }));
              assertWithinSumBound(y, want, x, wd, beta === 0 ? new Float32Array(M * N) : y0, beta, M, N, K, `${label} ${isa} ${format} ${M}x${N}x${K} beta=${beta}`);
            }
          }
        }
      }
    }
  }
});

test("gemmQuantBlock: the same bits at 1 and 2 threads; large N crosses the parallel threshold", () => {
  const [one, two] = nat.map((n) => n.be);
  for (const format of BLOCK_FORMATS) {
    const K = 1024, N = 300;
    for (const M of [1, 4, 8, 24]) {
      const x = randn(Float32Array, M * K, 7 + M), w = weights(format, N, K, 9 + M);
      const a = new Float32Array(M * N), b = new Float32Array(M * N);
      one!.gemmQuantBlock(x, w, a, { M, N, K, format });
      two!.gemmQuantBlock(x, w, b, { M, N, K, format });
      if (M <= 8) sameBits(b, a, `${format} M=${M} 2 threads vs 1`);
      const want = new Float32Array(M * N);
      ref.gemmQuantBlock(x, w, want, { M, N, K, format });
      const wd = dequantWith(null, w, format, N * K);
      assertWithinSumBound(b, want, x, wd, new Float32Array(M * N), 0, M, N, K, `${format} M=${M} 2 threads`);
    }
  }
});

test("dequantizeBlock: native == ref bit for bit on arbitrary bytes (NaN/Inf/subnormal f16 scales too)", () => {
  const r = rng(77);
  for (const format of BLOCK_FORMATS) {
    const n = BLOCK_LAYOUT[format].blockSize * 300; // > 64 KiB for q8_0/q6_k: parallel path
    const w = Uint8Array.from({ length: blockBytes(format, n) }, () => Math.floor(r() * 256));
    const want = dequantWith(ref, w, format, n);
    for (const isa of ISAS) for (const { label, be } of nat) sameBits(withIsa(isa, () => dequantWith(be, w, format, n)), want, `${label} ${isa} ${format}`);
  }
  // An f16 round trip sanity check of the scale codec the layouts use.
  assert.equal(decodeF16(encodeF16(0.0102)), 0.01020050048828125);
});

test("gemmQuantBlock / dequantizeBlock: bad arguments are KernelArgErrors", () => {
  const x = new Float32Array(64), y = new Float32Array(2), w = new Uint8Array(2 * 2 * 34);
  for (const be of [ref, nat[0]!.be]) {
    assertKernelError(() => be.gemmQuantBlock(x, w, y, { M: 1, N: 2, K: 64, format: "q5_1" as BlockFormat }), /format must be one of q8_0, q4_0, q4_k, q6_k/);
    assertKernelError(() => be.gemmQuantBlock(new Float32Array(48), w, y, { M: 1, N: 2, K: 48, format: "q8_0" }), /K = 48 must be a multiple of q8_0's block size 32/);
    assertKernelError(() => be.gemmQuantBlock(x, w.subarray(1), y, { M: 1, N: 2, K: 64, format: "q8_0" }), /w has 135 elements, expected 136/);
    assertKernelError(() => be.gemmQuantBlock(x, new Int8Array(136) as unknown as Uint8Array, y, { M: 1, N: 2, K: 64, format: "q8_0" }), /w must be a Uint8Array/);
    assertKernelError(() => be.gemmQuantBlock(x, w, new Float32Array(3), { M: 1, N: 2, K: 64, format: "q8_0" }), /y has 3 elements, expected 2/);
    assertKernelError(() => be.gemmQuantBlock(x, w, y, { M: 1, N: 2, K: 64, format: "q8_0", beta: Infinity }), /beta must be a finite number/);
    const buf = new Float32Array(66);
    assertKernelError(() => be.gemmQuantBlock(buf.subarray(0, 64), w, buf.subarray(63, 65), { M: 1, N: 2, K: 64, format: "q8_0" }), /y and x overlap/);
    assertKernelError(() => be.dequantizeBlock(new Float32Array(256), new Uint8Array(144), "q4_k", 255), /n = 255 must be a multiple of q4_k's block size 256/);
    assertKernelError(() => be.dequantizeBlock(new Float32Array(256), new Uint8Array(143), "q4_k", 256), /w has 143 elements, expected 144/);
  }
});

// ---------------------------------------------------------------------------
// gemmQuant's M ≤ 8 path (dense codes widened in registers, native/quant_blocks*.cc)

test("gemmQuant M ≤ 8 on every ISA: every code of every dtype exact (NaN, ±Inf, subnormals), random rows == ref", () => {
  const DTYPES = ["bf16", "f16", "fp8_e4m3", "fp8_e5m2", "int8"] as const;
  for (const dtype of DTYPES) {
    const count = dtype === "bf16" || dtype === "f16" ? 65536 : 256;
    const K = 37; // two 16-lane vectors and a tail (AVX-512), four 8-lane vectors and a tail (AVX2)
    const w = dtype === "int8" ? new Int8Array(count * K) : count === 256 ? new Uint8Array(count * K) : new Uint16Array(count * K);
    for (let n = 0; n < count; n++) w[n * K + ((n * 7) % K)] = dtype === "int8" ? (n << 24) >> 24 : n;
    // M = 2: row 0 all ones, row 1 all minus ones ⇒ y[0,n] = decode(code n)·s, y[1,n] = −decode·s.
    const x = Float32Array.from({ length: 2 * K }, (_, i) => (i < K ? 1 : -1));
    const want = new Float32Array(2 * count);
    ref.gemmQuant(x, w, Float32Array.of(0.5), want, { M: 2, N: count, K, dtype });
    for (const isa of ISAS) {
      for (const { label, be } of nat) {
        const y = new Float32Array(2 * count);
        withIsa(isa, () => be.gemmQuant(x, w, Float32Array.of(0.5), y, { M: 2, N: count, K, dtype }));
        for (let i = 0; i < 2 * count; i++) {
          const ok = Number.isNaN(want[i]!) ? Number.isNaN(y[i]!) : y[i] === want[i];
          if (!ok) assert.fail(`${label} ${isa} ${dtype} y[${i}]: ${y[i]} vs ref ${want[i]}`);
        }
      }
    }
    // Random finite codes, M = 1..8, per-row scales, beta: within the f32 summation bound.
    const r = rng(31);
    for (const [M, N, Kr] of [[1, 67, 300], [3, 9, 1000], [8, 40, 129], [5, 300, 256]] as const) {
      const codes = dtype === "int8" ? Int8Array.from({ length: N * Kr }, () => Math.floor(r() * 255) - 127)
        : dtype === "bf16" ? Uint16Array.from({ length: N * Kr }, () => (Math.floor(r() * 65536) & 0x87ff) | 0x3800)
        : dtype === "f16" ? Uint16Array.from({ length: N * Kr }, () => Math.floor(r() * 65536) & 0xbbff)
        : Uint8Array.from({ length: N * Kr }, () => Math.floor(r() * 256) & 0xf7);
      const scales = Float32Array.from({ length: N }, () => 0.1 + r());
      const x = randn(Float32Array, M * Kr, 40 + M);
      const y0 = randn(Float32Array, M * N, 50 + M);
      const wantR = y0.slice();
      ref.gemmQuant(x, codes, scales, wantR, { M, N, K: Kr, dtype, beta: 0.25 });
      // Σ_k |x|·|decode(w)|·scale for the bound: ref on |x| and sign-stripped codes.
      const absY = new Float32Array(M * N);
      const absX = Float32Array.from(x, Math.abs);
      const stripped = dtype === "int8" ? Int8Array.from(codes as Int8Array, (c) => Math.abs(c)) : dtype === "bf16" || dtype === "f16" ? Uint16Array.from(codes as Uint16Array, (c) => c & 0x7fff) : Uint8Array.from(codes as Uint8Array, (c) => c & 0x7f);
      ref.gemmQuant(absX, stripped, scales, absY, { M, N, K: Kr, dtype });
      for (const isa of ISAS) {
        for (const { label, be } of nat) {
          const y = y0.slice();
          withIsa(isa, () => be.gemmQuant(x, codes, scales, y, { M, N, K: Kr, dtype, beta: 0.25 }));
          for (let i = 0; i < M * N; i++) {
            const bound = (Kr + 8) * 2 ** -23 * (absY[i]! + Math.abs(0.25 * y0[i]!)) + 1e-30;
            if (!(Math.abs(y[i]! - wantR[i]!) <= bound)) assert.fail(`${label} ${isa} ${dtype} ${M}x${N}x${Kr} y[${i}]: ${y[i]} vs ref ${wantR[i]} (bound ${bound})`);
          }
        }
      }
    }
  }
});
