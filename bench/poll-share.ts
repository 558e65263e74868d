// How much CPU a rank waiting in an MPI exchange takes from busy ranks on the same cores (the
// planner's cluster.pollShare): `cores` processes spin while a 2-rank MPI job runs in which rank 1
// waits in an all-reduce that rank 0 joins only after `seconds` of sleep (rank 0 uses no CPU
// meanwhile). The waiting rank's CPU seconds per wall second, u, under fair sharing among the
// c spinners (weight 1 each) and the waiter (weight s) is u = c·s / (c + s), so
//   s = c·u / (c − u)   (0: it leaves its core to the others; 1: it competes like a busy rank).
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
  if (g.rank === 1) console.log(`POLL ${JSON.stringify({ cpu_s: (c.user + c.system) / 1e6, wall_s: wall })}`);
  await g.close();
}

/** Share s of the waiting rank (see the header) with `cores` spinning processes; also u, its CPU per wall second. */
export function pollShareFormula(cores: number, u: number): number {
  if (!(cores > 0) || !(u >= 0)) throw new Error(`pollShareFormula: need cores > 0 and u ≥ 0 (got ${cores}, ${u})`);
  return u >= cores ? 1 : Math.min(1, (cores * u) / (cores - u));
}

export async function measurePollShare(rankModule: string, cores: number, seconds = 2): Promise<{ share: number; cpuPerWall: number }> {
  const spin = `const t=Date.now();let x=0;while(Date.now()-t<${Math.round((seconds + 4) * 1e3)})x++;`;
  const spinners = Array.from({ length: cores }, () => spawn(process.execPath, ["-e", spin], { stdio: "ignore" }));
  try {
    const moe = path.resolve(path.dirname(rankModule), "..", "..", "bin", "moe.js");
    const r = spawnSync(process.execPath, [moe, "launch", "--nproc", "2", "--backend", "mpi", "--timeout", "120", "--module", rankModule, "--", "--poll", String(seconds)], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`poll-share run failed (exit ${r.status}):\n${r.stderr}`);
    const m = /POLL (\{.*\})/.exec(r.stdout);
    if (!m) throw new Error(`poll-share run printed no POLL line:\n${r.stdout}`);
    const p = JSON.parse(m[1]!) as { cpu_s: number; wall_s: number };
    const u = p.cpu_s / p.wall_s;
    return { share: pollShareFormula(cores, u), cpuPerWall: u };
  } finally {
    for (const s of spinners) s.kill();
  }
}
