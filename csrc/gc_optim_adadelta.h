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
                                     int maximize, int decay, int pairs)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = COUPLED_DECAY(g, p, pairs);
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
        param[i * ip] = STORE(pairs ? p + ROUND(delta * s->neg_lr) : FMA(delta, s->neg_lr_alpha, p));
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
    s.eps = (C)h[ADADELTA_EPS];
    s.neg_lr = (C)(-h[ADADELTA_LR]);
    s.neg_lr_alpha = ALPHA(-h[ADADELTA_LR]);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[ADADELTA_MAXIMIZE] != 0.0, decay = h[ADADELTA_WEIGHT_DECAY] != 0.0;
    if (ip == 1 && ig == 1 && iv == 1 && iu == 1 && !maximize && !decay && !it->pairs && (!has_scale || write_back)) {
        if (has_scale)
            KERNEL(adadelta_loop)(n, param, 1, grad, 1, v_, 1, u_, 1, &s, 1, 1, 0, 0, 0);
        else
            KERNEL(adadelta_loop)(n, param, 1, grad, 1, v_, 1, u_, 1, &s, 0, 0, 0, 0, 0);
        return;
    }
    KERNEL(adadelta_loop)(n, param, ip, grad, ig, v_, iv, u_, iu, &s, has_scale, write_back, maximize, decay,
                          it->pairs);
}
#endif /* SUFFIX */
