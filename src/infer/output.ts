// Text output of one sequence: the incremental detokenizer (detok.ts) and the stop matcher
// (stop.ts) wired together, so the engine turns each sampled id into a text delta and a finish
// reason with one call.
//
// The joins the two modules leave to their caller:
//   - a stop token: bytes of an incomplete character before it are flushed (as U+FFFD, as a
//     full decode would show them); its own text is added only with include_stop_str_in_output
//   - "length": the detokenizer's held bytes are flushed after the matcher's held text
//   - a stop string: whatever follows the match, held bytes included, is dropped
// Not here: sampling, the context limit (pass outputBudget as maxTokens).
import type { Tokenizer } from "../data/types.js";
import { IncrementalDetokenizer } from "./detok.js";
import type { SamplingParams } from "./sampling-params.js";
import { StopMatcher, type StopStep } from "./stop.js";

export interface SequenceOutputOptions {
  /** The prompt's ids (context for the first detokenization window). Default none. */
  promptIds?: ArrayLike<number>;
  /** EOS ids of the model. Default: the tokenizer's eosId, if any. */
  eosTokenIds?: readonly number[];
  /** Output tokens this sequence may produce (outputBudget). */
  maxTokens: number;
}

/** Detokenizer + stop matcher of one sequence. */
export class SequenceOutput {
  private readonly detok: IncrementalDetokenizer;
  private readonly stop: StopMatcher;
  private readonly include: boolean;
  private all = "";

  constructor(tokenizer: Tokenizer, params: SamplingParams, opts: SequenceOutputOptions) {
    const eos = opts.eosTokenIds ?? (tokenizer.eosId === undefined ? [] : [tokenizer.eosId]);
    this.detok = new IncrementalDetokenizer(tokenizer, { promptIds: opts.promptIds, skipIds: params.skip_special_tokens ? undefined : [] });
    this.stop = new StopMatcher(params, { eosTokenIds: eos, maxTokens: opts.maxTokens });
    this.include = params.include_stop_str_in_output;
  }

  /** The output text so far (the concatenation of every returned delta). */
  get text(): string {
    return this.all;
  }

  /** Output tokens taken so far. */
  get outputTokens(): number {
    return this.stop.outputTokens;
  }

  /** Takes one sampled id; returns its text delta and, on the last token, the finish reason. */
  push(id: number): StopStep {
    let step: StopStep;
    if (this.stop.stopsOnToken(id)) {
      const before = this.detok.flush();
      if (this.include) {
        const own = this.detok.push(id) + this.detok.flush();
        step = this.stop.push(id, before + own);
      } else {
        step = this.stop.push(id, "");
        step = { ...step, text: step.text + before };
      }
    } else {
      step = this.stop.push(id, this.detok.push(id));
      if (step.finishReason === "length") step = { ...step, text: step.text + this.detok.flush() };
    }
    this.all += step.text;
    return step;
  }

  /** Releases everything held back (for a sequence cancelled before it finished). */
  flush(): string {
    const out = this.stop.flush() + this.detok.flush();
    this.all += out;
    return out;
  }
}
