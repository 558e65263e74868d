// Scaled RoPE: the inverse frequencies and attention factor of the `rope_scaling` types the
// supported families' released checkpoints use, following transformers'
// modeling_rope_utils.py (and modeling_phimoe.py for PhiMoE's short/long mscale):
//   linear    inv_freq / factor
//   llama3    low-frequency pairs / factor, high-frequency kept, a smooth ramp between
//             (low_freq_factor, high_freq_factor, original_max_position_embeddings)
//   yarn      ramp between interpolated (/factor) and extrapolated frequencies over the pairs
//             whose rotations in the original context lie between beta_slow and beta_fast;
//             cos and sin × attention_factor (default 0.1·ln(factor) + 1, or the mscale ratio)
//   longrope  inv_freq / ext_factor[i], ext = long_factor when the sequence is longer than
//             original_max_position_embeddings, else short_factor; cos and sin × the
//             short/long mscale (PhiMoE) or attention_factor (default √(1 + ln f / ln L₀))
// Not: dynamic NTK scaling (it changes with every sequence length; refused by name).
export type RopeScaling =
  | { type: "linear"; factor: number }
  | { type: "llama3"; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMax: number }
  | { type: "yarn"; factor: number; originalMax: number; betaFast: number; betaSlow: number; attentionFactor: number }
  | { type: "longrope"; shortFactor: number[]; longFactor: number[]; originalMax: number; shortScale: number; longScale: number };

export class RopeScalingError extends Error {
  override name = "RopeScalingError";
}

function num(o: Record<string, unknown>, k: string, d?: number): number {
  const v = o[k] ?? d;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new RopeScalingError(`rope_scaling.${k} must be a finite number, got ${JSON.stringify(o[k])}`);
  return v;
}

/**
 * Parses an HF `rope_scaling` object. maxPos is the config's max_position_embeddings;
 * originalMaxTop the top-level original_max_position_embeddings (PhiMoE keeps it there).
 */
export function parseRopeScaling(rs: Record<string, unknown>, rotaryDim: number, maxPos: number, originalMaxTop?: number): RopeScaling {
  const type = rs.rope_type ?? rs.type;
  const origMax = (d: number) => num(rs, "original_max_position_embeddings", originalMaxTop ?? d);
  switch (type) {
    case "linear":
      return { type, factor: num(rs, "factor") };
    case "llama3":
      return { type, factor: num(rs, "factor"), lowFreqFactor: num(rs, "low_freq_factor"), highFreqFactor: num(rs, "high_freq_factor"), originalMax: origMax(maxPos) };
    case "yarn": {
      const factor = num(rs, "factor");
      const mscale = (s: number, m = 1) => (s <= 1 ? 1 : 0.1 * m * Math.log(s) + 1);
      let att = rs.attention_factor as number | undefined;
      if (att === undefined || att === null) {
        const m = rs.mscale as number | undefined, mad = rs.mscale_all_dim as number | undefined;
        att = m && mad ? mscale(factor, m) / mscale(factor, mad) : mscale(factor);
      }
      return { type, factor, originalMax: origMax(maxPos), betaFast: num(rs, "beta_fast", 32), betaSlow: num(rs, "beta_slow", 1), attentionFactor: num({ a: att }, "a") };
    }
    case "longrope": {
      const half = rotaryDim / 2;
      const list = (k: string): number[] => {
        const v = rs[k];
        if (!Array.isArray(v) || v.length !== half || !v.every((x) => typeof x === "number" && x > 0)) throw new RopeScalingError(`rope_scaling.${k} must be ${half} positive numbers (rotary dim / 2)`);
        return v as number[];
      };
      const originalMax = origMax(maxPos);
      const f = maxPos / originalMax;
      const dflt = rs.attention_factor !== undefined ? num(rs, "attention_factor") : f <= 1 ? 1 : Math.sqrt(1 + Math.log(f) / Math.log(originalMax));
      return {
        type, shortFactor: list("short_factor"), longFactor: list("long_factor"), originalMax,
        shortScale: rs.short_mscale !== undefined ? num(rs, "short_mscale") : dflt, longScale: rs.long_mscale !== undefined ? num(rs, "long_mscale") : dflt,
      };
    }
    default:
      throw new RopeScalingError(`rope_scaling type ${JSON.stringify(type)} is not supported (supported: linear, llama3, yarn, longrope)`);
  }
}

/** Inverse frequencies (rotaryDim/2) and cos/sin factor for a forward over positions < seqLen. */
export function ropeFrequencies(theta: number, rotaryDim: number, scaling: RopeScaling | null | undefined, seqLen: number): { invFreq?: Float64Array; scale: number } {
  if (!scaling) return { scale: 1 };
  const half = rotaryDim / 2;
  const base = Float64Array.from({ length: half }, (_, i) => Math.pow(theta, (-2 * i) / rotaryDim));
  switch (scaling.type) {
    case "linear":
      return { invFreq: base.map((f) => f / scaling.factor), scale: 1 };
    case "llama3": {
      const { factor, lowFreqFactor: lo, highFreqFactor: hi, originalMax: L0 } = scaling;
      const lowWave = L0 / lo, highWave = L0 / hi;
      const out = base.map((f) => {
        const wave = (2 * Math.PI) / f;
        if (wave < highWave) return f;
        if (wave > lowWave) return f / factor;
        const smooth = (L0 / wave - lo) / (hi - lo);
        return (1 - smooth) * (f / factor) + smooth * f;
      });
      return { invFreq: out, scale: 1 };
    }
    case "yarn": {
      const { factor, originalMax: L0, betaFast, betaSlow } = scaling;
      const corr = (rot: number) => (rotaryDim * Math.log(L0 / (rot * 2 * Math.PI))) / (2 * Math.log(theta));
      const low = Math.max(Math.floor(corr(betaFast)), 0);
      let high = Math.min(Math.ceil(corr(betaSlow)), rotaryDim - 1);
      if (low === high) high += 0.001;
      const out = new Float64Array(half);
      for (let i = 0; i < half; i++) {
        const ramp = Math.min(1, Math.max(0, (i - low) / (high - low)));
        const extrap = 1 - ramp;
        out[i] = (base[i]! / factor) * (1 - extrap) + base[i]! * extrap;
      }
      return { invFreq: out, scale: scaling.attentionFactor };
    }
    case "longrope": {
      const long = seqLen > scaling.originalMax;
      const ext = long ? scaling.longFactor : scaling.shortFactor;
      return { invFreq: base.map((f, i) => f / ext[i]!), scale: long ? scaling.longScale : scaling.shortScale };
    }
  }
}
