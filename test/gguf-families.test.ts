// GGUF for every MoE family under its llama.cpp architecture (model/gguf-families.ts):
//   - round trip: a tiny seeded model of each family exported (f32) and imported gives the same
//     config, bit-identical parameters and identical logits; `moe export` picks the architecture;
//     openModel opens each .gguf with its tokenizer;
//   - refusals name the feature llama.cpp's architecture lacks;
//   - llama.cpp (node-llama-cpp 3.21, CPU, F32 KV cache) loads each F32 export and its greedy
//     tokens equal ours for 20 tokens, and its next-token probabilities at every prompt position
//     are within 1e-4 of softmax of our logits. PhiMoE: llama.cpp runs phimoe through its phi3 graph
//     (RMSNorm + bias instead of LayerNorm, softmax top-2 renormalised instead of SparseMixer),
//     so its tokens are compared with our model computing exactly that (LayerNorm biases zero,
//     norm kind rms, router softmax_topk renormalised) — and shown to differ from HF PhiMoE's.
// Skipped (with a message) only when node-llama-cpp is not installed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseHfConfig, resolveConfig, type ModelConfig } from "../src/model/config.js";
import { buildLayout } from "../src/model/params.js";
import { MoeModel } from "../src/model/model.js";
import { createBackend } from "../src/backend/index.js";
import { generate } from "../src/infer/generate.js";
import { GgufFile } from "../src/io/gguf.js";
import { writeCheckpointTensors, type TensorToWrite } from "../src/io/safetensors.js";
import { exportModelGguf, familyModelToGguf, ggufIncompatibility, importModelGguf } from "../src/model/gguf-families.js";
import { openModel } from "../src/infer/open.js";
import { runExport } from "../src/cli/export.js";
import { runLogits } from "../src/cli/logits.js";
import { runInspect } from "../src/cli/model-commands.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { TINY_VOCAB, tinyHfConfig, tinyParams, tinyTokenizer } from "./gguf-fixture.js";
import { loadNodeLlamaCpp, type Llama, type NodeLlamaCpp, type Token } from "./node-llama.js";

const tok = tinyTokenizer();
const EOS = tok.eosId;
const common = { vocab_size: TINY_VOCAB, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, rms_norm_eps: 1e-5, rope_theta: 10000, max_position_embeddings: 256, bos_token_id: EOS, eos_token_id: EOS };

/** One tiny HF config per family, each exercising what its architecture carries. */
const FAMILIES: Record<string, { hf: Record<string, unknown>; arch: string }> = {
  mixtral: { hf: tinyHfConfig(EOS), arch: "llama" },
  qwen2_moe: {
    arch: "qwen2moe",
    hf: { ...common, model_type: "qwen2_moe", num_key_value_heads: 2, intermediate_size: 80, moe_intermediate_size: 32, shared_expert_intermediate_size: 48, num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: false },
  },
  qwen3_moe: {
    arch: "qwen3moe",
    hf: { ...common, model_type: "qwen3_moe", num_key_value_heads: 2, head_dim: 32, intermediate_size: 80, moe_intermediate_size: 32, num_experts: 4, num_experts_per_tok: 2, norm_topk_prob: true, tie_word_embeddings: true },
  },
  olmoe: {
    arch: "olmoe",
    hf: { ...common, model_type: "olmoe", num_key_value_heads: 4, intermediate_size: 48, num_experts: 4, num_experts_per_tok: 2, tie_word_embeddings: true },
  },
  phimoe: {
    arch: "phimoe",
    hf: { ...common, model_type: "phimoe", num_key_value_heads: 2, intermediate_size: 48, num_local_experts: 4, num_experts_per_tok: 2, attention_bias: true, lm_head_bias: true, router_jitter_noise: 0.01, sliding_window: null },
  },
};

function tiny(family: string, seed = 7, over: Record<string, unknown> = {}): { cfg: ModelConfig; params: Float32Array; hf: Record<string, unknown> } {
  const hf = { ...FAMILIES[family]!.hf, ...over };
  const cfg = resolveConfig(parseHfConfig(hf));
  return { cfg, params: tinyParams(cfg, seed), hf };
}

function exportInput(cfg: ModelConfig, params: Float32Array) {
  return { cfg, params, contextLength: 256, tokenizer: tok.json, bosTokenId: EOS, eosTokenId: EOS };
}

function logits(cfg: ModelConfig, params: Float32Array, ids: number[]): Float32Array {
  const model = new MoeModel(cfg, createBackend({ name: "native", threads: 1 }), { B: 1, T: ids.length });
  model.params.set(params);
  model.forward(Int32Array.from(ids), null, { train: false });
  return Float32Array.from(model.lastLogits());
}

const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-gguf-fam-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const PROMPT = [84, 258, 32, 99, 97, 116, 259, 263, 17, 200, 5];

test("every family: f32 export → import gives the same config, bit-identical parameters and logits", () => {
  for (const family of Object.keys(FAMILIES)) {
    const { cfg, params } = tiny(family);
    const file = path.join(tmp, `${family}-rt.gguf`);
    const res = exportModelGguf(file, exportInput(cfg, params), "f32");
    assert.equal(res.arch, FAMILIES[family]!.arch, family);
    assert.equal(GgufFile.open(file).getString("general.architecture"), FAMILIES[family]!.arch);
    const imp = importModelGguf(file);
    assert.equal(imp.cfg.family, family);
    assert.deepEqual(imp.cfg, cfg, family);
    assert.deepEqual(imp.params, params, family);
    assert.deepEqual(logits(imp.cfg, imp.params, PROMPT), logits(cfg, params, PROMPT), family);
    assert.equal(imp.tokenizer?.tokens.length, TINY_VOCAB);
    // Q8_0: same config; each value within half a quantisation step (≤ max|w| / 254 overall)
    const qfile = path.join(tmp, `${family}-rt-q8.gguf`);
    exportModelGguf(qfile, exportInput(cfg, params), "q8_0");
    const q = importModelGguf(qfile);
    assert.deepEqual(q.cfg, cfg, `${family} q8_0`);
    let amax = 0, dmax = 0;
    for (let i = 0; i < params.length; i++) {
      amax = Math.max(amax, Math.abs(params[i]!));
      dmax = Math.max(dmax, Math.abs(q.params[i]! - params[i]!));
    }
    assert.ok(dmax > 0 && dmax <= amax / 254 * 1.001, `${family} q8_0: max |Δ| ${dmax} vs bound ${amax / 254}`);
  }
});

test("tensor names and metadata follow llama.cpp's architectures", () => {
  const names = (family: string) => {
    const { cfg, params } = tiny(family);
    const c = familyModelToGguf(exportInput(cfg, params), "f32");
    return { t: new Map(c.tensors.map((x) => [x.name, x.shape])), md: new Map(c.metadata.map(([k, v]) => [k, (v as { value: unknown }).value])) };
  };
  const q2 = names("qwen2_moe");
  assert.deepEqual(q2.t.get("blk.0.ffn_gate_inp_shexp.weight"), [64]);
  assert.deepEqual(q2.t.get("blk.1.ffn_down_shexp.weight"), [64, 48]);
  assert.deepEqual(q2.t.get("blk.0.attn_k.bias"), [32]);
  assert.equal(q2.md.get("qwen2moe.expert_feed_forward_length"), 32);
  assert.equal(q2.md.get("qwen2moe.expert_shared_feed_forward_length"), 48);
  assert.ok(q2.t.has("output.weight"));
  const q3 = names("qwen3_moe");
  assert.deepEqual(q3.t.get("blk.0.attn_q_norm.weight"), [32]);
  assert.deepEqual(q3.t.get("blk.0.attn_q.weight"), [128, 64]);
  assert.equal(q3.md.get("qwen3moe.attention.key_length"), 32);
  assert.ok(!q3.t.has("output.weight"), "tied: qwen3moe reuses token_embd");
  const ol = names("olmoe");
  assert.deepEqual(ol.t.get("blk.0.attn_k_norm.weight"), [64]);
  assert.ok(ol.t.has("output.weight"), "olmoe requires output.weight (a copy when tied)");
  const ph = names("phimoe");
  for (const n of ["blk.0.attn_norm.bias", "blk.0.ffn_norm.bias", "output_norm.bias", "output.bias", "blk.1.attn_output.bias", "blk.1.attn_v.bias"]) assert.ok(ph.t.has(n), n);
  assert.equal(ph.md.get("moe_ts.router_jitter_noise"), 0.01);
  // qwen/olmoe/phimoe q rows are not permuted (NEOX rope): the GGUF tensor is the HF tensor
  const { cfg, params } = tiny("qwen3_moe");
  const { layout, names: nm } = buildLayout(cfg);
  const q = layout.byName.get(nm.layers[0]!.q)!;
  const c = familyModelToGguf(exportInput(cfg, params), "f32");
  assert.deepEqual(c.tensors.find((x) => x.name === "blk.0.attn_q.weight")!.data, params.subarray(q.offset, q.offset + q.size));
});

test("refusals name what the family's llama.cpp architecture cannot run", () => {
  const with_ = (family: string, over: Record<string, unknown>) => resolveConfig(parseHfConfig({ ...FAMILIES[family]!.hf, ...over }));
  const bad = (cfg: ModelConfig, re: RegExp) => {
    assert.match(ggufIncompatibility(cfg, 256) ?? "", re);
    const { layout } = buildLayout(cfg);
    assert.throws(() => familyModelToGguf({ cfg, params: new Float32Array(layout.size), contextLength: 256 }, "f32"), (e: unknown) => e instanceof Error && re.test(e.message) && /not supported/.test(e.message));
  };
  bad(with_("qwen2_moe", { norm_topk_prob: true }), /norm_topk_prob true .*never renormalises/);
  bad(with_("qwen2_moe", { shared_expert_intermediate_size: 0 }), /no shared expert/);
  bad(with_("qwen2_moe", { decoder_sparse_step: 2 }), /dense \(non-MoE\) layers/);
  bad(with_("qwen2_moe", { use_sliding_window: true, sliding_window: 32, max_window_layers: 0 }), /sliding window of 32/);
  bad(with_("qwen3_moe", { norm_topk_prob: false }), /always renormalises/);
  bad(with_("qwen3_moe", { attention_bias: true }), /attention biases/);
  bad(with_("olmoe", { num_key_value_heads: 2 }), /num_key_value_heads 2 ≠ num_attention_heads 4/);
  bad(with_("olmoe", { clip_qkv: 8 }), /clip_qkv 8/);
  bad(with_("olmoe", { norm_topk_prob: true }), /never renormalises/);
  bad(with_("phimoe", { rope_scaling: { type: "linear", factor: 2 } }), /RoPE scaling/);
  const sky = { model_type: "skywork", vocab_size: 64, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_experts: [4], moe_2layer_gate: false, moe_feature_no_mul_topk: true, max_position_embeddings: 256 };
  bad(resolveConfig(parseHfConfig({ ...sky, moe_use_logits_norm: true })), /router logit normalisation .*Skywork-MoE has no llama.cpp architecture/);
  assert.equal(ggufIncompatibility(resolveConfig(parseHfConfig(sky)), 256), null, "a Mixtral-equivalent Skywork exports as llama");
  // the refusal says which training option gives an exportable model
  const skyNorm = resolveConfig(parseHfConfig({ ...sky, moe_use_logits_norm: true }));
  assert.throws(() => familyModelToGguf(exportInput(skyNorm, new Float32Array(buildLayout(skyNorm).layout.size)), "f32"), /train with model.router=topk/);
  const llamaDense = resolveConfig(parseHfConfig({ model_type: "llama", vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64 }));
  assert.throws(() => ggufIncompatibility(llamaDense, 256), /dense model/);
});

test("moe export picks the family's architecture; openModel opens the .gguf with its tokenizer", async () => {
  const dir = path.join(tmp, "q2dir");
  const { cfg, params, hf } = tiny("qwen2_moe", 11);
  const { layout } = buildLayout(cfg);
  const tensors: Record<string, TensorToWrite> = {};
  for (const s of layout.hfTensors) tensors[s.name] = { dtype: "F32", shape: s.shape, data: params.slice(s.offset, s.offset + s.size) };
  mkdirSync(dir, { recursive: true });
  writeCheckpointTensors(dir, tensors);
  writeFileSync(path.join(dir, "config.json"), JSON.stringify(hf));
  writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tok.json));
  const out = path.join(tmp, "q2-cli.gguf");
  const log = console.log, err = console.error;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  console.error = (s: string) => lines.push(s);
  try {
    assert.equal(await runExport([dir, "--dtype", "f32", "--out", out]), 0);
  } finally {
    console.log = log;
    console.error = err;
  }
  assert.ok(lines.some((l) => l.startsWith(`wrote ${out} (qwen2moe,`)), lines.join("\n"));
  const m = openModel(out, createBackend({ name: "native", threads: 1 }));
  assert.deepEqual(m.cfg, cfg);
  assert.equal(m.hf.model_type, "qwen2_moe");
  assert.ok(m.tokenizer);
  assert.deepEqual(Array.from(m.tokenizer.encode(" the cat")), [258, 32, 99, 97, 116]);
  // moe logits and moe inspect accept the .gguf: logits equal the HF directory's
  const outs = [path.join(tmp, "l-dir.safetensors"), path.join(tmp, "l-gguf.safetensors")];
  const printed: string[] = [];
  console.log = (s: string) => printed.push(s);
  try {
    assert.equal(await runLogits([dir, "--ids", "5,17,200", "--out", outs[0]!]), 0);
    assert.equal(await runLogits([out, "--ids", "5,17,200", "--out", outs[1]!]), 0);
    assert.equal(await runInspect([out, "--json"]), 0);
  } finally {
    console.log = log;
  }
  const [a, b] = outs.map((f) => SafetensorsFile.open(f).read("logits").data);
  assert.equal(a!.length, 3 * TINY_VOCAB);
  assert.deepEqual(b, a);
  const info = JSON.parse(printed[printed.length - 1]!) as Record<string, unknown>;
  assert.equal(info.architecture, "qwen2moe");
  assert.equal(info.family, "qwen2_moe");
  assert.equal(info.sharedExpertSize, 48);
  await assert.rejects(runLogits([path.join(tmp, "nope.gguf"), "--ids", "1"]), /not a GGUF file/);
});

// --- llama.cpp ---------------------------------------------------------------------------



const GEN = 20;
/** Seeds whose greedy continuation does not reach EOS within GEN tokens. */
const PARITY_SEED: Record<string, number> = { phimoe: 4321 };

function ourGreedy(cfg: ModelConfig, params: Float32Array): number[] {
  const model = new MoeModel(cfg, createBackend({ name: "native", threads: 1 }), { B: 1, T: PROMPT.length + GEN });
  model.params.set(params);
  return generate(model, PROMPT, { maxTokens: GEN, temperature: 0, eosId: EOS });
}

/** llama.cpp's greedy continuation and its next-token probabilities at every prompt position. */
async function llamaRun(llama: Llama, file: string): Promise<{ tokens: number[]; probs: Map<Token, number>[] }> {
  const lm = await llama.loadModel({ modelPath: file });
  const opts = { contextSize: 64, batchSize: 64, threads: 1, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" };
  const ctx = await lm.createContext(opts);
  const tokens: number[] = [];
  for await (const t of ctx.getSequence().evaluate(PROMPT, { temperature: 0, yieldEogToken: true })) {
    tokens.push(t);
    if (tokens.length >= GEN || t === EOS) break;
  }
  await ctx.dispose();
  const ctx2 = await lm.createContext(opts);
  const res = await ctx2.getSequence().controlledEvaluate(PROMPT.map((t) => [t, { generateNext: { probabilities: true } }]));
  const probs = res.map((r, p) => {
    assert.ok(r?.next.probabilities, `no probabilities at position ${p}`);
    return r.next.probabilities;
  });
  await ctx2.dispose();
  await lm.dispose();
  return { tokens, probs };
}

/** max |p_llama.cpp − softmax(our logits)| over the prompt positions. */
function maxProbDiff(cfg: ModelConfig, params: Float32Array, probs: Map<Token, number>[]): number {
  const V = cfg.vocabSize, z = logits(cfg, params, PROMPT);
  let d = 0;
  for (let p = 0; p < PROMPT.length; p++) {
    const row = z.subarray(p * V, (p + 1) * V);
    const m = Math.max(...row);
    let s = 0;
    for (let j = 0; j < V; j++) s += Math.exp(row[j]! - m);
    for (let j = 0; j < V; j++) d = Math.max(d, Math.abs((probs[p]!.get(j) ?? 0) - Math.exp(row[j]! - m) / s));
  }
  return d;
}

/** PhiMoE as llama.cpp computes it: RMSNorm (+ bias, zero here) and softmax top-k renormalised. */
function phimoeAsLlamaCpp(cfg: ModelConfig, params: Float32Array): { cfg: ModelConfig; params: Float32Array } {
  const to: ModelConfig = { ...cfg, norm: { kind: "rms", eps: cfg.norm.eps }, moe: { ...cfg.moe, router: { kind: "softmax_topk", topK: cfg.moe.topK, normTopkProb: true } } };
  const src = buildLayout(cfg).layout, dst = buildLayout(to).layout;
  const out = new Float32Array(dst.size);
  for (const t of dst.tensors) {
    const s = src.byName.get(t.name)!;
    out.set(params.subarray(s.offset, s.offset + s.size), t.offset);
  }
  return { cfg: to, params: out };
}

test("llama.cpp parity: each family's F32 export gives our greedy tokens (PhiMoE: llama.cpp's own math)", async (t) => {
  const lib = await loadNodeLlamaCpp<NodeLlamaCpp>();
  if (!lib) {
    t.skip("node-llama-cpp is not installed (npm i -D node-llama-cpp); llama.cpp parity not checked");
    return;
  }
  const llama = await lib.getLlama({ gpu: false, build: "never", logLevel: lib.LlamaLogLevel.error });
  try {
    for (const family of Object.keys(FAMILIES)) {
      // untied here (tied random embeddings make the greedy continuation repeat one token)
      const { cfg, params } = tiny(family, PARITY_SEED[family] ?? 1234, { tie_word_embeddings: false });
      if (family === "phimoe") {
        // LayerNorm biases zero: llama.cpp's RMSNorm + bias then equals RMSNorm on our side
        const { layout, names } = buildLayout(cfg);
        for (const n of [...names.layers.flatMap((l) => [l.ln1Bias!, l.ln2Bias!]), names.normFBias!]) {
          const s = layout.byName.get(n)!;
          params.fill(0, s.offset, s.offset + s.size);
        }
      }
      const file = path.join(tmp, `${family}-parity.gguf`);
      exportModelGguf(file, exportInput(cfg, params), "f32");
      const run = await llamaRun(llama, file);
      const theirs = run.tokens;
      const ref = family === "phimoe" ? phimoeAsLlamaCpp(cfg, params) : { cfg, params };
      const ours = ourGreedy(ref.cfg, ref.params);
      const dp = maxProbDiff(ref.cfg, ref.params, run.probs);
      t.diagnostic(`${family}: max |p_llama.cpp − p_ours| over ${PROMPT.length} positions: ${dp.toExponential(2)}`);
      assert.ok(dp < 1e-4, `${family}: probabilities differ by ${dp}`);
      t.diagnostic(`${family}: ours  ${ours.join(",")}`);
      t.diagnostic(`${family}: llama ${theirs.join(",")}`);
      assert.equal(ours.length, GEN, `${family}: the greedy continuation should not hit EOS`);
      assert.deepEqual(theirs, ours, family);
      // Q8_0 loads and runs; compared with our model on the imported (dequantised) weights. llama.cpp
      // also rounds activations to Q8_0 blocks inside its matmuls, so only closeness is checked.
      const qfile = path.join(tmp, `${family}-parity-q8.gguf`);
      exportModelGguf(qfile, exportInput(cfg, params), "q8_0");
      const qrun = await llamaRun(llama, qfile);
      const qimp = importModelGguf(qfile);
      const qref = family === "phimoe" ? phimoeAsLlamaCpp(qimp.cfg, qimp.params) : { cfg: qimp.cfg, params: qimp.params };
      const qdp = maxProbDiff(qref.cfg, qref.params, qrun.probs);
      t.diagnostic(`${family} q8_0: max |Δp| ${qdp.toExponential(2)}`);
      assert.ok(qdp < 0.1, `${family} q8_0: probabilities differ by ${qdp}`);
      if (family === "phimoe") {
        t.diagnostic(`phimoe: max |p_llama.cpp − p_HF PhiMoE| ${maxProbDiff(cfg, params, run.probs).toExponential(2)}`);
        const hfPhimoe = ourGreedy(cfg, params);
        t.diagnostic(`phimoe (HF LayerNorm + SparseMixer): ${hfPhimoe.join(",")}`);
        assert.notDeepEqual(hfPhimoe, theirs, "llama.cpp's phimoe is expected to differ from HF PhiMoE on this model");
      }
    }
  } finally {
    await llama.dispose();
  }
});
