// Where `moe plan MODEL` gets the model: a paper model name (skywork-moe, grin-moe), an engine
// preset (tiny-mixtral, small-moe, …), an HF config.json file, a model directory, or a run
// directory (its latest checkpoint's config.json, and the batch from its config.yaml).
//
// Not: a checkpoint loader; only configs are read.
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { parseHfConfig, resolveConfig } from "../model/config.js";
import { readHfConfig } from "../model/checkpoint.js";
import { PRESET_NAMES, preset } from "../model/presets.js";
import { resolveModelDir } from "../train/checkpoints.js";
import { PlanError } from "./cluster.js";
import { PAPER_MODEL_NAMES, paperModel, planModelFromConfig, type PlanModel, type PlanRun } from "./plan-model.js";

export interface ModelSource {
  model: PlanModel;
  /** Batch settings found next to the model (a run directory's config.yaml), if any. */
  run: Partial<PlanRun>;
  source: string;
}

function runFromYaml(file: string): Partial<PlanRun> {
  const y = parseYaml(readFileSync(file, "utf8")) as { train?: { seq_len?: unknown; batch_size?: unknown; grad_accum?: unknown } } | null;
  const t = y?.train ?? {};
  const num = (v: unknown) => (typeof v === "number" && Number.isInteger(v) && v > 0 ? v : undefined);
  const seqLen = num(t.seq_len), microBatch = num(t.batch_size), accum = num(t.grad_accum) ?? 1;
  const out: Partial<PlanRun> = {};
  if (seqLen) out.seqLen = seqLen;
  if (microBatch) {
    out.microBatch = microBatch;
    out.globalBatch = microBatch * accum;
  }
  return out;
}

export function loadModelSource(spec: string): ModelSource {
  if (PAPER_MODEL_NAMES.includes(spec)) return { model: paperModel(spec), run: {}, source: `paper sizes (moe-techniques.md §1)` };
  if ((PRESET_NAMES as string[]).includes(spec)) return { model: planModelFromConfig(resolveConfig(preset(spec)), spec), run: {}, source: `engine preset` };
  if (!existsSync(spec)) {
    throw new PlanError(`model '${spec}': not a paper model (${PAPER_MODEL_NAMES.join(", ")}), an engine preset (${PRESET_NAMES.join(", ")}), nor an existing path`);
  }
  if (statSync(spec).isFile()) {
    let json: unknown;
    try {
      json = JSON.parse(readFileSync(spec, "utf8"));
    } catch (e) {
      throw new PlanError(`${spec}: not valid JSON: ${(e as Error).message}`);
    }
    return { model: planModelFromConfig(resolveConfig(parseHfConfig(json, spec), undefined, spec), path.basename(path.dirname(path.resolve(spec)))), run: {}, source: spec };
  }
  const dir = resolveModelDir(spec);
  const run = existsSync(path.join(spec, "config.yaml")) ? runFromYaml(path.join(spec, "config.yaml")) : {};
  return { model: planModelFromConfig(resolveConfig(readHfConfig(dir)), path.basename(path.resolve(spec))), run, source: dir };
}
