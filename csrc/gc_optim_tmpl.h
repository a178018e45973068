/* What every optimizer kernel template shares. Included by gc_optim_kernels.h once per dtype
 * with:
 *   T        storage type          C        compute type (torch's opmath: float for float16)
 *   LOAD(x)  T -> C                STORE(x) C -> T (rounds)      ROUND(x)  C -> T -> C
 *   FMA      fma for C             SQRT     sqrt for C           SUFFIX    name suffix
 *   WIDE_SCALE(x, c)  x (a C) times the double c in double, rounded once to T, as a C
 *
 * torch's CPU kernels compute a.add(b, alpha=s) as fma(b, s, a) (but see ADD_ALPHA), lerp as
 * an fma, addcmul as fma(s * b, c, a) and addcdiv as a + (s * b) / c; every other operation
 * rounds once to C, and the result of each torch operation rounds to T. Scalars are converted
 * to C, except add's alpha and a scalar added to a tensor (x.add(eps)), which torch holds in T:
 * ALPHA rounds them (for float16 to float16). Measured for float16 with torch 2.13 on AVX-512,
 * both loops (vectorised and scalar) of: add/sub with and without alpha or a scalar, mul and
 * div by a tensor or a scalar (div is a true division, not a product by 1/s), scalar / tensor
 * (reciprocal, then the product), addcmul, addcdiv, lerp, sqrt, reciprocal, clamp, maximum;
 * of these only add(alpha) differs between the loops (as does rsqrt, which no kernel uses).
 *
 * A kernel gc_optim_<name>.h defines, for its dtype,
 *   static void KERNEL(<name>)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc,
 *                              ptrdiff_t n)
 * updating n elements of every operand: operand k's first element at ptrs[k], its neighbours
 * inc[k] elements apart.
 */
#define GC_CAT_(a, b) a##b
#define GC_CAT(a, b) GC_CAT_(a, b)
#define KERNEL(name) GC_CAT(name, SUFFIX)

/* The clipped, possibly negated gradient element k (written back when asked); needs has_scale,
 * write_back, maximize and s->scale in scope. */
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

/* grad.add(param, alpha=wd), the L2 penalty most optimizers add before anything else: an add
 * with alpha (ADD_ALPHA; `scalar` as there), except for a complex parameter, where torch adds on
 * the complex tensors and its complex multiply-add rounds the product first. Needs s->wd
 * (ALPHA(wd)) and s->wd_c ((C)wd). Its operand set (torch_vector_end) is DECAY_OPS. */
#define COUPLED_DECAY(scalar, g, p, pairs)                                                       \
    ((pairs) ? ROUND((g) + ROUND((p) * s->wd_c)) : ROUND(ADD_ALPHA((scalar), (g), s->wd, (p))))

/* torch's 0-d rule for the fused clip (as scale_zero_dim in gc_clip.c): a 0-d parameter's
 * gradient times a float64 coefficient is computed in float64 and rounded once (WIDE_SCALE;
 * a complex one is its two reals). Done before the loop, into `clipped` (T[2], a local copy)
 * that the loop then reads as an unclipped gradient. */
#define CLIP_ZERO_DIM(it, o, grad, clipped, has_scale, write_back)                               \
    do {                                                                                       \
        if ((it)->zero_dim && (has_scale)) {                                                   \
            for (int k_ = 0; k_ < 1 + ((it)->pairs != 0); k_++) {                              \
                (clipped)[k_] = STORE(WIDE_SCALE(LOAD((grad)[k_]), (o)->scaling.scale));       \
                if (write_back)                                                                \
                    (grad)[k_] = (clipped)[k_];                                                \
            }                                                                                  \
            (grad) = (clipped);                                                                \
            (has_scale) = 0;                                                                   \
        }                                                                                      \
    } while (0)

/* torch's a.add(b, alpha): its vectorised CPU loop computes fma(b, alpha, a) in C; its scalar
 * loop (the last elements of each contiguous run, every element of a non-contiguous or 0-d
 * tensor) computes a + alpha * b in T arithmetic, which for float16 rounds alpha * b to float16
 * first. `scalar` picks the second; for float32/float64 both are the fma (the compiler
 * contracts torch's scalar expression) and SCALAR_TAIL is 0. */
#define ADD_ALPHA(scalar, a, alpha, b) ((scalar) ? ((a) + ROUND((alpha) * (b))) : FMA((b), (alpha), (a)))

/* How many of the n elements of the current run torch's vectorised CPU loop computes for one
 * operation over the operand set `ops` (bit k: operand k; GC_OPTIM_GRAD_TMP: a temporary torch
 * allocates from the gradient, such as -grad or grad.add(p); a temporary computed from a state,
 * such as Adadelta's delta, counts as that state); its scalar loop computes the rest. This
 * matters for float16 only, where the two loops round add(alpha)'s product differently
 * (ADD_ALPHA); for float32/float64 (SCALAR_TAIL 0) every element counts as vectorised.
 *
 * torch's loops, as measured with torch 2.13 on an AVX-512 CPU: the dims over which every
 * operand of the operation is contiguous are fused, and the innermost one is vectorised when
 * every operand steps by one element along it, except the last length % SCALAR_TAIL elements
 * of each of its rows (SCALAR_TAIL = 32 halves); a 0-d tensor and an operation with an operand
 * that has no unit-stride dim take the scalar loop (gc_optim_torch_vector_end computes it). */
static inline ptrdiff_t KERNEL(torch_vector_end)(const gc_optim_item *it, unsigned ops, ptrdiff_t n)
{
#if SCALAR_TAIL
    return gc_optim_torch_vector_end(it, ops, n, SCALAR_TAIL);
#else
    (void)it, (void)ops;
    return n;
#endif
}

#ifndef GC_TORCH_SEGMENT
#define GC_TORCH_SEGMENT
/* Operand sets for torch_vector_end. */
#define OPS_P (1u << GC_OP_PARAM)
#define OPS_G (1u << GC_OP_GRAD)
#define OPS_S(k) (1u << (GC_OP_STATE0 + (k)))
/* The gradient torch's step starts from: grad, or the new tensor -grad with maximize. */
#define OPS_EFFECTIVE_GRAD(maximize) ((maximize) ? GC_OPTIM_GRAD_TMP : OPS_G)
/* grad.add(param, alpha=weight_decay) (COUPLED_DECAY); its result is a gradient temporary. */
#define DECAY_OPS(maximize) (OPS_P | OPS_EFFECTIVE_GRAD(maximize))
/* The gradient after the weight decay, if any. */
#define OPS_DECAYED_GRAD(decay, maximize) ((decay) ? GC_OPTIM_GRAD_TMP : OPS_EFFECTIVE_GRAD(maximize))

/* Splits a run where some operation changes loops: operation k is vectorised before ends[k]
 * and scalar from there. Returns the end of the segment that starts at lo, with bit k of
 * *scalar set when operation k is scalar over it. */
static inline ptrdiff_t gc_torch_segment(const ptrdiff_t *ends, int count, ptrdiff_t lo, ptrdiff_t n,
                                         unsigned *scalar)
{
    ptrdiff_t hi = n;
    *scalar = 0;
    for (int k = 0; k < count; k++) {
        if (ends[k] <= lo)
            *scalar |= 1u << k;
        else if (ends[k] < hi)
            hi = ends[k];
    }
    return hi;
}
#endif

/* The loops take their options as separate int arguments and are always inlined: called with
 * literal flags and unit strides, each copy is specialised and vectorised by the compiler;
 * called with run-time values, it is the general loop. */
#define GC_INLINE static inline __attribute__((always_inline))
