{
  "targets": [
    {
      "target_name": "moe_mpi",
      "sources": ["mpi.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "OMPI_SKIP_MPICXX=1", "MPICH_SKIP_MPICXX=1"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags_cc": ["-std=c++17", "-O2", "-fexceptions", "<!@(node -p \"process.env.MOE_MPI_CFLAGS || ''\")"],
      "libraries": ["-lpthread", "<!@(node -p \"process.env.MOE_MPI_LIBS || ''\")"]
    }
  ]
}
