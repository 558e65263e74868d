// `npm run bench:serve [-- --json] [--threads 1,2] [--model DIR]`: the load harness of the
// OpenAI-compatible server. An in-process `moe serve` (port 0) of the model (default: random
// weights of the default training model's shape, mixtral family, with a byte-level tokenizer),
// and SSE clients of our own (TTFT and inter-token latency need the events, not whole
// responses) at concurrency 1, 4 and 16: TTFT, ITL and end-to-end latency (p50 / p90 / p99)
// and aggregate output tokens/s. The peer is our own batch-1 engine run without HTTP in the same
// run (node-llama-cpp has no HTTP server to drive): the ratio is serving throughput over
// sequential batch-1 decode, i.e. what continuous batching and the server add or cost.
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createBackend } from "../src/backend/index.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights } from "../src/infer/engine-weights.js";
import { openModel } from "../src/infer/open.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { MoeServer } from "../src/serve/server.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { Weights } from "../src/model/weights.js";
import { saveHfWeights } from "../src/model/checkpoint.js";
import { saveTokenizer } from "../src/data/tokenizer.js";
import { trainBpe } from "../src/data/bpe-train.js";
import { header, note, report, type BenchFlags } from "./common.js";

const MAX_TOKENS = 32;

function flagsOf(argv: string[]): BenchFlags & { model: string | null } {
  const f = { json: false, threads: [1, 2], only: new Set<string>(), model: null as string | null };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--json") f.json = true;
    else if (a === "--threads") f.threads = argv[++i]!.split(",").map(Number);
    else if (a === "--model") f.model = argv[++i]!;
    else throw new Error(`unknown flag ${a} (known: --json, --threads 1,2, --model DIR)`);
  }
  if (f.threads.some((t) => !(Number.isInteger(t) && t >= 1))) throw new Error("--threads: positive integers");
  return f;
}

/** A random-weight model of the default training model's shape (mixtral family) with a BPE tokenizer. */
function defaultShapeModel(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), "moe-bench-serve-"));
  const texts = Array.from({ length: 200 }, (_, i) => `Call me Ishmael. Some years ago ${i} never mind how long precisely, having little or no money in my purse.`);
  const tok = trainBpe(texts, { vocabSize: 4096, specialTokens: ["<|endoftext|>"] });
  const hf = parseHfConfig({
    model_type: "mixtral", vocab_size: 4096, hidden_size: 192, intermediate_size: 384, num_hidden_layers: 4, num_attention_heads: 6,
    num_key_value_heads: 2, num_local_experts: 8, num_experts_per_tok: 2, max_position_embeddings: 1024, eos_token_id: tok.eosId ?? null,
  });
  const w = new Weights(resolveConfig(hf), "f32").init(1, 0.05);
  saveHfWeights(w, createBackend({ name: "ref" }), hf, dir);
  saveTokenizer(tok, path.join(dir, "tokenizer.json"));
  return dir;
}

interface Sample {
  ttft: number;
  itl: number[];
  e2e: number;
  tokens: number;
}

/** One streamed completion, timed by its SSE events. */
async function streamOnce(base: string, prompt: string): Promise<Sample> {
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/completions`, {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: MAX_TOKENS, temperature: 0, ignore_eos: true, stream: true }),
  });
  if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
  const dec = new TextDecoder();
  let buf = "", ttft = -1, last = 0, tokens = 0;
  const itl: number[] = [];
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buf += dec.decode(chunk, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, i);
      buf = buf.slice(i + 2);
      if (!ev.startsWith("data: ") || ev === "data: [DONE]") continue;
      const now = performance.now();
      tokens++;
      if (ttft < 0) ttft = now - t0;
      else itl.push(now - last);
      last = now;
    }
  }
  return { ttft, itl, e2e: performance.now() - t0, tokens };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
}

async function main(): Promise<void> {
  const flags = flagsOf(process.argv.slice(2));
  const dir = flags.model ?? defaultShapeModel();
  note(flags, `model: ${flags.model ?? "random weights, default training shape (mixtral, 9.1M parameters)"}; ${MAX_TOKENS} tokens per request; load ${os.loadavg()[0]!.toFixed(1)}`);
  header(flags, "serving: SSE clients vs sequential batch-1 decode (our engine without HTTP)");
  for (const T of flags.threads) {
    const be = createBackend({ name: "native", threads: T });
    const opened = openModel(dir, be);
    const mk = () => new Engine(be, engineWeights(opened.weights), opened.tokenizer!, { maxModelLen: 256, maxNumSeqs: 16, maxNumBatchedTokens: 512 });
    const prompts = Array.from({ length: 16 }, (_, i) => `Call me Ishmael. Some years ago ${i}, having little money`);
    // peer: sequential batch-1 decode through the engine API
    const solo = mk();
    const params = validateSamplingParams({ temperature: 0, max_tokens: MAX_TOKENS, ignore_eos: true }, { vocabSize: opened.cfg.vocabSize, maxModelLen: 256 });
    let t0 = performance.now(), n = 0;
    for (const p of prompts.slice(0, 4)) for await (const ev of solo.submit(opened.tokenizer!.encode(p), params)) if (ev.id >= 0) n++;
    const batch1 = n / ((performance.now() - t0) / 1e3);
    const server = new MoeServer({ port: 0, servedModelName: "bench" });
    const port = await server.listen();
    server.setModel({ engine: mk(), tokenizer: opened.tokenizer!, chatTemplate: opened.chatTemplate, chatStop: [] });
    const base = `http://127.0.0.1:${port}`;
    await streamOnce(base, prompts[0]!); // warm-up
    for (const conc of [1, 4, 16]) {
      const rounds = conc === 1 ? 4 : conc === 4 ? 2 : 1;
      const samples: Sample[] = [];
      t0 = performance.now();
      for (let r = 0; r < rounds; r++) samples.push(...(await Promise.all(prompts.slice(0, conc).map((p) => streamOnce(base, p)))));
      const secs = (performance.now() - t0) / 1e3;
      const toks = samples.reduce((a, s) => a + s.tokens, 0) / secs;
      const ttft = samples.map((s) => s.ttft), itl = samples.flatMap((s) => s.itl), e2e = samples.map((s) => s.e2e);
      const c = `c=${conc}`;
      report(flags, { bench: "serve", case: `${c} output tokens/s`, threads: T, value: toks, unit: "tok/s", peer: "ours, batch-1 engine, sequential", peer_value: batch1, ratio: toks / batch1 });
      for (const [name, xs] of [["TTFT", ttft], ["ITL", itl], ["e2e", e2e]] as const) {
        report(flags, { bench: "serve", case: `${c} ${name} p50/p90/p99 ms`, threads: T, value: pct(xs, 50), unit: "ms", peer: `p90 ${pct(xs, 90).toFixed(1)} p99 ${pct(xs, 99).toFixed(1)}`, peer_value: null, ratio: null });
      }
    }
    await server.close(0);
  }
}

await main();
