// Loading a model to run it: NaN/Inf in a GGUF tensor is refused at load naming the tensor (f32
// and f16 files; generate, logits, eval), as the safetensors path does; the memory of weights +
// KV cache + workspaces is estimated from the config before anything is read, and absurd sizes
// (--max-model-len, --max-num-seqs, eval batches, a config of 10^7 layers) are refused at once by
// generate, serve, eval and logits. References: the engine's own KV-cache size and the GGUF
// importer's parameter count (the estimate must agree with what is really allocated).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, openSync, writeSync, closeSync, copyFileSync, readFileSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { GgufFile } from "../src/io/gguf.js";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.js";
import { importModelGguf } from "../src/model/gguf-families.js";
import { parameterCounts } from "../src/model/config.js";
import { inferenceBytes, modelSizes } from "../src/infer/load-memory.js";
import { openModel } from "../src/infer/open.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights } from "../src/infer/engine-weights.js";
import { createBackend } from "../src/backend/index.js";
import { writeTinyModelDir } from "./gguf-fixture.js";
import { cli, corpus } from "./robust-util.js";

const base = mkdtempSync(path.join(tmpdir(), "moe-robust-load-"));
const modelDir = path.join(base, "m");
mkdirSync(modelDir);
writeTinyModelDir(modelDir, 7);
const data = corpus(10);

/** `moe export` of the tiny model at `dtype`, then one value of `tensor` overwritten with `bits`. */
async function poisoned(dtype: "f32" | "f16", tensor: string, index: number, bits: number): Promise<string> {
  const file = path.join(base, `${dtype}-${tensor}.gguf`);
  const r = await cli(["export", modelDir, "--dtype", dtype, "--out", file]);
  assert.equal(r.code, 0, r.err);
  const info = GgufFile.open(file).info(tensor);
  assert.equal(info.type, dtype.toUpperCase());
  const w = dtype === "f32" ? 4 : 2;
  const b = Buffer.alloc(w);
  if (w === 4) b.writeUInt32LE(bits);
  else b.writeUInt16LE(bits);
  const fd = openSync(file, "r+");
  writeSync(fd, b, 0, w, info.offset + index * w);
  closeSync(fd);
  return file;
}

test("NaN/Inf in a GGUF tensor is refused at load, naming the tensor (generate, logits, eval); a clean file loads", async () => {
  const clean = path.join(base, "clean.gguf");
  assert.equal((await cli(["export", modelDir, "--dtype", "f32", "--out", clean])).code, 0);
  const ok = await cli(["logits", clean, "--ids", "1,2,3"]);
  assert.equal(ok.code, 0, ok.err);
  // the example: a NaN in the final norm (f32 file)
  const nan = await poisoned("f32", "output_norm.weight", 1, 0x7fc00000);
  for (const args of [["logits", nan, "--ids", "1,2,3"], ["generate", nan, "--prompt", "the", "--max-tokens", "2"], ["eval", nan, "--data", data, "--batches", "1", "--batch-size", "1", "--seq-len", "8", "--cache-dir", path.join(base, "cache")]]) {
    const r = await cli(args);
    assert.equal(r.code, 1, `${args[0]}: ${r.err}`);
    assert.match(r.err, /tensor output_norm\.weight holds non-finite values \(NaN or Inf\): output_norm\.weight\[1\] = NaN/, args[0]);
  }
  // sibling: +Inf (f16 0x7c00) in the output head of an f16 file
  const inf = await poisoned("f16", "output.weight", 5, 0x7c00);
  const r = await cli(["logits", inf, "--ids", "1,2"]);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /tensor output\.weight holds non-finite values \(NaN or Inf\): output\.weight\[5\] = Infinity/);
  assert.throws(() => openModel(inf, createBackend({ name: "ref" })), /output\.weight\[5\] = Infinity/);
});

test("finite weights that overflow to non-finite outputs: logits, generate and eval exit 1", async () => {
  // the final norm at 3e38 (finite, so the load check passes): the logits overflow to ±Inf / NaN
  const dir = path.join(base, "overflow");
  mkdirSync(dir);
  const f = SafetensorsFile.open(path.join(modelDir, "model.safetensors"));
  const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
  for (const n of f.tensors.keys()) {
    const t = f.read(n);
    const data = Float32Array.from(t.data as Float32Array);
    if (n === "model.norm.weight") data.fill(3e38);
    tensors[n] = { dtype: "F32", shape: [...t.info.shape], data };
  }
  writeSafetensors(path.join(dir, "model.safetensors"), tensors);
  for (const e of ["config.json", "tokenizer.json"]) copyFileSync(path.join(modelDir, e), path.join(dir, e));
  const lg = await cli(["logits", dir, "--ids", "1,2"]);
  assert.equal(lg.code, 1);
  assert.match(lg.err, /moe logits: non-finite logit .* the weights of .* are broken/);
  for (const t of ["0", "0.8"]) {
    const g = await cli(["generate", dir, "--prompt", "the", "--max-tokens", "3", "--temperature", t]);
    assert.equal(g.code, 1, `temperature ${t}: ${g.err}`);
    assert.match(g.err, /logits\[\d+\] is NaN/);
  }
  const ev = await cli(["eval", dir, "--data", data, "--batches", "1", "--batch-size", "1", "--seq-len", "8", "--cache-dir", path.join(base, "cache")]);
  assert.equal(ev.code, 1, ev.err);
  assert.match(ev.err, /moe eval: the loss is (NaN|Infinity) \(non-finite outputs\)/);
});

test("the load estimate agrees with what is allocated: GGUF parameters, the engine's KV cache; inspect of a GGUF prints the estimates", async () => {
  const gguf = path.join(base, "clean.gguf");
  const s = modelSizes(gguf);
  assert.equal(s.parameters, parameterCounts(importModelGguf(gguf).cfg).total);
  // `moe inspect` of a GGUF prints the estimates too (weights = 4 bytes × its parameters)
  const ins = await cli(["inspect", gguf, "--json"]);
  assert.equal(ins.code, 0, ins.err);
  const j = JSON.parse(ins.out);
  assert.equal(j.memory.weights.f32, 4 * s.parameters);
  assert.equal(j.memory.kvCachePerToken, 4 * 2 * s.layers * s.kvHeads * s.headDim);
  const d = modelSizes(modelDir);
  assert.deepEqual({ ...d }, { ...s, context: d.context });
  const opened = openModel(modelDir, createBackend({ name: "ref" }));
  for (const [kvDtype, kvBytes] of [["f32", 4], ["bf16", 2]] as const) {
    const engine = new Engine(createBackend({ name: "ref" }), engineWeights(opened.weights, { dtype: "f32" }), opened.tokenizer!, { maxModelLen: 64, maxNumSeqs: 2, kvDtype, maxNumBatchedTokens: 32 });
    const est = inferenceBytes(d, { dtype: "f32", kvTokens: 2 * 64, seqs: 2, kvBytes, rows: 32, context: 64 });
    assert.equal(est.kv, engine.kv.stats().totalBytes, kvDtype);
    assert.equal(est.weights, 4 * opened.weights.data.length);
  }
});

test("absurd sizes are refused before loading by generate, serve, eval and logits, with the figure and the memory available", async () => {
  // a config of 10^7 layers (no weights need exist: nothing is read)
  const huge = path.join(base, "huge");
  mkdirSync(huge);
  for (const f of readdirSync(modelDir)) copyFileSync(path.join(modelDir, f), path.join(huge, f));
  const cfg = JSON.parse(readFileSync(path.join(huge, "config.json"), "utf8"));
  writeFileSync(path.join(huge, "config.json"), JSON.stringify({ ...cfg, num_hidden_layers: 10_000_000 }));
  const avail = /this machine has [\d.]+ [GMT]iB of memory available \((MemAvailable|cgroup limit|os\.freemem); [\d.]+ [GMT]iB in all\)/;
  for (const [args, re] of [
    [["generate", modelDir, "--prompt", "the", "--max-model-len", "1000000000"], /moe generate .* needs about [\d.]+ GiB \(weights .* f32 \+ KV cache [\d.]+ GiB for 1000000000 tokens \+ workspaces/],
    [["generate", modelDir, "--prompt", "the", "--dtype", "q8_0", "--kv-dtype", "bf16", "--max-model-len", "1000000000"], /weights .* f32 \+ .* q8_0 \+ KV cache [\d.]+ GiB for 1000000000 tokens/],
    [["serve", modelDir, "--port", "0", "--max-num-seqs", "100000000"], /moe serve .* needs about [\d.]+ TiB \(.*KV cache [\d.]+ TiB for 25600000000 tokens/],
    [["eval", modelDir, "--data", data, "--batch-size", "100000", "--seq-len", "4096"], /moe eval .* needs about [\d.]+ TiB \(.*workspaces [\d.]+ TiB for 409600000 rows\)/],
    [["logits", huge, "--ids", "1,2"], /moe logits .* needs about [\d.]+ TiB \(weights [\d.]+ TiB f32/],
    [["generate", huge, "--prompt", "the"], /moe generate .* needs about [\d.]+ TiB/],
  ] as const) {
    const t0 = Date.now();
    const r = await cli([...args]);
    assert.equal(r.code, 1, `${args.join(" ")}: ${r.err}`);
    assert.match(r.err, re, args.join(" "));
    assert.match(r.err, avail, args.join(" "));
    assert.doesNotMatch(r.out, /listening/, "serve refuses before listening");
    assert.ok(Date.now() - t0 < 30000, `${args[0]} refused quickly`);
  }
  // sibling: the same commands at sane sizes run
  const g = await cli(["generate", modelDir, "--prompt", "the", "--max-tokens", "2", "--max-model-len", "64"]);
  assert.equal(g.code, 0, g.err);
});
