// Sharded run checkpoints of a run on several ranks (data or pipeline parallel: after each step
// every rank holds the whole parameter arena, and ZeRO-1 splits the optimizer state over all of
// them; tensor and expert parallel runs gather their slices into that form first): every rank
// writes its own part, nothing is gathered onto one rank, and the checkpoint loads at any other
// layout (resharding on read).
//
// Layout of checkpoints/step-N/ written by dp ranks:
//   model-0000r-of-0000n.safetensors  the HF tensors rank r-1 owns (a contiguous, byte-balanced
//                                     run of the layout's tensors; weights are replicated in DP,
//                                     so the split only spreads the writing)
//   model.safetensors.index.json      the standard HF index over those files (rank 0)
//   optim-0000r-of-0000n.safetensors  optim.m / optim.v of the arena range [lo, hi) of rank r-1
//                                     (its ZeRO-1 slice; with ZeRO-0 the same range of its copy)
//   config.json, tokenizer.json       rank 0
//   trainer_state.json                rank 0, LAST, once every rank reported its shard written:
//                                     the trainer state plus `shards` (layout, files, ranges)
// Every file is written atomically into the hidden temp folder `.step-N.tmp-<rank 0's pid>`
// (the name cleanStaleTemps removes at the next start once that pid is dead); the folder is
// renamed into place and LATEST replaced only after trainer_state.json exists. A rank that
// fails makes every rank throw (flags all-reduced) and the temp folder is removed, so a crash
// or error never leaves a checkpoint that looks complete. Because the model part is an HF
// sharded checkpoint, `moe export`, `moe inspect`, `model.from` read it as one model.
//
// Reading (loadOptimRange): either this format or the gathered one (trainer_state.safetensors
// with the whole optim.m / optim.v, written by one-rank runs); any range [lo, hi) of the
// arena is assembled from the shards that overlap it, so dp=2 ZeRO-1 resumes at dp=1 and back.
//
// Not: the one-rank checkpoint writer (checkpoints.ts), nor the HF model loader.
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import path from "node:path";
import { INDEX_FILE, SafetensorsFile, writeFileAtomic, writeSafetensors, type TensorToWrite } from "../io/safetensors.js";
import type { ProcessGroup } from "../parallel/process-group.js";
import type { Weights } from "../model/weights.js";
import type { HfConfig } from "../model/config.js";
import { CONFIG_FILE, hfConfigJson } from "../model/checkpoint.js";
import type { FArr } from "../nn/dims.js";
import type { OptimState } from "./optim.js";
import { checkpointsDir, publishCheckpoint, stepName, type TrainerStateJson } from "./checkpoints.js";

/** The `shards` entry of a sharded checkpoint's trainer_state.json (the index). */
export interface ShardIndex {
  version: 1;
  /** The layout that wrote it (informational: any layout can read it): ranks writing, ZeRO stage. */
  layout: { ranks: number; zero: number };
  /** Elements of the parameter arena (= of optim.m and optim.v). */
  params: number;
  /** Optimizer shards, sorted by lo, covering [0, params) without gaps. */
  optim: { file: string; lo: number; hi: number }[];
  /** The HF model files (listed in model.safetensors.index.json). */
  model: string[];
}

export class ShardCheckpointError extends Error {
  override name = "ShardCheckpointError";
}

const pad5 = (i: number) => String(i).padStart(5, "0");

/** ZeRO-1's split of an arena of `size` elements over `dp` ranks: [r·chunk, (r+1)·chunk) ∩ [0, size). */
export function zeroRange(size: number, dp: number, rank: number): { lo: number; hi: number; chunk: number } {
  const chunk = Math.ceil(size / dp);
  return { lo: Math.min(size, rank * chunk), hi: Math.min(size, (rank + 1) * chunk), chunk };
}

/**
 * Which HF tensors each of `parts` ranks writes: consecutive runs of the layout's tensors,
 * balanced by bytes (a tensor goes to the part its middle falls in). Deterministic: every rank
 * computes the same plan. Parts may be empty (more ranks than tensors).
 */
export function modelShardPlan(slots: readonly { name: string; size: number }[], parts: number): number[][] {
  const total = slots.reduce((s, t) => s + t.size, 0);
  const plan: number[][] = Array.from({ length: parts }, () => []);
  let cum = 0;
  slots.forEach((t, i) => {
    const p = total > 0 ? Math.min(parts - 1, Math.floor(((cum + t.size / 2) * parts) / total)) : 0;
    plan[p]!.push(i);
    cum += t.size;
  });
  return plan;
}

/** Every rank learns which ranks failed (flag all-reduced); all throw when any did. */
function agree(g: ProcessGroup, err: unknown, what: string, onFail: () => void): void {
  const flags = new Int32Array(g.size);
  flags[g.rank] = err ? 1 : 0;
  g.allreduceSync(flags, "sum");
  const bad = [...flags].flatMap((f, r) => (f ? [r] : []));
  if (bad.length === 0) return;
  try {
    onFail();
  } catch {
    /* the temp folder is removed at the next start anyway */
  }
  if (err) throw err;
  throw new ShardCheckpointError(`${what}: rank(s) ${bad.join(", ")} failed (their error is printed by them); no checkpoint was written`);
}

export interface ShardedSaveArgs {
  outDir: string;
  group: ProcessGroup;
  weights: Weights;
  hf: HfConfig;
  tokenizerFile: string;
  /** This rank's optimizer state: the whole arena (ZeRO-0) or exactly its ZeRO-1 range. */
  optim: OptimState;
  zero: number;
  state: TrainerStateJson;
  keepLast: number;
}

/** Collective over the group: writes checkpoints/step-N as described above; returns its path. */
export function saveShardedCheckpoint(a: ShardedSaveArgs): string {
  const g = a.group, rank = g.rank, dp = g.size;
  const root = checkpointsDir(a.outDir);
  const name = stepName(a.state.step);
  // rank 0 names the temp folder (its pid: the writer that holds the run lock)
  const pid = new Int32Array([process.pid]);
  g.broadcastSync(pid, 0);
  const tmp = path.join(root, `.${name}.tmp-${pid[0]}`);
  const drop = () => {
    if (rank === 0) rmSync(tmp, { recursive: true, force: true });
  };
  let err: unknown = null;
  if (rank === 0) {
    try {
      mkdirSync(root, { recursive: true });
      rmSync(tmp, { recursive: true, force: true });
      mkdirSync(tmp);
    } catch (e) {
      err = e;
    }
  }
  agree(g, err, `checkpoint ${name}`, drop);

  const P = a.weights.data, size = P.length;
  const slots = a.weights.layout.hfTensors;
  const plan = modelShardPlan(slots, dp);
  const parts = plan.map((p, r) => ({ r, p })).filter((x) => x.p.length > 0);
  const modelFile = (k: number) => `model-${pad5(k + 1)}-of-${pad5(parts.length)}.safetensors`;
  const ranges = Array.from({ length: dp }, (_, r) => zeroRange(size, dp, r)).map((x, r) => ({ r, lo: x.lo, hi: x.hi })).filter((x) => x.hi > x.lo);
  const optimFile = (k: number) => `optim-${pad5(k + 1)}-of-${pad5(ranges.length)}.safetensors`;
  const f32 = (x: FArr) => (x instanceof Float32Array ? x : Float32Array.from(x));
  try {
    const k = parts.findIndex((x) => x.r === rank);
    if (k >= 0) {
      const tensors: Record<string, TensorToWrite> = {};
      for (const i of parts[k]!.p) {
        const s = slots[i]!;
        tensors[s.name] = { dtype: "F32", shape: s.shape, data: f32(P.subarray(s.offset, s.offset + s.size)) };
      }
      writeSafetensors(path.join(tmp, modelFile(k)), tensors, { format: "pt" });
    }
    const j = ranges.findIndex((x) => x.r === rank);
    if (j >= 0) {
      const { lo, hi } = ranges[j]!;
      // ZeRO-1: this rank's moments are exactly [lo, hi); ZeRO-0: the same range of its full copy
      const off = a.zero === 1 ? lo : 0;
      if (a.optim.m.length !== (a.zero === 1 ? hi - lo : size)) throw new ShardCheckpointError(`checkpoint ${name}: rank ${rank} holds ${a.optim.m.length} optimizer entries, expected ${a.zero === 1 ? hi - lo : size}`);
      writeSafetensors(path.join(tmp, optimFile(j)), {
        "optim.m": { dtype: "F32", shape: [hi - lo], data: f32(a.optim.m.subarray(lo - off, hi - off)) },
        "optim.v": { dtype: "F32", shape: [hi - lo], data: f32(a.optim.v.subarray(lo - off, hi - off)) },
      }, { lo: String(lo), hi: String(hi) });
    }
  } catch (e) {
    err = e;
  }
  agree(g, err, `checkpoint ${name}`, drop);

  // every shard is on disk: rank 0 writes the indexes (trainer_state.json last) and publishes
  if (rank === 0) {
    try {
      const weightMap: Record<string, string> = {};
      let bytes = 0;
      parts.forEach((x, k) => x.p.forEach((i) => ((weightMap[slots[i]!.name] = modelFile(k)), (bytes += 4 * slots[i]!.size))));
      writeFileAtomic(path.join(tmp, INDEX_FILE), JSON.stringify({ metadata: { total_size: bytes }, weight_map: weightMap }, null, 2) + "\n");
      writeFileAtomic(path.join(tmp, CONFIG_FILE), hfConfigJson(a.hf, "f32"));
      copyFileSync(a.tokenizerFile, path.join(tmp, "tokenizer.json"));
      const shards: ShardIndex = {
        version: 1, layout: { ranks: dp, zero: a.zero }, params: size,
        optim: ranges.map((x, j) => ({ file: optimFile(j), lo: x.lo, hi: x.hi })),
        model: parts.map((_, k) => modelFile(k)),
      };
      writeFileAtomic(path.join(tmp, "trainer_state.json"), JSON.stringify({ ...a.state, optimStep: a.optim.step, shards }, null, 1) + "\n");
      publishCheckpoint(root, tmp, name, a.keepLast);
    } catch (e) {
      err = e;
    }
  }
  agree(g, err, `checkpoint ${name}`, drop);
  return path.join(root, name);
}

/** The shard index of a checkpoint's trainer_state.json, validated; null for the gathered format. */
export function readShardIndex(ckDir: string, st: TrainerStateJson & { shards?: unknown }): ShardIndex | null {
  const s = st.shards as ShardIndex | undefined;
  if (s === undefined) return null;
  const where = `${ckDir}/trainer_state.json`;
  if (!s || s.version !== 1 || !Array.isArray(s.optim) || !Number.isInteger(s.params)) throw new ShardCheckpointError(`${where}: 'shards' is not a version-1 shard index`);
  let at = 0;
  for (const o of s.optim) {
    if (typeof o.file !== "string" || o.file.includes("/") || o.file.includes("\\")) throw new ShardCheckpointError(`${where}: bad optimizer shard file name ${JSON.stringify(o.file)}`);
    if (o.lo !== at || !(o.hi > o.lo)) throw new ShardCheckpointError(`${where}: optimizer shards do not tile the arena (${o.file} covers [${o.lo}, ${o.hi}), expected to start at ${at})`);
    if (!existsSync(path.join(ckDir, o.file))) throw new ShardCheckpointError(`${ckDir}: optimizer shard ${o.file} listed in trainer_state.json is missing`);
    at = o.hi;
  }
  if (at !== s.params) throw new ShardCheckpointError(`${where}: optimizer shards cover ${at} of ${s.params} entries`);
  return s;
}

/**
 * Reads the trainer state and the optimizer moments of the arena range [lo, hi) into `optim`
 * (optim.m[i] = moment of element lo + i), from a sharded or a gathered checkpoint, whatever
 * layout wrote it. `params`: the model's arena size (checked against the checkpoint's).
 */
export function loadOptimRange(ckDir: string, optim: OptimState, lo: number, hi: number, params: number): TrainerStateJson {
  const st = JSON.parse(readFileSync(path.join(ckDir, "trainer_state.json"), "utf8")) as TrainerStateJson & { shards?: unknown };
  if (st.version !== 1) throw new ShardCheckpointError(`${ckDir}/trainer_state.json: unknown version ${String(st.version)}`);
  if (optim.m.length !== hi - lo || optim.v.length !== hi - lo) throw new ShardCheckpointError(`loadOptimRange: the state holds ${optim.m.length} entries for the range [${lo}, ${hi})`);
  const idx = readShardIndex(ckDir, st);
  const pieces = idx ? idx.optim : [{ file: "trainer_state.safetensors", lo: 0, hi: params }];
  if (idx && idx.params !== params) throw new ShardCheckpointError(`${ckDir}: optimizer state has ${idx.params} entries, the model has ${params} parameters`);
  for (const p of pieces) {
    const a = Math.max(lo, p.lo), b = Math.min(hi, p.hi);
    if (a >= b) continue;
    const f = SafetensorsFile.open(path.join(ckDir, p.file));
    const m = f.read("optim.m").data as Float32Array, v = f.read("optim.v").data as Float32Array;
    if (m.length !== p.hi - p.lo || v.length !== p.hi - p.lo) {
      throw new ShardCheckpointError(idx ? `${ckDir}/${p.file}: holds ${m.length} entries, the index says [${p.lo}, ${p.hi})` : `${ckDir}: optimizer state has ${m.length} entries, the model has ${params} parameters`);
    }
    optim.m.set(m.subarray(a - p.lo, b - p.lo), a - lo);
    optim.v.set(v.subarray(a - p.lo, b - p.lo), a - lo);
  }
  optim.step = st.optimStep;
  return st;
}
