{
  "variables": { "moe_blas%": "<!(node -p \"process.env.MOE_BUILD_BLAS === '1' ? 1 : 0\")" },
  "targets": [
    {
      "target_name": "moe_native",
      "sources": [
        "native/addon.cc",
        "native/pool.cc",
        "native/gemm.cc",
        "native/gemm_driver.cc",
        "native/gemm_kernel_scalar.cc",
        "native/gemm_kernel_avx2.cc",
        "native/gemm_kernel_avx512.cc",
        "native/gemm_bf16.cc",
        "native/attention.cc",
        "native/ops.cc",
        "native/rope.cc",
        "native/route.cc",
        "native/convert.cc",
        "native/paged_attention.cc",
        "native/quant_blocks.cc",
        "native/quant_blocks_avx2.cc",
        "native/quant_blocks_avx512.cc",
        "native/quant_q8act.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-math-errno", "-fexceptions"],
      "libraries": ["-lpthread"],
      "conditions": [
        ["moe_blas==1", {
          "defines": ["MOE_HAVE_CBLAS=1"],
          "cflags_cc": ["<!@(pkg-config --cflags openblas)"],
          "libraries": ["<!@(pkg-config --libs openblas)"]
        }]
      ],
      "target_conditions": [
        ["_target_name=='moe_native'", {}]
      ]
    }
  ]
}
