// How much CPU a rank waiting in an MPI exchange takes from busy ranks on the same cores (the
// planner's cluster.pollShare): `cores` processes spin while an n-rank MPI job runs in which ranks
// 1..n−1 wait in an all-reduce that rank 0 joins only after `seconds` of sleep (rank 0 uses no CPU
// meanwhile). n is the rank count of the runs that share cores (Open MPI yields in its polling
// loop only when it sees more ranks than slots, so the share depends on it). The waiters' CPU
// seconds per wall second together, u, under fair sharing among the c spinners (weight 1 each)
// and the w = n−1 waiters (weight s each) is u = c·w·s / (c + w·s), so
//   s = c·u / (w·(c − u))   (0: it leaves its core to the others; 1: it competes like a busy rank).
// Measured once per plan check (bench/plan-check.ts), like the compute rates.
import { spawn, spawnSync } from "node:child_process";
import path from "node:path";
import { initWorld } from "../src/parallel/world.js";

/** The rank program (started by `moe launch --module … -- --poll SECONDS`): prints rank 1's CPU use while it waits. */
export async function pollRank(seconds: number): Promise<void> {
  const g = await initWorld();
  const buf = new Float32Array(1);
  await g.allreduce(buf); // both ranks up
  if (g.rank === 0) await new Promise((r) => setTimeout(r, seconds * 1e3));
  const c0 = process.cpuUsage(), t0 = performance.now();
  await g.allreduce(buf);
  const c = process.cpuUsage(c0), wall = (performance.now() - t0) / 1e3;
  if (g.rank > 0) console.log(`POLL ${JSON.stringify({ cpu_s: (c.user + c.system) / 1e6, wall_s: wall })}`);
  await g.close();
}

/** Share s of the waiting rank (see the header) with `cores` spinning processes; also u, its CPU per wall second. */
export function pollShareFormula(cores: number, u: number, waiters = 1): number {
  if (!(cores > 0) || !(u >= 0) || !(waiters >= 1)) throw new Error(`pollShareFormula: need cores > 0, u ≥ 0, waiters ≥ 1 (got ${cores}, ${u}, ${waiters})`);
  return u >= cores ? 1 : Math.min(1, (cores * u) / (waiters * (cores - u)));
}

/** ranks: of the MPI job (the runs' oversubscribed rank count); u = the waiters' CPU per wall second together. */
export async function measurePollShare(rankModule: string, cores: number, ranks: number, seconds = 2): Promise<{ share: number; cpuPerWall: number; ranks: number }> {
  const spin = `const t=Date.now();let x=0;while(Date.now()-t<${Math.round((seconds + 4) * 1e3)})x++;`;
  const spinners = Array.from({ length: cores }, () => spawn(process.execPath, ["-e", spin], { stdio: "ignore" }));
  try {
    const moe = path.resolve(path.dirname(rankModule), "..", "..", "bin", "moe.js");
    const r = spawnSync(process.execPath, [moe, "launch", "--nproc", String(ranks), "--backend", "mpi", "--timeout", "120", "--module", rankModule, "--", "--poll", String(seconds)], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`poll-share run failed (exit ${r.status}):\n${r.stderr}`);
    const ps = [...r.stdout.matchAll(/POLL (\{.*\})/g)].map((m) => JSON.parse(m[1]!) as { cpu_s: number; wall_s: number });
    if (ps.length !== ranks - 1) throw new Error(`poll-share run printed ${ps.length} POLL lines, expected ${ranks - 1}:\n${r.stdout}`);
    const u = ps.reduce((a, p) => a + p.cpu_s / p.wall_s, 0);
    return { share: pollShareFormula(cores, u, ranks - 1), cpuPerWall: u, ranks };
  } finally {
    for (const s of spinners) s.kill();
  }
}
