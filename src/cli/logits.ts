// `moe logits MODEL_DIR|FILE.gguf --ids 1,2,3 [--out FILE] [--backend native|ref] [--threads N]`:
// one forward pass of an HF checkpoint directory on a token sequence (B = 1, T = number of ids).
// With --out, writes a safetensors file holding one tensor `logits` [T, V] F32 (atomically);
// without, prints the shape, the argmax and logsumexp per position and the top-5 of the last
// position. The native backend computes in f32; the ref backend in f64 (the oracle).
// Not: generation or sampling (see `moe generate`), tokenisation (ids are given).
import { existsSync, statSync } from "node:fs";
import { backendFromFlags } from "../backend/index.js";
import { writeSafetensors } from "../io/safetensors.js";
import { loadHfModel, readHfConfig } from "../model/checkpoint.js";
import { parseFlags } from "./args.js";
import { checkOutputFile } from "../core/fs.js";
import { latestCheckpoint } from "../train/checkpoints.js";
import { isGgufPath, loadGgufModel } from "./gguf-source.js";
import { importModelGguf } from "../model/gguf-families.js";
import { checkInferenceFits } from "../infer/load-memory.js";

const USAGE = "usage: moe logits MODEL_DIR --ids 1,2,3 [--out FILE] [--backend native|ref] [--threads N]";

/** Parses "1,2,3" into token ids in [0, V); errors name the offending entry. */
export function parseIds(text: string, vocabSize: number, source: string): Int32Array {
  const parts = text.split(",").map((s) => s.trim());
  if (text.trim() === "" || parts.length === 0) throw new Error("moe logits: --ids is empty");
  const ids = new Int32Array(parts.length);
  parts.forEach((p, i) => {
    if (!/^[+-]?\d+$/.test(p)) throw new Error(`moe logits: --ids entry ${i} '${p}' is not an integer`);
    const v = Number(p);
    if (v < 0 || v >= vocabSize) throw new Error(`moe logits: token id ${v} (--ids entry ${i}) is out of range [0, ${vocabSize}) (vocab_size of ${source})`);
    ids[i] = v;
  });
  return ids;
}

export async function runLogits(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe logits", argv, {
    ids: "string",
    out: "string",
    backend: "string",
    threads: "number",
    help: "boolean",
  });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (positional.length !== 1) throw new Error(`moe logits: expected one MODEL_DIR, got ${positional.length ? positional.map((p) => `'${p}'`).join(" ") : "none"}\n${USAGE}`);
  const gguf = isGgufPath(positional[0]!);
  // a run directory stands for its latest checkpoint
  const dir = !gguf && existsSync(positional[0]!) && statSync(positional[0]!).isDirectory() && !existsSync(`${positional[0]!}/config.json`) ? (latestCheckpoint(positional[0]!) ?? positional[0]!) : positional[0]!;
  if (flags.out !== undefined) checkOutputFile(flags.out, "--out");
  if (!gguf && (!existsSync(dir) || !statSync(dir).isDirectory())) throw new Error(`moe logits: MODEL_DIR '${dir}' is not a directory`);
  if (gguf && (!existsSync(dir) || !statSync(dir).isFile())) throw new Error(`moe logits: '${dir}' is not a GGUF file`);
  if (flags.ids === undefined) throw new Error(`moe logits: --ids is required\n${USAGE}`);
  const vocab = gguf ? importModelGguf(dir).cfg.vocabSize : readHfConfig(dir).vocab_size;
  const ids = parseIds(flags.ids, vocab, gguf ? dir : `${dir}/config.json`);
  const be = backendFromFlags(flags, "moe logits");
  const name = be.name;
  const T = ids.length;
  const shape = { B: 1, T, dtype: name === "ref" ? ("f64" as const) : ("f32" as const) };
  checkInferenceFits("moe logits", dir, () => ({ dtype: shape.dtype, kvTokens: 0, kvBytes: 4, rows: T, context: T, allLayers: true }));
  const { model, cfg } = gguf ? loadGgufModel(dir, be, shape) : loadHfModel(dir, be, shape);
  model.forward(ids, null, { train: false });
  const V = cfg.vocabSize;
  const logits = model.lastLogits();
  for (let i = 0; i < logits.length; i++) {
    if (!Number.isFinite(logits[i])) throw new Error(`moe logits: non-finite logit ${logits[i]} at position ${Math.floor(i / V)}, token ${i % V}; the weights of ${dir} are broken (NaN/Inf)`);
  }
  if (flags.out !== undefined) {
    const data = logits instanceof Float32Array ? logits : Float32Array.from(logits);
    writeSafetensors(flags.out, { logits: { dtype: "F32", shape: [T, V], data } }, { model: dir, input_ids: Array.from(ids).join(","), backend: name });
    console.log(`wrote ${flags.out}: logits [${T}, ${V}] F32`);
    return 0;
  }
  console.log(`logits [${T}, ${V}] (${cfg.family}, ${name} backend)`);
  console.log("pos  id      argmax  logit       logsumexp");
  for (let t = 0; t < T; t++) {
    const row = logits.subarray(t * V, (t + 1) * V);
    let best = 0;
    for (let v = 1; v < V; v++) if (row[v]! > row[best]!) best = v;
    const m = row[best]!;
    let s = 0;
    for (let v = 0; v < V; v++) s += Math.exp(row[v]! - m);
    const lse = m + Math.log(s);
    console.log(`${String(t).padEnd(4)} ${String(ids[t]).padEnd(7)} ${String(best).padEnd(7)} ${m.toFixed(5).padEnd(11)} ${lse.toFixed(5)}`);
  }
  const last = Array.from(logits.subarray((T - 1) * V, T * V));
  const top = last.map((x, v) => [v, x] as const).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, 5);
  console.log(`top-5 at position ${T - 1}: ${top.map(([v, x]) => `${v} (${x.toFixed(5)})`).join(", ")}`);
  return 0;
}
