// Tests of the native GEMM's `auto` path choice (src/backend/native/gemm-calibrate.ts) and of the
// built-in GEMM's dynamic multi-piece scheduling (native/gemm.cc): the calibration's picks follow
// its own measurements, it is cached per CPU and build and invalidated when either changes, a
// cache that routes classes to different paths gives the same results as the ref backend, and
// large single GEMMs split into pieces (row pieces re-using a thread's packed B, column pieces,
// multi-block B) match ref. Not: a benchmark; the GFLOP/s values themselves are not asserted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createBackend } from "../src/backend/index.js";
import type { Backend } from "../src/backend/spec.js";
import { addonPath, loadAddon } from "../src/backend/native/addon.js";
import { BLAS_MARGIN, cacheable, buildIdentity, calibrationFile, cpuIdentity, denseClass, GEMM_SHAPE_CLASSES, groupedClass, SMALL_FLOPS, THIN_DIM } from "../src/backend/native/gemm-calibrate.js";
import { assertClose, randn, TOL } from "./util.js";

const blasLinked = loadAddon().blasLinked;
const ref = createBackend({ name: "ref" });

function tmpDir(): string {
  return mkdtempSync(path.join(os.tmpdir(), "moe-gemm-auto-"));
}

/** One problem of each shape class through `be`, compared with ref. */
function checkAllClasses(be: Backend, label: string): void {
  const dense: [number, number, number][] = [
    [20, 30, 40], // small
    [16, 1200, 1000], // thin (M ≤ 64, flops above SMALL_FLOPS)
    [300, 260, 280], // large
  ];
  assert.deepEqual(dense.map(([M, K, N]) => denseClass(M, N, K)), ["small", "thin", "large"]);
  for (const [M, K, N] of dense) {
    const a = randn(Float32Array, M * K, 1), b = randn(Float32Array, N * K, 2);
    const want = new Float32Array(M * N), got = new Float32Array(M * N);
    ref.gemm(a, b, want, { M, N, K, transB: true });
    be.gemm(a, b, got, { M, N, K, transB: true });
    assertClose(got, want, TOL.f32Reduce, `${label} gemm ${M}x${K}x${N} (${denseClass(M, N, K)})`);
  }
  const sizes = Int32Array.from([170, 0, 230, 45]), K = 256, N = 200, rows = 445; // 45.6 MFLOP: class grouped
  const x = randn(Float32Array, rows * K, 3), w = randn(Float32Array, 4 * N * K, 4);
  assert.equal(groupedClass(sizes, K, N), "grouped");
  const want = new Float32Array(rows * N), got = new Float32Array(rows * N);
  ref.groupedGemm(x, w, want, sizes, { K, N, transW: true });
  be.groupedGemm(x, w, got, sizes, { K, N, transW: true });
  assertClose(got, want, TOL.f32Reduce, `${label} groupedGemm`);
  const dy = randn(Float32Array, rows * N, 5);
  const dwWant = new Float32Array(4 * N * K), dwGot = new Float32Array(4 * N * K);
  ref.groupedGemmWeightGrad(x, dy, dwWant, sizes, { K, N, transW: true });
  be.groupedGemmWeightGrad(x, dy, dwGot, sizes, { K, N, transW: true });
  assertClose(dwGot, dwWant, TOL.f32Reduce, `${label} groupedGemmWeightGrad`);
}

test("shape classes by closed form", () => {
  assert.equal(denseClass(16, 16, 16), "small");
  assert.equal(denseClass(256, 256, 255), "small"); // 2·256·256·255 < SMALL_FLOPS
  assert.equal(denseClass(256, 256, 256), "large"); // = SMALL_FLOPS
  assert.equal(denseClass(THIN_DIM, 4096, 4096), "thin");
  assert.equal(denseClass(4096, THIN_DIM, 4096), "thin");
  assert.equal(denseClass(THIN_DIM + 1, 4096, 4096), "large");
  assert.equal(denseClass(8, 8, 8, SMALL_FLOPS), "thin"); // a batched call counts its total flops
  assert.equal(groupedClass(Int32Array.from([10, 0, 20]), 64, 64), "small");
  assert.equal(groupedClass(Int32Array.from([0, 1024, 0]), 512, 1024), "large"); // one group: its dense class
  assert.equal(groupedClass(Int32Array.from([0, 32, 0]), 4096, 4096), "thin");
  assert.equal(groupedClass(Int32Array.from([512, 512]), 512, 1024), "grouped");
});

test("auto without a cache measures, picks the faster path per class, and matches ref", { skip: !blasLinked && "OpenBLAS not linked: auto is the built-in kernel" }, () => {
  for (const threads of [1, 2]) {
    const be = createBackend({ name: "native", threads, gemm: "auto", gemmCalibrationDir: null });
    const info = be.info();
    const a = info.gemmAuto!;
    assert.ok(a, "gemmAuto present");
    assert.equal(a.threads, threads);
    assert.equal(a.cached, false);
    assert.equal(a.cpu, cpuIdentity());
    assert.deepEqual(Object.keys(a.classes).sort(), [...GEMM_SHAPE_CLASSES].sort());
    for (const [cls, m] of Object.entries(a.classes)) {
      assert.ok(m.builtin > 0 && m.blas > 0, `${cls}: both paths measured`);
      // a quiet measurement decides; a disturbed one (not cacheable) leaves auto on the built-in kernel
      const want = cacheable(a) && m.blas > m.builtin * BLAS_MARGIN ? "blas" : "builtin";
      assert.equal(m.pick, want, `${cls}: pick follows the measurement`);
    }
    assert.equal(info.gemm, a.classes.large!.pick === "blas" ? "openblas" : a.kernels.builtin);
    checkAllClasses(be, `auto ${threads}t`);
  }
});

test("auto cache: written once, reused, invalidated by another CPU or build; a mixed routing matches ref", { skip: !blasLinked && "OpenBLAS not linked" }, () => {
  const dir = tmpDir();
  try {
    const first = createBackend({ name: "native", threads: 2, gemmCalibrationDir: dir }).info().gemmAuto!;
    const file = calibrationFile(dir, first.build);
    assert.equal(first.build, buildIdentity(addonPath()));
    if (!cacheable(first)) {
      // A measurement disturbed by other processes (or on a busy machine) is not cached; continue from a file written here.
      assert.equal(existsSync(file), false, "disturbed measurement not cached");
      const { cached: _c, ...entry } = first;
      writeFileSync(file, JSON.stringify({ version: 1, cpu: first.cpu, build: first.build, entries: { "2": entry } }));
    }
    assert.equal(first.cached, false);
    const onDisk = JSON.parse(readFileSync(file, "utf8"));
    assert.equal(onDisk.cpu, cpuIdentity());
    assert.equal(onDisk.build, first.build);
    assert.ok(onDisk.entries["2"], "entry for 2 threads");

    const second = createBackend({ name: "native", threads: 2, gemmCalibrationDir: dir }).info().gemmAuto!;
    assert.equal(second.cached, true);
    assert.deepEqual(second.classes, first.classes);

    // Another thread count adds an entry next to the first.
    const one = createBackend({ name: "native", threads: 1, gemmCalibrationDir: dir }).info().gemmAuto!;
    assert.deepEqual(Object.keys(JSON.parse(readFileSync(file, "utf8")).entries).sort(), cacheable(one) ? ["1", "2"] : ["2"]);

    // Route classes to both paths by hand (same CPU and build): results still equal ref.
    for (const picks of [["blas", "builtin", "blas", "builtin"], ["builtin", "blas", "builtin", "blas"]] as const) {
      const c = JSON.parse(readFileSync(file, "utf8"));
      GEMM_SHAPE_CLASSES.forEach((cls, i) => (c.entries["2"].classes[cls].pick = picks[i]));
      writeFileSync(file, JSON.stringify(c));
      const be = createBackend({ name: "native", threads: 2, gemmCalibrationDir: dir });
      const a = be.info().gemmAuto!;
      assert.equal(a.cached, true);
      assert.deepEqual(GEMM_SHAPE_CLASSES.map((cls) => a.classes[cls]!.pick), picks);
      checkAllClasses(be, `routed ${picks.join(",")}`);
    }

    // Another CPU model or another build: measured again, the file rewritten for this machine.
    for (const field of ["cpu", "build"]) {
      const c = JSON.parse(readFileSync(file, "utf8"));
      c[field] = "something else";
      writeFileSync(file, JSON.stringify(c));
      const again = createBackend({ name: "native", threads: 2, gemmCalibrationDir: dir }).info().gemmAuto!;
      assert.equal(again.cached, false, `${field} change invalidates`);
      if (!cacheable(again)) continue; // disturbed: not written back
      const now = JSON.parse(readFileSync(file, "utf8"));
      assert.notEqual(now[field], "something else");
      assert.deepEqual(Object.keys(now.entries), ["2"], "entries of the other machine/build dropped");
    }

    // A damaged file is measured again and replaced.
    writeFileSync(file, "{not json");
    const fixed = createBackend({ name: "native", threads: 2, gemmCalibrationDir: dir }).info().gemmAuto!;
    assert.equal(fixed.cached, false);
    if (cacheable(fixed)) assert.ok(JSON.parse(readFileSync(file, "utf8")).entries["2"]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("forced paths skip the calibration; bad options are named", () => {
  const b = createBackend({ name: "native", threads: 2, gemm: "builtin" }).info();
  assert.equal(b.gemmAuto, undefined);
  assert.match(b.gemm, /^builtin-/);
  if (blasLinked) assert.equal(createBackend({ name: "native", threads: 2, gemm: "blas" }).info().gemm, "openblas");
  if (!blasLinked) assert.equal(createBackend({ name: "native", threads: 2 }).info().gemmAuto, undefined);
  assert.throws(() => createBackend({ name: "native", gemm: "fast" as "auto" }), /gemm must be 'auto', 'blas' or 'builtin', got 'fast'/);
  assert.throws(() => createBackend({ name: "native", gemmCalibrationDir: "" }), /gemmCalibrationDir must be a non-empty path or null/);
});

test("built-in GEMM split into dynamic pieces (row pieces re-using packed B, column pieces, multi-block B) matches ref", () => {
  const be = createBackend({ name: "native", threads: 2, gemm: "builtin" });
  const shapes: [number, number, number][] = [
    [2000, 300, 300], // M > N: 4 row pieces, each thread's second piece re-uses its packed B
    [300, 300, 2000], // M ≤ N: 4 column pieces
    [2000, 1600, 100], // K > kcMax (AVX-512): B is several K blocks, so row pieces are limited to 2
  ];
  for (const [M, K, N] of shapes) {
    for (const [transA, transB] of [[false, false], [true, true]] as const) {
      const a = randn(Float32Array, M * K, 7), b = randn(Float32Array, K * N, 8);
      const want = new Float32Array(M * N), got = new Float32Array(M * N).fill(NaN);
      ref.gemm(a, b, want, { M, N, K, transA, transB });
      be.gemm(a, b, got, { M, N, K, transA, transB });
      assertClose(got, want, TOL.f32Reduce, `builtin 2t ${M}x${K}x${N} tA=${transA} tB=${transB}`);
      if (transA) continue;
      // beta accumulation through the pieces (C read once per piece)
      const c0 = randn(Float32Array, M * N, 9), want2 = Float32Array.from(c0), got2 = Float32Array.from(c0);
      ref.gemm(a, b, want2, { M, N, K, transA, transB, alpha: 0.5, beta: -1 });
      be.gemm(a, b, got2, { M, N, K, transA, transB, alpha: 0.5, beta: -1 });
      assertClose(got2, want2, TOL.f32Reduce, `builtin 2t beta ${M}x${K}x${N}`);
    }
  }
  // The same B twice in one batched call, and a batch whose B changes between calls: a packed B
  // is never re-used across calls or across different operands.
  const M = 1500, K = 200, N = 220;
  const a = randn(Float32Array, 2 * M * K, 10), b1 = randn(Float32Array, K * N, 11);
  const bb = new Float32Array(2 * K * N);
  bb.set(b1, 0);
  bb.set(b1, K * N);
  for (let call = 0; call < 2; call++) {
    if (call === 1) for (let i = 0; i < bb.length; i++) bb[i] = -bb[i]!;
    const want = new Float32Array(2 * M * N), got = new Float32Array(2 * M * N);
    ref.batchedGemm(a, bb, want, { batch: 2, M, N, K });
    be.batchedGemm(a, bb, got, { batch: 2, M, N, K });
    assertClose(got, want, TOL.f32Reduce, `batched call ${call}`);
  }
});
