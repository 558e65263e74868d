// The kill loop: a real `moe train` child is killed with SIGKILL again and again (during start-up,
// between steps, and the moment a checkpoint temp folder appears, i.e. during a checkpoint
// write) and restarted with --resume. After every kill the latest checkpoint loads and
// metrics.jsonl holds each step once, in order (1..n); after every restart the temp files and
// folders of the killed writers are gone; the final run resumes from the latest checkpoint, ends
// at its step count, and leaves no temp file anywhere in the run or cache directory.
// Independent reference: the file system itself (directory listings, the metrics file parsed
// line by line) and the checkpoint loader.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, existsSync, watch, statSync, writeFileSync, unlinkSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { tmpdir } from "node:os";
import path from "node:path";
import { latestCheckpoint } from "../src/train/checkpoints.js";
import { loadHfModel } from "../src/model/checkpoint.js";
import { createBackend } from "../src/backend/index.js";
import { corpus, tinyArgs, start, cli, type CliResult } from "./robust-util.js";

const base = mkdtempSync(path.join(tmpdir(), "moe-robust-kill-"));
const data = corpus();
const out = path.join(base, "r");
const cache = path.join(base, "cache");
const args = (extra: string[]) => ["train", ...tinyArgs(base, "r", data, ["checkpoint.every=1", "checkpoint.keep_last=2", ...extra])];
const deadPid = () => spawnSync(process.execPath, ["-e", "0"]).pid!;
const stepOf = (ck: string | null) => Number(/step-(\d+)/.exec(ck ?? "")?.[1] ?? NaN);

/** Every temp file or folder (`….tmp-PID…`) under `dir`, recursively (relative paths). */
function temps(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const found: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d)) {
      const p = path.join(d, e);
      if (/\.tmp-\d+/.test(e)) found.push(path.relative(dir, p));
      else if (statSync(p, { throwIfNoEntry: false })?.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return found;
}

/** metrics.jsonl steps; a torn last line (killed mid-append) is allowed and skipped, any other bad line fails. */
function steps(): number[] {
  const f = path.join(out, "metrics.jsonl");
  if (!existsSync(f)) return [];
  const text = readFileSync(f, "utf8");
  const lines = text.split("\n");
  const last = lines.pop()!; // after the final "\n": "" unless the last write was torn
  if (last !== "") {
    try {
      JSON.parse(last);
      assert.fail(`metrics.jsonl: a complete last record without a newline: ${last}`);
    } catch {
      /* torn by the kill */
    }
  }
  return lines.map((l) => (JSON.parse(l) as { step: number }).step);
}

const consecutive = (s: number[]) => s.every((x, i) => x === i + 1);

/** Starts a resumed run and SIGKILLs it when `when` says so (or after 20 s). */
async function killed(when: "ckpt-temp" | "lock" | { afterMs: number } | { afterSteps: number; thenMs: number }): Promise<{ r: CliResult; sawTemp: boolean }> {
  const run = start(args(["train.steps=100000", "--resume"]));
  let sawTemp = false;
  const kill = () => run.p.kill("SIGKILL");
  const guard = setTimeout(kill, 20000);
  let watcher: ReturnType<typeof watch> | null = null;
  let poll: NodeJS.Timeout | null = null;
  if (when === "ckpt-temp") {
    // the moment a checkpoint temp folder appears: the write is under way
    watcher = watch(path.join(out, "checkpoints"), (_e, name) => {
      if (name && /^\.step-\d+\.tmp-/.test(String(name)) && String(name).endsWith(`-${run.p.pid}`)) {
        sawTemp = true;
        kill();
      }
    });
  } else if (when === "lock") {
    // the moment the run takes its lock: the kill lands in its set-up (temp cleaning, metrics truncation, data, model)
    watcher = watch(out, (_e, name) => {
      if (String(name) === "train.lock") kill();
    });
  } else if ("afterMs" in when) setTimeout(kill, when.afterMs);
  else {
    const s0 = steps().length;
    poll = setInterval(() => {
      try {
        if (steps().length >= s0 + when.afterSteps) {
          clearInterval(poll!);
          poll = null;
          setTimeout(kill, when.thenMs);
        }
      } catch {
        /* a torn line being written: look again */
      }
    }, 5);
  }
  const r = await run.done;
  clearTimeout(guard);
  watcher?.close();
  if (poll) clearInterval(poll);
  return { r, sawTemp };
}

test("kill -9 loop (start-up, between steps, during checkpoint writes) + --resume: no temp survives, no duplicate or stale metrics step, the final run resumes", { timeout: 240000 }, async (t) => {
  const t0 = Date.now();
  // a finished short run: tokenizer, shards and a first checkpoint
  const first = await cli(args(["train.steps=2"]));
  assert.equal(first.code, 0, first.err);
  assert.deepEqual(steps(), [1, 2]);
  const plan: Parameters<typeof killed>[0][] = [
    "ckpt-temp", { afterMs: 250 }, { afterSteps: 2, thenMs: 0 }, "lock", "ckpt-temp", { afterSteps: 1, thenMs: 3 }, "lock", "ckpt-temp",
  ];
  let tempKills = 0, leftTemps = 0;
  for (const [i, when] of plan.entries()) {
    const before = temps(out);
    const { r, sawTemp } = await killed(when);
    const what = `kill ${i} (${JSON.stringify(when)})`;
    assert.equal(r.signal, "SIGKILL", `${what}: ${r.err}`);
    // a restart that got past its set-up removed every temp its killed predecessors left
    if (/resumed from/.test(r.out)) for (const t of before) assert.ok(!existsSync(path.join(out, t)), `${what}: stale temp ${t} survived the restart`);
    const now = temps(out);
    if (sawTemp) tempKills++;
    t.diagnostic(`${what}: at ${((Date.now() - t0) / 1e3).toFixed(1)} s, left ${now.join(" ") || "no temp"}, ${steps().length} metrics steps`);
    leftTemps += now.length;
    // the latest checkpoint always loads; metrics hold each step once, in order, none past the last step reached
    const ck = latestCheckpoint(out);
    assert.ok(ck, `${what}: a checkpoint exists`);
    const { model } = loadHfModel(ck, createBackend({ name: "ref" }), { B: 1, T: 4 });
    assert.ok(model.params.every((x) => Number.isFinite(x)), `${what}: checkpoint finite`);
    const s = steps();
    assert.ok(consecutive(s), `${what}: metrics steps ${s.join(",")}`);
    assert.ok(s.length >= stepOf(ck), `${what}: metrics (${s.length}) reach the checkpoint (${stepOf(ck)})`);
    const kept = readdirSync(path.join(out, "checkpoints")).filter((d) => /^step-\d+$/.test(d));
    assert.ok(kept.length <= 3, `${what}: kept ${kept.join(",")}`);
  }
  // the loop did kill checkpoint writes, and those kills left temps for the restarts to clean
  assert.ok(tempKills >= 2, `${tempKills} kills landed during a checkpoint write`);
  assert.ok(leftTemps >= 1, "some kill left a temp folder behind (otherwise the test proves nothing about cleaning)");
  // sibling: temps of dead writers elsewhere (an atomic metrics/config write in the run directory,
  // a tokenizer and a shard write in the data cache) go too; a live writer's temp stays
  const dead = deadPid();
  const shardDir = readdirSync(cache, { withFileTypes: true }).find((e) => e.isDirectory())!.name;
  const planted = [path.join(out, `.metrics.jsonl.tmp-${dead}-1`), path.join(out, `.config.yaml.tmp-${dead}-2`),
    path.join(cache, `.tokenizer-x.json.tmp-${dead}-3`), path.join(cache, shardDir, `.train-000.bin.tmp-${dead}-4`)];
  for (const f of planted) writeFileSync(f, "partial");
  const live = path.join(cache, `.other.json.tmp-${process.pid}-5`);
  writeFileSync(live, "someone else writing");
  // the final run resumes from the latest checkpoint and finishes two steps later
  const at = stepOf(latestCheckpoint(out));
  const fin = await cli(args([`train.steps=${at + 2}`, "--resume"]));
  assert.equal(fin.code, 0, fin.err);
  for (const f of planted) assert.ok(!existsSync(f), `${f} removed`);
  assert.ok(existsSync(live), "a live writer's temp is left alone");
  unlinkSync(live);
  assert.match(fin.out, new RegExp(`resumed from .*step-0*${at}\\b`));
  assert.deepEqual(steps(), Array.from({ length: at + 2 }, (_, i) => i + 1), "metrics: every step once, none stale");
  assert.equal(stepOf(latestCheckpoint(out)), at + 2);
  assert.deepEqual(temps(out), [], "no temp file or folder in the run directory");
  assert.deepEqual(temps(cache), [], "no temp file in the data cache");
  assert.ok(!existsSync(path.join(out, "train.lock")), "lock released");
  t.diagnostic(`the loop took ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
});

test("a resumed run that takes no step keeps its checkpoint as it is (no rewrite: no window where LATEST names nothing)", async () => {
  const at = stepOf(latestCheckpoint(out));
  const model = path.join(latestCheckpoint(out)!, "model.safetensors");
  const ino = statSync(model).ino;
  const r = await cli(args([`train.steps=${at}`, "--resume"]));
  assert.equal(r.code, 0, r.err);
  assert.equal(stepOf(latestCheckpoint(out)), at);
  assert.equal(statSync(model).ino, ino, "the checkpoint was not rewritten");
  // sibling: one more step writes a new checkpoint
  const r2 = await cli(args([`train.steps=${at + 1}`, "--resume"]));
  assert.equal(r2.code, 0, r2.err);
  assert.equal(stepOf(latestCheckpoint(out)), at + 1);
});
