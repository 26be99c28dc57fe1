/* solir's runtime library (libsolir_rt.so.2): the thread pool every model library shares,
 * per-thread scratch memory (solir_scratch) for kernels that pack their operands, and the
 * mapping of a model's weights file (solir_weights).
 *
 * solir_parallel_for(fn, ctx, n) runs fn(ctx, begin, end) over [0, n) in chunks. Chunks are
 * taken from an atomic counter, so when another process takes a core the remaining chunks
 * go to whoever is running (the caller always works too): no barrier waits on a descheduled
 * thread. Idle workers watch briefly for the next job, then sleep on a condition variable
 * and burn no CPU. Each job lives in its
 * own reference-counted record, so a worker that wakes late only ever sees a finished job.
 * Chunk boundaries never change what a unit computes, so results do not depend on the
 * thread count.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef void (*solir_chunk_fn)(void **, int64_t, int64_t);

typedef struct job {
    solir_chunk_fn fn;
    void **ctx;
    int64_t n, grain;
    atomic_int_fast64_t next;
    atomic_int_fast64_t done;
    atomic_int refs;
    int max_workers;
} job_t;

#define MAX_THREADS 256
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t finished = PTHREAD_COND_INITIALIZER;
static job_t *current = NULL;
static atomic_uint_fast64_t generation = 0;
static int num_threads = 1;      /* including the caller */
static int started = 0;          /* worker threads created */
static pthread_t threads[MAX_THREADS];
static pthread_mutex_t busy = PTHREAD_MUTEX_INITIALIZER;   /* one parallel job at a time */

static void release(job_t *j) {
    if (atomic_fetch_sub(&j->refs, 1) == 1) free(j);
}

static void run_chunks(job_t *j) {
    for (;;) {
        int64_t b = atomic_fetch_add(&j->next, j->grain);
        if (b >= j->n) return;
        int64_t e = b + j->grain < j->n ? b + j->grain : j->n;
        j->fn(j->ctx, b, e);
        if (atomic_fetch_add(&j->done, e - b) + (e - b) == j->n) {
            pthread_mutex_lock(&mu);
            pthread_cond_broadcast(&finished);
            pthread_mutex_unlock(&mu);
        }
    }
}

/* After a job a worker watches for the next one for a moment before it sleeps: a model runs
 * its kernels back to back, and waking a sleeping thread costs tens of microseconds, more
 * than a small kernel takes. The watch is bounded (SPIN_ROUNDS pauses, ~200 us), so an idle
 * pool still sleeps and burns no core. */
#define SPIN_ROUNDS 10000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t seen = 0;
    for (;;) {
        for (int spin = 0; spin < SPIN_ROUNDS && atomic_load(&generation) == seen; spin++)
            cpu_relax();
        pthread_mutex_lock(&mu);
        while (current == NULL || generation == seen || id >= current->max_workers)
            pthread_cond_wait(&wake, &mu);
        seen = atomic_load(&generation);
        job_t *j = current;
        atomic_fetch_add(&j->refs, 1);
        pthread_mutex_unlock(&mu);
        run_chunks(j);
        release(j);
    }
    return NULL;
}

void solir_set_num_threads(int n) {
    if (n < 1) n = 1;
    if (n > MAX_THREADS) n = MAX_THREADS;
    pthread_mutex_lock(&mu);
    num_threads = n;
    while (started < n - 1) {
        if (pthread_create(&threads[started], NULL, worker, (void *)(intptr_t)started) != 0) break;
        pthread_detach(threads[started]);
        started++;
    }
    pthread_mutex_unlock(&mu);
}

int solir_get_num_threads(void) { return num_threads; }

void solir_parallel_for(solir_chunk_fn fn, void **ctx, int64_t n) {
    int workers = num_threads - 1 < started ? num_threads - 1 : started;
    if (n <= 1 || workers <= 0) {
        if (n > 0) fn(ctx, 0, n);
        return;
    }
    /* Another thread of the process is running a parallel job: do this one alone rather than
     * wait for it (the results are the same, the pool is busy anyway). */
    if (pthread_mutex_trylock(&busy) != 0) { fn(ctx, 0, n); return; }
    job_t *j = malloc(sizeof(job_t));
    if (j == NULL) { pthread_mutex_unlock(&busy); fn(ctx, 0, n); return; }
    int64_t chunks = (int64_t)(workers + 1) * 4;
    if (chunks > n) chunks = n;
    j->fn = fn; j->ctx = ctx; j->n = n; j->grain = (n + chunks - 1) / chunks;
    atomic_init(&j->next, 0); atomic_init(&j->done, 0); atomic_init(&j->refs, 1);
    j->max_workers = workers;
    pthread_mutex_lock(&mu);
    current = j;
    atomic_fetch_add(&generation, 1);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mu);
    run_chunks(j);
    /* the last chunks are usually a moment away: watch before sleeping */
    for (int spin = 0; spin < SPIN_ROUNDS && atomic_load(&j->done) < n; spin++) cpu_relax();
    pthread_mutex_lock(&mu);
    while (atomic_load(&j->done) < n) pthread_cond_wait(&finished, &mu);
    current = NULL;
    pthread_mutex_unlock(&mu);
    release(j);
    pthread_mutex_unlock(&busy);
}

/* Scratch memory for the calling thread, at least `bytes` long and 64-byte aligned. Each
 * thread keeps one buffer, grown when a larger one is asked for and never freed, so after the
 * first call a kernel's packing buffers cost no allocation. Returns NULL if memory runs out
 * (the caller then has nowhere to pack; the size is small and fixed at compile time). */
void *solir_scratch(int64_t bytes) {
    static __thread void *buf = NULL;
    static __thread int64_t have = 0;
    if (bytes > have) {
        int64_t size = (bytes + 4095) / 4096 * 4096;
        void *p = aligned_alloc(64, (size_t)size);
        if (p == NULL) return NULL;
        free(buf);
        buf = p;
        have = size;
    }
    return buf;
}

/* A model's weights: the file beside the model library that holds `anchor`, named after it
 * with the suffix ".weights" (model.so -> model.weights), mapped read-only on first use and
 * kept for the life of the process. `slot` (a variable of the model library) remembers the
 * address, so later calls cost one load. The weights are not in the library itself: tens of
 * MB of data would pass through the assembler, the linker and two more files on every
 * compile. Returns NULL if the file is missing, is not `bytes` long or cannot be mapped; the
 * model's entry then returns 1 without running. */
void *solir_weights(void **slot, const void *anchor, int64_t bytes) {
    static pthread_mutex_t weights_mu = PTHREAD_MUTEX_INITIALIZER;
    void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (p != NULL) return p;
    pthread_mutex_lock(&weights_mu);
    p = *slot;
    Dl_info info;
    if (p == NULL && bytes > 0 && dladdr(anchor, &info) && info.dli_fname != NULL) {
        const char *name = info.dli_fname;
        const char *base = strrchr(name, '/');
        const char *dot = strrchr(base ? base : name, '.');
        size_t stem = dot ? (size_t)(dot - name) : strlen(name);
        char path[4096];
        if (stem + sizeof ".weights" <= sizeof path) {
            memcpy(path, name, stem);
            memcpy(path + stem, ".weights", sizeof ".weights");
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            struct stat st;
            if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size == bytes) {
                int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
                flags |= MAP_POPULATE;      /* fault the pages in now, not in the first kernels */
#endif
                void *m = mmap(NULL, (size_t)bytes, PROT_READ, flags, fd, 0);
                if (m != MAP_FAILED) p = m;
            }
            if (fd >= 0) close(fd);
        }
        if (p != NULL) __atomic_store_n(slot, p, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&weights_mu);
    return p;
}
