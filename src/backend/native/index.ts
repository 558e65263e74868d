// The `native` backend: the C++17 N-API engine (thread pool, OpenBLAS or built-in
// GEMM, fused kernels). f32 only; arguments are validated in TypeScript first.
import type { Backend, BackendInfo, Kernels } from "../spec.js";
import { withChecks } from "../checks/common.js";
import { checkKernels } from "../checks/index.js";
import { addonPath, loadAddon, type EngineHandle } from "./addon.js";
import { defaultCalibrationDir, GemmRouter } from "./gemm-calibrate.js";
import { nativeGemm } from "./gemm.js";
import { nativeQuant } from "./quant.js";
import { nativeQuantBlocks } from "./quant-blocks.js";
import { nativeConvert } from "./convert.js";
import { nativeOps } from "./ops.js";
import { nativeAttention } from "./attention.js";
import { nativeRoute } from "./route.js";
import { nativePagedAttention } from "./paged-attention.js";

export interface NativeOptions {
  /** Worker threads of this engine. Default: MOE_NUM_THREADS, else the number of cores. */
  threads?: number;
  /**
   * GEMM path. "auto" (default): with OpenBLAS linked, the faster of the built-in kernel and
   * OpenBLAS per shape class (small, thin, large, grouped) at this engine's thread count, by a
   * ~0.2-0.4 s measurement on the first GEMM call (see gemm-calibrate.ts), cached per CPU model
   * and build; without OpenBLAS, the built-in kernel. ISA flags alone mislead: the built-in
   * AVX-512 kernel is 1.9× OpenBLAS on Zen 5 but was measured below it at 2 threads on Zen 4.
   * "blas": OpenBLAS, an error if not linked. "builtin": our packed micro-kernel.
   */
  gemm?: "auto" | "blas" | "builtin";
  /**
   * Directory of the `auto` calibration cache (gemm-calibration-<build>.json). Default:
   * $XDG_CACHE_HOME/moe-ts, else ~/.cache/moe-ts. null: measure in every process, write nothing.
   */
  gemmCalibrationDir?: string | null;
}

export function defaultThreads(hardwareThreads: number): number {
  const env = process.env.MOE_NUM_THREADS;
  if (env === undefined || env === "") return hardwareThreads;
  const n = Number(env);
  if (!Number.isInteger(n) || n < 1) throw new Error(`MOE_NUM_THREADS must be a positive integer, got '${env}'`);
  return n;
}

export function createNativeBackend(opts: NativeOptions = {}): Backend {
  const addon = loadAddon();
  const threads = opts.threads ?? defaultThreads(addon.hardwareThreads!() as number);
  if (!Number.isInteger(threads) || threads < 1) throw new Error(`native backend: threads must be a positive integer, got ${threads}`);
  const mode = opts.gemm ?? "auto";
  if (mode !== "auto" && mode !== "blas" && mode !== "builtin") throw new Error(`native backend: gemm must be 'auto', 'blas' or 'builtin', got '${String(mode)}'`);
  const calDir = opts.gemmCalibrationDir === undefined ? defaultCalibrationDir() : opts.gemmCalibrationDir;
  if (calDir !== null && (typeof calDir !== "string" || calDir === "")) throw new Error(`native backend: gemmCalibrationDir must be a non-empty path or null, got ${JSON.stringify(calDir)}`);
  if (mode === "blas" && !addon.blasLinked) throw new Error("native backend: gemm 'blas' requested, but the engine was built without OpenBLAS (install libopenblas-dev and run `npm run build`)");
  const path = mode === "blas" ? "blas" : "builtin";
  const engine = addon.createEngine!(threads, path) as EngineHandle;
  const router = mode === "auto" && addon.blasLinked ? new GemmRouter(addon, engine, threads, addonPath(), calDir) : undefined;
  const raw: Kernels = {
    ...nativeGemm(addon, engine, router),
    ...nativeQuant(addon, engine),
    ...nativeQuantBlocks(addon, engine),
    ...nativeConvert(addon, engine),
    ...nativeOps(addon, engine),
    ...nativeAttention(addon, engine),
    ...nativeRoute(addon, engine),
    ...nativePagedAttention(addon, engine),
  };
  const kernels = withChecks(raw, checkKernels, true);
  const backend: Backend = {
    ...kernels,
    name: "native",
    info: (): BackendInfo => {
      const base = { backend: "native" as const, ...(addon.engineInfo!(engine) as Omit<BackendInfo, "backend">) };
      if (router === undefined) return base;
      const cal = router.result();
      const builtinName = addon.builtinGemmKernel!() as string;
      const name = (p: "blas" | "builtin") => (p === "blas" ? "openblas" : builtinName);
      return { ...base, gemm: name(cal.classes.large.pick), gemmAuto: { ...cal, kernels: { builtin: builtinName, blas: "openblas" } } };
    },
  };
  // Not enumerable: a wrapper made by spreading this backend ({ ...be, gemm: … }) must not
  // inherit a raw table that bypasses its own kernels, so it runs checked.
  Object.defineProperty(backend, "unchecked", { value: raw, enumerable: false });
  return backend;
}
