// `moe launch --nproc N [--backend threads|mpi] [--timeout S] [--hostfile F] -- <moe subcommand> [args]`
// Starts N ranks of a moe subcommand (or of any ES module with --module FILE):
// - threads: N worker threads of this process (one machine, nothing to install);
// - mpi: `mpirun -n N … node bin/moe.js <subcommand>` (Open MPI; one machine or a hostfile).
// Each rank gets its world group from initWorld(). The first rank to fail (throw, non-zero exit,
// killed) or the timeout ends every rank; the exit code is non-zero and the failing rank is named once.
// Not: a scheduler (under Slurm, `srun npx moe train …` starts ranks without this command).
import { spawn, spawnSync } from "node:child_process";
import { availableParallelism } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { parseFlags } from "./args.js";
import { runThreads } from "../parallel/threads.js";
import { mpiAvailable } from "../parallel/mpi.js";

const USAGE = `usage: moe launch --nproc N [options] -- <moe subcommand> [args ...]
       moe launch --nproc N [options] --module FILE.js -- [args ...]

Runs N ranks; each one's world process group comes from initWorld().

options:
  --nproc N          number of ranks (required, 1..256)
  --backend B        threads (default: worker threads of this process, one machine)
                     | mpi (mpirun; needs Open MPI and the MPI binding built)
  --timeout S        end every rank and exit 124 after S seconds (default 0: no limit; a
                     stuck rank then hangs the job)
  --module FILE      run this ES module in every rank instead of the moe CLI
  --hostfile F       mpi only: Open MPI hostfile (ranks on several machines)
  --mpirun-args "…"  mpi only: extra mpirun arguments, split on spaces
  --dry-run          mpi only: print the mpirun command line and exit

examples:
  moe launch --nproc 2 -- train parallel.dp=2
  moe launch --nproc 4 --backend mpi --timeout 600 --hostfile hosts -- train parallel.dp=4`;

export async function runLaunch(argv: string[]): Promise<number> {
  const dd = argv.indexOf("--");
  const own = dd >= 0 ? argv.slice(0, dd) : argv;
  const rest = dd >= 0 ? argv.slice(dd + 1) : [];
  const { flags, positional } = parseFlags("moe launch", own, {
    nproc: "number",
    backend: "string",
    timeout: "number",
    module: "string",
    hostfile: "string",
    "mpirun-args": "string",
    "dry-run": "boolean",
    help: "boolean",
  });
  if (flags.help || own.includes("-h")) {
    console.log(USAGE);
    return 0;
  }
  if (positional.length) throw new Error(`moe launch: unexpected argument '${positional[0]}' (put the command to run after --)\n\n${USAGE}`);
  const nproc = flags.nproc;
  if (nproc === undefined) throw new Error(`moe launch: --nproc N is required\n\n${USAGE}`);
  if (!Number.isInteger(nproc) || nproc < 1 || nproc > 256) throw new Error(`moe launch: --nproc must be an integer in [1, 256], got ${nproc}`);
  const backend = flags.backend ?? "threads";
  if (backend !== "threads" && backend !== "mpi") throw new Error(`moe launch: --backend must be 'threads' or 'mpi', got '${backend}'`);
  const timeout = flags.timeout ?? 0;
  if (!(timeout >= 0)) throw new Error(`moe launch: --timeout must be ≥ 0 seconds, got ${timeout}`);
  if (backend === "threads" && (flags.hostfile || flags["mpirun-args"] || flags["dry-run"])) throw new Error("moe launch: --hostfile, --mpirun-args and --dry-run need --backend mpi");
  if (!flags.module && rest.length === 0) throw new Error(`moe launch: no command after -- (e.g. moe launch --nproc 2 -- train)\n\n${USAGE}`);
  if (!flags.module && rest[0] === "launch") throw new Error("moe launch: cannot launch 'launch'");

  const here = path.dirname(fileURLToPath(import.meta.url));
  const entry = flags.module ? path.resolve(flags.module) : path.join(here, "main.js");

  // Ranks sharing this machine share its cores: unless MOE_NUM_THREADS is set, each rank's engine
  // gets cores / ranks threads (at least 1). With a hostfile the ranks per host are not known here.
  const env = { ...process.env };
  if (!env.MOE_NUM_THREADS && !flags.hostfile) env.MOE_NUM_THREADS = String(Math.max(1, Math.floor(availableParallelism() / nproc)));

  if (backend === "threads") {
    const r = await runThreads(nproc, entry, rest, { timeoutMs: timeout * 1000, env });
    return r.code;
  }

  if (!mpiAvailable()) throw new Error("moe launch: --backend mpi needs the MPI binding, which was not built (Open MPI was not found at build time). Install openmpi-bin libopenmpi-dev and run `node scripts/build-native.mjs --force`, or use --backend threads");
  const script = flags.module ? entry : path.resolve(here, "..", "..", "..", "bin", "moe.js");
  const args = mpirunArgs({ nproc, timeout, hostfile: flags.hostfile, extra: flags["mpirun-args"] });
  const cmd = [...args, process.execPath, script, ...rest];
  if (flags["dry-run"]) {
    console.log(["mpirun", ...cmd].map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(" "));
    return 0;
  }
  if (spawnSync("mpirun", ["--version"], { stdio: "ignore" }).error) throw new Error("moe launch: mpirun is not on PATH (Debian: apt-get install openmpi-bin)");
  return new Promise((resolve, reject) => {
    const child = spawn("mpirun", cmd, { stdio: "inherit", env });
    child.on("error", reject);
    const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
    process.on("SIGINT", forward("SIGINT"));
    process.on("SIGTERM", forward("SIGTERM"));
    child.on("exit", (code, signal) => {
      if (code === 0) resolve(0);
      else {
        const why = signal ? `mpirun ended by ${signal}` : code === 110 || code === 124 ? `timed out after ${timeout} s` : `exit code ${code}`;
        process.stderr.write(`moe launch: the MPI job failed (${why})${signal || code === 110 || code === 124 ? "" : "; the failing rank is named above"}\n`);
        resolve(code === 110 ? 124 : code || 1);
      }
    });
  });
}

export interface MpirunOptions {
  nproc: number;
  /** Seconds; 0 = none. */
  timeout: number;
  hostfile?: string;
  /** Extra arguments, split on whitespace. */
  extra?: string;
  /** Whether this process runs as root (mpirun refuses without --allow-run-as-root). Default: detected. */
  root?: boolean;
  /** Cores here (more ranks than cores need --oversubscribe). Default: detected. */
  cores?: number;
}

/**
 * mpirun's arguments before the program (pure, so it can be tested). More ranks than cores here:
 * --oversubscribe, and each rank bound to one core round-robin (rank r on core r mod cores; Open
 * MPI's `--map-by core --bind-to core:overload-allowed`) unless `extra` places the ranks itself
 * (--map-by, --bind-to, --rank-by). Measured (`pp=2 × dp=2`, 4 ranks on 2 cores): unbound, the
 * ranks' forward/backward got 85% of the CPU an equal share of the cores among the computing
 * ranks gives them and the step took 227 ms; bound, 96% and 200 ms (README "Planning a layout").
 * Bound, a pipeline replica's stages sit on one core (world rank = stage × replicas + replica).
 */
export function mpirunArgs(o: MpirunOptions): string[] {
  const a = ["-n", String(o.nproc), "--tag-output"];
  const root = o.root ?? process.getuid?.() === 0;
  if (root) a.push("--allow-run-as-root");
  if (!o.hostfile && o.nproc > (o.cores ?? availableParallelism())) {
    a.push("--oversubscribe");
    if (!/--(map-by|bind-to|rank-by)\b/.test(o.extra ?? "")) a.push("--map-by", "core", "--bind-to", "core:overload-allowed");
  }
  if (o.hostfile) a.push("--hostfile", o.hostfile);
  if (o.timeout > 0) a.push("--timeout", String(Math.ceil(o.timeout)));
  if (o.extra) a.push(...o.extra.split(/\s+/).filter(Boolean));
  return a;
}
