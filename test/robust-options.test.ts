// Every training option is validated before work starts, naming the key: each case of issue 9
// (negative every/steps/decay/tolerance/minutes/clip/init_std, balance.beta outside [0, 1),
// gate_norm_std 0, expert_size 0, sample temperature/tokens < 0) and a seq_len above a checkpoint's context.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadTrainConfig, TrainConfigError } from "../src/train/config.js";
import { cli, corpus, tinyArgs } from "./robust-util.js";

const cases: [string, RegExp][] = [
  ["checkpoint.every=-1", /checkpoint\.every must be ≥ 0, got -1/],
  ["eval.every=-5", /eval\.every must be ≥ 0/],
  ["optim.warmup_steps=-1", /optim\.warmup_steps must be ≥ 0/],
  ["optim.weight_decay=-0.1", /optim\.weight_decay must be ≥ 0/],
  ["train.nan_tolerance=-2", /train\.nan_tolerance must be ≥ 0/],
  ["train.max_minutes=-1", /train\.max_minutes must be ≥ 0/],
  ["optim.grad_clip=-1", /optim\.grad_clip must be ≥ 0/],
  ["model.init_std=-0.02", /model\.init_std must be ≥ 0/],
  ["balance.beta=1", /balance\.beta must be in \[0, 1\), got 1/],
  ["balance.beta=-0.5", /balance\.beta must be in \[0, 1\)/],
  ["model.gate_norm_std=0", /model\.gate_norm_std must be positive, got 0/],
  ["model.expert_size=0", /model\.expert_size must be positive, got 0/],
  ["sample.temperature=-1", /sample\.temperature must be ≥ 0/],
  ["sample.tokens=-3", /sample\.tokens must be ≥ 0/],
  ["optim.beta2=1.5", /optim\.beta2 must be in \[0, 1\)/],
  ["model.top_k=5", /model\.top_k \(5\) must be at most model\.num_experts \(4\)/],
];

test("every out-of-range option is refused at load, naming the key", () => {
  for (const [o, re] of cases) {
    const extra = o.startsWith("model.top_k") ? ["model.num_experts=4"] : [];
    assert.throws(() => loadTrainConfig(null, [...extra, o]), (e: unknown) => e instanceof TrainConfigError && re.test((e as Error).message), o);
  }
  // the documented defaults and the boundary values pass
  for (const o of ["checkpoint.every=0", "balance.beta=0", "sample.temperature=0", "sample.tokens=0", "optim.grad_clip=0"]) loadTrainConfig(null, [o]);
});

test("the CLI refuses before any work (no run directory), and a seq_len above a checkpoint's context", async () => {
  const base = mkdtempSync(path.join(tmpdir(), "moe-robust-opt-"));
  const data = corpus(20);
  const r = await cli(["train", ...tinyArgs(base, "neg", data, ["sample.temperature=-1"])]);
  assert.equal(r.code, 1);
  assert.match(r.err, /sample\.temperature must be ≥ 0, got -1/);
  assert.ok(!existsSync(path.join(base, "neg")), "nothing was written");
  const ok = await cli(["train", ...tinyArgs(base, "ctx", data, ["train.steps=1"])]);
  assert.equal(ok.code, 0, ok.err);
  const long = await cli(["train", ...tinyArgs(base, "ctx2", data, ["train.steps=1", `model.from=${path.join(base, "ctx")}`, "train.seq_len=4096"])]);
  assert.equal(long.code, 1);
  assert.match(long.err, /train\.seq_len 4096 is above the context of .*max_position_embeddings 512/);
});
