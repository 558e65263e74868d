// Sampler tests: parameter validation, each step and their order against hand-computed
// distributions, frequency (chi-square) tests of the draws with fixed seeds, greedy decoding,
// reproducibility per request, logprobs against log_softmax computed here.
import { test } from "node:test";
import assert from "node:assert/strict";
import { validateSamplingParams, outputBudget, SamplingParamsError, type SamplingParams, type SamplingContext } from "../src/infer/sampling-params.js";
import { SequenceSampler, SamplerWorkspace, SamplerError, cutWeight } from "../src/infer/sampler.js";
import { rng } from "./util.js";

const CTX: SamplingContext = { vocabSize: 8, maxModelLen: 64 };
const P = (p: Record<string, unknown>, ctx = CTX): SamplingParams => validateSamplingParams(p, ctx);

function softmax(z: number[]): number[] {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}
/** Keeps the given ids of a probability vector and renormalises. */
function keep(p: number[], ids: number[]): number[] {
  const s = ids.reduce((a, i) => a + p[i]!, 0);
  const set = new Set(ids);
  return p.map((v, i) => (set.has(i) ? v / s : 0));
}
function assertDist(actual: Float64Array, expected: number[], tol = 1e-12): void {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    if (!(Math.abs(actual[i]! - expected[i]!) <= tol)) {
      assert.fail(`p[${i}] = ${actual[i]}, expected ${expected[i]} (all: ${Array.from(actual).map((x) => x.toFixed(6)).join(", ")})`);
    }
  }
}
const sampler = (p: Record<string, unknown>, V: number, extra: Partial<ConstructorParameters<typeof SequenceSampler>[1]> = {}) =>
  new SequenceSampler(P(p, { vocabSize: V, maxModelLen: 1024 }), { vocabSize: V, ...extra });

test("validation: defaults are vLLM's (max_tokens unset)", () => {
  const d = P({});
  assert.deepEqual(
    { ...d, logit_bias: [...d.logit_bias], stop: [...d.stop], stop_token_ids: [...d.stop_token_ids] },
    {
      n: 1, temperature: 1, top_p: 1, top_k: 0, min_p: 0, presence_penalty: 0, frequency_penalty: 0, repetition_penalty: 1,
      logit_bias: [], seed: null, stop: [], stop_token_ids: [], include_stop_str_in_output: false, ignore_eos: false,
      max_tokens: null, min_tokens: 0, logprobs: false, top_logprobs: 0, logprobs_mode: "raw", skip_special_tokens: true,
    },
  );
  // null means default; top_k -1 means disabled; a single stop string becomes a list
  assert.equal(P({ temperature: null }).temperature, 1);
  assert.equal(P({ top_k: -1 }).top_k, 0);
  assert.deepEqual([...P({ stop: "###" }).stop], ["###"]);
  assert.deepEqual([...P({ logit_bias: { "5": -3, 2: 1.5 } }).logit_bias].map((e) => [...e]), [[2, 1.5], [5, -3]]);
  assert.equal(P({ max_completion_tokens: 7 }).max_tokens, 7);
});

test("validation: bad fields are named in the error", () => {
  const bad: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ temperature: -0.1 }, "temperature", /≥ 0/],
    [{ temperature: "hot" }, "temperature", /finite number/],
    [{ top_p: 0 }, "top_p", /> 0/],
    [{ top_p: 1.5 }, "top_p", /≤ 1/],
    [{ top_k: 2.5 }, "top_k", /integer/],
    [{ top_k: -2 }, "top_k", /≥ -1/],
    [{ min_p: 2 }, "min_p", /≤ 1/],
    [{ presence_penalty: 3 }, "presence_penalty", /≤ 2/],
    [{ frequency_penalty: -2.5 }, "frequency_penalty", /≥ -2/],
    [{ repetition_penalty: 0 }, "repetition_penalty", /> 0/],
    [{ logit_bias: { "8": 1 } }, "logit_bias", /not a token id in \[0, 8\)/],
    [{ logit_bias: { x: 1 } }, "logit_bias", /not a token id/],
    [{ logit_bias: { "1": 101 } }, "logit_bias[1]", /≤ 100/],
    [{ logit_bias: [1, 2] }, "logit_bias", /object/],
    [{ seed: 1.5 }, "seed", /integer/],
    [{ stop: [""] }, "stop", /non-empty/],
    [{ stop: 5 }, "stop", /string/],
    [{ stop_token_ids: [9] }, "stop_token_ids", /not a token id/],
    [{ ignore_eos: 1 }, "ignore_eos", /true or false/],
    [{ max_tokens: 0 }, "max_tokens", /≥ 1/],
    [{ max_tokens: 65 }, "max_tokens", /≤ 64/],
    [{ max_tokens: 4, min_tokens: 5 }, "min_tokens", /≤ 4/],
    [{ max_tokens: 4, max_completion_tokens: 5 }, "max_completion_tokens", /conflicts/],
    [{ top_logprobs: 3 }, "top_logprobs", /needs logprobs/],
    [{ logprobs: true, top_logprobs: 21 }, "top_logprobs", /≤ 20/],
    [{ logprobs_mode: "final" }, "logprobs_mode", /"raw" or "processed"/],
    [{ n: 0 }, "n", /≥ 1/],
    [{ "top-p": 0.5 }, "top-p", /did you mean "top_p"/],
  ];
  for (const [input, param, msg] of bad) {
    assert.throws(() => P(input), (e: unknown) => e instanceof SamplingParamsError && e.param === param && msg.test(e.message), JSON.stringify(input));
  }
  assert.throws(() => P({ max_tokens: 10 }, { ...CTX, promptTokens: 60 }), (e: unknown) => e instanceof SamplingParamsError && e.param === "max_tokens" && /60 prompt \+ 10/.test(e.message));
  assert.throws(() => P({}, { ...CTX, promptTokens: 64 }), (e: unknown) => e instanceof SamplingParamsError && e.param === "prompt");
  assert.equal(outputBudget(P({}), 60, 64), 4);
  assert.equal(outputBudget(P({ max_tokens: 3 }), 10, 64), 3);
});

test("greedy: argmax after bias and penalties, lowest id on ties, no RNG", () => {
  const s = sampler({ temperature: 0 }, 5);
  assert.equal(s.sample([0.5, 2, 1, 2, -1]).id, 1); // tie 1 vs 3 → 1
  const b = sampler({ temperature: 0, logit_bias: { "4": 3.5 } }, 5);
  assert.equal(b.sample([0.5, 2, 1, 2, -1]).id, 4);
  // temperature just under the greedy threshold is greedy too; different seeds agree
  for (const seed of [1, 2, 3]) assert.equal(sampler({ temperature: 1e-6, seed }, 5).sample([0, 1, 3, 2, 1]).id, 2);
  assert.deepEqual(Array.from(s.distribution([0, 1, 3, 3, 1])), [0, 0, 1, 0, 0]);
});

test("temperature, top_k (ties kept), top_p, min_p each match a hand-computed distribution", () => {
  const z = [1, 2, 3, 4];
  assertDist(sampler({}, 4).distribution(z), softmax(z));
  assertDist(sampler({ temperature: 0.5 }, 4).distribution(z), softmax(z.map((v) => v / 0.5)));
  assertDist(sampler({ top_k: 2 }, 4).distribution(z), keep(softmax(z), [2, 3]));
  assertDist(sampler({ top_k: 1 }, 4).distribution([1, 3, 3, 0]), [0, 0.5, 0.5, 0]); // both tied maxima survive
  assertDist(sampler({ top_k: 10 }, 4).distribution(z), softmax(z));
  const lp = [0.1, 0.2, 0.3, 0.4].map(Math.log);
  assertDist(sampler({ top_p: 0.5 }, 4).distribution(lp), [0, 0, 3 / 7, 4 / 7]); // 0.4 < 0.5 ≤ 0.7
  assertDist(sampler({ top_p: 0.35 }, 4).distribution(lp), [0, 0, 0, 1]);
  assertDist(sampler({ top_p: 0.95 }, 4).distribution(lp), [0.1, 0.2, 0.3, 0.4]);
  assertDist(sampler({ min_p: 0.5 }, 4).distribution(lp), [0, 2 / 9, 3 / 9, 4 / 9]); // p ≥ 0.2
  // top_p ties: equal probabilities are taken lower id first
  assertDist(sampler({ top_p: 0.5 }, 4).distribution([0, 0, 0, 0]), [0.5, 0.5, 0, 0]);
});

test("step order: temperature → top_k → top_p → min_p (cases where another order differs)", () => {
  const lp = [0.4, 0.3, 0.2, 0.1].map(Math.log);
  // top_k then top_p: after top_k=2 the survivors are 4/7, 3/7, and top_p=0.5 keeps only the first.
  // (top_p first would keep two: 0.4 < 0.5 ≤ 0.7.)
  assertDist(sampler({ top_k: 2, top_p: 0.5 }, 4).distribution(lp), [1, 0, 0, 0]);
  // top_p then min_p: top_p=0.75 keeps {.4,.3,.2}; min_p=0.3 keeps p ≥ 0.12 of those: all three.
  // (min_p first would renormalise to .444/.333/.222 and top_p=0.75 would then keep two.)
  assertDist(sampler({ top_p: 0.75, min_p: 0.3 }, 4).distribution(lp), [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9, 0]);
  // temperature before top_p: T=2 flattens to ∝ sqrt(p); top_p=0.5 then keeps two tokens.
  const sq = [0.4, 0.3, 0.2, 0.1].map(Math.sqrt);
  const sqn = sq.map((v) => v / sq.reduce((a, b) => a + b));
  assert.ok(sqn[0]! < 0.5 && sqn[0]! + sqn[1]! >= 0.5);
  assertDist(sampler({ temperature: 2, top_p: 0.5 }, 4).distribution(lp), keep(sqn, [0, 1]));
  // temperature before min_p: min_p compares tempered probabilities: T=2 → ratios sqrt(p/pmax).
  // p/pmax = .25 for id 3 → tempered .5 ≥ 0.4 (kept); untempered .25 < 0.4 would drop it.
  assertDist(sampler({ temperature: 2, min_p: 0.4 }, 4).distribution(lp), sqn);
});

test("penalties: logit_bias → repetition (prompt + output) → frequency/presence (output)", () => {
  // logit_bias before repetition: z0 = 1 − 2 = −1 (negative) then × 2 = −2.
  // (repetition first would give 1/2 − 2 = −1.5.)
  const s = sampler({ logit_bias: { "0": -2 }, repetition_penalty: 2 }, 4, { promptIds: [0, 1] });
  const z = [1, 3, -1, 0.5];
  assertDist(s.distribution(z), softmax([-2, 1.5, -1, 0.5]));
  // output tokens: repetition applies to them too; frequency · count + presence to output only
  const f = sampler({ repetition_penalty: 1.5, frequency_penalty: 0.5, presence_penalty: 0.25 }, 4, { promptIds: [0] });
  f.record(2);
  f.record(2);
  f.record(3);
  const z2 = [2, 1, 3, -1];
  assertDist(f.distribution(z2), softmax([2 / 1.5, 1, 3 / 1.5 - 1 - 0.25, -1 * 1.5 - 0.5 - 0.25]));
  // negative penalties reward repeats
  const g = sampler({ presence_penalty: -1 }, 3);
  g.record(1);
  assertDist(g.distribution([0, 0, 0]), softmax([0, 1, 0]));
});

test("min_tokens masks EOS and stop_token_ids until reached; ignore_eos leaves EOS alone", () => {
  const z = [0, 5, 0, 4]; // EOS = 1 dominates, stop token 3 next
  const s = sampler({ temperature: 0, min_tokens: 2, stop_token_ids: [3] }, 4, { eosTokenIds: [1] });
  assert.equal(s.sample(z).id, 0); // 1 and 3 masked → argmax of {0, 2} ties → 0
  assert.equal(s.sample(z).id, 0);
  assert.equal(s.outputTokens, 2);
  assert.equal(s.sample(z).id, 1); // unmasked from the third token on
  const i = sampler({ temperature: 0, min_tokens: 2, stop_token_ids: [3], ignore_eos: true }, 4, { eosTokenIds: [1] });
  assert.equal(i.sample(z).id, 1);
  // masking happens before temperature: the masked token has probability 0
  const r = sampler({ min_tokens: 1 }, 3, { eosTokenIds: [2] });
  assertDist(r.distribution([1, 2, 9]), keep(softmax([1, 2, 9]), [0, 1]));
  const all = sampler({ min_tokens: 1, stop_token_ids: [0] }, 2, { eosTokenIds: [1] });
  assert.throws(() => all.sample([1, 1]), SamplerError);
});

/** Chi-square statistic of observed counts vs expected probabilities (cells with p > 0). */
function chiSquare(counts: number[], p: Float64Array, N: number): { stat: number; df: number } {
  let stat = 0, df = -1;
  for (let i = 0; i < p.length; i++) {
    if (p[i] === 0) {
      assert.equal(counts[i], 0, `token ${i} has probability 0 but was drawn ${counts[i]} times`);
      continue;
    }
    const e = N * p[i]!;
    stat += (counts[i]! - e) ** 2 / e;
    df++;
  }
  return { stat, df };
}
// 99.9% quantiles of chi-square for df = 1..8
const CHI2_999 = [NaN, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12];

test("draws follow the processed distribution (chi-square, fixed seeds)", () => {
  const z = [0.3, -1.2, 2.0, 1.1, 0.0, -0.4, 1.7, 0.9];
  const cases: Array<Record<string, unknown>> = [{}, { temperature: 0.7 }, { temperature: 1.3, top_k: 5 }, { top_p: 0.8 }, { min_p: 0.2, temperature: 0.9 }, { top_k: 6, top_p: 0.9, min_p: 0.05 }];
  const N = 40000;
  for (const [c, params] of cases.entries()) {
    const s = sampler({ ...params, seed: 1234 + c }, 8);
    const p = s.distribution(z);
    const counts = new Array<number>(8).fill(0);
    for (let t = 0; t < N; t++) counts[s.sample(z).id]!++;
    const { stat, df } = chiSquare(counts, p, N);
    assert.ok(stat < CHI2_999[df]!, `${JSON.stringify(params)}: chi2 ${stat.toFixed(2)} with df ${df}`);
  }
});

test("seeded requests reproduce whatever else runs in the batch; n>1 sequences differ", () => {
  const V = 50;
  const rows = Array.from({ length: 20 }, (_, t) => Array.from({ length: V }, (_, i) => Math.sin(i * 1.7 + t) * 2));
  const run = (s: SequenceSampler) => rows.map((r) => s.sample(r).id);
  const params = { seed: 42, temperature: 0.9, top_p: 0.95 };
  const alone = run(sampler(params, V));
  // interleaved with other sequences sharing one workspace, in varying order
  const ws = new SamplerWorkspace(V);
  const a = sampler(params, V, { workspace: ws });
  const others = [sampler({ seed: 7 }, V, { workspace: ws }), sampler({}, V, { workspace: ws })];
  const got: number[] = [];
  for (const [t, r] of rows.entries()) {
    if (t % 2) others[0]!.sample(r);
    got.push(a.sample(r).id);
    others[1]!.sample(r);
  }
  assert.deepEqual(got, alone);
  const second = run(sampler(params, V, { index: 1 }));
  assert.notDeepEqual(second, alone);
  assert.deepEqual(run(sampler(params, V, { index: 1 })), second);
  // seeds that differ only above 32 bits still give different streams
  assert.notDeepEqual(run(sampler({ ...params, seed: 42 + 2 ** 40 }, V)), alone);
  // no seed: a random one, exposed for logging
  const r1 = sampler({}, V), r2 = sampler({}, V);
  assert.notEqual(r1.seed, r2.seed);
  assert.deepEqual(run(sampler({ ...params, seed: r1.seed }, V)), run(sampler({ ...params, seed: r1.seed }, V)));
});

test("logprobs: raw = log_softmax of the model's logits; processed = log of the sampled distribution", () => {
  const z = [1, 2, 3, 3, -1];
  const lse = Math.log(z.reduce((a, v) => a + Math.exp(v), 0));
  const raw = sampler({ temperature: 0, logprobs: true, top_logprobs: 3, logit_bias: { "0": 50 } }, 5).sample(z);
  assert.equal(raw.id, 0);
  assert.ok(Math.abs(raw.logprob! - (1 - lse)) < 1e-12);
  assert.deepEqual(raw.topLogprobs!.map((t) => t.id), [2, 3, 1]); // tie 2/3 → lower id first
  for (const t of raw.topLogprobs!) assert.ok(Math.abs(t.logprob - (z[t.id]! - lse)) < 1e-12);
  const s = sampler({ top_k: 2, logprobs: true, top_logprobs: 4, logprobs_mode: "processed", seed: 3 }, 5);
  const p = s.distribution(z);
  const out = s.sample(z);
  assert.ok(Math.abs(out.logprob! - Math.log(p[out.id]!)) < 1e-12);
  assert.deepEqual(out.topLogprobs!.map((t) => [t.id, +t.logprob.toFixed(12)]), [[2, +Math.log(0.5).toFixed(12)], [3, +Math.log(0.5).toFixed(12)]]);
  // without logprobs nothing is computed; logprobs without top_logprobs: no list
  assert.deepEqual(Object.keys(sampler({ seed: 1 }, 5).sample(z)), ["id"]);
  const only = sampler({ temperature: 0, logprobs: true }, 5).sample(z);
  assert.deepEqual([only.id, only.topLogprobs], [2, undefined]);
  assert.ok(Math.abs(only.logprob! - (3 - lse)) < 1e-12);
});

test("bad rows are rejected", () => {
  const s = sampler({}, 3);
  assert.throws(() => s.sample([1, 2]), /vocabSize 3/);
  assert.throws(() => s.sample([1, NaN, 2]), /logits\[1\] is NaN/);
  assert.throws(() => new SequenceSampler(P({ stop_token_ids: [7] }), { vocabSize: 4 }), /stop\/EOS id 7/);
});

test("large vocabulary: top_p over many near-equal tokens agrees with a full sort", () => {
  const V = 5000;
  const z = Array.from({ length: V }, (_, i) => Math.cos(i * 0.37) * 0.5 + (i % 97 === 0 ? 3 : 0));
  const s = sampler({ top_p: 0.9, temperature: 0.8 }, V);
  const d = s.distribution(z);
  // reference: sort all, take the prefix reaching 0.9
  const p = softmax(z.map((v) => v / 0.8));
  const order = p.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]);
  const ids: number[] = [];
  let cum = 0;
  for (const [v, i] of order) {
    ids.push(i);
    cum += v;
    if (cum >= 0.9) break;
  }
  assertDist(d, keep(p, ids), 1e-10);
});

test("top_p cut (weighted quickselect) equals a sort-based scan, with ties and large arrays", () => {
  const r = rng(9);
  for (let trial = 0; trial < 300; trial++) {
    const k = 1 + Math.floor(r() * (trial < 200 ? 80 : 5000));
    const levels = 1 + Math.floor(r() * 20); // few levels → many ties
    const vals = Float64Array.from({ length: k }, () => (1 + Math.floor(r() * levels)) / 8);
    const total = vals.reduce((a, b) => a + b, 0);
    const target = r() * total;
    const desc = Array.from(vals).sort((a, b) => b - a);
    let cum = 0, ref: [number, number] | null = null;
    for (const v of desc) {
      if (cum + v >= target) {
        ref = [v, desc.filter((x) => x > v).reduce((a, b) => a + b, 0)];
        break;
      }
      cum += v;
    }
    const got = cutWeight(vals.slice(), k, target);
    assert.ok(got !== null && ref !== null);
    assert.equal(got[0], ref[0], `k ${k} target ${target}`);
    assert.ok(Math.abs(got[1] - ref[1]) <= 1e-9 * total);
  }
  assert.equal(cutWeight(Float64Array.from([0.25, 0.25]), 2, 0.75), null);
});
