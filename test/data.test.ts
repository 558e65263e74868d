// Tests of the data pipeline: corpus parsing and streaming, the tokenise-once shard cache, the
// deterministic/resumable token loader and the unigram baseline. Tokenizers are tiny ones defined
// here (bytes; decimal numbers), never the BPE one, so these tests depend on no trained vocabulary.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, utimesSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { CorpusError, corpusFingerprint, iterateDocuments, parseCorpusSpec, readLines, type CorpusSpec } from "../src/data/corpus.js";
import { buildShards, ensureShards, openShards, ShardCacheError, tokenizerHash, type ShardSet } from "../src/data/shards.js";
import { TokenLoader, unigramBaseline, type Batch } from "../src/data/loader.js";
import type { Tokenizer } from "../src/data/types.js";

/** Byte-level test tokenizer: id = UTF-8 byte value, eos = 256. */
const byteTok: Tokenizer = {
  vocabSize: 257,
  specialTokens: { "<eos>": 256 },
  eosId: 256,
  encode: (text) => Array.from(new TextEncoder().encode(text)),
  decode: (ids) => new TextDecoder().decode(Uint8Array.from(Array.from(ids).filter((i) => i < 256))),
  toJSON: () => ({ kind: "bytes" }),
};

/** Number tokenizer: "7 8 9" → [7, 8, 9]; V = 70000 forces uint32 shards; eos = 69999. */
const numTok: Tokenizer = {
  vocabSize: 70000,
  specialTokens: { "<eos>": 69999 },
  eosId: 69999,
  encode: (text) => text.split(/\s+/).filter(Boolean).map(Number),
  decode: (ids) => Array.from(ids).join(" "),
  toJSON: () => ({ kind: "numbers" }),
};

function tmp(name: string): string {
  return mkdtempSync(path.join(tmpdir(), `moe-ts-data-${name}-`));
}

function write(file: string, text: string): string {
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, text);
  return file;
}

/** The split streams the shard layout promises: each document preceded by eos. */
function expectedStreams(docs: number[][], eos: number, valEvery: number): { train: number[]; val: number[] } {
  const out = { train: [] as number[], val: [] as number[] };
  docs.forEach((d, i) => out[valEvery > 0 && (i + 1) % valEvery === 0 ? "val" : "train"].push(eos, ...d));
  return out;
}

function readStream(shards: ShardSet, split: "train" | "val"): number[] {
  const out = new Int32Array(shards.splitTokens(split));
  shards.read(split, 0, out);
  return Array.from(out);
}

// ---------------------------------------------------------------------------------------------
// corpus

test("parseCorpusSpec: file, directory (recursive, sorted, filtered), comma list, errors", () => {
  const dir = tmp("parse");
  try {
    const a = write(path.join(dir, "c", "a.txt"), "alpha");
    const b = write(path.join(dir, "c", "sub", "b.md"), "beta");
    const z = write(path.join(dir, "c", "0.txt"), "zero");
    const j = write(path.join(dir, "c", "d.jsonl"), '{"text":"delta"}\n');
    write(path.join(dir, "c", "ignored.bin"), "x");
    assert.deepEqual(parseCorpusSpec(a), { kind: "files", paths: [a] });
    assert.deepEqual(parseCorpusSpec(j, "body"), { kind: "jsonl", paths: [j], field: "body" });
    assert.deepEqual(parseCorpusSpec(path.join(dir, "c")), {
      kind: "list",
      parts: [
        { kind: "files", paths: [z, a] },
        { kind: "jsonl", paths: [j], field: "text" },
        { kind: "files", paths: [b] },
      ],
    });
    assert.deepEqual(parseCorpusSpec(`moby-dick, ${a}`), { kind: "list", parts: [{ kind: "moby-dick" }, { kind: "files", paths: [a] }] });
    assert.deepEqual(parseCorpusSpec(`${a},${z}`), { kind: "files", paths: [a, z] });
    const docs = [...iterateDocuments(parseCorpusSpec(path.join(dir, "c")))];
    assert.deepEqual(
      docs.map((d) => d.text),
      ["zero", "alpha", "delta", "beta"],
    );
    assert.equal(docs[2].source, `${j}:1`);
    assert.throws(() => parseCorpusSpec(path.join(dir, "nope")), (e: Error) => e instanceof CorpusError && /not found/.test(e.message));
    mkdirSync(path.join(dir, "empty"));
    assert.throws(() => parseCorpusSpec(path.join(dir, "empty")), /no \*\.txt/);
    assert.throws(() => parseCorpusSpec(" , "), /empty corpus/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("jsonl: field selection, blank lines, CRLF, BOM, line numbers; lines spanning read chunks", () => {
  const dir = tmp("jsonl");
  try {
    const f = write(path.join(dir, "x.jsonl"), '\ufeff{"body":"one","text":"no"}\r\n\n{"body":"two — é"}\n   \n{"body":"three"}');
    const docs = [...iterateDocuments({ kind: "jsonl", paths: [f], field: "body" })];
    assert.deepEqual(docs, [
      { source: `${f}:1`, text: "one" },
      { source: `${f}:3`, text: "two — é" },
      { source: `${f}:5`, text: "three" },
    ]);
    // tiny chunks: lines and multi-byte characters cut across reads
    const lines = [...readLines(f, 3)].map((l) => l.line);
    assert.deepEqual(lines, ['{"body":"one","text":"no"}', "", '{"body":"two — é"}', "   ", '{"body":"three"}']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("jsonl: a malformed line, a missing field and a non-string field are errors naming file:line", () => {
  const dir = tmp("jsonlbad");
  try {
    const f = write(path.join(dir, "bad.jsonl"), '{"text":"ok"}\n{"text":"ok2"}\n{"text": oops}\n');
    const it = iterateDocuments({ kind: "jsonl", paths: [f], field: "text" });
    assert.equal(it.next().value?.text, "ok");
    assert.equal(it.next().value?.text, "ok2");
    assert.throws(() => it.next(), (e: Error) => e instanceof CorpusError && e.message.startsWith(`${f}:3: malformed JSON`));
    const g = write(path.join(dir, "nofield.jsonl"), '{"text":"a"}\n{"other":"b"}\n');
    assert.throws(() => [...iterateDocuments({ kind: "jsonl", paths: [g], field: "text" })], new RegExp(`${g.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:2: field "text" is missing`));
    const h = write(path.join(dir, "num.jsonl"), '{"text":5}\n');
    assert.throws(() => [...iterateDocuments({ kind: "jsonl", paths: [h], field: "text" })], /num\.jsonl:1: field "text" is missing or not a string/);
    const k = write(path.join(dir, "arr.jsonl"), '["text"]\n');
    assert.throws(() => [...iterateDocuments({ kind: "jsonl", paths: [k], field: "text" })], /arr\.jsonl:1:/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("moby-dick: resolves from the installed package, > 100 chapters, > 1M characters", () => {
  const spec = parseCorpusSpec("moby-dick");
  assert.deepEqual(spec, { kind: "moby-dick" });
  let chapters = 0;
  let chars = 0;
  let first = "";
  for (const d of iterateDocuments(spec)) {
    if (/chapter_\d+\.txt$/.test(d.source)) chapters++;
    if (first === "") first = d.text;
    chars += d.text.length;
  }
  assert.ok(chapters > 100, `chapters = ${chapters}`);
  assert.ok(chars > 1_000_000, `chars = ${chars}`);
  assert.match(first, /^ETYMOLOGY/);
  assert.match(corpusFingerprint(spec), /^[0-9a-f]{64}$/);
});

// ---------------------------------------------------------------------------------------------
// shards

function makeTextCorpus(dir: string, n: number): { spec: CorpusSpec; texts: string[] } {
  const texts: string[] = [];
  for (let i = 0; i < n; i++) {
    const t = `Document ${i}: ${"whale ".repeat(i % 7)}é—${i * 31}\n`;
    texts.push(t);
    write(path.join(dir, "corpus", `doc-${String(i).padStart(3, "0")}.txt`), t);
  }
  return { spec: parseCorpusSpec(path.join(dir, "corpus")), texts };
}

test("shards: round trip over several uint16 shards, val every k-th document, index contents", () => {
  const dir = tmp("shards");
  try {
    const { spec, texts } = makeTextCorpus(dir, 30);
    const cache = path.join(dir, "cache");
    const progress: number[] = [];
    const shards = buildShards(spec, byteTok, tokenizerHash(byteTok), cache, { shardTokens: 50, valFraction: 0.1, onProgress: (p) => progress.push(p.documents) });
    const ix = shards.index;
    assert.equal(ix.dtype, "uint16");
    assert.equal(ix.valEvery, 10);
    assert.deepEqual(ix.documents, { train: 27, val: 3 });
    assert.equal(progress.length, 30);
    assert.ok(ix.train.length > 5, `train shards = ${ix.train.length}`);
    assert.deepEqual(
      ix.train.map((e) => e.file).slice(0, 2),
      ["train-00000.bin", "train-00001.bin"],
    );
    assert.ok([...ix.train, ...ix.val].every((e) => e.tokens <= 50));
    assert.ok(ix.train.slice(0, -1).every((e) => e.tokens === 50));

    // raw files, concatenated and read as little-endian uint16, are the expected streams
    const want = expectedStreams(texts.map(byteTok.encode), 256, 10);
    for (const split of ["train", "val"] as const) {
      const raw: number[] = [];
      for (const e of ix[split]) {
        const b = readFileSync(path.join(cache, e.file));
        assert.equal(b.length, 2 * e.tokens);
        for (let i = 0; i < e.tokens; i++) raw.push(b.readUInt16LE(2 * i));
      }
      assert.deepEqual(raw, want[split]);
      assert.deepEqual(readStream(shards, split), want[split]);
    }
    assert.equal(ix.totalTokens, want.train.length + want.val.length);
    // decoding the stream and cutting at eos gives the documents back
    const trainTexts = texts.filter((_, i) => (i + 1) % 10 !== 0);
    const decoded: string[] = [];
    let cur: number[] | null = null;
    for (const id of readStream(shards, "train")) {
      if (id === 256) {
        if (cur) decoded.push(byteTok.decode(cur));
        cur = [];
      } else cur!.push(id);
    }
    decoded.push(byteTok.decode(cur!));
    assert.deepEqual(decoded, trainTexts);
    // a read spanning shard boundaries
    const out = new Int32Array(120);
    shards.read("train", 37, out);
    assert.deepEqual(Array.from(out), want.train.slice(37, 157));
    assert.throws(() => shards.read("train", want.train.length - 3, new Int32Array(4)), RangeError);
    shards.close();

    // reopening validates and agrees; a rebuild with bigger shards deletes the now-unlisted files
    const again = openShards(cache, corpusFingerprint(spec), tokenizerHash(byteTok));
    assert.deepEqual(again.index, ix);
    const big = buildShards(spec, byteTok, "h", cache, { shardTokens: 1 << 20, valFraction: 0.1 });
    assert.equal(big.index.train.length, 1);
    assert.throws(() => readFileSync(path.join(cache, "train-00001.bin")), /ENOENT/);
    assert.deepEqual(readStream(big, "train"), want.train);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("shards: uint32 when V > 65536", () => {
  const dir = tmp("u32");
  try {
    const docs = ["1 2 3 66000", "5 65537 7"];
    write(path.join(dir, "c", "a.txt"), docs[0]);
    write(path.join(dir, "c", "b.txt"), docs[1]);
    const s = buildShards(parseCorpusSpec(path.join(dir, "c")), numTok, "n", path.join(dir, "cache"), { valFraction: 0, shardTokens: 3 });
    assert.equal(s.index.dtype, "uint32");
    assert.equal(s.index.val.length, 0);
    assert.deepEqual(readStream(s, "train"), [69999, 1, 2, 3, 66000, 69999, 5, 65537, 7]);
    const b = readFileSync(path.join(dir, "cache", "train-00001.bin"));
    assert.deepEqual([b.readUInt32LE(0), b.readUInt32LE(4), b.readUInt32LE(8)], [3, 66000, 69999]);
    s.close();
    // ids outside the vocabulary are rejected, naming the document
    write(path.join(dir, "c", "c.txt"), "70000");
    assert.throws(() => buildShards(parseCorpusSpec(path.join(dir, "c")), numTok, "n", path.join(dir, "cache2")), /70000 outside .*c\.txt/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("shards: stale cache (corpus edit, tokenizer change), missing and corrupt caches", () => {
  const dir = tmp("stale");
  try {
    const { spec } = makeTextCorpus(dir, 12);
    const cache = path.join(dir, "cache");
    const h = tokenizerHash(byteTok);
    assert.throws(() => openShards(cache), (e: Error) => e instanceof ShardCacheError && e.reason === "missing");
    const first = ensureShards(spec, byteTok, h, cache, { shardTokens: 64 });
    assert.equal(first.rebuilt, true);
    assert.equal(ensureShards(spec, byteTok, h, cache, { shardTokens: 64 }).rebuilt, false);
    const otherVal = ensureShards(spec, byteTok, h, cache, { shardTokens: 64, valFraction: 0.25 });
    assert.equal(otherVal.rebuilt, true);
    assert.match(otherVal.reason!, /every 20-th .* every 4-th/);
    assert.equal(otherVal.shards.index.documents.val, 3);
    assert.equal(ensureShards(spec, byteTok, h, cache, { shardTokens: 64 }).rebuilt, true);

    const fp0 = corpusFingerprint(spec);
    const f = path.join(dir, "corpus", "doc-003.txt");
    writeFileSync(f, "changed text");
    const fp1 = corpusFingerprint(spec);
    assert.notEqual(fp1, fp0);
    // same size, only the modification time differs: still a different fingerprint
    utimesSync(f, new Date(2001, 1, 1), new Date(2001, 1, 1));
    const fp2 = corpusFingerprint(spec);
    assert.notEqual(fp2, fp1);
    assert.throws(() => openShards(cache, fp2), (e: Error) => e instanceof ShardCacheError && e.reason === "stale" && /cache is stale/.test(e.message));
    assert.throws(() => openShards(cache, fp0, "other-tokenizer"), (e: Error) => e instanceof ShardCacheError && e.reason === "stale" && /different tokenizer/.test(e.message));
    const re = ensureShards(spec, byteTok, h, cache, { shardTokens: 64 });
    assert.equal(re.rebuilt, true);
    assert.match(re.reason!, /stale/);
    assert.equal(re.shards.index.fingerprint, fp2);
    assert.ok(readStream(re.shards, "train").length > 0);
    re.shards.close();

    // truncate a shard: the error names the file; ensureShards repairs it
    const victim = path.join(cache, "train-00001.bin");
    truncateSync(victim, 10);
    assert.throws(() => openShards(cache), (e: Error) => e instanceof ShardCacheError && e.reason === "corrupt" && e.message.includes(victim));
    assert.equal(ensureShards(spec, byteTok, h, cache, { shardTokens: 64 }).rebuilt, true);
    assert.equal(openShards(cache, fp2, h).index.fingerprint, fp2);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// loader

/** A number corpus whose stream token at position i is distinct: window starts can be read off. */
function numberCorpus(dir: string, docs: number, perDoc: number, shardTokens: number, valFraction = 0.25): { shards: ShardSet; train: number[]; val: number[] } {
  const ids: number[][] = [];
  let next = 0;
  for (let d = 0; d < docs; d++) {
    const doc = Array.from({ length: perDoc + (d % 3) }, () => next++);
    ids.push(doc);
    write(path.join(dir, "nums", `d${String(d).padStart(3, "0")}.txt`), doc.join(" "));
  }
  const shards = buildShards(parseCorpusSpec(path.join(dir, "nums")), numTok, "n", path.join(dir, "ncache"), { shardTokens, valFraction });
  return { shards, ...expectedStreams(ids, numTok.eosId!, Math.round(1 / valFraction)) };
}

/** Checks each row is stream[s .. s+T] for a start s, returning the starts. */
function rowStarts(batch: Batch, stream: number[], B: number, T: number): number[] {
  const pos = new Map<number, number>();
  stream.forEach((v, i) => {
    if (v !== numTok.eosId) pos.set(v, i);
  });
  const starts: number[] = [];
  for (let b = 0; b < B; b++) {
    const inp = Array.from(batch.inputs.subarray(b * T, (b + 1) * T));
    const tgt = Array.from(batch.targets.subarray(b * T, (b + 1) * T));
    assert.deepEqual(inp.slice(1), tgt.slice(0, -1), "targets are inputs shifted by one");
    // locate via the first non-eos token
    const k = inp.findIndex((v) => v !== numTok.eosId);
    const s = pos.get(inp[k])! - k;
    assert.deepEqual([...inp, tgt[T - 1]], stream.slice(s, s + T + 1), `row ${b} is a contiguous window`);
    assert.ok(s >= 0 && s + T + 1 <= stream.length);
    starts.push(s);
  }
  return starts;
}

test("loader: windows are contiguous (spanning shard files), targets shifted, every chunk once per epoch", () => {
  const dir = tmp("loader");
  try {
    const B = 3;
    const T = 7;
    const { shards, train } = numberCorpus(dir, 40, 9, 13);
    assert.ok(shards.index.train.length > 10);
    const N = train.length;
    const loader = new TokenLoader(shards, "train", B, T, 1234);
    const chunks = Math.floor((N - 1) / T);
    const batchesPerEpoch = Math.floor(chunks / B);
    const seen: number[] = [];
    for (let i = 0; i < batchesPerEpoch; i++) seen.push(...rowStarts(loader.next(), train, B, T));
    // epoch 0 has phase 0: starts are multiples of T, each chunk at most once, all but < B covered
    assert.ok(seen.every((s) => s % T === 0));
    assert.equal(new Set(seen).size, seen.length);
    assert.equal(seen.length, chunks - (chunks % B));
    // later epochs: still valid windows, and the epoch counter advances
    for (let i = 0; i < 2 * batchesPerEpoch; i++) rowStarts(loader.next(), train, B, T);
    assert.ok(loader.state().epoch >= 2);
    shards.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loader: deterministic for a seed; state/restore continues with identical batches (across epochs, via JSON)", () => {
  const dir = tmp("restore");
  try {
    const B = 4;
    const T = 5;
    const { shards } = numberCorpus(dir, 20, 6, 17);
    const a = new TokenLoader(shards, "train", B, T, 42);
    const b = new TokenLoader(shards, "train", B, T, 42);
    const c = new TokenLoader(shards, "train", B, T, 43);
    const run: Batch[] = [];
    for (let i = 0; i < 25; i++) run.push(a.next());
    let differs = false;
    for (let i = 0; i < 25; i++) {
      const x = b.next();
      assert.deepEqual(x, run[i]);
      if (!differs && JSON.stringify(c.next()) !== JSON.stringify(run[i])) differs = true;
    }
    assert.ok(differs, "another seed gives other batches");
    assert.ok(a.state().epoch >= 2, "the run crossed epoch boundaries");

    // restore from every point of a fresh run
    const fresh = new TokenLoader(shards, "train", B, T, 42);
    for (let k = 0; k < 20; k++) {
      const saved = JSON.parse(JSON.stringify(fresh.state()));
      const r = TokenLoader.restore(shards, "train", B, T, saved);
      for (let i = k; i < Math.min(k + 5, 25); i++) assert.deepEqual(r.next(), run[i], `restored at ${k}, batch ${i}`);
      assert.deepEqual(fresh.next(), run[k]);
    }
    const st = fresh.state();
    assert.throws(() => TokenLoader.restore(shards, "train", B + 1, T, st), /saved B = 4/);
    assert.throws(() => TokenLoader.restore(shards, "val", B, T, st), /saved split/);
    assert.throws(() => TokenLoader.restore(shards, "train", B, T, { ...st, splitTokens: 1 }), /splitTokens/);
    assert.throws(() => TokenLoader.restore(shards, "train", B, T, { ...st, cursor: 1e9 }), /cursor/);
    shards.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("loader: val batches are stable, spread over the split, independent of training state", () => {
  const dir = tmp("val");
  try {
    const B = 2;
    const T = 6;
    const { shards, val } = numberCorpus(dir, 40, 8, 11);
    const loader = new TokenLoader(shards, "train", B, T, 7);
    const first = [...loader.evalBatches(3)];
    loader.next();
    loader.next();
    const second = [...loader.evalBatches(3)];
    assert.equal(first.length, 3);
    assert.deepEqual(second, first);
    const starts = first.flatMap((bt) => rowStarts(bt, val, B, T));
    assert.ok(starts.every((s) => s % T === 0));
    assert.equal(new Set(starts).size, 6);
    assert.ok(Math.max(...starts) > val.length / 2, "eval windows reach the second half of val");
    // asking for more batches than val holds: floor(chunks / B) of them
    const chunks = Math.floor((val.length - 1) / T);
    assert.equal([...loader.evalBatches(1000)].length, Math.floor(chunks / B));
    // a val loader samples val
    const vl = new TokenLoader(shards, "val", B, T, 7);
    rowStarts(vl.next(), val, B, T);
    assert.throws(() => new TokenLoader(shards, "val", B, 10_000, 7), /fewer than one window/);
    shards.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("unigramBaseline equals a hand computation on a toy corpus", () => {
  const dir = tmp("unigram");
  try {
    // valFraction 0.5 → documents 1 and 3 go to val
    ["aab", "ba", "abb", "c"].forEach((t, i) => write(path.join(dir, "toy", `${i}.txt`), t));
    const s = buildShards(parseCorpusSpec(path.join(dir, "toy")), byteTok, "b", path.join(dir, "cache"), { valFraction: 0.5 });
    // train stream: eos a a b eos a b b → counts eos 2, a 3, b 3; N_train = 8; V = 257 → denominator 265
    // val stream:   eos b a eos c       → p = 3/265, 4/265, 4/265, 3/265, 1/265
    const want = -(2 * Math.log(3 / 265) + Math.log(4 / 265) + Math.log(4 / 265) + Math.log(1 / 265)) / 5;
    assert.ok(Math.abs(unigramBaseline(s, 257) - want) < 1e-12, `${unigramBaseline(s, 257)} vs ${want}`);
    assert.ok(unigramBaseline(s, 257) < Math.log(257));
    s.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
