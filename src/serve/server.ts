// `moe serve`: an OpenAI-compatible HTTP server on node:http over the inference engine.
//
// Endpoints: GET /health (503 while loading), GET /v1/models, POST /v1/completions,
// POST /v1/chat/completions (SSE when `stream`), POST /tokenize, POST /detokenize, GET /metrics
// (Prometheus), GET /v1/moe/expert-load (JSON, or SSE with ?stream=true), GET /dashboard.
// Errors are `{error: {message, type, param, code}}` with the matching status. A client that
// disconnects aborts its request in the engine (res "close" before the response finished).
// `close(drainMs)` stops accepting, lets running requests finish for drainMs, then cancels them.
//
// Not: the engine (infer/), metrics definitions (telemetry.ts), dashboard files (dashboard/).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash, timingSafeEqual } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Engine, TokenEvent } from "../infer/engine.js";
import type { Tokenizer } from "../data/types.js";
import { renderChat, type LoadedChatTemplate } from "../infer/chat.js";
import { SAMPLING_PARAM_NAMES, SamplingParamsError, validateSamplingParams, type SamplingParams } from "../infer/sampling-params.js";
import { Telemetry } from "./telemetry.js";

export interface ServeOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8000; 0 picks a free port. */
  port?: number;
  /** Bearer key every endpoint but /health requires; null = none. Default null. */
  apiKey?: string | null;
  /** Name clients use in `model`. Required. */
  servedModelName: string;
  /** Requests waiting beyond this get 429. Default 64. */
  maxWaiting?: number;
  /** Largest request body. Default 1 MiB. */
  maxBodyBytes?: number;
  /** Extra GET handlers tried first (the dashboard); return true when handled. */
  staticHandler?: (req: IncomingMessage, res: ServerResponse, path: string) => boolean;
}

/** What the server serves, once loaded. */
export interface ServedModel {
  engine: Engine;
  tokenizer: Tokenizer;
  chatTemplate: LoadedChatTemplate;
  /** Stop strings added to chat requests (the default template's end marker), else []. */
  chatStop: readonly string[];
}

class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly type: string, readonly param: string | null = null, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

const bad = (message: string, param: string | null = null) => new HttpError(400, message, "BadRequestError", param);

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text), ...headers });
  res.end(text);
}

function sendError(res: ServerResponse, e: HttpError): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  sendJson(res, e.status, { error: { message: e.message, type: e.type, param: e.param, code: e.status } }, e.headers);
}

function sha(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

async function readJson(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    // past the limit the rest is read and dropped (so the client sees the 413), up to 16× the limit
    if (n > 16 * limit) {
      req.destroy();
      break;
    }
    if (n <= limit) chunks.push(c as Buffer);
  }
  if (n > limit) throw new HttpError(413, `request body exceeds ${limit} bytes`, "BadRequestError");
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (e) {
    throw bad(`malformed JSON body: ${(e as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw bad("the request body must be a JSON object");
  return body as Record<string, unknown>;
}

function id(prefix: string): string {
  return `${prefix}-${createHash("sha1").update(`${process.hrtime.bigint()}-${Math.random()}`).digest("hex").slice(0, 24)}`;
}

export class MoeServer {
  readonly http: Server;
  private model: ServedModel | null = null;
  private telemetry: Telemetry | null = null;
  private readonly keyHash: Buffer | null;
  private readonly maxWaiting: number;
  private readonly maxBody: number;
  private readonly inflight = new Set<AbortController>();
  private readonly created = Math.floor(Date.now() / 1000);

  constructor(readonly opts: ServeOptions) {
    this.keyHash = opts.apiKey ? sha(opts.apiKey) : null;
    this.maxWaiting = opts.maxWaiting ?? 64;
    this.maxBody = opts.maxBodyBytes ?? 1 << 20;
    this.http = createServer((req, res) => {
      this.handle(req, res).catch((e: unknown) => {
        if (e instanceof HttpError) sendError(res, e);
        else sendError(res, new HttpError(500, (e as Error).message ?? String(e), "InternalServerError"));
      });
    });
  }

  /** Starts listening (before the model is loaded: /health answers 503 until setModel). */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.http.once("error", reject);
      this.http.listen(this.opts.port ?? 8000, this.opts.host ?? "127.0.0.1", () => resolve((this.http.address() as AddressInfo).port));
    });
  }

  setModel(m: ServedModel): void {
    this.model = m;
    this.telemetry = new Telemetry(m.engine);
  }

  get metrics(): Telemetry | null {
    return this.telemetry;
  }

  /** Stops accepting; running requests get drainMs to finish, then are cancelled. */
  async close(drainMs = 10_000): Promise<void> {
    const closed = new Promise<void>((r) => this.http.close(() => r()));
    const t0 = Date.now();
    while (this.inflight.size && Date.now() - t0 < drainMs) await new Promise((r) => setTimeout(r, 20));
    for (const a of this.inflight) a.abort();
    this.model?.engine.abortAll();
    this.http.closeIdleConnections();
    setTimeout(() => this.http.closeAllConnections(), 1000).unref();
    await closed;
  }

  private ready(): ServedModel {
    if (!this.model) throw new HttpError(503, "Loading model", "unavailable_error");
    return this.model;
  }

  /** Bearer header; GET requests may give `?api_key=` instead (the dashboard's EventSource cannot send headers). */
  private authorize(req: IncomingMessage, url: URL): void {
    if (!this.keyHash) return;
    const h = req.headers.authorization ?? "";
    const given = h.startsWith("Bearer ") ? h.slice(7) : req.method === "GET" ? url.searchParams.get("api_key") ?? "" : "";
    if (!timingSafeEqual(sha(given), this.keyHash)) throw new HttpError(401, given ? "invalid API key" : "missing API key (Authorization: Bearer …)", "AuthenticationError");
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://x");
    const p = url.pathname, method = req.method ?? "GET";
    if (p === "/health") {
      if (!this.model) throw new HttpError(503, "Loading model", "unavailable_error");
      return sendJson(res, 200, { status: "ok" });
    }
    if (method === "GET" && this.opts.staticHandler?.(req, res, p)) return;
    this.authorize(req, url);
    const route = `${method} ${p}`;
    switch (route) {
      case "GET /metrics": {
        const t = this.ready() && this.telemetry!;
        const text = await t.registry.metrics();
        res.writeHead(200, { "Content-Type": t.registry.contentType });
        res.end(text);
        return;
      }
      case "GET /v1/models": {
        const m = this.ready();
        return sendJson(res, 200, { object: "list", data: [{ id: this.opts.servedModelName, object: "model", created: this.created, owned_by: "moe-ts", max_model_len: m.engine.maxModelLen }] });
      }
      case "GET /v1/moe/expert-load":
        this.ready();
        return url.searchParams.get("stream") === "true" ? this.streamExpertLoad(req, res, Number(url.searchParams.get("interval_ms") ?? 500)) : sendJson(res, 200, this.telemetry!.expertLoad());
      case "POST /tokenize": {
        const m = this.ready(), body = await readJson(req, this.maxBody);
        const ids = this.promptIds(m, body, "tokenize");
        return sendJson(res, 200, { tokens: ids, count: ids.length, max_model_len: m.engine.maxModelLen });
      }
      case "POST /detokenize": {
        const m = this.ready(), body = await readJson(req, this.maxBody);
        const t = body.tokens;
        if (!Array.isArray(t) || !t.every((x) => Number.isInteger(x) && x >= 0 && x < m.tokenizer.vocabSize)) throw bad(`tokens must be an array of token ids in [0, ${m.tokenizer.vocabSize})`, "tokens");
        return sendJson(res, 200, { prompt: m.tokenizer.decode(t as number[]) });
      }
      case "POST /v1/completions":
      case "POST /v1/chat/completions": {
        const m = this.ready(), body = await readJson(req, this.maxBody);
        return this.generate(m, body, p.endsWith("chat/completions"), req, res);
      }
      default:
        if (["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize", "/v1/models", "/metrics", "/v1/moe/expert-load"].includes(p)) {
          throw new HttpError(405, `method ${method} is not allowed on ${p}`, "BadRequestError");
        }
        throw new HttpError(404, `no route ${method} ${p}`, "NotFoundError");
    }
  }

  private streamExpertLoad(req: IncomingMessage, res: ServerResponse, intervalMs: number): void {
    if (!(intervalMs >= 50 && intervalMs <= 60_000)) throw bad("interval_ms must be in [50, 60000]", "interval_ms");
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" });
    const send = () => res.write(`data: ${JSON.stringify(this.telemetry!.expertLoad())}\n\n`);
    send();
    const timer = setInterval(send, intervalMs);
    const stop = () => clearInterval(timer);
    res.on("close", stop);
    this.http.once("close", () => {
      stop();
      res.end();
    });
  }

  /** Prompt token ids of a completions (prompt) or chat (messages) body. */
  private promptIds(m: ServedModel, body: Record<string, unknown>, where: string): number[] {
    if (body.messages !== undefined) {
      if (!Array.isArray(body.messages) || !body.messages.every((x) => typeof x === "object" && x !== null && typeof (x as { role?: unknown }).role === "string")) {
        throw bad("messages must be an array of {role, content} objects", "messages");
      }
      const t = m.chatTemplate;
      let text: string;
      try {
        text = renderChat(body.messages, { template: t.template, bosToken: t.bosToken, eosToken: t.eosToken, addGenerationPrompt: body.add_generation_prompt !== false });
      } catch (e) {
        throw bad(`chat template: ${(e as Error).message}`, "messages");
      }
      return m.tokenizer.encode(text);
    }
    const pr = body.prompt;
    if (typeof pr === "string") return m.tokenizer.encode(pr);
    if (Array.isArray(pr) && pr.length && pr.every((x) => Number.isInteger(x))) {
      for (const x of pr as number[]) if (x < 0 || x >= m.tokenizer.vocabSize) throw bad(`prompt token ${x} is out of range [0, ${m.tokenizer.vocabSize})`, "prompt");
      return pr as number[];
    }
    throw bad(`${where}: prompt must be a string or a non-empty array of token ids`, "prompt");
  }

  private samplingParams(m: ServedModel, body: Record<string, unknown>, chat: boolean, promptTokens: number): SamplingParams {
    const input: Record<string, unknown> = {};
    for (const k of SAMPLING_PARAM_NAMES) if (body[k] !== undefined && body[k] !== null) input[k] = body[k];
    if (!chat && body.logprobs !== undefined && body.logprobs !== null) {
      // completions: logprobs is the number of alternatives
      if (!(Number.isInteger(body.logprobs) && (body.logprobs as number) >= 0)) throw bad("logprobs must be a non-negative integer for completions", "logprobs");
      input.logprobs = true;
      input.top_logprobs = body.logprobs;
    }
    if (!chat && input.max_tokens === undefined) input.max_tokens = 16;
    if (chat && m.chatStop.length) input.stop = [...(Array.isArray(input.stop) ? (input.stop as string[]) : typeof input.stop === "string" ? [input.stop] : []), ...m.chatStop];
    if (typeof input.stop === "string") input.stop = [input.stop];
    try {
      return validateSamplingParams(input, { vocabSize: m.tokenizer.vocabSize, maxModelLen: m.engine.maxModelLen, promptTokens });
    } catch (e) {
      if (e instanceof SamplingParamsError) throw bad(e.message, e.param);
      throw e;
    }
  }

  private async generate(m: ServedModel, body: Record<string, unknown>, chat: boolean, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const arrival = performance.now();
    if (body.model !== undefined && body.model !== this.opts.servedModelName) throw new HttpError(404, `The model \`${String(body.model)}\` does not exist.`, "NotFoundError", "model");
    if (chat && body.messages === undefined) throw bad("messages is required", "messages");
    if (!chat && body.prompt === undefined) throw bad("prompt is required", "prompt");
    if (body.stream !== undefined && typeof body.stream !== "boolean") throw bad("stream must be a boolean", "stream");
    const ids = this.promptIds(m, body, chat ? "chat" : "completions");
    if (ids.length >= m.engine.maxModelLen) throw bad(`the prompt has ${ids.length} tokens; this model's context is ${m.engine.maxModelLen} tokens`, "prompt");
    const params = this.samplingParams(m, body, chat, ids.length);
    if (m.engine.load.waiting >= this.maxWaiting) throw new HttpError(429, `too many waiting requests (${m.engine.load.waiting})`, "RateLimitError", null, { "Retry-After": "1" });
    const ac = new AbortController();
    this.inflight.add(ac);
    res.on("close", () => {
      if (!res.writableFinished) ac.abort();
    });
    const stream = body.stream === true;
    const includeUsage = stream && typeof body.stream_options === "object" && body.stream_options !== null && (body.stream_options as { include_usage?: unknown }).include_usage === true;
    const rid = id(chat ? "chatcmpl" : "cmpl"), created = Math.floor(Date.now() / 1000), model = this.opts.servedModelName;
    const object = chat ? "chat.completion.chunk" : "text_completion";
    const tel = this.telemetry!;
    const texts = Array.from({ length: params.n }, () => "");
    const finish: (string | null)[] = new Array(params.n).fill(null);
    const lps: { token: string; logprob: number; top: { token: string; logprob: number }[] }[][] = Array.from({ length: params.n }, () => []);
    const last = new Array<number>(params.n).fill(0);
    let completion = 0, first = true;
    const chunk = (choices: unknown[], usage?: unknown) => res.write(`data: ${JSON.stringify({ id: rid, object, created, model, choices, ...(usage ? { usage } : {}) })}\n\n`);
    if (stream) {
      res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" });
      if (chat) chunk(Array.from({ length: params.n }, (_, i) => ({ index: i, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null })));
    }
    const lpOf = (ev: TokenEvent) =>
      ev.logprob === undefined ? null : { token: m.tokenizer.decode([ev.id]), logprob: ev.logprob, top: (ev.topLogprobs ?? []).map((t) => ({ token: m.tokenizer.decode([t.id]), logprob: t.logprob })) };
    try {
      for await (const ev of m.engine.submit(ids, params, ac.signal)) {
        const now = performance.now();
        if (ev.id >= 0) {
          completion++;
          tel.generationTokens.inc();
          if (first) {
            tel.recordTtft((now - arrival) / 1e3);
            first = false;
          } else if (last[ev.index]) tel.itl.observe((now - last[ev.index]!) / 1e3);
          last[ev.index] = now;
        }
        texts[ev.index] += ev.text;
        const lp = lpOf(ev);
        if (lp) lps[ev.index]!.push(lp);
        if (ev.finishReason) finish[ev.index] = ev.finishReason;
        if (stream && ev.finishReason !== "abort") {
          const fr = ev.finishReason;
          const logprobs = lp ? (chat ? { content: [{ token: lp.token, logprob: lp.logprob, top_logprobs: lp.top }] } : { tokens: [lp.token], token_logprobs: [lp.logprob], top_logprobs: [Object.fromEntries(lp.top.map((t) => [t.token, t.logprob]))] }) : null;
          if (chat) {
            if (ev.text || lp) chunk([{ index: ev.index, delta: { content: ev.text }, logprobs, finish_reason: null }]);
            if (fr) chunk([{ index: ev.index, delta: {}, logprobs: null, finish_reason: fr }]);
          } else chunk([{ index: ev.index, text: ev.text, logprobs, finish_reason: fr }]);
        }
      }
    } finally {
      this.inflight.delete(ac);
    }
    for (const f of finish) tel.success.inc({ finished_reason: f ?? "abort" });
    tel.promptTokens.inc(ids.length);
    tel.e2e.observe((performance.now() - arrival) / 1e3);
    if (ac.signal.aborted) {
      res.end();
      return;
    }
    const usage = { prompt_tokens: ids.length, completion_tokens: completion, total_tokens: ids.length + completion };
    if (stream) {
      if (includeUsage) chunk([], usage);
      res.end("data: [DONE]\n\n");
      return;
    }
    const choices = texts.map((text, i) => {
      const l = lps[i]!;
      if (chat) {
        return {
          index: i, message: { role: "assistant", content: text }, finish_reason: finish[i],
          logprobs: params.logprobs ? { content: l.map((x) => ({ token: x.token, logprob: x.logprob, top_logprobs: x.top })) } : null,
        };
      }
      return {
        index: i, text, finish_reason: finish[i],
        logprobs: params.logprobs ? { tokens: l.map((x) => x.token), token_logprobs: l.map((x) => x.logprob), top_logprobs: l.map((x) => Object.fromEntries(x.top.map((t) => [t.token, t.logprob]))) } : null,
      };
    });
    sendJson(res, 200, { id: rid, object: chat ? "chat.completion" : "text_completion", created, model, choices, usage });
  }
}
