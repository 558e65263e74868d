// Which GGUF tensor type each tensor of an exported model gets, for every `--dtype` of
// `moe export --format gguf`, and the file's general.file_type (llama_ftype). The one place
// both exporters (model/gguf-model.ts for `llama`, model/gguf-families.ts for the others) ask.
//
//   dtype    matrices (2-D and 3-D weights)                      general.file_type
//   f32      F32                                                  0  ALL_F32
//   f16      F16                                                  1  MOSTLY_F16
//   bf16     BF16                                                 32 MOSTLY_BF16
//   q8_0     Q8_0                                                 7  MOSTLY_Q8_0
//   q4_0     Q4_0                                                 2  MOSTLY_Q4_0
//   q4_k     Q4_K                                                 14 MOSTLY_Q4_K_S (the closest label)
//   q6_k     Q6_K                                                 18 MOSTLY_Q6_K
//   q4_k_m   llama.cpp's Q4_K_M mix (below)                       15 MOSTLY_Q4_K_M
// Vectors, norms and routers (ffn_gate_inp*) stay F32 for every dtype, as llama.cpp keeps them.
//
// Q4_K_M follows llama.cpp's llama_tensor_get_type (src/llama-quant.cpp, no imatrix):
// Q4_K by default; output.weight — or token_embd.weight when the file has no output.weight
// (tied) — Q6_K; attn_v Q6_K in the layers use_more_bits picks (the first and last eighth and
// every third layer between); ffn_down (experts and shared expert) Q6_K in the same layers;
// with exactly 8 experts attn_v and attn_k Q8_0. One documented simplification: where llama.cpp
// picks Q5_K (attn_output of 8-expert models) this writes Q6_K, and where a row length is not a
// multiple of 256 the fallback is Q4_K → Q4_0 and Q6_K → Q8_0 (llama.cpp: Q4_K → Q5_0), so
// every tensor stays in a type the inference engine runs from its blocks. A row length that is
// not a multiple of 32 falls back to F16 (as llama.cpp). Each fallback adds a warning.
// q4_0 and q6_k are pure (every matrix in that type); llama.cpp's ftypes of the same names also
// put the output (or a tied token_embd) in Q6_K and, with 8 experts, attn_k / attn_v in Q8_0.
// Apart from these, test/gguf-quant-llama.test.ts shows llama.cpp's quantiser turning our F32
// export into files byte-identical to ours for Q4_K_M, Q4_0, Q6_K, Q8_0 and BF16.
//
// Not: the codecs (io/gguf.ts, core/quant-blocks.ts), or the tensor maps.
import { ggmlBlockSize, type GgmlTypeName } from "../io/gguf.js";

export type ExportDtype = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_k" | "q6_k" | "q4_k_m";
export const EXPORT_DTYPES: readonly ExportDtype[] = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k", "q4_k_m"];

/** llama_ftype of the file (general.file_type). */
export const FILE_TYPE: Readonly<Record<ExportDtype, number>> = { f32: 0, f16: 1, bf16: 32, q8_0: 7, q4_0: 2, q4_k: 14, q6_k: 18, q4_k_m: 15 };

/** Whether the file gets general.quantization_version (llama.cpp writes it for block-quantised files). */
export const isBlockQuantised = (d: ExportDtype): boolean => d !== "f32" && d !== "f16" && d !== "bf16";

export interface TensorTypeContext {
  numLayers: number;
  numExperts: number;
  /** The file has no output.weight (llama.cpp then quantises token_embd as the output). */
  tiedOutput: boolean;
  warnings: string[];
}

const MATRIX_TYPE: Readonly<Record<Exclude<ExportDtype, "q4_k_m">, GgmlTypeName>> = { f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0", q4_0: "Q4_0", q4_k: "Q4_K", q6_k: "Q6_K" };

/** llama.cpp's use_more_bits(i_layer, n_layers). */
export function useMoreBits(i: number, n: number): boolean {
  return i < Math.trunc(n / 8) || i >= Math.trunc((7 * n) / 8) || (i - Math.trunc(n / 8)) % 3 === 2;
}

/** The layer index of a `blk.N.` tensor name, or -1. */
function layerOf(name: string): number {
  const m = /^blk\.(\d+)\./.exec(name);
  return m ? Number(m[1]) : -1;
}

/** llama.cpp's Q4_K_M choice for one matrix (before the row-length fallback). */
function q4kmType(name: string, ctx: TensorTypeContext): GgmlTypeName {
  if (name === "output.weight" || (ctx.tiedOutput && name === "token_embd.weight")) return "Q6_K";
  const l = layerOf(name);
  if (name.includes("attn_v.weight")) {
    if (ctx.numExperts === 8) return "Q8_0";
    return useMoreBits(l, ctx.numLayers) ? "Q6_K" : "Q4_K";
  }
  if (name.includes("attn_k.weight") && ctx.numExperts === 8) return "Q8_0";
  if (name.includes("attn_output.weight") && ctx.numExperts === 8) return "Q6_K"; // llama.cpp: Q5_K
  if (name.includes("ffn_down") && useMoreBits(l, ctx.numLayers)) return "Q6_K";
  return "Q4_K";
}

const FALLBACK: Partial<Record<GgmlTypeName, GgmlTypeName>> = { Q4_K: "Q4_0", Q6_K: "Q8_0", Q4_0: "F16", Q8_0: "F16" };

/**
 * The GGUF type of one exported tensor. `shape` is row-major (the last dim is the row);
 * keepF32 marks norms, biases and routers.
 */
export function ggufTensorType(dtype: ExportDtype, name: string, shape: readonly number[], keepF32: boolean, ctx: TensorTypeContext): GgmlTypeName {
  if (keepF32 || shape.length === 1) return "F32";
  let t: GgmlTypeName = dtype === "q4_k_m" ? q4kmType(name, ctx) : MATRIX_TYPE[dtype];
  const row = shape[shape.length - 1]!;
  const want = t;
  while (row % ggmlBlockSize(t) !== 0) t = FALLBACK[t] ?? "F16";
  if (t !== want) ctx.warnings.push(`${name}: row length ${row} is not a multiple of ${ggmlBlockSize(want)}; written as ${t} instead of ${want}`);
  return t;
}
