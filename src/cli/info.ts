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
  console.log(`  gemm           ${info.gemm}`);
  console.log(`  openblas       ${info.blasAvailable ? "linked" : "not linked (built-in GEMM only)"}`);
  console.log(`  cpu features   ${info.cpuFeatures.join(" ") || "-"}`);
  console.log(`  node           ${process.version} (${process.platform}-${process.arch})`);
  return 0;
}
