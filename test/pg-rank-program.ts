// The program every rank runs in test/process-group.test.ts (threads workers and mpirun ranks).
// Each rank generates every rank's inputs from a seed, runs a collective and compares its result
// bit for bit against a sequential computation in rank order done here with plain loops (not the
// library's reduction helper). It prints `RESULT <rank> <sha256 of all results>` at the end.
// Scenarios (argv[2]): all | overlap | throw | exit | hang | kill. Run directly (not as a rank) it does nothing,
// so `node --test dist/test/` may load it harmlessly.
import { createHash } from "node:crypto";
import { detectBackend, initWorld } from "../src/parallel/world.js";
import { createMesh, meshCoord, meshSizes } from "../src/parallel/mesh.js";
import { allreduceBucketed, layerGroup, type Buf, type ProcessGroup, type ReduceOp } from "../src/parallel/process-group.js";

type Kind = "f32" | "f64" | "i32";

/** Deterministic value of (seed, rank, i): spans many magnitudes so summation order shows in the bits. */
function val(kind: Kind, seed: number, rank: number, i: number): number {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(rank + 1, 0xc2b2ae35) ^ Math.imul(i + 7, 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d);
  h = Math.imul(h ^ (h >>> 12), 0x297a2d39);
  h ^= h >>> 15;
  if (kind === "i32") return h | 0; // wraps when summed
  const u = (h >>> 0) / 2 ** 32 - 0.5;
  return u * 2 ** ((h >>> 3) % 24 - 12);
}

function make(kind: Kind, n: number): Buf {
  return kind === "f32" ? new Float32Array(n) : kind === "f64" ? new Float64Array(n) : new Int32Array(n);
}
function gen(kind: Kind, seed: number, rank: number, n: number, at = 0): Buf {
  const b = make(kind, n);
  for (let i = 0; i < n; i++) b[i] = val(kind, seed, rank, at + i);
  return b;
}
/** Sequential reduction of element i over ranks in the given order, in the dtype's arithmetic. */
function seqReduce(kind: Kind, op: ReduceOp, seed: number, ranks: readonly number[], i: number): number {
  let acc = val(kind, seed, ranks[0]!, i);
  if (kind === "f32") acc = Math.fround(acc);
  for (const r of ranks.slice(1)) {
    let x = val(kind, seed, r, i);
    if (kind === "f32") x = Math.fround(x);
    if (op === "sum") acc = kind === "i32" ? (acc + x) | 0 : kind === "f32" ? Math.fround(acc + x) : acc + x;
    else if (op === "max") acc = x > acc || Number.isNaN(x) ? x : acc;
    else acc = x < acc || Number.isNaN(x) ? x : acc;
  }
  return acc;
}

function sameBits(what: string, got: Buf, want: ArrayLike<number>): void {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, expected ${want.length}`);
  const w = make(got instanceof Float32Array ? "f32" : got instanceof Float64Array ? "f64" : "i32", want.length);
  w.set(want);
  const a = new Uint8Array(got.buffer, got.byteOffset, got.byteLength), b = new Uint8Array(w.buffer);
  for (let i = 0; i < a.length; i++)
    if (a[i] !== b[i]) {
      const e = Math.floor(i / got.BYTES_PER_ELEMENT);
      throw new Error(`${what}: element ${e} is ${got[e]}, expected ${w[e]} (bit-exact)`);
    }
}

const KINDS: Kind[] = ["f32", "f64", "i32"];

async function collectives(g: ProcessGroup, hash: ReturnType<typeof createHash>, big: number): Promise<void> {
  const p = g.size, r = g.rank, all = Array.from({ length: p }, (_, i) => i);
  const keep = (b: Buf) => hash.update(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  let seed = 1;
  for (const kind of KINDS)
    for (const op of ["sum", "max", "min"] as ReduceOp[])
      for (const n of [0, 1, 7, 1000, big]) {
        seed++;
        const b = gen(kind, seed, r, n);
        await g.allreduce(b, op);
        sameBits(`allreduce ${kind} ${op} n=${n}`, b, Array.from({ length: n }, (_, i) => seqReduce(kind, op, seed, all, i)));
        keep(b);
      }
  for (const kind of KINDS)
    for (const m of [0, 3, Math.ceil(big / p)]) {
      seed++;
      const recv = make(kind, m);
      await g.reduceScatter(gen(kind, seed, r, m * p), recv);
      sameBits(`reduceScatter ${kind} m=${m}`, recv, Array.from({ length: m }, (_, i) => seqReduce(kind, "sum", seed, all, r * m + i)));
      keep(recv);
    }
  for (const kind of KINDS)
    for (const n of [0, 5, big]) {
      seed++;
      const recv = make(kind, n * p);
      await g.allgather(gen(kind, seed, r, n), recv);
      const want: number[] = [];
      for (const q of all) want.push(...gen(kind, seed, q, n));
      sameBits(`allgather ${kind} n=${n}`, recv, want);
      keep(recv);
    }
  // alltoallv: count(i→j) from a formula with zeros (and a pattern where nobody sends to rank 0).
  const patterns: ((i: number, j: number) => number)[] = [
    (i, j) => (i * 7 + j * 3) % 5,
    (i, j) => (j === 0 ? 0 : ((i + 1) * (j + 2) * 97) % (big + 1)),
    () => 0,
  ];
  for (const kind of KINDS)
    for (const [pi, cnt] of patterns.entries()) {
      seed++;
      const sendCounts = all.map((j) => cnt(r, j)), recvCounts = all.map((i) => cnt(i, r));
      // Rank i's block for j holds positions j*100000 + k of rank i's sequence.
      const send: number[] = [];
      for (const j of all) for (let k = 0; k < sendCounts[j]!; k++) send.push(val(kind, seed, r, j * 100000 + k));
      const sb = make(kind, send.length);
      sb.set(send);
      const recv = make(kind, recvCounts.reduce((a, b) => a + b, 0));
      await g.alltoallv(sb, sendCounts, recv, recvCounts);
      const want: number[] = [];
      for (const i of all) for (let k = 0; k < recvCounts[i]!; k++) want.push(val(kind, seed, i, r * 100000 + k));
      sameBits(`alltoallv ${kind} pattern ${pi}`, recv, want);
      keep(recv);
    }
  for (const root of all) {
    seed++;
    const b = r === root ? gen("f64", seed, root, 513) : new Float64Array(513);
    await g.broadcast(b, root);
    sameBits(`broadcast root=${root}`, b, gen("f64", seed, root, 513));
  }
  // send/recv around the ring (even ranks send first), two tags received in reverse order.
  if (p > 1) {
    seed++;
    const next = (r + 1) % p, prev = (r - 1 + p) % p;
    const a = new Float32Array(big), b = new Float32Array(3);
    const sendBoth = async () => {
      await g.send(gen("f32", seed, r, big), next, 5);
      await g.send(gen("f32", seed + 1, r, 3), next, 6);
    };
    const recvBoth = async () => {
      await g.recv(a, prev, 5);
      await g.recv(b, prev, 6);
    };
    if (r % 2 === 0) {
      await sendBoth();
      await recvBoth();
    } else {
      await recvBoth();
      await sendBoth();
    }
    sameBits("recv tag 5", a, gen("f32", seed, prev, big));
    sameBits("recv tag 6", b, gen("f32", seed + 1, prev, 3));
  }
  await g.barrier();
  // Bucketed allreduce of many small tensors = one allreduce per tensor.
  seed++;
  const ts = Array.from({ length: 40 }, (_, t) => gen("f32", seed + t, r, 1 + ((t * 37) % 300)));
  await allreduceBucketed(g, ts, "sum", { bucketBytes: 2048 });
  ts.forEach((t, k) => sameBits(`bucketed tensor ${k}`, t, Array.from({ length: t.length }, (_, i) => seqReduce("f32", "sum", seed + k, all, i))));
  // A mismatch fails every rank with the same message, and the group stays usable.
  if (p > 1) {
    const sc = all.map(() => 1), rc = all.map(() => 1);
    if (r === 0) rc[p - 1] = 2;
    let msg = "";
    try {
      await g.alltoallv(new Float32Array(p), sc, new Float32Array(p + 1), rc);
    } catch (e) {
      msg = (e as Error).message;
    }
    if (!/rank \d+ sends 1 elements to rank 0/.test(msg)) throw new Error(`alltoallv count mismatch: expected an error naming the ranks, got '${msg}'`);
    const b = Float64Array.of(r);
    await g.allreduce(b);
    sameBits("allreduce after a failed alltoallv", b, [(p * (p - 1)) / 2]);
  }
}

/** The blocking forms: same bits as the sequential computation; ranks may mix blocking and async forms. */
async function blocking(g: ProcessGroup, hash: ReturnType<typeof createHash>, big: number): Promise<void> {
  const p = g.size, r = g.rank, all = Array.from({ length: p }, (_, i) => i);
  let seed = 5000;
  for (const n of [7, big]) {
    seed++;
    const b = gen("f32", seed, r, n);
    if (r % 2 === 0) g.allreduceSync(b);
    else await g.allreduce(b); // odd ranks meet the even ranks' blocking call with the async one
    sameBits(`allreduceSync n=${n}`, b, Array.from({ length: n }, (_, i) => seqReduce("f32", "sum", seed, all, i)));
    hash.update(new Uint8Array(b.buffer));
  }
  seed++;
  const rs = new Float64Array(5);
  g.reduceScatterSync(gen("f64", seed, r, 5 * p), rs, "max");
  sameBits("reduceScatterSync max", rs, Array.from({ length: 5 }, (_, i) => seqReduce("f64", "max", seed, all, r * 5 + i)));
  seed++;
  const ag = new Int32Array(3 * p);
  g.allgatherSync(gen("i32", seed, r, 3), ag);
  const agWant: number[] = [];
  for (const q of all) agWant.push(...gen("i32", seed, q, 3));
  sameBits("allgatherSync", ag, agWant);
  seed++;
  const cnt = (i: number, j: number) => (i + 2 * j) % 3; // zeros included
  const sendCounts = all.map((j) => cnt(r, j)), recvCounts = all.map((i) => cnt(i, r));
  const send: number[] = [];
  for (const j of all) for (let k = 0; k < sendCounts[j]!; k++) send.push(val("f32", seed, r, j * 1000 + k));
  const recv = new Float32Array(recvCounts.reduce((a, b) => a + b, 0));
  g.alltoallvSync(Float32Array.from(send), sendCounts, recv, recvCounts);
  const want: number[] = [];
  for (const i of all) for (let k = 0; k < recvCounts[i]!; k++) want.push(val("f32", seed, i, r * 1000 + k));
  sameBits("alltoallvSync", recv, want);
  seed++;
  const bc = r === p - 1 ? gen("f64", seed, p - 1, 9) : new Float64Array(9);
  g.broadcastSync(bc, p - 1);
  sameBits("broadcastSync", bc, gen("f64", seed, p - 1, 9));
  g.barrierSync();
  // The MoE layer's synchronous interface.
  const counts = Float64Array.of(r, 1);
  layerGroup(g).allreduceSum(counts);
  sameBits("layerGroup allreduceSum", counts, [(p * (p - 1)) / 2, p]);
  // A blocking call while an async one is in flight is refused on every rank, which stays usable.
  const pending = g.allreduce(new Float32Array(3));
  let msg = "";
  try {
    g.allreduceSync(new Float32Array(3));
  } catch (e) {
    msg = (e as Error).message;
  }
  await pending;
  if (!/still in flight/.test(msg)) throw new Error(`allreduceSync during an async allreduce: expected a refusal, got '${msg}'`);
  await g.barrier();
}

/** allreduceStart: each started allreduce gives the allreduce's bits whatever the wait order; other
 * operations are refused until every started one is waited for; a second wait is an error. */
async function started(g: ProcessGroup, hash: ReturnType<typeof createHash>, big: number): Promise<void> {
  const r = g.rank, all = Array.from({ length: g.size }, (_, i) => i);
  const spec: [Kind, number, number][] = [["f32", 7001, big], ["f64", 7002, 13], ["f32", 7003, 1]];
  const bufs = spec.map(([k, seed, n]) => gen(k, seed, r, n));
  const ops = bufs.map((b) => g.allreduceStart(b));
  let msg = "";
  try {
    g.allreduceSync(new Float32Array(2));
  } catch (e) {
    msg = (e as Error).message;
  }
  if (!/waited for|still in flight/.test(msg)) throw new Error(`allreduceSync between allreduceStart and wait: expected a refusal, got '${msg}'`);
  for (const i of [2, 0, 1]) {
    const ms = ops[i]!.wait();
    if (!(ms >= 0)) throw new Error(`allreduceStart: wait() returned ${ms} ms`);
  }
  spec.forEach(([k, seed, n], i) => {
    sameBits(`allreduceStart ${k} n=${n}`, bufs[i]!, Array.from({ length: n }, (_, e) => seqReduce(k, "sum", seed, all, e)));
    hash.update(new Uint8Array(bufs[i]!.buffer));
  });
  let twice = "";
  try {
    ops[0]!.wait();
  } catch (e) {
    twice = (e as Error).message;
  }
  if (!/twice/.test(twice)) throw new Error(`a second wait() on one started operation: expected an error, got '${twice}'`);
  await g.barrier();
}

/** Overlap: rank 0 computes synchronously for 1 s right after starting a 4 MB allreduce; every
 * rank prints how long its wait() took from the start (MPI: the others finish while rank 0 computes). */
function overlap(g: ProcessGroup): void {
  const b = new Float32Array(1 << 20).fill(g.rank + 1);
  g.barrierSync();
  const t0 = performance.now();
  const op = g.allreduceStart(b);
  if (g.rank === 0) {
    const end = t0 + 1000;
    while (performance.now() < end);
  }
  const ms = op.wait();
  const waited = performance.now() - t0;
  sameBits("overlapped allreduce", b.subarray(0, 5), new Array(5).fill((g.size * (g.size + 1)) / 2));
  console.log(`OVERLAP ${g.rank} ${waited.toFixed(1)} ${ms.toFixed(1)}`);
}

async function groups(world: ProcessGroup, hash: ReturnType<typeof createHash>): Promise<void> {
  const p = world.size, r = world.rank;
  // split by parity, reversed order by key.
  const half = await world.split(r % 2, -r);
  const members = Array.from({ length: p }, (_, i) => i).filter((i) => i % 2 === r % 2).reverse();
  if (!half || half.size !== members.length || half.rank !== members.indexOf(r) || half.worldRanks.join() !== members.join())
    throw new Error(`split: got rank ${half?.rank}/${half?.size} [${half?.worldRanks}], expected ${members.indexOf(r)}/${members.length} [${members}]`);
  const b = gen("f32", 99, r, 333);
  await half.allreduce(b);
  sameBits("split allreduce (key order)", b, Array.from({ length: 333 }, (_, i) => seqReduce("f32", "sum", 99, members, i)));
  hash.update(new Uint8Array(b.buffer));
  await collectives(half, hash, 300);
  // subgroup of the last and first rank, in that order; others get null.
  const list = [p - 1, 0];
  const sub = await world.subgroup(list);
  if (list.includes(r) !== (sub !== null)) throw new Error(`subgroup: rank ${r} membership wrong`);
  if (sub) {
    const c = gen("f64", 7, r, 50);
    await sub.allreduce(c);
    sameBits("subgroup allreduce", c, Array.from({ length: 50 }, (_, i) => seqReduce("f64", "sum", 7, list, i)));
    await sub.close();
  }
  // Mesh: 4 ranks → tp 2 × dp 2, ep 2 (over the dp replicas of each TP rank); 2 ranks → dp 2, ep 2.
  const sizes = p === 4 ? { tp: 2, dp: 2, ep: 2 } : { dp: p, ep: p };
  const mesh = await createMesh(world, sizes);
  const s = meshSizes(p, sizes);
  const coords = Array.from({ length: p }, (_, i) => meshCoord(i, s));
  const fixed = { tp: ["pp", "dp"], dp: ["pp", "tp"], pp: ["dp", "tp"], ep: ["pp", "expDp", "tp"], expDp: ["pp", "ep", "tp"] } as const;
  const expect = (axis: keyof typeof fixed) =>
    Array.from({ length: p }, (_, q) => q)
      .filter((q) => fixed[axis].every((a) => coords[q]![a] === coords[r]![a]))
      .sort((x, y) => coords[x]![axis] - coords[y]![axis]);
  for (const axis of ["tp", "dp", "pp", "ep", "expDp"] as const) {
    const g = mesh[axis], want = expect(axis);
    if (g.worldRanks.join() !== want.join() || g.rank !== want.indexOf(r)) throw new Error(`mesh ${axis}: got [${g.worldRanks}] rank ${g.rank}, expected [${want}] rank ${want.indexOf(r)}`);
    const v = Float64Array.of(r + 1, r * r);
    await g.allreduce(v);
    sameBits(`mesh ${axis} allreduce`, v, [want.reduce((a, q) => a + q + 1, 0), want.reduce((a, q) => a + q * q, 0)]);
  }
  if (p === 4 && mesh.ep.worldRanks.join() !== mesh.dp.worldRanks.join()) throw new Error("mesh: with ep = dp the expert group must be the TP rank's dp group");
}

/** While rank 0 waits in an allreduce for a late rank 1, its timers keep firing (a blocked event
 * loop fires none until the wait ends). */
async function eventLoopStaysFree(g: ProcessGroup): Promise<void> {
  await g.barrier();
  if (g.rank === 1) await new Promise((r) => setTimeout(r, 400));
  let ticks = 0;
  const t = setInterval(() => ticks++, 10);
  const t0 = performance.now();
  await g.allreduce(new Float32Array(16));
  const waited = performance.now() - t0;
  clearInterval(t);
  if (g.rank === 0 && (waited < 100 || ticks < 3)) throw new Error(`event loop: rank 0 waited ${waited.toFixed(0)} ms in allreduce with only ${ticks} timer ticks (blocked?)`);
}

async function main(): Promise<void> {
  const scenario = process.argv[2] ?? "all";
  const world = await initWorld();
  const r = world.rank;
  const hash = createHash("sha256");
  if (scenario === "all") {
    const big = Number(process.argv[3] ?? 5000);
    await eventLoopStaysFree(world);
    await collectives(world, hash, big);
    await blocking(world, hash, big);
    await started(world, hash, big);
    await groups(world, hash);
    console.log(`RESULT ${r} ${hash.digest("hex")}`);
    await world.close();
    return;
  }
  if (scenario === "overlap") {
    overlap(world);
    await world.close();
    return;
  }
  await world.allreduce(new Float32Array(4));
  if (r === 1) {
    if (scenario === "throw") throw new Error("boom from rank 1");
    if (scenario === "exit") process.exit(3);
    if (scenario === "kill") process.kill(process.pid, "SIGKILL");
    if (scenario === "hang") {
      setInterval(() => {}, 1000);
      await new Promise(() => {});
    }
  }
  await world.allreduce(new Float32Array(4));
  console.log(`RESULT ${r} survived`);
}

if (detectBackend() !== "single") await main();
