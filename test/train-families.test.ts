// Every family trains from a preset, saves a checkpoint of its own family, and reloads as
// itself with the same logits; routers the family cannot express are refused by name; the
// sigmoid / aux-free-bias router trains end to end and its bias buffer moves and is saved.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadTrainConfig, type TrainConfig } from "../src/train/config.js";
import { Trainer } from "../src/train/trainer.js";
import { chooseFamily, buildRunHfConfig } from "../src/train/model-config.js";
import { loadHfModel, readHfConfig } from "../src/model/checkpoint.js";
import { resolveConfig, FAMILIES } from "../src/model/config.js";
import { createBackend } from "../src/backend/index.js";
import { assertClose } from "./util.js";

function corpus(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-fam-corpus-"));
  const words = ["the whale", "the sea", "a ship", "the captain", "a harpoon", "the crew", "white", "grey", "sails", "waits"];
  for (let d = 0; d < 30; d++) {
    const lines: string[] = [];
    for (let s = 0; s < 12; s++) lines.push(`${words[(d + s) % 10]} ${words[(d * 3 + s * 7) % 10]} and ${words[(s * 5 + 1) % 10]}.`);
    writeFileSync(path.join(dir, `doc${d}.txt`), lines.join(" ") + "\n");
  }
  return dir;
}

function cfgFor(base: string, data: string, extra: string[]): TrainConfig {
  return loadTrainConfig(null, [
    `train.out_dir=${base}`, `data.corpus=${data}`, `data.cache_dir=${path.join(base, "..", "cache")}`, "data.vocab_size=300",
    "model.preset=tiny-mixtral", "train.batch_size=4", "train.seq_len=32", "train.steps=30", "optim.lr=1e-2", "optim.warmup_steps=3",
    "data.val_fraction=0.1", "eval.batches=2", "log.progress=false", ...extra,
  ]);
}

const data = corpus();
const root = mkdtempSync(path.join(tmpdir(), "moe-fam-"));

for (const family of FAMILIES) {
  test(`model.family=${family}: 30 steps lower the loss; the checkpoint reloads as ${family} with the same logits`, () => {
    const out = path.join(root, family);
    const t = Trainer.create(cfgFor(out, data, [`model.family=${family}`]), { resume: false, log: () => {} });
    assert.equal(t.cfg.family, family);
    const ls: number[] = [];
    for (let i = 0; i < 30; i++) ls.push(t.trainStep().ce);
    const first = ls[0]!, last = ls.slice(-5).reduce((a, b) => a + b, 0) / 5;
    assert.ok(last < first - 0.5, `${family}: loss ${first} → ${last}`);
    const dir = t.save();
    const hf = readHfConfig(dir);
    assert.equal(hf.model_type, family);
    // the trainer's own backend: the same GEMM path, so the logits must agree bit for bit
    const { model, cfg } = loadHfModel(dir, t.backend, { B: 4, T: 32 });
    assert.equal(cfg.family, family);
    assert.deepEqual(cfg.moe.router, t.cfg.moe.router, "the router the run trained with");
    const ids = Int32Array.from({ length: 128 }, (_, i) => (i * 37 + 11) % 300);
    model.forward(ids, null, { train: false });
    t.model.forward(ids, null, { train: false });
    assertClose(model.lastLogits(), t.model.lastLogits(), { rtol: 0, atol: 0 }, `${family} logits after reload`);
  });
}

test("model.router=sigmoid_bias trains with aux-free balancing: the bias moves, is saved, and reloads", () => {
  const out = path.join(root, "sigmoid");
  const t = Trainer.create(cfgFor(out, data, ["model.router=sigmoid_bias", "balance.loss=none", "balance.bias_rate=0.01"]), { resume: false, log: () => {} });
  assert.equal(t.cfg.family, "mixtral");
  assert.equal(t.cfg.moe.router.kind, "sigmoid_bias");
  const name = "model.layers.0.block_sparse_moe.gate.e_score_correction_bias";
  const b0 = Float64Array.from(t.model.param(name));
  assert.deepEqual([...b0], [0, 0, 0, 0]);
  const reports = [];
  for (let i = 0; i < 20; i++) reports.push(t.trainStep());
  const b = t.model.param(name);
  // closed form of the controller: b = γ·Σ_steps sign(mean − load); every step moves each entry by ±γ or 0
  for (const v of b) assert.ok(Math.abs(Math.round(v / 0.01) * 0.01 - v) < 1e-6 && Math.abs(v) <= 0.2 + 1e-6, `bias ${v} is a sum of ±γ steps`);
  const load = reports[0]!.layers[0]!.tokensPerExpert;
  const mean = load.reduce((a, x) => a + x, 0) / load.length;
  // the first step's update alone: replay it from the first report
  const t2 = Trainer.create(cfgFor(path.join(root, "sigmoid2"), data, ["model.router=sigmoid_bias", "balance.loss=none", "balance.bias_rate=0.01"]), { resume: false, log: () => {} });
  t2.trainStep();
  assert.deepEqual([...t2.model.param(name)].map((v) => Math.round(v * 1000) / 1000), load.map((x) => 0.01 * Math.sign(mean - x)));
  assert.ok(b.some((v) => v !== 0), "the bias moved");
  const dir = t.save();
  assert.equal(readHfConfig(dir).model_type, "mixtral");
  assert.match(readFileSync(path.join(dir, "config.json"), "utf8"), /"scoring_func": "sigmoid"/);
  const { model } = loadHfModel(dir, createBackend({ name: "native", threads: 1 }), { B: 1, T: 8 });
  assert.deepEqual([...model.param(name)], [...b]);
});

test("family/router choices: defaults, and a router the family cannot express is refused by name", () => {
  assert.deepEqual(chooseFamily({ family: null, router: null }), { family: "skywork", router: "skywork" });
  assert.deepEqual(chooseFamily({ family: null, router: "sparsemixer" }), { family: "phimoe", router: "sparsemixer" });
  assert.deepEqual(chooseFamily({ family: "qwen2_moe", router: null }), { family: "qwen2_moe", router: "topk" });
  assert.throws(() => chooseFamily({ family: "phimoe", router: "topk" }), /model.router=topk is not available for model.family=phimoe \(available: sparsemixer\)/);
  assert.throws(() => chooseFamily({ family: "llama", router: "topk" }), /dense and has no router/);
  assert.throws(() => chooseFamily({ family: "skywork", router: "sigmoid_bias" }), /available: skywork, topk/);
  // a preset's family-specific options are kept where the chosen family has the key
  const c = loadTrainConfig(null, ["model.preset=tiny-grin", "model.family=mixtral", "model.router=topk"]);
  const hf = buildRunHfConfig(c, 300) as unknown as Record<string, unknown>;
  assert.equal(hf.sliding_window, 64, "tiny-grin's window carried into mixtral");
  const c2 = loadTrainConfig(null, ["model.preset=tiny-grin", "model.family=phimoe"]);
  const cfg = resolveConfig(buildRunHfConfig(c2, 300));
  assert.ok(cfg.qkvBias && cfg.lmHeadBias && cfg.slidingWindow === 64 && cfg.norm.kind === "layer", "tiny-grin's biases, window and LayerNorm kept");
});
