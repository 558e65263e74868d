// GGUF container, llama-arch export/import and generate():
// - metadata of every value type (and arrays of them) round-trips; tensors F32 exactly, F16 as
//   the dtype codec rounds, Q8_0 byte-identical to an independent llama.cpp-style block
//   quantiser (roundf half away from zero, f16 scale) and within its error bound;
// - layout facts: ne reversed, data offsets aligned, general.alignment honoured;
// - corrupt files refused with clear errors;
// - export → import: parameters equal (f32), f16-rounded (f16), within Q8_0 error (q8_0);
//   unsupported features refused by name;
// - generate(): greedy = argmax of a full forward, seeded sampling reproducible, limits checked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, truncateSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { GgufFile, GgufError, gv, quantizeQ8_0, writeGguf, type GgufValue } from "../src/io/gguf.js";
import { exportLlamaGguf, importLlamaGguf, llamaIncompatibility, modelToGguf, permuteRopeRows } from "../src/model/gguf-model.js";
import { decodeArray, encodeArray, decodeF16 } from "../src/core/dtype.js";
import { parseHfConfig, resolveConfig } from "../src/model/config.js";
import { preset } from "../src/model/presets.js";
import { buildLayout } from "../src/model/params.js";
import { MoeModel } from "../src/model/model.js";
import { createBackend } from "../src/backend/index.js";
import { generate, pickToken } from "../src/infer/generate.js";
import { createRng } from "../src/core/rng.js";
import { runExport, loadForExport } from "../src/cli/export.js";
import { tinyHfConfig, tinyParams, tinyTokenizer, writeTinyModelDir } from "./gguf-fixture.js";

const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-gguf-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (ext = "gguf") => path.join(tmp, `f${fileNo++}.${ext}`);

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = createRng(seed);
  return Float32Array.from({ length: n }, () => scale * r.normal());
}

/** llama.cpp quantize_row_q8_0_ref, written independently: f32 intermediates via Float32Array. */
function refQ8Block(x: Float32Array): { dCode: number; q: number[] } {
  const f = new Float32Array(4);
  let amax = 0;
  for (const v of x) amax = Math.max(amax, Math.abs(v));
  f[0] = amax;
  f[1] = f[0]! / 127; // d
  f[2] = f[1] ? 1 / f[1]! : 0; // id
  const codes = new Uint16Array(1);
  encodeArray("f16", codes, f.subarray(1, 2));
  const q = Array.from(x, (v) => {
    f[3] = v * f[2]!;
    const y = f[3]!;
    return Math.sign(y) * Math.floor(Math.abs(y) + 0.5) || 0; // C roundf (an int8 has no -0)
  });
  return { dCode: codes[0]!, q };
}

test("metadata: every value type and arrays round-trip, order kept", () => {
  const md: [string, GgufValue][] = [
    ["t.u8", gv.u8(255)], ["t.i8", gv.i8(-128)], ["t.u16", gv.u16(65535)], ["t.i16", gv.i16(-32768)],
    ["t.u32", gv.u32(0xffffffff)], ["t.i32", gv.i32(-0x80000000)], ["t.f32", gv.f32(Math.fround(0.1))],
    ["t.f64", gv.f64(0.1)], ["t.u64", gv.u64(0xffffffffffffffffn)], ["t.i64", gv.i64(-(1n << 63n))],
    ["t.bool", gv.bool(true)], ["t.false", gv.bool(false)], ["t.str", gv.str("héllo ✓ Ġthe")], ["t.empty", gv.str("")],
    ["a.str", gv.arr("string", ["a", "", "Ġ t", "<|endoftext|>"])], ["a.i32", gv.arr("i32", [1, -2, 3])],
    ["a.f32", gv.arr("f32", [0.5, -1.25])], ["a.bool", gv.arr("bool", [true, false])], ["a.u64", gv.arr("u64", [1n, 2n ** 40n])],
    ["a.u8", gv.arr("u8", [0, 7, 255])], ["a.f64", gv.arr("f64", [Math.PI])], ["a.empty", gv.arr("i32", [])],
  ];
  const f = tmpFile();
  writeGguf(f, md, []);
  const g = GgufFile.open(f);
  assert.equal(g.version, 3);
  assert.deepEqual([...g.metadata.keys()], [...md.map(([k]) => k), "general.alignment"]);
  for (const [k, v] of md) assert.deepEqual(g.get(k), v, k);
  assert.deepEqual(g.get("general.alignment"), gv.u32(32));
  assert.throws(() => g.getNumber("t.u64"), /does not fit a number/);
  assert.equal(g.getNumber("t.i32"), -0x80000000);
  assert.equal(g.getString("t.str"), "héllo ✓ Ġthe");
  assert.throws(() => g.getString("t.u8"), /must be a string/);
  assert.throws(() => g.getNumber("missing"), /missing metadata 'missing'/);
  // writer refuses bad values
  assert.throws(() => writeGguf(tmpFile(), [["x", gv.u8(256)]], []), /not an integer in \[0, 255\]/);
  assert.throws(() => writeGguf(tmpFile(), [["x", gv.u32(1)], ["x", gv.u32(2)]], []), /duplicate metadata key 'x'/);
});

test("tensors: F32 exact, F16 as the codec rounds, Q8_0 identical to an independent block quantiser", () => {
  const a = randn(3 * 64, 1);
  const b = randn(2 * 3 * 32, 2, 5);
  const c = randn(4 * 96, 3, 0.01);
  c.fill(0, 32, 64); // an all-zero block: d = 0
  const one = randn(7, 4);
  const f = tmpFile();
  writeGguf(f, [["general.name", gv.str("t")]], [
    { name: "a", shape: [3, 64], type: "F32", data: a },
    { name: "b", shape: [2, 3, 32], type: "F16", data: b },
    { name: "c", shape: [4, 96], type: "Q8_0", data: c },
    { name: "one", shape: [7], type: "F32", data: one },
  ]);
  const g = GgufFile.open(f);
  assert.deepEqual(g.info("a").ne, [64, 3]);
  assert.deepEqual(g.info("b").ne, [32, 3, 2]);
  assert.deepEqual(g.info("b").shape, [2, 3, 32]);
  assert.equal(g.info("c").type, "Q8_0");
  assert.equal(g.info("c").byteLength, (4 * 96 / 32) * 34);
  for (const t of g.tensors.values()) assert.equal((t.offset - g.dataOffset) % 32, 0, `${t.name} aligned`);
  assert.equal(g.dataOffset % 32, 0);
  assert.deepEqual(g.read("a"), a);
  assert.deepEqual(g.read("one"), one);
  // F16: the stored codes are the codec's, and read back decodes them
  const codes = new Uint16Array(b.length);
  encodeArray("f16", codes, b);
  assert.deepEqual(new Uint16Array(g.readRaw("b").slice().buffer), codes);
  const bDec = new Float32Array(b.length);
  decodeArray("f16", bDec, codes);
  assert.deepEqual(g.read("b"), bDec);
  // Q8_0: bytes equal the independent quantiser; values within d/2 of the input
  const raw = g.readRaw("c");
  const dv = new DataView(raw.buffer, raw.byteOffset);
  const deq = g.read("c");
  for (let blk = 0; blk < c.length / 32; blk++) {
    const x = c.subarray(blk * 32, blk * 32 + 32);
    const ref = refQ8Block(x);
    assert.equal(dv.getUint16(blk * 34, true), ref.dCode, `block ${blk} scale`);
    for (let j = 0; j < 32; j++) assert.equal(dv.getInt8(blk * 34 + 2 + j), ref.q[j], `block ${blk} q[${j}]`);
    const d = decodeF16(ref.dCode);
    let amax = 0;
    for (const v of x) amax = Math.max(amax, Math.abs(v));
    for (let j = 0; j < 32; j++) {
      assert.equal(deq[blk * 32 + j], Math.fround(ref.q[j]! * d));
      assert.ok(Math.abs(deq[blk * 32 + j]! - x[j]!) <= amax / 127 / 2 + amax / 2048, "Q8_0 error bound: d/2 + 127·d·2⁻¹¹");
    }
  }
  assert.ok(deq.subarray(32, 64).every((v) => v === 0));
});

test("Q8_0 rounding is roundf (half away from zero) with the f32 scale, hand-computed block", () => {
  const x = new Float32Array(32);
  x[0] = 127; // amax → d = 1, id = 1
  x[1] = -63.5; // → -64 (away from zero; banker's would also give -64)
  x[2] = 0.5; // → 1 (banker's rounding would give 0)
  x[3] = -0.5; // → -1
  x[4] = 2.5; // → 3 (banker's: 2)
  x[5] = -127;
  const q = quantizeQ8_0(x);
  const dv = new DataView(q.buffer);
  assert.equal(decodeF16(dv.getUint16(0, true)), 1);
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((j) => dv.getInt8(2 + j)), [127, -64, 1, -1, 3, -127, 0]);
  assert.throws(() => quantizeQ8_0(new Float32Array(31)), /multiple of 32/);
  assert.throws(() => writeGguf(tmpFile(), [], [{ name: "x", shape: [2, 48], type: "Q8_0", data: new Float32Array(96) }]), /multiple of 32/);
});

test("alignment: general.alignment = 64 is honoured by writer and reader", () => {
  const f = tmpFile();
  writeGguf(f, [], [
    { name: "x", shape: [5], type: "F32", data: randn(5, 9) },
    { name: "y", shape: [3], type: "F32", data: randn(3, 10) },
  ], { alignment: 64 });
  const g = GgufFile.open(f);
  assert.equal(g.alignment, 64);
  assert.equal(g.dataOffset % 64, 0);
  assert.equal(g.info("y").offset - g.dataOffset, 64);
  assert.deepEqual(g.read("y"), randn(3, 10));
  assert.throws(() => writeGguf(tmpFile(), [], [], { alignment: 48 }), /power of two/);
});

// --- corrupt files -----------------------------------------------------------

function validFile(): { file: string; bytes: Buffer } {
  const file = tmpFile();
  writeGguf(file, [["general.name", gv.str("corrupt-me")], ["k.arr", gv.arr("string", ["x", "y"])]], [
    { name: "w0", shape: [2, 32], type: "F32", data: randn(64, 1) },
    { name: "w1", shape: [32], type: "Q8_0", data: randn(32, 2) },
  ]);
  return { file, bytes: readFileSync(file) };
}

/** Byte position just after a tensor's name in the tensor-info section (n_dims follows). */
function afterName(bytes: Buffer, name: string): number {
  const needle = Buffer.concat([Buffer.from([name.length, 0, 0, 0, 0, 0, 0, 0]), Buffer.from(name)]);
  const at = bytes.indexOf(needle);
  assert.ok(at > 0);
  return at + needle.length;
}

function corrupt(patch: (b: Buffer) => Buffer | void): string {
  const { bytes } = validFile();
  const b = Buffer.from(bytes);
  const out = patch(b) ?? b;
  const f = tmpFile();
  writeFileSync(f, out);
  return f;
}

test("corrupt files are refused with clear errors", () => {
  const refuse = (f: string, re: RegExp) => assert.throws(() => GgufFile.open(f), (e: unknown) => e instanceof GgufError && re.test(e.message) && e.message.includes(f));
  refuse(corrupt((b) => void b.write("GGUX", 0)), /bad magic .*not a GGUF file/);
  refuse(corrupt((b) => void b.writeUInt32LE(4, 4)), /unsupported GGUF version 4/);
  refuse(corrupt((b) => b.subarray(0, 40)), /truncated/);
  refuse(corrupt((b) => b.subarray(0, 2)), /truncated/);
  const { file: good, bytes } = validFile();
  // truncated data: the last tensor runs past the end
  const cut = tmpFile();
  writeFileSync(cut, bytes);
  truncateSync(cut, statSync(good).size - 40);
  refuse(cut, /tensor 'w1': data .* runs past the end of the file/);
  // unknown metadata value type (the u32 after the first key)
  refuse(corrupt((b) => void b.writeUInt32LE(99, 24 + 8 + "general.name".length)), /metadata 'general.name': unknown value type 99/);
  // huge string length
  refuse(corrupt((b) => void b.writeBigUInt64LE(1n << 40n, 24)), /impossible|truncated/);
  // tensor info patches: n_dims, type, offset
  refuse(corrupt((b) => void b.writeUInt32LE(7, afterName(b, "w0"))), /n_dims 7/);
  refuse(corrupt((b) => void b.writeUInt32LE(77, afterName(b, "w0") + 4 + 16)), /tensor 'w0': unknown ggml type id 77/);
  refuse(corrupt((b) => void b.writeBigUInt64LE(1n << 20n, afterName(b, "w1") + 4 + 8 + 4)), /tensor 'w1': data .* runs past the end/);
  refuse(corrupt((b) => void b.writeBigUInt64LE(8n, afterName(b, "w1") + 4 + 8 + 4)), /not a multiple of the alignment 32/);
  refuse(corrupt((b) => void b.writeBigUInt64LE(0n, afterName(b, "w1") + 4 + 8 + 4)), /overlapping/);
  // a known but unsupported type opens, but its data is refused
  const i8 = corrupt((b) => void b.writeUInt32LE(24, afterName(b, "w1") + 4 + 8));
  const g = GgufFile.open(i8);
  assert.equal(g.info("w1").type, "I8");
  assert.throws(() => g.read("w1"), /type I8; readable types are F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K/);
  refuse(path.join(tmp, "does-not-exist.gguf"), /cannot open/);
});

// --- llama-arch export / import -------------------------------------------------

function tinyModel(seed = 7, overrides: Record<string, unknown> = {}) {
  const tok = tinyTokenizer();
  const hf = { ...tinyHfConfig(tok.eosId), ...overrides };
  const cfg = resolveConfig(parseHfConfig(hf));
  return { cfg, params: tinyParams(cfg, seed), tok, hf };
}

test("RoPE row permutation: HF pair (i, i+HS/2) → GGUF rows (2i, 2i+1); inverse undoes it", () => {
  const heads = 2, HS = 4, C = 1;
  const w = Float32Array.from({ length: heads * HS * C }, (_, i) => i);
  const p = permuteRopeRows(w, heads, HS, C);
  assert.deepEqual([...p], [0, 2, 1, 3, 4, 6, 5, 7]);
  assert.deepEqual(permuteRopeRows(p, heads, HS, C, true), w);
});

test("export → import: f32 equal, f16 codec-rounded, q8_0 within block error; config and tokenizer kept", () => {
  const { cfg, params, tok } = tinyModel();
  for (const dtype of ["f32", "f16", "q8_0"] as const) {
    const f = tmpFile();
    const res = exportLlamaGguf(f, { cfg, params, contextLength: 256, tokenizer: tok.json, bosTokenId: tok.eosId, eosTokenId: tok.eosId }, dtype);
    assert.ok(res.warnings.every((w) => w.includes("[PAD")), res.warnings.join("; "));
    const g = GgufFile.open(f);
    assert.equal(g.getString("general.architecture"), "llama");
    assert.equal(g.getNumber("llama.expert_count"), 4);
    assert.equal(g.getNumber("llama.expert_used_count"), 2);
    assert.equal(g.getNumber("llama.context_length"), 256);
    assert.equal(g.getNumber("llama.rope.dimension_count"), 16);
    assert.deepEqual(g.info("blk.1.ffn_gate_exps.weight").ne, [64, 96, 4]);
    assert.deepEqual(g.info("blk.1.ffn_down_exps.weight").ne, [96, 64, 4]);
    assert.deepEqual(g.info("blk.0.ffn_gate_inp.weight").ne, [64, 4]);
    assert.deepEqual(g.info("token_embd.weight").ne, [64, 272]);
    for (const n of ["blk.0.attn_norm.weight", "blk.0.ffn_norm.weight", "blk.0.ffn_gate_inp.weight", "output_norm.weight"]) assert.equal(g.info(n).type, "F32", n);
    assert.equal(g.info("blk.0.attn_q.weight").type, { f32: "F32", f16: "F16", q8_0: "Q8_0" }[dtype]);
    assert.equal(g.getArray("tokenizer.ggml.tokens")!.length, 272);
    assert.equal(g.getArray("tokenizer.ggml.tokens")![258], "Ġthe");
    assert.equal(g.getArray("tokenizer.ggml.token_type")![tok.eosId], 3);
    assert.equal(g.getArray("tokenizer.ggml.token_type")![270], 5);
    assert.deepEqual(g.getArray("tokenizer.ggml.merges")!.slice(0, 2), ["Ġ t", "h e"]);
    assert.equal(g.getString("tokenizer.ggml.pre"), "gpt-2");

    const imp = importLlamaGguf(f);
    assert.deepEqual(imp.cfg, cfg);
    assert.equal(imp.hf.max_position_embeddings, 256);
    assert.equal(imp.tokenizer?.eosTokenId, tok.eosId);
    const { layout } = buildLayout(cfg);
    if (dtype === "f32") assert.deepEqual(imp.params, params);
    for (const t of layout.tensors) {
      const x = params.subarray(t.offset, t.offset + t.size), y = imp.params.subarray(t.offset, t.offset + t.size);
      const is1dOrRouter = t.shape.length === 1 || t.name.endsWith(".gate.weight");
      if (dtype === "f32" || is1dOrRouter) {
        assert.deepEqual(y, x, t.name);
      } else if (dtype === "f16") {
        const codes = new Uint16Array(x.length), back = new Float32Array(x.length);
        encodeArray("f16", codes, x);
        decodeArray("f16", back, codes);
        assert.deepEqual(y, back, t.name);
      } else {
        // per row-block of 32 (rows are contiguous along the last dim; permutation only moves whole rows)
        let worst = 0;
        for (let i = 0; i < x.length; i += 32) {
          let amax = 0;
          for (let j = i; j < i + 32; j++) amax = Math.max(amax, Math.abs(x[j]!));
          for (let j = i; j < i + 32; j++) worst = Math.max(worst, Math.abs(x[j]! - y[j]!) / (amax / 127 / 2 + 1e-30));
        }
        // |x − q·f16(d)| ≤ d/2 + |q|·|d − f16(d)| ≤ d/2 + 127·d·2⁻¹¹
        assert.ok(worst <= 1 + 127 / 1024, `${t.name}: Q8_0 error ${worst} × d/2`);
      }
    }
  }
  // tied embeddings: no output.weight, imported as tied
  const tied = tinyModel(8, { tie_word_embeddings: true });
  const f = tmpFile();
  exportLlamaGguf(f, { cfg: tied.cfg, params: tied.params, contextLength: 256, tokenizer: tied.tok.json }, "f32");
  assert.equal(GgufFile.open(f).has("output.weight"), false);
  const imp = importLlamaGguf(f);
  assert.equal(imp.cfg.tieEmbeddings, true);
  assert.deepEqual(imp.params, tied.params);
});

test("export refuses what llama.cpp's llama MoE cannot run, naming the feature", () => {
  const refuse = (name: string, re: RegExp) => {
    const cfg = resolveConfig(preset(name));
    assert.match(llamaIncompatibility(cfg, 512) ?? "", re);
    const { layout } = buildLayout(cfg);
    assert.throws(() => modelToGguf({ cfg, params: new Float32Array(layout.size), contextLength: 512 }, "f32"), (e: unknown) => e instanceof Error && re.test(e.message) && /not supported/.test(e.message));
  };
  refuse("tiny-grin", /LayerNorm/);
  const base = tinyHfConfig(1);
  const check = (over: Record<string, unknown>, re: RegExp) => assert.match(llamaIncompatibility(resolveConfig(parseHfConfig({ ...base, ...over })), 256) ?? "", re);
  check({ sliding_window: 64 }, /sliding window of 64 shorter than the context length 256/);
  assert.equal(llamaIncompatibility(resolveConfig(parseHfConfig({ ...base, sliding_window: 4096 })), 256), null);
  const q3 = resolveConfig(parseHfConfig({ model_type: "qwen3_moe", vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 1, num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32, head_dim: 16 }));
  assert.match(llamaIncompatibility(q3, 256) ?? "", /q\/k normalisation/);
  const q2 = resolveConfig(parseHfConfig({ model_type: "qwen2_moe", vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_key_value_heads: 2, num_experts: 4, num_experts_per_tok: 2, moe_intermediate_size: 32, shared_expert_intermediate_size: 32 }));
  assert.match(llamaIncompatibility(q2, 256) ?? "", /biases/);
  const olmoe = resolveConfig(parseHfConfig({ model_type: "olmoe", vocab_size: 64, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 32 }));
  assert.match(llamaIncompatibility(olmoe, 256) ?? "", /q\/k normalisation/);
  const olmoeNoNorm = { ...olmoe, qkNorm: "none" as const };
  assert.match(llamaIncompatibility(olmoeNoNorm, 256) ?? "", /without renormalisation/);
  // a non-byte-level tokenizer is refused
  const { cfg, params, tok } = tinyModel();
  const spm = { ...tok.json, pre_tokenizer: { type: "Metaspace" }, decoder: { type: "Metaspace" } };
  assert.throws(() => modelToGguf({ cfg, params, contextLength: 256, tokenizer: spm }, "f32"), /not a byte-level BPE tokenizer/);
  assert.throws(() => modelToGguf({ cfg, params, contextLength: 256, tokenizer: { ...tok.json, model: { ...tok.json.model, type: "Unigram" } } }, "f32"), /model type 'Unigram' is not supported/);
});

test("tokenizer.ggml.pre: GPT-2 / Llama-3 / Qwen2 pre-tokenizers recognised, others fall back with a warning", () => {
  const { cfg, params, tok } = tinyModel();
  const L3 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const Q2 = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const seq = (re: string) => ({ type: "Sequence", pretokenizers: [{ type: "Split", pattern: { Regex: re }, behavior: "Isolated", invert: false }, { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false }] });
  const pre = (p: unknown) => {
    const c = modelToGguf({ cfg, params, contextLength: 256, tokenizer: { ...tok.json, pre_tokenizer: p } }, "f32");
    return { pre: (c.metadata.find(([k]) => k === "tokenizer.ggml.pre")![1] as { value: string }).value, warned: c.warnings.some((w) => w.includes("pre-tokenizer")) };
  };
  assert.deepEqual(pre(tok.json.pre_tokenizer), { pre: "gpt-2", warned: false });
  assert.deepEqual(pre(seq(L3)), { pre: "llama-bpe", warned: false });
  assert.deepEqual(pre(seq(Q2)), { pre: "qwen2", warned: false });
  assert.deepEqual(pre(seq("\\s+")), { pre: "gpt-2", warned: true });
});

test("import refuses non-MoE and non-llama files", () => {
  const f = tmpFile();
  writeGguf(f, [["general.architecture", gv.str("llama")], ["llama.embedding_length", gv.u32(8)]], [{ name: "token_embd.weight", shape: [4, 8], type: "F32", data: new Float32Array(32) }]);
  assert.throws(() => importLlamaGguf(f), /expert_count is missing or 0: a dense llama model/);
  const g = tmpFile();
  writeGguf(g, [["general.architecture", gv.str("qwen3moe")]], []);
  assert.throws(() => importLlamaGguf(g), /architecture 'qwen3moe' is not supported/);
  // an extra tensor the importer cannot place
  const { cfg, params, tok } = tinyModel();
  const c = modelToGguf({ cfg, params, contextLength: 256, tokenizer: tok.json }, "f32");
  const h = tmpFile();
  writeGguf(h, c.metadata, [...c.tensors, { name: "blk.0.attn_q.bias", shape: [64], type: "F32", data: new Float32Array(64) }]);
  assert.throws(() => importLlamaGguf(h), /tensor blk\.0\.attn_q\.bias is not supported/);
});

// --- CLI ---------------------------------------------------------------------------

test("moe export: HF directory → GGUF; bad options refused", async () => {
  const dir = path.join(tmp, "hfdir");
  const { cfg, params } = writeTinyModelDir(dir, 99);
  const loaded = loadForExport(dir);
  assert.deepEqual(loaded.params, params);
  const out = tmpFile();
  const log = console.log, err = console.error;
  const lines: string[] = [];
  console.log = (s: string) => lines.push(s);
  console.error = (s: string) => lines.push(s);
  try {
    assert.equal(await runExport([dir, "--format", "gguf", "--dtype", "q8_0", "--out", out]), 0);
  } finally {
    console.log = log;
    console.error = err;
  }
  assert.ok(lines.some((l) => l.startsWith(`wrote ${out}`)), lines.join("\n"));
  const imp = importLlamaGguf(out);
  assert.deepEqual(imp.cfg, cfg);
  assert.equal(GgufFile.open(out).getNumber("general.file_type"), 7);
  await assert.rejects(runExport([dir, "--dtype", "q4"]), /--dtype must be one of f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_k_m/);
  await assert.rejects(runExport([dir, "--format", "onnx"]), /--format 'onnx' is not supported/);
  await assert.rejects(runExport([path.join(tmp, "nope")]), /nope: neither a model directory/);
  await assert.rejects(runExport([dir, "--dtyp", "f32"]), /did you mean --dtype/);
  rmSync(path.join(dir, "tokenizer.json"));
  await assert.rejects(runExport([dir, "--out", tmpFile()]), /no tokenizer\.json/);
});

// --- generate ------------------------------------------------------------------------

test("generate: greedy equals argmax of a full forward over the final sequence; sampling seeded", () => {
  const { cfg, params } = tinyModel(11);
  const be = createBackend({ name: "ref" });
  const prompt = [3, 258, 40, 41];
  const N = 8;
  const T = prompt.length + N - 1;
  const m = new MoeModel(cfg, be, { B: 1, T });
  m.params.set(params);
  const out = generate(m, prompt, { maxTokens: N, temperature: 0 });
  assert.equal(out.length, N);
  // causal check: one forward over prompt+out[:-1] gives every generated token as its argmax
  const ids = Int32Array.from([...prompt, ...out.slice(0, -1)]);
  m.forward(ids, null, { train: false });
  const V = cfg.vocabSize;
  for (let i = 0; i < N; i++) {
    const row = m.lastLogits().subarray((prompt.length - 1 + i) * V, (prompt.length + i) * V);
    let arg = 0;
    for (let j = 1; j < V; j++) if (row[j]! > row[arg]!) arg = j;
    assert.equal(out[i], arg, `token ${i}`);
  }
  // EOS stops (and is included)
  const stop = generate(m, prompt, { maxTokens: N, temperature: 0, eosId: out[2] });
  assert.deepEqual(stop, out.slice(0, out.indexOf(out[2]!) + 1));
  // sampling: same seed → same tokens; a tiny nucleus is greedy
  const s1 = generate(m, prompt, { maxTokens: N, temperature: 1.5, seed: 5 });
  assert.deepEqual(generate(m, prompt, { maxTokens: N, temperature: 1.5, seed: 5 }), s1);
  assert.deepEqual(generate(m, prompt, { maxTokens: N, temperature: 1, topP: 1e-9, seed: 3 }), out);
  assert.throws(() => generate(m, prompt, { maxTokens: N + 1 }), /exceeds the model's context/);
  assert.throws(() => generate(m, [V], { maxTokens: 1 }), /out of range/);
  assert.throws(() => generate(m, prompt, { maxTokens: 1, topP: 0 }), /topP/);
});

test("pickToken: sampling frequencies follow softmax(logits/T) within the nucleus", () => {
  const logits = [Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)];
  const rng = createRng(42);
  const n = 20000;
  const count = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) count[pickToken(logits, 1, 1, rng)]!++;
  [0.5, 0.3, 0.15, 0.05].forEach((p, j) => assert.ok(Math.abs(count[j]! / n - p) < 0.015, `p[${j}] ${count[j]! / n}`));
  // topP 0.7: nucleus {0, 1} (0.5 + 0.3 ≥ 0.7), renormalised 0.625 / 0.375
  const c2 = [0, 0, 0, 0];
  for (let i = 0; i < n; i++) c2[pickToken(logits, 1, 0.7, rng)]!++;
  assert.equal(c2[2]! + c2[3]!, 0);
  assert.ok(Math.abs(c2[0]! / n - 0.625) < 0.015);
});
