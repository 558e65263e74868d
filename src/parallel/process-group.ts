// The asynchronous process-group interface of the parallel layer, shared helpers every backend
// uses (argument checks, the fixed-order reduction, counts → displacements), the single-rank group,
// and bucketing of many small tensors into one flat buffer per collective.
// Not: a transport (threads.ts and mpi.ts are), nor DP/EP training logic.
//
// Semantics every backend keeps:
// - Collectives are issued in the same order on every member (like MPI); each group runs its
//   operations one after another in call order, so un-awaited calls are still ordered.
// - Reductions are deterministic: element i of the result is ((x_0[i] ∘ x_1[i]) ∘ x_2[i]) ∘ …
//   in group-rank order, computed in the buffer's own dtype (f32 adds round to f32, i32 wraps),
//   and identical on every rank. A run therefore repeats bit for bit.
// - send/recv are ordered per group like the collectives: a send resolves once the data is handed
//   to the transport (threads: copied; MPI: MPI_Send returned), a recv once the message is in.
//   The received message must have exactly buf.length elements.

import type { ProcessGroup as LayerGroup } from "./group.js";

export type Buf = Float32Array | Float64Array | Int32Array;
export type DType = "f32" | "f64" | "i32";
export type ReduceOp = "sum" | "max" | "min";
export type BackendName = "single" | "threads" | "mpi";

export interface ProcessGroup {
  /** This process's rank in the group, 0..size-1. */
  readonly rank: number;
  readonly size: number;
  readonly backend: BackendName;
  /** World ranks of the members, indexed by group rank. */
  readonly worldRanks: readonly number[];
  /** In place: every rank's buf becomes the element-wise reduction over the group. */
  allreduce(buf: Buf, op?: ReduceOp): Promise<void>;
  /** send has size × recv.length elements; rank r receives the reduction of every rank's block r. */
  reduceScatter(send: Buf, recv: Buf, op?: ReduceOp): Promise<void>;
  /** recv (size × send.length elements) receives every rank's send, in rank order. */
  allgather(send: Buf, recv: Buf): Promise<void>;
  /**
   * Personalised exchange: send holds consecutive blocks of sendCounts[j] elements for rank j;
   * recv receives consecutive blocks of recvCounts[i] elements from rank i. Counts may be zero;
   * recvCounts[i] on rank j must equal sendCounts[j] on rank i (checked).
   */
  alltoallv(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): Promise<void>;
  /** In place: every rank's buf becomes root's. */
  broadcast(buf: Buf, root: number): Promise<void>;
  send(buf: Buf, peer: number, tag?: number): Promise<void>;
  recv(buf: Buf, peer: number, tag?: number): Promise<void>;
  barrier(): Promise<void>;
  /**
   * Collective over this group: members with the same color (≥ 0) form a new group, ordered by
   * (key, rank). A negative color returns null (the rank joins no group).
   */
  split(color: number, key?: number): Promise<ProcessGroup | null>;
  /** Collective over this group (every rank passes the same list): a group of the listed ranks,
   * in list order; null on ranks not listed. */
  subgroup(ranks: readonly number[]): Promise<ProcessGroup | null>;
  /** Releases the group's resources; no operation may follow. Not collective. */
  close(): Promise<void>;

  /**
   * Starts an in-place allreduce (same result as allreduce) that goes on while this thread does
   * synchronous work; the handle's wait() blocks until it is done, without an event-loop turn.
   * Started operations run in start order; no other operation may be issued on the group until
   * every started one has been waited for (checked). mpi: it runs on the group's communication
   * thread, concurrently with this thread's compute. threads and single: it runs inside wait()
   * (the threads backend reduces on the rank's own JS thread, so nothing overlaps).
   */
  allreduceStart(buf: Buf, op?: ReduceOp): StartedOp;

  // Blocking forms, for synchronous compute paths (e.g. the MoE layer's global expert counts):
  // the same results, order and checks, but this thread (and its event loop) waits until every
  // rank arrives. They throw when asynchronous operations on the group are still in flight.
  // Ranks may mix forms: one rank's allreduceSync meets another's allreduce.
  allreduceSync(buf: Buf, op?: ReduceOp): void;
  reduceScatterSync(send: Buf, recv: Buf, op?: ReduceOp): void;
  allgatherSync(send: Buf, recv: Buf): void;
  alltoallvSync(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): void;
  /**
   * `wait` "sleep", for a broadcast a rank may wait long for (an idle inference worker waiting for
   * the next step): mpi tests the operation with short sleeps (10 µs doubling to 500 µs) instead of
   * Open MPI's busy-polling wait, so the waiting rank leaves its core free, at up to 0.5 ms more
   * latency. Every rank passes the same `wait` for one broadcast (MPI does not match the two
   * kinds). threads and single have one way to wait (threads: a futex). Default "spin".
   */
  broadcastSync(buf: Buf, root: number, wait?: SyncWait): void;
  barrierSync(): void;
}

/** How a blocking broadcast waits for its root (ProcessGroup.broadcastSync). */
export type SyncWait = "spin" | "sleep";

/** A started operation (ProcessGroup.allreduceStart). */
export interface StartedOp {
  /** Blocks until the operation is done (throws its error); returns the ms the transport worked
   * on it (mpi: the communication thread inside its MPI calls; otherwise the time wait() ran it).
   * Once per operation. */
  wait(): number;
}

/** Largest tag a caller may pass to send/recv (MPI guarantees at least 32767). */
export const MAX_TAG = 32767;

export function dtypeOf(buf: Buf): DType {
  if (buf instanceof Float32Array) return "f32";
  if (buf instanceof Float64Array) return "f64";
  if (buf instanceof Int32Array) return "i32";
  throw new TypeError(`process group: buffers must be Float32Array, Float64Array or Int32Array, got ${Object.prototype.toString.call(buf)}`);
}

export const DTYPE_CODE: Record<DType, number> = { f32: 0, f64: 1, i32: 2 };
export const OP_CODE: Record<ReduceOp, number> = { sum: 0, max: 1, min: 2 };

export function checkOp(what: string, op: ReduceOp): void {
  if (op !== "sum" && op !== "max" && op !== "min") throw new Error(`${what}: op must be 'sum', 'max' or 'min', got '${String(op)}'`);
}

export function checkRank(what: string, r: number, size: number, name = "rank"): void {
  if (!Number.isInteger(r) || r < 0 || r >= size) throw new RangeError(`${what}: ${name} ${r} is not a rank of this group (size ${size})`);
}

export function checkTag(what: string, tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > MAX_TAG) throw new RangeError(`${what}: tag must be an integer in [0, ${MAX_TAG}], got ${tag}`);
}

export function checkSameDtype(what: string, a: Buf, b: Buf): void {
  if (dtypeOf(a) !== dtypeOf(b)) throw new TypeError(`${what}: send is ${dtypeOf(a)} but recv is ${dtypeOf(b)}`);
}

/** Validates counts (length = size, non-negative integers, sum ≤ buffer length) and returns displacements. */
export function displacements(what: string, name: string, counts: ArrayLike<number>, size: number, bufLen: number): Int32Array {
  if (counts.length !== size) throw new RangeError(`${what}: ${name} has ${counts.length} entries, the group has ${size} ranks`);
  const d = new Int32Array(size);
  let off = 0;
  for (let i = 0; i < size; i++) {
    const c = counts[i]!;
    if (!Number.isInteger(c) || c < 0) throw new RangeError(`${what}: ${name}[${i}] must be a non-negative integer, got ${c}`);
    d[i] = off;
    off += c;
  }
  if (off > bufLen) throw new RangeError(`${what}: ${name} add up to ${off} elements but the buffer has ${bufLen}`);
  return d;
}

/** acc[i] = acc[i] ∘ x[i] in acc's dtype (the fixed-order reduction step every backend uses). */
export function reduceInto(acc: Buf, x: Buf, op: ReduceOp, n = acc.length, accOff = 0, xOff = 0): void {
  // One monomorphic loop per dtype and op: a single generic loop over the three array types runs
  // several times slower once V8 has seen them all.
  if (acc instanceof Float32Array) {
    if (op === "sum") sumF32(acc, x as Float32Array, n, accOff, xOff);
    else if (op === "max") maxF32(acc, x as Float32Array, n, accOff, xOff);
    else minF32(acc, x as Float32Array, n, accOff, xOff);
  } else if (acc instanceof Float64Array) {
    if (op === "sum") sumF64(acc, x as Float64Array, n, accOff, xOff);
    else if (op === "max") maxF64(acc, x as Float64Array, n, accOff, xOff);
    else minF64(acc, x as Float64Array, n, accOff, xOff);
  } else {
    if (op === "sum") sumI32(acc, x as Int32Array, n, accOff, xOff);
    else if (op === "max") maxI32(acc, x as Int32Array, n, accOff, xOff);
    else minI32(acc, x as Int32Array, n, accOff, xOff);
  }
}

function sumF32(a: Float32Array, x: Float32Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) a[ao + i] = a[ao + i]! + x[xo + i]!;
}
function sumF64(a: Float64Array, x: Float64Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) a[ao + i] = a[ao + i]! + x[xo + i]!;
}
function sumI32(a: Int32Array, x: Int32Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) a[ao + i] = (a[ao + i]! + x[xo + i]!) | 0;
}
// max/min: NaN propagates (the first NaN in rank order wins).
function maxF32(a: Float32Array, x: Float32Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) {
    const b = x[xo + i]!;
    if (b > a[ao + i]! || b !== b) a[ao + i] = b;
  }
}
function maxF64(a: Float64Array, x: Float64Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) {
    const b = x[xo + i]!;
    if (b > a[ao + i]! || b !== b) a[ao + i] = b;
  }
}
function maxI32(a: Int32Array, x: Int32Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) {
    const b = x[xo + i]!;
    if (b > a[ao + i]!) a[ao + i] = b;
  }
}
function minF32(a: Float32Array, x: Float32Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) {
    const b = x[xo + i]!;
    if (b < a[ao + i]! || b !== b) a[ao + i] = b;
  }
}
function minF64(a: Float64Array, x: Float64Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) {
    const b = x[xo + i]!;
    if (b < a[ao + i]! || b !== b) a[ao + i] = b;
  }
}
function minI32(a: Int32Array, x: Int32Array, n: number, ao: number, xo: number): void {
  for (let i = 0; i < n; i++) {
    const b = x[xo + i]!;
    if (b < a[ao + i]!) a[ao + i] = b;
  }
}

/** Near-equal split of n items over p parts: the first n mod p parts get one more. */
export function evenSplit(n: number, p: number): { counts: number[]; offsets: number[] } {
  const counts: number[] = [], offsets: number[] = [];
  let off = 0;
  for (let r = 0; r < p; r++) {
    const c = Math.floor(n / p) + (r < n % p ? 1 : 0);
    counts.push(c);
    offsets.push(off);
    off += c;
  }
  return { counts, offsets };
}

/**
 * Members of each new group of a split, from everyone's (color, key): for this rank, the parent
 * ranks of its new group ordered by (key, parent rank), or null when color < 0.
 */
export function splitMembers(colorKey: Int32Array, size: number, rank: number): number[] | null {
  const color = colorKey[2 * rank]!;
  if (color < 0) return null;
  const members: number[] = [];
  for (let r = 0; r < size; r++) if (colorKey[2 * r] === color) members.push(r);
  members.sort((a, b) => colorKey[2 * a + 1]! - colorKey[2 * b + 1]! || a - b);
  return members;
}

export function checkColorKey(what: string, color: number, key: number): void {
  if (!Number.isInteger(color) || color > 0x7fffffff) throw new RangeError(`${what}: color must be an integer (negative = no group), got ${color}`);
  if (!Number.isInteger(key) || Math.abs(key) > 0x7fffffff) throw new RangeError(`${what}: key must be a 32-bit integer, got ${key}`);
}

/** subgroup(ranks) in terms of split: checks the list and returns (color, key) for this rank. */
export function subgroupColorKey(what: string, ranks: readonly number[], size: number, rank: number): [number, number] {
  if (ranks.length === 0) throw new RangeError(`${what}: the rank list is empty`);
  const seen = new Set<number>();
  for (const r of ranks) {
    checkRank(what, r, size);
    if (seen.has(r)) throw new RangeError(`${what}: rank ${r} is listed twice`);
    seen.add(r);
  }
  const i = ranks.indexOf(rank);
  return i < 0 ? [-1, 0] : [0, i];
}

/** Runs operations strictly one after another in call order; a failed one does not stop later ones. */
export class OpQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(op: () => Promise<T>): Promise<T> {
    const p = this.tail.then(op, op);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

/** The group of one process: every collective is a copy or nothing. */
export function singleGroup(): ProcessGroup {
  const what = "single-rank group";
  const g: ProcessGroup = {
    allreduceSync(buf, op = "sum") {
      dtypeOf(buf);
      checkOp(`${what} allreduce`, op);
    },
    reduceScatterSync(send, recv, op = "sum") {
      checkSameDtype(`${what} reduceScatter`, send, recv);
      checkOp(`${what} reduceScatter`, op);
      if (send.length !== recv.length) throw new RangeError(`${what} reduceScatter: send has ${send.length} elements, expected size × recv.length = ${recv.length}`);
      recv.set(send);
    },
    allgatherSync(send, recv) {
      checkSameDtype(`${what} allgather`, send, recv);
      if (recv.length !== send.length) throw new RangeError(`${what} allgather: recv has ${recv.length} elements, expected size × send.length = ${send.length}`);
      recv.set(send);
    },
    alltoallvSync(send, sendCounts, recv, recvCounts) {
      checkSameDtype(`${what} alltoallv`, send, recv);
      displacements(`${what} alltoallv`, "sendCounts", sendCounts, 1, send.length);
      displacements(`${what} alltoallv`, "recvCounts", recvCounts, 1, recv.length);
      if (sendCounts[0] !== recvCounts[0]) throw new RangeError(`${what} alltoallv: rank 0 sends ${sendCounts[0]} elements to itself but expects ${recvCounts[0]}`);
      recv.set(send.subarray(0, sendCounts[0]));
    },
    broadcastSync(buf, root) {
      dtypeOf(buf);
      checkRank(`${what} broadcast`, root, 1, "root");
    },
    barrierSync() {},
    allreduceStart(buf, op = "sum") {
      g.allreduceSync(buf, op);
      return startedOnce("single-rank group", () => 0);
    },
    rank: 0,
    size: 1,
    backend: "single",
    worldRanks: [0],
    async allreduce(buf, op = "sum") {
      g.allreduceSync(buf, op);
    },
    async reduceScatter(send, recv, op = "sum") {
      g.reduceScatterSync(send, recv, op);
    },
    async allgather(send, recv) {
      g.allgatherSync(send, recv);
    },
    async alltoallv(send, sendCounts, recv, recvCounts) {
      g.alltoallvSync(send, sendCounts, recv, recvCounts);
    },
    async broadcast(buf, root) {
      g.broadcastSync(buf, root);
    },
    async send() {
      throw new Error(`${what}: send to self would never be received (size 1)`);
    },
    async recv() {
      throw new Error(`${what}: recv from self would never complete (size 1)`);
    },
    async barrier() {},
    async split(color, key = 0) {
      checkColorKey(`${what} split`, color, key);
      return color < 0 ? null : singleGroup();
    },
    async subgroup(ranks) {
      const [c] = subgroupColorKey(`${what} subgroup`, ranks, 1, 0);
      return c < 0 ? null : singleGroup();
    },
    async close() {},
  };
  return g;
}

/** A StartedOp whose wait() runs `finish` once (a second wait is an error). */
export function startedOnce(what: string, finish: () => number): StartedOp {
  let done = false;
  return {
    wait() {
      if (done) throw new Error(`${what}: wait() called twice on one started operation`);
      done = true;
      return finish();
    },
  };
}

/** The synchronous group the MoE layer takes (group.ts) over a process group: allreduceSum is allreduceSync(x, "sum"). */
export function layerGroup(g: ProcessGroup): LayerGroup {
  return { rank: g.rank, size: g.size, allreduceSum: (x) => g.allreduceSync(x, "sum") };
}

// ---- bucketing -------------------------------------------------------------------------------

export interface BucketOptions {
  /** Most bytes per flat buffer (one collective each). Default 4 MiB; a larger tensor gets its own bucket. */
  bucketBytes?: number;
}

/** Groups consecutive same-dtype tensors into buckets of at most bucketBytes (a larger tensor alone). */
export function planBuckets(tensors: readonly Buf[], bucketBytes: number): number[][] {
  if (!(bucketBytes > 0)) throw new RangeError(`bucketing: bucketBytes must be positive, got ${bucketBytes}`);
  const buckets: number[][] = [];
  let cur: number[] = [], bytes = 0, dt: DType | null = null;
  for (let i = 0; i < tensors.length; i++) {
    const t = tensors[i]!, d = dtypeOf(t);
    if (cur.length > 0 && (d !== dt || bytes + t.byteLength > bucketBytes)) {
      buckets.push(cur);
      cur = [];
      bytes = 0;
    }
    cur.push(i);
    bytes += t.byteLength;
    dt = d;
  }
  if (cur.length > 0) buckets.push(cur);
  return buckets;
}

/** Copies tensors (all one dtype) into one new flat buffer, in order. */
export function flatten(tensors: readonly Buf[]): Buf {
  if (tensors.length === 0) throw new RangeError("flatten: no tensors");
  const d = dtypeOf(tensors[0]!);
  let n = 0;
  for (const t of tensors) {
    if (dtypeOf(t) !== d) throw new TypeError(`flatten: tensors mix ${d} and ${dtypeOf(t)}`);
    n += t.length;
  }
  const flat = d === "f32" ? new Float32Array(n) : d === "f64" ? new Float64Array(n) : new Int32Array(n);
  let off = 0;
  for (const t of tensors) {
    flat.set(t, off);
    off += t.length;
  }
  return flat;
}

/** Copies a flat buffer back into the tensors it was flattened from. */
export function unflatten(flat: Buf, tensors: readonly Buf[]): void {
  let off = 0;
  for (const t of tensors) {
    if (dtypeOf(t) !== dtypeOf(flat)) throw new TypeError(`unflatten: flat is ${dtypeOf(flat)}, a tensor is ${dtypeOf(t)}`);
    t.set(flat.subarray(off, off + t.length));
    off += t.length;
  }
  if (off !== flat.length) throw new RangeError(`unflatten: tensors hold ${off} elements, flat has ${flat.length}`);
}

/**
 * All-reduces many tensors in place with one collective per bucket (buckets issued back to back,
 * awaited together). Same result as one allreduce per tensor.
 */
export async function allreduceBucketed(group: ProcessGroup, tensors: readonly Buf[], op: ReduceOp = "sum", opt: BucketOptions = {}): Promise<void> {
  const buckets = planBuckets(tensors, opt.bucketBytes ?? 4 << 20);
  await Promise.all(
    buckets.map(async (idx) => {
      const ts = idx.map((i) => tensors[i]!);
      if (ts.length === 1) return group.allreduce(ts[0]!, op);
      const flat = flatten(ts);
      await group.allreduce(flat, op);
      unflatten(flat, ts);
    }),
  );
}
