// The one evaluation loop: token-weighted mean cross-entropy of a model over batches (no
// balancing terms, eval-mode routing). Used by the trainer's held-out evaluation and `moe eval`.
// Not: a data loader (data/loader.ts gives the batches).
import type { MoeModel } from "../model/model.js";

export interface EvalResult {
  /** Mean CE (nats/token) over every non-ignored target. */
  loss: number;
  perplexity: number;
  batches: number;
  tokens: number;
}

export function evaluateLoss(model: MoeModel, batches: Iterable<{ inputs: Int32Array; targets: Int32Array }>): EvalResult {
  let sum = 0, tokens = 0, n = 0;
  for (const b of batches) {
    const r = model.forward(b.inputs, b.targets, { train: false });
    sum += r.ce * r.tokens;
    tokens += r.tokens;
    n++;
  }
  if (tokens === 0) throw new Error("evaluate: no target tokens in the evaluation batches");
  const loss = sum / tokens;
  return { loss, perplexity: Math.exp(loss), batches: n, tokens };
}
