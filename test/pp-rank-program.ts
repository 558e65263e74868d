// The pipeline case of test/train-pp.test.ts: a tiny model (tied embeddings, a dense layer among
// MoE layers, SparseMixer-style counter-based noise off) with generic parameters and M
// micro-batches, its single-rank reference (MoeModel forward/backward, no pipeline code), and
// the program every threads rank runs: one PipelineStage of the given layout, then the gradients
// summed over the world; rank 0 prints `RESULT {loss, grads}`. Imported outside a rank it only
// exports the helpers.
import { createBackend } from "../src/backend/index.js";
import { MoeModel } from "../src/model/model.js";
import { IGNORE_INDEX } from "../src/model/forward.js";
import { PipelineStage, createPipelineGroups, singleStageGroups, type MicroBatch, type PipelineGroups, type PipelinePartition } from "../src/parallel/pipeline.js";
import { inThreadsWorker } from "../src/parallel/threads.js";
import { initWorld } from "../src/parallel/world.js";
import { randomizeParams, tinyConfig } from "./model-util.js";
import { randInt } from "./util.js";

export const M = 3;
const B = 2, T = 5;

export function ppCase(): { model: MoeModel; batches: MicroBatch[] } {
  const cfg = tinyConfig({ numLayers: 4, tieEmbeddings: true, moe: { moeLayers: [true, false, true, true] } });
  const be = createBackend({ name: "ref" });
  const model = new MoeModel(cfg, be, { B, T });
  randomizeParams(model, 7);
  const batches = Array.from({ length: M }, (_, k) => {
    const inputs = randInt(B * T, cfg.vocabSize, 100 + k);
    const targets = randInt(B * T, cfg.vocabSize, 200 + k);
    targets[k] = IGNORE_INDEX; // a different count of valid targets per micro-batch
    return { inputs, targets };
  });
  return { model, batches };
}

const opt = (k: number) => ({ train: true, seed: 5, step: k, auxCoefs: [0.01, 0, 0.02, 0.03], balance: "switch" as const, zCoef: 1e-3 });

/** Single rank, no pipeline code: Σ_k loss_k / M and the gradients of the mean loss. */
export function reference(): { loss: number; grads: Float32Array } {
  const { model, batches } = ppCase();
  model.zeroGrad();
  let loss = 0;
  batches.forEach((b, k) => {
    loss += model.forward(b.inputs, b.targets, opt(k)).loss / M;
    model.backward(1 / M);
  });
  return { loss, grads: Float32Array.from(model.grads) };
}

/** One stage of the layout over a fresh copy of the case; its loss share and its gradients. */
export function stageRun(groups: PipelineGroups, layout: PipelinePartition): { loss: number; grads: Float32Array } {
  const { model, batches } = ppCase();
  model.zeroGrad();
  const stage = new PipelineStage(model.be, model.weights, model.gradients, model.cfg, { B, T }, groups, layout, M);
  const loss = stage.step(batches, opt, 1 / M).reduce((s, r) => s + r.loss / M, 0);
  return { loss, grads: Float32Array.from(model.grads) };
}

/** Reference computed through a one-stage pipeline (recompute only). */
export function singleStage(recompute: number): { loss: number; grads: Float32Array } {
  return stageRun(singleStageGroups(), { partition: [4], recompute: [recompute] });
}

if (inThreadsWorker()) {
  const [partition, recompute] = process.argv.slice(2).map((s) => s.split(",").map(Number)) as [number[], number[]];
  const world = await initWorld();
  const groups = await createPipelineGroups(world, partition.length);
  const r = stageRun(groups, { partition, recompute });
  const lossBuf = Float64Array.of(r.loss);
  world.allreduceSync(lossBuf, "sum");
  world.allreduceSync(r.grads, "sum");
  if (world.rank === 0) console.log(`RESULT ${JSON.stringify({ loss: lossBuf[0], grads: Array.from(r.grads) })}`);
  await world.close();
}
