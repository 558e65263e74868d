// The kernel table: the one typed specification every backend implements.
//
// What it is: a fixed list of compute kernels with explicit forward/backward pairs
// (llm.c / megablocks style). Layers and MoE code call these through a `Backend`
// object they are handed; they never import a concrete backend.
// What it is not: a tensor library, an autodiff engine or a compiler.
//
// Conventions (hold for every kernel unless its comment says otherwise):
// - All arrays are dense, row-major, contiguous typed arrays whose length equals
//   exactly the size the shape parameters imply. Backends check this in
//   TypeScript before computing (see ./checks) and throw `KernelArgError`.
// - Float arrays are `FArr`: the `ref` backend takes Float32Array or Float64Array
//   (f64 is used for finite-difference gradient checks); the `native` backend takes
//   Float32Array only. All float arrays of one call must share a dtype.
// - Index arrays are Int32Array. Out-of-range indices are errors, never clamped.
// - Output arrays are written, never read, unless the comment says "+=" (accumulate)
//   or a `beta` is given. Rule for backward kernels: gradients w.r.t. *inputs*
//   (dx, dq, …) are overwritten; gradients w.r.t. *parameters* (dw, db, dwte)
//   are accumulated (+=), so micro-batches accumulate without extra copies.
// - Outputs must not alias inputs unless the comment allows it.
// - Scalars accumulate in at least f32; reductions that return a number use f64.
//
// Dimension letters: B batch, T sequence, C channels, V vocab, NH query heads,
// KVH key/value heads, HS head size, N rows (= B·T tokens), E experts/groups,
// K inner (GEMM) or top-k, F expert hidden size.

export type FArr = Float32Array | Float64Array;

/** Thrown for bad kernel arguments (wrong dtype, mismatched shapes, out-of-range indices). */
export class KernelArgError extends Error {
  override name = "KernelArgError";
}

// ---------------------------------------------------------------------------
// GEMM family

/**
 * Input precision of a GEMM: "f32" (default) multiplies the f32 values; "bf16" first rounds every
 * element of A and B (x, w, dy of the grouped forms) to bf16 (round to nearest even, NaN kept)
 * and accumulates the products in f32 (C, alpha, beta stay f32). The native backend runs it only
 * on CPUs with AVX512_BF16 (it throws elsewhere, no fallback), flushing denormals (DAZ/FTZ);
 * `ref` emulates it. Used for training (train.gemm_dtype=bf16), see src/backend/gemm-precision.ts.
 */
export type GemmPrecision = "f32" | "bf16";

export interface GemmParams {
  /** Default "f32". */
  precision?: GemmPrecision;
  M: number;
  N: number;
  K: number;
  /** A is stored (K, M) and used transposed. Default false: A is (M, K). */
  transA?: boolean;
  /** B is stored (N, K) and used transposed. Default false: B is (K, N). */
  transB?: boolean;
  /** Default 1. */
  alpha?: number;
  /** Default 0 (C is overwritten and not read: NaN in C is ignored). */
  beta?: number;
}

export interface BatchedGemmParams extends GemmParams {
  /** Number of independent problems; A, B, C hold `batch` matrices back to back. */
  batch: number;
}

export interface GroupedGemmParams {
  /** Default "f32" (see GemmPrecision). */
  precision?: GemmPrecision;
  /** Inner dimension. */
  K: number;
  /** Output columns. */
  N: number;
  /** W is stored per group as (N, K) (HF Linear layout) and used transposed. Default false: (K, N). */
  transW?: boolean;
  /** Default 0 (overwrite). */
  beta?: number;
}

export interface GemmKernels {
  /**
   * C (M,N) = alpha · op(A) · op(B) + beta · C.
   * Backward (by the caller, with gemm itself): dA = dC·op(B)ᵀ, dB = op(A)ᵀ·dC
   * (with the transposes folded into transA/transB and beta = 1 to accumulate).
   */
  gemm(a: FArr, b: FArr, c: FArr, p: GemmParams): void;
  /** `batch` independent GEMMs of identical shape: C[i] = alpha·op(A[i])·op(B[i]) + beta·C[i]. */
  batchedGemm(a: FArr, b: FArr, c: FArr, p: BatchedGemmParams): void;
  /**
   * Grouped GEMM over variable-size row groups (the dropless expert computation).
   * x (Ntot, K) holds the rows of group 0, then group 1, …; sizes (E) gives each
   * group's row count (zero allowed; Σ sizes = Ntot). w is (E, K, N), or (E, N, K)
   * with transW. y (Ntot, N): y_g = x_g · op(w_g) + beta · y_g.
   * Backward: dx = groupedGemm(dy, w, {K: N, N: K, transW: !transW});
   *           dw = groupedGemmWeightGrad(x, dy).
   */
  groupedGemm(x: FArr, w: FArr, y: FArr, sizes: Int32Array, p: GroupedGemmParams): void;
  /**
   * Weight gradient of groupedGemm: dw_g += x_gᵀ · dy_g (dw (E,K,N)), or with transW
   * dw_g += dy_gᵀ · x_g (dw (E,N,K)). `beta` scales the old dw (default 1: accumulate).
   * A zero-size group leaves its dw_g scaled by beta.
   */
  groupedGemmWeightGrad(x: FArr, dy: FArr, dw: FArr, sizes: Int32Array, p: GroupedGemmParams): void;
}

// ---------------------------------------------------------------------------
// Quantised weights (inference)

export type QuantDtype = "bf16" | "f16" | "fp8_e4m3" | "fp8_e5m2" | "int8";

export interface QuantGemmParams {
  M: number;
  N: number;
  K: number;
  dtype: QuantDtype;
  /** Default 0 (overwrite). */
  beta?: number;
}

export interface QuantKernels {
  /**
   * y (M,N) = x (M,K) · dequant(w)ᵀ + beta·y, w (N,K) stored as codes
   * (Uint16Array for bf16/f16, Uint8Array for fp8, Int8Array for int8),
   * dequant(w)[n,k] = decode(w[n,k]) · scale[n or 0]. scales has length 1
   * (per-tensor) or N (per output row). x and y are Float32Array.
   */
  gemmQuant(x: Float32Array, w: Uint16Array | Uint8Array | Int8Array, scales: Float32Array, y: Float32Array, p: QuantGemmParams): void;
}

// ---------------------------------------------------------------------------
// GGUF block-quantised weights (inference): byte layouts in src/core/quant-blocks.ts

export type { BlockFormat } from "../core/quant-blocks.js";
import type { BlockFormat } from "../core/quant-blocks.js";

export interface QuantBlockGemmParams {
  M: number;
  N: number;
  /** A multiple of the format's block size (32 for q8_0/q4_0, 256 for q4_k/q6_k). */
  K: number;
  format: BlockFormat;
  /** Default 0 (overwrite). */
  beta?: number;
  /**
   * "f32" (default): x as given. "q8" (format q8_0 only; applies when M ≤ 8, larger M keeps
   * f32): each x row quantised per 32 values as llama.cpp's vec_dot_q8_0_q8_0 does (d = max|x| /
   * 127, q = round-half-even(x / d)), integer block dots scaled by f32(d_w · d_x). Faster
   * (VNNI), not exact: each block's error is at most d_x / 2 · Σ|w|.
   */
  activations?: "f32" | "q8";
}

export interface QuantBlockKernels {
  /**
   * y (M,N) = x (M,K) · dequant(w)ᵀ + beta·y. w holds N rows of K/blockSize raw ggml
   * blocks each (exactly the bytes of a GGUF tensor with ne = [K, N]); dequant is ggml's
   * dequantize_row_*. x and y are Float32Array.
   */
  gemmQuantBlock(x: Float32Array, w: Uint8Array, y: Float32Array, p: QuantBlockGemmParams): void;
  /** out (n) = dequant of the n/blockSize blocks in w, bit for bit ggml's dequantize_row_*. */
  dequantizeBlock(out: Float32Array, w: Uint8Array, format: BlockFormat, n: number): void;
}

// ---------------------------------------------------------------------------
// Dtype conversion (round-to-nearest-even, NaN kept)

export type Fp8Format = "e4m3" | "e5m2";

export interface ConvertKernels {
  /** bf16 bits ← f32. RNE; NaN stays NaN (quiet); ±Inf stays ±Inf. */
  f32ToBf16(out: Uint16Array, x: Float32Array): void;
  bf16ToF32(out: Float32Array, x: Uint16Array): void;
  /** IEEE binary16 bits ← f32. RNE; overflow → ±Inf (IEEE); subnormals kept; NaN kept. */
  f32ToF16(out: Uint16Array, x: Float32Array): void;
  f16ToF32(out: Float32Array, x: Uint16Array): void;
  /**
   * OCP FP8 bits ← f32 / scale (scale default 1). RNE, saturating: a finite value
   * beyond the format's max becomes ±max (448 for e4m3, 57344 for e5m2). ±Inf
   * becomes ±448 in e4m3 (it has no infinity) and stays ±Inf in e5m2. NaN → NaN
   * (0x7F/0xFF in e4m3, 0x7E/0xFE in e5m2 keeps the sign).
   */
  f32ToFp8(out: Uint8Array, x: Float32Array, format: Fp8Format, scale?: number): void;
  /** f32 ← decode(code) · scale (default 1). */
  fp8ToF32(out: Float32Array, x: Uint8Array, format: Fp8Format, scale?: number): void;
}

// ---------------------------------------------------------------------------
// Elementwise, normalisation, embedding, RoPE

export type GeluApprox = "none" | "tanh";

export interface OpsKernels {
  /** out (N,C) = wte[ids[n]] ; ids (N) in [0, V). */
  embeddingForward(out: FArr, ids: Int32Array, wte: FArr, V: number, C: number): void;
  /** dwte (V,C) += Σ_{n: ids[n]=v} dout[n]. */
  embeddingBackward(dwte: FArr, dout: FArr, ids: Int32Array, V: number, C: number): void;

  /** out = x / rms(x) · w, rms over C; rstd (N) saved for backward. */
  rmsnormForward(out: FArr, rstd: FArr, x: FArr, w: FArr, N: number, C: number, eps: number): void;
  /** dx (N,C) =; dw (C) +=. */
  rmsnormBackward(dx: FArr, dw: FArr, dout: FArr, x: FArr, w: FArr, rstd: FArr, N: number, C: number): void;
  /** out = (x − mean)·rstd·w + b; mean, rstd (N) saved. Biased variance (PyTorch LayerNorm). */
  layernormForward(out: FArr, mean: FArr, rstd: FArr, x: FArr, w: FArr, b: FArr, N: number, C: number, eps: number): void;
  /** dx (N,C) =; dw, db (C) +=. */
  layernormBackward(dx: FArr, dw: FArr, db: FArr, dout: FArr, x: FArr, w: FArr, mean: FArr, rstd: FArr, N: number, C: number): void;

  /**
   * Rotary embedding on x (B,T,H,HS), HF "rotate_half" convention: within the first
   * rotaryDim channels, channel i pairs with i + rotaryDim/2, angle = pos[t]·θ^(−2i/rotaryDim).
   * Channels ≥ rotaryDim pass through. pos (T) gives each time step's position.
   * out may alias x (in place).
   */
  ropeForward(out: FArr, x: FArr, pos: Int32Array, p: RopeParams): void;
  /** dx = rotation by −angle of dout. dx may alias dout. */
  ropeBackward(dx: FArr, dout: FArr, pos: Int32Array, p: RopeParams): void;

  /** out = x·sigmoid(x) over n elements. */
  siluForward(out: FArr, x: FArr): void;
  /** dx = dout · silu'(x). */
  siluBackward(dx: FArr, dout: FArr, x: FArr): void;
  /** GELU, exact (erf) or tanh approximation. */
  geluForward(out: FArr, x: FArr, approx: GeluApprox): void;
  geluBackward(dx: FArr, dout: FArr, x: FArr, approx: GeluApprox): void;
  /** Fused SwiGLU: gu (N, 2F) holds [gate | up] per row; out (N,F) = silu(gate)·up. */
  swigluForward(out: FArr, gu: FArr, N: number, F: number): void;
  /** dgu (N, 2F) = [dout·up·silu'(gate) | dout·silu(gate)]. */
  swigluBackward(dgu: FArr, dout: FArr, gu: FArr, N: number, F: number): void;

  /** out = a + b (out may alias a or b). */
  add(out: FArr, a: FArr, b: FArr): void;
  /** y += alpha · x. */
  axpy(y: FArr, x: FArr, alpha: number): void;
  /** out = x · alpha (out may alias x). */
  scale(out: FArr, x: FArr, alpha: number): void;
  /** x (N,C) += bias (C) per row, in place. */
  biasAddForward(x: FArr, bias: FArr, N: number, C: number): void;
  /** dbias (C) += Σ_rows dout (N,C). */
  biasAddBackward(dbias: FArr, dout: FArr, N: number, C: number): void;

  /** Row softmax of x (N,V). out may alias x. */
  softmaxForward(out: FArr, x: FArr, N: number, V: number): void;
  /** dx = out ⊙ (dout − Σ dout⊙out) per row. */
  softmaxBackward(dx: FArr, dout: FArr, out: FArr, N: number, V: number): void;
  logSoftmaxForward(out: FArr, x: FArr, N: number, V: number): void;
  /** dx = dout − exp(out)·Σ dout per row. */
  logSoftmaxBackward(dx: FArr, dout: FArr, out: FArr, N: number, V: number): void;

  /**
   * Fused softmax cross-entropy on logits (N,V): losses[n] = lse[n] − logits[n, t[n]],
   * lse (N) saved; rows whose target equals ignoreIndex get loss 0.
   * Other targets must lie in [0, V).
   */
  crossEntropyForward(losses: FArr, lse: FArr, logits: FArr, targets: Int32Array, N: number, V: number, ignoreIndex: number): void;
  /**
   * dlogits (N,V) = (softmax(logits) − onehot(t)) · dlosses[n]; ignored rows get 0.
   * dlogits may alias logits.
   */
  crossEntropyBackward(dlogits: FArr, logits: FArr, lse: FArr, targets: Int32Array, dlosses: FArr, N: number, V: number, ignoreIndex: number): void;

  /** Σ x (f64 accumulation). */
  sum(x: FArr): number;
  /** max x (−Inf for empty; NaN if any NaN). */
  max(x: FArr): number;
  /** Σ x² (f64 accumulation); the global grad norm is sqrt of the sum over tensors. */
  sumSquares(x: FArr): number;

  /**
   * AdamW (decoupled weight decay, Loshchilov & Hutter), in place, bias-corrected:
   * m = β1 m + (1−β1) g; v = β2 v + (1−β2) g²; p −= lr·(m̂/(√v̂+eps) + wd·p),
   * m̂ = m/(1−β1^step), v̂ = v/(1−β2^step). step ≥ 1.
   */
  adamw(param: FArr, grad: FArr, m: FArr, v: FArr, p: AdamWParams): void;
}

export interface RopeParams {
  B: number;
  T: number;
  H: number;
  HS: number;
  /** Even, ≤ HS. Default HS. */
  rotaryDim?: number;
  /** Base θ, e.g. 1e4. */
  theta: number;
  /** Per-pair inverse frequencies (rotaryDim/2), overriding θ^(−2i/rd): scaled RoPE (linear, llama3, yarn, longrope). */
  invFreq?: Float64Array;
  /** cos and sin are multiplied by this (yarn / longrope attention factor). Default 1. */
  scale?: number;
}

export interface AdamWParams {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

// ---------------------------------------------------------------------------
// Attention

export interface AttentionParams {
  B: number;
  /** Query length. */
  T: number;
  /** Key/value length; default T. Queries are aligned to the end: query i sits at key position i + (Tk − T). */
  Tk?: number;
  NH: number;
  /** KV heads; NH % KVH == 0 (GQA: query head h reads kv head ⌊h·KVH/NH⌋). */
  KVH: number;
  HS: number;
  /** Keys attended per query including itself (j ∈ (i−window, i]); 0 or absent = unlimited. */
  window?: number;
  /** Score scale; default 1/√HS. */
  scale?: number;
}

export interface AttentionKernels {
  /**
   * Causal attention. q (B,T,NH,HS), k and v (B,Tk,KVH,HS) → out (B,T,NH,HS),
   * lse (B,NH,T) = log Σ_j exp(score) saved for backward. Tiled (flash-style):
   * memory beyond the inputs/outputs is O(tile²), never O(T·Tk).
   */
  attentionForward(out: FArr, lse: FArr, q: FArr, k: FArr, v: FArr, p: AttentionParams): void;
  /** dq, dk, dv overwritten. Recomputes probabilities from q, k, lse. */
  attentionBackward(dq: FArr, dk: FArr, dv: FArr, dout: FArr, q: FArr, k: FArr, v: FArr, out: FArr, lse: FArr, p: AttentionParams): void;
}

// ---------------------------------------------------------------------------
// Paged attention (inference): keys/values live in a pool of fixed blocks (infer/kv-cache.ts)

/**
 * A KV cache of one layer: (numBlocks, blockSize, KVH, HS) row-major, as f32/f64 values or
 * bf16 codes (Uint16Array). Slot s = block·blockSize + offset holds one token's KVH·HS values.
 */
export type KvArr = FArr | Uint16Array;

export interface PagedCacheParams {
  /** Blocks in the cache. */
  numBlocks: number;
  /** Tokens per block. */
  blockSize: number;
  KVH: number;
  HS: number;
}

export interface PagedAttentionParams extends PagedCacheParams {
  /** Sequences in the batch (S). */
  numSeqs: number;
  /** Query heads; NH % KVH == 0 (GQA: query head h reads kv head ⌊h·KVH/NH⌋). */
  NH: number;
  /** Width of each blockTables row (the most blocks one sequence can have). */
  maxBlocksPerSeq: number;
  /** Keys attended per query including itself (j ∈ (pos−window, pos]); 0 or absent = unlimited. */
  window?: number;
  /** Score scale; default 1/√HS. */
  scale?: number;
}

export interface PagedAttentionKernels {
  /**
   * Causal attention of new query rows against each sequence's cached keys/values.
   * q, out (N, NH, HS) hold the new rows of sequence 0, then sequence 1, …: sequence s owns
   * rows [queryStart[s], queryStart[s+1]) (queryStart (S+1), queryStart[0] = 0, queryStart[S] = N;
   * a sequence may have 0 rows). contextLens (S) is each sequence's length including its new
   * rows, whose keys/values must already be in the cache (pagedWrite): the new rows sit at
   * positions contextLen − qlen … contextLen − 1 and query position p sees keys j ∈ (p − window, p].
   * Key j of sequence s is in slot blockTables[s·maxBlocksPerSeq + ⌊j/blockSize⌋]·blockSize + j % blockSize;
   * only the entries of visible blocks are read (released blocks may hold −1).
   * kCache and vCache share one type: Float32Array/Float64Array (the dtype of q) or Uint16Array (bf16).
   */
  pagedAttention(out: FArr, q: FArr, kCache: KvArr, vCache: KvArr, blockTables: Int32Array, queryStart: Int32Array, contextLens: Int32Array, p: PagedAttentionParams): void;
  /**
   * Writes N new rows k, v (N, KVH, HS) into the cache: row i goes to slot slotMapping[i]
   * (in [0, numBlocks·blockSize), distinct), or is skipped when slotMapping[i] = −1. bf16 caches
   * receive round-to-nearest-even codes.
   */
  pagedWrite(kCache: KvArr, vCache: KvArr, k: FArr, v: FArr, slotMapping: Int32Array, p: PagedCacheParams): void;
}

// ---------------------------------------------------------------------------
// Routing primitives (MoE dispatch)

export interface RouteKernels {
  /**
   * Per row of x (N,E): the K largest values, descending, into values (N,K) and
   * their column indices into indices (N,K). Ties go to the lower index. K ≤ E.
   * NaN in x is an error (checked).
   */
  topk(values: FArr, indices: Int32Array, x: FArr, N: number, E: number, K: number): void;
  /**
   * Stable sort of integer keys in [0, numKeys): perm (n) receives the original
   * positions in sorted order (equal keys keep their original order).
   */
  sortByKey(perm: Int32Array, keys: Int32Array, numKeys: number): void;
  /** counts (numBins) = histogram of keys in [0, numBins). Overwrites. */
  histogram(counts: Int32Array, keys: Int32Array, numBins: number): void;
  /** Inclusive (out[i] = Σ_{j≤i}) or exclusive (out[i] = Σ_{j<i}) prefix sum. out may alias x. */
  cumsum(out: Int32Array, x: Int32Array, exclusive: boolean): void;
  /** out (M,C) [i] = x (N,C) [idx[i]]. Backward: scatterAdd(dx, dout, idx). */
  gather(out: FArr, x: FArr, idx: Int32Array, N: number, C: number): void;
  /**
   * out (N,C) [idx[i]] += w[i] · x (M,C) [i]  (w omitted: weight 1). Accumulates;
   * deterministic (fixed order over i for each destination row).
   */
  scatterAdd(out: FArr, x: FArr, idx: Int32Array, w: FArr | null, N: number, C: number): void;
  /**
   * Backward of weighted scatterAdd: dx (M,C) [i] = w[i]·dout[idx[i]] (overwrite);
   * dw (M) [i] = ⟨dout[idx[i]], x[i]⟩ (overwrite).
   */
  scatterAddBackward(dx: FArr, dw: FArr, dout: FArr, x: FArr, idx: Int32Array, w: FArr, N: number, C: number): void;
}

// ---------------------------------------------------------------------------
// The table

export type BackendName = "ref" | "native";

export interface BackendInfo {
  backend: BackendName;
  threads: number;
  /** "openblas" | "builtin-avx512" | "builtin-avx2" | "builtin-scalar" | "ts" */
  gemm: string;
  blasAvailable: boolean;
  cpuFeatures: string[];
  /**
   * native gemm "auto" with OpenBLAS linked: the measured GFLOP/s of each path per shape class and
   * the path picked (then `gemm` names the pick of the "large" class). See native/gemm-calibrate.ts.
   */
  gemmAuto?: {
    threads: number;
    cpu: string;
    build: string;
    cached: boolean;
    ms: number;
    cpuShare: number;
    /** The machine's 1-minute load average when measured (busy machines are not cached). */
    load1: number;
    measuredAt: string;
    kernels: { builtin: string; blas: string };
    classes: Record<string, { builtin: number; blas: number; pick: "builtin" | "blas"; problem: string }>;
  };
}

export interface Kernels extends GemmKernels, QuantKernels, QuantBlockKernels, ConvertKernels, OpsKernels, AttentionKernels, PagedAttentionKernels, RouteKernels {}

export interface Backend extends Kernels {
  readonly name: BackendName;
  info(): BackendInfo;
  /**
   * The same kernels without per-call argument validation (undefined: none). Only for a caller
   * that validated its arguments itself: the inference step (infer/runner.ts) checks each step
   * shape once against the checked table and the batch's indices every step. A wrong argument
   * here is undefined behaviour (native: memory outside the arrays). Not enumerable, so a
   * wrapper built by spreading a backend does not inherit it (and runs checked).
   */
  readonly unchecked?: Kernels;
}

/** The kernel names, for tests and benchmarks that iterate the table. */
export type KernelName = keyof Kernels;
