// Tensor-parallel inference: the engine's weights split over `size` ranks (layout: tp-shard.ts),
// rank 0 the engine and its scheduler (unchanged) and ranks 1..size−1 running the step loop
// (tpWorkerLoop), each holding its weight slice and its slice of the KV cache (its kv heads; the
// same blocks and slots as rank 0's, which the scheduler owns). The ranks are either
//  - worker threads of this process (TensorParallel.start without a group; tp-worker.ts), in a
//    `threads` process group over one SharedArrayBuffer, or
//  - the ranks of a process group the caller gives (`group`: the MPI world under mpirun, or the
//    threads world of `moe launch`): rank 0 calls TensorParallel.start, the others
//    runTpWorkerRank; each rank opens the model itself and keeps only its slice.
// Every collective is the blocking form, since runStep is synchronous.
//
// One step, numbered:
//  1. rank 0's runStep calls `begin`: a header (command, row and sequence counts, KV geometry)
//     and the step's int arrays (tokens, positions, query starts, context lengths, slots, block
//     tables) are broadcast to the workers, which wait for them in a blocking loop (the header
//     with a sleeping wait, so an idle MPI worker leaves its core free)
//  2. every rank runs runStep on its slice: q/k/v of its heads into its KV slice, attention, its
//     o_proj columns → all-reduce; its FFN / expert columns → all-reduce (router logits are
//     broadcast from rank 0 so every rank picks the same experts)
//  3. rank 0 alone runs the final norm and LM head and samples (runStep calls `end`; a step that
//     threw between begin and end leaves the ranks out of step, and later steps refuse to run)
// `close()` broadcasts the stop command and waits for the workers to exit.
//
// Failures: a worker thread whose step throws marks the threads group failed, so rank 0's wait in
// the step's collective throws naming it (one ended from outside is found dead between steps and
// fails the next step with a clear error). Over
// MPI a failing rank exits non-zero, and the MPI exit hook (parallel/mpi.ts) aborts the whole job.
// Not: training TP.
import { Worker } from "node:worker_threads";
import { availableParallelism } from "node:os";
import { allocGroupBuffer, DEFAULT_SLOT_BYTES, threadsGroupOver } from "../parallel/threads.js";
import type { ProcessGroup } from "../parallel/process-group.js";
import { detectBackend, initWorld } from "../parallel/world.js";
import type { Backend } from "../backend/index.js";
import type { Activations, EngineWeights } from "./engine-weights.js";
import { KvCachePool } from "./kv-cache.js";
import { InferenceWorkspace, runStep, type StepBatch } from "./runner.js";
import { planTensorParallel, shardBuffers, shardEngineWeights, TensorParallelError, type TpPlan, type TpShard } from "./tp-shard.js";

/** The flags a worker builds its own backend from (as `backendFromFlags`). */
export interface TpBackendFlags {
  backend?: string;
  threads?: number;
  gemm?: string;
}

export interface TensorParallelOptions {
  /** Ranks: the calling thread and size−1 worker threads, or the ranks of `group`. Required, ≥ 1 (1: no split). */
  size: number;
  /**
   * Split over the ranks of this group instead of worker threads (e.g. the MPI world): size must
   * equal group.size, this call runs on group rank 0, every other rank calls runTpWorkerRank. The
   * group stays open (the caller's). Default: none (worker threads).
   */
  group?: ProcessGroup;
  /** Backend of every worker rank (the caller's own backend is rank 0's). Default: native with the caller's defaults. */
  backend?: TpBackendFlags;
  /** Staging bytes per rank of the group's shared buffer. Default 4 MiB. */
  slotBytes?: number;
}

/** Step header (Int32Array) broadcast by rank 0: command and sizes. */
export const TP_HEADER = { cmd: 0, N: 1, S: 2, tables: 3, numBlocks: 4, blockSize: 5, maxBlocksPerSeq: 6, kvDtype: 7, maxRows: 8, activations: 9, length: 12 } as const;
export const TP_CMD = { stop: 0, step: 1 } as const;

/** What a worker receives (workerData). */
export interface TpWorkerData {
  rank: number;
  size: number;
  sab: SharedArrayBuffer;
  slotBytes: number;
  shard: EngineWeights;
  backend: TpBackendFlags;
  qNormWidth: number;
  kNormWidth: number;
}

/** Per-rank backend threads when --threads is not given: the cores shared by the ranks (at least 1 each). */
export function tpThreadsPerRank(size: number, cores = availableParallelism()): number {
  return Math.max(1, Math.floor(cores / size));
}

/** The "full" q/k norm widths a rank's all-reduced sums of squares are divided by. */
function normWidths(full: EngineWeights, plan: TpPlan): { qNormWidth: number; kNormWidth: number } {
  const c = full.cfg;
  return { qNormWidth: c.numHeads * c.headDim, kNormWidth: c.numKvHeads * c.headDim * plan.kvReplicas };
}

export class TensorParallel {
  private failure: string | null = null;
  private closed = false;
  /** Between rank 0's begin and end of a step. */
  private inStep = false;

  private constructor(
    /** Rank 0's weights: pass these to the Engine. */
    readonly weights: EngineWeights,
    readonly plan: TpPlan,
    private readonly group: ProcessGroup | null,
    private readonly workers: Worker[],
    private readonly exits: Promise<void>[],
    /** Whether close() closes the group (the workers' one; a caller's group stays open). */
    private readonly ownsGroup: boolean,
  ) {}

  /**
   * Splits `full` (the one-rank engine weights, any dtype) over opts.size ranks and starts the
   * workers; resolves once every worker holds its slice. size 1 returns `full` unchanged.
   */
  static async start(full: EngineWeights, opts: TensorParallelOptions): Promise<TensorParallel> {
    const size = opts.size;
    if (full.tp) throw new TensorParallelError("tensor parallel: these weights are already one rank's slice");
    const plan = planTensorParallel(full.cfg, size, full.dtype);
    if (opts.group) return TensorParallel.overGroup(full, plan, opts.group);
    if (size === 1) return new TensorParallel(full, plan, null, [], [], false);
    const slotBytes = opts.slotBytes ?? DEFAULT_SLOT_BYTES;
    if (!(Number.isInteger(slotBytes) && slotBytes >= 64 * size && slotBytes % 8 === 0)) throw new TensorParallelError(`tensor parallel: slotBytes must be a multiple of 8 and ≥ 64 × size, got ${slotBytes}`);
    const sab = allocGroupBuffer(size, slotBytes);
    const widths = normWidths(full, plan);
    const url = new URL("./tp-worker.js", import.meta.url);
    const workers: Worker[] = [], exits: Promise<void>[] = [], ready: Promise<void>[] = [];
    let tp!: TensorParallel;
    for (let r = 1; r < size; r++) {
      const shard = shardEngineWeights(full, plan, r, true);
      const data: TpWorkerData = { rank: r, size, sab, slotBytes, shard, backend: opts.backend ?? {}, ...widths };
      const w = new Worker(url, { workerData: data, transferList: shardBuffers(shard) });
      workers.push(w);
      ready.push(new Promise<void>((resolve, reject) => {
        w.once("message", (m: { ready?: true; error?: string }) => (m.ready ? resolve() : reject(new TensorParallelError(`tensor parallel: rank ${r} failed to start: ${m.error}`))));
        w.once("error", (e) => reject(new TensorParallelError(`tensor parallel: rank ${r} failed to start: ${e.message}`)));
        w.once("exit", (code) => reject(new TensorParallelError(`tensor parallel: rank ${r} exited with code ${code} while starting`)));
      }));
      exits.push(new Promise<void>((resolve) => w.once("exit", () => resolve())));
      w.on("message", (m: { error?: string }) => m.error && tp?.fail(`rank ${r} failed: ${m.error.split("\n")[0]}`));
      w.on("error", (e) => tp?.fail(`rank ${r} failed: ${e.message}`));
      w.on("exit", (code) => tp?.fail(`rank ${r} exited (code ${code})`));
    }
    try {
      await Promise.all(ready);
    } catch (e) {
      await Promise.all(workers.map((w) => w.terminate()));
      throw e;
    }
    // a process that ends without close() is not held open by workers waiting for a step
    for (const w of workers) w.unref();
    const group = threadsGroupOver(0, size, sab, slotBytes);
    const rank0 = shardEngineWeights(full, plan, 0, false);
    tp = new TensorParallel(rank0, plan, group, workers, exits, true);
    rank0.tp = tp.shard(group, widths);
    return tp;
  }

  /** Rank 0 of TP over the ranks of `g` (the others run runTpWorkerRank). */
  private static async overGroup(full: EngineWeights, plan: TpPlan, g: ProcessGroup): Promise<TensorParallel> {
    if (g.size !== plan.size) throw new TensorParallelError(`tensor parallel: ${plan.size} ranks asked for, but the group has ${g.size}`);
    if (g.rank !== 0) throw new TensorParallelError(`tensor parallel: TensorParallel.start runs on rank 0 of the group; rank ${g.rank} runs runTpWorkerRank`);
    if (plan.size === 1) return new TensorParallel(full, plan, null, [], [], false);
    const rank0 = shardEngineWeights(full, plan, 0, false);
    await g.barrier(); // every rank holds its slice
    const tp = new TensorParallel(rank0, plan, g, [], [], false);
    rank0.tp = tp.shard(g, normWidths(full, plan));
    return tp;
  }

  private fail(msg: string): void {
    if (!this.closed && this.failure === null) this.failure = msg;
  }

  private shard(g: ProcessGroup, widths: { qNormWidth: number; kNormWidth: number }): TpShard {
    const hdr = new Int32Array(TP_HEADER.length);
    return {
      rank: 0, size: this.plan.size, ...widths,
      allreduce: (b) => g.allreduceSync(b, "sum"),
      broadcast: (b) => g.broadcastSync(b, 0),
      begin: (b: StepBatch, kv: KvCachePool, ws: { maxRows: number; activations: Activations }) => {
        if (this.closed) throw new TensorParallelError("tensor parallel: step after close()");
        // a step that threw on rank 0 after begin left the other ranks somewhere in its collectives
        if (this.inStep) this.fail("a step failed on rank 0 in the middle, so the ranks are out of step");
        if (this.failure) throw new TensorParallelError(`tensor parallel: ${this.failure}; the engine cannot run`);
        this.inStep = true;
        const N = b.tokens.length, S = b.contextLens.length;
        hdr.fill(0);
        hdr[TP_HEADER.cmd] = TP_CMD.step;
        hdr[TP_HEADER.N] = N;
        hdr[TP_HEADER.S] = S;
        hdr[TP_HEADER.tables] = b.blockTables.length;
        hdr[TP_HEADER.numBlocks] = kv.numBlocks;
        hdr[TP_HEADER.blockSize] = kv.blockSize;
        hdr[TP_HEADER.maxBlocksPerSeq] = kv.maxBlocksPerSeq;
        hdr[TP_HEADER.kvDtype] = kv.dtype === "bf16" ? 1 : 0;
        hdr[TP_HEADER.maxRows] = ws.maxRows;
        hdr[TP_HEADER.activations] = ws.activations === "q8" ? 1 : 0;
        g.broadcastSync(hdr, 0, "sleep"); // a worker may wait long for the next step: no busy-polling core
        g.broadcastSync(packBatch(b), 0);
      },
      end: () => {
        this.inStep = false;
      },
    };
  }

  /** Stops the workers (the engine must not step afterwards). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.group) {
      for (const w of this.workers) w.ref(); // keep the event loop alive until they have exited
      if (this.failure === null) {
        const hdr = new Int32Array(TP_HEADER.length);
        hdr[TP_HEADER.cmd] = TP_CMD.stop;
        this.group.broadcastSync(hdr, 0, "sleep");
      } else await Promise.all(this.workers.map((w) => w.terminate()));
      await Promise.all(this.exits);
      if (this.ownsGroup) await this.group.close();
    }
  }
}

/**
 * The step loop of a rank ≥ 1 (a worker thread or a process of the group): attaches the group's
 * collectives to `w` (this rank's slice), then waits for rank 0's step header and batch (blocking
 * broadcasts) and runs runStep on the slice and its own KV cache, until the stop command. Its KV
 * cache has rank 0's geometry (blocks, block size, table width) and its own kv heads; rank 0's
 * scheduler owns the block allocation, so this rank only stores. Throws what a step throws.
 */
export function tpWorkerLoop(be: Backend, g: ProcessGroup, w: EngineWeights, widths: { qNormWidth: number; kNormWidth: number }): void {
  w.tp = { rank: g.rank, size: g.size, qNormWidth: widths.qNormWidth, kNormWidth: widths.kNormWidth, allreduce: (b) => g.allreduceSync(b, "sum"), broadcast: (b) => g.broadcastSync(b, 0) };
  const cfg = w.cfg;
  const hdr = new Int32Array(TP_HEADER.length);
  let kv: KvCachePool | null = null;
  let ws: InferenceWorkspace | null = null;
  for (;;) {
    g.broadcastSync(hdr, 0, "sleep"); // a worker may wait long for the next step: no busy-polling core
    if (hdr[TP_HEADER.cmd] === TP_CMD.stop) return;
    const N = hdr[TP_HEADER.N]!, S = hdr[TP_HEADER.S]!;
    const payload = new Int32Array(3 * N + 2 * S + 1 + hdr[TP_HEADER.tables]!);
    g.broadcastSync(payload, 0);
    const numBlocks = hdr[TP_HEADER.numBlocks]!, blockSize = hdr[TP_HEADER.blockSize]!, mbs = hdr[TP_HEADER.maxBlocksPerSeq]!;
    const dtype = hdr[TP_HEADER.kvDtype] === 1 ? "bf16" : "f32";
    if (!kv || kv.numBlocks !== numBlocks || kv.blockSize !== blockSize || kv.maxBlocksPerSeq !== mbs || kv.dtype !== dtype) {
      kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks, blockSize, dtype, prefixCaching: false, maxSeqLen: mbs * blockSize });
    }
    const maxRows = hdr[TP_HEADER.maxRows]!;
    const activations: Activations = hdr[TP_HEADER.activations] === 1 ? "q8" : "f32";
    if (!ws || ws.maxRows < maxRows || ws.activations !== activations) ws = new InferenceWorkspace(cfg, maxRows, 0, { activations });
    runStep(be, w, ws, kv, unpackBatch(payload, N, S));
  }
}

/** Rank r's slice of the weights `load` opens, with nothing else of them kept (the full weights are garbage on return). */
function ownSlice(load: () => EngineWeights, g: ProcessGroup): { w: EngineWeights; widths: { qNormWidth: number; kNormWidth: number } } {
  const full = load();
  if (full.tp) throw new TensorParallelError("tensor parallel: these weights are already one rank's slice");
  const plan = planTensorParallel(full.cfg, g.size, full.dtype);
  return { w: shardEngineWeights(full, plan, g.rank, true), widths: normWidths(full, plan) };
}

/**
 * Rank ≥ 1 of tensor-parallel inference over the ranks of `g` (rank 0 runs TensorParallel.start
 * with `group: g`): opens the one-rank engine weights with `load`, keeps its slice only, and runs
 * the step loop with rank 0 until rank 0 closes; then returns. `be`: this rank's backend.
 */
export async function runTpWorkerRank(load: () => EngineWeights, g: ProcessGroup, be: Backend): Promise<void> {
  if (g.rank === 0) throw new TensorParallelError("tensor parallel: runTpWorkerRank is for ranks ≥ 1; rank 0 runs TensorParallel.start with the group");
  const { w, widths } = ownSlice(load, g);
  await g.barrier(); // rank 0 reports ready once every rank holds its slice
  tpWorkerLoop(be, g, w, widths);
}

/** tokens, positions, queryStart, contextLens, slots, blockTables in one Int32Array. */
export function packBatch(b: StepBatch): Int32Array {
  const N = b.tokens.length, S = b.contextLens.length;
  const out = new Int32Array(3 * N + 2 * S + 1 + b.blockTables.length);
  let o = 0;
  for (const a of [b.tokens, b.positions, b.queryStart, b.contextLens, b.slots, b.blockTables]) {
    out.set(a, o);
    o += a.length;
  }
  return out;
}

/** The inverse of packBatch for N rows and S sequences (no logits rows: workers never compute logits). */
export function unpackBatch(p: Int32Array, N: number, S: number): StepBatch {
  let o = 0;
  const take = (n: number) => p.subarray(o, (o += n));
  return { tokens: take(N), positions: take(N), queryStart: take(S + 1), contextLens: take(S), slots: take(N), blockTables: take(p.length - o), logitRows: new Int32Array(0) };
}

/** `--tp N` of the CLI: undefined → 1; otherwise a positive integer. */
export function parseTpFlag(cmd: string, v: number | undefined): number {
  const n = v ?? 1;
  if (!(Number.isInteger(n) && n >= 1)) throw new TensorParallelError(`${cmd}: --tp must be a positive integer (ranks), got ${v}`);
  return n;
}

/** The backend flags of every rank under `--tp N`: without --threads, the cores are shared among the ranks. */
export function tpBackendFlags<F extends TpBackendFlags>(flags: F, size: number): F {
  return size > 1 && flags.threads === undefined ? { ...flags, threads: tpThreadsPerRank(size) } : flags;
}

/** How the CLI's `--tp N` runs in this process. */
export interface TpLaunch<F extends TpBackendFlags> {
  /** Ranks of the split (1: none). */
  size: number;
  /** The launched ranks (mpirun, srun, moe launch) when this process is one of several; null: worker threads of this process. */
  group: ProcessGroup | null;
  /** This rank's backend flags (--threads defaulted to the cores shared by the ranks on this machine). */
  flags: F;
}

/**
 * `--tp N` of generate, chat and serve: in a plain process, N ranks as worker threads; in a process
 * launched as one of several ranks (mpirun -n N, moe launch --nproc N), the launched ranks, and
 * then --tp must equal their number. Collective when launched (every rank calls it).
 */
export async function tpLaunch<F extends TpBackendFlags & { tp?: number }>(cmd: string, flags: F, env: NodeJS.ProcessEnv = process.env): Promise<TpLaunch<F>> {
  const size = parseTpFlag(cmd, flags.tp);
  const world = detectBackend(env) === "single" ? null : await initWorld();
  if (!world || world.size === 1) return { size, group: null, flags: tpBackendFlags(flags, size) };
  if (flags.tp === undefined) throw new TensorParallelError(`${cmd}: this process is one of ${world.size} launched ranks (mpirun / moe launch); pass --tp ${world.size} to split the engine over them, or run one process`);
  if (size !== world.size) throw new TensorParallelError(`${cmd}: --tp ${size} but ${world.size} ranks were launched; under mpirun / moe launch --tp must equal the number of ranks (or run one process for --tp ${size} worker threads)`);
  // ranks on this machine: Open MPI says; a threads launch puts them all here; otherwise unknown (MOE_NUM_THREADS or every core)
  const local = Number(env.OMPI_COMM_WORLD_LOCAL_SIZE ?? (world.backend === "threads" ? world.size : 1));
  const shared = flags.threads === undefined && env.MOE_NUM_THREADS === undefined && Number.isInteger(local) && local > 1;
  return { size, group: world, flags: shared ? { ...flags, threads: tpThreadsPerRank(local) } : flags };
}
