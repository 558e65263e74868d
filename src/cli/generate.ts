// `moe generate` and `moe chat`: the inference engine from the command line. Both stream tokens
// to stdout as they are sampled; every sampler option is a flag (names as vLLM / OpenAI, with
// dashes). `--dtype` stores the weights compactly at load (bf16, f16, fp8_e4m3, fp8_e5m2, int8,
// q8_0, q4_0, q4_k, q6_k); `MODEL` is an HF directory, a run directory or a .gguf file.
// Not: the engine (infer/engine.ts) or the server (serve/).
import { positionalProblem } from "./arg-problem.js";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { backendFromFlags } from "../backend/index.js";
import { Engine } from "../infer/engine.js";
import { engineDtypeFor, engineLoadWeightBytes, openEngineModel, type OpenedEngineModel } from "../infer/open.js";
import { checkInferenceFits } from "../infer/load-memory.js";
import { runTpWorkerRank, TensorParallel, tpLaunch } from "../infer/tp.js";
import { validateSamplingParams, type SamplingParams } from "../infer/sampling-params.js";
import { DEFAULT_CHAT_STOP, renderChat } from "../infer/chat.js";
import { fitChat } from "../infer/chat-window.js";
import type { Tokenizer } from "../data/types.js";
import { parseFlags } from "./args.js";

const SAMPLER_FLAGS = {
  "max-tokens": "number", temperature: "number", "top-p": "number", "top-k": "number", "min-p": "number", "repetition-penalty": "number",
  "presence-penalty": "number", "frequency-penalty": "number", "min-tokens": "number", seed: "number", stop: "string", "ignore-eos": "boolean",
} as const;
const ENGINE_FLAGS = { dtype: "string", "kv-dtype": "string", "max-model-len": "number", backend: "string", threads: "number", tp: "number", help: "boolean" } as const;

type SamplerFlags = { [K in keyof typeof SAMPLER_FLAGS]?: (typeof SAMPLER_FLAGS)[K] extends "number" ? number : (typeof SAMPLER_FLAGS)[K] extends "boolean" ? boolean : string };

function samplingParams(f: SamplerFlags, vocabSize: number, maxModelLen: number, defaults: { maxTokens: number; stop?: readonly string[] }): SamplingParams {
  return validateSamplingParams({
    max_tokens: f["max-tokens"] ?? defaults.maxTokens, temperature: f.temperature ?? 0.8, top_p: f["top-p"] ?? 0.95, top_k: f["top-k"], min_p: f["min-p"],
    repetition_penalty: f["repetition-penalty"], presence_penalty: f["presence-penalty"], frequency_penalty: f["frequency-penalty"], min_tokens: f["min-tokens"],
    seed: f.seed ?? 0, stop: [...(f.stop !== undefined ? f.stop.split("|") : []), ...(defaults.stop ?? [])], ignore_eos: f["ignore-eos"] ?? false,
  }, { vocabSize, maxModelLen });
}

interface Loaded {
  opened: OpenedEngineModel;
  tokenizer: Tokenizer;
  engine: Engine;
  maxModelLen: number;
  tp: TensorParallel;
}

/** The engine on rank 0; null on a tensor-parallel rank ≥ 1 (launched by mpirun / moe launch) once rank 0 has closed it. */
async function load(cmd: string, model: string, flags: { dtype?: string; "kv-dtype"?: string; "max-model-len"?: number; backend?: string; threads?: number; tp?: number }): Promise<Loaded | null> {
  // --tp N: the engine split over N ranks (threads of this process, or the launched ranks), same tokens
  const tpl = await tpLaunch(cmd, flags);
  const f = tpl.flags;
  const be = backendFromFlags(f, cmd);
  const kvDtype = f["kv-dtype"] ?? "f32";
  if (kvDtype !== "f32" && kvDtype !== "bf16") throw new Error(`${cmd}: --kv-dtype must be f32 or bf16, got '${kvDtype}'`);
  const dtype = engineDtypeFor(model, f.dtype, cmd);
  const ml = f["max-model-len"];
  if (ml !== undefined && !(Number.isInteger(ml) && ml >= 2)) throw new Error(`${cmd}: --max-model-len must be an integer ≥ 2, got ${ml}`);
  // weights + KV cache + workspaces, estimated from the config before anything is read
  checkInferenceFits(cmd, model, (s) => ({ dtype, weightBytes: engineLoadWeightBytes(model, dtype, s.parameters), kvTokens: ml ?? Math.min(s.context, 4096), kvBytes: kvDtype === "f32" ? 4 : 2, rows: 256, context: ml ?? Math.min(s.context, 4096) }));
  if (tpl.group && tpl.group.rank > 0) {
    await runTpWorkerRank(() => openEngineModel(model, be, dtype, cmd).engineWeights, tpl.group, be);
    return null;
  }
  const opened = openEngineModel(model, be, dtype, cmd);
  if (!opened.tokenizer) throw new Error(`${cmd}: ${opened.source} has no tokenizer (tokenizer.json or GGUF tokenizer metadata)`);
  const maxModelLen = ml ?? Math.min(opened.contextLength, 4096);
  const tp = await TensorParallel.start(opened.engineWeights, { size: tpl.size, backend: { backend: f.backend, threads: f.threads }, group: tpl.group ?? undefined });
  const engine = new Engine(be, tp.weights, opened.tokenizer, { maxModelLen, maxNumSeqs: 1, kvDtype, maxNumBatchedTokens: 256 });
  return { opened, tokenizer: opened.tokenizer, engine, maxModelLen, tp };
}

export async function runGenerate(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe generate", argv, { prompt: "string", "prompt-file": "string", ...SAMPLER_FLAGS, ...ENGINE_FLAGS });
  if (flags.help || positional.length !== 1) {
    if (!flags.help) console.error(positionalProblem("moe generate", "MODEL", positional));
    console.log("usage: moe generate MODEL [--prompt TEXT | --prompt-file FILE | (stdin)] [--max-tokens 64] [--temperature 0.8] [--top-p 0.95] [--top-k 0] [--min-p 0]\n" +
      "  [--repetition-penalty 1] [--presence-penalty 0] [--frequency-penalty 0] [--min-tokens 0] [--seed 0] [--stop 'A|B'] [--ignore-eos]\n" +
      "  [--dtype f32|bf16|f16|fp8_e4m3|fp8_e5m2|int8|q8_0|q4_0|q4_k|q6_k (.gguf: auto = the file's types, the default)] [--kv-dtype f32|bf16] [--max-model-len N] [--threads N] [--tp N]");
    return flags.help ? 0 : 2;
  }
  if (flags.prompt !== undefined && flags["prompt-file"] !== undefined) throw new Error("moe generate: give --prompt or --prompt-file, not both");
  const L = await load("moe generate", positional[0]!, flags);
  if (!L) return 0; // a tensor-parallel rank ≥ 1: rank 0 reads the prompt and prints
  const prompt = flags.prompt ?? (flags["prompt-file"] !== undefined ? readFileSync(flags["prompt-file"], "utf8") : process.stdin.isTTY ? "" : readFileSync(0, "utf8"));
  let ids = L.tokenizer.encode(prompt);
  if (ids.length === 0 && L.tokenizer.eosId !== undefined) ids = [L.tokenizer.eosId];
  if (ids.length === 0) throw new Error("moe generate: the prompt is empty and the tokenizer has no EOS token to start from");
  // documented limits (as llama.cpp): a prompt over the context keeps its last tokens; the output
  // budget is capped to what the context has left; both say so on stderr
  if (ids.length >= L.maxModelLen) {
    console.error(`moe generate: the prompt has ${ids.length} tokens, the context ${L.maxModelLen} (--max-model-len); keeping its last ${L.maxModelLen - 1}`);
    ids = ids.slice(-(L.maxModelLen - 1));
  }
  const room = L.maxModelLen - ids.length;
  if (flags["max-tokens"] !== undefined && flags["max-tokens"] > room) {
    console.error(`moe generate: --max-tokens ${flags["max-tokens"]} capped to ${room} (context ${L.maxModelLen} − prompt ${ids.length} tokens)`);
    flags["max-tokens"] = room;
  }
  const params = samplingParams(flags, L.opened.cfg.vocabSize, L.maxModelLen, { maxTokens: Math.min(64, room) });
  process.stdout.write(prompt);
  for await (const ev of L.engine.submit(ids, params)) process.stdout.write(ev.text);
  process.stdout.write("\n");
  await L.tp.close();
  return 0;
}

export async function runChat(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe chat", argv, { system: "string", ...SAMPLER_FLAGS, ...ENGINE_FLAGS });
  if (flags.help || positional.length !== 1) {
    if (!flags.help) console.error(positionalProblem("moe chat", "MODEL", positional));
    console.log("usage: moe chat MODEL [--system TEXT] [sampler and engine flags of moe generate]; /reset clears the conversation, /exit or Ctrl-D ends");
    return flags.help ? 0 : 2;
  }
  const L = await load("moe chat", positional[0]!, flags);
  if (!L) return 0; // a tensor-parallel rank ≥ 1: rank 0 holds the conversation
  const tpl = L.opened.chatTemplate;
  const stop = tpl.isDefault ? DEFAULT_CHAT_STOP : [];
  const params = samplingParams(flags, L.opened.cfg.vocabSize, L.maxModelLen, { maxTokens: 256, stop });
  const system = flags.system ? [{ role: "system", content: flags.system }] : [];
  let messages: { role: string; content: string }[] = [...system];
  const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY === true });
  const ask = () => process.stdout.write(process.stdin.isTTY ? "> " : "");
  if (tpl.isDefault) console.error(`moe chat: ${L.opened.source} has no chat template; using the default (ChatML-like) template`);
  ask();
  for await (const line of rl) {
    const text = line.trim();
    if (text === "/exit") break;
    if (text === "/reset") {
      messages = [...system];
      console.log("(conversation cleared)");
      ask();
      continue;
    }
    if (!text) {
      ask();
      continue;
    }
    messages.push({ role: "user", content: text });
    // over the context: drop the oldest turns whole (the system message stays), keeping room for a
    // reply; a message too long alone is not sent (documented in the README, as llama.cpp refuses it)
    const encode = (m: { role: string; content: string }[]) => L.tokenizer.encode(renderChat(m, { template: tpl.template, bosToken: tpl.bosToken, eosToken: tpl.eosToken, addGenerationPrompt: true }));
    const fit = fitChat(messages, encode, L.maxModelLen, Math.min(params.max_tokens ?? 256, Math.floor(L.maxModelLen / 2)));
    if (!fit.ok) {
      console.error(`moe chat: the message is ${fit.tokens} tokens with the chat template, the context ${L.maxModelLen} (--max-model-len); not sent`);
      messages.pop();
      ask();
      continue;
    }
    if (fit.dropped) console.error(`moe chat: the conversation is over the context ${L.maxModelLen} (--max-model-len) with room for the reply; dropped the oldest ${fit.dropped} turn(s)`);
    messages = fit.messages;
    const ids = fit.ids;
    let reply = "";
    for await (const ev of L.engine.submit(ids, { ...params, max_tokens: Math.min(params.max_tokens ?? L.maxModelLen, L.maxModelLen - ids.length) })) {
      reply += ev.text;
      process.stdout.write(ev.text);
    }
    process.stdout.write("\n");
    messages.push({ role: "assistant", content: reply });
    ask();
  }
  await L.tp.close();
  return 0;
}
