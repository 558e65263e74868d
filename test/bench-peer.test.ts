// Tests of the fair-peer plumbing of the benchmarks (bench/common.ts): the environment every
// PyTorch child gets, the peer_cpu measure and its OVER flag, and, where Debian's python3-torch is
// installed, that the environment really reaches the OpenBLAS and OpenMP inside a torch child
// (asked through OpenBLAS's own openblas_get_num_threads). Not: a benchmark.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { peerCpu, peerEnv, peerOverLabel, type ResultLine } from "../bench/common.js";

const line = (threads: number, peer_cpu: number | null): ResultLine => ({
  bench: "b", case: "c", threads, value: 1, unit: "ms", peer: "p", peer_value: 1, ratio: 1, peer_cpu,
});

test("peer environment pins OpenMP, OpenBLAS and MKL to the thread count", () => {
  for (const t of [1, 2, 7]) {
    const e = peerEnv(t);
    assert.equal(e.OMP_NUM_THREADS, String(t));
    assert.equal(e.OPENBLAS_NUM_THREADS, String(t));
    assert.equal(e.MKL_NUM_THREADS, String(t));
    assert.equal(e.OMP_WAIT_POLICY, "PASSIVE");
  }
});

test("peer_cpu = CPU s / wall s; OVER above 1.1 × threads", () => {
  assert.equal(peerCpu({ cpu_s: 3, wall_s: 1.5 }), 2);
  assert.equal(peerCpu({ cpu_s: 3 }), null);
  assert.equal(peerCpu({ cpu_s: 1, wall_s: 0 }), null);
  assert.equal(peerOverLabel(line(1, 1.82)), true); // the "1 thread" PyTorch at 182% CPU
  assert.equal(peerOverLabel(line(1, 1.1)), false);
  assert.equal(peerOverLabel(line(2, 2.19)), false);
  assert.equal(peerOverLabel(line(2, 2.21)), true);
  assert.equal(peerOverLabel(line(1, null)), false);
});

const py = "/usr/bin/python3";
const haveTorch = existsSync(py) && spawnSync(py, ["-c", "import torch, ctypes; ctypes.CDLL('libopenblas.so.0')"]).status === 0;

test("a torch child in peerEnv(t) runs OpenBLAS and OpenMP with t threads", { skip: !haveTorch && "python3-torch with OpenBLAS not installed" }, () => {
  const script = "import torch, ctypes\nb = ctypes.CDLL('libopenblas.so.0')\nprint(b.openblas_get_num_threads(), torch.get_num_threads())";
  for (const t of [1, 2]) {
    const r = spawnSync(py, ["-c", script], { encoding: "utf8", env: { ...process.env, ...peerEnv(t) } });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split(" ").map(Number), [t, t], `threads ${t}`);
  }
});
