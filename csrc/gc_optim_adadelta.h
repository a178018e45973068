/* Adadelta: torch.optim._single_tensor_adadelta. See gc_optim_tmpl.h.
 *
 * Operands: param, grad, square_avg, acc_delta; one scalar, the step count (advanced, not
 * otherwise used). */
#ifndef GC_OPTIM_ADADELTA_LAYOUT
#define GC_OPTIM_ADADELTA_LAYOUT
enum { ADADELTA_LR, ADADELTA_RHO, ADADELTA_EPS, ADADELTA_WEIGHT_DECAY, ADADELTA_MAXIMIZE, ADADELTA_NH };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, wd_c, rho, one_minus_rho, eps, neg_lr, neg_lr_alpha;
} KERNEL(adadelta_scalars_);

GC_INLINE void KERNEL(adadelta_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                     T *restrict v_, ptrdiff_t iv, T *restrict u_, ptrdiff_t iu,
                                     const KERNEL(adadelta_scalars_) *restrict s, int has_scale, int write_back,
                                     int maximize, int decay, int pairs, int scalar_wd, int scalar_update)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = COUPLED_DECAY(scalar_wd, g, p, pairs);
        /* square_avg.mul_(rho).addcmul_(g, g, value=1 - rho) */
        const C v = ROUND(FMA(s->one_minus_rho * g, g, ROUND(LOAD(v_[i * iv]) * s->rho)));
        const C std = ROUND(SQRT(ROUND(v + s->eps)));
        const C u0 = LOAD(u_[i * iu]);
        C delta = ROUND(SQRT(ROUND(u0 + s->eps)));
        delta = ROUND(ROUND(delta / std) * g); /* delta.div_(std).mul_(g) */
        const C u = ROUND(FMA(s->one_minus_rho * delta, delta, ROUND(u0 * s->rho)));
        v_[i * iv] = STORE(v);
        u_[i * iu] = STORE(u);
        /* param.add_(delta, alpha=-lr): on the complex tensor for a complex parameter */
        param[i * ip] = STORE(pairs ? p + ROUND(delta * s->neg_lr) : ADD_ALPHA(scalar_update, p, s->neg_lr_alpha, delta));
    }
}

static void KERNEL(adadelta)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *v_ = (T *)ptrs[2], *u_ = (T *)ptrs[3];
    const ptrdiff_t ip = inc[0], ig = inc[1], iv = inc[2], iu = inc[3];
    KERNEL(adadelta_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[ADADELTA_WEIGHT_DECAY]);
    s.wd_c = (C)h[ADADELTA_WEIGHT_DECAY];
    s.rho = (C)h[ADADELTA_RHO];
    s.one_minus_rho = (C)(1.0 - h[ADADELTA_RHO]);
    s.eps = ALPHA(h[ADADELTA_EPS]); /* x.add(eps): a scalar added to a tensor */
    s.neg_lr = (C)(-h[ADADELTA_LR]);
    s.neg_lr_alpha = ALPHA(-h[ADADELTA_LR]);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[ADADELTA_MAXIMIZE] != 0.0, decay = h[ADADELTA_WEIGHT_DECAY] != 0.0;
    const int contiguous = ip == 1 && ig == 1 && iv == 1 && iu == 1;
    /* Which of torch's loops computes each add(alpha) (see torch_vector_end): the weight decay
     * and param.add_(delta, alpha=-lr), delta being laid out as acc_delta. */
    const ptrdiff_t ends[2] = {decay ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n,
                               KERNEL(torch_vector_end)(it, OPS_P | OPS_S(1), n)};
    for (ptrdiff_t lo = 0, hi; lo < n; lo = hi) {
        unsigned sc;
        hi = gc_torch_segment(ends, 2, lo, n, &sc);
        T *const p_ = param + lo * ip, *const g_ = grad + lo * ig, *const v = v_ + lo * iv, *const u = u_ + lo * iu;
        const ptrdiff_t m = hi - lo;
        if (sc == 0 && contiguous && !maximize && !decay && !it->pairs && (!has_scale || write_back)) {
            if (has_scale)
                KERNEL(adadelta_loop)(m, p_, 1, g_, 1, v, 1, u, 1, &s, 1, 1, 0, 0, 0, 0, 0);
            else
                KERNEL(adadelta_loop)(m, p_, 1, g_, 1, v, 1, u, 1, &s, 0, 0, 0, 0, 0, 0, 0);
            continue;
        }
        KERNEL(adadelta_loop)(m, p_, ip, g_, ig, v, iv, u, iu, &s, has_scale, write_back, maximize, decay, it->pairs,
                              (sc & 1u) != 0, (sc & 2u) != 0);
    }
}
#endif /* SUFFIX */
