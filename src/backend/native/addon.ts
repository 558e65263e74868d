// Loads the compiled N-API engine (build/Release/moe_native.node) built by `npm install`.
// Not: a fallback. If the addon is missing, the error says how to build it.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The raw addon surface. Every kernel function takes the engine handle first. */
export type Addon = Record<string, (...args: any[]) => any> & { blasLinked: boolean };
export type EngineHandle = { readonly __engine: unique symbol };

export function packageRoot(): string {
  // dist/src/backend/native/addon.js → package root is four levels up; src/… when run from source.
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(dir, "package.json")) && existsSync(path.join(dir, "binding.gyp"))) return dir;
    dir = path.dirname(dir);
  }
  throw new Error("moe-ts: cannot locate the package root (binding.gyp) from " + fileURLToPath(import.meta.url));
}

/** Path of the compiled addon (also the build identity the GEMM calibration cache is keyed by). */
export function addonPath(): string {
  return path.join(packageRoot(), "build", "Release", "moe_native.node");
}

export function loadAddon(): Addon {
  const file = addonPath();
  if (!existsSync(file)) {
    throw new Error(`moe-ts: native engine not built (${file} is missing); run \`npm install\` or \`npm run build\``);
  }
  const require = createRequire(import.meta.url);
  return require(file) as Addon;
}
