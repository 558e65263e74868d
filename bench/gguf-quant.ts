// Quantised GGUF figures for the README: `node dist/bench/gguf-quant.js [--threads 1] [--json]`.
// One OLMoE-shaped model with random weights (olmoe arch: vocab 272, hidden 512, 4 layers,
// 8 heads, 16 experts top-4, expert size 256; 29M parameters) is exported per dtype; for each:
// export time and file size; load time (openEngineModel, --dtype auto: the file's blocks) and
// the engine's weight bytes with their formats; batch-1 greedy
// decode tokens/s (32 tokens after an 11-token prompt) of ours and of llama.cpp
// (node-llama-cpp, same thread count, F32 KV cache) on the same file, and whether the greedy
// tokens agree (the common prefix, and teacher-forced: llama.cpp's greedy choice after each
// of our tokens). Not a test (no assertion), not tuned.
import { mkdtempSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createBackend } from "../src/backend/index.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { exportModelGguf } from "../src/model/gguf-families.js";
import type { ExportDtype } from "../src/model/gguf-types.js";
import { openEngineModel } from "../src/infer/open.js";
import { Engine } from "../src/infer/engine.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { tinyParams, tinyTokenizer, TINY_VOCAB } from "../test/gguf-fixture.js";

const args = process.argv.slice(2);
const threads = Number(args[args.indexOf("--threads") + 1] ?? 1) || 1;
const tok = tinyTokenizer();
const EOS = tok.eosId;
const hf = {
  model_type: "olmoe", vocab_size: TINY_VOCAB, hidden_size: 512, num_hidden_layers: 4, num_attention_heads: 8, num_key_value_heads: 8,
  intermediate_size: 256, num_experts: 16, num_experts_per_tok: 4, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 256,
  bos_token_id: EOS, eos_token_id: EOS, tie_word_embeddings: false,
};
const cfg = resolveConfig(parseHfConfig(hf));
const params = tinyParams(cfg, 3);
const PROMPT = [84, 258, 32, 99, 97, 116, 259, 263, 17, 200, 5];
const GEN = 32;
const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-gguf-bench-"));

interface LlamaLib {
  getLlama(o: Record<string, unknown>): Promise<{ loadModel(o: { modelPath: string }): Promise<{ createContext(o: Record<string, unknown>): Promise<{ getSequence(): { evaluate(t: number[], o: Record<string, unknown>): AsyncGenerator<number>; clearHistory(): Promise<void>; controlledEvaluate(i: unknown[]): Promise<({ next: { token?: number | null } } | undefined)[]> }; dispose(): Promise<void> }>; dispose(): Promise<void> }>; dispose(): Promise<void> }>;
  LlamaLogLevel: { error: string };
}
const spec: string = "node-llama-cpp";
const lib = (await import(spec).catch(() => null)) as LlamaLib | null;
const llama = lib ? await lib.getLlama({ gpu: false, build: "never", logLevel: lib.LlamaLogLevel.error }) : null;

const rows: Record<string, unknown>[] = [];
try {
  for (const dtype of ["f32", "f16", "q8_0", "q6_k", "q4_k_m", "q4_0"] as ExportDtype[]) {
    const file = path.join(tmp, `m-${dtype}.gguf`);
    let t0 = performance.now();
    exportModelGguf(file, { cfg, params, contextLength: 256, tokenizer: tok.json, bosTokenId: EOS, eosTokenId: EOS }, dtype);
    const exportS = (performance.now() - t0) / 1000;
    const be = createBackend({ name: "native", threads });
    t0 = performance.now();
    const opened = openEngineModel(file, be, undefined, "bench");
    const loadS = (performance.now() - t0) / 1000;
    const eng = new Engine(be, opened.engineWeights, opened.tokenizer!, { maxModelLen: 64, maxNumSeqs: 1 });
    const sp = validateSamplingParams({ temperature: 0, max_tokens: GEN, ignore_eos: true }, { vocabSize: cfg.vocabSize, maxModelLen: 64 });
    const ours: number[] = [];
    let tFirst = 0;
    t0 = performance.now();
    for await (const e of eng.submit(PROMPT, sp)) {
      if (ours.length === 0) tFirst = performance.now();
      ours.push(e.id);
    }
    const oursTps = (GEN - 1) / ((performance.now() - tFirst) / 1000);
    let llamaTps: number | null = null, agree: number | null = null, forced: number | null = null;
    if (llama) {
      const lm = await llama.loadModel({ modelPath: file });
      const ctx = await lm.createContext({ contextSize: 64, batchSize: 64, threads, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
      const theirs: number[] = [];
      let tl = 0;
      const seq = ctx.getSequence();
      for await (const x of seq.evaluate(PROMPT, { temperature: 0, yieldEogToken: true })) {
        if (theirs.length === 0) tl = performance.now();
        theirs.push(x);
        if (theirs.length >= GEN) break;
      }
      llamaTps = (GEN - 1) / ((performance.now() - tl) / 1000);
      agree = 0;
      while (agree < GEN && theirs[agree] === ours[agree]) agree++;
      // teacher-forced: llama.cpp's greedy choice after the prompt and each of our tokens
      await seq.clearHistory();
      const res = await seq.controlledEvaluate([...PROMPT, ...ours.slice(0, GEN - 1)].map((x, i) => (i >= PROMPT.length - 1 ? [x, { generateNext: { token: true } }] : x)));
      forced = ours.filter((x, i) => res[PROMPT.length - 1 + i]?.next.token === x).length;
      await ctx.dispose();
      await lm.dispose();
    }
    rows.push({
      dtype, fileMB: +(statSync(file).size / 1e6).toFixed(2), exportS: +exportS.toFixed(2), loadS: +loadS.toFixed(3),
      engineMB: +(opened.engineWeights.bytes / 1e6).toFixed(2), formats: (opened.engineWeights as { formats?: unknown }).formats,
      oursDecodeTps: +oursTps.toFixed(1), llamaDecodeTps: llamaTps === null ? null : +llamaTps.toFixed(1), greedyPrefix: agree === null ? null : `${agree}/${GEN}`, teacherForced: forced === null ? null : `${forced}/${GEN}`,
    });
    rmSync(file);
  }
} finally {
  await llama?.dispose();
  rmSync(tmp, { recursive: true, force: true });
}
if (args.includes("--json")) console.log(JSON.stringify({ threads, cpu: os.cpus()[0]?.model, loadavg: os.loadavg(), rows }, null, 2));
else {
  console.log(`threads ${threads}, ${os.cpus()[0]?.model}, load ${os.loadavg().map((x) => x.toFixed(1)).join(" ")}`);
  console.table(rows);
}
