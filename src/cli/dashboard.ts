// `moe dashboard RUN_DIR`: the live routing dashboard for a training run. A node:http server
// that serves the page (serve/dashboard.ts) and the run's metrics.jsonl, following the file as
// the trainer appends to it:
//   GET /dashboard                      the page (training mode)
//   GET /v1/train/metrics               JSON array of every record so far
//   GET /v1/train/metrics?stream=true   SSE: every record so far, then each new one (`data: {json}`);
//                                       `event: reset` when the file is truncated (a new run)
//   GET /health                         {"status":"ok","records":n}
// The file is polled (stat every 250 ms, then read from the last offset); a partial last line
// is held until its newline arrives; a line that is not JSON is skipped with one warning.
// Not: the trainer (train/), the inference server (serve/server.ts), the page (serve/dashboard/).
import { positionalProblem } from "./arg-problem.js";
import { closeSync, openSync, readSync, statSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { serveDashboardFile } from "../serve/dashboard.js";
import { parseFlags } from "./args.js";

const POLL_MS = 250;
const HEARTBEAT_MS = 15_000;

/** Follows a growing JSONL file: complete lines become records; a truncated file starts over. */
export class JsonlFollower {
  readonly records: unknown[] = [];
  private offset = 0;
  private partial = "";
  private warned = false;

  constructor(readonly file: string, private readonly onRecord: (r: unknown) => void, private readonly onReset: () => void, private readonly warn: (msg: string) => void) {}

  /** Reads whatever was appended since the last call. */
  poll(): void {
    let size: number;
    try {
      size = statSync(this.file).size;
    } catch {
      return; // not written yet
    }
    if (size < this.offset) {
      this.records.length = 0;
      this.offset = 0;
      this.partial = "";
      this.onReset();
    }
    if (size === this.offset) return;
    const fd = openSync(this.file, "r");
    try {
      const buf = Buffer.alloc(size - this.offset);
      let got = 0;
      while (got < buf.length) {
        const n = readSync(fd, buf, got, buf.length - got, this.offset + got);
        if (n === 0) break;
        got += n;
      }
      this.offset += got;
      // a multi-byte character split across reads stays whole: decode only up to the last newline
      const lastNl = buf.lastIndexOf(10, got - 1);
      if (lastNl < 0) {
        this.partial += buf.subarray(0, got).toString("latin1");
        return;
      }
      const text = Buffer.concat([Buffer.from(this.partial, "latin1"), buf.subarray(0, lastNl)]).toString("utf8");
      this.partial = buf.subarray(lastNl + 1, got).toString("latin1");
      for (const line of text.split("\n")) {
        if (line.trim() === "") continue;
        let r: unknown;
        try {
          r = JSON.parse(line);
        } catch {
          if (!this.warned) this.warn(`moe dashboard: skipping a line of ${this.file} that is not JSON: ${line.slice(0, 80)}`);
          this.warned = true;
          continue;
        }
        this.records.push(r);
        this.onRecord(r);
      }
    } finally {
      closeSync(fd);
    }
  }
}

export interface TrainDashboardOptions {
  /** The run directory (holds metrics.jsonl, written by `moe train`). */
  runDir: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8001; 0 picks a free port. */
  port?: number;
  /** Warnings (a line that is not JSON). Default console.error. */
  warn?: (msg: string) => void;
}

export interface TrainDashboard {
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Starts the training dashboard server; resolves once it listens. */
export async function startTrainDashboard(opts: TrainDashboardOptions): Promise<TrainDashboard> {
  let st;
  try {
    st = statSync(opts.runDir);
  } catch {
    throw new Error(`moe dashboard: run directory ${opts.runDir} does not exist`);
  }
  if (!st.isDirectory()) throw new Error(`moe dashboard: ${opts.runDir} is not a directory`);
  const host = opts.host ?? "127.0.0.1";
  const port = opts.port ?? 8001;
  if (!(Number.isInteger(port) && port >= 0 && port <= 65535)) throw new Error(`moe dashboard: --port must be an integer in 0..65535, got ${port}`);

  const clients = new Set<ServerResponse>();
  const send = (chunk: string) => clients.forEach((c) => c.write(chunk));
  const follower = new JsonlFollower(
    path.join(opts.runDir, "metrics.jsonl"),
    (r) => send(`data: ${JSON.stringify(r)}\n\n`),
    () => send("event: reset\ndata: {}\n\n"),
    opts.warn ?? ((m) => console.error(m)),
  );
  follower.poll();
  const timer = setInterval(() => follower.poll(), POLL_MS);
  const heartbeat = setInterval(() => send(": ping\n\n"), HEARTBEAT_MS);

  const json = (res: ServerResponse, status: number, body: unknown, head = false) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { "content-type": "application/json", "content-length": String(Buffer.byteLength(text)), "cache-control": "no-cache" });
    res.end(head ? undefined : text);
  };
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (serveDashboardFile(req, res, url.pathname)) return;
    const head = req.method === "HEAD";
    if (req.method !== "GET" && !head) return json(res, 405, { error: { message: `method ${req.method} not allowed`, type: "invalid_request_error", param: null, code: null } });
    switch (url.pathname) {
      case "/":
        res.writeHead(302, { location: "/dashboard" });
        return res.end();
      case "/health":
        return json(res, 200, { status: "ok", records: follower.records.length }, head);
      case "/v1/train/metrics": {
        follower.poll();
        const stream = url.searchParams.get("stream");
        if (stream !== "true" || head) return json(res, 200, follower.records, head);
        res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive", "x-accel-buffering": "no" });
        res.write(follower.records.map((r) => `data: ${JSON.stringify(r)}\n\n`).join(""));
        clients.add(res);
        req.on("close", () => clients.delete(res));
        return;
      }
      default:
        return json(res, 404, { error: { message: `no route ${url.pathname}`, type: "not_found_error", param: null, code: null } });
    }
  };
  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) => reject(new Error(`moe dashboard: cannot listen on ${host}:${port}: ${e.message}`)));
    server.listen(port, host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const shownHost = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
  return {
    server,
    url: `http://${shownHost}:${addr.port}/dashboard`,
    close: () => {
      clearInterval(timer);
      clearInterval(heartbeat);
      clients.forEach((c) => c.end());
      clients.clear();
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      return done;
    },
  };
}

export async function runDashboard(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe dashboard", argv, { port: "number", host: "string", help: "boolean" });
  if (flags.help || positional.length !== 1) {
    if (!flags.help) console.error(positionalProblem("moe dashboard", "RUN_DIR", positional));
    console.log("usage: moe dashboard RUN_DIR [--port 8001] [--host 127.0.0.1]\n" +
      "  serves the live routing dashboard of a training run (follows RUN_DIR/metrics.jsonl); port 0 picks a free port");
    return flags.help ? 0 : 2;
  }
  const d = await startTrainDashboard({ runDir: positional[0]!, host: flags.host, port: flags.port });
  console.log(`moe dashboard: ${path.join(positional[0]!, "metrics.jsonl")} at ${d.url}`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  await d.close();
  return 0;
}
