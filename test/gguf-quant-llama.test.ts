// Quantised GGUF files against llama.cpp itself (node-llama-cpp 3.21's CPU build):
//   1. llama.cpp's quantiser (llama_model_quantize, no imatrix) applied to our F32 export gives
//      the same tensor types and bytes as our own `--dtype` export, for Q4_K_M, Q4_0, Q6_K, Q8_0
//      and BF16 and four families — apart from the documented differences (model/gguf-types.ts:
//      Q5_K → Q6_K for 8-expert attn_output; llama.cpp's Q4_0 mix also puts the output in Q6_K);
//   2. moe-ts runs llama.cpp's files (Q5_K included) and our engine's greedy tokens on them equal
//      those on their f32 dequantisation;
//   3. llama.cpp loads our quantised exports and its greedy tokens agree with our engine's on
//      the same file (llama.cpp also rounds the activations to Q8_K/Q8_0 blocks inside its
//      matmuls, so the agreement is measured and reported).
// Skipped (with the reason) when node-llama-cpp or a C compiler is missing.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { GgufFile } from "../src/io/gguf.js";
import { createBackend } from "../src/backend/index.js";
import { Engine, type TokenEvent } from "../src/infer/engine.js";
import { openEngineModel, type OpenedEngineModel } from "../src/infer/open.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import type { ExportDtype } from "../src/model/gguf-types.js";
import { exportQuant } from "./gguf-quant-fixture.js";
import { loadGgmlRef } from "./ggml-ref.js";
import { loadNodeLlamaCpp, type NodeLlamaCpp, type Token } from "./node-llama.js";


const PROMPT = [84, 258, 32, 99, 97, 116, 259, 263, 17, 200, 5];
const GEN = 16;
const FTYPE: Partial<Record<ExportDtype, number>> = { q4_k_m: 15, q4_0: 2, q6_k: 18, q8_0: 7, bf16: 32 };
const tmp = mkdtempSync(path.join(os.tmpdir(), "moe-gguf-llama-"));
process.on("exit", () => rmSync(tmp, { recursive: true, force: true }));
const { ref: ggml, reason } = loadGgmlRef();

/** Our engine's greedy tokens, with the file's own tokenizer (its padding ids included). */
async function greedy(o: OpenedEngineModel): Promise<number[]> {
  const w = o.engineWeights;
  const eng = new Engine(createBackend({ name: "native", threads: 1 }), w, o.tokenizer!, { maxModelLen: 64, maxNumSeqs: 1 });
  const out: number[] = [];
  const params = validateSamplingParams({ temperature: 0, max_tokens: GEN, ignore_eos: true }, { vocabSize: w.cfg.vocabSize, maxModelLen: 64 });
  for await (const e of eng.submit(PROMPT, params) as AsyncIterable<TokenEvent>) out.push(e.id);
  return out;
}

/** Tensors whose type differs between two files; asserts the rest are byte-identical. */
function compareFiles(ours: string, theirs: string, what: string): string[] {
  const a = GgufFile.open(ours), b = GgufFile.open(theirs);
  assert.deepEqual([...a.tensors.keys()].sort(), [...b.tensors.keys()].sort(), `${what}: tensor names`);
  const differ: string[] = [];
  for (const [name, t] of a.tensors) {
    const u = b.info(name);
    if (t.type !== u.type) {
      differ.push(`${name}:${t.type}/${u.type}`);
      continue;
    }
    assert.ok(Buffer.from(a.readRaw(name)).equals(Buffer.from(b.readRaw(name))), `${what}: ${name} (${t.type}) bytes differ from llama.cpp's`);
  }
  return differ;
}

test("llama.cpp's quantiser on our F32 export = our quantised export, byte for byte (4 families × 5 types)", async (t) => {
  if (!ggml) return t.skip(reason);
  for (const family of ["qwen2_moe", "mixtral", "qwen3_moe", "olmoe"]) {
    const f32 = exportQuant(tmp, family, "f32");
    for (const [dtype, ftype] of Object.entries(FTYPE) as [ExportDtype, number][]) {
      const theirs = path.join(tmp, `${family}-llama-${dtype}.gguf`);
      ggml.quantizeModel(f32, theirs, ftype);
      const differ = compareFiles(exportQuant(tmp, family, dtype), theirs, `${family} ${dtype}`);
      // the documented differences, and only those
      const want: string[] = [];
      if (dtype === "q4_k_m" && family === "mixtral") for (let l = 0; l < 3; l++) want.push(`blk.${l}.attn_output.weight:Q6_K/Q5_K`);
      if (dtype === "q4_0") want.push(family === "qwen3_moe" ? "token_embd.weight:Q4_0/Q6_K" : "output.weight:Q4_0/Q6_K");
      if ((dtype === "q4_0" || dtype === "q6_k") && family === "mixtral") {
        for (let l = 0; l < 3; l++) want.push(`blk.${l}.attn_k.weight:${dtype.toUpperCase()}/Q8_0`, `blk.${l}.attn_v.weight:${dtype.toUpperCase()}/Q8_0`);
      }
      assert.deepEqual(differ.sort(), want.sort(), `${family} ${dtype}: tensors of another type`);
      // moe-ts runs llama.cpp's file: greedy tokens on its blocks = on its f32 dequantisation
      if (dtype === "q4_k_m" || dtype === "q4_0") {
        const be = createBackend({ name: "native", threads: 1 });
        const blocks = openEngineModel(theirs, be, undefined, "test"), deq = openEngineModel(theirs, be, "f32", "test");
        assert.deepEqual(await greedy(blocks), await greedy(deq), `${family} ${dtype}: llama.cpp's file, blocks vs f32`);
      }
    }
  }
});

test("llama.cpp runs our quantised exports; its greedy tokens vs our engine's on the same file", async (t) => {
  const lib = await loadNodeLlamaCpp<NodeLlamaCpp>();
  if (!lib) return t.skip("node-llama-cpp is not installed");
  const llama = await lib.getLlama({ gpu: false, build: "never", logLevel: lib.LlamaLogLevel.error });
  const rows: string[] = [];
  let total = 0, agreeing = 0;
  try {
    const cases: [string, ExportDtype][] = [["qwen2_moe", "q4_k_m"], ["mixtral", "q4_k_m"], ["qwen3_moe", "q4_k_m"], ["olmoe", "q4_k_m"], ["qwen2_moe", "q4_0"], ["qwen2_moe", "q6_k"], ["qwen2_moe", "bf16"], ["olmoe", "q4_k"]];
    for (const [family, dtype] of cases) {
      const file = exportQuant(tmp, family, dtype);
      const ours = await greedy(openEngineModel(file, createBackend({ name: "native", threads: 1 }), undefined, "test"));
      const lm = await llama.loadModel({ modelPath: file });
      const ctx = await lm.createContext({ contextSize: 64, batchSize: 64, threads: 1, flashAttention: false, experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32" });
      const seq = ctx.getSequence();
      const theirs: number[] = [];
      for await (const x of seq.evaluate(PROMPT, { temperature: 0, yieldEogToken: true })) {
        theirs.push(x);
        if (theirs.length >= GEN) break;
      }
      // teacher-forced: llama.cpp's next-token distribution after the prompt and each of our tokens
      await seq.clearHistory();
      const seqIn = [...PROMPT, ...ours.slice(0, GEN - 1)];
      const res = await seq.controlledEvaluate(seqIn.map((x, i) => (i >= PROMPT.length - 1 ? [x, { generateNext: { probabilities: true, token: true, options: { temperature: 0 } } }] : x)));
      await ctx.dispose();
      await lm.dispose();
      let prefix = 0;
      while (prefix < GEN && ours[prefix] === theirs[prefix]) prefix++;
      let same = 0, worstGap = 0;
      for (let i = 0; i < GEN; i++) {
        const next = res[PROMPT.length - 1 + i]!.next;
        if (next.token === ours[i]) same++;
        else {
          // where llama.cpp's argmax differs, our token is a near-tie in llama.cpp's own distribution
          const p = next.probabilities!;
          worstGap = Math.max(worstGap, (p.get(next.token!) ?? 0) - (p.get(ours[i]!) ?? 0));
        }
      }
      rows.push(`${family} ${dtype}: prefix ${prefix}/${GEN}, teacher-forced ${same}/${GEN}${same < GEN ? ` (largest p gap ${worstGap.toFixed(3)})` : ""}`);
      total += GEN;
      agreeing += same;
      assert.ok(worstGap < 0.1, `${family} ${dtype}: llama.cpp prefers its token by p ${worstGap}`);
      assert.equal(ours[0], theirs[0], `${family} ${dtype}: first greedy token`);
    }
  } finally {
    await llama.dispose();
  }
  t.diagnostic(`greedy agreement, ours vs llama.cpp on the same file: ${rows.join("; ")}; teacher-forced total ${agreeing}/${total}`);
  assert.ok(agreeing >= 0.9 * total, `teacher-forced greedy agreement ${agreeing}/${total}`);
});
