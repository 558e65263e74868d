// The MPI program of test/tp-mpi.test.ts. Every rank of `mpirun -n N node tp-rank-program.js MODE`
// builds the same random-weights engines (test/tp-util.ts); rank 0 splits each over the world with
// TensorParallel.start({ group }) and decodes greedily through runStep, printing
// `RESULT {ids, logits}` per case; the other ranks run runTpWorkerRank (the step loop the worker
// threads run). MODE "cases": the TP_CASES in turn. MODE "throw" / "kill": rank 1's backend
// throws / the process SIGKILLs itself at its FAULT_AT-th kernel call, in the middle of a step.
// Imported outside an MPI rank it only exports the cases.
import type { ModelConfig } from "../src/model/config.js";
import { engineWeights, type Activations, type EngineDtype, type EngineWeights } from "../src/infer/engine-weights.js";
import { runTpWorkerRank, TensorParallel } from "../src/infer/tp.js";
import { detectBackend, initWorld } from "../src/parallel/world.js";
import { be, faulty, GQA10, greedyDecode, Q8, randomWeights } from "./tp-util.js";

export interface TpCase { name: string; cfg: ModelConfig; dtype: EngineDtype; activations: Activations }
/** GQA 10/5 over 2 ranks: kv heads [3, 2], q heads [6, 4]; q8_0 with q8 activations: 3 heads of 32 → [2, 1]. */
export const TP_CASES: TpCase[] = [
  { name: "GQA 10/5 f32", cfg: GQA10, dtype: "f32", activations: "f32" },
  { name: "3 heads q8_0, q8 activations", cfg: Q8, dtype: "q8_0", activations: "q8" },
];
export const PROMPT = [3, 17, 5, 9, 30, 2, 11, 8, 21];
export const TOKENS = 8;
export const FAULT_AT = 60;

export function caseWeights(c: TpCase): EngineWeights {
  return engineWeights(randomWeights(c.cfg, 7), { dtype: c.dtype });
}

if (detectBackend() === "mpi") {
  const mode = process.argv[2] ?? "cases";
  const world = await initWorld();
  const cases = mode === "cases" ? TP_CASES : [TP_CASES[0]!];
  const fault = mode === "throw" ? () => { throw new Error(`injected failure on rank ${world.rank}`); } : () => void process.kill(process.pid, "SIGKILL");
  const k = mode !== "cases" && world.rank === 1 ? faulty(be, FAULT_AT, fault) : be;
  for (const c of cases) {
    if (world.rank > 0) {
      await runTpWorkerRank(() => caseWeights(c), world, k);
      continue;
    }
    const tp = await TensorParallel.start(caseWeights(c), { size: world.size, group: world });
    const r = greedyDecode(tp.weights, PROMPT, TOKENS, { activations: c.activations, backend: k });
    await tp.close();
    console.log(`RESULT ${JSON.stringify({ name: c.name, ids: r.ids, logits: r.logits.map((l) => Array.from(l)) })}`);
  }
}
