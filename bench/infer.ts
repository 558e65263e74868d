// Inference benchmark, ours against llama.cpp (node-llama-cpp 3.21, CPU build) in the same
// process and run: `npm run bench:infer [-- --json] [--threads 1,2] [--models default,1b]
// [--reps N]`.
//
// Models (random weights, Weights(cfg).init(seed, 0.02), generated here; never trained):
//   default  the default training model's shape (preset small-moe: mixtral, vocab 4096,
//            hidden 192, 4 layers, 8 experts top-2, expert 384) — its shape, not its trained weights
//   1b       a ~1B-parameter OLMoE-shaped MoE as a mixtral-arch model (our GGUF export is
//            llama-arch): vocab 50304, hidden 1024, 16 layers, 16 heads (MHA), 64 experts top-8,
//            expert size 256 — 0.98B parameters, 0.22B active per token
// Each model is exported to GGUF Q8_0 and F16 (exportLlamaGguf) with a byte-level tokenizer of
// exactly V tokens (bytes, byte pairs, <|endoftext|>); prompts are token ids.
// Per model and thread count (ours: native backend threads; llama.cpp: context threads), the
// cases run interleaved (ours q8_0, llama Q8_0, ours f16, llama F16, …), median of --reps:
//   decode    batch-1 greedy decode of 64 tokens after a 16-token prompt: 63 / (t64 − t1); ours
//             Q8_0 also with activations "q8" (llama.cpp's Q8_0 numerics), against llama.cpp Q8_0
//   prefill   a 512-token prompt in one batch (ours: first token's latency incl. LM head of one
//             row; llama.cpp: evaluateWithoutGeneratingNewTokens)
//   decode x8 8 concurrent sequences of 64 tokens: 8·63 / (t_last − t_first-of-all)
//   bandwidth fraction of batch-1 decode: bytes of weights read per token (attention, router,
//             top-k experts, LM head; KV reads excluded) × tokens/s ÷ the read bandwidth measured
//             in the same run (readBandwidthProbe over 256 MiB, same thread count)
// Then KV bytes per token (ours: kv.stats(); llama.cpp's F16 cache by its closed form) and the
// resident memory growth of loading our compact weights vs their bytes.
// Ours: KV in bf16 (llama.cpp's default cache is F16: same bytes), prefix caching off (every
// rep recomputes, as llama.cpp after clearHistory). CPU used per case (process cpuUsage / wall)
// is printed so a peer that spins or under-uses threads shows.
// Not: a test (no assertion on speed); not tuned per machine.
import { mkdtempSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import v8 from "node:v8";
import vm from "node:vm";
import { createBackend, type Backend } from "../src/backend/index.js";
import { loadAddon } from "../src/backend/native/addon.js";
import { parseHfConfig, resolveConfig, parameterCounts, type ModelConfig } from "../src/model/config.js";
import { preset } from "../src/model/presets.js";
import { Weights } from "../src/model/weights.js";
import { exportLlamaGguf, type ExportDtype } from "../src/model/gguf-model.js";
import { tokenizerFromJSON } from "../src/data/tokenizer.js";
import { byteTokenizerJson } from "./byte-tokenizer.js";
import type { Tokenizer } from "../src/data/types.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights, matBytes, type EngineDtype, type EngineWeights } from "../src/infer/engine-weights.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { header, median, note, report, type BenchFlags } from "./common.js";
import type { Llama, LlamaModel, LlamaSequence, NodeLlamaCpp } from "../test/node-llama.js";

// ---------------------------------------------------------------------------
// flags

interface InferFlags extends BenchFlags {
  models: string[];
  reps: number;
}

const MODELS = ["default", "1b"];

function parseInferFlags(argv: string[]): InferFlags {
  const f: InferFlags = { json: false, threads: [1, 2], only: new Set(), models: [...MODELS], reps: 3 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--json") f.json = true;
    else if (a === "--threads") {
      f.threads = value().split(",").map(Number);
      if (f.threads.some((t) => !Number.isInteger(t) || t < 1)) throw new Error(`--threads: positive integers, got ${argv[i]}`);
    } else if (a === "--models") {
      f.models = value().split(",");
      for (const m of f.models) if (!MODELS.includes(m)) throw new Error(`--models: unknown model '${m}' (known: ${MODELS.join(", ")})`);
    } else if (a === "--reps") {
      f.reps = Number(value());
      if (!Number.isInteger(f.reps) || f.reps < 1) throw new Error(`--reps: a positive integer, got ${argv[i]}`);
    } else throw new Error(`unknown flag ${a} (known: --json, --threads 1,2, --models ${MODELS.join(",")}, --reps N)`);
  }
  return f;
}

// ---------------------------------------------------------------------------
// models and tokenizer

function modelConfig(name: string): ModelConfig {
  if (name === "default") return resolveConfig(preset("small-moe"));
  return resolveConfig(parseHfConfig({
    model_type: "mixtral", vocab_size: 50304, hidden_size: 1024, intermediate_size: 256, num_hidden_layers: 16,
    num_attention_heads: 16, num_key_value_heads: 16, num_local_experts: 64, num_experts_per_tok: 8, rms_norm_eps: 1e-5,
    rope_theta: 10000, max_position_embeddings: 4096, tie_word_embeddings: false, sliding_window: null,
  }, "bench 1b"));
}

/** Bytes of weights one batch-1 decode token reads: attention, router, top-k experts (expert 0's size), final norm, LM head. */
function bytesPerDecodeToken(w: EngineWeights): number {
  const K = w.cfg.moe.topK;
  let b = matBytes(w.head) + w.normF.byteLength + w.cfg.hiddenSize * 4; // + one embedding row
  for (const l of w.layers) {
    b += matBytes(l.q) + matBytes(l.k) + matBytes(l.v) + matBytes(l.o) + l.ln1.byteLength + l.ln2.byteLength;
    if (l.moe) b += l.moe.router.byteLength + K * (matBytes(l.moe.w13[0]!) + matBytes(l.moe.w2[0]!));
    else b += matBytes(l.gateUp!) + matBytes(l.down!);
  }
  return b;
}

function gc(): void {
  v8.setFlagsFromString("--expose-gc");
  (vm.runInNewContext("gc") as () => void)();
}

const rssMB = (): number => process.memoryUsage().rss / 2 ** 20;
const abMB = (): number => process.memoryUsage().arrayBuffers / 2 ** 20;

// ---------------------------------------------------------------------------
// cases: each run returns tokens/s and the CPU seconds it used

interface Run {
  tps: number;
  cpu: number; // CPU seconds / wall seconds over the timed part
}

function cpuSince(c0: NodeJS.CpuUsage, t0: number): number {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1e6 / ((performance.now() - t0) / 1000);
}

function prompt(len: number, V: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: len }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return 256 + (s % (V - 257)); // byte pairs only: never EOS
  });
}

const DECODE_PROMPT = 16, DECODE_TOKENS = 64, PREFILL = 512, CONCURRENT = 8;

function ours(engine: Engine, V: number) {
  const params = (max: number) => validateSamplingParams({ temperature: 0, max_tokens: max, ignore_eos: true }, { vocabSize: V, maxModelLen: engine.maxModelLen });
  /** Streams nSeq greedy requests; returns (tokens after each sequence's first) / (t_end − latest first-token time). */
  const decode = async (nSeq: number, seed: number): Promise<Run> => {
    const firsts: number[] = [];
    let tEnd = 0, c0 = process.cpuUsage(), tc = 0;
    await Promise.all(Array.from({ length: nSeq }, async (_, i) => {
      let n = 0;
      for await (const ev of engine.submit(prompt(DECODE_PROMPT, V, seed * 31 + i), params(DECODE_TOKENS))) {
        if (ev.id < 0) continue;
        if (++n === 1) {
          firsts.push(performance.now());
          if (firsts.length === nSeq) {
            c0 = process.cpuUsage();
            tc = performance.now();
          }
        }
        if (n === DECODE_TOKENS) tEnd = Math.max(tEnd, performance.now());
      }
    }));
    const cpu = cpuSince(c0, tc);
    return { tps: (nSeq * (DECODE_TOKENS - 1)) / ((tEnd - Math.max(...firsts)) / 1000), cpu };
  };
  const prefill = async (seed: number): Promise<Run> => {
    const p = prompt(PREFILL, V, seed);
    const c0 = process.cpuUsage(), t0 = performance.now();
    for await (const ev of engine.submit(p, params(1))) void ev;
    const dt = (performance.now() - t0) / 1000;
    return { tps: PREFILL / dt, cpu: cpuSince(c0, t0) };
  };
  return { decode, prefill };
}

async function llamaCases(model: LlamaModel, T: number, V: number) {
  const one = await model.createContext({ contextSize: 1024, batchSize: PREFILL, threads: T, sequences: 1 });
  const many = await model.createContext({ contextSize: 1024, batchSize: PREFILL, threads: T, sequences: CONCURRENT });
  const seq1 = one.getSequence();
  const seqs = Array.from({ length: CONCURRENT }, () => many.getSequence());
  const decodeOn = async (ss: LlamaSequence[], seed: number): Promise<Run> => {
    const firsts: number[] = [];
    let tEnd = 0, c0 = process.cpuUsage(), tc = 0;
    await Promise.all(ss.map(async (s, i) => {
      await s.clearHistory();
      let n = 0;
      for await (const tok of s.evaluate(prompt(DECODE_PROMPT, V, seed * 31 + i), { temperature: 0, yieldEogToken: true })) {
        void tok;
        if (++n === 1) {
          firsts.push(performance.now());
          if (firsts.length === ss.length) {
            c0 = process.cpuUsage();
            tc = performance.now();
          }
        }
        if (n === DECODE_TOKENS) {
          tEnd = Math.max(tEnd, performance.now());
          break;
        }
      }
    }));
    const cpu = cpuSince(c0, tc);
    return { tps: (ss.length * (DECODE_TOKENS - 1)) / ((tEnd - Math.max(...firsts)) / 1000), cpu };
  };
  const prefill = async (seed: number): Promise<Run> => {
    await seq1.clearHistory();
    const p = prompt(PREFILL, V, seed);
    const c0 = process.cpuUsage(), t0 = performance.now();
    await seq1.evaluateWithoutGeneratingNewTokens(p);
    const dt = (performance.now() - t0) / 1000;
    return { tps: PREFILL / dt, cpu: cpuSince(c0, t0) };
  };
  return {
    decode: (seed: number) => decodeOn([seq1], seed),
    decodeMany: (seed: number) => decodeOn(seqs, seed),
    prefill,
    dispose: async () => {
      await one.dispose();
      await many.dispose();
    },
  };
}

/** Runs async cases interleaved: one warm-up round, then reps rounds; median tokens/s and CPU per case. */
async function interleaved(cases: (() => Promise<Run>)[], reps: number): Promise<Run[]> {
  for (const c of cases) await c();
  const runs: Run[][] = cases.map(() => []);
  for (let r = 0; r < reps; r++) for (let i = 0; i < cases.length; i++) runs[i]!.push(await cases[i]!());
  return runs.map((rs) => ({ tps: median(rs.map((x) => x.tps)), cpu: median(rs.map((x) => x.cpu)) }));
}

// ---------------------------------------------------------------------------

const PAIRS: { ours: EngineDtype; gguf: ExportDtype; label: string }[] = [
  { ours: "q8_0", gguf: "q8_0", label: "Q8_0" },
  { ours: "f16", gguf: "f16", label: "F16" },
];

async function benchModel(flags: InferFlags, lib: NodeLlamaCpp, llama: Llama, name: string, tmp: string): Promise<void> {
  const addon = loadAddon();
  const cfg = modelConfig(name);
  const counts = parameterCounts(cfg);
  const V = cfg.vocabSize;
  gc();
  const rss0 = rssMB();
  let weights: Weights | null = new Weights(cfg).init(1234, 0.02);
  const tokJson = byteTokenizerJson(V);
  const tokenizer: Tokenizer = tokenizerFromJSON(tokJson, { source: "bench tokenizer" });
  const files: Record<string, string> = {};
  for (const p of PAIRS) {
    files[p.label] = path.join(tmp, `${name}-${p.gguf}.gguf`);
    exportLlamaGguf(files[p.label]!, { cfg, params: weights.data, contextLength: 4096, name: `bench-${name}`, tokenizer: tokJson, eosTokenId: V - 1 }, p.gguf);
  }
  gc();
  const rss1 = rssMB(), ab1 = abMB();
  const ew: EngineWeights[] = PAIRS.map((p) => engineWeights(weights!, { dtype: p.ours }));
  const rssE = rssMB(), abE = abMB();
  weights = null;
  gc();
  const rss2 = rssMB();
  const oursBytes = ew.reduce((a, w) => a + w.bytes, 0);
  note(flags, `\n## model ${name}: ${cfg.family}, V ${V}, C ${cfg.hiddenSize}, L ${cfg.numLayers}, E ${cfg.moe.numExperts} top-${cfg.moe.topK}, F ${cfg.moe.expertIntermediateSize}; ` +
    `${(counts.total / 1e6).toFixed(1)}M parameters (${(counts.active / 1e6).toFixed(1)}M active); random weights N(0, 0.02), not trained`);
  note(flags, `GGUF: ${PAIRS.map((p) => `${p.label} ${(statSync(files[p.label]!).size / 2 ** 20).toFixed(1)} MiB`).join(", ")}; ours: ${PAIRS.map((p, i) => `${p.ours} ${(ew[i]!.bytes / 2 ** 20).toFixed(1)} MiB`).join(", ")}`);
  note(flags, `rss: start ${rss0.toFixed(0)} MiB, with the f32 arena ${rss1.toFixed(0)} MiB, after encoding ${rssE.toFixed(0)} MiB, arena released ${rss2.toFixed(0)} MiB; ` +
    `encoding grew ArrayBuffer memory ${(abE - ab1).toFixed(1)} MiB for ${(oursBytes / 2 ** 20).toFixed(1)} MiB of compact weights (both dtypes)`);

  const models = await Promise.all(PAIRS.map((p) => llama.loadModel({ modelPath: files[p.label]! })));
  const bwBytes = new Uint8Array(256 << 20);
  for (let i = 0; i < bwBytes.length; i += 4096) bwBytes[i] = i & 255;
  header(flags, `inference ${name} (tokens/s; ratio = ours / llama.cpp)`);
  const perTok = ew.map(bytesPerDecodeToken);
  for (const T of flags.threads) {
    const be: Backend = createBackend({ name: "native", threads: T });
    const bwEngine = addon.createEngine!(T, "builtin");
    const bwS: number[] = [];
    addon.readBandwidthProbe!(bwEngine, bwBytes);
    for (let r = 0; r < 5; r++) {
      const t0 = performance.now();
      addon.readBandwidthProbe!(bwEngine, bwBytes);
      bwS.push((performance.now() - t0) / 1000);
    }
    const bw = bwBytes.byteLength / median(bwS) / 1e9;
    report(flags, { bench: `infer-${name}`, case: "read bandwidth (u64 sum)", threads: T, value: bw, unit: "GB/s", peer: null, peer_value: null, ratio: null });
    const engines = ew.map((w) => new Engine(be, w, tokenizer, { maxModelLen: 1024, maxNumSeqs: CONCURRENT, maxNumBatchedTokens: PREFILL, kvCacheTokens: 1024, kvDtype: "bf16", prefixCaching: false }));
    const oc = engines.map((e) => ours(e, V));
    // q8_0 with q8-quantised activations (EngineOptions.activations "q8"): llama.cpp's own
    // numerics for Q8_0 (vec_dot_q8_0_q8_0), so the like-for-like batch-1 comparison
    const q8act = ours(new Engine(be, ew[0]!, tokenizer, { maxModelLen: 1024, maxNumSeqs: CONCURRENT, maxNumBatchedTokens: PREFILL, kvCacheTokens: 1024, kvDtype: "bf16", prefixCaching: false, activations: "q8" }), V);
    const lc = await Promise.all(models.map((m) => llamaCases(m, T, V)));
    const line = (kase: string, o: Run, l: Run | null, unit = "tok/s") => {
      report(flags, { bench: `infer-${name}`, case: kase, threads: T, value: o.tps, unit, peer: l ? "llama.cpp" : null, peer_value: l?.tps ?? null, ratio: l ? o.tps / l.tps : null });
      note(flags, `    cpu used (cores): ours ${o.cpu.toFixed(2)}${l ? `, llama.cpp ${l.cpu.toFixed(2)}` : ""}; load average ${os.loadavg()[0]!.toFixed(2)}`);
    };
    let seed = 1;
    // batch-1 decode
    const dec = await interleaved([...PAIRS.flatMap((_, i) => [() => oc[i]!.decode(1, seed++), () => lc[i]!.decode(seed++)]), () => q8act.decode(1, seed++)], flags.reps);
    PAIRS.forEach((p, i) => {
      const o = dec[2 * i]!, l = dec[2 * i + 1]!;
      line(`decode b1 ${p.label}`, o, l);
      const bo = (o.tps * perTok[i]!) / 1e9, bl = (l.tps * perTok[i]!) / 1e9;
      report(flags, { bench: `infer-${name}`, case: `decode b1 ${p.label} % of read bw`, threads: T, value: (100 * bo) / bw, unit: "%", peer: "llama.cpp", peer_value: (100 * bl) / bw, ratio: bo / bl });
    });
    {
      const o = dec[2 * PAIRS.length]!, l = dec[1]!;
      line("decode b1 Q8_0, q8 activations", o, l);
      const bo = (o.tps * perTok[0]!) / 1e9, bl = (l.tps * perTok[0]!) / 1e9;
      report(flags, { bench: `infer-${name}`, case: "decode b1 Q8_0 q8-act % of read bw", threads: T, value: (100 * bo) / bw, unit: "%", peer: "llama.cpp", peer_value: (100 * bl) / bw, ratio: bo / bl });
    }
    // prefill
    const pre = await interleaved(PAIRS.flatMap((_, i) => [() => oc[i]!.prefill(seed++), () => lc[i]!.prefill(seed++)]), flags.reps);
    PAIRS.forEach((p, i) => line(`prefill ${PREFILL} ${p.label}`, pre[2 * i]!, pre[2 * i + 1]!));
    // 8 concurrent sequences
    const agg = await interleaved(PAIRS.flatMap((_, i) => [() => oc[i]!.decode(CONCURRENT, seed++), () => lc[i]!.decodeMany(seed++)]), flags.reps);
    PAIRS.forEach((p, i) => {
      line(`decode x${CONCURRENT} ${p.label} aggregate`, agg[2 * i]!, agg[2 * i + 1]!);
      const o = agg[2 * i]!.tps / dec[2 * i]!.tps, l = agg[2 * i + 1]!.tps / dec[2 * i + 1]!.tps;
      report(flags, { bench: `infer-${name}`, case: `x${CONCURRENT} / b1 speed-up ${p.label}`, threads: T, value: o, unit: "x", peer: "llama.cpp", peer_value: l, ratio: o / l });
    });
    for (const l of lc) await l.dispose();
  }
  const kvOurs = new Engine(createBackend({ name: "native", threads: 1 }), ew[0]!, tokenizer, { maxModelLen: 1024, maxNumSeqs: 1, kvCacheTokens: 16, kvDtype: "bf16" }).kv.stats().bytesPerToken;
  const kvLlama = 2 * cfg.numLayers * cfg.numKvHeads * cfg.headDim * 2;
  report(flags, { bench: `infer-${name}`, case: "KV bytes per token (bf16 / F16)", threads: 1, value: kvOurs, unit: "B", peer: "llama.cpp", peer_value: kvLlama, ratio: kvOurs / kvLlama });
  report(flags, { bench: `infer-${name}`, case: "rss growth encoding / compact", threads: 1, value: ((rssE - rss1) * 2 ** 20) / oursBytes, unit: "x", peer: null, peer_value: null, ratio: null });
  report(flags, { bench: `infer-${name}`, case: "ArrayBuffer growth / compact", threads: 1, value: ((abE - ab1) * 2 ** 20) / oursBytes, unit: "x", peer: null, peer_value: null, ratio: null });
  report(flags, { bench: `infer-${name}`, case: "batch-1 bytes read per token Q8_0", threads: 1, value: perTok[0]! / 2 ** 20, unit: "MiB", peer: null, peer_value: null, ratio: null });
  report(flags, { bench: `infer-${name}`, case: "batch-1 bytes read per token F16", threads: 1, value: perTok[1]! / 2 ** 20, unit: "MiB", peer: null, peer_value: null, ratio: null });
  note(flags, `rss at the end (ours + llama.cpp's mmapped files + contexts): ${rssMB().toFixed(0)} MiB`);
  for (const m of models) await m.dispose();
}

async function main(): Promise<void> {
  const flags = parseInferFlags(process.argv.slice(2));
  const specifier: string = "node-llama-cpp";
  const lib = (await import(specifier)) as NodeLlamaCpp;
  const llama = await lib.getLlama({ gpu: false, build: "never", logLevel: lib.LlamaLogLevel.error });
  note(flags, `cpu: ${os.cpus()[0]?.model ?? "?"} × ${os.cpus().length}; load average at start ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}; reps ${flags.reps} (median), interleaved`);
  const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-bench-infer-"));
  try {
    for (const m of flags.models) await benchModel(flags, lib, llama, m, tmp);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    await llama.dispose();
  }
  note(flags, `load average at end ${os.loadavg().map((x) => x.toFixed(2)).join(" ")}`);
}

await main();
