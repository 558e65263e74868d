// The inference engine on quantised GGUF files (infer/gguf-weights.ts, openEngineModel):
//   1. every Mat the engine builds from a file (auto dtype) dequantises bit for bit to the same
//      rows as the f32 import of that file (importModelGguf: ggml's dequantize_row_*, the
//      reference), for mixtral (llama arch: RoPE rows, 8 experts), qwen2_moe (shared expert,
//      biases), qwen3_moe (tied head omitted from the file) and olmoe, and for every export dtype;
//   2. the blocks are the file's own bytes (no f32 round trip), Q4_K_M files stay mixed
//      (Q4_K + Q6_K + Q8_0 by llama.cpp's rules) and the engine holds them in ~1/6 of f32;
//   3. greedy tokens of the engine on the blocks equal those on the f32 dequantised weights;
//   4. an explicit --dtype other than the file's re-encodes (q8_0 from a Q4_K file).
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createBackend } from "../src/backend/index.js";
import { GgufFile } from "../src/io/gguf.js";
import { importModelGguf, openGgufModel } from "../src/model/gguf-families.js";
import type { ExportDtype } from "../src/model/gguf-types.js";
import { useMoreBits } from "../src/model/gguf-types.js";
import { ggufEngineWeights } from "../src/infer/gguf-weights.js";
import { engineWeights, type EngineWeights, type Mat } from "../src/infer/engine-weights.js";
import { Weights } from "../src/model/weights.js";
import { Engine, type TokenEvent } from "../src/infer/engine.js";
import { openEngineModel, type OpenedEngineModel } from "../src/infer/open.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { dequantizeBlock, type BlockFormat } from "../src/core/quant-blocks.js";
import { decodeBf16 } from "../src/core/ggml-quants-ref.js";
import { decodeArray } from "../src/core/dtype.js";
import { exportQuant, QUANT_FAMILIES } from "./gguf-quant-fixture.js";

/** A Mat's values in f32. */
function matValues(m: Mat): Float32Array {
  const n = m.rows * m.cols;
  if (m.format === "f32") return m.w;
  if ("blocks" in m) {
    const out = new Float32Array(n);
    dequantizeBlock(out, m.blocks, m.format as BlockFormat, n);
    return out;
  }
  assert.ok(m.scales.every((s) => s === 1), "16-bit codes from a file have scale 1");
  if (m.format === "bf16") return decodeBf16(m.codes as Uint16Array);
  const out = new Float32Array(n);
  decodeArray("f16", out, m.codes as Uint16Array);
  return out;
}

/** Every (name, Mat) pair of an engine. */
function mats(w: EngineWeights): [string, Mat][] {
  const out: [string, Mat][] = [["head", w.head]];
  w.layers.forEach((l, i) => {
    for (const k of ["q", "k", "v", "o", "gateUp", "down"] as const) if (l[k]) out.push([`${i}.${k}`, l[k]!]);
    l.moe?.w13.forEach((m, e) => out.push([`${i}.w13.${e}`, m]));
    l.moe?.w2.forEach((m, e) => out.push([`${i}.w2.${e}`, m]));
    if (l.moe?.sharedGateUp) out.push([`${i}.sharedGateUp`, l.moe.sharedGateUp], [`${i}.sharedDown`, l.moe.sharedDown!]);
  });
  return out;
}

const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-gguf-engine-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));

test("engine Mats from a GGUF equal the f32 import bit for bit (every family, every export dtype)", () => {
  const dtypes: ExportDtype[] = ["q4_k_m", "q4_0", "q4_k", "q6_k", "q8_0", "bf16", "f16"];
  for (const family of Object.keys(QUANT_FAMILIES)) {
    for (const dtype of family === "mixtral" ? dtypes : ["q4_k_m", "q4_0"] as ExportDtype[]) {
      const file = exportQuant(tmp, family, dtype);
      const imp = importModelGguf(file);
      const ref = engineWeights(new Weights(imp.cfg, "f32", imp.params));
      const got = ggufEngineWeights(openGgufModel(file));
      const a = mats(got), b = mats(ref);
      assert.equal(a.length, b.length);
      for (let i = 0; i < a.length; i++) {
        const [name, m] = a[i]!;
        assert.notEqual(m.format, "f32", `${family} ${dtype} ${name}: no f32 matrices from a ${dtype} file`);
        const want = matValues(b[i]![1]), have = matValues(m);
        assert.equal(have.length, want.length, `${family} ${dtype} ${name}`);
        const at = have.findIndex((v, j) => !Object.is(v, want[j]));
        assert.equal(at, -1, `${family} ${dtype} ${name}: value ${at} ${have[at]} vs ${want[at]}`);
      }
      // the small tensors are the import's
      assert.deepEqual(got.embed, ref.embed);
      assert.deepEqual(got.layers.map((l) => l.moe!.router), ref.layers.map((l) => l.moe!.router));
    }
  }
});

test("blocks are the file's bytes; Q4_K_M keeps llama.cpp's mix; the engine holds ~1/6 of f32", () => {
  const file = exportQuant(tmp, "qwen2_moe", "q4_k_m");
  const g = GgufFile.open(file);
  const w = ggufEngineWeights(openGgufModel(file));
  const v0 = w.layers[0]!.v;
  assert.ok("blocks" in v0);
  assert.deepEqual(v0.blocks, g.readRaw("blk.0.attn_v.weight"), "attn_v blocks as stored");
  const down = g.readRaw("blk.1.ffn_down_exps.weight"), per = down.length / 4;
  w.layers[1]!.moe!.w2.forEach((m, e) => assert.deepEqual((m as { blocks: Uint8Array }).blocks, down.subarray(e * per, (e + 1) * per), `expert ${e} down`));
  // llama.cpp's Q4_K_M rules (3 layers: use_more_bits picks layers 0 and 2; 4 experts)
  const L = 3;
  for (let l = 0; l < L; l++) {
    const six = useMoreBits(l, L) ? "Q6_K" : "Q4_K";
    assert.equal(g.info(`blk.${l}.attn_v.weight`).type, six);
    assert.equal(g.info(`blk.${l}.ffn_down_exps.weight`).type, six);
    assert.equal(g.info(`blk.${l}.ffn_down_shexp.weight`).type, six);
    assert.equal(g.info(`blk.${l}.attn_q.weight`).type, "Q4_K");
    assert.equal(g.info(`blk.${l}.ffn_gate_inp.weight`).type, "F32");
  }
  assert.equal(g.info("output.weight").type, "Q6_K");
  assert.equal(g.info("token_embd.weight").type, "Q4_K");
  assert.deepEqual(Object.keys(w.formats).sort(), ["q4_k", "q6_k"]);
  const f32 = engineWeights(new Weights(w.cfg, "f32", importModelGguf(file).params));
  let f32Mats = 0, qMats = 0;
  for (const [, m] of mats(f32)) f32Mats += m.rows * m.cols * 4;
  for (const [, m] of mats(w)) qMats += (m as { blocks: Uint8Array }).blocks.byteLength;
  assert.ok(qMats < f32Mats / 6, `matrices: ${qMats} bytes vs f32 ${f32Mats}`);
  // 8 experts (mixtral): attn_k / attn_v Q8_0, attn_output Q6_K (llama.cpp: Q5_K)
  const mx = GgufFile.open(exportQuant(tmp, "mixtral", "q4_k_m"));
  assert.equal(mx.info("blk.1.attn_k.weight").type, "Q8_0");
  assert.equal(mx.info("blk.1.attn_v.weight").type, "Q8_0");
  assert.equal(mx.info("blk.1.attn_output.weight").type, "Q6_K");
  // tied qwen3_moe: no output.weight, token_embd takes the output's Q6_K
  const q3 = GgufFile.open(exportQuant(tmp, "qwen3_moe", "q4_k_m"));
  assert.equal(q3.has("output.weight"), false);
  assert.equal(q3.info("token_embd.weight").type, "Q6_K");
});

async function greedyTokens(o: OpenedEngineModel, prompt: number[], n: number): Promise<number[]> {
  const be = createBackend({ name: "native", threads: 1 }), w = o.engineWeights;
  const eng = new Engine(be, w, o.tokenizer!, { maxModelLen: 64, maxNumSeqs: 1 });
  const out: number[] = [];
  const params = validateSamplingParams({ temperature: 0, max_tokens: n, ignore_eos: true }, { vocabSize: w.cfg.vocabSize, maxModelLen: 64 });
  for await (const e of eng.submit(prompt, params) as AsyncIterable<TokenEvent>) out.push(e.id);
  return out;
}

test("greedy tokens on the file's blocks equal those on its f32 dequantised weights; --dtype re-encodes", async () => {
  const PROMPT = [84, 258, 32, 99, 97, 116, 259, 263, 17, 200, 5];
  for (const family of ["mixtral", "qwen2_moe"]) {
    const file = exportQuant(tmp, family, "q4_k_m");
    const be = createBackend({ name: "native", threads: 1 });
    const blocks = openEngineModel(file, be, undefined, "test");
    const f32 = openEngineModel(file, be, "f32", "test");
    assert.equal(f32.engineWeights.head.format, "f32");
    assert.equal(blocks.engineWeights.head.format, "q6_k");
    const a = await greedyTokens(blocks, PROMPT, 16), b = await greedyTokens(f32, PROMPT, 16);
    assert.deepEqual(a, b, `${family}: blocks ${a} vs f32 ${b}`);
  }
  const q4k = exportQuant(tmp, "olmoe", "q4_k");
  const asQ8 = ggufEngineWeights(openGgufModel(q4k), { dtype: "q8_0" });
  assert.deepEqual(Object.keys(asQ8.formats), ["q8_0"]);
  assert.throws(() => openEngineModel(q4k, createBackend({ name: "ref" }), "q5", "moe generate"), /--dtype must be auto or one of f32, .*got 'q5'/);
});
