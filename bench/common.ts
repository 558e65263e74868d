// Shared helpers of the kernel benchmarks: command-line flags, timing (warmup + median),
// interleaved A/B timing for side-by-side ratios, and the result line format (table or JSON).
// Not: a statistics package; medians only, because the machine is shared and noisy.

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

export interface BenchFlags {
  json: boolean;
  threads: number[];
  /** Parts to run; empty = all. */
  only: Set<string>;
}

export function parseFlags(argv: string[], parts: string[]): BenchFlags {
  const flags: BenchFlags = { json: false, threads: [1, 2], only: new Set() };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === "--json") flags.json = true;
    else if (a === "--threads") {
      flags.threads = value().split(",").map((s) => Number(s));
      if (flags.threads.some((t) => !Number.isInteger(t) || t < 1)) throw new Error(`--threads: positive integers, got ${argv[i]}`);
    } else if (a === "--only") {
      for (const p of value().split(",")) {
        if (!parts.includes(p)) throw new Error(`--only: unknown part '${p}' (known: ${parts.join(", ")})`);
        flags.only.add(p);
      }
    } else throw new Error(`unknown flag ${a} (known: --json, --threads 1,2, --only ${parts.join(",")})`);
  }
  return flags;
}

/**
 * The environment of every PyTorch peer child at `threads` threads: OMP_NUM_THREADS,
 * OPENBLAS_NUM_THREADS and MKL_NUM_THREADS = threads (Debian's PyTorch calls OpenBLAS, whose
 * threads torch.set_num_threads does not limit: at "1 thread" it ran at 182% CPU), and
 * OMP_WAIT_POLICY=PASSIVE (its OpenMP threads otherwise spin against OpenBLAS's).
 */
export function peerEnv(threads: number): Record<string, string> {
  const t = String(threads);
  return { OMP_NUM_THREADS: t, OPENBLAS_NUM_THREADS: t, MKL_NUM_THREADS: t, OMP_WAIT_POLICY: "PASSIVE" };
}

/** Label of the peer environment, for bench output. */
export const PEER_ENV_LABEL = "OMP/OPENBLAS/MKL_NUM_THREADS=t, OMP_WAIT_POLICY=PASSIVE";

/**
 * CPU use of a peer: its CPU seconds (user + system, all its threads, from getrusage(RUSAGE_SELF)
 * inside the child over the timed loop) divided by the wall seconds of that loop. Null when the
 * peer did not report both.
 */
export function peerCpu(out: { cpu_s?: number; wall_s?: number }): number | null {
  return typeof out.cpu_s === "number" && typeof out.wall_s === "number" && out.wall_s > 0 ? out.cpu_s / out.wall_s : null;
}

export interface PeerRun {
  /** Median milliseconds of the peer's timed step. */
  ms: number;
  /** Measured cores the peer used over its timed loop (see peerCpu). */
  cpu: number | null;
}

/**
 * Runs a PyTorch peer script (bench/<script>) with Debian's /usr/bin/python3 in peerEnv(threads)
 * (plus `extraEnv`) and returns the `ms_median` and measured CPU use of the JSON line it prints
 * last; null when python3-torch is not installed or the script fails (its stderr is printed).
 */
export function torchPeerRun(script: string, args: (string | number)[], threads: number, extraEnv: Record<string, string> = {}): PeerRun | null {
  const py = "/usr/bin/python3";
  if (!existsSync(py) || spawnSync(py, ["-c", "import torch"]).status !== 0) return null;
  const file = new URL(`../../bench/${script}`, import.meta.url).pathname;
  const r = spawnSync(py, [file, ...args.map(String)], { encoding: "utf8", env: { ...process.env, ...peerEnv(threads), ...extraEnv } });
  if (r.status !== 0) {
    console.error(r.stderr);
    return null;
  }
  const out = JSON.parse(r.stdout.trim().split("\n").pop()!) as { ms_median: number; cpu_s?: number; wall_s?: number };
  return { ms: out.ms_median, cpu: peerCpu(out) };
}

export function wants(flags: BenchFlags, part: string): boolean {
  return flags.only.size === 0 || flags.only.has(part);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) >> 1]! : (s[n / 2 - 1]! + s[n / 2]!) / 2;
}

/** Median milliseconds of `reps` calls after one warm-up call. */
export function timeMs(fn: () => void, reps: number): number {
  fn();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    ts.push(performance.now() - t0);
  }
  return median(ts);
}

function seconds(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/**
 * Times several variants interleaved (v0, v1, …, v0, v1, …) so that load from other processes
 * hits all of them alike. Returns the median seconds of each after `warmup` untimed rounds.
 */
export function timeInterleaved(fns: (() => void)[], reps = 7, warmup = 2): number[] {
  for (let w = 0; w < warmup; w++) for (const f of fns) f();
  const times: number[][] = fns.map(() => []);
  for (let r = 0; r < reps; r++) fns.forEach((f, i) => times[i]!.push(seconds(f)));
  return times.map(median);
}

export interface ResultLine {
  bench: string;
  case: string;
  threads: number;
  value: number;
  unit: string;
  peer: string | null;
  peer_value: number | null;
  ratio: number | null;
  /** Cores the peer measurably used (CPU s / wall s); flagged in the table above threads·1.1. */
  peer_cpu?: number | null;
}

/** True when a peer used more than 10% more cores than its thread count says. */
export function peerOverLabel(r: ResultLine): boolean {
  return r.peer_cpu !== undefined && r.peer_cpu !== null && r.peer_cpu > r.threads * 1.1;
}

export function report(flags: BenchFlags, r: ResultLine): void {
  if (flags.json) {
    console.log(JSON.stringify(r));
    return;
  }
  const f = (v: number | null, d = 1) => (v === null ? "-" : v.toFixed(d));
  console.log(
    [r.bench.padEnd(14), r.case.padEnd(28), String(r.threads).padStart(2), f(r.value).padStart(8), r.unit.padEnd(8), (r.peer ?? "-").padEnd(34), f(r.peer_value).padStart(8), f(r.ratio, 2).padStart(6), (f(r.peer_cpu ?? null, 2) + (peerOverLabel(r) ? " OVER" : "")).padStart(8)].join(" "),
  );
}

export function header(flags: BenchFlags, title: string): void {
  if (flags.json) return;
  console.log(`\n# ${title}`);
  console.log(["bench".padEnd(14), "case".padEnd(28), " t", "value".padStart(8), "unit".padEnd(8), "peer".padEnd(34), "peer".padStart(8), "ratio".padStart(6), "peer_cpu".padStart(8)].join(" "));
  console.log(`(peer children run with ${PEER_ENV_LABEL}; peer_cpu = the peer's measured CPU s / wall s, OVER when above 1.1 × t)`);
}

/** Notes go to stderr in --json mode so stdout stays one JSON object per line. */
export function note(flags: BenchFlags, msg: string): void {
  if (flags.json) console.error(msg);
  else console.log(msg);
}
