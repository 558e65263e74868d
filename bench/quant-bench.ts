// Batch-1 decode benchmark of the quantised weight kernels: `npm run bench:quant [-- --json]
// [--threads 1,2] [--only bandwidth,matvec,prefill]`.
//
// 1. bandwidth: the machine's read bandwidth measured in the same run: a native 64-bit word sum
//    over 256 MiB (readBandwidthProbe, the engine's threads; read only), the kernel table's f64
//    `sum` of the same bytes as f32, and a 256 MiB memcpy (Buffer.copy; read + write counted).
// 2. matvec: y (1,N) = x (1,K) · Wᵀ with W (N,K) = (16384, 4096), 64 Mi weights — larger than any
//    cache here — for every compact format: GGUF blocks (gemmQuantBlock q8_0/q4_0/q4_k/q6_k),
//    gemmQuant (bf16, f16, fp8_e4m3, int8 per-row scales) and f32 gemm, interleaved with the
//    read-bandwidth probe. Value: weight bytes streamed per second (GB/s); peer: the probe's read
//    bandwidth in the same rounds (ratio = fraction reached), and the f32 gemm's time (ratio =
//    speed-up, time f32 / time format).
// 3. prefill: M = 64 rows through gemmQuantBlock (dequantised panels + GEMM), GFLOP/s vs the f32
//    gemm of the same shape (smaller W: 4096 × 4096).
// Block bytes are random with fixed finite scales (any code pattern is a valid block). Every
// kernel is checked once against the ref backend on a small shape before timing.
// Not: a tuning tool; medians of 7 after 2 warm-ups, interleaved (shared, noisy machine).
import { createBackend, type Backend, type BlockFormat, type QuantDtype } from "../src/backend/index.js";
import { loadAddon } from "../src/backend/native/addon.js";
import { BLOCK_FORMATS, BLOCK_LAYOUT, quantizeBlock } from "../src/core/quant-blocks.js";
import { header, note, parseFlags, report, timeInterleaved, wants } from "./common.js";

const PARTS = ["bandwidth", "matvec", "prefill"];
const N = 16384, K = 4096;
const PN = 4096, PK = 4096, PM = 64;
const DENSE: QuantDtype[] = ["bf16", "f16", "fp8_e4m3", "int8"];

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  const u32 = new Uint32Array(out.buffer, 0, n >> 2);
  let s = seed >>> 0;
  for (let i = 0; i < u32.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    u32[i] = s ^ (s >>> 13);
  }
  return out;
}

function randomF32(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

/** Random blocks of `rows × K` values with the f16 scales set to small finite values. */
function randomBlocks(format: BlockFormat, rows: number, cols: number, seed: number): Uint8Array {
  const { blockSize, blockBytes } = BLOCK_LAYOUT[format];
  const nb = (rows * cols) / blockSize;
  const w = randomBytes(nb * blockBytes, seed);
  const d = 0x2148; // f16 0.0102
  for (let b = 0; b < nb; b++) {
    const o = b * blockBytes;
    if (format === "q6_k") {
      w[o + 208] = d & 255;
      w[o + 209] = d >> 8;
    } else {
      w[o] = d & 255;
      w[o + 1] = d >> 8;
      if (format === "q4_k") {
        w[o + 2] = d & 255;
        w[o + 3] = d >> 8;
      }
    }
  }
  return w;
}

function denseCodes(dtype: QuantDtype, n: number, seed: number): Uint16Array | Uint8Array | Int8Array {
  const b = randomBytes(2 * n, seed);
  if (dtype === "int8") return new Int8Array(b.buffer, 0, n);
  if (dtype === "fp8_e4m3") return Uint8Array.from(b.subarray(0, n), (c) => ((c & 0x7f) === 0x7f ? 0x70 : c));
  const u16 = new Uint16Array(b.buffer, 0, n);
  for (let i = 0; i < n; i++) u16[i] = (u16[i]! & 0x8fff) | 0x3000; // finite, |v| < 1
  return u16;
}

/** Largest |got − want| relative to the largest |want| (dot products cancel; scale by the output's size). */
function maxRelErr(got: Float32Array, want: Float32Array): number {
  let worst = 0, scale = 1e-6;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]!));
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  return worst / scale;
}

/** One small check of every timed kernel against ref (M = 1 and M = 12); throws when wrong. */
function validate(be: Backend): void {
  const ref = createBackend({ name: "ref" });
  for (const M of [1, 12]) {
    const n = 37, k = 512, x = randomF32(M * k, 5);
    for (const format of BLOCK_FORMATS) {
      const w = quantizeBlock(randomF32(n * k, 6), format);
      const a = new Float32Array(M * n), b = new Float32Array(M * n);
      be.gemmQuantBlock(x, w, a, { M, N: n, K: k, format });
      ref.gemmQuantBlock(x, w, b, { M, N: n, K: k, format });
      const e = maxRelErr(a, b);
      if (!(e < 1e-3)) throw new Error(`gemmQuantBlock ${format} M=${M}: native differs from ref (max rel err ${e})`);
    }
    for (const dtype of DENSE) {
      const w = denseCodes(dtype, n * k, 7), s = Float32Array.from({ length: n }, (_, i) => 0.5 + i / n);
      const a = new Float32Array(M * n), b = new Float32Array(M * n);
      be.gemmQuant(x, w, s, a, { M, N: n, K: k, dtype });
      ref.gemmQuant(x, w, s, b, { M, N: n, K: k, dtype });
      const e = maxRelErr(a, b);
      if (!(e < 1e-3)) throw new Error(`gemmQuant ${dtype} M=${M}: native differs from ref (max rel err ${e})`);
    }
  }
}

interface Case {
  name: string;
  bytes: number;
  run: () => void;
}

function main(): void {
  const flags = parseFlags(process.argv.slice(2), PARTS);
  const addon = loadAddon();
  note(flags, `block ISA: ${String(addon.quantBlockIsa!())}`);
  const bw = new Map<number, number>();
  const big = randomF32((256 << 20) / 4, 1);
  if (wants(flags, "bandwidth") || wants(flags, "matvec")) {
    header(flags, "memory bandwidth, 256 MiB");
    const src = Buffer.from(big.buffer), dst = Buffer.alloc(src.length);
    for (const T of flags.threads) {
      const be = createBackend({ name: "native", threads: T });
      const engine = addon.createEngine!(T, "builtin");
      const bytes = new Uint8Array(big.buffer);
      const [probeS, sumS, cpyS] = timeInterleaved([() => void addon.readBandwidthProbe!(engine, bytes), () => void be.sum(big), () => void src.copy(dst)]);
      const read = big.byteLength / probeS! / 1e9, sum = big.byteLength / sumS! / 1e9, copy = (2 * src.length) / cpyS! / 1e9;
      bw.set(T, read);
      report(flags, { bench: "bandwidth", case: "u64 word sum (read)", threads: T, value: read, unit: "GB/s", peer: null, peer_value: null, ratio: null });
      report(flags, { bench: "bandwidth", case: "kernel sum f32->f64 (read)", threads: T, value: sum, unit: "GB/s", peer: null, peer_value: null, ratio: null });
      report(flags, { bench: "bandwidth", case: "memcpy (read+write, 1 thread)", threads: T, value: copy, unit: "GB/s", peer: null, peer_value: null, ratio: null });
    }
  }
  if (wants(flags, "matvec")) {
    header(flags, `batch-1 matvec, W (${N}, ${K}): GB/s of weights vs read bandwidth and vs f32`);
    const x = randomF32(K, 2), y = new Float32Array(N);
    const cases: Case[] = [];
    for (const format of BLOCK_FORMATS) {
      const w = randomBlocks(format, N, K, 3);
      cases.push({ name: format, bytes: w.byteLength, run: () => be.gemmQuantBlock(x, w, y, { M: 1, N, K, format }) });
    }
    const scales = Float32Array.from({ length: N }, () => 0.01);
    for (const dtype of DENSE) {
      const w = denseCodes(dtype, N * K, 4);
      cases.push({ name: `${dtype} (gemmQuant)`, bytes: w.byteLength, run: () => be.gemmQuant(x, w, scales, y, { M: 1, N, K, dtype }) });
    }
    cases.push({ name: "f32 (gemm)", bytes: big.byteLength, run: () => be.gemm(x, big, y, { M: 1, N, K, transB: true }) });
    let be: Backend = createBackend({ name: "native", threads: 1 });
    let engine = addon.createEngine!(1, "builtin");
    const probeBytes = new Uint8Array(big.buffer);
    // The bandwidth probe runs interleaved with the kernels: the machine is shared, so only
    // figures measured under the same load are compared.
    cases.push({ name: "read bandwidth probe", bytes: big.byteLength, run: () => void addon.readBandwidthProbe!(engine, probeBytes) });
    validate(be);
    for (const T of flags.threads) {
      be = createBackend({ name: "native", threads: T });
      engine = addon.createEngine!(T, "builtin");
      const secs = timeInterleaved(cases.map((c) => c.run));
      const f32s = secs[secs.length - 2]!, read = probeBytes.byteLength / secs[secs.length - 1]! / 1e9;
      cases.forEach((c, i) => {
        const gbs = c.bytes / secs[i]! / 1e9;
        if (i === cases.length - 1) {
          report(flags, { bench: "quant-matvec", case: c.name, threads: T, value: gbs, unit: "GB/s", peer: null, peer_value: null, ratio: null });
          return;
        }
        report(flags, { bench: "quant-matvec", case: c.name, threads: T, value: gbs, unit: "GB/s", peer: "read bandwidth (same run)", peer_value: read, ratio: gbs / read });
        if (i < cases.length - 2) report(flags, { bench: "quant-matvec", case: `${c.name} vs f32`, threads: T, value: secs[i]! * 1e3, unit: "ms", peer: "f32 gemm M=1 ms", peer_value: f32s * 1e3, ratio: f32s / secs[i]! });
      });
    }
  }
  if (wants(flags, "prefill")) {
    header(flags, `prefill M=${PM}, W (${PN}, ${PK}): GFLOP/s vs f32 gemm`);
    const x = randomF32(PM * PK, 8), y = new Float32Array(PM * PN), wf = randomF32(PN * PK, 9);
    const blocks = BLOCK_FORMATS.map((f) => randomBlocks(f, PN, PK, 10));
    const flops = 2 * PM * PN * PK;
    for (const T of flags.threads) {
      const be = createBackend({ name: "native", threads: T });
      const fns = [...BLOCK_FORMATS.map((format, i) => () => be.gemmQuantBlock(x, blocks[i]!, y, { M: PM, N: PN, K: PK, format })), () => be.gemm(x, wf, y, { M: PM, N: PN, K: PK, transB: true })];
      const secs = timeInterleaved(fns);
      const f32g = flops / secs[secs.length - 1]! / 1e9;
      BLOCK_FORMATS.forEach((format, i) => {
        const g = flops / secs[i]! / 1e9;
        report(flags, { bench: "quant-prefill", case: format, threads: T, value: g, unit: "GFLOP/s", peer: "f32 gemm", peer_value: f32g, ratio: g / f32g });
      });
    }
  }
}

main();
