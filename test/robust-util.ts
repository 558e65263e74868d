// Shared helpers of the test/robust-*.test.ts files: a small corpus, the CLI as a child process.
import { mkdtempSync, writeFileSync, existsSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const CLI = path.join(ROOT, "dist", "src", "cli", "main.js");

/** A directory of `docs` short documents with learnable structure. */
export function corpus(docs = 40): string {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-robust-corpus-"));
  const words = ["the whale", "the sea", "a ship", "the captain", "a harpoon", "the crew", "white", "grey", "sails", "waits"];
  for (let d = 0; d < docs; d++) {
    const lines: string[] = [];
    for (let s = 0; s < 12; s++) lines.push(`${words[(d + s) % 10]} ${words[(d * 3 + s * 7) % 10]} and ${words[(s * 5 + 1) % 10]}.`);
    writeFileSync(path.join(dir, `doc${String(d).padStart(2, "0")}.txt`), lines.join(" ") + "\n");
  }
  return dir;
}

/** Overrides of a tiny, fast training run into base/name. */
export function tinyArgs(base: string, name: string, data: string, extra: string[] = []): string[] {
  return [`train.out_dir=${path.join(base, name)}`, `data.corpus=${data}`, `data.cache_dir=${path.join(base, "cache")}`, "data.vocab_size=300",
    "data.val_fraction=0.1", "model.preset=tiny-mixtral", "train.batch_size=2", "train.seq_len=16", "train.steps=12", "eval.every=0",
    "sample.every=0", "eval.batches=1", "sample.tokens=4", "log.progress=false", "log.every=1", ...extra];
}

export interface CliResult { code: number | null; signal: string | null; out: string; err: string }

/** Starts the CLI; `done` resolves when it exits. */
export function start(args: string[], opts: { stdin?: string } = {}): { p: ChildProcess; done: Promise<CliResult> } {
  const p = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env: { ...process.env, MOE_NUM_THREADS: "1" } });
  let out = "", err = "";
  p.stdout!.on("data", (d) => (out += d));
  p.stderr!.on("data", (d) => (err += d));
  if (opts.stdin !== undefined) p.stdin!.end(opts.stdin);
  else p.stdin!.end();
  const done = new Promise<CliResult>((resolve) => p.on("close", (code, signal) => resolve({ code, signal, out, err })));
  return { p, done };
}

export function cli(args: string[], opts: { stdin?: string } = {}): Promise<CliResult> {
  return start(args, opts).done;
}

/** Waits until `cond` holds (polling), failing after `ms`. */
export async function waitFor(cond: () => boolean, ms = 30000, what = "condition"): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** metrics.jsonl steps of a run directory. */
export function metricSteps(dir: string): number[] {
  const f = path.join(dir, "metrics.jsonl");
  if (!existsSync(f)) return [];
  return readFileSync(f, "utf8").split("\n").filter((l) => l.trim()).map((l) => (JSON.parse(l) as { step: number }).step);
}
