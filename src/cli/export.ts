// `moe export MODEL_DIR --format gguf [--dtype f32|f16|q8_0] [--out FILE]`: writes an HF-layout
// model directory (config.json + model.safetensors[.index.json] + tokenizer.json) as a GGUF
// file llama.cpp loads (architecture `llama` with experts; see io/gguf-model.ts).
//
// Not: a general HF loader. `loadForExport` is a minimal private reader kept in one function
// so it can be swapped for model/checkpoint.ts's loader.
import { existsSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import { parseFlags } from "./args.js";
import { SafetensorsCheckpoint, type StDtype } from "../io/safetensors.js";
import { parseHfConfig, resolveConfig, type HfConfig, type ModelConfig } from "../model/config.js";
import { buildLayout } from "../model/params.js";
import { decodeArray } from "../core/dtype.js";
import { EXPORT_DTYPES, exportLlamaGguf, type ExportDtype, type HfTokenizerJson } from "../io/gguf-model.js";

const USAGE = "usage: moe export MODEL_DIR --format gguf [--dtype f32|f16|q8_0] [--out FILE]";

export interface LoadedForExport {
  hf: HfConfig;
  cfg: ModelConfig;
  params: Float32Array;
  tokenizer?: HfTokenizerJson;
}

/** Reads config.json, the safetensors weights (by the layout's HF names) and tokenizer.json of an HF directory. */
export function loadForExport(dir: string): LoadedForExport {
  const cfgFile = path.join(dir, "config.json");
  if (!existsSync(cfgFile)) throw new Error(`${dir}: no config.json (expected an HF-layout model directory)`);
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(cfgFile, "utf8"));
  } catch (e) {
    throw new Error(`${cfgFile}: not valid JSON: ${(e as Error).message}`);
  }
  const hf = parseHfConfig(json, cfgFile);
  const cfg = resolveConfig(hf, { kind: "dropless" }, cfgFile);
  const { layout } = buildLayout(cfg);
  const ck = SafetensorsCheckpoint.open(dir);
  const params = new Float32Array(layout.size);
  const used = new Set<string>();
  for (const slot of layout.hfTensors) {
    if (!ck.has(slot.name)) throw new Error(`${dir}: checkpoint has no tensor '${slot.name}'`);
    const { info, data } = ck.read(slot.name);
    if (info.shape.length !== slot.shape.length || info.shape.some((d, i) => d !== slot.shape[i])) {
      throw new Error(`${dir}: tensor '${slot.name}' has shape [${info.shape}], the config needs [${slot.shape}]`);
    }
    params.set(toF32(info.dtype, data, `${dir}: tensor '${slot.name}'`), slot.offset);
    used.add(slot.name);
  }
  for (const name of ck.names()) {
    if (!used.has(name) && !(cfg.tieEmbeddings && name === "lm_head.weight")) throw new Error(`${dir}: tensor '${name}' is not a parameter of this ${hf.model_type} config`);
  }
  const tokFile = path.join(dir, "tokenizer.json");
  const tokenizer = existsSync(tokFile) ? (JSON.parse(readFileSync(tokFile, "utf8")) as HfTokenizerJson) : undefined;
  return { hf, cfg, params, tokenizer };
}

function toF32(dtype: StDtype, data: ArrayBufferView, where: string): Float32Array {
  switch (dtype) {
    case "F32":
      return data as Float32Array;
    case "F64":
      return Float32Array.from(data as Float64Array);
    case "F16":
    case "BF16": {
      const out = new Float32Array((data as Uint16Array).length);
      decodeArray(dtype === "F16" ? "f16" : "bf16", out, data as Uint16Array);
      return out;
    }
    default:
      throw new Error(`${where}: dtype ${dtype} is not a float weight type (F32, F64, F16, BF16)`);
  }
}

export async function runExport(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe export", argv, { format: "string", dtype: "string", out: "string", help: "boolean" });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (positional.length !== 1) throw new Error(`moe export: expected one MODEL_DIR\n${USAGE}`);
  const dir = positional[0]!;
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`moe export: '${dir}' is not a directory`);
  const format = flags.format ?? "gguf";
  if (format !== "gguf") throw new Error(`moe export: --format '${format}' is not supported (supported: gguf)`);
  const dtype = (flags.dtype ?? "f16") as ExportDtype;
  if (!EXPORT_DTYPES.includes(dtype)) throw new Error(`moe export: --dtype must be one of ${EXPORT_DTYPES.join(", ")}, got '${dtype}'`);
  const out = flags.out ?? path.join(dir, `model-${dtype}.gguf`);
  const m = loadForExport(dir);
  if (!m.tokenizer) throw new Error(`moe export: ${dir} has no tokenizer.json; llama.cpp needs the tokenizer embedded in the GGUF file`);
  const eos = Array.isArray(m.hf.eos_token_id) ? m.hf.eos_token_id[0] : m.hf.eos_token_id;
  const res = exportLlamaGguf(out, {
    cfg: m.cfg,
    params: m.params,
    contextLength: m.hf.max_position_embeddings,
    name: path.basename(path.resolve(dir)),
    tokenizer: m.tokenizer,
    bosTokenId: m.hf.bos_token_id,
    eosTokenId: eos ?? null,
    padTokenId: m.hf.pad_token_id,
  }, dtype);
  for (const w of res.warnings) console.error(`moe export: warning: ${w}`);
  console.log(`wrote ${out} (${res.tensors} tensors, ${dtype}, ${(statSync(out).size / 1e6).toFixed(2)} MB)`);
  return 0;
}
