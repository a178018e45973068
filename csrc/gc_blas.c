/* OpenBLAS's parallel sections on gradclip's threads (see gc_blas.h). */
#include "gc_blas.h"

#include <pthread.h>

#include "gc_parallel.h"

typedef struct {
    gc_blas_dojob dojob;
    char *jobdata;
    size_t elsize;
    int dojob_data;
} blas_jobs;

static void run_jobs(void *ctx, size_t begin, size_t end)
{
    const blas_jobs *jobs = ctx;
    for (size_t i = begin; i < end; i++)
        jobs->dojob((int)i, jobs->jobdata + i * jobs->elsize, jobs->dojob_data);
}

/* One parallel section at a time. OpenBLAS gives job i its per-thread buffer i and status
 * slot i (the job index is the thread number it is told), which its own pool never hands to
 * two sections at once; two Python threads calling BLAS together would otherwise share them.
 *
 * fork() waits for a running section to end: an OpenBLAS's own fork handler frees the
 * per-thread buffers the section's jobs would still be using. Handlers run in the reverse
 * order of their registration, and an OpenBLAS registers its handler when it is loaded, so
 * gc_blas_prepare_fork registers this one again whenever a library is hooked for the first
 * time (one loaded after the last registration would otherwise run its handler first). The
 * registrations nest: the outermost prepare locks, the outermost parent/child handler
 * unlocks; the depth is the forking thread's own (the child's one thread is its copy). */
static pthread_mutex_t one_section = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local int fork_depth;
static long sections; /* atomic: sections run, for tests */

static void lock_before_fork(void)
{
    if (fork_depth++ == 0)
        pthread_mutex_lock(&one_section);
}

static void unlock_after_fork(void)
{
    if (--fork_depth == 0)
        pthread_mutex_unlock(&one_section);
}

int gc_blas_prepare_fork(void)
{
    /* The pool's own fork handling first, so that no section registers anything (which takes
     * glibc's fork lock) while holding one_section. */
    gc_parallel_prepare_fork();
    return pthread_atfork(lock_before_fork, unlock_after_fork, unlock_after_fork) == 0 ? 0 : -1;
}

long gc_blas_sections(void)
{
    return __atomic_load_n(&sections, __ATOMIC_RELAXED);
}

void gc_blas_threads_callback(int sync, gc_blas_dojob dojob, int numjobs, size_t jobdata_elsize, void *jobdata,
                              int dojob_data)
{
    /* OpenBLAS calls it with sync = 1 (return when every job is done), which is what it does
     * for any value. */
    (void)sync;
    if (numjobs <= 0)
        return;
    blas_jobs jobs = {dojob, jobdata, jobdata_elsize, dojob_data};
    pthread_mutex_lock(&one_section);
    gc_run_side_by_side((size_t)numjobs, run_jobs, &jobs);
    __atomic_add_fetch(&sections, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&one_section);
}
