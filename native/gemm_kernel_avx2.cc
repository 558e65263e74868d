// GEMM micro-kernel (avx2): placeholder until implemented.
