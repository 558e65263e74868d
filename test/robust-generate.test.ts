// Generation limits and commands: a prompt longer than the context keeps its last tokens with a
// message; --max-tokens above the context left is capped with a message; a tokenizer larger than
// the model's vocabulary is refused at load; `moe --version`.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, copyFileSync, readFileSync, writeFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { latestCheckpoint } from "../src/train/checkpoints.js";
import { loadTokenizer } from "../src/data/tokenizer.js";
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

test("moe --version prints the package version; an unknown command names itself", async () => {
  const pkg = JSON.parse(readFileSync(path.join(ROOT, "package.json"), "utf8"));
  const v = await cli(["--version"]);
  assert.equal(v.code, 0);
  assert.match(v.out, new RegExp(`^moe-ts ${pkg.version.replace(/\./g, "\\.")} `));
  const u = await cli(["trian"]);
  assert.equal(u.code, 2);
  assert.match(u.err, /unknown command 'trian'/);
});
