// Memory is estimated before it is allocated: absurd layer counts, vocabularies, batch sizes and
// upcycle expert counts are refused at once with the figure and the machine's memory; the weight
// estimate equals 4 bytes × the parameters the allocated model really has; `moe inspect` prints it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { estimateMemory, trainingBytes, availableMemory, checkFits, MemoryLimitError } from "../src/train/memory.js";
import { readFileSync, existsSync } from "node:fs";
import os from "node:os";
import { loadTrainConfig } from "../src/train/config.js";
import { buildRunHfConfig } from "../src/train/model-config.js";
import { resolveConfig } from "../src/model/config.js";
import { MoeModel } from "../src/model/model.js";
import { createBackend } from "../src/backend/index.js";
import { cli, corpus, tinyArgs } from "./robust-util.js";

const base = mkdtempSync(path.join(tmpdir(), "moe-robust-mem-"));
const data = corpus(20);

test("weight estimate = 4 × the allocated model's parameters; training bytes grow with B·T", () => {
  const c = loadTrainConfig(null, ["model.preset=tiny-mixtral"]);
  const cfg = resolveConfig(buildRunHfConfig(c, 300), { kind: "dropless" });
  const model = new MoeModel(cfg, createBackend({ name: "ref" }), { B: 1, T: 4 });
  const e = estimateMemory(cfg);
  assert.equal(e.weights.f32, 4 * model.params.length);
  assert.equal(e.trainingState, 3 * e.weights.f32);
  assert.ok(trainingBytes(cfg, 8, 64) > trainingBytes(cfg, 4, 64));
  assert.equal(e.kvCachePerToken, 4 * 2 * cfg.numLayers * cfg.numKvHeads * cfg.headDim);
});

test("the check uses the memory available now (MemAvailable), not the total", () => {
  const m = availableMemory();
  assert.equal(m.total, os.totalmem());
  if (existsSync("/proc/meminfo") && !existsSync("/sys/fs/cgroup/memory.max")) {
    // independent reading of /proc/meminfo (it moves a little between the two reads)
    const kb = Number(/MemAvailable:\s+(\d+)/.exec(readFileSync("/proc/meminfo", "utf8"))![1]);
    assert.equal(m.source, "MemAvailable");
    assert.ok(Math.abs(m.available - kb * 1024) < 512 * 2 ** 20, `${m.available} vs ${kb} kB`);
  }
  assert.ok(m.available > 0 && m.available <= m.total);
  // between available and total: refused, naming both figures; below available: accepted
  const mem = { available: 6 * 2 ** 30, total: 16 * 2 ** 30, source: "MemAvailable" as const };
  assert.throws(() => checkFits("this run", 10 * 2 ** 30, "weights 10 GiB", undefined, mem),
    (e: unknown) => e instanceof MemoryLimitError && (e as Error).message === "this run needs about 10.0 GiB (weights 10 GiB); this machine has 6.0 GiB of memory available (MemAvailable; 16.0 GiB in all)");
  checkFits("this run", 5 * 2 ** 30, "weights 5 GiB", undefined, mem);
});

test("absurd sizes are refused before allocation, with the figure and the machine's memory", async () => {
  for (const [o, re] of [
    ["model.num_layers=10000000", /this run needs about [\d.]+ [PTEG]iB \(weights .* \+ gradients and AdamW .* \+ activations .*\); this machine has [\d.]+ GiB of memory available \(MemAvailable; [\d.]+ GiB in all\)/],
    ["data.vocab_size=1000000000", /this run needs about [\d.]+ [PTEG]iB/],
    ["train.batch_size=5000000", /activations [\d.]+ [PTEG]iB for batch 5000000×16/],
  ] as const) {
    const t0 = Date.now();
    const r = await cli(["train", ...tinyArgs(base, "big", data, [o])]);
    assert.equal(r.code, 1, `${o}: ${r.err}`);
    assert.match(r.err, re, o);
    // quickly even on a loaded machine (the message itself shows it came from the estimate, not an allocation)
    assert.ok(Date.now() - t0 < 30000, `${o} refused quickly`);
  }
});

test("upcycle --experts 10000000 (tiny dense model; 100000 for a real one) is refused before allocation; inspect prints the estimates", async () => {
  const r = await cli(["train", ...tinyArgs(base, "dense", data, ["model.family=llama", "train.steps=1"])]);
  assert.equal(r.code, 0, r.err);
  const up = await cli(["upcycle", "--from", path.join(base, "dense"), "--experts", "10000000", "--top-k", "2", "--out", path.join(base, "up")]);
  assert.equal(up.code, 1, up.err);
  assert.match(up.err, /moe upcycle --experts 10000000 needs about [\d.]+ [GTP]iB .*; this machine has/);
  const ins = await cli(["inspect", path.join(base, "dense"), "--json"]);
  assert.equal(ins.code, 0, ins.err);
  const j = JSON.parse(ins.out);
  assert.equal(j.memory.weights.f32, 4 * j.totalParams);
  assert.equal(j.memory.trainingState, 12 * j.totalParams);
  const text = await cli(["inspect", path.join(base, "dense")]);
  assert.match(text.out, /memory \(est\.\)\s+weights .* f32, .* bf16, .* q8_0, .* q4_0; training state .* \(grads \+ AdamW\)/);
  assert.match(text.out, /KV cache [\d.]+ (B|KiB|MiB)\/token/);
});
