// The MoE layer's configuration in one place: the static options (router, dispatch, balance,
// jitter, aux-free bias rate) and the per-step context (seed, step, token offset, α per
// layer, process group). model/ resolves HF configs onto `MoeConfig`; train/ and infer/ fill
// `MoeStepContext`.
//
// Not: the math (router.ts, balance.ts, layer.ts).
import type { RouterConfig } from "./router.js";

/** How tokens reach experts. */
export type DispatchConfig =
  | { kind: "dropless" }
  | {
      kind: "capacity";
      /** C = ⌈CF·K·N/E⌉ per expert. Default 1.25 [our default]. */
      capacityFactor: number;
      /** Which assignments survive past C: highest routing weight, or earliest (token, slot). */
      policy: "probs" | "position";
      /**
       * Pad every expert's group to exactly C rows (zero-weight rows), as fixed-shape GShard/Switch
       * implementations do. Same outputs and gradients; more compute. Default false.
       */
      pad?: boolean;
    };

/** Which load-balancing loss an MoE layer adds (coefficient per layer given in the step context). */
export type BalanceLoss = "skywork" | "switch" | "global" | "none";

/** Static balancing options (coefficients that change per step live in MoeStepContext). */
export interface BalanceConfig {
  /** Default "none" for a loaded model; training sets it from `balance.loss`. */
  loss: BalanceLoss;
  /** Router z-loss coefficient c_z. Default 0. */
  zCoef: number;
  /** Capacity factor used to report the virtual drop rate in dropless mode. Default 1.25. */
  virtualCapacityFactor: number;
  /** Aux-free bias step γ for the sigmoid_bias router (DeepSeek-V3: 1e-3). Default 1e-3. */
  biasRate: number;
}

export const DEFAULT_BALANCE: BalanceConfig = Object.freeze({ loss: "none", zCoef: 0, virtualCapacityFactor: 1.25, biasRate: 1e-3 });

export interface MoeConfig {
  numExperts: number; // E
  topK: number; // K
  expertIntermediateSize: number; // F
  /** moeLayers[l] is true when layer l is an MoE layer; else a dense SwiGLU FFN. */
  moeLayers: boolean[];
  /** Qwen2-MoE shared expert (sigmoid-gated); 0 = none. */
  sharedExpertIntermediateSize: number;
  router: RouterConfig;
  dispatch: DispatchConfig;
  /** Multiplies the MoE input by U(1−ε, 1+ε) in training, before router and experts (PhiMoE input_jitter_noise). */
  inputJitter: number;
  /** Balancing options; absent = DEFAULT_BALANCE. */
  balance?: BalanceConfig;
}
