/* llama.cpp's own block quantisation and dequantisation values for test/quant-blocks.test.ts.
 *
 * Loads libggml-base.so from node-llama-cpp's prebuilt binaries (the llama.cpp that the
 * project's parity tests already run), quantises fixed pseudo-random rows with
 * ggml_quantize_chunk (no importance matrix: quantize_row_*_ref) to Q8_0, Q4_0, Q4_K and
 * Q6_K, dequantises them with dequantize_row_*, and writes test/golden/ggml_quant.bin.
 * Not: part of the build or of the tests; run once by hand:
 *   gcc -O1 -o /tmp/ggml_quant_golden tools/golden/ggml_quant_golden.c -ldl -lm
 *   /tmp/ggml_quant_golden node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so test/golden/ggml_quant.bin
 *
 * Layout, little-endian: "MOEQ", u32 rows, u32 K, f32 x[rows*K]; then for each format
 * (q8_0, q4_0, q4_k, q6_k): u32 ggml_type, u32 nbytes, u8 blocks[nbytes], f32 deq[rows*K].
 */
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ROWS 10
#define K 512

typedef size_t (*quantize_chunk_fn)(int type, const float* src, void* dst, int64_t start, int64_t nrows, int64_t n_per_row,
                                    const float* imatrix);
typedef void (*dequant_fn)(const void* x, float* y, int64_t k);
typedef size_t (*row_size_fn)(int type, int64_t ne);

static uint64_t state = 0x9E3779B97F4A7C15ull;
static double uni(void) {
  state = state * 6364136223846793005ull + 1442695040888963407ull;
  return ((state >> 11) + 0.5) / 9007199254740992.0;
}
static double gauss(void) { return sqrt(-2.0 * log(uni())) * cos(6.283185307179586 * uni()); }

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s libggml-base.so out.bin\n", argv[0]);
    return 2;
  }
  void* h = dlopen(argv[1], RTLD_NOW);
  if (!h) {
    fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  quantize_chunk_fn qc = (quantize_chunk_fn)dlsym(h, "ggml_quantize_chunk");
  row_size_fn rs = (row_size_fn)dlsym(h, "ggml_row_size");
  const char* names[4] = {"dequantize_row_q8_0", "dequantize_row_q4_0", "dequantize_row_q4_K", "dequantize_row_q6_K"};
  const int types[4] = {8, 2, 12, 14};
  if (!qc || !rs) {
    fprintf(stderr, "missing ggml_quantize_chunk / ggml_row_size\n");
    return 1;
  }
  static float x[ROWS * K];
  for (int r = 0; r < ROWS; ++r) {
    for (int k = 0; k < K; ++k) {
      double v;
      switch (r) {
        case 0: v = gauss(); break;                             /* unit normals */
        case 1: v = 0.02 * gauss(); break;                      /* typical weight scale */
        case 2: v = uni() * 3.0; break;                         /* all positive */
        case 3: v = -uni() * 0.5 - 0.1; break;                  /* all negative */
        case 4: v = gauss() * (k % 97 == 0 ? 40.0 : 1.0); break; /* outliers */
        case 5: v = gauss() * pow(10.0, (k / 32) % 4 - 2); break; /* scales varying per 32 */
        case 6: v = (k / 64) % 2 ? 0.0 : gauss(); break;        /* zero sub-blocks */
        case 7: v = 1e-6 * gauss(); break;                      /* tiny */
        case 8: v = floor(gauss() * 4.0) / 4.0; break;          /* ties on the grid */
        default: v = 5.0 + 0.01 * gauss(); break;               /* large offset, small spread */
      }
      x[r * K + k] = (float)v;
    }
  }
  FILE* f = fopen(argv[2], "wb");
  if (!f) return 1;
  uint32_t hdr[2] = {ROWS, K};
  fwrite("MOEQ", 1, 4, f);
  fwrite(hdr, 4, 2, f);
  fwrite(x, 4, ROWS * K, f);
  for (int t = 0; t < 4; ++t) {
    dequant_fn dq = (dequant_fn)dlsym(h, names[t]);
    if (!dq) {
      fprintf(stderr, "missing %s\n", names[t]);
      return 1;
    }
    const size_t rowBytes = rs(types[t], K), nbytes = rowBytes * ROWS;
    uint8_t* q = (uint8_t*)calloc(nbytes, 1);
    const size_t got = qc(types[t], x, q, 0, ROWS, K, NULL);
    if (got != nbytes) {
      fprintf(stderr, "type %d: %zu bytes, expected %zu\n", types[t], got, nbytes);
      return 1;
    }
    static float y[ROWS * K];
    for (int r = 0; r < ROWS; ++r) dq(q + r * rowBytes, y + r * K, K);
    uint32_t th[2] = {(uint32_t)types[t], (uint32_t)nbytes};
    fwrite(th, 4, 2, f);
    fwrite(q, 1, nbytes, f);
    fwrite(y, 4, ROWS * K, f);
    free(q);
  }
  fclose(f);
  return 0;
}
