// Memory estimates from a resolved model config, before anything is allocated: weights per dtype,
// training state (gradients + AdamW moments), activations of a (B, T) step, KV cache per token;
// and the check that refuses a run whose estimate exceeds the memory available now (MemAvailable).
// The activation figure is an estimate (the main f32 buffers a forward + backward keeps per token:
// residual stream, attention projections and probabilities, the routed experts' hidden rows,
// logits and their gradient), not a measurement. Not: the allocation itself (model/params.ts).
import os from "node:os";
import { readFileSync } from "node:fs";
import { parameterCounts, type ModelConfig } from "../model/config.js";

export interface MemoryEstimate {
  parameters: number;
  /** Weights in bytes per storage dtype (f32 is what training and `logits` hold). */
  weights: { f32: number; bf16: number; q8_0: number; q4_0: number };
  /** Gradients + AdamW m and v, f32 (training only). */
  trainingState: number;
  /** Activation bytes per token of a training step (forward kept for backward), f32. */
  activationsPerToken: (T: number) => number;
  /** KV cache bytes per token of context (f32). */
  kvCachePerToken: number;
}

export function estimateMemory(cfg: ModelConfig): MemoryEstimate {
  const P = parameterCounts(cfg).total;
  const C = cfg.hiddenSize, L = cfg.numLayers, NH = cfg.numHeads, KVH = cfg.numKvHeads, HS = cfg.headDim;
  const F = Math.max(cfg.moe.expertIntermediateSize * cfg.moe.topK + cfg.moe.sharedExpertIntermediateSize, cfg.denseIntermediateSize);
  const perLayer = (T: number) => 10 * C + (NH + 2 * KVH) * HS * 2 + NH * T * 2 + 3 * F + cfg.moe.numExperts * 2;
  return {
    parameters: P,
    weights: { f32: 4 * P, bf16: 2 * P, q8_0: (34 / 32) * P, q4_0: (18 / 32) * P },
    trainingState: 3 * 4 * P,
    activationsPerToken: (T) => 4 * (L * perLayer(T) + 2 * cfg.vocabSize + 2 * C),
    kvCachePerToken: 4 * 2 * L * KVH * HS,
  };
}

/** Bytes a training step of B × T tokens needs: weights + training state + activations. */
export function trainingBytes(cfg: ModelConfig, B: number, T: number): number {
  const e = estimateMemory(cfg);
  return e.weights.f32 + e.trainingState + B * T * e.activationsPerToken(T);
}

export function formatBytes(n: number): string {
  const u = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(n >= 100 || i === 0 ? 0 : 1)} ${u[i]}`;
}

export class MemoryLimitError extends Error {
  override name = "MemoryLimitError";
}

/** The memory a new allocation can use: what the kernel reports available, and the machine's total. */
export interface MemoryInfo {
  /** Bytes available now (MemAvailable, capped by a cgroup limit; os.freemem() where /proc/meminfo is missing). */
  available: number;
  total: number;
  /** Where `available` came from (named in messages). */
  source: "MemAvailable" | "cgroup limit" | "os.freemem";
}

/** MemAvailable of /proc/meminfo (page cache and reclaimable memory count as available), else os.freemem(). */
export function availableMemory(): MemoryInfo {
  const total = os.totalmem();
  let available = os.freemem(), source: MemoryInfo["source"] = "os.freemem";
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync("/proc/meminfo", "utf8"));
    if (m) {
      available = Number(m[1]) * 1024;
      source = "MemAvailable";
    }
  } catch {
    /* not Linux: os.freemem() */
  }
  // a container's memory limit (cgroup v2) below what the machine has: its limit minus its usage
  try {
    const max = readFileSync("/sys/fs/cgroup/memory.max", "utf8").trim();
    const cur = Number(readFileSync("/sys/fs/cgroup/memory.current", "utf8").trim());
    if (/^\d+$/.test(max) && Number.isFinite(cur) && Number(max) - cur < available) {
      available = Math.max(0, Number(max) - cur);
      source = "cgroup limit";
    }
  } catch {
    /* no cgroup v2 limit */
  }
  return { available, total, source };
}

/**
 * Refuses `bytes` (what `what` needs) when it exceeds the memory available now (`mem`, by default
 * availableMemory(): MemAvailable, not the total), or one typed array's limit for the weight
 * arena; the message gives the figure and the available memory.
 */
export function checkFits(what: string, bytes: number, detail: string, arenaBytes?: number, mem: MemoryInfo = availableMemory()): void {
  if (!(bytes <= mem.available)) {
    throw new MemoryLimitError(`${what} needs about ${formatBytes(bytes)} (${detail}); this machine has ${formatBytes(mem.available)} of memory available (${mem.source}; ${formatBytes(mem.total)} in all)`);
  }
  // a Float32Array arena holds at most 2^32 − 1 elements on 64-bit V8
  if (arenaBytes !== undefined && arenaBytes / 4 > 2 ** 32 - 1) {
    throw new MemoryLimitError(`${what}: the weights (${formatBytes(arenaBytes)}) exceed one f32 array's limit of 2^32 − 1 values`);
  }
}

/** The check before a training run allocates its model. */
export function checkTrainingFits(cfg: ModelConfig, B: number, T: number, what = "this run"): void {
  const e = estimateMemory(cfg);
  const act = B * T * e.activationsPerToken(T);
  checkFits(what, e.weights.f32 + e.trainingState + act,
    `weights ${formatBytes(e.weights.f32)} + gradients and AdamW ${formatBytes(e.trainingState)} + activations ${formatBytes(act)} for batch ${B}×${T}`, e.weights.f32);
}
