// Placeholder for the attention benchmark (owned by the attention area, which replaces this
// file on merge). Prints nothing.
export async function runAttentionBench(_opts: { threads: number[]; json: boolean }): Promise<void> {}
