/* SGD: torch.optim._single_tensor_sgd. See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: param, grad, momentum buffer (only when momentum != 0; created by the glue and
 * initialised here from the gradient on the first step, item->fresh). torch does not view a
 * complex parameter as real pairs here: it updates complex numbers, so a.add(b, alpha=s) is a
 * rounded complex product by s + 0i, then the sum -- ADD_ALPHA's two-rounding form, which the
 * kernel takes for every add of a complex parameter (it->pairs). */
#ifndef GC_OPTIM_SGD_LAYOUT
#define GC_OPTIM_SGD_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum { SGD_LR, SGD_MOMENTUM, SGD_DAMPENING, SGD_WEIGHT_DECAY, SGD_NESTEROV, SGD_MAXIMIZE, SGD_NH };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, momentum, damp_alpha, momentum_alpha, neg_lr;
} KERNEL(sgd_scalars_);

static KERNEL(sgd_scalars_) KERNEL(sgd_scalars)(const gc_optim_options *o)
{
    const double *h = o->h;
    KERNEL(sgd_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[SGD_WEIGHT_DECAY]);
    s.momentum = (C)h[SGD_MOMENTUM];
    s.damp_alpha = ALPHA(1.0 - h[SGD_DAMPENING]);
    s.momentum_alpha = ALPHA(h[SGD_MOMENTUM]);
    s.neg_lr = ALPHA(-h[SGD_LR]);
    return s;
}

GC_INLINE void KERNEL(sgd_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                T *restrict buf, ptrdiff_t ib, const KERNEL(sgd_scalars_) *restrict s,
                                int has_scale, int write_back, int maximize, int decay, int momentum,
                                int nesterov, int fresh, int scalar_wd, int scalar_buf, int scalar_param)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = ROUND(ADD_ALPHA(scalar_wd, g, s->wd, p));
        if (momentum) {
            C b = fresh ? g : ROUND(ADD_ALPHA(scalar_buf, ROUND(LOAD(buf[i * ib]) * s->momentum), s->damp_alpha, g));
            buf[i * ib] = STORE(b);
            g = nesterov ? ROUND(ADD_ALPHA(scalar_buf, g, s->momentum_alpha, b)) : b;
        }
        param[i * ip] = STORE(ADD_ALPHA(scalar_param, p, s->neg_lr, g));
    }
}

static void KERNEL(sgd)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1];
    const int decay = h[SGD_WEIGHT_DECAY] != 0.0, momentum = h[SGD_MOMENTUM] != 0.0;
    T *buf = momentum ? (T *)ptrs[2] : NULL;
    const ptrdiff_t ip = inc[0], ig = inc[1], ib = momentum ? inc[2] : 1;
    const KERNEL(sgd_scalars_) s = KERNEL(sgd_scalars)(o);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[SGD_MAXIMIZE] != 0.0, nesterov = h[SGD_NESTEROV] != 0.0, fresh = it->fresh;
    const int cx = it->pairs; /* complex: every add rounds twice (see the top of this file) */
    const int plain = !decay && !maximize && !nesterov && !fresh && !cx;
    const int contiguous = ip == 1 && ig == 1 && ib == 1;
    /* Which of torch's loops computes each add(alpha) (see ADD_ALPHA, torch_vector_end): the
     * weight decay, the momentum adds (buf.mul_(momentum).add_(g, alpha=1 - dampening) and
     * nesterov's g.add(buf, alpha=momentum), over the same operands) and the update. */
    const unsigned g2 = OPS_DECAYED_GRAD(decay, maximize);
    const unsigned update = OPS_P | (momentum ? (nesterov ? GC_OPTIM_GRAD_TMP : OPS_S(0)) : g2);
    const ptrdiff_t ends[3] = {decay ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n,
                               momentum ? KERNEL(torch_vector_end)(it, OPS_S(0) | g2, n) : n,
                               KERNEL(torch_vector_end)(it, update, n)};
    for (ptrdiff_t lo = 0, hi; lo < n; lo = hi) {
        unsigned sc;
        hi = gc_torch_segment(ends, 3, lo, n, &sc);
        T *const p_ = param + lo * ip, *const g_ = grad + lo * ig, *const b_ = momentum ? buf + lo * ib : NULL;
        const ptrdiff_t m = hi - lo;
        if (sc == 0 && contiguous && plain && (!has_scale || write_back)) {
            /* The common cases (with or without momentum, with or without fused clipping),
             * specialised so they vectorise. */
            if (momentum && has_scale)
                KERNEL(sgd_loop)(m, p_, 1, g_, 1, b_, 1, &s, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0);
            else if (momentum)
                KERNEL(sgd_loop)(m, p_, 1, g_, 1, b_, 1, &s, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0);
            else if (has_scale)
                KERNEL(sgd_loop)(m, p_, 1, g_, 1, b_, 1, &s, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
            else
                KERNEL(sgd_loop)(m, p_, 1, g_, 1, b_, 1, &s, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
            continue;
        }
        KERNEL(sgd_loop)(m, p_, ip, g_, ig, b_, ib, &s, has_scale, write_back, maximize, decay, momentum, nesterov,
                         fresh, cx || (sc & 1u), cx || (sc & 2u), cx || (sc & 4u));
    }
}
#endif /* SUFFIX */
