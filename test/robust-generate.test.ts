// Generation limits and commands: a prompt longer than the context keeps its last tokens with a
// message; --max-tokens above the context left is capped with a message; `moe chat` over the
// context drops the oldest turns whole with a message and refuses a message too long alone; a
// tokenizer larger than the model's vocabulary is refused at load; `moe --version`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { latestCheckpoint } from "../src/train/checkpoints.js";
import { loadTokenizer } from "../src/data/tokenizer.js";
import { fitChat, type ChatMessage } from "../src/infer/chat-window.js";
import { cli, corpus, tinyArgs, ROOT } from "./robust-util.js";

const base = mkdtempSync(path.join(tmpdir(), "moe-robust-gen-"));
const data = corpus(20);

test("prompt over the context (stdin and --prompt-file) is truncated with a message; --max-tokens capped with a message", async () => {
  const r = await cli(["train", ...tinyArgs(base, "run", data, ["train.steps=1"])]);
  assert.equal(r.code, 0, r.err);
  const run = path.join(base, "run");
  const tok = loadTokenizer(path.join(latestCheckpoint(run)!, "tokenizer.json"));
  const long = "the whale and the sea. ".repeat(60);
  const n = tok.encode(long).length;
  assert.ok(n > 32, `${n} tokens`);
  const viaStdin = await cli(["generate", run, "--max-model-len", "32", "--max-tokens", "4", "--temperature", "0"], { stdin: long });
  assert.equal(viaStdin.code, 0, viaStdin.err);
  assert.match(viaStdin.err, new RegExp(`the prompt has ${n} tokens, the context 32 \\(--max-model-len\\); keeping its last 31`));
  const file = path.join(base, "p.txt");
  writeFileSync(file, long);
  const viaFile = await cli(["generate", run, "--prompt-file", file, "--max-model-len", "32", "--max-tokens", "4", "--temperature", "0"]);
  assert.equal(viaFile.code, 0, viaFile.err);
  assert.equal(viaFile.out, viaStdin.out, "the same prompt either way");
  // sibling: a short prompt and --max-tokens 1e9 → capped to the context left
  const capped = await cli(["generate", run, "--prompt", "the whale", "--max-model-len", "32", "--max-tokens", "1000000000", "--temperature", "0", "--ignore-eos"]);
  assert.equal(capped.code, 0, capped.err);
  const p = tok.encode("the whale").length;
  assert.match(capped.err, new RegExp(`--max-tokens 1000000000 capped to ${32 - p} \\(context 32 − prompt ${p} tokens\\)`));
});

test("a tokenizer with more tokens than the model's vocab is refused at load", async () => {
  const run = path.join(base, "run");
  const ck = latestCheckpoint(run)!;
  const bad = path.join(base, "bigtok");
  mkdirSync(bad);
  for (const f of readdirSync(ck)) if (f !== "tokenizer.json") copyFileSync(path.join(ck, f), path.join(bad, f));
  const tj = JSON.parse(readFileSync(path.join(ck, "tokenizer.json"), "utf8"));
  const V = Object.keys(tj.model.vocab).length + (tj.added_tokens?.length ?? 0);
  tj.added_tokens = [...(tj.added_tokens ?? []), { id: V + 50, content: "<|extra|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }];
  writeFileSync(path.join(bad, "tokenizer.json"), JSON.stringify(tj));
  const r = await cli(["generate", bad, "--prompt", "the", "--max-tokens", "2"]);
  assert.equal(r.code, 1);
  assert.match(r.err, /tokenizer\.json: the tokenizer has \d+ tokens, the model's vocab_size is 300/);
});

test("moe --version prints the package version; an unknown command names itself; wrong arguments say what is wrong", async () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const v = await cli(["--version"]);
  assert.equal(v.code, 0);
  assert.match(v.out, new RegExp(`^moe-ts ${pkg.version.replace(/\./g, "\\.")} `));
  const u = await cli(["trian"]);
  assert.equal(u.code, 2);
  assert.match(u.err, /unknown command 'trian'/);
  // wrong arguments say what is wrong, then the usage
  for (const cmd of ["generate", "chat", "serve", "eval", "inspect", "dashboard"]) {
    const r = await cli([cmd]);
    assert.equal(r.code, 2, cmd);
    assert.match(r.err, new RegExp(`^moe ${cmd}: expected one (MODEL|RUN_DIR), got none`), cmd);
    assert.match(r.out, new RegExp(`usage: moe ${cmd}`), cmd);
  }
  const two = await cli(["generate", "a", "b"]);
  assert.match(two.err, /moe generate: expected one MODEL, got 2: 'a' 'b'/);
  const up = await cli(["upcycle", "--from", "x"]);
  assert.match(up.err, /moe upcycle: --out is required/);
});

test("chat over the context drops the oldest turns whole (system kept); a message too long alone is refused", () => {
  // closed-form encode: 3 tokens per message + 1 per character of content, 2 for the generation prompt
  const encode = (m: ChatMessage[]) => new Array<number>(m.reduce((s, x) => s + 3 + x.content.length, 2)).fill(0);
  const sys = { role: "system", content: "sys" }; // 6 tokens
  const turn = (u: string, a: string): ChatMessage[] => [{ role: "user", content: u }, { role: "assistant", content: a }];
  const conv = [sys, ...turn("aaaa", "bbbb"), ...turn("cccc", "dddd"), { role: "user", content: "eeee" }]; // 2 + 6 + 4·7 + 7 = 43
  const all = fitChat(conv, encode, 64, 10);
  assert.deepEqual(all.ok && { n: all.ids.length, dropped: all.dropped }, { n: 43, dropped: 0 });
  // 43 + 10 > 50: drop the first turn (14 tokens) → 29; the system message stays
  const one = fitChat(conv, encode, 50, 10);
  assert.ok(one.ok);
  assert.equal(one.dropped, 1);
  assert.equal(one.ids.length, 29);
  assert.deepEqual(one.messages.map((m) => m.content), ["sys", "cccc", "dddd", "eeee"]);
  // sibling: only the newest user message is left; it is kept while it leaves one token, refused after
  const last = fitChat(conv, encode, 16, 10);
  assert.deepEqual(last.ok && last.messages.map((m) => m.content), ["sys", "eeee"]);
  assert.deepEqual(fitChat(conv, encode, 15, 10), { ok: false, tokens: 15 });
});

test("moe chat: over the context says so (turns dropped, a too-long message not sent) and goes on", async () => {
  const run = path.join(base, "run");
  const lines = ["the whale and the sea", "the whale and the sea ".repeat(40), "a ship", "the captain waits", "grey sails", ""].join("\n");
  const r = await cli(["chat", run, "--max-model-len", "64", "--max-tokens", "8", "--temperature", "0", "--ignore-eos"], { stdin: lines });
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /moe chat: the message is \d{3} tokens with the chat template, the context 64 \(--max-model-len\); not sent/);
  assert.match(r.err, /moe chat: the conversation is over the context 64 \(--max-model-len\) with room for the reply; dropped the oldest 1 turn\(s\)/);
  assert.equal(r.out.trim().split("\n").length, 4, `four replies: ${r.out}`);
  // sibling: a context that holds the whole conversation drops nothing
  const roomy = await cli(["chat", run, "--max-model-len", "512", "--max-tokens", "8", "--temperature", "0"], { stdin: "a ship\nthe captain waits\n" });
  assert.equal(roomy.code, 0, roomy.err);
  assert.doesNotMatch(roomy.err, /dropped|not sent/);
});
