// DP scaling of training steps: the default model (`moe train` defaults, train.grad_accum=2, one
// engine thread per rank) on 1 rank, then `parallel.dp=2` over each process-group backend, the
// runs interleaved (one, threads, mpi, one, threads, mpi, …) so that all see the same machine
// load. Step time is the median over steps 2.. of each run (step 1 holds the GEMM calibration);
// efficiency = tokens/s at 2 ranks / (2 × tokens/s at 1 rank), the pair of runs of one round.
// Each run also records the machine's idle share while it ran (os.cpus() counters): near zero,
// the 2 ranks competed with other jobs for the cores and the efficiency shows the load, not the
// backend (on a Linux host with sched_autogroup a session gets about one share of a saturated
// machine however many ranks it runs). Each dp=2 backend runs twice per round: with the gradient
// all-reduce overlapped with the backward (the default) and without (parallel.overlap_grad_reduce=false),
// each run with its median communication ms per step and hidden share (metrics.jsonl).
// Not: a collective benchmark (bench/parallel.ts), nor a test (test/train-parallel.test.ts checks
// that dp=2 gives the single-rank losses).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import path from "node:path";

export interface DpRun {
  round: number;
  /** "1 rank", "dp=2 <backend>" (overlapped all-reduce) or "dp=2 <backend> no-overlap". */
  layout: string;
  /** Median step wall time, ms (steps 2..). */
  step_ms: number;
  tokens_per_s: number;
  /** Share of the machine's CPU time that was idle during the run (0 = saturated). */
  idle_share: number;
  load1: number;
  /** dp=2: median ms per step in the gradient/statistics collectives, and the share of it hidden behind compute. */
  comm_ms: number | null;
  hidden_share: number | null;
}

export interface DpScaling {
  runs: DpRun[];
  /** Per dp=2 layout ("threads", "mpi", "mpi no-overlap", …): the median over rounds of tokens/s(dp=2) / (2 × tokens/s(1 rank)). */
  efficiency: Record<string, number>;
  notes: string[];
}

export function idleTimes(): { idle: number; total: number } {
  let idle = 0, total = 0;
  for (const c of cpus()) {
    idle += c.times.idle;
    total += c.times.user + c.times.nice + c.times.sys + c.times.idle + c.times.irq;
  }
  return { idle, total };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}

/**
 * Runs `rounds` interleaved rounds of `steps`-step trainings. moeBin: bin/moe.js. backends: which
 * dp=2 backends to run ("threads", "mpi"). extra: further key=value train options.
 */
export function dpScaling(moeBin: string, o: { steps: number; rounds: number; backends: string[]; extra?: string[] }): DpScaling {
  if (!Number.isInteger(o.steps) || o.steps < 3) throw new Error(`dp scaling: steps must be an integer ≥ 3, got ${o.steps}`);
  if (!Number.isInteger(o.rounds) || o.rounds < 1) throw new Error(`dp scaling: rounds must be a positive integer, got ${o.rounds}`);
  const base = mkdtempSync(path.join(tmpdir(), "moe-dp-bench-"));
  const common = [
    `data.cache_dir=${path.join(base, "cache")}`, "train.grad_accum=2", `train.steps=${o.steps}`, "train.threads=1", "log.progress=false",
    "eval.every=0", "sample.every=0", "checkpoint.every=0", ...(o.extra ?? []),
  ];
  const env = { ...process.env, MOE_NUM_THREADS: "1" };
  const runs: DpRun[] = [], notes: string[] = [];
  try {
    // Tokenizer and token shards once, outside the timed runs.
    const prep = spawnSync(process.execPath, [moeBin, "train", ...common, "train.steps=1", `train.out_dir=${path.join(base, "prep")}`], { encoding: "utf8", env });
    if (prep.status !== 0) throw new Error(`dp scaling: preparing the data failed:\n${prep.stderr}`);
    const layouts: [string, string[]][] = [["1 rank", ["train"]]];
    for (const b of o.backends) {
      const dp2 = ["launch", "--nproc", "2", "--backend", b, "--timeout", "900", "--", "train", "parallel.dp=2"];
      layouts.push([`dp=2 ${b}`, dp2], [`dp=2 ${b} no-overlap`, [...dp2, "parallel.overlap_grad_reduce=false"]]);
    }
    for (let round = 0; round < o.rounds; round++) {
      for (const [layout, cmd] of layouts) {
        const out = path.join(base, `r${round}-${layout.replace(/\W+/g, "-")}`);
        const c0 = idleTimes();
        const r = spawnSync(process.execPath, [moeBin, ...cmd, ...common, `train.out_dir=${out}`], { encoding: "utf8", env });
        const c1 = idleTimes();
        if (r.status !== 0) throw new Error(`dp scaling: ${layout} failed (exit ${r.status}):\n${r.stderr}`);
        const steps = readFileSync(path.join(out, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { ms: number; tokens: number; commMs: number; commHiddenShare: number }).slice(1);
        const ms = median(steps.map((s) => s.ms)), dp = layout !== "1 rank";
        runs.push({
          round, layout, step_ms: +ms.toFixed(1), tokens_per_s: Math.round(steps[0]!.tokens / (ms / 1e3)),
          idle_share: +((c1.idle - c0.idle) / Math.max(1, c1.total - c0.total)).toFixed(3), load1: +loadavg()[0]!.toFixed(2),
          comm_ms: dp ? +median(steps.map((s) => s.commMs)).toFixed(1) : null, hidden_share: dp ? +median(steps.map((s) => s.commHiddenShare)).toFixed(2) : null,
        });
      }
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
  const efficiency: Record<string, number> = {};
  for (const b of o.backends.flatMap((b) => [b, `${b} no-overlap`])) {
    const e: number[] = [];
    for (let round = 0; round < o.rounds; round++) {
      const one = runs.find((r) => r.round === round && r.layout === "1 rank")!, two = runs.find((r) => r.round === round && r.layout === `dp=2 ${b}`)!;
      e.push(two.tokens_per_s / (2 * one.tokens_per_s));
    }
    efficiency[b] = +median(e).toFixed(3);
  }
  if (runs.some((r) => r.layout !== "1 rank" && r.idle_share < 0.05)) {
    notes.push("some 2-rank runs saw < 5% idle CPU: other jobs competed for the cores, so their efficiency measures the load, not the backend");
  }
  return { runs, efficiency, notes };
}
