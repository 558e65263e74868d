// initWorld(): the world process group of this process, the backend chosen from how it was started
// (a `threads` worker, an MPI rank under mpirun / srun, or a plain single process).
// Not: the launcher (cli/launch.ts), nor a transport.
import { type BackendName, type ProcessGroup, singleGroup } from "./process-group.js";
import { inThreadsWorker, threadsWorld } from "./threads.js";

export type WorldBackend = BackendName | "auto";

export interface WorldOptions {
  /** "auto" (default): a threads worker → threads; MPI/PMI/Slurm rank variables → mpi; else single. */
  backend?: WorldBackend;
}

/** Rank and size as the process manager announced them, or null when none did. */
export interface EnvRank {
  rank: number;
  size: number;
  /** Which variables said so. */
  source: "OMPI_COMM_WORLD" | "PMI" | "PMIX" | "SLURM";
}

export function rankFromEnv(env: NodeJS.ProcessEnv = process.env): EnvRank | null {
  const pair = (r: string | undefined, s: string | undefined): [number, number] | null => {
    if (r === undefined || s === undefined) return null;
    const rank = Number(r), size = Number(s);
    if (!Number.isInteger(rank) || !Number.isInteger(size) || rank < 0 || rank >= size) throw new Error(`initWorld: bad rank variables (rank '${r}', size '${s}')`);
    return [rank, size];
  };
  let p = pair(env.OMPI_COMM_WORLD_RANK, env.OMPI_COMM_WORLD_SIZE);
  if (p) return { rank: p[0], size: p[1], source: "OMPI_COMM_WORLD" };
  p = pair(env.PMI_RANK, env.PMI_SIZE);
  if (p) return { rank: p[0], size: p[1], source: "PMI" };
  p = pair(env.PMIX_RANK, env.PMIX_SIZE ?? env.OMPI_UNIVERSE_SIZE);
  if (p) return { rank: p[0], size: p[1], source: "PMIX" };
  p = pair(env.SLURM_PROCID, env.SLURM_NTASKS ?? env.SLURM_NPROCS);
  if (p) return { rank: p[0], size: p[1], source: "SLURM" };
  return null;
}

/** Which backend "auto" picks here. */
export function detectBackend(env: NodeJS.ProcessEnv = process.env): BackendName {
  if (inThreadsWorker()) return "threads";
  const r = rankFromEnv(env);
  if (r && r.size > 1) return "mpi";
  return "single";
}

/** The world group. Call once per process (per rank thread) and pass the group along. */
export async function initWorld(opt: WorldOptions = {}): Promise<ProcessGroup> {
  const backend = opt.backend ?? "auto";
  const chosen: BackendName = backend === "auto" ? detectBackend() : backend;
  switch (chosen) {
    case "single":
      return singleGroup();
    case "threads":
      return threadsWorld();
    case "mpi": {
      const { mpiWorld } = await import("./mpi.js");
      return mpiWorld();
    }
    default:
      chosen satisfies never;
      throw new Error(`initWorld: unknown backend '${String(backend)}' (known: auto, single, threads, mpi)`);
  }
}
