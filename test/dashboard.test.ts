// The live routing dashboard: expert-load JSON against closed forms, the static-file server
// against real HTTP requests, `moe dashboard` (the real CLI process) following a growing
// metrics.jsonl, and the page itself in a real browser (Debian's chromium via puppeteer-core):
// the heatmap must show the counts the JSON endpoints report, in training mode, in serving mode
// against a synthetic stream, and on the real `moe serve` server (MoeServer) under load.
// A screenshot of each mode is written to a temp folder of its own (kept; its path is printed).
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { appendFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { maxOverMean, normalizedEntropy, serveDashboardFile, type ExpertLoad } from "../src/serve/dashboard.js";
import { JsonlFollower } from "../src/cli/dashboard.js";
import { rng } from "./util.js";
import { createBackend } from "../src/backend/index.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights } from "../src/infer/engine-weights.js";
import { openModel } from "../src/infer/open.js";
import { DEFAULT_CHAT_STOP } from "../src/infer/chat.js";
import { MoeServer } from "../src/serve/server.js";
import { writeTinyModelDir } from "./gguf-fixture.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CHROMIUM = "/usr/bin/chromium";

// ---- expert-load JSON --------------------------------------------------------------------

test("expert-load statistics: max/mean and normalised entropy against closed forms", () => {
  assert.equal(maxOverMean([3, 1, 0, 0]), 3); // max 3, mean 1
  const h = -(0.75 * Math.log(0.75) + 0.25 * Math.log(0.25)) / Math.log(4);
  assert.ok(Math.abs(normalizedEntropy([3, 1, 0, 0]) - h) < 1e-12);
  assert.equal(maxOverMean([2, 2, 2, 2]), 1);
  assert.ok(Math.abs(normalizedEntropy([2, 2, 2, 2]) - 1) < 1e-12);
  // empty window or one expert: both statistics 0
  assert.equal(maxOverMean([0, 0]), 0);
  assert.equal(normalizedEntropy([0, 0]), 0);
  assert.equal(normalizedEntropy([5]), 0);
});

// ---- static files ------------------------------------------------------------------------

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

test("serveDashboardFile: the page, its script and style and uPlot, with content types; nothing else", async () => {
  const server = createServer((req, res) => {
    const p = (req.url ?? "/").split("?")[0]!; // raw, not normalised: traversal must be refused by serveDashboardFile itself
    if (!serveDashboardFile(req, res, p)) {
      res.writeHead(418);
      res.end("not mine");
    }
  });
  const base = await listen(server);
  try {
    const get = async (p: string, method = "GET") => {
      const r = await fetch(base + p, { method });
      return { status: r.status, type: r.headers.get("content-type"), body: await r.text() };
    };
    const page = await get("/dashboard");
    assert.equal(page.status, 200);
    assert.match(page.type!, /^text\/html/);
    assert.match(page.body, /<canvas id="heatmap"/);
    // every script and stylesheet the page references is served
    for (const m of page.body.matchAll(/(?:src|href)="(\/dashboard\/[^"]+)"/g)) {
      const r = await get(m[1]!);
      assert.equal(r.status, 200, m[1]);
      assert.match(r.type!, m[1]!.endsWith(".js") ? /^text\/javascript/ : /^text\/css/);
      assert.ok(r.body.length > 100, m[1]);
    }
    assert.match((await get("/dashboard/vendor/uPlot.iife.min.js")).body, /uPlot/);
    assert.equal((await get("/dashboard/")).status, 200);
    assert.equal((await get("/dashboard/nope.js")).status, 404);
    assert.equal((await get("/dashboard", "POST")).status, 405);
    assert.equal((await get("/other")).status, 418); // not handled: left to the caller
    // traversal, raw and encoded, never leaves the fixed table (fetch would normalise "..")
    for (const p of ["/dashboard/../package.json", "/dashboard/%2e%2e/package.json", "/dashboard/vendor/../../package.json", "/dashboard/..%2fpackage.json"]) {
      const status = await new Promise<number>((resolve, reject) => {
        const u = new URL(base);
        import("node:http").then(({ request }) =>
          request({ host: u.hostname, port: u.port, path: p }, (res) => { res.resume(); resolve(res.statusCode!); }).on("error", reject).end());
      });
      assert.equal(status, 404, p);
    }
  } finally {
    server.close();
  }
});

// ---- following metrics.jsonl -------------------------------------------------------------

test("JsonlFollower: complete lines only, a partial line held until its newline, truncation starts over", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-follow-"));
  try {
    const file = path.join(dir, "metrics.jsonl");
    const seen: unknown[] = [];
    let resets = 0;
    const warnings: string[] = [];
    const f = new JsonlFollower(file, (r) => seen.push(r), () => resets++, (m) => warnings.push(m));
    f.poll(); // no file yet
    writeFileSync(file, '{"step":1}\n{"step":2,"s":"α');
    f.poll();
    assert.deepEqual(seen, [{ step: 1 }]);
    appendFileSync(file, 'β"}\nnot json\n{"step":3}\n');
    f.poll();
    assert.deepEqual(seen, [{ step: 1 }, { step: 2, s: "αβ" }, { step: 3 }]);
    assert.equal(warnings.length, 1);
    writeFileSync(file, '{"step":1}\n');
    f.poll();
    assert.equal(resets, 1);
    assert.deepEqual(f.records, [{ step: 1 }]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

// ---- synthetic training records ----------------------------------------------------------

function trainRecord(step: number, r: () => number, layers = [1, 3, 5], E = 8) {
  return {
    step, loss: 5 / Math.sqrt(step), ce: 4.8 / Math.sqrt(step), balanceLoss: 0.2, lr: 3e-4, gradNorm: 1, skipped: false, tokens: 512, ms: 100, tokensPerSec: 5000 + 100 * r(),
    layers: layers.map((layer) => ({
      layer, alpha: 0.01 * (1 + layer), aux: 1 + r() / 10, z: 0.5 * r(), dropRate: 0.05 * r(), virtualDropRate: 0.1 * r(), entropy: 0.9 + r() / 10, maxOverMeanLoad: 1 + r(),
      tokensPerExpert: Array.from({ length: E }, () => Math.floor(r() * 300)),
    })),
  };
}
const line = (x: unknown) => JSON.stringify(x) + "\n";

async function startCli(runDir: string): Promise<{ child: ChildProcess; base: string }> {
  const child = spawn(process.execPath, [path.join(ROOT, "bin/moe.js"), "dashboard", runDir, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "", err = "";
  child.stderr!.on("data", (d) => (err += d));
  const base = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (d) => {
      out += d;
      const m = /at (http:\/\/[^\s]+)\/dashboard/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`moe dashboard exited ${code}: ${err}`)));
  });
  return { child, base };
}
async function stopCli(child: ChildProcess): Promise<void> {
  const code = await new Promise<number | null>((resolve) => {
    child.once("exit", (c) => resolve(c));
    child.kill("SIGTERM");
  });
  assert.equal(code, 0, "moe dashboard exits 0 on SIGTERM");
}

test("moe dashboard RUN_DIR: /v1/train/metrics as JSON and as an SSE stream that follows the file", async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-dash-cli-"));
  const r = rng(3);
  const recs = [1, 2, 3].map((s) => trainRecord(s, r));
  writeFileSync(path.join(dir, "metrics.jsonl"), recs.map(line).join(""));
  const { child, base } = await startCli(dir);
  try {
    assert.deepEqual(await (await fetch(`${base}/v1/train/metrics`)).json(), recs);
    assert.deepEqual(await (await fetch(`${base}/health`)).json(), { status: "ok", records: 3 });
    const ac = new AbortController();
    const res = await fetch(`${base}/v1/train/metrics?stream=true`, { signal: ac.signal });
    assert.match(res.headers.get("content-type")!, /^text\/event-stream/);
    const reader = res.body!.getReader();
    let buf = "";
    const events: unknown[] = [];
    const until = async (n: number) => {
      while (events.length < n) {
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended");
        buf += Buffer.from(value).toString("utf8");
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (ev.startsWith("data: ")) events.push(JSON.parse(ev.slice(6)));
        }
      }
    };
    await until(3);
    const more = [4, 5].map((s) => trainRecord(s, r));
    const text = more.map(line).join("");
    appendFileSync(path.join(dir, "metrics.jsonl"), text.slice(0, 40)); // a partial line first
    await new Promise((res) => setTimeout(res, 600));
    appendFileSync(path.join(dir, "metrics.jsonl"), text.slice(40));
    await until(5);
    assert.deepEqual(events, [...recs, ...more]);
    ac.abort();
  } finally {
    await stopCli(child);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("moe dashboard: a missing run directory is a clear error", async () => {
  const child = spawn(process.execPath, [path.join(ROOT, "bin/moe.js"), "dashboard", "/nonexistent/run"], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const code = await new Promise((resolve) => child.once("exit", resolve));
  assert.equal(code, 1);
  assert.match(err, /run directory \/nonexistent\/run does not exist/);
});

// ---- the page in a real browser ----------------------------------------------------------

async function launchBrowser(userDataDir: string) {
  const { default: puppeteer } = await import("puppeteer-core");
  return puppeteer.launch({
    executablePath: CHROMIUM,
    userDataDir,
    headless: true,
    args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
    protocolTimeout: 60_000,
  });
}
type Page = Awaited<ReturnType<Awaited<ReturnType<typeof launchBrowser>>["newPage"]>>;

/** What the page drew: the heatmap canvas's data attributes and the __dashboard mirror. */
async function drawn(page: Page) {
  return page.evaluate(() => {
    const cv = document.getElementById("heatmap") as HTMLCanvasElement;
    const d = (window as unknown as { __dashboard: { mode: string; events: number; series: Record<string, number>; heatmap: { counts: number[][]; layers: number[] } } }).__dashboard;
    return { counts: JSON.parse(cv.dataset.counts!) as number[][], layers: JSON.parse(cv.dataset.layers!) as number[], state: d.heatmap, series: d.series, mode: d.mode, events: d.events };
  });
}

test("browser, training mode: the heatmap shows the latest record's tokensPerExpert; series grow as the file grows", { timeout: 180_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) return t.skip(`chromium not installed at ${CHROMIUM} (apt-get install chromium); the browser test needs it`);
  const dir = mkdtempSync(path.join(tmpdir(), "moe-dash-train-"));
  const r = rng(11);
  const recs = Array.from({ length: 20 }, (_, i) => trainRecord(i + 1, r));
  const file = path.join(dir, "metrics.jsonl");
  writeFileSync(file, recs.map(line).join(""));
  const { child, base } = await startCli(dir);
  const browser = await launchBrowser(path.join(dir, "chromium-profile"));
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.setViewport({ width: 1400, height: 1000 });
    await page.goto(`${base}/dashboard`);
    await page.waitForFunction(() => (window as any).__dashboard?.series?.loss === 20, { timeout: 60_000 });
    let d = await drawn(page);
    assert.equal(d.mode, "train");
    const expect = (rec: ReturnType<typeof trainRecord>) => rec.layers.map((l) => l.tokensPerExpert);
    assert.deepEqual(d.layers, [1, 3, 5]);
    assert.deepEqual(d.counts, expect(recs[19]!));
    assert.deepEqual(d.state.counts, d.counts);
    for (const k of ["aux", "z", "alpha", "drop", "vdrop", "entropy", "max_over_mean"]) assert.equal(d.series[k], 20, k);

    // the trainer appends while the page is open (one record in two writes)
    const more = Array.from({ length: 5 }, (_, i) => trainRecord(21 + i, r));
    appendFileSync(file, more.slice(0, 4).map(line).join("") + line(more[4]).slice(0, 30));
    await page.waitForFunction(() => (window as any).__dashboard?.series?.loss === 24, { timeout: 30_000 });
    assert.deepEqual((await drawn(page)).counts, expect(more[3]!));
    appendFileSync(file, line(more[4]).slice(30));
    await page.waitForFunction(() => (window as any).__dashboard?.series?.loss === 25, { timeout: 30_000 });
    d = await drawn(page);
    assert.deepEqual(d.counts, expect(more[4]!));
    // the JSON endpoint agrees with what is drawn
    const all = (await (await fetch(`${base}/v1/train/metrics`)).json()) as ReturnType<typeof trainRecord>[];
    assert.deepEqual(d.counts, expect(all[all.length - 1]!));
    // the tooltip reads the same numbers as the drawn cell
    const box = (await page.$("#heatmap"))!;
    const bb = (await box.boundingBox())!;
    const geo = await page.evaluate(() => { const cv = document.getElementById("heatmap") as HTMLCanvasElement; return { w: cv.width, h: cv.height }; });
    const cellW = (geo.w - 44 - 2) / 8, cellH = (geo.h - 18 - 2) / 3;
    await page.mouse.move(bb.x + ((44 + cellW * 2.5) * bb.width) / geo.w, bb.y + ((18 + cellH * 1.5) * bb.height) / geo.h);
    const tip = await page.$eval("#tooltip", (el) => el.textContent);
    assert.match(tip!, new RegExp(`^layer 3 · expert 2: ${more[4]!.layers[1]!.tokensPerExpert[2]} tokens`));
    const shot = path.join(mkdtempSync(path.join(tmpdir(), "moe-dashboard-shot-")), "dashboard-train.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    t.diagnostic(`screenshot: ${shot}`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await stopCli(child);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("browser, serving mode: the heatmap shows the window counts the expert-load JSON reports", { timeout: 180_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) return t.skip(`chromium not installed at ${CHROMIUM} (apt-get install chromium); the browser test needs it`);
  const dir = mkdtempSync(path.join(tmpdir(), "moe-dash-serve-"));
  // a synthetic engine: 4 layers (layer 0 dense), 16 experts, skewed routing that drifts
  const L = 4, E = 16, r = rng(5), EVENTS = 6;
  const cum: (Float64Array | null)[] = [null, ...Array.from({ length: L - 1 }, () => new Float64Array(E))];
  let generated = 0, latest: ExpertLoad | null = null;
  const sent: ExpertLoad[] = [];
  const tick = (i: number): ExpertLoad => {
    const layers: ExpertLoad["layers"] = [];
    cum.forEach((c, l) => {
      if (!c) return;
      const w = Array.from({ length: E }, (_, e) => Math.floor(r() * 40 * (1 + ((e + i) % 5)))); // this tick's window counts
      w.forEach((x, e) => (c[e] += x));
      layers.push({ layer: l, tokens_per_expert: Array.from(c), window_tokens_per_expert: w, max_over_mean: maxOverMean(w), entropy: normalizedEntropy(w) });
    });
    generated += 37;
    latest = {
      object: "moe.expert_load", timestamp: 1_700_000_000_000 + i * 1000, num_layers: L, num_experts: E, layers,
      engine: { running: 3, waiting: i % 2, steps: i, prompt_tokens: 100, generated_tokens: generated, kv_cache_usage: 0.4, ttft_ms_recent: 20 + i },
    };
    return latest;
  };
  const streams = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    if (serveDashboardFile(req, res, u.pathname)) return;
    if (u.pathname !== "/v1/moe/expert-load") { res.writeHead(404); res.end(); return; }
    if (u.searchParams.get("stream") !== "true") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(latest ?? tick(0)));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    streams.add(res);
    req.on("close", () => streams.delete(res));
    let i = sent.length;
    const timer = setInterval(() => {
      if (sent.length >= EVENTS) { clearInterval(timer); return; } // then stay open, idle
      const j = tick(++i);
      sent.push(j);
      res.write(`data: ${JSON.stringify(j)}\n\n`);
    }, 150);
    req.on("close", () => clearInterval(timer));
  });
  const base = await listen(server);
  const browser = await launchBrowser(path.join(dir, "chromium-profile"));
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.setViewport({ width: 1400, height: 1000 });
    await page.goto(`${base}/dashboard`);
    await page.waitForFunction((n) => (window as any).__dashboard?.series?.tokens_per_s === n, { timeout: 60_000 }, EVENTS);
    const d = await drawn(page);
    assert.equal(d.mode, "serve");
    const reported = (await (await fetch(`${base}/v1/moe/expert-load`)).json()) as ExpertLoad;
    assert.deepEqual(reported, sent[EVENTS - 1]);
    assert.deepEqual(d.layers, reported.layers.map((l) => l.layer));
    assert.deepEqual(d.layers, [1, 2, 3]);
    assert.deepEqual(d.counts, reported.layers.map((l) => l.window_tokens_per_expert));
    for (const k of ["ttft", "requests", "kv", "max_over_mean", "entropy"]) assert.equal(d.series[k], EVENTS, k);
    const shot = path.join(mkdtempSync(path.join(tmpdir(), "moe-dashboard-shot-")), "dashboard-serve.png");
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok(existsSync(shot));
    t.diagnostic(`screenshot: ${shot}`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    streams.forEach((s) => s.end());
    server.closeAllConnections();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("browser, moe serve under load: the heatmap settles on the window counts /v1/moe/expert-load reports", { timeout: 240_000 }, async (t) => {
  if (!existsSync(CHROMIUM)) return t.skip(`chromium not installed at ${CHROMIUM} (apt-get install chromium); the browser test needs it`);
  const dir = mkdtempSync(path.join(tmpdir(), "moe-dash-live-"));
  writeTinyModelDir(path.join(dir, "tiny"), 77);
  const be = createBackend({ name: "native", threads: 1 });
  const opened = openModel(path.join(dir, "tiny"), be);
  const engine = new Engine(be, engineWeights(opened.weights), opened.tokenizer!, { maxModelLen: 128, maxNumSeqs: 8, blockSize: 4 });
  const server = new MoeServer({ port: 0, servedModelName: "tiny", staticHandler: serveDashboardFile });
  const port = await server.listen();
  server.setModel({ engine, tokenizer: opened.tokenizer!, chatTemplate: opened.chatTemplate, chatStop: DEFAULT_CHAT_STOP });
  const base = `http://127.0.0.1:${port}`;
  const browser = await launchBrowser(path.join(dir, "chromium-profile"));
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.setViewport({ width: 1400, height: 1000 });
    await page.goto(`${base}/dashboard`);
    await page.waitForFunction(() => (window as any).__dashboard?.mode === "serve" && (window as any).__dashboard.events >= 1, { timeout: 60_000 });
    // load: 8 concurrent completions while the page watches
    const bodies = await Promise.all(Array.from({ length: 8 }, (_, i) =>
      fetch(`${base}/v1/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "tiny", prompt: `the cat ${i}`, max_tokens: 24, temperature: 0 }) }).then((r) => r.json() as Promise<{ usage: { completion_tokens: number } }>)));
    assert.ok(bodies.every((b) => b.usage.completion_tokens >= 1), "every request generated");
    // the engine is idle now: the JSON stops changing, and the page must draw exactly it
    const reported = (await (await fetch(`${base}/v1/moe/expert-load`)).json()) as ExpertLoad;
    assert.ok(reported.layers.length > 0 && reported.layers.every((l) => l.window_tokens_per_expert.reduce((a, b) => a + b, 0) > 0), "tokens were routed");
    const want = reported.layers.map((l) => l.window_tokens_per_expert);
    await page.waitForFunction((w) => JSON.stringify((window as any).__dashboard.heatmap.counts) === w, { timeout: 30_000 }, JSON.stringify(want));
    const d = await drawn(page);
    assert.deepEqual(d.counts, want);
    assert.deepEqual(d.layers, reported.layers.map((l) => l.layer));
    assert.deepEqual((await (await fetch(`${base}/v1/moe/expert-load`)).json() as ExpertLoad).layers.map((l) => l.window_tokens_per_expert), want, "still idle");
    const shot = path.join(mkdtempSync(path.join(tmpdir(), "moe-dashboard-shot-")), "dashboard-live.png");
    await page.screenshot({ path: shot, fullPage: true });
    t.diagnostic(`screenshot: ${shot}`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
    await server.close(0);
    rmSync(dir, { recursive: true, force: true });
  }
});
