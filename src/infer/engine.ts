// The inference engine: requests in, token events out, with continuous batching over a paged
// KV cache (vLLM's scheduler in miniature).
//
// Each step, numbered:
//  1. admit waiting sequences FCFS while fewer than maxNumSeqs run (a prompt's cached full
//     blocks are attached from the prefix cache and not recomputed)
//  2. give each running sequence, oldest first, the rows it needs from the token budget
//     (maxNumBatchedTokens): the rest of its prompt in chunks (chunked prefill) or one token;
//     when the KV pool cannot hold them, the newest running sequence is preempted (its blocks
//     freed, recomputed later from its tokens)
//  3. run the model once over all rows (infer/runner.ts): every MoE layer routes the whole
//     step's rows together
//  4. sample each sequence whose last row ran (its own seeded sampler), detokenize, match stops,
//     emit the event; finished and cancelled sequences free their blocks
// The loop yields to the event loop between steps (setImmediate), so a step is the longest the
// engine ever blocks it. Per-step statistics (rows, tokens per expert per layer) are returned
// values kept in `lastStep` and summed in `totals`, for the server's metrics.
//
// Logits of ids at or past the tokenizer's vocabulary size (HF vocabularies padded for alignment)
// are set to −∞ before sampling: such ids have no text.
// Not: HTTP (serve/), tokenization of chat messages (chat.ts), or sampling math (sampler.ts).
import type { Backend } from "../backend/spec.js";
import type { Tokenizer } from "../data/types.js";
import { InferenceWorkspace, runStep, type StepStats } from "./runner.js";
import type { Activations, EngineWeights } from "./engine-weights.js";
import { KvCachePool, type KvDtype, type SeqId } from "./kv-cache.js";
import { SamplerWorkspace, SequenceSampler, type TokenLogprob } from "./sampler.js";
import { SequenceOutput } from "./output.js";
import { outputBudget, type SamplingParams } from "./sampling-params.js";

export interface EngineOptions {
  /** Sequences decoded together. Default 8. */
  maxNumSeqs?: number;
  /** Rows (new tokens) per step across all sequences. Default 512. */
  maxNumBatchedTokens?: number;
  /** Prompt + output tokens of one sequence. Required. */
  maxModelLen: number;
  /** KV-cache capacity in tokens (rounded up to blocks). Default maxNumSeqs · maxModelLen. */
  kvCacheTokens?: number;
  /** Tokens per KV block. Default 16. */
  blockSize?: number;
  /** KV storage. Default "f32". */
  kvDtype?: KvDtype;
  /** Reuse cached full blocks of identical prompt prefixes. Default true. */
  prefixCaching?: boolean;
  /** EOS ids (default: the tokenizer's). */
  eosTokenIds?: readonly number[];
  /**
   * q8_0 weights at decode (≤ 8 rows per matrix): "f32" (default) multiplies the f32 activations
   * exactly; "q8" quantises them per 32 values to int8 first, as llama.cpp does, and uses VNNI
   * integer dot products — faster, with logits off by the activation rounding. Prefill and
   * other formats are unaffected.
   */
  activations?: Activations;
}

export type FinishReason = "stop" | "length" | "abort";

/** One generated token of one of a request's n sequences. */
export interface TokenEvent {
  /** Which of the request's n completions. */
  index: number;
  id: number;
  /** Text delta (may be "" while a character or a possible stop string is incomplete). */
  text: string;
  logprob?: number;
  topLogprobs?: TokenLogprob[];
  /** Set on the sequence's last event. */
  finishReason: FinishReason | null;
  /** The stop string or stop token id that ended it. */
  stopReason?: string | number | null;
}

export interface EngineTotals {
  steps: number;
  promptTokens: number;
  generatedTokens: number;
  prefixHitTokens: number;
  preemptions: number;
  /** Per layer: tokens routed to each expert since the engine started (null: dense layer). */
  tokensPerExpert: (Float64Array | null)[];
}

export class EngineError extends Error {
  override name = "EngineError";
}

interface Request {
  events: TokenEvent[];
  wake: (() => void) | null;
  live: number; // sequences not finished
  error: Error | null;
}

interface Sequence {
  id: number;
  req: Request;
  index: number;
  tokens: number[]; // prompt + output
  promptLen: number;
  computed: number; // tokens whose keys/values are in the cache
  allocated: boolean;
  sampler: SequenceSampler;
  output: SequenceOutput;
  aborted: boolean;
}

export class Engine {
  readonly kv: KvCachePool;
  readonly maxNumSeqs: number;
  readonly maxNumBatchedTokens: number;
  readonly maxModelLen: number;
  readonly totals: EngineTotals;
  lastStep: (StepStats & { ms: number; running: number; waiting: number }) | null = null;
  /** Called after every step with its statistics (the server's telemetry subscribes). */
  readonly stepListeners: ((s: StepStats & { ms: number; running: number; waiting: number }) => void)[] = [];
  private readonly ws: InferenceWorkspace;
  private readonly samplerWs: SamplerWorkspace;
  private readonly waiting: Sequence[] = [];
  private running: Sequence[] = [];
  private nextId = 0;
  private looping = false;
  private readonly eos: readonly number[];

  constructor(readonly be: Backend, readonly weights: EngineWeights, readonly tokenizer: Tokenizer, opts: EngineOptions) {
    const cfg = weights.cfg;
    const int = (name: string, v: number | undefined, d: number) => {
      const x = v ?? d;
      if (!(Number.isInteger(x) && x >= 1)) throw new EngineError(`engine: ${name} must be a positive integer, got ${x}`);
      return x;
    };
    this.maxNumSeqs = int("maxNumSeqs", opts.maxNumSeqs, 8);
    this.maxNumBatchedTokens = int("maxNumBatchedTokens", opts.maxNumBatchedTokens, 512);
    this.maxModelLen = int("maxModelLen", opts.maxModelLen, 1);
    const blockSize = int("blockSize", opts.blockSize, 16);
    const kvTokens = int("kvCacheTokens", opts.kvCacheTokens, this.maxNumSeqs * this.maxModelLen);
    const windowed = cfg.slidingWindow > 0 && (cfg.windowFromLayer ?? 0) === 0;
    this.kv = new KvCachePool({
      numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks: Math.ceil(kvTokens / blockSize) + this.maxNumSeqs,
      blockSize, dtype: opts.kvDtype ?? "f32", window: windowed ? cfg.slidingWindow : 0, prefixCaching: opts.prefixCaching ?? true, maxSeqLen: this.maxModelLen,
    });
    this.ws = new InferenceWorkspace(cfg, this.maxNumBatchedTokens, this.maxNumSeqs, { activations: opts.activations ?? "f32" });
    this.samplerWs = new SamplerWorkspace(cfg.vocabSize);
    this.eos = opts.eosTokenIds ?? (tokenizer.eosId === undefined ? [] : [tokenizer.eosId]);
    this.totals = {
      steps: 0, promptTokens: 0, generatedTokens: 0, prefixHitTokens: 0, preemptions: 0,
      tokensPerExpert: cfg.moe.moeLayers.map((m) => (m ? new Float64Array(cfg.moe.numExperts) : null)),
    };
  }

  /** Cancels every request (shutdown); their streams end with finishReason "abort". */
  abortAll(): void {
    for (const s of [...this.running, ...this.waiting]) s.aborted = true;
    this.kick();
  }

  /** Sequences running and waiting now. */
  get load(): { running: number; waiting: number } {
    return { running: this.running.length, waiting: this.waiting.length };
  }

  /**
   * Queues a request (validated sampling params; prompt token ids) and returns its token events
   * as they are produced. Aborting `signal` finishes every sequence of the request with
   * finishReason "abort" and frees its cache blocks at the next step.
   */
  submit(prompt: readonly number[], params: SamplingParams, signal?: AbortSignal): AsyncIterable<TokenEvent> {
    const V = this.weights.cfg.vocabSize;
    if (prompt.length < 1) throw new EngineError("engine: the prompt must have at least one token");
    prompt.forEach((t, i) => {
      if (!(Number.isInteger(t) && t >= 0 && t < V)) throw new EngineError(`engine: prompt token ${t} at position ${i} is out of range [0, ${V})`);
    });
    const budget = outputBudget(params, prompt.length, this.maxModelLen);
    const req: Request = { events: [], wake: null, live: params.n, error: null };
    const seqs: Sequence[] = [];
    for (let i = 0; i < params.n; i++) {
      const seq: Sequence = {
        id: this.nextId++, req, index: i, tokens: [...prompt], promptLen: prompt.length, computed: 0, allocated: false,
        sampler: new SequenceSampler(params, { vocabSize: V, promptIds: prompt, eosTokenIds: this.eos, index: i, workspace: this.samplerWs }),
        output: new SequenceOutput(this.tokenizer, params, { promptIds: prompt, eosTokenIds: this.eos, maxTokens: budget }),
        aborted: false,
      };
      seqs.push(seq);
      this.waiting.push(seq);
    }
    if (signal) {
      const onAbort = () => {
        for (const s of seqs) s.aborted = true;
        this.kick();
      };
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    this.kick();
    return this.events(req);
  }

  private async *events(req: Request): AsyncGenerator<TokenEvent> {
    for (;;) {
      while (req.events.length) yield req.events.shift()!;
      if (req.error) throw req.error;
      if (req.live === 0) return;
      await new Promise<void>((r) => (req.wake = r));
    }
  }

  private kick(): void {
    if (this.looping) return;
    this.looping = true;
    setImmediate(() => this.loop());
  }

  private loop(): void {
    try {
      const worked = this.step();
      if (worked || this.waiting.length || this.running.length) {
        setImmediate(() => this.loop());
        return;
      }
    } catch (e) {
      // a failed step fails every request in flight (their sequences are freed)
      for (const s of [...this.running, ...this.waiting]) this.fail(s, e as Error);
      this.running = [];
      this.waiting.length = 0;
    }
    this.looping = false;
  }

  private fail(s: Sequence, e: Error): void {
    if (s.allocated) this.kv.free(s.id);
    s.allocated = false;
    s.req.error = e;
    s.req.live = 0;
    s.req.wake?.();
  }

  private emit(s: Sequence, ev: TokenEvent): void {
    s.req.events.push(ev);
    if (ev.finishReason) s.req.live--;
    const w = s.req.wake;
    s.req.wake = null;
    w?.();
  }

  private finish(s: Sequence): void {
    if (s.allocated) this.kv.free(s.id);
    s.allocated = false;
  }

  private preempt(s: Sequence): void {
    this.kv.free(s.id);
    s.allocated = false;
    s.computed = 0;
    this.running = this.running.filter((x) => x !== s);
    this.waiting.unshift(s);
    this.totals.preemptions++;
  }

  /** Runs one scheduler step; false when there was nothing to do. Exposed for tests. */
  step(): boolean {
    const t0 = performance.now();
    // cancelled sequences end first
    for (const s of [...this.running, ...this.waiting]) {
      if (!s.aborted) continue;
      this.finish(s);
      this.running = this.running.filter((x) => x !== s);
      const w = this.waiting.indexOf(s);
      if (w >= 0) this.waiting.splice(w, 1);
      this.emit(s, { index: s.index, id: -1, text: s.output.flush(), finishReason: "abort" });
    }
    // 1. admit
    while (this.running.length < this.maxNumSeqs && this.waiting.length) {
      const s = this.waiting[0]!;
      const need = Math.ceil(Math.min(s.tokens.length, this.maxNumBatchedTokens) / this.kv.blockSize);
      if (!this.kv.canAllocate(need) && this.running.length > 0) break;
      const hit = this.kv.allocate(s.id, s.tokens);
      s.allocated = true;
      s.computed = hit;
      this.totals.prefixHitTokens += hit;
      this.waiting.shift();
      this.running.push(s);
    }
    if (!this.running.length) return false;
    // 2. rows per sequence
    let budget = this.maxNumBatchedTokens;
    const plan: { s: Sequence; take: number; slots: Int32Array }[] = [];
    for (let i = 0; i < this.running.length && budget > 0; i++) {
      const s = this.running[i]!;
      const take = Math.min(s.tokens.length - s.computed, budget);
      if (take <= 0) continue;
      while (!this.kv.canAppend(s.id, take)) {
        const victim = this.running[this.running.length - 1]!;
        if (victim === s && this.running.length === 1) throw new EngineError(`engine: the KV cache (${this.kv.numBlocks} blocks of ${this.kv.blockSize}) cannot hold one sequence of ${s.tokens.length} tokens`);
        this.preempt(victim);
        if (victim === s) break;
      }
      if (!s.allocated) continue;
      plan.push({ s, take, slots: this.kv.append(s.id, s.tokens.slice(s.computed, s.computed + take)) });
      budget -= take;
    }
    if (!plan.length) return this.running.length > 0;
    // 3. one forward over every row
    const N = plan.reduce((a, p) => a + p.take, 0), S = plan.length;
    const tokens = new Int32Array(N), positions = new Int32Array(N), slots = new Int32Array(N);
    const queryStart = new Int32Array(S + 1), contextLens = new Int32Array(S);
    const logitSeqs: Sequence[] = [], logitRows: number[] = [];
    let r = 0;
    plan.forEach((p, i) => {
      queryStart[i] = r;
      for (let j = 0; j < p.take; j++, r++) {
        tokens[r] = p.s.tokens[p.s.computed + j]!;
        positions[r] = p.s.computed + j;
        slots[r] = p.slots[j]!;
      }
      p.s.computed += p.take;
      contextLens[i] = p.s.computed;
      if (p.s.computed === p.s.tokens.length) {
        logitSeqs.push(p.s);
        logitRows.push(r - 1);
      }
      if (p.s.computed <= p.s.promptLen) this.totals.promptTokens += p.take;
    });
    queryStart[S] = N;
    const blockTables = this.kv.fillBlockTables(plan.map((p) => p.s.id as SeqId));
    const stats = runStep(this.be, this.weights, this.ws, this.kv, { tokens, positions, queryStart, contextLens, slots, blockTables, logitRows: Int32Array.from(logitRows) });
    stats.tokensPerExpert.forEach((c, l) => {
      const acc = this.totals.tokensPerExpert[l];
      if (c && acc) for (let e = 0; e < c.length; e++) acc[e]! += c[e]!;
    });
    // 4. sample, emit, finish
    const V = this.weights.cfg.vocabSize;
    logitSeqs.forEach((s, i) => {
      const row = this.ws.logits.subarray(i * V, (i + 1) * V);
      // ids the tokenizer has no token for (a vocabulary padded past the tokenizer) are never sampled
      if (this.tokenizer.vocabSize < V) row.fill(-Infinity, this.tokenizer.vocabSize);
      const tok = s.sampler.sample(row);
      const out = s.output.push(tok.id);
      this.totals.generatedTokens++;
      this.emit(s, { index: s.index, id: tok.id, text: out.text, logprob: tok.logprob, topLogprobs: tok.topLogprobs, finishReason: out.finishReason, stopReason: out.stopReason });
      if (out.finishReason) {
        this.finish(s);
        this.running = this.running.filter((x) => x !== s);
      } else s.tokens.push(tok.id);
    });
    this.totals.steps++;
    this.lastStep = { ...stats, ms: performance.now() - t0, running: this.running.length, waiting: this.waiting.length };
    for (const f of this.stepListeners) f(this.lastStep);
    return true;
  }
}
