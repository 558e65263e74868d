// bf16 GEMM rows of `npm run bench:kernels` (part "bf16"): the AVX512_BF16 kernel (GemmPrecision
// "bf16", native/gemm_bf16.cc) next to the f32 built-in kernel, timed interleaved in the same run
// (medians of 7 after 2 warmups, so machine load hits both alike), and OpenBLAS sgemm timed in its
// own block just before (its spinning threads would slow whatever runs right after it). Shapes are
// a training step's: forward x·Wᵀ, backward dX = dY·W and dW = dYᵀ·X, and the grouped expert GEMM
// over 8 uneven groups (forward and weight gradient). Validated once against the ref backend.
// Not: run on CPUs without AVX512_BF16 (a note says so), nor a test.
import { createBackend, type Backend, type GemmParams } from "../src/backend/index.js";
import { loadAddon } from "../src/backend/native/addon.js";
import { type BenchFlags, header, note, report, timeInterleaved } from "./common.js";

const REPS = 7, WARMUP = 2;
// (M, K, N, transA, transB): forward 2048×1024×1024 and an expert-sized 4096×512×1408 (W as (N,K)),
// then that layer's dX (4096×1408×512, W as (K,N)) and dW (1408×4096×512, dYᵀ)
const SHAPES: [number, number, number, boolean, boolean][] = [
  [2048, 1024, 1024, false, true],
  [4096, 512, 1408, false, true],
  [4096, 1408, 512, false, false],
  [1408, 4096, 512, true, false],
];
const GROUP_SIZES = [2011, 1533, 1290, 1017, 905, 771, 399, 266];
const GK = 512, GN = 1408;

function randomF32(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

function validate(be: Backend): void {
  const ref = createBackend({ name: "ref" });
  const [M, K, N] = [37, 71, 45];
  const a = randomF32(M * K, 1), b = randomF32(N * K, 2);
  const want = new Float32Array(M * N), got = new Float32Array(M * N);
  const p: GemmParams = { M, N, K, transB: true, precision: "bf16" };
  ref.gemm(a, b, want, p);
  be.gemm(a, b, got, p);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1e-3 + Math.abs(want[i]!)));
  if (!(worst < 1e-4)) throw new Error(`bf16 GEMM validation failed: max relative error ${worst} against ref on bf16-rounded inputs`);
}

const gflops = (flops: number, s: number) => flops / s / 1e9;

export function runBf16Bench(flags: BenchFlags, blasLinked: boolean): void {
  header(flags, "GEMM bf16 inputs (AVX512_BF16, f32 accumulation) vs the f32 built-in kernel (interleaved) and OpenBLAS sgemm");
  if (!(loadAddon().bf16GemmAvailable!() as boolean)) {
    note(flags, "bf16 GEMM skipped: this CPU has no AVX512_BF16");
    return;
  }
  const Ntot = GROUP_SIZES.reduce((s, v) => s + v, 0), E = GROUP_SIZES.length, sizes = Int32Array.from(GROUP_SIZES);
  const gx = randomF32(Ntot * GK, 20), gw = randomF32(E * GN * GK, 21), gy = new Float32Array(Ntot * GN), gdy = randomF32(Ntot * GN, 22), gdw = new Float32Array(E * GN * GK);
  for (const T of flags.threads) {
    const be = createBackend({ name: "native", threads: T, gemm: "builtin" });
    const blas = blasLinked ? createBackend({ name: "native", threads: T, gemm: "blas" }) : null;
    validate(be);
    const name = be.info().gemm;
    for (const [M, K, N, transA, transB] of SHAPES) {
      const a = randomF32(M * K, 10), b = randomF32(K * N, 11), c = new Float32Array(M * N);
      const p: GemmParams = { M, N, K, transA, transB }, flops = 2 * M * N * K;
      const tBlas = blas ? timeInterleaved([() => blas.gemm(a, b, c, p)], REPS, WARMUP)[0]! : null;
      const [t32, t16] = timeInterleaved([() => be.gemm(a, b, c, p), () => be.gemm(a, b, c, { ...p, precision: "bf16" })], REPS, WARMUP);
      const kase = `${M}x${K}x${N}${transA ? " tA" : ""}${transB ? " tB" : ""} bf16`;
      const v = gflops(flops, t16!);
      report(flags, { bench: "gemm-bf16", case: kase, threads: T, value: v, unit: "GFLOP/s", peer: `f32 ${name}`, peer_value: gflops(flops, t32!), ratio: t32! / t16! });
      if (tBlas !== null) report(flags, { bench: "gemm-bf16", case: kase, threads: T, value: v, unit: "GFLOP/s", peer: "openblas sgemm (f32)", peer_value: gflops(flops, tBlas), ratio: tBlas / t16! });
    }
    const flops = 2 * Ntot * GK * GN;
    const gp = { K: GK, N: GN, transW: true };
    const [f32f, bf16f, f32w, bf16w] = timeInterleaved(
      [
        () => be.groupedGemm(gx, gw, gy, sizes, gp),
        () => be.groupedGemm(gx, gw, gy, sizes, { ...gp, precision: "bf16" }),
        () => be.groupedGemmWeightGrad(gx, gdy, gdw, sizes, gp),
        () => be.groupedGemmWeightGrad(gx, gdy, gdw, sizes, { ...gp, precision: "bf16" }),
      ],
      REPS,
      WARMUP,
    );
    report(flags, { bench: "gemm-bf16", case: "grouped fwd 8 groups bf16", threads: T, value: gflops(flops, bf16f!), unit: "GFLOP/s", peer: `f32 ${name}`, peer_value: gflops(flops, f32f!), ratio: f32f! / bf16f! });
    report(flags, { bench: "gemm-bf16", case: "grouped wgrad 8 groups bf16", threads: T, value: gflops(flops, bf16w!), unit: "GFLOP/s", peer: `f32 ${name}`, peer_value: gflops(flops, f32w!), ratio: f32w! / bf16w! });
  }
}
