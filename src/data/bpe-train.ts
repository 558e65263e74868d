// Byte-level BPE trainer: learns GPT-2 style merges from text and returns a Tokenizer whose
// toJSON() is a standard HF tokenizer.json. Not a port of the HF trainer: no alphabet limit,
// no continuing-subword prefixes, single-threaded; merges are deterministic by construction.
//
//   1. Split each text on the special tokens, pre-tokenize with the GPT-2 regex, count words.
//   2. Each unique word becomes a list of byte tokens (base alphabet: all 256 bytes).
//   3. Count adjacent pairs weighted by word frequency; index pair → words containing it.
//   4. Repeat until the vocab is full or the best count < minFrequency: take the most frequent
//      pair (ties: the pair whose (left bytes, right bytes) is lexicographically smallest), merge
//      it in the words that contain it, and update only those words' pair counts.
// Vocab layout: special tokens (ids 0..S-1), the 256 byte tokens in GPT-2 byte-char order, then
// one token per merge in merge order.
import { BYTE_CHARS, BYTE_ORDER, GPT2_PATTERN, specialSplitter, tokenizerFromJSON } from "./tokenizer.js";
import { onigToJs } from "./onig-regex.js";
import type { Tokenizer } from "./types.js";

export interface TrainBpeOptions {
  /** Final vocab size including special tokens and the 256 byte tokens. */
  vocabSize: number;
  /** Stop when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** Special tokens, ids 0.. in this order (default ["<|endoftext|>"]); the first is eos. */
  specialTokens?: string[];
  /** Called as merges are learned: (merges done, merges wanted). */
  onProgress?: (done: number, total: number) => void;
}

interface HeapEntry {
  count: number;
  a: number;
  b: number;
}

/** Lexicographic comparison of byte arrays. */
function cmpBytes(x: Uint8Array, y: Uint8Array): number {
  const n = Math.min(x.length, y.length);
  for (let i = 0; i < n; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return x.length - y.length;
}

/** Trains a byte-level BPE tokenizer. Same texts and options give an identical tokenizer.json. */
export function trainBpe(texts: Iterable<string>, opts: TrainBpeOptions): Tokenizer {
  const specials = opts.specialTokens ?? ["<|endoftext|>"];
  const minFrequency = opts.minFrequency ?? 2;
  const S = specials.length;
  if (!Number.isInteger(opts.vocabSize) || opts.vocabSize < S + 256) {
    throw new Error(`trainBpe: vocabSize must be an integer ≥ ${S + 256} (256 bytes + ${S} special tokens), got ${opts.vocabSize}`);
  }
  if (!Number.isFinite(minFrequency) || minFrequency < 1) throw new Error(`trainBpe: minFrequency must be ≥ 1, got ${minFrequency}`);
  const seen = new Set<string>();
  for (const s of specials) {
    if (typeof s !== "string" || s === "") throw new Error("trainBpe: special tokens must be non-empty strings");
    if (seen.has(s)) throw new Error(`trainBpe: duplicate special token ${JSON.stringify(s)}`);
    if (BYTE_CHARS.includes(s)) throw new Error(`trainBpe: special token ${JSON.stringify(s)} collides with a byte token`);
    seen.add(s);
  }

  // 1. Word counts.
  const re = onigToJs(GPT2_PATTERN);
  const wordCount = new Map<string, number>();
  const split = specialSplitter(specials);
  for (const text of texts) {
    for (const part of split(text)) {
      re.lastIndex = 0;
      for (let m = re.exec(part); m !== null; m = re.exec(part)) wordCount.set(m[0], (wordCount.get(m[0]) ?? 0) + 1);
    }
  }

  // 2. Words as token lists. Internal token ids: byte b is b; merge k makes 256 + k (or reuses).
  const enc = new TextEncoder();
  const uniq = [...wordCount.keys()].sort(); // fixed order: results never depend on Map order
  const words: number[][] = uniq.map((w) => Array.from(enc.encode(w)));
  const freq = uniq.map((w) => wordCount.get(w)!);
  const tokBytes: Uint8Array[] = Array.from({ length: 256 }, (_, b) => Uint8Array.of(b));
  const tokStr: string[] = [...BYTE_CHARS];
  const idOfStr = new Map<string, number>(tokStr.map((s, i) => [s, i]));

  // 3. Pair counts and where they occur.
  const K = 1 << 21; // pair key = a * K + b (tokens < 2^21)
  if (opts.vocabSize >= K) throw new Error(`trainBpe: vocabSize must be < ${K}`);
  const counts = new Map<number, number>();
  const where = new Map<number, number[]>();
  const addPair = (key: number, c: number, w: number) => {
    counts.set(key, (counts.get(key) ?? 0) + c);
    let l = where.get(key);
    if (!l) where.set(key, (l = []));
    if (l[l.length - 1] !== w) l.push(w);
  };
  words.forEach((wd, w) => {
    for (let i = 0; i + 1 < wd.length; i++) addPair(wd[i]! * K + wd[i + 1]!, freq[w]!, w);
  });

  // Max-heap on (count desc, pair bytes asc), lazily refreshed.
  const before = (x: HeapEntry, y: HeapEntry) => {
    if (x.count !== y.count) return x.count > y.count;
    const c = cmpBytes(tokBytes[x.a]!, tokBytes[y.a]!);
    return c !== 0 ? c < 0 : cmpBytes(tokBytes[x.b]!, tokBytes[y.b]!) < 0;
  };
  const heap: HeapEntry[] = [];
  const push = (e: HeapEntry) => {
    let i = heap.length;
    heap.push(e);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(e, heap[p]!)) break;
      heap[i] = heap[p]!;
      i = p;
    }
    heap[i] = e;
  };
  const pop = (): HeapEntry | undefined => {
    const top = heap[0];
    const last = heap.pop();
    if (heap.length && last) {
      let i = 0;
      for (;;) {
        let c = 2 * i + 1;
        if (c >= heap.length) break;
        if (c + 1 < heap.length && before(heap[c + 1]!, heap[c]!)) c++;
        if (!before(heap[c]!, last)) break;
        heap[i] = heap[c]!;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  };
  for (const [key, count] of counts) push({ count, a: Math.floor(key / K), b: key % K });

  // 4. Merge loop.
  const merges: Array<[number, number]> = [];
  const wanted = opts.vocabSize - S - 256;
  const visited = new Int32Array(words.length).fill(-1);
  let vocabLen = 256;
  let lastReport = -1;
  const report = (force: boolean) => {
    const done = vocabLen - 256;
    if (opts.onProgress && (force || done - lastReport >= Math.max(1, Math.floor(wanted / 100)))) {
      lastReport = done;
      opts.onProgress(done, wanted);
    }
  };
  while (vocabLen - 256 < wanted) {
    const top = pop();
    if (!top) break;
    const key = top.a * K + top.b;
    const cur = counts.get(key) ?? 0;
    if (cur !== top.count) {
      if (cur > 0) push({ count: cur, a: top.a, b: top.b });
      continue;
    }
    if (cur < minFrequency) break;
    const { a, b } = top;
    const str = tokStr[a]! + tokStr[b]!;
    let t = idOfStr.get(str);
    if (t === undefined) {
      t = tokStr.length;
      tokStr.push(str);
      const bytes = new Uint8Array(tokBytes[a]!.length + tokBytes[b]!.length);
      bytes.set(tokBytes[a]!);
      bytes.set(tokBytes[b]!, tokBytes[a]!.length);
      tokBytes.push(bytes);
      idOfStr.set(str, t);
      vocabLen++;
    }
    merges.push([a, b]);
    const step = merges.length;
    const fresh = new Set<number>();
    for (const w of where.get(key) ?? []) {
      if (visited[w] === step) continue;
      visited[w] = step;
      const old = words[w]!;
      const nw: number[] = [];
      for (let i = 0; i < old.length; ) {
        if (i + 1 < old.length && old[i] === a && old[i + 1] === b) {
          nw.push(t);
          i += 2;
        } else nw.push(old[i++]!);
      }
      if (nw.length === old.length) continue; // stale index entry
      const f = freq[w]!;
      for (let i = 0; i + 1 < old.length; i++) {
        const k = old[i]! * K + old[i + 1]!;
        const c = counts.get(k)! - f;
        if (c > 0) counts.set(k, c);
        else counts.delete(k);
      }
      for (let i = 0; i + 1 < nw.length; i++) {
        const k = nw[i]! * K + nw[i + 1]!;
        if (nw[i] === t || nw[i + 1] === t) {
          addPair(k, f, w);
          fresh.add(k);
        } else counts.set(k, (counts.get(k) ?? 0) + f);
      }
      words[w] = nw;
    }
    where.delete(key);
    for (const k of fresh) {
      const c = counts.get(k);
      if (c) push({ count: c, a: Math.floor(k / K), b: k % K });
    }
    report(false);
  }
  report(true);

  // Tokenizer.json: specials, 256 bytes in byte-char order, merged tokens.
  const vocab: Record<string, number> = {};
  specials.forEach((s, i) => (vocab[s] = i));
  BYTE_ORDER.forEach((byte, i) => (vocab[BYTE_CHARS[byte]!] = S + i));
  for (let t = 256; t < tokStr.length; t++) vocab[tokStr[t]!] = S + t;
  const json = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: specials.map((content, id) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: merges.map(([a, b]) => `${tokStr[a]} ${tokStr[b]}`),
    },
  };
  return tokenizerFromJSON(json, { source: "trainBpe", eosToken: specials[0] });
}
