// The inference engine against the full forward (model/forward.ts, no cache): cached decode
// gives the full forward's logits (1e-4) and greedy tokens for every family fixture, with a
// sliding window, with chunked prefill and with prefix-cache hits; batched decode of sequences
// of different lengths equals each run alone; compact weights equal the full forward over their
// dequantised values; cancellation frees every block.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createBackend } from "../src/backend/index.js";
import { loadHfModel } from "../src/model/checkpoint.js";
import { MoeModel } from "../src/model/model.js";
import { Weights } from "../src/model/weights.js";
import type { Tokenizer } from "../src/data/types.js";
import { Engine, type TokenEvent } from "../src/infer/engine.js";
import { engineWeights, type EngineDtype, type Mat } from "../src/infer/engine-weights.js";
import { InferenceWorkspace, runStep } from "../src/infer/runner.js";
import { KvCachePool } from "../src/infer/kv-cache.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { dequantizeBlock } from "../src/core/quant-blocks.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { decodeArray, type NarrowFloat } from "../src/core/dtype.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "fixtures");
const be = createBackend({ name: "native", threads: 1 });

/** A tokenizer of single characters 'a'.. for the fixtures' small vocabularies (no EOS). */
function charTokenizer(V: number): Tokenizer {
  return {
    vocabSize: V, specialTokens: {}, eosId: undefined,
    encode: (t) => [...t].map((c) => c.charCodeAt(0) - 97),
    decode: (ids) => Array.from(ids, (i) => String.fromCharCode(97 + (i % 26))).join(""),
    toJSON: () => ({}),
  };
}

/** Greedy continuation by full forwards over the growing sequence (the reference), with the logits of each step. */
function fullGreedy(dir: string | Weights, prompt: number[], n: number, weights?: Weights): { ids: number[]; logits: Float32Array[] } {
  const w = typeof dir === "string" ? weights ?? loadHfModel(dir, be, { B: 1, T: 1 }).model.weights : weights ?? dir;
  const cfg = w.cfg;
  const ids = [...prompt], logits: Float32Array[] = [];
  const V = cfg.vocabSize;
  for (let i = 0; i < n; i++) {
    const m = new MoeModel(cfg, be, { B: 1, T: ids.length }, w);
    m.forward(Int32Array.from(ids), null, { train: false });
    const row = Float32Array.from(m.lastLogits().subarray((ids.length - 1) * V, ids.length * V));
    logits.push(row);
    let best = 0;
    for (let j = 1; j < V; j++) if (row[j]! > row[best]!) best = j;
    ids.push(best);
  }
  return { ids: ids.slice(prompt.length), logits };
}

async function collect(it: AsyncIterable<TokenEvent>): Promise<TokenEvent[]> {
  const out: TokenEvent[] = [];
  for await (const e of it) out.push(e);
  return out;
}

function greedy(n: number, V: number, extra: Record<string, unknown> = {}) {
  return validateSamplingParams({ temperature: 0, max_tokens: n, ...extra }, { vocabSize: V, maxModelLen: 64 });
}

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0, e = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i]! - b[i]!));
  return e / m;
}

const CASES = [
  ["hf", "mixtral"], ["hf", "phimoe"], ["hf", "qwen2_moe"], ["hf", "qwen3_moe"], ["hf", "olmoe"], ["hf", "skywork"],
  ["hf-keys", "qwen2_moe_window"], ["hf-keys", "olmoe_clip_qkv"], ["hf-keys", "phimoe_longrope_short"], ["hf-keys", "mixtral_tied"],
] as const;

for (const [set, name] of CASES) {
  test(`${name}: cached decode (chunked prefill, block size 4) gives the full forward's logits and greedy tokens`, () => {
    const dir = path.join(ROOT, set, name);
    const { model, cfg } = loadHfModel(dir, be, { B: 1, T: 1 });
    const prompt = [3, 17, 5, 9, 30, 2, 11, 8, 21];
    const ref = fullGreedy(dir, prompt, 10);
    const ew = engineWeights(model.weights);
    const kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: 16, blockSize: 4, maxSeqLen: 64 });
    const ws = new InferenceWorkspace(cfg, 8, 1);
    kv.allocate("s", prompt);
    const ids = [...prompt];
    let computed = 0;
    const got: number[] = [];
    for (let step = 0; step < 10; step++) {
      // prefill in chunks of at most 4 rows, then one row per step
      while (computed < ids.length) {
        const take = Math.min(4, ids.length - computed);
        const slots = kv.append("s", ids.slice(computed, computed + take));
        const last = computed + take === ids.length;
        runStep(be, ew, ws, kv, {
          tokens: Int32Array.from(ids.slice(computed, computed + take)), positions: Int32Array.from({ length: take }, (_, i) => computed + i),
          queryStart: Int32Array.from([0, take]), contextLens: Int32Array.from([computed + take]), slots, blockTables: kv.fillBlockTables(["s"]),
          logitRows: last ? Int32Array.from([take - 1]) : new Int32Array(0),
        });
        computed += take;
      }
      const row = ws.logits.subarray(0, cfg.vocabSize);
      const err = maxRelErr(row, ref.logits[step]!);
      assert.ok(err < 1e-4, `${name} step ${step}: logits differ from the full forward by ${err.toExponential(2)}`);
      let best = 0;
      for (let j = 1; j < cfg.vocabSize; j++) if (row[j]! > row[best]!) best = j;
      got.push(best);
      ids.push(best);
    }
    assert.deepEqual(got, ref.ids);
  });
}

test("engine: concurrent requests of different lengths decode as each alone; prefix cache hits; n > 1", async () => {
  const dir = path.join(ROOT, "hf", "qwen2_moe");
  const { model, cfg } = loadHfModel(dir, be, { B: 1, T: 1 });
  const tok = charTokenizer(cfg.vocabSize);
  const prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25]];
  const alone = prompts.map((p) => fullGreedy(dir, p, 8).ids);
  const eng = new Engine(be, engineWeights(model.weights), tok, { maxModelLen: 64, maxNumSeqs: 4, maxNumBatchedTokens: 7, blockSize: 4 });
  const outs = await Promise.all(prompts.map((p) => collect(eng.submit(p, greedy(8, cfg.vocabSize)))));
  outs.forEach((evs, i) => {
    assert.deepEqual(evs.map((e) => e.id), alone[i], `request ${i}`);
    assert.equal(evs.at(-1)!.finishReason, "length");
  });
  assert.ok(eng.totals.steps < 3 * 9, `batched: ${eng.totals.steps} steps for 3 × 8 tokens`);
  // the same long prompt again: its full blocks come from the prefix cache, same tokens
  const before = eng.totals.prefixHitTokens;
  const again = await collect(eng.submit(prompts[1]!, greedy(8, cfg.vocabSize)));
  assert.deepEqual(again.map((e) => e.id), alone[1]);
  assert.equal(eng.totals.prefixHitTokens - before, 8, "two full blocks of 4 reused");
  // n = 2 greedy: both completions equal
  const two = await collect(eng.submit(prompts[0]!, greedy(5, cfg.vocabSize, { n: 2 })));
  for (const idx of [0, 1]) assert.deepEqual(two.filter((e) => e.index === idx).map((e) => e.id), alone[0]!.slice(0, 5));
  assert.equal(eng.kv.stats().usedBlocks, 0, "every block released");
  // per-step expert loads were recorded for every MoE layer
  assert.ok(eng.totals.tokensPerExpert[0]!.reduce((a, b) => a + b, 0) > 0);
});

test("engine: preemption when the KV pool is small still gives each request its own tokens", async () => {
  const dir = path.join(ROOT, "hf", "mixtral");
  const { model, cfg } = loadHfModel(dir, be, { B: 1, T: 1 });
  const prompts = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 14]];
  const alone = prompts.map((p) => fullGreedy(dir, p, 12).ids);
  const eng = new Engine(be, engineWeights(model.weights), charTokenizer(cfg.vocabSize), { maxModelLen: 20, maxNumSeqs: 3, blockSize: 4, kvCacheTokens: 24 });
  const outs = await Promise.all(prompts.map((p) => collect(eng.submit(p, greedy(12, cfg.vocabSize)))));
  outs.forEach((evs, i) => assert.deepEqual(evs.map((e) => e.id), alone[i], `request ${i}`));
  assert.ok(eng.totals.preemptions > 0, "the pool forced a preemption");
  assert.equal(eng.kv.stats().usedBlocks, 0);
});

test("engine: cancellation ends the request with 'abort' and frees its blocks", async () => {
  const dir = path.join(ROOT, "hf", "mixtral");
  const { model, cfg } = loadHfModel(dir, be, { B: 1, T: 1 });
  const eng = new Engine(be, engineWeights(model.weights), charTokenizer(cfg.vocabSize), { maxModelLen: 64, blockSize: 4 });
  const ac = new AbortController();
  const evs: TokenEvent[] = [];
  for await (const e of eng.submit([1, 2, 3, 4, 5, 6], greedy(40, cfg.vocabSize), ac.signal)) {
    evs.push(e);
    if (evs.length === 3) ac.abort();
  }
  assert.equal(evs.at(-1)!.finishReason, "abort");
  assert.ok(evs.length < 10);
  assert.equal(eng.kv.stats().usedBlocks, 0, "no block held by a sequence");
  assert.equal(eng.kv.stats().numSeqs, 0);
  assert.equal(eng.load.running + eng.load.waiting, 0);
});

/** f32 copy of a compact matrix (the reference the engine's matmul must match). */
function dequant(m: Mat): Float32Array {
  const out = new Float32Array(m.rows * m.cols);
  if (m.format === "f32") return Float32Array.from(m.w);
  if ("blocks" in m) {
    dequantizeBlock(out, m.blocks, m.format, out.length);
    return out;
  }
  for (let r = 0; r < m.rows; r++) {
    const o = out.subarray(r * m.cols, (r + 1) * m.cols);
    if (m.format === "int8") for (let c = 0; c < m.cols; c++) o[c] = (m.codes as Int8Array)[r * m.cols + c]! * m.scales[r]!;
    else decodeArray(m.format as NarrowFloat, o, m.codes.subarray(r * m.cols, (r + 1) * m.cols) as Uint16Array | Uint8Array, m.scales[r]!);
  }
  return out;
}

for (const dtype of ["bf16", "fp8_e4m3", "int8", "q8_0", "q4_0"] as EngineDtype[]) {
  test(`compact weights (${dtype}): the engine's logits equal the full forward over the dequantised weights`, () => {
    // rows of 64 values: whole blocks of every GGUF format
    const cfg = resolveConfig(parseHfConfig({
      model_type: "mixtral", vocab_size: 61, hidden_size: 64, intermediate_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, num_local_experts: 4, num_experts_per_tok: 2,
    }));
    const model = { weights: new Weights(cfg, "f32").init(7, 0.08) };
    const ew = engineWeights(model.weights, { dtype });
    assert.ok(ew.bytes < model.weights.data.byteLength, `${dtype} is smaller than f32`);
    // the same model with every matrix replaced by its dequantised values
    const w = new Weights(cfg, "f32", Float32Array.from(model.weights.data));
    w.views.layers.forEach((lv, l) => {
      const el = ew.layers[l]!;
      lv.attn.q.set(dequant(el.q));
      lv.attn.k.set(dequant(el.k));
      lv.attn.v.set(dequant(el.v));
      lv.attn.o.set(dequant(el.o));
      el.moe!.w13.forEach((m, e) => lv.moe!.w13.set(dequant(m), e * m.rows * m.cols));
      el.moe!.w2.forEach((m, e) => lv.moe!.w2.set(dequant(m), e * m.rows * m.cols));
    });
    w.views.head.set(dequant(ew.head));
    const prompt = [3, 17, 5, 9, 30, 2, 11];
    const ref = fullGreedy(w, prompt, 1);
    const kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: 8, blockSize: 4, maxSeqLen: 64 });
    const ws = new InferenceWorkspace(cfg, 16, 1);
    kv.allocate("s", prompt);
    const slots = kv.append("s", prompt);
    runStep(be, ew, ws, kv, {
      tokens: Int32Array.from(prompt), positions: Int32Array.from(prompt.keys()), queryStart: Int32Array.from([0, prompt.length]),
      contextLens: Int32Array.from([prompt.length]), slots, blockTables: kv.fillBlockTables(["s"]), logitRows: Int32Array.from([prompt.length - 1]),
    });
    const err = maxRelErr(ws.logits.subarray(0, cfg.vocabSize), ref.logits[0]!);
    assert.ok(err < 1e-4, `${dtype}: ${err.toExponential(2)}`);
  });
}
