// Files: --out naming a directory is refused before anything is written (export, logits,
// tokenizer train); write errors name the path and the cause, and so do directories that cannot
// be created; NaN weights are refused at load naming the tensor.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, mkdirSync, readdirSync, copyFileSync, chmodSync, existsSync, openSync, writeSync, closeSync, writeFileSync, statSync } from "node:fs";
import { makeDir, MakeDirError } from "../src/core/make-dir.js";
import { tmpdir } from "node:os";
import path from "node:path";
import { atomicWrite, writeFileAtomic, WriteError } from "../src/core/fs.js";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.js";
import { loadHfModel } from "../src/model/checkpoint.js";
import { createBackend } from "../src/backend/index.js";
import { latestCheckpoint } from "../src/train/checkpoints.js";
import { cli, corpus, tinyArgs } from "./robust-util.js";

const base = mkdtempSync(path.join(tmpdir(), "moe-robust-files-"));
const data = corpus(20);
let run: string | null = null;
async function trained(): Promise<string> {
  if (run) return run;
  const r = await cli(["train", ...tinyArgs(base, "run", data, ["train.steps=2"])]);
  assert.equal(r.code, 0, r.err);
  return (run = path.join(base, "run"));
}

test("--out DIR is refused before writing: export, logits, tokenizer train", async () => {
  const dir = await trained();
  const outDir = path.join(base, "outdir");
  mkdirSync(outDir);
  for (const args of [
    ["export", dir, "--out", outDir],
    ["logits", dir, "--ids", "1,2,3", "--out", outDir],
    ["tokenizer", "train", "--data", data, "--vocab-size", "300", "--out", outDir],
  ]) {
    const r = await cli(args);
    assert.equal(r.code, 1, `${args[0]}: ${r.err}`);
    assert.match(r.err, new RegExp(`cannot write ${outDir}: --out is a directory; name a file inside it \\(EISDIR\\)`), args[0]);
    assert.deepEqual(readdirSync(base).filter((f) => f.includes(".tmp-")), [], "no temp file in the parent");
  }
  // sibling: logits of a run directory with a real --out file works
  const ok = await cli(["logits", dir, "--ids", "1,2,3", "--out", path.join(outDir, "l.safetensors")]);
  assert.equal(ok.code, 0, ok.err);
  assert.deepEqual(SafetensorsFile.open(path.join(outDir, "l.safetensors")).info("logits").shape.slice(0, 1), [3]);
});

test("write errors name the path and the cause (EISDIR, EACCES, ENOENT)", () => {
  const d = path.join(base, "w");
  mkdirSync(d);
  assert.throws(() => writeFileAtomic(d, "x"), (e: unknown) => e instanceof WriteError && e.message === `cannot write ${d}: it is a directory; name a file (EISDIR)`);
  assert.throws(() => writeFileAtomic(path.join(d, "missing", "f.txt"), "x"), /cannot write .*missing\/f\.txt: its folder does not exist \(ENOENT\)/);
  if (process.getuid?.() !== 0) {
    const ro = path.join(base, "ro");
    mkdirSync(ro);
    chmodSync(ro, 0o500);
    assert.throws(() => writeFileAtomic(path.join(ro, "f.txt"), "x"), /cannot write .*ro\/f\.txt: permission denied \(EACCES\)/);
    chmodSync(ro, 0o700);
  }
  // a device is never replaced; ENOSPC (a write to /dev/full) names the target file and the cause
  if (existsSync("/dev/full")) {
    assert.throws(() => writeFileAtomic("/dev/full", "x"), /cannot write \/dev\/full: it is not a regular file/);
    const target = path.join(d, "full.bin");
    assert.throws(() => atomicWrite(target, () => {
      const fd = openSync("/dev/full", "w");
      try {
        writeSync(fd, "x");
      } finally {
        closeSync(fd);
      }
    }), new RegExp(`cannot write ${target}: no space left on the device \\(ENOSPC\\)`));
    assert.deepEqual(readdirSync(d), [], "no temp file left");
  }
});

test("NaN weights (lm_head, final norm) are refused at load naming the tensor; logits/eval fail", async () => {
  const dir = await trained();
  const ck = latestCheckpoint(dir)!;
  for (const name of ["model.norm.weight", "lm_head.weight"]) {
    const bad = path.join(base, `nan-${name}`);
    mkdirSync(bad);
    const f = SafetensorsFile.open(path.join(ck, "model.safetensors"));
    const tensors: Record<string, { dtype: "F32"; shape: number[]; data: Float32Array }> = {};
    for (const n of f.tensors.keys()) {
      const t = f.read(n);
      const data = Float32Array.from(t.data as Float32Array);
      if (n === name) data[1] = NaN;
      tensors[n] = { dtype: "F32", shape: [...t.info.shape], data };
    }
    writeSafetensors(path.join(bad, "model.safetensors"), tensors);
    for (const extra of ["config.json", "tokenizer.json"]) copyFileSync(path.join(ck, extra), path.join(bad, extra));
    assert.throws(() => loadHfModel(bad, createBackend({ name: "ref" }), { B: 1, T: 4 }), new RegExp(`non-finite values .*\\n.*${name.replace(/\./g, "\\.")}\\[1\\] = NaN`));
    const r = await cli(["logits", bad, "--ids", "1,2"]);
    assert.equal(r.code, 1);
    assert.match(r.err, new RegExp(`${name.replace(/\./g, "\\.")}\\[1\\] = NaN`));
  }
});


test("a run or cache directory that cannot be created names the path and the cause (a file in the way; /proc, which hangs Node's recursive mkdir)", async () => {
  const file = path.join(base, "afile");
  writeFileSync(file, "x");
  assert.throws(() => makeDir(path.join(file, "sub", "run"), "train.out_dir"), (e: unknown) => e instanceof MakeDirError && e.message === `cannot create ${path.join(file, "sub", "run")}: train.out_dir: ${file} is a file, not a directory (ENOTDIR)`);
  // sibling: nested missing parents are made; an existing directory is fine
  const deep = path.join(base, "a", "b", "c");
  assert.equal(makeDir(deep, "x"), deep);
  assert.ok(statSync(deep).isDirectory());
  assert.equal(makeDir(deep, "x"), deep);
  const r = await cli(["train", ...tinyArgs(base, "afile/run", data)]);
  assert.equal(r.code, 1);
  assert.match(r.err, /cannot create .*afile\/run: train\.out_dir: .*afile is a file, not a directory \(ENOTDIR\)/);
  if (existsSync("/proc/sys")) {
    const t0 = Date.now();
    const p = await cli(["train", ...tinyArgs(base, "procrun", data, ["data.cache_dir=/proc/sys/moe-cache"])]);
    assert.equal(p.code, 1, p.err);
    assert.match(p.err, /cannot create \/proc\/sys\/moe-cache: data\.cache_dir: the file system does not allow a directory here \(ENOENT\)/);
    assert.ok(Date.now() - t0 < 30000);
  }
});
