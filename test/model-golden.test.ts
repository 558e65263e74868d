// The whole model against golden files written by the plain-PyTorch reference
// (tools/reference): logits, losses, routing decisions and every parameter gradient,
// on the ref backend in f64 and on the native backend in f32.
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { parseHfConfig, resolveConfig, type HfConfig, type ModelConfig } from "../src/model/config.js";
import { MoeModel, type StepOptions } from "../src/model/model.js";
import type { BalanceLoss } from "../src/moe/layer.js";
import type { RouterNoise } from "../src/moe/router.js";
import { createBackend, type Backend } from "../src/backend/index.js";

const GOLDEN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "test", "golden");

interface GoldenCase {
  name: string;
  router: "mixtral" | "skywork" | "sparsemixer_v2";
  mode: "train" | "eval";
  aux_kind: null | "skywork" | "switch" | "grin_global";
  aux_coef: number;
  z_coef: number;
  capacity_factor: number | null;
  scale_expert_grad: boolean;
  moe_gate_norm_std?: number;
  sparsemixer_eps?: number;
  batch: number;
  seq: number;
}

function load(name: string) {
  const f = SafetensorsFile.open(path.join(GOLDEN, `${name}.safetensors`));
  const meta = JSON.parse(f.metadata.config!);
  const kase = meta.case as GoldenCase;
  const hf = { ...meta };
  delete hf.case;
  let hfCfg: HfConfig;
  if (kase.router === "skywork") {
    hfCfg = parseHfConfig({
      model_type: "skywork", vocab_size: hf.vocab_size, hidden_size: hf.hidden_size, intermediate_size: hf.intermediate_size,
      num_hidden_layers: hf.num_hidden_layers, num_attention_heads: hf.num_attention_heads, num_key_value_heads: hf.num_key_value_heads,
      rms_norm_eps: hf.rms_norm_eps, rope_theta: hf.rope_theta, tie_word_embeddings: hf.tie_word_embeddings,
      num_experts: [hf.num_local_experts], num_experts_per_tok: hf.num_experts_per_tok, moe_use_logits_norm: true,
      moe_gate_norm_std: kase.moe_gate_norm_std ?? 1, moe_2layer_gate: false, moe_use_mixtral_gating: true,
    });
  } else {
    const keep: Record<string, unknown> = {};
    // the reference writes one key set for every family; keys another family owns must be neutral here
    const foreign: Record<string, unknown> = hf.model_type === "mixtral" ? { attention_bias: false, lm_head_bias: false, input_jitter_noise: 0 } : {};
    for (const k of Object.keys(hf)) {
      if (k === "format") continue;
      if (k in foreign) {
        assert.equal(hf[k], foreign[k], `${name}: ${k} must be neutral for ${hf.model_type}`);
        continue;
      }
      keep[k] = hf[k];
    }
    hfCfg = parseHfConfig(keep);
  }
  const cfg: ModelConfig = resolveConfig(
    hfCfg,
    kase.capacity_factor == null ? { kind: "dropless" } : { kind: "capacity", capacityFactor: kase.capacity_factor, policy: "probs" },
  );
  if (cfg.moe.router.kind === "sparsemixer") cfg.moe.router = { ...cfg.moe.router, scaleExpertGrad: kase.scale_expert_grad };
  const f64 = (n: string) => Float64Array.from(f.read(n).data as Float64Array);
  return { f, cfg, kase, f64 };
}

function buildModel(be: Backend, g: ReturnType<typeof load>, dtype: "f32" | "f64"): MoeModel {
  const m = new MoeModel(g.cfg, be, { B: g.kase.batch, T: g.kase.seq, dtype });
  let loaded = 0;
  for (const slot of m.layout.hfTensors) {
    const { info, data } = g.f.read(slot.name);
    assert.deepEqual(info.shape, slot.shape, `shape of ${slot.name}`);
    m.params.set(data as Float32Array, slot.offset);
    loaded++;
  }
  // every parameter of the golden file is used, none missing
  const fileParams = [...g.f.tensors.keys()].filter((n) => n.startsWith("model.") || n.startsWith("lm_head."));
  assert.equal(loaded, fileParams.length, "every golden parameter maps to a model tensor");
  return m;
}

function stepOptions(g: ReturnType<typeof load>): StepOptions {
  const L = g.cfg.numLayers;
  const balance: BalanceLoss = g.kase.aux_kind === null ? "none" : g.kase.aux_kind === "grin_global" ? "global" : g.kase.aux_kind;
  let noise: (RouterNoise | undefined)[] | undefined;
  if (g.kase.router === "sparsemixer_v2" && g.kase.mode === "train") {
    noise = [];
    for (let l = 0; l < L; l++) {
      noise.push({ gumbel: g.f64(`sparsemixer.gumbel.L${l}`), bernoulli: Uint8Array.from(g.f.read(`sparsemixer.bernoulli.L${l}`).data as Int32Array) });
    }
  }
  return { train: g.kase.mode === "train", balance, auxCoefs: new Array(L).fill(g.kase.aux_coef), zCoef: g.kase.z_coef, noise };
}

/** |a−b| ≤ rtol·|b| + atolFrac·max|b| elementwise; reports the worst entry. */
function close(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atolFrac: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let maxAbs = 0;
  for (let i = 0; i < expected.length; i++) maxAbs = Math.max(maxAbs, Math.abs(expected[i]!));
  const atol = atolFrac * maxAbs;
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) - (rtol * Math.abs(expected[i]!) + atol);
    if (!(excess <= 0) && (worst < 0 || excess > worstExcess)) [worst, worstExcess] = [i, excess];
  }
  if (worst >= 0) assert.fail(`${what}[${worst}]: got ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol.toExponential(2)})`);
}

const CASES = ["mixtral_tiny", "mixtral_tiny_aux", "mixtral_tiny_switch", "skywork_tiny", "mixtral_tiny_capacity", "phimoe_tiny_train", "phimoe_tiny_train_scaled", "phimoe_tiny_eval"];

const backends: [string, () => Backend, "f32" | "f64", { logit: number; grad: number; atol: number }][] = [
  ["ref-f64", () => createBackend({ name: "ref" }), "f64", { logit: 1e-9, grad: 1e-7, atol: 1e-9 }],
  ["native-f32", () => createBackend({ name: "native", threads: 2 }), "f32", { logit: 1e-4, grad: 1e-3, atol: 1e-4 }],
];

for (const name of CASES) {
  for (const [label, mk, dtype, tol] of backends) {
    test(`golden ${name} on ${label}: logits, losses, routes, all gradients`, () => {
      const g = load(name);
      const be = mk();
      const m = buildModel(be, g, dtype);
      const ids = Int32Array.from(g.f.read("input_ids").data as Int32Array);
      const hasTargets = g.f.has("targets") && g.kase.mode === "train";
      const targets = hasTargets ? Int32Array.from(g.f.read("targets").data as Int32Array) : null;
      const opt = stepOptions(g);
      const r = m.forward(ids, targets, opt);
      close(m.lastLogits(), g.f64("logits"), tol.logit, tol.atol * 0.01, `${name} logits`);
      for (let l = 0; l < g.cfg.numLayers; l++) {
        const st = r.moe[l]!;
        assert.ok(st, `layer ${l} is MoE`);
        // routing decisions equal the reference's
        const experts = g.f.read(`route.experts.L${l}`).data as Int32Array;
        const counts = new Int32Array(g.cfg.moe.numExperts);
        for (const e of experts) counts[e]!++;
        assert.deepEqual([...st.tokensPerExpert], [...counts], `layer ${l} tokensPerExpert`);
        if (g.f.has(`loss.aux.L${l}`)) close([st.aux], g.f64(`loss.aux.L${l}`), tol.logit * 10, 0, `${name} aux L${l}`);
        if (g.f.has(`loss.z.L${l}`)) close([st.z], g.f64(`loss.z.L${l}`), tol.logit * 10, 0, `${name} z L${l}`);
        if (g.f.has(`route.kept.L${l}`)) {
          const kept = g.f.read(`route.kept.L${l}`).data as Int32Array;
          const dropped = kept.reduce((s, k) => s + (k ? 0 : 1), 0);
          close([st.dropRate], [dropped / kept.length], 0, 0, `${name} drop rate L${l}`);
        }
      }
      if (!targets) return;
      close([r.ce], g.f64("loss.ce"), tol.logit, 0, `${name} loss.ce`);
      close([r.loss], g.f64("loss"), tol.logit, 0, `${name} loss`);
      m.zeroGrad();
      m.backward(1);
      for (const slot of m.layout.hfTensors) {
        const got = m.grads.subarray(slot.offset, slot.offset + slot.size);
        close(got, g.f64(`grad.${slot.name}`), tol.grad, tol.atol, `${name} grad.${slot.name}`);
      }
    });
  }
}
