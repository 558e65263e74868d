// The layout planner: the 1F1B simulator against its closed forms, the cost model against hand
// computation and the engine's own parameter counts, the partition search against brute force,
// and the papers' layouts (Skywork-MoE App. B.2, GRIN's PP+TP at 52 experts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { FAMILIES, HF_DEFAULTS, parameterCounts, parseHfConfig, resolveConfig } from "../src/model/config.js";
import { PRESET_NAMES, preset } from "../src/model/presets.js";
import { flopsFromBench, parseBenchLines, parseClusterSpec, parseQuantity, readClusterSpec, type ClusterSpec } from "../src/plan/cluster.js";
import { DEFAULT_COST, LayoutCost, PRECISIONS, collective, evenSplit, meanKeys, type CostOptions } from "../src/plan/cost.js";
import { paperModel, planModelFromConfig, planParameterCounts, withSizes, type PlanModel, type PlanRun } from "../src/plan/plan-model.js";
import { balancedPartition, evaluateLayout, plan } from "../src/plan/search.js";
import { loadModelSource } from "../src/plan/model-source.js";
import { oneFOneBOp, oneFOneBOrder, simulate1F1B, uniformClosedForm } from "../src/plan/simulate.js";
import { BACKEND_LINKS, autoLayout, executableLayout, fitLink, machineCluster } from "../src/plan/auto.js";
import { pollShareFormula } from "../bench/poll-share.js";
import { tpRankConfig } from "../src/train/machine-rates.js";
import type { HfConfig } from "../src/model/config.js";

const near = (a: number, b: number, rel = 1e-12) => assert.ok(Math.abs(a - b) <= rel * Math.max(1, Math.abs(b)), `${a} vs ${b}`);

test("1F1B simulation of equal stages gives the closed form (m+p−1)(f+b) and bubble (p−1)/(m+p−1)", () => {
  for (const p of [1, 2, 3, 4, 8]) {
    for (const m of [1, 2, 3, 8, 33]) {
      for (const [f, b] of [[1, 2], [0.3, 0.9], [1, 1]] as const) {
        const r = simulate1F1B({ fwd: Array(p).fill(f), bwd: Array(p).fill(b), p2p: Array(p - 1).fill(0) }, m);
        const cf = uniformClosedForm(p, m, f, b);
        near(r.step, cf.step);
        near(r.bubble, cf.bubble, 1e-9);
      }
    }
  }
});

test("1F1B with one micro-batch is the sequential sum, transfers included", () => {
  const t = { fwd: [1, 2, 3], bwd: [2, 5, 1], p2p: [0.25, 0.5] };
  near(simulate1F1B(t, 1).step, 1 + 2 + 3 + 2 + 5 + 1 + 2 * (0.25 + 0.5));
});

test("1F1B keeps min(p−i, m) micro-batches in flight on stage i (the memory model's assumption)", () => {
  const p = 5;
  for (const m of [2, 5, 12]) {
    const r = simulate1F1B({ fwd: [1, 1.5, 0.7, 1, 2], bwd: [2, 3, 1.4, 2, 4], p2p: [0.1, 0.1, 0.2, 0.1] }, m);
    for (let i = 0; i < p; i++) {
      // replay the stage's operations in time order and track forwards not yet backwarded
      const ops = r.ops.filter((o) => o.stage === i).sort((a, b) => a.start - b.start);
      let live = 0, peak = 0;
      for (const o of ops) {
        live += o.kind === "F" ? 1 : -1;
        peak = Math.max(peak, live);
      }
      assert.equal(peak, Math.min(p - i, m), `stage ${i}, m=${m}`);
      assert.equal(ops.length, 2 * m);
    }
    // every stage's order holds each micro-batch's F before its B; the computed order equals the list
    for (let i = 0; i < p; i++) {
      const order = oneFOneBOrder(p, m, i);
      order.forEach((o, k) => assert.equal(oneFOneBOp(p, m, i, k), o.kind === "F" ? o.mb : -1 - o.mb));
      for (let j = 0; j < m; j++) assert.ok(order.findIndex((o) => o.kind === "F" && o.mb === j) < order.findIndex((o) => o.kind === "B" && o.mb === j));
    }
  }
});

test("a slow stage bounds the steady state: step ≥ m·(f+b) of the slowest stage and ≥ the sequential time of one micro-batch", () => {
  const t = { fwd: [1, 1, 3, 1], bwd: [2, 2, 6, 2], p2p: [0, 0, 0] };
  for (const m of [1, 4, 16]) {
    const r = simulate1F1B(t, m);
    assert.ok(r.step >= m * 9 - 1e-12);
    assert.ok(r.step >= 6 + 12 - 1e-12);
    assert.ok(r.step <= (m + 3) * 9 + 1e-12); // never worse than equal stages as slow as the slowest
  }
});

test("cluster spec: units, defaults, unknown keys, bench records", () => {
  assert.equal(parseQuantity("80GB", "m"), 80e9);
  assert.equal(parseQuantity("80GiB", "m"), 80 * 1024 ** 3);
  near(parseQuantity("5us", "l"), 5e-6);
  assert.equal(parseQuantity("200GB/s", "b"), 200e9);
  assert.throws(() => parseQuantity("80 parsecs", "memory"), /memory: cannot read '80 parsecs'/);
  const c = parseClusterSpec({ devices_per_node: 4, memory: "16GB", flops: 1e12 });
  assert.equal(c.nodes, 1);
  assert.equal(c.interNode.bandwidth, 12.5e9);
  assert.throws(() => parseClusterSpec({ devices_per_node: 4, memory: "16GB", flops: 1e12, intra_nod: {} }), /unknown key 'intra_nod' \(did you mean 'intra_node'\?\)/);
  assert.throws(() => parseClusterSpec({ devices_per_node: 4, memory: "16GB" }), /give flops/);
  assert.throws(() => parseClusterSpec({ devices_per_node: 0, memory: "16GB", flops: 1 }), /devices_per_node: must be a positive integer/);
  const lines = [
    `{"bench":"gemm","case":"2048x1024x1024 builtin","threads":1,"value":40,"unit":"GFLOP/s","peer":null,"peer_value":null,"ratio":null}`,
    `{"bench":"gemm","case":"2048x1024x1024 builtin","threads":2,"value":70,"unit":"GFLOP/s","peer":null,"peer_value":null,"ratio":null}`,
    `{"bench":"gemm","case":"512x512x512 builtin","threads":2,"value":50,"unit":"GFLOP/s","peer":null,"peer_value":null,"ratio":null}`,
    `{"bench":"gemm","case":"64x64x64 builtin","threads":2,"value":20,"unit":"GFLOP/s","peer":null,"peer_value":null,"ratio":null}`,
    `{"bench":"train","case":"small","threads":2,"value":900,"unit":"tok/s","peer":null,"peer_value":null,"ratio":null}`,
    "# a table line, not JSON",
  ].join("\n");
  const recs = parseBenchLines(lines);
  assert.equal(recs.length, 5);
  assert.deepEqual(flopsFromBench(recs), { flops: 50e9, used: 3, threads: 2, kind: "gemm" });
  assert.equal(flopsFromBench(recs, "2048x1024").flops, 70e9);
  assert.equal(flopsFromBench(recs, "", 1).flops, 40e9);
  const dir = mkdtempSync(path.join(tmpdir(), "moe-plan-"));
  writeFileSync(path.join(dir, "bench.jsonl"), lines);
  writeFileSync(path.join(dir, "c.yaml"), "devices_per_node: 2\nmemory: 8GB\nbench: bench.jsonl\nbench_case: '2048x1024'\n");
  const fromFile = readClusterSpec(path.join(dir, "c.yaml"));
  assert.equal(fromFile.flops, 70e9);
  assert.match(fromFile.flopsSource, /median of 1 GEMM GFLOP\/s records at 2 threads/);
  // training-step records win: 0.5 of a 60 GFLOP/s peak and 0.4 of 50 → median of 30 and 20
  const withTrain = parseBenchLines(lines + "\n" + [
    `{"bench":"train_mfu","case":"default","threads":2,"value":0.5,"unit":"fraction of GEMM peak","peer":"gemm 2048x1024x1024","peer_value":60,"ratio":null}`,
    `{"bench":"train_mfu","case":"moe-50m","threads":2,"value":0.4,"unit":"fraction of GEMM peak","peer":"gemm 2048x1024x1024","peer_value":50,"ratio":null}`,
  ].join("\n"));
  assert.deepEqual(flopsFromBench(withTrain), { flops: 25e9, used: 2, threads: 2, kind: "train" });
  assert.equal(flopsFromBench(withTrain, "moe-50m").flops, 20e9);
});

test("the uneven split rule: 36 heads on 8 ranks are [5,5,5,5,4,4,4,4]", () => {
  assert.deepEqual(evenSplit(36, 8), [5, 5, 5, 5, 4, 4, 4, 4]);
  assert.deepEqual(evenSplit(24, 5), [5, 5, 5, 5, 4]);
  assert.deepEqual(evenSplit(24, 4), [6, 6, 6, 6]);
});

test("parameter counts equal the engine's for every preset", () => {
  for (const name of PRESET_NAMES) {
    const cfg = resolveConfig(preset(name));
    assert.equal(planParameterCounts(planModelFromConfig(cfg, name)).total, parameterCounts(cfg).total, name);
    assert.equal(planParameterCounts(planModelFromConfig(cfg, name)).active, parameterCounts(cfg).active, name);
  }
  // the papers' totals (moe-techniques.md §1): Skywork 146B / 22B active, GRIN 41.9B / 6.6B
  const sky = planParameterCounts(paperModel("skywork-moe")), grin = planParameterCounts(paperModel("grin-moe"));
  near(sky.total / 1e9, 146, 0.01);
  near(sky.active / 1e9, 22, 0.04);
  near(grin.total / 1e9, 41.9, 0.01);
  near(grin.active / 1e9, 6.6, 0.01);
});

// A tiny Mixtral: L=2, C=8, NH=2, KVH=1, HS=4, E=4, K=2, F=6, V=16; T=4, B=1.
const tinyHf = {
  model_type: "mixtral", vocab_size: 16, hidden_size: 8, intermediate_size: 6, num_hidden_layers: 2, num_attention_heads: 2,
  num_key_value_heads: 1, num_local_experts: 4, num_experts_per_tok: 2, max_position_embeddings: 64,
};
const tiny = planModelFromConfig(resolveConfig(parseHfConfig(tinyHf)), "tiny");
const tinyRun: PlanRun = { seqLen: 4, microBatch: 1, globalBatch: 4 };
const f32NoZero: CostOptions = { ...DEFAULT_COST, precision: PRECISIONS.f32!, zero1: false, flashAttention: true, expertImbalance: 1 };
const bigCluster = (over: Record<string, unknown> = {}): ClusterSpec => parseClusterSpec({ devices_per_node: 8, memory: "1TB", flops: 1e12, ...over });

test("memory of a tiny model on one rank equals the hand computation", () => {
  const lc = new LayoutCost(tiny, { ...tinyRun, globalBatch: 1 }, bigCluster(), { dp: 1, tp: 1, pp: 1, expert: "etp", ep: 1 }, f32NoZero);
  const s = lc.stage(0, 0, 2, 0);
  // parameters: per layer attention 8·(2+2·1)·4 + 2·4·8 + 2·8 norms = 208, router 4·8 = 32, experts 4·3·8·6 = 576;
  // embedding 16·8, head 16·8, final norm 8 → 2·816 + 264 = 1896 (= the engine's count)
  assert.equal(s.denseParams + s.expertParams, 1896);
  assert.equal(s.denseParams + s.expertParams, parameterCounts(resolveConfig(parseHfConfig(tinyHf))).total);
  assert.equal(s.memory.weights, 1896 * 4);
  assert.equal(s.memory.grads, 1896 * 4);
  assert.equal(s.memory.optimizer, 1896 * 8);
  // activations (f32, N = 4): attention 4·(2·4·8 + 4·4·4 + 4·2·4) + 4·4·2 (lse) = 672;
  // MoE 4·2·4·8 + 8·4·4 (router logits, probs) + 4·(2·4)·(8 + 3·6) = 256 + 128 + 832 = 1216;
  // per layer 1888, two layers 3776, final norm in/out 4·2·4·8 = 256 → 4032 for one micro-batch in flight
  assert.equal(s.memory.activations, 4032);
  assert.equal(s.memory.transient, 8 * 4 * 16); // fp32 logits + gradient
  assert.equal(s.memory.total, 1896 * 16 + 4032 + 512);
  // recompute the first layer: it keeps only its input (4·4·8 = 128) and one layer is rematerialised
  const r = lc.stage(0, 0, 2, 1);
  assert.equal(r.memory.activations, 128 + 1888 + 256);
  assert.equal(r.memory.transient, 1888 + 512);
  // the backward gains one layer's forward
  near(r.bwd - s.bwd, lc.layer[0]!.fwdFlops / 1e12);
});

test("TP shards, ZeRO-1 and expert parallelism divide memory as stated", () => {
  const run = { ...tinyRun, globalBatch: 2 };
  const tp2 = new LayoutCost(tiny, run, bigCluster(), { dp: 1, tp: 2, pp: 1, expert: "etp", ep: 1 }, f32NoZero).stage(0, 0, 2, 0);
  // per rank: attention 8·(1+2·1)·4 + 1·4·8 + 16 = 144 (the one KV head replicated), router 32, experts 4·3·8·3 = 288;
  // vocab-parallel embedding and head 8·8 each, final norm 8
  assert.equal(tp2.denseParams, 2 * (144 + 32) + 64 + 64 + 8);
  assert.equal(tp2.expertParams, 2 * 288);
  const ep = new LayoutCost(tiny, run, bigCluster(), { dp: 2, tp: 1, pp: 1, expert: "ep", ep: 2 }, { ...f32NoZero, zero1: true }).stage(0, 0, 2, 0);
  assert.equal(ep.expertParams, 2 * 2 * 3 * 8 * 6); // 2 of 4 experts per rank
  // ZeRO-1: dense state over dp = 2, expert state over dp/ep = 1
  assert.equal(ep.memory.optimizer, (ep.denseParams * 8) / 2 + ep.expertParams * 8);
  const edp = new LayoutCost(tiny, run, bigCluster(), { dp: 1, tp: 2, pp: 1, expert: "edp", ep: 2 }, f32NoZero).stage(0, 0, 2, 0);
  assert.equal(edp.expertParams, 2 * 2 * 3 * 8 * 6); // whole experts, 2 per rank
  assert.ok(tp2.fwdComm > 0 && edp.fwdComm === tp2.fwdComm && ep.epComm > 0 && tp2.epComm === 0);
});

test("model FLOPs are 6 × (active non-embedding parameters) per token plus attention", () => {
  for (const m of [paperModel("skywork-moe"), paperModel("grin-moe"), tiny]) {
    const run = { seqLen: 4096, microBatch: 2, globalBatch: 8 };
    const lc = new LayoutCost(m, run, bigCluster(), { dp: 1, tp: 1, pp: 1, expert: "etp", ep: 1 }, f32NoZero);
    const N = run.microBatch * run.seqLen;
    // matmul parameters only: no embedding lookup, norms or biases
    const act = planParameterCounts(m).active - m.vocab * m.hidden - m.normParams * (1 + 2 * m.layers) - m.attnExtraParams * m.layers - (m.lmHeadBias ? m.vocab : 0);
    const attn = m.layers * 4 * N * meanKeys(run.seqLen, m.slidingWindow) * m.heads * m.headDim;
    near(lc.modelFlopsPerStep(), 3 * (2 * N * act + attn) * (run.globalBatch / run.microBatch), 1e-12);
  }
  near(meanKeys(8, 0), 4.5);
  near(meanKeys(8, 2), (1 + 2 * 7) / 8);
});

test("the partition search finds the brute-force min–max partition, per-stage recompute included", () => {
  // Skywork-sized layers, 10 of them on 3 stages; memory tight enough that stage 1 must recompute
  const m = withSizes(paperModel("skywork-moe"), { layers: 10 });
  const run = { seqLen: 4096, microBatch: 2, globalBatch: 24 };
  const cl = parseClusterSpec({ devices_per_node: 8, memory: "54GB", flops: 300e12 });
  const lc = new LayoutCost(m, run, cl, { dp: 1, tp: 4, pp: 3, expert: "edp", ep: 4 }, { ...f32NoZero, precision: PRECISIONS["bf16-mixed"]! });
  const got = balancedPartition(lc);
  assert.ok(got);
  let best = Infinity;
  for (let a = 1; a <= 8; a++) {
    for (let b = 1; a + b <= 9; b++) {
      const part = [a, b, 10 - a - b];
      let lo = 0, mx = 0;
      for (let i = 0; i < 3; i++) {
        const s = lc.minRecompute(i, lo, lo + part[i]!);
        mx = s ? Math.max(mx, s.fwd + s.bwd) : Infinity;
        lo += part[i]!;
      }
      best = Math.min(best, mx);
    }
  }
  near(Math.max(...got.map((s) => s.fwd + s.bwd)), best);
  // not the even split [4,3,3]: the first stage (3 micro-batches in flight) gets fewer layers
  assert.deepEqual(got.map((s) => s.layers), [3, 4, 3]);
  assert.ok(got.some((s) => s.recompute > 0), "the case should need recompute");
  assert.ok(got.every((s) => s.memory.total <= cl.memoryBytes));
});

test("search: layouts fit and are sorted; rejected shapes name their rule", () => {
  const cl = parseClusterSpec({ nodes: 2, devices_per_node: 4, memory: "2GB", flops: 1e12 });
  const r = plan(tiny, { seqLen: 4, microBatch: 1, globalBatch: 6 }, cl);
  assert.ok(r.layouts.length > 0);
  for (let i = 1; i < r.layouts.length; i++) assert.ok(r.layouts[i]!.step >= r.layouts[i - 1]!.step);
  for (const l of r.layouts) {
    assert.equal(l.layout.dp * l.layout.tp * l.layout.pp, 8);
    assert.ok(l.memory.every((m) => m.total <= cl.memoryBytes));
    assert.equal(l.layout.partition.reduce((a, b) => a + b, 0), 2);
  }
  const reasons = r.rejected.map((x) => `${x.shape}: ${x.reason}`).join("\n");
  assert.match(reasons, /dp8 tp1 pp1 etp: global batch 6 is not a multiple of micro-batch 1 × dp 8/);
  assert.match(reasons, /tp8 pp1 etp: tp 8 > max TP 4/);
  assert.match(reasons, /pp8 etp: pp 8 > 2 layers/);
  const oom = plan(tiny, { seqLen: 4, microBatch: 1, globalBatch: 8 }, parseClusterSpec({ devices_per_node: 1, memory: "10kB", flops: 1e12 }));
  assert.equal(oom.layouts.length, 0);
  assert.match(oom.rejected[0]!.reason, /^memory: even with every layer recomputed, stage 0 needs/);
  assert.throws(() => plan(tiny, tinyRun, cl, { partition: [1, 2] }), /sums to 3, the model has 2 layers/);
});

// Skywork-MoE App. B.2: the 24-layer example on A800-80GB, TP 2 with EDP, T = 4096, B = 2.
const a800 = (nodes: number) => parseClusterSpec({
  nodes, devices_per_node: 8, memory: "80GB", flops: 140.4e12, intra_node: { bandwidth: "200GB/s", latency: "5us" }, inter_node: { bandwidth: "25GB/s", latency: "10us" },
});

test("Skywork App. B.2: per-stage recompute and the uneven split beat Megatron's uniform layout by about 10%", () => {
  const sky24 = withSizes(paperModel("skywork-moe"), { layers: 24 });
  const run = { seqLen: 4096, microBatch: 2, globalBatch: 320 };
  const cl = a800(10); // 80 devices: tp2 × pp4 × dp10 or tp2 × pp5 × dp8
  const pp4 = plan(sky24, run, cl, { fix: { tp: 2, pp: 4, expert: "edp" } }).layouts[0]!;
  const pp5 = plan(sky24, run, cl, { fix: { tp: 2, pp: 5, expert: "edp" } }).layouts[0]!;
  assert.ok(!("rejected" in pp4.uniform) && !("rejected" in pp5.uniform));
  const megatron4 = pp4.uniform as Exclude<typeof pp4.uniform, { rejected: string }>;
  // Megatron: [6,6,6,6] with one recompute count on every stage, set by the first stage's memory
  assert.deepEqual(megatron4.layout.partition, [6, 6, 6, 6]);
  assert.ok(megatron4.layout.recompute.every((r) => r === megatron4.layout.recompute[0] && r > 0));
  // planned on the same 4 stages: recompute only where 1F1B holds more micro-batches (early stages)
  for (let i = 1; i < 4; i++) assert.ok(pp4.layout.recompute[i]! <= pp4.layout.recompute[i - 1]!);
  const gainSamePp = pp4.tokensPerDeviceSec / megatron4.tokensPerDeviceSec - 1;
  assert.ok(gainSamePp > 0.05 && gainSamePp < 0.15, `per-stage recompute gain ${gainSamePp}`);
  // moe-techniques.md §6: [5,5,5,5,4] on 5 stages instead of [6,6,6,6] on 4, at the same device count
  assert.deepEqual(pp5.layout.partition, [5, 5, 5, 5, 4]);
  assert.ok(pp5.layout.recompute[0]! >= Math.max(...pp5.layout.recompute.slice(1)));
  const gain = pp5.tokensPerDeviceSec / megatron4.tokensPerDeviceSec - 1;
  assert.ok(gain > gainSamePp && gain < 0.25, `5-stage uneven gain ${gain}`);
  // every planned stage fits; Megatron's [6,6,6,6] without recompute would not
  assert.ok(pp5.memory.every((m) => m.total <= cl.memoryBytes));
  const noRecompute = evaluateLayout(sky24, run, cl, { dp: 10, tp: 2, pp: 4, expert: "edp", ep: 2, partition: [6, 6, 6, 6], recompute: [0, 0, 0, 0] });
  assert.equal(noRecompute.fits, false);
});

test("GRIN: PP+TP without expert parallelism fits 52 experts on 64 GPUs of 80 GB", () => {
  const h100 = parseClusterSpec({
    nodes: 8, devices_per_node: 8, memory: "80GB", flops: 395.6e12, intra_node: { bandwidth: "450GB/s", latency: "5us" }, inter_node: { bandwidth: "50GB/s", latency: "10us" },
  });
  const grin52: PlanModel = withSizes(paperModel("grin-moe"), { experts: 52 });
  near(planParameterCounts(grin52).total / 1e9, 132.5, 0.01);
  const run = { seqLen: 4096, microBatch: 1, globalBatch: 512 };
  const r = plan(grin52, run, h100, { expertModes: ["etp"] });
  const best = r.layouts[0]!;
  assert.ok(best.layout.tp > 1 && best.layout.pp > 1, `best layout dp${best.layout.dp} tp${best.layout.tp} pp${best.layout.pp}`);
  assert.equal(best.layout.ep, 1);
  assert.ok(best.memory.every((m) => m.total <= 80e9));
  // data parallelism alone cannot hold it, nor TP alone within a node
  const why = new Map(r.rejected.map((x) => [x.shape, x.reason]));
  assert.match(why.get("dp64 tp1 pp1 etp")!, /^memory/);
  assert.match(why.get("dp8 tp8 pp1 etp")!, /^memory/);
  // at GRIN's released 16 experts the planner needs no TP beyond 2 (moe-techniques.md §6: TP beyond ~32 experts)
  const r16 = plan(paperModel("grin-moe"), run, h100, { expertModes: ["etp"] });
  assert.ok(r16.layouts[0]!.layout.tp <= 2);
  assert.ok(best.layout.tp > r16.layouts[0]!.layout.tp);
});

test("moe plan through the CLI: JSON report, table, clear errors", () => {
  const main = new URL("../src/cli/main.js", import.meta.url).pathname;
  const dir = mkdtempSync(path.join(tmpdir(), "moe-plan-cli-"));
  const spec = path.join(dir, "cluster.yaml");
  writeFileSync(spec, "nodes: 2\ndevices_per_node: 4\nmemory: 16GB\nflops: 1e12\ninter_node: { bandwidth: 10GB/s, latency: 20us }\n");
  const run = (...args: string[]) => spawnSync(process.execPath, [main, "plan", ...args], { encoding: "utf8" });
  const j = run("small-moe", "--cluster", spec, "--json", "--top", "3", "--global-batch", "64", "--seq-len", "256");
  assert.equal(j.status, 0, j.stderr);
  const rep = JSON.parse(j.stdout) as { layouts: { step: number; layout: { dp: number; tp: number; pp: number } }[]; devices: number; run: PlanRun };
  assert.equal(rep.devices, 8);
  assert.equal(rep.layouts.length, 3);
  assert.deepEqual(rep.run, { seqLen: 256, microBatch: 1, globalBatch: 64 });
  // the CLI's best equals the library's best on the same inputs
  const lib = plan(planModelFromConfig(resolveConfig(preset("small-moe")), "small-moe"), rep.run, readClusterSpec(spec));
  near(rep.layouts[0]!.step, lib.layouts[0]!.step);
  const t = run("skywork-moe", "--cluster", spec, "--nodes", "16", "--memory", "80GB", "--layers", "24", "--global-batch", "256");
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stdout, /#\s+dp\s+tp\s+pp\s+experts\s+partition/);
  assert.match(t.stdout, /why #1/);
  const bad = run("small-moe", "--cluster", spec, "--pp", "0");
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--pp must be a positive integer/);
  const unknown = run("no-such-model", "--cluster", spec);
  assert.match(unknown.stderr, /model 'no-such-model': not a paper model/);
});

test("model source: a model directory with a run's config.yaml gives the batch; a config.json file; errors", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "moe-plan-src-"));
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(tinyHf));
  writeFileSync(path.join(dir, "config.yaml"), "train:\n  seq_len: 64\n  batch_size: 4\n  grad_accum: 3\n");
  const src = loadModelSource(dir);
  assert.deepEqual(src.run, { seqLen: 64, microBatch: 4, globalBatch: 12 });
  assert.equal(planParameterCounts(src.model).total, 1896);
  assert.equal(planParameterCounts(loadModelSource(path.join(dir, "config.json")).model).total, 1896);
  assert.equal(loadModelSource("grin-moe").model.kvHeads, 8);
  writeFileSync(path.join(dir, "bad.json"), JSON.stringify({ ...tinyHf, num_local_expert: 4 }));
  assert.throws(() => loadModelSource(path.join(dir, "bad.json")), /unknown key 'num_local_expert'/);
});

test("parallel.plan=auto: the chosen layout is the fastest fitting executable one by evaluateLayout, with ZeRO-1 for dp > 1", () => {
  const cfg = resolveConfig(preset("tiny-mixtral"));
  const base = { cfg, backend: "threads" as const, seqLen: 64, microBatch: 2, gradAccum: 4, availableMemory: 8e9, flopsPerRank: 50e9 };
  const one = autoLayout({ ...base, ranks: 1, supports: { ep: false, pp: false } });
  assert.deepEqual([one.dp, one.ep, one.pp, one.zero], [1, 1, 1, 0]);
  assert.deepEqual(one.ppLayers, [cfg.numLayers]);
  // 2 ranks, data parallel only: the only executable shape is dp=2
  const two = autoLayout({ ...base, ranks: 2, supports: { ep: false, pp: false } });
  assert.deepEqual([two.dp, two.ep, two.pp, two.zero], [2, 1, 1, 1]);
  // with EP and PP executable, the choice has the smallest predicted step among every executable layout
  const all = autoLayout({ ...base, ranks: 2, supports: { ep: true, pp: true } });
  const model = planModelFromConfig(cfg, "run");
  const run = { seqLen: 64, microBatch: 2, globalBatch: 8 };
  const cluster: ClusterSpec = { nodes: 1, devicesPerNode: 2, memoryBytes: 4e9, flops: 50e9, flopsSource: "stated", intraNode: BACKEND_LINKS.threads, interNode: BACKEND_LINKS.threads };
  const cost: CostOptions = { ...DEFAULT_COST, precision: PRECISIONS["f32"]!, zero1: true, gradSync: "arena" };
  const steps: number[] = [];
  for (const L of [
    { dp: 2, tp: 1, pp: 1, expert: "etp" as const, ep: 1, partition: [cfg.numLayers], recompute: [0] },
    { dp: 2, tp: 1, pp: 1, expert: "ep" as const, ep: 2, partition: [cfg.numLayers], recompute: [0] },
  ]) steps.push(evaluateLayout(model, run, cluster, L, cost).step);
  for (let first = 1; first < cfg.numLayers; first++) {
    for (const rc of [[0, 0], [first, 0], [0, cfg.numLayers - first], [first, cfg.numLayers - first]]) {
      steps.push(evaluateLayout(model, run, cluster, { dp: 1, tp: 1, pp: 2, expert: "etp", ep: 1, partition: [first, cfg.numLayers - first], recompute: rc }, cost).step);
    }
  }
  assert.ok(Math.abs(all.predictedStep - Math.min(...steps)) <= 1e-12 * all.predictedStep, `${all.predictedStep} vs ${Math.min(...steps)}`);
  assert.match(all.reasons[0]!, /predicted [\d.]+ s\/step/);
  // grad_accum that does not split over 2 ranks, and a model that cannot fit: named errors
  assert.throws(() => autoLayout({ ...base, ranks: 2, gradAccum: 3, supports: { ep: false, pp: false } }), /no executable layout of 2 rank\(s\)/);
  assert.throws(() => autoLayout({ ...base, ranks: 1, availableMemory: 1e3, supports: { ep: false, pp: false } }), /no executable layout of 1 rank\(s\) fits/);
});

test("fitLink recovers α and β from exact ring all-reduce and all-gather times; machineCluster states the cores shared", () => {
  const link = { latency: 7e-6, bandwidth: 2.5e9 };
  for (const kind of ["allreduce", "gather"] as const) {
    const samples = [2, 4].flatMap((p) => [1024, 65536, 1 << 20, 16 << 20].map((bytes) => ({ ranks: p, bytes, seconds: collective(kind, bytes, p, link) })));
    const fit = fitLink(samples, kind);
    near(fit.latency, link.latency, 1e-9);
    near(fit.bandwidth, link.bandwidth, 1e-9);
  }
  // no latency in the samples: α = 0, β exact
  const flat = fitLink([1e3, 1e6].map((bytes) => ({ ranks: 2, bytes, seconds: bytes / 1e9 })), "allreduce");
  near(flat.latency, 0);
  near(flat.bandwidth, 1e9, 1e-9);
  assert.throws(() => fitLink([{ ranks: 2, bytes: 1024, seconds: 1e-5 }], "allreduce"), /need ≥ 2 samples/);
  const c = (ranks: number, threads = 1) => machineCluster({ ranks, cores: 2, threads, flopsPerRank: 8e10, memory: 8e9, link, source: "test" });
  assert.equal(c(4).flops, 8e10); // the rate of a rank computing alone; the sharing is the simulation's
  assert.equal(c(4).concurrency, 2);
  assert.equal(c(2, 2).concurrency, 1); // 2-thread ranks on 2 cores: one at full rate at a time
  assert.equal(c(4).memoryBytes, 2e9);
  assert.throws(() => machineCluster({ ranks: 2, cores: 0, threads: 1, flopsPerRank: 1, memory: 1, link, source: "x" }), /cores must be a positive integer/);
});

test("the engine's whole-arena gradient sync and the optimizer term match their closed forms", () => {
  const link = { latency: 5e-6, bandwidth: 2e9 };
  const cl: ClusterSpec = { nodes: 1, devicesPerNode: 4, memoryBytes: 1e12, flops: 1e9, flopsSource: "stated", intraNode: link, interNode: link };
  const u = 3e-9, n = 1e-9;
  const arena = (zero1: boolean): CostOptions => ({ ...f32NoZero, zero1, gradSync: "arena", optimizerSecondsPerParam: u, normSecondsPerParam: n });
  const P = planParameterCounts(tiny).total;
  const run = { ...tinyRun, globalBatch: 8 };
  // one rank: step = m (f + b) + P (u + n), no communication
  const one = new LayoutCost(tiny, run, cl, { dp: 1, tp: 1, pp: 1, expert: "etp", ep: 1 }, arena(false));
  const s1 = one.stage(0, 0, 2, 0);
  near(one.dpSync(s1), 0);
  near(one.optimizerTime(s1), P * (u + n));
  const e1 = evaluateLayout(tiny, run, cl, { dp: 1, tp: 1, pp: 1, expert: "etp", ep: 1, partition: [2], recompute: [0] }, arena(false));
  near(e1.step, 8 * (s1.fwd + s1.bwd) + P * (u + n), 1e-12);
  near(e1.optimizer, P * (u + n));
  // pp = 2, dp = 1: the whole arena is all-reduced over both ranks, 2α + P·4/β; Megatron's stage sync has no DP group
  const pp = new LayoutCost(tiny, run, cl, { dp: 1, tp: 1, pp: 2, expert: "etp", ep: 1 }, arena(false));
  const s0 = pp.stage(0, 0, 1, 0);
  near(pp.dpSync(s0), 2 * link.latency + (P * 4) / link.bandwidth, 1e-12);
  near(new LayoutCost(tiny, run, cl, { dp: 1, tp: 1, pp: 2, expert: "etp", ep: 1 }, { ...arena(false), gradSync: "stage" }).dpSync(s0), 0);
  // ZeRO-1 on 4 ranks (pp 2 × dp 2): all-reduce 6α + 1.5·4P/β, all-gather of parameters 3α + 0.75·4P/β; AdamW on P/4
  const z = new LayoutCost(tiny, run, cl, { dp: 2, tp: 1, pp: 2, expert: "etp", ep: 1 }, arena(true));
  near(z.dpSync(z.stage(1, 1, 2, 0)), 9 * link.latency + (2.25 * 4 * P) / link.bandwidth, 1e-12);
  near(z.optimizerTime(z.stage(1, 1, 2, 0)), (P / 4) * u + P * n);
  // TP 2 (the trainer's gradGroup): a TP rank's slice over its DP group, then across the stages;
  // tp 2 × dp 1: nothing to reduce; tp 2 × dp 2 × pp 2 with ZeRO-1: 2α + S·4/β twice (dp, then
  // pp), the gather over dp α + ½·4S/β, AdamW on S/2 (S = the TP rank's slice, arenaParams)
  near(new LayoutCost(tiny, run, cl, { dp: 1, tp: 2, pp: 1, expert: "etp", ep: 1 }, arena(true)).dpSync(s1), 0);
  const tz = new LayoutCost(tiny, run, { ...cl, devicesPerNode: 8 }, { dp: 2, tp: 2, pp: 2, expert: "etp", ep: 1 }, arena(true));
  const S = tz.arenaParams().dense + tz.arenaParams().expertAll;
  assert.ok(S < P, `a TP rank's slice ${S} < the model's ${P}`);
  near(tz.dpSync(s0), 2 * (2 * link.latency + (S * 4) / link.bandwidth) + link.latency + (0.5 * S * 4) / link.bandwidth, 1e-12);
  near(tz.optimizerTime(s0), (S / 2) * u + S * n);
  // EP 2 over dp 2 (a rank stores only its experts): dense all-reduced over dp, the held half of
  // the experts over expDp = 1 (free), nothing gathered; AdamW and the norm over dense + held experts
  const ep = new LayoutCost(tiny, run, cl, { dp: 2, tp: 1, pp: 1, expert: "ep", ep: 2 }, arena(false));
  const a = ep.arenaParams();
  assert.equal(a.dense + a.expertAll, P);
  assert.equal(a.expertAll, 2 * a.expertHeld);
  near(ep.dpSync(ep.stage(0, 0, 2, 0)), 2 * link.latency + (a.dense * 4) / link.bandwidth, 1e-12);
  near(ep.optimizerTime(ep.stage(0, 0, 2, 0)), (a.dense + a.expertHeld) * (u + n));
  // with ZeRO-1: plus the dense parameters all-gathered over dp (α + ½·4·dense/β); AdamW on dense/2 + the held experts
  const epz = new LayoutCost(tiny, run, cl, { dp: 2, tp: 1, pp: 1, expert: "ep", ep: 2 }, arena(true));
  near(epz.dpSync(epz.stage(0, 0, 2, 0)), 3 * link.latency + (1.5 * a.dense * 4) / link.bandwidth, 1e-12);
  near(epz.optimizerTime(epz.stage(0, 0, 2, 0)), (a.dense / 2 + a.expertHeld) * u + (a.dense + a.expertHeld) * n);
});

test("headEfficiency moves only the head's time: halving it adds head FLOPs / rate to the last stage's forward", () => {
  const cl: ClusterSpec = { nodes: 1, devicesPerNode: 2, memoryBytes: 1e12, flops: 1e9, flopsSource: "stated", intraNode: { bandwidth: 1e9, latency: 0 }, interNode: { bandwidth: 1e9, latency: 0 } };
  const shape = { dp: 1, tp: 1, pp: 2, expert: "etp" as const, ep: 1 };
  const full = new LayoutCost(tiny, tinyRun, cl, shape, f32NoZero), half = new LayoutCost(tiny, tinyRun, cl, shape, { ...f32NoZero, headEfficiency: 0.5 });
  near(half.stage(1, 1, 2, 0).fwdCompute - full.stage(1, 1, 2, 0).fwdCompute, full.headFlops() / 1e9);
  near(half.stage(1, 1, 2, 0).bwdCompute - full.stage(1, 1, 2, 0).bwdCompute, (2 * full.headFlops()) / 1e9);
  near(half.stage(0, 0, 1, 0).fwd, full.stage(0, 0, 1, 0).fwd);
  assert.throws(() => new LayoutCost(tiny, tinyRun, cl, shape, { ...f32NoZero, headEfficiency: 0 }), /headEfficiency must be a finite number > 0/);
  assert.throws(() => new LayoutCost(tiny, tinyRun, cl, shape, { ...f32NoZero, gradSync: "all" as never }), /gradSync must be "stage" or "arena"/);
});

test("1F1B on shared cores: processor sharing against its closed forms and bounds", () => {
  const t = { fwd: [1, 2, 0.5, 1.5], bwd: [2, 3, 1, 2.5], p2p: [0, 0, 0] };
  const m = 6;
  const work = t.fwd.reduce((a, f, i) => a + m * (f + t.bwd[i]!), 0);
  // one core: always some stage can run, so the step is all the work done one at a time
  near(simulate1F1B(t, m, { cores: 1 }).step, work, 1e-9);
  // one stage, 3 replicas on 2 cores: m (f + b) · 3/2
  near(simulate1F1B({ fwd: [1], bwd: [2], p2p: [] }, m, { cores: 2, replicas: 3 }).step, m * 3 * 1.5, 1e-9);
  // enough cores: the plain simulation (closed form for equal stages)
  near(simulate1F1B({ fwd: [1, 1], bwd: [2, 2], p2p: [0] }, m, { cores: 4, replicas: 2 }).step, uniformClosedForm(2, m, 1, 2).step);
  // fewer cores than ranks but more than run at once on average: between the plain step and plain × ranks / cores,
  // never below the work over the cores; the operations keep their dependencies
  const plain = simulate1F1B(t, m).step;
  for (const cores of [1.5, 2, 3, 3.9]) {
    const r = simulate1F1B(t, m, { cores });
    assert.ok(r.step >= plain - 1e-9 && r.step <= (plain * 4) / cores + 1e-9, `cores ${cores}: ${r.step} vs plain ${plain}`);
    assert.ok(r.step >= work / cores - 1e-9);
    const end = new Map(r.ops.map((o) => [`${o.kind}${o.stage}.${o.microBatch}`, o.end]));
    for (const o of r.ops) {
      if (o.kind === "F" && o.stage > 0) assert.ok(o.start >= end.get(`F${o.stage - 1}.${o.microBatch}`)! - 1e-9);
      if (o.kind === "B" && o.stage < 3) assert.ok(o.start >= end.get(`B${o.stage + 1}.${o.microBatch}`)! - 1e-9);
    }
  }
  assert.throws(() => simulate1F1B(t, m, { cores: 0 }), /cores must be > 0/);
  assert.equal(parseClusterSpec({ devices_per_node: 4, memory: "8GB", flops: 1e11, concurrency: 2 }).concurrency, 2);
  assert.equal(parseClusterSpec({ devices_per_node: 4, memory: "8GB", flops: 1e11 }).concurrency, undefined);
  assert.throws(() => parseClusterSpec({ devices_per_node: 4, memory: "8GB", flops: 1e11, concurrency: "two" }), /concurrency must be a number > 0/);
  // the optimizer, run by every rank at once, gets concurrency / ranks of the rate
  const link = { latency: 0, bandwidth: 1e9 };
  const cl = (concurrency?: number): ClusterSpec => ({ nodes: 1, devicesPerNode: 4, memoryBytes: 1e12, flops: 1e9, flopsSource: "stated", intraNode: link, interNode: link, ...(concurrency ? { concurrency } : {}) });
  const cost: CostOptions = { ...f32NoZero, gradSync: "arena", optimizerSecondsPerParam: 1e-9, normSecondsPerParam: 0 };
  const shape = { dp: 4, tp: 1, pp: 1, expert: "etp" as const, ep: 1 };
  const run = { ...tinyRun, globalBatch: 8 };
  const a = new LayoutCost(tiny, run, cl(), shape, cost), b = new LayoutCost(tiny, run, cl(2), shape, cost);
  near(b.optimizerTime(b.stage(0, 0, 2, 0)), 2 * a.optimizerTime(a.stage(0, 0, 2, 0)));
});

test("1F1B on shared cores with polling waiters: closed forms for full polling and for one micro-batch", () => {
  // pollShare 1: every rank always demands a core, so the rate is cores / ranks throughout: the plain step × ranks / cores
  for (const [p, r, cores, m] of [[2, 2, 2, 8], [4, 1, 2, 8], [3, 2, 4, 5]] as const) {
    const t = { fwd: Array(p).fill(1), bwd: Array(p).fill(2), p2p: Array(p - 1).fill(0) };
    near(simulate1F1B(t, m, { cores, replicas: r, pollShare: 1 }).step, (uniformClosedForm(p, m, 1, 2).step * p * r) / cores, 1e-9);
  }
  // one micro-batch: one stage runs at a time beside p−1 waiting ones, each op at min(1, cores / (r(1 + s(p−1))))
  const t = { fwd: [1, 2, 0.5, 1.5], bwd: [2, 3, 1, 2.5], p2p: [0, 0, 0] };
  const seq = t.fwd.reduce((a, f, i) => a + f + t.bwd[i]!, 0);
  for (const s of [0, 0.25, 0.6, 1]) {
    for (const [r, cores] of [[1, 1], [2, 2], [2, 3]] as const) {
      near(simulate1F1B(t, 1, { cores, replicas: r, pollShare: s }).step, seq * Math.max(1, (r * (1 + s * 3)) / cores), 1e-9);
    }
  }
  // the share only slows: monotone in pollShare, default 0 unchanged
  const base = simulate1F1B(t, 6, { cores: 2 }).step;
  near(simulate1F1B(t, 6, { cores: 2, pollShare: 0 }).step, base);
  assert.ok(simulate1F1B(t, 6, { cores: 2, pollShare: 0.5 }).step > base);
  assert.throws(() => simulate1F1B(t, 6, { cores: 2, pollShare: 1.5 }), /pollShare must be in \[0, 1\]/);
  // the cluster carries it into the cost model's simulation; the spec file key is validated
  assert.equal(parseClusterSpec({ devices_per_node: 4, memory: "8GB", flops: 1e11, concurrency: 2, poll_share: 0.5 }).pollShare, 0.5);
  assert.throws(() => parseClusterSpec({ devices_per_node: 4, memory: "8GB", flops: 1e11, poll_share: 2 }), /poll_share must be a number in \[0, 1\]/);
  const link = { latency: 0, bandwidth: 1e12 };
  const mc = (pollShare?: number) => machineCluster({ ranks: 4, cores: 2, threads: 1, flopsPerRank: 8e10, memory: 8e9, link, source: "test", ...(pollShare !== undefined ? { pollShare } : {}) });
  assert.equal(mc(1).pollShare, 1);
  const L = tiny.layers, layout = { dp: 2, tp: 1, pp: 2, expert: "etp" as const, ep: 1, partition: evenSplit(L, 2), recompute: [0, 0] };
  const e0 = evaluateLayout(tiny, tinyRun, mc(), layout, f32NoZero), e1 = evaluateLayout(tiny, tinyRun, mc(1), layout, f32NoZero);
  assert.ok(e1.pipeline > e0.pipeline, `${e1.pipeline} vs ${e0.pipeline}`);
  // the measured share from the waiters' CPU use beside c spinners: u = c·w·s / (c + w·s) inverts to s
  for (const s of [0, 0.3, 1]) {
    near(pollShareFormula(2, (2 * s) / (2 + s)), s, 1e-12);
    near(pollShareFormula(2, (2 * 3 * s) / (2 + 3 * s), 3), s, 1e-12); // 3 waiters of weight s
  }
});

test("parallel.plan=auto with tp: the choice is the fastest of the executable layouts, tensor-parallel ones (ETP, EDP, EP × ETP; with pp, recompute, ZeRO-1) included", () => {
  const cfg = resolveConfig(preset("tiny-mixtral"));
  const base = { cfg, backend: "threads" as const, seqLen: 64, microBatch: 2, gradAccum: 4, availableMemory: 8e9, flopsPerRank: 50e9 };
  const model = planModelFromConfig(cfg, "run"), run = { seqLen: 64, microBatch: 2, globalBatch: 8 }, Lc = cfg.numLayers;
  const cluster: ClusterSpec = { nodes: 1, devicesPerNode: 2, memoryBytes: 4e9, flops: 50e9, flopsSource: "stated", intraNode: BACKEND_LINKS.threads, interNode: BACKEND_LINKS.threads };
  const cost: CostOptions = { ...DEFAULT_COST, precision: PRECISIONS["f32"]!, zero1: true, gradSync: "arena" };
  const one = (o: Partial<Parameters<typeof evaluateLayout>[3]>) => ({ dp: 2, tp: 1, pp: 1, expert: "etp" as const, ep: 1, partition: [Lc], recompute: [0], ...o });
  // data parallel only (supports ep/pp off) plus tp: dp=2 against tp=2 ETP and tp=2 EDP
  const steps = [one({}), one({ dp: 1, tp: 2 }), one({ dp: 1, tp: 2, expert: "edp", ep: 2 })].map((l) => evaluateLayout(model, run, cluster, l, cost).step);
  const got = autoLayout({ ...base, ranks: 2, supports: { ep: false, pp: false, tp: true } });
  assert.ok(Math.abs(got.predictedStep - Math.min(...steps)) <= 1e-12 * got.predictedStep, `${got.predictedStep} vs ${steps}`);
  // without tp the trainer's old choice stands
  assert.equal(autoLayout({ ...base, ranks: 2, supports: { ep: false, pp: false } }).tp, 1);
  // 4 ranks, pp and tp supported: no slower than any hand-built executable layout, tp × pp,
  // tp × dp with ZeRO-1 and tp with recompute among them
  const c4: ClusterSpec = { ...cluster, devicesPerNode: 4 };
  const four = autoLayout({ ...base, ranks: 4, supports: { ep: true, pp: true, tp: true } });
  const rivals = [
    one({ dp: 2, tp: 2, expert: "ep", ep: 2 }), one({ dp: 2, tp: 2, expert: "ep", ep: 2, recompute: [1] }), one({ dp: 4, expert: "ep", ep: 2 }),
    one({ dp: 1, tp: 2, pp: 2, expert: "edp", ep: 2, partition: evenSplit(Lc, 2), recompute: [0, 0] }), one({ dp: 2, tp: 2, expert: "edp", ep: 2, recompute: [1] }),
    one({ dp: 4 }), one({ dp: 2, tp: 2 }), one({ dp: 1, tp: 2, pp: 2, partition: evenSplit(Lc, 2), recompute: [0, 0] }),
    one({ dp: 2, tp: 2, recompute: [1] }), one({ dp: 2, pp: 2, partition: evenSplit(Lc, 2), recompute: [0, 0] }), one({ dp: 1, tp: 4 }),
  ];
  for (const r of rivals) {
    assert.ok(executableLayout(r, 4), JSON.stringify(r));
    const t = evaluateLayout(model, run, c4, r, cost).step;
    assert.ok(four.predictedStep <= t * (1 + 1e-12), `${four.predictedStep} vs ${t} for ${JSON.stringify(r)}`);
  }
  if (four.tp > 1 && four.dp > 1) assert.equal(four.zero, 1); // each TP slice sharded over its DP group
  // the one candidate filter: dp must divide grad_accum; no pp with ep; tp: ETP with dp, pp,
  // recompute; EDP likewise; EP × ETP with dp and recompute, not with pp
  assert.equal(executableLayout(one({ dp: 1, tp: 2 }), 4), true);
  assert.equal(executableLayout(one({ dp: 1, tp: 2, expert: "edp", ep: 2 }), 4), true);
  assert.equal(executableLayout(one({ dp: 2, tp: 2, expert: "ep", ep: 2 }), 4), true);
  assert.equal(executableLayout(one({ dp: 2, tp: 2, expert: "ep", ep: 2, pp: 2, partition: [1, Lc - 1], recompute: [0, 0] }), 4), false);
  assert.equal(executableLayout(one({ dp: 1, tp: 2, pp: 2, partition: [1, Lc - 1], recompute: [0, 0] }), 4), true);
  assert.equal(executableLayout(one({ dp: 1, tp: 2, recompute: [1] }), 4), true);
  assert.equal(executableLayout(one({ dp: 1, tp: 2, expert: "edp", ep: 2, pp: 2, partition: [1, Lc - 1], recompute: [0, 0] }), 4), true);
  assert.equal(executableLayout(one({ dp: 1, tp: 2, expert: "edp", ep: 2, recompute: [1] }), 4), true);
  assert.equal(executableLayout(one({ dp: 2 }), 3), false);
  assert.equal(executableLayout(one({ dp: 1, pp: 2, expert: "ep", ep: 2, partition: [1, Lc - 1], recompute: [0, 0] }), 4), false);
});

test("tpRankConfig: a TP rank's model as one rank has the planner's per-rank layer FLOPs of that TP layout (even and uneven splits)", () => {
  const cl: ClusterSpec = { nodes: 1, devicesPerNode: 8, memoryBytes: 1e15, flops: 1, flopsSource: "x", intraNode: { bandwidth: 1, latency: 0 }, interNode: { bandwidth: 1, latency: 0 } };
  const flops = (hf: HfConfig, tp: number) =>
    new LayoutCost(planModelFromConfig(resolveConfig(hf), "x"), { seqLen: 64, microBatch: 4, globalBatch: 4 }, cl, { dp: 1, tp, pp: 1, expert: "etp", ep: 1 }, { ...DEFAULT_COST, precision: PRECISIONS.f32! }).layer.reduce((s, c) => s + c.fwdFlops, 0);
  let checked = 0;
  // the presets and the families' transformers defaults (Qwen2-MoE: moe_intermediate_size and a
  // shared expert; Skywork's default two-layer router is not supported, its layers are Mixtral's)
  const configs = [...PRESET_NAMES.map((n) => [n, preset(n)] as const), ...FAMILIES.filter((f) => f !== "skywork").map((f) => [f, parseHfConfig({ model_type: f, ...HF_DEFAULTS[f] })] as const)];
  for (const [name, hf] of configs) {
    for (const tp of [2, 4]) {
      const one = tpRankConfig(hf, tp), cfg = resolveConfig(hf), r = resolveConfig(one);
      assert.equal(r.headDim, cfg.headDim, `${name} tp=${tp}: head size kept`);
      assert.equal(r.hiddenSize, cfg.hiddenSize);
      assert.equal(r.numHeads, Math.ceil(cfg.numHeads / tp));
      assert.equal(flops(one, 1), flops(hf, tp), `${name} tp=${tp}`);
      checked++;
    }
  }
  assert.ok(checked >= 4);
  assert.throws(() => tpRankConfig(preset("small-moe"), 0), /tp must be a positive integer/);
});
