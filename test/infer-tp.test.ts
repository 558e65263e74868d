// Tensor-parallel inference (infer/tp.ts) against one rank: at tp = 2, 3 and 4, with heads that
// do not divide (Skywork's uneven split), GQA with split and with replicated kv heads, q/k norms
// per head and over the whole projection, biases, a shared expert and a dense layer, the split
// engine gives the one-rank engine's greedy tokens and logits (float tolerance: only the order of
// the all-reduce sums differs), on f32 and on quantised weights (int8 per-row scales, GGUF q8_0
// blocks), through runStep directly and through the Engine's scheduler.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../src/backend/index.js";
import type { ModelConfig } from "../src/model/config.js";
import { Weights } from "../src/model/weights.js";
import type { Tokenizer } from "../src/data/types.js";
import { Engine, type TokenEvent } from "../src/infer/engine.js";
import { engineWeights, type EngineDtype, type EngineWeights } from "../src/infer/engine-weights.js";
import { InferenceWorkspace, runStep } from "../src/infer/runner.js";
import { KvCachePool } from "../src/infer/kv-cache.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { TensorParallel } from "../src/infer/tp.js";
import { planTensorParallel, TensorParallelError } from "../src/infer/tp-shard.js";
import { tinyConfig } from "./model-util.js";
import { rng } from "./util.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { cli, corpus, tinyArgs } from "./robust-util.js";

const BACKEND = { backend: "native", threads: 1, gemm: "builtin" } as const;
const be = createBackend({ name: "native", threads: 1, gemm: "builtin" });

/** Weights with generic values: matrices N(0, std), norm weights 1 + 0.2·N, biases 0.2·N. */
function randomWeights(cfg: ModelConfig, seed: number, std = 0.35): Weights {
  const w = new Weights(cfg, "f32");
  const r = rng(seed);
  const normal = () => Math.sqrt(-2 * Math.log(Math.max(r(), 1e-12))) * Math.cos(2 * Math.PI * r());
  for (const t of w.layout.tensors) {
    const a = w.data.subarray(t.offset, t.offset + t.size);
    for (let i = 0; i < t.size; i++) a[i] = t.init === "ones" ? 1 + 0.2 * normal() : t.init === "zeros" ? 0.2 * normal() : std * normal();
  }
  return w;
}

/** MHA, 5 heads (uneven over 2 and 3), "full" q/k norm (OLMoE), biases, shared expert, a dense layer. */
const MHA5 = tinyConfig({
  family: "qwen2_moe", vocabSize: 40, hiddenSize: 24, numLayers: 2, numHeads: 5, numKvHeads: 5, headDim: 8, rope: { theta: 10000, rotaryDim: 8 },
  qkvBias: true, oBias: true, qkNorm: "full", denseIntermediateSize: 14,
  moe: { numExperts: 4, topK: 2, expertIntermediateSize: 12, sharedExpertIntermediateSize: 10, moeLayers: [true, false] },
});
/** GQA 10 q heads over 5 kv heads (uneven kv split over 2 and 3), per-head q/k norm (Qwen3). */
const GQA10 = tinyConfig({
  family: "qwen3_moe", vocabSize: 40, hiddenSize: 24, numLayers: 2, numHeads: 10, numKvHeads: 5, headDim: 4, rope: { theta: 10000, rotaryDim: 4 },
  qkNorm: "head", moe: { numExperts: 4, topK: 2, expertIntermediateSize: 9 },
});
/** One kv head replicated on every rank, 6 q heads split among them, "full" k norm over the replicas. */
const MQA6 = tinyConfig({
  family: "olmoe", vocabSize: 40, hiddenSize: 24, numLayers: 2, numHeads: 6, numKvHeads: 1, headDim: 4, rope: { theta: 10000, rotaryDim: 4 },
  qkNorm: "full", moe: { numExperts: 4, topK: 2, expertIntermediateSize: 8 },
});
/** q8_0: every split falls on blocks of 32 (heads of 32, expert columns 96 = 3 blocks). */
const Q8 = tinyConfig({
  family: "mixtral", vocabSize: 48, hiddenSize: 64, numLayers: 2, numHeads: 3, numKvHeads: 3, headDim: 32, rope: { theta: 10000, rotaryDim: 32 },
  moe: { numExperts: 4, topK: 2, expertIntermediateSize: 96 },
});

/** Greedy decode by runStep: chunked prefill (≤ 4 rows), then one row per step; the logits of every step. */
function greedyDecode(w: EngineWeights, prompt: number[], n: number): { ids: number[]; logits: Float32Array[] } {
  const cfg = w.cfg;
  const kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: 16, blockSize: 4, maxSeqLen: 64 });
  const ws = new InferenceWorkspace(cfg, 8, 1);
  kv.allocate("s", prompt);
  const ids = [...prompt], logits: Float32Array[] = [];
  let computed = 0;
  for (let step = 0; step < n; step++) {
    while (computed < ids.length) {
      const take = Math.min(4, ids.length - computed);
      const slots = kv.append("s", ids.slice(computed, computed + take));
      runStep(be, w, ws, kv, {
        tokens: Int32Array.from(ids.slice(computed, computed + take)), positions: Int32Array.from({ length: take }, (_, i) => computed + i),
        queryStart: Int32Array.from([0, take]), contextLens: Int32Array.from([computed + take]), slots, blockTables: kv.fillBlockTables(["s"]),
        logitRows: computed + take === ids.length ? Int32Array.from([take - 1]) : new Int32Array(0),
      });
      computed += take;
    }
    const row = Float32Array.from(ws.logits.subarray(0, cfg.vocabSize));
    logits.push(row);
    let best = 0;
    for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
    ids.push(best);
  }
  return { ids: ids.slice(prompt.length), logits };
}

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0, e = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i]! - b[i]!));
  return e / m;
}

const CASES: { name: string; cfg: ModelConfig; dtype: EngineDtype; sizes: number[] }[] = [
  { name: "MHA 5 heads, full q/k norm, biases, shared expert, dense layer", cfg: MHA5, dtype: "f32", sizes: [2, 3] },
  { name: "GQA 10/5 heads, per-head q/k norm", cfg: GQA10, dtype: "f32", sizes: [2, 3] },
  { name: "MQA (kv head replicated), full k norm", cfg: MQA6, dtype: "f32", sizes: [2, 4] },
  { name: "MHA 5 heads", cfg: MHA5, dtype: "int8", sizes: [3] },
  { name: "GQA 10/5 heads", cfg: GQA10, dtype: "bf16", sizes: [2] },
  { name: "3 heads of 32", cfg: Q8, dtype: "q8_0", sizes: [2, 3] },
];

for (const c of CASES) {
  test(`tp ${c.sizes.join(", ")}: ${c.name}, ${c.dtype}: the greedy tokens and logits of one rank`, async () => {
    const full = engineWeights(randomWeights(c.cfg, 7), { dtype: c.dtype });
    const prompt = [3, 17, 5, 9, 30, 2, 11, 8, 21];
    const ref = greedyDecode(full, prompt, 8);
    for (const size of c.sizes) {
      const tp = await TensorParallel.start(full, { size, backend: BACKEND });
      try {
        assert.ok(tp.weights.tp && tp.weights.cfg.numHeads < c.cfg.numHeads, "rank 0 holds a slice");
        const got = greedyDecode(tp.weights, prompt, 8);
        got.logits.forEach((row, i) => {
          const err = maxRelErr(row, ref.logits[i]!);
          assert.ok(err < 1e-4, `tp ${size} step ${i}: logits differ from one rank by ${err.toExponential(2)}`);
        });
        assert.deepEqual(got.ids, ref.ids, `tp ${size}: greedy tokens`);
      } finally {
        await tp.close();
      }
    }
  });
}

test("tp 3 through the Engine: concurrent requests of different lengths give one rank's tokens", async () => {
  const full = engineWeights(randomWeights(GQA10, 11));
  const tok: Tokenizer = { vocabSize: 40, specialTokens: {}, eosId: undefined, encode: () => [], decode: (ids) => Array.from(ids, (i) => String.fromCharCode(97 + (i % 26))).join(""), toJSON: () => ({}) };
  const prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13], [20, 21, 22, 23, 24, 25]];
  const params = validateSamplingParams({ temperature: 0, max_tokens: 6 }, { vocabSize: 40, maxModelLen: 64 });
  const run = async (w: EngineWeights) => {
    const eng = new Engine(be, w, tok, { maxModelLen: 64, maxNumSeqs: 4, maxNumBatchedTokens: 7, blockSize: 4 });
    const collect = async (it: AsyncIterable<TokenEvent>) => {
      const ids: number[] = [];
      for await (const e of it) ids.push(e.id);
      return ids;
    };
    const out = await Promise.all(prompts.map((p) => collect(eng.submit(p, params))));
    return { out, kvBytes: eng.kv.stats().totalBytes };
  };
  const one = await run(full);
  const tp = await TensorParallel.start(full, { size: 3, backend: BACKEND });
  try {
    const three = await run(tp.weights);
    assert.deepEqual(three.out, one.out);
    // rank 0 holds 2 of the 5 kv heads
    assert.equal(three.kvBytes * 5, one.kvBytes * 2);
  } finally {
    await tp.close();
  }
  await assert.rejects(async () => runStep(be, tp.weights, new InferenceWorkspace(tp.weights.cfg, 1, 1), new KvCachePool({ numLayers: 2, numKvHeads: 2, headSize: 4, numBlocks: 2, blockSize: 4 }), {
    tokens: Int32Array.of(1), positions: Int32Array.of(0), queryStart: Int32Array.of(0, 1), contextLens: Int32Array.of(1), slots: Int32Array.of(0), blockTables: Int32Array.of(0, -1), logitRows: Int32Array.of(0),
  }), /after close/);
});

test("plan: Skywork's 36 heads over 8 ranks, GQA kv heads split or replicated, block-aligned columns, clear refusals", () => {
  const sky = tinyConfig({ numHeads: 36, numKvHeads: 36, headDim: 4, hiddenSize: 144, moe: { expertIntermediateSize: 16 } });
  const p = planTensorParallel(sky, 8);
  assert.deepEqual(p.ranks.map((r) => r.qHeads), [5, 5, 5, 5, 4, 4, 4, 4]);
  assert.deepEqual(p.ranks.map((r) => r.qOffset), [0, 5, 10, 15, 20, 24, 28, 32]);
  assert.deepEqual(p.ranks.map((r) => r.expert.count), [2, 2, 2, 2, 2, 2, 2, 2]);
  // GQA 10/5 over 3: kv [2,2,1], q heads follow their kv heads
  const g = planTensorParallel(GQA10, 3);
  assert.deepEqual(g.ranks.map((r) => [r.kvHeads, r.qHeads, r.qOffset]), [[2, 4, 0], [2, 4, 4], [1, 2, 8]]);
  assert.deepEqual(g.ranks.map((r) => r.expert.count), [3, 3, 3]);
  // 2 kv heads over 4 ranks: each kv head on 2 ranks, its 3 q heads split [2, 1]
  const r = planTensorParallel(tinyConfig({ numHeads: 6, numKvHeads: 2 }), 4);
  assert.equal(r.kvReplicas, 2);
  assert.deepEqual(r.ranks.map((x) => [x.kvOffset, x.qOffset, x.qHeads]), [[0, 0, 2], [0, 2, 1], [1, 3, 2], [1, 5, 1]]);
  // q8_0: 96 expert columns = 3 blocks of 32 over 2 ranks → [64, 32]
  assert.deepEqual(planTensorParallel(Q8, 2, "q8_0").ranks.map((x) => x.expert), [{ offset: 0, count: 64 }, { offset: 64, count: 32 }]);
  assert.throws(() => planTensorParallel(tinyConfig({ numHeads: 6, numKvHeads: 2 }), 3), (e: Error) => e instanceof TensorParallelError && /multiple of 2/.test(e.message));
  assert.throws(() => planTensorParallel(tinyConfig({ numHeads: 2, numKvHeads: 2 }), 3), /only 2 attention heads/);
  assert.throws(() => planTensorParallel(GQA10, 2, "q8_0"), /whole number of q8_0 blocks/);
  assert.throws(() => planTensorParallel(Q8, 4, "q8_0"), /fewer than the 4 ranks|only 3 attention heads/);
});

test("tp failures: a rank that cannot start rejects start(); a rank found dead between steps fails the next step", async () => {
  const full = engineWeights(randomWeights(GQA10, 3));
  await assert.rejects(TensorParallel.start(full, { size: 2, backend: { backend: "bogus" } }), /rank 1 failed to start: .*--backend must be 'native' or 'ref'/);
  await assert.rejects(TensorParallel.start(full, { size: 2, slotBytes: 12 }), /slotBytes must be a multiple of 8/);
  const tp = await TensorParallel.start(full, { size: 2, backend: BACKEND });
  // test-only introspection: end rank 1 behind the engine's back
  await (tp as unknown as { workers: { terminate(): Promise<number> }[] }).workers[0]!.terminate();
  await new Promise((r) => setImmediate(r));
  assert.throws(() => greedyDecode(tp.weights, [1, 2, 3], 1), /tensor parallel: rank 1 exited \(code \d+\); the engine cannot run/);
  await tp.close();
});

test("moe generate --tp 2 prints the --tp 1 text; --tp that does not fit the heads and --tp 0 are refused", async () => {
  const base = mkdtempSync(path.join(tmpdir(), "moe-tp-cli-"));
  const tr = await cli(["train", ...tinyArgs(base, "run", corpus(20), ["train.steps=8"])]);
  assert.equal(tr.code, 0, tr.err);
  const run = path.join(base, "run");
  const gen = (tp: string) => cli(["generate", run, "--prompt", "the whale", "--max-tokens", "16", "--temperature", "0", "--ignore-eos", "--tp", tp]);
  const one = await gen("1"), two = await gen("2");
  assert.equal(one.code, 0, one.err);
  assert.equal(two.code, 0, two.err);
  assert.ok(one.out.length > "the whale".length + 4, one.out);
  assert.equal(two.out, one.out);
  const three = await gen("3"); // tiny-mixtral: 4 heads, 2 kv heads
  assert.notEqual(three.code, 0);
  assert.match(three.err, /3 ranks do not fit 2 kv heads: use at most 2 ranks or a multiple of 2/);
  const zero = await gen("0");
  assert.match(zero.err, /moe generate: --tp must be a positive integer \(ranks\), got 0/);
});
