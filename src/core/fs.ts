// Atomic file writes: a temp file next to the target, fsynced, renamed over it; on any error
// the temp file is removed and the target is untouched. Shared by every layer that writes files.
// Not: directory locking or crash recovery of several files (checkpoints build on this).
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from "node:fs";
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

/**
 * Writes a file atomically: `write` fills a temp file next to `file`, which is fsynced and
 * renamed over `file`. On any error the temp file is removed and `file` is untouched.
 */
export function atomicWrite(file: string, write: (fd: number) => void): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${Date.now()}`);
  const fd = openSync(tmp, "w");
  let ok = false;
  try {
    write(fd);
    fsyncSync(fd);
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
  renameSync(tmp, file);
}

