/* OpenBLAS's parallel sections on gradclip's threads. Plain C.
 *
 * OpenBLAS (0.3.27 and later) lets a program run its parallel sections on threads of its own:
 * openblas_set_threads_callback_function(cb). gc_blas_threads_callback is such a callback.
 * Installed, a matmul's jobs run on gradclip's pool instead of OpenBLAS's. Both kinds of worker
 * spin for ~0.1 s after a job (gc_set_long_spin), but OpenBLAS's spin on a core that the
 * gradient clipping after a matmul then cannot use, while gradclip's join the clipping.
 *
 * Not covered: OpenBLAS's LU (getrf_parallel) hands work to its own threads directly, without
 * the callback, and those use the same per-thread buffers and status slots by index. So LU in
 * one thread while a shared section runs in another would share them (gradclip's README says
 * so). One thread calling both, one after the other, is safe (tested). */
#ifndef GC_BLAS_H
#define GC_BLAS_H

#include <stddef.h>

/* The types of OpenBLAS's cblas.h (openblas_dojob_callback, openblas_threads_callback). */
typedef void (*gc_blas_dojob)(int thread_num, void *jobdata, int dojob_data);
void gc_blas_threads_callback(int sync, gc_blas_dojob dojob, int numjobs, size_t jobdata_elsize, void *jobdata,
                              int dojob_data);

/* Registers the fork handling the callback needs (a fork waits for a running section). Call
 * it before handing the callback to an OpenBLAS not hooked before, after that library was
 * loaded. Returns -1 if pthread_atfork failed. */
int gc_blas_prepare_fork(void);

/* How many parallel sections the callback has run (for tests). */
long gc_blas_sections(void);

#endif /* GC_BLAS_H */
