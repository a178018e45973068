/* Adamax: torch.optim._single_tensor_adamax (not capturable, not differentiable). See
 * gc_optim_tmpl.h.
 *
 * Operands: param, grad, exp_avg, exp_inf; one scalar, the step count (advanced by the spec's
 * prepare, which also computes clr = lr / (1 - beta1 ** step) in float64, as torch's Python
 * does). */
#ifndef GC_OPTIM_ADAMAX_LAYOUT
#define GC_OPTIM_ADAMAX_LAYOUT
enum { ADAMAX_LR, ADAMAX_BETA1, ADAMAX_BETA2, ADAMAX_EPS, ADAMAX_WEIGHT_DECAY, ADAMAX_MAXIMIZE, ADAMAX_NH };
enum { ADAMAX_CLR }; /* item->derived */
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, wd_c, weight, weight_minus_one, beta2, eps, neg_clr;
    int small_weight;
} KERNEL(adamax_scalars_);

GC_INLINE void KERNEL(adamax_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                   T *restrict m_, ptrdiff_t im, T *restrict e_, ptrdiff_t ie,
                                   const KERNEL(adamax_scalars_) *restrict s, int has_scale, int write_back,
                                   int maximize, int decay, int pairs, int small_weight, int scalar_wd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = COUPLED_DECAY(scalar_wd, g, p, pairs);
        const C m0 = LOAD(m_[i * im]);
        const C diff = g - m0; /* exp_avg.lerp_(g, 1 - beta1) */
        const C m = ROUND(small_weight ? FMA(s->weight, diff, m0) : FMA(s->weight_minus_one, diff, g));
        /* torch.maximum(exp_inf.mul_(beta2), g.abs().add_(eps)): NaN from either side wins */
        const C a = ROUND(LOAD(e_[i * ie]) * s->beta2);
        const C b = ROUND((g < 0 ? -g : g) + s->eps);
        const C e = (a != a || b != b) ? (a != a ? a : b) : (b > a ? b : a);
        m_[i * im] = STORE(m);
        e_[i * ie] = STORE(e);
        param[i * ip] = STORE(p + (s->neg_clr * m) / e); /* addcdiv_(exp_avg, exp_inf, value=-clr) */
    }
}

static void KERNEL(adamax)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *m_ = (T *)ptrs[2], *e_ = (T *)ptrs[3];
    const ptrdiff_t ip = inc[0], ig = inc[1], im = inc[2], ie = inc[3];
    KERNEL(adamax_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[ADAMAX_WEIGHT_DECAY]);
    s.wd_c = (C)h[ADAMAX_WEIGHT_DECAY];
    s.weight = (C)(1.0 - h[ADAMAX_BETA1]);
    s.weight_minus_one = s.weight - (C)1;
    s.small_weight = (s.weight < 0 ? -s.weight : s.weight) < (C)0.5;
    s.beta2 = (C)h[ADAMAX_BETA2];
    s.eps = ALPHA(h[ADAMAX_EPS]); /* x.add(eps): a scalar added to a tensor */
    s.neg_clr = (C)(-it->derived[ADAMAX_CLR]);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[ADAMAX_MAXIMIZE] != 0.0, decay = h[ADAMAX_WEIGHT_DECAY] != 0.0;
    /* The weight decay's add(alpha): its last elements where torch runs its scalar loop. */
    const ptrdiff_t nv = decay ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n;
    if (nv < n)
        KERNEL(adamax_loop)(n - nv, param + nv * ip, ip, grad + nv * ig, ig, m_ + nv * im, im, e_ + nv * ie, ie, &s,
                            has_scale, write_back, maximize, decay, it->pairs, s.small_weight, 1);
    n = nv;
    if (ip == 1 && ig == 1 && im == 1 && ie == 1 && !maximize && !decay && s.small_weight &&
        (!has_scale || write_back)) {
        if (has_scale)
            KERNEL(adamax_loop)(n, param, 1, grad, 1, m_, 1, e_, 1, &s, 1, 1, 0, 0, 0, 1, 0);
        else
            KERNEL(adamax_loop)(n, param, 1, grad, 1, m_, 1, e_, 1, &s, 0, 0, 0, 0, 0, 1, 0);
        return;
    }
    KERNEL(adamax_loop)(n, param, ip, grad, ig, m_, im, e_, ie, &s, has_scale, write_back, maximize, decay,
                        it->pairs, s.small_weight, 0);
}
#endif /* SUFFIX */
