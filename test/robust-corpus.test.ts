// A user's own corpus: one .txt file (or two) trains, holding out the last tokens for val when
// there are too few documents to hold out whole ones; /dev/zero and other non-regular files are
// refused with a message instead of hanging.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseCorpusSpec, CorpusError } from "../src/data/corpus.js";
import { trainBpe } from "../src/data/bpe-train.js";
import { buildShards, tokenizerHash } from "../src/data/shards.js";
import { cli, tinyArgs } from "./robust-util.js";

const words = ["the whale", "the sea", "a ship", "the captain", "a harpoon", "the crew", "white", "grey", "sails", "waits"];
const text = (n: number) => Array.from({ length: n }, (_, s) => `${words[s % 10]} ${words[(s * 7) % 10]} and ${words[(s * 3 + 1) % 10]}.`).join(" ") + "\n";

test("one .txt file trains end to end (val held out by tokens)", async () => {
  const base = mkdtempSync(path.join(tmpdir(), "moe-robust-corpus-"));
  const file = path.join(base, "mine.txt");
  writeFileSync(file, text(300));
  const r = await cli(["train", ...tinyArgs(base, "one", file, ["train.steps=3"])]);
  assert.equal(r.code, 0, r.err);
  const m = /data: (\d+) train \/ (\d+) val tokens/.exec(r.out);
  assert.ok(m, r.out);
  const [train, val] = [Number(m[1]), Number(m[2])];
  // data.val_fraction=0.1 of the token stream, rounded up
  assert.equal(val, Math.ceil((train + val) * 0.1));
  assert.match(r.out, /validation loss \d+\.\d+/);
});

test("two documents: the val split is the last val_fraction of the tokens, the train split the rest, in order", () => {
  const base = mkdtempSync(path.join(tmpdir(), "moe-robust-corpus2-"));
  writeFileSync(path.join(base, "a.txt"), text(50));
  writeFileSync(path.join(base, "b.txt"), text(80));
  const spec = parseCorpusSpec(base);
  const tok = trainBpe([text(50)], { vocabSize: 280, specialTokens: ["<|endoftext|>"] });
  const shards = buildShards(spec, tok, tokenizerHash(tok), path.join(base, "cache"), { valFraction: 0.2 });
  // independent reference: the whole stream (eos + each document's ids), cut at ceil(20%) from the end
  const stream = [tok.eosId!, ...tok.encode(text(50)), tok.eosId!, ...tok.encode(text(80))];
  const nVal = Math.ceil(stream.length * 0.2);
  assert.equal(shards.splitTokens("val"), nVal);
  assert.equal(shards.splitTokens("train"), stream.length - nVal);
  const val = new Int32Array(nVal);
  shards.read("val", 0, val);
  assert.deepEqual([...val], stream.slice(stream.length - nVal));
});

test("/dev/zero and /dev/null (non-regular files) are refused by name", async () => {
  assert.throws(() => parseCorpusSpec("/dev/zero"), (e: unknown) => e instanceof CorpusError && /\/dev\/zero is not a regular file or directory/.test((e as Error).message));
  assert.throws(() => parseCorpusSpec("/dev/null"), /\/dev\/null is not a regular file or directory/);
  const base = mkdtempSync(path.join(tmpdir(), "moe-robust-corpus3-"));
  const r = await cli(["train", ...tinyArgs(base, "z", "/dev/zero")]);
  assert.equal(r.code, 1);
  assert.match(r.err, /corpus path \/dev\/zero is not a regular file/);
});
