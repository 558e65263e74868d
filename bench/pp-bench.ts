// Pipeline-parallel training step: `moe train` on one rank against `moe launch --nproc 2 -- train
// parallel.pp=2` (MPI when its binding is built, else threads; one engine thread per rank) for a uniform and a non-uniform
// partition and with recompute, on the small-moe preset and a generated corpus. Reports the median
// step time over the measured steps (the first two are warm-up) and the speedup over one rank next
// to the 1F1B bound for equal stages, p·m / (m + p − 1), and stage 0's measured share of the step
// spent waiting in boundary exchanges (metrics.jsonl `pipeline`) next to the equal-stage bubble.
// Not: the planner's prediction (bench/plan-check.ts, `bench:parallel -- --plan-check`), nor a collective benchmark (bench/collectives.ts).
//
// Usage: node dist/bench/pp-bench.js [--json] [--steps 8] [--micro 8]   (or bench:parallel -- --pp)
import { spawnSync } from "node:child_process";
import { cpus, tmpdir } from "node:os";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { mpiAvailable } from "../src/parallel/mpi.js";

export interface PpRow {
  layout: string;
  ranks: number;
  ms_per_step: number;
  tokens_per_s: number;
  /** Step-time speedup over the one-rank run. */
  speedup: number;
  /** 1F1B bound for equal stages and free transfers: p·m / (m + p − 1). */
  bound: number;
  /** Stage 0's share of the step spent waiting in boundary exchanges (median; null at pp=1). */
  stage0_wait: number | null;
  /** The 1F1B bubble of equal stages, (p − 1) / (m + p − 1). */
  bubble_equal: number;
}

const LAYOUTS: [string, number, string[]][] = [
  ["pp=1", 1, []],
  ["pp=1 recompute 4", 1, ["parallel.recompute=4"]],
  ["pp=2 2,2", 2, ["parallel.pp=2"]],
  ["pp=2 3,1", 2, ["parallel.pp=2", "parallel.pp_layers=3,1"]],
  ["pp=2 1,3", 2, ["parallel.pp=2", "parallel.pp_layers=1,3"]],
  ["pp=2 2,2 recompute 2,2", 2, ["parallel.pp=2", "parallel.recompute=2,2"]],
];

/** The transport the bench uses: MPI when available (threads ranks' native engines do not overlap, see README). */
export function ppBackend(): "mpi" | "threads" {
  return mpiAvailable() && !spawnSync("mpirun", ["--version"]).error ? "mpi" : "threads";
}

/** The pipeline benches' corpus (a small generated text under base/corpus) and train options: small-moe, micro-batches of 4×64 tokens. */
export function ppCommon(base: string, o: { steps: number; micro: number }): string[] {
  const corpus = path.join(base, "corpus");
  mkdirSync(corpus, { recursive: true });
  for (let d = 0; d < 60; d++) writeFileSync(path.join(corpus, `doc${d}.txt`), Array.from({ length: 40 }, (_, i) => `the whale ${(i + d) % 13} and the sea ${(i * d) % 11}, a ship ${i % 5} waits by the shore ${d % 7}.`).join(" "));
  return [
    `data.corpus=${corpus}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=1024", "model.preset=small-moe", "train.batch_size=4", "train.seq_len=64",
    `train.grad_accum=${o.micro}`, `train.steps=${o.steps + 2}`, "train.threads=1", "log.progress=false", "eval.every=0", "sample.every=0", "checkpoint.every=0", "eval.batches=1",
  ];
}

export function ppBench(o: { steps: number; micro: number }): PpRow[] {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli", "main.js");
  const base = mkdtempSync(path.join(tmpdir(), "moe-ppbench-"));
  const common = ppCommon(base, o);
  const rows: PpRow[] = [];
  let oneMs = 0;
  for (const [layout, ranks, extra] of LAYOUTS) {
    const dir = path.join(base, layout.replace(/\W+/g, "-"));
    const args = ranks === 1 ? ["train", ...common, ...extra, `train.out_dir=${dir}`] : ["launch", "--nproc", String(ranks), "--backend", ppBackend(), "--timeout", "900", "--", "train", ...common, ...extra, `train.out_dir=${dir}`];
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`${layout} failed (exit ${r.status}):\n${r.stderr}`);
    const recs = readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { ms: number; pipeline?: { busyMs: number; waitMs: number } }).slice(2);
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1]!;
    const med = median(recs.map((x) => x.ms));
    const waits = recs.flatMap((x) => (x.pipeline ? [x.pipeline.waitMs / (x.pipeline.waitMs + x.pipeline.busyMs)] : []));
    if (layout === "pp=1") oneMs = med;
    const p = layout.startsWith("pp=2") ? 2 : 1, m = o.micro;
    rows.push({ layout, ranks, ms_per_step: +med.toFixed(1), tokens_per_s: Math.round((4 * 64 * m) / (med / 1e3)), speedup: +(oneMs / med).toFixed(3), bound: +((p * m) / (m + p - 1)).toFixed(3), stage0_wait: waits.length ? +median(waits).toFixed(3) : null, bubble_equal: +((p - 1) / (m + p - 1)).toFixed(3) });
  }
  return rows;
}

export function formatPpRows(rows: PpRow[]): string {
  const head = ["layout", "ranks", "ms/step", "tokens/s", "speedup", "1F1B bound", "stage-0 wait", "equal-stage bubble"];
  const lines = [`pipeline training step, small-moe, ${cpus()[0]?.model ?? "unknown CPU"} (${cpus().length} cores), ${ppBackend()} backend, 1 engine thread per rank`];
  lines.push(head.map((s) => s.padStart(20)).join(""));
  for (const r of rows) lines.push([r.layout, String(r.ranks), r.ms_per_step.toFixed(1), String(r.tokens_per_s), r.speedup.toFixed(2), r.bound.toFixed(2), r.stage0_wait === null ? "-" : `${(r.stage0_wait * 100).toFixed(1)}%`, `${(r.bubble_equal * 100).toFixed(1)}%`].map((s) => s.padStart(20)).join(""));
  return lines.join("\n");
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const argv = process.argv.slice(2);
  const num = (flag: string, d: number) => {
    const i = argv.indexOf(flag);
    const v = i >= 0 ? Number(argv[i + 1]) : d;
    if (!Number.isInteger(v) || v < 1) throw new Error(`${flag} must be a positive integer`);
    return v;
  };
  const rows = ppBench({ steps: num("--steps", 8), micro: num("--micro", 8) });
  console.log(argv.includes("--json") ? JSON.stringify({ cpu: cpus()[0]?.model, cores: cpus().length, rows }) : formatPpRows(rows));
}
