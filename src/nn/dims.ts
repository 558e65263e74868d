// Dimension letters used across nn/ and moe/ (declared once):
// B batch, T sequence, C channels (hidden size), V vocab, L layers, NH query heads,
// KVH key/value heads, HS head size, N = B·T tokens, E experts, K top-k,
// F expert hidden size, I dense FFN hidden size, M rows after dispatch (≤ N·K).
export type FArr = Float32Array | Float64Array;
export type FCtor = Float32ArrayConstructor | Float64ArrayConstructor;
