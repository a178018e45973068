/* RMSprop: torch.optim._single_tensor_rmsprop. See gc_optim_tmpl.h.
 *
 * Operands: param, grad, square_avg, then the optional buffers in this order: grad_avg (only
 * when centered), momentum_buffer (only when momentum > 0) -- without centered the momentum
 * buffer takes operand 3. One scalar, the step count (advanced, not otherwise used). */
#ifndef GC_OPTIM_RMSPROP_LAYOUT
#define GC_OPTIM_RMSPROP_LAYOUT
enum {
    RMSPROP_LR, RMSPROP_ALPHA, RMSPROP_EPS, RMSPROP_WEIGHT_DECAY, RMSPROP_MOMENTUM, RMSPROP_CENTERED,
    RMSPROP_MAXIMIZE, RMSPROP_NH
};
#endif

#ifdef SUFFIX
typedef struct {
    C scale, wd, wd_c, alpha, one_minus_alpha, weight, weight_minus_one, eps, momentum, neg_lr, neg_lr_alpha;
    int small_weight;
} KERNEL(rmsprop_scalars_);

GC_INLINE void KERNEL(rmsprop_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                    T *restrict v_, ptrdiff_t iv, T *restrict ga_, ptrdiff_t ia, T *restrict buf_,
                                    ptrdiff_t ib, const KERNEL(rmsprop_scalars_) *restrict s, int has_scale,
                                    int write_back, int maximize, int decay, int pairs, int centered, int momentum,
                                    int small_weight, int scalar_wd, int scalar_update)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = COUPLED_DECAY(scalar_wd, g, p, pairs);
        /* square_avg.mul_(alpha).addcmul_(g, g, value=1 - alpha) */
        const C v = ROUND(FMA(s->one_minus_alpha * g, g, ROUND(LOAD(v_[i * iv]) * s->alpha)));
        v_[i * iv] = STORE(v);
        C avg;
        if (centered) {
            const C a0 = LOAD(ga_[i * ia]);
            const C diff = g - a0; /* grad_avg.lerp_(g, 1 - alpha) */
            const C a = ROUND(small_weight ? FMA(s->weight, diff, a0) : FMA(s->weight_minus_one, diff, g));
            ga_[i * ia] = STORE(a);
            avg = ROUND(SQRT(ROUND(FMA(-a, a, v)))); /* addcmul(a, a, value=-1).sqrt_() */
        }
        else {
            avg = ROUND(SQRT(v));
        }
        avg = ROUND(avg + s->eps);
        if (momentum) {
            /* buf.mul_(momentum).addcdiv_(g, avg); param.add_(buf, alpha=-lr) */
            const C b = ROUND(ROUND(LOAD(buf_[i * ib]) * s->momentum) + g / avg);
            buf_[i * ib] = STORE(b);
            param[i * ip] = STORE(ADD_ALPHA(scalar_update, p, s->neg_lr_alpha, b));
        }
        else {
            param[i * ip] = STORE(p + (s->neg_lr * g) / avg); /* addcdiv_(g, avg, value=-lr) */
        }
    }
}

static void KERNEL(rmsprop)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    const int centered = h[RMSPROP_CENTERED] != 0.0, momentum = h[RMSPROP_MOMENTUM] > 0.0;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *v_ = (T *)ptrs[2];
    T *ga_ = centered ? (T *)ptrs[3] : NULL;
    T *buf_ = momentum ? (T *)ptrs[3 + centered] : NULL;
    const ptrdiff_t ip = inc[0], ig = inc[1], iv = inc[2], ia = centered ? inc[3] : 1,
                    ib = momentum ? inc[3 + centered] : 1;
    KERNEL(rmsprop_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(h[RMSPROP_WEIGHT_DECAY]);
    s.wd_c = (C)h[RMSPROP_WEIGHT_DECAY];
    s.alpha = (C)h[RMSPROP_ALPHA];
    s.one_minus_alpha = (C)(1.0 - h[RMSPROP_ALPHA]);
    s.weight = s.one_minus_alpha;
    s.weight_minus_one = s.weight - (C)1;
    s.small_weight = (s.weight < 0 ? -s.weight : s.weight) < (C)0.5;
    s.eps = ALPHA(h[RMSPROP_EPS]); /* x.add(eps): a scalar added to a tensor */
    s.momentum = (C)h[RMSPROP_MOMENTUM];
    s.neg_lr = (C)(-h[RMSPROP_LR]);
    s.neg_lr_alpha = ALPHA(-h[RMSPROP_LR]);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[RMSPROP_MAXIMIZE] != 0.0, decay = h[RMSPROP_WEIGHT_DECAY] != 0.0;
    const int contiguous = ip == 1 && ig == 1 && iv == 1 && ia == 1 && ib == 1;
    /* Which of torch's loops computes each add(alpha) (see torch_vector_end): the weight decay
     * and, with momentum, param.add_(buf, alpha=-lr). */
    const ptrdiff_t ends[2] = {decay ? KERNEL(torch_vector_end)(it, DECAY_OPS(maximize), n) : n,
                               momentum ? KERNEL(torch_vector_end)(it, OPS_P | OPS_S(1 + centered), n) : n};
    for (ptrdiff_t lo = 0, hi; lo < n; lo = hi) {
        unsigned sc;
        hi = gc_torch_segment(ends, 2, lo, n, &sc);
        T *const p_ = param + lo * ip, *const g_ = grad + lo * ig, *const v = v_ + lo * iv;
        T *const a_ = centered ? ga_ + lo * ia : NULL, *const b_ = momentum ? buf_ + lo * ib : NULL;
        const ptrdiff_t m = hi - lo;
        if (sc == 0 && contiguous && !maximize && !decay && (!centered || s.small_weight) &&
            (!has_scale || write_back)) {
            /* Plain, centered, with momentum, with or without fused clipping: constant flags,
             * so that each loop vectorises. */
#define RMSPROP_CONTIGUOUS(HAS_SCALE, CENTERED, MOMENTUM)                                           \
    KERNEL(rmsprop_loop)(m, p_, 1, g_, 1, v, 1, a_, 1, b_, 1, &s, HAS_SCALE, HAS_SCALE, 0, 0, 0, CENTERED, MOMENTUM, 1, 0, 0)
            if (centered && momentum)
                has_scale ? RMSPROP_CONTIGUOUS(1, 1, 1) : RMSPROP_CONTIGUOUS(0, 1, 1);
            else if (centered)
                has_scale ? RMSPROP_CONTIGUOUS(1, 1, 0) : RMSPROP_CONTIGUOUS(0, 1, 0);
            else if (momentum)
                has_scale ? RMSPROP_CONTIGUOUS(1, 0, 1) : RMSPROP_CONTIGUOUS(0, 0, 1);
            else
                has_scale ? RMSPROP_CONTIGUOUS(1, 0, 0) : RMSPROP_CONTIGUOUS(0, 0, 0);
#undef RMSPROP_CONTIGUOUS
            continue;
        }
        KERNEL(rmsprop_loop)(m, p_, ip, g_, ig, v, iv, a_, ia, b_, ib, &s, has_scale, write_back, maximize, decay,
                             it->pairs, centered, momentum, s.small_weight, (sc & 1u) != 0, (sc & 2u) != 0);
    }
}
#endif /* SUFFIX */
