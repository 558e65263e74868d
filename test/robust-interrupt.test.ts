// Interrupts and the run directory: SIGINT/SIGTERM to a real `moe train` child finish the step and
// save a checkpoint; a second signal exits at once; one writer per run directory (lock with pid,
// stale locks and temp folders recovered); a fresh run refuses an old one unless --resume or
// --overwrite; metrics.jsonl is cut back to the resumed step.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, existsSync, readFileSync, writeFileSync, mkdirSync, readdirSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { latestCheckpoint } from "../src/train/checkpoints.js";
import { corpus, tinyArgs, start, cli, waitFor, metricSteps } from "./robust-util.js";

const data = corpus();
const base = mkdtempSync(path.join(tmpdir(), "moe-robust-int-"));
const stepOf = (ck: string | null) => Number(/step-(\d+)/.exec(ck ?? "")?.[1] ?? NaN);
const deadPid = () => spawnSync(process.execPath, ["-e", "0"]).pid!;

for (const sig of ["SIGINT", "SIGTERM"] as const) {
  test(`${sig} to moe train finishes the step, saves a checkpoint and exits 0; a second writer is refused meanwhile`, async () => {
    const dir = path.join(base, sig);
    const run = start(["train", ...tinyArgs(base, sig, data, ["train.steps=100000", "checkpoint.every=0"])]);
    try {
    await waitFor(() => metricSteps(dir).length >= 2, 60000, "two steps");
    // the lock names the running pid; a second train into the same directory is refused
    assert.equal(Number.parseInt(readFileSync(path.join(dir, "train.lock"), "utf8"), 10), run.p.pid);
    const second = await cli(["train", ...tinyArgs(base, sig, data)]);
    assert.equal(second.code, 1);
    assert.match(second.err, new RegExp(`in use by another moe train \\(pid ${run.p.pid}`));
    } finally {
      run.p.kill(sig);
    }
    const r = await run.done;
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, new RegExp(`${sig}: finishing step`));
    const ck = latestCheckpoint(dir);
    assert.ok(ck, "checkpoint saved");
    const steps = metricSteps(dir);
    assert.equal(stepOf(ck), steps[steps.length - 1], "the checkpoint is at the last completed step");
    assert.ok(!existsSync(path.join(dir, "train.lock")), "lock released");
  });
}

test("a second SIGINT exits at once (killed by it: 130 in a shell) while the first one's checkpoint and evaluation run", async () => {
  const dir = path.join(base, "twice");
  // a long final evaluation: the second signal lands in it
  // a long final evaluation (half of a larger corpus held out, every window of it): the second signal lands in it
  const run = start(["train", ...tinyArgs(base, "twice", corpus(400), ["train.steps=100000", "checkpoint.every=0", "eval.batches=100000", "data.val_fraction=0.5", "train.seq_len=64", "train.batch_size=8", "model.hidden_size=256", "model.num_layers=6"])]);
  let err = "";
  run.p.stderr!.on("data", (d) => (err += d));
  try {
    await waitFor(() => metricSteps(dir).length >= 1, 60000, "a step");
    run.p.kill("SIGINT");
    await waitFor(() => /SIGINT: finishing step/.test(err), 30000, "the first signal's message");
  } finally {
    run.p.kill("SIGINT");
  }
  const r = await run.done;
  assert.ok(r.signal === "SIGINT" || r.code === 130, `code ${r.code} signal ${r.signal}: ${r.err}`);
  assert.doesNotMatch(r.out, /^done:/m, "the run did not finish its final evaluation");
});

test("stale lock and temp folders are recovered; old runs need --resume or --overwrite; metrics cut back on resume", async () => {
  const name = "stale";
  const dir = path.join(base, name);
  const first = await cli(["train", ...tinyArgs(base, name, data, ["train.steps=4"])]);
  assert.equal(first.code, 0, first.err);
  assert.deepEqual(metricSteps(dir), [1, 2, 3, 4]);
  // fresh run into an old run: refused, naming both ways out
  const fresh = await cli(["train", ...tinyArgs(base, name, data, ["train.steps=4"])]);
  assert.equal(fresh.code, 1);
  assert.match(fresh.err, /already holds a run; pass --resume to continue it, --overwrite to replace it/);
  // a killed writer: its lock (dead pid), a half-written checkpoint folder, metrics past the checkpoint
  const dead = deadPid();
  writeFileSync(path.join(dir, "train.lock"), `${dead}\n`);
  const tmp = path.join(dir, "checkpoints", `.step-000005.tmp-${dead}`);
  mkdirSync(tmp);
  writeFileSync(path.join(tmp, "model.safetensors"), "partial");
  appendFileSync(path.join(dir, "metrics.jsonl"), JSON.stringify({ step: 5 }) + "\n" + JSON.stringify({ step: 6 }) + "\n{\"step\": 7, torn");
  const resumed = await cli(["train", ...tinyArgs(base, name, data, ["train.steps=6", "--resume"])]);
  assert.equal(resumed.code, 0, resumed.err);
  assert.match(resumed.out, /removing a stale lock .*not running/);
  assert.match(resumed.out, /removed a stale temp checkpoints\/\.step-000005\.tmp-/);
  assert.deepEqual(metricSteps(dir), [1, 2, 3, 4, 5, 6], "no duplicate or stale step");
  assert.deepEqual(readdirSync(path.join(dir, "checkpoints")).filter((d) => d.startsWith(".")), []);
  // --overwrite: the old run is replaced, metrics start again
  const over = await cli(["train", ...tinyArgs(base, name, data, ["train.steps=2", "--overwrite"])]);
  assert.equal(over.code, 0, over.err);
  assert.deepEqual(metricSteps(dir), [1, 2]);
  assert.equal(stepOf(latestCheckpoint(dir)), 2);
  // sibling: --resume with --overwrite is a contradiction
  const both = await cli(["train", ...tinyArgs(base, name, data, ["--resume", "--overwrite"])]);
  assert.equal(both.code, 1);
  assert.match(both.err, /--resume and --overwrite contradict/);
});
