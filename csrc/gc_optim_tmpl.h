/* What every optimizer kernel template shares. Included by gc_optim_kernels.h once per dtype
 * with:
 *   T        storage type          C        compute type (torch's opmath: float for float16)
 *   LOAD(x)  T -> C                STORE(x) C -> T (rounds)      ROUND(x)  C -> T -> C
 *   FMA      fma for C             SQRT     sqrt for C           SUFFIX    name suffix
 *   WIDE_SCALE(x, c)  x (a C) times the double c in double, rounded once to T, as a C
 *
 * torch's CPU kernels compute a.add(b, alpha=s) as fma(b, s, a), lerp as an fma, and
 * addcmul as fma(s * b, c, a); every other operation rounds once to C and the result of each
 * torch operation rounds to T. Scalars are converted to C, except add's alpha, which torch's
 * float16 kernel rounds to float16 first (ALPHA).
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

/* grad.add(param, alpha=wd), the L2 penalty most optimizers add before anything else: an fma,
 * except for a complex parameter, where torch adds on the complex tensors and its complex
 * multiply-add rounds the product first. Needs s->wd (ALPHA(wd)) and s->wd_c ((C)wd). */
#define COUPLED_DECAY(g, p, pairs) ((pairs) ? ROUND((g) + ROUND((p) * s->wd_c)) : ROUND(FMA((p), s->wd, (g))))

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

/* Where torch's vectorised loop ends among the n elements at ptrs (the rest go to its scalar
 * loop), for an operation over contiguous tensors of the parameter's size: the elements before
 * the last size % SCALAR_TAIL, counted in the parameter's logical order. Known for one flat run
 * (every operand contiguous) and for a 1-D strided parameter (whose temporaries torch makes
 * contiguous); -1 where it is not (0-d, or strided with several dimensions: every operation
 * then takes the scalar loop in this model). *flat tells whether every operand is contiguous. */
static inline ptrdiff_t KERNEL(torch_vector_end)(const gc_optim_item *it, char *const *ptrs, const ptrdiff_t *inc,
                                                 ptrdiff_t n, int *flat)
{
    *flat = 0;
#if SCALAR_TAIL
    if (it->zero_dim || it->ndim != 1)
        return -1;
    *flat = 1;
    for (int k = 0; k < it->nops; k++)
        *flat &= inc[k] == 1;
    const ptrdiff_t first = (ptrs[0] - it->data[0]) / it->strides[0][0];
    const ptrdiff_t size = it->shape[0];
    const ptrdiff_t vector_end = size - size % SCALAR_TAIL - first;
    return vector_end < 0 ? 0 : (vector_end > n ? n : vector_end);
#else
    (void)it, (void)ptrs, (void)inc;
    *flat = 1;
    return n;
#endif
}

/* The loops take their options as separate int arguments and are always inlined: called with
 * literal flags and unit strides, each copy is specialised and vectorised by the compiler;
 * called with run-time values, it is the general loop. */
#define GC_INLINE static inline __attribute__((always_inline))
