/* Adagrad: torch.optim._single_tensor_adagrad (dense gradients). See gc_optim_tmpl.h.
 *
 * Operands: param, grad, sum (created by the optimizer, filled with initial_accumulator_value);
 * one scalar, the step count (advanced by the spec's prepare, which also computes the decayed
 * learning rate clr = lr / (1 + (step - 1) * lr_decay) in float64, as torch's Python does). */
#ifndef GC_OPTIM_ADAGRAD_LAYOUT
#define GC_OPTIM_ADAGRAD_LAYOUT
enum { ADAGRAD_LR, ADAGRAD_WEIGHT_DECAY, ADAGRAD_LR_DECAY, ADAGRAD_EPS, ADAGRAD_MAXIMIZE, ADAGRAD_NH };
enum { ADAGRAD_CLR }; /* item->derived */
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, wd_c, eps, neg_clr;
} KERNEL(adagrad_scalars_);

GC_INLINE void KERNEL(adagrad_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                    T *restrict sum_, ptrdiff_t is, const KERNEL(adagrad_scalars_) *restrict s,
                                    int has_scale, int write_back, int maximize, int decay, int pairs,
                                    int scalar_wd)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = COUPLED_DECAY(scalar_wd, g, p, pairs);
        const C sum = ROUND(FMA(g, g, LOAD(sum_[i * is]))); /* addcmul_(g, g, value=1) */
        const C std = ROUND(ROUND(SQRT(sum)) + s->eps);
        sum_[i * is] = STORE(sum);
        param[i * ip] = STORE(p + (s->neg_clr * g) / std); /* addcdiv_(g, std, value=-clr) */
    }
}

static void KERNEL(adagrad)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *sum_ = (T *)ptrs[2];
    const ptrdiff_t ip = inc[0], ig = inc[1], is = inc[2];
    KERNEL(adagrad_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[ADAGRAD_WEIGHT_DECAY]);
    s.wd_c = (C)h[ADAGRAD_WEIGHT_DECAY];
    s.eps = ALPHA(h[ADAGRAD_EPS]); /* x.add(eps): a scalar added to a tensor */
    s.neg_clr = (C)(-it->derived[ADAGRAD_CLR]);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[ADAGRAD_MAXIMIZE] != 0.0, decay = h[ADAGRAD_WEIGHT_DECAY] != 0.0;
    /* The weight decay's add(alpha): its last elements where torch runs its scalar loop. */
    const ptrdiff_t nv = decay ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n;
    if (nv < n)
        KERNEL(adagrad_loop)(n - nv, param + nv * ip, ip, grad + nv * ig, ig, sum_ + nv * is, is, &s, has_scale,
                             write_back, maximize, decay, it->pairs, 1);
    n = nv;
    if (ip == 1 && ig == 1 && is == 1 && !maximize && !decay && (!has_scale || write_back)) {
        if (has_scale)
            KERNEL(adagrad_loop)(n, param, 1, grad, 1, sum_, 1, &s, 1, 1, 0, 0, 0, 0);
        else
            KERNEL(adagrad_loop)(n, param, 1, grad, 1, sum_, 1, &s, 0, 0, 0, 0, 0, 0);
        return;
    }
    KERNEL(adagrad_loop)(n, param, ip, grad, ig, sum_, is, &s, has_scale, write_back, maximize, decay, it->pairs, 0);
}
#endif /* SUFFIX */
