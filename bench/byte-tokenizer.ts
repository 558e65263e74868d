// The benches' byte-level BPE tokenizer.json of exactly V ids (random-weight models need a tokenizer
// whose vocabulary matches the model's): 256 bytes, V − 257 byte pairs (each a merge), <|endoftext|> last.
// Not: a trained tokenizer.
import { BYTE_CHARS } from "../src/data/tokenizer.js";
import type { HfTokenizerJson } from "../src/model/gguf-model.js";

export function byteTokenizerJson(V: number): HfTokenizerJson & Record<string, unknown> {
  if (V < 258 || V - 257 > 65536) throw new Error(`byteTokenizerJson: vocab ${V} out of range`);
  const vocab: Record<string, number> = {};
  BYTE_CHARS.forEach((ch, b) => (vocab[ch] = b));
  const merges: string[] = [];
  for (let j = 0; j < V - 257; j++) {
    const a = BYTE_CHARS[(j >> 8) & 255]!, b = BYTE_CHARS[j & 255]!;
    vocab[a + b] = 256 + j;
    merges.push(`${a} ${b}`);
  }
  const bl = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json: Record<string, unknown> = {
    version: "1.0", truncation: null, padding: null, normalizer: null,
    added_tokens: [{ id: V - 1, content: "<|endoftext|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    pre_tokenizer: bl, post_processor: bl, decoder: bl,
    model: { type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: "", end_of_word_suffix: "", fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  return json as HfTokenizerJson & Record<string, unknown>;
}
