/* ASGD: torch.optim._single_tensor_asgd. See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: param, grad, ax; three scalars, the step count, eta and mu (0-d float32 arrays, as
 * torch's tensors: the spec's prepare reads eta and mu for this step, then stores the next
 * step's values, computed in float64 and rounded to float32 as torch's copy_ does). */
#ifndef GC_OPTIM_ASGD_LAYOUT
#define GC_OPTIM_ASGD_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum { ASGD_LAMBD, ASGD_LR, ASGD_T0, ASGD_ALPHA, ASGD_WEIGHT_DECAY, ASGD_MAXIMIZE, ASGD_NH };
/* item->derived: this step's values (from eta and mu before they advance). */
enum { ASGD_DECAY, ASGD_NEG_ETA, ASGD_MU, ASGD_AVERAGE };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, decay, neg_eta, mu;
} KERNEL(asgd_scalars_);

static KERNEL(asgd_scalars_) KERNEL(asgd_scalars)(const gc_optim_options *o, const double *derived)
{
    KERNEL(asgd_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(o->h[ASGD_WEIGHT_DECAY]);
    s.decay = (C)derived[ASGD_DECAY];
    s.neg_eta = ALPHA(derived[ASGD_NEG_ETA]);
    s.mu = (C)derived[ASGD_MU];
    return s;
}

GC_INLINE void KERNEL(asgd_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                 T *restrict ax_, ptrdiff_t ia, const KERNEL(asgd_scalars_) *restrict s,
                                 int has_scale, int write_back, int maximize, int decay, int average,
                                 int scalar_wd, int scalar_update)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        C p = LOAD(param[i * ip]);
        if (decay)
            g = ROUND(ADD_ALPHA(scalar_wd, g, s->wd, p));
        p = ROUND(p * s->decay);          /* param.mul_(1 - lambd * eta) */
        p = ROUND(ADD_ALPHA(scalar_update, p, s->neg_eta, g)); /* param.add_(grad, alpha=-eta) */
        param[i * ip] = STORE(p);
        if (average) {
            const C ax = LOAD(ax_[i * ia]);
            ax_[i * ia] = STORE(ax + ROUND(ROUND(p - ax) * s->mu)); /* ax.add_(param.sub(ax).mul_(mu)) */
        }
        else {
            ax_[i * ia] = STORE(p); /* ax.copy_(param) */
        }
    }
}

static void KERNEL(asgd)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *ax_ = (T *)ptrs[2];
    const ptrdiff_t ip = inc[0], ig = inc[1], ia = inc[2];
    const KERNEL(asgd_scalars_) s = KERNEL(asgd_scalars)(o, it->derived);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[ASGD_MAXIMIZE] != 0.0, decay = h[ASGD_WEIGHT_DECAY] != 0.0;
    const int average = it->derived[ASGD_AVERAGE] != 0.0;
    const int contiguous = ip == 1 && ig == 1 && ia == 1;
    /* Which of torch's loops computes each add(alpha) (see torch_vector_end): the weight decay
     * and param.add_(grad, alpha=-eta). */
    const ptrdiff_t ends[2] = {decay ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n,
                               KERNEL(torch_vector_end)(it, OPS_P | OPS_DECAYED_GRAD(decay, maximize), n)};
    for (ptrdiff_t lo = 0, hi; lo < n; lo = hi) {
        unsigned sc;
        hi = gc_torch_segment(ends, 2, lo, n, &sc);
        T *const p_ = param + lo * ip, *const g_ = grad + lo * ig, *const a_ = ax_ + lo * ia;
        const ptrdiff_t m = hi - lo;
        if (sc == 0 && contiguous && !maximize && !decay && (!has_scale || write_back)) {
            if (average)
                KERNEL(asgd_loop)(m, p_, 1, g_, 1, a_, 1, &s, has_scale, has_scale, 0, 0, 1, 0, 0);
            else
                KERNEL(asgd_loop)(m, p_, 1, g_, 1, a_, 1, &s, has_scale, has_scale, 0, 0, 0, 0, 0);
            continue;
        }
        KERNEL(asgd_loop)(m, p_, ip, g_, ig, a_, ia, &s, has_scale, write_back, maximize, decay, average,
                          (sc & 1u) != 0, (sc & 2u) != 0);
    }
}
#endif /* SUFFIX */
