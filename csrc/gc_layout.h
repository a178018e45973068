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

/* torch's CPU loops (TensorIterator) over an elementwise operation, for the float16 kernels
 * that must know which elements torch computes in its vectorised loop, whose rounding differs
 * from its scalar loop's (see gc_optim_tmpl.h).
 *
 * The dims an array group is visited in, outermost first (runs go along the last one, each run
 * within one row), with each operand's strides in elements (0 where not a whole number of
 * elements); slot GC_MAXOPS is free for an operand that is not an array of the group (a
 * temporary of torch's, described by the caller). */
typedef struct {
    int ndim;
    ptrdiff_t shape[GC_MAXDIMS];
    ptrdiff_t strides[GC_MAXOPS + 1][GC_MAXDIMS];
} gc_torch_dims;

/* The scalar loop's share of each row for float16: length % 32, one AVX-512 vector of halves
 * (measured with torch 2.13 on an AVX-512 CPU; see the README). */
#define GC_TORCH_HALF_TAIL 32

/* Fills dims from nd dims and `nops` operands' byte strides. */
void gc_torch_dims_init(gc_torch_dims *dims, int nd, const ptrdiff_t *shape, int nops,
                        const ptrdiff_t *const *strides, ptrdiff_t itemsize);

/* How many of the n elements of the run whose first element has index run_start in visiting
 * order torch's vectorised loop computes, for one operation over the operands whose bits are
 * set in `ops` (bit k: slot k), when its scalar loop takes the last length % tail elements of
 * each row it vectorises. The rest, always the end of the run, take the scalar loop. */
ptrdiff_t gc_torch_vector_end(const gc_torch_dims *dims, ptrdiff_t run_start, unsigned ops, ptrdiff_t n,
                              ptrdiff_t tail);

#endif /* GC_LAYOUT_H */
