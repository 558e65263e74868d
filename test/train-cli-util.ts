// Shared by the multi-rank training tests: a tiny corpus in a temp folder, the options of a tiny
// run on it, the CLI runner, metrics.jsonl losses and the 1e-5 relative loss comparison.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";
import { mpiAvailable } from "../src/parallel/mpi.js";

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

/**
 * Skips the test (returns true) when `backend` cannot run `nproc` ranks here: MPI needs the
 * binding and mpirun, and runs 2-rank layouts only (runtime; larger ones are covered on threads).
 */
export function skipLaunch(t: TestContext, backend: "threads" | "mpi", nproc: number): boolean {
  if (backend === "threads") return false;
  if (!mpiAvailable() || spawnSync("mpirun", ["--version"]).error) t.skip("Open MPI binding or mpirun not available");
  else if (nproc > 2) t.skip("covered on threads; MPI runs the 2-rank layouts only (runtime)");
  else return false;
  return true;
}

/** `moe launch --nproc N --backend B -- train …`, asserting exit 0. */
export function launchTrain(backend: "threads" | "mpi", nproc: number, trainArgs: string[]): string {
  return runCli(["launch", "--nproc", String(nproc), "--backend", backend, "--timeout", "200", "--", "train", ...trainArgs]);
}
