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
 * fork() waits for a running section to end: OpenBLAS's own handler, which runs after this
 * one (handlers run in the reverse order of their registration, and OpenBLAS registers at
 * load), frees the per-thread buffers the section's jobs would still be using. */
static pthread_mutex_t one_section = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_handler_once = PTHREAD_ONCE_INIT;

static void lock_before_fork(void)
{
    pthread_mutex_lock(&one_section);
}

static void unlock_after_fork(void)
{
    pthread_mutex_unlock(&one_section);
}

static void install_fork_handler(void)
{
    pthread_atfork(lock_before_fork, unlock_after_fork, unlock_after_fork);
}

void gc_blas_threads_callback(int sync, gc_blas_dojob dojob, int numjobs, size_t jobdata_elsize, void *jobdata,
                              int dojob_data)
{
    /* OpenBLAS calls it with sync = 1 (return when every job is done), which is what it does
     * for any value. */
    (void)sync;
    if (numjobs <= 0)
        return;
    pthread_once(&fork_handler_once, install_fork_handler);
    blas_jobs jobs = {dojob, jobdata, jobdata_elsize, dojob_data};
    pthread_mutex_lock(&one_section);
    gc_run_side_by_side((size_t)numjobs, run_jobs, &jobs);
    pthread_mutex_unlock(&one_section);
}
