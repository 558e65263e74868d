// Hugging Face checkpoint directories ↔ MoeModel.
//
// A checkpoint directory holds config.json (HF keys of one family, see model/config.ts) and
// model.safetensors or sharded model-0000i-of-0000n.safetensors + model.safetensors.index.json.
// Tensor names are exactly the HF names of the family (`layout.hfTensors`: per-expert keys,
// which are views into the fused per-layer expert storage).
//
// Loading is strict: every HF tensor of the layout must be present with its shape, and every
// tensor in the files must be used (the only exceptions: `*.rotary_emb.inv_freq` buffers old
// exports carry, and a `lm_head.weight` identical to the embeddings when tie_word_embeddings).
// All defects (missing, unexpected, wrong shape, unusable dtype, bad scale) are reported in one
// CheckpointError, each list capped at 20 names plus a count.
//
// Dtypes: F32, F64, F16, BF16 are converted to the model's float type (f32, or f64 on the ref
// backend). FP8 (vLLM / compressed-tensors style: config `quantization_config: {quant_method:
// "fp8", activation_scheme: "dynamic" | "static"}`, `<module>.weight` in F8_E4M3 or F8_E5M2 with
// `<module>.weight_scale`, a per-tensor scalar ([] or [1]) or per output row ([rows] or
// [rows, 1]); for per-expert keys that is a scale per expert) is DEQUANTISED ON LOAD:
// w = decode(code) · scale rounded to f32. All compute after loading is in f32 (or f64): weights
// are not kept in FP8 and activations are never quantised, so `input_scale` (or Skywork's
// `act_scale`, required when activation_scheme is "static", refused when "dynamic") is validated
// and otherwise unused. Block-wise FP8 (`weight_block_size`) is refused.
//
// Saving writes config.json (the HF config, atomically; quantization_config dropped since the
// weights are written in f32 or bf16) and the tensors under exactly the HF names, single file or
// sharded (maxShardBytes), each file atomically; stale model files of another layout are removed.
//
// Not: a GGUF reader/writer (io/gguf), a tokenizer loader, or an FP8 compute path.
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, unlinkSync } from "node:fs";
import path from "node:path";
import type { Backend } from "../backend/spec.js";
import { SafetensorsCheckpoint, writeFileAtomic, writeCheckpointTensors, INDEX_FILE, type StDtype, type TensorInfo, type TensorToWrite } from "../io/safetensors.js";
import { ConfigError, parseHfConfig, resolveConfig, type DispatchConfig, type Family, type HfConfig, type ModelConfig } from "./config.js";
import { MoeModel, type ModelShape } from "./model.js";
import { Weights, type ArenaDtype } from "./weights.js";
import { buildLayout, type ExpertRange, type TensorSlot } from "./params.js";

export class CheckpointError extends Error {
  override name = "CheckpointError";
}

export const CONFIG_FILE = "config.json";

/** The most names listed per category in an error message. */
const LIST_CAP = 20;

function listCapped(items: string[]): string {
  const shown = items.slice(0, LIST_CAP).map((s) => `  ${s}`).join("\n");
  return items.length > LIST_CAP ? `${shown}\n  … and ${items.length - LIST_CAP} more` : shown;
}

/** Reads and validates `<dir>/config.json` (errors name the file). */
export function readHfConfig(dir: string): HfConfig {
  const file = path.join(dir, CONFIG_FILE);
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new CheckpointError(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return parseHfConfig(json, file);
}

// ---------------------------------------------------------------------------
// quantization_config

export interface Fp8Quantization {
  method: "fp8";
  activationScheme: "dynamic" | "static";
}

/** The checkpoint's quantization (null = none), from the raw quantization_config value. */
export function parseQuantization(q: unknown, source: string): Fp8Quantization | null {
  if (q === undefined || q === null) return null;
  if (typeof q !== "object" || Array.isArray(q)) throw new ConfigError(`${source}: quantization_config must be an object`);
  const o = q as Record<string, unknown>;
  if (o.quant_method !== "fp8") {
    throw new ConfigError(`${source}: quantization_config.quant_method ${JSON.stringify(o.quant_method)} is not supported (supported: "fp8")`);
  }
  const scheme = o.activation_scheme ?? "dynamic";
  if (scheme !== "dynamic" && scheme !== "static") {
    throw new ConfigError(`${source}: quantization_config.activation_scheme must be "dynamic" or "static", got ${JSON.stringify(scheme)}`);
  }
  if (o.weight_block_size != null) {
    throw new ConfigError(`${source}: block-wise FP8 (quantization_config.weight_block_size ${JSON.stringify(o.weight_block_size)}) is not supported; per-tensor and per-channel weight_scale are`);
  }
  return { method: "fp8", activationScheme: scheme };
}

// ---------------------------------------------------------------------------
// loading

export interface LoadOptions {
  /** Token dispatch of the MoE layers (default dropless). */
  dispatch?: DispatchConfig;
  /**
   * Expert parallelism with sharded memory: load only experts [rank·E/ep, (rank+1)·E/ep) of every
   * MoE layer into weights that store only those (the other experts' tensors are skipped). Default: all.
   */
  expertShard?: { ep: number; rank: number } | null;
}

export interface LoadedWeights {
  weights: Weights;
  hf: HfConfig;
  cfg: ModelConfig;
  /** The FP8 scheme the weights were dequantised from, or null. */
  quantization: Fp8Quantization | null;
}

export interface LoadedModel {
  model: MoeModel;
  hf: HfConfig;
  cfg: ModelConfig;
  /** The FP8 scheme the weights were dequantised from, or null. */
  quantization: Fp8Quantization | null;
}

const FLOAT_DTYPES: ReadonlySet<StDtype> = new Set(["F32", "F64", "F16", "BF16"]);
const FP8_DTYPES: ReadonlySet<StDtype> = new Set(["F8_E4M3", "F8_E5M2"]);

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);
const fmtShape = (s: readonly number[]) => `[${s.join(", ")}]`;

/** A planned read of one HF tensor into the arena. */
interface Plan {
  slot: TensorSlot;
  info: TensorInfo;
  /** For FP8 weights: the scale tensor's name and whether it is per row. */
  scale?: { name: string; perRow: boolean };
}

/** Float values of a float tensor (F32/F64/F16/BF16) as f32 or f64, using the backend's converters. */
function readFloat(ck: SafetensorsCheckpoint, be: Backend, name: string): Float32Array | Float64Array {
  const { info, data } = ck.read(name);
  switch (info.dtype) {
    case "F32":
      return data as Float32Array;
    case "F64":
      return data as Float64Array;
    case "BF16": {
      const out = new Float32Array(data.length);
      be.bf16ToF32(out, data as Uint16Array);
      return out;
    }
    case "F16": {
      const out = new Float32Array(data.length);
      be.f16ToF32(out, data as Uint16Array);
      return out;
    }
    default:
      throw new CheckpointError(`${ck.dir}: tensor '${name}' has dtype ${info.dtype}, expected a float dtype`);
  }
}

/**
 * Loads an HF checkpoint directory into a new MoeModel built for `shape` (B, T; dtype f64 only
 * on the ref backend). Throws ConfigError for config.json problems and CheckpointError (listing
 * every missing / unexpected / mis-shaped tensor) for the weights.
 */
export function loadHfModel(dir: string, be: Backend, shape: ModelShape, opts: LoadOptions = {}): LoadedModel {
  const { weights, hf, cfg, quantization } = loadHfWeights(dir, be, { ...opts, dtype: shape.dtype ?? "f32" });
  return { model: new MoeModel(cfg, be, shape, weights), hf, cfg, quantization };
}

/**
 * Loads an HF checkpoint directory into a new Weights (f32, or f64 for the ref backend's
 * gradient checks). Errors as loadHfModel.
 */
export function loadHfWeights(dir: string, be: Backend, opts: LoadOptions & { dtype?: ArenaDtype } = {}): LoadedWeights {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointError(`${dir}: not a checkpoint directory (does not exist or is not a directory)`);
  const hf = readHfConfig(dir);
  const cfgFile = path.join(dir, CONFIG_FILE);
  const quant = parseQuantization((hf as unknown as Record<string, unknown>).quantization_config, cfgFile);
  const cfg = resolveConfig(hf, opts.dispatch ?? { kind: "dropless" }, cfgFile);
  const ck = SafetensorsCheckpoint.open(dir);
  let experts: ExpertRange | null = null;
  if (opts.expertShard) {
    const { ep, rank } = opts.expertShard, E = cfg.moe.numExperts;
    if (!(Number.isInteger(ep) && ep >= 1 && E % ep === 0 && Number.isInteger(rank) && rank >= 0 && rank < ep)) throw new CheckpointError(`${dir}: cannot load expert shard ${rank} of ${ep}: the model has ${E} experts per layer`);
    experts = { first: rank * (E / ep), count: E / ep };
  }
  const model = new Weights(cfg, opts.dtype ?? "f32", undefined, experts);
  // the other ranks' experts: present in the checkpoint, not loaded here
  const otherExperts = experts ? new Set(buildLayout(cfg).layout.hfTensors.map((t) => t.name).filter((n) => !model.layout.hfTensors.some((t) => t.name === n))) : null;

  const used = new Set<string>();
  const missing: string[] = [];
  const badShape: string[] = [];
  const badDtype: string[] = [];
  const badScale: string[] = [];
  const plans: Plan[] = [];
  for (const slot of model.layout.hfTensors) {
    if (!ck.has(slot.name)) {
      missing.push(slot.name);
      continue;
    }
    used.add(slot.name);
    const info = ck.info(slot.name);
    if (!sameShape(info.shape, slot.shape)) {
      badShape.push(`${slot.name}: ${fmtShape(info.shape)} in the file, the config needs ${fmtShape(slot.shape)}`);
      continue;
    }
    if (FLOAT_DTYPES.has(info.dtype)) {
      plans.push({ slot, info });
      continue;
    }
    if (!FP8_DTYPES.has(info.dtype)) {
      badDtype.push(`${slot.name}: ${info.dtype} (expected F32, F64, F16, BF16${quant ? ", F8_E4M3, F8_E5M2" : ""})`);
      continue;
    }
    if (!quant) {
      badDtype.push(`${slot.name}: ${info.dtype} but config.json has no quantization_config {quant_method: "fp8"}`);
      continue;
    }
    if (!slot.name.endsWith(".weight") || slot.shape.length !== 2) {
      badDtype.push(`${slot.name}: ${info.dtype} is only supported for 2-D '.weight' matrices`);
      continue;
    }
    const base = slot.name.slice(0, -".weight".length);
    const scaleName = `${base}.weight_scale`;
    if (!ck.has(scaleName)) {
      missing.push(`${scaleName} (scale of the ${info.dtype} weight ${slot.name})`);
      continue;
    }
    used.add(scaleName);
    const si = ck.info(scaleName);
    const rows = slot.shape[0]!;
    const perTensor = numel(si.shape) === 1 && si.shape.length <= 1;
    const perRow = (si.shape.length === 1 && si.shape[0] === rows) || (si.shape.length === 2 && si.shape[0] === rows && si.shape[1] === 1);
    if (!FLOAT_DTYPES.has(si.dtype)) badScale.push(`${scaleName}: dtype ${si.dtype}, expected a float dtype`);
    else if (!perTensor && !perRow) badScale.push(`${scaleName}: shape ${fmtShape(si.shape)}, expected [] or [1] (per tensor) or [${rows}] / [${rows}, 1] (per row)`);
    else plans.push({ slot, info, scale: { name: scaleName, perRow: !perTensor } });
    for (const act of [`${base}.input_scale`, `${base}.act_scale`]) {
      if (ck.has(act) && quant.activationScheme === "static") used.add(act);
    }
    if (quant.activationScheme === "static" && !ck.has(`${base}.input_scale`) && !ck.has(`${base}.act_scale`)) {
      missing.push(`${base}.input_scale (activation_scheme "static" needs the activation scale of ${slot.name})`);
    }
  }
  // tolerated extras
  let tiedHeadCopy = false;
  for (const name of ck.names()) {
    if (used.has(name)) continue;
    if (/\.rotary_emb\.inv_freq$/.test(name) || otherExperts?.has(name)) used.add(name);
    else if (name === "lm_head.weight" && cfg.tieEmbeddings && ck.has(model.names.embed)) {
      tiedHeadCopy = true;
      used.add(name);
    }
  }
  const unexpected = ck.names().filter((n) => !used.has(n)).sort();
  // validate activation / weight scale values
  for (const p of plans) {
    if (!p.scale) continue;
    const s = readFloat(ck, be, p.scale.name);
    for (let i = 0; i < s.length; i++) {
      if (!(Number.isFinite(s[i]!) && s[i]! > 0)) {
        badScale.push(`${p.scale.name}[${i}] = ${s[i]} (must be finite and > 0)`);
        break;
      }
    }
  }
  for (const name of used) {
    if (!/\.(input_scale|act_scale)$/.test(name)) continue;
    const s = readFloat(ck, be, name);
    if (!(s.length === 1 && Number.isFinite(s[0]!) && s[0]! > 0)) badScale.push(`${name}: must be one finite value > 0`);
  }
  const problems: string[] = [];
  if (missing.length) problems.push(`${missing.length} missing tensor(s):\n${listCapped(missing)}`);
  if (unexpected.length) problems.push(`${unexpected.length} unexpected tensor(s) (not used by a ${hf.model_type} model of this config):\n${listCapped(unexpected)}`);
  if (badShape.length) problems.push(`${badShape.length} tensor(s) with the wrong shape:\n${listCapped(badShape)}`);
  if (badDtype.length) problems.push(`${badDtype.length} tensor(s) with an unusable dtype:\n${listCapped(badDtype)}`);
  if (badScale.length) problems.push(`${badScale.length} bad FP8 scale(s):\n${listCapped(badScale)}`);
  if (problems.length) throw new CheckpointError(`${dir}: checkpoint does not match ${cfgFile}:\n${problems.join("\n")}`);

  const P = model.data;
  const nonFinite: string[] = [];
  for (const p of plans) {
    const { slot, info } = p;
    let values: Float32Array | Float64Array;
    if (p.scale) {
      const codes = ck.read(slot.name).data as Uint8Array;
      const scales = readFloat(ck, be, p.scale.name);
      const fmt = info.dtype === "F8_E4M3" ? "e4m3" : "e5m2";
      const out = new Float32Array(slot.size);
      if (!p.scale.perRow) be.fp8ToF32(out, codes, fmt, scales[0]!);
      else {
        const cols = slot.shape[1]!;
        for (let r = 0; r < slot.shape[0]!; r++) be.fp8ToF32(out.subarray(r * cols, (r + 1) * cols), codes.subarray(r * cols, (r + 1) * cols), fmt, scales[r]!);
      }
      values = out;
    } else values = readFloat(ck, be, slot.name);
    // NaN/Inf weights give NaN outputs with exit 0 downstream: refuse them here, by tensor name
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i]!)) {
        nonFinite.push(`${slot.name}[${i}] = ${values[i]}`);
        break;
      }
    }
    P.set(values, slot.offset);
  }
  if (nonFinite.length) throw new CheckpointError(`${dir}: ${nonFinite.length} tensor(s) hold non-finite values (NaN or Inf), first of each:\n${listCapped(nonFinite)}`);
  if (tiedHeadCopy) {
    const head = readFloat(ck, be, "lm_head.weight");
    const emb = model.tensor(model.names.embed);
    let same = head.length === emb.length;
    for (let i = 0; same && i < head.length; i++) same = Object.is(Math.fround(head[i]!), Math.fround(emb[i]!));
    if (!same) throw new CheckpointError(`${dir}: lm_head.weight differs from model.embed_tokens.weight, but ${cfgFile} has tie_word_embeddings true`);
  }
  return { weights: model, hf, cfg, quantization: quant };
}

// ---------------------------------------------------------------------------
// saving

export interface SaveOptions {
  /** Tensor dtype on disk. Default "f32" (bit-exact round trip of an f32 model). */
  dtype?: "f32" | "bf16";
  /** Largest shard in bytes; a larger checkpoint is sharded with an index. Default 2 GiB. */
  maxShardBytes?: number;
}

const ARCHITECTURES: Record<Family, string> = {
  mixtral: "MixtralForCausalLM",
  phimoe: "PhimoeForCausalLM",
  qwen2_moe: "Qwen2MoeForCausalLM",
  qwen3_moe: "Qwen3MoeForCausalLM",
  olmoe: "OlmoeForCausalLM",
  skywork: "SkyworkForCausalLM",
  llama: "LlamaForCausalLM",
};

/** config.json text of a model being saved in `dtype` (keys sorted, quantization_config dropped). */
export function hfConfigJson(hf: HfConfig, dtype: "f32" | "bf16"): string {
  const o: Record<string, unknown> = { ...(hf as unknown as Record<string, unknown>) };
  delete o.quantization_config;
  o.torch_dtype = dtype === "bf16" ? "bfloat16" : "float32";
  if (!Array.isArray(o.architectures)) o.architectures = [ARCHITECTURES[hf.model_type]];
  const sorted: Record<string, unknown> = {};
  for (const k of Object.keys(o).sort()) sorted[k] = o[k];
  return JSON.stringify(sorted, null, 2) + "\n";
}

const SHARD_RE = /^model-\d{5}-of-\d{5}\.safetensors$/;

/**
 * Writes the model as an HF checkpoint directory (created if needed): the HF tensors of the
 * family, f32 (exact for an f32 model) or bf16 (round to nearest even), and config.json.
 * Returns the files written.
 */
export function saveHfModel(model: MoeModel, hf: HfConfig, dir: string, opts: SaveOptions = {}): string[] {
  return saveHfWeights(model.weights, model.be, hf, dir, opts);
}

/** saveHfModel for a Weights (be converts to bf16). */
export function saveHfWeights(model: Weights, be: Backend, hf: HfConfig, dir: string, opts: SaveOptions = {}): string[] {
  const dtype = opts.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "bf16") throw new CheckpointError(`saveHfModel: dtype must be "f32" or "bf16", got ${JSON.stringify(dtype)}`);
  const check = resolveConfig(hf);
  if (check.family !== model.cfg.family || check.numLayers !== model.cfg.numLayers || check.hiddenSize !== model.cfg.hiddenSize || check.vocabSize !== model.cfg.vocabSize) {
    throw new CheckpointError(`saveHfModel: the HF config (${hf.model_type}, ${check.numLayers} layers, hidden ${check.hiddenSize}) does not describe this model (${model.cfg.family}, ${model.cfg.numLayers} layers, hidden ${model.cfg.hiddenSize})`);
  }
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  for (const slot of model.layout.hfTensors) {
    const src = model.data.subarray(slot.offset, slot.offset + slot.size);
    const f32 = src instanceof Float32Array ? src : Float32Array.from(src);
    if (dtype === "f32") tensors[slot.name] = { dtype: "F32", shape: slot.shape, data: f32 };
    else {
      const out = new Uint16Array(slot.size);
      be.f32ToBf16(out, f32);
      tensors[slot.name] = { dtype: "BF16", shape: slot.shape, data: out };
    }
  }
  const files = writeCheckpointTensors(dir, tensors, opts.maxShardBytes ?? 2 * 1024 ** 3, { format: "pt" });
  // remove model files of another layout left from an earlier save (the index would win on load)
  const keep = new Set(files);
  for (const f of readdirSync(dir)) {
    if (keep.has(f)) continue;
    if (f === INDEX_FILE || f === "model.safetensors" || SHARD_RE.test(f)) unlinkSync(path.join(dir, f));
  }
  const text = hfConfigJson(hf, dtype);
  writeFileAtomic(path.join(dir, CONFIG_FILE), text);
  return [...files, CONFIG_FILE];
}
