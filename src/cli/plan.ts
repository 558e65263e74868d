// `moe plan MODEL|CONFIG --cluster SPEC`: prints the fastest training layouts that fit, with the
// reasons, and why the other shapes were rejected. Everything it computes is src/plan/.
import { positionalProblem } from "./arg-problem.js";
import { CLUSTER_KEYS, PlanError, parseClusterSpec, readClusterSpec, worldSize, type ClusterSpec } from "../plan/cluster.js";
import { DEFAULT_COST, EXPERT_MODES, PRECISIONS, type CostOptions, type ExpertMode } from "../plan/cost.js";
import { loadModelSource } from "../plan/model-source.js";
import { planParameterCounts, validateRun, withSizes } from "../plan/plan-model.js";
import { formatBytes, plan, shapeName, type LayoutPlan, type PlanReport } from "../plan/search.js";
import { parseFlags } from "./args.js";
import { formatCount } from "./progress.js";

const USAGE = `usage: moe plan MODEL|CONFIG --cluster SPEC [options]

Chooses a training layout (dp × tp × pp, expert placement etp|ep|edp, pipeline partition and
per-stage recompute) from a cost model and a 1F1B pipeline simulation.

MODEL    skywork-moe | grin-moe (paper sizes), an engine preset (small-moe, …), a config.json,
         a model directory or a run directory (its config.yaml gives the batch defaults)
--cluster SPEC   YAML/JSON file with keys:
${Object.entries(CLUSTER_KEYS).map(([k, v]) => `                   ${k.padEnd(17)} ${v}`).join("\n")}
         or none, with the cluster given by the flags below
cluster flags (override the file): --nodes N --devices-per-node N --memory 80GB --flops 150e12 | --bench FILE
--seq-len T          tokens per sequence (default: run dir's, else 4096)
--micro-batch B      sequences per micro-batch (default: run dir's, else 1)
--global-batch G     sequences per optimizer step (default: run dir's, else 8 × devices × B)
--layers N --experts N   override the model's layer / expert counts (Skywork App. B.2 uses 24 layers)
--precision bf16-mixed|f32   bytes of weights, gradients, AdamW state, activations (default bf16-mixed)
--no-zero1           keep full AdamW state on every rank (default: ZeRO-1 sharding over DP)
--no-flash           attention stores its T×T probabilities
--expert-imbalance X busiest expert rank's tokens over the mean, ep/edp (default 1)
--devices N          plan for N devices (default all)      --max-tp N   (default devices per node)
--expert-modes etp,ep,edp    placements to consider (default all)
--dp N --tp N --pp N --ep N  pin degrees                  --partition 5,5,5,5,4   evaluate this split
--top N              layouts printed (default 5)           --rejected   list every rejected shape
--json               the whole report as JSON`;

function parseList(s: string, what: string): number[] {
  const xs = s.split(",").map((x) => Number(x.trim()));
  if (xs.some((x) => !Number.isInteger(x) || x < 1)) throw new PlanError(`--${what}: comma-separated positive integers, got '${s}'`);
  return xs;
}

function printReport(r: PlanReport, top: number, allRejected: boolean, flopsSource: string): void {
  const c = r.cluster;
  const counts = planParameterCounts(r.model);
  console.log(`${r.model.name}: ${formatCount(counts.total)} parameters (${formatCount(counts.active)} active), ${r.model.layers} layers, ${r.model.experts} experts top-${r.model.topK}`);
  console.log(`cluster: ${c.nodes} × ${c.devicesPerNode} devices (planning for ${r.devices}), ${formatBytes(c.memoryBytes)}, ${(c.flops / 1e12).toFixed(3)} TFLOP/s each (${flopsSource})`);
  console.log(`run: seq ${r.run.seqLen}, micro-batch ${r.run.microBatch}, global batch ${r.run.globalBatch} sequences`);
  if (r.layouts.length === 0) console.log("\nno layout fits");
  else {
    const rows: string[][] = [["#", "dp", "tp", "pp", "experts", "partition", "recompute", "step s", "tok/s/dev", "bubble", "MFU", "comm", "peak mem", "vs even"]];
    r.layouts.slice(0, top).forEach((l: LayoutPlan, i) => {
      const ex = l.layout.expert === "ep" ? `ep${l.layout.ep}` : l.layout.expert;
      const vs = "rejected" in l.uniform ? "even OOM" : `${l.uniform.step / l.step - 1 >= 0 ? "+" : ""}${(100 * (l.uniform.step / l.step - 1)).toFixed(1)}%`;
      rows.push([
        String(i + 1), String(l.layout.dp), String(l.layout.tp), String(l.layout.pp), ex, l.layout.partition.join(","), l.layout.recompute.join(","),
        l.step.toFixed(3), l.tokensPerDeviceSec.toFixed(1), `${(100 * l.bubble).toFixed(1)}%`, `${(100 * l.mfu).toFixed(1)}%`,
        `${(100 * l.commShare).toFixed(1)}%`, formatBytes(Math.max(...l.memory.map((m) => m.total))), vs,
      ]);
    });
    const w = rows[0]!.map((_, j) => Math.max(...rows.map((row) => row[j]!.length)));
    console.log("");
    for (const row of rows) console.log(row.map((x, j) => (j >= 5 && j <= 6 ? x.padEnd(w[j]!) : x.padStart(w[j]!))).join("  "));
    console.log("(MFU against the cluster's flops; vs even: gain over the even split with one recompute count)");
    console.log(`\nwhy #1 (${shapeName(r.layouts[0]!.layout)}):`);
    for (const s of r.layouts[0]!.reasons) console.log(`  - ${s}`);
  }
  if (r.rejected.length) {
    console.log(`\nrejected ${r.rejected.length} shape(s)${allRejected ? "" : " (first of each kind; --rejected lists all)"}:`);
    const seen = new Set<string>();
    for (const x of r.rejected) {
      const kind = x.reason.split(/[ :]/)[0]! + (x.reason.includes("memory") ? "" : x.reason.replace(/[0-9]+/g, "#"));
      if (!allRejected && seen.has(kind)) continue;
      seen.add(kind);
      console.log(`  ${x.shape.padEnd(22)} ${x.reason}`);
    }
  }
}

export async function runPlan(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags("moe plan", argv, {
    cluster: "string", nodes: "number", "devices-per-node": "number", memory: "string", flops: "string", bench: "string",
    "seq-len": "number", "micro-batch": "number", "global-batch": "number", layers: "number", experts: "number",
    precision: "string", "no-zero1": "boolean", "no-flash": "boolean", "expert-imbalance": "number",
    devices: "number", "max-tp": "number", "expert-modes": "string", dp: "number", tp: "number", pp: "number", ep: "number",
    partition: "string", top: "number", rejected: "boolean", json: "boolean", help: "boolean",
  });
  if (flags.help) {
    console.log(USAGE);
    return 0;
  }
  if (positional.length !== 1) {
    console.error(positionalProblem("moe plan", "MODEL or CONFIG", positional));
    console.error(USAGE);
    return 2;
  }
  const overrides: Record<string, unknown> = {};
  if (flags.nodes !== undefined) overrides.nodes = flags.nodes;
  if (flags["devices-per-node"] !== undefined) overrides.devices_per_node = flags["devices-per-node"];
  if (flags.memory !== undefined) overrides.memory = flags.memory;
  if (flags.flops !== undefined) overrides.flops = flags.flops;
  if (flags.bench !== undefined) overrides.bench = flags.bench;
  if (overrides.flops !== undefined && overrides.bench !== undefined) throw new PlanError("moe plan: give --flops or --bench, not both");
  let cluster: ClusterSpec;
  if (flags.cluster !== undefined) {
    // a flag's flops replaces the file's bench and the other way round
    cluster = readClusterSpec(flags.cluster, overrides, overrides.flops !== undefined ? ["bench", "bench_case", "bench_threads"] : overrides.bench !== undefined ? ["flops"] : []);
  } else if (Object.keys(overrides).length) cluster = parseClusterSpec(overrides, "cluster flags", process.cwd());
  else throw new PlanError("moe plan: --cluster SPEC (or --devices-per-node, --memory and --flops) is required");

  const src = loadModelSource(positional[0]!);
  const model = withSizes(src.model, { layers: flags.layers, experts: flags.experts });
  const world = flags.devices ?? worldSize(cluster);
  const microBatch = flags["micro-batch"] ?? src.run.microBatch ?? 1;
  const run = validateRun({
    seqLen: flags["seq-len"] ?? src.run.seqLen ?? 4096,
    microBatch,
    globalBatch: flags["global-batch"] ?? (flags["micro-batch"] === undefined ? src.run.globalBatch : undefined) ?? 8 * world * microBatch,
  });
  const precision = PRECISIONS[flags.precision ?? "bf16-mixed"];
  if (!precision) throw new PlanError(`--precision must be one of ${Object.keys(PRECISIONS).join(", ")}, got '${flags.precision}'`);
  const imbalance = flags["expert-imbalance"] ?? DEFAULT_COST.expertImbalance;
  if (!(imbalance >= 1)) throw new PlanError(`--expert-imbalance must be ≥ 1, got ${imbalance}`);
  const cost: CostOptions = { ...DEFAULT_COST, precision, zero1: !flags["no-zero1"], flashAttention: !flags["no-flash"], expertImbalance: imbalance };
  let expertModes: ExpertMode[] | undefined;
  if (flags["expert-modes"] !== undefined) {
    expertModes = flags["expert-modes"].split(",").map((s) => s.trim()) as ExpertMode[];
    for (const m of expertModes) if (!EXPERT_MODES.includes(m)) throw new PlanError(`--expert-modes: unknown '${m}' (known: ${EXPERT_MODES.join(", ")})`);
  }
  const fix: Record<string, number | string> = {};
  for (const k of ["dp", "tp", "pp", "ep"] as const) {
    const v = flags[k];
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1) throw new PlanError(`--${k} must be a positive integer, got ${v}`);
    fix[k] = v;
  }
  const top = flags.top ?? 5;
  if (!Number.isInteger(top) || top < 1) throw new PlanError(`--top must be a positive integer, got ${top}`);
  if (flags["max-tp"] !== undefined && !(Number.isInteger(flags["max-tp"]) && flags["max-tp"] >= 1)) throw new PlanError(`--max-tp must be a positive integer, got ${flags["max-tp"]}`);
  const report = plan(model, run, cluster, {
    cost, devices: flags.devices, maxTp: flags["max-tp"], expertModes, fix,
    partition: flags.partition === undefined ? undefined : parseList(flags.partition, "partition"),
  });
  if (flags.json) {
    console.log(JSON.stringify({ ...report, layouts: report.layouts.slice(0, top), modelSource: src.source }));
  } else printReport(report, top, flags.rejected ?? false, cluster.flopsSource);
  return report.layouts.length ? 0 : 1;
}
