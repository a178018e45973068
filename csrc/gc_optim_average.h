/* Weight averaging (torch.optim.swa_utils): averaged <- an average of (averaged, current).
 * See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: averaged (written), current. Two rules, by the AVERAGE_MEAN flag:
 *   0: lerp, torch's lerp_ / _foreach_lerp_ with a scalar weight w (the EMA update and
 *      get_swa_multi_avg_fn): with w converted to the compute type, d = current - averaged,
 *      fma(w, d, averaged) if |w| < 0.5 else fma(w - 1, d, current) (ATen's lerp_vec);
 *   1: mean, what AveragedModel runs on CPU (get_swa_avg_fn per tensor): averaged +
 *      (current - averaged) / count, each of the three operations rounded to the dtype (the
 *      division of float16 in float32, with count converted to float32 as torch's scalar).
 * AVERAGE_WEIGHT is w, or count for the mean. */
#ifndef GC_OPTIM_AVERAGE_LAYOUT
#define GC_OPTIM_AVERAGE_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum { AVERAGE_MEAN, AVERAGE_WEIGHT, AVERAGE_NH };
#endif

#ifdef SUFFIX
GC_INLINE void KERNEL(average_lerp)(ptrdiff_t n, T *restrict avg, ptrdiff_t ia, const T *restrict cur, ptrdiff_t ic,
                                    C w, C w1, int small)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const C a = LOAD(avg[i * ia]), c = LOAD(cur[i * ic]);
        const C d = c - a;
        avg[i * ia] = STORE(small ? FMA(w, d, a) : FMA(w1, d, c));
    }
}

GC_INLINE void KERNEL(average_mean)(ptrdiff_t n, T *restrict avg, ptrdiff_t ia, const T *restrict cur, ptrdiff_t ic,
                                    C count)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        const C a = LOAD(avg[i * ia]);
        const C q = ROUND(ROUND(LOAD(cur[i * ic]) - a) / count);
        avg[i * ia] = STORE(a + q);
    }
}

static void KERNEL(average)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const double *h = it->options->h;
    T *avg = (T *)ptrs[0];
    const T *cur = (const T *)ptrs[1];
    const C w = (C)h[AVERAGE_WEIGHT];
    if (h[AVERAGE_MEAN] != 0.0) {
        if (inc[0] == 1 && inc[1] == 1)
            KERNEL(average_mean)(n, avg, 1, cur, 1, w);
        else
            KERNEL(average_mean)(n, avg, inc[0], cur, inc[1], w);
        return;
    }
    const C w1 = w - (C)1;
    const int small = (w < 0 ? -w : w) < (C)0.5;
    if (inc[0] == 1 && inc[1] == 1 && small)
        KERNEL(average_lerp)(n, avg, 1, cur, 1, w, w1, 1);
    else if (inc[0] == 1 && inc[1] == 1)
        KERNEL(average_lerp)(n, avg, 1, cur, 1, w, w1, 0);
    else
        KERNEL(average_lerp)(n, avg, inc[0], cur, inc[1], w, w1, small);
}
#endif /* SUFFIX */
