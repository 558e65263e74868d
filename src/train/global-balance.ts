// GRIN's global load balancing over the whole optimizer step (balance.global_scope=step): the
// expert counts f_i of the global balancing loss are summed over every micro-batch of the step
// and every data-parallel rank, so the loss (and its gradient) is the same whatever the layout
// (dp=2 × 2 micro-batches per rank, dp=1 × 4, …), not only the same per micro-batch index.
//
// How: a counting pre-pass runs the forward of each of this rank's micro-batches (same seeds and
// step counters, so the routing is the one the step will use) with a recording group: the MoE
// layer hands its group exactly the arrays the global loss reduces (per MoE layer: the E expert
// counts, then the assignment total). The recordings are summed over the micro-batches, then
// all-reduced over the DP group in one collective. During the step each micro-batch's forward
// gets a replaying group that checks the layer's array is the one recorded for that micro-batch
// (a mismatch means non-deterministic routing: an error, never a silent wrong loss) and returns
// the step-global sums. Counts are integers held in f64: the sums are exact in any order.
//
// Cost: one extra forward per micro-batch (about a third of a step's compute) and nothing kept
// between the passes but the counts; the default scope (micro_batch: counts summed over the DP
// ranks for the same micro-batch index, no pre-pass) costs nothing.
// Not: the loss itself (moe/balance.ts globalLoadBalancingLoss), nor the layer (moe/layer.ts).
import type { ProcessGroup as LayerGroup } from "../parallel/group.js";

export class GlobalBalanceError extends Error {
  override name = "GlobalBalanceError";
}

/** The arrays one micro-batch's forward reduces, in call order. */
type Calls = Float64Array[];

export class StepCounts {
  private constructor(private readonly local: (Calls | null)[], private readonly global: Calls, private readonly rank: number, private readonly size: number) {}

  /**
   * The counting pass. `forward(m, group)` runs micro-batch m's training forward with `group`
   * as the MoE layers' group (it may throw: that micro-batch then records nothing, and its real
   * forward fails the same way). `shape`: the lengths of the arrays the layers reduce, in call
   * order (per MoE layer [E, 1]); `dp`: the data-parallel group, null on one rank.
   */
  static count(micro: number, shape: readonly number[], dp: LayerGroup | null, forward: (m: number, group: LayerGroup) => void): StepCounts {
    const rank = dp?.rank ?? 0, size = dp?.size ?? 1;
    const local: (Calls | null)[] = [];
    const total = shape.reduce((s, n) => s + n, 0);
    const flat = new Float64Array(total);
    for (let m = 0; m < micro; m++) {
      const calls: Calls = [];
      const rec: LayerGroup = { rank, size, allreduceSum: (x) => void calls.push(Float64Array.from(x)) };
      try {
        forward(m, rec);
      } catch {
        local.push(null);
        continue;
      }
      if (calls.length !== shape.length || calls.some((c, i) => c.length !== shape[i])) {
        throw new GlobalBalanceError(`balance.global_scope=step: the forward reduced arrays of lengths [${calls.map((c) => c.length)}], expected [${shape.join(", ")}] (one expert-count array and one total per MoE layer)`);
      }
      let o = 0;
      for (const c of calls) for (let i = 0; i < c.length; i++) flat[o++]! += c[i]!;
      local.push(calls);
    }
    dp?.allreduceSum(flat);
    const global: Calls = [];
    let o = 0;
    for (const n of shape) {
      global.push(flat.slice(o, o + n));
      o += n;
    }
    return new StepCounts(local, global, rank, size);
  }

  /** The group micro-batch m's real forward uses: each reduction returns the step-global sum. */
  group(m: number): LayerGroup {
    const rec = this.local[m];
    let c = 0;
    return {
      rank: this.rank,
      size: this.size,
      allreduceSum: (x) => {
        const want = rec?.[c], g = this.global[c];
        if (!want || !g || want.length !== x.length) throw new GlobalBalanceError(`balance.global_scope=step: micro-batch ${m} reduced more arrays than its counting pass (call ${c})`);
        for (let i = 0; i < x.length; i++) {
          if (want[i] !== x[i]) throw new GlobalBalanceError(`balance.global_scope=step: micro-batch ${m}'s routing differs between the counting pass and the step (call ${c}, element ${i}: ${want[i]} vs ${x[i]}); the forward is not deterministic`);
        }
        x.set(g);
        c++;
      },
    };
  }
}
