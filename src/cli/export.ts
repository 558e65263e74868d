// `moe export MODEL_DIR --format gguf [--dtype f32|f16|bf16|q8_0|q4_0|q4_k|q6_k|q4_k_m] [--out FILE]`: writes an HF-layout
// model directory (config.json + model.safetensors[.index.json] + tokenizer.json) as a GGUF
// file llama.cpp loads, under the llama.cpp architecture of the model's family (mixtral/skywork →
// `llama`, qwen2_moe → `qwen2moe`, qwen3_moe → `qwen3moe`, olmoe → `olmoe`, phimoe → `phimoe`;
// see model/gguf-families.ts).
//
// MODEL may be a run directory (its latest checkpoint). Weights load through model/checkpoint.ts
// like every other command's.
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { checkOutputFile } from "../core/fs.js";
import { parseFlags } from "./args.js";
import { loadHfWeights } from "../model/checkpoint.js";
import type { HfConfig, ModelConfig } from "../model/config.js";
import { createBackend } from "../backend/index.js";
import { resolveModelDir } from "../train/checkpoints.js";
import { EXPORT_DTYPES, type ExportDtype, type HfTokenizerJson } from "../model/gguf-model.js";
import { exportModelGguf } from "../model/gguf-families.js";

const USAGE = "usage: moe export MODEL_DIR --format gguf [--dtype f32|f16|bf16|q8_0|q4_0|q4_k|q6_k|q4_k_m] [--out FILE]  (default f16; tensor types per dtype: model/gguf-types.ts)";

export interface LoadedForExport {
  hf: HfConfig;
  cfg: ModelConfig;
  params: Float32Array;
  tokenizer?: HfTokenizerJson;
}

/** config.json, weights (through the one HF loader) and tokenizer.json of a model or run directory. */
export function loadForExport(dir: string): LoadedForExport {
  const { weights, hf, cfg } = loadHfWeights(dir, createBackend({ name: "ref" }));
  const tokFile = path.join(dir, "tokenizer.json");
  let tokenizer: HfTokenizerJson | undefined;
  if (existsSync(tokFile)) {
    try {
      tokenizer = JSON.parse(readFileSync(tokFile, "utf8")) as HfTokenizerJson;
    } catch (e) {
      throw new Error(`${tokFile}: not valid JSON: ${(e as Error).message}`);
    }
  }
  return { hf, cfg, params: weights.data as Float32Array, tokenizer };
}

export async function runExport(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe export", argv, { format: "string", dtype: "string", out: "string", help: "boolean" });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (positional.length !== 1) throw new Error(`moe export: expected one MODEL_DIR\n${USAGE}`);
  const dir = resolveModelDir(positional[0]!);
  const format = flags.format ?? "gguf";
  if (format !== "gguf") throw new Error(`moe export: --format '${format}' is not supported (supported: gguf)`);
  const dtype = (flags.dtype ?? "f16") as ExportDtype;
  if (!EXPORT_DTYPES.includes(dtype)) throw new Error(`moe export: --dtype must be one of ${EXPORT_DTYPES.join(", ")}, got '${dtype}'`);
  const out = flags.out ?? path.join(dir, `model-${dtype}.gguf`);
  checkOutputFile(out, "--out");
  const m = loadForExport(dir);
  if (!m.tokenizer) throw new Error(`moe export: ${dir} has no tokenizer.json; llama.cpp needs the tokenizer embedded in the GGUF file`);
  const eos = Array.isArray(m.hf.eos_token_id) ? m.hf.eos_token_id[0] : m.hf.eos_token_id;
  const res = exportModelGguf(out, {
    cfg: m.cfg,
    params: m.params,
    contextLength: m.hf.max_position_embeddings,
    name: path.basename(path.resolve(dir)),
    tokenizer: m.tokenizer,
    bosTokenId: m.hf.bos_token_id,
    eosTokenId: eos ?? null,
    padTokenId: m.hf.pad_token_id,
    ...(m.hf.model_type === "phimoe" ? { routerJitterNoise: m.hf.router_jitter_noise } : {}),
  }, dtype);
  for (const w of res.warnings) console.error(`moe export: warning: ${w}`);
  console.log(`wrote ${out} (${res.arch}, ${res.tensors} tensors, ${dtype}, ${(statSync(out).size / 1e6).toFixed(2)} MB)`);
  return 0;
}
