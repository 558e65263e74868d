// The `mpi` backend: ProcessGroup over our own N-API binding to MPI (native/mpi/mpi.cc, built by
// scripts/build-native.mjs when Open MPI's compiler wrapper is found). Each communicator runs its
// blocking MPI calls in order on a thread of its own; every call here returns at once with a Promise.
// At process exit the binding finalizes MPI when the exit code is 0 and nothing is in flight, and
// otherwise calls MPI_Abort so every other rank of the job ends too.
// Not: the launcher (cli/launch.ts spawns mpirun), nor argument-free: every check happens here.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import {
  type Buf, type ProcessGroup, type ReduceOp, type StartedOp, type SyncWait, OP_CODE, checkColorKey, checkOp, checkRank, checkSameDtype, checkTag,
  displacements, dtypeOf, splitMembers, startedOnce, subgroupColorKey,
} from "./process-group.js";

interface CommObj {
  handle: unknown;
  rank: number;
  size: number;
}

interface MpiAddon {
  init(): { world: CommObj; version: string };
  allreduce(h: unknown, buf: Buf, op: number, sync?: boolean): Promise<void>;
  allreduce(h: unknown, buf: Buf, op: number, mode: "start"): unknown;
  wait(ticket: unknown): number;
  reduceScatter(h: unknown, send: Buf, recv: Buf, op: number, sync?: boolean): Promise<void>;
  allgather(h: unknown, send: Buf, recv: Buf, sync?: boolean): Promise<void>;
  alltoallv(h: unknown, send: Buf, sendCounts: Int32Array, recv: Buf, recvCounts: Int32Array, sync?: boolean): Promise<void>;
  bcast(h: unknown, buf: Buf, root: number, sync?: boolean, sleep?: boolean): Promise<void>;
  send(h: unknown, buf: Buf, peer: number, tag: number): Promise<void>;
  recv(h: unknown, buf: Buf, peer: number, tag: number): Promise<void>;
  barrier(h: unknown, sync?: boolean): Promise<void>;
  split(h: unknown, color: number, key: number): Promise<CommObj | null>;
  close(h: unknown): void;
  pending(): number;
  finalize(): void;
  abort(code: number): void;
}

/** Where the build puts the binding. */
export function mpiAddonPath(): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
  return path.join(root, "native", "mpi", "build", "Release", "moe_mpi.node");
}

export function mpiAvailable(): boolean {
  return existsSync(mpiAddonPath());
}

function loadAddon(): MpiAddon {
  const file = mpiAddonPath();
  if (!existsSync(file))
    throw new Error(
      "mpi backend: the MPI binding is not built (Open MPI was not found when the native code was built). " +
        "Install it (Debian: apt-get install openmpi-bin libopenmpi-dev) and run `node scripts/build-native.mjs --force`, " +
        "or use --backend threads on one machine",
    );
  return createRequire(import.meta.url)(file) as MpiAddon;
}

class MpiGroup implements ProcessGroup {
  readonly backend = "mpi" as const;
  readonly rank: number;
  readonly size: number;
  private closed = false;

  constructor(private readonly mpi: MpiAddon, private readonly c: CommObj, readonly worldRanks: readonly number[]) {
    this.rank = c.rank;
    this.size = c.size;
  }

  private live(what: string): void {
    if (this.closed) throw new Error(`mpi group: ${what} after close()`);
  }

  // Each collective: checks, then the binding queues it on the comm thread (async) or runs it now.
  private allreduceCall(buf: Buf, op: ReduceOp, sync: boolean): Promise<void> {
    dtypeOf(buf);
    checkOp("mpi allreduce", op);
    this.live("allreduce");
    return this.mpi.allreduce(this.c.handle, buf, OP_CODE[op], sync);
  }
  async allreduce(buf: Buf, op: ReduceOp = "sum"): Promise<void> {
    return this.allreduceCall(buf, op, false);
  }
  allreduceSync(buf: Buf, op: ReduceOp = "sum"): void {
    void this.allreduceCall(buf, op, true);
  }
  allreduceStart(buf: Buf, op: ReduceOp = "sum"): StartedOp {
    dtypeOf(buf);
    checkOp("mpi allreduceStart", op);
    this.live("allreduceStart");
    const ticket = this.mpi.allreduce(this.c.handle, buf, OP_CODE[op], "start");
    return startedOnce("mpi", () => this.mpi.wait(ticket));
  }

  private reduceScatterCall(send: Buf, recv: Buf, op: ReduceOp, sync: boolean): Promise<void> {
    const what = "mpi reduceScatter";
    checkSameDtype(what, send, recv);
    checkOp(what, op);
    if (send.length !== this.size * recv.length) throw new RangeError(`${what}: send has ${send.length} elements, expected size × recv.length = ${this.size * recv.length}`);
    this.live("reduceScatter");
    return this.mpi.reduceScatter(this.c.handle, send, recv, OP_CODE[op], sync);
  }
  async reduceScatter(send: Buf, recv: Buf, op: ReduceOp = "sum"): Promise<void> {
    return this.reduceScatterCall(send, recv, op, false);
  }
  reduceScatterSync(send: Buf, recv: Buf, op: ReduceOp = "sum"): void {
    void this.reduceScatterCall(send, recv, op, true);
  }

  private allgatherCall(send: Buf, recv: Buf, sync: boolean): Promise<void> {
    const what = "mpi allgather";
    checkSameDtype(what, send, recv);
    if (recv.length !== this.size * send.length) throw new RangeError(`${what}: recv has ${recv.length} elements, expected size × send.length = ${this.size * send.length}`);
    this.live("allgather");
    return this.mpi.allgather(this.c.handle, send, recv, sync);
  }
  async allgather(send: Buf, recv: Buf): Promise<void> {
    return this.allgatherCall(send, recv, false);
  }
  allgatherSync(send: Buf, recv: Buf): void {
    void this.allgatherCall(send, recv, true);
  }

  private alltoallvCall(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>, sync: boolean): Promise<void> {
    const what = "mpi alltoallv";
    checkSameDtype(what, send, recv);
    displacements(what, "sendCounts", sendCounts, this.size, send.length);
    displacements(what, "recvCounts", recvCounts, this.size, recv.length);
    this.live("alltoallv");
    return this.mpi.alltoallv(this.c.handle, send, Int32Array.from(sendCounts), recv, Int32Array.from(recvCounts), sync);
  }
  async alltoallv(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): Promise<void> {
    return this.alltoallvCall(send, sendCounts, recv, recvCounts, false);
  }
  alltoallvSync(send: Buf, sendCounts: ArrayLike<number>, recv: Buf, recvCounts: ArrayLike<number>): void {
    void this.alltoallvCall(send, sendCounts, recv, recvCounts, true);
  }

  private broadcastCall(buf: Buf, root: number, sync: boolean, wait: SyncWait = "spin"): Promise<void> {
    dtypeOf(buf);
    checkRank("mpi broadcast", root, this.size, "root");
    if (wait !== "spin" && wait !== "sleep") throw new Error(`mpi broadcast: wait must be 'spin' or 'sleep', got '${String(wait)}'`);
    this.live("broadcast");
    return this.mpi.bcast(this.c.handle, buf, root, sync, wait === "sleep");
  }
  async broadcast(buf: Buf, root: number): Promise<void> {
    return this.broadcastCall(buf, root, false);
  }
  broadcastSync(buf: Buf, root: number, wait?: SyncWait): void {
    void this.broadcastCall(buf, root, true, wait);
  }

  async barrier(): Promise<void> {
    this.live("barrier");
    return this.mpi.barrier(this.c.handle);
  }
  barrierSync(): void {
    this.live("barrier");
    void this.mpi.barrier(this.c.handle, true);
  }

  async send(buf: Buf, peer: number, tag = 0): Promise<void> {
    dtypeOf(buf);
    checkRank("mpi send", peer, this.size, "peer");
    checkTag("mpi send", tag);
    if (peer === this.rank) throw new Error(`mpi send: rank ${peer} sending to itself`);
    this.live("send");
    return this.mpi.send(this.c.handle, buf, peer, tag);
  }

  async recv(buf: Buf, peer: number, tag = 0): Promise<void> {
    dtypeOf(buf);
    checkRank("mpi recv", peer, this.size, "peer");
    checkTag("mpi recv", tag);
    if (peer === this.rank) throw new Error(`mpi recv: rank ${peer} receiving from itself`);
    this.live("recv");
    return this.mpi.recv(this.c.handle, buf, peer, tag);
  }

  async split(color: number, key = 0): Promise<ProcessGroup | null> {
    checkColorKey("mpi split", color, key);
    this.live("split");
    const ck = new Int32Array(2 * this.size);
    const gathered = this.mpi.allgather(this.c.handle, Int32Array.of(color, key), ck);
    const made = this.mpi.split(this.c.handle, color, key);
    await gathered;
    const c = await made;
    const members = splitMembers(ck, this.size, this.rank);
    if (!c || !members) return null;
    return new MpiGroup(this.mpi, c, members.map((r) => this.worldRanks[r]!));
  }

  async subgroup(ranks: readonly number[]): Promise<ProcessGroup | null> {
    const [c, k] = subgroupColorKey("mpi subgroup", ranks, this.size, this.rank);
    return this.split(c, k);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.mpi.close(this.c.handle);
  }
}

/**
 * Initialises MPI (once per process) and returns the world group. Installs the exit hook that
 * finalizes MPI on a clean exit and aborts the whole job otherwise.
 */
export function mpiWorld(): ProcessGroup {
  const mpi = loadAddon();
  const { world } = mpi.init();
  // Node prints an uncaught error only after the exit handlers, and the abort below ends the
  // process first: print it here (once), with the rank.
  let reported = false;
  process.on("uncaughtExceptionMonitor", (err) => {
    reported = true;
    process.stderr.write(`moe: rank ${world.rank} failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  });
  process.on("exit", (code) => {
    if (code === 0 && mpi.pending() === 0) mpi.finalize();
    else {
      if (code === 0) process.stderr.write(`moe: rank ${world.rank} exited with ${mpi.pending()} MPI operation(s) still in flight; aborting the job\n`);
      else if (!reported) process.stderr.write(`moe: rank ${world.rank} exited with code ${code}; aborting the job\n`);
      // Give mpirun's output forwarding a moment to pass on this rank's last lines (its error):
      // MPI_Abort ends the job at once and drops what is still on the way.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
      mpi.abort(code === 0 ? 1 : code);
    }
  });
  return new MpiGroup(mpi, world, Array.from({ length: world.size }, (_, i) => i));
}
