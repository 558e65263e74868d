// `npm run bench:train`: training throughput (tokens/s, ms/step, model FLOP utilisation) of the
// default training config and of a ~50M-parameter MoE, next to the same models trained by
// PyTorch 1.13 (bench/train_torch.py: same architecture, dropless HF-style expert loop,
// torch.optim.AdamW) at the same thread count, in the same run.
// One step = forward + backward + AdamW on random tokens (data loading excluded on both sides).
// Model FLOPs per token (fwd+bwd) = 6·(active matmul parameters, LM head included, embeddings
// excluded) + 6·L·T·NH·HS (causal attention scores and values: 2 matmuls × 2 FLOPs × T/2 keys × 3).
// Utilisation is quoted against the built-in GEMM's own 2048×1024×1024 GFLOP/s measured in the
// same run at the same thread count (the achievable matmul peak of this CPU).
import { createBackend, type Backend } from "../src/backend/index.js";
import { resolveConfig, type ModelConfig } from "../src/model/config.js";
import { MoeModel, initParams } from "../src/model/model.js";
import { preset } from "../src/model/presets.js";
import { buildRunHfConfig } from "../src/train/trainer.js";
import { defaultTrainConfig } from "../src/train/config.js";
import { createOptimState, gradNorm, optimStep } from "../src/train/optim.js";
import { createRng } from "../src/core/rng.js";
import { header, note, parseFlags, report, timeMs, torchPeerRun, type PeerRun, type BenchFlags } from "./common.js";

interface Case {
  name: string;
  cfg: ModelConfig;
  B: number;
  T: number;
}

function cases(): Case[] {
  const c = defaultTrainConfig();
  const dflt = resolveConfig(buildRunHfConfig(c, 4096));
  const big = { ...c, model: { ...c.model, preset: "moe-50m" } };
  const m50 = resolveConfig(buildRunHfConfig(big, Number(preset("moe-50m").vocab_size)));
  return [
    { name: "default (small-moe, skywork router)", cfg: dflt, B: c.train.batch_size, T: c.train.seq_len },
    { name: "moe-50m (skywork router)", cfg: m50, B: 8, T: 256 },
  ];
}

function activeMatmulParams(cfg: ModelConfig): number {
  const { hiddenSize: C, numHeads: NH, numKvHeads: KVH, headDim: HS, vocabSize: V } = cfg;
  const F = cfg.moe.expertIntermediateSize, K = cfg.moe.topK, E = cfg.moe.numExperts;
  const attn = C * NH * HS * 2 + C * KVH * HS * 2;
  return cfg.numLayers * (attn + E * C + K * 3 * C * F) + V * C;
}

function ourStep(be: Backend, k: Case, reps: number): number {
  const m = new MoeModel(k.cfg, be, { B: k.B, T: k.T });
  initParams(m, 7, 0.02);
  const r = createRng(11);
  const ids = Int32Array.from({ length: k.B * k.T }, () => r.int(k.cfg.vocabSize));
  const tg = Int32Array.from({ length: k.B * k.T }, () => r.int(k.cfg.vocabSize));
  const st = createOptimState(m.params);
  const step = () => {
    m.zeroGrad();
    m.forward(ids, tg, { train: true, balance: "skywork", auxCoefs: new Array(k.cfg.numLayers).fill(0.01), zCoef: 1e-3 });
    m.backward(1);
    optimStep(be, m.layout, m.params, m.grads, st, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 }, 1e-4, gradNorm(be, m.grads));
  };
  return timeMs(step, reps);
}

function torchStep(k: Case, threads: number, reps: number): PeerRun | null {
  const c = k.cfg;
  const args = [c.vocabSize, c.hiddenSize, c.numLayers, c.numHeads, c.numKvHeads, c.moe.numExperts, c.moe.topK, c.moe.expertIntermediateSize, k.B, k.T, threads, reps];
  return torchPeerRun("train_torch.py", args, threads);
}

function gemmPeak(be: Backend): number {
  const M = 2048, K = 1024, N = 1024;
  const a = new Float32Array(M * K).fill(0.5), b = new Float32Array(K * N).fill(0.25), c = new Float32Array(M * N);
  return (2 * M * N * K) / timeMs(() => be.gemm(a, b, c, { M, N, K }), 25) / 1e6;
}

function main(flags: BenchFlags): void {
  const reps = 5;
  header(flags, "training step (fwd+bwd+AdamW) tokens/s vs PyTorch 1.13 at the same threads (ratio = ours / PyTorch)");
  // GEMM peaks first, on a quiet machine (no PyTorch child running or just exited)
  const peaks = new Map(flags.threads.map((t) => [t, gemmPeak(createBackend({ name: "native", threads: t }))]));
  for (const k of cases()) {
    const flopsPerToken = 6 * activeMatmulParams(k.cfg) + 6 * k.cfg.numLayers * k.T * k.cfg.numHeads * k.cfg.headDim;
    for (const t of flags.threads) {
      const be = createBackend({ name: "native", threads: t });
      const peak = peaks.get(t)!;
      const ms = ourStep(be, k, reps);
      const peer = torchStep(k, t, reps);
      const tms = peer?.ms ?? null;
      const tok = k.B * k.T;
      const ours = tok / (ms / 1e3), theirs = tms === null ? null : tok / (tms / 1e3);
      report(flags, { bench: "train", case: k.name, threads: t, value: ours, unit: "tok/s", peer: theirs === null ? null : "pytorch-1.13 same model + AdamW", peer_value: theirs, ratio: theirs === null ? null : ours / theirs, peer_cpu: peer?.cpu ?? null });
      const mfu = (flopsPerToken * ours) / 1e9 / peak;
      note(flags, `  ${tok} tokens/step: ours ${ms.toFixed(1)} ms/step, PyTorch ${tms === null ? "-" : tms.toFixed(1)} ms/step; model ${(flopsPerToken * ours / 1e9).toFixed(1)} GFLOP/s = ${(mfu * 100).toFixed(1)}% of the built-in GEMM peak ${peak.toFixed(0)} GFLOP/s (${t} threads)`);
      if (flags.json) console.log(JSON.stringify({ bench: "train_mfu", case: k.name, threads: t, value: mfu, unit: "fraction of GEMM peak", peer: "gemm 2048x1024x1024", peer_value: peak, ratio: null }));
    }
  }
}

main(parseFlags(process.argv.slice(2), []));
