// Sampler benchmark: time of one SequenceSampler.sample() call (the per-sequence, per-step
// cost the engine adds after the forward) for Mixtral-sized (32000) and Qwen-sized (151936)
// vocabularies, over common parameter sets. Logits are N(0, 2²) with a few peaks, like an LM's.
// Also the incremental detokenizer + stop matcher per token.
// Reports CPU time per call (process.cpuUsage) next to wall time: the machine is shared.
// Not: a correctness test (test/sampler.test.ts).
// Run: npx tsc -p . && node dist/bench/sampler-bench.js
import { createRng } from "../src/core/rng.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { SequenceSampler, SamplerWorkspace } from "../src/infer/sampler.js";
import { SequenceOutput } from "../src/infer/output.js";
import { trainBpe } from "../src/data/bpe-train.js";

const CONFIGS: Array<[string, Record<string, unknown>]> = [
  ["greedy", { temperature: 0 }],
  ["T=0.8", { temperature: 0.8 }],
  ["T=0.8 top_p=0.9", { temperature: 0.8, top_p: 0.9 }],
  ["llama-server defaults (k40 p.95 minp.05 T.8)", { temperature: 0.8, top_k: 40, top_p: 0.95, min_p: 0.05 }],
  ["T=0.8 top_p=0.9 + penalties (256 prior tokens)", { temperature: 0.8, top_p: 0.9, repetition_penalty: 1.1, frequency_penalty: 0.3, presence_penalty: 0.2 }],
  ["T=0.8 + logprobs top 5", { temperature: 0.8, logprobs: true, top_logprobs: 5 }],
];

for (const V of [32000, 151936]) {
  const rng = createRng(V);
  const rows = Array.from({ length: 8 }, () => {
    const z = new Float32Array(V);
    for (let i = 0; i < V; i++) z[i] = rng.normal() * 2;
    for (let j = 0; j < 5; j++) z[rng.int(V)] = 12 + rng.normal();
    return z;
  });
  const ws = new SamplerWorkspace(V);
  for (const [name, p] of CONFIGS) {
    const params = validateSamplingParams({ ...p, seed: 1 }, { vocabSize: V, maxModelLen: 1 << 20 });
    const prompt = Array.from({ length: 256 }, (_, i) => (i * 7919) % V);
    const s = new SequenceSampler(params, { vocabSize: V, workspace: ws, promptIds: prompt });
    for (let i = 0; i < 256; i++) s.record(prompt[i]!);
    for (let i = 0; i < 20; i++) s.sample(rows[i % rows.length]!);
    const reps = 200;
    const t = performance.now();
    const c = process.cpuUsage();
    for (let i = 0; i < reps; i++) s.sample(rows[i % rows.length]!);
    const cpu = process.cpuUsage(c);
    const us = ((performance.now() - t) / reps) * 1000;
    const cpuUs = (cpu.user + cpu.system) / reps;
    console.log(`sample  V=${V}  ${name.padEnd(48)} ${cpuUs.toFixed(0).padStart(6)} µs CPU  (${us.toFixed(0)} µs wall)`);
  }
}

const texts = ["The whale swam — naïve café 的 😀 past the ship. ".repeat(200)];
const tok = trainBpe(texts, { vocabSize: 512 });
const ids = tok.encode(texts[0]!);
const params = validateSamplingParams({ stop: ["###", "\n\nUser:"] }, { vocabSize: tok.vocabSize, maxModelLen: 1 << 20 });
const out = new SequenceOutput(tok, params, { maxTokens: 1 << 20 });
const c0 = process.cpuUsage();
for (const id of ids) out.push(id);
const cpu = process.cpuUsage(c0);
const us = (cpu.user + cpu.system) / ids.length;
if (out.text !== texts[0]) throw new Error("detokenized text differs from the input");
console.log(`detok+stop per token (${ids.length} tokens, 2 stop strings): ${us.toFixed(1)} µs CPU`);
