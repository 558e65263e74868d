// `parallel.plan=auto`: two launched ranks train with the layout the planner picked (logged with
// its reasons) and give the single-rank losses of the same global batch; the chosen layout is the
// planner's best executable one (test/plan.test.ts checks that choice against evaluateLayout).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { losses, tinyCorpus } from "./train-cli-util.js";

const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), "dist", "src", "cli", "main.js");
const { base, common } = tinyCorpus("moe-plan-auto-");
const COMMON = common({ grad_accum: 4, steps: 6 });

function run(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 240_000 });
  assert.equal(r.status, 0, `${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
  return r.stdout + r.stderr;
}


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
