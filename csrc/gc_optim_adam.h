/* Adam and AdamW: torch.optim._single_tensor_adam. See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq (only with amsgrad); one scalar,
 * the step count (a float32 0-d array, advanced by the spec's prepare). */
#ifndef GC_OPTIM_ADAM_LAYOUT
#define GC_OPTIM_ADAM_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum {
    ADAM_AMSGRAD, ADAM_BETA1, ADAM_BETA2, ADAM_LR, ADAM_WEIGHT_DECAY, ADAM_EPS, ADAM_MAXIMIZE, ADAM_DECOUPLED,
    ADAM_NH
};
/* item->derived: the step count and, from it, the bias corrections 1 - beta1^step and
 * sqrt(1 - beta2^step), in float64 with the C library's pow, exactly as torch's Python
 * computes them; once per parameter, not per run (a fused AGC step runs unit by unit). */
enum { ADAM_STEP, ADAM_BC1, ADAM_BC2_SQRT };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, decay, weight, weight_minus_one, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step;
    int small_weight;
} KERNEL(adam_scalars_);

static KERNEL(adam_scalars_) KERNEL(adam_scalars)(const gc_optim_options *o, const double *derived)
{
    const double *h = o->h;
    const double bc1 = derived[ADAM_BC1];
    KERNEL(adam_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[ADAM_WEIGHT_DECAY]);
    s.decay = (C)gc_lr_one_minus_times(h, h[ADAM_LR], h[ADAM_WEIGHT_DECAY]);
    const int beta1_bits = (int)h[GC_OPTIM_BETA1_KIND], beta2_bits = (int)h[GC_OPTIM_BETA2_KIND];
    /* exp_avg.lerp_(grad, 1 - beta1): a Tensor beta1 is first converted to the parameter's
     * dtype, and 1 - it computed in that dtype. */
    s.weight = beta1_bits ? ROUND((C)1 - ROUND((C)h[ADAM_BETA1])) : (C)(1.0 - h[ADAM_BETA1]);
    s.weight_minus_one = s.weight - (C)1;
    s.small_weight = (s.weight < 0 ? -s.weight : s.weight) < (C)0.5;
    s.beta2 = (C)h[ADAM_BETA2];
    /* addcmul_(value=1 - beta2): a Tensor beta2's 1 - beta2 is a 0-d tensor of its dtype. */
    s.one_minus_beta2 = beta2_bits == 32 ? (C)(1.0f - (float)h[ADAM_BETA2]) : (C)(1.0 - h[ADAM_BETA2]);
    s.bc2_sqrt = (C)derived[ADAM_BC2_SQRT];
    s.eps = ALPHA(h[ADAM_EPS]); /* denom.add_(eps): a scalar added to a tensor */
    /* step_size = lr / bc1; value=-step_size. With a Tensor beta1, bc1 is a 0-d tensor of its
     * dtype: a number (Python float, NumPy scalar) divided by it is torch's
     * Tensor.__rtruediv__, bc1.reciprocal() * lr, in bc1's dtype; a Tensor lr divides, in
     * float32 if both are float32, else in float64. */
    const double lr = h[ADAM_LR];
    const int lr_tensor = (int)h[GC_OPTIM_LR_TENSOR];
    double step_size;
    if (beta1_bits == 0)
        step_size = gc_lr_over(h, lr, bc1);
    else if (lr_tensor == 0)
        step_size = beta1_bits == 32 ? (double)((1.0f / (float)bc1) * (float)lr) : (1.0 / bc1) * lr;
    else if (beta1_bits == 32 && lr_tensor == 32)
        step_size = (double)((float)lr / (float)bc1);
    else
        step_size = lr / bc1;
    s.neg_step = (C)(-step_size);
    return s;
}

GC_INLINE void KERNEL(adam_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                 T *restrict m_, ptrdiff_t im, T *restrict v_, ptrdiff_t iv, T *restrict vmax_,
                                 ptrdiff_t ix, const KERNEL(adam_scalars_) *restrict s, int has_scale,
                                 int write_back, int maximize, int decay, int decoupled, int amsgrad,
                                 int small_weight, int scalar)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        C p = LOAD(param[i * ip]);
        if (decay) {
            if (decoupled)
                p = ROUND(p * s->decay);
            else
                g = ROUND(ADD_ALPHA(scalar, g, s->wd, p));
        }
        const C m0 = LOAD(m_[i * im]);
        const C diff = g - m0;
        const C m = ROUND(small_weight ? FMA(s->weight, diff, m0) : FMA(s->weight_minus_one, diff, g));
        const C v = ROUND(FMA(s->one_minus_beta2 * g, g, ROUND(LOAD(v_[i * iv]) * s->beta2)));
        C second = v;
        if (amsgrad) {
            const C vmax0 = LOAD(vmax_[i * ix]);
            /* torch.maximum: NaN from either side wins. */
            second = (vmax0 != vmax0 || v != v) ? (vmax0 != vmax0 ? vmax0 : v) : (v > vmax0 ? v : vmax0);
            vmax_[i * ix] = STORE(second);
        }
        const C denom = ROUND(ROUND(ROUND(SQRT(second)) / s->bc2_sqrt) + s->eps);
        m_[i * im] = STORE(m);
        v_[i * iv] = STORE(v);
        param[i * ip] = STORE(p + (s->neg_step * m) / denom);
    }
}

static void KERNEL(adam)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    const int amsgrad = h[ADAM_AMSGRAD] != 0.0, maximize = h[ADAM_MAXIMIZE] != 0.0;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *m_ = (T *)ptrs[2], *v_ = (T *)ptrs[3];
    T *vmax_ = amsgrad ? (T *)ptrs[4] : NULL;
    const ptrdiff_t ip = inc[0], ig = inc[1], im = inc[2], iv = inc[3], ix = amsgrad ? inc[4] : 1;
    const KERNEL(adam_scalars_) s = KERNEL(adam_scalars)(o, it->derived);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int decay = h[ADAM_WEIGHT_DECAY] != 0.0, decoupled = h[ADAM_DECOUPLED] != 0.0;
    /* grad.add(param, alpha=weight_decay) (see ADD_ALPHA): where torch computes it in its
     * scalar loop, the run's last elements take the general loop. */
    if (decay && !decoupled) {
        const ptrdiff_t nv = KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n);
        if (nv < n)
            KERNEL(adam_loop)(n - nv, param + nv * ip, ip, grad + nv * ig, ig, m_ + nv * im, im, v_ + nv * iv, iv,
                              amsgrad ? vmax_ + nv * ix : NULL, ix, &s, has_scale, write_back, maximize, decay,
                              decoupled, amsgrad, s.small_weight, 1);
        n = nv;
    }
    const int contiguous = ip == 1 && ig == 1 && im == 1 && iv == 1;
    /* A complex parameter's coupled weight decay comes before torch's view_as_real: a complex
     * add, rounding the product first (ADD_ALPHA's scalar form). */
    const int complex_decay = it->pairs && decay && !decoupled;
    if (contiguous && !maximize && !amsgrad && s.small_weight && !complex_decay && (!has_scale || write_back)) {
        /* Adam and AdamW with their usual settings, with or without fused clipping. */
        const int adamw = decay && decoupled;
        if (decay && !decoupled)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, has_scale, has_scale, 0, 1, 0, 0, 1, 0);
        else if (adamw && has_scale)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 1, 1, 0, 1, 1, 0, 1, 0);
        else if (adamw)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 0, 0, 0, 1, 1, 0, 1, 0);
        else if (has_scale)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 1, 1, 0, 0, 0, 0, 1, 0);
        else
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 0, 0, 0, 0, 0, 0, 1, 0);
        return;
    }
    KERNEL(adam_loop)(n, param, ip, grad, ig, m_, im, v_, iv, vmax_, ix, &s, has_scale, write_back, maximize,
                      decay, decoupled, amsgrad, s.small_weight, it->pairs);
}
#endif /* SUFFIX */
