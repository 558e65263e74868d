// Decode/prefill timing of our engine alone (no peer), for profiling: `node dist/bench/decode-profile.js
// [--model default|1b|1b4] [--dtype q8_0,f16] [--threads 1] [--tokens 64] [--prefill 512] [--reps 3]`.
// 1b4: the bench's 1B OLMoE-shaped model cut to 4 layers (same per-layer shapes; quicker to build).
// Not: the comparison with llama.cpp (bench/infer.ts is).
import { createBackend } from "../src/backend/index.js";
import { parseHfConfig, resolveConfig, type ModelConfig } from "../src/model/config.js";
import { preset } from "../src/model/presets.js";
import { Weights } from "../src/model/weights.js";
import { Engine } from "../src/infer/engine.js";
import { engineWeights, type EngineDtype } from "../src/infer/engine-weights.js";
import { validateSamplingParams } from "../src/infer/sampling-params.js";
import { tokenizerFromJSON } from "../src/data/tokenizer.js";
import { byteTokenizerJson } from "./byte-tokenizer.js";
import { median } from "./common.js";
import { readdirSync, readFileSync } from "node:fs";

/** CPU ticks (utime + stime) of each thread of this process, by "tid name". */
function threadTicks(): Map<string, number> {
  const m = new Map<string, number>();
  for (const tid of readdirSync("/proc/self/task")) {
    try {
      const st = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const name = st.slice(st.indexOf("(") + 1, st.lastIndexOf(")"));
      const f = st.slice(st.lastIndexOf(")") + 2).split(" ");
      m.set(`${tid} ${name}`, Number(f[11]) + Number(f[12]));
    } catch { /* thread exited */ }
  }
  return m;
}

function arg(name: string, d: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : d;
}
function cfgOf(name: string): ModelConfig {
  if (name === "default") return resolveConfig(preset("small-moe"));
  return resolveConfig(parseHfConfig({
    model_type: "mixtral", vocab_size: 50304, hidden_size: 1024, intermediate_size: 256, num_hidden_layers: name === "1b4" ? 4 : 16,
    num_attention_heads: 16, num_key_value_heads: 16, num_local_experts: 64, num_experts_per_tok: 8, rms_norm_eps: 1e-5,
    rope_theta: 10000, max_position_embeddings: 4096, tie_word_embeddings: false, sliding_window: null,
  }, "profile"));
}
const cfg = cfgOf(arg("model", "1b4"));
const T = Number(arg("threads", "1"));
const NT = Number(arg("tokens", "64"));
const P = Number(arg("prefill", "512"));
const reps = Number(arg("reps", "3"));
const V = cfg.vocabSize;
const tok = tokenizerFromJSON(byteTokenizerJson(V), { source: "bench tokenizer" });
let w: Weights | null = new Weights(cfg).init(1234, 0.02);
const dtypes = arg("dtype", "q8_0,f16").split(",") as EngineDtype[];
const activations = arg("activations", "f32") as "f32" | "q8";
const ews = dtypes.map((d) => engineWeights(w!, { dtype: d }));
w = null;
const be = createBackend({ name: "native", threads: T });
function prompt(len: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: len }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0), 256 + (s % (V - 257))));
}
for (let di = 0; di < dtypes.length; di++) {
  const eng = new Engine(be, ews[di]!, tok, { maxModelLen: 1024, maxNumSeqs: 8, maxNumBatchedTokens: 512, kvCacheTokens: 1024, kvDtype: "bf16", prefixCaching: false, activations });
  const params = (max: number) => validateSamplingParams({ temperature: 0, max_tokens: max, ignore_eos: true }, { vocabSize: V, maxModelLen: 1024 });
  const dec: number[] = [], cpu: number[] = [], pre: number[] = [];
  let ticks0 = threadTicks();
  for (let r = 0; r <= reps; r++) {
    let n = 0, t1 = 0, c1 = process.cpuUsage();
    for await (const ev of eng.submit(prompt(16, r), params(NT))) {
      if (ev.id < 0) continue;
      if (++n === 1) { t1 = performance.now(); c1 = process.cpuUsage(); ticks0 = threadTicks(); }
    }
    const dt = (performance.now() - t1) / 1000;
    const c = process.cpuUsage(c1);
    if (r > 0) { dec.push((NT - 1) / dt); cpu.push((c.user + c.system) / 1e6 / dt); }
    if (r === reps) {
      const t = threadTicks();
      const busy = [...t].map(([k, v]) => [k, v - (ticks0.get(k) ?? 0)] as const).filter(([, v]) => v > 0);
      console.log(`  threads with CPU ticks during the last decode (${dt.toFixed(2)} s wall): ${busy.map(([k, v]) => `${k}: ${v}`).join(", ")}`);
    }
    if (P > 0) {
      const t0 = performance.now();
      for await (const ev of eng.submit(prompt(P, r + 100), params(1))) void ev;
      if (r > 0) pre.push(P / ((performance.now() - t0) / 1000));
    }
  }
  console.log(`${dtypes[di]} T=${T}: decode ${median(dec).toFixed(1)} tok/s (cpu ${median(cpu).toFixed(2)} cores) [${dec.map((x) => x.toFixed(1)).join(" ")}]` + (P > 0 ? `; prefill ${P} ${median(pre).toFixed(1)} tok/s [${pre.map((x) => x.toFixed(1)).join(" ")}]` : ""));
}
