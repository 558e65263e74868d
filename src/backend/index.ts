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
