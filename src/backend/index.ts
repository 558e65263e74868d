// Backend registry: the one place that names concrete backends.
import type { Backend } from "./spec.js";
import { createRefBackend } from "./ref/index.js";
import { createNativeBackend, type NativeOptions } from "./native/index.js";

export type BackendOptions = { name: "ref" } | ({ name: "native" } & NativeOptions);

export function createBackend(opts: BackendOptions): Backend {
  const name = opts.name;
  switch (name) {
    case "ref":
      return createRefBackend();
    case "native":
      return createNativeBackend(opts as NativeOptions);
    default:
      name satisfies never;
      throw new Error(`unknown backend '${String(name)}' (expected 'ref' or 'native')`);
  }
}

export * from "./spec.js";
export type { NativeOptions } from "./native/index.js";

/** The backend a command's `--backend native|ref [--threads N] [--gemm auto|blas|builtin]` flags ask for. */
export function backendFromFlags(flags: { backend?: string; threads?: number; gemm?: string }, who: string): Backend {
  const name = flags.backend ?? "native";
  if (name !== "native" && name !== "ref") throw new Error(`${who}: --backend must be 'native' or 'ref', got '${name}'`);
  if (flags.threads !== undefined && !(Number.isInteger(flags.threads) && flags.threads >= 1)) throw new Error(`${who}: --threads must be a positive integer, got ${flags.threads}`);
  const gemm = flags.gemm ?? "auto";
  if (gemm !== "auto" && gemm !== "blas" && gemm !== "builtin") throw new Error(`${who}: --gemm must be auto, blas or builtin, got '${gemm}'`);
  if (name === "ref") return createBackend({ name });
  return createBackend({ name, threads: flags.threads, gemm });
}
