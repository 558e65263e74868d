// `moe serve MODEL`: the OpenAI-compatible server (serve/server.ts) on the engine. It listens
// first (GET /health answers 503 while the model loads), then serves. SIGINT / SIGTERM drain:
// stop accepting, give running requests --drain-timeout seconds, cancel the rest, exit 0.
import { positionalProblem } from "./arg-problem.js";
import path from "node:path";
import { backendFromFlags } from "../backend/index.js";
import { Engine } from "../infer/engine.js";
import { engineDtypeFor, engineLoadWeightBytes, openEngineModel } from "../infer/open.js";
import { checkInferenceFits } from "../infer/load-memory.js";
import { runTpWorkerRank, TensorParallel, tpLaunch } from "../infer/tp.js";
import { DEFAULT_CHAT_STOP } from "../infer/chat.js";
import { MoeServer } from "../serve/server.js";
import { serveDashboardFile } from "../serve/dashboard.js";
import { parseFlags } from "./args.js";

const USAGE = "usage: moe serve MODEL [--host 127.0.0.1] [--port 8000] [--api-key K] [--max-num-seqs 8] [--max-num-batched-tokens 512] [--max-model-len N]\n" +
  "  [--served-model-name NAME] [--dtype f32|bf16|f16|fp8_e4m3|fp8_e5m2|int8|q8_0|q4_0|q4_k|q6_k|auto (.gguf default)] [--kv-dtype f32|bf16] [--threads N] [--tp N] [--drain-timeout 10]";

export async function runServe(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe serve", argv, {
    host: "string", port: "number", "api-key": "string", "max-num-seqs": "number", "max-num-batched-tokens": "number", "max-model-len": "number",
    "served-model-name": "string", dtype: "string", "kv-dtype": "string", backend: "string", threads: "number", tp: "number", "drain-timeout": "number", help: "boolean",
  });
  if (flags.help || positional.length !== 1) {
    if (!flags.help) console.error(positionalProblem("moe serve", "MODEL", positional));
    console.log(USAGE);
    return flags.help ? 0 : 2;
  }
  const port = flags.port ?? 8000;
  if (!(Number.isInteger(port) && port >= 0 && port < 65536)) throw new Error(`moe serve: --port must be an integer in [0, 65535], got ${port}`);
  const dtype = engineDtypeFor(positional[0]!, flags.dtype, "moe serve");
  const kvDtype = flags["kv-dtype"] ?? "f32";
  if (kvDtype !== "f32" && kvDtype !== "bf16") throw new Error(`moe serve: --kv-dtype must be f32 or bf16, got '${kvDtype}'`);
  const drain = flags["drain-timeout"] ?? 10;
  if (!(drain >= 0)) throw new Error(`moe serve: --drain-timeout must be ≥ 0 seconds, got ${drain}`);
  // --tp N: the engine split over N ranks (threads of this process, or the launched ranks), same tokens
  const tpl = await tpLaunch("moe serve", flags);
  const bf = tpl.flags;
  const be = backendFromFlags(bf, "moe serve");
  const model = positional[0]!;
  // weights + KV cache (max-num-seqs × max-model-len tokens) + workspaces, from the config, before listening
  checkInferenceFits("moe serve", model, (s) => {
    const len = flags["max-model-len"] ?? Math.min(s.context, 4096);
    return { dtype, weightBytes: engineLoadWeightBytes(model, dtype, s.parameters), kvTokens: (flags["max-num-seqs"] ?? 8) * len, seqs: flags["max-num-seqs"] ?? 8, kvBytes: kvDtype === "f32" ? 4 : 2, rows: flags["max-num-batched-tokens"] ?? 512, context: len };
  });
  if (tpl.group && tpl.group.rank > 0) {
    // only rank 0 listens; this rank runs its slice of every step until rank 0 closes the engine
    await runTpWorkerRank(() => openEngineModel(model, be, dtype, "moe serve").engineWeights, tpl.group, be);
    return 0;
  }
  const server = new MoeServer({ host: flags.host, port, apiKey: flags["api-key"] ?? null, servedModelName: flags["served-model-name"] ?? path.basename(path.resolve(model)), staticHandler: serveDashboardFile });
  const bound = await server.listen();
  console.log(`moe serve: listening on http://${flags.host ?? "127.0.0.1"}:${bound} (loading ${model})`);
  let stopping = false;
  const done = new Promise<void>((resolve) => {
    const stop = (sig: string) => {
      if (stopping) process.exit(130);
      stopping = true;
      console.log(`moe serve: ${sig}: draining (up to ${drain} s)`);
      void server.close(drain * 1000).then(resolve);
    };
    process.on("SIGINT", () => stop("SIGINT"));
    process.on("SIGTERM", () => stop("SIGTERM"));
  });
  const opened = openEngineModel(model, be, dtype, "moe serve");
  if (!opened.tokenizer) throw new Error(`moe serve: ${opened.source} has no tokenizer`);
  const maxModelLen = flags["max-model-len"] ?? Math.min(opened.contextLength, 4096);
  const tp = await TensorParallel.start(opened.engineWeights, { size: tpl.size, backend: { backend: bf.backend, threads: bf.threads }, group: tpl.group ?? undefined });
  const engine = new Engine(be, tp.weights, opened.tokenizer, {
    maxModelLen, maxNumSeqs: flags["max-num-seqs"] ?? 8, maxNumBatchedTokens: flags["max-num-batched-tokens"] ?? 512, kvDtype,
  });
  server.setModel({ engine, tokenizer: opened.tokenizer, chatTemplate: opened.chatTemplate, chatStop: opened.chatTemplate.isDefault ? DEFAULT_CHAT_STOP : [] });
  console.log(`moe serve: ready — ${opened.cfg.family}, ${opened.engineWeights.dtype}${dtype === "auto" ? " (the file's types)" : ""} weights (${(engine.weights.bytes / 1e6).toFixed(1)} MB), context ${maxModelLen}, KV ${(engine.kv.stats().totalBytes / 1e6).toFixed(1)} MB${tpl.size > 1 ? ` (rank 0 of tp ${tpl.size}${tpl.group ? `, ${tpl.group.backend} ranks` : ""})` : ""}`);
  await done;
  await tp.close();
  return 0;
}
