// The live routing dashboard, server side: the static page (src/serve/dashboard/, plain JS, no
// build step, no CDN; uPlot served from node_modules) for any node:http server to mount, and the
// shape and statistics of the expert-load JSON that the page reads in serving mode
// (`GET /v1/moe/expert-load`, also as SSE; built by serve/telemetry.ts).
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
