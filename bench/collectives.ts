// Collective latency and bandwidth of a process-group backend: allreduce (f32, sum) of 1 KB ..
// max MB on N ranks, plus alltoallv and broadcast at a few sizes. Times are medians over
// iterations, each started after a barrier; bus bandwidth uses NCCL's convention (allreduce moves
// 2(p-1)/p of the buffer per rank). `rankMain` is the rank program; `measureCollectives` starts it
// on each backend (threads in this process's workers, MPI through `moe launch`) and returns the rows.
// Used by bench/parallel.ts (the table) and bench/plan-check.ts (α–β of the planner's links).
import { spawnSync } from "node:child_process";
import path from "node:path";
import { initWorld } from "../src/parallel/world.js";
import { runThreads } from "../src/parallel/threads.js";
import { mpiAvailable } from "../src/parallel/mpi.js";
import type { ProcessGroup } from "../src/parallel/process-group.js";

export interface Row {
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

export async function rankMain(maxMb: number): Promise<void> {
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

function rowsOf(out: string): Row[] {
  return [...out.matchAll(/ROW (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as Row);
}

/**
 * Runs the rank program `rankModule` (a compiled file whose rank entry calls rankMain, given
 * `--rank MAXMB`) on `nproc` ranks of each backend; MPI is skipped with a note when not built.
 */
export async function measureCollectives(backends: string[], nproc: number, maxMb: number, rankModule: string, notes: string[]): Promise<Row[]> {
  const rows: Row[] = [];
  for (const b of backends) {
    if (b === "threads") {
      const r = await runThreads(nproc, rankModule, ["--rank", String(maxMb)], { timeoutMs: 300_000, output: "capture", report: false });
      if (r.code !== 0) throw new Error(`threads run failed: ${r.failure}\n${r.stderr.join("")}`);
      rows.push(...rowsOf(r.stdout.join("")));
    } else if (!mpiAvailable()) notes.push("mpi: skipped (MPI binding not built)");
    else {
      const moe = path.resolve(path.dirname(rankModule), "..", "..", "bin", "moe.js");
      const r = spawnSync(process.execPath, [moe, "launch", "--nproc", String(nproc), "--backend", "mpi", "--timeout", "300", "--module", rankModule, "--", "--rank", String(maxMb)], { encoding: "utf8" });
      if (r.status !== 0) throw new Error(`mpi run failed (exit ${r.status}):\n${r.stderr}`);
      rows.push(...rowsOf(r.stdout));
    }
  }
  return rows;
}
