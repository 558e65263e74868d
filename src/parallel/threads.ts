// The `threads` backend: ranks are worker_threads of one process. Collectives go through one
// SharedArrayBuffer per group (a control block and one staging slot per rank) and a barrier on
// Atomics.waitAsync, so no rank ever blocks its event loop; point-to-point messages and the
// hand-over of a new sub-group's buffer go through MessagePorts (one channel per pair of ranks).
// runThreads() is the launcher side: it starts the workers, watches them and ends them all on the
// first failure or at the timeout.
// Not: a multi-machine transport (mpi.ts is), nor a thread pool for compute.
//
// Each collective runs in rounds of at most one slot per rank (large buffers take several rounds):
//   1. every rank writes its signature (op, dtype, lengths, counts) and its round's data to its slot
//   2. barrier; every rank checks all signatures (so all ranks fail the same way on a mismatch)
//   3. every rank reads what it needs from the slots (reductions sum slots 0..p-1 in order)
//   4. barrier (the slots may then be overwritten by the next round or operation)
// Signatures are double-buffered by operation parity, so the next operation may write its own
// while a slower rank still reads the previous one.
import { MessageChannel, type MessagePort, Worker, isMainThread, workerData } from "node:worker_threads";
import { fileURLToPath, pathToFileURL } from "node:url";
import path from "node:path";
import {
  type Buf, type DType, type ProcessGroup, type ReduceOp, type StartedOp, DTYPE_CODE, OP_CODE, OpQueue, checkColorKey, checkOp, checkRank,
  checkSameDtype, checkTag, displacements, dtypeOf, evenSplit, reduceInto, splitMembers, startedOnce, subgroupColorKey,
} from "./process-group.js";

/** Default bytes of one rank's staging slot (a larger message takes several rounds). */
export const DEFAULT_SLOT_BYTES = 4 << 20;

const CTL_COUNT = 0, CTL_GEN = 1, CTL_FAILED = 2, CTL_HEAD = 16; // ints; header padded to 64 bytes
const SIG = 4; // op, dtype, length, extra (reduce op / root)
const OPC = { allreduce: 1, reduceScatter: 2, allgather: 3, alltoallv: 4, broadcast: 5, barrier: 6 } as const;
type OpName = keyof typeof OPC;

// Atomics.waitAsync is in Node 20 but not in the ES2022 lib typings this project compiles against.
const waitAsync = (Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number): { async: boolean; value: Promise<string> | string } }).waitAsync;

/** Allreduces of at most this many elements (and half a slot) take the one-barrier path. */
const SMALL_ELEMS = 8192;

/** A collective as steps: it yields where every rank must reach a barrier before it goes on. */
type Steps = Generator<void, void, void>;

function sigInts(p: number): number {
  return p * (SIG + 2 * p);
}

/** What a worker receives to join the world. */
interface ThreadsWorkerData {
  moeThreadsRank: true;
  rank: number;
  size: number;
  sab: SharedArrayBuffer;
  slotBytes: number;
  ports: (MessagePort | null)[];
  entry: string;
  spin: number;
}

export function inThreadsWorker(): boolean {
  return !isMainThread && (workerData as Partial<ThreadsWorkerData> | null)?.moeThreadsRank === true;
}

export function allocGroupBuffer(p: number, slotBytes: number): SharedArrayBuffer {
  const ctlBytes = Math.ceil(((CTL_HEAD + 2 * sigInts(p)) * 4) / 64) * 64;
  return new SharedArrayBuffer(ctlBytes + (p + 1) * slotBytes);
}

// ---- per-rank process state ------------------------------------------------------------------

type Msg = { g: string; t: number | string; d: unknown };

/** This worker's connections: ports to every other world rank, a mailbox and a keep-alive. */
class RankContext {
  private readonly boxes = new Map<string, unknown[]>();
  private readonly waiters = new Map<string, ((d: unknown) => void)[]>();
  private pending = 0;
  private keep: NodeJS.Timeout | null = null;

  constructor(readonly rank: number, readonly ports: (MessagePort | null)[], readonly spin: number) {
    ports.forEach((port, q) => {
      if (!port) return;
      port.on("message", (m: Msg) => this.deliver(`${m.g}|${q}|${m.t}`, m.d));
      port.unref();
    });
  }

  private deliver(key: string, d: unknown): void {
    const w = this.waiters.get(key);
    if (w && w.length > 0) {
      w.shift()!(d);
      if (w.length === 0) this.waiters.delete(key);
      return;
    }
    const box = this.boxes.get(key);
    if (box) box.push(d);
    else this.boxes.set(key, [d]);
  }

  post(worldPeer: number, m: Msg, transfer: ArrayBuffer[] = []): void {
    const port = this.ports[worldPeer];
    if (!port) throw new Error(`threads backend: no channel from world rank ${this.rank} to ${worldPeer}`);
    port.postMessage(m, transfer);
  }

  take(g: string, worldPeer: number, t: number | string): Promise<unknown> {
    const key = `${g}|${worldPeer}|${t}`;
    const box = this.boxes.get(key);
    if (box && box.length > 0) {
      const d = box.shift();
      if (box.length === 0) this.boxes.delete(key);
      return Promise.resolve(d);
    }
    return this.hold(
      new Promise((resolve) => {
        const w = this.waiters.get(key);
        if (w) w.push(resolve);
        else this.waiters.set(key, [resolve]);
      }),
    );
  }

  /** Keeps the worker's event loop alive while p is pending (waitAsync and ports do not). */
  async hold<T>(p: Promise<T>): Promise<T> {
    if (this.pending++ === 0) this.keep = setInterval(() => {}, 1 << 30);
    try {
      return await p;
    } finally {
      if (--this.pending === 0 && this.keep) {
        clearInterval(this.keep);
        this.keep = null;
      }
    }
  }

  close(): void {
    for (const port of this.ports) port?.removeAllListeners("message");
  }
}

// ---- the group -------------------------------------------------------------------------------

class ThreadsGroup implements ProcessGroup {
  readonly backend = "threads" as const;
  readonly size: number;
  private readonly ctl: Int32Array;
  private readonly data: { f32: Float32Array; f64: Float64Array; i32: Int32Array };
  private readonly slotElems: Record<DType, number>;
  private readonly queue = new OpQueue();
  private seq = 0;
  private inflight = 0;
  private smallLast = false;
  private splits = 0;
  private closed = false;
  /** allreduceStart: operations started and not yet run (they run inside wait(), in start order). */
  private readonly started: { run: () => void; ms: number }[] = [];
  private runningStarted = false;

  constructor(
    private readonly ctx: RankContext,
    readonly id: string,
    readonly rank: number,
    readonly worldRanks: readonly number[],
    sab: SharedArrayBuffer,
    private readonly slotBytes: number,
  ) {
    this.size = worldRanks.length;
    const p = this.size;
    const ctlBytes = Math.ceil(((CTL_HEAD + 2 * sigInts(p)) * 4) / 64) * 64;
    if (sab.byteLength !== ctlBytes + (p + 1) * slotBytes) throw new Error(`threads backend: group buffer has ${sab.byteLength} bytes, expected ${ctlBytes + (p + 1) * slotBytes}`);
    this.ctl = new Int32Array(sab, 0, ctlBytes / 4);
    const dataBytes = (p + 1) * slotBytes;
    this.data = { f32: new Float32Array(sab, ctlBytes, dataBytes / 4), f64: new Float64Array(sab, ctlBytes, dataBytes / 8), i32: new Int32Array(sab, ctlBytes, dataBytes / 4) };
    this.slotElems = { f32: slotBytes / 4, f64: slotBytes / 8, i32: slotBytes / 4 };
  }

  private run<T>(what: string, op: () => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new Error(`threads group: ${what} after close()`));
    if (this.started.length > 0) return Promise.reject(this.startedError(what));
    this.inflight++;
    const done = () => void this.inflight--;
    const p = this.ctx.hold(this.queue.run(op));
    p.then(done, done);
    return p;
  }

  /** A view of rank r's slot (r = size: the shared output slot) for dtype d. */
  private slot(d: DType, r: number): Buf {
    const n = this.slotElems[d];
    return this.data[d].subarray(r * n, (r + 1) * n);
  }

  /** A rank marked the group failed (failThreadsGroup): no collective of it can complete. */
  private checkFailed(): void {
    const f = Atomics.load(this.ctl, CTL_FAILED);
    if (f !== 0) throw new Error(`threads group: rank ${f - 1} failed; the collective cannot complete`);
  }

  private async barrier0(): Promise<void> {
    const c = this.ctl;
    this.checkFailed();
    const gen = Atomics.load(c, CTL_GEN);
    if (Atomics.add(c, CTL_COUNT, 1) === this.size - 1) {
      Atomics.store(c, CTL_COUNT, 0);
      Atomics.add(c, CTL_GEN, 1);
      Atomics.notify(c, CTL_GEN);
      return;
    }
    for (let i = 0; i < this.ctx.spin; i++) if (Atomics.load(c, CTL_GEN) !== gen) return;
    while (Atomics.load(c, CTL_GEN) === gen) {
      this.checkFailed();
      const r = waitAsync(c, CTL_GEN, gen);
      if (r.async) await r.value;
    }
  }

  /** This operation's signature area (double-buffered by operation parity). */
  private sigArea(): Int32Array {
    const n = sigInts(this.size);
    const off = CTL_HEAD + (this.seq & 1) * n;
    return this.ctl.subarray(off, off + n);
  }

  private writeSig(op: OpName, d: DType, len: number, extra: number, counts?: [ArrayLike<number>, ArrayLike<number>]): Int32Array {
    const s = this.sigArea(), p = this.size, b = this.rank * (SIG + 2 * p);
    s[b] = OPC[op];
    s[b + 1] = DTYPE_CODE[d];
    s[b + 2] = len;
    s[b + 3] = extra;
    if (counts) for (let j = 0; j < p; j++) {
      s[b + SIG + j] = counts[0][j]!;
      s[b + SIG + p + j] = counts[1][j]!;
    }
    return s;
  }

  /** The barrier ending a collective's first step; then the parity flips (even if the check throws). */
  private *sigStep(what: string, sig: Int32Array, extraName: string | null): Steps {
    yield;
    this.seq++;
    this.checkSig(what, sig, extraName);
  }

  /**
   * Before a collective that writes whole slots: if the previous operation took the one-barrier
   * small allreduce path, slower ranks may still be reading its half of the slots, so wait once.
   */
  private *fence(): Steps {
    if (this.smallLast) {
      this.smallLast = false;
      yield;
    }
  }

  /** Runs a collective's steps in the group's queue, awaiting a barrier at each yield. */
  private coll(what: string, steps: Steps): Promise<void> {
    return this.run(what, async () => {
      for (let r = steps.next(); !r.done; r = steps.next()) await this.barrier0();
    });
  }

  /** Runs a collective's steps now, blocking this thread at each barrier. */
  private driveSync(what: string, steps: Steps): void {
    if (this.closed) throw new Error(`threads group: ${what} after close()`);
    if (this.inflight > 0) throw new Error(`${what}: ${this.inflight} asynchronous operation(s) on this group are still in flight; await them before a blocking collective`);
    if (this.started.length > 0 && !this.runningStarted) throw this.startedError(what);
    for (let r = steps.next(); !r.done; r = steps.next()) this.barrierWait();
  }

  private startedError(what: string): Error {
    return new Error(`${what}: ${this.started.length} started operation(s) on this group have not been waited for; wait() for them first`);
  }

  /** Starts nothing yet: the threads backend reduces on this thread, so the work happens in wait(). */
  allreduceStart(buf: Buf, op: ReduceOp = "sum"): StartedOp {
    const what = "threads allreduceStart";
    dtypeOf(buf);
    checkOp(what, op);
    if (this.closed) throw new Error(`threads group: allreduceStart after close()`);
    if (this.inflight > 0) throw new Error(`${what}: ${this.inflight} asynchronous operation(s) on this group are still in flight; await them first`);
    const entry = { run: () => this.driveSync(what, this.allreduceSteps(buf, op)), ms: -1 };
    this.started.push(entry);
    return startedOnce("threads", () => {
      // run every operation started before this one, then this one, in start order
      while (entry.ms < 0) {
        const e = this.started.shift()!, t0 = performance.now();
        this.runningStarted = true;
        try {
          e.run();
        } finally {
          this.runningStarted = false;
          e.ms = performance.now() - t0;
        }
      }
      return entry.ms;
    });
  }

  private barrierWait(): void {
    const c = this.ctl;
    this.checkFailed();
    const gen = Atomics.load(c, CTL_GEN);
    if (Atomics.add(c, CTL_COUNT, 1) === this.size - 1) {
      Atomics.store(c, CTL_COUNT, 0);
      Atomics.add(c, CTL_GEN, 1);
      Atomics.notify(c, CTL_GEN);
      return;
    }
    while (Atomics.load(c, CTL_GEN) === gen) {
      this.checkFailed();
      Atomics.wait(c, CTL_GEN, gen);
    }
  }

  /** After the first barrier: every rank checks every signature the same way. */
  private checkSig(what: string, s: Int32Array, extraName: string | null): void {
    const p = this.size, w = SIG + 2 * p;
    const names = Object.keys(OPC) as OpName[];
    const dts = Object.keys(DTYPE_CODE) as DType[];
    for (let r = 1; r < p; r++) {
      if (s[r * w] !== s[0]) throw new Error(`${what}: rank 0 called ${names[s[0]! - 1]} but rank ${r} called ${names[s[r * w]! - 1]} (collectives must be issued in the same order on every rank)`);
      if (s[r * w + 1] !== s[1]) throw new Error(`${what}: rank 0 passes ${dts[s[1]!]} but rank ${r} passes ${dts[s[r * w + 1]!]}`);
      if (s[r * w + 2] !== s[2] && s[0] !== OPC.alltoallv) throw new Error(`${what}: rank 0 passes ${s[2]} elements but rank ${r} passes ${s[r * w + 2]}`);
      if (extraName && s[r * w + 3] !== s[3]) throw new Error(`${what}: rank 0 passes ${extraName} ${s[3]} but rank ${r} passes ${s[r * w + 3]}`);
    }
  }

  allreduce(buf: Buf, op: ReduceOp = "sum"): Promise<void> {
    return this.coll("threads allreduce", this.allreduceSteps(buf, op));
  }

  allreduceSync(buf: Buf, op: ReduceOp = "sum"): void {
    this.driveSync("threads allreduceSync", this.allreduceSteps(buf, op));
  }

  private *allreduceSteps(buf: Buf, op: ReduceOp): Steps {
    const what = "threads allreduce";
    const d = dtypeOf(buf);
    checkOp(what, op);
    const p = this.size, cap = this.slotElems[d], n = buf.length;
    const mine = this.slot(d, this.rank), out = this.slot(d, p);
    const half = cap >> 1;
    if (n <= half && n <= SMALL_ELEMS) {
      // One barrier: every rank reduces the whole (small) buffer itself, in rank order, from the
      // half of the slots this operation's parity selects (the next operation uses the other).
      const off = (this.seq & 1) * half;
      mine.set(buf, off);
      const sig = this.writeSig("allreduce", d, n, OP_CODE[op]);
      this.smallLast = true;
      yield* this.sigStep(what, sig, "op code");
      buf.set(this.slot(d, 0).subarray(off, off + n));
      for (let r = 1; r < p; r++) reduceInto(buf, this.slot(d, r), op, n, 0, off);
      return;
    }
    yield* this.fence();
    for (let s = 0, first = true; first || s < n; s += cap, first = false) {
      const e = Math.min(n, s + cap);
      mine.set(buf.subarray(s, e));
      if (first) {
        const sig = this.writeSig("allreduce", d, n, OP_CODE[op]);
        yield* this.sigStep(what, sig, "op code");
      } else yield;
      const { counts, offsets } = evenSplit(e - s, p);
      const lo = offsets[this.rank]!, len = counts[this.rank]!;
      out.set(this.slot(d, 0).subarray(lo, lo + len), lo);
      for (let r = 1; r < p; r++) reduceInto(out, this.slot(d, r), op, len, lo, lo);
      yield;
      buf.set(out.subarray(0, e - s), s);
    }
  }

  reduceScatter(send: Buf, recv: Buf, op: ReduceOp = "sum"): Promise<void> {
    return this.coll("threads reduceScatter", this.reduceScatterSteps(send, recv, op));
  }

  reduceScatterSync(send: Buf, recv: Buf, op: ReduceOp = "sum"): void {
    this.driveSync("threads reduceScatterSync", this.reduceScatterSteps(send, recv, op));
  }

  private *reduceScatterSteps(send: Buf, recv: Buf, op: ReduceOp): Steps {
    const what = "threads reduceScatter";
    checkSameDtype(what, send, recv);
    checkOp(what, op);
    const p = this.size, m = recv.length;
    if (send.length !== p * m) throw new RangeError(`${what}: send has ${send.length} elements, expected size × recv.length = ${p * m}`);
    const d = dtypeOf(send);
    const B = Math.floor(this.slotElems[d] / p);
    const mine = this.slot(d, this.rank);
    yield* this.fence();
    for (let s = 0, first = true; first || s < m; s += B, first = false) {
      const e = Math.min(m, s + B), len = e - s;
      for (let j = 0; j < p; j++) mine.set(send.subarray(j * m + s, j * m + e), j * B);
      if (first) {
        const sig = this.writeSig("reduceScatter", d, m, OP_CODE[op]);
        yield* this.sigStep(what, sig, "op code");
      } else yield;
      const at = this.rank * B;
      recv.set(this.slot(d, 0).subarray(at, at + len), s);
      for (let r = 1; r < p; r++) reduceInto(recv, this.slot(d, r), op, len, s, at);
      yield;
    }
  }

  allgather(send: Buf, recv: Buf): Promise<void> {
    return this.coll("threads allgather", this.allgatherSteps(send, recv));
  }

  allgatherSync(send: Buf, recv: Buf): void {
    this.driveSync("threads allgatherSync", this.allgatherSteps(send, recv));
  }

  private *allgatherSteps(send: Buf, recv: Buf): Steps {
    const what = "threads allgather";
    checkSameDtype(what, send, recv);
    const p = this.size, n = send.length;
    if (recv.length !== p * n) throw new RangeError(`${what}: recv has ${recv.length} elements, expected size × send.length = ${p * n}`);
    const d = dtypeOf(send);
    const cap = this.slotElems[d];
    yield* this.fence();
    for (let s = 0, first = true; first || s < n; s += cap, first = false) {
      const e = Math.min(n, s + cap);
      this.slot(d, this.rank).set(send.subarray(s, e));
      if (first) {
        const sig = this.writeSig("allgather", d, n, 0);
        yield* this.sigStep(what, sig, null);
      } else yield;
      for (let r = 0; r < p; r++) recv.set(this.slot(d, r).subarray(0, e - s), r * n + s);
      yield;
    }
  }

  broadcast(buf: Buf, root: number): Promise<void> {
    return this.coll("threads broadcast", this.broadcastSteps(buf, root));
  }

  broadcastSync(buf: Buf, root: number): void {
    this.driveSync("threads broadcastSync", this.broadcastSteps(buf, root));
  }

  private *broadcastSteps(buf: Buf, root: number): Steps {
    const what = "threads broadcast";
    const d = dtypeOf(buf);
    checkRank(what, root, this.size, "root");
    const cap = this.slotElems[d], n = buf.length, src = this.slot(d, 0);
    yield* this.fence();
    for (let s = 0, first = true; first || s < n; s += cap, first = false) {
      const e = Math.min(n, s + cap);
      if (this.rank === root) src.set(buf.subarray(s, e));
      if (first) {
        const sig = this.writeSig("broadcast", d, n, root);
        yield* this.sigStep(what, sig, "root");
      } else yield;
      if (this.rank !== root) buf.set(src.subarray(0, e - s), s);
      yield;
    }
  }

  alltoallv(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): Promise<void> {
    return this.coll("threads alltoallv", this.alltoallvSteps(send, sendCounts, recv, recvCounts));
  }

  alltoallvSync(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): void {
    this.driveSync("threads alltoallvSync", this.alltoallvSteps(send, sendCounts, recv, recvCounts));
  }

  private *alltoallvSteps(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): Steps {
    const what = "threads alltoallv";
    checkSameDtype(what, send, recv);
    const p = this.size;
    const sd = displacements(what, "sendCounts", sendCounts, p, send.length);
    const rd = displacements(what, "recvCounts", recvCounts, p, recv.length);
    const d = dtypeOf(send);
    const B = Math.floor(this.slotElems[d] / p);
    const mine = this.slot(d, this.rank);
    yield* this.fence();
    const w = SIG + 2 * p;
    let rounds = 1;
    for (let k = 0; k < rounds; k++) {
      const s = k * B;
      for (let j = 0; j < p; j++) {
        const c = sendCounts[j]!;
        if (c > s) mine.set(send.subarray(sd[j]! + s, sd[j]! + Math.min(c, s + B)), j * B);
      }
      if (k === 0) {
        const sig = this.writeSig("alltoallv", d, 0, 0, [sendCounts, recvCounts]);
        yield* this.sigStep(what, sig, null);
        let max = 0;
        for (let i = 0; i < p; i++)
          for (let j = 0; j < p; j++) {
            const sent = sig[i * w + SIG + j]!, expected = sig[j * w + SIG + p + i]!;
            if (sent !== expected) throw new RangeError(`${what}: rank ${i} sends ${sent} elements to rank ${j}, which expects ${expected} (recvCounts[${i}])`);
            max = Math.max(max, sent);
          }
        rounds = Math.max(1, Math.ceil(max / B));
      } else yield;
      for (let i = 0; i < p; i++) {
        const c = recvCounts[i]!;
        if (c > s) recv.set(this.slot(d, i).subarray(this.rank * B, this.rank * B + Math.min(c, s + B) - s), rd[i]! + s);
      }
      yield;
    }
  }

  barrier(): Promise<void> {
    return this.coll("threads barrier", this.barrierSteps());
  }

  barrierSync(): void {
    this.driveSync("threads barrierSync", this.barrierSteps());
  }

  private *barrierSteps(): Steps {
    const sig = this.writeSig("barrier", "i32", 0, 0);
    yield* this.sigStep("threads barrier", sig, null);
  }

  send(buf: Buf, peer: number, tag = 0): Promise<void> {
    const what = "threads send";
    dtypeOf(buf);
    checkRank(what, peer, this.size, "peer");
    checkTag(what, tag);
    if (peer === this.rank) return Promise.reject(new Error(`${what}: rank ${peer} sending to itself`));
    return this.run(what, async () => {
      const copy = buf.slice();
      this.ctx.post(this.worldRanks[peer]!, { g: this.id, t: tag, d: copy }, [copy.buffer as ArrayBuffer]);
    });
  }

  recv(buf: Buf, peer: number, tag = 0): Promise<void> {
    const what = "threads recv";
    const d = dtypeOf(buf);
    checkRank(what, peer, this.size, "peer");
    checkTag(what, tag);
    if (peer === this.rank) return Promise.reject(new Error(`${what}: rank ${peer} receiving from itself`));
    return this.run(what, async () => {
      const m = (await this.ctx.take(this.id, this.worldRanks[peer]!, tag)) as Buf;
      if (dtypeOf(m) !== d || m.length !== buf.length) throw new RangeError(`${what}: rank ${peer} sent ${m.length} ${dtypeOf(m)} elements (tag ${tag}), this rank expects ${buf.length} ${d}`);
      buf.set(m);
    });
  }

  async split(color: number, key = 0): Promise<ProcessGroup | null> {
    const what = "threads split";
    checkColorKey(what, color, key);
    const ck = new Int32Array(2 * this.size);
    await this.allgather(Int32Array.of(color, key), ck);
    return this.run(what, async () => {
      const seq = this.splits++;
      const members = splitMembers(ck, this.size, this.rank);
      if (!members) return null;
      const id = `${this.id}.${seq}c${color}`;
      const worldRanks = members.map((r) => this.worldRanks[r]!);
      const newRank = members.indexOf(this.rank);
      let sab: SharedArrayBuffer;
      if (newRank === 0) {
        sab = allocGroupBuffer(members.length, this.slotBytes);
        for (const w of worldRanks.slice(1)) this.ctx.post(w, { g: id, t: "sab", d: sab });
      } else sab = (await this.ctx.take(id, worldRanks[0]!, "sab")) as SharedArrayBuffer;
      return new ThreadsGroup(this.ctx, id, newRank, worldRanks, sab, this.slotBytes);
    });
  }

  async subgroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const [c, k] = subgroupColorKey("threads subgroup", ranks, this.size, this.rank);
    return this.split(c, k);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.queue.run(async () => {});
    this.closed = true;
    if (this.id === "w") this.ctx.close();
  }
}

/** Inside a worker started by runThreads: the world group. Call once per worker. */
export function threadsWorld(): ProcessGroup {
  if (!inThreadsWorker()) throw new Error("threads backend: this thread was not started by runThreads (moe launch --backend threads)");
  const wd = workerData as ThreadsWorkerData & { moeWorldTaken?: boolean };
  if (wd.moeWorldTaken) throw new Error("threads backend: the world group was already created in this rank; pass that group along instead of calling initWorld twice");
  wd.moeWorldTaken = true;
  const ctx = new RankContext(wd.rank, wd.ports, wd.spin);
  return new ThreadsGroup(ctx, "w", wd.rank, Array.from({ length: wd.size }, (_, i) => i), wd.sab, wd.slotBytes);
}

/**
 * A collectives-only group over threads this process started itself rather than through
 * runThreads (the inference engine's tensor-parallel ranks: the main thread and its workers).
 * Every member calls it once with its rank and the same `sab` (allocGroupBuffer(size, slotBytes)).
 * send/recv and split need the runThreads world and throw here.
 */
export function threadsGroupOver(rank: number, size: number, sab: SharedArrayBuffer, slotBytes = DEFAULT_SLOT_BYTES): ProcessGroup {
  checkRank("threadsGroupOver", rank, size);
  return new ThreadsGroup(new RankContext(rank, [], 0), "local", rank, Array.from({ length: size }, (_, i) => i), sab, slotBytes);
}

/**
 * Marks the group over `sab` failed by `rank` (a rank that cannot go on, e.g. a TP inference
 * worker whose step threw): every rank waiting in, or later entering, one of its collectives
 * throws naming that rank instead of waiting for it forever.
 */
export function failThreadsGroup(sab: SharedArrayBuffer, rank: number): void {
  const c = new Int32Array(sab, 0, CTL_HEAD);
  Atomics.compareExchange(c, CTL_FAILED, 0, rank + 1);
  Atomics.notify(c, CTL_GEN);
}

// ---- launcher side ---------------------------------------------------------------------------

export interface ThreadsRunOptions {
  /** Wall-clock limit for the whole run in ms; 0 = none. Default 0. */
  timeoutMs?: number;
  /** Bytes of one rank's staging slot per group. Default 4 MiB. */
  slotBytes?: number;
  /** Atomics.load polls before a barrier waits asynchronously. Default 200 (a few µs). */
  spin?: number;
  /** "prefix": each rank's output lines go to this process's stdout/stderr as `[rank N] …`;
   * "capture": collected into the result only. Default "prefix". */
  output?: "prefix" | "capture";
  /** Print the one-line failure report to stderr. Default true. */
  report?: boolean;
  /** Every rank's process.env. Default: a copy of this process's. */
  env?: NodeJS.ProcessEnv;
}

export interface ThreadsRunResult {
  /** 0 when every rank exited 0; the failing rank's exit code (≥ 1); 124 on timeout. */
  code: number;
  /** The first rank that failed, null when none did or on timeout. */
  failedRank: number | null;
  /** One line saying what went wrong; null on success. */
  failure: string | null;
  /** Each rank's stdout and stderr text, when output is "capture". */
  stdout: string[];
  stderr: string[];
}

/**
 * Runs nproc ranks, each a worker thread importing entryModule (a path or file URL) with
 * process.argv = [node, entry, ...args]. Resolves once every rank exited 0, or after the first
 * failure (a rank throws, exits non-zero, or the timeout passes) once all ranks are ended.
 */
export function runThreads(nproc: number, entryModule: string, args: readonly string[], opt: ThreadsRunOptions = {}): Promise<ThreadsRunResult> {
  if (!Number.isInteger(nproc) || nproc < 1 || nproc > 256) throw new RangeError(`runThreads: nproc must be an integer in [1, 256], got ${nproc}`);
  const timeoutMs = opt.timeoutMs ?? 0;
  if (!(timeoutMs >= 0)) throw new RangeError(`runThreads: timeoutMs must be ≥ 0, got ${timeoutMs}`);
  const slotBytes = opt.slotBytes ?? DEFAULT_SLOT_BYTES;
  if (!Number.isInteger(slotBytes) || slotBytes < 64 * nproc || slotBytes % 8 !== 0) throw new RangeError(`runThreads: slotBytes must be a multiple of 8 and ≥ 64 × nproc, got ${slotBytes}`);
  const spin = opt.spin ?? 200;
  const output = opt.output ?? "prefix";
  const report = opt.report ?? true;
  const entry = entryModule.startsWith("file:") ? entryModule : pathToFileURL(path.resolve(entryModule)).href;
  const bootstrap = fileURLToPath(new URL("./threads-worker.js", import.meta.url));

  const ports: (MessagePort | null)[][] = Array.from({ length: nproc }, () => new Array<MessagePort | null>(nproc).fill(null));
  for (let i = 0; i < nproc; i++)
    for (let j = i + 1; j < nproc; j++) {
      const ch = new MessageChannel();
      ports[i]![j] = ch.port1;
      ports[j]![i] = ch.port2;
    }
  const sab = allocGroupBuffer(nproc, slotBytes);
  const result: ThreadsRunResult = { code: 0, failedRank: null, failure: null, stdout: new Array(nproc).fill(""), stderr: new Array(nproc).fill("") };

  return new Promise((resolve) => {
    const running = new Set<number>();
    let finished = false;
    const workers: Worker[] = [];
    const fail = (rank: number | null, code: number, msg: string) => {
      if (result.failure !== null) return;
      result.code = code;
      result.failedRank = rank;
      result.failure = msg;
      if (report) process.stderr.write(`moe launch: ${msg}\n`);
      for (const w of workers) void w.terminate();
    };
    const done = () => {
      if (finished || running.size > 0) return;
      finished = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = timeoutMs > 0 ? setTimeout(() => fail(null, 124, `timed out after ${timeoutMs / 1e3} s; ranks still running: ${[...running].join(", ")}`), timeoutMs) : undefined;
    for (let r = 0; r < nproc; r++) {
      const data: ThreadsWorkerData = { moeThreadsRank: true, rank: r, size: nproc, sab, slotBytes, ports: ports[r]!, entry, spin };
      const w = new Worker(bootstrap, {
        workerData: data,
        transferList: ports[r]!.filter((q): q is MessagePort => q !== null),
        argv: [...args],
        stdout: true,
        stderr: true,
        env: opt.env ?? process.env,
      });
      workers.push(w);
      running.add(r);
      pipeLines(w.stdout, (line) => (output === "capture" ? (result.stdout[r] += line + "\n") : process.stdout.write(`[rank ${r}] ${line}\n`)));
      pipeLines(w.stderr, (line) => (output === "capture" ? (result.stderr[r] += line + "\n") : process.stderr.write(`[rank ${r}] ${line}\n`)));
      let errored = false;
      w.on("error", (err) => {
        errored = true;
        fail(r, 1, `rank ${r} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      });
      w.on("exit", (code) => {
        running.delete(r);
        if (code !== 0 && !errored) fail(r, code, `rank ${r} exited with code ${code}`);
        done();
      });
    }
  });
}

function pipeLines(stream: NodeJS.ReadableStream, line: (s: string) => void): void {
  let rest = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    rest += chunk;
    let i: number;
    while ((i = rest.indexOf("\n")) >= 0) {
      line(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  });
  stream.on("end", () => {
    if (rest) line(rest);
  });
}
