#!/usr/bin/env node
// The `moe` command line. Each subcommand lives in its own module; this file only
// dispatches. Later issues add train, generate, eval, inspect, upcycle, logits, export.
import { runInfo } from "./info.js";

const USAGE = `usage: moe <command> [options]

commands:
  info [--backend native|ref] [--threads N] [--gemm auto|blas|builtin] [--json]
        print the compute engine: backend, threads, GEMM path, CPU features

run 'moe <command> --help' for a command's options`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "info":
      return runInfo(rest);
    case undefined:
    case "-h":
    case "--help":
    case "help":
      console.log(USAGE);
      return cmd === undefined ? 1 : 0;
    default:
      console.error(`moe: unknown command '${cmd}'\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(1);
  },
);
