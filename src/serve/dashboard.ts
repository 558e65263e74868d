// The live routing dashboard, server side: the static page (src/serve/dashboard/, plain JS, no
// build step, no CDN; uPlot served from node_modules) for any node:http server to mount, and the
// expert-load JSON that the page reads in serving mode (`GET /v1/moe/expert-load`, also as SSE).
//
// Expert-load JSON (one object, the same shape in the JSON response and in each SSE event):
//   {"object":"moe.expert_load","timestamp":ms,"num_layers":L,"num_experts":E,
//    "layers":[{"layer":l,"tokens_per_expert":[cumulative],"window_tokens_per_expert":[window],
//               "max_over_mean":x,"entropy":x}],                       (dense layers omitted)
//    "engine":{"running","waiting","steps","prompt_tokens","generated_tokens","kv_cache_usage",
//              "ttft_ms_recent"}}
// max_over_mean and entropy are of the window counts: max_e c_e / mean_e c_e, and the routing
// entropy −Σ p_e ln p_e / ln E with p_e = c_e / Σ c (1 = perfectly even, 0 = one expert takes
// all); both are 0 for a window with no tokens.
//
// Not: the HTTP server itself (serve/server.ts, cli/dashboard.ts), the engine (infer/engine.ts),
// or the page's drawing code (dashboard/dashboard.js).
import { createReadStream, existsSync, statSync } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { EngineTotals } from "../infer/engine.js";

export interface ExpertLoadLayer {
  layer: number;
  tokens_per_expert: number[];
  window_tokens_per_expert: number[];
  max_over_mean: number;
  entropy: number;
}

export interface ExpertLoadEngine {
  running: number;
  waiting: number;
  steps: number;
  prompt_tokens: number;
  generated_tokens: number;
  kv_cache_usage: number;
  ttft_ms_recent: number | null;
}

export interface ExpertLoad {
  object: "moe.expert_load";
  timestamp: number;
  num_layers: number;
  num_experts: number;
  layers: ExpertLoadLayer[];
  engine: ExpertLoadEngine;
}

/** The engine gauges the JSON reports besides the counters in EngineTotals. */
export interface EngineGauges {
  running: number;
  waiting: number;
  /** Fraction of KV blocks in use, 0..1. */
  kvCacheUsage: number;
  /** Recent time to first token in ms (e.g. the mean over the window); null: none finished yet. */
  ttftMsRecent: number | null;
}

export interface ExpertLoadInput {
  totals: Pick<EngineTotals, "steps" | "promptTokens" | "generatedTokens" | "tokensPerExpert">;
  /** Per layer, tokens routed to each expert over the recent window (null: dense layer). Same length as totals.tokensPerExpert. */
  window: readonly (ArrayLike<number> | null)[];
  gauges: EngineGauges;
  /** Milliseconds since the epoch. Default Date.now(). */
  timestamp?: number;
}

export class DashboardError extends Error {
  override name = "DashboardError";
}

/** max_e c_e / mean_e c_e of one layer's counts; 0 when the counts sum to 0. */
export function maxOverMean(counts: ArrayLike<number>): number {
  let sum = 0, max = 0;
  for (let e = 0; e < counts.length; e++) {
    sum += counts[e]!;
    if (counts[e]! > max) max = counts[e]!;
  }
  return sum > 0 ? max / (sum / counts.length) : 0;
}

/** Routing entropy normalised by ln E (1 = even over all E experts); 0 when the counts sum to 0 or E = 1. */
export function normalizedEntropy(counts: ArrayLike<number>): number {
  const E = counts.length;
  let sum = 0;
  for (let e = 0; e < E; e++) sum += counts[e]!;
  if (!(sum > 0) || E < 2) return 0;
  let h = 0;
  for (let e = 0; e < E; e++) {
    const p = counts[e]! / sum;
    if (p > 0) h -= p * Math.log(p);
  }
  return h / Math.log(E);
}

const nonNegative = (name: string, v: number) => {
  if (!(Number.isFinite(v) && v >= 0)) throw new DashboardError(`expertLoadJson: ${name} must be a finite number ≥ 0, got ${v}`);
  return v;
};

/** Builds the expert-load JSON object (pure: the same input gives the same output). */
export function expertLoadJson(input: ExpertLoadInput): ExpertLoad {
  const { totals, window, gauges } = input;
  const tpe = totals.tokensPerExpert;
  if (window.length !== tpe.length) throw new DashboardError(`expertLoadJson: window has ${window.length} layers, totals have ${tpe.length}`);
  let numExperts = 0;
  const layers: ExpertLoadLayer[] = [];
  tpe.forEach((cum, l) => {
    const win = window[l];
    if (cum === null) {
      if (win) throw new DashboardError(`expertLoadJson: layer ${l} is dense in totals but has window counts`);
      return;
    }
    if (!win || win.length !== cum.length) throw new DashboardError(`expertLoadJson: layer ${l} has ${cum.length} experts in totals but ${win ? win.length : "no"} window counts`);
    if (numExperts !== 0 && cum.length !== numExperts) throw new DashboardError(`expertLoadJson: layer ${l} has ${cum.length} experts, an earlier layer ${numExperts}`);
    numExperts = cum.length;
    const w = Array.from(win, (x, e) => nonNegative(`window[${l}][${e}]`, x));
    layers.push({ layer: l, tokens_per_expert: Array.from(cum), window_tokens_per_expert: w, max_over_mean: maxOverMean(w), entropy: normalizedEntropy(w) });
  });
  const usage = nonNegative("gauges.kvCacheUsage", gauges.kvCacheUsage);
  if (usage > 1) throw new DashboardError(`expertLoadJson: gauges.kvCacheUsage must be in [0, 1], got ${usage}`);
  const ttft = gauges.ttftMsRecent;
  return {
    object: "moe.expert_load",
    timestamp: input.timestamp ?? Date.now(),
    num_layers: tpe.length,
    num_experts: numExperts,
    layers,
    engine: {
      running: nonNegative("gauges.running", gauges.running),
      waiting: nonNegative("gauges.waiting", gauges.waiting),
      steps: totals.steps,
      prompt_tokens: totals.promptTokens,
      generated_tokens: totals.generatedTokens,
      kv_cache_usage: usage,
      ttft_ms_recent: ttft === null ? null : nonNegative("gauges.ttftMsRecent", ttft),
    },
  };
}

/**
 * Window counts from the engine's cumulative counters: `observe` a snapshot of
 * totals.tokensPerExpert (e.g. once per engine step or per second); `counts` is the newest
 * snapshot minus the baseline, the newest snapshot taken at or before (newest time − windowMs),
 * or the oldest one kept while none is that old yet.
 */
export class ExpertLoadWindow {
  private readonly snaps: { t: number; tpe: (Float64Array | null)[] }[] = [];

  /** windowMs: the window's length in ms (default 10 000). */
  constructor(readonly windowMs = 10_000) {
    if (!(Number.isFinite(windowMs) && windowMs > 0)) throw new DashboardError(`ExpertLoadWindow: windowMs must be > 0, got ${windowMs}`);
  }

  observe(tokensPerExpert: readonly (Float64Array | null)[], nowMs: number): void {
    this.snaps.push({ t: nowMs, tpe: tokensPerExpert.map((x) => (x ? Float64Array.from(x) : null)) });
    // keep one snapshot at or before the window's start as the baseline
    while (this.snaps.length > 2 && this.snaps[1]!.t <= nowMs - this.windowMs) this.snaps.shift();
  }

  /** Per layer, tokens routed over the window (all zero until a second snapshot). Call observe() first. */
  counts(): (Float64Array | null)[] {
    const last = this.snaps[this.snaps.length - 1];
    if (!last) throw new DashboardError("ExpertLoadWindow: counts() before any observe(); observe the engine's totals once at start");
    const first = this.snaps[0]!;
    return last.tpe.map((x, l) => (x ? x.map((v, e) => v - (first.tpe[l]?.[e] ?? 0)) : null));
  }
}

// ---- static files ------------------------------------------------------------------------

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
};

/** The page's folder: src/serve/dashboard (this module compiles to dist/src/serve/). */
export function dashboardDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const candidates = [path.join(here, "dashboard"), path.resolve(here, "../../../src/serve/dashboard")];
  const dir = candidates.find((d) => existsSync(path.join(d, "index.html")));
  if (!dir) throw new DashboardError(`dashboard: page not found (looked in ${candidates.join(", ")})`);
  return dir;
}

function uplotFile(name: "uPlot.iife.min.js" | "uPlot.min.css"): string {
  const req = createRequire(import.meta.url);
  return path.join(path.dirname(req.resolve("uplot")), name);
}

/** URL paths under /dashboard/ and the files they are (a fixed table: nothing else is served). */
function routes(): Map<string, string> {
  const dir = dashboardDir();
  return new Map([
    ["/dashboard", path.join(dir, "index.html")],
    ["/dashboard/", path.join(dir, "index.html")],
    ["/dashboard/index.html", path.join(dir, "index.html")],
    ["/dashboard/dashboard.js", path.join(dir, "dashboard.js")],
    ["/dashboard/dashboard.css", path.join(dir, "dashboard.css")],
    ["/dashboard/vendor/uPlot.iife.min.js", uplotFile("uPlot.iife.min.js")],
    ["/dashboard/vendor/uPlot.min.css", uplotFile("uPlot.min.css")],
  ]);
}

/**
 * Serves the dashboard's files. `urlPath` is the request's path without the query string.
 * Returns false (response untouched) for paths outside /dashboard; for /dashboard and
 * /dashboard/… it answers (200, 404 for an unknown or traversing path, 405 for a method other
 * than GET/HEAD) and returns true. Only the fixed table of files above is ever read.
 */
export function serveDashboardFile(req: IncomingMessage, res: ServerResponse, urlPath: string): boolean {
  if (urlPath !== "/dashboard" && !urlPath.startsWith("/dashboard/")) return false;
  const plain = (status: number, text: string, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "text/plain; charset=utf-8", ...headers });
    res.end(text + "\n");
  };
  if (req.method !== "GET" && req.method !== "HEAD") {
    plain(405, `dashboard: method ${req.method} not allowed`, { allow: "GET, HEAD" });
    return true;
  }
  const file = routes().get(urlPath);
  if (!file) {
    plain(404, `dashboard: no file ${urlPath}`);
    return true;
  }
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    plain(500, `dashboard: ${path.basename(file)} is missing from the installation`);
    return true;
  }
  res.writeHead(200, {
    "content-type": CONTENT_TYPES[path.extname(file)] ?? "application/octet-stream",
    "content-length": String(size),
    "cache-control": "no-cache",
    "x-content-type-options": "nosniff",
  });
  if (req.method === "HEAD") res.end();
  else createReadStream(file).pipe(res);
  return true;
}
