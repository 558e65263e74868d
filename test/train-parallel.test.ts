// Data parallelism against a single rank: `moe launch --nproc 2 -- train parallel.dp=2` gives the
// losses of a one-rank run with the same global batch (batch_size × grad_accum) to 1e-5
// relative — Skywork router (dropless), capacity dispatch, SparseMixer (counter-based noise),
// ZeRO-1 — on the threads backend and on MPI (skipped only when the binding is absent); and a
// ZeRO-1 checkpoint written at dp=2 resumes at dp=1 on the uninterrupted run's losses. The gradient
// all-reduce overlapped with the backward (parallel.overlap_grad_reduce, one bucket per layer here)
// gives bit for bit the losses and gradient norms of the non-overlapped path, ZeRO-0 and ZeRO-1, at
// 2 and 4 ranks (oversubscribed) on both backends, and the single-rank losses.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { mpiAvailable } from "../src/parallel/mpi.js";
import { closeLosses, losses, runCli, tinyCorpus } from "./train-cli-util.js";

const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), "dist", "src", "cli", "main.js");
const { base, common } = tinyCorpus("moe-dp-");
const COMMON = common({ grad_accum: 2, steps: 10 });

const run = runCli;


const close = closeLosses;

const CASES: [string, string[]][] = [
  ["skywork router, dropless", []],
  ["capacity dispatch", ["model.dispatch=capacity", "model.capacity_factor=1.0"]],
  ["SparseMixer router", ["model.router=sparsemixer", "model.sparsemixer_eps=0.3"]],
];

for (const [name, extra] of CASES) {
  test(`dp=2 (threads, ZeRO-0 and ZeRO-1) gives the single-rank losses: ${name}`, () => {
    const tag = name.replace(/\W+/g, "-");
    const one = path.join(base, `${tag}-1`), two = path.join(base, `${tag}-2`), z1 = path.join(base, `${tag}-z1`);
    run(["train", ...COMMON, ...extra, `train.out_dir=${one}`]);
    run(["launch", "--nproc", "2", "--backend", "threads", "--timeout", "200", "--", "train", ...COMMON, ...extra, `train.out_dir=${two}`, "parallel.dp=2"]);
    run(["launch", "--nproc", "2", "--backend", "threads", "--timeout", "200", "--", "train", ...COMMON, ...extra, `train.out_dir=${z1}`, "parallel.dp=2", "parallel.zero=1"]);
    close(losses(two), losses(one), `${name} dp=2`);
    close(losses(z1), losses(one), `${name} dp=2 zero=1`);
  });
}

test("dp=2 over MPI with ZeRO-1 gives the single-rank losses; its checkpoint resumes at dp=1", (t) => {
  if (!mpiAvailable() || spawnSync("mpirun", ["--version"]).error) {
    t.skip("Open MPI binding or mpirun not available");
    return;
  }
  const one = path.join(base, "mpi-1"), two = path.join(base, "mpi-2");
  run(["train", ...COMMON, `train.out_dir=${one}`, "train.steps=12"]);
  run(["launch", "--nproc", "2", "--backend", "mpi", "--timeout", "200", "--", "train", ...COMMON, `train.out_dir=${two}`, "parallel.dp=2", "parallel.zero=1", "train.steps=6"]);
  // the ZeRO-1 checkpoint holds the whole optimizer state: resume it on one rank (another layout)
  const resumed = ["train", ...COMMON.filter((a) => !a.startsWith("train.steps")), `train.out_dir=${two}`, "train.steps=12", "parallel.dp=1", "parallel.zero=0", "--resume"];
  const r = spawnSync(process.execPath, [CLI, ...resumed], { encoding: "utf8", timeout: 240_000 });
  // resuming at another layout is refused by the config check unless the layout keys may change; report clearly either way
  assert.equal(r.status, 0, r.stdout + r.stderr);
  close(losses(two), losses(one), "mpi dp=2 zero=1 then dp=1");
});

/** metrics.jsonl records. */
function records(dir: string): { loss: number; gradNorm: number; commMs: number; commHiddenShare: number }[] {
  return readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
}

for (const backend of ["threads", "mpi"] as const) {
  test(`dp=2 and dp=4 (${backend}): the overlapped gradient all-reduce gives the bits of the non-overlapped one (ZeRO-0 and 1) and the single-rank losses`, (t) => {
    if (backend === "mpi" && (!mpiAvailable() || spawnSync("mpirun", ["--version"]).error)) {
      t.skip("Open MPI binding or mpirun not available");
      return;
    }
    const short = (A: number) => [...COMMON.filter((a) => !a.startsWith("train.steps") && !a.startsWith("train.grad_accum")), "train.steps=6", `train.grad_accum=${A}`];
    const singles = new Map<number, string>();
    for (const [n, zero] of [[2, 0], [2, 1], [4, 1]] as const) {
      const A = n === 4 ? 4 : 2;
      if (!singles.has(A)) {
        singles.set(A, path.join(base, `ov-${backend}-single-${A}`));
        run(["train", ...short(A), `train.out_dir=${singles.get(A)}`]);
      }
      const dirs = ["on", "off"].map((o) => path.join(base, `ov-${backend}-dp${n}-z${zero}-${o}`));
      const opts = [["parallel.bucket_mb=0.001"], ["parallel.overlap_grad_reduce=false"]];
      dirs.forEach((dir, i) => run(["launch", "--nproc", String(n), "--backend", backend, "--timeout", "200", "--", "train", ...short(A), `train.out_dir=${dir}`, `parallel.dp=${n}`, `parallel.zero=${zero}`, ...opts[i]!]));
      const [on, off] = dirs.map(records) as [ReturnType<typeof records>, ReturnType<typeof records>];
      const what = `${backend} dp=${n} zero=${zero}`;
      assert.deepEqual(on.map((r) => [r.loss, r.gradNorm]), off.map((r) => [r.loss, r.gradNorm]), `${what}: overlap on and off give the same bits`);
      close(losses(dirs[0]!), losses(singles.get(A)!), `${what} overlapped vs one rank`);
      for (const r of [...on, ...off]) assert.ok(r.commMs > 0 && r.commHiddenShare >= 0 && r.commHiddenShare <= 1, `${what}: comm ${r.commMs} ms, hidden ${r.commHiddenShare}`);
      assert.ok(off.every((r) => r.commHiddenShare === 0), `${what}: nothing is hidden without overlap`);
      if (backend === "threads") assert.ok(on.every((r) => r.commHiddenShare === 0), `${what}: threads ranks reduce on their own thread, nothing is hidden`);
    }
  });
}
