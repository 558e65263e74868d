// Fixtures of the tensor-parallel inference tests (test/infer-tp.test.ts, test/tp-mpi.test.ts and
// the MPI rank program test/tp-rank-program.ts): generic random weights, tiny configs with heads
// that do not divide (uneven GQA, MQA, q8_0 blocks), and a greedy decode through runStep that
// returns every step's logits.
import { createBackend, type Backend } from "../src/backend/index.js";
import type { ModelConfig } from "../src/model/config.js";
import { Weights } from "../src/model/weights.js";
import type { Activations, EngineWeights } from "../src/infer/engine-weights.js";
import { InferenceWorkspace, runStep } from "../src/infer/runner.js";
import { KvCachePool } from "../src/infer/kv-cache.js";
import { tinyConfig } from "./model-util.js";
import { rng } from "./util.js";

export const BACKEND = { backend: "native", threads: 1, gemm: "builtin" } as const;
export const be: Backend = createBackend({ name: "native", threads: 1, gemm: "builtin" });

/** Weights with generic values: matrices N(0, std), norm weights 1 + 0.2·N, biases 0.2·N. */
export function randomWeights(cfg: ModelConfig, seed: number, std = 0.35): Weights {
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
export const MHA5 = tinyConfig({
  family: "qwen2_moe", vocabSize: 40, hiddenSize: 24, numLayers: 2, numHeads: 5, numKvHeads: 5, headDim: 8, rope: { theta: 10000, rotaryDim: 8 },
  qkvBias: true, oBias: true, qkNorm: "full", denseIntermediateSize: 14,
  moe: { numExperts: 4, topK: 2, expertIntermediateSize: 12, sharedExpertIntermediateSize: 10, moeLayers: [true, false] },
});
/** GQA 10 q heads over 5 kv heads (uneven kv split over 2 and 3), per-head q/k norm (Qwen3). */
export const GQA10 = tinyConfig({
  family: "qwen3_moe", vocabSize: 40, hiddenSize: 24, numLayers: 2, numHeads: 10, numKvHeads: 5, headDim: 4, rope: { theta: 10000, rotaryDim: 4 },
  qkNorm: "head", moe: { numExperts: 4, topK: 2, expertIntermediateSize: 9 },
});
/** One kv head replicated on every rank, 6 q heads split among them, "full" k norm over the replicas. */
export const MQA6 = tinyConfig({
  family: "olmoe", vocabSize: 40, hiddenSize: 24, numLayers: 2, numHeads: 6, numKvHeads: 1, headDim: 4, rope: { theta: 10000, rotaryDim: 4 },
  qkNorm: "full", moe: { numExperts: 4, topK: 2, expertIntermediateSize: 8 },
});
/** q8_0: every split falls on blocks of 32 (heads of 32, expert columns 96 = 3 blocks). */
export const Q8 = tinyConfig({
  family: "mixtral", vocabSize: 48, hiddenSize: 64, numLayers: 2, numHeads: 3, numKvHeads: 3, headDim: 32, rope: { theta: 10000, rotaryDim: 32 },
  moe: { numExperts: 4, topK: 2, expertIntermediateSize: 96 },
});

/** Greedy decode by runStep: chunked prefill (≤ 4 rows), then one row per step; the logits of every step. `be`: the backend (default the native one above). */
export function greedyDecode(w: EngineWeights, prompt: number[], n: number, opts: { activations?: Activations; backend?: Backend } = {}): { ids: number[]; logits: Float32Array[] } {
  const cfg = w.cfg;
  const kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: 16, blockSize: 4, maxSeqLen: 64 });
  const ws = new InferenceWorkspace(cfg, 8, 1, { activations: opts.activations });
  const k = opts.backend ?? be;
  kv.allocate("s", prompt);
  const ids = [...prompt], logits: Float32Array[] = [];
  let computed = 0;
  for (let step = 0; step < n; step++) {
    while (computed < ids.length) {
      const take = Math.min(4, ids.length - computed);
      const slots = kv.append("s", ids.slice(computed, computed + take));
      runStep(k, w, ws, kv, {
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

export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0, e = 0;
  for (let i = 0; i < b.length; i++) m = Math.max(m, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) e = Math.max(e, Math.abs(a[i]! - b[i]!));
  return e / m;
}

/** `be` whose fault() runs at its `at`-th kernel call (every step checked, so every call goes through it). */
export function faulty(k: Backend, at: number, fault: () => void): Backend {
  let calls = 0;
  // the backend object is frozen: the proxy's target is a fresh object, every read goes to k
  return new Proxy({} as Backend, {
    get(_, p) {
      if (p === "unchecked") return undefined;
      const v = Reflect.get(k, p) as unknown;
      if (typeof v !== "function") return v;
      return (...a: unknown[]) => {
        if (++calls === at) fault();
        return (v as (...x: unknown[]) => unknown).apply(k, a);
      };
    },
  });
}
