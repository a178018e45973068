/* Rprop: torch.optim._single_tensor_rprop. See gc_optim_tmpl.h for how kernels are built.
 *
 * Operands: param, grad, prev, step_size; one scalar, the step count (a float32 0-d array,
 * incremented by the spec's prepare). */
#ifndef GC_OPTIM_RPROP_LAYOUT
#define GC_OPTIM_RPROP_LAYOUT
/* Hyper-parameters, in the group tuple's order (gc_optim_specs.c names them). */
enum { RPROP_ETAMINUS, RPROP_ETAPLUS, RPROP_STEP_SIZE_MIN, RPROP_STEP_SIZE_MAX, RPROP_MAXIMIZE, RPROP_NH };
#endif

#ifdef SUFFIX
typedef struct {
    C scale, etaminus, etaplus, lo, hi;
} KERNEL(rprop_scalars_);

/* torch's sign(): 0 for NaN and for both zeros. */
#define RPROP_SIGN(x) ((C)0 < (x) ? (C)1 : ((x) < (C)0 ? (C)-1 : (C)0))

GC_INLINE void KERNEL(rprop_loop)(ptrdiff_t n, T *restrict param, ptrdiff_t ip, T *restrict grad, ptrdiff_t ig,
                                  T *restrict prev_, ptrdiff_t iq, T *restrict size_, ptrdiff_t is,
                                  const KERNEL(rprop_scalars_) *restrict s, int has_scale, int write_back,
                                  int maximize)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        C g;
        EFFECTIVE_GRAD(g, grad, i * ig);
        /* sign = grad.mul(prev).sign(), then the three masked assignments in torch's order */
        /* (as selects, which vectorise: the constructor's 0 < etaminus < 1 < etaplus makes the
         * three assignments independent) */
        const C sign = RPROP_SIGN(ROUND(g * LOAD(prev_[i * iq])));
        const C factor = sign > 0 ? s->etaplus : (sign < 0 ? s->etaminus : (C)1);
        /* step_size.mul_(sign).clamp_(min, max); clamp keeps NaN */
        const C size0 = ROUND(LOAD(size_[i * is]) * factor);
        const C size = size0 != size0 ? size0 : (s->hi < (size0 < s->lo ? s->lo : size0) ? s->hi : (size0 < s->lo ? s->lo : size0));
        /* grad[sign.eq(etaminus)] = 0 */
        g = factor == s->etaminus ? (C)0 : g;
        /* param.addcmul_(grad.sign(), step_size, value=-1) */
        param[i * ip] = STORE(FMA(-RPROP_SIGN(g), size, LOAD(param[i * ip])));
        size_[i * is] = STORE(size);
        prev_[i * iq] = STORE(g);
    }
}
#undef RPROP_SIGN

static void KERNEL(rprop)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc, ptrdiff_t n)
{
    const gc_optim_options *o = it->options;
    const double *h = o->h;
    T *param = (T *)ptrs[0], *grad = (T *)ptrs[1], *prev_ = (T *)ptrs[2], *size_ = (T *)ptrs[3];
    const ptrdiff_t ip = inc[0], ig = inc[1], iq = inc[2], is = inc[3];
    KERNEL(rprop_scalars_) s;
    s.scale = (C)o->scaling.scale;
    /* Scalars assigned into (or compared with) a tensor take its dtype. */
    s.etaminus = ALPHA(h[RPROP_ETAMINUS]);
    s.etaplus = ALPHA(h[RPROP_ETAPLUS]);
    s.lo = ALPHA(h[RPROP_STEP_SIZE_MIN]);
    s.hi = ALPHA(h[RPROP_STEP_SIZE_MAX]);
    int has_scale = o->scaling.has_scale;
    const int write_back = o->scaling.write_back;
    T clipped[2];
    CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back);
    const int maximize = h[RPROP_MAXIMIZE] != 0.0;
    if (ip == 1 && ig == 1 && iq == 1 && is == 1 && !maximize && (!has_scale || write_back)) {
        if (has_scale)
            KERNEL(rprop_loop)(n, param, 1, grad, 1, prev_, 1, size_, 1, &s, 1, 1, 0);
        else
            KERNEL(rprop_loop)(n, param, 1, grad, 1, prev_, 1, size_, 1, &s, 0, 0, 0);
        return;
    }
    KERNEL(rprop_loop)(n, param, ip, grad, ig, prev_, iq, size_, is, &s, has_scale, write_back, maximize);
}
#endif /* SUFFIX */
