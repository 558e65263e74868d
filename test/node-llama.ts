// Loads node-llama-cpp (a dev dependency) for the llama.cpp parity tests, or null when it is not
// installed (those tests then skip with a message). Each test types the slice of the API it uses.
export async function loadNodeLlamaCpp<T>(): Promise<T | null> {
  const specifier: string = "node-llama-cpp";
  try {
    return (await import(specifier)) as T;
  } catch {
    return null;
  }
}

// The slice of the node-llama-cpp 3.x API the parity tests and bench/infer.ts use, typed here so they compile
// without the package (it is imported by a non-literal specifier).
export type Token = number;
export type ControlledEvaluateInputItem = Token | [Token, { generateNext?: { probabilities?: boolean; token?: boolean; options?: { temperature?: number } } }];
export interface LlamaSequence {
  controlledEvaluate(input: ControlledEvaluateInputItem[]): Promise<({ next: { token?: Token | null; probabilities?: Map<Token, number> } } | undefined)[]>;
  evaluate(tokens: Token[], options?: { temperature?: number; yieldEogToken?: boolean }): AsyncGenerator<Token, void, void>;
  evaluateWithoutGeneratingNewTokens(tokens: Token[]): Promise<void>;
  clearHistory(): Promise<void>;
}
export interface LlamaContext {
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
  readonly contextSize: number;
}
export interface LlamaModel {
  tokenize(text: string, specialTokens?: boolean): Token[];
  createContext(options: Record<string, unknown>): Promise<LlamaContext>;
  dispose(): Promise<void>;
}
export interface Llama {
  loadModel(options: { modelPath: string }): Promise<LlamaModel>;
  dispose(): Promise<void>;
}
export interface NodeLlamaCpp {
  getLlama(options: Record<string, unknown>): Promise<Llama>;
  LlamaLogLevel: { error: string };
}
