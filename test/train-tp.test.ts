// Tensor-parallel training against a single rank.
// 1. In process (threads ranks, test/tp-train-rank-program.ts): a tiny model sliced over tp = 2 and 4
//    ranks (even and uneven heads, GQA with kv heads split and replicated, dense FFN and MoE
//    layers with ETP, a shared expert, q/k/v and o biases, per-head q/k norm, tied embeddings,
//    a vocabulary that does not divide), and tp × dp at 4 ranks: the loss of four micro-batches
//    and every gradient, gathered from the slices, equal the plain one-rank forward/backward to
//    1e-5 relative; every TP rank reports the same loss; slicing then gathering gives the model back.
// 2. The layout refuses what it cannot split, with messages naming the cause.
// 3. End to end: `moe launch -- train parallel.tp=…` (tp=2, tp=2 × dp=2, tp=4; threads, and the
//    2-rank layouts over MPI when the binding and mpirun exist) gives the per-step losses of a one-rank run of
//    the same global batch to 1e-5 relative over 10 steps, and its clipped gradient norms; a tp=2 checkpoint (gathered from the
//    slices) resumes at tp=1 and a tp=1 one at tp=2 on the uninterrupted losses. tp=2 × dp=2 with
//    ZeRO-1 (moments of each TP slice sharded over its DP group) likewise, and its checkpoint
//    (moments gathered over DP, then TP) resumes at tp=2 × pp=2 (each pipeline stage tensor-parallel,
//    itself run end to end above), whose checkpoint resumes at tp=1, and that one at ZeRO-1 again.
//    EDP (parallel.edp=true: whole experts per TP rank) likewise, alone and × dp=2, in process and
//    end to end; an EDP rank's arena holds only its experts (closed-form size, uneven split), and
//    its gathered checkpoint resumes at tp=1 (and a tp=1 one at tp=2 EDP × dp=2 ZeRO-1).
//    EP × ETP (parallel.ep with parallel.tp: the experts split over the data-parallel replicas of
//    each TP rank, each column-split over tp): in process at 4 and 8 ranks (experts reducing over
//    expDp = 2), end to end with and without ZeRO-1 + recompute and at tp × pp × dp (8 ranks, with and
//    without ep=2 ZeRO-1), and a resume chain through ep alone.
// 4. parallel.tp / parallel.etp / parallel.edp are validated.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { loadTrainConfig } from "../src/train/config.js";
import { runThreads } from "../src/parallel/threads.js";
import { planTrainingTp, TensorParallelLayout } from "../src/parallel/tensor-parallel.js";
import { buildLayout } from "../src/model/params.js";
import { reference, type CasePatch } from "./tp-train-rank-program.js";
import { tinyConfig } from "./model-util.js";
import { closeLosses, launchTrain, losses, runCli, skipLaunch, tinyCorpus } from "./train-cli-util.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROGRAM = path.join(HERE, "tp-train-rank-program.js");

function assertNear(a: ArrayLike<number>, b: ArrayLike<number>, what: string): void {
  assert.equal(a.length, b.length, `${what}: length`);
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
  for (let i = 0; i < b.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 1e-6 * scale + 1e-5 * Math.abs(b[i]!), `${what}[${i}]: ${a[i]} vs ${b[i]}`);
}

const CASES: { name: string; tp: number; world?: number; edp?: boolean; ep?: number; patch: CasePatch }[] = [
  { name: "even heads (4 over 2), MoE layers", tp: 2, patch: { numHeads: 4, numKvHeads: 4 } },
  {
    name: "uneven heads (5 over 2), dense + MoE, q/k/v/o and head biases, uneven intermediate sizes", tp: 2,
    patch: { numHeads: 5, numKvHeads: 5, qkvBias: true, oBias: true, lmHeadBias: true, moe: { moeLayers: [true, false], expertIntermediateSize: 5 } },
  },
  {
    name: "GQA, one kv head replicated on both ranks, per-head q/k norm, shared expert, tied embeddings", tp: 2,
    patch: { numHeads: 3, numKvHeads: 1, qkNorm: "head", tieEmbeddings: true, moe: { sharedExpertIntermediateSize: 3 } },
  },
  {
    name: "GQA at tp=4: 2 kv heads each on 2 ranks, 6 q heads as [2,1,2,1], dense + MoE", tp: 4,
    patch: { numHeads: 6, numKvHeads: 2, oBias: true, moe: { moeLayers: [false, true] } },
  },
  { name: "GQA at tp=4: 4 kv heads split, capacity dispatch", tp: 4, patch: { numHeads: 8, numKvHeads: 4, qkvBias: true, moe: { dispatch: { kind: "capacity", capacityFactor: 1.0, policy: "probs", pad: false } } } },
  { name: "tp=2 × dp=2 at 4 ranks", tp: 2, world: 4, patch: { numHeads: 5, numKvHeads: 5, moe: { moeLayers: [true, false] } } },
  { name: "EDP: 5 experts as [3,2], shared expert, dense + MoE", tp: 2, edp: true, patch: { numHeads: 4, numKvHeads: 2, moe: { numExperts: 5, moeLayers: [true, false], sharedExpertIntermediateSize: 3 } } },
  { name: "EDP at tp=4: one expert per rank, capacity dispatch with padding", tp: 4, edp: true, patch: { numHeads: 4, numKvHeads: 4, moe: { dispatch: { kind: "capacity", capacityFactor: 1.0, policy: "probs", pad: true } } } },
  { name: "EDP × dp=2 at 4 ranks", tp: 2, world: 4, edp: true, patch: { numHeads: 4, numKvHeads: 1 } },
  { name: "EP × ETP: tp=2 × dp=2, ep=2 at 4 ranks, uneven expert columns, shared expert", tp: 2, world: 4, ep: 2, patch: { numHeads: 4, numKvHeads: 2, moe: { expertIntermediateSize: 5, sharedExpertIntermediateSize: 3 } } },
  { name: "EP × ETP: tp=2 × dp=4, ep=2 at 8 ranks (experts reduce over expDp = 2), capacity dispatch", tp: 2, world: 8, ep: 2, patch: { numHeads: 4, numKvHeads: 4, moe: { moeLayers: [true, false], dispatch: { kind: "capacity", capacityFactor: 1.0, policy: "probs", pad: false } } } },
];

for (const c of CASES) {
  test(`tp=${c.tp}${c.world ? ` world ${c.world}` : ""}${c.edp ? " edp" : ""}${c.ep ? ` ep=${c.ep}` : ""}: ${c.name}: single-rank loss and gradients`, async () => {
    const ref = reference(c.patch);
    assert.ok(ref.grads.some((g) => g !== 0));
    const r = await runThreads(c.world ?? c.tp, PROGRAM, [JSON.stringify(c.patch), String(c.tp), c.edp ? "edp" : c.ep ? `ep=${c.ep}` : "etp"], { timeoutMs: 60_000, output: "capture", report: false });
    assert.equal(r.code, 0, `${r.failure}\n${r.stderr.join("")}`);
    const line = r.stdout.join("").split("\n").find((l) => l.startsWith("RESULT "));
    assert.ok(line, r.stdout.join(""));
    const got = JSON.parse(line.slice(7)) as { loss: number; grads: number[]; tpLosses: number[]; sameParams: boolean };
    assert.ok(got.sameParams, "slice then gather gives the full parameters back");
    assert.ok(Math.abs(got.loss - ref.loss) <= 1e-5 * Math.abs(ref.loss), `loss ${got.loss} vs ${ref.loss}`);
    for (const l of got.tpLosses) assert.equal(l, got.loss, "every TP rank reports the same loss");
    assertNear(got.grads, ref.grads, "gradients");
  });
}

test("the TP layout splits unevenly and refuses what it cannot split", () => {
  const p = planTrainingTp(tinyConfig({ numHeads: 5, numKvHeads: 5, vocabSize: 11 }), 2);
  assert.deepEqual(p.vocab, [{ offset: 0, count: 6 }, { offset: 6, count: 5 }]);
  assert.deepEqual(p.heads.ranks.map((r) => r.qHeads), [3, 2]);
  const l = new TensorParallelLayout(tinyConfig({ numHeads: 5, numKvHeads: 5 }), 1, 2);
  assert.equal(l.localCfg.numHeads, 2);
  assert.equal(l.localCfg.vocabSize, 5);
  assert.throws(() => planTrainingTp(tinyConfig({ numHeads: 2 }), 4), /4 ranks but the model has only 2 attention heads/);
  assert.throws(() => planTrainingTp(tinyConfig({ qkNorm: "full" }), 2), /qk_norm 'full'/);
  assert.throws(() => planTrainingTp(tinyConfig({ numHeads: 4, numKvHeads: 4, vocabSize: 3 }), 4), /vocabulary of 3 is smaller than the 4 ranks/);
});

test("an EDP rank stores only its experts: its arena is smaller by the experts not held × 3·C·F per MoE layer", () => {
  // 5 experts over 2 ranks: [3, 2]; one MoE and one dense layer; tp=4: one expert each
  for (const [cfg, tp, held] of [
    [tinyConfig({ numHeads: 4, numKvHeads: 2, moe: { numExperts: 5, moeLayers: [true, false] } }), 2, [3, 2]],
    [tinyConfig({ numHeads: 4, numKvHeads: 4 }), 4, [1, 1, 1, 1]],
  ] as const) {
    const E = cfg.moe.numExperts, C = cfg.hiddenSize, F = cfg.moe.expertIntermediateSize;
    const moeLayers = cfg.moe.moeLayers.filter(Boolean).length;
    for (let r = 0; r < tp; r++) {
      const edp = new TensorParallelLayout(cfg, r, tp, true);
      assert.deepEqual(edp.experts, { first: held.slice(0, r).reduce((a, b) => a + b, 0), count: held[r] });
      // the same rank's slice with every expert stored (what EDP allocated before)
      const whole = buildLayout(edp.localCfg).layout.size;
      assert.equal(whole - edp.localLayout.size, (E - held[r]!) * 3 * C * F * moeLayers, `tp=${tp} rank ${r}`);
      assert.equal(edp.weights().data.length, edp.localLayout.size);
    }
  }
});

// ---- end to end through `moe launch -- train` ------------------------------------------------

const { base, common } = tinyCorpus("moe-tp-");
// tiny-mixtral (4 heads) with one kv head: replicated on the TP ranks; samples are collective under TP
const COMMON = [...common({ grad_accum: 2, steps: 10 }, ["model.num_kv_heads=1"]), "sample.every=5"];

function gradNorms(dir: string): number[] {
  return readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).gradNorm as number);
}

let oneRank: number[] | null = null;
function single(): number[] {
  if (!oneRank) {
    const dir = path.join(base, "one");
    runCli(["train", ...COMMON, `train.out_dir=${dir}`]);
    oneRank = losses(dir);
  }
  return oneRank;
}

const RUNS: [string, number, string[]][] = [
  ["tp=2", 2, ["parallel.tp=2"]],
  ["tp=2 × dp=2", 4, ["parallel.tp=2", "parallel.dp=2"]],
  ["tp=4 (heads 4, vocab 300 as 75 each)", 4, ["parallel.tp=4", "parallel.etp=4"]],
  ["tp=2 EDP (2 experts per rank)", 2, ["parallel.tp=2", "parallel.edp=true"]],
  ["tp=2 EDP × dp=2", 4, ["parallel.tp=2", "parallel.edp=true", "parallel.dp=2"]],
  ["tp=2 × dp=2 ZeRO-1", 4, ["parallel.tp=2", "parallel.dp=2", "parallel.zero=1"]],
  ["tp=2 × pp=2 (each stage tensor-parallel)", 4, ["parallel.tp=2", "parallel.pp=2"]],
  ["tp=2 recompute 1", 2, ["parallel.tp=2", "parallel.recompute=1"]],
  ["tp=2 EDP × pp=2", 4, ["parallel.tp=2", "parallel.edp=true", "parallel.pp=2"]],
  ["tp=2 EDP recompute 1", 2, ["parallel.tp=2", "parallel.edp=true", "parallel.recompute=1"]],
  ["tp=2 × dp=2, ep=2 (EP × ETP)", 4, ["parallel.tp=2", "parallel.dp=2", "parallel.ep=2"]],
  ["tp=2 × dp=2, ep=2 ZeRO-1 with recompute 1", 4, ["parallel.tp=2", "parallel.dp=2", "parallel.ep=2", "parallel.zero=1", "parallel.recompute=1"]],
  ["tp=2 × pp=2 × dp=2 (8 ranks)", 8, ["parallel.tp=2", "parallel.pp=2", "parallel.dp=2"]],
  ["tp=2 × pp=2 × dp=2, ep=2 ZeRO-1 (8 ranks)", 8, ["parallel.tp=2", "parallel.pp=2", "parallel.dp=2", "parallel.ep=2", "parallel.zero=1"]],
];

for (const backend of ["threads", "mpi"] as const) {
  for (const [name, nproc, extra] of RUNS) {
    test(`${backend}: moe launch --nproc ${nproc} -- train ${name} gives the single-rank losses over 10 steps`, (t) => {
      if (skipLaunch(t, backend, nproc)) return;
      const dir = path.join(base, `${backend}-${name.replace(/\W+/g, "-")}`);
      const out = launchTrain(backend, nproc, [...COMMON, ...extra, `train.out_dir=${dir}`]);
      closeLosses(losses(dir), single(), `${backend} ${name}`);
      if (extra.includes("parallel.zero=1") && !extra.includes("parallel.ep=2")) {
        // ZeRO-1: each rank's moments are its DP share (of 2) of its TP slice
        const m = /stores (\d+) of the model's \d+ parameters \(and as many gradients; AdamW moments: (\d+) entries each\)/.exec(out);
        assert.ok(m, out);
        assert.equal(Number(m[2]), Math.ceil(Number(m[1]) / 2));
      }
      // the clipped gradient norm (≈ 2 > optim.grad_clip = 1 here) counts every parameter once
      closeLosses(gradNorms(dir), gradNorms(path.join(base, "one")), `${backend} ${name} gradient norm`);
      const tpComm = readFileSync(path.join(dir, "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l).tpCommMs as number);
      assert.ok(tpComm.every((ms) => ms > 0), `tpCommMs recorded every step: ${tpComm.join(", ")}`);
    });
  }
}

test("a tp=2 checkpoint resumes at tp=1, and a tp=1 one at tp=2, on the uninterrupted single-rank losses", () => {
  const args = COMMON.filter((a) => !a.startsWith("train.steps"));
  const a = path.join(base, "resume-a"), b = path.join(base, "resume-b");
  launchTrain("threads", 2, [...args, "train.steps=5", "parallel.tp=2", `train.out_dir=${a}`]);
  runCli(["train", ...args, "train.steps=10", `train.out_dir=${a}`, "--resume"]);
  closeLosses(losses(a), single(), "tp=2 then tp=1");
  runCli(["train", ...args, "train.steps=5", `train.out_dir=${b}`]);
  launchTrain("threads", 2, [...args, "train.steps=10", "parallel.tp=2", `train.out_dir=${b}`, "--resume"]);
  closeLosses(losses(b), single(), "tp=1 then tp=2");
});

test("an EDP checkpoint (each rank's experts gathered) resumes at tp=1, and a tp=1 one at tp=2 EDP × dp=2 ZeRO-1, on the uninterrupted losses", () => {
  const args = COMMON.filter((a) => !a.startsWith("train.steps"));
  const a = path.join(base, "resume-edp-a"), b = path.join(base, "resume-edp-b"), edp = ["parallel.tp=2", "parallel.edp=true"];
  launchTrain("threads", 2, [...args, "train.steps=5", ...edp, `train.out_dir=${a}`]);
  runCli(["train", ...args, "train.steps=10", `train.out_dir=${a}`, "--resume"]);
  closeLosses(losses(a), single(), "tp=2 EDP then tp=1");
  runCli(["train", ...args, "train.steps=5", `train.out_dir=${b}`]);
  launchTrain("threads", 4, [...args, "train.steps=10", ...edp, "parallel.dp=2", "parallel.zero=1", `train.out_dir=${b}`, "--resume"]);
  closeLosses(losses(b), single(), "tp=1 then tp=2 EDP × dp=2 ZeRO-1");
});

test("an EP × ETP checkpoint (tp=2 × dp=2, ep=2, ZeRO-1) resumes at dp=2 ep=2 (no TP), and that one at tp=2 × dp=2 ep=2, on the uninterrupted losses", () => {
  const args = COMMON.filter((a) => !a.startsWith("train.steps"));
  const dir = path.join(base, "resume-tp-ep"), tpEp = ["parallel.tp=2", "parallel.dp=2", "parallel.ep=2"];
  launchTrain("threads", 4, [...args, "train.steps=4", ...tpEp, "parallel.zero=1", `train.out_dir=${dir}`]);
  launchTrain("threads", 2, [...args, "train.steps=7", "parallel.dp=2", "parallel.ep=2", `train.out_dir=${dir}`, "--resume"]);
  launchTrain("threads", 4, [...args, "train.steps=10", ...tpEp, `train.out_dir=${dir}`, "--resume"]);
  closeLosses(losses(dir), single(), "tp×ep ZeRO-1 → ep → tp×ep");
});

test("checkpoints carry over tp=2 × dp=2 ZeRO-1 → tp=2 × pp=2 → tp=1 → tp=2 × dp=2 ZeRO-1 on the uninterrupted single-rank losses", () => {
  const args = COMMON.filter((a) => !a.startsWith("train.steps") && !a.startsWith("sample.every"));
  const dir = path.join(base, "resume-zero"), zero = ["parallel.tp=2", "parallel.dp=2", "parallel.zero=1"];
  launchTrain("threads", 4, [...args, "train.steps=3", ...zero, `train.out_dir=${dir}`]);
  launchTrain("threads", 4, [...args, "train.steps=6", "parallel.tp=2", "parallel.pp=2", `train.out_dir=${dir}`, "--resume"]);
  runCli(["train", ...args, "train.steps=8", `train.out_dir=${dir}`, "--resume"]);
  launchTrain("threads", 4, [...args, "train.steps=10", ...zero, `train.out_dir=${dir}`, "--resume"]);
  closeLosses(losses(dir), single(), "tp=2 × dp=2 ZeRO-1, tp=2 × pp=2, tp=1, tp=2 × dp=2 ZeRO-1");
});

test("parallel.tp and parallel.etp are validated with messages naming the option", () => {
  assert.throws(() => loadTrainConfig(null, ["parallel.tp=0"]), /parallel\.tp must be positive/);
  assert.throws(() => loadTrainConfig(null, ["parallel.tp=2", "parallel.etp=1"]), /parallel\.etp \(1\) must equal parallel\.tp \(2\)/);
  assert.equal(loadTrainConfig(null, ["parallel.tp=2", "parallel.dp=2", "parallel.ep=2", "train.grad_accum=2"]).parallel.ep, 2); // EP × ETP
  assert.throws(() => loadTrainConfig(null, ["parallel.tp=2", "parallel.dp=2", "parallel.ep=2", "parallel.edp=true", "train.grad_accum=2"]), /parallel\.edp=true with parallel\.ep=2/);
  assert.equal(loadTrainConfig(null, ["parallel.tp=2", "parallel.pp=2"]).parallel.pp, 2);
  assert.equal(loadTrainConfig(null, ["parallel.tp=2", "parallel.plan=auto"]).parallel.plan, "auto"); // the plan sets tp
  assert.equal(loadTrainConfig(null, ["parallel.tp=2", "parallel.dp=2", "parallel.zero=1", "train.grad_accum=2"]).parallel.zero, 1);
  assert.equal(loadTrainConfig(null, ["parallel.tp=2"]).parallel.etp, null);
  assert.throws(() => loadTrainConfig(null, ["parallel.edp=true"]), /parallel\.edp=true needs parallel\.tp > 1/);
  assert.throws(() => loadTrainConfig(null, ["parallel.tp=2", "parallel.edp=true", "parallel.etp=2"]), /under EDP experts are whole/);
});
