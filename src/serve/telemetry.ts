// Server metrics (prom-client, one Registry per server: no global state) with vLLM's names and
// meanings under a `moets_` prefix, and the MoE routing telemetry: per layer the tokens routed
// to each expert (a counter), and over a sliding window of engine steps the max/mean load and the
// normalised routing entropy (gauges). `expertLoad()` is the JSON of /v1/moe/expert-load.
//
// Not: HTTP (server.ts).
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Engine } from "../infer/engine.js";
import type { StepStats } from "../infer/runner.js";
import { maxOverMean, normalizedEntropy, type ExpertLoad } from "./dashboard.js";

/** Steps kept in the routing window. */
export const WINDOW_STEPS = 64;

export class Telemetry {
  readonly registry = new Registry();
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly success: Counter<"finished_reason">;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  private readonly expertTokens: Counter<"layer" | "expert">;
  private readonly window: (Int32Array | null)[][] = [];
  private readonly recentTtft: number[] = [];

  constructor(readonly engine: Engine) {
    const r = this.registry, p = "moets_";
    const sec = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60];
    new Gauge({ name: `${p}num_requests_running`, help: "Sequences in the running batch", registers: [r], collect() { this.set(engine.load.running); } });
    new Gauge({ name: `${p}num_requests_waiting`, help: "Sequences waiting to be scheduled", registers: [r], collect() { this.set(engine.load.waiting); } });
    new Gauge({ name: `${p}kv_cache_usage_perc`, help: "Fraction of KV-cache blocks in use (0-1)", registers: [r], collect() { this.set(engine.kv.stats().usage); } });
    new Gauge({ name: `${p}prefix_cache_queries`, help: "Prompt tokens looked up in the prefix cache", registers: [r], collect() { this.set(engine.kv.stats().prefixQueryTokens); } });
    new Gauge({ name: `${p}prefix_cache_hits`, help: "Prompt tokens found in the prefix cache", registers: [r], collect() { this.set(engine.kv.stats().prefixHitTokens); } });
    new Gauge({ name: `${p}num_preemptions`, help: "Sequences preempted (recomputed) since start", registers: [r], collect() { this.set(engine.totals.preemptions); } });
    this.promptTokens = new Counter({ name: `${p}prompt_tokens_total`, help: "Prompt tokens of finished requests", registers: [r] });
    this.generationTokens = new Counter({ name: `${p}generation_tokens_total`, help: "Generated tokens", registers: [r] });
    this.success = new Counter({ name: `${p}request_success_total`, help: "Finished requests by finish reason", labelNames: ["finished_reason"], registers: [r] });
    this.ttft = new Histogram({ name: `${p}time_to_first_token_seconds`, help: "Arrival (tokenisation included) to first token", buckets: sec, registers: [r] });
    this.itl = new Histogram({ name: `${p}inter_token_latency_seconds`, help: "Time between successive tokens of a sequence", buckets: sec, registers: [r] });
    this.e2e = new Histogram({ name: `${p}e2e_request_latency_seconds`, help: "Arrival to last token", buckets: sec, registers: [r] });
    new Histogram({ name: `${p}iteration_tokens_total`, help: "Rows (tokens) per engine step", buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048], registers: [r] });
    this.expertTokens = new Counter({ name: `${p}moe_expert_tokens_total`, help: "Tokens routed to each expert (top-k assignments) per MoE layer", labelNames: ["layer", "expert"], registers: [r] });
    new Gauge({
      name: `${p}moe_max_over_mean_load`, help: `Per MoE layer: max/mean tokens per expert over the last ${WINDOW_STEPS} steps`, labelNames: ["layer"], registers: [r],
      collect: () => { for (const ld of this.windowLoads()) this.gauge("moe_max_over_mean_load").set({ layer: String(ld.layer) }, ld.maxOverMean); },
    });
    new Gauge({
      name: `${p}moe_router_entropy`, help: `Per MoE layer: normalised entropy of the expert distribution over the last ${WINDOW_STEPS} steps (1 = uniform)`, labelNames: ["layer"], registers: [r],
      collect: () => { for (const ld of this.windowLoads()) this.gauge("moe_router_entropy").set({ layer: String(ld.layer) }, ld.entropy); },
    });
    const iter = this.registry.getSingleMetric(`${p}iteration_tokens_total`) as Histogram;
    engine.stepListeners.push((s: StepStats) => {
      iter.observe(s.rows);
      this.window.push(s.tokensPerExpert);
      if (this.window.length > WINDOW_STEPS) this.window.shift();
      s.tokensPerExpert.forEach((c, l) => {
        if (!c) return;
        for (let e = 0; e < c.length; e++) if (c[e]) this.expertTokens.inc({ layer: String(l), expert: String(e) }, c[e]!);
      });
    });
  }

  private gauge(name: string): Gauge {
    return this.registry.getSingleMetric(`moets_${name}`) as Gauge;
  }

  recordTtft(seconds: number): void {
    this.ttft.observe(seconds);
    this.recentTtft.push(seconds * 1e3);
    if (this.recentTtft.length > 32) this.recentTtft.shift();
  }

  /** Per MoE layer: counts over the window and their balance. */
  windowLoads(): { layer: number; counts: Float64Array; maxOverMean: number; entropy: number }[] {
    const cfg = this.engine.weights.cfg, E = cfg.moe.numExperts;
    const out: { layer: number; counts: Float64Array; maxOverMean: number; entropy: number }[] = [];
    cfg.moe.moeLayers.forEach((m, l) => {
      if (!m) return;
      const counts = new Float64Array(E);
      for (const step of this.window) {
        const c = step[l];
        if (c) for (let e = 0; e < E; e++) counts[e]! += c[e]!;
      }
      out.push({ layer: l, counts, maxOverMean: maxOverMean(counts), entropy: normalizedEntropy(counts) });
    });
    return out;
  }

  expertLoad(): ExpertLoad {
    const eng = this.engine, cfg = eng.weights.cfg;
    const layers = this.windowLoads().map((w) => ({
      layer: w.layer, tokens_per_expert: Array.from(eng.totals.tokensPerExpert[w.layer]!), window_tokens_per_expert: Array.from(w.counts),
      max_over_mean: w.maxOverMean, entropy: w.entropy,
    }));
    const t = this.recentTtft;
    return {
      object: "moe.expert_load", timestamp: Date.now(), num_layers: cfg.numLayers, num_experts: cfg.moe.numExperts, layers,
      engine: {
        running: eng.load.running, waiting: eng.load.waiting, steps: eng.totals.steps, prompt_tokens: eng.totals.promptTokens, generated_tokens: eng.totals.generatedTokens,
        kv_cache_usage: eng.kv.stats().usage, ttft_ms_recent: t.length ? t.reduce((a, b) => a + b, 0) / t.length : null,
      },
    };
  }
}
