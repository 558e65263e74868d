// Atomic file writes: a temp file next to the target, fsynced, renamed over it; on any error
// the temp file is removed and the target is untouched. Shared by every layer that writes files.
// Not: directory locking or crash recovery of several files (checkpoints build on this).
import { closeSync, fsyncSync, openSync, renameSync, statSync, unlinkSync, writeSync } from "node:fs";
import path from "node:path";

/** Writes every byte (writeSync may write fewer than asked). */
export function writeAll(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done);
}

/** Writes a whole file atomically: text (UTF-8) or bytes. */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : data;
  atomicWrite(file, (fd) => writeAll(fd, bytes));
}

/** What an errno means for a file being written (the messages name the path and the cause). */
const WRITE_CAUSES: Record<string, string> = {
  EISDIR: "it is a directory; name a file",
  ENOSPC: "no space left on the device",
  EDQUOT: "disk quota exceeded",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "the file system is read-only",
  ENOENT: "its folder does not exist",
  ENOTDIR: "a part of the path is not a directory",
};

export class WriteError extends Error {
  override name = "WriteError";
  constructor(readonly file: string, readonly code: string | undefined, cause: string) {
    super(`cannot write ${file}: ${cause}${code ? ` (${code})` : ""}`);
  }
}

/** Rethrows a file-system error as a WriteError naming `file` and the cause. */
function explain(file: string, e: unknown): never {
  if (e instanceof WriteError) throw e;
  const code = (e as NodeJS.ErrnoException).code;
  throw new WriteError(file, code, (code && WRITE_CAUSES[code]) ?? (e as Error).message);
}

/**
 * Checks, before any work, that `file` can be an output file: not an existing directory, its
 * folder exists. Throws a WriteError naming the path (`what`: the option, e.g. "--out").
 */
export function checkOutputFile(file: string, what = "output"): void {
  const st = statSync(file, { throwIfNoEntry: false });
  if (st?.isDirectory()) throw new WriteError(file, "EISDIR", `${what} is a directory; name a file inside it`);
  if (st && !st.isFile()) throw new WriteError(file, undefined, `${what} is not a regular file (a device, FIFO or socket)`);
  const dir = statSync(path.dirname(path.resolve(file)), { throwIfNoEntry: false });
  if (!dir) throw new WriteError(file, "ENOENT", `${what}'s folder ${path.dirname(path.resolve(file))} does not exist`);
  if (!dir.isDirectory()) throw new WriteError(file, "ENOTDIR", `${path.dirname(path.resolve(file))} is not a directory`);
}

/**
 * Writes a file atomically: `write` fills a temp file next to `file`, which is fsynced and
 * renamed over `file`. On any error the temp file is removed and `file` is untouched.
 */
export function atomicWrite(file: string, write: (fd: number) => void): void {
  // refuse a directory before creating anything next to it
  const st = statSync(file, { throwIfNoEntry: false });
  if (st?.isDirectory()) throw new WriteError(file, "EISDIR", WRITE_CAUSES.EISDIR!);
  // renaming over a device, FIFO or socket would replace it: refuse
  if (st && !st.isFile()) throw new WriteError(file, undefined, "it is not a regular file (a device, FIFO or socket)");
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${Date.now()}`);
  let fd: number;
  try {
    fd = openSync(tmp, "w");
  } catch (e) {
    explain(file, e);
  }
  let ok = false;
  try {
    try {
      write(fd);
      fsyncSync(fd);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code && code in WRITE_CAUSES) explain(file, e);
      throw e;
    }
    ok = true;
  } finally {
    closeSync(fd);
    if (!ok) {
      try {
        unlinkSync(tmp);
      } catch {
        /* already gone */
      }
    }
  }
  try {
    renameSync(tmp, file);
  } catch (e) {
    try {
      unlinkSync(tmp);
    } catch {
      /* already gone */
    }
    explain(file, e);
  }
}
