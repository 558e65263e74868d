// This machine's rates for the planner's cost model (plan/cost.ts), measured with the engine's own
// kernels on one rank at the run's thread count:
//   - compute: forward + backward of one micro-batch of the model with all its layers and of the
//     same model with one layer (median of a few repetitions each). The difference gives one
//     layer's time, the rest is head, loss and embedding; each divided into the planner's own
//     FLOP count gives the layers' sustained FLOP/s and the head's rate relative to it
//     (CostOptions.headEfficiency; 1 when the head is too small to time apart from the layers).
//     Non-GEMM work (norms, softmax, routing, gathers) is inside
//     these times, which is why a training-step rate predicts a small model's step and a GEMM
//     rate does not (README "Planning a layout").
//   - optimizer: AdamW, the gradient-norm pass and the trainer's other per-step gradient passes
//     (zeroing before the micro-batches, clipping after the norm) over an arena of the model's
//     size, seconds per parameter (CostOptions.optimizerSecondsPerParam, normSecondsPerParam,
//     gradPassSecondsPerParam).
//
// Not: the link costs (bench/plan-check.ts measures the process-group backend's collectives and
// fits α–β with plan/auto.ts fitLink), nor a GEMM calibration (train/auto-plan.ts measureRankFlops).
import { createBackend } from "../backend/index.js";
import type { HfConfig, ModelConfig } from "../model/config.js";
import { resolveConfig } from "../model/config.js";
import { MoeModel } from "../model/model.js";
import { LayoutCost, DEFAULT_COST, PRECISIONS } from "../plan/cost.js";
import { planModelFromConfig } from "../plan/plan-model.js";

export interface ComputeRates {
  /** Sustained FLOP/s of the transformer layers (planner FLOP count / measured time). */
  layerFlops: number;
  /** Head, loss and embedding rate over layerFlops (1 when not resolved). */
  headEfficiency: number;
  /** False when the head's time was below HEAD_RESOLVED of the one-layer model's (noise). */
  headResolved: boolean;
  /** Measured seconds per micro-batch, forward + backward: the whole model and one layer of it. */
  fullSeconds: number;
  oneLayerSeconds: number;
}

export interface OptimizerRates {
  optimizerSecondsPerParam: number;
  normSecondsPerParam: number;
  /** Zeroing plus clipping (a scale) of the gradient arena. */
  gradPassSecondsPerParam: number;
}

/** Share of the one-layer model's time below which the head's own time is not trusted. */
export const HEAD_RESOLVED = 0.1;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

export function timeFwdBwd(cfg: ModelConfig, B: number, T: number, threads: number, reps: number): number {
  const be = createBackend({ name: "native", threads });
  const model = new MoeModel(cfg, be, { B, T });
  model.weights.init(1, 0.02);
  const ids = new Int32Array(B * T), targets = new Int32Array(B * T);
  for (let i = 0; i < B * T; i++) {
    ids[i] = (i * 7919) % cfg.vocabSize;
    targets[i] = (i * 104729 + 13) % cfg.vocabSize;
  }
  const t: number[] = [];
  for (let r = 0; r < reps + 1; r++) {
    const t0 = performance.now();
    model.forward(ids, targets, { train: true, seed: 1, step: r });
    model.backward(1);
    if (r > 0) t.push((performance.now() - t0) / 1e3);
  }
  return median(t);
}

/** Layer and head rates of the model `hf` at micro-batch B × T on `threads` engine threads. */
export function measureComputeRates(hf: HfConfig, B: number, T: number, threads = 1, reps = 5): ComputeRates {
  const cfg = resolveConfig(hf);
  const L = cfg.numLayers;
  if (L < 2) throw new Error(`compute calibration needs a model of ≥ 2 layers, got ${L}`);
  const one = resolveConfig({ ...hf, num_hidden_layers: 1 } as HfConfig);
  const full = timeFwdBwd(cfg, B, T, threads, reps), first = timeFwdBwd(one, B, T, threads, reps);
  const layerSec = Math.max((full - first) / (L - 1), 1e-9);
  const headSec = first - layerSec;
  // the planner's FLOPs of the same work (forward; backward = 2×)
  const pm = planModelFromConfig(cfg, "calibration");
  const cluster = { nodes: 1, devicesPerNode: 1, memoryBytes: 1e15, flops: 1, flopsSource: "calibration", intraNode: { bandwidth: 1, latency: 0 }, interNode: { bandwidth: 1, latency: 0 } };
  const lc = new LayoutCost(pm, { seqLen: T, microBatch: B, globalBatch: B }, cluster, { dp: 1, tp: 1, pp: 1, expert: "etp", ep: 1 }, { ...DEFAULT_COST, precision: PRECISIONS.f32! });
  const layerFlops = lc.layer.reduce((s, c) => s + c.fwdFlops, 0) / L;
  const layerRate = (3 * layerFlops) / layerSec;
  // a head under HEAD_RESOLVED of the one-layer model's time is within the timing noise (a small
  // vocabulary): its rate cannot be told from the layers', so it gets theirs
  const resolved = headSec >= HEAD_RESOLVED * first;
  const headEfficiency = resolved ? (3 * lc.headFlops()) / headSec / layerRate : 1;
  return { layerFlops: layerRate, headEfficiency, headResolved: resolved, fullSeconds: full, oneLayerSeconds: first };
}

/**
 * The model one tensor-parallel rank computes, as a single-rank config: heads, KV heads, dense,
 * expert and shared-expert FFN columns divided by `tp` (the busiest rank's ⌈n/tp⌉), head size,
 * hidden size, experts and vocabulary unchanged. Its layer rate (measureComputeRates) is a TP
 * rank's: the planner's FLOPs of this config are the TP rank's, while the norms, residuals,
 * router and dispatch that every TP rank runs whole stay in its time.
 */
export function tpRankConfig(hf: HfConfig, tp: number): HfConfig {
  if (!Number.isInteger(tp) || tp < 1) throw new RangeError(`tpRankConfig: tp must be a positive integer, got ${tp}`);
  const cfg = resolveConfig(hf);
  const d = (n: number) => Math.ceil(n / tp);
  const x = hf as HfConfig & { moe_intermediate_size?: number; shared_expert_intermediate_size?: number };
  return {
    ...hf, head_dim: cfg.headDim, num_attention_heads: d(cfg.numHeads), num_key_value_heads: d(cfg.numKvHeads), intermediate_size: d(hf.intermediate_size),
    ...(x.moe_intermediate_size !== undefined ? { moe_intermediate_size: d(x.moe_intermediate_size) } : {}),
    ...(x.shared_expert_intermediate_size !== undefined ? { shared_expert_intermediate_size: d(x.shared_expert_intermediate_size) } : {}),
  } as HfConfig;
}

/** AdamW, gradient-norm and zero + clip seconds per parameter over an arena of `params` elements. */
export function measureOptimizerRates(params: number, threads = 1, reps = 5): OptimizerRates {
  const be = createBackend({ name: "native", threads });
  const p = new Float32Array(params).fill(0.1), g = new Float32Array(params).fill(0.01), m = new Float32Array(params), v = new Float32Array(params);
  const upd: number[] = [], norm: number[] = [], pass: number[] = [];
  for (let r = 0; r < reps + 1; r++) {
    // the trainer's order: zero (Gradients.zero is a fill), norm, clip (a scale), AdamW
    const t0 = performance.now();
    g.fill(0);
    const t1 = performance.now();
    be.sumSquares(g);
    const t2 = performance.now();
    be.scale(g, g, 0.5);
    const t3 = performance.now();
    be.adamw(p, g, m, v, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: r + 1 });
    const t4 = performance.now();
    if (r > 0) {
      pass.push((t1 - t0 + t3 - t2) / 1e3);
      norm.push((t2 - t1) / 1e3);
      upd.push((t4 - t3) / 1e3);
    }
  }
  return { optimizerSecondsPerParam: median(upd) / params, normSecondsPerParam: median(norm) / params, gradPassSecondsPerParam: median(pass) / params };
}
