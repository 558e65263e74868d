// The cluster a layout is planned for: nodes, devices per node, memory and compute rate per
// device, and the intra-/inter-node links (α–β: latency and bandwidth).
//
// The spec is a YAML/JSON object with snake_case keys (see `CLUSTER_KEYS`); sizes may be numbers
// or strings with units ("80GB", "80GiB", "200GB/s", "5us"). The compute rate is stated
// (`flops`) or taken from the engine's benchmark JSON lines (`bench`): the training step's
// sustained rate from `npm run bench:train -- --json` (records `train_mfu`: value = fraction of
// the GEMM peak in peer_value GFLOP/s) when the file has them, else the GEMM rates of
// `npm run bench:kernels -- --json` (records with unit "GFLOP/s").
//
// Not: a topology model beyond two levels (node / cluster), nor a measurement tool.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { closest } from "../core/suggest.js";

export class PlanError extends Error {
  override name = "PlanError";
}

/** One level of the interconnect, used by a collective whose group stays on that level. */
export interface Link {
  /** Bytes per second per device in one direction. */
  bandwidth: number;
  /** Seconds per message (α). */
  latency: number;
}

export interface ClusterSpec {
  nodes: number;
  devicesPerNode: number;
  /** Usable memory per device, bytes. */
  memoryBytes: number;
  /** Sustained compute rate per device, FLOP/s (what the model's GEMMs run at, not the peak). */
  flops: number;
  /** Where `flops` came from: "stated" or the bench file and the records used. */
  flopsSource: string;
  intraNode: Link;
  interNode: Link;
  /**
   * Ranks that compute at the full `flops` at once when the devices are CPU ranks sharing one
   * machine's cores (cores / threads per rank); more running ranks share it (the 1F1B simulation's
   * processor sharing, the optimizer's share). Absent: every device computes on its own.
   */
  concurrency?: number;
  /**
   * With `concurrency`: a rank waiting on an exchange takes this share of a running rank's CPU
   * (0..1; MPI ranks poll while they wait, measured by bench/poll-share.ts). Default 0.
   */
  pollShare?: number;
}

/** Keys of the spec file, with their meaning (also the `--help` text). */
export const CLUSTER_KEYS = {
  nodes: "number of nodes (default 1)",
  devices_per_node: "devices (GPUs, or CPU ranks) per node",
  memory: "usable memory per device, bytes or '80GB'/'80GiB'",
  flops: "sustained FLOP/s per device (e.g. 150e12); or give `bench`",
  bench: "a file of the engine's bench JSON lines; flops = median training rate (train_mfu records), else median GFLOP/s",
  bench_case: "only bench records whose 'bench case' text contains this (default: all rate records)",
  bench_threads: "only bench records with this thread count (default: the largest present)",
  intra_node: "{bandwidth, latency} of links inside a node (default 100GB/s, 5us)",
  inter_node: "{bandwidth, latency} of links between nodes (default 12.5GB/s, 10us)",
  concurrency: "CPU ranks sharing one machine: how many compute at full rate at once (cores / threads per rank); absent: each device its own",
  poll_share: "with concurrency: the CPU share (0..1) of a running rank that a rank waiting on an exchange still takes (MPI polls; default 0)",
} as const;

const DEFAULT_INTRA: Link = { bandwidth: 100e9, latency: 5e-6 };
const DEFAULT_INTER: Link = { bandwidth: 12.5e9, latency: 10e-6 };

const UNITS: Record<string, number> = {
  "": 1, b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
  "b/s": 1, "kb/s": 1e3, "mb/s": 1e6, "gb/s": 1e9, "tb/s": 1e12, "gib/s": 1024 ** 3,
  s: 1, ms: 1e-3, us: 1e-6, ns: 1e-9,
};

/** A positive number, or a string "<number><unit>" with one of the units above (case-insensitive). */
export function parseQuantity(v: unknown, what: string, allowZero = false): number {
  let x: number;
  if (typeof v === "number") x = v;
  else if (typeof v === "string") {
    const m = /^\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([a-z/]*)\s*$/i.exec(v);
    const unit = m?.[2]?.toLowerCase() ?? "";
    if (!m || !(unit in UNITS)) throw new PlanError(`${what}: cannot read '${v}' (a number, optionally with a unit such as GB, GiB, GB/s, us, ms)`);
    x = Number(m[1]) * UNITS[unit]!;
  } else throw new PlanError(`${what}: expected a number, got ${JSON.stringify(v)}`);
  if (!Number.isFinite(x) || x < 0 || (x === 0 && !allowZero)) throw new PlanError(`${what}: must be ${allowZero ? "≥ 0" : "> 0"}, got ${JSON.stringify(v)}`);
  return x;
}

function positiveInt(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) throw new PlanError(`${what}: must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function parseLink(v: unknown, what: string, d: Link): Link {
  if (v === undefined) return d;
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new PlanError(`${what}: expected {bandwidth, latency}`);
  const o = v as Record<string, unknown>;
  for (const k of Object.keys(o)) if (k !== "bandwidth" && k !== "latency") throw new PlanError(`${what}: unknown key '${k}' (known: bandwidth, latency)`);
  return {
    bandwidth: o.bandwidth === undefined ? d.bandwidth : parseQuantity(o.bandwidth, `${what}.bandwidth`),
    latency: o.latency === undefined ? d.latency : parseQuantity(o.latency, `${what}.latency`, true),
  };
}

/** One record of the engine's bench JSON output (bench/common.ts `ResultLine`). */
export interface BenchRecord {
  bench: string;
  case: string;
  threads: number;
  value: number;
  unit: string;
  peer_value: number | null;
}

/** Parses bench JSON lines; lines that are not JSON objects with the record fields are skipped. */
export function parseBenchLines(text: string): BenchRecord[] {
  const out: BenchRecord[] = [];
  for (const line of text.split("\n")) {
    const t = line.trim();
    if (!t.startsWith("{")) continue;
    let r: unknown;
    try {
      r = JSON.parse(t);
    } catch {
      continue;
    }
    const o = r as Record<string, unknown>;
    if (typeof o.bench === "string" && typeof o.case === "string" && typeof o.threads === "number" && typeof o.value === "number" && typeof o.unit === "string") {
      out.push({ bench: o.bench, case: o.case, threads: o.threads, value: o.value, unit: o.unit, peer_value: typeof o.peer_value === "number" ? o.peer_value : null });
    }
  }
  return out;
}

/** GFLOP/s of a rate record: a GEMM's GFLOP/s, or a training step's fraction of the GEMM peak × that peak. */
function gflops(r: BenchRecord): number | null {
  if (r.unit === "GFLOP/s") return r.value;
  if (r.bench === "train_mfu" && r.peer_value !== null) return r.value * r.peer_value;
  return null;
}

/**
 * The compute rate (FLOP/s) from bench records: the median over the rate records whose
 * "bench case" contains `caseFilter`, at `threads` (default: the largest thread count present).
 * Training-step records (train_mfu) are preferred over GEMM records when both match: they
 * include every non-GEMM kernel and the optimizer, which the cost model does not count.
 */
export function flopsFromBench(records: BenchRecord[], caseFilter = "", threads?: number): { flops: number; used: number; threads: number; kind: "train" | "gemm" } {
  const matching = records.filter((r) => gflops(r) !== null && `${r.bench} ${r.case}`.includes(caseFilter));
  const train = matching.filter((r) => r.bench === "train_mfu");
  const kind = train.length ? "train" : "gemm";
  const rated = train.length ? train : matching;
  if (rated.length === 0) throw new PlanError(`bench: no GFLOP/s or train_mfu records${caseFilter ? ` matching '${caseFilter}'` : ""}`);
  const t = threads ?? Math.max(...rated.map((r) => r.threads));
  const sel = rated.filter((r) => r.threads === t).map((r) => gflops(r)!).sort((a, b) => a - b);
  if (sel.length === 0) throw new PlanError(`bench: no rate records at ${t} threads (present: ${[...new Set(rated.map((r) => r.threads))].join(", ")})`);
  const n = sel.length;
  const med = n % 2 ? sel[(n - 1) >> 1]! : (sel[n / 2 - 1]! + sel[n / 2]!) / 2;
  return { flops: med * 1e9, used: n, threads: t, kind };
}

/**
 * Validates a cluster spec object. `baseDir` resolves a relative `bench` path. Unknown keys are
 * errors naming the closest known key.
 */
export function parseClusterSpec(json: unknown, source = "cluster spec", baseDir = "."): ClusterSpec {
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new PlanError(`${source}: not an object`);
  const o = json as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!(k in CLUSTER_KEYS)) {
      const hint = closest(k, Object.keys(CLUSTER_KEYS));
      throw new PlanError(`${source}: unknown key '${k}'${hint ? ` (did you mean '${hint}'?)` : ""}`);
    }
  }
  const nodes = o.nodes === undefined ? 1 : positiveInt(o.nodes, `${source}: nodes`);
  if (o.devices_per_node === undefined) throw new PlanError(`${source}: devices_per_node is required`);
  const devicesPerNode = positiveInt(o.devices_per_node, `${source}: devices_per_node`);
  if (o.memory === undefined) throw new PlanError(`${source}: memory (per device) is required`);
  const memoryBytes = parseQuantity(o.memory, `${source}: memory`);
  let flops: number, flopsSource: string;
  if (o.flops !== undefined && o.bench !== undefined) throw new PlanError(`${source}: give flops or bench, not both`);
  if (o.flops !== undefined) {
    flops = parseQuantity(o.flops, `${source}: flops`);
    flopsSource = "stated";
  } else if (o.bench !== undefined) {
    if (typeof o.bench !== "string") throw new PlanError(`${source}: bench must be a file path`);
    const file = path.resolve(baseDir, o.bench);
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      throw new PlanError(`${source}: bench file ${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    if (o.bench_case !== undefined && typeof o.bench_case !== "string") throw new PlanError(`${source}: bench_case must be a string`);
    const threads = o.bench_threads === undefined ? undefined : positiveInt(o.bench_threads, `${source}: bench_threads`);
    const r = flopsFromBench(parseBenchLines(text), (o.bench_case as string | undefined) ?? "", threads);
    flops = r.flops;
    flopsSource = `${file}: median of ${r.used} ${r.kind === "train" ? "training-step (train_mfu)" : "GEMM GFLOP/s"} records at ${r.threads} threads`;
  } else throw new PlanError(`${source}: give flops (FLOP/s per device) or bench (a bench JSON file)`);
  let concurrency: number | undefined;
  if (o.concurrency !== undefined) {
    concurrency = typeof o.concurrency === "number" ? o.concurrency : NaN;
    if (!(concurrency > 0) || !Number.isFinite(concurrency)) throw new PlanError(`${source}: concurrency must be a number > 0, got ${String(o.concurrency)}`);
  }
  let pollShare: number | undefined;
  if (o.poll_share !== undefined) {
    pollShare = typeof o.poll_share === "number" ? o.poll_share : NaN;
    if (!(pollShare >= 0 && pollShare <= 1)) throw new PlanError(`${source}: poll_share must be a number in [0, 1], got ${String(o.poll_share)}`);
  }
  return {
    nodes, devicesPerNode, memoryBytes, flops, flopsSource,
    intraNode: parseLink(o.intra_node, `${source}: intra_node`, DEFAULT_INTRA),
    interNode: parseLink(o.inter_node, `${source}: inter_node`, DEFAULT_INTER),
    ...(concurrency !== undefined ? { concurrency } : {}),
    ...(pollShare !== undefined ? { pollShare } : {}),
  };
}

/**
 * Reads a YAML or JSON cluster spec file (YAML is a superset of JSON); `overrides` replace the
 * file's keys and `drop` removes keys (a stated flops replacing the file's bench, say).
 */
export function readClusterSpec(file: string, overrides: Record<string, unknown> = {}, drop: string[] = []): ClusterSpec {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new PlanError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let obj: unknown;
  try {
    obj = parseYaml(text);
  } catch (e) {
    throw new PlanError(`${file}: not valid YAML/JSON: ${(e as Error).message}`);
  }
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) throw new PlanError(`${file}: not an object`);
  const merged: Record<string, unknown> = { ...(obj as Record<string, unknown>), ...overrides };
  for (const k of drop) if (!(k in overrides)) delete merged[k];
  return parseClusterSpec(merged, file, path.dirname(file));
}

export function worldSize(c: ClusterSpec): number {
  return c.nodes * c.devicesPerNode;
}
