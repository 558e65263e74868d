// `MoeModel`: one Weights, its Gradients and one training Workspace bundled for the common
// case (a single training loop or a test). Everything it does is a call of model/forward.ts;
// pass `weights` to build a second model over the same parameters without copying them.
//
// Not: where the math lives (model/forward.ts), nor the only way to use it: the trainer and the
// inference engine hold Weights, Gradients and workspaces separately.
import type { Backend } from "../backend/spec.js";
import type { FArr } from "../nn/dims.js";
import type { ModelConfig } from "./config.js";
import type { ModelNames, ParamLayout } from "./params.js";
import { Gradients, Weights } from "./weights.js";
import { Workspace, modelBackward, modelForward, type ModelShape, type StepOptions, type StepResult } from "./forward.js";

export { IGNORE_INDEX, type ModelShape, type StepOptions, type StepResult } from "./forward.js";

export class MoeModel {
  readonly weights: Weights;
  readonly workspace: Workspace;
  private grad_: Gradients | null = null;

  /** A model of cfg for (B, T); its own zero weights, or `weights` shared (never copied). */
  constructor(readonly cfg: ModelConfig, readonly be: Backend, readonly shape: ModelShape, weights?: Weights) {
    const dtype = shape.dtype ?? "f32";
    if (dtype === "f64" && be.name !== "ref") throw new Error("dtype f64 needs the ref backend");
    if (weights && weights.dtype !== dtype) throw new Error(`shared weights are ${weights.dtype}, the shape asks for ${dtype}`);
    this.weights = weights ?? new Weights(cfg, dtype);
    this.workspace = new Workspace(cfg, shape);
  }

  /** Allocated on first use, so a model used only for inference holds no gradient arena. */
  get gradients(): Gradients {
    this.grad_ ??= new Gradients(this.weights);
    return this.grad_;
  }

  get layout(): ParamLayout {
    return this.weights.layout;
  }
  get names(): ModelNames {
    return this.weights.names;
  }
  get params(): FArr {
    return this.weights.data;
  }
  get grads(): FArr {
    return this.gradients.data;
  }
  get N(): number {
    return this.workspace.N;
  }

  /** A parameter (storage) tensor by name. */
  param(name: string): FArr {
    return this.weights.tensor(name);
  }
  grad(name: string): FArr {
    return this.gradients.tensor(name);
  }

  /** The logits of the last forward, (B·T, V). */
  lastLogits(): FArr {
    return this.workspace.logits;
  }

  zeroGrad(): void {
    this.gradients.zero();
  }

  forward(ids: Int32Array, targets: Int32Array | null, opt: StepOptions): StepResult {
    return modelForward(this.be, this.weights, this.workspace, ids, targets, opt);
  }

  /** `done(part)`: see modelBackward (called as each part's gradients are complete). */
  backward(gradScale = 1, done?: (part: number) => void): void {
    modelBackward(this.be, this.weights, this.gradients, this.workspace, gradScale, done);
  }
}

/** Fills parameters: normal(0, std) matrices, ones for norm weights, zeros for biases. Deterministic in seed. */
export function initParams(model: MoeModel, seed: number, std: number): void {
  model.weights.init(seed, std);
}
