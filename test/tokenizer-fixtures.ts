// Hand-written tokenizer.json fixtures for test/tokenizer.test.ts: a small GPT-2-style tokenizer
// (ByteLevel pre-tokenizer with its own regex) and a Llama-3-style one (Sequence[Split(regex),
// ByteLevel(use_regex false)], pair-form merges, ignore_merges). Not real model vocabularies.
import { BYTE_CHARS, BYTE_ORDER } from "../src/data/tokenizer.js";

/** Merges of the GPT-2 fixture, in rank order; every part exists before it is used. */
export const GPT2_MERGES = [
  "Ġ t", "h e", "Ġ a", "i n", "Ġt he", "e r", "o n", "Ġ s", "Ġ w", "r e", "n d", "Ġ o", "a t", "o u",
  "e n", "Ġ b", "Ġ h", "i s", "Ġ c", "Ġ f", "Ġ m", "n g", "in g", "Ġa nd", "Ġo f", "Ġ I", "l l", "e d",
  "Ġw h", "Ġwh a", "l e", "Ġwha le", "t h", "a a", "aa a", "Ċ Ċ", "Ġ Ġ", "ĠĠ ĠĠ", "ç ļ", "çļ Ħ",
  "ð Ł", "Ġ 1", "1 2", "Ġ1 2", "' s", "Ġ \"",
];

/** Builds the GPT-2 fixture; `addPrefixSpace` toggles the ByteLevel option (RoBERTa-style). */
export function gpt2Fixture(addPrefixSpace = false): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  let id = 0;
  for (const b of BYTE_ORDER) vocab[BYTE_CHARS[b]!] = id++;
  for (const m of GPT2_MERGES) {
    const [a, b] = m.split(" ");
    if (!(a! in vocab) || !(b! in vocab)) throw new Error(`fixture merge ${m} uses an unknown part`);
    if (!(a! + b! in vocab)) vocab[a! + b!] = id++;
  }
  const eos = id++;
  vocab["<|endoftext|>"] = eos;
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [{ id: eos, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges: GPT2_MERGES },
  };
}

/** The Llama-3 pre-tokenization regex (Oniguruma syntax, as in its tokenizer.json). */
export const LLAMA3_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

export const LLAMA3_MERGES: Array<[string, string]> = [
  ["Ġ", "t"], ["h", "e"], ["Ġt", "he"], ["i", "n"], ["Ġ", "a"], ["e", "r"], ["1", "2"], ["12", "3"],
  ["'", "S"], ["'", "s"], ["Ċ", "Ċ"], ["Ġ", "Ġ"], ["o", "u"], ["Ġ", "w"], ["Ġw", "h"], ["a", "l"],
  ["Ġwh", "al"], ["Ġwhal", "e"], ["ä", "¸"], ["ä¸", "Ń"], ["i", "ng"], ["n", "g"], [".", "Ċ"],
];

/** Builds the Llama-3-style fixture (specials after the vocab, like <|begin_of_text|>). */
export function llama3Fixture(): Record<string, unknown> {
  const vocab: Record<string, number> = {};
  let id = 0;
  for (const b of BYTE_ORDER) vocab[BYTE_CHARS[b]!] = id++;
  for (const [a, b] of LLAMA3_MERGES) {
    // "i ng" comes before "n g" on purpose: a merge whose part is not yet reachable is legal.
    if (!(a in vocab)) vocab[a] = id++;
    if (!(b in vocab)) vocab[b] = id++;
    if (!(a + b in vocab)) vocab[a + b] = id++;
  }
  vocab["Ġzebra"] = id++; // reachable only through ignore_merges
  const bos = id++;
  const eos = id++;
  const added = [
    { id: bos, content: "<|begin_of_text|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: eos, content: "<|end_of_text|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: eos + 1, content: "<|reserved_special_token_0|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  ];
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: LLAMA3_PATTERN }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: {
      type: "Sequence",
      processors: [
        { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
        {
          type: "TemplateProcessing",
          single: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
          pair: [{ SpecialToken: { id: "<|begin_of_text|>", type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }, { Sequence: { id: "B", type_id: 1 } }],
          special_tokens: { "<|begin_of_text|>": { id: "<|begin_of_text|>", ids: [bos], tokens: ["<|begin_of_text|>"] } },
        },
      ],
    },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: true,
      vocab,
      merges: LLAMA3_MERGES,
    },
  };
}
