#define _POSIX_C_SOURCE 200809L
#include "gc_parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* The process-wide thread count, like torch.set_num_threads: read and written atomically. */
static int num_threads = 1;

int gc_get_num_threads(void)
{
    return __atomic_load_n(&num_threads, __ATOMIC_RELAXED);
}

void gc_set_num_threads(int n)
{
    if (n < 1)
        n = 1;
    if (n > GC_MAX_THREADS)
        n = GC_MAX_THREADS;
    __atomic_store_n(&num_threads, n, __ATOMIC_RELAXED);
}

void gc_init_num_threads(const char *env_value)
{
    long n = 0;
    if (env_value != NULL && *env_value != '\0') {
        char *end;
        n = strtol(env_value, &end, 10);
        if (*end != '\0')
            n = 0;
    }
    if (n < 1)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    gc_set_num_threads(n < 1 ? 1 : (int)(n > GC_MAX_THREADS ? GC_MAX_THREADS : n));
}

/* The tasks are handed out in chunks of `chunk` from a shared counter, not cut into one fixed
 * range per thread: a thread that starts late (a new thread on an idle or busy core of a shared
 * machine can take a millisecond to run) or is preempted does less, instead of the whole call
 * waiting for its share. Which thread runs a task never changes what the task computes. */
typedef struct {
    gc_range_fn fn;
    void *ctx;
    size_t ntasks, chunk;
    size_t next; /* the first task not yet handed out; atomic */
} chunked_job;

static void *run_chunks(void *arg)
{
    chunked_job *job = arg;
    for (;;) {
        const size_t begin = __atomic_fetch_add(&job->next, job->chunk, __ATOMIC_RELAXED);
        if (begin >= job->ntasks)
            return NULL;
        const size_t end = job->ntasks - begin < job->chunk ? job->ntasks : begin + job->chunk;
        job->fn(job->ctx, begin, end);
    }
}

void gc_parallel_for(size_t ntasks, size_t grain, gc_range_fn fn, void *ctx)
{
    size_t nthreads = (size_t)gc_get_num_threads();
    if (grain < 1)
        grain = 1;
    if (nthreads > ntasks / grain)
        nthreads = ntasks / grain;
    if (nthreads <= 1) {
        if (ntasks > 0)
            fn(ctx, 0, ntasks);
        return;
    }
    chunked_job job = {fn, ctx, ntasks, grain, 0};
    pthread_t threads[GC_MAX_THREADS];
    int started[GC_MAX_THREADS] = {0};
    for (size_t t = 1; t < nthreads; t++)
        started[t] = pthread_create(&threads[t], NULL, run_chunks, &job) == 0;
    run_chunks(&job); /* a thread that could not start leaves its chunks to this one */
    for (size_t t = 1; t < nthreads; t++) {
        if (started[t])
            pthread_join(threads[t], NULL);
    }
}

typedef struct {
    const char *lo, *hi;
} byte_range;

static int by_start(const void *a, const void *b)
{
    const byte_range *x = a, *y = b;
    return (x->lo > y->lo) - (x->lo < y->lo);
}

int gc_ranges_disjoint(const char *const *lo, const char *const *hi, size_t n)
{
    if (n < 2)
        return 1;
    byte_range *ranges = malloc(n * sizeof *ranges);
    if (ranges == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        ranges[i].lo = lo[i];
        ranges[i].hi = hi[i];
    }
    qsort(ranges, n, sizeof *ranges, by_start);
    int disjoint = 1;
    for (size_t i = 1; i < n && disjoint; i++)
        disjoint = ranges[i - 1].hi <= ranges[i].lo;
    free(ranges);
    return disjoint;
}

static size_t blocks_of(ptrdiff_t size)
{
    return (size_t)((size + GC_BLOCK - 1) / GC_BLOCK);
}

typedef struct {
    const size_t *first; /* first[i]: global index of item i's first block; first[n]: total */
    size_t n;
    gc_size_fn size_of;
    gc_block_fn visit;
    void *ctx;
} block_job;

static void visit_range(void *arg, size_t begin, size_t end)
{
    const block_job *job = arg;
    /* Binary search for the item holding block `begin`. */
    size_t lo = 0, hi = job->n;
    while (hi - lo > 1) {
        const size_t mid = lo + (hi - lo) / 2;
        if (job->first[mid] <= begin)
            lo = mid;
        else
            hi = mid;
    }
    size_t item = lo;
    for (size_t k = begin; k < end; k++) {
        while (job->first[item + 1] <= k)
            item++;
        const ptrdiff_t size = job->size_of(job->ctx, item);
        const ptrdiff_t start = (ptrdiff_t)(k - job->first[item]) * GC_BLOCK;
        const ptrdiff_t stop = size - start < GC_BLOCK ? size : start + GC_BLOCK;
        job->visit(job->ctx, item, start, stop, k);
    }
}

size_t gc_for_each_block(size_t n, gc_size_fn size_of, int parallel, gc_block_fn visit, void *ctx)
{
    size_t *first = NULL;
    if (parallel && gc_get_num_threads() > 1) {
        ptrdiff_t elements = 0;
        for (size_t i = 0; i < n; i++)
            elements += size_of(ctx, i);
        if (elements >= GC_PARALLEL_MIN)
            first = malloc((n + 1) * sizeof *first);
    }
    if (first == NULL) {
        /* One thread (or no memory for the plan): the same blocks, in order. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const ptrdiff_t size = size_of(ctx, i);
            for (ptrdiff_t start = 0; start < size; start += GC_BLOCK, k++)
                visit(ctx, i, start, size - start < GC_BLOCK ? size : start + GC_BLOCK, k);
        }
        return k;
    }
    first[0] = 0;
    for (size_t i = 0; i < n; i++)
        first[i + 1] = first[i] + blocks_of(size_of(ctx, i));
    const size_t total = first[n];
    block_job job = {first, n, size_of, visit, ctx};
    /* Chunks of four blocks (262,144 elements), at least one per thread. */
    gc_parallel_for(total, 4, visit_range, &job);
    free(first);
    return total;
}
