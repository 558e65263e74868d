// Run setup, numbered (the trainer receives its parts from here):
//  1. run directory: refuse to overwrite an existing run unless resuming; a resumed run's config
//     must equal the saved one except for the keys that may change between sessions
//  2. tokenizer: the run's own on resume, the configured tokenizer.json, model.from's, or one
//     trained on the corpus (cached by corpus fingerprint and vocab size)
//  3. token shards: tokenised once into the cache (data/shards.ts names the directory)
//  4. backend (train.backend, train.threads; train.gemm_dtype: the model's GEMM precision)
//  5. model: from a checkpoint (model.from or the run's latest checkpoint on resume) or a preset
//     with the chosen family and router (train/model-config.ts); the run's balancing options are
//     written into its MoE config
// The resolved config is saved as config.yaml. Not: the training loop (trainer.ts).
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { stringify as toYaml } from "yaml";
import { createBackend, type Backend } from "../backend/index.js";
import { checkNativeGemmPrecision, withGemmPrecision } from "../backend/gemm-precision.js";
import { resolveConfig, type HfConfig, type ModelConfig } from "../model/config.js";
import { MoeModel, initParams } from "../model/model.js";
import { loadHfModel, readHfConfig } from "../model/checkpoint.js";
import { checkTrainingFits } from "./memory.js";
import type { Tokenizer } from "../data/types.js";
import { loadTokenizer, saveTokenizer } from "../data/tokenizer.js";
import { trainBpe } from "../data/bpe-train.js";
import { corpusFingerprint, iterateDocuments, parseCorpusSpec, type CorpusSpec } from "../data/corpus.js";
import { ensureShards, shardCacheDir, tokenizerHash, type ShardSet } from "../data/shards.js";
import { writeFileAtomic } from "../core/fs.js";
import { defaultTrainConfig, type TrainConfig } from "./config.js";
import { buildRunHfConfig } from "./model-config.js";
import { makeDir } from "../core/make-dir.js";
import { acquireRunLock, cleanCacheTemps, cleanStaleTemps, truncateMetrics } from "./run-dir.js";
import { latestCheckpoint, resolveModelDir, type TrainerStateJson } from "./checkpoints.js";

export class TrainingError extends Error {
  override name = "TrainingError";
}

/** What a run is made of before its first step. */
export interface RunSetup {
  outDir: string;
  /** The checkpoint a resumed run continues from, else null. */
  resumeFrom: string | null;
  backend: Backend;
  model: MoeModel;
  tokenizer: Tokenizer;
  tokenizerFile: string;
  hf: HfConfig;
  cfg: ModelConfig;
  shards: ShardSet;
}

export function dispatchOf(c: TrainConfig): ModelConfig["moe"]["dispatch"] {
  return c.model.dispatch === "capacity" ? { kind: "capacity", capacityFactor: c.model.capacity_factor, policy: c.model.drop_policy, pad: c.model.capacity_pad } : { kind: "dropless" };
}

/** writer false: a data-parallel rank other than 0 (it reads what rank 0 wrote, writes nothing). */
export function setupRun(c: TrainConfig, opts: { resume: boolean; log: (line: string) => void; writer?: boolean; overwrite?: boolean }): RunSetup {
  const writer = opts.writer ?? true;
  const log = opts.log;
  // 1. run directory
  const outDir = path.resolve(c.train.out_dir);
  if (opts.resume && opts.overwrite) throw new TrainingError(`--resume and --overwrite contradict each other`);
  if (existsSync(outDir) && !statSync(outDir).isDirectory()) throw new TrainingError(`train.out_dir ${outDir} exists and is not a directory`);
  makeDir(outDir, "train.out_dir");
  // one writer per run directory (rank 0 of a data-parallel run); released on exit
  if (writer) {
    acquireRunLock(outDir, log);
    for (const d of cleanStaleTemps(outDir)) log(`removed a stale temp ${d} (its writer was killed)`);
  }
  const resumeFrom = opts.resume ? latestCheckpoint(outDir) : null;
  if (opts.resume && !resumeFrom) throw new TrainingError(`--resume: ${outDir} has no checkpoint to resume from`);
  if (!opts.resume && latestCheckpoint(outDir)) {
    if (!opts.overwrite) throw new TrainingError(`${outDir} already holds a run; pass --resume to continue it, --overwrite to replace it, or choose another train.out_dir`);
    if (writer) {
      log(`--overwrite: removing the old run in ${outDir}`);
      for (const f of ["checkpoints", "metrics.jsonl", "config.yaml", "tokenizer.json"]) rmSync(path.join(outDir, f), { recursive: true, force: true });
    }
  }
  if (resumeFrom) {
    const saved = (JSON.parse(readFileSync(path.join(resumeFrom, "trainer_state.json"), "utf8")) as TrainerStateJson).config;
    const diff = configDiff(saved, c, ["train.steps", "train.max_minutes", "log.progress", "log.every", "eval.every", "sample.every", "checkpoint.every", "checkpoint.keep_last", "train.threads", "train.gemm_dtype", "parallel.dp", "parallel.zero", "parallel.ep", "parallel.pp", "parallel.pp_layers", "parallel.recompute", "parallel.plan", "parallel.overlap_grad_reduce", "parallel.bucket_mb", "parallel.tp", "parallel.etp", "parallel.edp"]);
    if (diff.length) throw new TrainingError(`--resume: the config differs from the saved run in ${diff.join(", ")}`);
  }
  // memory: a fresh preset run is estimated before the tokenizer is trained (data.vocab_size stands for its vocabulary)
  if (!resumeFrom && !c.model.from && !c.data.tokenizer) checkTrainingFits(resolveConfig(buildRunHfConfig(c, c.data.vocab_size), dispatchOf(c)), c.train.batch_size, c.train.seq_len);
  // a GEMM precision this CPU cannot run is refused before any work (withGemmPrecision below probes it again)
  if (c.train.backend === "native") checkNativeGemmPrecision(c.train.gemm_dtype);
  // 2. tokenizer
  const spec = parseCorpusSpec(c.data.corpus, c.data.jsonl_field);
  const cacheDir = path.resolve(c.data.cache_dir);
  makeDir(cacheDir, "data.cache_dir");
  if (writer) for (const d of cleanCacheTemps(cacheDir)) log(`removed a stale temp ${d} (its writer was killed)`);
  let tokenizer: Tokenizer;
  const tokenizerFile = path.join(outDir, "tokenizer.json");
  // a checkpoint's ids only make sense with its own tokenizer: take it unless one is named explicitly
  const fromDir = c.model.from ? resolveModelDir(c.model.from) : null;
  const fromTokenizer = fromDir && existsSync(path.join(fromDir, "tokenizer.json")) ? path.join(fromDir, "tokenizer.json") : null;
  if (resumeFrom) tokenizer = loadTokenizer(path.join(resumeFrom, "tokenizer.json"));
  else if (c.data.tokenizer) tokenizer = loadTokenizer(c.data.tokenizer);
  else if (fromTokenizer) {
    tokenizer = loadTokenizer(fromTokenizer);
    log(`tokenizer: ${fromTokenizer} (from model.from)`);
  } else if (fromDir) throw new TrainingError(`model.from ${fromDir} has no tokenizer.json; name one with data.tokenizer`);
  else tokenizer = trainedTokenizer(spec, c.data.vocab_size, cacheDir, log);
  if (!resumeFrom && writer) saveTokenizer(tokenizer, tokenizerFile);
  // 3. shards
  const tHash = tokenizerHash(tokenizer);
  const shardDir = shardCacheDir(cacheDir, spec, tHash);
  const t0 = Date.now();
  const { shards, rebuilt } = ensureShards(spec, tokenizer, tHash, shardDir, { valFraction: c.data.val_fraction });
  log(`data: ${shards.splitTokens("train")} train / ${shards.splitTokens("val")} val tokens${rebuilt ? ` (tokenised in ${((Date.now() - t0) / 1e3).toFixed(1)} s)` : " (cached)"}`);
  // 4. model
  const backend = c.train.backend === "ref" ? createBackend({ name: "ref" }) : createBackend({ name: "native", threads: c.train.threads ?? undefined });
  // train.gemm_dtype: the model's GEMMs at that precision (refused here when the CPU cannot run it)
  const modelBackend = withGemmPrecision(backend, c.train.gemm_dtype);
  const shape = { B: c.train.batch_size, T: c.train.seq_len };
  let model: MoeModel, hf: HfConfig, cfg: ModelConfig;
  const from = resumeFrom ?? fromDir;
  if (from) {
    const ctx = Number((JSON.parse(readFileSync(path.join(from, "config.json"), "utf8")) as { max_position_embeddings?: unknown }).max_position_embeddings);
    if (Number.isFinite(ctx) && c.train.seq_len > ctx) throw new TrainingError(`train.seq_len ${c.train.seq_len} is above the context of ${from} (max_position_embeddings ${ctx})`);
    checkTrainingFits(resolveConfig(readHfConfig(from), dispatchOf(c), path.join(from, "config.json")), c.train.batch_size, c.train.seq_len, from);
    ({ model, hf, cfg } = loadHfModel(from, modelBackend, shape, { dispatch: dispatchOf(c) }));
    if (hf.vocab_size !== tokenizer.vocabSize) throw new TrainingError(`${from}: vocab_size ${hf.vocab_size} differs from the tokenizer's ${tokenizer.vocabSize}`);
  } else {
    hf = buildRunHfConfig(c, tokenizer.vocabSize);
    cfg = resolveConfig(hf, dispatchOf(c));
    checkTrainingFits(cfg, c.train.batch_size, c.train.seq_len);
    model = new MoeModel(cfg, modelBackend, shape);
    initParams(model, c.train.seed, c.model.init_std);
  }
  // the run's balancing options are part of the MoE config the layers read
  cfg.moe.balance = { loss: c.balance.loss, zCoef: c.balance.z_coef, virtualCapacityFactor: c.model.capacity_factor, biasRate: c.balance.bias_rate };
  if (!resumeFrom && writer) writeFileAtomic(path.join(outDir, "config.yaml"), toYaml(c));
  // metrics.jsonl: only the steps up to the checkpoint this run continues from (none when fresh)
  if (writer) {
    const step = resumeFrom ? (JSON.parse(readFileSync(path.join(resumeFrom, "trainer_state.json"), "utf8")) as TrainerStateJson).step : 0;
    const dropped = truncateMetrics(outDir, step);
    if (dropped) log(`metrics.jsonl: dropped ${dropped} record(s) after step ${step}`);
  }
  return { outDir, resumeFrom, backend, model, tokenizer, tokenizerFile, hf, cfg, shards };
}

/** Keys (dotted) whose values differ between a saved config and this one, ignoring `ignore`. */
function configDiff(saved: unknown, now: TrainConfig, ignore: string[]): string[] {
  const out: string[] = [];
  const s = saved as Record<string, Record<string, unknown>>;
  const defaults = defaultTrainConfig();
  for (const [sec, fields] of Object.entries(now as unknown as Record<string, Record<string, unknown>>)) {
    for (const [k, v] of Object.entries(fields)) {
      const key = `${sec}.${k}`;
      if (ignore.includes(key)) continue;
      // a key added after the run was saved counts as its default
      const was = s?.[sec] && k in s[sec]! ? s[sec]![k] : (defaults as unknown as Record<string, Record<string, unknown>>)[sec]?.[k];
      if (JSON.stringify(was) !== JSON.stringify(v)) out.push(`${key} (saved ${JSON.stringify(was)}, now ${JSON.stringify(v)})`);
    }
  }
  return out;
}

/** A byte-level BPE trained on the corpus, cached under cacheDir by corpus fingerprint and vocab size. */
function trainedTokenizer(spec: CorpusSpec, vocabSize: number, cacheDir: string, log: (s: string) => void): Tokenizer {
  const file = path.join(cacheDir, `tokenizer-${corpusFingerprint(spec).slice(0, 12)}-${vocabSize}.json`);
  if (existsSync(file)) {
    log(`tokenizer: ${file} (cached)`);
    return loadTokenizer(file);
  }
  const t0 = Date.now();
  const texts = (function* () {
    for (const d of iterateDocuments(spec)) yield d.text;
  })();
  const tok = trainBpe(texts, { vocabSize, specialTokens: ["<|endoftext|>"] });
  saveTokenizer(tok, file);
  log(`tokenizer: trained byte-level BPE, vocab ${tok.vocabSize}, in ${((Date.now() - t0) / 1e3).toFixed(1)} s`);
  return tok;
}
