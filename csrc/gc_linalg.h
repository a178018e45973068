/* Vector algebra over lists of arrays, for optimizers that treat all their parameters as one
 * vector (LBFGS): dot products, axpy and copies. Plain C: no Python, no NumPy.
 *
 * The operands come in pairs of one shape and real dtype (float16, float32 or float64), paired by
 * logical index whatever their memory layouts; the glue (py_linalg.c) has validated them, so
 * nothing here can fail.
 *
 * Rounding. axpy is torch's y.add_(x, alpha=a): one fma in the compute type (float for
 * float16, whose alpha torch rounds to float16 first), then rounded to the dtype. A dot product
 * is accumulated more accurately than torch's (MKL's ?dot, in the dtype, in an order of its
 * own): float16/float32 products are exact in float64 and summed there; float64 ones with a
 * compensated sum (Ogita, Rump and Oishi's Dot2: error as if computed in twice the precision).
 * The caller rounds the result once to the dtype. An infinite or NaN result is the plain
 * sum's (inf, not the NaN a compensation term would make of it).
 *
 * Threads. Every operation cuts the pairs into blocks of GC_BLOCK elements (gc_parallel.h)
 * and, on inputs of GC_PARALLEL_MIN elements or more, runs blocks on several threads. A dot
 * product sums each block on its own (elements in layout order) and combines the blocks'
 * partial sums in block order (pairs in list order) with a compensated addition, on one
 * thread as on many, so results are bit-identical for any thread count and ISA. Writes run
 * on several threads only when no two operands of the call share memory (an array listed
 * twice is updated twice, in list order, as torch's loop updates it).
 *
 * Complex arrays reach these functions as real pairs (the glue describes a complex64 or
 * complex128 array as float32/float64 with a trailing dimension of 2, torch.view_as_real).
 */
#ifndef GC_LINALG_H
#define GC_LINALG_H

#include <stddef.h>

#include "gc_kernels.h"

typedef struct {
    gc_dtype dtype;
    int ndim;
    const ptrdiff_t *shape;
    char *data[2];               /* data[1] NULL in a copy: zero-fill data[0] */
    const ptrdiff_t *strides[2]; /* bytes */
} gc_pair;

/* sum over every pair of sum x0 * x1, as a double (see above). */
double gc_pairs_dot(const gc_pair *pairs, size_t n);

/* x0 = x0 + alpha * x1 with torch's add_(alpha=) rounding, for every pair. */
void gc_pairs_axpy(const gc_pair *pairs, size_t n, double alpha);

/* x0 = x0.lerp(x1, w) as torch computes it with a scalar weight: fma(w, x1 - x0, x0) when
 * |w| < 0.5, else fma(w - 1, x1 - x0, x1), in the compute type (float for float16). */
void gc_pairs_lerp(const gc_pair *pairs, size_t n, double weight);

/* x0 = x1 (or 0 where data[1] is NULL), for every pair. */
void gc_pairs_copy(const gc_pair *pairs, size_t n);

#endif /* GC_LINALG_H */
