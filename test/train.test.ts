// The trainer: loss goes down, runs are deterministic, resume continues bit for bit,
// checkpoints survive a kill, NaNs are skipped then stop the run, config errors are clear.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, existsSync, readdirSync, mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { loadTrainConfig, TrainConfigError, type TrainConfig } from "../src/train/config.js";
import { Trainer, TrainingError } from "../src/train/trainer.js";
import { latestCheckpoint } from "../src/train/checkpoints.js";
import { loadHfModel } from "../src/model/checkpoint.js";
import { createBackend } from "../src/backend/index.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const CLI = path.join(ROOT, "dist", "src", "cli", "main.js");

/** A small corpus of 40 short documents with learnable structure. */
function corpus(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-corpus-"));
  const words = ["the whale", "the sea", "a ship", "the captain", "a harpoon", "the crew", "white", "grey", "sails", "waits"];
  for (let d = 0; d < 40; d++) {
    const lines: string[] = [];
    for (let s = 0; s < 12; s++) lines.push(`${words[(d + s) % 10]} ${words[(d * 3 + s * 7) % 10]} and ${words[(s * 5 + 1) % 10]}.`);
    writeFileSync(path.join(dir, `doc${String(d).padStart(2, "0")}.txt`), lines.join(" ") + "\n");
  }
  return dir;
}

function tinyConfig(outDir: string, data: string, extra: string[] = []): TrainConfig {
  return loadTrainConfig(null, [
    `train.out_dir=${outDir}`, `data.corpus=${data}`, `data.cache_dir=${path.join(outDir, "..", "cache")}`, "data.vocab_size=300",
    "model.preset=tiny-mixtral", "train.batch_size=4", "train.seq_len=32", "train.steps=30", "optim.lr=1e-2", "optim.warmup_steps=3",
    "data.val_fraction=0.1", "eval.batches=2", "log.progress=false", ...extra,
  ]);
}

const silent = { log: () => {} };

test("training lowers the loss; two runs with the same seed are bit-identical", () => {
  const data = corpus();
  const base = mkdtempSync(path.join(tmpdir(), "moe-run-"));
  const losses: number[][] = [];
  for (const run of ["a", "b"]) {
    const t = Trainer.create(tinyConfig(path.join(base, run), data), { resume: false, ...silent });
    const ls: number[] = [];
    for (let i = 0; i < 30; i++) ls.push(t.trainStep().ce);
    losses.push(ls);
  }
  assert.deepEqual(losses[0], losses[1]);
  const first = losses[0]![0]!, last = losses[0]!.slice(-5).reduce((a, b) => a + b, 0) / 5;
  assert.ok(last < first - 1.0, `loss ${first} → ${last}`);
});

test("resume continues the uninterrupted run's loss sequence bit for bit (adaptive α, SparseMixer noise, grad accumulation)", () => {
  const data = corpus();
  const base = mkdtempSync(path.join(tmpdir(), "moe-resume-"));
  const extra = ["model.router=sparsemixer", "model.sparsemixer_eps=0.3", "train.grad_accum=2", "train.steps=16"];
  const full = Trainer.create(tinyConfig(path.join(base, "full"), data, extra), { resume: false, ...silent });
  const want: number[] = [];
  for (let i = 0; i < 16; i++) want.push(full.trainStep().loss);
  const part = Trainer.create(tinyConfig(path.join(base, "part"), data, extra), { resume: false, ...silent });
  const got: number[] = [];
  for (let i = 0; i < 7; i++) got.push(part.trainStep().loss);
  part.save();
  const resumed = Trainer.create(tinyConfig(path.join(base, "part"), data, extra), { resume: true, ...silent });
  assert.equal(resumed.step, 7);
  for (let i = 7; i < 16; i++) got.push(resumed.trainStep().loss);
  assert.deepEqual(got, want);
});

test("a run directory is never overwritten; resume needs a checkpoint and the same config", () => {
  const data = corpus();
  const out = path.join(mkdtempSync(path.join(tmpdir(), "moe-guard-")), "r");
  assert.throws(() => Trainer.create(tinyConfig(out, data), { resume: true, ...silent }), /has no checkpoint to resume from/);
  const t = Trainer.create(tinyConfig(out, data), { resume: false, ...silent });
  t.trainStep();
  t.save();
  assert.throws(() => Trainer.create(tinyConfig(out, data), { resume: false, ...silent }), /already holds a run; pass --resume/);
  assert.throws(() => Trainer.create(tinyConfig(out, data, ["optim.lr=5e-3"]), { resume: true, ...silent }), /config differs from the saved run in optim.lr/);
});

test("non-finite steps are skipped and reported; too many in a row stop the run, the last checkpoint stays loadable", () => {
  const data = corpus();
  const out = path.join(mkdtempSync(path.join(tmpdir(), "moe-nan-")), "r");
  const t = Trainer.create(tinyConfig(out, data, ["train.nan_tolerance=2"]), { resume: false, ...silent });
  t.trainStep();
  t.trainStep();
  const ck = t.save();
  const good = Float32Array.from(t.model.params);
  t.model.params[5] = NaN;
  const r1 = t.trainStep();
  assert.equal(r1.skipped, true);
  assert.ok(!Number.isFinite(r1.loss));
  // a skipped step leaves every other parameter untouched (no optimizer update)
  for (let i = 0; i < good.length; i++) if (i !== 5) assert.equal(t.model.params[i], good[i]);
  t.trainStep();
  assert.throws(() => t.trainStep(), (e: Error) => e instanceof TrainingError && /3 consecutive non-finite steps/.test(e.message) && e.message.includes(ck));
  const { model } = loadHfModel(latestCheckpoint(out)!, createBackend({ name: "ref" }), { B: 1, T: 4 });
  assert.ok(model.params.every((x) => Number.isFinite(x)));
});

test("config errors name the key and suggest the closest valid one", () => {
  assert.throws(() => loadTrainConfig(null, ["optim.lrr=3e-4"]), (e: Error) => e instanceof TrainConfigError && /unknown key 'optim.lrr' \(did you mean 'optim.lr'\?\)/.test(e.message));
  assert.throws(() => loadTrainConfig(null, ["model.num_expert=8"]), /did you mean 'model.num_experts'/);
  assert.throws(() => loadTrainConfig(null, ["optim.lr=fast"]), /optim.lr must be a number, got "fast"/);
  assert.throws(() => loadTrainConfig(null, ["model.num_experts=2.5"]), /model.num_experts must be an integer/);
  assert.throws(() => loadTrainConfig(null, ["model.router=softmax"]), /model.router must be one of topk, skywork, sparsemixer/);
  assert.throws(() => loadTrainConfig(null, ["lr"]), /must look like section.key=value/);
  const dir = mkdtempSync(path.join(tmpdir(), "moe-yaml-"));
  writeFileSync(path.join(dir, "a.yaml"), "optim:\n  lr: 1e-3\nmodel:\n  num_experts: 4\n");
  const c = loadTrainConfig(path.join(dir, "a.yaml"), ["optim.lr=2e-3"]);
  assert.equal(c.optim.lr, 2e-3);
  assert.equal(c.model.num_experts, 4);
  writeFileSync(path.join(dir, "b.yaml"), "optimizer:\n  lr: 1e-3\n");
  assert.throws(() => loadTrainConfig(path.join(dir, "b.yaml"), []), /unknown key 'optimizer.lr' \(did you mean 'optim.lr'\?\)/);
  writeFileSync(path.join(dir, "c.yaml"), "optim: [1, 2\n");
  assert.throws(() => loadTrainConfig(path.join(dir, "c.yaml"), []), /not valid YAML/);
});

/** Runs the CLI; resolves with {code, out, err}. */
function cli(args: string[], opts: { killAfterMs?: number; cwd?: string } = {}): Promise<{ code: number | null; signal: string | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? ROOT, env: { ...process.env, MOE_NUM_THREADS: "1" } });
    let out = "", err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    let timer: NodeJS.Timeout | undefined;
    if (opts.killAfterMs) timer = setTimeout(() => p.kill("SIGKILL"), opts.killAfterMs);
    p.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, out, err });
    });
  });
}

test("a run killed while checkpointing every step always leaves a loadable latest checkpoint, and resumes", async () => {
  const data = corpus();
  const base = mkdtempSync(path.join(tmpdir(), "moe-kill-"));
  const out = path.join(base, "r");
  const args = ["train", `train.out_dir=${out}`, `data.corpus=${data}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=300", "data.val_fraction=0.1",
    "model.preset=tiny-mixtral", "train.batch_size=2", "train.seq_len=16", "train.steps=100000", "checkpoint.every=1", "checkpoint.keep_last=2",
    "eval.every=0", "sample.every=0", "log.progress=false"];
  // 1. start fresh runs (killed) until one has completed a checkpoint (tokenizer and shards first)
  for (let attempt = 1; !latestCheckpoint(out) && attempt <= 6; attempt++) {
    const r = await cli(args, { killAfterMs: 1500 * attempt });
    assert.equal(r.signal, "SIGKILL", r.err);
  }
  // 2. resume and kill at several points: the latest checkpoint always loads, at most keep_last (+1 being written) remain
  for (const ms of [900, 1300, 1700]) {
    const r = await cli([...args, "--resume"], { killAfterMs: ms });
    assert.equal(r.signal, "SIGKILL", r.err);
    const ck = latestCheckpoint(out);
    assert.ok(ck, "a checkpoint exists");
    const { model } = loadHfModel(ck, createBackend({ name: "ref" }), { B: 1, T: 4 });
    assert.ok(model.params.length > 0 && model.params.every((x) => Number.isFinite(x)));
    const names = readdirSync(path.join(out, "checkpoints")).filter((d) => d.startsWith("step-"));
    assert.ok(names.length <= 3, `kept ${names.join(",")}`);
  }
  assert.ok(latestCheckpoint(out), "some checkpoint was completed");
  const before = Number(/step-(\d+)/.exec(latestCheckpoint(out)!)![1]);
  const r = await cli([...args.map((a) => (a === "train.steps=100000" ? `train.steps=${before + 2}` : a)), "--resume"]);
  assert.equal(r.code, 0, `stderr: ${r.err}\nstdout: ${r.out}`);
  assert.match(r.out, new RegExp(`resumed from .*step-0*${before}`));
});

test("CLI end to end: train (dense and MoE), generate, eval, inspect, upcycle", async () => {
  const data = corpus();
  const base = mkdtempSync(path.join(tmpdir(), "moe-cli-"));
  const common = [`data.corpus=${data}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=300", "data.val_fraction=0.1", "model.preset=tiny-mixtral",
    "train.batch_size=4", "train.seq_len=32", "train.steps=12", "eval.every=6", "sample.every=6", "sample.tokens=8", "checkpoint.every=6", "log.progress=false"];
  const moe = await cli(["train", `train.out_dir=${path.join(base, "moe")}`, ...common]);
  assert.equal(moe.code, 0, moe.err + moe.out);
  assert.match(moe.out, /unigram baseline \(val\): \d+\.\d+/);
  assert.match(moe.out, /validation loss \d+\.\d+ nats\/token .* vs unigram baseline/);
  const gen = await cli(["generate", path.join(base, "moe"), "--prompt", "the whale", "--max-tokens", "12", "--temperature", "0"]);
  assert.equal(gen.code, 0, gen.err);
  assert.ok(gen.out.startsWith("the whale"));
  const gen2 = await cli(["generate", path.join(base, "moe"), "--prompt", "the whale", "--max-tokens", "12", "--temperature", "0"]);
  assert.equal(gen2.out, gen.out, "greedy generation is deterministic");
  const ev = await cli(["eval", path.join(base, "moe"), "--data", data, "--batches", "2", "--batch-size", "2", "--seq-len", "16", "--cache-dir", path.join(base, "cache")]);
  assert.equal(ev.code, 0, ev.err);
  const evj = JSON.parse(ev.out);
  assert.ok(evj.loss > 0 && evj.loss < Math.log(300), `eval loss ${evj.loss}`);
  const ins = await cli(["inspect", path.join(base, "moe"), "--json"]);
  assert.equal(ins.code, 0, ins.err);
  const insj = JSON.parse(ins.out);
  assert.equal(insj.family, "skywork");
  assert.equal(insj.experts, 4);
  assert.equal(insj.tensors, insj.expectedTensors);
  // dense → upcycle → the upcycled model's logits match the dense one's (checked in upcycle.test); here the CLI path
  const dense = await cli(["train", `train.out_dir=${path.join(base, "dense")}`, "model.family=llama", ...common]);
  assert.equal(dense.code, 0, dense.err + dense.out);
  const up = await cli(["upcycle", "--from", path.join(base, "dense"), "--experts", "4", "--top-k", "2", "--out", path.join(base, "up")]);
  assert.equal(up.code, 0, up.err);
  assert.match(up.out, /expert similarity 1\.000 1\.000/);
  const upIns = JSON.parse((await cli(["inspect", path.join(base, "up"), "--json"])).out);
  assert.equal(upIns.family, "mixtral");
  assert.equal(upIns.experts, 4);
  // fine-tuning takes the checkpoint's own tokenizer (the upcycled dir has the dense run's)
  const ft = await cli(["train", `train.out_dir=${path.join(base, "ft")}`, `model.from=${path.join(base, "up")}`, "model.router=topk", ...common]);
  assert.equal(ft.code, 0, ft.err + ft.out);
  assert.match(ft.out, /tokenizer: .*up\/tokenizer.json \(from model.from\)/);
  assert.equal(readFileSync(path.join(base, "ft", "tokenizer.json"), "utf8"), readFileSync(path.join(base, "dense", "tokenizer.json"), "utf8"));
  // bad input is refused clearly
  const bad = await cli(["generate", path.join(base, "nothing-here"), "--prompt", "x"]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.err, /neither a model directory/);
  const badFlag = await cli(["generate", path.join(base, "moe"), "--promt", "x"]);
  assert.match(badFlag.err, /unknown option --promt \(did you mean --prompt\?\)/);
  assert.ok(existsSync(path.join(base, "moe", "metrics.jsonl")));
  const lines = readFileSync(path.join(base, "moe", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  assert.equal(lines.length, 12);
  assert.equal(lines[0].layers.length, 2);
  assert.equal(lines[0].layers[0].tokensPerExpert.length, 4);
  void mkdirSync;
});
