// GEMM path calibration for the native backend's `gemm: "auto"`: times the built-in kernel and
// OpenBLAS on one representative problem per shape class, at the engine's own thread count, and
// routes each later call to the faster path of its class. The result is cached per machine (CPU
// model) and build (hash of the addon binary) in the user's cache directory
// ($XDG_CACHE_HOME/moe-ts/gemm-calibration-<build>.json, else under ~/.cache), so the
// ~0.2-0.4 s measurement runs once per machine, build and thread count.
// Not: a block-size tuner, and not used when OpenBLAS is not linked (the built-in kernel is then
// the only path). Holds no module-level state: a router belongs to one backend instance.
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Addon, EngineHandle } from "./addon.js";

/** Shape classes a GEMM call is routed by. */
export type GemmShapeClass = "small" | "thin" | "large" | "grouped";
export const GEMM_SHAPE_CLASSES: readonly GemmShapeClass[] = ["small", "thin", "large", "grouped"];
export type GemmPathChoice = "builtin" | "blas";

/** Below this many flops (2·256³) a call is "small" (per-call overheads dominate). */
export const SMALL_FLOPS = 2 * 256 * 256 * 256;
/** A dense call with M or N at most this is "thin" (decode steps, router, narrow outputs). */
export const THIN_DIM = 64;
/** OpenBLAS must beat the built-in kernel by this factor to be chosen (its worker threads keep
 * spinning after each call and slow whatever runs next on our pool, which a timing of it alone
 * does not see). */
export const BLAS_MARGIN = 1.05;
/** A measurement during which this process got less than this share of threads × wall time of
 * CPU was disturbed by other processes: it is used by this process but not cached (measured here
 * under load, such a run picked OpenBLAS for a class where the built-in kernel is 1.3-1.8× faster). */
export const MIN_CPU_SHARE = 0.8;
/**
 * A measurement is cached only when the machine's 1-minute load average is at most this: a busy
 * machine can make either path look faster for minutes (seen here: OpenBLAS picked at 2 threads
 * while other jobs ran, then used at half the built-in speed once the machine was quiet).
 */
export const MAX_LOAD_TO_CACHE = 1;

/** Class of a dense (or batched) GEMM of M×N×K, `flops` in total over the call. */
export function denseClass(M: number, N: number, K: number, flops = 2 * M * N * K): GemmShapeClass {
  if (flops < SMALL_FLOPS) return "small";
  return Math.min(M, N) <= THIN_DIM ? "thin" : "large";
}

/**
 * Class of a grouped call (groupedGemm or its weight gradient) over row groups `sizes` with the
 * per-group K×N: "small" below SMALL_FLOPS in total and, with a single non-empty group, the class
 * of that dense GEMM (so E = 1 runs on the same path as the equal plain gemm); else "grouped".
 */
export function groupedClass(sizes: Int32Array, K: number, N: number): GemmShapeClass {
  let rows = 0, nonEmpty = 0;
  for (let g = 0; g < sizes.length; g++) {
    rows += sizes[g]!;
    if (sizes[g]! > 0) nonEmpty++;
  }
  const flops = 2 * rows * K * N;
  if (flops < SMALL_FLOPS) return "small";
  return nonEmpty === 1 ? denseClass(rows, N, K) : "grouped";
}

export interface ClassMeasurement {
  /** GFLOP/s of each path on the class's representative problem (best of the timed calls). */
  builtin: number;
  blas: number;
  pick: GemmPathChoice;
  /** The representative problem, "MxKxN" or "grouped E×Σrows K N". */
  problem: string;
}

export interface GemmCalibration {
  threads: number;
  /** CPU model the measurement was made on (invalidates the cache when it changes). */
  cpu: string;
  /** sha256 prefix of the addon binary (invalidates the cache when the build changes). */
  build: string;
  classes: Record<GemmShapeClass, ClassMeasurement>;
  /** Wall milliseconds the measurement took. */
  ms: number;
  /** CPU time this process got during the measurement / (threads × wall time). */
  cpuShare: number;
  /** The machine's 1-minute load average when measured. */
  load1: number;
  /** ISO time of the measurement. */
  measuredAt: string;
  /** True when this process read it from the cache file instead of measuring. */
  cached: boolean;
}

interface CacheFile {
  version: 1;
  cpu: string;
  build: string;
  /** Keyed by thread count. */
  entries: Record<string, Omit<GemmCalibration, "cached">>;
}

/** The cache directory: $XDG_CACHE_HOME/moe-ts, else ~/.cache/moe-ts. */
export function defaultCalibrationDir(): string {
  const xdg = process.env.XDG_CACHE_HOME;
  return path.join(xdg !== undefined && xdg !== "" ? xdg : path.join(os.homedir(), ".cache"), "moe-ts");
}

/** CPU identity: /proc/cpuinfo vendor, family/model/stepping and model name; else os.cpus(). */
export function cpuIdentity(): string {
  try {
    const text = readFileSync("/proc/cpuinfo", "utf8");
    const block = text.split("\n\n")[0] ?? "";
    const field = (k: string) => new RegExp(`^${k}\\s*:\\s*(.*)$`, "m").exec(block)?.[1]?.trim() ?? "?";
    return `${field("vendor_id")} family ${field("cpu family")} model ${field("model")} stepping ${field("stepping")} ${field("model name")}`;
  } catch {
    return `${os.cpus()[0]?.model ?? "unknown"} ${os.arch()}`;
  }
}

/** Identity of the build: a hash of the addon binary's bytes. */
export function buildIdentity(addonFile: string): string {
  return createHash("sha256").update(readFileSync(addonFile)).digest("hex").slice(0, 16);
}

function randomF32(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296 - 0.5;
  }
  return out;
}

/** Best seconds of `reps` calls of each variant, interleaved, after one warm-up call each. */
function bestSecondsInterleaved(fns: (() => void)[], reps: number): number[] {
  for (const f of fns) f();
  const best = fns.map(() => Infinity);
  for (let r = 0; r < reps; r++) {
    fns.forEach((f, i) => {
      const t0 = process.hrtime.bigint();
      f();
      best[i] = Math.min(best[i]!, Number(process.hrtime.bigint() - t0) / 1e9);
    });
  }
  return best;
}

/**
 * Measures both paths on every class at the engine's thread count. Timing uses the best of a few
 * interleaved calls (the machine is shared: the best call is the one nobody else disturbed).
 * Leaves the engine on the built-in path.
 */
export function measure(addon: Addon, engine: EngineHandle, threads: number, cpu: string, build: string): Omit<GemmCalibration, "cached"> {
  const t0 = performance.now(), cpu0 = process.cpuUsage();
  const setPath = (p: GemmPathChoice) => addon.setGemmPath!(engine, p);
  const classes = {} as Record<GemmShapeClass, ClassMeasurement>;
  const dense = (cls: GemmShapeClass, M: number, K: number, N: number, reps: number) => {
    const a = randomF32(M * K, 1), b = randomF32(K * N, 2), c = new Float32Array(M * N);
    const run = (p: GemmPathChoice) => () => {
      setPath(p);
      addon.gemm!(engine, a, b, c, M, N, K, false, false, 1, 0);
    };
    record(cls, `${M}x${K}x${N}`, 2 * M * N * K, run, reps);
  };
  const record = (cls: GemmShapeClass, problem: string, flops: number, run: (p: GemmPathChoice) => () => void, reps: number) => {
    const [sb, sl] = bestSecondsInterleaved([run("builtin"), run("blas")], reps);
    const builtin = flops / sb! / 1e9, blas = flops / sl! / 1e9;
    classes[cls] = { builtin, blas, pick: blas > builtin * BLAS_MARGIN ? "blas" : "builtin", problem };
  };
  dense("small", 128, 256, 256, 15);
  dense("thin", 32, 2048, 2048, 4);
  dense("large", 1024, 512, 1024, 3);
  {
    const sizes = Int32Array.from([251, 192, 161, 127, 113, 96, 50, 34]); // Σ 1024, uneven like routing
    const K = 512, N = 1024, rows = 1024;
    const x = randomF32(rows * K, 3), w = randomF32(sizes.length * N * K, 4), y = new Float32Array(rows * N);
    const run = (p: GemmPathChoice) => () => {
      setPath(p);
      addon.groupedGemm!(engine, x, w, y, sizes, K, N, true, 0);
    };
    record("grouped", `grouped 8x${rows} K${K} N${N}`, 2 * rows * K * N, run, 3);
  }
  setPath("builtin");
  const ms = performance.now() - t0, used = process.cpuUsage(cpu0);
  const cpuShare = (used.user + used.system) / 1e3 / (threads * ms);
  return { threads, cpu, build, classes, ms, cpuShare, load1: os.loadavg()[0]!, measuredAt: new Date().toISOString() };
}

function readCache(file: string, cpu: string, build: string): CacheFile | null {
  if (!existsSync(file)) return null;
  try {
    const c = JSON.parse(readFileSync(file, "utf8")) as CacheFile;
    if (c.version !== 1 || c.cpu !== cpu || c.build !== build || typeof c.entries !== "object" || c.entries === null) return null;
    return c;
  } catch {
    return null; // a damaged cache is measured again and rewritten
  }
}

function validEntry(e: Omit<GemmCalibration, "cached"> | undefined): boolean {
  return e !== undefined && GEMM_SHAPE_CLASSES.every((k) => {
    const m = e.classes?.[k];
    return m !== undefined && (m.pick === "builtin" || m.pick === "blas");
  });
}

/**
 * The cache file of one build: one file per build, so that several builds on one machine (a
 * checkout and its worktrees) do not evict each other's measurements.
 */
export function calibrationFile(dir: string, build: string): string {
  return path.join(dir, `gemm-calibration-${build}.json`);
}

/** Whether a measurement may be cached (undisturbed, on a quiet machine). */
export function cacheable(m: { cpuShare: number; load1: number }): boolean {
  return m.cpuShare >= MIN_CPU_SHARE && m.load1 <= MAX_LOAD_TO_CACHE;
}

/**
 * The calibration for this engine's thread count: from calibrationFile(dir, build) when it was
 * made on this CPU with this build, else measured now and written back (atomically; a cache that
 * cannot be written is only reported by returning cached=false each time), unless other processes
 * disturbed the measurement (cpuShare < MIN_CPU_SHARE) or the machine was busy (1-minute load
 * average above MAX_LOAD_TO_CACHE). dir null: no cache.
 */
export function loadOrCalibrate(addon: Addon, engine: EngineHandle, threads: number, addonFile: string, dir: string | null): GemmCalibration {
  const cpu = cpuIdentity(), build = buildIdentity(addonFile);
  const file = dir === null ? null : calibrationFile(dir, build);
  const cache = file === null ? null : readCache(file, cpu, build);
  const hit = cache?.entries[String(threads)];
  if (hit !== undefined && validEntry(hit)) return { ...hit, cached: true };
  const fresh = measure(addon, engine, threads, cpu, build);
  if (file !== null && cacheable(fresh)) {
    const next: CacheFile = cache ?? { version: 1, cpu, build, entries: {} };
    next.entries[String(threads)] = fresh;
    try {
      mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, JSON.stringify(next, null, 1) + "\n");
      renameSync(tmp, file);
    } catch {
      // read-only home or full disk: run with this process's measurement
    }
  }
  if (cacheable(fresh)) return { ...fresh, cached: false };
  // A disturbed measurement could pick differently in every process (runs would then differ in
  // their last bits): until a quiet calibration is cached, auto is the built-in kernel.
  const classes = Object.fromEntries(Object.entries(fresh.classes).map(([k, v]) => [k, { ...v, pick: "builtin" as const }])) as typeof fresh.classes;
  return { ...fresh, classes, cached: false };
}

/**
 * Routes each GEMM call of one backend instance to its class's path. The calibration runs lazily,
 * on the first GEMM call (or info()), so backends that never multiply pay nothing.
 */
export class GemmRouter {
  private calibration: GemmCalibration | null = null;
  private current: GemmPathChoice = "builtin";

  constructor(
    private readonly addon: Addon,
    private readonly engine: EngineHandle,
    private readonly threads: number,
    private readonly addonFile: string,
    private readonly cacheDir: string | null,
  ) {}

  result(): GemmCalibration {
    if (this.calibration === null) {
      this.calibration = loadOrCalibrate(this.addon, this.engine, this.threads, this.addonFile, this.cacheDir);
      this.current = "builtin"; // measure() leaves the engine there
    }
    return this.calibration;
  }

  /** Sets the engine's path for a call of class `cls`. */
  use(cls: GemmShapeClass): void {
    const want = this.result().classes[cls].pick;
    if (want !== this.current) {
      this.addon.setGemmPath!(this.engine, want);
      this.current = want;
    }
  }
}
