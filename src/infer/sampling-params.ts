// Sampling parameters of one request: the OpenAI fields plus the extras vLLM and llama-server
// accept, under their vLLM names, validated once into a complete, frozen SamplingParams.
//
// What it is: types, defaults and validation (`validateSamplingParams`), plus the helper that
// turns max_tokens into the per-sequence token budget. What it is not: the sampler itself
// (sampler.ts), stop handling (stop.ts) or the HTTP mapping of a request body (the server picks
// the fields listed in SAMPLING_PARAM_NAMES and passes them here).
//
// Defaults follow vLLM's SamplingParams except max_tokens: vLLM's class default is 16, while its
// OpenAI server (and this module) leave it unset, meaning "until the context is full".
import { closest } from "../core/suggest.js";

/** Which distribution logprobs are reported from (vLLM `logprobs_mode`). */
export type LogprobsMode = "raw" | "processed";

/** A validated, complete set of sampling parameters (every field has its default filled in). */
export interface SamplingParams {
  /** Completions to generate for the prompt (each its own sequence), 1..128. Default 1. */
  readonly n: number;
  /** Softmax temperature ≥ 0; below 1e-5 decoding is greedy (argmax, lowest id on ties). Default 1. */
  readonly temperature: number;
  /** Nucleus mass in (0, 1]; 1 disables. Default 1. */
  readonly top_p: number;
  /** Keep the k highest logits; 0 (or -1 on input) disables. Default 0. */
  readonly top_k: number;
  /** Keep tokens with p ≥ min_p · p_max, in [0, 1]; 0 disables. Default 0. */
  readonly min_p: number;
  /** OpenAI presence penalty in [-2, 2], over output tokens. Default 0. */
  readonly presence_penalty: number;
  /** OpenAI frequency penalty in [-2, 2], over output tokens. Default 0. */
  readonly frequency_penalty: number;
  /** HF/vLLM repetition penalty > 0 over prompt + output tokens; 1 disables. Default 1. */
  readonly repetition_penalty: number;
  /** Additive logit bias per token id, each in [-100, 100] (sorted by id). Default none. */
  readonly logit_bias: ReadonlyArray<readonly [id: number, bias: number]>;
  /** RNG seed (a safe integer) or null for a fresh random seed per sequence. Default null. */
  readonly seed: number | null;
  /** Stop strings (non-empty); the matched string is not part of the output. Default []. */
  readonly stop: readonly string[];
  /** Token ids that end the sequence (besides EOS). Default []. */
  readonly stop_token_ids: readonly number[];
  /** Keep the matched stop string (or stop token's text) in the output. Default false. */
  readonly include_stop_str_in_output: boolean;
  /** Keep generating after EOS (EOS is then an ordinary token). Default false. */
  readonly ignore_eos: boolean;
  /** Most output tokens, or null for "until the model's context is full". Default null. */
  readonly max_tokens: number | null;
  /** Output tokens before EOS / stop_token_ids / stop strings may end the sequence. Default 0. */
  readonly min_tokens: number;
  /** Report the sampled token's logprob. Default false. */
  readonly logprobs: boolean;
  /** Most likely alternatives reported per position, 0..20 (needs logprobs). Default 0. */
  readonly top_logprobs: number;
  /** "raw" (model's log-softmax, vLLM's default) or "processed" (after every step). Default "raw". */
  readonly logprobs_mode: LogprobsMode;
  /** Leave special tokens' text out of the detokenized output. Default true. */
  readonly skip_special_tokens: boolean;
}

/** Input accepted by validateSamplingParams: any subset; null means "default". */
export type SamplingParamsInput = {
  [K in keyof SamplingParams]?: unknown;
} & { max_completion_tokens?: unknown };

/** Names accepted by validateSamplingParams (a server copies these fields from a request body). */
export const SAMPLING_PARAM_NAMES: readonly string[] = Object.freeze([
  "n", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty", "repetition_penalty",
  "logit_bias", "seed", "stop", "stop_token_ids", "include_stop_str_in_output", "ignore_eos", "max_tokens",
  "max_completion_tokens", "min_tokens", "logprobs", "top_logprobs", "logprobs_mode", "skip_special_tokens",
]);

/** Most alternatives top_logprobs may ask for (OpenAI's and vLLM's default limit). */
export const MAX_TOP_LOGPROBS = 20;

/** Bad sampling parameter; `param` names the field (the OpenAI error's `param`). */
export class SamplingParamsError extends Error {
  readonly param: string;
  constructor(param: string, message: string) {
    super(`${param}: ${message}`);
    this.name = "SamplingParamsError";
    this.param = param;
  }
}

/** What validation needs to know about the model (and optionally the prompt). */
export interface SamplingContext {
  /** Width of the logits row (token ids must be below it). */
  vocabSize: number;
  /** The model's context length (prompt + output tokens). */
  maxModelLen: number;
  /** Prompt length in tokens, when known: checks that prompt + max_tokens fits. */
  promptTokens?: number;
}

const DEFAULTS: SamplingParams = Object.freeze({
  n: 1,
  temperature: 1,
  top_p: 1,
  top_k: 0,
  min_p: 0,
  presence_penalty: 0,
  frequency_penalty: 0,
  repetition_penalty: 1,
  logit_bias: Object.freeze([]) as ReadonlyArray<readonly [number, number]>,
  seed: null,
  stop: Object.freeze([]) as readonly string[],
  stop_token_ids: Object.freeze([]) as readonly number[],
  include_stop_str_in_output: false,
  ignore_eos: false,
  max_tokens: null,
  min_tokens: 0,
  logprobs: false,
  top_logprobs: 0,
  logprobs_mode: "raw",
  skip_special_tokens: true,
});

/** The defaults, as a complete SamplingParams (vLLM's, except max_tokens: see the file header). */
export function defaultSamplingParams(): SamplingParams {
  return DEFAULTS;
}

function num(param: string, v: unknown, lo: number, hi: number, loOpen = false): number {
  if (typeof v !== "number" || !Number.isFinite(v)) throw new SamplingParamsError(param, `must be a finite number, got ${JSON.stringify(v)}`);
  if (loOpen ? v <= lo : v < lo) throw new SamplingParamsError(param, `must be ${loOpen ? ">" : "≥"} ${lo}, got ${v}`);
  if (v > hi) throw new SamplingParamsError(param, `must be ≤ ${hi}, got ${v}`);
  return v;
}

function int(param: string, v: unknown, lo: number, hi = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v)) throw new SamplingParamsError(param, `must be an integer, got ${JSON.stringify(v)}`);
  if (v < lo) throw new SamplingParamsError(param, `must be ≥ ${lo}, got ${v}`);
  if (v > hi) throw new SamplingParamsError(param, `must be ≤ ${hi}, got ${v}`);
  return v;
}

function bool(param: string, v: unknown): boolean {
  if (typeof v !== "boolean") throw new SamplingParamsError(param, `must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function tokenId(param: string, v: unknown, vocabSize: number): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v >= vocabSize) {
    throw new SamplingParamsError(param, `${JSON.stringify(v)} is not a token id in [0, ${vocabSize})`);
  }
  return v;
}

/**
 * Validates a partial set of sampling parameters against the model and fills in defaults.
 * Unknown names are rejected (with a "did you mean"); null stands for the default. Throws
 * SamplingParamsError naming the first bad field.
 */
export function validateSamplingParams(partial: unknown, ctx: SamplingContext): SamplingParams {
  if (!Number.isInteger(ctx.vocabSize) || ctx.vocabSize < 1) throw new RangeError(`validateSamplingParams: vocabSize must be a positive integer, got ${ctx.vocabSize}`);
  if (!Number.isInteger(ctx.maxModelLen) || ctx.maxModelLen < 1) throw new RangeError(`validateSamplingParams: maxModelLen must be a positive integer, got ${ctx.maxModelLen}`);
  if (partial === undefined || partial === null) partial = {};
  if (typeof partial !== "object" || Array.isArray(partial)) throw new SamplingParamsError("sampling_params", "must be an object");
  const p = partial as Record<string, unknown>;
  for (const k of Object.keys(p)) {
    if (!SAMPLING_PARAM_NAMES.includes(k)) {
      const hint = closest(k, SAMPLING_PARAM_NAMES);
      throw new SamplingParamsError(k, `unknown sampling parameter${hint ? ` (did you mean "${hint}"?)` : ""}`);
    }
  }
  const has = (k: string): boolean => p[k] !== undefined && p[k] !== null;
  const V = ctx.vocabSize;

  const n = has("n") ? int("n", p.n, 1, 128) : DEFAULTS.n;
  const temperature = has("temperature") ? num("temperature", p.temperature, 0, Infinity) : DEFAULTS.temperature;
  const top_p = has("top_p") ? num("top_p", p.top_p, 0, 1, true) : DEFAULTS.top_p;
  let top_k = has("top_k") ? int("top_k", p.top_k, -1) : DEFAULTS.top_k;
  if (top_k === -1) top_k = 0;
  const min_p = has("min_p") ? num("min_p", p.min_p, 0, 1) : DEFAULTS.min_p;
  const presence_penalty = has("presence_penalty") ? num("presence_penalty", p.presence_penalty, -2, 2) : DEFAULTS.presence_penalty;
  const frequency_penalty = has("frequency_penalty") ? num("frequency_penalty", p.frequency_penalty, -2, 2) : DEFAULTS.frequency_penalty;
  const repetition_penalty = has("repetition_penalty") ? num("repetition_penalty", p.repetition_penalty, 0, Infinity, true) : DEFAULTS.repetition_penalty;

  let logit_bias = DEFAULTS.logit_bias;
  if (has("logit_bias")) {
    const lb = p.logit_bias;
    if (!(lb instanceof Map) && (typeof lb !== "object" || Array.isArray(lb))) throw new SamplingParamsError("logit_bias", "must be an object of token id → bias");
    const entries: Array<[string | number, unknown]> = lb instanceof Map ? [...(lb as Map<string | number, unknown>).entries()] : Object.entries(lb as object);
    const seen = new Map<number, number>();
    for (const [k, b] of entries) {
      const id = typeof k === "number" ? k : /^\d+$/.test(k) ? Number(k) : NaN;
      tokenId("logit_bias", Number.isNaN(id) ? k : id, V);
      seen.set(id, num(`logit_bias[${id}]`, b, -100, 100));
    }
    logit_bias = Object.freeze([...seen.entries()].sort((a, b) => a[0] - b[0]).map((e) => Object.freeze(e)));
  }

  const seed = has("seed") ? int("seed", p.seed, Number.MIN_SAFE_INTEGER) : DEFAULTS.seed;

  let stop = DEFAULTS.stop;
  if (has("stop")) {
    const s = typeof p.stop === "string" ? [p.stop] : p.stop;
    if (!Array.isArray(s)) throw new SamplingParamsError("stop", "must be a string or an array of strings");
    for (const [i, x] of s.entries()) {
      if (typeof x !== "string" || x.length === 0) throw new SamplingParamsError("stop", `stop[${i}] must be a non-empty string, got ${JSON.stringify(x)}`);
    }
    stop = Object.freeze([...new Set(s as string[])]);
  }
  let stop_token_ids = DEFAULTS.stop_token_ids;
  if (has("stop_token_ids")) {
    if (!Array.isArray(p.stop_token_ids)) throw new SamplingParamsError("stop_token_ids", "must be an array of token ids");
    stop_token_ids = Object.freeze([...new Set((p.stop_token_ids as unknown[]).map((x) => tokenId("stop_token_ids", x, V)))]);
  }
  const include_stop_str_in_output = has("include_stop_str_in_output") ? bool("include_stop_str_in_output", p.include_stop_str_in_output) : DEFAULTS.include_stop_str_in_output;
  const ignore_eos = has("ignore_eos") ? bool("ignore_eos", p.ignore_eos) : DEFAULTS.ignore_eos;

  if (has("max_tokens") && has("max_completion_tokens") && p.max_tokens !== p.max_completion_tokens) {
    throw new SamplingParamsError("max_completion_tokens", `conflicts with max_tokens (${JSON.stringify(p.max_completion_tokens)} vs ${JSON.stringify(p.max_tokens)}); give one`);
  }
  const mtName = has("max_tokens") ? "max_tokens" : "max_completion_tokens";
  const max_tokens = has(mtName) ? int(mtName, p[mtName], 1, ctx.maxModelLen) : DEFAULTS.max_tokens;
  const min_tokens = has("min_tokens") ? int("min_tokens", p.min_tokens, 0, max_tokens ?? ctx.maxModelLen) : DEFAULTS.min_tokens;

  const logprobs = has("logprobs") ? bool("logprobs", p.logprobs) : DEFAULTS.logprobs;
  const top_logprobs = has("top_logprobs") ? int("top_logprobs", p.top_logprobs, 0, MAX_TOP_LOGPROBS) : DEFAULTS.top_logprobs;
  if (top_logprobs > 0 && !logprobs) throw new SamplingParamsError("top_logprobs", "needs logprobs: true");
  let logprobs_mode: LogprobsMode = DEFAULTS.logprobs_mode;
  if (has("logprobs_mode")) {
    if (p.logprobs_mode !== "raw" && p.logprobs_mode !== "processed") throw new SamplingParamsError("logprobs_mode", `must be "raw" or "processed", got ${JSON.stringify(p.logprobs_mode)}`);
    logprobs_mode = p.logprobs_mode;
  }
  const skip_special_tokens = has("skip_special_tokens") ? bool("skip_special_tokens", p.skip_special_tokens) : DEFAULTS.skip_special_tokens;

  if (ctx.promptTokens !== undefined) {
    const P = ctx.promptTokens;
    if (P >= ctx.maxModelLen) throw new SamplingParamsError("prompt", `the prompt has ${P} tokens; the model's context is ${ctx.maxModelLen}, which leaves no room for output`);
    if (max_tokens !== null && P + max_tokens > ctx.maxModelLen) {
      throw new SamplingParamsError(mtName, `${P} prompt + ${max_tokens} output tokens exceed the model's context of ${ctx.maxModelLen}`);
    }
    if (P + min_tokens > ctx.maxModelLen) throw new SamplingParamsError("min_tokens", `${P} prompt + ${min_tokens} tokens exceed the model's context of ${ctx.maxModelLen}`);
  }

  return Object.freeze({
    n, temperature, top_p, top_k, min_p, presence_penalty, frequency_penalty, repetition_penalty, logit_bias, seed,
    stop, stop_token_ids, include_stop_str_in_output, ignore_eos, max_tokens, min_tokens, logprobs, top_logprobs,
    logprobs_mode, skip_special_tokens,
  });
}

/** Output tokens a sequence may produce: max_tokens, capped by what is left of the context. */
export function outputBudget(params: SamplingParams, promptTokens: number, maxModelLen: number): number {
  const room = maxModelLen - promptTokens;
  if (room < 1) throw new SamplingParamsError("prompt", `the prompt has ${promptTokens} tokens; the model's context is ${maxModelLen}, which leaves no room for output`);
  return params.max_tokens === null ? room : Math.min(params.max_tokens, room);
}
