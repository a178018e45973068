/* Unit-wise clipping: AGC's per-unit factors and per-example clipping's weighted sum. Plain C.
 *
 * A "unit" is a sub-array described as a gc_array of its own: a[i] (every dim but the first)
 * for an array with more than one dim, the whole array otherwise. Units of one array share
 * its shape and strides, so any layout works and the norm kernels of gc_clip.h apply to them
 * unchanged: one gc_array_norms call over every unit of every array is one pass.
 */
#ifndef GC_UNITWISE_H
#define GC_UNITWISE_H

#include <stddef.h>

#include "gc_clip.h"

/* How many units `a` has (shape[0] for ndim > 1, else 1), and `split` as many descriptors for
 * them into `units` (pointing into a's shape and strides, which must outlive them). With
 * `split` unset the array is always one unit (the batch axis of per-example gradients is
 * split with split set, so a 1-d array gives scalar units). */
size_t gc_unit_count(const gc_array *a, int split);
void gc_units_of(const gc_array *a, int split, gc_array *units);

/* timm's adaptive_clip_grad arithmetic for one unit, in the unit's dtype (float16 and float32
 * with torch's rounding: every intermediate rounded to the dtype, float16 computed in float32):
 *   max = clamp(param_norm, min=eps) * clip_factor
 *   factor = max / clamp(grad_norm, min=1e-6)      applied unless grad_norm < max
 * Returns 1 and the factor when the unit is to be scaled, 0 when it is left alone. */
int gc_agc_factor(gc_dtype dtype, double param_norm, double grad_norm, double clip_factor, double eps,
                  double *factor);

/* Per-example weighted sums: for each array k of n, out[k] = sum_b factors[b] * a_k[b], where
 * examples[k] is the descriptor of a_k[0] (shape and strides of one example), example_strides[k]
 * the byte distance between examples, and out[k] a C-contiguous buffer of a_k's real dtype with
 * one example's shape. Sums run in float64 over b = 0, 1, ... in order, each rounded once to the
 * dtype, so results do not depend on the thread count. */
void gc_weighted_sums(const gc_array *examples, const ptrdiff_t *example_strides, size_t n, size_t batch,
                      const double *factors, char *const *out);

#endif /* GC_UNITWISE_H */
