/* Run a solir artifact from C, without Python.
 *
 *   solir compile model.onnx -o build/model
 *   cc -O2 -I build/model examples/c/run_model.c build/model/model.so build/model/libsolir_rt.so.2 \
 *      -Wl,-rpath,'$ORIGIN/build/model' -o run_model      (or see the Makefile)
 *   ./run_model in0.bin [in1.bin ...] --out out        # writes out0.bin, out1.bin, ...
 *
 * Inputs and outputs are raw little-endian arrays in the layout model.h documents (dense,
 * row-major); `numpy.ndarray.tofile` / `numpy.fromfile` read and write them. The program
 * knows nothing about the model beyond what model.h declares. */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static void *read_file(const char *path, size_t want) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return NULL; }
    void *buf = aligned_alloc(64, want ? (want + 63) / 64 * 64 : 64);
    size_t got = buf ? fread(buf, 1, want, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (!buf || got != want || extra) {
        fprintf(stderr, "%s: expected exactly %zu bytes\n", path, want);
        free(buf);
        return NULL;
    }
    return buf;
}

int main(int argc, char **argv) {
    const char *out_prefix = "out";
    const char *inputs_path[SOLIR_NUM_INPUTS + 1];
    int n_in = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) out_prefix = argv[++i];
        else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) solir_set_num_threads(atoi(argv[++i]));
        else if (n_in < SOLIR_NUM_INPUTS) inputs_path[n_in++] = argv[i];
        else { fprintf(stderr, "too many inputs: %s takes %d\n", SOLIR_MODEL_NAME, SOLIR_NUM_INPUTS); return 2; }
    }
    if (n_in != SOLIR_NUM_INPUTS) {
        fprintf(stderr, "usage: %s", argv[0]);
        for (int i = 0; i < SOLIR_NUM_INPUTS; i++) fprintf(stderr, " %s.bin", solir_input_names[i]);
        fprintf(stderr, " [--out PREFIX] [--threads N]\n");
        return 2;
    }
    void *ins[SOLIR_NUM_INPUTS + 1], *outs[SOLIR_NUM_OUTPUTS + 1];
    for (int i = 0; i < SOLIR_NUM_INPUTS; i++)
        if (!(ins[i] = read_file(inputs_path[i], solir_input_bytes[i]))) return 1;
    for (int i = 0; i < SOLIR_NUM_OUTPUTS; i++)
        if (!(outs[i] = aligned_alloc(64, (solir_output_bytes[i] + 63) / 64 * 64 + 64))) return 1;
    void *workspace = aligned_alloc(64, (SOLIR_WORKSPACE_BYTES + 63) / 64 * 64 + 64);
    if (!workspace) return 1;

    if (SOLIR_MODEL_ENTRY(ins, outs, workspace) != 0) {
        fprintf(stderr, "%s failed\n", SOLIR_MODEL_NAME);
        return 1;
    }

    for (int i = 0; i < SOLIR_NUM_OUTPUTS; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s%d.bin", out_prefix, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(outs[i], 1, solir_output_bytes[i], f) != solir_output_bytes[i]) {
            perror(path);
            return 1;
        }
        fclose(f);
        printf("%s: %zu bytes -> %s\n", solir_output_names[i], solir_output_bytes[i], path);
        free(outs[i]);
    }
    for (int i = 0; i < SOLIR_NUM_INPUTS; i++) free(ins[i]);
    free(workspace);
    return 0;
}
