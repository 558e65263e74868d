// A tensor-parallel inference rank ≥ 1 as a worker thread (started by infer/tp.ts): it builds its
// backend, joins the threads group, reports ready, then runs the shared step loop (tpWorkerLoop)
// on the slice it was given until rank 0's stop command.
// Not: a scheduler or sampler (rank 0 alone has those), nor the MPI ranks (runTpWorkerRank).
import { parentPort, workerData } from "node:worker_threads";
import { backendFromFlags } from "../backend/index.js";
import { failThreadsGroup, threadsGroupOver } from "../parallel/threads.js";
import { tpWorkerLoop, type TpWorkerData } from "./tp.js";

const d = workerData as TpWorkerData;
let started = false;
try {
  const be = backendFromFlags(d.backend, `tensor-parallel rank ${d.rank}`);
  const g = threadsGroupOver(d.rank, d.size, d.sab, d.slotBytes);
  parentPort!.postMessage({ ready: true });
  started = true;
  tpWorkerLoop(be, g, d.shard, d);
  await g.close();
} catch (e) {
  // before ready: rank 0 is still listening and reports it; later, rank 0 may be waiting in a
  // collective of this step: the group is marked failed, so that wait throws naming this rank
  if (started) failThreadsGroup(d.sab, d.rank);
  parentPort!.postMessage({ error: e instanceof Error ? (e.stack ?? e.message) : String(e), started });
  process.exitCode = 1;
}
