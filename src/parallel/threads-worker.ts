// The first module of every `threads` rank (a worker thread started by runThreads): it only loads
// the rank's entry module; that module gets its world group from initWorld() / threadsWorld().
// Not: a place for rank logic.
import { workerData } from "node:worker_threads";

const { entry } = workerData as { entry: string };
await import(entry);
