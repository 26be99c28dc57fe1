/* This machine's limits, measured: fp32 FMA peak (independent FMA chains in the widest
 * vectors the compiler targets) and STREAM triad bandwidth (a = b + s*c over arrays much
 * larger than the last-level cache), with T threads. benchmarks/run.py builds and runs it.
 *
 *   cc -O2 -march=native -ffp-contract=fast -pthread peak.c -o peak && ./peak 1
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef __AVX512F__
#define WIDTH 16
#define CHAINS 12
#else
#define WIDTH 8
#define CHAINS 10
#endif
typedef float vec __attribute__((vector_size(WIDTH * 4)));

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static long fma_iters = 100000000;
static volatile float sink;

static void *fma_worker(void *arg) {
    (void)arg;
    vec acc[CHAINS], x, y;
    for (int k = 0; k < WIDTH; k++) { x[k] = 1.0000001f; y[k] = 0.9999999f; }
    for (int i = 0; i < CHAINS; i++) acc[i] = x * (float)i;
    for (long n = 0; n < fma_iters; n++)
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * x + y;
    float s = 0;
    for (int i = 0; i < CHAINS; i++) for (int k = 0; k < WIDTH; k++) s += acc[i][k];
    sink = s;
    return NULL;
}

#define N (1L << 24)   /* 64 MiB per array */
static float *a, *b, *c;
static int nthreads;

static void *triad_worker(void *arg) {
    long id = (long)arg, lo = N / nthreads * id, hi = id == nthreads - 1 ? N : N / nthreads * (id + 1);
    for (long i = lo; i < hi; i++) a[i] = b[i] + 3.0f * c[i];
    return NULL;
}

static double run(void *(*fn)(void *), int t) {
    pthread_t th[64];
    double t0 = now();
    for (long i = 0; i < t; i++) pthread_create(&th[i], NULL, fn, (void *)i);
    for (int i = 0; i < t; i++) pthread_join(th[i], NULL);
    return now() - t0;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 1;
    if (nthreads < 1 || nthreads > 64) nthreads = 1;
    double best = 1e30;
    for (int r = 0; r < 3; r++) { double s = run(fma_worker, nthreads); if (s < best) best = s; }
    double gflops = 2.0 * WIDTH * CHAINS * (double)fma_iters * nthreads / best / 1e9;
    a = aligned_alloc(64, N * 4); b = aligned_alloc(64, N * 4); c = aligned_alloc(64, N * 4);
    if (!a || !b || !c) return 1;
    for (long i = 0; i < N; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
    best = 1e30;
    for (int r = 0; r < 5; r++) { double s = run(triad_worker, nthreads); if (s < best) best = s; }
    printf("{\"threads\": %d, \"fma_gflops\": %.1f, \"triad_gbs\": %.1f, \"vector_bits\": %d}\n",
           nthreads, gflops, 3.0 * N * 4 / best / 1e9, WIDTH * 32);
    return 0;
}
