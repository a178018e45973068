/* RAdam: torch.optim._single_tensor_radam. See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: param, grad, exp_avg, exp_avg_sq; one scalar, the step count (a float32 0-d array,
 * advanced by the spec's prepare, which also chooses the rectified branch for the parameter). */
#ifndef GC_OPTIM_RADAM_LAYOUT
#define GC_OPTIM_RADAM_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum {
    RADAM_BETA1, RADAM_BETA2, RADAM_LR, RADAM_WEIGHT_DECAY, RADAM_EPS, RADAM_DECOUPLED, RADAM_MAXIMIZE, RADAM_NH
};
/* item->derived: float64 values torch computes in Python per parameter. */
enum { RADAM_BC1, RADAM_BC2_SQRT, RADAM_RECT, RADAM_RECTIFY };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, decay, weight, weight_minus_one, beta2, one_minus_beta2, bc1, lr, eps, bc2_sqrt, rect;
    int small_weight;
} KERNEL(radam_scalars_);

static KERNEL(radam_scalars_) KERNEL(radam_scalars)(const gc_optim_options *o, const double *derived)
{
    const double *h = o->h;
    KERNEL(radam_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[RADAM_WEIGHT_DECAY]);
    s.decay = (C)gc_lr_one_minus_times(h, h[RADAM_LR], h[RADAM_WEIGHT_DECAY]);
    s.weight = (C)(1.0 - h[RADAM_BETA1]);
    s.weight_minus_one = s.weight - (C)1;
    s.small_weight = (s.weight < 0 ? -s.weight : s.weight) < (C)0.5;
    s.beta2 = (C)h[RADAM_BETA2];
    s.one_minus_beta2 = (C)(1.0 - h[RADAM_BETA2]);
    s.bc1 = (C)derived[RADAM_BC1];
    s.lr = (C)h[RADAM_LR];
    s.eps = ALPHA(h[RADAM_EPS]); /* x.add(eps): a scalar added to a tensor */
    s.bc2_sqrt = (C)derived[RADAM_BC2_SQRT];
    s.rect = (C)derived[RADAM_RECT];
    return s;
}

GC_INLINE void KERNEL(radam_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                  T *restrict m_, ptrdiff_t im, T *restrict v_, ptrdiff_t iv,
                                  const KERNEL(radam_scalars_) *restrict s, int has_scale, int write_back,
                                  int maximize, int decay, int decoupled, int small_weight, int rectify,
                                  int scalar_wd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        C p = LOAD(param[i * ip]);
        if (decay) {
            if (decoupled)
                p = ROUND(p * s->decay);
            else
                g = ROUND(ADD_ALPHA(scalar_wd, g, s->wd, p));
        }
        const C m0 = LOAD(m_[i * im]);
        const C diff = g - m0;
        const C m = ROUND(small_weight ? FMA(s->weight, diff, m0) : FMA(s->weight_minus_one, diff, g));
        const C v = ROUND(FMA(s->one_minus_beta2 * g, g, ROUND(LOAD(v_[i * iv]) * s->beta2)));
        /* (exp_avg / bias_correction1) * lr, each a tensor op */
        C update = ROUND(ROUND(m / s->bc1) * s->lr);
        if (rectify) {
            /* * (bias_correction2 ** 0.5 / (sqrt(v) + eps)) * rect; torch evaluates
             * float / tensor as tensor.reciprocal() * float. */
            const C denom = ROUND(ROUND(SQRT(v)) + s->eps);
            const C adaptive = ROUND(ROUND((C)1 / denom) * s->bc2_sqrt);
            update = ROUND(ROUND(update * adaptive) * s->rect);
        }
        m_[i * im] = STORE(m);
        v_[i * iv] = STORE(v);
        param[i * ip] = STORE(p - update); /* add_(update, alpha=-1): one rounding */
    }
}

static void KERNEL(radam)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *m_ = (T *)ptrs[2], *v_ = (T *)ptrs[3];
    const ptrdiff_t ip = inc[0], ig = inc[1], im = inc[2], iv = inc[3];
    const KERNEL(radam_scalars_) s = KERNEL(radam_scalars)(o, it->derived);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[RADAM_MAXIMIZE] != 0.0, decay = h[RADAM_WEIGHT_DECAY] != 0.0;
    const int decoupled = h[RADAM_DECOUPLED] != 0.0, rectify = it->derived[RADAM_RECTIFY] != 0.0;
    /* The coupled weight decay's add(alpha): its last elements where torch runs its scalar loop. */
    const ptrdiff_t nv = decay && !decoupled ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n;
    if (nv < n)
        KERNEL(radam_loop)(n - nv, param + nv * ip, ip, grad + nv * ig, ig, m_ + nv * im, im, v_ + nv * iv, iv, &s,
                           has_scale, write_back, maximize, decay, decoupled, s.small_weight, rectify, 1);
    n = nv;
    if (ip == 1 && ig == 1 && im == 1 && iv == 1 && !maximize && !decay && s.small_weight &&
        (!has_scale || write_back)) {
        if (rectify)
            KERNEL(radam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, &s, has_scale, has_scale, 0, 0, 0, 1, 1, 0);
        else
            KERNEL(radam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, &s, has_scale, has_scale, 0, 0, 0, 1, 0, 0);
        return;
    }
    KERNEL(radam_loop)(n, param, ip, grad, ig, m_, im, v_, iv, &s, has_scale, write_back, maximize, decay,
                       decoupled, s.small_weight, rectify, 0);
}
#endif /* SUFFIX */
