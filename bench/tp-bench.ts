// Tensor-parallel inference speed: `node dist/bench/tp-bench.js [--models default,mid] [--dtypes f32,q8_0] [--reps 3]`.
// For each model and dtype, the engine at tp 1 (1 thread), tp 1 (2 threads) and tp 2 (1 thread
// per rank), interleaved, median of --reps:
//   decode   batch-1 greedy decode of 48 tokens after a 16-token prompt: 47 / (t48 − t1)
//   prefill  a 256-token prompt in one batch (time to the first token)
// Models have random weights (Weights(cfg).init(1234, 0.02)): `default` the default training
// model's shape (preset small-moe), `mid` a mixtral-shaped MoE (V 8192, C 768, 6 layers, 12 heads
// MHA, 8 experts top-2, expert size 1024: 0.14B parameters).
// Also checks that every configuration produced the same greedy tokens.
// Under mpirun (`mpirun -n N node dist/bench/tp-bench.js …`) it measures tp N over the MPI ranks
// instead (1 engine thread per rank unless MOE_NUM_THREADS), rank 0 printing, and checks its
// tokens against a tp 1 engine on rank 0.
// Not: a test (no assertion on speed), nor a peer comparison.
import { loadavg } from "node:os";
import { createBackend } from "../src/backend/index.js";
import { resolveConfig, type ModelConfig } from "../src/model/config.js";
import { preset } from "../src/model/presets.js";
import { Weights } from "../src/model/weights.js";
import type { Tokenizer } from "../src/data/types.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights, type EngineDtype, type EngineWeights } from "../src/infer/engine-weights.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { runTpWorkerRank, TensorParallel } from "../src/infer/tp.js";
import type { ProcessGroup } from "../src/parallel/process-group.js";
import { detectBackend, initWorld } from "../src/parallel/world.js";
import { median } from "./common.js";
import { tinyConfig } from "../test/model-util.js";

const args = process.argv.slice(2);
const opt = (name: string, d: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1]! : d;
};
const MODELS = opt("models", "default,mid").split(",");
const DTYPES = opt("dtypes", "f32,q8_0").split(",") as EngineDtype[];
const REPS = Number(opt("reps", "3"));
const DECODE = 48, PROMPT = 16, PREFILL = 256;

function config(name: string): ModelConfig {
  if (name === "default") return resolveConfig(preset("small-moe"));
  if (name === "mid") {
    return tinyConfig({
      family: "mixtral", vocabSize: 8192, hiddenSize: 768, numLayers: 6, numHeads: 12, numKvHeads: 12, headDim: 64, rope: { theta: 10000, rotaryDim: 64 },
      moe: { numExperts: 8, topK: 2, expertIntermediateSize: 1024, moeLayers: Array(6).fill(true) },
    });
  }
  throw new Error(`unknown model ${name} (default, mid)`);
}

const tok = (V: number): Tokenizer => ({ vocabSize: V, specialTokens: {}, eosId: undefined, encode: () => [], decode: () => "", toJSON: () => ({}) });

interface Setup {
  label: string;
  engine: Engine;
  tp: TensorParallel;
}

async function setup(full: EngineWeights, size: number, threads: number, group?: ProcessGroup): Promise<Setup> {
  const be = createBackend({ name: "native", threads, gemm: "builtin" });
  const tp = await TensorParallel.start(full, { size, backend: { backend: "native", threads, gemm: "builtin" }, group });
  const engine = new Engine(be, tp.weights, tok(full.cfg.vocabSize), { maxModelLen: 512, maxNumSeqs: 1, maxNumBatchedTokens: PREFILL, kvDtype: "bf16", prefixCaching: false });
  return { label: `tp ${size} × ${threads} thread${threads > 1 ? "s" : ""}${group ? ` (${group.backend} ranks)` : ""}`, engine, tp };
}

async function decode(e: Engine, V: number): Promise<{ tps: number; ids: number[] }> {
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919) % V);
  const p = validateSamplingParams({ temperature: 0, max_tokens: DECODE, ignore_eos: true }, { vocabSize: V, maxModelLen: 512 });
  let t1 = 0, n = 0;
  const ids: number[] = [];
  for await (const ev of e.submit(prompt, p)) {
    if (++n === 1) t1 = performance.now();
    ids.push(ev.id);
  }
  return { tps: (DECODE - 1) / ((performance.now() - t1) / 1e3), ids };
}

async function prefill(e: Engine, V: number): Promise<number> {
  const prompt = Array.from({ length: PREFILL }, (_, i) => (i * 104729) % V);
  const p = validateSamplingParams({ temperature: 0, max_tokens: 1 }, { vocabSize: V, maxModelLen: 512 });
  const t0 = performance.now();
  for await (const ev of e.submit(prompt, p)) void ev;
  return PREFILL / ((performance.now() - t0) / 1e3);
}

const load = () => loadavg()[0]!.toFixed(1);
const world = detectBackend() === "single" ? null : await initWorld();
const threads = Number(process.env.MOE_NUM_THREADS ?? 1);
if (world) {
  // tp = world size over the launched ranks: rank 0 measures, the others run their slices
  if (world.rank === 0) console.log(`tp bench over ${world.size} ${world.backend} ranks: ${DECODE}-token decode after ${PROMPT}, ${PREFILL}-token prefill, median of ${REPS}; load ${load()}`);
  for (const name of MODELS) {
    const w = new Weights(config(name), "f32").init(1234, 0.02);
    for (const dtype of DTYPES) {
      const V = w.cfg.vocabSize;
      if (world.rank > 0) {
        await runTpWorkerRank(() => engineWeights(w, { dtype }), world, createBackend({ name: "native", threads, gemm: "builtin" }));
        continue;
      }
      const full = engineWeights(w, { dtype });
      const ref = (await decode((await setup(full, 1, threads)).engine, V)).ids;
      const s = await setup(full, world.size, threads, world);
      const dec: number[] = [], pre: number[] = [];
      let same = true;
      for (let r = 0; r < REPS; r++) {
        const d = await decode(s.engine, V);
        dec.push(d.tps);
        same &&= d.ids.join() === ref.join();
        pre.push(await prefill(s.engine, V));
      }
      await s.tp.close();
      console.log(`${name} ${dtype} ${s.label}: decode ${median(dec).toFixed(1)} tok/s, prefill ${median(pre).toFixed(0)} tok/s; the tp 1 greedy tokens: ${same}; load ${load()}`);
    }
  }
  process.exit(0);
}
console.log(`tp bench: ${DECODE}-token decode after ${PROMPT}, ${PREFILL}-token prefill, median of ${REPS}; load ${load()}`);
for (const name of MODELS) {
  const cfg = config(name);
  const w = new Weights(cfg, "f32").init(1234, 0.02);
  for (const dtype of DTYPES) {
    const full = engineWeights(w, { dtype });
    const setups = [await setup(full, 1, 1), await setup(full, 1, 2), await setup(full, 2, 1)];
    const dec: number[][] = setups.map(() => []), pre: number[][] = setups.map(() => []);
    let ref: number[] | null = null, same = true;
    for (let r = 0; r < REPS; r++) {
      for (let i = 0; i < setups.length; i++) {
        const d = await decode(setups[i]!.engine, cfg.vocabSize);
        dec[i]!.push(d.tps);
        if (ref === null) ref = d.ids;
        else if (d.ids.join() !== ref.join()) same = false;
        pre[i]!.push(await prefill(setups[i]!.engine, cfg.vocabSize));
      }
    }
    setups.forEach((s, i) => console.log(`${name} ${dtype} ${s.label}: decode ${median(dec[i]!).toFixed(1)} tok/s, prefill ${median(pre[i]!).toFixed(0)} tok/s`));
    console.log(`${name} ${dtype}: same greedy tokens in every configuration: ${same}; load ${load()}`);
    for (const s of setups) await s.tp.close();
  }
}
