// The parameters of one model, apart from every kind of state that uses them.
//
// `Weights` is one arena (llm.c `malloc_and_point`) laid out by model/params.ts, with named
// views built once. It is shared, never copied, by its consumers: the trainer's `Gradients`
// and optimizer moments, training workspaces of any (B, T) (model/forward.ts), generation
// workspaces (infer/). Two workspaces over one Weights are two models with the same
// parameters. `Gradients` has the same layout and views.
//
// Not: activations (workspaces), optimizer state (train/optim.ts), checkpoint IO
// (model/checkpoint.ts), or quantised storage (the inference engine owns those copies).
import type { FArr, FCtor } from "../nn/dims.js";
import type { AttentionWeights } from "../nn/attention.js";
import type { MoeWeights } from "../moe/layer.js";
import type { ModelConfig } from "./config.js";
import { buildLayout, view, type ExpertRange, type ModelNames, type ParamLayout } from "./params.js";
import { createRng } from "../core/rng.js";

export type ArenaDtype = "f32" | "f64";

/** Views of one layer's tensors in an arena (parameters or gradients). */
export interface LayerViews {
  ln1: FArr;
  ln1Bias?: FArr;
  ln2: FArr;
  ln2Bias?: FArr;
  attn: AttentionWeights;
  moe?: MoeWeights;
  gateUp?: FArr;
  down?: FArr;
}

/** Views of a whole arena under the model's names, computed once. */
export interface ArenaViews {
  embed: FArr;
  normF: FArr;
  normFBias?: FArr;
  /** The LM head (the embedding when tied). */
  head: FArr;
  headBias?: FArr;
  layers: LayerViews[];
}

export function arenaViews(arena: FArr, layout: ParamLayout, names: ModelNames): ArenaViews {
  const v = (name: string | undefined) => (name ? view(arena, layout, name) : undefined);
  return {
    embed: v(names.embed)!,
    normF: v(names.normF)!,
    normFBias: v(names.normFBias),
    head: v(names.lmHead ?? names.embed)!,
    headBias: v(names.lmHeadBias),
    layers: names.layers.map((n) => ({
      ln1: v(n.ln1)!,
      ln1Bias: v(n.ln1Bias),
      ln2: v(n.ln2)!,
      ln2Bias: v(n.ln2Bias),
      attn: {
        q: v(n.q)!,
        k: v(n.k)!,
        v: v(n.v)!,
        o: v(n.o)!,
        qBias: v(n.qBias),
        kBias: v(n.kBias),
        vBias: v(n.vBias),
        oBias: v(n.oBias),
        qNorm: v(n.qNorm),
        kNorm: v(n.kNorm),
      },
      moe: n.router
        ? {
            router: v(n.router)!,
            routerBias: v(n.routerBias),
            w13: v(n.w13)!,
            w2: v(n.w2)!,
            sharedGateUp: v(n.sharedGateUp),
            sharedDown: v(n.sharedDown),
            sharedGate: v(n.sharedGate),
          }
        : undefined,
      gateUp: v(n.gateUp),
      down: v(n.down),
    })),
  };
}

function arenaCtor(dtype: ArenaDtype): FCtor {
  return dtype === "f64" ? Float64Array : Float32Array;
}

/** One model's parameters: layout, arena and named views. */
export class Weights {
  readonly layout: ParamLayout;
  readonly names: ModelNames;
  readonly data: FArr;
  readonly views: ArenaViews;
  readonly Ctor: FCtor;

  /**
   * A zero-filled arena for cfg, or `data` (of exactly the layout's size) adopted without copying.
   * `experts`: store only those experts of every MoE layer (expert parallelism, sharded memory);
   * such weights run the MoE layers only through the EP dispatch (parallel/expert-parallel.ts).
   */
  constructor(readonly cfg: ModelConfig, readonly dtype: ArenaDtype = "f32", data?: FArr, readonly experts: ExpertRange | null = null) {
    const { layout, names } = buildLayout(cfg, experts ?? undefined);
    this.layout = layout;
    this.names = names;
    this.Ctor = arenaCtor(dtype);
    if (data) {
      if (!(data instanceof this.Ctor)) throw new Error(`Weights: data must be a ${this.Ctor.name} for dtype ${dtype}`);
      if (data.length !== layout.size) throw new Error(`Weights: data has ${data.length} values, the layout needs ${layout.size}`);
    }
    this.data = data ?? new this.Ctor(layout.size);
    this.views = arenaViews(this.data, layout, names);
  }

  /** A storage tensor by name (a view into the arena). */
  tensor(name: string): FArr {
    return view(this.data, this.layout, name);
  }

  /** normal(0, std) matrices, ones for norm weights, zeros for biases. Deterministic in seed. */
  init(seed: number, std: number): this {
    const rng = createRng(seed);
    for (const t of this.layout.tensors) {
      const a = this.data.subarray(t.offset, t.offset + t.size);
      if (t.init === "ones") a.fill(1);
      else if (t.init === "zeros") a.fill(0);
      else for (let i = 0; i < t.size; i++) a[i] = std * rng.normal();
    }
    return this;
  }

  /** Parameter count (storage elements). */
  get size(): number {
    return this.layout.size;
  }
}

/** Gradients of a Weights: the same layout and views, accumulated by backward. */
export class Gradients {
  readonly data: FArr;
  readonly views: ArenaViews;

  constructor(readonly weights: Weights) {
    this.data = new weights.Ctor(weights.layout.size);
    this.views = arenaViews(this.data, weights.layout, weights.names);
  }

  tensor(name: string): FArr {
    return view(this.data, this.weights.layout, name);
  }

  zero(): void {
    this.data.fill(0);
  }
}
