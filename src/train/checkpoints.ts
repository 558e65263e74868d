// Run checkpoints: an HF-layout model directory plus the trainer state, written atomically.
//
// Layout of a run directory:
//   <out>/config.yaml                 resolved training config (written at start)
//   <out>/metrics.jsonl               one JSON object per step
//   <out>/checkpoints/step-000200/    config.json, model.safetensors, tokenizer.json,
//                                     trainer_state.safetensors (AdamW moments), trainer_state.json
//   <out>/checkpoints/LATEST          name of the newest complete checkpoint
// A checkpoint is written into a hidden temp directory and renamed into place; LATEST is
// replaced atomically after that; only then are checkpoints beyond keep_last deleted. A crash at
// any point leaves the previous checkpoint (and LATEST naming it) intact. Saving the step LATEST
// already names (a resumed run that took no step) keeps that checkpoint as it is.
//
// Data-parallel runs write sharded checkpoints instead (shard-checkpoint.ts; same directory
// names, LATEST and temp-folder rules). Not: the HF model writer itself (model/checkpoint.ts).
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, copyFileSync } from "node:fs";
import path from "node:path";
import { SafetensorsFile, writeFileAtomic, writeSafetensors } from "../io/safetensors.js";
import type { MoeModel } from "../model/model.js";
import type { HfConfig } from "../model/config.js";
import { saveHfModel } from "../model/checkpoint.js";
import type { OptimState } from "./optim.js";
import type { AdaptiveAlphaState } from "../moe/balance.js";
import type { LoaderState } from "../data/loader.js";

export interface TrainerStateJson {
  version: 1;
  step: number;
  optimStep: number;
  alpha: AdaptiveAlphaState | null;
  loader: LoaderState;
  /** Consecutive skipped (non-finite) steps at save time. */
  badSteps: number;
  tokensSeen: number;
  /** The resolved training config of the run (JSON), checked on resume. */
  config: unknown;
}

export const LATEST = "LATEST";

export function checkpointsDir(outDir: string): string {
  return path.join(outDir, "checkpoints");
}

export function stepName(step: number): string {
  return `step-${String(step).padStart(6, "0")}`;
}


/**
 * Saves model + trainer state as checkpoints/step-N (atomically), points LATEST at it, then
 * deletes all but the newest keepLast checkpoints. Returns the checkpoint directory.
 */
export function saveRunCheckpoint(
  outDir: string, model: MoeModel, hf: HfConfig, tokenizerFile: string, optim: OptimState, state: TrainerStateJson, keepLast: number,
): string {
  const root = checkpointsDir(outDir);
  mkdirSync(root, { recursive: true });
  const name = stepName(state.step);
  // LATEST already names this step: a run resumed from it took no step, so it holds this very
  // state. Rewriting it would open a window (old folder removed, new one not yet renamed) in
  // which a kill leaves LATEST naming nothing.
  if (readLatestName(root) === name && existsSync(path.join(root, name, "trainer_state.json"))) return path.join(root, name);
  const tmp = path.join(root, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    saveHfModel(model, hf, tmp);
    copyFileSync(tokenizerFile, path.join(tmp, "tokenizer.json"));
    const f32 = (a: Float32Array | Float64Array) => (a instanceof Float32Array ? a : Float32Array.from(a));
    writeSafetensors(path.join(tmp, "trainer_state.safetensors"), {
      "optim.m": { dtype: "F32", shape: [optim.m.length], data: f32(optim.m) },
      "optim.v": { dtype: "F32", shape: [optim.v.length], data: f32(optim.v) },
    });
    writeFileAtomic(path.join(tmp, "trainer_state.json"), JSON.stringify({ ...state, optimStep: optim.step }, null, 1) + "\n");
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  return publishCheckpoint(root, tmp, name, keepLast);
}

/**
 * A complete checkpoint in the temp folder `tmp` becomes root/name (rename), LATEST names it,
 * then all but the newest keepLast checkpoints are deleted. Also used by shard-checkpoint.ts.
 */
export function publishCheckpoint(root: string, tmp: string, name: string, keepLast: number): string {
  try {
    const final = path.join(root, name);
    rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  writeFileAtomic(path.join(root, LATEST), name + "\n");
  const all = readdirSync(root).filter((d) => /^step-\d{6}$/.test(d)).sort();
  for (const old of all.slice(0, Math.max(0, all.length - keepLast))) {
    if (old !== name) rmSync(path.join(root, old), { recursive: true, force: true });
  }
  return path.join(root, name);
}

/** The name LATEST holds, or null when there is no LATEST. */
function readLatestName(root: string): string | null {
  const latest = path.join(root, LATEST);
  return existsSync(latest) ? readFileSync(latest, "utf8").trim() : null;
}

/** The newest complete checkpoint of a run directory, or null when there is none. */
export function latestCheckpoint(outDir: string): string | null {
  const root = checkpointsDir(outDir);
  const latest = path.join(root, LATEST);
  if (!existsSync(latest)) return null;
  const name = readFileSync(latest, "utf8").trim();
  if (!/^step-\d{6}$/.test(name)) throw new Error(`${latest}: does not name a checkpoint ('${name}')`);
  const dir = path.join(root, name);
  if (!existsSync(path.join(dir, "trainer_state.json"))) throw new Error(`${latest} names ${name}, which is missing or incomplete`);
  return dir;
}

/** A model directory from either an HF model directory or a run directory (its latest checkpoint). */
export function resolveModelDir(p: string): string {
  if (existsSync(path.join(p, "config.json"))) return p;
  const ck = latestCheckpoint(p);
  if (ck) return ck;
  throw new Error(`${p}: neither a model directory (config.json) nor a run directory with checkpoints`);
}

export function loadTrainerState(ckDir: string, optim: OptimState): TrainerStateJson {
  const st = JSON.parse(readFileSync(path.join(ckDir, "trainer_state.json"), "utf8")) as TrainerStateJson;
  if (st.version !== 1) throw new Error(`${ckDir}/trainer_state.json: unknown version ${String(st.version)}`);
  const f = SafetensorsFile.open(path.join(ckDir, "trainer_state.safetensors"));
  const m = f.read("optim.m").data as Float32Array, v = f.read("optim.v").data as Float32Array;
  if (m.length !== optim.m.length || v.length !== optim.v.length) {
    throw new Error(`${ckDir}: optimizer state has ${m.length} entries, the model has ${optim.m.length} parameters`);
  }
  optim.m.set(m);
  optim.v.set(v);
  optim.step = st.optimStep;
  return st;
}
