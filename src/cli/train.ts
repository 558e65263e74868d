// `moe train [-c config.yaml] [--resume] [section.key=value ...]`
import path from "node:path";
import { loadTrainConfig, schemaMarkdown, validate } from "../train/config.js";
import { applyAutoPlan } from "../train/auto-plan.js";
import type { ProcessGroup } from "../parallel/process-group.js";
import { Trainer, type StepReport } from "../train/trainer.js";
import { parameterCounts } from "../model/config.js";
import { Progress, formatCount, formatDuration } from "./progress.js";
import { initWorld } from "../parallel/world.js";
import { createMesh } from "../parallel/mesh.js";
import { createPipelineGroups } from "../parallel/pipeline.js";

const USAGE = `usage: moe train [-c config.yaml] [--resume | --overwrite] [section.key=value ...]

Trains an MoE language model. With no arguments: a small MoE (8 experts, top-2, dropless,
Skywork router and adaptive aux loss) on Moby Dick with a freshly trained BPE tokenizer.
Options are YAML sections or dotted overrides, e.g. model.num_experts=16 optim.lr=1e-3.
--resume continues the run in train.out_dir from its latest checkpoint; --overwrite replaces an
old run there (without either, a directory holding a run is refused).
Ctrl-C or SIGTERM finishes the step, saves a checkpoint and exits; a second signal exits at once.
--options lists every option with its default.`;

export async function runTrain(argv: string[]): Promise<number> {
  let yaml: string | null = null, resume = false, overwrite = false;
  const overrides: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-c" || a === "--config") {
      yaml = argv[++i] ?? null;
      if (!yaml) throw new Error("moe train: -c needs a YAML file");
    } else if (a === "--resume") resume = true;
    else if (a === "--overwrite") overwrite = true;
    else if (a === "-h" || a === "--help") {
      console.log(USAGE);
      return 0;
    } else if (a === "--options") {
      console.log(schemaMarkdown());
      return 0;
    } else if (a.startsWith("-")) throw new Error(`moe train: unknown option ${a}\n\n${USAGE}`);
    else overrides.push(a);
  }
  const c = loadTrainConfig(yaml, overrides);
  // data and pipeline parallelism: this process is one rank of `moe launch --nproc N` / mpirun
  let world: ProcessGroup | null = null;
  if (c.parallel.plan === "auto") {
    world = await initWorld();
    applyAutoPlan(c, world.size > 1 ? world : null, world.rank === 0 ? (s) => console.error(s) : () => {});
    validate(c);
  }
  const ranks = c.parallel.dp * c.parallel.pp * c.parallel.tp;
  const group = ranks > 1 ? world ?? (await initWorld()) : null;
  if (group && group.size !== ranks) throw new Error(`moe train: parallel.dp=${c.parallel.dp} × parallel.pp=${c.parallel.pp} × parallel.tp=${c.parallel.tp} = ${ranks} ranks but ${group.size} rank(s) were launched`);
  const pipeline = group && c.parallel.pp > 1 ? await createPipelineGroups(group, c.parallel.pp) : null;
  // expert parallelism: ep groups folded into the dp ranks (of each pipeline stage); tensor parallelism: tp groups inside each replica (collective: every rank splits)
  const mesh = group && (c.parallel.ep > 1 || c.parallel.tp > 1) ? await createMesh(group, { pp: c.parallel.pp, dp: c.parallel.dp, ep: c.parallel.ep, tp: c.parallel.tp }) : null;
  const lead = !group || group.rank === 0;
  const progress = new Progress(lead && c.log.progress, c.log.every);
  const log = lead ? (s: string) => progress.line(s) : () => {};
  // rank 0 prepares the run directory, tokenizer and shards first; the others then read them
  let t = lead ? Trainer.create(c, { resume, overwrite, log, group, mesh, pipeline }) : null;
  await group?.barrier();
  t ??= Trainer.create(c, { resume, overwrite, log, group, mesh, pipeline });
  const counts = parameterCounts(t.cfg);
  const N = c.train.batch_size * c.train.seq_len * c.train.grad_accum;
  log(`model: ${t.hf.model_type}, ${formatCount(counts.total)} parameters (${formatCount(counts.active)} active), ${t.cfg.numLayers} layers, ${t.cfg.moe.numExperts} experts top-${t.cfg.moe.topK}, router ${t.cfg.moe.router.kind}${t.cfg.moe.router.kind === "softmax_topk" && t.cfg.moe.router.logitsNormStd ? " + gating-logit norm" : ""}, ${t.cfg.moe.dispatch.kind}`);
  log(`engine: ${t.backend.info().backend}, ${t.backend.info().threads} threads, gemm ${t.backend.info().gemm}; ${N} tokens/step, ${c.train.steps} steps → ${path.relative(process.cwd(), t.outDir) || "."}`);
  const stored = t.storedParameters;
  if (stored.local !== stored.full) log(`memory: this rank stores ${stored.local} of the model's ${stored.full} parameters (and as many gradients${stored.moments === stored.local ? " and AdamW moments" : `; AdamW moments: ${stored.moments} entries each`})`);
  const baseline = t.unigramBaseline();
  log(`unigram baseline (val): ${baseline.toFixed(4)} nats/token; uniform: ${Math.log(t.tokenizer.vocabSize).toFixed(4)}`);
  const start = Date.now();
  const startStep = t.step;
  let interrupted = false;
  // first SIGINT/SIGTERM: finish the step, save, exit; a second one: exit at once (128 + signal number)
  let signalled = false;
  const onSig = (sig: NodeJS.Signals) => {
    if (signalled) {
      process.stderr.write(`\n${sig} again: exiting without a checkpoint\n`);
      process.exit(sig === "SIGTERM" ? 143 : 130);
    }
    signalled = interrupted = true;
    process.stderr.write(`\n${sig}: finishing step ${t.step + 1} and saving a checkpoint (again to exit at once)\n`);
  };
  process.on("SIGINT", onSig);
  process.on("SIGTERM", onSig);
  let last: StepReport | null = null;
  try {
    for (;;) {
      // every rank stops together (a signal or the time limit seen by any rank)
      const stop = new Float64Array([interrupted || t.step >= c.train.steps ? 1 : 0]);
      group?.allreduceSync(stop, "max");
      if (stop[0]) break;
      const r = t.trainStep();
      last = r;
      const layers = r.layers;
      const mean = (f: (l: StepReport["layers"][number]) => number) => (layers.length ? layers.reduce((s, l) => s + f(l), 0) / layers.length : 0);
      const elapsed = (Date.now() - start) / 1e3;
      progress.update({
        step: t.step, total: c.train.steps, start: startStep, elapsed,
        fields: [
          ["loss", r.skipped ? "skip" : r.ce.toFixed(4)], ["lr", r.lr.toExponential(2)], ["tok/s", formatCount(r.tokensPerSec)],
          ["aux", mean((l) => l.aux).toExponential(2)], ["z", mean((l) => l.z).toFixed(3)],
          ["drop", `${(mean((l) => (t.cfg.moe.dispatch.kind === "capacity" ? l.dropRate : l.virtualDropRate)) * 100).toFixed(1)}%${t.cfg.moe.dispatch.kind === "capacity" ? "" : "v"}`],
          ["load", mean((l) => l.maxOverMeanLoad).toFixed(2)], ["α", mean((l) => l.alpha).toExponential(1)],
        ],
      });
      if (r.skipped) log(`step ${r.step}: non-finite loss or gradient (loss ${r.loss}, grad norm ${r.gradNorm}); step skipped`);
      if (c.eval.every > 0 && t.step % c.eval.every === 0 && t.step < c.train.steps) {
        const ev = t.evaluate();
        const sim = t.expertSimilarity().filter((x) => !Number.isNaN(x));
        log(`step ${t.step}: val loss ${ev.loss.toFixed(4)} (ppl ${ev.perplexity.toFixed(1)}), expert similarity ${sim.map((x) => x.toFixed(3)).join(" ")}`);
      }
      if ((lead || t.collective) && c.sample.every > 0 && t.step % c.sample.every === 0 && t.step < c.train.steps) log(`sample: ${JSON.stringify(t.sample())}`);
      if (c.checkpoint.every > 0 && t.step % c.checkpoint.every === 0 && t.step < c.train.steps) t.save();
      if (c.train.max_minutes > 0 && elapsed / 60 >= c.train.max_minutes) {
        log(`train.max_minutes = ${c.train.max_minutes} reached at step ${t.step}`);
        interrupted = true;
      }
      // let signals and the event loop run between steps
      await new Promise((resolve) => setImmediate(resolve));
    }
  } finally {
    process.removeListener("SIGINT", onSig);
    process.removeListener("SIGTERM", onSig);
    progress.done();
  }
  if (interrupted && t.step < c.train.steps) log(`stopped at step ${t.step}; saving a checkpoint`);
  const dir = t.save();
  const ev = t.evaluate();
  const secs = (Date.now() - start) / 1e3;
  log(`done: ${t.step - startStep} steps in ${formatDuration(secs)}; final train loss ${last ? last.ce.toFixed(4) : "-"}`);
  log(`validation loss ${ev.loss.toFixed(4)} nats/token (ppl ${ev.perplexity.toFixed(1)}) vs unigram baseline ${baseline.toFixed(4)}`);
  if (lead || t.collective) log(`sample: ${JSON.stringify(t.sample())}`);
  log(`checkpoint: ${path.relative(process.cwd(), dir)}`);
  log(`generate with: npx moe generate ${path.relative(process.cwd(), t.outDir) || "."} --prompt "${c.sample.prompt}"`);
  return 0;
}
