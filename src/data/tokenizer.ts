// Byte-level BPE tokenizer read from / written to Hugging Face tokenizer.json (GPT-2, RoBERTa,
// Llama-3, Qwen, GPT-4o style). Encoding reproduces the Rust `tokenizers` crate id for id:
//   1. split out added tokens whose `normalized` is false (leftmost-longest, lstrip/rstrip/single_word)
//   2. normalize the rest (NFC/NFD/NFKC/NFKD), then split out the `normalized` added tokens
//   3. pre-tokenize: Split(regex) steps, then ByteLevel (prefix space, GPT-2 regex, bytes → chars)
//   4. BPE-merge each pre-token word (lowest merge rank first, leftmost on ties), cached per word
// Not supported (a clear error at load, never a silent difference): WordPiece/Unigram/WordLevel
// models, Metaspace/Whitespace/BERT pre-tokenizers, normalizers other than Unicode forms, BPE
// dropout, byte_fallback, subword prefixes/suffixes. Post-processors are ignored on purpose:
// encode() returns the ids of the text alone (HF `add_special_tokens=False`); no offsets.
import { readFileSync } from "node:fs";
import { writeFileAtomic } from "../core/fs.js";
import { onigToJs } from "./onig-regex.js";
import type { Tokenizer } from "./types.js";

/** The GPT-2 pre-tokenization regex (Oniguruma syntax, as the ByteLevel pre-tokenizer uses it). */
export const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/**
 * GPT-2 `bytes_to_unicode`: BYTE_CHARS[b] is the printable character standing for byte b.
 * Sorted by character, the 256 characters come in the order `BYTE_ORDER` (the base-vocab order).
 */
export const BYTE_CHARS: readonly string[] = (() => {
  const chars = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    chars[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return Object.freeze(chars);
})();

/** Bytes in ascending order of their byte-level character (the order of GPT-2's base vocab). */
export const BYTE_ORDER: readonly number[] = Object.freeze(
  Array.from({ length: 256 }, (_, b) => b).sort((x, y) => BYTE_CHARS[x]!.charCodeAt(0) - BYTE_CHARS[y]!.charCodeAt(0)),
);

/** Maps UTF-8 bytes to their byte-level string (e.g. " hi" → "Ġhi"). */
export function bytesToByteLevel(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += BYTE_CHARS[bytes[i]!];
  return s;
}

const CHAR_TO_BYTE: ReadonlyMap<string, number> = new Map(BYTE_CHARS.map((c, b) => [c, b]));

// ---------------------------------------------------------------------------
// Added-token matching (Rust AddedVocabulary::find_matches semantics)

interface AddedToken {
  content: string;
  id: number;
  special: boolean;
  singleWord: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
}

/** Leftmost-longest literal matcher over a set of added tokens. */
interface AddedMatcher {
  re: RegExp;
  byContent: Map<string, AddedToken>;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

function makeMatcher(tokens: AddedToken[]): AddedMatcher | undefined {
  if (tokens.length === 0) return undefined;
  // Alternatives sorted longest first: the regex engine's leftmost-first then equals leftmost-longest.
  const sorted = [...tokens].sort((a, b) => b.content.length - a.content.length);
  return {
    re: new RegExp(sorted.map((t) => escapeRegExp(t.content)).join("|"), "gu"),
    byContent: new Map(tokens.map((t) => [t.content, t])),
  };
}

// Rust's `regex` crate classes used by find_matches: \w (Unicode word) and \s (White_Space).
const WORD_AT_END = /[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]$/u;
const WORD_AT_START = /^[\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\p{Join_Control}]/u;
const SPACES_AT_END = /\p{White_Space}*$/u;
const SPACES_AT_START = /^\p{White_Space}*/u;

/** Splits `text` into plain strings and added-token ids, in order. Empty strings are dropped. */
function splitAdded(text: string, m: AddedMatcher, out: Array<string | number>): void {
  const re = m.re;
  re.lastIndex = 0;
  let startOffset = 0;
  for (let mt = re.exec(text); mt !== null; mt = re.exec(text)) {
    const tok = m.byContent.get(mt[0])!;
    let start = mt.index;
    let stop = start + mt[0].length;
    if (tok.singleWord) {
      const startOk = start === 0 || !WORD_AT_END.test(text.slice(0, start));
      const stopOk = stop === text.length || !WORD_AT_START.test(text.slice(stop));
      if (!startOk || !stopOk) continue;
    }
    if (tok.lstrip) start = Math.max(start - SPACES_AT_END.exec(text.slice(0, start))![0].length, startOffset);
    if (tok.rstrip) stop += SPACES_AT_START.exec(text.slice(stop))![0].length;
    if (startOffset < start) out.push(text.slice(startOffset, start));
    out.push(tok.id);
    startOffset = stop;
    re.lastIndex = Math.max(re.lastIndex, stop);
  }
  if (startOffset < text.length) out.push(text.slice(startOffset));
}

// ---------------------------------------------------------------------------
// Pre-tokenizer steps

type Behavior = "Removed" | "Isolated" | "MergedWithPrevious" | "MergedWithNext" | "Contiguous";
const BEHAVIORS: readonly Behavior[] = ["Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"];

type PreStep =
  | { kind: "split"; re: RegExp; behavior: Behavior; invert: boolean }
  | { kind: "bytelevel"; addPrefixSpace: boolean; re: RegExp | undefined };

/** Rust Split: cut `s` at the matches of `re`, then group pieces by the delimiter behavior. */
function applySplit(step: { re: RegExp; behavior: Behavior; invert: boolean }, s: string): string[] {
  const pieces: Array<[string, boolean]> = [];
  const re = step.re;
  re.lastIndex = 0;
  let prev = 0;
  let lastEnd = -1;
  for (let m = re.exec(s); m !== null; m = re.exec(s)) {
    const end = m.index + m[0].length;
    if (m[0].length === 0) {
      // Like the onig crate's find_iter: skip an empty match right after the previous match, and
      // step one character past every empty match. Other empty matches still cut the text.
      re.lastIndex = end + (end < s.length && s.codePointAt(end)! > 0xffff ? 2 : 1);
      if (end === lastEnd) continue;
    }
    if (prev < m.index) pieces.push([s.slice(prev, m.index), step.invert]);
    pieces.push([m[0], !step.invert]);
    prev = lastEnd = end;
  }
  if (prev < s.length) pieces.push([s.slice(prev), step.invert]);
  const out: string[] = [];
  let prevMatch = false;
  switch (step.behavior) {
    case "Removed":
      for (const [p, isMatch] of pieces) if (!isMatch && p) out.push(p);
      return out;
    case "Isolated":
      return pieces.map((p) => p[0]).filter((p) => p);
    case "MergedWithPrevious":
      for (const [p, isMatch] of pieces) {
        if (isMatch && !prevMatch && out.length) out[out.length - 1] += p;
        else out.push(p);
        prevMatch = isMatch;
      }
      return out.filter((p) => p);
    case "MergedWithNext":
      for (let i = pieces.length - 1; i >= 0; i--) {
        const [p, isMatch] = pieces[i]!;
        if (isMatch && !prevMatch && out.length) out[out.length - 1] = p + out[out.length - 1];
        else out.push(p);
        prevMatch = isMatch;
      }
      return out.reverse().filter((p) => p);
    case "Contiguous":
      for (const [p, isMatch] of pieces) {
        if (isMatch === prevMatch && out.length) out[out.length - 1] += p;
        else out.push(p);
        prevMatch = isMatch;
      }
      return out.filter((p) => p);
  }
}

// ---------------------------------------------------------------------------
// Parsing tokenizer.json

type Json = Record<string, unknown>;

class TokenizerJsonError extends Error {}

function isObj(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export interface TokenizerLoadOptions {
  /** Names the source in error messages (a file path). */
  source?: string;
  /** Text of the end-of-text token; default: the first special token among common EOS names. */
  eosToken?: string;
}

const EOS_NAMES = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>", "[EOS]", "<|im_end|>", "<|eot_id|>"];

/** Compiled form of a tokenizer.json; see the file header for the pipeline. */
class ByteLevelBpe implements Tokenizer {
  readonly vocabSize: number;
  readonly specialTokens: Readonly<Record<string, number>>;
  readonly eosId: number | undefined;
  private readonly json: Json;
  private readonly vocab: Map<string, number>;
  private readonly rawAdded: AddedMatcher | undefined;
  private readonly normAdded: AddedMatcher | undefined;
  private readonly normalize: ((s: string) => string) | undefined;
  private readonly steps: PreStep[];
  private readonly byteIds: Int32Array; // byte → vocab id, -1 when the byte's char is missing
  private readonly unkId: number | undefined;
  private readonly fuseUnk: boolean;
  private readonly ignoreMerges: boolean;
  private readonly idSpace: number; // merge key = left * idSpace + right
  private readonly mergeRank: Map<number, number>;
  private readonly mergeNew: Int32Array; // rank → merged id
  private readonly idBytes: Array<Uint8Array | undefined>;
  private readonly cache = new Map<string, number[]>();
  private readonly utf8 = new TextEncoder();
  private readonly dec = new TextDecoder("utf-8", { ignoreBOM: true });

  constructor(json: unknown, opts: TokenizerLoadOptions) {
    const src = opts.source ?? "tokenizer.json";
    const bad = (msg: string): never => {
      throw new TokenizerJsonError(`${src}: ${msg}`);
    };
    if (!isObj(json)) bad("not a JSON object");
    const j = json as Json;
    this.json = j;

    // Model.
    const model = j.model;
    if (!isObj(model)) bad("missing 'model' object");
    const m = model as Json;
    if (m.type !== "BPE") bad(`unsupported model type ${JSON.stringify(m.type)} (only byte-level "BPE" is supported)`);
    if (m.dropout !== undefined && m.dropout !== null && m.dropout !== 0) bad(`BPE dropout ${String(m.dropout)} is not supported`);
    if (m.byte_fallback === true) bad("BPE byte_fallback is not supported (not a byte-level BPE)");
    for (const k of ["continuing_subword_prefix", "end_of_word_suffix"]) {
      if (m[k] !== undefined && m[k] !== null && m[k] !== "") bad(`BPE ${k} ${JSON.stringify(m[k])} is not supported`);
    }
    if (!isObj(m.vocab)) bad("model.vocab must be an object of token → id");
    this.vocab = new Map();
    let maxId = -1;
    for (const [tok, id] of Object.entries(m.vocab as Json)) {
      if (typeof id !== "number" || !Number.isInteger(id) || id < 0) bad(`model.vocab[${JSON.stringify(tok)}] is not a non-negative integer id`);
      this.vocab.set(tok, id as number);
      maxId = Math.max(maxId, id as number);
    }

    const idOwner = new Map<number, string>();
    for (const [tok, id] of this.vocab) idOwner.set(id, tok);

    // Added tokens.
    const addedRaw = j.added_tokens ?? [];
    if (!Array.isArray(addedRaw)) bad("added_tokens must be an array");
    const added: AddedToken[] = [];
    for (const [i, a] of (addedRaw as unknown[]).entries()) {
      if (!isObj(a) || typeof a.content !== "string" || typeof a.id !== "number" || !Number.isInteger(a.id) || a.id < 0) {
        bad(`added_tokens[${i}] needs a string 'content' and a non-negative integer 'id'`);
      }
      const t = a as Json;
      if (t.content === "") continue;
      const inVocab = this.vocab.get(t.content as string);
      if (inVocab !== undefined && inVocab !== t.id) bad(`added_tokens[${i}] ${JSON.stringify(t.content)} has id ${t.id} but model.vocab gives it ${inVocab}`);
      const holder = idOwner.get(t.id as number);
      if (holder !== undefined && holder !== t.content) bad(`added_tokens[${i}] ${JSON.stringify(t.content)} reuses id ${t.id} of model.vocab token ${JSON.stringify(holder)}`);
      const special = t.special === true;
      added.push({
        content: t.content as string,
        id: t.id as number,
        special,
        singleWord: t.single_word === true,
        lstrip: t.lstrip === true,
        rstrip: t.rstrip === true,
        normalized: typeof t.normalized === "boolean" ? t.normalized : !special,
      });
      maxId = Math.max(maxId, t.id as number);
    }
    this.vocabSize = maxId + 1;
    const specials: Record<string, number> = {};
    for (const t of added) if (t.special) specials[t.content] = t.id;
    this.specialTokens = Object.freeze(specials);
    if (opts.eosToken !== undefined) {
      const id = specials[opts.eosToken] ?? this.vocab.get(opts.eosToken);
      if (id === undefined) bad(`eos token ${JSON.stringify(opts.eosToken)} is not in the vocabulary`);
      this.eosId = id;
    } else {
      this.eosId = EOS_NAMES.map((n) => specials[n]).find((id) => id !== undefined);
    }

    // Normalizer.
    this.normalize = parseNormalizer(j.normalizer, bad);
    this.rawAdded = makeMatcher(added.filter((t) => !t.normalized));
    const norm = this.normalize;
    this.normAdded = makeMatcher(added.filter((t) => t.normalized).map((t) => (norm ? { ...t, content: norm(t.content) } : t)));

    // Pre-tokenizer and decoder.
    this.steps = parsePreTokenizer(j.pre_tokenizer, bad);
    const decoder = j.decoder;
    const decOk = isObj(decoder) && (decoder.type === "ByteLevel" || (decoder.type === "Sequence" && Array.isArray(decoder.decoders) && decoder.decoders.length === 1 && isObj(decoder.decoders[0]) && decoder.decoders[0].type === "ByteLevel"));
    if (!decOk) bad(`unsupported decoder ${JSON.stringify(isObj(decoder) ? decoder.type : decoder)} (a byte-level BPE needs the ByteLevel decoder)`);

    // Merges.
    if (!Array.isArray(m.merges)) bad("model.merges must be an array");
    const merges = m.merges as unknown[];
    this.idSpace = this.vocabSize + 1;
    this.mergeRank = new Map();
    this.mergeNew = new Int32Array(merges.length);
    for (let r = 0; r < merges.length; r++) {
      const e = merges[r];
      let pair: [string, string] | undefined;
      if (typeof e === "string") {
        const parts = e.split(" ");
        if (parts.length === 2) pair = [parts[0]!, parts[1]!];
      } else if (Array.isArray(e) && e.length === 2 && typeof e[0] === "string" && typeof e[1] === "string") pair = [e[0], e[1]];
      if (!pair) bad(`model.merges[${r}] must be "a b" or ["a", "b"], got ${JSON.stringify(e)}`);
      const [a, b] = pair!;
      const ia = this.vocab.get(a);
      const ib = this.vocab.get(b);
      const inew = this.vocab.get(a + b);
      if (ia === undefined || ib === undefined || inew === undefined) {
        bad(`model.merges[${r}] ${JSON.stringify(pair)}: ${JSON.stringify(ia === undefined ? a : ib === undefined ? b : a + b)} is not in model.vocab`);
      }
      this.mergeRank.set(ia! * this.idSpace + ib!, r);
      this.mergeNew[r] = inew!;
    }
    const unk = m.unk_token;
    this.unkId = typeof unk === "string" ? this.vocab.get(unk) : undefined;
    this.fuseUnk = m.fuse_unk === true;
    this.ignoreMerges = m.ignore_merges === true;
    this.byteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) this.byteIds[b] = this.vocab.get(BYTE_CHARS[b]!) ?? -1;

    // Decoding table: each id's bytes (byte-level chars → bytes; otherwise the token's UTF-8).
    this.idBytes = new Array(this.vocabSize);
    const setBytes = (tok: string, id: number) => {
      const bytes: number[] = [];
      for (const ch of tok) {
        const b = CHAR_TO_BYTE.get(ch);
        if (b === undefined) {
          this.idBytes[id] = this.utf8.encode(tok);
          return;
        }
        bytes.push(b);
      }
      this.idBytes[id] = Uint8Array.from(bytes);
    };
    for (const [tok, id] of this.vocab) setBytes(tok, id);
    for (const t of added) setBytes(t.content, t.id);
  }

  encode(text: string): number[] {
    const out: number[] = [];
    const sections: Array<string | number> = [];
    if (this.rawAdded) splitAdded(text, this.rawAdded, sections);
    else sections.push(text);
    for (const sec of sections) {
      if (typeof sec === "number") {
        out.push(sec);
        continue;
      }
      const t = this.normalize ? this.normalize(sec) : sec;
      if (!this.normAdded) {
        this.preTokenize(t, 0, out);
        continue;
      }
      const sub: Array<string | number> = [];
      splitAdded(t, this.normAdded, sub);
      for (const p of sub) {
        if (typeof p === "number") out.push(p);
        else this.preTokenize(p, 0, out);
      }
    }
    return out;
  }

  /** Runs pre-tokenizer steps k.. on `s`, BPE-encoding each final word into `out`. */
  private preTokenize(s: string, k: number, out: number[]): void {
    if (s.length === 0) return;
    if (k === this.steps.length) {
      this.encodeWord(s, out);
      return;
    }
    const step = this.steps[k]!;
    if (step.kind === "split") {
      for (const p of applySplit(step, s)) this.preTokenize(p, k + 1, out);
      return;
    }
    if (step.addPrefixSpace && s[0] !== " ") s = " " + s;
    const re = step.re;
    if (!re) {
      this.preTokenize(s, k + 1, out);
      return;
    }
    re.lastIndex = 0;
    for (let m = re.exec(s); m !== null; m = re.exec(s)) this.preTokenize(m[0], k + 1, out);
  }

  private encodeWord(word: string, out: number[]): void {
    let ids = this.cache.get(word);
    if (ids === undefined) {
      ids = this.bpe(word);
      if (this.cache.size >= 1 << 18) this.cache.clear();
      this.cache.set(word, ids);
    }
    for (let i = 0; i < ids.length; i++) out.push(ids[i]!);
  }

  /** BPE on one pre-token: merge the lowest-rank adjacent pair (leftmost on ties) until none applies. */
  private bpe(word: string): number[] {
    const bytes = this.utf8.encode(word);
    if (this.ignoreMerges) {
      const id = this.vocab.get(bytesToByteLevel(bytes));
      if (id !== undefined) return [id];
    }
    const sym: number[] = [];
    let lastUnk = false;
    for (let i = 0; i < bytes.length; i++) {
      const id = this.byteIds[bytes[i]!]!;
      if (id >= 0) {
        sym.push(id);
        lastUnk = false;
      } else if (this.unkId !== undefined) {
        if (!(lastUnk && this.fuseUnk)) sym.push(this.unkId);
        lastUnk = true;
      }
    }
    const n = sym.length;
    if (n < 2) return sym;
    // Linked list over positions; heap of rank * n + position (min first).
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    const heap: number[] = [];
    const rankOf = (i: number, j: number) => this.mergeRank.get(sym[i]! * this.idSpace + sym[j]!);
    for (let i = 0; i + 1 < n; i++) {
      const r = rankOf(i, i + 1);
      if (r !== undefined) heapPush(heap, r * n + i);
    }
    while (heap.length) {
      const top = heapPop(heap);
      const r = Math.floor(top / n);
      const i = top - r * n;
      const j = next[i]!;
      if (sym[i]! < 0 || j < 0 || rankOf(i, j) !== r) continue; // stale entry
      sym[i] = this.mergeNew[r]!;
      sym[j] = -1;
      next[i] = next[j]!;
      if (next[i]! >= 0) prev[next[i]!] = i;
      const p = prev[i]!;
      if (p >= 0) {
        const rp = rankOf(p, i);
        if (rp !== undefined) heapPush(heap, rp * n + p);
      }
      if (next[i]! >= 0) {
        const rn = rankOf(i, next[i]!);
        if (rn !== undefined) heapPush(heap, rn * n + i);
      }
    }
    const res: number[] = [];
    for (let i = 0; i >= 0; i = next[i]!) res.push(sym[i]!);
    return res;
  }

  decode(ids: ArrayLike<number>): string {
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.idBytes[ids[i]!];
      if (b === undefined) throw new RangeError(`decode: id ${ids[i]} is not in the vocabulary (size ${this.vocabSize})`);
      total += b.length;
    }
    const buf = new Uint8Array(total);
    let o = 0;
    for (let i = 0; i < ids.length; i++) {
      const b = this.idBytes[ids[i]!]!;
      buf.set(b, o);
      o += b.length;
    }
    return this.dec.decode(buf);
  }

  toJSON(): unknown {
    return this.json;
  }
}

function heapPush(h: number[], v: number): void {
  let i = h.length;
  h.push(v);
  while (i > 0) {
    const p = (i - 1) >> 1;
    if (h[p]! <= v) break;
    h[i] = h[p]!;
    i = p;
  }
  h[i] = v;
}

function heapPop(h: number[]): number {
  const top = h[0]!;
  const last = h.pop()!;
  if (h.length) {
    let i = 0;
    const n = h.length;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && h[c + 1]! < h[c]!) c++;
      if (h[c]! >= last) break;
      h[i] = h[c]!;
      i = c;
    }
    h[i] = last;
  }
  return top;
}

function parseNormalizer(n: unknown, bad: (msg: string) => never): ((s: string) => string) | undefined {
  if (n === null || n === undefined) return undefined;
  const forms: string[] = [];
  const walk = (x: unknown): void => {
    if (!isObj(x)) bad(`normalizer must be an object or null, got ${JSON.stringify(x)}`);
    const t = (x as Json).type;
    if (t === "NFC" || t === "NFD" || t === "NFKC" || t === "NFKD") forms.push(t);
    else if (t === "Sequence" && Array.isArray((x as Json).normalizers)) ((x as Json).normalizers as unknown[]).forEach(walk);
    else bad(`unsupported normalizer ${JSON.stringify(t)} (supported: NFC, NFD, NFKC, NFKD, Sequence of these, null)`);
  };
  walk(n);
  if (!forms.length) return undefined;
  return (s) => forms.reduce((acc, f) => acc.normalize(f), s);
}

function parsePreTokenizer(p: unknown, bad: (msg: string) => never): PreStep[] {
  if (!isObj(p)) bad("a byte-level BPE needs a ByteLevel pre_tokenizer (got null)");
  const list: unknown[] = (p as Json).type === "Sequence" ? (((p as Json).pretokenizers as unknown[]) ?? []) : [p];
  if (!Array.isArray(list)) bad("pre_tokenizer Sequence needs a 'pretokenizers' array");
  const steps: PreStep[] = [];
  for (const [i, x] of list.entries()) {
    if (!isObj(x)) bad(`pre_tokenizer step ${i} is not an object`);
    const s = x as Json;
    if (s.type === "ByteLevel") {
      if (i !== list.length - 1) bad("ByteLevel must be the last pre_tokenizer step");
      const useRegex = s.use_regex !== false;
      steps.push({ kind: "bytelevel", addPrefixSpace: s.add_prefix_space === true, re: useRegex ? onigToJs(GPT2_PATTERN) : undefined });
    } else if (s.type === "Split") {
      const pat = s.pattern;
      let re: RegExp;
      if (isObj(pat) && typeof pat.Regex === "string") {
        try {
          re = onigToJs(pat.Regex);
        } catch (e) {
          return bad(`pre_tokenizer Split: ${(e as Error).message}`);
        }
      } else if (isObj(pat) && typeof pat.String === "string" && pat.String !== "") re = new RegExp(escapeRegExp(pat.String), "gu");
      else return bad(`pre_tokenizer Split needs pattern {"Regex": ...} or {"String": ...}, got ${JSON.stringify(pat)}`);
      const behavior = s.behavior as Behavior;
      if (!BEHAVIORS.includes(behavior)) bad(`pre_tokenizer Split: unknown behavior ${JSON.stringify(s.behavior)}`);
      steps.push({ kind: "split", re, behavior, invert: s.invert === true });
    } else {
      bad(`unsupported pre_tokenizer ${JSON.stringify(s.type)} (supported: ByteLevel, Split, Sequence of Split steps ending in ByteLevel)`);
    }
  }
  if (!steps.length || steps[steps.length - 1]!.kind !== "bytelevel") bad("a byte-level BPE needs ByteLevel as the last pre_tokenizer step");
  return steps;
}

// ---------------------------------------------------------------------------
// Public API

/** Builds a tokenizer from a parsed HF tokenizer.json object. Throws naming the problem. */
export function tokenizerFromJSON(obj: unknown, opts: TokenizerLoadOptions = {}): Tokenizer {
  return new ByteLevelBpe(obj, opts);
}

/** Reads a HF tokenizer.json file. Errors name the file and the problem. */
export function loadTokenizer(file: string, opts: Omit<TokenizerLoadOptions, "source"> = {}): Tokenizer {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`${file}: cannot read tokenizer: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: not valid JSON: ${(e as Error).message}`);
  }
  return tokenizerFromJSON(obj, { ...opts, source: file });
}

/**
 * Serializes tokenizer.json with model.vocab ordered by id (JS objects would put integer-like
 * keys such as "0" first), two-space indented like the HF writer.
 */
export function stringifyTokenizer(tok: Tokenizer): string {
  const j = tok.toJSON() as Json;
  const model = isObj(j) && isObj(j.model) ? j.model : undefined;
  if (!model || !isObj(model.vocab)) return JSON.stringify(j, null, 2);
  const MARK = "\u0000vocab\u0000";
  const text = JSON.stringify({ ...j, model: { ...model, vocab: MARK } }, null, 2);
  const entries = Object.entries(model.vocab as Record<string, number>).sort((a, b) => a[1] - b[1]);
  const indent = "      ";
  const vocabText = entries.length ? `{\n${entries.map(([k, v]) => `${indent}${JSON.stringify(k)}: ${v}`).join(",\n")}\n    }` : "{}";
  return text.replace(JSON.stringify(MARK), () => vocabText);
}

/** Writes tok.toJSON() to `file` atomically (temp file + fsync + rename). */
export function saveTokenizer(tok: Tokenizer, file: string): void {
  writeFileAtomic(file, stringifyTokenizer(tok) + "\n");
}

/** Returns a function splitting text around the given literal tokens (leftmost-longest), as encode() does. */
export function specialSplitter(specials: readonly string[]): (text: string) => string[] {
  const m = makeMatcher(specials.map((content, id) => ({ content, id, special: true, singleWord: false, lstrip: false, rstrip: false, normalized: false })));
  if (!m) return (text) => [text];
  return (text) => {
    const parts: Array<string | number> = [];
    splitAdded(text, m, parts);
    return parts.filter((p): p is string => typeof p === "string");
  };
}
