/* gradclip's numerical kernels: plain C, no Python or NumPy headers.
 *
 * Every kernel works on one strided 1-D run of `n` elements; `x` points at the first one and
 * `inc` is the distance between neighbours counted in elements of the array's dtype (one complex
 * element is two reals). gc_layout.h turns arrays of any layout into such runs; gc_clip.h drives
 * the kernels over lists of arrays.
 */
#ifndef GC_KERNELS_H
#define GC_KERNELS_H

#include <math.h>
#include <stddef.h>

/* The loops are compiled twice on x86-64 with GCC or Clang: for the baseline ISA and for
 * AVX2+FMA+F16C (gc_isa_*.c); gc_select_isa picks one at start-up from the CPU's features.
 * Both give identical results: the build disables FMA contraction (-ffp-contract=off), so only
 * explicit fma() calls fuse, and those are exact on every path. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(GC_NO_AVX2)
#define GC_HAVE_AVX2 1
#else
#define GC_HAVE_AVX2 0
#endif

/* A hint to fetch the cache line holding p (never faults, even past the end of an array). */
#if defined(__GNUC__)
#define GC_PREFETCH(p) __builtin_prefetch(p)
#else
#define GC_PREFETCH(p) ((void)(p))
#endif

typedef enum {
    GC_FLOAT16 = 0,
    GC_FLOAT32,
    GC_FLOAT64,
    GC_COMPLEX64,
    GC_COMPLEX128,
} gc_dtype;

/* Bytes of one element. */
static inline size_t gc_item_size(gc_dtype dtype)
{
    static const size_t size[] = {2, 4, 8, 8, 16};
    return size[dtype];
}

/* A byte stride in elements. Strides are multiples of the item size (the glue checks), and
 * the item size a power of two: a shift, not a 64-bit division (tens of cycles per call). */
static inline ptrdiff_t gc_elements(ptrdiff_t byte_stride, gc_dtype dtype)
{
    static const int shift[] = {1, 2, 3, 3, 4};
    return byte_stride < 0 ? -((-byte_stride) >> shift[dtype]) : byte_stride >> shift[dtype];
}

static inline int gc_is_complex(gc_dtype dtype)
{
    return dtype == GC_COMPLEX64 || dtype == GC_COMPLEX128;
}

/* How a p-norm accumulates, after torch.linalg.vector_norm:
 *   ZERO   count of non-zero elements (NaN counts), ONE  sum |x|,  TWO  sum x^2 then sqrt,
 *   INF    max |x|,  NEGINF  min |x|  (both NaN-propagating),  POW  sum |x|^p then ^(1/p). */
typedef enum {
    GC_NORM_ZERO,
    GC_NORM_ONE,
    GC_NORM_TWO,
    GC_NORM_INF,
    GC_NORM_NEGINF,
    GC_NORM_POW,
} gc_norm_kind;

typedef struct {
    gc_norm_kind kind;
    double p;
    /* 1, or a power of two every |x| is multiplied by before it is powered (exactly): the
     * second pass gc_clip.c makes over an array whose powers underflowed. */
    double scale;
} gc_norm;

gc_norm gc_norm_from_p(double p);

/* Whether the norm is undefined on an empty array (torch: "does not have an identity");
 * the identity element of the accumulation, the combination of two partial accumulations,
 * and the final step that turns an accumulation into the norm. All in float64, and inline:
 * they run once per lane and block. */
static inline int gc_norm_needs_identity(const gc_norm *norm)
{
    /* Sums have the identity 0 (and p < 0 maps it to 0^(1/p) = inf, which torch refuses). */
    return norm->kind == GC_NORM_INF || norm->kind == GC_NORM_NEGINF || norm->p < 0.0;
}

static inline double gc_norm_identity(const gc_norm *norm)
{
    return norm->kind == GC_NORM_NEGINF ? INFINITY : 0.0;
}

static inline double gc_nan_max(double a, double b)
{
    return (a != a || b > a) ? (a != a ? a : b) : a;
}

static inline double gc_nan_min(double a, double b)
{
    return (a != a || b < a) ? (a != a ? a : b) : a;
}

static inline double gc_norm_combine(const gc_norm *norm, double a, double b)
{
    switch (norm->kind) {
    case GC_NORM_INF:
        return (b != b) ? b : gc_nan_max(a, b);
    case GC_NORM_NEGINF:
        return (b != b) ? b : gc_nan_min(a, b);
    default:
        return a + b;
    }
}

static inline double gc_norm_finish(const gc_norm *norm, double acc)
{
    switch (norm->kind) {
    case GC_NORM_TWO:
        return sqrt(acc);
    case GC_NORM_POW:
        return pow(acc, 1.0 / norm->p);
    default:
        return acc;
    }
}

/* Exact sum of two doubles as hi + lo (Knuth's TwoSum; needs round-to-nearest and no
 * contraction, which the build guarantees). */
static inline void gc_two_sum(double a, double b, double *hi, double *lo)
{
    const double s = a + b;
    const double bb = s - a;
    *hi = s;
    *lo = (a - (s - bb)) + (b - bb);
}

/* Accumulation over one run, in float64 whatever the input dtype. For GC_NORM_POW (and any
 * norm with scale != 1) the sum is compensated: the exact sum of the terms is the result plus
 * *lo (set when lo is not NULL; 0 for the other norms), so that the root taken at the end,
 * which multiplies relative errors by 1/p, starts from a sum accurate to the last bit. A
 * non-finite result comes with *lo = 0. */
double gc_norm_run(gc_dtype dtype, const void *x, ptrdiff_t inc, ptrdiff_t n, const gc_norm *norm, double *lo);

/* x *= coef in place. The product is rounded as torch rounds it: float32 and float64 in their
 * own precision, float16 computed in float32 then rounded, complex as (re*c - im*0, re*0 + im*c).
 * `coef` must already be rounded to the precision the caller means (see gc_clip.c). */
void gc_scale_run(gc_dtype dtype, void *x, ptrdiff_t inc, ptrdiff_t n, double coef);

/* x = min(max(x, lo), hi) in place, NaN kept; real dtypes only. The bounds are rounded to the
 * array's dtype first, as torch rounds a Python scalar. */
void gc_clamp_run(gc_dtype dtype, void *x, ptrdiff_t inc, ptrdiff_t n, double lo, double hi);

typedef struct {
    double (*norm_run)(gc_dtype, const void *, ptrdiff_t, ptrdiff_t, const gc_norm *, double *);
    void (*scale_run)(gc_dtype, void *, ptrdiff_t, ptrdiff_t, double);
    void (*clamp_run)(gc_dtype, void *, ptrdiff_t, ptrdiff_t, double, double);
} gc_kernel_table;

/* avx512: also use the few AVX-512 loops (the float16 and float32 2-norms), which the CPU must
 * have. */
void gc_fill_kernel_table_base(gc_kernel_table *table, int avx512);
void gc_fill_kernel_table_avx2(gc_kernel_table *table, int avx512);
void gc_fill_kernel_table_avx512(gc_kernel_table *table, int avx512);

/* Chooses the loops for this CPU; `request` "baseline" forces the portable ones, "avx2" the
 * AVX2 ones without their AVX-512 parts. Call once, before any kernel runs. Returns the name of
 * the choice: "baseline", "avx2" or "avx2+avx512". */
const char *gc_select_isa(const char *request);

#endif /* GC_KERNELS_H */
