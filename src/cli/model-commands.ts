// `moe generate`, `moe eval`, `moe inspect`, `moe upcycle`: commands that open a model directory
// (an HF-layout directory, or a run directory whose latest checkpoint is used).
import { positionalProblem } from "./arg-problem.js";
import { makeDir } from "../core/make-dir.js";
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { backendFromFlags, createBackend } from "../backend/index.js";
import { loadHfModel, loadHfWeights, readHfConfig, saveHfWeights } from "../model/checkpoint.js";
import { parameterCounts, resolveConfig, type LlamaHfConfig } from "../model/config.js";
import type { RouterConfig } from "../moe/router.js";
import { buildLayout } from "../model/params.js";
import { upcycleWeights, upcycledHfConfig, expertSimilarity } from "../model/upcycle.js";
import { checkFits, estimateMemory, formatBytes } from "../train/memory.js";
import { resolveModelDir } from "../train/checkpoints.js";
import { loadTokenizer } from "../data/tokenizer.js";
import { parseCorpusSpec } from "../data/corpus.js";
import { ensureShards, shardCacheDir, tokenizerHash } from "../data/shards.js";
import { evaluateLoss } from "../train/eval.js";
import { TokenLoader } from "../data/loader.js";
import { SafetensorsCheckpoint } from "../io/safetensors.js";
import { parseFlags } from "./args.js";
import { formatCount } from "./progress.js";
import { inspectGguf, isGgufPath } from "./gguf-source.js";
import { openModel } from "../infer/open.js";
import { checkInferenceFits } from "../infer/load-memory.js";
import { MoeModel } from "../model/model.js";

function positiveInt(cmd: string, name: string, v: number | undefined, d: number): number {
  const x = v ?? d;
  if (!Number.isInteger(x) || x < 1) throw new Error(`${cmd}: --${name} must be a positive integer, got ${x}`);
  return x;
}

export async function runEval(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe eval", argv, {
    data: "string", "jsonl-field": "string", split: "string", batches: "number", "batch-size": "number", "seq-len": "number", "cache-dir": "string", backend: "string", threads: "number", help: "boolean",
  });
  if (flags.help || positional.length !== 1) {
    if (!flags.help) console.error(positionalProblem("moe eval", "MODEL", positional));
    console.log("usage: moe eval MODEL [--data moby-dick|PATHS] [--split val|train] [--batches 16] [--batch-size 8] [--seq-len 128]");
    return flags.help ? 0 : 2;
  }
  const B = positiveInt("moe eval", "batch-size", flags["batch-size"], 8), T = positiveInt("moe eval", "seq-len", flags["seq-len"], 128);
  // weights + every layer's activations of B × T rows, from the config, before anything is read
  checkInferenceFits("moe eval", positional[0]!, () => ({ dtype: "f32", kvTokens: 0, kvBytes: 4, rows: B * T, context: T, allLayers: true }));
  const gguf = isGgufPath(positional[0]!) ? openModel(positional[0]!, createBackend({ name: "ref" })) : null;
  if (gguf && !gguf.tokenizer) throw new Error(`moe eval: ${positional[0]} embeds no tokenizer`);
  const dir = gguf ? gguf.source : resolveModelDir(positional[0]!);
  const tok = gguf ? gguf.tokenizer! : loadTokenizer(path.join(dir, "tokenizer.json"));
  const spec = parseCorpusSpec(flags.data ?? "moby-dick", flags["jsonl-field"] ?? "text");
  const split = flags.split ?? "val";
  if (split !== "val" && split !== "train") throw new Error(`moe eval: --split must be val or train, got '${split}'`);
  const batches = positiveInt("moe eval", "batches", flags.batches, 16);
  const th = tokenizerHash(tok);
  const cache = shardCacheDir(path.resolve(flags["cache-dir"] ?? "runs/cache"), spec, th);
  const { shards } = ensureShards(spec, tok, th, cache, {});
  const be = backendFromFlags(flags, "moe");
  const model = gguf ? new MoeModel(gguf.cfg, be, { B, T }, gguf.weights) : loadHfModel(dir, be, { B, T }).model;
  const loader = new TokenLoader(shards, split, B, T, 0);
  const r = evaluateLoss(model, loader.evalBatches(batches, split));
  if (!Number.isFinite(r.loss)) throw new Error(`moe eval: the loss is ${r.loss} (non-finite outputs); the weights of ${dir} are broken`);
  console.log(JSON.stringify({ model: dir, data: flags.data ?? "moby-dick", split, batches: r.batches, tokens: r.tokens, loss: r.loss, perplexity: r.perplexity }));
  return 0;
}

export async function runInspect(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe inspect", argv, { json: "boolean", help: "boolean" });
  if (flags.help || positional.length !== 1) {
    if (!flags.help) console.error(positionalProblem("moe inspect", "MODEL", positional));
    console.log("usage: moe inspect MODEL [--json]");
    return flags.help ? 0 : 2;
  }
  if (isGgufPath(positional[0]!)) {
    const g = inspectGguf(positional[0]!);
    if (flags.json) console.log(JSON.stringify(g));
    else for (const [k, v] of Object.entries(g)) console.log(`  ${k.padEnd(18)}${typeof v === "object" ? JSON.stringify(v) : String(v)}`);
    return 0;
  }
  const dir = resolveModelDir(positional[0]!);
  const hf = readHfConfig(dir);
  const cfg = resolveConfig(hf);
  const counts = parameterCounts(cfg);
  const ck = SafetensorsCheckpoint.open(dir);
  const dtypes: Record<string, number> = {};
  let bytes = 0;
  for (const n of ck.names()) {
    const i = ck.info(n);
    dtypes[i.dtype] = (dtypes[i.dtype] ?? 0) + 1;
    bytes += i.byteLength;
  }
  const { layout } = buildLayout(cfg);
  const fileSize = readdirSync(dir).filter((f) => f.endsWith(".safetensors") && !f.startsWith("trainer_state") && !f.startsWith("optim-")).reduce((s, f) => s + statSync(path.join(dir, f)).size, 0);
  const moeLayers = cfg.moe.moeLayers.filter(Boolean).length;
  const info = {
    dir, family: hf.model_type, layers: cfg.numLayers, moeLayers, hiddenSize: cfg.hiddenSize, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim,
    vocab: cfg.vocabSize, experts: cfg.moe.numExperts, topK: cfg.moe.topK, expertSize: cfg.moe.expertIntermediateSize, router: cfg.moe.router, routerName: moeLayers ? routerName(cfg.moe.router).split(" ")[0] : null,
    norm: cfg.norm.kind, slidingWindow: cfg.slidingWindow, totalParams: counts.total, activeParams: counts.active, tensors: ck.names().length,
    expectedTensors: layout.hfTensors.length, dtypes, tensorBytes: bytes, fileBytes: fileSize,
    memory: (() => {
      const e = estimateMemory(cfg);
      return { weights: e.weights, trainingState: e.trainingState, activationsPerToken: e.activationsPerToken(128), activationsAtSeqLen: 128, kvCachePerToken: e.kvCachePerToken };
    })(),
  };
  if (flags.json) console.log(JSON.stringify(info));
  else {
    console.log(`${dir}`);
    console.log(`  family          ${info.family}`);
    console.log(`  layers          ${info.layers} (${moeLayers} MoE), hidden ${info.hiddenSize}, heads ${info.heads}/${info.kvHeads} × ${info.headDim}, vocab ${info.vocab}`);
    console.log(`  experts         ${info.experts} per MoE layer, top-${info.topK}, expert FFN ${info.expertSize}, router ${moeLayers ? routerName(cfg.moe.router) : "none (dense)"}`);
    console.log(`  parameters      ${formatCount(counts.total)} total, ${formatCount(counts.active)} active per token`);
    console.log(`  tensors         ${info.tensors} (${Object.entries(dtypes).map(([k, v]) => `${v} ${k}`).join(", ")}), ${formatCount(bytes)} bytes`);
    const m = info.memory;
    console.log(`  memory (est.)   weights ${formatBytes(m.weights.f32)} f32, ${formatBytes(m.weights.bf16)} bf16, ${formatBytes(m.weights.q8_0)} q8_0, ${formatBytes(m.weights.q4_0)} q4_0; training state ${formatBytes(m.trainingState)} (grads + AdamW)`);
    console.log(`                  activations ${formatBytes(m.activationsPerToken)}/token (training, seq_len 128); KV cache ${formatBytes(m.kvCachePerToken)}/token (f32)`);
  }
  return 0;
}

/** The router as `model.router` names it (and what it computes). */
function routerName(r: RouterConfig): string {
  switch (r.kind) {
    case "softmax_topk":
      return r.logitsNormStd !== undefined ? `skywork (softmax top-${r.topK}, gating-logit normalisation λ=${r.logitsNormStd})` : `topk (softmax top-${r.topK}${r.normTopkProb ? ", renormalised" : ""})`;
    case "sparsemixer":
      return `sparsemixer (SparseMixer-${r.variant}, ε=${r.jitterEps})`;
    case "sigmoid_bias":
      return `sigmoid_bias (sigmoid top-${r.topK} with aux-free selection bias)`;
  }
}

export async function runUpcycle(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe upcycle", argv, {
    from: "string", experts: "number", "top-k": "number", granularity: "number", noise: "number", "router-std": "number", seed: "number", out: "string", help: "boolean",
  });
  if (flags.help || positional.length || !flags.from || !flags.out) {
    if (!flags.help) console.error(`moe upcycle: ${positional.length ? `unexpected argument '${positional[0]}'` : !flags.from ? "--from is required" : "--out is required"}`);
    console.log("usage: moe upcycle --from DENSE_DIR --experts 8 --top-k 2 [--granularity 1] [--noise 0] [--router-std 0.01] [--seed 0] --out DIR");
    return flags.help ? 0 : 2;
  }
  const src = resolveModelDir(flags.from);
  const hf = readHfConfig(src);
  if (hf.model_type !== "llama") throw new Error(`moe upcycle: ${src} is a '${hf.model_type}' model; upcycling starts from a dense 'llama' checkpoint`);
  const be = createBackend({ name: "ref" });
  const { weights } = loadHfWeights(src, be);
  const upOpts = {
    experts: positiveInt("moe upcycle", "experts", flags.experts, 8), topK: positiveInt("moe upcycle", "top-k", flags["top-k"], 2),
    granularity: flags.granularity, noise: flags.noise, routerStd: flags["router-std"], seed: flags.seed,
  };
  // the upcycled model's size, before allocating it (dense weights + the MoE copy)
  const upCfg = resolveConfig(upcycledHfConfig(hf as LlamaHfConfig, upOpts), { kind: "dropless" });
  const upBytes = estimateMemory(upCfg).weights.f32;
  checkFits(`moe upcycle --experts ${upOpts.experts}`, upBytes + estimateMemory(resolveConfig(hf, { kind: "dropless" })).weights.f32, `the ${formatBytes(upBytes)} MoE weights plus the dense ones`, upBytes);
  const up = upcycleWeights(weights, hf as LlamaHfConfig, upOpts);
  const out = path.resolve(flags.out);
  if (existsSync(path.join(out, "config.json"))) throw new Error(`moe upcycle: ${out} already holds a model; choose an empty --out`);
  makeDir(out, "--out");
  saveHfWeights(up.weights, be, up.hf, out);
  if (existsSync(path.join(src, "tokenizer.json"))) copyFileSync(path.join(src, "tokenizer.json"), path.join(out, "tokenizer.json"));
  const counts = parameterCounts(up.cfg);
  console.log(`upcycled ${src} → ${out}: ${up.cfg.moe.numExperts} experts top-${up.cfg.moe.topK}, ${formatCount(counts.total)} parameters (${formatCount(counts.active)} active); expert similarity ${expertSimilarity(up.cfg, up.weights.data).map((x) => x.toFixed(3)).join(" ")}`);
  return 0;
}
