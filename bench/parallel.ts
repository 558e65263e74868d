// Collective latency and bandwidth per process-group backend: allreduce (f32, sum) of 1 KB .. 16 MB
// on N ranks (default 2), plus alltoallv and broadcast at a few sizes. Times are medians over
// iterations, each started after a barrier; bus bandwidth uses NCCL's convention (allreduce moves
// 2(p-1)/p of the buffer per rank).
// With --train: training step time (median over steps 2..6) of one rank, dp=N, dp=N × ep=N
// (expert parallelism), tp=N (tensor parallelism, experts column-split: ETP) and tp=N with EDP
// (whole experts per TP rank) on each backend, 1 engine thread per rank, preset --preset (small-moe),
// dp=N also without the overlapped gradient all-reduce (parallel.overlap_grad_reduce=false), with
// the DP communication ms per step and the share of it hidden behind compute (commMs,
// commHiddenShare of metrics.jsonl).
//
// With --dp: DP scaling efficiency of training steps, 1 rank vs parallel.dp=2 on each backend, in
// interleaved rounds with each run's idle CPU share (bench/dp-scaling.ts).
//
// With --plan-check: the planner's predicted step time against the measured one for each layout
// the trainer runs here, and the non-uniform vs even pipeline row (bench/plan-check.ts).
//
// Usage: npm run bench:parallel -- [--json] [--nproc 2] [--backends threads,mpi] [--max-mb 16] [--train [--preset P]]
//                                  [--dp [--dp-steps 10] [--dp-rounds 3]]
//        npm run bench:parallel -- --plan-check [--json] [--steps 8] [--rounds 1] [--only small|wide] [--wide-pp 2,4] [--layouts tp=2,dp=2]
// This one file is both the driver and the rank program (when started as a rank).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { detectBackend } from "../src/parallel/world.js";
import { mpiAvailable } from "../src/parallel/mpi.js";
import { measureCollectives, rankMain, type Row } from "./collectives.js";
import { dpScaling, type DpScaling } from "./dp-scaling.js";

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
  /** TP layouts: rank 0's median ms per step in the TP all-reduces of forward and backward (waits included) */
  tp_comm_ms: number | null;
  /** rank 0's median ms per step in the gradient/statistics all-reduce (and ZeRO-1 gather), waits included; null on one rank */
  comm_ms: number | null;
  /** share of comm_ms that ran while the rank computed (parallel.overlap_grad_reduce; 0 without it and on threads) */
  comm_hidden_share: number | null;
}

/** Training step time at 1 rank, dp=N, dp=N × ep=N, tp=N (ETP) and tp=N EDP (same global batch), from each run's metrics.jsonl. */
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
    runs.push({ backend: b, layout: `tp=${n} (ETP)`, ranks: o.nproc, args: ["launch", "--nproc", n, "--backend", b, "--timeout", "900", "--", "train", `parallel.tp=${n}`] });
    runs.push({ backend: b, layout: `tp=${n} EDP`, ranks: o.nproc, args: ["launch", "--nproc", n, "--backend", b, "--timeout", "900", "--", "train", `parallel.tp=${n}`, "parallel.edp=true"] });
  }
  const rows: TrainRow[] = [];
  const load0 = loadavg()[0]!;
  let one = NaN;
  runs.forEach((r, i) => {
    const out = path.join(dir, `run${i}`);
    const args = r.args.length ? [...r.args, ...common, `train.out_dir=${out}`] : ["train", ...common, `train.out_dir=${out}`];
    const p = spawnSync(process.execPath, [moe, ...args], { encoding: "utf8" });
    if (p.status !== 0) throw new Error(`${r.backend} ${r.layout} training run failed (exit ${p.status}):\n${p.stderr}`);
    const ms = median(out, "ms")!, comm = median(out, "epCommMs"), tpComm = median(out, "tpCommMs"), dpComm = r.ranks > 1 ? median(out, "commMs") : null, hidden = r.ranks > 1 ? median(out, "commHiddenShare") : null;
    if (i === 0) one = ms;
    rows.push({ backend: r.backend, layout: r.layout, ranks: r.ranks, step_ms_median: +ms.toFixed(1), tokens_per_s: +((B * T * A) / (ms / 1e3)).toFixed(0), speedup: +(one / ms).toFixed(3), ep_comm_ms: comm === null ? null : +comm.toFixed(1), tp_comm_ms: tpComm === null ? null : +tpComm.toFixed(1), comm_ms: dpComm === null ? null : +dpComm.toFixed(1), comm_hidden_share: hidden });
  });
  notes.push(`train: preset ${o.preset}, global batch ${B}×${T}×${A} tokens, median of steps 2..${steps}, 1 engine thread per rank; load (1 min) ${load0.toFixed(1)} before, ${loadavg()[0]!.toFixed(1)} after`);
  return rows;
}

async function driver(): Promise<void> {
  const o = parse(process.argv.slice(2));
  const self = fileURLToPath(import.meta.url);
  const rows: Row[] = [];
  const notes: string[] = [];
  rows.push(...(await measureCollectives(o.backends, o.nproc, o.maxMb, self, notes)));
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
  if (train.length) console.log(tcols(["backend", "layout", "step ms", "tokens/s", "speedup", "EP a2a ms", "TP ar ms", "comm ms", "hidden"]));
  for (const r of train) console.log(tcols([r.backend, r.layout, r.step_ms_median.toFixed(1), String(r.tokens_per_s), r.speedup.toFixed(3), r.ep_comm_ms === null ? "-" : r.ep_comm_ms.toFixed(1), r.tp_comm_ms === null ? "-" : r.tp_comm_ms.toFixed(1), r.comm_ms === null ? "-" : r.comm_ms.toFixed(1), r.comm_hidden_share === null ? "-" : r.comm_hidden_share.toFixed(2)]));
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

if (detectBackend() !== "single" && process.argv.includes("--poll")) await (await import("./poll-share.js")).pollRank(Number(process.argv[process.argv.indexOf("--poll") + 1]));
else if (detectBackend() !== "single") await rankMain(Number(process.argv[process.argv.indexOf("--rank") + 1] ?? 16));
else if (process.argv.includes("--pp")) {
  // pipeline-parallel training rows (bench/pp-bench.ts): bench:parallel -- --pp
  const { ppBench, formatPpRows } = await import("./pp-bench.js");
  console.log(formatPpRows(ppBench({ steps: 8, micro: 8 })));
} else if (process.argv.includes("--plan-check")) {
  // the planner's predicted step against the measured one per layout (bench/plan-check.ts)
  const { planCheck, formatPlanCheck } = await import("./plan-check.js");
  const argv = process.argv.slice(2), val = (f: string) => (argv.includes(f) ? argv[argv.indexOf(f) + 1] : undefined);
  const int = (f: string, d: number) => {
    const v = Number(val(f) ?? d);
    if (!Number.isInteger(v) || v < 1) throw new Error(`${f} must be a positive integer, got ${val(f)}`);
    return v;
  };
  const only = val("--only") ?? null;
  if (only !== null && only !== "small" && only !== "wide") throw new Error(`--only must be small or wide, got ${only}`);
  const wideStages = (val("--wide-pp") ?? "2").split(",").map(Number);
  if (wideStages.some((p) => p !== 2 && p !== 4)) throw new Error(`--wide-pp: pipeline depths 2 and/or 4 (the rank counts whose links are measured), e.g. 2,4; got ${val("--wide-pp")}`);
  const layouts = val("--layouts")?.split(",").map((x) => x.trim()).filter((x) => x);
  if (layouts && !layouts.length) throw new Error("--layouts: comma-separated layout name prefixes, e.g. tp=2,dp=2");
  const r = await planCheck({ steps: int("--steps", 8), rounds: int("--rounds", 1), only, rankModule: fileURLToPath(import.meta.url), wideStages, ...(layouts ? { layouts } : {}) });
  console.log(argv.includes("--json") ? JSON.stringify(r) : formatPlanCheck(r));
} else await driver();
