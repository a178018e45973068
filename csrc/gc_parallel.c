#define _POSIX_C_SOURCE 200809L
#include "gc_parallel.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gc_scratch.h"

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
 * range per thread: a thread that starts late (a sleeping core of a shared machine can take a
 * millisecond to wake) or is preempted does less, instead of the whole call waiting for its
 * share. Which thread runs a task never changes what the task computes. */
typedef struct {
    gc_range_fn fn;
    void *ctx;
    size_t ntasks, chunk;
    size_t next; /* the first task not yet handed out; atomic */
} chunked_job;

static void run_chunks(chunked_job *job)
{
    for (;;) {
        const size_t begin = __atomic_fetch_add(&job->next, job->chunk, __ATOMIC_RELAXED);
        if (begin >= job->ntasks)
            return;
        const size_t end = job->ntasks - begin < job->chunk ? job->ntasks : begin + job->chunk;
        job->fn(job->ctx, begin, end);
    }
}

static void *run_chunks_thread(void *arg)
{
    run_chunks(arg);
    return NULL;
}

/* Threads started for one call and joined before it returns: the fallback when the pool is in
 * use by another thread of the process, or cannot be started. */
static void run_on_new_threads(chunked_job *job, size_t nthreads)
{
    pthread_t threads[GC_MAX_THREADS];
    int started[GC_MAX_THREADS] = {0};
    for (size_t t = 1; t < nthreads; t++)
        started[t] = pthread_create(&threads[t], NULL, run_chunks_thread, job) == 0;
    run_chunks(job); /* a thread that could not start leaves its chunks to this one */
    for (size_t t = 1; t < nthreads; t++) {
        if (started[t])
            pthread_join(threads[t], NULL);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The pool: workers that live as long as the process and wait for the next job.
 *
 * clip_grad_norm_ runs two parallel passes back to back (the norm, then the scaling), and a
 * training loop calls it every step: starting threads for each pass costs a thread creation
 * and a wake-up of the other core each time. Pool workers spin for GC_POOL_SPIN_NS after a job
 * (long enough to catch the next pass of the same call), then sleep on a condition variable, so
 * an idle pool costs nothing. While the pool also runs OpenBLAS's parallel sections
 * (gc_set_long_spin), workers spin GC_POOL_LONG_SPIN_NS, as OpenBLAS's own do: a matmul's jobs
 * wait for each other, so a worker woken late (or woken onto the caller's core, which a
 * worker that slept soon after a job often is) holds up the whole matmul, not only its share.
 *
 * A job is published by bumping the generation in `state`; workers join it by incrementing the
 * count of workers inside, which they can do only while the job is open and has room. The
 * caller works on the job too and, when no chunk is left, closes it and waits only for the
 * workers already inside: a worker that wakes late never delays a call, it finds the job closed
 * (or a newer generation: the generation is part of the word it compares and swaps, so it can
 * never join a job it did not read). */
#define GC_POOL_SPIN_NS 100000L
#define GC_POOL_LONG_SPIN_NS 100000000L
#define POOL_CLOSED (UINT64_C(1) << 31)
#define POOL_INSIDE(s) ((s) & (POOL_CLOSED - 1))
#define POOL_GENERATION(s) ((s) >> 32)

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* a new generation was published */
    pthread_cond_t done; /* the last worker left a closed job */
    uint64_t state;      /* atomic: generation << 32 | closed | workers inside */
    chunked_job *job;    /* the job of the current generation */
    size_t room;         /* how many workers the current job takes */
    int nworkers;        /* started; only the thread holding `busy` changes it */
    int busy;            /* atomic: a thread is running a job on the pool */
    int enabled;         /* atomic */
    int awake;           /* atomic: workers not sleeping on `wake` (working or spinning) */
    int adaptive;        /* atomic: use only the cores that look idle (see cores_given); off */
    long worker_spin_ns; /* atomic: how long a worker spins after a job before it sleeps */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, 0, 0, 0, 1, 0, 0,
          GC_POOL_SPIN_NS};

static long elapsed_ns(const struct timespec *since)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - since->tv_sec) * 1000000000L + (now.tv_nsec - since->tv_nsec);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Waits until `ready(arg)` holds: spinning for a while, then on `cond`. */
static void wait_for(int (*ready)(void *), void *arg, pthread_cond_t *cond)
{
    const int worker = cond == &pool.wake;
    const long spin_ns = worker ? __atomic_load_n(&pool.worker_spin_ns, __ATOMIC_RELAXED) : GC_POOL_SPIN_NS;
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (unsigned spins = 0;; spins++) {
        if (ready(arg))
            return;
        cpu_relax();
        if ((spins & 255) == 255 && elapsed_ns(&start) > spin_ns)
            break;
    }
    pthread_mutex_lock(&pool.lock);
    if (worker)
        __atomic_sub_fetch(&pool.awake, 1, __ATOMIC_RELAXED);
    while (!ready(arg))
        pthread_cond_wait(cond, &pool.lock);
    if (worker)
        __atomic_add_fetch(&pool.awake, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pool.lock);
}

static int new_generation(void *seen)
{
    return POOL_GENERATION(__atomic_load_n(&pool.state, __ATOMIC_ACQUIRE)) != *(uint64_t *)seen;
}

static int workers_left(void *unused)
{
    (void)unused;
    return POOL_INSIDE(__atomic_load_n(&pool.state, __ATOMIC_ACQUIRE)) == 0;
}

static void *pool_worker(void *arg)
{
    uint64_t seen = (uint64_t)(uintptr_t)arg; /* the generation current when it was started */
    for (;;) {
        wait_for(new_generation, &seen, &pool.wake);
        uint64_t s = __atomic_load_n(&pool.state, __ATOMIC_ACQUIRE);
        seen = POOL_GENERATION(s);
        int joined = 0;
        while (!joined && POOL_GENERATION(s) == seen && !(s & POOL_CLOSED) && POOL_INSIDE(s) < __atomic_load_n(&pool.room, __ATOMIC_RELAXED))
            joined = __atomic_compare_exchange_n(&pool.state, &s, s + 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
        if (!joined)
            continue;
        run_chunks(pool.job); /* the job cannot change while this worker is inside it */
        s = __atomic_sub_fetch(&pool.state, 1, __ATOMIC_ACQ_REL);
        if ((s & POOL_CLOSED) && POOL_INSIDE(s) == 0) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    return NULL;
}

/* The online CPUs that run nothing right now, from the kernel's count of runnable tasks
 * (/proc/loadavg, about a microsecond to read), not counting the calling thread and our own
 * awake workers; -1 if it cannot be read. */
static long idle_cpus(void)
{
    static int fd = -2;
    static long online;
    if (fd == -2) { /* only the thread holding the pool gets here */
        fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
        online = sysconf(_SC_NPROCESSORS_ONLN);
    }
    char text[128];
    const ssize_t len = fd >= 0 ? pread(fd, text, sizeof text - 1, 0) : -1;
    if (len <= 0 || online < 1)
        return -1;
    text[len] = '\0';
    /* "0.52 0.58 0.59 3/345 12345": the fourth field is runnable/total. */
    const char *field = text;
    for (int spaces = 0; spaces < 3 && field != NULL; spaces++) {
        field = strchr(field, ' ');
        if (field != NULL)
            field++;
    }
    if (field == NULL)
        return -1;
    char *end;
    const long runnable = strtol(field, &end, 10);
    if (end == field || *end != '/')
        return -1;
    const long others = runnable - 1 - __atomic_load_n(&pool.awake, __ATOMIC_RELAXED);
    const long idle = online - 1 - (others > 0 ? others : 0);
    return idle > 0 ? idle : 0;
}

/* How many threads a call can use without sharing a core (opt-in: gc_set_adaptive_threads).
 * The case it is for: a NumPy training loop's OpenBLAS worker keeps spinning on a core for up to
 * ~0.1 s after every matmul (a busy loop, no yield). A pool worker woken beside it gets that
 * core only in time slices of milliseconds, and a call whose last chunk waits for such a slice
 * can take longer than on the calling thread alone. A core counts as taken only if it was taken
 * both when the previous pooled call ended and now. It is off by default because the count is
 * noisy: any process woken for a moment (the reader of a pipe the program just wrote to) counts,
 * and with no other library running, a benchmark saw a "taken" core at both moments in 51 of 69
 * calls. Returns `wanted` when the count cannot be read. */
static long idle_at_last_end = -1;

static size_t cores_given(size_t wanted)
{
    const long now = idle_cpus();
    if (now < 0)
        return wanted;
    const long idle = idle_at_last_end > now ? idle_at_last_end : now;
    const size_t given = 1 + (size_t)idle;
    return given < wanted ? given : wanted;
}

void gc_set_adaptive_threads(int enabled)
{
    __atomic_store_n(&pool.adaptive, enabled != 0, __ATOMIC_RELAXED);
}

/* Runs the job on the pool with up to nthreads threads (the caller included; exactly nthreads
 * room if `exact`, else fewer in the adaptive mode). Returns 0 if the pool is taken by another
 * thread or disabled, without running anything. */
static int run_on_pool(chunked_job *job, size_t nthreads, int exact)
{
    if (!__atomic_load_n(&pool.enabled, __ATOMIC_RELAXED) || __atomic_exchange_n(&pool.busy, 1, __ATOMIC_ACQUIRE))
        return 0;
    const int adaptive = !exact && __atomic_load_n(&pool.adaptive, __ATOMIC_RELAXED);
    if (adaptive)
        nthreads = cores_given(nthreads);
    if (nthreads <= 1) {
        run_chunks(job);
        idle_at_last_end = idle_cpus();
        __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
        return 1;
    }
    const uint64_t generation = POOL_GENERATION(__atomic_load_n(&pool.state, __ATOMIC_RELAXED)) + 1;
    while ((size_t)pool.nworkers + 1 < nthreads) {
        pthread_t thread;
        pthread_attr_t attr;
        int ok = pthread_attr_init(&attr) == 0;
        ok = ok && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0;
        /* Started in the generation about to be published, so it can join this job. */
        ok = ok && pthread_create(&thread, &attr, pool_worker, (void *)(uintptr_t)(generation - 1)) == 0;
        pthread_attr_destroy(&attr);
        if (!ok)
            break; /* fewer workers: their chunks go to the others */
        pool.nworkers++;
        __atomic_add_fetch(&pool.awake, 1, __ATOMIC_RELAXED);
    }
    if (exact && (size_t)pool.nworkers + 1 < nthreads) { /* jobs that wait for each other need them all */
        __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
        return 0;
    }
    pool.job = job;
    __atomic_store_n(&pool.room, nthreads - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.state, generation << 32, __ATOMIC_RELEASE);
    pthread_mutex_lock(&pool.lock);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    run_chunks(job);
    const uint64_t s = __atomic_fetch_or(&pool.state, POOL_CLOSED, __ATOMIC_ACQ_REL);
    if (POOL_INSIDE(s) > 0)
        wait_for(workers_left, NULL, &pool.done);
    if (adaptive)
        idle_at_last_end = idle_cpus();
    __atomic_store_n(&pool.busy, 0, __ATOMIC_RELEASE);
    return 1;
}

/* A child process has none of the parent's threads: it starts a pool of its own. */
static void pool_after_fork_in_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    pool.state = 0;
    pool.nworkers = 0;
    pool.busy = 0;
    pool.awake = 0;
}

static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static void install_fork_handler(void)
{
    pthread_atfork(NULL, NULL, pool_after_fork_in_child);
}

void gc_parallel_prepare_fork(void)
{
    pthread_once(&fork_handler_once, install_fork_handler);
}

void gc_set_long_spin(int enabled)
{
    __atomic_store_n(&pool.worker_spin_ns, enabled ? GC_POOL_LONG_SPIN_NS : GC_POOL_SPIN_NS, __ATOMIC_RELAXED);
}

void gc_set_thread_pool(int enabled)
{
    __atomic_store_n(&pool.enabled, enabled != 0, __ATOMIC_RELAXED);
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
    gc_parallel_prepare_fork();
    if (!run_on_pool(&job, nthreads, 0))
        run_on_new_threads(&job, nthreads);
}

/* ---------------------------------------------------------------------------------------- */
/* Jobs that must run side by side (another library's parallel section)                     */

/* Job i of such a set may wait for job j's progress (OpenBLAS's threaded GEMM does), so every
 * job needs a thread of its own while the others run. The shared counter gives that when the
 * threads number at least the jobs: a thread takes a job only when it is free, a thread inside
 * a job never takes another, and the job stays open (the caller is inside a job) until every
 * job is taken. So the pool runs the set with room for njobs - 1 workers, whatever the thread
 * count or the adaptive mode says, and only if it has them all; else (the pool in use, or a
 * worker that could not start) njobs - 1 new threads run it with the caller. Fewer threads
 * than jobs would wait forever: a set whose threads cannot all be started ends the process
 * with a message, as OpenBLAS does when it cannot start its own. */
static void run_side_by_side_on_new_threads(chunked_job *job, size_t njobs)
{
    pthread_t *threads = malloc((njobs - 1) * sizeof *threads);
    size_t started = 0;
    for (int tries = 0; threads != NULL && started < njobs - 1 && tries < 100;) {
        if (pthread_create(&threads[started], NULL, run_chunks_thread, job) == 0) {
            started++;
            continue;
        }
        const struct timespec ms = {0, 1000000}; /* EAGAIN is often passing: threads exiting */
        nanosleep(&ms, NULL);
        tries++;
    }
    if (started < njobs - 1) {
        fprintf(stderr,
                "gradclip: could not start (or allocate for) %zu threads for a parallel section "
                "of OpenBLAS (gradclip.share_blas_threads); a section with fewer threads than "
                "jobs would never finish. Lower OPENBLAS_NUM_THREADS or do not share the threads.\n",
                njobs - 1);
        abort();
    }
    run_chunks(job);
    for (size_t t = 0; t < started; t++)
        pthread_join(threads[t], NULL);
    free(threads);
}

void gc_run_side_by_side(size_t njobs, gc_range_fn fn, void *ctx)
{
    if (njobs == 0)
        return;
    if (njobs == 1) {
        fn(ctx, 0, 1);
        return;
    }
    chunked_job job = {fn, ctx, njobs, 1, 0};
    gc_parallel_prepare_fork();
    if (njobs > GC_MAX_THREADS || !run_on_pool(&job, njobs, 1))
        run_side_by_side_on_new_threads(&job, njobs);
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
    byte_range *ranges = gc_scratch_alloc(n * sizeof *ranges);
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
    gc_scratch_free(ranges);
    return disjoint;
}

static size_t blocks_of(ptrdiff_t size, ptrdiff_t block)
{
    return (size_t)((size + block - 1) / block);
}

typedef struct {
    const size_t *first; /* first[i]: global index of item i's first block; first[n]: total */
    size_t n;
    ptrdiff_t block;
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
        const ptrdiff_t start = (ptrdiff_t)(k - job->first[item]) * job->block;
        const ptrdiff_t stop = size - start < job->block ? size : start + job->block;
        job->visit(job->ctx, item, start, stop, k);
    }
}

size_t gc_for_each_block(size_t n, gc_size_fn size_of, int parallel, gc_block_fn visit, void *ctx)
{
    /* Chunks of four blocks (262,144 elements), at least one per thread. */
    return gc_for_each_block_sized(n, size_of, GC_BLOCK, 4, parallel ? GC_PARALLEL_MIN : -1, visit, ctx);
}

size_t gc_for_each_block_sized(size_t n, gc_size_fn size_of, ptrdiff_t block, size_t grain, ptrdiff_t min_parallel,
                               gc_block_fn visit, void *ctx)
{
    size_t *first = NULL;
    if (min_parallel >= 0 && gc_get_num_threads() > 1) {
        ptrdiff_t elements = 0;
        for (size_t i = 0; i < n; i++)
            elements += size_of(ctx, i);
        if (elements >= min_parallel)
            first = gc_scratch_alloc((n + 1) * sizeof *first);
    }
    if (first == NULL) {
        /* One thread (or no memory for the plan): the same blocks, in order. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const ptrdiff_t size = size_of(ctx, i);
            for (ptrdiff_t start = 0; start < size; start += block, k++)
                visit(ctx, i, start, size - start < block ? size : start + block, k);
        }
        return k;
    }
    first[0] = 0;
    for (size_t i = 0; i < n; i++)
        first[i + 1] = first[i] + blocks_of(size_of(ctx, i), block);
    const size_t total = first[n];
    block_job job = {first, n, block, size_of, visit, ctx};
    gc_parallel_for(total, grain, visit_range, &job);
    gc_scratch_free(first);
    return total;
}
