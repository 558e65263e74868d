// Stop handling of one sequence: stop token ids, EOS, stop strings matched in the output text
// (also across token boundaries), max_tokens — and the finish reason.
//
// Per token, in this order:
//   1. stop token: the id is in stop_token_ids, or is EOS and ignore_eos is off → "stop".
//      Its text is not part of the output (unless include_stop_str_in_output).
//   2. stop strings: the token's text delta joins the held-back text; the first stop string to
//      complete (earliest end; at equal ends the longer one) ends the sequence → "stop"; the
//      output is the text before it (plus the string with include_stop_str_in_output).
//      "Earliest end" is what a token-by-token scan sees, so the outcome does not depend on how
//      the text was split into tokens.
//   3. max_tokens: this was the budget's last token → "length", with all held text emitted.
//   4. otherwise emit the text except its longest suffix that is a proper prefix of some stop
//      string (it may still become one); that suffix is held back.
// Stop tokens and stop strings count only once more than min_tokens tokens were produced
// (vLLM); before that a complete stop string is emitted as ordinary text. A stop at the token
// that also exhausts the budget reports "stop" (vLLM would say "length" for a stop token).
//
// Not here: sampling (sampler.ts), detokenization (detok.ts), the context limit (the caller
// passes the budget: sampling-params.ts outputBudget).
import type { SamplingParams } from "./sampling-params.js";

export type FinishReason = "stop" | "length";

export interface StopStep {
  /** Text to emit for this token (possibly ""). */
  text: string;
  /** Why the sequence ended with this token; null while it goes on. */
  finishReason: FinishReason | null;
  /** The stop string or stop token id that ended it (vLLM `stop_reason`); null for EOS and "length". */
  stopReason: string | number | null;
}

export interface StopMatcherOptions {
  /** EOS ids of the model (a stop unless ignore_eos). Default none. */
  eosTokenIds?: readonly number[];
  /** Output tokens this sequence may produce (outputBudget). */
  maxTokens: number;
}

type StopFields = Pick<SamplingParams, "stop" | "stop_token_ids" | "include_stop_str_in_output" | "ignore_eos" | "min_tokens">;

/** Per-sequence stop matcher; see the file header for the rules. */
export class StopMatcher {
  private readonly stops: readonly string[];
  private readonly stopIds: Set<number>;
  private readonly eos: Set<number>;
  private readonly include: boolean;
  private readonly minTokens: number;
  private readonly maxTokens: number;
  private pending = "";
  private n = 0;
  private done: FinishReason | null = null;

  constructor(params: StopFields, opts: StopMatcherOptions) {
    if (!Number.isInteger(opts.maxTokens) || opts.maxTokens < 1) throw new RangeError(`StopMatcher: maxTokens must be a positive integer, got ${opts.maxTokens}`);
    this.stops = params.stop;
    this.stopIds = new Set(params.stop_token_ids);
    this.eos = new Set(params.ignore_eos ? [] : (opts.eosTokenIds ?? []));
    this.include = params.include_stop_str_in_output;
    this.minTokens = params.min_tokens;
    this.maxTokens = opts.maxTokens;
  }

  /** Output tokens seen so far. */
  get outputTokens(): number {
    return this.n;
  }

  /** Finish reason once the sequence has ended, else null. */
  get finishReason(): FinishReason | null {
    return this.done;
  }

  /** Whether `id`, as the next output token, would end the sequence as a stop token (step 1). */
  stopsOnToken(id: number): boolean {
    return this.done === null && this.n + 1 > this.minTokens && (this.stopIds.has(id) || this.eos.has(id));
  }

  /** Takes one output token and its text delta (from the detokenizer); see the file header. */
  push(id: number, text: string): StopStep {
    if (this.done) throw new Error(`StopMatcher: the sequence already finished (${this.done})`);
    this.n++;
    const active = this.n > this.minTokens;
    if (active && (this.stopIds.has(id) || this.eos.has(id))) {
      const out = this.pending + (this.include ? text : "");
      this.pending = "";
      return this.finish("stop", out, this.stopIds.has(id) ? id : null);
    }
    this.pending += text;
    if (active && this.stops.length > 0) {
      let best = -1, bestEnd = Infinity, bestLen = 0;
      for (let s = 0; s < this.stops.length; s++) {
        const str = this.stops[s]!;
        const at = this.pending.indexOf(str);
        if (at < 0) continue;
        const end = at + str.length;
        if (end < bestEnd || (end === bestEnd && str.length > bestLen)) [best, bestEnd, bestLen] = [s, end, str.length];
      }
      if (best >= 0) {
        const out = this.pending.slice(0, this.include ? bestEnd : bestEnd - bestLen);
        this.pending = "";
        return this.finish("stop", out, this.stops[best]!);
      }
    }
    if (this.n >= this.maxTokens) {
      const out = this.pending;
      this.pending = "";
      return this.finish("length", out, null);
    }
    const hold = this.heldSuffix();
    const out = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return { text: out, finishReason: null, stopReason: null };
  }

  /** Releases held-back text (for a sequence that ends some other way, e.g. cancelled). */
  flush(): string {
    const out = this.pending;
    this.pending = "";
    return out;
  }

  private finish(reason: FinishReason, text: string, stopReason: string | number | null): StopStep {
    this.done = reason;
    return { text, finishReason: reason, stopReason };
  }

  /** Length of the longest suffix of pending that is a proper prefix of a stop string. */
  private heldSuffix(): number {
    const p = this.pending;
    let best = 0;
    for (const s of this.stops) {
      for (let k = Math.min(s.length - 1, p.length); k > best; k--) {
        if (p.endsWith(s.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
