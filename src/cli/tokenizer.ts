// `moe tokenizer train`: trains a byte-level BPE tokenizer on text files and writes tokenizer.json.
// Not an encoder/inspector CLI; data paths are plain UTF-8 text (files, folders of .txt, or the
// bundled Moby Dick corpus by the name `moby-dick`).
import { existsSync, statSync } from "node:fs";
import path from "node:path";
import { checkOutputFile } from "../core/fs.js";
import { iterateDocuments, parseCorpusSpec } from "../data/corpus.js";
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

export async function runTokenizer(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === undefined || sub === "--help" || sub === "-h" || sub === "help") {
    if (sub === undefined) console.error("moe tokenizer: a subcommand is required (train)\n");
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
  checkOutputFile(out, "--out");

  const texts = [...iterateDocuments(parseCorpusSpec(flags.data))].map((d) => d.text);
  const bytes = texts.reduce((s, t) => s + Buffer.byteLength(t), 0);
  console.error(`tokenizer: ${texts.length} document(s), ${(bytes / 1e6).toFixed(2)} MB; training byte-level BPE to ${vocabSize} tokens`);
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
