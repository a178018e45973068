/* OpenBLAS's parallel sections on gradclip's threads. Plain C.
 *
 * OpenBLAS (0.3.27 and later) lets a program run its parallel sections on threads of its own:
 * openblas_set_threads_callback_function(cb). gc_blas_threads_callback is such a callback.
 * Installed, a matmul's jobs run on gradclip's pool, whose workers spin 0.1 ms after a job and
 * then sleep, instead of on OpenBLAS's, which spin for ~0.1 s after every call and so take a
 * core from the gradient clipping that follows a matmul in a training loop. */
#ifndef GC_BLAS_H
#define GC_BLAS_H

#include <stddef.h>

/* The types of OpenBLAS's cblas.h (openblas_dojob_callback, openblas_threads_callback). */
typedef void (*gc_blas_dojob)(int thread_num, void *jobdata, int dojob_data);
void gc_blas_threads_callback(int sync, gc_blas_dojob dojob, int numjobs, size_t jobdata_elsize, void *jobdata,
                              int dojob_data);

#endif /* GC_BLAS_H */
