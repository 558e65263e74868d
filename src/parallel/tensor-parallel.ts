// Tensor-parallel training (Megatron, no sequence parallelism), with Skywork-MoE's uneven splits:
// which part of every parameter a TP rank holds, one rank's weights sliced from the full model,
// the full model gathered back from the slices, and the gradient fix-ups the slices need.
//
// The layout is the inference engine's (infer/tp-shard.ts `planTensorParallel`: heads, GQA kv
// heads split or replicated, dense / expert / shared-expert intermediate columns, `total mod tp`
// ranks one more), plus a vocabulary split of the embedding, LM head and its bias (the same
// uneven rule). Every rank's model is an ordinary `Weights` of its slice's config (its heads,
// intermediate sizes and vocabulary rows), so forward/backward run unchanged apart from the
// all-reduces model/forward.ts adds where the Workspace has a TP context (parallel/tp-ops.ts).
//
// Every storage tensor is one of:
//   shard     this rank's rows/columns (q/k/v and their biases, o, gate/up, down, experts, vocab)
//   replica   the whole tensor on every rank, identical there (norms, router, shared gate)
//   headNorm  replicated q/k per-head RMSNorm weight: its gradient is a partial sum over the
//             rank's heads, summed over the group after the backward
//   kv        a kv head's rows; with fewer kv heads than ranks each is replicated on kvReplicas
//             ranks, whose partial gradients are summed after the backward
//   rank0     the row-parallel o_proj bias: held by TP rank 0 (zero elsewhere), added once
// EDP (Skywork App. B.1, `edp`): experts are not column-split; the TP group doubles as the
// expert group and rank r computes the whole experts [first, end) of an even split (`E mod tp`
// ranks one more). Tokens are on every TP rank already, so dispatch is the local gather of the
// rows routed to its experts and combine is the TP all-reduce after the MoE layer. Like EP
// (parallel/expert-parallel.ts ExpertShard) a rank stores only its experts (model/params.ts
// `ExpertRange`: `weights()` makes its arena); `gather` restores the one-model layout.
// EP × ETP (`ep`): the rank stores only the experts [first, first + E/ep) of its expert-parallel
// rank, each column-split as under ETP; tokens reach them through the EP all-to-all
// (parallel/expert-parallel.ts) among the data-parallel replicas of this TP rank (parallel/mesh.ts).
// A rank "owns" its shards, replicas only on TP rank 0, kv rows on the first of their replicas
// (EP × ETP: dense parameters only on EP rank 0, experts on every EP rank): the gathered model,
// the gradient norm and checkpoints count each parameter once.
//
// Not: the collectives inside the layers (model/forward.ts, moe/layer.ts), nor the trainer's
// use (train/trainer.ts), nor inference TP (infer/tp.ts).
import type { ModelConfig } from "../model/config.js";
import { buildLayout, type ExpertRange, type ParamLayout } from "../model/params.js";
import { Weights, type ArenaDtype } from "../model/weights.js";
import type { FArr } from "../nn/dims.js";
import { localConfig, planTensorParallel, TensorParallelError, type TpPlan, type TpRankPlan } from "../infer/tp-shard.js";
import { evenSplit, type Buf, type ProcessGroup, type ReduceOp } from "./process-group.js";
import type { TensorParallelContext } from "./tp-ops.js";
import { epExpertRange } from "./expert-parallel.js";

export { TensorParallelError } from "../infer/tp-shard.js";

type Kind = "shard" | "replica" | "headNorm" | "kv" | "rank0";

/** A contiguous run of one tensor: `len` elements at `full` in the full tensor, `local` in the slice. */
interface Segment {
  full: number;
  local: number;
  len: number;
}

interface TensorMap {
  name: string;
  kind: Kind;
  /** An expert tensor (EP × ETP: different on every EP rank). */
  expert: boolean;
  segments: Segment[];
}

export interface TrainingTpPlan {
  size: number;
  heads: TpPlan;
  /** Vocabulary rows per rank. */
  vocab: { offset: number; count: number }[];
  /** EDP: the whole experts [first, end) of each rank (null: ETP, every expert's columns split). */
  experts: [number, number][] | null;
}

/** The training layout of `cfg` over `size` TP ranks (EDP: experts whole, split over the ranks); refuses what the slices cannot express. */
export function planTrainingTp(cfg: ModelConfig, size: number, edp = false): TrainingTpPlan {
  if (cfg.qkNorm === "full") throw new TensorParallelError("tensor-parallel training: q/k norm over the whole projection (qk_norm 'full', OLMoE) is not split yet; use parallel.tp=1");
  const heads = planTensorParallel(cfg, size, "f32");
  if (cfg.vocabSize < size) throw new TensorParallelError(`tensor parallel: the vocabulary of ${cfg.vocabSize} is smaller than the ${size} ranks`);
  const { counts, offsets } = evenSplit(cfg.vocabSize, size);
  let experts: [number, number][] | null = null;
  if (edp) {
    const E = cfg.moe.numExperts;
    if (E < size) throw new TensorParallelError(`expert-data parallelism: ${size} ranks but only ${E} experts per layer (each rank needs at least one)`);
    const ex = evenSplit(E, size);
    experts = ex.counts.map((c, r) => [ex.offsets[r]!, ex.offsets[r]! + c]);
  }
  return { size, heads, vocab: counts.map((count, r) => ({ offset: offsets[r]!, count })), experts };
}

/** EP × ETP: the experts of EP rank `ep.rank` (not with EDP, whose experts are the TP group's). */
function epExperts(E: number, ep: { size: number; rank: number }, edp: boolean): ExpertRange {
  if (edp) throw new TensorParallelError("expert-data parallelism (parallel.edp) splits experts over the TP group already; it does not combine with parallel.ep");
  try {
    return epExpertRange(E, ep.size, ep.rank);
  } catch (e) {
    throw new TensorParallelError((e as Error).message);
  }
}

/** The model config one TP rank's weights describe (EDP: experts at full width; the rank stores only its own, `TensorParallelLayout.experts`). */
export function trainingLocalConfig(cfg: ModelConfig, plan: TrainingTpPlan, rank: number): ModelConfig {
  const c = { ...localConfig(cfg, plan.heads.ranks[rank]!), vocabSize: plan.vocab[rank]!.count };
  return plan.experts ? { ...c, moe: { ...c.moe, expertIntermediateSize: cfg.moe.expertIntermediateSize } } : c;
}

const rows = (first: number, count: number, width: number, local = 0): Segment => ({ full: first * width, local: local * width, len: count * width });

/** Columns [c0, c0+n) of every one of `R` rows of a (R, W) matrix. */
function cols(R: number, W: number, c0: number, n: number, rowOffset = 0): Segment[] {
  return Array.from({ length: R }, (_, r) => ({ full: (rowOffset + r) * W + c0, local: r * n, len: n }));
}

/** Rows of a [gate (F) | up (F)] pair for columns [o, o+n) of F, in a (·, C) matrix starting at row `base`. */
function gateUp(F: number, o: number, n: number, C: number, base = 0, localBase = 0): Segment[] {
  return [rows(base + o, n, C, localBase), rows(base + F + o, n, C, localBase + n)];
}

/** Last two name parts of the tensors every rank holds whole: norms, router (+ its bias buffer), shared-expert gate. */
const REPLICATED = new Set(["input_layernorm.weight", "input_layernorm.bias", "post_attention_layernorm.weight", "post_attention_layernorm.bias", "gate.weight", "gate.e_score_correction_bias", "shared_expert_gate.weight"]);

/** Every storage tensor of the rank's slice and where its values sit in the full model. */
function tensorMaps(cfg: ModelConfig, plan: TrainingTpPlan, rank: number, local: ParamLayout, held: ExpertRange | null): TensorMap[] {
  const p: TpRankPlan = plan.heads.ranks[rank]!, v = plan.vocab[rank]!;
  const C = cfg.hiddenSize, HS = cfg.headDim, E = cfg.moe.numExperts;
  const F = cfg.moe.expertIntermediateSize, S = cfg.moe.sharedExpertIntermediateSize, I = cfg.denseIntermediateSize;
  const out: TensorMap[] = [];
  // ETP: the column slices of the experts this rank stores (all E, or EP × ETP its range)
  const ex0 = held?.first ?? 0, exN = held?.count ?? E;
  for (const t of local.tensors) {
    const n = t.name, whole = [{ full: 0, local: 0, len: t.size }];
    const leaf = n.split(".").slice(-2).join(".");
    const add = (kind: Kind, segments: Segment[]) => out.push({ name: n, kind, expert: leaf === "experts.w13" || leaf === "experts.w2", segments });
    if (n === "model.embed_tokens.weight" || n === "lm_head.weight") add("shard", [rows(v.offset, v.count, C)]);
    else if (n === "lm_head.bias") add("shard", [rows(v.offset, v.count, 1)]);
    else if (leaf === "q_proj.weight") add("shard", [rows(p.qOffset, p.qHeads, HS * C)]);
    else if (leaf === "q_proj.bias") add("shard", [rows(p.qOffset, p.qHeads, HS)]);
    else if (leaf === "k_proj.weight" || leaf === "v_proj.weight") add("kv", [rows(p.kvOffset, p.kvHeads, HS * C)]);
    else if (leaf === "k_proj.bias" || leaf === "v_proj.bias") add("kv", [rows(p.kvOffset, p.kvHeads, HS)]);
    else if (leaf === "o_proj.weight") add("shard", cols(C, cfg.numHeads * HS, p.qOffset * HS, p.qHeads * HS));
    else if (leaf === "o_proj.bias") add("rank0", whole);
    else if (leaf === "q_norm.weight" || leaf === "k_norm.weight") add("headNorm", whole);
    else if (plan.experts && (leaf === "experts.w13" || leaf === "experts.w2")) {
      // EDP: the rank's whole experts, the only ones its arena stores
      const [e0, e1] = plan.experts[rank]!, per = leaf === "experts.w13" ? 2 * F * C : C * F;
      add("shard", [{ full: e0 * per, local: 0, len: (e1 - e0) * per }]);
    } else if (leaf === "experts.w13") add("shard", Array.from({ length: exN }, (_, j) => gateUp(F, p.expert.offset, p.expert.count, C, (ex0 + j) * 2 * F, j * 2 * p.expert.count)).flat());
    else if (leaf === "experts.w2") add("shard", Array.from({ length: exN }, (_, j) => cols(C, F, p.expert.offset, p.expert.count, (ex0 + j) * C).map((s) => ({ ...s, local: s.local + j * C * p.expert.count }))).flat());
    else if (leaf === "shared_expert.gate_up") add("shard", gateUp(S, p.shared.offset, p.shared.count, C));
    else if (leaf === "down_proj.weight" && n.includes("shared_expert")) add("shard", cols(C, S, p.shared.offset, p.shared.count));
    else if (leaf === "mlp.gate_up") add("shard", gateUp(I, p.dense.offset, p.dense.count, C));
    else if (leaf === "down_proj.weight") add("shard", cols(C, I, p.dense.offset, p.dense.count));
    else if (REPLICATED.has(leaf) || n === "model.norm.weight" || n === "model.norm.bias") add("replica", whole);
    else throw new TensorParallelError(`tensor parallel: no layout for parameter '${n}'`);
  }
  return out;
}

/**
 * One TP rank of a model: its slice's config and the maps between its arena and the full one.
 * `slice` and `gather` move whole arenas (weights, gradients, optimizer moments) between layouts.
 */
export class TensorParallelLayout {
  readonly plan: TrainingTpPlan;
  readonly localCfg: ModelConfig;
  readonly fullLayout: ParamLayout;
  readonly localLayout: ParamLayout;
  /** The experts this rank stores: EDP its whole experts, EP × ETP its EP rank's (column slices); null: ETP, every expert's column slice. */
  readonly experts: ExpertRange | null;
  private readonly maps: TensorMap[];
  private readonly owns: (m: TensorMap) => boolean;
  private owned: [number, number][] | null = null;
  /** Milliseconds spent in the all-reduces of the contexts made here (forward/backward's, waits for the other ranks included). */
  commMs = 0;

  /** `ep`: EP × ETP, this rank's place in its expert-parallel group (E/ep experts stored). */
  constructor(readonly fullCfg: ModelConfig, readonly rank: number, size: number, edp = false, readonly ep: { size: number; rank: number } | null = null) {
    if (!(Number.isInteger(rank) && rank >= 0 && rank < size)) throw new TensorParallelError(`tensor parallel: rank ${rank} is not in a group of ${size}`);
    this.plan = planTrainingTp(fullCfg, size, edp);
    this.localCfg = trainingLocalConfig(fullCfg, this.plan, rank);
    this.fullLayout = buildLayout(fullCfg).layout;
    const ex = this.plan.experts?.[rank];
    this.experts = ex ? { first: ex[0], count: ex[1] - ex[0] } : ep ? epExperts(fullCfg.moe.numExperts, ep, edp) : null;
    this.localLayout = buildLayout(this.localCfg, this.experts ?? undefined).layout;
    this.maps = tensorMaps(fullCfg, this.plan, rank, this.localLayout, ep ? this.experts : null);
    const kvFirst = rank % this.plan.heads.kvReplicas === 0;
    const tpOwns = (k: Kind) => k === "shard" || (k === "kv" ? kvFirst : rank === 0);
    this.owns = (m) => tpOwns(m.kind) && (m.expert || !ep || ep.rank === 0);
  }

  /** A zero arena of this rank's layout (EDP: only its experts stored), for `new MoeModel(localCfg, …, weights)`. */
  weights(dtype: ArenaDtype = "f32"): Weights {
    return new Weights(this.localCfg, dtype, undefined, this.experts);
  }

  /** The TP context a Workspace of this rank needs, over `group` (the mesh's tp group). */
  context(group: ProcessGroup): TensorParallelContext {
    if (group.size !== this.plan.size || group.rank !== this.rank) throw new TensorParallelError(`tensor parallel: the group is rank ${group.rank} of ${group.size}, the layout rank ${this.rank} of ${this.plan.size}`);
    const v = this.plan.vocab[this.rank]!;
    const experts = this.plan.experts?.[this.rank];
    const allreduce = (b: Buf, op?: ReduceOp) => {
      const t0 = performance.now();
      group.allreduceSync(b, op);
      this.commMs += performance.now() - t0;
    };
    return { rank: this.rank, size: this.plan.size, allreduce, vocab: { ...v, total: this.fullCfg.vocabSize }, ...(experts ? { experts } : {}) };
  }

  private each(fn: (m: TensorMap, s: Segment, fo: number, lo: number) => void): void {
    for (const m of this.maps) {
      const fo = this.fullLayout.byName.get(m.name)!.offset, lo = this.localLayout.byName.get(m.name)!.offset;
      for (const s of m.segments) fn(m, s, fo + s.full, lo + s.local);
    }
  }

  /** This rank's arena (local layout) from a full one; the o bias is zero away from rank 0. */
  slice(full: FArr, local: FArr): void {
    this.checkSizes(full, local);
    this.each((m, s, fo, lo) => {
      if (m.kind === "rank0" && this.rank !== 0) local.fill(0, lo, lo + s.len);
      else local.set(full.subarray(fo, fo + s.len), lo);
    });
  }

  /** Collective over the TP group (EP × ETP: then the EP group): the full arena assembled from every rank's owned values. */
  gather(local: FArr, group: ProcessGroup, epGroup?: ProcessGroup): Float32Array {
    const full = new Float32Array(this.fullLayout.size);
    this.checkSizes(full, local);
    this.each((m, s, fo, lo) => {
      if (this.owns(m)) full.set(local.subarray(lo, lo + s.len), fo);
    });
    group.allreduceSync(full, "sum");
    this.epGroup(epGroup)?.allreduceSync(full, "sum");
    return full;
  }

  /** EP × ETP: the EP group the collectives need (checked); else null. */
  private epGroup(g: ProcessGroup | undefined): ProcessGroup | null {
    if (!this.ep) return null;
    if (!g || g.size !== this.ep.size || g.rank !== this.ep.rank) throw new TensorParallelError(`tensor × expert parallel: needs the EP group (rank ${this.ep.rank} of ${this.ep.size}), got ${g ? `rank ${g.rank} of ${g.size}` : "none"}`);
    return g;
  }

  /**
   * Collective over the TP group, after the backward: the partial gradients of replicated
   * per-head norm weights are summed, and those of kv heads replicated on several ranks.
   */
  finishGradients(grads: FArr, group: ProcessGroup): void {
    const red = this.maps.filter((m) => m.kind === "headNorm" || (m.kind === "kv" && this.plan.heads.kvReplicas > 1));
    if (red.length === 0) return;
    // one buffer: each tensor at its full size, every rank adding its slice where it sits
    const offs: number[] = [];
    let size = 0;
    for (const m of red) {
      offs.push(size);
      size += this.fullLayout.byName.get(m.name)!.size;
    }
    const buf = new Float32Array(size);
    red.forEach((m, i) => {
      const lo = this.localLayout.byName.get(m.name)!.offset;
      for (const s of m.segments) buf.set(grads.subarray(lo + s.local, lo + s.local + s.len), offs[i]! + s.full);
    });
    group.allreduceSync(buf, "sum");
    red.forEach((m, i) => {
      const lo = this.localLayout.byName.get(m.name)!.offset;
      for (const s of m.segments) grads.set(buf.subarray(offs[i]! + s.full, offs[i]! + s.full + s.len), lo + s.local);
    });
  }

  /** The local arena ranges [lo, hi) this rank owns (each parameter of the model owned by one rank), adjacent ones merged; computed once. */
  private ownedRanges(): [number, number][] {
    if (this.owned) return this.owned;
    const r: [number, number][] = [];
    this.each((m, s, _fo, lo) => {
      if (!this.owns(m) || s.len === 0) return;
      const last = r[r.length - 1];
      if (last && last[1] === lo) last[1] = lo + s.len;
      else r.push([lo, lo + s.len]);
    });
    return (this.owned = r);
  }

  /**
   * Collective over the TP group (EP × ETP: then the EP group): Σ x² over the full model, each
   * parameter counted once. `sq`: Σ x² of one contiguous range (the backend's kernel).
   */
  sumSquares(local: FArr, group: ProcessGroup, epGroup: ProcessGroup | undefined, sq: (x: FArr) => number): number {
    let ss = 0;
    for (const [lo, hi] of this.ownedRanges()) ss += sq(local.subarray(lo, hi));
    const b = Float64Array.of(ss);
    group.allreduceSync(b, "sum");
    this.epGroup(epGroup)?.allreduceSync(b, "sum");
    return b[0]!;
  }

  private checkSizes(full: FArr, local: FArr): void {
    if (full.length !== this.fullLayout.size || local.length !== this.localLayout.size) throw new TensorParallelError(`tensor parallel: arenas of ${full.length} / ${local.length} values, the layouts need ${this.fullLayout.size} / ${this.localLayout.size}`);
  }
}
