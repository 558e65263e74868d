// HF checkpoint interop: loading each family's tiny HF-layout fixture (test/fixtures/hf, written
// by tools/reference/make_hf_fixtures.py from an independent float64 PyTorch forward) gives the
// reference logits; FP8 checkpoints dequantise on load; load → save → load round trips (f32 exact,
// bf16 within rounding, sharded); every defect is reported by name; `moe logits` end to end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createBackend, type Backend } from "../src/backend/index.js";
import { SafetensorsCheckpoint, SafetensorsFile, writeSafetensors, type TensorToWrite } from "../src/io/safetensors.js";
import { CheckpointError, loadHfModel, readHfConfig, saveHfModel } from "../src/model/checkpoint.js";
import { runLogits } from "../src/cli/logits.js";
import { decode } from "../src/core/dtype.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { MoeModel, initParams } from "../src/model/model.js";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const FIX = path.join(ROOT, "test", "fixtures", "hf");
const FAMILIES = ["mixtral", "phimoe", "qwen2_moe", "qwen3_moe", "olmoe", "skywork"] as const;

const native = createBackend({ name: "native", threads: 2 });
const ref = createBackend({ name: "ref" });

function reference(name: string): { ids: Int32Array; logits: Float64Array; f32Model?: Float64Array } {
  const f = SafetensorsFile.open(path.join(FIX, name, "logits.safetensors"));
  return {
    ids: Int32Array.from(f.read("input_ids").data as Int32Array),
    logits: Float64Array.from(f.read("logits").data as Float64Array),
    f32Model: f.has("logits_f32_model") ? Float64Array.from(f.read("logits_f32_model").data as Float64Array) : undefined,
  };
}

/** |a−b| ≤ rtol·|b| + atolFrac·max|b|; returns max|a−b| / max|b|. */
function close(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atolFrac: number, what: string): number {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxAbs = 0, maxErr = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i]! - expected[i]!);
    maxErr = Math.max(maxErr, err);
    if (!(err <= rtol * Math.abs(expected[i]!) + atolFrac * maxAbs)) assert.fail(`${what}[${i}]: got ${actual[i]}, expected ${expected[i]} (rtol ${rtol})`);
  }
  return maxErr / maxAbs;
}

function logitsOf(dir: string, be: Backend, ids: Int32Array, dtype: "f32" | "f64" = "f32") {
  const r = loadHfModel(dir, be, { B: 1, T: ids.length, dtype });
  r.model.forward(ids, null, { train: false });
  return { ...r, logits: r.model.lastLogits() };
}

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const d = mkdtempSync(path.join(os.tmpdir(), "moe-hf-"));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

/** Every tensor of a checkpoint as raw TensorToWrite entries (to write modified copies). */
function rawTensors(dir: string): Record<string, TensorToWrite> {
  const ck = SafetensorsCheckpoint.open(dir);
  const out: Record<string, TensorToWrite> = {};
  for (const n of ck.names()) {
    const { info, data } = ck.read(n);
    out[n] = { dtype: info.dtype, shape: info.shape, data };
  }
  return out;
}

function writeCopy(dst: string, config: Record<string, unknown>, tensors: Record<string, TensorToWrite>): string {
  writeFileSync(path.join(dst, "config.json"), JSON.stringify(config));
  writeSafetensors(path.join(dst, "model.safetensors"), tensors, { format: "pt" });
  return dst;
}

const configOf = (name: string) => JSON.parse(readFileSync(path.join(FIX, name, "config.json"), "utf8")) as Record<string, unknown>;

function assertThrowsNaming(fn: () => unknown, errName: string, ...needles: (string | RegExp)[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Error, "an Error");
    assert.equal(e.name, errName, e.message);
    for (const n of needles) assert.ok(typeof n === "string" ? e.message.includes(n) : n.test(e.message), `message names ${n}:\n${e.message}`);
    return true;
  });
}

// ---------------------------------------------------------------------------
// logit parity

for (const fam of FAMILIES) {
  test(`${fam}: HF checkpoint logits match the float64 reference (native f32, ref f64)`, (t) => {
    const r = reference(fam);
    const a = logitsOf(path.join(FIX, fam), native, r.ids);
    assert.equal(a.hf.model_type, fam);
    assert.equal(a.quantization, null);
    const rel = close(a.logits, r.logits, 1e-4, 1e-5, `${fam} native logits`);
    const b = logitsOf(path.join(FIX, fam), ref, r.ids, "f64");
    const relRef = close(b.logits, r.logits, 1e-9, 1e-12, `${fam} ref-f64 logits`);
    t.diagnostic(`${fam}: max|Δ|/max|ref| native-f32 ${rel.toExponential(2)}, ref-f64 ${relRef.toExponential(2)}`);
  });
}

test("family specifics resolve as the fixtures intend", () => {
  const q2 = loadHfModel(path.join(FIX, "qwen2_moe"), ref, { B: 1, T: 2 }).cfg;
  assert.deepEqual(q2.moe.moeLayers, [true, false]);
  assert.equal(q2.moe.sharedExpertIntermediateSize, 48);
  assert.ok(q2.qkvBias && !q2.oBias);
  const q3 = loadHfModel(path.join(FIX, "qwen3_moe"), ref, { B: 1, T: 2 }).cfg;
  assert.equal(q3.headDim, 16);
  assert.equal(q3.qkNorm, "head");
  assert.equal(loadHfModel(path.join(FIX, "olmoe"), ref, { B: 1, T: 2 }).cfg.qkNorm, "full");
  const sk = loadHfModel(path.join(FIX, "skywork"), ref, { B: 1, T: 2 }).cfg;
  assert.equal(sk.numKvHeads, sk.numHeads);
  assert.deepEqual(sk.moe.router, { kind: "softmax_topk", topK: 2, normTopkProb: true, logitsNormStd: 1 });
});

test("mixtral_fp8: F8_E4M3 weights with weight_scale dequantise on load and match the dequantised reference", (t) => {
  const r = reference("mixtral_fp8");
  const a = logitsOf(path.join(FIX, "mixtral_fp8"), native, r.ids);
  assert.deepEqual(a.quantization, { method: "fp8", activationScheme: "dynamic" });
  const rel = close(a.logits, r.logits, 1e-4, 1e-5, "fp8 native logits");
  const b = logitsOf(path.join(FIX, "mixtral_fp8"), ref, r.ids, "f64");
  close(b.logits, r.logits, 1e-9, 1e-12, "fp8 ref-f64 logits");
  // the quantisation error against the unquantised model: present but small
  let num = 0, den = 0;
  for (let i = 0; i < r.logits.length; i++) {
    num += (a.logits[i]! - r.f32Model![i]!) ** 2;
    den += r.f32Model![i]! ** 2;
  }
  const rms = Math.sqrt(num / den);
  assert.ok(rms > 1e-4 && rms < 0.15, `rms relative error vs f32 model ${rms}`);
  t.diagnostic(`fp8: max|Δ|/max|ref| ${rel.toExponential(2)}; vs unquantised model rms rel ${rms.toExponential(2)}`);
  // weights are decode(code)·scale: spot-check one entry against the scalar codec
  const ck = SafetensorsCheckpoint.open(path.join(FIX, "mixtral_fp8"));
  const name = "model.layers.1.block_sparse_moe.experts.3.w2.weight";
  const code = (ck.read(name).data as Uint8Array)[5]!;
  const scale = (ck.read(`model.layers.1.block_sparse_moe.experts.3.w2.weight_scale`).data as Float32Array)[0]!;
  const slot = a.model.layout.hfTensors.find((s) => s.name === name)!;
  assert.equal(a.model.params[slot.offset + 5], Math.fround(decode("fp8_e4m3", code) * scale));
});

test("FP8 variants: per-row scales, static activation scheme, defects", (t) => {
  const src = path.join(FIX, "mixtral_fp8");
  const r = reference("mixtral_fp8");
  const base = logitsOf(src, native, r.ids).logits;
  const cfg = configOf("mixtral_fp8");
  const tensors = rawTensors(src);
  const scaleNames = Object.keys(tensors).filter((n) => n.endsWith(".weight_scale"));
  assert.equal(scaleNames.length, 2 * (4 + 3 * 4));
  // per-row scale [rows] and [rows, 1] with the same value everywhere → same logits
  const perRow: Record<string, TensorToWrite> = { ...tensors };
  scaleNames.forEach((n, i) => {
    const rows = tensors[n.replace(/_scale$/, "")]!.shape[0]!;
    const s = (tensors[n]!.data as Float32Array)[0]!;
    perRow[n] = { dtype: "F32", shape: i % 2 ? [rows] : [rows, 1], data: new Float32Array(rows).fill(s) };
  });
  const d1 = writeCopy(tmpDir(t), cfg, perRow);
  assert.deepEqual(Array.from(logitsOf(d1, native, r.ids).logits), Array.from(base));
  // distinct per-row scales land on their rows
  const wName = "model.layers.0.block_sparse_moe.experts.1.w2.weight";
  const [rows, cols] = tensors[wName]!.shape as [number, number];
  const rowScales = Float32Array.from({ length: rows }, (_, i) => 0.001 * (1 + (i % 5)));
  const varied = { ...perRow, [`${wName}_scale`]: { dtype: "F32" as const, shape: [rows], data: rowScales } };
  const mv = loadHfModel(writeCopy(tmpDir(t), cfg, varied), native, { B: 1, T: 2 }).model;
  const slot = mv.layout.hfTensors.find((s) => s.name === wName)!;
  const codes = tensors[wName]!.data as Uint8Array;
  for (let i = 0; i < rows * cols; i += 3) {
    assert.equal(mv.params[slot.offset + i], Math.fround(decode("fp8_e4m3", codes[i]!) * rowScales[Math.floor(i / cols)]!), `${wName}[${i}]`);
  }
  // static: input_scale required, then accepted (activations stay f32)
  const staticCfg = { ...cfg, quantization_config: { quant_method: "fp8", activation_scheme: "static" } };
  const d2 = writeCopy(tmpDir(t), staticCfg, tensors);
  assertThrowsNaming(() => loadHfModel(d2, native, { B: 1, T: 2 }), "CheckpointError", "missing", "model.layers.0.self_attn.q_proj.input_scale", /and \d+ more/);
  const withInput: Record<string, TensorToWrite> = { ...tensors };
  for (const n of scaleNames) withInput[n.replace(/weight_scale$/, "input_scale")] = { dtype: "F32", shape: [], data: new Float32Array([0.02]) };
  const d3 = writeCopy(tmpDir(t), staticCfg, withInput);
  assert.deepEqual(Array.from(logitsOf(d3, native, r.ids).logits), Array.from(base));
  // ... but input_scale in a dynamic checkpoint is unexpected
  const d4 = writeCopy(tmpDir(t), cfg, withInput);
  assertThrowsNaming(() => loadHfModel(d4, native, { B: 1, T: 2 }), "CheckpointError", "unexpected", "model.layers.0.self_attn.k_proj.input_scale");
  // missing weight_scale; F8 weights without quantization_config; zero scale; block-wise config
  const noScale = { ...tensors };
  delete noScale["model.layers.1.self_attn.o_proj.weight_scale"];
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), cfg, noScale), native, { B: 1, T: 2 }), "CheckpointError", "model.layers.1.self_attn.o_proj.weight_scale");
  const noQ = { ...cfg };
  delete noQ.quantization_config;
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), noQ, tensors), native, { B: 1, T: 2 }), "CheckpointError", "F8_E4M3", "quantization_config", "model.layers.0.self_attn.q_proj.weight");
  const zero = { ...tensors, "model.layers.0.self_attn.v_proj.weight_scale": { dtype: "F32" as const, shape: [], data: new Float32Array([0]) } };
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), cfg, zero), native, { B: 1, T: 2 }), "CheckpointError", "model.layers.0.self_attn.v_proj.weight_scale");
  const block = { ...cfg, quantization_config: { quant_method: "fp8", activation_scheme: "dynamic", weight_block_size: [128, 128] } };
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), block, tensors), native, { B: 1, T: 2 }), "ConfigError", "weight_block_size");
  const gptq = { ...cfg, quantization_config: { quant_method: "gptq" } };
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), gptq, tensors), native, { B: 1, T: 2 }), "ConfigError", "gptq");
});

// ---------------------------------------------------------------------------
// round trips

function expertCount(names: Iterable<string>): number {
  let n = 0;
  for (const x of names) if (/\.experts\.\d+\./.test(x)) n++;
  return n;
}

for (const fam of FAMILIES) {
  test(`${fam}: load → save f32 → load is bit-exact, with exactly the original HF tensor names`, (t) => {
    const src = path.join(FIX, fam);
    const a = loadHfModel(src, native, { B: 1, T: 4 });
    const dst = tmpDir(t);
    const files = saveHfModel(a.model, a.hf, dst);
    assert.deepEqual(files, ["model.safetensors", "config.json"]);
    const orig = SafetensorsCheckpoint.open(src).names().sort();
    const saved = SafetensorsCheckpoint.open(dst).names().sort();
    assert.deepEqual(saved, orig);
    const moeLayers = a.cfg.moe.moeLayers.filter(Boolean).length;
    assert.equal(expertCount(saved), moeLayers * a.cfg.moe.numExperts * 3);
    assert.equal(expertCount(saved), expertCount(orig));
    for (const n of saved) assert.equal(SafetensorsCheckpoint.open(dst).info(n).dtype, "F32");
    const b = loadHfModel(dst, native, { B: 1, T: 4 });
    assert.ok(Buffer.from(b.model.params.buffer).equals(Buffer.from(a.model.params.buffer)), "params identical");
    // file bytes of every tensor equal the original's
    const co = SafetensorsCheckpoint.open(src), cs = SafetensorsCheckpoint.open(dst);
    for (const n of orig) assert.ok(Buffer.from(co.read(n).data.buffer).equals(Buffer.from(cs.read(n).data.buffer)), n);
    // config round trips (HF keys), torch_dtype recorded
    const hfBack = readHfConfig(dst);
    assert.deepEqual({ ...hfBack, torch_dtype: undefined }, { ...a.hf, torch_dtype: undefined });
    assert.equal(hfBack.torch_dtype, "float32");
  });
}

test("dense llama (the upcycling source): save → load round trips with HF llama names", (t) => {
  const hf = parseHfConfig({
    model_type: "llama", vocab_size: 50, hidden_size: 16, intermediate_size: 24, num_hidden_layers: 2,
    num_attention_heads: 4, num_key_value_heads: 2, rms_norm_eps: 1e-5,
  });
  const m = new MoeModel(resolveConfig(hf), native, { B: 1, T: 3 });
  initParams(m, 11, 0.2);
  const dst = tmpDir(t);
  saveHfModel(m, hf, dst);
  const names = SafetensorsCheckpoint.open(dst).names();
  assert.equal(expertCount(names), 0);
  assert.ok(names.includes("model.layers.1.mlp.gate_proj.weight") && names.includes("lm_head.weight"));
  assert.deepEqual(JSON.parse(readFileSync(path.join(dst, "config.json"), "utf8")).architectures, ["LlamaForCausalLM"]);
  const b = loadHfModel(dst, native, { B: 1, T: 3 });
  assert.ok(Buffer.from(b.model.params.buffer).equals(Buffer.from(m.params.buffer)));
});

test("FP8 checkpoint saved as f32: the unquantised HF names, no quantization_config, dequantised values", (t) => {
  const a = loadHfModel(path.join(FIX, "mixtral_fp8"), native, { B: 1, T: 4 });
  const dst = tmpDir(t);
  saveHfModel(a.model, a.hf, dst);
  assert.deepEqual(SafetensorsCheckpoint.open(dst).names().sort(), SafetensorsCheckpoint.open(path.join(FIX, "mixtral")).names().sort());
  const cfg = JSON.parse(readFileSync(path.join(dst, "config.json"), "utf8"));
  assert.equal(cfg.quantization_config, undefined);
  const b = loadHfModel(dst, native, { B: 1, T: 4 });
  assert.equal(b.quantization, null);
  assert.ok(Buffer.from(b.model.params.buffer).equals(Buffer.from(a.model.params.buffer)));
});

test("bf16 save → load is within bf16 rounding; f16 and f64 checkpoints load", (t) => {
  const a = loadHfModel(path.join(FIX, "qwen2_moe"), native, { B: 1, T: 4 });
  const dst = tmpDir(t);
  saveHfModel(a.model, a.hf, dst, { dtype: "bf16" });
  const ck = SafetensorsCheckpoint.open(dst);
  for (const n of ck.names()) assert.equal(ck.info(n).dtype, "BF16", n);
  assert.equal(readHfConfig(dst).torch_dtype, "bfloat16");
  const b = loadHfModel(dst, native, { B: 1, T: 4 });
  let changed = 0;
  for (let i = 0; i < a.model.params.length; i++) {
    const x = a.model.params[i]!, y = b.model.params[i]!;
    assert.ok(Math.abs(x - y) <= Math.abs(x) * 2 ** -8, `param ${i}: ${y} vs ${x}`);
    if (x !== y) changed++;
  }
  assert.ok(changed > a.model.params.length / 2, "bf16 actually rounded");
  // F16 and F64 copies
  const raw = rawTensors(path.join(FIX, "qwen2_moe"));
  const f16: Record<string, TensorToWrite> = {}, f64: Record<string, TensorToWrite> = {};
  for (const [n, v] of Object.entries(raw)) {
    const x = v.data as Float32Array;
    const h = new Uint16Array(x.length);
    native.f32ToF16(h, x);
    f16[n] = { dtype: "F16", shape: v.shape, data: h };
    f64[n] = { dtype: "F64", shape: v.shape, data: Float64Array.from(x) };
  }
  const c16 = loadHfModel(writeCopy(tmpDir(t), configOf("qwen2_moe"), f16), native, { B: 1, T: 4 });
  for (const slot of c16.model.layout.hfTensors) {
    const h = f16[slot.name]!.data as Uint16Array;
    for (let i = 0; i < h.length; i += 7) assert.equal(c16.model.params[slot.offset + i], decode("f16", h[i]!), slot.name);
  }
  const c64 = loadHfModel(writeCopy(tmpDir(t), configOf("qwen2_moe"), f64), ref, { B: 1, T: 4, dtype: "f64" });
  assert.deepEqual(Array.from(c64.model.params), Array.from(a.model.params));
});

test("sharded save (small maxShardBytes) loads back identically; re-saving single removes stale shards", (t) => {
  const a = loadHfModel(path.join(FIX, "phimoe"), native, { B: 1, T: 4 });
  const dst = tmpDir(t);
  const files = saveHfModel(a.model, a.hf, dst, { maxShardBytes: 16_000 });
  const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
  assert.ok(shards.length > 5, `${shards.length} shards`);
  assert.ok(files.includes("model.safetensors.index.json") && !existsSync(path.join(dst, "model.safetensors")));
  const index = JSON.parse(readFileSync(path.join(dst, "model.safetensors.index.json"), "utf8"));
  assert.deepEqual(Object.keys(index.weight_map).sort(), SafetensorsCheckpoint.open(path.join(FIX, "phimoe")).names().sort());
  const b = loadHfModel(dst, native, { B: 1, T: 4 });
  assert.ok(Buffer.from(b.model.params.buffer).equals(Buffer.from(a.model.params.buffer)));
  saveHfModel(a.model, a.hf, dst);
  assert.deepEqual(readdirSync(dst).sort(), ["config.json", "model.safetensors"]);
  const c = loadHfModel(dst, native, { B: 1, T: 4 });
  assert.ok(Buffer.from(c.model.params.buffer).equals(Buffer.from(a.model.params.buffer)));
});

test("tied embeddings: lm_head.weight absent, or present and identical, loads; a different one is refused", (t) => {
  const cfg = { ...configOf("qwen3_moe"), tie_word_embeddings: true };
  const raw = rawTensors(path.join(FIX, "qwen3_moe"));
  const noHead = { ...raw };
  delete noHead["lm_head.weight"];
  const r = reference("qwen3_moe");
  const a = logitsOf(writeCopy(tmpDir(t), cfg, noHead), native, r.ids);
  const same = { ...noHead, "lm_head.weight": raw["model.embed_tokens.weight"]! };
  const b = logitsOf(writeCopy(tmpDir(t), cfg, same), native, r.ids);
  assert.deepEqual(Array.from(b.logits), Array.from(a.logits));
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), cfg, raw), native, { B: 1, T: 2 }), "CheckpointError", "lm_head.weight", "tie_word_embeddings");
  // a saved tied model has no lm_head.weight
  const dst = tmpDir(t);
  saveHfModel(a.model, a.hf, dst);
  assert.ok(!SafetensorsCheckpoint.open(dst).has("lm_head.weight"));
});

// ---------------------------------------------------------------------------
// defects

test("missing, unexpected and mis-shaped tensors are reported together, by name, capped", (t) => {
  const cfg = configOf("mixtral");
  const raw = rawTensors(path.join(FIX, "mixtral"));
  const one = { ...raw };
  delete one["model.layers.1.block_sparse_moe.experts.2.w3.weight"];
  one["model.layers.0.block_sparse_moe.experts.4.w1.weight"] = raw["model.layers.0.block_sparse_moe.experts.0.w1.weight"]!;
  const w = raw["model.layers.0.self_attn.o_proj.weight"]!;
  one["model.layers.0.self_attn.o_proj.weight"] = { ...w, shape: [w.shape[1]!, w.shape[0]! / 2, 2] };
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), cfg, one), native, { B: 1, T: 2 }), "CheckpointError",
    "1 missing tensor(s)", "model.layers.1.block_sparse_moe.experts.2.w3.weight",
    "1 unexpected tensor(s)", "model.layers.0.block_sparse_moe.experts.4.w1.weight",
    "wrong shape", "model.layers.0.self_attn.o_proj.weight: [32, 16, 2] in the file, the config needs [32, 32]",
    "config.json");
  const many = { ...raw };
  const gone = Object.keys(raw).filter((n) => n.includes(".layers.")).slice(0, 30);
  for (const n of gone) delete many[n];
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), cfg, many), native, { B: 1, T: 2 }), "CheckpointError", "30 missing tensor(s)", gone[0]!, "… and 10 more");
  // a config that does not match the weights (more experts) → missing tensors named
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), { ...cfg, num_local_experts: 5 }, raw), native, { B: 1, T: 2 }), "CheckpointError",
    "model.layers.0.block_sparse_moe.experts.4.w1.weight", "model.layers.0.block_sparse_moe.gate.weight: [4, 32] in the file, the config needs [5, 32]");
  // unsupported dtype
  const ints = { ...raw, "model.norm.weight": { dtype: "I32" as const, shape: [32], data: new Int32Array(32) } };
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), cfg, ints), native, { B: 1, T: 2 }), "CheckpointError", "model.norm.weight: I32");
  // rotary inv_freq buffers of old exports are tolerated
  const inv = { ...raw, "model.layers.0.self_attn.rotary_emb.inv_freq": { dtype: "F32" as const, shape: [4], data: new Float32Array(4) } };
  loadHfModel(writeCopy(tmpDir(t), cfg, inv), native, { B: 1, T: 2 });
});

test("config.json and directory defects name the file and the key", (t) => {
  const raw = rawTensors(path.join(FIX, "mixtral"));
  const d1 = writeCopy(tmpDir(t), { ...configOf("mixtral"), num_local_expert: 4 }, raw);
  assertThrowsNaming(() => loadHfModel(d1, native, { B: 1, T: 2 }), "ConfigError", path.join(d1, "config.json"), "unknown key 'num_local_expert'", "did you mean 'num_local_experts'");
  const d2 = writeCopy(tmpDir(t), { ...configOf("mixtral"), hidden_size: "32" }, raw);
  assertThrowsNaming(() => loadHfModel(d2, native, { B: 1, T: 2 }), "ConfigError", "hidden_size");
  const d3 = tmpDir(t);
  writeFileSync(path.join(d3, "config.json"), "{ not json");
  assertThrowsNaming(() => readHfConfig(d3), "ConfigError", path.join(d3, "config.json"), "not valid JSON");
  const d4 = tmpDir(t);
  assertThrowsNaming(() => readHfConfig(d4), "CheckpointError", path.join(d4, "config.json"), "ENOENT");
  writeFileSync(path.join(d4, "config.json"), JSON.stringify(configOf("mixtral")));
  assertThrowsNaming(() => loadHfModel(d4, native, { B: 1, T: 2 }), "SafetensorsError", d4, "no model.safetensors");
  assertThrowsNaming(() => loadHfModel(path.join(d4, "nope"), native, { B: 1, T: 2 }), "CheckpointError", "nope", "not a checkpoint directory");
  const sky = { ...configOf("skywork"), moe_feature_no_mul_topk: false };
  assertThrowsNaming(() => loadHfModel(writeCopy(tmpDir(t), sky, rawTensors(path.join(FIX, "skywork"))), native, { B: 1, T: 2 }), "ConfigError", "moe_feature_no_mul_topk");
});

test("CheckpointError is exported for callers", () => {
  assert.equal(new CheckpointError("x").name, "CheckpointError");
});

// ---------------------------------------------------------------------------
// moe logits

async function captureStdout(fn: () => Promise<number>): Promise<{ code: number; out: string }> {
  const lines: string[] = [];
  const orig = console.log;
  console.log = (...a: unknown[]) => void lines.push(a.join(" "));
  try {
    const code = await fn();
    return { code, out: lines.join("\n") };
  } finally {
    console.log = orig;
  }
}

test("moe logits writes the reference logits ([T, V] F32) and prints a summary", async (t) => {
  const r = reference("olmoe");
  const dir = path.join(FIX, "olmoe");
  const out = path.join(tmpDir(t), "logits.safetensors");
  const { code } = await captureStdout(() => runLogits([dir, "--ids", Array.from(r.ids).join(","), "--out", out, "--threads", "1"]));
  assert.equal(code, 0);
  const f = SafetensorsFile.open(out);
  assert.deepEqual([...f.tensors.keys()], ["logits"]);
  assert.deepEqual(f.info("logits").shape, [r.ids.length, 61]);
  assert.equal(f.info("logits").dtype, "F32");
  close(f.read("logits").data as Float32Array, r.logits, 1e-4, 1e-5, "cli logits");
  // ref backend (f64 compute, written as f32)
  const out2 = path.join(tmpDir(t), "l2.safetensors");
  await captureStdout(() => runLogits([dir, `--ids=${Array.from(r.ids).join(",")}`, "--out", out2, "--backend", "ref"]));
  close(SafetensorsFile.open(out2).read("logits").data as Float32Array, r.logits, 1e-6, 1e-7, "cli ref logits");
  // summary
  const s = await captureStdout(() => runLogits([dir, "--ids", "3, 4,5"]));
  assert.equal(s.code, 0);
  assert.match(s.out, /logits \[3, 61\]/);
  assert.match(s.out, /top-5 at position 2: \d+ \(/);
  assert.match(s.out, /logsumexp/);
});

test("moe logits refuses bad ids and bad directories", async (t) => {
  const dir = path.join(FIX, "mixtral");
  await assert.rejects(runLogits([dir, "--ids", "1,x,3"]), /entry 1 'x' is not an integer/);
  await assert.rejects(runLogits([dir, "--ids", "1,2.5"]), /'2.5' is not an integer/);
  await assert.rejects(runLogits([dir, "--ids", "1,61"]), /token id 61 .* out of range \[0, 61\)/);
  await assert.rejects(runLogits([dir, "--ids", "-1"]), /token id -1/);
  await assert.rejects(runLogits([dir, "--ids", ""]), /--ids is empty/);
  await assert.rejects(runLogits([dir]), /--ids is required/);
  await assert.rejects(runLogits([path.join(dir, "missing"), "--ids", "1"]), /is not a directory/);
  await assert.rejects(runLogits([tmpDir(t), "--ids", "1"]), /config\.json: cannot read/);
  await assert.rejects(runLogits([dir, "--ids", "1", "--backend", "gpu"]), /--backend must be/);
  await assert.rejects(runLogits([dir, "--id", "1"]), /unknown option --id \(did you mean --ids\?\)/);
});

test("moe logits through the CLI entry point (skipped until main.ts wires the subcommand)", (t) => {
  const main = path.join(ROOT, "dist", "src", "cli", "main.js");
  const r = reference("skywork");
  const out = path.join(tmpDir(t), "cli.safetensors");
  const p = spawnSync(process.execPath, [main, "logits", path.join(FIX, "skywork"), "--ids", Array.from(r.ids).join(","), "--out", out], { encoding: "utf8" });
  if (/unknown command 'logits'/.test(p.stderr)) {
    t.skip("main.ts does not dispatch 'logits' yet");
    return;
  }
  assert.equal(p.status, 0, p.stderr);
  close(SafetensorsFile.open(out).read("logits").data as Float32Array, r.logits, 1e-4, 1e-5, "cli entry logits");
  const bad = spawnSync(process.execPath, [main, "logits", path.join(FIX, "skywork"), "--ids", "99"], { encoding: "utf8" });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /token id 99/);
});
