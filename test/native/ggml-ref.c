// Test harness: ggml's own quantisers and dequantisers (libggml-base from node-llama-cpp) and
// llama.cpp's model quantiser (libllama), for test/gguf-quant.test.ts. Built by test/ggml-ref.ts.
//   ggml-ref q TYPE N in.f32 out.bin    quantize_row_<type>_ref over N floats
//   ggml-ref d TYPE N in.bin out.f32    dequantize_row_<type> of N values
//   ggml-ref m in.gguf out.gguf FTYPE   llama_model_quantize (no imatrix), FTYPE a llama_ftype id
// TYPE: q4_0 q4_1 q5_0 q5_1 q8_0 q4_k q5_k q6_k bf16. Prototypes are declared here (no headers).
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*qfn)(const float *, void *, int64_t);
typedef void (*dfn)(const void *, float *, int64_t);
#define DECL(t) void quantize_row_##t##_ref(const float *, void *, int64_t); void dequantize_row_##t(const void *, float *, int64_t);
DECL(q4_0) DECL(q4_1) DECL(q5_0) DECL(q5_1) DECL(q8_0) DECL(q4_K) DECL(q5_K) DECL(q6_K)
void ggml_fp32_to_bf16_row_ref(const float *, uint16_t *, int64_t);
void ggml_bf16_to_fp32_row(const uint16_t *, float *, int64_t);

struct llama_model_quantize_params {
  int32_t nthread; int32_t ftype; int32_t output_tensor_type; int32_t token_embedding_type;
  bool allow_requantize; bool quantize_output_tensor; bool only_copy; bool pure; bool keep_split; bool dry_run;
  const void * imatrix; const void * kv_overrides; const void * tt_overrides; const int32_t * prune_layers; size_t max_buf_size;
};
struct llama_model_quantize_params llama_model_quantize_default_params(void);
uint32_t llama_model_quantize(const char *, const char *, const struct llama_model_quantize_params *);
void llama_backend_init(void);

static void bf16_q(const float * x, void * y, int64_t n) { ggml_fp32_to_bf16_row_ref(x, (uint16_t *) y, n); }
static void bf16_d(const void * x, float * y, int64_t n) { ggml_bf16_to_fp32_row((const uint16_t *) x, y, n); }

struct ty { const char * name; int blck; int bytes; qfn q; dfn d; };
static const struct ty TYPES[] = {
  {"q4_0", 32, 18, (qfn) quantize_row_q4_0_ref, (dfn) dequantize_row_q4_0},
  {"q4_1", 32, 20, (qfn) quantize_row_q4_1_ref, (dfn) dequantize_row_q4_1},
  {"q5_0", 32, 22, (qfn) quantize_row_q5_0_ref, (dfn) dequantize_row_q5_0},
  {"q5_1", 32, 24, (qfn) quantize_row_q5_1_ref, (dfn) dequantize_row_q5_1},
  {"q8_0", 32, 34, (qfn) quantize_row_q8_0_ref, (dfn) dequantize_row_q8_0},
  {"q4_k", 256, 144, (qfn) quantize_row_q4_K_ref, (dfn) dequantize_row_q4_K},
  {"q5_k", 256, 176, (qfn) quantize_row_q5_K_ref, (dfn) dequantize_row_q5_K},
  {"q6_k", 256, 210, (qfn) quantize_row_q6_K_ref, (dfn) dequantize_row_q6_K},
  {"bf16", 1, 2, bf16_q, bf16_d},
};

static void * slurp(const char * f, size_t want) {
  FILE * fp = fopen(f, "rb");
  if (!fp) { perror(f); exit(2); }
  void * b = malloc(want ? want : 1);
  if (fread(b, 1, want, fp) != want) { fprintf(stderr, "%s: short read\n", f); exit(2); }
  fclose(fp);
  return b;
}
static void spit(const char * f, const void * b, size_t n) {
  FILE * fp = fopen(f, "wb");
  if (!fp || fwrite(b, 1, n, fp) != n) { perror(f); exit(2); }
  fclose(fp);
}

int main(int argc, char ** argv) {
  if (argc == 5 && strcmp(argv[1], "m") == 0) {
    llama_backend_init();
    struct llama_model_quantize_params p = llama_model_quantize_default_params();
    p.ftype = atoi(argv[4]);
    p.nthread = 1;
    return (int) llama_model_quantize(argv[2], argv[3], &p);
  }
  if (argc != 6) { fprintf(stderr, "usage: see the header\n"); return 2; }
  const struct ty * t = NULL;
  for (size_t i = 0; i < sizeof TYPES / sizeof TYPES[0]; i++) if (strcmp(TYPES[i].name, argv[2]) == 0) t = &TYPES[i];
  if (!t) { fprintf(stderr, "unknown type %s\n", argv[2]); return 2; }
  int64_t n = atoll(argv[3]);
  size_t nbytes = (size_t) (n / t->blck) * t->bytes;
  if (strcmp(argv[1], "q") == 0) {
    float * x = slurp(argv[4], n * 4);
    void * y = calloc(nbytes, 1);
    t->q(x, y, n);
    spit(argv[5], y, nbytes);
  } else {
    void * x = slurp(argv[4], nbytes);
    float * y = calloc(n, 4);
    t->d(x, y, n);
    spit(argv[5], y, n * 4);
  }
  return 0;
}
