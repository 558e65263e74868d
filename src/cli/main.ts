#!/usr/bin/env node
// The `moe` command line. Each subcommand lives in its own module; this file only dispatches.
import { readFileSync } from "node:fs";
import { runInfo } from "./info.js";
import { runTrain } from "./train.js";
import { runEval, runInspect, runUpcycle } from "./model-commands.js";
import { runChat, runGenerate } from "./generate.js";
import { runServe } from "./serve.js";
import { runTokenizer } from "./tokenizer.js";
import { runLogits } from "./logits.js";
import { runExport } from "./export.js";
import { runPlan } from "./plan.js";
import { runLaunch } from "./launch.js";
import { runDashboard } from "./dashboard.js";

const USAGE = `usage: moe <command> [options]

commands:
  train [-c config.yaml] [--resume] [key=value ...]   train an MoE LM (defaults: small MoE on Moby Dick)
  generate MODEL --prompt TEXT [--max-tokens N]       stream text from a model, run directory or .gguf (KV-cached engine)
  chat MODEL                                         interactive chat with the model's chat template
  serve MODEL [--port 8000]                          OpenAI-compatible server (+ /metrics, /v1/moe/expert-load)
  eval MODEL [--data PATHS]                            held-out loss and perplexity
  inspect MODEL [--json]                               family, parameters (total/active), experts, dtypes
  upcycle --from DENSE --experts 8 --top-k 2 --out D   turn a dense checkpoint into an MoE
  tokenizer train --data PATHS [--vocab-size N]        train a byte-level BPE tokenizer.json
  logits MODEL --ids 1,2,3 [--out FILE]                forward pass; logits as safetensors
  export MODEL --format gguf [--dtype f32|f16|q8_0]    GGUF for llama.cpp
  info [--backend native|ref] [--threads N] [--json]   the compute engine
  plan MODEL --cluster SPEC [--json] [--top N]         choose dp/tp/pp/ep/edp, pipeline split and recompute
  launch --nproc N [--backend threads|mpi] -- CMD ...  run CMD on N ranks (data/expert parallel)
  dashboard RUN_DIR [--port 8001] [--host 127.0.0.1]  live routing dashboard of a training run (metrics.jsonl)

run 'moe <command> --help' for a command's options; 'moe --version' prints the version`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case "info":
      return runInfo(rest);
    case "train":
      return runTrain(rest);
    case "generate":
      return runGenerate(rest);
    case "chat":
      return runChat(rest);
    case "serve":
      return runServe(rest);
    case "eval":
      return runEval(rest);
    case "inspect":
      return runInspect(rest);
    case "upcycle":
      return runUpcycle(rest);
    case "tokenizer":
      return runTokenizer(rest);
    case "logits":
      return runLogits(rest);
    case "export":
      return runExport(rest);
    case "plan":
      return runPlan(rest);
    case "launch":
      return runLaunch(rest);
    case "dashboard":
      return runDashboard(rest);
    case "-V":
    case "--version":
    case "version": {
      // the installed package's version (package.json two levels above dist/src/cli)
      const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
      console.log(`moe-ts ${pkg.version} (node ${process.version}, ${process.platform}-${process.arch})`);
      return 0;
    }
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
