// GGUF quantised tensor types against ggml itself (the libggml-base node-llama-cpp ships,
// called through test/native/ggml-ref.c):
//   1. our quantisers (q4_0, q8_0, q4_k, q6_k, bf16) equal quantize_row_*_ref byte for byte on
//      inputs with every awkward shape (zeros, constants, one sign, outliers, tiny values);
//   2. our dequantisers of every readable type (Q4_0/1, Q5_0/1, Q8_0, Q4_K, Q5_K, Q6_K, BF16)
//      equal dequantize_row_* bit for bit on random blocks (finite f16 scales);
//   3. a GGUF written with every quantised type reads back as the blocks' dequantised values.
// Skipped (with the reason) when node-llama-cpp's libraries or a C compiler are missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createRng } from "../src/core/rng.js";
import { dequantizeBlock, quantizeBlock, type BlockFormat } from "../src/core/quant-blocks.js";
import { decodeBf16, dequantizeExtra, encodeBf16, EXTRA_BLOCK_LAYOUT, type ExtraBlockType } from "../src/core/ggml-quants-ref.js";
import { GgufFile, writeGguf, type GgmlTypeName } from "../src/io/gguf.js";
import { decodeArray, encodeArray } from "../src/core/dtype.js";
import { loadGgmlRef } from "./ggml-ref.js";

const { ref: ggml, reason } = loadGgmlRef();

/** Inputs of n values (a multiple of 256) that hit every branch of the quantisers. */
function awkwardInputs(seed: number): Float32Array[] {
  const rng = createRng(seed);
  const n = 1024;
  const gen = (f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));
  return [
    gen(() => rng.normal()),
    gen(() => 0.01 * rng.normal()),
    gen(() => rng.uniform() * 3),          // positive only (k-quant min = 0 branch)
    gen(() => -rng.uniform() - 0.5),       // negative only
    gen((i) => (i < 256 ? 0 : rng.normal())), // an all-zero super-block
    gen((i) => (i % 32 < 16 ? 0.25 : rng.normal() * 1e-3)),
    gen((i) => (i % 64 === 3 ? 40 * rng.normal() : rng.normal())), // outliers
    gen(() => 1e-20 * rng.normal()),       // below GROUP_MAX_EPS
    gen((i) => Math.round(rng.normal() * 8) / 8), // values on a grid (ties in the rounding)
    gen((i) => (i % 256 < 128 ? 1.5 : -1.5)), // constant halves
  ];
}

test("quantisers equal ggml's quantize_row_*_ref byte for byte (q4_0, q8_0, q4_k, q6_k, bf16)", (t) => {
  if (!ggml) return t.skip(reason);
  for (const [k, x] of awkwardInputs(11).entries()) {
    for (const format of ["q4_0", "q8_0", "q4_k", "q6_k"] as BlockFormat[]) {
      const ours = quantizeBlock(x, format), theirs = ggml.quantize(format, x);
      assert.equal(ours.length, theirs.length);
      const at = ours.findIndex((b, i) => b !== theirs[i]);
      assert.equal(at, -1, `input #${k} ${format}: first differing byte ${at} (ours ${ours[at]}, ggml ${theirs[at]})`);
    }
    const bf = encodeBf16(x), theirs = ggml.quantize("bf16", x);
    assert.deepEqual(new Uint8Array(bf.buffer), theirs, `input #${k} bf16`);
  }
});

/** Random blocks with finite f16 scales at the given byte offsets of each block. */
function randomBlocks(rng: ReturnType<typeof createRng>, nBlocks: number, bytes: number, f16At: number[]): Uint8Array {
  const w = new Uint8Array(nBlocks * bytes);
  for (let i = 0; i < w.length; i++) w[i] = Math.floor(rng.uniform() * 256);
  for (let b = 0; b < nBlocks; b++) {
    for (const o of f16At) {
      // exponent field 1..29 (finite normal, |d| in [2^-14, 2^14)), any sign and mantissa
      const e = 1 + Math.floor(rng.uniform() * 29);
      w[b * bytes + o + 1] = (w[b * bytes + o + 1]! & 0x83) | (e << 2);
    }
  }
  return w;
}

test("dequantisers equal ggml's dequantize_row_* bit for bit (every readable type)", (t) => {
  if (!ggml) return t.skip(reason);
  const rng = createRng(5);
  const engine: [BlockFormat, number, number, number[]][] = [["q8_0", 32, 34, [0]], ["q4_0", 32, 18, [0]], ["q4_k", 256, 144, [0, 2]], ["q6_k", 256, 210, [208]]];
  for (const [format, bs, bb, f16] of engine) {
    const nb = 24, w = randomBlocks(rng, nb, bb, f16);
    const ours = new Float32Array(nb * bs);
    dequantizeBlock(ours, w, format, nb * bs);
    assert.deepEqual(new Uint32Array(ours.buffer), new Uint32Array(ggml.dequantize(format, w, nb * bs).buffer), format);
  }
  const extraF16: Record<ExtraBlockType, number[]> = { q4_1: [0, 2], q5_0: [0], q5_1: [0, 2], q5_k: [0, 2] };
  for (const type of Object.keys(EXTRA_BLOCK_LAYOUT) as ExtraBlockType[]) {
    const { blockSize, blockBytes } = EXTRA_BLOCK_LAYOUT[type];
    const nb = 24, w = randomBlocks(rng, nb, blockBytes, extraF16[type]);
    const ours = dequantizeExtra(type, w, nb * blockSize);
    assert.deepEqual(new Uint32Array(ours.buffer), new Uint32Array(ggml.dequantize(type, w, nb * blockSize).buffer), type);
  }
  const codes = new Uint16Array(4096).map(() => Math.floor(rng.uniform() * 65536) & 0xff7f); // no NaN payload quirks
  assert.deepEqual(new Uint32Array(decodeBf16(codes).buffer), new Uint32Array(ggml.dequantize("bf16", new Uint8Array(codes.buffer), codes.length).buffer), "bf16");
});

test("a GGUF with every writable quantised type reads back as ggml dequantises its blocks", () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-ggufq-"));
  try {
    const rng = createRng(3);
    const x = Float32Array.from({ length: 4 * 512 }, () => rng.normal());
    const types: GgmlTypeName[] = ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"];
    const file = path.join(tmp, "t.gguf");
    writeGguf(file, {}, types.map((type) => ({ name: `t.${type}`, shape: [4, 512], type, data: x })));
    const g = GgufFile.open(file);
    for (const type of types) {
      const info = g.info(`t.${type}`);
      assert.equal(info.type, type);
      const back = g.read(`t.${type}`);
      let want: Float32Array;
      if (type === "F32") want = x;
      else if (type === "BF16") want = decodeBf16(encodeBf16(x));
      else if (type === "F16") {
        const codes = new Uint16Array(x.length);
        encodeArray("f16", codes, x);
        want = new Float32Array(x.length);
        decodeArray("f16", want, codes);
      }
      else {
        const f = type.toLowerCase() as BlockFormat;
        assert.deepEqual(g.readRaw(`t.${type}`), quantizeBlock(x, f), `${type} raw blocks`);
        want = new Float32Array(x.length);
        dequantizeBlock(want, quantizeBlock(x, f), f, x.length);
      }
      assert.deepEqual(back, want, type);
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
});
