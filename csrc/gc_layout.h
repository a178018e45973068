/* Walking an n-d strided array (or several of the same shape) as 1-D runs. Plain C.
 *
 * A layout is the array's dims reordered by decreasing stride, reversed where the first
 * operand's stride is negative, with size-1 dims dropped and mergeable neighbours fused, so a
 * C-, Fortran-ordered or reversed contiguous array becomes one run with stride 1 and a strided
 * view becomes as few runs as possible. Reordering and reversal change only the order in which
 * elements are visited, which is free for elementwise operations.
 */
#ifndef GC_LAYOUT_H
#define GC_LAYOUT_H

#include <stddef.h>

#define GC_MAXDIMS 64 /* NumPy 2's NPY_MAXDIMS */
#define GC_MAXOPS 6

typedef struct {
    int ndim;       /* >= 1 */
    int nops;
    ptrdiff_t size; /* number of elements, possibly 0 */
    ptrdiff_t shape[GC_MAXDIMS];
    ptrdiff_t strides[GC_MAXOPS][GC_MAXDIMS]; /* bytes */
    char *data[GC_MAXOPS];
} gc_layout;

/* Builds the layout of `nops` operands sharing `shape`; strides[op] are byte strides. */
void gc_layout_init(gc_layout *layout, int ndim, const ptrdiff_t *shape, int nops,
                    char *const *data, const ptrdiff_t *const *strides);

/* Calls fn(ctx, ptrs, byte_strides, n) for the runs covering flat elements [start, stop) in the
 * layout's visiting order. */
typedef void (*gc_run_fn)(void *ctx, char *const *ptrs, const ptrdiff_t *byte_strides, ptrdiff_t n);
void gc_layout_walk(const gc_layout *layout, ptrdiff_t start, ptrdiff_t stop, gc_run_fn fn, void *ctx);

#endif /* GC_LAYOUT_H */
