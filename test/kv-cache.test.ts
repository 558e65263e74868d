// KvCachePool: option validation, storage sizes against the closed-form bytes per token, slot
// arithmetic, pool invariants (used + free + cached = numBlocks; freeing every sequence returns
// every block), prefix hits sharing blocks and reference counts, the hash chain, LRU eviction
// order, sliding-window release, full-pool errors; and the pool driving pagedWrite +
// pagedAttention through chunked prefill, decode, window release and a prefix hit, checked
// against dense attentionForward. Not: a test of the kernels' numerics (paged-attention.test.ts).
import { test } from "node:test";
import assert from "node:assert/strict";
import { KvCacheError, KvCachePool, kvBytesPerToken, type KvCacheOptions } from "../src/infer/kv-cache.js";
import { assertClose, backends, randn, TOL } from "./util.js";

const { ref, natives } = backends();
const base: KvCacheOptions = { numLayers: 2, numKvHeads: 2, headSize: 8, numBlocks: 8, blockSize: 4 };
const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);

function invariants(pool: KvCachePool): void {
  const s = pool.stats();
  assert.equal(s.usedBlocks + s.freeBlocks + s.cachedBlocks, s.numBlocks, `used ${s.usedBlocks} + free ${s.freeBlocks} + cached ${s.cachedBlocks} = ${s.numBlocks}`);
}

test("kv cache: options are validated with errors naming the field", () => {
  const bad: [Partial<KvCacheOptions>, RegExp][] = [
    [{ numLayers: undefined }, /numLayers is required/],
    [{ blockSize: 0 }, /blockSize must be an integer ≥ 1, got 0/],
    [{ headSize: 2.5 }, /headSize must be an integer/],
    [{ dtype: "f16" as never }, /dtype must be "f32" or "bf16", got f16/],
    [{ window: -1 }, /window must be an integer ≥ 0/],
    [{ prefixCaching: "yes" as never }, /prefixCaching must be a boolean/],
  ];
  for (const [o, re] of bad) assert.throws(() => new KvCachePool({ ...base, ...o } as KvCacheOptions), (e: unknown) => e instanceof KvCacheError && re.test(e.message), String(re));
  const pool = new KvCachePool(base);
  assert.throws(() => pool.k(2), /layer 2 out of range \[0, 2\)/);
  assert.throws(() => pool.append("x", [1]), /unknown sequence x/);
  pool.allocate("a", [1, 2]);
  assert.throws(() => pool.allocate("a", [1]), /already allocated/);
  assert.throws(() => pool.append("a", [1, -3]), /tokens\[1\] = -3 is not a token id/);
});

test("kv cache: storage per layer and bytes per token (2·L·KVH·HS·bytes)", () => {
  for (const dtype of ["f32", "bf16"] as const) {
    const pool = new KvCachePool({ ...base, dtype });
    const elems = 8 * 4 * 2 * 8;
    assert.ok(dtype === "f32" ? pool.k(0) instanceof Float32Array : pool.k(0) instanceof Uint16Array);
    assert.equal(pool.k(1).length, elems);
    assert.equal(pool.v(0).length, elems);
    assert.notEqual(pool.k(0), pool.k(1));
    const bpt = 2 * 2 * 2 * 8 * (dtype === "f32" ? 4 : 2);
    assert.equal(pool.bytesPerToken, bpt);
    assert.equal(kvBytesPerToken(2, 2, 8, dtype), bpt);
    // Total storage = what the pool actually allocated.
    const bytes = [0, 1].reduce((a, l) => a + pool.k(l).byteLength + pool.v(l).byteLength, 0);
    assert.equal(pool.stats().totalBytes, bytes);
  }
});

test("kv cache: slots follow the block table; blocks are taken as needed", () => {
  const pool = new KvCachePool(base);
  assert.equal(pool.allocate(1, range(0, 6)), 0);
  assert.equal(pool.blocksNeeded(1, 6), 2);
  const slots = pool.append(1, range(0, 6));
  const table = pool.blockTable(1);
  assert.equal(table.length, 2);
  assert.deepEqual([...slots], range(0, 6).map((j) => table[Math.floor(j / 4)]! * 4 + (j % 4)));
  assert.equal(pool.blocksNeeded(1, 2), 0);
  assert.equal(pool.blocksNeeded(1, 3), 1);
  const out = new Int32Array(5).fill(-7);
  pool.append(1, [6, 7, 8], out, 2);
  assert.deepEqual([...out.subarray(0, 2)], [-7, -7]);
  const t2 = pool.blockTable(1);
  assert.deepEqual([...out.subarray(2)], [t2[1]! * 4 + 2, t2[1]! * 4 + 3, t2[2]! * 4]);
  assert.equal(pool.seqLen(1), 9);
  const bt = pool.fillBlockTables([1], new Int32Array(pool.maxBlocksPerSeq));
  assert.deepEqual([...bt], [...t2, ...new Array(pool.maxBlocksPerSeq - 3).fill(-1)]);
  invariants(pool);
});

test("kv cache: freeing every sequence (cancel mid-prefill, finished, preempted) returns every block", () => {
  for (const prefixCaching of [true, false]) {
    const pool = new KvCachePool({ ...base, numBlocks: 12, prefixCaching });
    pool.allocate("a", range(0, 30));
    pool.append("a", range(0, 9)); // cancelled after the first prefill chunk
    pool.allocate("b", range(0, 30)); // shares a's first two blocks when caching
    pool.append("b", range(pool.seqLen("b"), 13));
    pool.allocate("c", range(100, 103));
    pool.append("c", range(100, 103));
    invariants(pool);
    assert.equal(pool.stats().usedBlocks, prefixCaching ? 6 : 8);
    for (const id of ["b", "a", "c"]) pool.free(id);
    const s = pool.stats();
    assert.equal(s.usedBlocks, 0);
    assert.equal(s.numSeqs, 0);
    assert.equal(s.freeBlocks + s.cachedBlocks, 12);
    assert.equal(s.cachedBlocks, prefixCaching ? 3 : 0); // the full blocks of tokens 0..3, 4..7 (a) and 8..11 (b)
    for (let b = 0; b < 12; b++) assert.equal(pool.refCountOf(b), 0);
  }
});

test("kv cache: prefix hits share full blocks and count references; the hash is a chain", () => {
  const pool = new KvCachePool(base);
  const a = range(0, 10);
  pool.allocate("a", a);
  pool.append("a", a);
  const ta = pool.blockTable("a");
  const before = pool.stats();
  assert.equal(pool.lookupPrefix([...range(0, 8), 50]), 8);
  assert.deepEqual(pool.stats(), before, "lookupPrefix has no side effects");
  // Same first 8 tokens: two full blocks shared.
  assert.equal(pool.allocate("b", [...range(0, 8), 50, 51]), 8);
  const tb = pool.blockTable("b");
  assert.deepEqual([...tb], [ta[0], ta[1]]);
  assert.equal(pool.refCountOf(ta[0]!), 2);
  assert.equal(pool.refCountOf(ta[2]!), 1);
  // At least one token is always computed: an 8-token prompt hits one block, not two.
  assert.equal(pool.allocate("c", range(0, 8)), 4);
  assert.equal(pool.refCountOf(ta[0]!), 3);
  assert.equal(pool.refCountOf(ta[1]!), 2);
  // A different block 1: the hit stops after block 0.
  assert.equal(pool.allocate("d", [0, 1, 2, 3, 9, 9, 9, 9, 8, 9, 10]), 4);
  const s = pool.stats();
  assert.equal(s.prefixQueryTokens, 10 + 10 + 8 + 11);
  assert.equal(s.prefixHitTokens, 8 + 4 + 4);
  // b's new tokens go to a new block; a's partial block is not shared.
  const slots = pool.append("b", [50, 51]);
  const tb2 = pool.blockTable("b");
  assert.notEqual(tb2[2], ta[2]);
  assert.equal(slots[0], tb2[2]! * 4);
  invariants(pool);
  // The key chains the prefix: block [4..7] after [9,9,9,9] is not a's block [4..7] after [0..3].
  const chain = new KvCachePool(base);
  chain.allocate("p", range(0, 9));
  chain.append("p", range(0, 9));
  assert.equal(chain.allocate("q", [9, 9, 9, 9, 4, 5, 6, 7, 0]), 0);
  chain.append("q", [9, 9, 9, 9, 4, 5, 6, 7, 0]);
  chain.free("p");
  chain.free("q");
  assert.equal(chain.stats().cachedBlocks, 4, "four distinct full blocks published");
  assert.equal(chain.lookupPrefix([9, 9, 9, 9, 4, 5, 6, 7, 1]), 8);
  assert.equal(chain.lookupPrefix([0, 1, 2, 3, 4, 5, 6, 7, 1]), 8);
  assert.equal(chain.lookupPrefix([4, 5, 6, 7, 1]), 0);
  // Duplicate content computed twice (no hit at allocate): the second block is not published.
  const dup = new KvCachePool(base);
  dup.allocate("x", range(0, 5));
  dup.allocate("y", range(0, 5));
  dup.append("x", range(0, 5));
  dup.append("y", range(0, 5));
  dup.free("x");
  dup.free("y");
  assert.equal(dup.stats().cachedBlocks, 1);
  assert.equal(dup.stats().freeBlocks, 7);
  invariants(dup);
});

test("kv cache: eviction takes free blocks first, then the least recently released, chain tails first", () => {
  const pool = new KvCachePool({ ...base, numBlocks: 6 });
  const a = range(0, 13), b = range(100, 108);
  pool.allocate("a", a);
  pool.append("a", a); // 3 full blocks + 1 partial
  pool.allocate("b", b);
  pool.append("b", b); // 2 full blocks: the pool is exhausted
  assert.equal(pool.stats().freeBlocks, 0);
  assert.equal(pool.canAllocate(1), false);
  pool.free("a"); // a's full blocks → cached (tail released first), its partial block → free
  pool.free("b"); // b's full blocks → cached, after a's
  assert.equal(pool.stats().cachedBlocks, 5);
  assert.equal(pool.stats().freeBlocks, 1);
  assert.equal(pool.canAllocate(6), true);
  invariants(pool);
  assert.equal(pool.lookupPrefix([...a, 0]), 12);
  assert.equal(pool.lookupPrefix([...b, 0]), 8);
  pool.allocate("c", range(500, 520));
  const grow = (n: number) => pool.append("c", range(500 + pool.seqLen("c"), 500 + pool.seqLen("c") + n));
  grow(4); // takes the free block: nothing evicted
  assert.equal(pool.lookupPrefix([...a, 0]), 12);
  grow(4); // evicts a's last full block (released first)
  assert.equal(pool.lookupPrefix([...a, 0]), 8);
  grow(4); // then a's second
  assert.equal(pool.lookupPrefix([...a, 0]), 4);
  grow(4); // then a's first; b (released later) untouched
  assert.equal(pool.lookupPrefix([...a, 0]), 0);
  assert.equal(pool.lookupPrefix([...b, 0]), 8);
  // A hit revives cached blocks: they leave the evictable set.
  assert.equal(pool.allocate("b2", [...b, 0]), 8);
  assert.equal(pool.refCountOf(pool.blockTable("b2")[0]!), 1);
  assert.equal(pool.stats().cachedBlocks, 0);
  assert.equal(pool.canAllocate(1), false);
  assert.equal(pool.canAppend("c", 1), false);
  assert.equal(pool.blocksNeeded("c", 1), 1);
  const len = pool.seqLen("c");
  assert.throws(() => grow(1), (e: unknown) => e instanceof KvCacheError && /kv cache full: sequence c needs 1 more blocks, 0 available/.test(e.message));
  assert.equal(pool.seqLen("c"), len, "a failed append changes nothing");
  invariants(pool);
});

test("kv cache: blocks wholly outside the sliding window are released", () => {
  const W = 10, bs = 4;
  const pool = new KvCachePool({ ...base, numBlocks: 5, blockSize: bs, window: W });
  pool.allocate("s", []);
  let maxUsed = 0;
  for (let L = 0; L < 60; L++) {
    pool.append("s", [L % 7]);
    // The query at position L reads keys (L − W, L]: blocks before ⌊(L − W + 1)/bs⌋ are gone
    // (released when the token at position L was appended).
    const t = pool.blockTable("s");
    const firstNeeded = Math.max(0, L - W + 1);
    for (let b = 0; b < t.length; b++) assert.equal(t[b]! < 0, b < Math.floor(firstNeeded / bs), `L=${L} block ${b}`);
    maxUsed = Math.max(maxUsed, pool.stats().usedBlocks);
    invariants(pool);
  }
  // Never more than ⌈(W − 1)/bs⌉ + 1 blocks live: 60 tokens ran in a 5-block pool.
  assert.equal(maxUsed, Math.ceil((W - 1) / bs) + 1);
  assert.ok(pool.canAppend("s", 1));
  pool.free("s");
  assert.equal(pool.stats().usedBlocks, 0);
});

test("kv cache drives paged attention: chunked prefill, decode with window release, prefix hit = dense attention", () => {
  const L = 2, NH = 4, KVH = 2, HS = 8, bs = 4, W = 10, T = 40, NB = 12;
  const row = KVH * HS;
  for (const dtype of ["f32", "bf16"] as const) {
    for (const be of [ref, natives[1]!.be]) {
      const pool = new KvCachePool({ numLayers: L, numKvHeads: KVH, headSize: HS, numBlocks: NB, blockSize: bs, window: W, dtype });
      const k = [0, 1].map((l) => randn(Float32Array, T * row, 10 + l));
      const v = [0, 1].map((l) => randn(Float32Array, T * row, 20 + l));
      const q = [0, 1].map((l) => randn(Float32Array, T * NH * HS, 30 + l));
      // Keys/values as the cache holds them (bf16-rounded for a bf16 pool), for the dense oracle.
      const held = (x: Float32Array) => {
        if (dtype === "f32") return x;
        const codes = new Uint16Array(x.length), y = new Float32Array(x.length);
        ref.f32ToBf16(codes, x);
        ref.bf16ToF32(y, codes);
        return y;
      };
      const want = [0, 1].map((l) => {
        const out = new Float32Array(T * NH * HS);
        ref.attentionForward(out, new Float32Array(NH * T), q[l]!, held(k[l]!), held(v[l]!), { B: 1, T, NH, KVH, HS, window: W });
        return out;
      });
      const tokens = range(0, T).map((i) => (i * 7) % 11);
      pool.allocate("s", tokens.slice(0, 13));
      const got = [0, 1].map(() => new Float32Array(T * NH * HS));
      // Prefill in chunks of 13 and 5, then decode one token at a time.
      const steps = [[0, 13], [13, 18], ...range(18, T).map((i) => [i, i + 1])] as [number, number][];
      for (const [a, b] of steps) {
        const slots = pool.append("s", tokens.slice(a, b));
        const tables = pool.fillBlockTables(["s"]);
        for (let l = 0; l < L; l++) {
          const p = { numBlocks: NB, blockSize: bs, KVH, HS, NH, numSeqs: 1, maxBlocksPerSeq: pool.maxBlocksPerSeq, window: W };
          be.pagedWrite(pool.k(l), pool.v(l), k[l]!.subarray(a * row, b * row), v[l]!.subarray(a * row, b * row), slots, p);
          const out = got[l]!.subarray(a * NH * HS, b * NH * HS);
          be.pagedAttention(out, q[l]!.subarray(a * NH * HS, b * NH * HS), pool.k(l), pool.v(l), tables, Int32Array.of(0, b - a), Int32Array.of(b), p);
        }
        invariants(pool);
        assert.ok(pool.stats().usedBlocks <= 5, `${pool.stats().usedBlocks} blocks in use`);
      }
      for (let l = 0; l < L; l++) assertClose(got[l]!, want[l]!, TOL.f32, `${be.name} ${dtype} layer ${l}`);
      // A second sequence with the same first 14 tokens: the blocks the window released from
      // "s" stayed in the prefix cache (10 blocks were needed, 12 exist: none evicted), so 12 hit.
      pool.free("s");
      const hit = pool.allocate("t", tokens.slice(0, 14));
      assert.equal(hit, 12);
      const slots = pool.append("t", tokens.slice(12, 14));
      const tables = pool.fillBlockTables(["t"]);
      const p = { numBlocks: NB, blockSize: bs, KVH, HS, NH, numSeqs: 1, maxBlocksPerSeq: pool.maxBlocksPerSeq, window: W };
      be.pagedWrite(pool.k(0), pool.v(0), k[0]!.subarray(12 * row, 14 * row), v[0]!.subarray(12 * row, 14 * row), slots, p);
      const out = new Float32Array(2 * NH * HS);
      be.pagedAttention(out, q[0]!.subarray(12 * NH * HS, 14 * NH * HS), pool.k(0), pool.v(0), tables, Int32Array.of(0, 2), Int32Array.of(14), p);
      assertClose(out, want[0]!.subarray(12 * NH * HS, 14 * NH * HS), TOL.f32, `${be.name} ${dtype} after prefix hit`);
    }
  }
});
