// The OpenAI-compatible server, driven by the official `openai` npm client on port 0: models,
// completions and chat (streamed and not), usage, stop strings, seed reproducibility, an aborted
// stream (running gauge back to 0, blocks freed), every error case, 16 concurrent streams equal
// to their single-request greedy outputs, tokenize/detokenize, metrics and the expert-load JSON.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import OpenAI from "openai";
import { createBackend } from "../src/backend/index.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights } from "../src/infer/engine-weights.js";
import { openModel } from "../src/infer/open.js";
import { DEFAULT_CHAT_STOP } from "../src/infer/chat.js";
import { MoeServer } from "../src/serve/server.js";
import { writeTinyModelDir } from "./gguf-fixture.js";

const dir = path.join(mkdtempSync(path.join(os.tmpdir(), "moe-serve-")), "tiny");
writeTinyModelDir(dir, 77);
const be = createBackend({ name: "native", threads: 1 });

async function start(opts: { apiKey?: string; maxWaiting?: number; maxBodyBytes?: number; maxModelLen?: number } = {}) {
  const opened = openModel(dir, be);
  const engine = new Engine(be, engineWeights(opened.weights), opened.tokenizer!, { maxModelLen: opts.maxModelLen ?? 128, maxNumSeqs: 16, blockSize: 4 });
  const server = new MoeServer({ port: 0, servedModelName: "tiny", apiKey: opts.apiKey ?? null, maxWaiting: opts.maxWaiting, maxBodyBytes: opts.maxBodyBytes });
  const port = await server.listen();
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  assert.equal(health.status, 503, "503 while loading");
  server.setModel({ engine, tokenizer: opened.tokenizer!, chatTemplate: opened.chatTemplate, chatStop: DEFAULT_CHAT_STOP });
  after(() => server.close(0));
  const base = `http://127.0.0.1:${port}`;
  return { server, engine, base, client: new OpenAI({ baseURL: `${base}/v1`, apiKey: opts.apiKey ?? "none", maxRetries: 0 }) };
}

const main = start();

test("models, completions and chat (streamed and not), usage, tokenize/detokenize", async () => {
  const { client, base } = await main;
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ["tiny"]);
  const c = await client.completions.create({ model: "tiny", prompt: "the cat", max_tokens: 6, temperature: 0 });
  assert.equal(c.choices[0]!.finish_reason, "length");
  assert.equal(c.usage!.completion_tokens, 6);
  // streamed completions concatenate to the same text
  let text = "", last: string | null = null;
  for await (const ch of await client.completions.create({ model: "tiny", prompt: "the cat", max_tokens: 6, temperature: 0, stream: true })) {
    text += ch.choices[0]?.text ?? "";
    last = ch.choices[0]?.finish_reason ?? last;
  }
  assert.equal(text, c.choices[0]!.text);
  assert.equal(last, "length");
  // chat: role first, finish_reason last, usage chunk with include_usage
  const chunks = [];
  for await (const ch of await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } })) chunks.push(ch);
  assert.equal(chunks[0]!.choices[0]!.delta.role, "assistant");
  const usage = chunks.at(-1)!;
  assert.equal(usage.choices.length, 0);
  assert.equal(usage.usage!.completion_tokens, 5);
  assert.equal(chunks.at(-2)!.choices[0]!.finish_reason, "length");
  const chat = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 5, temperature: 0 });
  assert.equal(chat.choices[0]!.message.content, chunks.map((ch) => ch.choices[0]?.delta.content ?? "").join(""));
  // tokenize / detokenize
  const tk = await (await fetch(`${base}/tokenize`, { method: "POST", body: JSON.stringify({ prompt: "the cat" }) })).json() as { tokens: number[] };
  const dt = await (await fetch(`${base}/detokenize`, { method: "POST", body: JSON.stringify({ tokens: tk.tokens }) })).json() as { prompt: string };
  assert.equal(dt.prompt, "the cat");
  // logprobs: the sampled token's logprob is the max of its top alternatives at temperature 0
  const lp = await client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
  for (const x of lp.choices[0]!.logprobs!.content!) assert.ok(Math.abs(x.logprob - x.top_logprobs[0]!.logprob) < 1e-9 && x.logprob <= 0);
});

test("stop strings end the output before the match; seeds reproduce", async () => {
  const { client } = await main;
  const full = (await client.completions.create({ model: "tiny", prompt: "in an hour", max_tokens: 12, temperature: 0 })).choices[0]!.text;
  const stop = full.slice(3, 5);
  assert.ok(stop.length === 2);
  const cut = await client.completions.create({ model: "tiny", prompt: "in an hour", max_tokens: 12, temperature: 0, stop: [stop] });
  assert.equal(cut.choices[0]!.finish_reason, "stop");
  assert.equal(cut.choices[0]!.text, full.slice(0, full.indexOf(stop)));
  const a = await client.completions.create({ model: "tiny", prompt: "the", max_tokens: 10, temperature: 1, seed: 42 });
  const b = await client.completions.create({ model: "tiny", prompt: "the", max_tokens: 10, temperature: 1, seed: 42 });
  assert.equal(a.choices[0]!.text, b.choices[0]!.text);
  const n2 = await client.completions.create({ model: "tiny", prompt: "the", max_tokens: 10, temperature: 1, seed: 42, n: 2 });
  assert.equal(n2.choices.length, 2);
});

test("16 concurrent streams complete and equal their single-request greedy outputs", async () => {
  const { client } = await main;
  const prompts = Array.from({ length: 16 }, (_, i) => `the cat ${"in an hour ".repeat(i % 4)}${i}`);
  const alone: string[] = [];
  for (const p of prompts) alone.push((await client.completions.create({ model: "tiny", prompt: p, max_tokens: 8, temperature: 0 })).choices[0]!.text);
  const streamed = await Promise.all(prompts.map(async (p) => {
    let t = "";
    for await (const ch of await client.completions.create({ model: "tiny", prompt: p, max_tokens: 8, temperature: 0, stream: true })) t += ch.choices[0]?.text ?? "";
    return t;
  }));
  assert.deepEqual(streamed, alone);
});

test("an aborted stream cancels its request: running gauge back to 0, blocks freed", async () => {
  const { client, base, engine } = await main;
  const ac = new AbortController();
  let got = 0;
  try {
    for await (const ch of await client.completions.create({ model: "tiny", prompt: "the cat", max_tokens: 100, temperature: 0, stream: true }, { signal: ac.signal })) {
      void ch;
      if (++got === 3) ac.abort();
    }
  } catch (e) {
    assert.match((e as Error).name, /Abort/);
  }
  for (let i = 0; i < 100 && engine.load.running + engine.load.waiting > 0; i++) await new Promise((r) => setTimeout(r, 10));
  const metrics = await (await fetch(`${base}/metrics`)).text();
  assert.match(metrics, /moets_num_requests_running 0/);
  assert.match(metrics, /moets_request_success_total\{finished_reason="abort"\} 1/);
  assert.equal(engine.kv.stats().usedBlocks, 0);
  // MoE telemetry: the expert-load matrix counts every routed token (top-k per layer)
  const load = await (await fetch(`${base}/v1/moe/expert-load`)).json() as { layers: { tokens_per_expert: number[] }[] };
  const routed = load.layers.map((l) => l.tokens_per_expert.reduce((a, b) => a + b, 0));
  const rows = engine.totals.promptTokens + engine.totals.generatedTokens;
  for (const r of routed) assert.ok(r > 0 && r <= 2 * rows + 2 * 64, `routed ${r}`);
  assert.match(metrics, /moets_moe_expert_tokens_total\{layer="0",expert="\d+"\} \d+/);
});

test("errors: malformed JSON, wrong types, prompt over the context, body limit, unknown model, 404/405", async () => {
  const { base, client } = await main;
  const post = (p: string, body: string) => fetch(`${base}${p}`, { method: "POST", body, headers: { "Content-Type": "application/json" } });
  const err = async (r: Response, status: number, param: string | null, re: RegExp) => {
    assert.equal(r.status, status);
    const j = await r.json() as { error: { message: string; type: string; param: string | null; code: number } };
    assert.equal(j.error.code, status);
    assert.equal(j.error.param, param);
    assert.match(j.error.message, re);
  };
  await err(await post("/v1/completions", "{nope"), 400, null, /malformed JSON/);
  await err(await post("/v1/completions", JSON.stringify({ prompt: "x", temperature: "hot" })), 400, "temperature", /temperature/);
  await err(await post("/v1/completions", JSON.stringify({ prompt: "x", stream: "yes" })), 400, "stream", /boolean/);
  await err(await post("/v1/completions", JSON.stringify({ prompt: "the ".repeat(200) })), 400, "prompt", /context is 128 tokens/);
  await err(await post("/v1/completions", JSON.stringify({ prompt: "x".repeat(2 << 20) })), 413, null, /exceeds/);
  await err(await post("/v1/completions", JSON.stringify({ model: "gpt-4", prompt: "x" })), 404, "model", /does not exist/);
  await err(await post("/v1/chat/completions", JSON.stringify({ messages: "hi" })), 400, "messages", /array/);
  await err(await fetch(`${base}/v1/nothing`), 404, null, /no route/);
  await err(await fetch(`${base}/v1/completions`), 405, null, /not allowed/);
  await assert.rejects(client.completions.create({ model: "tiny", prompt: "x", max_tokens: -1 }), (e: Error & { status?: number }) => e.status === 400);
});

test("API key (401 in constant time) and 429 with Retry-After", async () => {
  const keyed = await start({ apiKey: "sekret" });
  assert.equal((await fetch(`${keyed.base}/health`)).status, 200, "health is public");
  assert.equal((await fetch(`${keyed.base}/v1/models`)).status, 401);
  assert.equal((await fetch(`${keyed.base}/v1/models`, { headers: { Authorization: "Bearer wrong" } })).status, 401);
  assert.equal((await keyed.client.models.list()).data.length, 1);
  // GET by query parameter (the dashboard's EventSource); never for POST
  assert.equal((await fetch(`${keyed.base}/v1/moe/expert-load?api_key=sekret`)).status, 200);
  assert.equal((await fetch(`${keyed.base}/v1/moe/expert-load?api_key=nope`)).status, 401);
  assert.equal((await fetch(`${keyed.base}/v1/completions?api_key=sekret`, { method: "POST", body: JSON.stringify({ prompt: "x" }) })).status, 401);
  const busy = await start({ maxWaiting: 0 });
  const r = await fetch(`${busy.base}/v1/completions`, { method: "POST", body: JSON.stringify({ prompt: "x" }) });
  assert.equal(r.status, 429);
  assert.equal(r.headers.get("retry-after"), "1");
});
