// The planner against this machine: for each layout the trainer executes here (1 rank; dp=2;
// dp=2 × ep=2; pp=2 even and non-uniform; 4 ranks dp=4 and pp=2 × dp=2 on the shared cores),
// the measured training step (median of the steps after two warm-up steps, rank 0's
// metrics.jsonl) next to the planner's prediction for that exact layout (plan/search.ts
// evaluateLayout) with this machine's measured parameters:
//   - compute: the layers' FLOP/s and the head's relative rate from forward + backward of the
//     model at the run's micro-batch on one engine thread (train/machine-rates.ts): alone for one
//     rank, and measured in as many processes at once as the layout has ranks for several ranks
//     (two busy cores run slower than one; ranks time-sharing a core lose some more: the rate
//     there is per process × ranks / cores, the rate a rank computes at while it holds a core);
//     when the ranks outnumber the cores, the cost model shares the cores among the ranks
//     computing at each moment (plan/auto.ts machineCluster, cluster.concurrency);
//   - optimizer: AdamW, gradient-norm and zero + clip seconds per parameter, measured on an arena
//     of the model's size: alone for one rank, in the same concurrent processes for several
//     (memory-bound passes slow more than the layers when every core streams its arena);
//   - links: α–β fitted (plan/auto.ts fitLink) to the backend's all-reduce table on the same
//     rank count (bench/collectives.ts), not the platform.md constants; the fit weighs the small
//     sizes, which the pipeline, EP and TP exchanges move; past the cache the bandwidth drops
//     (it put 16 and 64 MB on 4 ranks at 8.0 and 32.0 ms where they took 12.3 and 50.3, so the
//     whole-arena gradient sync is predicted short; a fit on the arena's sizes instead gave the
//     2-rank link α = 0.54 ms and put dp=2 ep=2 13% too slow);
//   - polling: a rank waiting in an MPI exchange keeps polling; the share of a busy rank's CPU it
//     takes, measured once at the start (bench/poll-share.ts), is the cluster's pollShare, which
//     the shared-core 1F1B simulation gives the waiting ranks;
//   - the engine's own execution: every rank holds and steps the whole arena, gradients are
//     all-reduced over all ranks (CostOptions.gradSync = "arena").
// Then the wide-vocabulary model (small-moe at 8 layers, V = 16384: the LM head weighs about six
// layers, so the last stage is heavy): pp=2 (and pp=4 with --wide-pp 2,4) with the even split
// against the planner's split, measured and predicted gain side by side.
// Nothing here is fitted per layout: the rates are measured once per model before the runs.
// Each row also reports the machine's speed right before its run (one rank's forward + backward
// timed alone against the calibration's time), so a drift of the shared machine shows.
//
// Tensor parallelism (tp=2, experts column-split (ETP) or whole experts per rank (EDP)): the cost
// model's TP terms (two all-reduces per layer each way, the vocab-parallel head and loss, uneven
// splits: the busiest rank holds ⌈n/tp⌉) with the same measured link; the layers at the rate of
// the model one TP rank computes (train/machine-rates.ts tpRankConfig: its share of the heads
// and FFN columns, the norms, router and dispatch whole), relative to the whole model's.
//
// Usage: npm run bench:parallel -- --plan-check [--json] [--steps 8] [--rounds 1] [--only small|wide] [--wide-pp 2,4] [--layouts tp=2,dp=2]
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { readHfConfig } from "../src/model/checkpoint.js";
import { resolveConfig } from "../src/model/config.js";
import { fitLink, machineCluster } from "../src/plan/auto.js";
import type { Link } from "../src/plan/cluster.js";
import { DEFAULT_COST, PRECISIONS, evenSplit, type CostOptions, type Layout } from "../src/plan/cost.js";
import { planModelFromConfig, planParameterCounts, type PlanModel, type PlanRun } from "../src/plan/plan-model.js";
import { evaluateLayout, plan } from "../src/plan/search.js";
import { measureComputeRates, measureOptimizerRates, timeFwdBwd, tpRankConfig, type ComputeRates, type OptimizerRates } from "../src/train/machine-rates.js";
import { measureCollectives } from "./collectives.js";
import { idleTimes } from "./dp-scaling.js";
import { measurePollShare } from "./poll-share.js";
import { ppBackend, ppCommon } from "./pp-bench.js";

export interface CheckRow {
  model: string;
  layout: string;
  ranks: number;
  measured_ms: number;
  predicted_ms: number;
  /** predicted / measured */
  ratio: number;
  within_20: boolean;
  /** Of the prediction: the 1F1B schedule, gradient synchronisation, optimizer (ms), and the bubble. */
  predicted_parts: { pipeline_ms: number; sync_ms: number; optimizer_ms: number; bubble: number; stage_busy_ms: number[] };
  /** Rank 0 (stage 0) in pipeline runs: compute and time inside boundary exchanges per step (median ms). */
  stage0: { busy_ms: number; wait_ms: number } | null;
  /** Machine's idle CPU share during the run and the 1-minute load average after it. */
  idle_share: number;
  load1: number;
  /** The machine's speed right before this run: one rank's forward + backward of the model timed alone, the calibration's time over it (< 1: slower than when the rates were measured; reported, not used in the prediction). */
  speed: number;
}

export interface PlanCheck {
  cpu: string;
  cores: number;
  backend: string;
  /** Per model: solo rates, and per rank count n > 1 the rates of one of n processes measuring at once (layer FLOP/s per core held: × n / cores when n > cores). */
  rates: Record<string, ComputeRates & OptimizerRates & { concurrent: Record<number, { layerFlops: number } & OptimizerRates>; tpRelative: Record<number, number> }>;
  links: Record<string, Link>;
  /** CPU share a rank waiting in an exchange takes from busy ones (bench/poll-share.ts; 0 for the threads backend, whose waits sleep). */
  poll: { share: number; cpuPerWall: number | null; ranks?: number };
  rows: CheckRow[];
  /** pp on the wide-vocabulary model: the planner's split against the even one, per depth. */
  gains: { uniform: string; planned: string; measured: number; predicted: number }[];
}

interface Spec {
  name: string;
  ranks: number;
  layout: Layout;
  zero: boolean;
}

const B = 4, T = 64;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

function engineArgs(s: Spec): string[] {
  const L = s.layout, a = [`parallel.dp=${L.dp}`];
  if (L.tp > 1) a.push(`parallel.tp=${L.tp}`);
  if (L.expert === "edp") a.push("parallel.edp=true");
  if (L.expert === "ep" && L.ep > 1) a.push(`parallel.ep=${L.ep}`);
  if (L.pp > 1) a.push(`parallel.pp=${L.pp}`, `parallel.pp_layers=${L.partition.join(",")}`);
  if (L.recompute.some((r) => r > 0)) a.push(`parallel.recompute=${L.recompute.join(",")}`);
  if (s.zero) a.push("parallel.zero=1");
  return a;
}

function spec(name: string, L: number, o: { dp?: number; tp?: number; edp?: boolean; ep?: number; partition?: number[]; zero?: boolean }): Spec {
  const partition = o.partition ?? [L], dp = o.dp ?? 1, ep = o.ep ?? 1, tp = o.tp ?? 1;
  const expert = o.edp ? "edp" : ep > 1 ? "ep" : "etp";
  return {
    name, ranks: dp * tp * partition.length, zero: o.zero ?? false,
    layout: { dp, tp, pp: partition.length, expert, ep: expert === "edp" ? tp : ep, partition, recompute: partition.map(() => 0) },
  };
}

/** Pseudo-words from a fixed generator, each used several times, so the BPE reaches a large vocabulary. */
function wideCorpus(dir: string, words: number): void {
  mkdirSync(dir, { recursive: true });
  let s = 12345;
  const rnd = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const cons = "bcdfghjklmnprstvwxyz", vow = "aeiou", seen = new Set<string>(), vocab: string[] = [];
  while (vocab.length < words) {
    let w = "";
    for (let i = 0, n = 2 + Math.floor(rnd() * 3); i < n; i++) w += cons[Math.floor(rnd() * 20)]! + vow[Math.floor(rnd() * 5)]!;
    if (!seen.has(w)) seen.add(w), vocab.push(w);
  }
  for (let d = 0; d < 40; d++) writeFileSync(path.join(dir, `doc${d}.txt`), Array.from({ length: words / 10 }, () => vocab[Math.floor(rnd() * words)]!).join(" "));
}

class Runner {
  constructor(readonly cli: string, readonly base: string, readonly backend: string) {}

  /** Runs one layout; median step ms after the warm-up steps, stage-0 busy/wait, idle share. */
  run(tag: string, common: string[], s: Spec | null): { ms: number; stage0: CheckRow["stage0"]; idle: number; load1: number; dir: string } {
    const dir = path.join(this.base, tag.replace(/\W+/g, "-"));
    const args = !s || s.ranks === 1 ? ["train", ...common, ...(s ? engineArgs(s) : []), `train.out_dir=${dir}`]
      : ["launch", "--nproc", String(s.ranks), "--backend", this.backend, "--timeout", "900", "--", "train", ...common, ...engineArgs(s), `train.out_dir=${dir}`];
    const c0 = idleTimes();
    const r = spawnSync(process.execPath, [this.cli, ...args], { encoding: "utf8", env: { ...process.env, MOE_NUM_THREADS: "1" } });
    const c1 = idleTimes();
    if (r.status !== 0) throw new Error(`${tag} failed (exit ${r.status}):\n${r.stderr}`);
    const recs = readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as { ms: number; pipeline?: { busyMs: number; waitMs: number } }).slice(2);
    const pipe = recs.flatMap((x) => (x.pipeline ? [x.pipeline] : []));
    return {
      ms: median(recs.map((x) => x.ms)), dir, load1: loadavg()[0]!, idle: (c1.idle - c0.idle) / Math.max(1, c1.total - c0.total),
      stage0: pipe.length ? { busy_ms: +median(pipe.map((p) => p.busyMs)).toFixed(1), wait_ms: +median(pipe.map((p) => p.waitMs)).toFixed(1) } : null,
    };
  }
}

/**
 * Rates of one of `n` processes measuring at once (this file with --calibrate): the median over
 * the processes, then over `rounds` rounds (a round that another job's burst hit reads low: one
 * measured 26 GFLOP/s where others read 101–108; the best round reads high, its processes having
 * overlapped least). The layer rate is per core held: with more processes than cores each
 * process's measured rate × n / cores.
 */
async function concurrentRates(configDir: string, params: number, n: number, cores: number, rounds = 3): Promise<{ layerFlops: number } & OptimizerRates> {
  const got: ({ layerFlops: number } & OptimizerRates)[] = [];
  for (let r = 0; r < rounds; r++) got.push(await concurrentRound(configDir, params, n, cores));
  const med = (k: "layerFlops" | keyof OptimizerRates) => median(got.map((g) => g[k]));
  const share = n > cores ? n / cores : 1;
  return { layerFlops: med("layerFlops") * share, optimizerSecondsPerParam: med("optimizerSecondsPerParam") / share, normSecondsPerParam: med("normSecondsPerParam") / share, gradPassSecondsPerParam: med("gradPassSecondsPerParam") / share };
}

/**
 * One round of `n` calibration processes. With more processes than cores each is pinned to core
 * i mod cores (taskset), as `moe launch` binds oversubscribed MPI ranks: unpinned, where the
 * kernel put them decided the rate (4 processes on 2 cores read 62.6 to 99.0 GFLOP/s per core
 * held in four runs).
 */
async function concurrentRound(configDir: string, params: number, n: number, cores: number): Promise<{ layerFlops: number } & OptimizerRates> {
  const self = fileURLToPath(import.meta.url);
  const pin = n > cores;
  if (pin && spawnSync("taskset", ["--version"]).error) throw new Error("plan check: pinning more calibration processes than cores needs taskset (util-linux)");
  const one = (i: number) => new Promise<{ layerFlops: number } & OptimizerRates>((resolve, reject) => {
    const args = [self, "--calibrate", configDir, String(params)];
    const c = pin
      ? spawn("taskset", ["-c", String(i % cores), process.execPath, ...args], { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, MOE_NUM_THREADS: "1" } })
      : spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"], env: { ...process.env, MOE_NUM_THREADS: "1" } });
    let text = "";
    c.stdout.on("data", (d: Buffer) => (text += d.toString()));
    c.on("close", (code) => (code === 0 ? resolve(JSON.parse(text) as { layerFlops: number } & OptimizerRates) : reject(new Error(`calibration process failed (exit ${code})`))));
  });
  const all = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
  const med = (k: "layerFlops" | keyof OptimizerRates) => median(all.map((g) => g[k]));
  return { layerFlops: med("layerFlops"), optimizerSecondsPerParam: med("optimizerSecondsPerParam"), normSecondsPerParam: med("normSecondsPerParam"), gradPassSecondsPerParam: med("gradPassSecondsPerParam") };
}

/** The HF config the run trained (its final checkpoint's config.json). */
function runConfigDir(dir: string): string {
  const ck = path.join(dir, "checkpoints");
  const last = readdirSync(ck).filter((d) => d.startsWith("step-")).sort().pop();
  if (!last) throw new Error(`${dir}: no checkpoint written`);
  return path.join(ck, last);
}

/** wideStages: pipeline depths of the wide-vocabulary rows (2; 4 runs 4 ranks on the shared cores). */
/** layouts: when set, only the small-model layouts whose name starts with one of these (e.g. "tp=2"). */
export async function planCheck(o: { steps: number; rounds: number; only: string | null; rankModule: string; wideStages: number[]; layouts?: string[] }): Promise<PlanCheck> {
  const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "cli", "main.js");
  const base = mkdtempSync(path.join(tmpdir(), "moe-plancheck-"));
  const backend = ppBackend(), cores = availableParallelism(), micro = 8;
  const runner = new Runner(cli, base, backend);
  const out: PlanCheck = { cpu: cpus()[0]?.model ?? "unknown CPU", cores, backend, rates: {}, links: {}, poll: { share: 0, cpuPerWall: null }, rows: [], gains: [] };
  const notes: string[] = [];
  try {
    // links: α–β of the backend's all-reduce on 2 and 4 ranks
    for (const n of [2, 4]) {
      const rows = (await measureCollectives([backend], n, 16, o.rankModule, notes)).filter((r) => r.op === "allreduce");
      out.links[n] = fitLink(rows.map((r) => ({ ranks: r.ranks, bytes: r.bytes, seconds: r.us_median * 1e-6 })), "allreduce");
    }
    // the 4-rank runs are the ones whose ranks outnumber the cores (the share matters only there)
    // (the median of 3 rounds: the share read 0.03–0.22 in one minute on the shared machine)
    if (backend === "mpi") {
      const rounds = [];
      for (let i = 0; i < 3; i++) rounds.push(await measurePollShare(o.rankModule, cores, 4));
      out.poll = rounds.sort((a, b) => a.share - b.share)[1]!;
    }
    const small = ppCommon(path.join(base, "small"), { steps: o.steps, micro });
    const wideDir = path.join(base, "wide"), words = path.join(wideDir, "words");
    wideCorpus(words, 20000);
    const wideOpt = (a: string) => (a.startsWith("data.vocab_size=") ? "data.vocab_size=16384" : a.startsWith("data.corpus=") ? `data.corpus=${words}` : a);
    const wide = ppCommon(wideDir, { steps: o.steps, micro }).map(wideOpt).concat("model.num_layers=8");
    const models: { name: string; common: string[] }[] = [{ name: "small-moe", common: small }, { name: "wide-vocab", common: wide }].filter((m) => !o.only || m.name.startsWith(o.only));
    for (const m of models) {
      // tokenizer and shards once, outside the timed runs; its checkpoint gives the model's config
      const prep = runner.run(`${m.name}-prep`, m.common.map((a) => (a.startsWith("train.steps=") ? "train.steps=1" : a)), null);
      const hf = readHfConfig(runConfigDir(prep.dir));
      const pm = planModelFromConfig(resolveConfig(hf), m.name);
      if (m.name === "wide-vocab" && pm.vocab < 16000) throw new Error(`wide-vocab: the tokenizer reached only ${pm.vocab} tokens`);
      const solo = measureComputeRates(hf, B, T, 1, 9);
      const params = planParameterCounts(pm).total;
      const rates = { ...solo, ...measureOptimizerRates(params), concurrent: {} as Record<number, { layerFlops: number } & OptimizerRates>, tpRelative: {} as Record<number, number> };
      out.rates[m.name] = rates;
      const run: PlanRun = { seqLen: T, microBatch: B, globalBatch: B * micro };
      // one rank computes at the solo rates; n ranks at those of n processes measuring at once
      // (per core held; the cores' sharing among ranks is the cost model's, cluster.concurrency)
      const at = async (ranks: number) => (ranks === 1 ? rates : (rates.concurrent[ranks] ??= await concurrentRates(runConfigDir(prep.dir), params, ranks, cores)));
      // a TP rank's layers run at the rate of tpRankConfig's model (its share of the GEMMs, the
      // norms, router and dispatch whole), relative to the whole model's: measured alone, once per tp
      const tpRate = (tp: number) => (tp === 1 ? 1 : rates.tpRelative[tp]!);
      const cluster = async (ranks: number, tp = 1) => machineCluster({ ranks, cores, threads: 1, flopsPerRank: (await at(ranks)).layerFlops * tpRate(tp), memory: 1e12, link: out.links[ranks] ?? out.links[2]!, source: "measured", pollShare: out.poll.share });
      const cost = async (zero: boolean, ranks: number): Promise<CostOptions> => {
        const r = await at(ranks);
        return {
          ...DEFAULT_COST, precision: PRECISIONS.f32!, zero1: zero, gradSync: "arena", headEfficiency: rates.headEfficiency,
          optimizerSecondsPerParam: r.optimizerSecondsPerParam, normSecondsPerParam: r.normSecondsPerParam, gradPassSecondsPerParam: r.gradPassSecondsPerParam,
        };
      };
      const L = pm.layers;
      let specs: Spec[];
      const gainPairs: [Spec, Spec][] = [];
      if (m.name === "small-moe") {
        specs = [
          spec("1 rank", L, {}), spec("dp=2", L, { dp: 2 }), spec("dp=2 zero=1", L, { dp: 2, zero: true }), spec("dp=2 ep=2", L, { dp: 2, ep: 2 }),
          spec("pp=2 2,2", L, { partition: evenSplit(L, 2) }), spec("pp=2 3,1", L, { partition: [3, 1] }), spec("pp=2 1,3", L, { partition: [1, 3] }),
          spec("dp=4", L, { dp: 4 }), spec("pp=2 × dp=2", L, { dp: 2, partition: evenSplit(L, 2) }),
          spec("tp=2 (ETP)", L, { tp: 2 }), spec("tp=2 edp", L, { tp: 2, edp: true }),
        ].filter((s) => !o.layouts || o.layouts.some((x) => s.name.startsWith(x)));
      } else {
        specs = [spec("1 rank", L, {})];
        for (const pp of o.wideStages) {
          const best = plan(pm, run, await cluster(pp), { cost: await cost(false, pp), maxTp: 1, expertModes: ["etp"], fix: { pp, dp: 1 } }).layouts[0]!;
          const uni = spec(`pp=${pp} ${evenSplit(L, pp).join(",")} (even)`, L, { partition: evenSplit(L, pp) });
          const planned = spec(`pp=${pp} ${best.layout.partition.join(",")} (planner)`, L, { partition: best.layout.partition });
          specs.push(uni, planned);
          gainPairs.push([uni, planned]);
        }
      }
      // measured before the runs, like the other rates (measured between two runs it once read half)
      for (const tp of new Set(specs.map((x) => x.layout.tp).filter((t) => t > 1))) rates.tpRelative[tp] = measureComputeRates(tpRankConfig(hf, tp), B, T, 1, 9).layerFlops / solo.layerFlops;
      for (const n of new Set(specs.map((x) => x.ranks))) await at(n);
      const got = new Map<string, CheckRow[]>();
      for (let round = 0; round < o.rounds; round++) {
        for (const s of specs) {
          const speed = solo.fullSeconds / timeFwdBwd(resolveConfig(hf), B, T, 1, 5);
          const r = runner.run(`${m.name}-${s.name}-${round}`, m.common, s);
          const e = evaluateLayout(pm, run, await cluster(s.ranks, s.layout.tp), s.layout, await cost(s.zero, s.ranks));
          const pred = e.step * 1e3;
          const row: CheckRow = {
            model: m.name, layout: s.name, ranks: s.ranks, measured_ms: +r.ms.toFixed(1), predicted_ms: +pred.toFixed(1), ratio: +(pred / r.ms).toFixed(3), within_20: Math.abs(pred / r.ms - 1) <= 0.2,
            predicted_parts: { pipeline_ms: +(e.pipeline * 1e3).toFixed(1), sync_ms: +(e.comm.dp * 1e3).toFixed(1), optimizer_ms: +(e.optimizer * 1e3).toFixed(1), bubble: +e.bubble.toFixed(3), stage_busy_ms: e.busy.map((b) => +(b * 1e3).toFixed(1)) },
            stage0: r.stage0, idle_share: +r.idle.toFixed(3), load1: +r.load1.toFixed(2), speed: +speed.toFixed(3),
          };
          got.set(s.name, [...(got.get(s.name) ?? []), row]);
        }
      }
      // per layout, the round with the median measured time
      for (const s of specs) {
        const rs = got.get(s.name)!.sort((a, b) => a.measured_ms - b.measured_ms);
        out.rows.push(rs[rs.length >> 1]!);
      }
      for (const pair of gainPairs) {
        const [u, p] = pair.map((s) => out.rows.find((r) => r.model === m.name && r.layout === s.name)!);
        out.gains.push({ uniform: u!.layout, planned: p!.layout, measured: +(u!.measured_ms / p!.measured_ms - 1).toFixed(3), predicted: +(u!.predicted_ms / p!.predicted_ms - 1).toFixed(3) });
      }
    }
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
  return out;
}

export function formatPlanCheck(c: PlanCheck): string {
  const lines = [`planner vs measured step, ${c.cpu} (${c.cores} cores), ${c.backend} backend, 1 engine thread per rank, micro-batches 4×64, grad_accum 8`];
  for (const [n, l] of Object.entries(c.links)) lines.push(`  link fitted on ${n} ranks: α ${(l.latency * 1e6).toFixed(1)} µs, β ${(l.bandwidth / 1e9).toFixed(2)} GB/s`);
  lines.push(`  a rank waiting in an exchange takes ${c.poll.share.toFixed(2)} of a busy rank's CPU share${c.poll.cpuPerWall !== null ? ` (measured on ${c.poll.ranks} ranks: the waiters together ${c.poll.cpuPerWall.toFixed(2)} CPU s per s beside ${c.cores} spinning processes)` : " (threads backend: waits sleep)"}`);
  for (const [m, r] of Object.entries(c.rates)) {
    const opt = (o: OptimizerRates) => `AdamW ${(o.optimizerSecondsPerParam * 1e9).toFixed(2)} ns/param, norm ${(o.normSecondsPerParam * 1e9).toFixed(2)}, zero + clip ${(o.gradPassSecondsPerParam * 1e9).toFixed(2)}`;
    lines.push(`  ${m}: layers ${(r.layerFlops / 1e9).toFixed(1)} GFLOP/s alone, head ×${r.headEfficiency.toFixed(2)}${r.headResolved ? "" : " (too small to time)"}, ${opt(r)}`);
    for (const [tp, x] of Object.entries(r.tpRelative)) lines.push(`    a tp=${tp} rank's layers (machine-rates.ts tpRankConfig): ×${x.toFixed(3)} of the whole model's rate`);
    for (const [n, c] of Object.entries(r.concurrent)) lines.push(`    ${n} processes at once: layers ${(c.layerFlops / 1e9).toFixed(1)} GFLOP/s per core held, ${opt(c)}`);
  }
  const head = ["model", "layout", "ranks", "measured ms", "predicted ms", "pred/meas", "≤20%", "pipe|sync|opt ms", "stage0 busy/wait", "idle", "load1", "speed"];
  lines.push(head.map((s, i) => (i < 2 ? s.padEnd(i === 0 ? 12 : 24) : s.padStart(i === 7 ? 20 : 13))).join(""));
  for (const r of c.rows) {
    const p = r.predicted_parts;
    lines.push([r.model.padEnd(12), r.layout.padEnd(24), ...[String(r.ranks), r.measured_ms.toFixed(1), r.predicted_ms.toFixed(1), r.ratio.toFixed(2), r.within_20 ? "yes" : "no"].map((s) => s.padStart(13)),
      `${p.pipeline_ms.toFixed(0)}|${p.sync_ms.toFixed(0)}|${p.optimizer_ms.toFixed(0)}`.padStart(20), (r.stage0 ? `${r.stage0.busy_ms.toFixed(0)}/${r.stage0.wait_ms.toFixed(0)}` : "-").padStart(13), r.idle_share.toFixed(2).padStart(13), r.load1.toFixed(1).padStart(13), r.speed.toFixed(2).padStart(13)].join(""));
  }
  for (const g of c.gains) lines.push(`non-uniform pipeline (${g.planned}) over the even split (${g.uniform}): measured ${(100 * g.measured).toFixed(1)}%, predicted ${(100 * g.predicted).toFixed(1)}%`);
  return lines.join("\n");
}

// child of concurrentLayerFlops: more repetitions than the solo measurement, so that the processes overlap
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1]) && process.argv[2] === "--calibrate") {
  const r = measureComputeRates(readHfConfig(process.argv[3]!), B, T, 1, 15);
  console.log(JSON.stringify({ layerFlops: r.layerFlops, ...measureOptimizerRates(Number(process.argv[4])) }));
}
