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
