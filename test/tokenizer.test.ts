// Tests for the byte-level BPE tokenizer (src/data/tokenizer.ts), its trainer (bpe-train.ts) and
// `moe tokenizer train`. Oracle: @huggingface/tokenizers (tokenizers.js) on the same tokenizer.json,
// except for U+0085/U+FEFF, where tokenizers.js uses JS `\s` and we follow the Rust crate's
// Oniguruma `\s` (checked by hand-derived expectations below).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Tokenizer as HfTokenizer } from "@huggingface/tokenizers";
import { BYTE_CHARS, BYTE_ORDER, loadTokenizer, saveTokenizer, tokenizerFromJSON } from "../src/data/tokenizer.js";
import { trainBpe } from "../src/data/bpe-train.js";
import { runTokenizer } from "../src/cli/tokenizer.js";
import { mobyDickFiles } from "../src/data/corpus.js";
import type { Tokenizer } from "../src/data/types.js";
import { gpt2Fixture, llama3Fixture } from "./tokenizer-fixtures.js";

type Json = Record<string, any>;

const chapters = mobyDickFiles().map((f) => readFileSync(f, "utf8"));

/** Deterministic LCG in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

const PIECES = [
  " ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "'s", "'LL", "'re", "a", "Z", "the", " the", " whale", "ing", "é",
  "e\u0301", "日本語", "的", "🙂", "👩‍👩‍👧‍👦", "🇫🇷", "👍🏽", "שלום", "مرحبا", "\u0000", "\u0007", "\u00a0", "\u3000",
  "123", "1234567", "٣", "²", "Ⅻ", "_", "-", "!!", "...", ".\n", "\u2028", "\u200d", " zebra", "<|endoftext|>",
  "<|endoftext", "<|begin_of_text|>", "<|end_of_text|>", "Å", "A\u030a", "ﬁ", "aaaa",
];

/** Random strings: pieces above mixed with random code points (no surrogates, no U+0085/U+FEFF). */
function fuzzStrings(n: number, seed: number, jsComparable = true): string[] {
  const r = rng(seed);
  const out: string[] = [];
  for (let k = 0; k < n; k++) {
    let s = "";
    const len = Math.floor(r() * 10);
    for (let i = 0; i < len; i++) {
      if (r() < 0.3) {
        let cp: number;
        do cp = Math.floor(r() < 0.5 ? r() * 0x3000 : r() * 0x110000);
        while ((cp >= 0xd800 && cp < 0xe000) || (jsComparable && (cp === 0x85 || cp === 0xfeff)));
        s += String.fromCodePoint(cp);
      } else s += PIECES[Math.floor(r() * PIECES.length)];
    }
    out.push(s);
  }
  return out;
}

function hfIds(hf: HfTokenizer, s: string): number[] {
  return s.length ? hf.encode(s, { add_special_tokens: false }).ids : [];
}

/** Asserts our ids equal tokenizers.js ids on every string. */
function assertSameIds(ours: Tokenizer, json: object, texts: string[]): void {
  const hf = new HfTokenizer(json, {});
  for (const s of texts) assert.deepEqual(ours.encode(s), hfIds(hf, s), `ids differ for ${JSON.stringify(s.slice(0, 80))}`);
}

function tokensOf(tok: Tokenizer, ids: number[]): string[] {
  const vocab = (tok.toJSON() as Json).model.vocab as Record<string, number>;
  const byId = new Map(Object.entries(vocab).map(([k, v]) => [v, k]));
  return ids.map((id) => byId.get(id)!);
}

const SAMPLES = [
  "Call me Ishmael. Some years ago—never mind how long precisely—having little or no money in my purse,",
  "The whale's tail; they'll say it's THE whale, we've seen 12 of 'em.\n\n  Indented\tline\r\n",
  "emoji 👩‍👩‍👧‍👦 family, flags 🇯🇵🇫🇷, skin 👍🏽, ZWJ‍joined",
  "accents: café, cafe\u0301, Å vs A\u030a, Ångström",
  "CJK: 日本語のテキスト、中文的句子。한국어 문장",
  "RTL: שלום עולם — مرحبا بالعالم",
  "controls: \u0000\u0001\u0007\u001b[0m\u007f and whitespace runs:      \n\n\n\t\t  end   ",
  "digits 1234567890 ٣٤٥ ²³ Ⅻ and punctuation !!! ??? ... ---",
  "specials <|endoftext|>between<|endoftext|> and a partial <|endoftext",
  "",
];

// ---------------------------------------------------------------------------

test("byte tables: 256 distinct printable chars; base order is char order", () => {
  assert.equal(new Set(BYTE_CHARS).size, 256);
  assert.equal(BYTE_CHARS[0x20], "Ġ");
  assert.equal(BYTE_CHARS[0x0a], "Ċ");
  assert.equal(BYTE_CHARS[0x41], "A");
  assert.deepEqual(BYTE_ORDER.slice(0, 3), [0x21, 0x22, 0x23]);
  for (let i = 1; i < 256; i++) assert.ok(BYTE_CHARS[BYTE_ORDER[i - 1]!]! < BYTE_CHARS[BYTE_ORDER[i]!]!);
});

test("trainer: toy corpus merges equal the hand-computed sequence (count, then lexicographic ties)", () => {
  // Words: hug×10 pug×5 pun×12 bun×4 hugs×5 (one word per text: no leading spaces).
  const texts = [...Array(10).fill("hug"), ...Array(5).fill("pug"), ...Array(12).fill("pun"), ...Array(4).fill("bun"), ...Array(5).fill("hugs")];
  // u g 20 → u n 16 → h ug 15 → p un 12 → tie at 5: (hug, s) < (p, ug) → p ug 5 → b un 4.
  const tok = trainBpe(texts, { vocabSize: 1000, minFrequency: 1, specialTokens: [] });
  const json = tok.toJSON() as Json;
  assert.deepEqual(json.model.merges, ["u g", "u n", "h ug", "p un", "hug s", "p ug", "b un"]);
  assert.equal(tok.vocabSize, 256 + 7);
  assert.equal(json.model.vocab["ug"], 256);
  assert.equal(json.model.vocab["bun"], 262);
  assert.equal(tok.eosId, undefined);
  assert.deepEqual(tok.encode("hugs"), [json.model.vocab["hugs"]]);
  // minFrequency 5 stops before "b un" (count 4); vocabSize caps the number of merges.
  assert.deepEqual((trainBpe(texts, { vocabSize: 1000, minFrequency: 5, specialTokens: [] }).toJSON() as Json).model.merges.length, 6);
  assert.deepEqual((trainBpe(texts, { vocabSize: 256 + 3, minFrequency: 1, specialTokens: [] }).toJSON() as Json).model.merges, ["u g", "u n", "h ug"]);
});

test("trainer: specials first, eos = first special, byte tokens in GPT-2 order; bad options throw", () => {
  const tok = trainBpe(["ab ab ab"], { vocabSize: 300, specialTokens: ["<|endoftext|>", "<|pad|>"] });
  const json = tok.toJSON() as Json;
  assert.equal(tok.eosId, 0);
  assert.deepEqual(tok.specialTokens, { "<|endoftext|>": 0, "<|pad|>": 1 });
  assert.equal(json.model.vocab["!"], 2);
  assert.equal(json.model.vocab["Ġ"], 2 + 220); // GPT-2 gives "Ġ" id 220
  assert.equal(json.model.vocab[BYTE_CHARS[BYTE_ORDER[255]!]!], 257);
  assert.equal(json.pre_tokenizer.type, "ByteLevel");
  assert.equal(json.pre_tokenizer.add_prefix_space, false);
  assert.equal(json.decoder.type, "ByteLevel");
  assert.deepEqual(tok.encode("<|pad|><|endoftext|>"), [1, 0]);
  assert.throws(() => trainBpe(["x"], { vocabSize: 256 }), /vocabSize must be an integer ≥ 257/);
  assert.throws(() => trainBpe(["x"], { vocabSize: 300, specialTokens: ["<a>", "<a>"] }), /duplicate special token/);
  assert.throws(() => trainBpe(["x"], { vocabSize: 300, specialTokens: ["!"] }), /collides with a byte token/);
  assert.throws(() => trainBpe(["x"], { vocabSize: 300, minFrequency: 0 }), /minFrequency/);
});

test("trainer: deterministic (same input → identical tokenizer.json)", () => {
  const texts = chapters.slice(0, 3);
  const a = JSON.stringify(trainBpe(texts, { vocabSize: 800 }).toJSON());
  const b = JSON.stringify(trainBpe([...texts], { vocabSize: 800 }).toJSON());
  assert.equal(a, b);
});

test("trained tokenizer: ids identical to tokenizers.js; round trip; specials are single ids", () => {
  const tok = trainBpe(chapters.slice(0, 8), { vocabSize: 1500 });
  const json = tok.toJSON() as object;
  assert.equal(tok.vocabSize, 1500);
  const held = chapters.slice(8, 14).join("<|endoftext|>");
  assertSameIds(tok, json, [...SAMPLES, held, ...fuzzStrings(800, 1)]);
  assert.equal(tok.decode(tok.encode(held)), held);
  const ids = tok.encode("whale<|endoftext|>ship");
  assert.equal(ids.filter((i) => i === tok.eosId).length, 1);
  assert.equal(tok.decode(ids), "whale<|endoftext|>ship");
});

test("GPT-2 style fixture (ByteLevel regex, with and without add_prefix_space): ids identical to tokenizers.js", () => {
  for (const prefix of [false, true]) {
    const json = gpt2Fixture(prefix);
    const tok = tokenizerFromJSON(json);
    assertSameIds(tok, json, [...SAMPLES, chapters[20]!, ...fuzzStrings(600, 2 + Number(prefix))]);
  }
  const tok = tokenizerFromJSON(gpt2Fixture());
  assert.deepEqual(tokensOf(tok, tok.encode("the whale and the")), ["t", "he", "Ġwhale", "Ġand", "Ġthe"]);
  assert.equal(tok.eosId, tok.specialTokens["<|endoftext|>"]);
  assert.equal(tok.vocabSize, (gpt2Fixture().model as Json).vocab["<|endoftext|>"] + 1);
  // Long pre-tokens exercise the heap merge path.
  const long = ["a".repeat(3001), " ".repeat(2000) + "x", "ab".repeat(1500), "\n".repeat(999)];
  assertSameIds(tok, gpt2Fixture(), long);
  // Lowest rank first, leftmost on ties: "Ġ a" outranks "a a", which outranks "aa a".
  assert.deepEqual(tokensOf(tok, tok.encode("aaaa aaaaa")), ["aa", "aa", "Ġa", "aa", "aa"]);
});

test("Sequence[Split(Llama-3 regex), ByteLevel] fixture: ids identical to tokenizers.js; ignore_merges", () => {
  const json = llama3Fixture();
  const tok = tokenizerFromJSON(json);
  assertSameIds(tok, json, [...SAMPLES, chapters[30]!, ...fuzzStrings(600, 4)]);
  const vocab = json.model as Json;
  // " zebra" is in the vocab but unreachable by merges: ignore_merges emits it whole.
  assert.deepEqual(tok.encode(" zebra"), [vocab.vocab["Ġzebra"]]);
  // Post-processor (TemplateProcessing adding <|begin_of_text|>) is deliberately not applied.
  assert.equal(tok.encode("hi")[0], vocab.vocab["h"]);
  assert.equal(tok.eosId, vocab.vocab["Ġzebra"] + 2); // <|end_of_text|>
  // (?i:'s) matches "'S"; \p{N}{1,3} cuts digits in threes.
  assert.deepEqual(tokensOf(tok, tok.encode("'S 1234567")), ["'S", "Ġ", "123", "4", "5", "6", "7"]);
});

test("Oniguruma \\s (U+0085 is space, U+FEFF is not) as in the Rust crate", () => {
  const json = gpt2Fixture();
  const model = json.model as Json;
  let id = Object.keys(model.vocab).length + 10;
  for (const m of ["Â ħ", "Âħ Âħ", "ï »", "ï» ¿", "ï»¿ ï»¿"]) {
    const [a, b] = m.split(" ");
    model.vocab[a! + b!] ??= id++;
    model.merges = [...model.merges, m];
  }
  const tok = tokenizerFromJSON(json);
  // Rust: "a", "\x85", "\x85", "b" (each U+0085 is whitespace); tokenizers.js would give one "\x85\x85" piece.
  assert.deepEqual(tokensOf(tok, tok.encode("a\u0085\u0085b")), ["a", "Âħ", "Âħ", "b"]);
  // Rust: U+FEFF is not whitespace, so "\ufeff\ufeff" is one punctuation-like piece.
  assert.deepEqual(tokensOf(tok, tok.encode("a\ufeff\ufeffb")), ["a", "ï»¿ï»¿", "b"]);
  assert.equal(tok.decode(tok.encode("\ufeffx\u0085")), "\ufeffx\u0085");
});

test("round trip decode(encode(s)) == s for arbitrary UTF-8", () => {
  const toks = [trainBpe(chapters.slice(0, 2), { vocabSize: 600 }), tokenizerFromJSON(gpt2Fixture(false)), tokenizerFromJSON(llama3Fixture())];
  const strings = [...SAMPLES, ...fuzzStrings(3000, 5, false)];
  for (const tok of toks) for (const s of strings) assert.equal(tok.decode(tok.encode(s)), s, `round trip of ${JSON.stringify(s)}`);
  // Partial UTF-8 decodes to U+FFFD; ids outside the vocab throw.
  const tok = toks[1]!;
  const ids = tok.encode("🙂");
  assert.equal(ids.length > 1, true);
  assert.equal(tok.decode(ids.slice(0, 1)), "\ufffd");
  assert.throws(() => tok.decode([tok.vocabSize + 5]), RangeError);
});

test("save/load: atomic write, vocab ordered by id, identical JSON and ids", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-tok-"));
  try {
    const tok = trainBpe(chapters.slice(0, 2), { vocabSize: 700 });
    const file = path.join(dir, "tokenizer.json");
    saveTokenizer(tok, file);
    const text = readFileSync(file, "utf8");
    assert.match(text, /"vocab": \{\n {6}"<\|endoftext\|>": 0,\n {6}"!": 1,/);
    const back = loadTokenizer(file);
    assert.deepEqual(back.toJSON(), JSON.parse(JSON.stringify(tok.toJSON())));
    assert.deepEqual(back.encode(chapters[3]!), tok.encode(chapters[3]!));
    assert.equal(back.eosId, 0);
    assert.deepEqual(
      new HfTokenizer(JSON.parse(text), {}).encode(chapters[3]!.slice(0, 5000), { add_special_tokens: false }).ids,
      back.encode(chapters[3]!.slice(0, 5000)),
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("malformed or unsupported tokenizer.json: errors name the file and the problem", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-tok-"));
  try {
    const bad = path.join(dir, "bad.json");
    writeFileSync(bad, "{ not json");
    assert.throws(() => loadTokenizer(bad), (e: Error) => e.message.includes(bad) && /not valid JSON/.test(e.message));
    assert.throws(() => loadTokenizer(path.join(dir, "missing.json")), /missing\.json: cannot read tokenizer/);
    const write = (j: unknown) => (writeFileSync(bad, JSON.stringify(j)), bad);
    const mutate = (f: (j: Json) => void) => {
      const j = gpt2Fixture() as Json;
      f(j);
      return write(j);
    };
    const cases: Array<[(j: Json) => void, RegExp]> = [
      [(j) => (j.model.type = "WordPiece"), /unsupported model type "WordPiece"/],
      [(j) => delete j.model, /missing 'model'/],
      [(j) => (j.model.vocab = [1, 2]), /model.vocab must be an object/],
      [(j) => (j.model.vocab["Ġ"] = -1), /not a non-negative integer id/],
      [(j) => (j.model.merges = ["Ġ zz"]), /merges\[0\].*"zz" is not in model.vocab/],
      [(j) => (j.model.merges = ["a b c"]), /merges\[0\] must be "a b"/],
      [(j) => (j.model.dropout = 0.1), /dropout/],
      [(j) => (j.model.byte_fallback = true), /byte_fallback/],
      [(j) => (j.pre_tokenizer = { type: "Metaspace", replacement: "▁" }), /unsupported pre_tokenizer "Metaspace"/],
      [(j) => (j.pre_tokenizer = null), /needs a ByteLevel pre_tokenizer/],
      [(j) => (j.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "ByteLevel" }, { type: "Split", pattern: { String: " " }, behavior: "Isolated" }] }), /ByteLevel must be the last/],
      [(j) => (j.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: "a++" }, behavior: "Isolated" }, { type: "ByteLevel" }] }), /possessive/],
      [(j) => (j.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: "\\G\\w" }, behavior: "Isolated" }, { type: "ByteLevel" }] }), /\\G/],
      [(j) => (j.pre_tokenizer = { type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: "x" }, behavior: "Sideways" }, { type: "ByteLevel" }] }), /unknown behavior/],
      [(j) => (j.normalizer = { type: "Lowercase" }), /unsupported normalizer "Lowercase"/],
      [(j) => (j.decoder = { type: "WordPiece" }), /unsupported decoder "WordPiece"/],
      [(j) => (j.added_tokens = [{ content: "x" }]), /added_tokens\[0\] needs/],
      [(j) => (j.added_tokens = [{ id: 0, content: "<x>", special: true }]), /reuses id 0/],
    ];
    for (const [f, re] of cases) {
      const file = mutate(f);
      assert.throws(() => loadTokenizer(file), (e: Error) => e.message.startsWith(`${file}: `) && re.test(e.message), String(re));
    }
    assert.throws(() => tokenizerFromJSON(42), /tokenizer.json: not a JSON object/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("moe tokenizer train: trains from files/folders and moby-dick; bad flags and paths are clear errors", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-tok-"));
  const log = console.log;
  const err = console.error;
  console.log = console.error = () => {};
  try {
    writeFileSync(path.join(dir, "a.txt"), chapters[0]!);
    writeFileSync(path.join(dir, "b.txt"), chapters[1]!);
    const out = path.join(dir, "tok.json");
    assert.equal(await runTokenizer(["train", "--data", dir, "--vocab-size", "400", "--out", out]), 0);
    const tok = loadTokenizer(out);
    assert.equal(tok.vocabSize, 400);
    assert.equal(JSON.stringify(tok.toJSON()), JSON.stringify(trainBpe(chapters.slice(0, 2), { vocabSize: 400 }).toJSON()));
    const out2 = path.join(dir, "tok2.json");
    assert.equal(await runTokenizer(["train", "--data", `moby-dick,${path.join(dir, "a.txt")}`, "--vocab-size=300", "--out", out2, "--special", "<|endoftext|>,<|pad|>", "--min-frequency", "3"]), 0);
    assert.deepEqual(loadTokenizer(out2).specialTokens, { "<|endoftext|>": 0, "<|pad|>": 1 });
    await assert.rejects(runTokenizer(["train", "--data", path.join(dir, "nope.txt")]), /corpus path not found: .*nope.txt/);
    await assert.rejects(runTokenizer(["train", "--data", dir, "--vocab-size", "100", "--out", out]), /--vocab-size must be an integer ≥ 257/);
    await assert.rejects(runTokenizer(["train", "--data", dir, "--vocab-sise", "300"]), /unknown option --vocab-sise \(did you mean --vocab-size\?\)/);
    await assert.rejects(runTokenizer(["train", "--out", out]), /--data is required/);
    await assert.rejects(runTokenizer(["train", "--data", dir, "--out", path.join(dir, "no", "t.json")]), /--out folder .* does not exist/);
    await assert.rejects(runTokenizer(["fit"]), /unknown subcommand 'fit'/);
    const empty = mkdtempSync(path.join(dir, "empty-"));
    await assert.rejects(runTokenizer(["train", "--data", empty]), /no \*\.txt, \*\.md or \*\.jsonl files under/);
  } finally {
    console.log = log;
    console.error = err;
    rmSync(dir, { recursive: true, force: true });
  }
});

test("moby-dick resolves to the book in reading order (etymology, extracts, chapters 1–135, epilogue)", () => {
  const files = mobyDickFiles().map((f) => path.basename(f));
  assert.equal(files.length, chapters.length);
  assert.equal(files[0], "etymology.txt");
  assert.ok(files.indexOf("chapter_1.txt") < files.indexOf("chapter_10.txt"));
  assert.ok(files.indexOf("chapter_9.txt") < files.indexOf("chapter_10.txt"));
});
