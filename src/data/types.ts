// Interfaces shared by tokenizers, corpora and loaders (src/data).

/** A tokenizer: text ↔ ids. Implementations: byte-level BPE (HF tokenizer.json). */
export interface Tokenizer {
  readonly vocabSize: number;
  /** Ids of special tokens by their text, e.g. {"<|endoftext|>": 0}. */
  readonly specialTokens: Readonly<Record<string, number>>;
  /** End-of-text id appended between documents, if the tokenizer has one. */
  readonly eosId: number | undefined;
  /** Encodes text; special-token strings in the text are matched as specials. */
  encode(text: string): number[];
  /** Decodes ids back to text (byte-level: invalid UTF-8 sequences become U+FFFD). */
  decode(ids: ArrayLike<number>): string;
  /** The HF tokenizer.json object. */
  toJSON(): unknown;
}
