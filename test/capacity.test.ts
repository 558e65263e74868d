// Capacity tests: C = ⌈CF·K·N/E⌉, hand-built keep masks for both drop policies,
// drop rate = dropped/(K·N), extreme loads, dropless (huge CF), bad input.
import { test } from "node:test";
import assert from "node:assert/strict";
import { capacityKeep, expertCapacity } from "../src/moe/capacity.js";
import { assertExact, assertMoeError, randInt } from "./util.js";

test("expertCapacity = ⌈CF·K·N/E⌉, robust to float error", () => {
  assert.equal(expertCapacity(8, 2, 4, 1.25), 5);
  assert.equal(expertCapacity(3, 1, 2, 1.0), 2);
  assert.equal(expertCapacity(10, 1, 1, 1.1), 11); // 1.1·10 = 11.000000000000002 in f64
  assert.equal(expertCapacity(7, 2, 3, 1.25), 6); // 5.833… → 6
  assert.equal(expertCapacity(0, 2, 4, 1.25), 0);
  assert.equal(expertCapacity(5, 1, 2, Infinity), Infinity);
  assert.throws(() => expertCapacity(5, 1, 2, 0), /capacityFactor/);
});

// tokens 0..3, K = 2, E = 3
const TOP = new Int32Array([0, 1, /**/ 0, 2, /**/ 0, 1, /**/ 1, 0]);
const W = new Float64Array([0.3, 0.2, /**/ 0.6, 0.1, /**/ 0.3, 0.5, /**/ 0.4, 0.35]);

test("position policy keeps the first C per expert in (token, slot) order", () => {
  const r = capacityKeep(TOP, W, 4, 2, 3, 2, "position");
  // expert 0: ids 0,2,4,7 → keep 0,2; expert 1: ids 1,5,6 → keep 1,5; expert 2: id 3
  assertExact(r.keep, [1, 1, 1, 1, 0, 1, 0, 0]);
  assert.equal(r.dropped, 3);
  assert.equal(r.dropRate, 3 / 8);
  assertExact(r.tokensPerExpert, [4, 3, 1]);
  assertExact(r.keptPerExpert, [2, 2, 1]);
});

test("probs policy keeps the C highest weights per expert; ties → earlier token, then lower slot", () => {
  const r = capacityKeep(TOP, W, 4, 2, 3, 2, "probs");
  // expert 0: ids 0 (.3), 2 (.6), 4 (.3), 7 (.35) → keep 2, 7
  // expert 1: ids 1 (.2), 5 (.5), 6 (.4) → keep 5, 6
  assertExact(r.keep, [0, 0, 1, 1, 0, 1, 1, 1]);
  assert.equal(r.dropped, 3);
  assert.equal(r.dropRate, 3 / 8);
  assertExact(r.keptPerExpert, [2, 2, 1]);
  // capacity 1 on ties: expert 0 has ids 0 and 4 at 0.3 after the larger ones
  const tie = new Float64Array([0.3, 0.2, 0.3, 0.1, 0.3, 0.5, 0.4, 0.3]);
  const t = capacityKeep(TOP, tie, 4, 2, 3, 3, "probs");
  // expert 0: ids 0,2,4,7 all 0.3 → first three ids 0,2,4 kept, 7 dropped
  assertExact(t.keep, [1, 1, 1, 1, 1, 1, 1, 0]);
  // tie across slots: token 0 slot 1 and token 1 slot 0 both on expert 1 at 0.5, C = 1 → token 0 wins
  const r2 = capacityKeep(new Int32Array([0, 1, 1, 0]), new Float64Array([0.5, 0.5, 0.5, 0.5]), 2, 2, 2, 1, "probs");
  assertExact(r2.keep, [1, 1, 0, 0]);
});

test("all tokens to one expert; the others get zero", () => {
  const N = 10;
  const top = new Int32Array(N).fill(2);
  const w = new Float32Array(N).map((_, i) => i / 10);
  const C = expertCapacity(N, 1, 4, 1.0);
  assert.equal(C, 3);
  for (const policy of ["position", "probs"] as const) {
    const r = capacityKeep(top, w, N, 1, 4, C, policy);
    assertExact(r.tokensPerExpert, [0, 0, 10, 0]);
    assertExact(r.keptPerExpert, [0, 0, 3, 0]);
    assert.equal(r.dropped, 7);
    assert.equal(r.dropRate, 0.7);
    assertExact(r.keep, policy === "position" ? [1, 1, 1, 0, 0, 0, 0, 0, 0, 0] : [0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
  }
});

test("huge CF (dropless / virtual) drops nothing; the same call gives the virtual drop rate", () => {
  const N = 500, K = 2, E = 8;
  const top = new Int32Array(N * K);
  const a = randInt(N, E, 3), b = randInt(N, E - 1, 4);
  for (let n = 0; n < N; n++) {
    top[n * K] = a[n]!;
    top[n * K + 1] = (a[n]! + 1 + b[n]!) % E; // distinct from the first pick
  }
  const w = new Float64Array(N * K).fill(0.5);
  for (const cf of [1e6, Infinity]) {
    const r = capacityKeep(top, w, N, K, E, expertCapacity(N, K, E, cf), "probs");
    assert.equal(r.dropped, 0);
    assert.equal(r.dropRate, 0);
    assertExact(r.keptPerExpert, r.tokensPerExpert);
  }
  const v = capacityKeep(top, w, N, K, E, expertCapacity(N, K, E, 1.0), "position");
  let over = 0;
  for (const c of v.tokensPerExpert) over += Math.max(0, c - 125);
  assert.equal(v.dropped, over);
  assert.equal(v.dropRate, over / (N * K));
});

test("capacityKeep rejects bad input", () => {
  assertMoeError(() => capacityKeep(new Int32Array([0, 3]), new Float64Array(2), 1, 2, 3, 1, "position"), /out of range/);
  assertMoeError(() => capacityKeep(new Int32Array([0, 1]), new Float64Array(3), 1, 2, 3, 1, "position"), /weights/);
  assertMoeError(() => capacityKeep(new Int32Array([0, 1]), new Float64Array(2), 1, 2, 3, -1, "probs"), /capacity/);
  const empty = capacityKeep(new Int32Array(0), new Float64Array(0), 0, 2, 3, 0, "probs");
  assert.equal(empty.dropRate, 0);
});
