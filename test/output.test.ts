// Detokenizer and stop-matcher tests. References: a streaming TextDecoder over each token's
// bytes (the detokenizer's deltas must equal its deltas on valid UTF-8), the tokenizer's full
// decode(), and a direct scan of the whole text for the first stop string to complete.
import { test } from "node:test";
import assert from "node:assert/strict";
import { tokenizerFromJSON, BYTE_CHARS, BYTE_ORDER } from "../src/data/tokenizer.js";
import { IncrementalDetokenizer } from "../src/infer/detok.js";
import { StopMatcher } from "../src/infer/stop.js";
import { SequenceOutput } from "../src/infer/output.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { gpt2Fixture } from "./tokenizer-fixtures.js";
import { rng } from "./util.js";

const json = gpt2Fixture();
const tok = tokenizerFromJSON(json);
const EOS = tok.specialTokens["<|endoftext|>"]!;
const byteId = (b: number) => BYTE_ORDER.indexOf(b); // the fixture numbers byte tokens in BYTE_ORDER
const charByte = new Map(BYTE_CHARS.map((c, b) => [c, b]));
const vocab = (json.model as { vocab: Record<string, number> }).vocab;
const idBytes = new Map<number, Uint8Array>(Object.entries(vocab).map(([s, id]) => [id, Uint8Array.from([...s].map((c) => charByte.get(c)!))]));
const params = (p: Record<string, unknown>) => validateSamplingParams(p, { vocabSize: tok.vocabSize, maxModelLen: 4096 });

/** Deltas of a streaming TextDecoder fed each token's bytes. */
function streamingDeltas(ids: number[]): string[] {
  const d = new TextDecoder("utf-8");
  return ids.map((id) => d.decode(idBytes.get(id)!, { stream: true }));
}

test("detokenizer: byte tokens of multi-byte characters are held until the character is complete", () => {
  const bytes = [...new TextEncoder().encode("a€😀b")];
  const d = new IncrementalDetokenizer(tok);
  const deltas = bytes.map((b) => d.push(byteId(b)));
  assert.deepEqual(deltas, ["a", "", "", "€", "", "", "", "😀", "b"]);
  assert.equal(d.flush(), "");
  assert.equal(d.text, "a€😀b");
});

test("detokenizer: deltas equal a streaming UTF-8 decoder's and join to decode(ids), random texts", () => {
  const pool = ["a", " the", " whale", "é", "的", "😀", "€", "\n\n", "  ", "12", "'s", "ðŁ", "ç"];
  const r = rng(11);
  for (let trial = 0; trial < 200; trial++) {
    let text = "";
    const len = 1 + Math.floor(r() * 12);
    for (let i = 0; i < len; i++) text += pool[Math.floor(r() * pool.length)];
    const ids = tok.encode(text);
    // mix in raw byte tokens so characters split at every possible byte boundary
    const split: number[] = [];
    for (const id of ids) {
      if (r() < 0.3) for (const b of idBytes.get(id)!) split.push(byteId(b));
      else split.push(id);
    }
    const d = new IncrementalDetokenizer(tok);
    const got = split.map((id) => d.push(id));
    assert.deepEqual(got, streamingDeltas(split), JSON.stringify(text));
    assert.equal(d.flush(), "");
    assert.equal(d.text, tok.decode(split));
    assert.equal(d.text, text);
  }
});

test("detokenizer: invalid bytes surface as U+FFFD (after the next token, or at flush)", () => {
  const d = new IncrementalDetokenizer(tok);
  assert.equal(d.push(byteId(0xff)), ""); // could be an incomplete tail for all the detokenizer knows
  assert.equal(d.push(byteId(0x61)), "\ufffda");
  assert.equal(d.push(byteId(0xe2)), "");
  assert.equal(d.push(byteId(0x82)), "");
  assert.equal(d.flush(), "\ufffd");
  assert.equal(d.text, tok.decode([0xff, 0x61, 0xe2, 0x82].map(byteId)));
});

test("detokenizer: special tokens are skipped by default, kept with skipIds []; prompt context", () => {
  const ids = [...tok.encode("the whale"), EOS];
  const d = new IncrementalDetokenizer(tok);
  for (const id of ids) d.push(id);
  assert.equal(d.text, "the whale");
  const k = new IncrementalDetokenizer(tok, { skipIds: [] });
  for (const id of ids) k.push(id);
  assert.equal(k.text, "the whale<|endoftext|>");
  // a prompt ending inside a character: the output token that completes it emits it whole
  const euro = [...new TextEncoder().encode("x€")].map(byteId);
  const p = new IncrementalDetokenizer(tok, { promptIds: euro.slice(0, 3) });
  assert.equal(p.push(euro[3]!), "€");
});

/** The reference: output text for a whole text and a stop list (first stop string to complete). */
function refStop(text: string, stops: string[], include: boolean): { text: string; stop: string | null } {
  for (let e = 1; e <= text.length; e++) {
    let hit: string | null = null;
    for (const s of stops) if (e >= s.length && text.slice(e - s.length, e) === s && (hit === null || s.length > hit.length)) hit = s;
    if (hit !== null) return { text: text.slice(0, include ? e : e - hit.length), stop: hit };
  }
  return { text, stop: null };
}

test("stop strings: matched across token boundaries, held back while partial, independent of the split", () => {
  const m = new StopMatcher(params({ stop: ["###"] }), { maxTokens: 100 });
  assert.deepEqual(m.push(1, "ab#"), { text: "ab", finishReason: null, stopReason: null });
  assert.deepEqual(m.push(2, "#"), { text: "", finishReason: null, stopReason: null });
  assert.deepEqual(m.push(3, "#c"), { text: "", finishReason: "stop", stopReason: "###" });
  const h = new StopMatcher(params({ stop: ["###"] }), { maxTokens: 100 });
  assert.equal(h.push(1, "a#").text, "a");
  assert.equal(h.push(2, "#b").text, "##b"); // the partial match broke: released
  // the first string to complete wins, whatever the split
  assert.deepEqual(new StopMatcher(params({ stop: ["abc", "b"] }), { maxTokens: 9 }).push(1, "abc"), { text: "a", finishReason: "stop", stopReason: "b" });
  assert.equal(new StopMatcher(params({ stop: ["###"], include_stop_str_in_output: true }), { maxTokens: 9 }).push(1, "xx###yy").text, "xx###");

  const r = rng(5);
  const alphabet = "ab#\n";
  for (let trial = 0; trial < 500; trial++) {
    const rand = (n: number) => Array.from({ length: n }, () => alphabet[Math.floor(r() * alphabet.length)]).join("");
    const text = rand(1 + Math.floor(r() * 30));
    const stops = Array.from({ length: 1 + Math.floor(r() * 3) }, () => rand(1 + Math.floor(r() * 4)));
    const include = r() < 0.3;
    const ref = refStop(text, stops, include);
    const pieces: string[] = [];
    for (let i = 0; i < text.length; ) {
      const n = 1 + Math.floor(r() * 4);
      pieces.push(text.slice(i, i + n));
      i += n;
    }
    const m = new StopMatcher(params({ stop: stops, include_stop_str_in_output: include }), { maxTokens: 1000 });
    let out = "";
    let reason: string | number | null = null;
    for (const [i, piece] of pieces.entries()) {
      const s = m.push(i, piece);
      out += s.text;
      // nothing emitted may later turn out to be part of a stop string
      assert.ok(ref.text.startsWith(out) || (ref.stop === null && text.startsWith(out)), `emitted ${JSON.stringify(out)} of ${JSON.stringify(text)} stops ${JSON.stringify(stops)}`);
      if (s.finishReason) {
        reason = s.stopReason;
        break;
      }
    }
    if (reason === null) out += m.flush();
    assert.equal(out, ref.text, `${JSON.stringify(text)} stops ${JSON.stringify(stops)} pieces ${JSON.stringify(pieces)}`);
    assert.equal(reason, ref.stop);
  }
});

test("stop tokens, EOS, ignore_eos, min_tokens and max_tokens give the right finish reasons", () => {
  const s = new StopMatcher(params({ stop_token_ids: [7] }), { eosTokenIds: [2], maxTokens: 10 });
  assert.deepEqual(s.push(1, "x"), { text: "x", finishReason: null, stopReason: null });
  assert.deepEqual(s.push(7, "<stop>"), { text: "", finishReason: "stop", stopReason: 7 });
  assert.throws(() => s.push(1, "y"), /already finished/);
  assert.deepEqual(new StopMatcher(params({}), { eosTokenIds: [2], maxTokens: 10 }).push(2, ""), { text: "", finishReason: "stop", stopReason: null });
  assert.equal(new StopMatcher(params({ ignore_eos: true }), { eosTokenIds: [2], maxTokens: 10 }).push(2, "").finishReason, null);
  // min_tokens: stops count only from token min_tokens + 1; a stop string before that is text
  const m = new StopMatcher(params({ min_tokens: 2, stop: ["!"] }), { eosTokenIds: [2], maxTokens: 10 });
  assert.deepEqual(m.push(2, ""), { text: "", finishReason: null, stopReason: null });
  assert.deepEqual(m.push(5, "a!"), { text: "a!", finishReason: null, stopReason: null });
  assert.deepEqual(m.push(6, "b!c"), { text: "b", finishReason: "stop", stopReason: "!" });
  // length: held partial text is released with the last token; a stop on that token wins
  const l = new StopMatcher(params({ stop: ["##"] }), { maxTokens: 2 });
  assert.equal(l.push(1, "a").text, "a");
  assert.deepEqual(l.push(1, "b#"), { text: "b#", finishReason: "length", stopReason: null });
  assert.deepEqual(new StopMatcher(params({ stop: ["##"] }), { maxTokens: 1 }).push(1, "a##"), { text: "a", finishReason: "stop", stopReason: "##" });
});

test("SequenceOutput: tokens → text deltas and finish reasons with the real tokenizer", () => {
  const run = (p: Record<string, unknown>, ids: number[], maxTokens = 100) => {
    const o = new SequenceOutput(tok, params(p), { maxTokens });
    const steps = [];
    for (const id of ids) {
      const s = o.push(id);
      steps.push(s);
      if (s.finishReason) break;
    }
    return { text: o.text, last: steps[steps.length - 1]!, n: steps.length };
  };
  const body = tok.encode("the whale###and more");
  assert.deepEqual(run({ stop: ["###"] }, body).text, "the whale");
  assert.deepEqual(run({}, [...tok.encode("the whale"), EOS, ...tok.encode(" more")]).last, { text: "", finishReason: "stop", stopReason: null });
  assert.equal(run({}, [...tok.encode("the whale"), EOS]).text, "the whale");
  // include_stop_str_in_output with a non-special stop token keeps its text
  const a = tok.encode(" a")[0]!;
  assert.equal(run({ stop_token_ids: [a], include_stop_str_in_output: true }, tok.encode("the whale a b")).text, "the whale a");
  assert.equal(run({ stop_token_ids: [a] }, tok.encode("the whale a b")).text, "the whale");
  // length in the middle of a character: the held bytes come out as U+FFFD, as decode() shows them
  const euroBytes = [...new TextEncoder().encode("x€")].map(byteId);
  const len = run({}, euroBytes, 3);
  assert.deepEqual([len.text, len.last.finishReason], ["x\ufffd", "length"]);
  assert.equal(len.text, tok.decode(euroBytes.slice(0, 3)));
});
