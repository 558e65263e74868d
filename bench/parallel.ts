// Collective latency and bandwidth per process-group backend: allreduce (f32, sum) of 1 KB .. 16 MB
// on N ranks (default 2), plus alltoallv and broadcast at a few sizes. Times are medians over
// iterations, each started after a barrier; bus bandwidth uses NCCL's convention (allreduce moves
// 2(p-1)/p of the buffer per rank).
// With --train-steps N (default 0: off) it also times `moe train` on the default model, one rank
// against parallel.dp=nproc (1 thread each, the same global batch) per backend: median step ms,
// DP scaling efficiency (T1 / (dp · T_dp)), and the step's communication ms with the share of it
// hidden behind compute (StepReport commMs / commHiddenShare from metrics.jsonl).
//
// Usage: npm run bench:parallel -- [--json] [--nproc 2] [--backends threads,mpi] [--max-mb 16] [--train-steps 6]
// This one file is both the driver and the rank program (when started as a rank).
import { spawnSync } from "node:child_process";
import { cpus, tmpdir } from "node:os";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { detectBackend, initWorld } from "../src/parallel/world.js";
import { runThreads } from "../src/parallel/threads.js";
import { mpiAvailable } from "../src/parallel/mpi.js";
import type { ProcessGroup } from "../src/parallel/process-group.js";

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
  const o = { json: false, nproc: 2, backends: ["threads", "mpi"], maxMb: 16, trainSteps: 0 };
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
    else if (a === "--train-steps") o.trainSteps = Number(v());
    else throw new Error(`unknown flag ${a} (known: --json, --nproc N, --backends threads,mpi, --max-mb N, --train-steps N)`);
  }
  if (!Number.isInteger(o.nproc) || o.nproc < 2) throw new Error(`--nproc must be an integer ≥ 2, got ${o.nproc}`);
  for (const b of o.backends) if (b !== "threads" && b !== "mpi") throw new Error(`--backends: unknown backend '${b}' (threads, mpi)`);
  if (!(o.maxMb >= 0.001)) throw new Error(`--max-mb must be positive, got ${o.maxMb}`);
  if (!Number.isInteger(o.trainSteps) || o.trainSteps < 0 || o.trainSteps === 1) throw new Error(`--train-steps must be 0 (off) or an integer ≥ 2, got ${o.trainSteps}`);
  return o;
}

function rowsOf(out: string): Row[] {
  return [...out.matchAll(/ROW (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as Row);
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
  const train = o.trainSteps > 0 ? trainRows(o.nproc, o.backends, o.trainSteps, notes) : [];
  const cpu = cpus()[0]?.model ?? "unknown CPU";
  if (o.json) {
    console.log(JSON.stringify({ cpu, cores: cpus().length, ranks: o.nproc, rows, train, notes }));
    return;
  }
  if (train.length) {
    console.log(`training step, default model, ${o.trainSteps} steps (median of steps 2..), 1 thread per rank`);
    console.log(["backend", "dp", "step ms", "efficiency", "comm ms", "hidden"].map((s) => s.padStart(12)).join(""));
    for (const r of train) console.log([r.backend, String(r.dp), r.step_ms.toFixed(0), r.efficiency.toFixed(3), r.comm_ms.toFixed(1), r.comm_hidden_share.toFixed(2)].map((s) => s.padStart(12)).join(""));
  }
  console.log(`collectives, ${o.nproc} ranks, ${cpu} (${cpus().length} cores)`);
  console.log(["backend", "op", "bytes", "µs (median)", "algbw GB/s", "busbw GB/s"].map((s) => s.padStart(12)).join(""));
  for (const r of rows) console.log([r.backend, r.op, String(r.bytes), r.us_median.toFixed(1), r.algbw_gbs.toFixed(2), r.busbw_gbs.toFixed(2)].map((s) => s.padStart(12)).join(""));
  for (const n of notes) console.log(n);
}

interface TrainRow {
  backend: string;
  dp: number;
  step_ms: number;
  efficiency: number;
  comm_ms: number;
  comm_hidden_share: number;
}

/** `moe train` at one rank and at dp=nproc per backend; figures from each run's metrics.jsonl. */
function trainRows(nproc: number, backends: string[], steps: number, notes: string[]): TrainRow[] {
  const moe = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "moe.js");
  const dir = mkdtempSync(path.join(tmpdir(), "moe-bench-dp-"));
  const args = (out: string) => ["train", `train.out_dir=${out}`, `train.steps=${steps}`, `train.grad_accum=${nproc}`, "train.threads=1", "log.progress=false", "eval.every=0", "sample.every=0", "checkpoint.every=0", "eval.batches=1"];
  const med = (out: string, key: "ms" | "commMs" | "commHiddenShare") => {
    const v = readFileSync(path.join(out, "metrics.jsonl"), "utf8").trim().split("\n").slice(1).map((l) => JSON.parse(l)[key] as number).sort((a, b) => a - b);
    return v[v.length >> 1]!;
  };
  const run = (cmd: string[], what: string) => {
    const r = spawnSync(process.execPath, [moe, ...cmd], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${what} failed (exit ${r.status}):\n${r.stderr}`);
  };
  try {
    run(args(path.join(dir, "one")), "one-rank training run");
    const t1 = med(path.join(dir, "one"), "ms");
    const rows: TrainRow[] = [{ backend: "single", dp: 1, step_ms: t1, efficiency: 1, comm_ms: 0, comm_hidden_share: 0 }];
    for (const b of backends) {
      if (b === "mpi" && !mpiAvailable()) continue;
      const out = path.join(dir, b);
      run(["launch", "--nproc", String(nproc), "--backend", b, "--timeout", "1200", "--", ...args(out), `parallel.dp=${nproc}`], `dp=${nproc} ${b} training run`);
      const t = med(out, "ms");
      rows.push({ backend: b, dp: nproc, step_ms: t, efficiency: t1 / (nproc * t), comm_ms: med(out, "commMs"), comm_hidden_share: med(out, "commHiddenShare") });
    }
    return rows;
  } catch (e) {
    notes.push(`training: ${(e as Error).message.split("\n")[0]}`);
    return [];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (detectBackend() !== "single") await rankMain(Number(process.argv[process.argv.indexOf("--rank") + 1] ?? 16));
else await driver();
