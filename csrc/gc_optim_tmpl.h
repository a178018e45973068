/* One SGD and one Adam run kernel per dtype. Included by gc_optim.c with:
 *   T        storage type          C        compute type (torch's opmath: float for float16)
 *   LOAD(x)  T -> C                STORE(x) C -> T (rounds)      ROUND(x)  C -> T -> C
 *   FMA      fma for C             SQRT     sqrt for C           SUFFIX    name suffix
 *
 * torch's CPU kernels compute a.add(b, alpha=s) as fma(b, s, a), lerp as an fma, and
 * addcmul as fma(s * b, c, a); every other operation rounds once to C and the result of each
 * torch operation rounds to T. Scalars are converted to C, except add's alpha, which torch's
 * float16 kernel rounds to float16 first (ALPHA). The parameters are undefined at the end.
 */
#define GC_CAT_(a, b) a##b
#define GC_CAT(a, b) GC_CAT_(a, b)
#define KERNEL(name) GC_CAT(name, SUFFIX)

typedef struct {
    C scale, wd, momentum, damp_alpha, momentum_alpha, neg_lr;
} KERNEL(sgd_scalars_);

static KERNEL(sgd_scalars_) KERNEL(sgd_scalars)(const gc_sgd_options *o)
{
    KERNEL(sgd_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(o->weight_decay);
    s.momentum = (C)o->momentum;
    s.damp_alpha = ALPHA(1.0 - o->dampening);
    s.momentum_alpha = ALPHA(o->momentum);
    s.neg_lr = ALPHA(-o->lr);
    return s;
}

/* The clipped, possibly negated gradient element k (written back when asked). */
#define EFFECTIVE_GRAD(g, grad, k, scaling, sc, maximize)                                        \
    do {                                                                                       \
        (g) = LOAD((grad)[k]);                                                                 \
        if ((scaling)->has_scale) {                                                            \
            (g) = ROUND((g) * (sc));                                                           \
            if ((scaling)->write_back)                                                         \
                (grad)[k] = STORE(g);                                                          \
        }                                                                                      \
        if (maximize)                                                                          \
            (g) = -(g);                                                                        \
    } while (0)

static void KERNEL(sgd_run)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                           T *restrict buf, ptrdiff_t ib, int fresh, const gc_sgd_options *o)
{
    const KERNEL(sgd_scalars_) s = KERNEL(sgd_scalars)(o);
    const int decay = o->weight_decay != 0.0, momentum = o->momentum != 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig, &o->scaling, s.scale, o->maximize);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = ROUND(FMA(p, s.wd, g));
        if (momentum) {
            C b = fresh ? g : ROUND(FMA(g, s.damp_alpha, ROUND(LOAD(buf[i * ib]) * s.momentum)));
            buf[i * ib] = STORE(b);
            g = o->nesterov ? ROUND(FMA(b, s.momentum_alpha, g)) : b;
        }
        param[i * ip] = STORE(FMA(g, s.neg_lr, p));
    }
}

static void KERNEL(sgd_run_contiguous)(ptrdiff_t n, T *restrict param, T *restrict grad, T *restrict buf,
                                      int fresh, const gc_sgd_options *o)
{
    /* The same loop with unit strides, which the compiler can vectorise. */
    const KERNEL(sgd_scalars_) s = KERNEL(sgd_scalars)(o);
    const int decay = o->weight_decay != 0.0, momentum = o->momentum != 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i, &o->scaling, s.scale, o->maximize);
        const C p = LOAD(param[i]);
        if (decay)
            g = ROUND(FMA(p, s.wd, g));
        if (momentum) {
            C b = fresh ? g : ROUND(FMA(g, s.damp_alpha, ROUND(LOAD(buf[i]) * s.momentum)));
            buf[i] = STORE(b);
            g = o->nesterov ? ROUND(FMA(b, s.momentum_alpha, g)) : b;
        }
        param[i] = STORE(FMA(g, s.neg_lr, p));
    }
}

typedef struct {
    C scale, wd, decay, weight, weight_minus_one, beta2, one_minus_beta2, bc2_sqrt, eps, neg_step;
    int small_weight;
} KERNEL(adam_scalars_);

static KERNEL(adam_scalars_) KERNEL(adam_scalars)(const gc_adam_options *o, double step)
{
    /* Bias corrections in float64 with the C library's pow, exactly as torch's Python does. */
    const double bc1 = 1.0 - pow(o->beta1, step);
    const double bc2 = 1.0 - pow(o->beta2, step);
    KERNEL(adam_scalars_) s;
    s.scale = (C)o->scaling.scale;
    s.wd = ALPHA(o->weight_decay);
    s.decay = (C)(1.0 - o->lr * o->weight_decay);
    s.weight = (C)(1.0 - o->beta1);
    s.weight_minus_one = s.weight - (C)1;
    s.small_weight = (s.weight < 0 ? -s.weight : s.weight) < (C)0.5;
    s.beta2 = (C)o->beta2;
    s.one_minus_beta2 = (C)(1.0 - o->beta2);
    s.bc2_sqrt = (C)pow(bc2, 0.5);
    s.eps = (C)o->eps;
    s.neg_step = (C)(-(o->lr / bc1));
    return s;
}

static void KERNEL(adam_run)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                            T *restrict m_, ptrdiff_t im, T *restrict v_, ptrdiff_t iv, T *restrict vmax_,
                            ptrdiff_t ix, double step, const gc_adam_options *o)
{
    const KERNEL(adam_scalars_) s = KERNEL(adam_scalars)(o, step);
    const int decay = o->weight_decay != 0.0;
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig, &o->scaling, s.scale, o->maximize);
        C p = LOAD(param[i * ip]);
        if (decay) {
            if (o->decoupled_weight_decay)
                p = ROUND(p * s.decay);
            else
                g = ROUND(FMA(p, s.wd, g));
        }
        const C m0 = LOAD(m_[i * im]);
        const C diff = g - m0;
        const C m = ROUND(s.small_weight ? FMA(s.weight, diff, m0) : FMA(s.weight_minus_one, diff, g));
        const C v = ROUND(FMA(s.one_minus_beta2 * g, g, ROUND(LOAD(v_[i * iv]) * s.beta2)));
        C second = v;
        if (o->amsgrad) {
            const C vmax0 = LOAD(vmax_[i * ix]);
            /* torch.maximum: NaN from either side wins. */
            second = (vmax0 != vmax0 || v != v) ? (vmax0 != vmax0 ? vmax0 : v) : (v > vmax0 ? v : vmax0);
            vmax_[i * ix] = STORE(second);
        }
        const C denom = ROUND(ROUND(ROUND(SQRT(second)) / s.bc2_sqrt) + s.eps);
        m_[i * im] = STORE(m);
        v_[i * iv] = STORE(v);
        param[i * ip] = STORE(p + (s.neg_step * m) / denom);
    }
}

#undef EFFECTIVE_GRAD
#undef KERNEL
#undef GC_CAT
#undef GC_CAT_
/* The parameters, so the next inclusion can define them afresh. */
#undef T
#undef C
#undef LOAD
#undef STORE
#undef ROUND
#undef ALPHA
#undef FMA
#undef SQRT
#undef SUFFIX
