// Tensor-parallel inference (infer/tp.ts) against one rank: at tp = 2, 3 and 4, with heads that
// do not divide (Skywork's uneven split), GQA with split and with replicated kv heads, q/k norms
// per head and over the whole projection, biases, a shared expert and a dense layer, the split
// engine gives the one-rank engine's greedy tokens and logits (float tolerance: only the order of
// the all-reduce sums differs), on f32 and on quantised weights (int8 per-row scales, GGUF q8_0
// blocks), through runStep directly and through the Engine's scheduler.
import { test } from "node:test";
import assert from "node:assert/strict";
import type { ModelConfig } from "../src/model/config.js";
import type { Tokenizer } from "../src/data/types.js";
import { Engine, type TokenEvent } from "../src/infer/engine.js";
import { engineWeights, type EngineDtype, type EngineWeights } from "../src/infer/engine-weights.js";
import { InferenceWorkspace, runStep } from "../src/infer/runner.js";
import { KvCachePool } from "../src/infer/kv-cache.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { TensorParallel } from "../src/infer/tp.js";
import { planTensorParallel, TensorParallelError } from "../src/infer/tp-shard.js";
import { tinyConfig } from "./model-util.js";
import { BACKEND, be, faulty, GQA10, greedyDecode, maxRelErr, MHA5, MQA6, Q8, randomWeights } from "./tp-util.js";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { cli, corpus, tinyArgs } from "./robust-util.js";

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

test("q8 activations (q8_0, ≤ 8 rows) reach every rank: tp 2 and 3 give one rank's q8-activation logits and tokens", async () => {
  const full = engineWeights(randomWeights(Q8, 5), { dtype: "q8_0" });
  const prompt = [3, 17, 5, 9, 30, 2, 11, 8, 21];
  const f32 = greedyDecode(full, prompt, 8);
  const ref = greedyDecode(full, prompt, 8, { activations: "q8" });
  // the mode matters here (the first step: the same context either way): a rank left on f32 activations would be off
  const gap = maxRelErr(ref.logits[0]!, f32.logits[0]!);
  assert.ok(gap > 1e-3, `q8 and f32 activations differ by only ${gap.toExponential(2)}`);
  for (const size of [2, 3]) {
    const tp = await TensorParallel.start(full, { size, backend: BACKEND });
    try {
      const got = greedyDecode(tp.weights, prompt, 8, { activations: "q8" });
      got.logits.forEach((row, i) => {
        const err = maxRelErr(row, ref.logits[i]!);
        assert.ok(err < 1e-4, `tp ${size} step ${i}: q8-activation logits differ from one rank by ${err.toExponential(2)} (f32/q8 gap ${gap.toExponential(2)})`);
      });
      assert.deepEqual(got.ids, ref.ids, `tp ${size}: greedy tokens`);
    } finally {
      await tp.close();
    }
  }
});

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

test("tp: a step that throws on rank 0 in the middle fails every later step with a message; close() still ends the workers", async () => {
  const full = engineWeights(randomWeights(GQA10, 3));
  const tp = await TensorParallel.start(full, { size: 2, backend: BACKEND });
  try {
    // the 20th kernel call of rank 0 is inside the first step, after the other rank joined it
    assert.throws(() => greedyDecode(tp.weights, [1, 2, 3], 1, { backend: faulty(be, 20, () => { throw new Error("injected on rank 0"); }) }), /injected on rank 0/);
    assert.throws(() => greedyDecode(tp.weights, [1, 2, 3], 1), /tensor parallel: a step failed on rank 0 in the middle, so the ranks are out of step; the engine cannot run/);
  } finally {
    await tp.close();
  }
});

test("moe generate --tp 2 (threads, and over moe launch's 2 ranks) prints the --tp 1 text; --tp that does not fit the heads and --tp 0 are refused", async () => {
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
  // the launched ranks instead of threads: moe launch's threads world (2 ranks of one process)
  const launched = await cli(["launch", "--nproc", "2", "--timeout", "60", "--", "generate", run, "--prompt", "the whale", "--max-tokens", "16", "--temperature", "0", "--ignore-eos", "--tp", "2"]);
  assert.equal(launched.code, 0, launched.err);
  assert.equal(launched.out.replace(/^\[rank 0\] /gm, ""), one.out);
  const three = await gen("3"); // tiny-mixtral: 4 heads, 2 kv heads
  assert.notEqual(three.code, 0);
  assert.match(three.err, /3 ranks do not fit 2 kv heads: use at most 2 ranks or a multiple of 2/);
  const zero = await gen("0");
  assert.match(zero.err, /moe generate: --tp must be a positive integer \(ranks\), got 0/);
});
