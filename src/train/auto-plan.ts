// `parallel.plan=auto`: rank 0 measures this machine (available memory, the engine's GEMM rate on
// a shape of the model's expert FFN at the run's thread count), asks the planner (plan/auto.ts) for
// the fastest layout the trainer executes on the launched ranks, and broadcasts it; every rank
// then sets parallel.dp / ep / pp / tp / edp / zero / pp_layers / recompute from it. One decision for all
// ranks: each measuring for itself could pick different layouts.
//
// Not: the planner's cost model (plan/), nor a way to change the rank count.
import { availableParallelism } from "node:os";
import { createBackend } from "../backend/index.js";
import { resolveConfig, type ModelConfig } from "../model/config.js";
import { readHfConfig } from "../model/checkpoint.js";
import type { ProcessGroup } from "../parallel/process-group.js";
import { autoLayout, type AutoLayout } from "../plan/auto.js";
import { applyObject, type TrainConfig } from "./config.js";
import { availableMemory } from "./memory.js";
import { buildRunHfConfig } from "./model-config.js";
import { dispatchOf } from "./setup.js";

/** The model the run will train, from the config alone (no tokenizer, no data). */
export function plannedModel(c: TrainConfig): ModelConfig {
  if (c.model.from) return resolveConfig(readHfConfig(c.model.from), dispatchOf(c));
  return resolveConfig(buildRunHfConfig(c, c.data.vocab_size), dispatchOf(c));
}

/** Sustained GEMM FLOP/s of one rank: the median of a few (B·T × C)·(C × F) products. */
export function measureRankFlops(cfg: ModelConfig, tokens: number, threads: number | null): number {
  const be = createBackend({ name: "native", threads: threads ?? 1 });
  const M = Math.min(Math.max(tokens, 64), 4096), K = cfg.hiddenSize, N = Math.max(cfg.moe.expertIntermediateSize, cfg.denseIntermediateSize, 64);
  const a = new Float32Array(M * K).fill(0.01), b = new Float32Array(K * N).fill(0.02), c = new Float32Array(M * N);
  const times: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t0 = performance.now();
    be.gemm(a, b, c, { M, N, K });
    if (r >= 2) times.push((performance.now() - t0) / 1e3);
  }
  times.sort((x, y) => x - y);
  return (2 * M * N * K) / times[times.length >> 1]!;
}

/** Applies the planner's layout to `c` on every rank; returns it (rank 0's decision). */
export function applyAutoPlan(c: TrainConfig, group: ProcessGroup | null, log: (s: string) => void): AutoLayout | null {
  const ranks = group?.size ?? 1, rank = group?.rank ?? 0;
  const cfg = plannedModel(c);
  const L = cfg.numLayers;
  const buf = new Float64Array(6 + 2 * L);
  let chosen: AutoLayout | null = null;
  if (rank === 0) {
    const threads = c.train.threads;
    const flopsPerRank = measureRankFlops(cfg, c.train.batch_size * c.train.seq_len, threads);
    chosen = autoLayout({
      cfg, ranks, backend: group?.backend === "mpi" ? "mpi" : "threads", seqLen: c.train.seq_len, microBatch: c.train.batch_size, gradAccum: c.train.grad_accum,
      availableMemory: availableMemory().available, flopsPerRank, supports: { ep: true, pp: true, tp: true }, cores: availableParallelism(), threads: threads ?? 1,
    });
    buf.set([chosen.dp, chosen.ep, chosen.pp, chosen.zero, chosen.tp, chosen.edp ? 1 : 0]);
    chosen.ppLayers.forEach((n, i) => (buf[6 + i] = n));
    chosen.recompute.forEach((n, i) => (buf[6 + L + i] = n));
    log(`parallel.plan=auto on ${ranks} rank(s) (measured ${(flopsPerRank / 1e9).toFixed(1)} GFLOP/s per rank): ${chosen.reasons[0]}`);
    for (const r of chosen.reasons.slice(1)) log(`  ${r}`);
    for (const o of chosen.others) log(`  runner-up: ${o.layout}, predicted ${o.step.toFixed(3)} s/step`);
  }
  group?.broadcastSync(buf, 0);
  const [dp, ep, pp, zero, tp, edp] = [buf[0]!, buf[1]!, buf[2]!, buf[3]!, buf[4]!, buf[5]! === 1];
  const rc = Array.from(buf.subarray(6 + L, 6 + L + pp));
  applyObject(c, {
    parallel: {
      dp, ep, pp, zero, tp, edp,
      pp_layers: pp > 1 ? Array.from(buf.subarray(6, 6 + pp)).join(",") : null,
      recompute: rc.some((x) => x > 0) ? rc.join(",") : null,
    },
  }, "parallel.plan=auto");
  return chosen;
}
