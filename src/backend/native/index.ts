// The `native` backend: the C++17 N-API engine (thread pool, OpenBLAS or built-in
// GEMM, fused kernels). f32 only; arguments are validated in TypeScript first.
import type { Backend, BackendInfo } from "../spec.js";
import { withChecks } from "../checks/common.js";
import { checkKernels } from "../checks/index.js";
import { loadAddon, type EngineHandle } from "./addon.js";
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
   * GEMM path. "auto" (default): the built-in kernel on CPUs with AVX-512 (measured 1.4–1.9× OpenBLAS
   * 0.3.21 here, which runs AVX2 kernels, and it never leaves OpenBLAS worker threads spinning
   * against our pool); elsewhere OpenBLAS when linked, else the built-in kernel.
   * "blas": OpenBLAS, an error if not linked. "builtin": our packed micro-kernel.
   */
  gemm?: "auto" | "blas" | "builtin";
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
  if (mode === "blas" && !addon.blasLinked) throw new Error("native backend: gemm 'blas' requested, but the engine was built without OpenBLAS (install libopenblas-dev and run `npm run build`)");
  const builtinKernel = addon.builtinGemmKernel!() as string;
  const path = mode === "auto" ? (builtinKernel === "builtin-avx512" || !addon.blasLinked ? "builtin" : "blas") : mode;
  const engine = addon.createEngine!(threads, path) as EngineHandle;
  const kernels = withChecks(
    {
      ...nativeGemm(addon, engine),
      ...nativeQuant(addon, engine),
      ...nativeQuantBlocks(addon, engine),
      ...nativeConvert(addon, engine),
      ...nativeOps(addon, engine),
      ...nativeAttention(addon, engine),
      ...nativeRoute(addon, engine),
      ...nativePagedAttention(addon, engine),
    },
    checkKernels,
    true,
  );
  return {
    ...kernels,
    name: "native",
    info: (): BackendInfo => ({ backend: "native", ...(addon.engineInfo!(engine) as Omit<BackendInfo, "backend">) }),
  };
}
