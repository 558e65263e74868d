// `moe info`: prints the compute engine a run would use.
import { backendFromFlags } from "../backend/index.js";
import { parseFlags } from "./args.js";

export async function runInfo(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe info", argv, {
    backend: "string",
    threads: "number",
    gemm: "string",
    json: "boolean",
    help: "boolean",
  });
  if (flags.help) {
    console.log("usage: moe info [--backend native|ref] [--threads N] [--gemm auto|blas|builtin] [--json]");
    return 0;
  }
  if (positional.length) throw new Error(`moe info: unexpected argument '${positional[0]}'`);

  const be = backendFromFlags(flags, "moe info");
  const info = be.info();
  if (flags.json) {
    console.log(JSON.stringify(info));
    return 0;
  }
  console.log(`moe-ts engine`);
  console.log(`  backend        ${info.backend}`);
  console.log(`  threads        ${info.threads}`);
  console.log(`  gemm           ${info.gemm}${info.gemmAuto ? " (auto, by measurement)" : ""}`);
  if (info.gemmAuto) {
    const a = info.gemmAuto;
    const how = a.cached ? `cached, measured ${a.measuredAt}` : `measured now in ${a.ms.toFixed(0)} ms, CPU share ${a.cpuShare.toFixed(2)}, load ${a.load1.toFixed(1)}${a.cpuShare < 0.8 || a.load1 > 1 ? " (disturbed or busy machine: not cached; built-in kernel until a quiet calibration is cached)" : ""}`;
    console.log(`  gemm auto      ${a.threads} threads, ${how}; cpu ${a.cpu}; build ${a.build}`);
    for (const [cls, m] of Object.entries(a.classes)) {
      const pick = m.pick === "blas" ? a.kernels.blas : a.kernels.builtin;
      console.log(`    ${cls.padEnd(8)} ${m.problem.padEnd(24)} ${a.kernels.builtin} ${m.builtin.toFixed(0).padStart(4)} GFLOP/s, openblas ${m.blas.toFixed(0).padStart(4)} GFLOP/s -> ${pick}`);
    }
  }
  console.log(`  openblas       ${info.blasAvailable ? "linked" : "not linked (built-in GEMM only)"}`);
  console.log(`  cpu features   ${info.cpuFeatures.join(" ") || "-"}`);
  console.log(`  node           ${process.version} (${process.platform}-${process.arch})`);
  return 0;
}
