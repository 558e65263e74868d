// A tensor-parallel inference rank ≥ 1 (a worker thread started by infer/tp.ts): it builds its
// backend, joins the group, reports ready, then loops: wait for rank 0's step header and batch
// (blocking broadcasts), run runStep on its weight slice and KV-cache slice, until the stop
// command. Its KV cache has rank 0's geometry (blocks, block size, table width) and its own kv
// heads; rank 0's scheduler owns the block allocation, so this rank only stores.
// Not: a scheduler or sampler (rank 0 alone has those), nor a place to compute logits.
import { parentPort, workerData } from "node:worker_threads";
import { backendFromFlags } from "../backend/index.js";
import { threadsGroupOver } from "../parallel/threads.js";
import { KvCachePool } from "./kv-cache.js";
import { InferenceWorkspace, runStep } from "./runner.js";
import { TP_CMD, TP_HEADER, unpackBatch, type TpWorkerData } from "./tp.js";

const d = workerData as TpWorkerData;
let started = false;
try {
  const be = backendFromFlags(d.backend, `tensor-parallel rank ${d.rank}`);
  const g = threadsGroupOver(d.rank, d.size, d.sab, d.slotBytes);
  const w = d.shard;
  w.tp = { rank: d.rank, size: d.size, qNormWidth: d.qNormWidth, kNormWidth: d.kNormWidth, allreduce: (b) => g.allreduceSync(b, "sum"), broadcast: (b) => g.broadcastSync(b, 0) };
  const cfg = w.cfg;
  parentPort!.postMessage({ ready: true });
  started = true;
  const hdr = new Int32Array(TP_HEADER.length);
  let kv: KvCachePool | null = null;
  let ws: InferenceWorkspace | null = null;
  for (;;) {
    g.broadcastSync(hdr, 0);
    if (hdr[TP_HEADER.cmd] === TP_CMD.stop) break;
    const N = hdr[TP_HEADER.N]!, S = hdr[TP_HEADER.S]!;
    const payload = new Int32Array(3 * N + 2 * S + 1 + hdr[TP_HEADER.tables]!);
    g.broadcastSync(payload, 0);
    const numBlocks = hdr[TP_HEADER.numBlocks]!, blockSize = hdr[TP_HEADER.blockSize]!, mbs = hdr[TP_HEADER.maxBlocksPerSeq]!;
    const dtype = hdr[TP_HEADER.kvDtype] === 1 ? "bf16" : "f32";
    if (!kv || kv.numBlocks !== numBlocks || kv.blockSize !== blockSize || kv.maxBlocksPerSeq !== mbs || kv.dtype !== dtype) {
      kv = new KvCachePool({ numLayers: cfg.numLayers, numKvHeads: cfg.numKvHeads, headSize: cfg.headDim, numBlocks, blockSize, dtype, prefixCaching: false, maxSeqLen: mbs * blockSize });
    }
    const maxRows = hdr[TP_HEADER.maxRows]!;
    if (!ws || ws.maxRows < maxRows) ws = new InferenceWorkspace(cfg, maxRows, 0);
    runStep(be, w, ws, kv, unpackBatch(payload, N, S));
  }
  await g.close();
} catch (e) {
  // before ready: rank 0 is still listening and reports it; later, rank 0 learns of it between steps
  parentPort!.postMessage({ error: e instanceof Error ? (e.stack ?? e.message) : String(e), started });
  process.exitCode = 1;
}
