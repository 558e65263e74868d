// `parallel.plan=auto`: two launched ranks train with the layout the planner picked (logged with
// its reasons) and give the single-rank losses of the same global batch; the chosen layout is the
// planner's best executable one (test/plan.test.ts checks that choice against evaluateLayout).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";

const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), "dist", "src", "cli", "main.js");
const base = mkdtempSync(path.join(tmpdir(), "moe-plan-auto-"));
const corpus = path.join(base, "corpus");
mkdirSync(corpus);
for (let d = 0; d < 40; d++) writeFileSync(path.join(corpus, `doc${d}.txt`), Array.from({ length: 10 }, (_, i) => `the whale ${(i + d) % 7} and the sea ${(i * d) % 5}, a ship waits.`).join(" "));
const COMMON = [
  `data.corpus=${corpus}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=300", "data.val_fraction=0.1", "model.preset=tiny-mixtral",
  "train.batch_size=2", "train.seq_len=32", "train.grad_accum=4", "train.steps=6", "train.threads=1", "log.progress=false",
  "eval.every=0", "sample.every=0", "checkpoint.every=0", "eval.batches=1",
];

function run(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 240_000 });
  assert.equal(r.status, 0, `${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
  return r.stdout + r.stderr;
}

const losses = (dir: string) => readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).loss as number);

test("parallel.plan=auto on 2 ranks: a logged layout with reasons, the single-rank losses; a bad value is refused", () => {
  const one = path.join(base, "one"), auto = path.join(base, "auto");
  run(["train", ...COMMON, `train.out_dir=${one}`]);
  const out = run(["launch", "--nproc", "2", "--backend", "threads", "--timeout", "200", "--", "train", ...COMMON, `train.out_dir=${auto}`, "parallel.plan=auto"]);
  assert.match(out, /parallel\.plan=auto on 2 rank\(s\) \(measured [\d.]+ GFLOP\/s per rank\): (dp=\d|dp=1 pp=2)/);
  assert.match(out, /peak memory .* of /);
  const p = (parseYaml(readFileSync(path.join(auto, "config.yaml"), "utf8")) as { parallel: { dp: number; pp: number; ep: number } }).parallel;
  assert.equal(p.dp * p.pp, 2, "the layout uses the launched ranks");
  const a = losses(auto), b = losses(one);
  assert.equal(a.length, b.length);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 1e-5 * Math.abs(b[i]!), `step ${i + 1}: ${x} vs ${b[i]}`));
  const bad = spawnSync(process.execPath, [CLI, "train", ...COMMON, `train.out_dir=${path.join(base, "bad")}`, "parallel.plan=best"], { encoding: "utf8" });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /parallel\.plan must be one of none, auto/);
});
