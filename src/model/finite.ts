// The finiteness check of weights read from a file (GGUF import; the safetensors loader has its
// own in model/checkpoint.ts): NaN or Inf weights give NaN outputs with exit 0 downstream, so a
// tensor holding one is refused at load, by name and index. Not: checks of outputs.

/** The index of the first NaN or ±Inf in `a`, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i]!)) return i;
  return -1;
}

export class NonFiniteWeightsError extends Error {
  override name = "NonFiniteWeightsError";
}

/** Returns `values` (tensor `name` of `file`) when every value is finite; else throws naming the tensor and the first bad index. */
export function checkFiniteTensor<T extends ArrayLike<number>>(file: string, name: string, values: T): T {
  const i = firstNonFinite(values);
  if (i >= 0) throw new NonFiniteWeightsError(`${file}: tensor ${name} holds non-finite values (NaN or Inf): ${name}[${i}] = ${values[i]}`);
  return values;
}
