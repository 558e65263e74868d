// Kernel benchmarks: `npm run bench:kernels [-- --json] [--threads 1,2] [--only gemm,grouped,attention]`.
// GEMM: the built-in packed GEMM next to OpenBLAS sgemm (our "blas" path) measured in the same
// run, interleaved, and PyTorch's torch.mm (child process) where /usr/bin/python3 has torch.
// Grouped: groupedGemm over 8 uneven groups vs one dense GEMM of the same total size.
// Attention: delegated to bench/attention-bench.ts (attention area).
// Every kernel is validated once against the ref backend (small shape) before it is timed.
// FLOPs: GEMM (M,K,N) = 2·M·N·K; grouped = 2·Σsizes·K·N; GFLOP/s = FLOPs / median seconds / 1e9.
// Not: part of the test run, and not a tuning tool (fixed shapes, medians of 7 after 2 warmups).
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createBackend, type Backend } from "../src/backend/index.js";
import { loadAddon } from "../src/backend/native/addon.js";
import { denseClass } from "../src/backend/native/gemm-calibrate.js";
import { runAttentionBench } from "./attention-bench.js";
import { type BenchFlags, header, note, parseFlags, peerEnv, report, timeInterleaved, wants } from "./common.js";

const PARTS = ["gemm", "grouped", "attention"];
const GEMM_SHAPES: [number, number, number][] = [
  // (M, K, N)
  [512, 512, 512],
  [2048, 1024, 1024],
  [4096, 512, 1408],
  [64, 4096, 4096],
];
// 8 uneven expert groups (odd sizes, as routing produces), Σ = 8192 rows; expert FFN K=512, N=1408.
const GROUP_SIZES = [2011, 1533, 1290, 1017, 905, 771, 399, 266];
const GK = 512, GN = 1408;
const REPS = 7, WARMUP = 2;
const PYTHON = "/usr/bin/python3";

function randomF32(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

function maxRelErr(got: Float32Array, want: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / (1e-3 + Math.abs(want[i]!)));
  return worst;
}

/** One small check of each timed kernel against ref; throws if a backend is wrong. */
function validate(be: Backend, label: string): void {
  const ref = createBackend({ name: "ref" });
  const [M, K, N] = [37, 71, 45];
  const a = randomF32(M * K, 1), b = randomF32(N * K, 2);
  const want = new Float32Array(M * N), got = new Float32Array(M * N);
  ref.gemm(a, b, want, { M, N, K, transB: true });
  be.gemm(a, b, got, { M, N, K, transB: true });
  const sizes = Int32Array.from([9, 0, 20, 8]);
  const x = randomF32(37 * K, 3), w = randomF32(4 * K * N, 4);
  const yWant = new Float32Array(37 * N), yGot = new Float32Array(37 * N);
  ref.groupedGemm(x, w, yWant, sizes, { K, N, transW: true });
  be.groupedGemm(x, w, yGot, sizes, { K, N, transW: true });
  const dy = randomF32(37 * N, 5);
  const dwWant = new Float32Array(4 * K * N), dwGot = new Float32Array(4 * K * N);
  ref.groupedGemmWeightGrad(x, dy, dwWant, sizes, { K, N, transW: true });
  be.groupedGemmWeightGrad(x, dy, dwGot, sizes, { K, N, transW: true });
  const err = Math.max(maxRelErr(got, want), maxRelErr(yGot, yWant), maxRelErr(dwGot, dwWant));
  if (!(err < 1e-3)) throw new Error(`validation failed for ${label}: max relative error ${err}`);
}

interface TorchResult {
  torch: string;
  threads: number;
  omp_wait_policy: string;
  gemm: { M: number; K: number; N: number; gflops: number; cpu: number }[];
  grouped: { gflops: number; cpu: number } | null;
}

/** Runs bench/torch_peer.py; null (with a note) when torch is not available. */
function torchPeer(flags: BenchFlags, threads: number, withGemm: boolean, withGrouped: boolean): TorchResult | null {
  if (!existsSync(PYTHON)) return null;
  const here = path.dirname(fileURLToPath(import.meta.url));
  // dist/bench/kernels.js → the .py stays in bench/ at the package root.
  const script = [path.join(here, "torch_peer.py"), path.join(here, "..", "..", "bench", "torch_peer.py")].find(existsSync);
  if (!script) return null;
  const cfg = {
    threads,
    reps: REPS,
    warmup: WARMUP,
    gemm: withGemm ? GEMM_SHAPES.map(([M, K, N]) => [M, K, N, false]) : [],
    grouped: withGrouped ? { sizes: GROUP_SIZES, K: GK, N: GN, transW: true } : null,
  };
  const env = { ...process.env, ...peerEnv(threads) };
  const r = spawnSync(PYTHON, [script, JSON.stringify(cfg)], { env, encoding: "utf8", timeout: 600_000 });
  if (r.status !== 0) {
    note(flags, `torch peer unavailable (${PYTHON} ${path.basename(script)} exited ${r.status}): ${(r.stderr ?? "").trim().split("\n").pop()}`);
    return null;
  }
  return JSON.parse(r.stdout) as TorchResult;
}

function torchLabel(t: TorchResult): string {
  return `torch ${t.torch} mm`;
}

const gflops = (flops: number, s: number) => flops / s / 1e9;

function benchGemm(flags: BenchFlags, blasLinked: boolean): void {
  header(flags, "GEMM fp32, builtin path vs OpenBLAS sgemm (same run, separate blocks) and torch.mm");
  for (const T of flags.threads) {
    const builtin = createBackend({ name: "native", threads: T, gemm: "builtin" });
    const blas = blasLinked ? createBackend({ name: "native", threads: T, gemm: "blas" }) : null;
    validate(builtin, `builtin ${T}t`);
    if (blas) validate(blas, `blas ${T}t`);
    const name = builtin.info().gemm;
    const torch = torchPeer(flags, T, true, false);
    // Each path is timed in its own block (all shapes built-in, then all shapes OpenBLAS): OpenBLAS's
    // worker threads keep spinning for a while after a call and would slow whatever runs next.
    const inputs = GEMM_SHAPES.map(([M, K, N]) => ({ a: randomF32(M * K, 10), b: randomF32(K * N, 11), c: new Float32Array(M * N), p: { M, N, K } }));
    // gemm "auto" (calibrated per shape class; the calibration itself runs or loads before timing) is
    // timed alternately with the path it picked, in that path's block, so both see the same load.
    const auto = blas ? createBackend({ name: "native", threads: T }) : null;
    const autoInfo = auto?.info().gemmAuto;
    const autoG: (number | null)[] = inputs.map(() => null);
    const block = (be: Backend, path: "builtin" | "blas") =>
      inputs.map(({ a, b, c, p }, si) => {
        const flops = 2 * p.M * p.N * p.K;
        const withAuto = auto && autoInfo?.classes[denseClass(p.M, p.N, p.K)]!.pick === path;
        const ts = timeInterleaved(withAuto ? [() => be.gemm(a, b, c, p), () => auto.gemm(a, b, c, p)] : [() => be.gemm(a, b, c, p)], REPS, WARMUP);
        if (withAuto) autoG[si] = gflops(flops, ts[1]!);
        return gflops(flops, ts[0]!);
      });
    const ours = block(builtin, "builtin");
    const theirs = blas ? block(blas, "blas") : inputs.map(() => null);
    GEMM_SHAPES.forEach(([M, K, N], si) => {
      const kase = `${M}x${K}x${N}`;
      const o = ours[si]!, t = theirs[si]!;
      report(flags, { bench: "gemm", case: `${kase} ${name}`, threads: T, value: o, unit: "GFLOP/s", peer: t === null ? null : "openblas sgemm", peer_value: t, ratio: t === null ? null : o / t });
      const ag = autoG[si];
      if (ag !== null && ag !== undefined && t !== null && autoInfo) {
        const pick = autoInfo.classes[denseClass(M, N, K)]!.pick;
        report(flags, { bench: "gemm", case: `${kase} auto=${pick}`, threads: T, value: ag, unit: "GFLOP/s", peer: "faster of builtin, openblas", peer_value: Math.max(o, t), ratio: ag / Math.max(o, t) });
      }
      if (torch) {
        const tv = torch.gemm[si]!.gflops;
        report(flags, { bench: "gemm", case: `${kase} ${name}`, threads: T, value: o, unit: "GFLOP/s", peer: torchLabel(torch), peer_value: tv, ratio: o / tv, peer_cpu: torch.gemm[si]!.cpu });
      }
    });
  }
}

function benchGrouped(flags: BenchFlags, blasLinked: boolean): void {
  header(flags, `grouped GEMM, 8 uneven groups ${JSON.stringify(GROUP_SIZES)} (Σ 8192), K=${GK}, N=${GN}, W as (N,K) vs one dense GEMM`);
  const Ntot = GROUP_SIZES.reduce((s, v) => s + v, 0), E = GROUP_SIZES.length;
  const sizes = Int32Array.from(GROUP_SIZES);
  const x = randomF32(Ntot * GK, 20), w = randomF32(E * GN * GK, 21), y = new Float32Array(Ntot * GN);
  const wDense = w.subarray(0, GN * GK), dy = randomF32(Ntot * GN, 22), dw = new Float32Array(E * GN * GK);
  const flops = 2 * Ntot * GK * GN;
  for (const T of flags.threads) {
    const paths: [string, Backend][] = [["builtin", createBackend({ name: "native", threads: T, gemm: "builtin" })]];
    if (blasLinked) paths.push(["openblas", createBackend({ name: "native", threads: T, gemm: "blas" })]);
    const fwd: Record<string, number> = {};
    for (const [label, be] of paths) {
      validate(be, `${label} ${T}t`);
      const name = be.info().gemm;
      // forward: y_g = x_g · w_gᵀ vs dense y = x · w_0ᵀ (8192×512×1408)
      const [tg, td, tw, tdw] = timeInterleaved(
        [
          () => be.groupedGemm(x, w, y, sizes, { K: GK, N: GN, transW: true }),
          () => be.gemm(x, wDense, y, { M: Ntot, N: GN, K: GK, transB: true }),
          // weight grad: dw_g (N,K) += dy_gᵀ · x_g vs dense dyᵀ·x (1408×8192 · 8192×512)
          () => be.groupedGemmWeightGrad(x, dy, dw, sizes, { K: GK, N: GN, transW: true }),
          () => be.gemm(dy, x, dw.subarray(0, GN * GK), { M: GN, N: GK, K: Ntot, transA: true, beta: 1 }),
        ],
        REPS,
        WARMUP,
      );
      const g = gflops(flops, tg!), d = gflops(flops, td!), gw = gflops(flops, tw!), dwv = gflops(flops, tdw!);
      fwd[label] = g;
      report(flags, { bench: "grouped", case: `fwd ${name}`, threads: T, value: g, unit: "GFLOP/s", peer: `dense gemm 8192x512x1408 ${name}`, peer_value: d, ratio: g / d });
      report(flags, { bench: "grouped", case: `wgrad ${name}`, threads: T, value: gw, unit: "GFLOP/s", peer: `dense gemm 1408x8192x512 ${name}`, peer_value: dwv, ratio: gw / dwv });
    }
    if (fwd.openblas !== undefined) {
      report(flags, { bench: "grouped", case: "fwd builtin vs openblas", threads: T, value: fwd.builtin!, unit: "GFLOP/s", peer: "openblas grouped (sgemm per group)", peer_value: fwd.openblas, ratio: fwd.builtin! / fwd.openblas });
    }
    const torch = torchPeer(flags, T, false, true);
    if (torch?.grouped) {
      report(flags, { bench: "grouped", case: "fwd builtin vs torch loop", threads: T, value: fwd.builtin!, unit: "GFLOP/s", peer: `${torchLabel(torch)} per group`, peer_value: torch.grouped.gflops, ratio: fwd.builtin! / torch.grouped.gflops, peer_cpu: torch.grouped.cpu });
    }
  }
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), PARTS);
  const addon = loadAddon();
  const blasLinked = addon.blasLinked;
  if (!flags.json) {
    const info = createBackend({ name: "native", threads: 1, gemm: "builtin" }).info();
    console.log(`moe-ts kernel bench: builtin=${info.gemm}, OpenBLAS ${blasLinked ? "linked" : "not linked"}, cpu [${info.cpuFeatures.join(" ")}], threads ${flags.threads.join(",")}, median of ${REPS} after ${WARMUP} warmups`);
  }
  if (wants(flags, "gemm")) benchGemm(flags, blasLinked);
  if (wants(flags, "grouped")) benchGrouped(flags, blasLinked);
  if (wants(flags, "attention")) await runAttentionBench({ threads: flags.threads, json: flags.json });
}

await main();
