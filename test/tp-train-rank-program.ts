// The tensor-parallel case of test/train-tp.test.ts: a tiny model (config patch given as JSON)
// with generic parameters and M micro-batches, its single-rank reference (plain MoeModel
// forward/backward of the full model), and the program every threads rank runs: a tp × dp mesh,
// (third argument `edp`: experts whole, split over the TP ranks; `ep=N`: EP × ETP, the experts
// split over N data-parallel replicas, tokens through the EP all-to-all) this rank's slice of the
// same model (parallel/tensor-parallel.ts), its dp share of the micro-batches, the TP gradient
// fix-ups, the DP sum (EP: dense over dp, experts over expDp), then the full gradients gathered
// from the slices; rank 0 prints `RESULT {loss, grads, tpLosses}`. Imported outside a rank it only exports
// the helpers.
import { createBackend } from "../src/backend/index.js";
import { MoeModel } from "../src/model/model.js";
import { IGNORE_INDEX, type StepOptions } from "../src/model/forward.js";
import type { ModelConfig } from "../src/model/config.js";
import { inThreadsWorker } from "../src/parallel/threads.js";
import { initWorld } from "../src/parallel/world.js";
import { createMesh } from "../src/parallel/mesh.js";
import { TensorParallelLayout } from "../src/parallel/tensor-parallel.js";
import { EpGradientReducer, ExpertParallel, ExpertShard } from "../src/parallel/expert-parallel.js";
import { randomizeParams, tinyConfig } from "./model-util.js";
import { randInt } from "./util.js";

export const M = 4;
const B = 2, T = 5;

export type CasePatch = Parameters<typeof tinyConfig>[0];

export function tpCase(patch: CasePatch): { cfg: ModelConfig; model: MoeModel; batches: { inputs: Int32Array; targets: Int32Array }[] } {
  const cfg = tinyConfig(patch);
  const model = new MoeModel(cfg, createBackend({ name: "ref" }), { B, T });
  randomizeParams(model, 11);
  const batches = Array.from({ length: M }, (_, k) => {
    const inputs = randInt(B * T, cfg.vocabSize, 100 + k);
    const targets = randInt(B * T, cfg.vocabSize, 200 + k);
    targets[k] = IGNORE_INDEX;
    return { inputs, targets };
  });
  return { cfg, model, batches };
}

const opt = (cfg: ModelConfig, k: number): StepOptions => ({
  train: true, seed: 5, step: k, auxCoefs: cfg.moe.moeLayers.map((m, l) => (m ? 0.01 * (l + 1) : 0)), balance: "switch", zCoef: 1e-3,
});

/** Single rank: Σ_k loss_k / M and the gradients of the mean loss. */
export function reference(patch: CasePatch): { loss: number; grads: Float32Array } {
  const { cfg, model, batches } = tpCase(patch);
  model.zeroGrad();
  let loss = 0;
  batches.forEach((b, k) => {
    loss += model.forward(b.inputs, b.targets, opt(cfg, k)).loss / M;
    model.backward(1 / M);
  });
  return { loss, grads: Float32Array.from(model.grads) };
}

if (inThreadsWorker()) {
  const [patchJson, tpArg, mode] = process.argv.slice(2) as [string, string, string | undefined];
  const patch = JSON.parse(patchJson) as CasePatch, tp = Number(tpArg);
  const world = await initWorld();
  const ep = mode?.startsWith("ep=") ? Number(mode.slice(3)) : 1;
  const mesh = await createMesh(world, { tp, ep });
  const { cfg, model: full, batches } = tpCase(patch);
  const epRank = ep > 1 ? { size: ep, rank: mesh.ep.rank } : null;
  const layout = new TensorParallelLayout(cfg, mesh.tp.rank, tp, mode === "edp", epRank);
  const epCtx = ep > 1 ? new ExpertParallel(mesh.ep, cfg.moe.numExperts) : undefined;
  const local = new MoeModel(layout.localCfg, full.be, { B, T, tp: layout.context(mesh.tp) }, layout.weights());
  layout.slice(full.params, local.params);
  local.zeroGrad();
  const dp = mesh.sizes.dp, mine = M / dp;
  let loss = 0;
  for (let k = mesh.coord.dp * mine; k < (mesh.coord.dp + 1) * mine; k++) {
    loss += local.forward(batches[k]!.inputs, batches[k]!.targets, { ...opt(cfg, k), ep: epCtx }).loss / M;
    local.backward(1 / M);
  }
  layout.finishGradients(local.grads, mesh.tp);
  if (epCtx) new EpGradientReducer(new ExpertShard(layout.localCfg, ep, mesh.ep.rank).localRanges, mesh).reduce(local.grads);
  else mesh.dp.allreduceSync(local.grads as Float32Array, "sum");
  const lossBuf = Float64Array.of(loss);
  mesh.dp.allreduceSync(lossBuf, "sum");
  // every TP rank must report the same loss
  const tpLosses = new Float64Array(tp);
  tpLosses[mesh.tp.rank] = lossBuf[0]!;
  mesh.tp.allreduceSync(tpLosses, "sum");
  const grads = layout.gather(local.grads, mesh.tp, epCtx ? mesh.ep : undefined);
  const params = layout.gather(local.params, mesh.tp, epCtx ? mesh.ep : undefined);
  const sameParams = params.every((v, i) => v === full.params[i]);
  if (world.rank === 0) console.log(`RESULT ${JSON.stringify({ loss: lossBuf[0], grads: Array.from(grads), tpLosses: Array.from(tpLosses), sameParams })}`);
  await world.close();
}
