// Incremental detokenizer: turns a sequence's output token ids, one at a time, into text deltas
// whose concatenation is the decoded output — without ever emitting half of a UTF-8 character
// that a byte-level BPE split across tokens.
//
// Algorithm (the prefix/read-offset scheme of HF text-generation-inference and vLLM, extended
// to emit the complete part of a window early): the detokenizer decodes a small window of ids
// ids[prefix..] with the tokenizer's own decode(), and compares it to the text of
// ids[prefix..read], which was emitted already. Decoding a window rather than single tokens
// keeps decoders that treat the first token specially (a stripped leading space) correct.
//   1. text = decode(ids[prefix..]); its trailing U+FFFD characters may be an incomplete
//      UTF-8 sequence, so the stable part ends before them
//   2. emit text[emitted..stable]
//   3. when the window ends on a complete character (no trailing U+FFFD), slide it:
//      prefix = read, read = ids.length
// A U+FFFD that the model really produced (an invalid byte) is emitted as soon as a later token
// follows it, or by flush() at the end.
//
// Not here: stop strings (stop.ts), and the tokenizer itself (data/tokenizer.ts).
import type { Tokenizer } from "../data/types.js";

export interface DetokenizerOptions {
  /** The prompt's ids: the first window starts in them, so the first output token sees context. Default none. */
  promptIds?: ArrayLike<number>;
  /** Ids whose text is left out (HF skip_special_tokens); default: the tokenizer's special tokens. */
  skipIds?: Iterable<number>;
}

/** Prompt tokens the first window reaches back (vLLM's INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET). */
export const PROMPT_CONTEXT_TOKENS = 5;

const REPLACEMENT = 0xfffd;

function stableEnd(text: string): number {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) === REPLACEMENT) end--;
  return end;
}

/** Per-sequence incremental detokenizer; see the file header. */
export class IncrementalDetokenizer {
  private readonly tok: Tokenizer;
  private readonly skip: Set<number>;
  private readonly ids: number[] = [];
  private prefix: number;
  private read: number;
  private emitted: number; // chars of decode(ids[prefix..]) already emitted
  private outputText = "";

  constructor(tokenizer: Tokenizer, opts: DetokenizerOptions = {}) {
    this.tok = tokenizer;
    this.skip = new Set(opts.skipIds ?? Object.values(tokenizer.specialTokens));
    const prompt = opts.promptIds ?? [];
    const from = Math.max(0, prompt.length - PROMPT_CONTEXT_TOKENS);
    for (let i = from; i < prompt.length; i++) if (!this.skip.has(prompt[i]!)) this.ids.push(prompt[i]!);
    this.prefix = 0;
    this.read = this.ids.length;
    // An incomplete character at the end of the prompt is completed (and emitted) by the output.
    this.emitted = stableEnd(this.decode(0, this.read));
  }

  /** All text emitted so far. */
  get text(): string {
    return this.outputText;
  }

  /** Adds one output token; returns the new text (possibly ""). */
  push(id: number): string {
    if (this.skip.has(id)) return "";
    this.ids.push(id);
    const text = this.decode(this.prefix, this.ids.length);
    const end = stableEnd(text);
    let delta = "";
    if (end > this.emitted) {
      delta = text.slice(this.emitted, end);
      this.emitted = end;
    }
    if (end === text.length) {
      this.prefix = this.read;
      this.read = this.ids.length;
      this.emitted = this.decode(this.prefix, this.read).length;
    }
    this.outputText += delta;
    return delta;
  }

  /** Emits whatever is held back (an incomplete character becomes U+FFFD); call at the end. */
  flush(): string {
    const text = this.decode(this.prefix, this.ids.length);
    const delta = text.length > this.emitted ? text.slice(this.emitted) : "";
    this.emitted = text.length;
    this.outputText += delta;
    return delta;
  }

  private decode(from: number, to: number): string {
    return from >= to ? "" : this.tok.decode(this.ids.slice(from, to));
  }
}
