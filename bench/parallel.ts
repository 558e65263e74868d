// Collective latency and bandwidth per process-group backend: allreduce (f32, sum) of 1 KB .. 16 MB
// on N ranks (default 2), plus alltoallv and broadcast at a few sizes. Times are medians over
// iterations, each started after a barrier; bus bandwidth uses NCCL's convention (allreduce moves
// 2(p-1)/p of the buffer per rank).
// With --train: training step time (median over steps 2..6) of one rank, dp=N and dp=N × ep=N
// (expert parallelism) on each backend, 1 engine thread per rank, preset --preset (small-moe),
// dp=N also without the overlapped gradient all-reduce (parallel.overlap_grad_reduce=false), with
// the DP communication ms per step and the share of it hidden behind compute (commMs,
// commHiddenShare of metrics.jsonl).
//
// With --dp: DP scaling efficiency of training steps, 1 rank vs parallel.dp=2 on each backend, in
// interleaved rounds with each run's idle CPU share (bench/dp-scaling.ts).
//
// Usage: npm run bench:parallel -- [--json] [--nproc 2] [--backends threads,mpi] [--max-mb 16] [--train [--preset P]]
//                                  [--dp [--dp-steps 10] [--dp-rounds 3]]
// This one file is both the driver and the rank program (when started as a rank).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { detectBackend, initWorld } from "../src/parallel/world.js";
import { runThreads } from "../src/parallel/threads.js";
import { mpiAvailable } from "../src/parallel/mpi.js";
import type { ProcessGroup } from "../src/parallel/process-group.js";
import { dpScaling, type DpScaling } from "./dp-scaling.js";

interface Row {
  backend: string;
  op: string;
  ranks: number;
  bytes: number;
  us_median: number;
  /** bytes / time, GB/s */
  algbw_gbs: number;
  /** allreduce: algbw × 2(p-1)/p; others: algbw × (p-1)/p */
  busbw_gbs: number;
}

function sizes(maxMb: number): number[] {
  const s: number[] = [];
  for (let b = 1024; b <= maxMb * 1024 * 1024; b *= 4) s.push(b);
  return s;
}

async function timeOp(g: ProcessGroup, bytes: number, op: () => Promise<void>): Promise<number> {
  const warm = 3;
  const iters = Math.max(5, Math.min(200, Math.floor((64 << 20) / Math.max(bytes, 1))));
  const t: number[] = [];
  for (let i = 0; i < warm + iters; i++) {
    await g.barrier();
    const t0 = performance.now();
    await op();
    if (i >= warm) t.push(performance.now() - t0);
  }
  // Every rank's median, then the slowest rank's (a collective ends when its last rank does).
  t.sort((a, b) => a - b);
  const med = Float64Array.of(t[t.length >> 1]!);
  await g.allreduce(med, "max");
  return med[0]! * 1e3;
}

async function rankMain(maxMb: number): Promise<void> {
  const g = await initWorld();
  const p = g.size, rows: Row[] = [];
  const row = (op: string, bytes: number, us: number, factor: number) => {
    const alg = bytes / (us * 1e-6) / 1e9;
    rows.push({ backend: g.backend, op, ranks: p, bytes, us_median: +us.toFixed(2), algbw_gbs: +alg.toFixed(3), busbw_gbs: +(alg * factor).toFixed(3) });
  };
  for (const bytes of sizes(maxMb)) {
    const buf = new Float32Array(bytes / 4).fill(g.rank + 1);
    row("allreduce", bytes, await timeOp(g, bytes, () => g.allreduce(buf)), (2 * (p - 1)) / p);
  }
  for (const bytes of [4096, 1 << 20, 16 << 20].filter((b) => b <= maxMb * 1024 * 1024)) {
    const n = bytes / 4, per = Math.floor(n / p);
    const send = new Float32Array(per * p), recv = new Float32Array(per * p), counts = new Array(p).fill(per);
    row("alltoallv", bytes, await timeOp(g, bytes, () => g.alltoallv(send, counts, recv, counts)), (p - 1) / p);
    const b = new Float32Array(n);
    row("broadcast", bytes, await timeOp(g, bytes, () => g.broadcast(b, 0)), 1);
  }
  if (g.rank === 0) for (const r of rows) console.log(`ROW ${JSON.stringify(r)}`);
  await g.close();
}

function parse(argv: string[]) {
  const o = { json: false, nproc: 2, backends: ["threads", "mpi"], maxMb: 16, train: false, preset: "small-moe", dp: false, dpSteps: 10, dpRounds: 3 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!, v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${a} needs a value`);
      return x;
    };
    if (a === "--json") o.json = true;
    else if (a === "--nproc") o.nproc = Number(v());
    else if (a === "--backends") o.backends = v().split(",");
    else if (a === "--max-mb") o.maxMb = Number(v());
    else if (a === "--train") o.train = true;
    else if (a === "--preset") o.preset = v();
    else if (a === "--dp") o.dp = true;
    else if (a === "--dp-steps") o.dpSteps = Number(v());
    else if (a === "--dp-rounds") o.dpRounds = Number(v());
    else throw new Error(`unknown flag ${a} (known: --json, --nproc N, --backends threads,mpi, --max-mb N, --train, --preset P, --dp, --dp-steps N, --dp-rounds N)`);
  }
  if (!Number.isInteger(o.nproc) || o.nproc < 2) throw new Error(`--nproc must be an integer ≥ 2, got ${o.nproc}`);
  for (const b of o.backends) if (b !== "threads" && b !== "mpi") throw new Error(`--backends: unknown backend '${b}' (threads, mpi)`);
  if (!(o.maxMb >= 0.001)) throw new Error(`--max-mb must be positive, got ${o.maxMb}`);
  if (!Number.isInteger(o.dpSteps) || o.dpSteps < 3) throw new Error(`--dp-steps must be an integer ≥ 3, got ${o.dpSteps}`);
  if (!Number.isInteger(o.dpRounds) || o.dpRounds < 1) throw new Error(`--dp-rounds must be a positive integer, got ${o.dpRounds}`);
  return o;
}

function rowsOf(out: string): Row[] {
  return [...out.matchAll(/ROW (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as Row);
}

interface TrainRow {
  backend: string;
  layout: string;
  ranks: number;
  step_ms_median: number;
  tokens_per_s: number;
  /** one-rank step time / this step time */
  speedup: number;
  /** EP layouts: rank 0's median ms per step in the MoE all-to-all-v calls (waiting for the peer included) */
  ep_comm_ms: number | null;
  /** rank 0's median ms per step in the gradient/statistics all-reduce (and ZeRO-1 gather), waits included; null on one rank */
  comm_ms: number | null;
  /** share of comm_ms that ran while the rank computed (parallel.overlap_grad_reduce; 0 without it and on threads) */
  comm_hidden_share: number | null;
}

/** Training step time at 1 rank, dp=N and dp=N × ep=N (same global batch), from each run's metrics.jsonl. */
function trainRows(o: ReturnType<typeof parse>, moe: string, notes: string[]): TrainRow[] {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-bench-par-"));
  const B = 8, T = 128, A = o.nproc * 2, steps = 6;
  const common = [
    `model.preset=${o.preset}`, `data.cache_dir=${path.join(dir, "cache")}`, `train.batch_size=${B}`, `train.seq_len=${T}`, `train.grad_accum=${A}`,
    `train.steps=${steps}`, "train.threads=1", "log.progress=false", "eval.every=0", "sample.every=0", "checkpoint.every=0", "eval.batches=1",
  ];
  const median = (out: string, key: string): number | null => {
    const v = readFileSync(path.join(out, "metrics.jsonl"), "utf8").trim().split("\n").slice(1).map((l) => JSON.parse(l)[key] as number | undefined);
    if (v.some((x) => x === undefined)) return null;
    const s = (v as number[]).sort((a, b) => a - b);
    return s[s.length >> 1]!;
  };
  const runs: { backend: string; layout: string; ranks: number; args: string[] }[] = [{ backend: "single", layout: "1 rank", ranks: 1, args: [] }];
  for (const b of o.backends) {
    if (b === "mpi" && !mpiAvailable()) continue;
    const n = String(o.nproc);
    runs.push({ backend: b, layout: `dp=${n}`, ranks: o.nproc, args: ["launch", "--nproc", n, "--backend", b, "--timeout", "900", "--", "train", `parallel.dp=${n}`] });
    runs.push({ backend: b, layout: `dp=${n} no-overlap`, ranks: o.nproc, args: ["launch", "--nproc", n, "--backend", b, "--timeout", "900", "--", "train", `parallel.dp=${n}`, "parallel.overlap_grad_reduce=false"] });
    runs.push({ backend: b, layout: `dp=${n} ep=${n}`, ranks: o.nproc, args: ["launch", "--nproc", n, "--backend", b, "--timeout", "900", "--", "train", `parallel.dp=${n}`, `parallel.ep=${n}`] });
  }
  const rows: TrainRow[] = [];
  const load0 = loadavg()[0]!;
  let one = NaN;
  runs.forEach((r, i) => {
    const out = path.join(dir, `run${i}`);
    const args = r.args.length ? [...r.args, ...common, `train.out_dir=${out}`] : ["train", ...common, `train.out_dir=${out}`];
    const p = spawnSync(process.execPath, [moe, ...args], { encoding: "utf8" });
    if (p.status !== 0) throw new Error(`${r.backend} ${r.layout} training run failed (exit ${p.status}):\n${p.stderr}`);
    const ms = median(out, "ms")!, comm = median(out, "epCommMs"), dpComm = r.ranks > 1 ? median(out, "commMs") : null, hidden = r.ranks > 1 ? median(out, "commHiddenShare") : null;
    if (i === 0) one = ms;
    rows.push({ backend: r.backend, layout: r.layout, ranks: r.ranks, step_ms_median: +ms.toFixed(1), tokens_per_s: +((B * T * A) / (ms / 1e3)).toFixed(0), speedup: +(one / ms).toFixed(3), ep_comm_ms: comm === null ? null : +comm.toFixed(1), comm_ms: dpComm === null ? null : +dpComm.toFixed(1), comm_hidden_share: hidden });
  });
  notes.push(`train: preset ${o.preset}, global batch ${B}×${T}×${A} tokens, median of steps 2..${steps}, 1 engine thread per rank; load (1 min) ${load0.toFixed(1)} before, ${loadavg()[0]!.toFixed(1)} after`);
  return rows;
}

async function driver(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const self = fileURLToPath(import.meta.url);
  const rows: Row[] = [];
  const notes: string[] = [];
  for (const b of o.backends) {
    if (b === "threads") {
      const r = await runThreads(o.nproc, self, ["--rank", String(o.maxMb)], { timeoutMs: 300_000, output: "capture", report: false });
      if (r.code !== 0) throw new Error(`threads run failed: ${r.failure}\n${r.stderr.join("")}`);
      rows.push(...rowsOf(r.stdout.join("")));
    } else if (!mpiAvailable()) notes.push("mpi: skipped (MPI binding not built)");
    else {
      const moe = path.resolve(path.dirname(self), "..", "..", "bin", "moe.js");
      const r = spawnSync(process.execPath, [moe, "launch", "--nproc", String(o.nproc), "--backend", "mpi", "--timeout", "300", "--module", self, "--", "--rank", String(o.maxMb)], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`mpi run failed (exit ${r.status}):\n${r.stderr}`);
      rows.push(...rowsOf(r.stdout));
    }
  }
  const train = o.train ? trainRows(o, path.resolve(path.dirname(self), "..", "..", "bin", "moe.js"), notes) : [];
  let dp: DpScaling | null = null;
  if (o.dp) {
    const moe = path.resolve(path.dirname(self), "..", "..", "bin", "moe.js");
    dp = dpScaling(moe, { steps: o.dpSteps, rounds: o.dpRounds, backends: o.backends.filter((b) => b === "threads" || mpiAvailable()) });
  }
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  if (o.json) {
    console.log(JSON.stringify({ cpu, cores: cpus().length, ranks: o.nproc, rows, train, notes, dp }));
    return;
  }
  console.log(`collectives, ${o.nproc} ranks, ${cpu} (${cpus().length} cores)`);
  console.log(["backend", "op", "bytes", "µs (median)", "algbw GB/s", "busbw GB/s"].map((s) => s.padStart(12)).join(""));
  for (const r of rows) console.log([r.backend, r.op, String(r.bytes), r.us_median.toFixed(1), r.algbw_gbs.toFixed(2), r.busbw_gbs.toFixed(2)].map((s) => s.padStart(12)).join(""));
  const tcols = (xs: string[]) => xs.map((s, i) => s.padStart(i === 1 ? 18 : 12)).join("");
  if (train.length) console.log(tcols(["backend", "layout", "step ms", "tokens/s", "speedup", "EP a2a ms", "comm ms", "hidden"]));
  for (const r of train) console.log(tcols([r.backend, r.layout, r.step_ms_median.toFixed(1), String(r.tokens_per_s), r.speedup.toFixed(3), r.ep_comm_ms === null ? "-" : r.ep_comm_ms.toFixed(1), r.comm_ms === null ? "-" : r.comm_ms.toFixed(1), r.comm_hidden_share === null ? "-" : r.comm_hidden_share.toFixed(2)]));
  for (const n of notes) console.log(n);
  if (dp !== null) {
    console.log(`\nDP scaling (default model, train.grad_accum=2, 1 engine thread per rank, median step of ${o.dpSteps - 1})`);
    const cols = (xs: string[]) => xs.map((s, i) => s.padStart(i === 1 ? 26 : 12)).join("");
    console.log(cols(["round", "layout", "step ms", "tokens/s", "comm ms", "hidden", "idle share", "load1"]));
    for (const r of dp.runs) console.log(cols([String(r.round), r.layout, r.step_ms.toFixed(0), String(r.tokens_per_s), r.comm_ms?.toFixed(1) ?? "-", r.hidden_share?.toFixed(2) ?? "-", r.idle_share.toFixed(2), r.load1.toFixed(1)]));
    for (const [b, e] of Object.entries(dp.efficiency)) console.log(`DP scaling efficiency, 2 ranks over ${b}: ${e.toFixed(2)} (median over rounds)`);
    for (const n of dp.notes) console.log(n);
  }
}

if (detectBackend() !== "single") await rankMain(Number(process.argv[process.argv.indexOf("--rank") + 1] ?? 16));
else if (process.argv.includes("--pp")) {
  // pipeline-parallel training rows (bench/pp-bench.ts): bench:parallel -- --pp
  const { ppBench, formatPpRows } = await import("./pp-bench.js");
  console.log(formatPpRows(ppBench({ steps: 8, micro: 8 })));
} else await driver();
