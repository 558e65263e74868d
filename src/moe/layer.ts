// The MoE layer as stages: route → dispatch → experts → combine, with an explicit backward.
//
// Forward, numbered:
//  1. input jitter (training, PhiMoE input_jitter_noise): xj = x ⊙ U(1−ε, 1+ε), else xj = x
//  2. router logits z = xj·Wgᵀ (N,E) in the arena dtype; router → topExperts, weights, probs
//  3. keep mask: dropless keeps all (and measures the virtual drop rate capacity C would cause);
//     capacity mode drops assignments past C by policy
//  4. dispatch: stable sort of kept assignments by expert (dropped → overflow bin E),
//     tokensPerExpert = histogram, gather token rows → xs (M,C)
//  5. experts: one grouped GEMM for [gate|up] of every expert, SwiGLU, one grouped GEMM for down
//  6. combine: y = Σ weight · expert output, scattered back to tokens (+ sigmoid-gated shared expert)
//  7. balancing losses (aux / global LB / z-loss): values returned, their gradients saved for backward
// Backward runs the stages in reverse; gather and scatter are each other's backward, the router
// gets gradient only through the selected weights (and the balancing losses' probs/logits terms).
//
// Tensor parallelism (a TP context in the options): expert outputs are partial sums over the TP
// ranks (ETP column slices, or EDP's whole experts of one rank: only its experts' rows run
// here); the backward all-reduces the gate gradients before the router and adds the router's
// replicated input gradient on one rank.
// Not: parallel (EP dispatch lives in parallel/), and not the router math (see router.ts).
import type { Backend } from "../backend/spec.js";
import type { FArr, FCtor } from "../nn/dims.js";
import { linearBackward, linearForward } from "../nn/linear.js";
import { ffnBackward, ffnForward, type FfnSaved } from "../nn/ffn.js";
import type { BalanceLoss, MoeConfig } from "./config.js";
import { routerBackward, routerEntropy, routerForward, type RouteResult, type RouterNoise } from "./router.js";
import { capacityKeep, expertCapacity } from "./capacity.js";
import { MoeError } from "./dims.js";
import { globalLoadBalancingLoss, loadStats, routerZLoss, skyworkAuxLoss, switchAuxLoss } from "./balance.js";
import type { ProcessGroup } from "../parallel/group.js";
import type { ExpertParallel } from "../parallel/expert-parallel.js";
import type { TensorParallelContext } from "../parallel/tp-ops.js";

export type { BalanceLoss } from "./config.js";

export interface MoeForwardOptions {
  train: boolean;
  /** Router randomness (SparseMixer training); required when the router needs it. */
  noise?: RouterNoise;
  /** Input-jitter multipliers (N·C) drawn by the caller; required when train and inputJitter > 0. */
  jitter?: Float64Array;
  /** Aux-free selection bias (sigmoid_bias router). */
  bias?: FArr;
  balance: BalanceLoss;
  /** Coefficient α of the balancing loss for this layer (0 = no gradient). */
  auxCoef: number;
  /** Router z-loss coefficient c_z (0 = none). */
  zCoef: number;
  /** Counts reduction for the global LB loss (identity on one rank). */
  group: ProcessGroup;
  /** Capacity factor used to report the virtual drop rate in dropless mode. */
  virtualCapacityFactor: number;
  /** Expert parallelism: this rank computes only its experts; rows travel by all-to-all-v. */
  ep?: ExpertParallel;
  /** Tensor parallelism: ETP (every expert's intermediate columns split over the TP group) or EDP
   * (`tp.experts`: whole experts per rank); either way expert outputs are partial sums over the
   * group and the caller all-reduces the layer output. */
  tp?: TensorParallelContext;
}

/** Per-step statistics of one MoE layer (returned, never accumulated globally). */
export interface MoeLayerStats {
  tokensPerExpert: Int32Array; // (E) assignments routed to each expert, before dropping
  keptPerExpert: Int32Array; // (E) after dropping
  dropRate: number; // real drop rate (capacity mode), 0 when dropless
  virtualDropRate: number; // drop rate capacity C would have caused (dropless mode), = dropRate in capacity mode
  aux: number; // balancing loss value (before its coefficient)
  z: number; // z-loss value (before its coefficient)
  auxCoef: number;
  entropy: number; // mean router entropy
  maxOverMeanLoad: number;
}

/** Buffers of one MoE layer, sized once for N tokens. */
export class MoeLayerState {
  readonly logits: FArr; // (N,E)
  readonly xj: FArr; // (N,C) jittered input (only used with jitter)
  readonly keys: Int32Array; // (N·K)
  readonly perm: Int32Array; // (N·K)
  readonly counts: Int32Array; // (E+1)
  readonly sizes: Int32Array; // (E)
  readonly tokenOf: Int32Array; // (M) token of dispatched row i
  readonly rowAssign: Int32Array; // (M) assignment n·K+k of row i, −1 for a padding row
  readonly rowW: FArr; // (N·K) forward combine weight of row i
  readonly rowGW: FArr; // (N·K) weight the combine backward uses for row i
  readonly xs: FArr; // (N·K, C)
  readonly h: FArr; // (N·K, 2F)
  readonly a: FArr; // (N·K, F)
  readonly yo: FArr; // (N·K, C)
  readonly dProbs: FArr; // (N,E) gradient of the balancing loss w.r.t. probs (coef included)
  readonly dLogitsBal: FArr; // (N,E) gradient of the z-loss w.r.t. logits (coef included)
  readonly shared?: { gate: FArr; s: FArr; ys: FArr; ffn: FfnSaved }; // gate logits (N), sigmoid (N), ys (N,C)
  M = 0;
  /** Padding rows in the last dispatch (capacity mode with pad). */
  padRows = 0;
  route: RouteResult | null = null;
  jitter: Float64Array | null = null;
  hasBalanceGrad = false;
  /** The expert-parallel context of the last forward (null: all experts computed here). */
  ep: ExpertParallel | null = null;
  /** The tensor-parallel context of the last forward (null: whole experts here). */
  tp: TensorParallelContext | null = null;

  constructor(readonly Ctor: FCtor, readonly N: number, readonly C: number, readonly cfg: MoeConfig) {
    const E = cfg.numExperts, K = cfg.topK, F = cfg.expertIntermediateSize, NK = maxDispatchRows(N, cfg);
    this.logits = new Ctor(N * E);
    this.xj = new Ctor(cfg.inputJitter > 0 ? N * C : 0);
    this.keys = new Int32Array(N * K);
    this.perm = new Int32Array(N * K);
    this.counts = new Int32Array(E + 1);
    this.sizes = new Int32Array(E);
    this.tokenOf = new Int32Array(NK);
    this.rowAssign = new Int32Array(NK);
    this.rowW = new Ctor(NK);
    this.rowGW = new Ctor(NK);
    this.xs = new Ctor(NK * C);
    this.h = new Ctor(NK * 2 * F);
    this.a = new Ctor(NK * F);
    this.yo = new Ctor(NK * C);
    this.dProbs = new Ctor(N * E);
    this.dLogitsBal = new Ctor(N * E);
    const S = cfg.sharedExpertIntermediateSize;
    if (S > 0) this.shared = { gate: new Ctor(N), s: new Ctor(N), ys: new Ctor(N * C), ffn: { gu: new Ctor(N * 2 * S), a: new Ctor(N * S) } };
  }
}

/** Scratch shared by all MoE layers' backward passes (sized for the largest). */
export class MoeScratch {
  readonly dyo: FArr;
  readonly dRowW: FArr;
  readonly da: FArr;
  readonly dh: FArr;
  readonly dxs: FArr;
  readonly dWeights: FArr;
  readonly dLogits: FArr;
  readonly dProbs: FArr;
  readonly dxj: FArr;
  readonly dShared?: { ys: FArr; da: FArr; dgu: FArr; gate: FArr };

  constructor(Ctor: FCtor, N: number, C: number, cfg: MoeConfig) {
    const E = cfg.numExperts, K = cfg.topK, F = cfg.expertIntermediateSize, NK = maxDispatchRows(N, cfg);
    this.dyo = new Ctor(NK * C);
    this.dRowW = new Ctor(NK);
    this.da = new Ctor(NK * F);
    this.dh = new Ctor(NK * 2 * F);
    this.dxs = new Ctor(NK * C);
    this.dWeights = new Ctor(N * K);
    this.dLogits = new Ctor(N * E);
    this.dProbs = new Ctor(N * E);
    this.dxj = new Ctor(N * C);
    const S = cfg.sharedExpertIntermediateSize;
    if (S > 0) this.dShared = { ys: new Ctor(N * C), da: new Ctor(N * S), dgu: new Ctor(N * 2 * S), gate: new Ctor(N) };
  }
}

export interface MoeWeights {
  router: FArr; // (E, C)
  w13: FArr; // (E, 2F, C)
  w2: FArr; // (E, C, F)
  sharedGateUp?: FArr; // (2S, C)
  sharedDown?: FArr; // (C, S)
  sharedGate?: FArr; // (1, C)
  /** Aux-free selection bias (E), a non-trainable buffer (sigmoid_bias router). */
  routerBias?: FArr;
}

/** Rows after dispatch: N·K, or E·C when capacity groups are padded to C. */
function maxDispatchRows(N: number, cfg: MoeConfig): number {
  const d = cfg.dispatch;
  const padded = d.kind === "capacity" && d.pad ? cfg.numExperts * expertCapacity(N, cfg.topK, cfg.numExperts, d.capacityFactor) : 0;
  return Math.max(N * cfg.topK, padded);
}

/**
 * The experts this rank computes (all of them, or under EDP its range of the TP context): their
 * weights (EDP: `w` stores only those experts, or all E), their groups' sizes, and their rows
 * [r0, r0+R) of the expert-major dispatch.
 */
function localExperts(st: MoeLayerState, F: number, w: Pick<MoeWeights, "w13" | "w2">) {
  const C = st.C, E = st.cfg.numExperts, [e0, e1] = st.tp?.experts ?? [0, E];
  const held = w.w13.length / (2 * F * C), base = held === E ? 0 : e0; // first expert stored
  if (held !== E && held !== e1 - e0) throw new MoeError(`moe layer: the weights hold ${held} of the ${E} experts and this rank computes [${e0}, ${e1}) (an expert-parallel shard?): run the layer with its ExpertParallel context`);
  let r0 = 0, R = 0;
  for (let e = 0; e < e1; e++) {
    if (e < e0) r0 += st.sizes[e]!;
    else R += st.sizes[e]!;
  }
  return {
    R, sizes: st.sizes.subarray(e0, e1),
    w13: w.w13.subarray((e0 - base) * 2 * F * C, (e1 - base) * 2 * F * C), w2: w.w2.subarray((e0 - base) * C * F, (e1 - base) * C * F),
    rows: (a: FArr, width: number) => a.subarray(r0 * width, (r0 + R) * width),
  };
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** y (N,C) overwritten with the MoE output for input x (N,C). Returns the step statistics. */
export function moeForward(be: Backend, st: MoeLayerState, w: MoeWeights, y: FArr, x: FArr, opt: MoeForwardOptions): MoeLayerStats {
  const { N, C, cfg } = st;
  const E = cfg.numExperts, K = cfg.topK, F = cfg.expertIntermediateSize;

  // 1. input jitter
  let xj = x;
  st.jitter = null;
  if (opt.train && cfg.inputJitter > 0) {
    if (!opt.jitter || opt.jitter.length !== N * C) throw new Error(`moeForward: input jitter needs ${N * C} multipliers`);
    for (let i = 0; i < N * C; i++) st.xj[i] = x[i]! * opt.jitter[i]!;
    xj = st.xj;
    st.jitter = opt.jitter;
  }

  // 2. route
  linearForward(be, st.logits, xj, w.router, undefined, N, C, E, "f32"); // router and gate stay f32 (GemmPrecision)
  const route = routerForward(cfg.router, st.logits, N, E, opt.train ? "train" : "eval", opt.noise, opt.bias);
  st.route = route;

  // 3. keep mask (and the drop rate capacity C causes, real or virtual)
  const cf = cfg.dispatch.kind === "capacity" ? cfg.dispatch.capacityFactor : opt.virtualCapacityFactor;
  const policy = cfg.dispatch.kind === "capacity" ? cfg.dispatch.policy : "probs";
  const cap = capacityKeep(route.topExperts, route.weights, N, K, E, expertCapacity(N, K, E, cf), policy);
  const dropping = cfg.dispatch.kind === "capacity";

  // 4. dispatch: sort kept assignments by expert; dropped ones go to the overflow bin E
  for (let i = 0; i < N * K; i++) st.keys[i] = dropping && !cap.keep[i] ? E : route.topExperts[i]!;
  be.sortByKey(st.perm, st.keys, E + 1);
  be.histogram(st.counts, st.keys, E + 1);
  // rows of expert e: its kept assignments, then (padding) zero-weight rows on token 0 up to C
  const padTo = cfg.dispatch.kind === "capacity" && cfg.dispatch.pad ? expertCapacity(N, K, E, cf) : 0;
  let M = 0, src = 0;
  st.padRows = 0;
  for (let e = 0; e < E; e++) {
    const n = st.counts[e]!, rows = Math.max(n, padTo);
    st.sizes[e] = rows;
    for (let j = 0; j < rows; j++, M++) {
      if (j < n) {
        const a = st.perm[src++]!;
        st.rowAssign[M] = a;
        st.tokenOf[M] = (a / K) | 0;
        st.rowW[M] = route.weights[a]!;
        st.rowGW[M] = route.gradWeights[a]!;
      } else {
        st.rowAssign[M] = -1;
        st.tokenOf[M] = 0;
        st.rowW[M] = 0;
        st.rowGW[M] = 0;
        st.padRows++;
      }
    }
  }
  st.M = M;
  const xs = st.xs.subarray(0, M * C), h = st.h.subarray(0, M * 2 * F), act = st.a.subarray(0, M * F), yo = st.yo.subarray(0, M * C);
  const tokenOf = st.tokenOf.subarray(0, M);
  be.gather(xs, xj, tokenOf, N, C);

  // 5. experts (EP: rows exchanged with the experts' owners, parallel/expert-parallel.ts)
  st.ep = opt.ep ?? null;
  st.tp = opt.tp ?? null;
  if (st.ep) st.ep.forward(be, st, xs, st.sizes, M, C, F, w, yo);
  else {
    // EDP: only this rank's experts run (their rows are consecutive); the other rows' outputs are zero
    const x = localExperts(st, F, w);
    if (x.R < M) yo.fill(0);
    be.groupedGemm(x.rows(xs, C), x.w13, x.rows(h, 2 * F), x.sizes, { K: C, N: 2 * F, transW: true });
    be.swigluForward(x.rows(act, F), x.rows(h, 2 * F), x.R, F);
    be.groupedGemm(x.rows(act, F), x.w2, x.rows(yo, C), x.sizes, { K: F, N: C, transW: true });
  }

  // 6. combine
  y.fill(0);
  be.scatterAdd(y, yo, tokenOf, st.rowW.subarray(0, M), N, C);
  const sh = st.shared;
  if (sh) {
    const S = cfg.sharedExpertIntermediateSize;
    ffnForward(be, sh.ys, sh.ffn, xj, w.sharedGateUp!, w.sharedDown!, N, C, S);
    linearForward(be, sh.gate, xj, w.sharedGate!, undefined, N, C, 1, "f32");
    for (let n = 0; n < N; n++) {
      const s = sigmoid(sh.gate[n]!);
      sh.s[n] = s;
      for (let c = 0; c < C; c++) y[n * C + c]! += s * sh.ys[n * C + c]!;
    }
  }

  // 7. balancing losses (gradients saved, coefficient included)
  st.dProbs.fill(0);
  st.dLogitsBal.fill(0);
  let aux = 0;
  switch (opt.balance) {
    case "skywork":
      aux = skyworkAuxLoss(route.probs, N, E, opt.auxCoef, st.dProbs).loss;
      break;
    case "switch":
      aux = switchAuxLoss(route.probs, route.topExperts, N, E, K, opt.auxCoef, st.dProbs).loss;
      break;
    case "global": {
      const counts = Float64Array.from(cap.tokensPerExpert); // assignments before dropping
      const total = new Float64Array([N * K]);
      opt.group.allreduceSum(counts);
      opt.group.allreduceSum(total);
      aux = globalLoadBalancingLoss(route.probs, N, E, K, counts, total[0]!, opt.auxCoef, st.dProbs).loss;
      break;
    }
    case "none":
      break;
    default:
      opt.balance satisfies never;
  }
  // the z-loss value is always reported; its gradient is zero when zCoef is 0
  const z = routerZLoss(st.logits, N, E, opt.zCoef, st.dLogitsBal).loss;
  st.hasBalanceGrad = (opt.balance !== "none" && opt.auxCoef !== 0) || opt.zCoef !== 0;

  return {
    tokensPerExpert: cap.tokensPerExpert,
    keptPerExpert: dropping ? cap.keptPerExpert : Int32Array.from(cap.tokensPerExpert),
    dropRate: dropping ? cap.dropRate : 0,
    virtualDropRate: cap.dropRate,
    aux,
    z,
    auxCoef: opt.auxCoef,
    entropy: routerEntropy(route.probs, N, E),
    maxOverMeanLoad: loadStats(cap.tokensPerExpert).maxOverMean,
  };
}

/**
 * Backward of moeForward. dx (N,C) overwritten; weight gradients accumulated (+=).
 * gradScale multiplies the balancing-loss gradients (the same scale the caller applied
 * to the LM loss gradient, e.g. 1/micro-batches).
 */
export function moeBackward(be: Backend, st: MoeLayerState, w: MoeWeights, dw: MoeWeights, sc: MoeScratch, dx: FArr, dy: FArr, x: FArr, gradScale: number): void {
  const { N, C, cfg, M } = st;
  const E = cfg.numExperts, F = cfg.expertIntermediateSize;
  const route = st.route;
  if (!route) throw new Error("moeBackward called before moeForward");
  const xj = st.jitter ? st.xj : x;
  const tokenOf = st.tokenOf.subarray(0, M);
  const xs = st.xs.subarray(0, M * C), h = st.h.subarray(0, M * 2 * F), act = st.a.subarray(0, M * F), yo = st.yo.subarray(0, M * C);
  const dyo = sc.dyo.subarray(0, M * C), dRowW = sc.dRowW.subarray(0, M), da = sc.da.subarray(0, M * F), dh = sc.dh.subarray(0, M * 2 * F), dxs = sc.dxs.subarray(0, M * C);
  const dxj = sc.dxj;

  // 6'. combine backward
  be.scatterAddBackward(dyo, dRowW, dy, yo, tokenOf, st.rowGW.subarray(0, M), N, C);
  const dWeights = sc.dWeights;
  dWeights.fill(0);
  for (let i = 0; i < M; i++) {
    const a = st.rowAssign[i]!;
    if (a >= 0) dWeights[a] = dRowW[i]!;
  }
  // TP: dot(dy, expert output) over partial outputs; the router needs the sum over the TP ranks
  st.tp?.allreduce(dWeights);
  // TP: the router's and the shared gate's input gradients are replicated: one rank adds them
  // (the caller all-reduces dx); the others write them into consumed scratch
  const dxRep = st.tp && st.tp.rank !== 0 ? sc.dxs.subarray(0, N * C) : dxj;

  // 5'. experts backward
  if (st.ep) st.ep.backward(be, st, dyo, M, C, F, w, dw, dxs);
  else {
    const x = localExperts(st, F, w), g = localExperts(st, F, dw);
    if (x.R < M) dxs.fill(0);
    be.groupedGemmWeightGrad(x.rows(act, F), x.rows(dyo, C), g.w2, x.sizes, { K: F, N: C, transW: true });
    be.groupedGemm(x.rows(dyo, C), x.w2, x.rows(da, F), x.sizes, { K: C, N: F, transW: false });
    be.swigluBackward(x.rows(dh, 2 * F), x.rows(da, F), x.rows(h, 2 * F), x.R, F);
    be.groupedGemmWeightGrad(x.rows(xs, C), x.rows(dh, 2 * F), g.w13, x.sizes, { K: C, N: 2 * F, transW: true });
    be.groupedGemm(x.rows(dh, 2 * F), x.w13, x.rows(dxs, C), x.sizes, { K: 2 * F, N: C, transW: false });
  }

  // 4'. dispatch backward: gather's backward is scatter
  dxj.fill(0);
  be.scatterAdd(dxj, dxs, tokenOf, null, N, C);

  // shared expert backward
  const sh = st.shared, dsh = sc.dShared;
  if (sh && dsh) {
    const S = cfg.sharedExpertIntermediateSize;
    const dGate = dsh.gate;
    for (let n = 0; n < N; n++) {
      const s = sh.s[n]!;
      let g = 0;
      for (let c = 0; c < C; c++) {
        const d = dy[n * C + c]!;
        dsh.ys[n * C + c] = s * d;
        g += d * sh.ys[n * C + c]!;
      }
      dGate[n] = g * s * (1 - s);
    }
    st.tp?.allreduce(dGate); // dot(dy, ys) over the partial shared-expert outputs (the sigmoid factor is replicated)
    ffnBackward(be, dxj, dw.sharedGateUp!, dw.sharedDown!, dsh.ys, xj, sh.ffn, w.sharedGateUp!, w.sharedDown!, { da: dsh.da, dgu: dsh.dgu }, N, C, S, true);
    linearBackward(be, dxRep, dw.sharedGate!, undefined, dGate, xj, w.sharedGate!, N, C, 1, true, "f32");
  }

  // 2'. router backward (selected weights + balancing terms)
  // balancing gradients scaled into scratch, so the saved ones stay as the forward left them
  if (st.hasBalanceGrad) be.scale(sc.dProbs, st.dProbs, gradScale);
  routerBackward(cfg.router, route, dWeights, st.hasBalanceGrad ? sc.dProbs : null, sc.dLogits);
  if (st.hasBalanceGrad) be.axpy(sc.dLogits, st.dLogitsBal, gradScale);
  linearBackward(be, dxRep, dw.router, undefined, sc.dLogits, xj, w.router, N, C, E, true, "f32");

  // 1'. jitter backward
  if (st.jitter) for (let i = 0; i < N * C; i++) dx[i] = dxj[i]! * st.jitter[i]!;
  else dx.set(dxj);
}
