/* starter.c: the smallest program around a model compiled by hlstmc. It reads the input from
 * a .npy file (float32, C order: what numpy's np.save and `hlstmc run -o` write), runs the
 * whole sequence and prints every output, one line each, as `hlstmc run` computes them.
 *
 *   hlstmc compile model.onnx -o build --name model
 *   cc -O2 -DMODEL=model -I build examples/c/starter.c build/libhlstmc_model.a -lm -o starter
 *   ./starter x.npy
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define STR2(x) #x
#define STR(x) STR2(x)
#define CAT2(a, b) a##_##b
#define CAT(a, b) CAT2(a, b)
#define F(f) CAT(MODEL, f)
#include STR(MODEL.h)

/* A .npy file's float32 values and their count; NULL if it is not float32 in C order. */
static float *read_npy(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    unsigned char pre[12];
    if (!f || fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0) return NULL;
    size_t head = pre[8] | (size_t)pre[9] << 8, at = 10;
    if (pre[6] > 1 && fread(pre + 10, 1, 2, f) == 2) {
        head |= (size_t)pre[10] << 16 | (size_t)pre[11] << 24;
        at = 12;
    }
    char *h = calloc(head + 1, 1);
    if (fread(h, 1, head, f) != head || !strstr(h, "'<f4'") || strstr(h, "True")) return NULL;
    fseek(f, 0, SEEK_END);
    *n = ((size_t)ftell(f) - at - head) / sizeof(float);
    float *x = malloc(*n * sizeof(float) + 1);
    fseek(f, (long)(at + head), SEEK_SET);
    if (fread(x, sizeof(float), *n, f) != *n) return NULL;
    fclose(f);
    free(h);
    return x;
}

int main(int argc, char **argv) {
    size_t n = 0, batch = F(batch)(), steps = F(max_steps)();
    const float *x = argc == 2 ? read_npy(argv[1], &n) : NULL;
    if (!x || F(num_inputs)() != 1) {
        fprintf(stderr, "usage: %s INPUT.npy (float32, C order; a model of one input)\n", argv[0]);
        return 1;
    }
    if (F(dynamic_steps)() && F(input_len)(0, 1) > 0) steps = n / F(input_len)(0, 1);
    if (n != F(input_len)(0, steps)) {
        fprintf(stderr, "the input has %zu floats; the model takes %zu\n", n, F(input_len)(0, steps));
        return 1;
    }
    size_t m = F(num_outputs)();
    float **out = malloc(m * sizeof(float *));
    for (size_t k = 0; k < m; k++) out[k] = malloc(F(output_len)(k, steps) * sizeof(float) + 1);
    void *ctx = F(context_create)(steps, batch);
    int rc = ctx ? F(run)(ctx, steps, batch, &x, out) : -1;
    for (size_t k = 0; rc == 0 && k < m; k++) {
        printf("output %zu:", k);
        for (size_t i = 0; i < F(output_len)(k, steps); i++) printf(" %.9g", out[k][i]);
        printf("\n");
    }
    F(context_free)(ctx);
    if (rc != 0) fprintf(stderr, "the run failed with code %d\n", rc);
    return rc != 0;
}
