// Expert parallelism against a single rank.
// Layer level (test/ep-rank-program.ts, 2 and 4 ranks): one MoE layer with its experts split over
// the ranks gives the single-rank output, input and router gradients, and (own experts) the
// single-rank weight gradients summed over every rank's tokens — including ranks that receive
// zero rows for all their experts, capacity drops with padding rows, and SparseMixer.
// Training: `moe launch --nproc 2 -- train parallel.dp=2 parallel.ep=2` and the folded layout
// dp=4 × ep=2 (expert gradients reduced over the 2-rank expert-data-parallel group, ZeRO-0/1 on
// top) give the losses of a one-rank run with the same global batch to 1e-5 relative, for the
// default (Skywork, dropless), capacity dispatch and the SparseMixer router; on the threads backend
// and on MPI (skipped only when the binding or mpirun is absent), at 2 and 4 ranks on both. An ep=2 checkpoint resumes on one
// rank on the single-rank losses. Config errors are checked too.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mpiAvailable } from "../src/parallel/mpi.js";
import { runThreads } from "../src/parallel/threads.js";
import { closeLosses, losses, runCli, tinyCorpus } from "./train-cli-util.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(here, "..", "src", "cli", "main.js");
const program = path.join(here, "ep-rank-program.js");
const haveMpi = () => mpiAvailable() && !spawnSync("mpirun", ["--version"]).error;
const { base, common } = tinyCorpus("moe-ep-");
const COMMON = common({ grad_accum: 2, steps: 10 });

const run = runCli;

function launch(n: number, backend: "threads" | "mpi", args: string[]): void {
  run(["launch", "--nproc", String(n), "--backend", backend, "--timeout", "200", "--", "train", ...COMMON, ...args]);
}


const close = closeLosses;

/** The single-rank run of a case (run once, shared by the tests that compare with it). */
const singles = new Map<string, string>();
function single(extra: string[]): string {
  const key = extra.join(" ");
  let dir = singles.get(key);
  if (!dir) {
    dir = path.join(base, `single-${singles.size}`);
    run(["train", ...COMMON, ...extra, `train.out_dir=${dir}`]);
    singles.set(key, dir);
  }
  return dir;
}

function layerChecks(out: string, n: number): void {
  for (let r = 0; r < n; r++) assert.match(out, new RegExp(`EP-OK ${r} 8\\b`), `rank ${r} did not finish its checks:\n${out}`);
}

for (const n of [2, 4]) {
  test(`EP layer at ${n} ranks (threads): single-rank outputs and gradients, zero-token ranks, capacity, SparseMixer`, async () => {
    const r = await runThreads(n, program, [], { timeoutMs: 120_000, output: "capture", report: false });
    assert.equal(r.failure, null, `${r.failure}\n${r.stderr.join("")}`);
    assert.equal(r.code, 0);
    layerChecks(r.stdout.join(""), n);
  });
}

for (const n of [2, 4]) {
  test(`EP layer at ${n} ranks (MPI${n > 2 ? ", oversubscribed" : ""})`, (t) => {
    if (!haveMpi()) {
      t.skip("Open MPI binding or mpirun not available");
      return;
    }
    const moe = path.resolve(here, "..", "..", "bin", "moe.js");
    const r = spawnSync(process.execPath, [moe, "launch", "--nproc", String(n), "--backend", "mpi", "--timeout", "120", "--module", program, "--"], { encoding: "utf8", timeout: 180_000 });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    layerChecks(r.stdout, n);
  });
}

const CASES: [string, string[]][] = [
  ["skywork router, dropless", []],
  ["capacity dispatch", ["model.dispatch=capacity", "model.capacity_factor=1.0"]],
  ["SparseMixer router", ["model.router=sparsemixer", "model.sparsemixer_eps=0.3"]],
];

for (const [name, extra] of CASES) {
  test(`ep=2 (threads) gives the single-rank losses: ${name}`, () => {
    const tag = name.replace(/\W+/g, "-");
    const one = single(extra), two = path.join(base, `${tag}-ep2`);
    launch(2, "threads", [...extra, `train.out_dir=${two}`, "parallel.dp=2", "parallel.ep=2"]);
    close(losses(two), losses(one), `${name} ep=2`);
    if (name.startsWith("SparseMixer")) {
      if (!haveMpi()) return;
      const mpi = path.join(base, `${tag}-mpi`);
      launch(2, "mpi", [...extra, `train.out_dir=${mpi}`, "parallel.dp=2", "parallel.ep=2"]);
      close(losses(mpi), losses(one), `${name} ep=2 over MPI`);
    }
  });
}

CASES.forEach(([name, extra], i) => {
  const zero = i % 2 === 0 ? 1 : 0;
  test(`dp=4 × ep=2 (4 threads, oversubscribed; ZeRO-${zero}) gives the single-rank losses: ${name}`, () => {
    const four = path.join(base, `fold-${i}`);
    launch(4, "threads", [...extra, "train.grad_accum=4", `train.out_dir=${four}`, "parallel.dp=4", "parallel.ep=2", `parallel.zero=${zero}`]);
    close(losses(four), losses(single([...extra, "train.grad_accum=4"])), `${name} dp=4 ep=2`);
  });
});

test("dp=4 × ep=2 ZeRO-1 and dp=4 × ep=4 (MPI, 4 ranks oversubscribed) give the single-rank losses: capacity dispatch, SparseMixer", (t) => {
  if (!haveMpi()) {
    t.skip("Open MPI binding or mpirun not available");
    return;
  }
  const cases: [string, string[], string[]][] = [
    ["capacity dispatch, dp=4 ep=2 ZeRO-1", CASES[1]![1], ["parallel.ep=2", "parallel.zero=1"]],
    ["SparseMixer, dp=4 ep=4", CASES[2]![1], ["parallel.ep=4"]],
  ];
  cases.forEach(([name, extra, layout], i) => {
    const dir = path.join(base, `mpi4-${i}`);
    launch(4, "mpi", [...extra, "train.grad_accum=4", `train.out_dir=${dir}`, "parallel.dp=4", ...layout]);
    close(losses(dir), losses(single([...extra, "train.grad_accum=4"])), `${name} over MPI`);
  });
});

test("an ep=2 checkpoint (MPI when present, else threads) resumes on one rank on the single-rank losses", () => {
  const one = single([]), dir = path.join(base, "ep-resume");
  launch(2, haveMpi() ? "mpi" : "threads", [`train.out_dir=${dir}`, "parallel.dp=2", "parallel.ep=2", "train.steps=6"]);
  run(["train", ...COMMON.filter((a) => !a.startsWith("train.steps")), `train.out_dir=${dir}`, "train.steps=10", "parallel.dp=1", "parallel.ep=1", "--resume"]);
  close(losses(dir), losses(one), "ep=2 for 6 steps, then one rank");
});

test("parallel.ep is validated: it must divide parallel.dp and the number of experts", () => {
  const bad = (args: string[], re: RegExp) => {
    const r = spawnSync(process.execPath, [CLI, "train", ...COMMON, `train.out_dir=${path.join(base, "bad")}`, ...args], { encoding: "utf8", timeout: 60_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr + r.stdout, re);
  };
  bad(["parallel.ep=2"], /parallel\.ep \(2\) must divide parallel\.dp \(1\)/);
  bad(["parallel.ep=0"], /parallel\.ep must be positive/);
  const r = spawnSync(process.execPath, [CLI, "launch", "--nproc", "2", "--backend", "threads", "--timeout", "100", "--", "train", ...COMMON, `train.out_dir=${path.join(base, "bad3")}`, "parallel.dp=2", "parallel.ep=2", "model.num_experts=3"], { encoding: "utf8", timeout: 120_000 });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr + r.stdout, /parallel\.ep=2 must divide the model's 3 experts/);
});
