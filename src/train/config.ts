// The training configuration: one schema (type, default, documentation of every key),
// from which the typed config, YAML loading, `key=value` overrides, validation and the
// README's option table all come. An unknown key or a wrongly typed value is rejected
// with the closest valid key suggested. Not: the model's HF config (model/config.ts).
import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { closest } from "../core/suggest.js";
import { parseStageList } from "../parallel/pipeline.js";

type FieldType = "number" | "int" | "string" | "boolean" | readonly string[];

interface Field {
  type: FieldType;
  default: number | string | boolean | null;
  /** null allowed (means "take it from the preset / derive it"). */
  nullable?: boolean;
  doc: string;
}

/** Every training option. Section.key → field. */
export const TRAIN_SCHEMA = {
  model: {
    preset: { type: "string", default: "small-moe", doc: "model preset (tiny-mixtral, tiny-grin, small-moe, moe-50m); ignored with model.from" },
    family: { type: ["mixtral", "skywork", "phimoe", "qwen2_moe", "qwen3_moe", "olmoe", "llama"], default: null, nullable: true, doc: "architecture (HF model_type) of the trained model; null: from model.router (topk/sigmoid_bias → mixtral, skywork → skywork, sparsemixer → phimoe). llama = dense (FFN = the preset's expert size; the starting point of `moe upcycle`)" },
    from: { type: "string", default: null, nullable: true, doc: "start from this HF checkpoint or run directory instead of a preset (its config.json and tokenizer.json are used; model size/router options are ignored)" },
    num_experts: { type: "int", default: null, nullable: true, doc: "override the preset's experts per MoE layer" },
    top_k: { type: "int", default: null, nullable: true, doc: "override the preset's experts per token" },
    hidden_size: { type: "int", default: null, nullable: true, doc: "override the preset's hidden size" },
    num_layers: { type: "int", default: null, nullable: true, doc: "override the preset's layer count" },
    num_heads: { type: "int", default: null, nullable: true, doc: "override the preset's query heads" },
    num_kv_heads: { type: "int", default: null, nullable: true, doc: "override the preset's key/value heads" },
    expert_size: { type: "int", default: null, nullable: true, doc: "override the preset's expert FFN hidden size" },
    router: { type: ["topk", "skywork", "sparsemixer", "sigmoid_bias"], default: null, nullable: true, doc: "topk: softmax top-k (renormalised as the family does); skywork: + gating-logit normalisation; sparsemixer: GRIN SparseMixer-v2; sigmoid_bias: sigmoid scores + aux-free selection bias (DeepSeek-V3). null: the family's own (skywork when neither is set)" },
    gate_norm_std: { type: "number", default: 1, doc: "Skywork λ (moe_gate_norm_std) for router=skywork" },
    sparsemixer_eps: { type: "number", default: 0.01, doc: "SparseMixer ε (router_jitter_noise) for router=sparsemixer" },
    dispatch: { type: ["dropless", "capacity"], default: "dropless", doc: "dropless grouped GEMM, or capacity with dropping" },
    capacity_factor: { type: "number", default: 1.25, doc: "capacity factor (capacity dispatch), and the CF of the virtual drop rate in dropless mode" },
    drop_policy: { type: ["probs", "position"], default: "probs", doc: "which assignments survive past capacity" },
    capacity_pad: { type: "boolean", default: false, doc: "capacity dispatch: pad every expert's group to exactly C rows (fixed shapes; same results)" },
    init_std: { type: "number", default: 0.02, doc: "normal init std of weights (router too)" },
  },
  data: {
    corpus: { type: "string", default: "moby-dick", doc: "moby-dick, or files / directories / .jsonl files, comma-separated" },
    jsonl_field: { type: "string", default: "text", doc: "field of .jsonl records holding the text" },
    tokenizer: { type: "string", default: null, nullable: true, doc: "HF tokenizer.json to use; null trains a byte-level BPE on the corpus" },
    vocab_size: { type: "int", default: 4096, doc: "vocabulary of a freshly trained tokenizer" },
    cache_dir: { type: "string", default: "runs/cache", doc: "where tokenised shards are cached" },
    val_fraction: { type: "number", default: 0.05, doc: "fraction of documents held out for evaluation (of the last tokens when the corpus has too few documents, e.g. one file)" },
  },
  train: {
    out_dir: { type: "string", default: "runs/default", doc: "run directory (checkpoints, metrics, resolved config)" },
    backend: { type: ["native", "ref"], default: "native", doc: "compute backend" },
    threads: { type: "int", default: null, nullable: true, doc: "engine threads (default: MOE_NUM_THREADS or all cores)" },
    gemm_dtype: { type: ["f32", "bf16"], default: "f32", doc: "input precision of the training GEMMs: bf16 rounds the inputs of the attention projections', dense FFNs' and experts' GEMMs (forward, dX and dW) to bf16 and accumulates in f32 (the router, shared-expert gate and LM head stay f32); native backend: needs a CPU with AVX512_BF16 (refused elsewhere). Accuracy and speed: README \"bf16 GEMM for training\"" },
    seed: { type: "int", default: 1234, doc: "seed of init, data order and router noise" },
    batch_size: { type: "int", default: 16, doc: "sequences per micro-batch (B)" },
    seq_len: { type: "int", default: 128, doc: "tokens per sequence (T)" },
    grad_accum: { type: "int", default: 1, doc: "micro-batches per optimizer step" },
    steps: { type: "int", default: 1200, doc: "optimizer steps" },
    max_minutes: { type: "number", default: 0, doc: "stop (and checkpoint) after this many minutes; 0 = no limit" },
    nan_tolerance: { type: "int", default: 3, doc: "consecutive non-finite steps (skipped) before the run stops" },
  },
  optim: {
    lr: { type: "number", default: 3e-3, doc: "peak learning rate" },
    min_lr: { type: "number", default: 3e-4, doc: "final learning rate of cosine/linear/wsd decay" },
    schedule: { type: ["cosine", "linear", "constant", "wsd"], default: "cosine", doc: "LR schedule after warmup" },
    warmup_steps: { type: "int", default: 60, doc: "linear warmup steps" },
    wsd_decay_fraction: { type: "number", default: 0.2, doc: "WSD: fraction of steps in the final decay" },
    weight_decay: { type: "number", default: 0.1, doc: "AdamW decoupled weight decay (not on norms, biases, embeddings)" },
    beta1: { type: "number", default: 0.9, doc: "AdamW β1" },
    beta2: { type: "number", default: 0.95, doc: "AdamW β2" },
    eps: { type: "number", default: 1e-8, doc: "AdamW ε" },
    grad_clip: { type: "number", default: 1, doc: "clip the global gradient norm to this (0 = off)" },
  },
  balance: {
    loss: { type: ["skywork", "switch", "global", "none"], default: "skywork", doc: "load-balancing loss: Skywork eq.4, Switch f·P, GRIN global f·P, or none" },
    global_scope: { type: ["micro_batch", "step"], default: "micro_batch", doc: "loss=global: expert counts summed over the DP ranks per micro-batch, or over the whole step (every micro-batch and rank: the loss is the same at any layout; costs a counting forward per micro-batch)" },
    adaptive: { type: "boolean", default: true, doc: "Skywork per-layer adaptive coefficient from the (virtual) drop rate" },
    coef: { type: "number", default: 0.01, doc: "fixed coefficient α when adaptive is false" },
    xi: { type: "number", default: 0.2, doc: "adaptive: ξ (α̂ = ξ·d)" },
    alpha_max: { type: "number", default: 0.01, doc: "adaptive: α_max" },
    beta: { type: "number", default: 0.99, doc: "adaptive: smoothing β" },
    alpha0: { type: "number", default: 0.01, doc: "adaptive: initial α" },
    z_coef: { type: "number", default: 1e-3, doc: "router z-loss coefficient (0 = off)" },
    bias_rate: { type: "number", default: 1e-3, doc: "aux-free bias step γ of the sigmoid_bias router (b_i += γ·sign(mean load − load_i) per step)" },
  },
  eval: {
    every: { type: "int", default: 200, doc: "evaluate on the held-out split every N steps (0 = only at the end)" },
    batches: { type: "int", default: 8, doc: "held-out batches per evaluation" },
  },
  sample: {
    every: { type: "int", default: 400, doc: "print a sample every N steps (0 = never)" },
    tokens: { type: "int", default: 48, doc: "tokens per sample" },
    prompt: { type: "string", default: "Call me Ishmael.", doc: "sample prompt" },
    temperature: { type: "number", default: 0.8, doc: "sampling temperature" },
  },
  checkpoint: {
    every: { type: "int", default: 400, doc: "save a checkpoint every N steps (and at the end)" },
    keep_last: { type: "int", default: 2, doc: "checkpoints kept (older ones are deleted after a new one is complete)" },
  },
  parallel: {
    dp: { type: "int", default: 1, doc: "data-parallel ranks (run with `moe launch --nproc N -- train parallel.dp=N`); each rank runs grad_accum/dp of the step's micro-batches" },
    zero: { type: "int", default: 0, doc: "ZeRO stage: 0 (optimizer state replicated) or 1 (AdamW moments sharded over the data-parallel ranks)" },
    ep: { type: "int", default: 1, doc: "expert-parallel ranks, folded into the data-parallel ones (Megatron): must divide parallel.dp and the number of experts; each rank computes num_experts/ep experts for the tokens of its EP group, expert gradients reduce over the dp/ep ranks holding the same experts. With parallel.tp > 1 an EP group is the data-parallel replicas of one TP rank, and each expert stays column-split over the TP group (EP × ETP). With parallel.pp > 1 the EP groups form inside each pipeline stage (ZeRO-1 then shards over the stage's ranks)" },
    pp: { type: "int", default: 1, doc: "pipeline stages (1F1B over the grad_accum/dp micro-batches); launch pp × dp ranks: `moe launch --nproc 4 -- train parallel.pp=2 parallel.dp=2`" },
    tp: { type: "int", default: 1, doc: "tensor-parallel ranks per replica (Megatron: heads, FFN and expert columns, vocabulary split unevenly where they do not divide); launch dp × tp ranks: `moe launch --nproc 4 -- train parallel.tp=2 parallel.dp=2`. ZeRO-1 (parallel.zero=1) shards each TP rank's slice over its DP group. With parallel.pp > 1 each stage is tensor-parallel (launch pp × dp × tp ranks). With parallel.ep > 1 experts split over the dp replicas of each TP rank, column-split over tp (EP × ETP; ep must divide dp). parallel.plan=auto may choose it" },
    etp: { type: "int", default: null, nullable: true, doc: "expert tensor-parallel ranks: every expert's intermediate columns split over them; null: parallel.tp (the only value supported: experts are split over the whole TP group)" },
    edp: { type: "boolean", default: false, doc: "expert-data parallelism (Skywork App. B.1, needs parallel.tp > 1): the TP group doubles as the expert group, each rank computes num_experts/tp whole experts (uneven: the first E mod tp one more) instead of a column slice of every expert; expert gradients reduce over the DP ranks" },
    plan: { type: ["none", "auto"], default: "none", doc: "auto: the planner chooses dp, ep, pp, tp, edp, zero, pp_layers and recompute for the launched ranks from a measured GEMM rate, the available memory and the backend's link cost (overrides those keys; the choice and its reasons are logged)" },
    pp_layers: { type: "string", default: null, nullable: true, doc: "layers per stage, e.g. `3,1` (Skywork's non-uniform split; `moe plan` suggests one); null: even split, the first L mod pp stages one more" },
    recompute: { type: "string", default: null, nullable: true, doc: "layers recomputed in the backward per stage (activation checkpointing of the stage's first layers), e.g. `1,0`; also works at pp=1. null: none" },
    overlap_grad_reduce: { type: "boolean", default: true, doc: "data parallelism (dp > 1, pp = 1, ep = 1): start each gradient bucket's all-reduce as soon as the last micro-batch's backward has finished the layers it covers, and wait for all after the backward (bit-identical to reducing after it; the overlap is real on the mpi backend, whose collectives run on a communication thread; threads ranks reduce on their own thread, so there it changes nothing)" },
    bucket_mb: { type: "number", default: 4, doc: "overlapped gradient all-reduce: the least MiB per bucket (buckets are cut only between layers; the last may be smaller)" },
  },
  log: {
    progress: { type: "boolean", default: true, doc: "progress bar on stderr (off when not a TTY unless forced)" },
    every: { type: "int", default: 10, doc: "print a log line every N steps when there is no TTY" },
  },
} as const satisfies Record<string, Record<string, Field>>;

type Schema = typeof TRAIN_SCHEMA;
type ValueOf<F> = F extends { type: readonly (infer E)[] } ? E : F extends { type: "number" | "int" } ? number : F extends { type: "string" } ? string : F extends { type: "boolean" } ? boolean : never;
type FieldValue<F> = F extends { nullable: true } ? ValueOf<F> | null : ValueOf<F>;
export type TrainConfig = { [S in keyof Schema]: { [K in keyof Schema[S]]: FieldValue<Schema[S][K]> } };

export class TrainConfigError extends Error {
  override name = "TrainConfigError";
}

function allKeys(): string[] {
  const out: string[] = [];
  for (const [s, fields] of Object.entries(TRAIN_SCHEMA)) for (const k of Object.keys(fields)) out.push(`${s}.${k}`);
  return out;
}

export function defaultTrainConfig(): TrainConfig {
  const cfg: Record<string, Record<string, unknown>> = {};
  for (const [s, fields] of Object.entries(TRAIN_SCHEMA)) {
    cfg[s] = {};
    for (const [k, f] of Object.entries(fields)) cfg[s]![k] = (f as Field).default;
  }
  return cfg as TrainConfig;
}

function lookup(dotted: string, where: string): Field {
  const [s, k, ...rest] = dotted.split(".");
  const section = (TRAIN_SCHEMA as Record<string, Record<string, Field>>)[s ?? ""];
  const field = section && k !== undefined && rest.length === 0 ? section[k] : undefined;
  if (!field) {
    const hint = closest(dotted, allKeys());
    throw new TrainConfigError(`${where}: unknown key '${dotted}'${hint ? ` (did you mean '${hint}'?)` : ""}`);
  }
  return field;
}

/** Checks (and, for strings from the command line, converts) one value. */
function coerce(dotted: string, f: Field, v: unknown, fromString: boolean, where: string): unknown {
  const bad = (): never => {
    const t = Array.isArray(f.type) ? `one of ${(f.type as readonly string[]).join(", ")}` : f.type === "int" ? "an integer" : `a ${f.type}`;
    throw new TrainConfigError(`${where}: ${dotted} must be ${t}${f.nullable ? " or null" : ""}, got ${JSON.stringify(v)}`);
  };
  if (v === null || (fromString && v === "null")) return f.nullable ? null : bad();
  if (Array.isArray(f.type)) return typeof v === "string" && (f.type as readonly string[]).includes(v) ? v : bad();
  switch (f.type) {
    case "number":
    case "int": {
      const n = fromString && typeof v === "string" && v.trim() !== "" ? Number(v) : v;
      if (typeof n !== "number" || !Number.isFinite(n)) return bad();
      if (f.type === "int" && !Number.isInteger(n)) return bad();
      return n;
    }
    case "boolean":
      if (typeof v === "boolean") return v;
      if (fromString && (v === "true" || v === "false")) return v === "true";
      return bad();
    case "string":
      return typeof v === "string" ? v : fromString ? String(v) : bad();
    default:
      return bad();
  }
}

function set(cfg: TrainConfig, dotted: string, value: unknown): void {
  const [s, k] = dotted.split(".") as [string, string];
  (cfg as unknown as Record<string, Record<string, unknown>>)[s]![k] = value;
}

/** Applies a nested object (parsed YAML) onto cfg, validating every key and value. */
export function applyObject(cfg: TrainConfig, obj: unknown, where: string): void {
  if (obj === null || obj === undefined) return;
  if (typeof obj !== "object" || Array.isArray(obj)) throw new TrainConfigError(`${where}: the top level must be a mapping of sections`);
  for (const [s, sec] of Object.entries(obj as Record<string, unknown>)) {
    if (typeof sec !== "object" || sec === null || Array.isArray(sec)) {
      if (!(s in TRAIN_SCHEMA)) lookup(s, where);
      throw new TrainConfigError(`${where}: section '${s}' must be a mapping`);
    }
    for (const [k, v] of Object.entries(sec as Record<string, unknown>)) {
      const dotted = `${s}.${k}`;
      set(cfg, dotted, coerce(dotted, lookup(dotted, where), v, false, where));
    }
  }
}

/** Applies `section.key=value` overrides (values parsed from strings by the key's type). */
export function applyOverrides(cfg: TrainConfig, overrides: string[]): void {
  for (const o of overrides) {
    const eq = o.indexOf("=");
    if (eq <= 0) throw new TrainConfigError(`override '${o}' must look like section.key=value`);
    const dotted = o.slice(0, eq), raw = o.slice(eq + 1);
    set(cfg, dotted, coerce(dotted, lookup(dotted, "override"), raw, true, "override"));
  }
}

/** Defaults ← YAML file (optional) ← overrides. */
export function loadTrainConfig(yamlFile: string | null, overrides: string[]): TrainConfig {
  const cfg = defaultTrainConfig();
  if (yamlFile) {
    let text: string;
    try {
      text = readFileSync(yamlFile, "utf8");
    } catch (e) {
      throw new TrainConfigError(`${yamlFile}: cannot read: ${(e as Error).message}`);
    }
    let obj: unknown;
    try {
      obj = parseYaml(text);
    } catch (e) {
      throw new TrainConfigError(`${yamlFile}: not valid YAML: ${(e as Error).message}`);
    }
    applyObject(cfg, obj, yamlFile);
  }
  applyOverrides(cfg, overrides);
  validate(cfg);
  return cfg;
}

/** Checks every range and cross-key rule (also after parallel.plan=auto set the layout). */
export function validate(c: TrainConfig): void {
  const pos = (k: string, v: number | null) => {
    if (v !== null && !(v > 0)) throw new TrainConfigError(`${k} must be positive, got ${v}`);
  };
  pos("train.batch_size", c.train.batch_size);
  pos("train.seq_len", c.train.seq_len);
  pos("train.grad_accum", c.train.grad_accum);
  pos("train.steps", c.train.steps);
  pos("optim.lr", c.optim.lr);
  pos("data.vocab_size", c.data.vocab_size);
  pos("checkpoint.keep_last", c.checkpoint.keep_last);
  if (c.optim.min_lr < 0 || c.optim.min_lr > c.optim.lr) throw new TrainConfigError(`optim.min_lr must be in [0, optim.lr], got ${c.optim.min_lr}`);
  if (!(c.optim.wsd_decay_fraction > 0 && c.optim.wsd_decay_fraction <= 1)) throw new TrainConfigError(`optim.wsd_decay_fraction must be in (0, 1]`);
  if (!(c.data.val_fraction > 0 && c.data.val_fraction < 1)) throw new TrainConfigError(`data.val_fraction must be in (0, 1)`);
  if (c.model.capacity_factor <= 0) throw new TrainConfigError(`model.capacity_factor must be positive`);
  pos("parallel.dp", c.parallel.dp);
  pos("parallel.ep", c.parallel.ep);
  if (c.parallel.dp % c.parallel.ep !== 0) throw new TrainConfigError(`parallel.ep (${c.parallel.ep}) must divide parallel.dp (${c.parallel.dp}): expert-parallel groups are folded into the data-parallel ranks`);
  if (c.parallel.zero !== 0 && c.parallel.zero !== 1) throw new TrainConfigError(`parallel.zero must be 0 or 1, got ${c.parallel.zero}`);
  pos("parallel.pp", c.parallel.pp);
  pos("parallel.bucket_mb", c.parallel.bucket_mb);
  pos("parallel.tp", c.parallel.tp);
  pos("parallel.etp", c.parallel.etp);
  if (c.parallel.etp !== null && c.parallel.etp !== c.parallel.tp) throw new TrainConfigError(`parallel.etp (${c.parallel.etp}) must equal parallel.tp (${c.parallel.tp}) or be null: experts are split over the whole tensor-parallel group (other expert layouts: parallel.ep)`);
  if (c.parallel.edp && c.parallel.tp === 1) throw new TrainConfigError("parallel.edp=true needs parallel.tp > 1: the tensor-parallel group is the expert group");
  if (c.parallel.edp && c.parallel.etp !== null) throw new TrainConfigError(`parallel.edp=true with parallel.etp=${c.parallel.etp}: under EDP experts are whole on their rank, not column-split; leave parallel.etp unset`);
  if (c.parallel.edp && c.parallel.ep > 1) throw new TrainConfigError(`parallel.edp=true with parallel.ep=${c.parallel.ep}: under EDP the tensor-parallel group is the expert group already; use one of them (parallel.ep with parallel.tp splits experts over data-parallel replicas, each column-split over tp)`);
  try {
    if (c.parallel.pp_layers !== null) parseStageList("parallel.pp_layers", c.parallel.pp_layers, c.parallel.pp, 1);
    if (c.parallel.recompute !== null) parseStageList("parallel.recompute", c.parallel.recompute, c.parallel.pp, 0);
  } catch (e) {
    throw new TrainConfigError((e as Error).message);
  }
  if (c.train.grad_accum % c.parallel.dp !== 0) {
    throw new TrainConfigError(`train.grad_accum (${c.train.grad_accum}) must be a multiple of parallel.dp (${c.parallel.dp}): the global batch batch_size × grad_accum is split into whole micro-batches per rank`);
  }
  // every remaining range, checked before any work starts (keys as documented in --options)
  const nonneg = (k: string, v: number | null) => {
    if (v !== null && !(v >= 0)) throw new TrainConfigError(`${k} must be ≥ 0, got ${v}`);
  };
  nonneg("checkpoint.every", c.checkpoint.every);
  nonneg("eval.every", c.eval.every);
  pos("eval.batches", c.eval.batches);
  nonneg("sample.every", c.sample.every);
  nonneg("sample.tokens", c.sample.tokens);
  nonneg("sample.temperature", c.sample.temperature);
  nonneg("optim.warmup_steps", c.optim.warmup_steps);
  nonneg("optim.weight_decay", c.optim.weight_decay);
  nonneg("optim.grad_clip", c.optim.grad_clip);
  pos("optim.eps", c.optim.eps);
  nonneg("train.nan_tolerance", c.train.nan_tolerance);
  nonneg("train.max_minutes", c.train.max_minutes);
  pos("train.threads", c.train.threads);
  nonneg("model.init_std", c.model.init_std);
  pos("model.gate_norm_std", c.model.gate_norm_std);
  nonneg("model.sparsemixer_eps", c.model.sparsemixer_eps);
  for (const k of ["num_experts", "top_k", "hidden_size", "num_layers", "num_heads", "num_kv_heads", "expert_size"] as const) pos(`model.${k}`, c.model[k]);
  if (c.model.top_k !== null && c.model.num_experts !== null && c.model.top_k > c.model.num_experts) {
    throw new TrainConfigError(`model.top_k (${c.model.top_k}) must be at most model.num_experts (${c.model.num_experts})`);
  }
  const unit = (k: string, v: number) => {
    if (!(v >= 0 && v < 1)) throw new TrainConfigError(`${k} must be in [0, 1), got ${v}`);
  };
  unit("optim.beta1", c.optim.beta1);
  unit("optim.beta2", c.optim.beta2);
  unit("balance.beta", c.balance.beta);
  for (const k of ["coef", "xi", "alpha_max", "alpha0", "z_coef", "bias_rate"] as const) nonneg(`balance.${k}`, c.balance[k]);
  if (c.data.vocab_size < 257) throw new TrainConfigError(`data.vocab_size must be at least 257 (256 bytes + a special token)`);
}

/** The schema as Markdown rows (for the README). */
export function schemaMarkdown(): string {
  const rows = ["| key | default | meaning |", "|---|---|---|"];
  for (const [s, fields] of Object.entries(TRAIN_SCHEMA)) {
    for (const [k, f] of Object.entries(fields)) rows.push(`| \`${s}.${k}\` | \`${JSON.stringify((f as Field).default)}\` | ${(f as Field).doc} |`);
  }
  return rows.join("\n");
}
