// The run directory's housekeeping: one writer at a time (a lock file holding the writer's pid,
// removed on exit, taken over when its pid is dead), the temp files and folders of killed writers
// removed at start (run directory, checkpoints, data cache), metrics.jsonl cut back to the step a
// run resumes from.
// Not: checkpoint writing (checkpoints.ts) or the refusal to start over an old run (setup.ts).
import { closeSync, existsSync, openSync, readFileSync, readdirSync, rmSync, unlinkSync, writeSync } from "node:fs";
import path from "node:path";
import { checkpointsDir } from "./checkpoints.js";
import { writeFileAtomic } from "../core/fs.js";

export const LOCK_FILE = "train.lock";

export class RunLockError extends Error {
  override name = "RunLockError";
}

/** True when a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** A held lock on a run directory; release() (also run on process exit) removes it. */
export interface RunLock {
  file: string;
  release(): void;
}

/**
 * Takes outDir/train.lock for this process (O_EXCL create). A lock whose pid is dead is stale
 * and taken over (with a note through `log`); a live holder is refused with its pid.
 */
export function acquireRunLock(outDir: string, log: (s: string) => void = () => {}): RunLock {
  const file = path.join(outDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, "wx");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const text = (() => {
        try {
          return readFileSync(file, "utf8");
        } catch {
          return "";
        }
      })();
      const pid = Number.parseInt(text, 10);
      if (pid === process.pid) return { file, release: () => {} }; // re-entrant: this process already holds it
      if (pidAlive(pid)) throw new RunLockError(`${outDir} is in use by another moe train (pid ${pid}, lock ${file}); wait for it or choose another train.out_dir`);
      log(`removing a stale lock ${file} (pid ${Number.isNaN(pid) ? "unreadable" : pid} is not running)`);
      rmSync(file, { force: true });
      continue;
    }
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      process.removeListener("exit", release);
      try {
        if (Number.parseInt(readFileSync(file, "utf8"), 10) === process.pid) unlinkSync(file);
      } catch {
        /* already gone */
      }
    };
    process.on("exit", release);
    return { file, release };
  }
  throw new RunLockError(`${file}: could not take the lock (another process keeps taking it)`);
}

/** The writer's pid in a temp name: `.NAME.tmp-PID` (checkpoint folders) or `.NAME.tmp-PID-MS` (atomic file writes). */
const TEMP_NAME = /^\..+\.tmp-(\d+)(?:-\d+)?$/;

/**
 * Removes the temp files and folders of dead writers (a killed checkpoint write, a killed atomic
 * file write) directly inside each of `dirs`; a temp whose pid is alive (another process writing
 * now) is left alone. Returns the removed paths.
 */
export function removeDeadTemps(dirs: string[]): string[] {
  const removed: string[] = [];
  for (const dir of dirs) {
    if (!existsSync(dir)) continue;
    for (const d of readdirSync(dir)) {
      const m = TEMP_NAME.exec(d);
      if (!m || (Number(m[1]) !== process.pid && pidAlive(Number(m[1])))) continue;
      rmSync(path.join(dir, d), { recursive: true, force: true });
      removed.push(path.join(dir, d));
    }
  }
  return removed;
}

/** Removes the temps of dead writers in a run directory and its checkpoints folder; returns their names. */
export function cleanStaleTemps(outDir: string): string[] {
  return removeDeadTemps([outDir, checkpointsDir(outDir)]).map((p) => path.relative(outDir, p));
}

/** The data cache (tokenizers, shard folders one level down): temps of dead writers removed. */
export function cleanCacheTemps(cacheDir: string): string[] {
  if (!existsSync(cacheDir)) return [];
  const subdirs = readdirSync(cacheDir, { withFileTypes: true }).filter((e) => e.isDirectory() && !TEMP_NAME.test(e.name)).map((e) => path.join(cacheDir, e.name));
  return removeDeadTemps([cacheDir, ...subdirs]);
}

/**
 * Keeps only the metrics.jsonl records with step <= `step` (0: none), so a resumed or restarted
 * run never holds duplicate or stale steps. Returns how many lines were dropped.
 */
export function truncateMetrics(outDir: string, step: number): number {
  const file = path.join(outDir, "metrics.jsonl");
  if (!existsSync(file)) return 0;
  const lines = readFileSync(file, "utf8").split("\n").filter((l) => l.trim() !== "");
  const keep = lines.filter((l) => {
    try {
      const s = (JSON.parse(l) as { step?: unknown }).step;
      return typeof s === "number" && s <= step;
    } catch {
      return false; // a torn last line from a killed run
    }
  });
  // the same step twice (a run resumed before) keeps its last record only
  const byStep = new Map<number, string>();
  for (const l of keep) byStep.set((JSON.parse(l) as { step: number }).step, l);
  const out = [...byStep.entries()].sort((a, b) => a[0] - b[0]).map(([, l]) => l);
  if (out.length === lines.length) return 0;
  writeFileAtomic(file, out.length ? out.join("\n") + "\n" : "");
  return lines.length - out.length;
}
