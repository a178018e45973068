/* NAdam: torch.optim._single_tensor_nadam. See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: param, grad, exp_avg, exp_avg_sq; two scalars, the step count and mu_product (0-d
 * float32 arrays, advanced by the spec's prepare exactly as torch advances its tensors). */
#ifndef GC_OPTIM_NADAM_LAYOUT
#define GC_OPTIM_NADAM_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum {
    NADAM_BETA1, NADAM_BETA2, NADAM_LR, NADAM_WEIGHT_DECAY, NADAM_MOMENTUM_DECAY, NADAM_EPS, NADAM_DECOUPLED,
    NADAM_MAXIMIZE, NADAM_NH
};
/* item->derived: float64 values torch computes in Python per parameter. */
enum { NADAM_BC2, NADAM_GRAD_VALUE, NADAM_AVG_VALUE };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, decay, weight, weight_minus_one, beta2, one_minus_beta2, bc2, eps, grad_value, avg_value;
    int small_weight;
} KERNEL(nadam_scalars_);

static KERNEL(nadam_scalars_) KERNEL(nadam_scalars)(const gc_optim_options *o, const double *derived)
{
    const double *h = o->h;
    KERNEL(nadam_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[NADAM_WEIGHT_DECAY]);
    s.decay = (C)gc_lr_one_minus_times(h, h[NADAM_LR], h[NADAM_WEIGHT_DECAY]);
    s.weight = (C)(1.0 - h[NADAM_BETA1]);
    s.weight_minus_one = s.weight - (C)1;
    s.small_weight = (s.weight < 0 ? -s.weight : s.weight) < (C)0.5;
    s.beta2 = (C)h[NADAM_BETA2];
    s.one_minus_beta2 = (C)(1.0 - h[NADAM_BETA2]);
    s.bc2 = (C)derived[NADAM_BC2];
    s.eps = ALPHA(h[NADAM_EPS]); /* x.add(eps): a scalar added to a tensor */
    s.grad_value = (C)derived[NADAM_GRAD_VALUE];
    s.avg_value = (C)derived[NADAM_AVG_VALUE];
    return s;
}

GC_INLINE void KERNEL(nadam_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                  T *restrict m_, ptrdiff_t im, T *restrict v_, ptrdiff_t iv,
                                  const KERNEL(nadam_scalars_) *restrict s, int has_scale, int write_back,
                                  int maximize, int decay, int decoupled, int small_weight, int scalar_wd)
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
        /* denom = exp_avg_sq.div(bias_correction2).sqrt().add_(eps) */
        const C denom = ROUND(ROUND(SQRT(ROUND(v / s->bc2))) + s->eps);
        /* Two addcdiv_ calls, each rounded to the parameter's dtype. */
        p = ROUND(p + (s->grad_value * g) / denom);
        m_[i * im] = STORE(m);
        v_[i * iv] = STORE(v);
        param[i * ip] = STORE(p + (s->avg_value * m) / denom);
    }
}

static void KERNEL(nadam)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *m_ = (T *)ptrs[2], *v_ = (T *)ptrs[3];
    const ptrdiff_t ip = inc[0], ig = inc[1], im = inc[2], iv = inc[3];
    const KERNEL(nadam_scalars_) s = KERNEL(nadam_scalars)(o, it->derived);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[NADAM_MAXIMIZE] != 0.0, decay = h[NADAM_WEIGHT_DECAY] != 0.0;
    const int decoupled = h[NADAM_DECOUPLED] != 0.0;
    /* The coupled weight decay's add(alpha): its last elements where torch runs its scalar loop. */
    const ptrdiff_t nv = decay && !decoupled ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n;
    if (nv < n)
        KERNEL(nadam_loop)(n - nv, param + nv * ip, ip, grad + nv * ig, ig, m_ + nv * im, im, v_ + nv * iv, iv, &s,
                           has_scale, write_back, maximize, decay, decoupled, s.small_weight, 1);
    n = nv;
    if (ip == 1 && ig == 1 && im == 1 && iv == 1 && !maximize && !decay && s.small_weight &&
        (!has_scale || write_back)) {
        if (has_scale)
            KERNEL(nadam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, &s, 1, 1, 0, 0, 0, 1, 0);
        else
            KERNEL(nadam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, &s, 0, 0, 0, 0, 0, 1, 0);
        return;
    }
    KERNEL(nadam_loop)(n, param, ip, grad, ig, m_, im, v_, iv, &s, has_scale, write_back, maximize, decay,
                       decoupled, s.small_weight, 0);
}
#endif /* SUFFIX */
