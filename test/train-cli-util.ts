// Shared by the multi-rank training tests: a tiny corpus in a temp folder, the options of a tiny
// run on it, the CLI runner, metrics.jsonl losses and the 1e-5 relative loss comparison.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const CLI = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", ".."), "dist", "src", "cli", "main.js");

/** A temp folder with 40 small documents in `corpus/`; `common` are the options of a tiny run on it. */
export function tinyCorpus(prefix: string): { base: string; corpus: string; common: (train: { grad_accum: number; steps: number }, extra?: string[]) => string[] } {
  const base = mkdtempSync(path.join(tmpdir(), prefix));
  const corpus = path.join(base, "corpus");
  mkdirSync(corpus);
  for (let d = 0; d < 40; d++) writeFileSync(path.join(corpus, `doc${d}.txt`), Array.from({ length: 10 }, (_, i) => `the whale ${(i + d) % 7} and the sea ${(i * d) % 5}, a ship waits.`).join(" "));
  const common = (t: { grad_accum: number; steps: number }, extra: string[] = []) => [
    `data.corpus=${corpus}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=300", "data.val_fraction=0.1", "model.preset=tiny-mixtral", ...extra,
    "train.batch_size=2", "train.seq_len=32", `train.grad_accum=${t.grad_accum}`, `train.steps=${t.steps}`, "train.threads=1", "log.progress=false",
    "eval.every=0", "sample.every=0", "checkpoint.every=0", "eval.batches=1",
  ];
  return { base, corpus, common };
}

/** Runs the CLI; asserts exit 0; returns stdout + stderr. */
export function runCli(args: string[]): string {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: "utf8", timeout: 240_000 });
  assert.equal(r.status, 0, `${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
  return r.stdout + r.stderr;
}

export function losses(dir: string): number[] {
  return readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).loss as number);
}

/** Same number of steps, each loss within 1e-5 relative. */
export function closeLosses(a: number[], b: number[], what: string): void {
  assert.equal(a.length, b.length, `${what}: steps`);
  a.forEach((x, i) => assert.ok(Math.abs(x - b[i]!) <= 1e-5 * Math.abs(b[i]!), `${what} step ${i + 1}: ${x} vs ${b[i]}`));
}
