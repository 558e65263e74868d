// Sharded checkpoints of data-parallel runs (train/shard-checkpoint.ts), against uninterrupted
// runs: a dp=2 ZeRO-1 checkpoint resumes at the same layout on the uninterrupted run's losses bit
// for bit, at dp=1 (and a one-rank checkpoint at dp=2 ZeRO-1) on the single-rank losses to 1e-5;
// `moe inspect` / `moe export` and the HF loader read it as one model equal to the one-rank
// run's weights; a checkpoint missing a shard is refused by name. Threads backend, and MPI
// (skipped only when the binding or mpirun is absent), whose ranks have different pids.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { mpiAvailable } from "../src/parallel/mpi.js";
import { loadHfWeights } from "../src/model/checkpoint.js";
import { createBackend } from "../src/backend/index.js";

const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), "dist", "src", "cli", "main.js");
const base = mkdtempSync(path.join(tmpdir(), "moe-shard-"));
const corpus = path.join(base, "corpus");
mkdirSync(corpus);
for (let d = 0; d < 40; d++) writeFileSync(path.join(corpus, `doc${d}.txt`), Array.from({ length: 10 }, (_, i) => `the whale ${(i + d) % 7} and the sea ${(i * d) % 5}, a ship waits.`).join(" "));
// 8 steps stay inside the 60-step warmup: the LR of a step does not depend on train.steps
const COMMON = [
  `data.corpus=${corpus}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=300", "data.val_fraction=0.1", "model.preset=tiny-mixtral", "model.router=topk",
  "train.batch_size=2", "train.seq_len=32", "train.grad_accum=2", "train.threads=1", "log.progress=false",
  "eval.every=0", "sample.every=0", "checkpoint.every=0", "eval.batches=1",
];
const DP2 = ["parallel.dp=2", "parallel.zero=1"];

function cli(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 240_000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}
function run(args: string[]): string {
  const r = cli(args);
  assert.equal(r.status, 0, `${args.join(" ")}\n${r.out}`);
  return r.out;
}
function train(dir: string, steps: number, layout: string[], backend = "threads", resume = false): void {
  const args = ["train", ...COMMON, `train.out_dir=${dir}`, `train.steps=${steps}`, ...layout, ...(resume ? ["--resume"] : [])];
  const dp = Number(layout.find((a) => a.startsWith("parallel.dp="))?.split("=")[1] ?? 1);
  run(dp > 1 ? ["launch", "--nproc", String(dp), "--backend", backend, "--timeout", "200", "--", ...args] : args);
}
function losses(dir: string): number[] {
  return readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).loss as number);
}
function close(a: number[], b: number[], what: string): void {
  assert.equal(a.length, b.length, `${what}: steps`);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 1e-5 * Math.abs(b[i]!), `${what} step ${i + 1}: ${x} vs ${b[i]}`));
}
/** A copy of a run directory under another name (the saved config names its out_dir: updated). */
function copyRun(src: string, dst: string): void {
  cpSync(src, dst, { recursive: true });
  for (const d of readdirSync(path.join(dst, "checkpoints")).filter((f) => f.startsWith("step-"))) {
    const f = path.join(dst, "checkpoints", d, "trainer_state.json");
    const st = JSON.parse(readFileSync(f, "utf8"));
    st.config.train.out_dir = dst;
    writeFileSync(f, JSON.stringify(st));
  }
}
const ck = (dir: string, step: number) => path.join(dir, "checkpoints", `step-${String(step).padStart(6, "0")}`);

// the uninterrupted references, shared by the tests below
const one = path.join(base, "one"), two = path.join(base, "two");
let refs: { one: number[]; two: number[] } | null = null;
function references(): { one: number[]; two: number[] } {
  if (!refs) {
    train(one, 8, []);
    train(two, 8, DP2);
    refs = { one: losses(one), two: losses(two) };
  }
  return refs;
}

test("a dp=2 ZeRO-1 checkpoint is sharded, resumes bit-exactly at dp=2 and reshards to dp=1", () => {
  const R = references();
  const a = path.join(base, "a");
  train(a, 4, DP2);
  const dir = ck(a, 4);
  const files = readdirSync(dir).sort();
  assert.deepEqual(files, [
    "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
    "optim-00001-of-00002.safetensors", "optim-00002-of-00002.safetensors", "tokenizer.json", "trainer_state.json",
  ]);
  const st = JSON.parse(readFileSync(path.join(dir, "trainer_state.json"), "utf8"));
  assert.equal(st.shards.layout.ranks, 2);
  assert.equal(st.shards.optim[0].lo, 0);
  assert.equal(st.shards.optim[0].hi, st.shards.optim[1].lo);
  assert.equal(st.shards.optim[1].hi, st.shards.params);
  assert.ok(!readdirSync(path.join(a, "checkpoints")).some((f) => f.startsWith(".")), "no temp folder left");

  // reshard: the same checkpoint continued by one rank
  const b = path.join(base, "b");
  copyRun(a, b);
  train(b, 8, ["parallel.dp=1", "parallel.zero=0"], "threads", true);
  close(losses(b), R.one, "dp=2 zero=1 → dp=1");

  // same layout: bit for bit the uninterrupted dp=2 run
  train(a, 8, DP2, "threads", true);
  assert.deepEqual(losses(a), R.two, "dp=2 zero=1 resumed at dp=2 zero=1");
});

test("a one-rank (gathered) checkpoint resumes at dp=2 ZeRO-1", () => {
  const R = references();
  const c = path.join(base, "c");
  train(c, 4, []);
  assert.ok(existsSync(path.join(ck(c, 4), "trainer_state.safetensors")), "one rank writes the gathered format");
  train(c, 8, DP2, "threads", true);
  close(losses(c), R.one, "dp=1 → dp=2 zero=1");
  // …and the checkpoint it writes at the end is sharded
  assert.ok(existsSync(path.join(ck(c, 8), "optim-00002-of-00002.safetensors")));
});

test("moe inspect, moe export and the HF loader read a sharded checkpoint as one model", () => {
  references();
  const be = createBackend({ name: "ref" });
  const sharded = loadHfWeights(ck(two, 8), be).weights.data, single = loadHfWeights(ck(one, 8), be).weights.data;
  assert.equal(sharded.length, single.length);
  let worst = 0;
  for (let i = 0; i < single.length; i++) worst = Math.max(worst, Math.abs(sharded[i]! - single[i]!));
  assert.ok(worst < 1e-4, `dp=2 weights vs one-rank weights after 8 steps: max |Δ| ${worst}`);
  const info = JSON.parse(run(["inspect", two, "--json"]).trim().split("\n").find((l) => l.startsWith("{"))!);
  const ref = JSON.parse(run(["inspect", one, "--json"]).trim().split("\n").find((l) => l.startsWith("{"))!);
  assert.equal(info.totalParams, ref.totalParams);
  assert.equal(info.tensors, ref.tensors);
  assert.equal(info.tensorBytes, ref.tensorBytes);
  const modelBytes = readdirSync(ck(two, 8)).filter((f) => f.startsWith("model-")).reduce((s, f) => s + statSync(path.join(ck(two, 8), f)).size, 0);
  assert.equal(info.fileBytes, modelBytes, "inspect counts the model files, not the optimizer shards");
  const gguf = path.join(base, "two.gguf");
  run(["export", two, "--format", "gguf", "--dtype", "f32", "--out", gguf]);
  assert.ok(statSync(gguf).size > 4 * single.length);
});

test("a sharded checkpoint missing a shard is refused, naming the file", () => {
  references();
  const d = path.join(base, "d");
  copyRun(two, d);
  rmSync(path.join(ck(d, 8), "optim-00002-of-00002.safetensors"));
  const r = cli(["train", ...COMMON, `train.out_dir=${d}`, "train.steps=10", "--resume"]);
  assert.notEqual(r.status, 0);
  assert.match(r.out, /optim-00002-of-00002\.safetensors/);
});

test("MPI: ranks with their own pids write one sharded checkpoint; it resumes bit-exactly", (t) => {
  if (!mpiAvailable() || spawnSync("mpirun", ["--version"]).error) {
    t.skip("Open MPI binding or mpirun not available");
    return;
  }
  const R = references();
  const m = path.join(base, "mpi");
  train(m, 4, DP2, "mpi");
  assert.ok(existsSync(path.join(ck(m, 4), "optim-00002-of-00002.safetensors")));
  assert.ok(!readdirSync(path.join(m, "checkpoints")).some((f) => f.startsWith(".")), "no temp folder left");
  train(m, 8, DP2, "mpi", true);
  // two ranks: a + b is the same float either way, so MPI and threads agree bit for bit
  assert.deepEqual(losses(m), R.two, "mpi dp=2 zero=1 resumed");
});

test("loadOptimRange assembles any arena range from shards of another layout (in process)", async () => {
  const { writeSafetensors } = await import("../src/io/safetensors.js");
  const { loadOptimRange, modelShardPlan, zeroRange } = await import("../src/train/shard-checkpoint.js");
  const size = 1001, dir = path.join(base, "unit");
  mkdirSync(dir, { recursive: true });
  const m = Float32Array.from({ length: size }, (_, i) => i * 0.5), v = Float32Array.from({ length: size }, (_, i) => 1000 - i);
  // written by 3 ranks (ZeRO-1 ranges), read back at 1, 2 and 4 ranks
  const optim = [0, 1, 2].map((r) => {
    const { lo, hi } = zeroRange(size, 3, r), file = `optim-0000${r + 1}-of-00003.safetensors`;
    writeSafetensors(path.join(dir, file), { "optim.m": { dtype: "F32", shape: [hi - lo], data: m.slice(lo, hi) }, "optim.v": { dtype: "F32", shape: [hi - lo], data: v.slice(lo, hi) } });
    return { file, lo, hi };
  });
  writeFileSync(path.join(dir, "trainer_state.json"), JSON.stringify({ version: 1, step: 5, optimStep: 5, shards: { version: 1, layout: { ranks: 3, zero: 1 }, params: size, optim, model: [] } }));
  for (const dp of [1, 2, 4]) {
    for (let r = 0; r < dp; r++) {
      const { lo, hi } = zeroRange(size, dp, r);
      const st = { m: new Float32Array(hi - lo), v: new Float32Array(hi - lo), step: 0 };
      loadOptimRange(dir, st, lo, hi, size);
      assert.deepEqual(st.m, m.slice(lo, hi), `dp=${dp} rank ${r} m`);
      assert.deepEqual(st.v, v.slice(lo, hi), `dp=${dp} rank ${r} v`);
      assert.equal(st.step, 5);
    }
  }
  assert.throws(() => loadOptimRange(dir, { m: new Float32Array(size + 1), v: new Float32Array(size + 1), step: 0 }, 0, size + 1, size + 1), /1001 entries, the model has 1002/);
  // the model split: every tensor once, contiguous, balanced by bytes
  const slots = [10, 10, 400, 10, 300, 300, 10].map((n, i) => ({ name: `t${i}`, size: n }));
  const plan = modelShardPlan(slots, 2);
  assert.deepEqual(plan.flat(), [0, 1, 2, 3, 4, 5, 6]);
  assert.deepEqual(plan, [[0, 1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(modelShardPlan(slots.slice(0, 1), 3).map((p) => p.length), [0, 1, 0]);
});
