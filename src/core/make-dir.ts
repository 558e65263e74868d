// Creating a directory (and its missing parents) with messages that name the path and the cause,
// one component at a time. Node's mkdirSync({ recursive: true }) loops forever under /proc and
// /sys (ENOENT from a pseudo file system) and reports a file in the way as a bare ENOTDIR.
// Not: atomic file writes (fs.ts).
import { mkdirSync, statSync } from "node:fs";
import path from "node:path";

const CAUSES: Record<string, string> = {
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "the file system is read-only",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  ENOENT: "the file system does not allow a directory here",
};

export class MakeDirError extends Error {
  override name = "MakeDirError";
  constructor(readonly dir: string, readonly code: string | undefined, cause: string) {
    super(`cannot create ${dir}: ${cause}${code ? ` (${code})` : ""}`);
  }
}

/** Makes `dir` (what: the option naming it, e.g. "train.out_dir") and its missing parents; returns the absolute path. */
export function makeDir(dir: string, what: string): string {
  const abs = path.resolve(dir);
  const missing: string[] = [];
  let p = abs;
  for (;;) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p, { throwIfNoEntry: false });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOTDIR") throw e;
      st = undefined; // a file further up: found when the walk reaches it
    }
    if (st) {
      if (!st.isDirectory()) throw new MakeDirError(abs, "ENOTDIR", `${what}: ${p === abs ? "it is" : `${p} is`} a file, not a directory`);
      break;
    }
    missing.push(p);
    const up = path.dirname(p);
    if (up === p) break;
    p = up;
  }
  for (const d of missing.reverse()) {
    try {
      mkdirSync(d);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST" && statSync(d, { throwIfNoEntry: false })?.isDirectory()) continue; // made meanwhile by another process
      throw new MakeDirError(abs, code, `${what}: ${d === abs ? "" : `its parent ${d}: `}${(code && CAUSES[code]) ?? (e as Error).message}`);
    }
  }
  return abs;
}
