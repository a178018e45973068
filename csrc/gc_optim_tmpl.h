/* What every optimizer kernel template shares. Included by gc_optim_kernels.h once per dtype
 * with:
 *   T        storage type          C        compute type (torch's opmath: float for float16)
 *   LOAD(x)  T -> C                STORE(x) C -> T (rounds)      ROUND(x)  C -> T -> C
 *   FMA      fma for C             SQRT     sqrt for C           SUFFIX    name suffix
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

/* The loops take their options as separate int arguments and are always inlined: called with
 * literal flags and unit strides, each copy is specialised and vectorised by the compiler;
 * called with run-time values, it is the general loop. */
#define GC_INLINE static inline __attribute__((always_inline))
