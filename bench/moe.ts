// `npm run bench:moe`: the MoE layer and model benchmarks of the MoE-transformer issue.
//  1. One MoE layer forward+backward (T=4096, d=512, E=8, K=2, F=1408, dropless) at 1 and
//     2 threads, next to PyTorch 1.13's Mixtral-style layer (bench/moe_torch.py) in the same run.
//  2. Training-step throughput (fwd + bwd + AdamW) of a dropless MoE model vs a dense model
//     with the same active parameters (dense FFN hidden = K·F), same run.
//  3. Capacity mode (CF 1.0, 1.25) vs dropless: tokens/s and drop rate.
// FLOPs of one MoE layer fwd+bwd: router 2·T·C·E·3 + experts 3·(2·T·K·C·2F + 2·T·K·F·C) (fwd 1×, bwd 2×).
import { createBackend, type Backend } from "../src/backend/index.js";
import { MoeLayerState, MoeScratch, moeBackward, moeForward } from "../src/moe/layer.js";
import type { MoeConfig, ModelConfig } from "../src/model/config.js";
import { MoeModel, initParams } from "../src/model/model.js";
import { singleProcessGroup } from "../src/parallel/group.js";
import { createRng } from "../src/core/rng.js";
import { header, note, parseFlags, report, timeInterleaved, timeMs, torchPeerRun, wants, type BenchFlags } from "./common.js";

function randn(n: number, std: number, seed: number): Float32Array {
  const r = createRng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.normal() * std;
  return a;
}

function layerBench(flags: BenchFlags, threads: number, reps: number): void {
  const T = 4096, C = 512, E = 8, K = 2, F = 1408;
  const be = createBackend({ name: "native", threads });
  const cfg: MoeConfig = {
    numExperts: E, topK: K, expertIntermediateSize: F, moeLayers: [true], sharedExpertIntermediateSize: 0,
    router: { kind: "softmax_topk", topK: K, normTopkProb: true }, dispatch: { kind: "dropless" }, inputJitter: 0,
  };
  const st = new MoeLayerState(Float32Array, T, C, cfg);
  const sc = new MoeScratch(Float32Array, T, C, cfg);
  const w = { router: randn(E * C, 0.02, 1), w13: randn(E * 2 * F * C, 0.02, 2), w2: randn(E * C * F, 0.02, 3) };
  const dw = { router: new Float32Array(E * C), w13: new Float32Array(E * 2 * F * C), w2: new Float32Array(E * C * F) };
  const x = randn(T * C, 1, 4), dy = randn(T * C, 1, 5), y = new Float32Array(T * C), dx = new Float32Array(T * C);
  const opt = { train: true, balance: "none" as const, auxCoef: 0, zCoef: 0, group: singleProcessGroup(), virtualCapacityFactor: 1.25 };
  const ms = timeMs(() => {
    moeForward(be, st, w, y, x, opt);
    moeBackward(be, st, w, dw, sc, dx, dy, x, 1);
  }, reps);
  const flops = 3 * (2 * T * C * E + 2 * T * K * C * 2 * F + 2 * T * K * F * C);
  const peer = torchPeerRun("moe_torch.py", [T, C, E, K, F, threads, reps], threads);
  const peerMs = peer?.ms ?? null;
  report(flags, {
    bench: "moe_layer_fwd_bwd", case: `T${T}_d${C}_E${E}_K${K}_F${F}`, threads, value: ms, unit: "ms",
    peer: "pytorch-1.13 mixtral loop", peer_value: peerMs, ratio: peerMs === null ? null : peerMs / ms, peer_cpu: peer?.cpu ?? null,
  });
  note(flags, `  ours ${(flops / ms / 1e6).toFixed(1)} GFLOP/s; ratio = PyTorch ms / our ms (PyTorch with OMP/OPENBLAS/MKL_NUM_THREADS=${threads}, OMP_WAIT_POLICY=PASSIVE)`);
}

function modelCfg(kind: "moe" | "dense", dispatch: MoeConfig["dispatch"]): ModelConfig {
  const L = 4, C = 256, E = 8, K = 2, F = 512;
  return {
    family: "mixtral", vocabSize: 4096, hiddenSize: C, numLayers: L, numHeads: 4, numKvHeads: 4, headDim: 64,
    norm: { kind: "rms", eps: 1e-5 }, rope: { theta: 1e4, rotaryDim: 64 }, slidingWindow: 0, qkvBias: false, oBias: false,
    qkNorm: "none", tieEmbeddings: false, lmHeadBias: false, denseIntermediateSize: K * F,
    moe: {
      numExperts: E, topK: K, expertIntermediateSize: F, moeLayers: new Array(L).fill(kind === "moe"), sharedExpertIntermediateSize: 0,
      router: { kind: "softmax_topk", topK: K, normTopkProb: true }, dispatch, inputJitter: 0,
    },
  };
}

/** A closure running one training step (fwd + bwd + AdamW) of a fresh model; `drop` reads the last mean drop rate. */
function trainStep(be: Backend, cfg: ModelConfig, B: number, T: number): { run: () => void; drop: () => number } {
  const m = new MoeModel(cfg, be, { B, T });
  initParams(m, 7, 0.02);
  const r = createRng(11);
  const ids = Int32Array.from({ length: B * T }, () => r.int(cfg.vocabSize));
  const tg = Int32Array.from({ length: B * T }, () => r.int(cfg.vocabSize));
  const mom = new Float32Array(m.params.length), vel = new Float32Array(m.params.length);
  let step = 0, drop = 0;
  return {
    run: () => {
      m.zeroGrad();
      const res = m.forward(ids, tg, { train: true, balance: "skywork", auxCoefs: new Array(cfg.numLayers).fill(0.01) });
      m.backward(1);
      be.adamw(m.params as Float32Array, m.grads as Float32Array, mom, vel, { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step });
      const layers = res.moe.filter((x) => x !== undefined);
      drop = layers.length ? layers.reduce((a, x) => a + x!.dropRate, 0) / layers.length : 0;
    },
    drop: () => drop,
  };
}

async function main(): Promise<void> {
  const flags = parseFlags(process.argv.slice(2), ["layer", "model"]);
  const reps = 5;
  if (wants(flags, "layer")) {
    header(flags, "one MoE layer forward+backward (ratio = PyTorch time / ours)");
    for (const t of flags.threads) layerBench(flags, t, reps);
  }
  if (wants(flags, "model")) {
    header(flags, "training step tokens/s: MoE vs dense (same active params), capacity vs dropless");
    const B = 4, T = 256, N = B * T;
    for (const t of flags.threads) {
      const be = createBackend({ name: "native", threads: t });
      const runs = [
        trainStep(be, modelCfg("moe", { kind: "dropless" }), B, T),
        trainStep(be, modelCfg("dense", { kind: "dropless" }), B, T),
        trainStep(be, modelCfg("moe", { kind: "capacity", capacityFactor: 1.0, policy: "probs" }), B, T),
        trainStep(be, modelCfg("moe", { kind: "capacity", capacityFactor: 1.25, policy: "probs" }), B, T),
      ];
      const secs = timeInterleaved(runs.map((r) => r.run), reps, 1);
      const tps = secs.map((s) => N / s);
      report(flags, { bench: "train_step", case: "moe_dropless_vs_dense", threads: t, value: tps[0]!, unit: "tok/s", peer: "dense, same active params", peer_value: tps[1]!, ratio: tps[0]! / tps[1]! });
      for (const [i, cf] of [[2, 1.0], [3, 1.25]] as const) {
        report(flags, { bench: "train_step", case: `capacity_CF${cf}`, threads: t, value: tps[i]!, unit: "tok/s", peer: "dropless", peer_value: tps[0]!, ratio: tps[i]! / tps[0]! });
        note(flags, `  capacity CF ${cf}: drop rate ${(runs[i]!.drop() * 100).toFixed(2)}% (dropless virtual rate at CF 1.25 is reported by the model stats)`);
      }
      note(flags, `  ms/step: moe ${(secs[0]! * 1e3).toFixed(1)}, dense ${(secs[1]! * 1e3).toFixed(1)}`);
    }
  }
}

await main();
