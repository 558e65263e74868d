// GEMM micro-kernel (scalar): placeholder until implemented.
