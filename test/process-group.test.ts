// Process groups on both backends at 2 and 4 ranks: every collective bit for bit against a
// sequential computation in rank order (done inside each rank by test/pg-rank-program.ts), zero
// counts, sub-groups and the mesh, determinism (repeated runs, different chunking and the two
// backends give the same bits), and failures (throw, exit, kill, hang → timeout). Pure helpers
// (mesh coordinates, bucketing, mpirun flags, rank variables) are checked against closed forms.
// The MPI cases skip, saying why, when the binding or mpirun is missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { allocGroupBuffer, failThreadsGroup, runThreads, threadsGroupOver } from "../src/parallel/threads.js";
import { Worker } from "node:worker_threads";
import { pathToFileURL } from "node:url";
import { mpiAvailable } from "../src/parallel/mpi.js";
import { meshCoord, meshSizes } from "../src/parallel/mesh.js";
import { rankFromEnv } from "../src/parallel/world.js";
import { mpirunArgs } from "../src/cli/launch.js";
import { allreduceBucketed, evenSplit, flatten, planBuckets, singleGroup, unflatten } from "../src/parallel/process-group.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const program = path.join(here, "pg-rank-program.js");
const moe = path.resolve(here, "..", "..", "bin", "moe.js");

/** RESULT lines → hash per rank. */
function results(out: string, n: number): string[] {
  const h: string[] = new Array(n).fill("");
  for (const m of out.matchAll(/RESULT (\d+) ([0-9a-f]{64})/g)) h[Number(m[1])] = m[2]!;
  assert.ok(h.every((x) => x.length === 64), `every rank printed a RESULT line:\n${out}`);
  return h;
}

const threadsHashes = new Map<number, string[]>();

for (const n of [2, 4]) {
  test(`threads backend, ${n} ranks: every collective bit-exact against the sequential computation`, async () => {
    // 4 KiB slots force many rounds (5000-element buffers); the default 4 MiB slot takes one round.
    const small = await runThreads(n, program, ["all"], { slotBytes: 4096, timeoutMs: 30_000, output: "capture", report: false });
    assert.equal(small.failure, null, small.stderr.join(""));
    assert.equal(small.code, 0);
    const a = results(small.stdout.join(""), n);
    const big = await runThreads(n, program, ["all"], { timeoutMs: 30_000, output: "capture", report: false });
    assert.equal(big.code, 0, big.failure ?? "");
    assert.deepEqual(results(big.stdout.join(""), n), a, "same bits whatever the chunking (and on a repeated run)");
    threadsHashes.set(n, a);
  });
}

test("threads backend: a rank that throws ends every rank, names the rank and its error once", async () => {
  const t0 = Date.now();
  const r = await runThreads(2, program, ["throw"], { timeoutMs: 20_000, output: "capture", report: false });
  assert.equal(r.code, 1);
  assert.equal(r.failedRank, 1);
  assert.match(r.failure ?? "", /^rank 1 failed: Error: boom from rank 1/);
  assert.ok(!r.stdout.join("").includes("survived"), "rank 0 did not finish its second allreduce alone");
  assert.ok(Date.now() - t0 < 10_000);
});

test("threads backend: process.exit(3) in a rank ends every rank with code 3", async () => {
  const r = await runThreads(2, program, ["exit"], { timeoutMs: 20_000, output: "capture", report: false });
  assert.equal(r.code, 3);
  assert.equal(r.failedRank, 1);
  assert.equal(r.failure, "rank 1 exited with code 3");
});

test("threads backend: a hung rank ends every rank at the timeout (exit 124)", async () => {
  const t0 = Date.now();
  const r = await runThreads(2, program, ["hang"], { timeoutMs: 1500, output: "capture", report: false });
  const dt = Date.now() - t0;
  assert.equal(r.code, 124);
  assert.match(r.failure ?? "", /timed out after 1.5 s; ranks still running: 0, 1/);
  assert.ok(dt >= 1400 && dt < 8000, `ended at the timeout (${dt} ms)`);
});

test("moe launch --backend threads: exit code and one failure line", () => {
  const r = spawnSync(process.execPath, [moe, "launch", "--nproc", "2", "--timeout", "20", "--module", program, "--", "exit"], { encoding: "utf8" });
  assert.equal(r.status, 3, r.stderr);
  assert.equal(r.stderr.match(/rank 1 exited with code 3/g)?.length, 1, r.stderr);
  const bad = spawnSync(process.execPath, [moe, "launch", "--nproc", "0", "--", "info"], { encoding: "utf8" });
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /--nproc must be an integer in \[1, 256\], got 0/);
});

// ---- MPI -------------------------------------------------------------------------------------

const mpirun = spawnSync("mpirun", ["--version"], { encoding: "utf8" });
const mpiSkip = !mpiAvailable()
  ? "MPI binding not built (Open MPI was not found at build time: apt-get install openmpi-bin libopenmpi-dev, then node scripts/build-native.mjs --force)"
  : mpirun.error
    ? "mpirun not on PATH (apt-get install openmpi-bin)"
    : false;

function launchMpi(n: number, args: string[], timeout: number) {
  return spawnSync(process.execPath, [moe, "launch", "--nproc", String(n), "--backend", "mpi", "--timeout", String(timeout), "--module", program, "--", ...args], {
    encoding: "utf8",
    timeout: (timeout + 30) * 1000,
  });
}

for (const n of [2, 4]) {
  test(`mpi backend, ${n} ranks: every collective bit-exact, and the same bits as the threads backend`, { skip: mpiSkip }, () => {
    const r = launchMpi(n, ["all"], 60);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const h = results(r.stdout, n);
    const t = threadsHashes.get(n);
    if (t) assert.deepEqual(h, t, "mpi and threads give identical results");
  });
}

/** OVERLAP lines → [ms from start to the end of wait(), ms the transport reported] per rank. */
function overlapTimes(out: string, n: number): [number, number][] {
  const t: [number, number][] = [];
  for (const m of out.matchAll(/OVERLAP (\d+) ([\d.]+) ([\d.]+)/g)) t[Number(m[1])] = [Number(m[2]), Number(m[3])];
  assert.equal(t.filter(Boolean).length, n, out);
  return t;
}

test("mpi backend: a started allreduce completes while its rank's JS thread computes (allreduceStart/wait)", { skip: mpiSkip }, () => {
  // rank 0 spins synchronously for 1 s right after starting; rank 1's wait ends long before that
  const r = launchMpi(2, ["overlap"], 30);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const t = overlapTimes(r.stdout, 2);
  assert.ok(t[1]![0] < 500, `rank 1 waited ${t[1]![0]} ms (rank 0 was computing for 1000 ms): the allreduce did not progress in the background`);
  assert.ok(t[0]![0] >= 1000 && t[0]![1] < 500, `rank 0: ${t[0]} (its wait follows its 1 s of compute; the transport itself took less)`);
});

test("threads backend: a started allreduce runs inside wait() (the rank's thread does the reduction)", async () => {
  const r = await runThreads(2, program, ["overlap"], { timeoutMs: 30_000, output: "capture", report: false });
  assert.equal(r.code, 0, r.failure ?? r.stderr.join(""));
  const t = overlapTimes(r.stdout.join(""), 2);
  assert.ok(t[1]![0] >= 900, `rank 1 waited ${t[1]![0]} ms: it can finish only once rank 0 stops computing and waits`);
});

// Open MPI 4.1 sometimes loses its own notices while a job is torn down ("ORTE_ERROR_LOG: Data
// unpack would read past end of buffer … show_help.c"); only the killed-rank case relies on one.
const ORTE_HELP_LOST = /ORTE_ERROR_LOG: Data unpack would read past end of buffer in file .*show_help\.c/;

for (const [scenario, code, pattern] of [
  ["throw", 1, /rank 1 failed: Error: boom from rank 1/g],
  ["exit", 3, /moe: rank 1 exited with code 3/g],
  ["kill", 137, /process rank 1 .* exited on signal 9/g],
] as const) {
  test(`mpi backend: a rank that ${scenario === "kill" ? "is killed" : scenario === "exit" ? "calls process.exit(3)" : "throws"} ends every rank, named once`, { skip: mpiSkip }, () => {
    const t0 = Date.now();
    let r = launchMpi(2, [scenario], 30);
    if (scenario === "kill" && ORTE_HELP_LOST.test(r.stdout + r.stderr)) r = launchMpi(2, [scenario], 30);
    const out = r.stdout + r.stderr;
    assert.equal(r.status, code, out);
    assert.equal(out.match(pattern)?.length, 1, out);
    assert.ok(!out.includes("survived"), out);
    assert.ok(Date.now() - t0 < 50_000);
  });
}

test("mpi backend: a hung rank ends the job at the timeout (exit 124)", { skip: mpiSkip }, () => {
  const t0 = Date.now();
  const r = launchMpi(2, ["hang"], 2);
  assert.equal(r.status, 124, r.stdout + r.stderr);
  assert.match(r.stderr, /timed out after 2 s/);
  assert.ok(Date.now() - t0 < 20_000);
});

test("threads: a rank marked failed ends the others' blocking and async waits, naming it, instead of a hang", async () => {
  const slot = 1024, sab = allocGroupBuffer(2, slot);
  const g0 = threadsGroupOver(0, 2, sab, slot);
  // rank 1 (a worker thread) never joins the collective: 150 ms later it marks the group failed
  const url = pathToFileURL(path.join(here, "..", "src", "parallel", "threads.js")).href;
  const w = new Worker(`const { workerData: d } = require("node:worker_threads"); import(d.url).then((m) => setTimeout(() => m.failThreadsGroup(d.sab, 1), 150));`, { eval: true, workerData: { sab, url } });
  const t0 = performance.now();
  assert.throws(() => g0.allreduceSync(new Float32Array(8), "sum"), /threads group: rank 1 failed; the collective cannot complete/);
  assert.ok(performance.now() - t0 >= 100, "rank 0 waited for rank 1 until it failed");
  await new Promise((r) => w.once("exit", r));
  // later collectives, blocking or not, fail at once
  assert.throws(() => g0.barrierSync(), /rank 1 failed/);
  await assert.rejects(g0.allreduce(new Float64Array(2)), /rank 1 failed/);
  failThreadsGroup(sab, 0); // the first failure is the one reported
  assert.throws(() => g0.barrierSync(), /rank 1 failed/);
});

// ---- pure helpers ----------------------------------------------------------------------------

test("mesh: Megatron order (tp fastest, then dp, then pp) and the expert refold of each TP rank's replicas (ep fastest)", () => {
  const s = meshSizes(32, { pp: 2, tp: 2, ep: 4 });
  assert.deepEqual(s, { pp: 2, dp: 8, tp: 2, ep: 4, expDp: 2 });
  for (let r = 0; r < 32; r++) {
    const c = meshCoord(r, s);
    assert.equal(c.tp + 2 * (c.dp + 8 * c.pp), r);
    assert.equal(c.tp + 2 * (c.ep + 4 * (c.expDp + 2 * c.pp)), r);
  }
  // tp = 1: plain EP over the data-parallel ranks
  const e = meshSizes(8, { ep: 4 });
  for (let r = 0; r < 8; r++) assert.deepEqual([meshCoord(r, e).ep, meshCoord(r, e).expDp], [r % 4, Math.floor(r / 4)]);
  assert.throws(() => meshSizes(6, { tp: 4 }), /world size 6 is not a multiple of pp × tp = 4/);
  assert.throws(() => meshSizes(8, { dp: 2 }), /pp × dp × tp = 1 × 2 × 1 = 2, but the world has 8 ranks/);
  assert.throws(() => meshSizes(4, { ep: 3 }), /ep = 3 must divide dp = 4/);
  assert.throws(() => meshSizes(4, { tp: 2, ep: 4 }), /ep = 4 must divide dp = 2/);
});

test("bucketing: buckets by size and dtype, flatten/unflatten round trip, bucketed = per-tensor on one rank", async () => {
  const ts = [new Float32Array(3), new Float32Array(300), new Float32Array(2), new Int32Array(4), new Float32Array(1)];
  assert.deepEqual(planBuckets(ts, 1024), [[0], [1], [2], [3], [4]]);
  assert.deepEqual(planBuckets(ts, 4096), [[0, 1, 2], [3], [4]]);
  const a = Float32Array.of(1, 2), b = Float32Array.of(3);
  const flat = flatten([a, b]);
  assert.deepEqual([...flat], [1, 2, 3]);
  flat[2] = 9;
  unflatten(flat, [a, b]);
  assert.equal(b[0], 9);
  assert.throws(() => flatten([a, new Int32Array(1)]), /mix f32 and i32/);
  await allreduceBucketed(singleGroup(), [a, b]);
  assert.deepEqual([...a, ...b], [1, 2, 9]);
  assert.deepEqual(evenSplit(10, 4), { counts: [3, 3, 2, 2], offsets: [0, 3, 6, 8] });
});

test("single group: collectives are copies, bad arguments are named", async () => {
  const g = singleGroup();
  const recv = new Float64Array(2);
  await g.allgather(Float64Array.of(1, 2), recv);
  assert.deepEqual([...recv], [1, 2]);
  await assert.rejects(g.alltoallv(new Float32Array(2), [2], new Float32Array(2), [1]), /sends 2 elements to itself but expects 1/);
  await assert.rejects(g.broadcast(new Float32Array(1), 1), /root 1 is not a rank of this group \(size 1\)/);
  await assert.rejects(g.allreduce(new Float32Array(1), "avg" as "sum"), /op must be 'sum', 'max' or 'min'/);
});

test("mpirun flags: root, oversubscription, hostfile, timeout; rank variables of Open MPI, PMI and Slurm", () => {
  assert.deepEqual(mpirunArgs({ nproc: 4, timeout: 30, root: true, cores: 2 }), ["-n", "4", "--tag-output", "--allow-run-as-root", "--oversubscribe", "--map-by", "core", "--bind-to", "core:overload-allowed", "--timeout", "30"]);
  // the caller's own placement wins; not oversubscribed: Open MPI's default binding
  assert.deepEqual(mpirunArgs({ nproc: 4, timeout: 0, root: false, cores: 2, extra: "--bind-to none" }), ["-n", "4", "--tag-output", "--oversubscribe", "--bind-to", "none"]);
  assert.deepEqual(mpirunArgs({ nproc: 2, timeout: 0, root: false, cores: 2 }), ["-n", "2", "--tag-output"]);
  assert.deepEqual(mpirunArgs({ nproc: 2, timeout: 0, root: false, cores: 2, hostfile: "h" }), ["-n", "2", "--tag-output", "--hostfile", "h"]);
  assert.deepEqual(rankFromEnv({ OMPI_COMM_WORLD_RANK: "1", OMPI_COMM_WORLD_SIZE: "4" }), { rank: 1, size: 4, source: "OMPI_COMM_WORLD" });
  assert.deepEqual(rankFromEnv({ PMI_RANK: "0", PMI_SIZE: "2" }), { rank: 0, size: 2, source: "PMI" });
  assert.deepEqual(rankFromEnv({ SLURM_PROCID: "3", SLURM_NTASKS: "8" }), { rank: 3, size: 8, source: "SLURM" });
  assert.equal(rankFromEnv({}), null);
  assert.throws(() => rankFromEnv({ SLURM_PROCID: "8", SLURM_NTASKS: "8" }), /bad rank variables/);
});
