// GEMM micro-kernel (avx512): placeholder until implemented.
