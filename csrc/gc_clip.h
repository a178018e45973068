/* Norms, clipping and clamping over a list of arrays. Plain C: no Python, no NumPy.
 *
 * The caller (the glue in py_*.c) has validated every array: supported dtype, aligned, strides
 * multiples of the item size, writeable and free of self-overlap where written. These functions
 * cannot fail, so they can run with the GIL released.
 */
#ifndef GC_CLIP_H
#define GC_CLIP_H

#include <stddef.h>

#include "gc_kernels.h"
#include "gc_parallel.h"

typedef struct {
    char *data;
    gc_dtype dtype;
    int ndim;
    const ptrdiff_t *shape;
    const ptrdiff_t *strides; /* bytes */
    int zero_dim;             /* the caller's array was 0-d (torch promotes 0-d operands) */
} gc_array;


/* torch's total norm: the p-norm of the arrays' p-norms, computed in float64. Each array's norm
 * is stored in norms[i] (scratch of n doubles, owned by the caller). Every array is reduced
 * block by block (GC_BLOCK elements) and the block results are combined in block order, so the
 * result does not depend on the number of threads. */
double gc_total_norm(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms);

/* The two halves of gc_total_norm. gc_array_norms stores each array's norm in norms[i], or with
 * `finish` unset its accumulation before the final step (sum |x|^p, max |x|, count...);
 * gc_norms_total is the total from finished per-array norms, exactly as gc_total_norm forms it,
 * so the total over several processes' arrays can be formed from their norms alone.
 *
 * Finished norms follow torch where it is exact and improve on it where it is not: a
 * one-element array's norm is |x| (1 or 0 for p = 0), and so is the total over one norm;
 * sums of |x|^p (p not 1, 2) are compensated and rooted in extended precision; an array whose
 * powers underflowed is reduced again with its elements scaled by a power of two; the total
 * sums the powers of the norms in long double. Where torch's float64 sum overflows (or, for
 * p < 0, underflows to 0) the result is inf as torch's. An accumulation (finish unset) is a
 * plain double: the compensation's low part is added to it, and gc_raw_total has neither the
 * one-element rule nor the underflow rescue (it only sees sums). */
void gc_array_norms(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms, int finish);
double gc_norms_total(const double *norms, size_t n, const gc_norm *norm);

/* The norm from accumulations (of gc_array_norms without `finish`) combined in order: the total
 * over arrays split into shards. */
double gc_raw_total(const double *accumulations, size_t n, const gc_norm *norm);

/* torch's clip coefficient, min(max_norm * (1 / (total + 1e-6)), 1), evaluated step by step in
 * float32 when `single` is set and in float64 otherwise; NaN propagates. */
double gc_clip_coef(double total, double max_norm, int single);

/* Multiplies every array by coef (see gc_scale_run for the rounding). Large inputs run on
 * several threads when no two arrays share memory (an array listed twice is scaled twice, in
 * list order, as torch does). */
void gc_scale(const gc_array *arrays, size_t n, double coef);

/* Multiplies array i by coefs[i] (rounded as gc_scale rounds), under gc_scale's rules. */
void gc_scale_each(const gc_array *arrays, size_t n, const double *coefs);

/* Sets every element of every array to zero (+0.0, NaN and inf included). */
void gc_zero(const gc_array *arrays, size_t n);

/* Clamps every (real) array to [lo, hi], NaN kept. */
void gc_clamp(const gc_array *arrays, size_t n, double lo, double hi);

#endif /* GC_CLIP_H */
