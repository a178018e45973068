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
#define EFFECTIVE_GRAD(g, grad, k)                                                               \
    do {                                                                                       \
        (g) = LOAD((grad)[k]);                                                                 \
        if (has_scale) {                                                                       \
            (g) = ROUND((g) * s->scale);                                                       \
            if (write_back)                                                                    \
                (grad)[k] = STORE(g);                                                          \
        }                                                                                      \
        if (maximize)                                                                          \
            (g) = -(g);                                                                        \
    } while (0)

/* The loops take their options as separate int arguments and are always inlined: called with
 * literal flags and unit strides, each copy is specialised and vectorised by the compiler;
 * called with run-time values, it is the general loop. */
#define GC_INLINE static inline __attribute__((always_inline))

GC_INLINE void KERNEL(sgd_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                T *restrict buf, ptrdiff_t ib, const KERNEL(sgd_scalars_) *restrict s,
                                int has_scale, int write_back, int maximize, int decay, int momentum,
                                int nesterov, int fresh)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        const C p = LOAD(param[i * ip]);
        if (decay)
            g = ROUND(FMA(p, s->wd, g));
        if (momentum) {
            C b = fresh ? g : ROUND(FMA(g, s->damp_alpha, ROUND(LOAD(buf[i * ib]) * s->momentum)));
            buf[i * ib] = STORE(b);
            g = nesterov ? ROUND(FMA(b, s->momentum_alpha, g)) : b;
        }
        param[i * ip] = STORE(FMA(g, s->neg_lr, p));
    }
}

static void KERNEL(sgd_run)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                           T *restrict buf, ptrdiff_t ib, int fresh, const gc_sgd_options *o)
{
    const KERNEL(sgd_scalars_) s = KERNEL(sgd_scalars)(o);
    const int has_scale = o->scaling.has_scale, write_back = o->scaling.write_back;
    const int decay = o->weight_decay != 0.0, momentum = o->momentum != 0.0;
    const int plain = !decay && !o->maximize && !o->nesterov && !fresh;
    if (ip == 1 && ig == 1 && ib == 1 && plain && (!has_scale || write_back)) {
        /* The common cases (with or without momentum, with or without fused clipping),
         * specialised so they vectorise. */
        if (momentum && has_scale)
            KERNEL(sgd_loop)(n, param, 1, grad, 1, buf, 1, &s, 1, 1, 0, 0, 1, 0, 0);
        else if (momentum)
            KERNEL(sgd_loop)(n, param, 1, grad, 1, buf, 1, &s, 0, 0, 0, 0, 1, 0, 0);
        else if (has_scale)
            KERNEL(sgd_loop)(n, param, 1, grad, 1, buf, 1, &s, 1, 1, 0, 0, 0, 0, 0);
        else
            KERNEL(sgd_loop)(n, param, 1, grad, 1, buf, 1, &s, 0, 0, 0, 0, 0, 0, 0);
        return;
    }
    KERNEL(sgd_loop)(n, param, ip, grad, ig, buf, ib, &s, has_scale, write_back, o->maximize, decay, momentum,
                     o->nesterov, fresh);
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

GC_INLINE void KERNEL(adam_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                 T *restrict m_, ptrdiff_t im, T *restrict v_, ptrdiff_t iv, T *restrict vmax_,
                                 ptrdiff_t ix, const KERNEL(adam_scalars_) *restrict s, int has_scale,
                                 int write_back, int maximize, int decay, int decoupled, int amsgrad,
                                 int small_weight)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        C p = LOAD(param[i * ip]);
        if (decay) {
            if (decoupled)
                p = ROUND(p * s->decay);
            else
                g = ROUND(FMA(p, s->wd, g));
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

static void KERNEL(adam_run)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                            T *restrict m_, ptrdiff_t im, T *restrict v_, ptrdiff_t iv, T *restrict vmax_,
                            ptrdiff_t ix, double step, const gc_adam_options *o)
{
    const KERNEL(adam_scalars_) s = KERNEL(adam_scalars)(o, step);
    const int has_scale = o->scaling.has_scale, write_back = o->scaling.write_back;
    const int decay = o->weight_decay != 0.0, decoupled = o->decoupled_weight_decay;
    const int contiguous = ip == 1 && ig == 1 && im == 1 && iv == 1;
    if (contiguous && !o->maximize && !o->amsgrad && s.small_weight && (!has_scale || write_back)) {
        /* Adam and AdamW with their usual settings, with or without fused clipping. */
        const int adamw = decay && decoupled;
        if (decay && !decoupled)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, has_scale, has_scale, 0, 1, 0, 0, 1);
        else if (adamw && has_scale)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 1, 1, 0, 1, 1, 0, 1);
        else if (adamw)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 0, 0, 0, 1, 1, 0, 1);
        else if (has_scale)
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 1, 1, 0, 0, 0, 0, 1);
        else
            KERNEL(adam_loop)(n, param, 1, grad, 1, m_, 1, v_, 1, vmax_, 1, &s, 0, 0, 0, 0, 0, 0, 1);
        return;
    }
    KERNEL(adam_loop)(n, param, ip, grad, ig, m_, im, v_, iv, vmax_, ix, &s, has_scale, write_back, o->maximize,
                      decay, decoupled, o->amsgrad, s.small_weight);
}

#undef EFFECTIVE_GRAD
#undef GC_INLINE
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
