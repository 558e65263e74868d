// The overlapped gradient all-reduce's plan (train/grad-overlap.ts) on one process: the buckets tile
// the arena on layer boundaries in backward order, and every bucket is started only once the
// backward has finished writing it — checked by a recording group that copies each bucket when it
// starts and compares the copy with the gradients after the whole backward, bit for bit, for
// every model family (tied embeddings too). The backward with the hook gives the same bits as
// without it. Multi-rank results: test/train-parallel.test.ts.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createBackend } from "../src/backend/index.js";
import { FAMILIES, parseHfConfig, resolveConfig, type Family } from "../src/model/config.js";
import { MoeModel, initParams } from "../src/model/model.js";
import type { ProcessGroup } from "../src/parallel/process-group.js";
import { OverlappedGradReduce, planGradBuckets } from "../src/train/grad-overlap.js";
import { loadTrainConfig, TrainConfigError } from "../src/train/config.js";
import { tinyHfConfig, tokens } from "./model-util.js";

const be = createBackend({ name: "native", threads: 1 });

function model(fam: Family, tied: boolean): MoeModel {
  const cfg = resolveConfig(parseHfConfig({ ...tinyHfConfig(fam), tie_word_embeddings: tied, num_hidden_layers: 3 }));
  const m = new MoeModel(cfg, be, { B: 2, T: 5 });
  initParams(m, 7, 0.2);
  return m;
}

/** A group that records a copy of each started buffer (what a transport would send). */
function recorder(): { group: ProcessGroup; starts: { buf: Float32Array; copy: Float32Array }[] } {
  const starts: { buf: Float32Array; copy: Float32Array }[] = [];
  const group = {
    allreduceStart(buf: Float32Array) {
      starts.push({ buf, copy: Float32Array.from(buf) });
      return { wait: () => 0 };
    },
  } as unknown as ProcessGroup;
  return { group, starts };
}

const CASES: [Family, boolean][] = [...FAMILIES.map((f): [Family, boolean] => [f, false]), ["mixtral", true]];

for (const [fam, tied] of CASES) {
  test(`gradient buckets (${fam}${tied ? ", tied embeddings" : ""}): layer-boundary tiling, each started after its last write`, () => {
    const m = model(fam, tied), L = m.cfg.numLayers, size = m.layout.size;
    const { ids, targets } = tokens(m.N, m.cfg.vocabSize, 3);
    m.forward(ids, targets, { train: true, seed: 5, step: 1 });
    m.zeroGrad();
    m.backward(0.5);
    const plain = Float32Array.from(m.grads as Float32Array);
    for (const bytes of [1, 600, 4 * size]) {
      const buckets = planGradBuckets(m.layout, m.names, 4, bytes);
      // contiguous, descending from the arena's end to 0; at least `bytes` each but the last
      let hi = size;
      buckets.forEach((b, i) => {
        assert.equal(b.hi, hi, `bucket ${i} starts where the previous ended`);
        assert.ok(b.lo < b.hi);
        if (i < buckets.length - 1) assert.ok((b.hi - b.lo) * 4 >= bytes, `bucket ${i} holds at least ${bytes} bytes`);
        hi = b.lo;
      });
      assert.equal(hi, 0, "the buckets cover the arena");
      if (bytes === 1) assert.deepEqual(buckets.map((b) => b.after), [L, ...Array.from({ length: L }, (_, i) => L - 1 - i), -1], "one bucket per backward part");
      if (bytes === 4 * size) assert.equal(buckets.length, 1);
      const { group, starts } = recorder();
      const ov = new OverlappedGradReduce(group, m.grads as Float32Array, buckets);
      m.forward(ids, targets, { train: true, seed: 5, step: 1 });
      m.zeroGrad();
      m.backward(0.5, (part) => ov.done(part));
      assert.equal(starts.length, buckets.length, "every bucket started during the backward");
      ov.finish();
      assert.deepEqual(new Uint8Array((m.grads as Float32Array).buffer), new Uint8Array(plain.buffer), "the hooked backward gives the same bits");
      starts.forEach((s, i) => {
        assert.deepEqual(s.copy, s.buf, `bucket ${i} (${buckets[i]!.lo}..${buckets[i]!.hi}) was final when it started`);
        assert.ok(s.copy.some((v) => v !== 0), `bucket ${i} holds gradients`);
      });
    }
  });
}

test("gradient buckets: a non-positive bucket size is refused", () => {
  const m = model("mixtral", false);
  assert.throws(() => planGradBuckets(m.layout, m.names, 4, 0), /bucket size must be positive/);
});

test("parallel.overlap_grad_reduce (default true) and parallel.bucket_mb (default 4, positive) are validated", () => {
  const c = loadTrainConfig(null, []);
  assert.equal(c.parallel.overlap_grad_reduce, true);
  assert.equal(c.parallel.bucket_mb, 4);
  assert.equal(loadTrainConfig(null, ["parallel.overlap_grad_reduce=false"]).parallel.overlap_grad_reduce, false);
  assert.throws(() => loadTrainConfig(null, ["parallel.bucket_mb=0"]), (e: unknown) => e instanceof TrainConfigError && /parallel\.bucket_mb must be positive, got 0/.test((e as Error).message));
  assert.throws(() => loadTrainConfig(null, ["parallel.overlap_grad_reduce=maybe"]), /overlap_grad_reduce/);
});
