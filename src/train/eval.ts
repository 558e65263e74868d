// The one evaluation loop: token-weighted mean cross-entropy of a model over batches (no
// balancing terms, eval-mode routing). Used by the trainer's held-out evaluation and `moe eval`.
// Not: a data loader (data/loader.ts gives the batches).
import type { MoeModel } from "../model/model.js";
import type { ExpertParallel } from "../parallel/expert-parallel.js";

export interface EvalResult {
  /** Mean CE (nats/token) over every non-ignored target. */
  loss: number;
  perplexity: number;
  batches: number;
  tokens: number;
}

/** `ep`: a model whose weights hold only this rank's experts runs its MoE layers through the EP dispatch (collective: every rank of the group evaluates the same batches). */
export function evaluateLoss(model: MoeModel, batches: Iterable<{ inputs: Int32Array; targets: Int32Array }>, ep?: ExpertParallel): EvalResult {
  let sum = 0, tokens = 0, n = 0;
  for (const b of batches) {
    const r = model.forward(b.inputs, b.targets, { train: false, ...(ep ? { ep } : {}) });
    sum += r.ce * r.tokens;
    tokens += r.tokens;
    n++;
  }
  if (tokens === 0) throw new Error("evaluate: no target tokens in the evaluation batches");
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), batches: n, tokens };
}
