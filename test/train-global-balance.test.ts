// GRIN's global balancing loss over the whole step (balance.global_scope=step,
// train/global-balance.ts) against the single-rank run: with the SparseMixer router and
// balance.loss=global, dp=2 × 2 micro-batches per rank gives the balancing loss of dp=1 × 4
// micro-batches (per layer, step 1 to 1e-12; every step to 1e-6 relative) and the total loss to
// 1e-5, on threads (also with expert parallelism, dp=2 × ep=2) and on MPI (skipped when the
// binding is absent). The default per-micro-batch scope is shown not to have that property at
// these settings, so the comparison can fail.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mpiAvailable } from "../src/parallel/mpi.js";
import { tinyCorpus } from "./train-cli-util.js";

const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), "dist", "src", "cli", "main.js");
const { base, common } = tinyCorpus("moe-grin-");
const COMMON = common({ grad_accum: 4, steps: 4 }, ["model.router=sparsemixer", "balance.loss=global", "balance.adaptive=false", "balance.coef=0.01"]);

interface Rec { loss: number; balanceLoss: number; layers: { aux: number }[] }

function train(dir: string, extra: string[], dp = 1, backend = "threads"): Rec[] {
  const args = ["train", ...COMMON, ...extra, `train.out_dir=${dir}`, `parallel.dp=${dp}`];
  const r = spawnSync(process.execPath, dp > 1 ? [CLI, "launch", "--nproc", String(dp), "--backend", backend, "--timeout", "200", "--", ...args] : [CLI, ...args], { encoding: "utf8", timeout: 240_000 });
  assert.equal(r.status, 0, `${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
  return readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l) as Rec);
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

function sameBalance(got: Rec[], want: Rec[], what: string): void {
  assert.equal(got.length, want.length, `${what}: steps`);
  // step 1: the same weights, the same (exact, integer) global counts
  got[0]!.layers.forEach((l, i) => assert.ok(rel(l.aux, want[0]!.layers[i]!.aux) <= 1e-12, `${what} step 1 layer ${i}: aux ${l.aux} vs ${want[0]!.layers[i]!.aux}`));
  got.forEach((r, s) => {
    assert.ok(rel(r.balanceLoss, want[s]!.balanceLoss) <= 1e-6, `${what} step ${s + 1}: balance loss ${r.balanceLoss} vs ${want[s]!.balanceLoss}`);
    assert.ok(rel(r.loss, want[s]!.loss) <= 1e-5, `${what} step ${s + 1}: loss ${r.loss} vs ${want[s]!.loss}`);
  });
}

let single: Rec[] | null = null;
const singleRun = () => (single ??= train(path.join(base, "one-step"), ["balance.global_scope=step"]));

test("global balance over the step: dp=2 × 2 micro-batches gives the dp=1 × 4 loss (threads)", () => {
  const one = singleRun();
  const two = train(path.join(base, "two-step"), ["balance.global_scope=step"], 2);
  sameBalance(two, one, "dp=2 scope=step");
  // the default scope sums counts per micro-batch index only: not layout-invariant
  const oneMb = train(path.join(base, "one-mb"), []), twoMb = train(path.join(base, "two-mb"), [], 2);
  assert.ok(rel(twoMb[0]!.balanceLoss, oneMb[0]!.balanceLoss) > 1e-5, `micro_batch scope: dp=2 ${twoMb[0]!.balanceLoss} vs dp=1 ${oneMb[0]!.balanceLoss} should differ`);
  assert.ok(rel(oneMb[0]!.balanceLoss, one[0]!.balanceLoss) > 1e-5, "scope=step changes the single-rank loss at grad_accum 4");
});

test("global balance over the step with expert parallelism (dp=2 × ep=2, threads) gives the single-rank loss", () => {
  sameBalance(train(path.join(base, "ep-step"), ["balance.global_scope=step", "parallel.ep=2"], 2), singleRun(), "dp=2 ep=2 scope=step");
});

test("global balance over the step on MPI gives the single-rank loss", (t) => {
  if (!mpiAvailable() || spawnSync("mpirun", ["--version"]).error) {
    t.skip("Open MPI binding or mpirun not available");
    return;
  }
  sameBalance(train(path.join(base, "mpi-step"), ["balance.global_scope=step"], 2, "mpi"), singleRun(), "mpi dp=2 scope=step");
});
