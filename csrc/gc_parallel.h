/* A minimal parallel-for over blocks of work, on POSIX threads. Plain C.
 *
 * Work is always cut into the same blocks (GC_BLOCK elements of one array); threads only
 * decide who computes which block, never how a block is computed or how block results are
 * combined, so every result is bit-identical whatever the thread count.
 */
#ifndef GC_PARALLEL_H
#define GC_PARALLEL_H

#include <stddef.h>

/* Threads used for large inputs: GRADCLIP_NUM_THREADS at start-up if set, else the number of
 * online CPUs (at most GC_MAX_THREADS). */
#define GC_MAX_THREADS 64
int gc_get_num_threads(void);
void gc_set_num_threads(int n);
void gc_init_num_threads(const char *env_value);

/* Runs fn(ctx, begin, end) over [0, ntasks) on at most gc_get_num_threads() threads (the
 * calling one included, and no more than ntasks / grain), which take chunks of `grain` tasks
 * from a shared counter until none is left. The other threads are the pool's workers (started
 * on first use, kept for the process); if threads cannot be started the calling thread does
 * all the work. */
typedef void (*gc_range_fn)(void *ctx, size_t begin, size_t end);
void gc_parallel_for(size_t ntasks, size_t grain, gc_range_fn fn, void *ctx);

/* Runs fn(ctx, i, i + 1) for every i in [0, njobs), each job on a thread of its own while the
 * others run (jobs may wait for each other's progress): the pool's workers with the calling
 * thread, or new threads if the pool is in use. For another library's parallel sections
 * (gc_blas.c); ignores the thread count and the adaptive mode. */
void gc_run_side_by_side(size_t njobs, gc_range_fn fn, void *ctx);

/* Registers the pool's fork handling now rather than at its first use (for callers that must
 * not register anything later, while holding a lock a fork handler takes). */
void gc_parallel_prepare_fork(void);

/* Whether pool workers spin ~0.1 s after a job before they sleep, as OpenBLAS's do (while the
 * pool runs OpenBLAS's sections), or 0.1 ms (the default). */
void gc_set_long_spin(int enabled);

/* Whether gc_parallel_for uses the process's persistent worker threads (the default) or starts
 * threads for each call (as it does anyway when another thread is using the pool). */
void gc_set_thread_pool(int enabled);

/* Whether a pooled call uses only the cores that run nothing else at its start, or always
 * gc_get_num_threads() threads (the default). Never changes a result, only who computes it. */
void gc_set_adaptive_threads(int enabled);

/* Whether the byte ranges [lo[i], hi[i]) are pairwise disjoint (sorts a copy; O(n log n)).
 * Returns -1 if it could not allocate. */
int gc_ranges_disjoint(const char *const *lo, const char *const *hi, size_t n);

/* Inputs smaller than this (in elements, all arrays together) run on the calling thread:
 * starting threads would cost more than it saves. */
#define GC_PARALLEL_MIN ((ptrdiff_t)1 << 20)

/* Visits every block of every item: item i has size_of(ctx, i) elements, cut into blocks of
 * GC_BLOCK; visit(ctx, i, start, stop, k) gets the block's element range and its index k in
 * the global block order (item by item). With `parallel` set and enough work, blocks run on
 * several threads (visit must then be safe to call concurrently on different blocks).
 * Returns the number of blocks. */
#define GC_BLOCK ((ptrdiff_t)1 << 16)
typedef ptrdiff_t (*gc_size_fn)(void *ctx, size_t item);
typedef void (*gc_block_fn)(void *ctx, size_t item, ptrdiff_t start, ptrdiff_t stop, size_t k);
size_t gc_for_each_block(size_t n, gc_size_fn size_of, int parallel, gc_block_fn visit, void *ctx);

/* The same with blocks of `block` elements handed out `grain` at a time, in parallel when the
 * items hold at least min_parallel elements together (never if it is negative): for callers
 * whose results do not depend on how the elements are cut (each output element is computed
 * inside one block), so that the cut can follow the work per element. */
size_t gc_for_each_block_sized(size_t n, gc_size_fn size_of, ptrdiff_t block, size_t grain, ptrdiff_t min_parallel,
                               gc_block_fn visit, void *ctx);

#endif /* GC_PARALLEL_H */
