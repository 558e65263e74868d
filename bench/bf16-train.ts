// train.gemm_dtype=bf16 against f32 on one model: two trainers (same seed, data and config but
// the GEMM precision) stepped alternately in one process, so machine load hits both alike.
// Prints the median ms per step and tokens/s of each, their ratio, and how far the bf16 loss curve
// is from the f32 one (max |Δce| per step, and the mean ce of the last 10 steps).
//   node dist/bench/bf16-train.js [--preset small-moe] [--steps 100] [--threads 2] [--batch 16] [--seq 128]
// Not: a test (test/gemm-bf16.test.ts holds the asserted 50-step tiny-mixtral comparison).
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { loadTrainConfig } from "../src/train/config.js";
import { Trainer } from "../src/train/trainer.js";
import { median } from "./common.js";

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : dflt;
}

const presetName = arg("preset", "small-moe"), steps = Number(arg("steps", "100")), threads = Number(arg("threads", "2"));
const batch = Number(arg("batch", "16")), seq = Number(arg("seq", "128"));
const base = mkdtempSync(path.join(tmpdir(), "moe-bf16-train-"));
const trainers = ["f32", "bf16"].map((dtype) =>
  Trainer.create(
    loadTrainConfig(null, [
      `train.out_dir=${path.join(base, dtype)}`, `model.preset=${presetName}`, `train.threads=${threads}`, `train.gemm_dtype=${dtype}`,
      `train.batch_size=${batch}`, `train.seq_len=${seq}`, `train.steps=${steps}`, "log.progress=false", "data.cache_dir=runs/cache",
    ]),
    { resume: false, log: () => {} },
  ),
);
const ms: number[][] = [[], []], ce: number[][] = [[], []];
for (let s = 0; s < steps; s++) {
  trainers.forEach((t, i) => {
    const r = t.trainStep();
    if (s >= 2) ms[i]!.push(r.ms);
    ce[i]!.push(r.ce);
  });
}
const tok = batch * seq;
const [m32, m16] = [median(ms[0]!), median(ms[1]!)];
const last = (xs: number[]) => xs.slice(-10).reduce((a, b) => a + b, 0) / Math.min(10, xs.length);
const maxDiff = Math.max(...ce[0]!.map((x, i) => Math.abs(x - ce[1]![i]!)));
console.log(`${presetName}, ${threads} thread(s), B=${batch} T=${seq}, ${steps} steps (median of steps 3..${steps}):`);
console.log(`  f32  ${m32.toFixed(1)} ms/step  ${(tok / m32 * 1e3).toFixed(0)} tok/s`);
console.log(`  bf16 ${m16.toFixed(1)} ms/step  ${(tok / m16 * 1e3).toFixed(0)} tok/s   speed-up ${(m32 / m16).toFixed(2)}x`);
console.log(`  ce: first ${ce[0]![0]!.toFixed(3)}, last-10 mean f32 ${last(ce[0]!).toFixed(4)} bf16 ${last(ce[1]!).toFixed(4)}, max |Δce| per step ${maxDiff.toFixed(4)}`);
