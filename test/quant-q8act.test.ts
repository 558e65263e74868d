// gemmQuantBlock with activations "q8" (q8_0 weights × q8-quantised activations, llama.cpp's
// vec_dot_q8_0_q8_0; native/quant_q8act.cc):
// 1. the activation rule against closed forms (scale max|x|/127, ties to even, zero blocks);
// 2. native (AVX-512 VNNI, AVX2, scalar; 1 and 2 threads; M 1..8; beta) against the ref
//    backend's same rule, with random block bytes (codes −128 included, which the sign trick must
//    handle) — within an f32 summation bound; VNNI and AVX2 bit-identical; thread-independent;
// 3. the q8 result against the exact f32-activation result within the rounding bound
//    Σ_blocks d_x/2 · Σ|w| (plus f32 slack);
// 4. M > 8 keeps f32 activations; bad options are KernelArgErrors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { assertClose, assertKernelError, backends, randn, rng, TOL } from "./util.js";
import { quantizeActivationsQ8 } from "../src/backend/ref/quant-blocks.js";
import { dequantizeBlock, quantizeBlock } from "../src/core/quant-blocks.js";
import { encodeF16 } from "../src/core/dtype.js";
import { loadAddon } from "../src/backend/native/addon.js";

const { ref, natives } = backends();
const nat = natives.slice(0, 2);

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

/** N rows of K/32 q8_0 blocks with random codes (every byte, −128 included) and scales in [0.5, 1.5)/64. */
function randomBlocks(N: number, K: number, seed: number): Uint8Array {
  const r = rng(seed);
  const w = new Uint8Array((N * K / 32) * 34);
  for (let b = 0; b < N * K / 32; b++) {
    const h = encodeF16((0.5 + r()) / 64);
    w[34 * b] = h & 255;
    w[34 * b + 1] = h >> 8;
    for (let j = 0; j < 32; j++) w[34 * b + 2 + j] = Math.floor(r() * 256);
  }
  return w;
}

test("q8 activations: the quantisation rule against closed forms", () => {
  const x = new Float32Array(64);
  for (let j = 0; j < 32; j++) x[j] = j - 16; // max |x| 16: d = 16/127, q = round(x · 127/16)
  x[0] = -127; // block 0 max 127: d = 1, q = x exactly, ties none
  x[1] = 2.5; // tie → 2 (even)
  x[2] = -3.5; // tie → −4
  // block 1 all zero: d = 0, q = 0
  const { q, d } = quantizeActivationsQ8(x, 1, 64);
  assert.equal(d[0], 1);
  assert.equal(d[1], 0);
  assert.equal(q[0], -127);
  assert.equal(q[1], 2);
  assert.equal(q[2], -4);
  for (let j = 3; j < 32; j++) assert.equal(q[j], j - 16);
  for (let j = 32; j < 64; j++) assert.equal(q[j], 0);
});

test("gemmQuantBlock q8 activations: native (VNNI / AVX2 / scalar, 1 and 2 threads) == ref's rule; VNNI and AVX2 bit-identical", () => {
  let seed = 7;
  for (const [M, N, K] of [[1, 1, 32], [1, 37, 64], [2, 5, 96], [3, 130, 1024], [8, 17, 256], [5, 300, 2048]] as const) {
    const x = randn(Float32Array, M * K, seed++);
    const w = randomBlocks(N, K, seed++);
    for (const beta of [0, 0.5]) {
      const y0 = beta === 0 ? new Float32Array(M * N).fill(NaN) : randn(Float32Array, M * N, seed++);
      const want = y0.slice();
      ref.gemmQuantBlock(x, w, want, { M, N, K, format: "q8_0", beta, activations: "q8" });
      const byIsa: Record<string, Float32Array> = {};
      for (const isa of ["avx512", "avx2", "scalar"]) {
        for (const { label, be } of nat) {
          const y = y0.slice();
          withIsa(isa, () => be.gemmQuantBlock(x, w, y, { M, N, K, format: "q8_0", beta, activations: "q8" }));
          assertClose(y, want, TOL.f32Reduce, `${isa} ${label} ${M}x${N}x${K} beta=${beta}`);
          if (byIsa[isa]) assert.deepEqual(y, byIsa[isa], `${isa}: thread count changed the result`);
          byIsa[isa] = y;
        }
      }
      const isa = loadAddon().q8ActIsa!() as string;
      if (isa === "avx512vnni") assert.deepEqual(byIsa.avx512, byIsa.avx2, "VNNI and AVX2 differ");
    }
  }
});

test("gemmQuantBlock q8 activations: within the activation rounding bound of the exact f32 path; M > 8 is the f32 path", () => {
  const be = nat[0]!.be;
  const M = 2, N = 64, K = 512, nb = K / 32;
  const x = randn(Float32Array, M * K, 3);
  const w = quantizeBlock(randn(Float32Array, N * K, 4, 0.05), "q8_0");
  const wd = new Float32Array(N * K);
  dequantizeBlock(wd, w, "q8_0", N * K);
  const exact = new Float32Array(M * N), got = new Float32Array(M * N);
  ref.gemmQuantBlock(x, w, exact, { M, N, K, format: "q8_0" });
  be.gemmQuantBlock(x, w, got, { M, N, K, format: "q8_0", activations: "q8" });
  const { d } = quantizeActivationsQ8(x, M, K);
  let differs = false;
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let bound = 0, mag = 0;
      for (let b = 0; b < nb; b++) {
        let sw = 0;
        for (let j = 0; j < 32; j++) {
          sw += Math.abs(wd[n * K + 32 * b + j]!);
          mag += Math.abs(wd[n * K + 32 * b + j]! * x[m * K + 32 * b + j]!);
        }
        bound += (d[m * nb + b]! / 2) * sw;
      }
      const err = Math.abs(got[m * N + n]! - exact[m * N + n]!);
      assert.ok(err <= bound + 1e-5 * mag, `[${m},${n}] error ${err} exceeds the bound ${bound}`);
      if (err > 0) differs = true;
    }
  }
  assert.ok(differs, "q8 activations gave the exact result everywhere: the option did nothing");
  // M > 8: the f32 path (prefill), bit for bit the call without the option
  const M9 = 9, x9 = randn(Float32Array, M9 * K, 5);
  const a = new Float32Array(M9 * N), b = new Float32Array(M9 * N);
  be.gemmQuantBlock(x9, w, a, { M: M9, N, K, format: "q8_0", activations: "q8" });
  be.gemmQuantBlock(x9, w, b, { M: M9, N, K, format: "q8_0" });
  assert.deepEqual(a, b);
});

test("gemmQuantBlock q8 activations: bad options are KernelArgErrors", () => {
  const be = nat[0]!.be;
  const x = new Float32Array(32), y = new Float32Array(1);
  assertKernelError(() => be.gemmQuantBlock(x, new Uint8Array(18), y, { M: 1, N: 1, K: 32, format: "q4_0", activations: "q8" }), /activations "q8" needs format q8_0/);
  assertKernelError(() => be.gemmQuantBlock(x, new Uint8Array(34), y, { M: 1, N: 1, K: 32, format: "q8_0", activations: "int4" as "q8" }), /activations must be "f32" or "q8"/);
});
