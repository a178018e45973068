/* The norm, scale and clamp loops. Compiled once per instruction set: gc_isa_base.c and
 * gc_isa_avx2.c include this file with GC_ISA_NAME set, and gc_kernels.c picks one table at
 * start-up. Not a header to include elsewhere. */
#include <math.h>
#include <stdint.h>

#include "gc_half.h"
#include "gc_kernels.h"

/* ---------------------------------------------------------------------------------------- */
/* Accumulation loops                                                                        */

/* Elements are spread over independent float64 accumulators (lanes), merged in a fixed tree
 * at the end. The independent chains let the compiler vectorise the contiguous loop without
 * -ffast-math, and the fixed order makes the result the same on every machine and ISA.
 * float16 uses twice as many: its loop converts more per byte, and 16 chains of additions
 * (4 AVX2 registers) leave the core waiting on their latency below the memory's speed. */
#define GC_LANES 16
#define GC_LANES_F16 32
#define GC_MAX_LANES 32

/* float16's explicit loops (below) ask for the line GC_PREFETCH_AHEAD bytes ahead as they go,
 * on long contiguous runs. Its conversions take more instructions per cache line, and on an
 * older AVX2 machine one core then kept more misses in flight than the hardware prefetcher
 * alone (a 256 MB norm ~1.4 -> ~1.2 times torch's float64 sum); on a later AVX-512 EPYC it made
 * no clear difference for float16 (interleaved A/B, 1 and 2 threads: -3 % to +1 %). The float32
 * and float64 loops go without it. float64 was slower with it on both machines. float32 gained
 * on the older machine (~1.2 -> ~1.1) but lost 7-8 % on one core of the later one (W1 11.8 vs
 * 10.9 ms, W2 5.27 vs 4.85; two threads within 1 %), and one core is what a training loop
 * leaves gradclip beside BLAS's spinning threads. */
#define GC_PREFETCH_AHEAD 4096
#define GC_PREFETCH_MIN_BYTES 65536

/* Runs ACC(acc[j], v) for every element, v being the element (or its modulus squared, see
 * LOAD) as a double. */
#define GC_LANE_LOOP(LANES, LOAD, x, inc, n, acc, ACC)                                                  \
    do {                                                                                       \
        ptrdiff_t i_ = 0;                                                                      \
        if ((inc) == 1) {                                                                    \
            for (; i_ + (LANES) <= (n); i_ += (LANES))                                       \
                for (int j_ = 0; j_ < (LANES); j_++) {                                        \
                    const double v = LOAD(x, i_ + j_);                                         \
                    ACC((acc)[j_], v);                                                         \
                }                                                                              \
        } else {                                                                               \
            for (; i_ + (LANES) <= (n); i_ += (LANES))                                       \
                for (int j_ = 0; j_ < (LANES); j_++) {                                        \
                    const double v = LOAD(x, (i_ + j_) * (inc));                               \
                    ACC((acc)[j_], v);                                                         \
                }                                                                              \
        }                                                                                      \
        /* The last, partial group, lane by lane with constant indices (unrolled), so that    \
         * the lanes can live in registers rather than in memory the loop indexes. */          \
        if (i_ < (n)) {                                                                        \
            _Pragma("GCC unroll 32") for (int j_ = 0; j_ < (LANES); j_++) {                    \
                if (i_ + j_ < (n)) {                                                           \
                    const double v = LOAD(x, (i_ + j_) * (inc));                               \
                    ACC((acc)[j_], v);                                                         \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
    } while (0)

#define ACC_SUM(a, v) ((a) += (v))
#define ACC_SQUARE(a, v) ((a) += (v) * (v))
#define ACC_ABS(a, v) ((a) += fabs(v))
#define ACC_NONZERO(a, v) ((a) += (double)((v) != 0.0))
/* NaN is sticky: once a lane holds NaN no comparison replaces it. */
#define ACC_MAX(a, v)                                                                          \
    do {                                                                                       \
        const double t_ = fabs(v);                                                             \
        (a) = (t_ > (a) || t_ != t_) ? t_ : (a);                                               \
    } while (0)
#define ACC_MIN(a, v)                                                                          \
    do {                                                                                       \
        const double t_ = fabs(v);                                                             \
        (a) = (t_ < (a) || t_ != t_) ? t_ : (a);                                               \
    } while (0)

/* In a fixed tree: lane j with lane j + lanes / 2, then j + lanes / 4, ..., j + 1, in place (the
 * lanes are the caller's scratch: a copy cost more than the tree on a 64-element array). Inline,
 * so the lanes stay in registers, and for sums (gc_norm_combine is a + b) four vector additions. */
static inline double merge_lanes(const gc_norm *norm, double *acc, int lanes)
{
    if (norm->kind != GC_NORM_INF && norm->kind != GC_NORM_NEGINF) {
#pragma GCC unroll 8
        for (int width = lanes / 2; width >= 1; width /= 2)
#pragma GCC unroll 16
            for (int j = 0; j < width; j++)
                acc[j] = acc[j] + acc[j + width];
        return acc[0];
    }
#pragma GCC unroll 8
    for (int width = lanes / 2; width >= 1; width /= 2)
#pragma GCC unroll 16
        for (int j = 0; j < width; j++)
            acc[j] = gc_norm_combine(norm, acc[j], acc[j + width]);
    return acc[0];
}

/* Compensated lanes (GC_NORM_POW and the rescaled second pass): lane j keeps its sum as
 * acc[j] + comp[j]; merged in the same fixed tree, the low parts summed alongside. */
#define ACC_COMPENSATED(j, term)                                                               \
    do {                                                                                       \
        double hi_, lo_;                                                                       \
        gc_two_sum(acc[j], (term), &hi_, &lo_);                                                \
        acc[j] = hi_;                                                                          \
        comp[j] += lo_;                                                                        \
    } while (0)

static inline double merge_compensated(const double *acc, const double *comp, double *lo)
{
    double hi[GC_LANES], low[GC_LANES];
    for (int j = 0; j < GC_LANES; j++) {
        hi[j] = acc[j];
        low[j] = comp[j];
    }
    for (int width = GC_LANES / 2; width >= 1; width /= 2)
        for (int j = 0; j < width; j++) {
            double s, e;
            gc_two_sum(hi[j], hi[j + width], &s, &e);
            hi[j] = s;
            low[j] = (low[j] + low[j + width]) + e;
        }
    /* inf - inf in the error terms: a non-finite sum has no meaningful low part. */
    if (lo != NULL)
        *lo = isfinite(hi[0]) ? low[0] : 0.0;
    return hi[0];
}

/* One accumulation function per element type. LOAD(x, k) reads element k as a double; for
 * complex types the "element" is |z| (or |z|^2 for the 2-norm, which needs no square root). */
#define DEFINE_NORM_RUN(NAME, T, LANES, LOAD, LOAD_SQUARE)                                              \
    static double NAME(const T *restrict x, ptrdiff_t inc, ptrdiff_t n, const gc_norm *norm, double *lo) \
    {                                                                                          \
        const double p = norm->p;                                                              \
        double acc[GC_MAX_LANES];                                                              \
        for (int j = 0; j < GC_MAX_LANES; j++)                                                 \
            acc[j] = gc_norm_identity(norm);                                                   \
        if (lo != NULL)                                                                        \
            *lo = 0.0;                                                                         \
        if (norm->scale != 1.0 || norm->kind == GC_NORM_POW) {                                 \
            /* pow (or the rescaling) dominates: a plain strided loop, compensated. */          \
            const double scale = norm->scale;                                                  \
            const int square = norm->kind == GC_NORM_TWO;                                      \
            double comp[GC_LANES] = {0.0};                                                     \
            ptrdiff_t i = 0;                                                                   \
            for (; i + GC_LANES <= n; i += GC_LANES)                                           \
                for (int j = 0; j < GC_LANES; j++) {                                           \
                    const double v = fabs(LOAD(x, (i + j) * inc)) * scale;                     \
                    ACC_COMPENSATED(j, square ? v * v : pow(v, p));                            \
                }                                                                              \
            for (int j = 0; i < n; i++, j++) {                                                 \
                const double v = fabs(LOAD(x, i * inc)) * scale;                               \
                ACC_COMPENSATED(j, square ? v * v : pow(v, p));                                \
            }                                                                                  \
            return merge_compensated(acc, comp, lo);                                           \
        }                                                                                      \
        switch (norm->kind) {                                                                  \
        case GC_NORM_TWO:                                                                      \
            GC_LANE_LOOP(LANES, LOAD_SQUARE, x, inc, n, acc, ACC_SUM);                                \
            break;                                                                             \
        case GC_NORM_ONE:                                                                      \
            GC_LANE_LOOP(LANES, LOAD, x, inc, n, acc, ACC_ABS);                                       \
            break;                                                                             \
        case GC_NORM_ZERO:                                                                     \
            GC_LANE_LOOP(LANES, LOAD, x, inc, n, acc, ACC_NONZERO);                                   \
            break;                                                                             \
        case GC_NORM_INF:                                                                      \
            GC_LANE_LOOP(LANES, LOAD, x, inc, n, acc, ACC_MAX);                                       \
            break;                                                                             \
        case GC_NORM_NEGINF:                                                                   \
            GC_LANE_LOOP(LANES, LOAD, x, inc, n, acc, ACC_MIN);                                       \
            break;                                                                             \
        case GC_NORM_POW:                                                                      \
            break; /* above */                                                                 \
        }                                                                                      \
        (void)p;                                                                               \
        return merge_lanes(norm, acc, LANES);                                                         \
    }

#define LOAD_REAL(x, k) ((double)(x)[k])
#define LOAD_REAL_SQUARE(x, k) ((double)(x)[k] * (double)(x)[k])
#define LOAD_HALF(x, k) ((double)gc_half_to_float((x)[k]))
#define LOAD_HALF_SQUARE(x, k) (LOAD_HALF(x, k) * LOAD_HALF(x, k))
/* Complex elements: x points at interleaved (re, im) pairs. |z|^2 follows hypot's rule: an
 * infinite component makes it inf even when the other is NaN (as torch's |z|). */
#define LOAD_CABS(x, k) hypot((double)(x)[2 * (k)], (double)(x)[2 * (k) + 1])
#define LOAD_CABS_SQUARE(x, k) cabs_square((double)(x)[2 * (k)], (double)(x)[2 * (k) + 1])

static inline double cabs_square(double re, double im)
{
    const double s = re * re + im * im;
    return (fabs(re) == INFINITY || fabs(im) == INFINITY) ? INFINITY : s;
}

DEFINE_NORM_RUN(norm_run_f16, gc_half, GC_LANES_F16, LOAD_HALF, LOAD_HALF_SQUARE)
DEFINE_NORM_RUN(norm_run_f32, float, GC_LANES, LOAD_REAL, LOAD_REAL_SQUARE)
DEFINE_NORM_RUN(norm_run_f64, double, GC_LANES, LOAD_REAL, LOAD_REAL_SQUARE)
DEFINE_NORM_RUN(norm_run_c64, float, GC_LANES, LOAD_CABS, LOAD_CABS_SQUARE)
DEFINE_NORM_RUN(norm_run_c128, double, GC_LANES, LOAD_CABS, LOAD_CABS_SQUARE)

#if defined(__F16C__) && defined(__AVX2__)
/* float16 is the one dtype the compiler does not vectorise by itself (the conversions are
 * intrinsics): explicit AVX2 + F16C loops for its common contiguous cases. They compute exactly
 * what the generic loops compute: element 32k + j goes to lane j, and since the square of a
 * half is exact in double (22 significant bits), a fused multiply-add rounds the lane's sum
 * exactly as the generic loop's separate multiply and add do. */
#define GC_HAVE_HALF_VECTORS 1

static double finish_f16_lanes(const gc_half *restrict x, ptrdiff_t i, ptrdiff_t n, double *lanes, const gc_norm *norm)
{
    for (int j = 0; i < n; i++, j++) {
        const double v = gc_half_to_float(x[i]);
        lanes[j] += v * v;
    }
    return merge_lanes(norm, lanes, GC_LANES_F16);
}

static double sumsq_f16_contiguous(const gc_half *restrict x, ptrdiff_t n, const gc_norm *norm)
{
    __m256d acc[8];
    for (int q = 0; q < 8; q++)
        acc[q] = _mm256_setzero_pd();
    ptrdiff_t i = 0;
    const int prefetch = (size_t)n * sizeof *x >= GC_PREFETCH_MIN_BYTES;
    for (; i + GC_LANES_F16 <= n; i += GC_LANES_F16) {
        if (prefetch) /* one line of 32 halves per iteration */
            GC_PREFETCH((const char *)(x + i) + GC_PREFETCH_AHEAD);
        for (int h = 0; h < 4; h++) {
            const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8 * h)));
            const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f)), hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
            acc[2 * h] = _mm256_fmadd_pd(lo, lo, acc[2 * h]);
            acc[2 * h + 1] = _mm256_fmadd_pd(hi, hi, acc[2 * h + 1]);
        }
    }
    double lanes[GC_LANES_F16];
    for (int q = 0; q < 8; q++)
        _mm256_storeu_pd(lanes + 4 * q, acc[q]);
    return finish_f16_lanes(x, i, n, lanes, norm);
}

/* The same lanes with AVX-512 registers (8 lanes each): half the instructions for the
 * conversions, which bound the AVX2 loop on one core below what the memory streams. Chosen at
 * start-up where the CPU has AVX512F (gc_select_isa). */
__attribute__((target("avx512f,fma"))) static double sumsq_f16_contiguous_avx512(const gc_half *restrict x, ptrdiff_t n,
                                                                            const gc_norm *norm)
{
    __m512d acc[4] = {_mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd(), _mm512_setzero_pd()};
    ptrdiff_t i = 0;
    const int prefetch = (size_t)n * sizeof *x >= GC_PREFETCH_MIN_BYTES;
    for (; i + GC_LANES_F16 <= n; i += GC_LANES_F16) {
        if (prefetch)
            GC_PREFETCH((const char *)(x + i) + GC_PREFETCH_AHEAD);
        for (int h = 0; h < 2; h++) {
            const __m512 f = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x + i + 16 * h)));
            const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(f));
            const __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(f), 1)));
            acc[2 * h] = _mm512_fmadd_pd(lo, lo, acc[2 * h]);
            acc[2 * h + 1] = _mm512_fmadd_pd(hi, hi, acc[2 * h + 1]);
        }
    }
    double lanes[GC_LANES_F16];
    for (int q = 0; q < 4; q++)
        _mm512_storeu_pd(lanes + 8 * q, acc[q]);
    return finish_f16_lanes(x, i, n, lanes, norm);
}

static double (*sumsq_f16)(const gc_half *restrict, ptrdiff_t, const gc_norm *) = sumsq_f16_contiguous;

static void scale_f16_contiguous(gc_half *restrict x, ptrdiff_t n, float c)
{
    const __m256 coef = _mm256_set1_ps(c);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))), coef);
        _mm_storeu_si128((__m128i *)(x + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    for (; i < n; i++)
        x[i] = gc_float_to_half(gc_half_to_float(x[i]) * c);
}
#else
#define GC_HAVE_HALF_VECTORS 0
#endif

#if defined(__AVX2__) && defined(__FMA__)
/* float32's contiguous 2-norm, explicitly: the same 16 lanes as the generic loop (element
 * 16k + j goes to lane j, in order k), four groups of 16 per iteration, then one group at a
 * time, each load converted from memory and squared into its lane by a fused multiply-add
 * (exact: a float's square has 48 significant bits, so fma rounds the lane's sum as the
 * separate multiply and add do). GCC's vectorisation of the generic loop spends about twice
 * the instructions per cache line of the AVX-512 loop (a load, a split, two conversions, two
 * multiplies, two adds and the index arithmetic), so the out-of-order window holds fewer lines
 * in flight; on one core of an AVX-512 EPYC that cost ~4 % (interleaved A/B of the two builds:
 * W1 10.1 -> 9.7 ms, W2 5.02 -> 4.82 ms; OpenBLAS's sdot 9.35 and 4.72), and 13 % on 1000
 * arrays of 64 (39 -> 34 us warm). The AVX2 loop is the same lanes in 256-bit registers, not
 * timed on an AVX2-only machine. float64 the same way (a multiply and an add, its square being
 * rounded) measured within noise, so float64 keeps the generic loop. */
#define GC_HAVE_F32_VECTORS 1
#include <immintrin.h>

/* The last, partial group of 16 (fewer than 16 elements from i on). */
static double finish_f32_lanes(const float *restrict x, ptrdiff_t i, ptrdiff_t n, double *lanes, const gc_norm *norm)
{
    for (int j = 0; i < n; i++, j++)
        lanes[j] += (double)x[i] * (double)x[i];
    return merge_lanes(norm, lanes, GC_LANES);
}

static double sumsq_f32_contiguous(const float *restrict x, ptrdiff_t n, const gc_norm *norm)
{
    __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    ptrdiff_t i = 0;
    for (; i + 4 * GC_LANES <= n; i += 4 * GC_LANES)
        for (int g = 0; g < 4; g++)
            for (int q = 0; q < 4; q++) {
                const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + GC_LANES * g + 4 * q));
                acc[q] = _mm256_fmadd_pd(v, v, acc[q]);
            }
    for (; i + GC_LANES <= n; i += GC_LANES)
        for (int q = 0; q < 4; q++) {
            const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * q));
            acc[q] = _mm256_fmadd_pd(v, v, acc[q]);
        }
    double lanes[GC_LANES];
    for (int q = 0; q < 4; q++)
        _mm256_storeu_pd(lanes + 4 * q, acc[q]);
    return finish_f32_lanes(x, i, n, lanes, norm);
}

/* The same lanes in two AVX-512 registers. */
__attribute__((target("avx512f,fma"))) static double sumsq_f32_contiguous_avx512(const float *restrict x, ptrdiff_t n,
                                                                            const gc_norm *norm)
{
    __m512d acc[2] = {_mm512_setzero_pd(), _mm512_setzero_pd()};
    ptrdiff_t i = 0;
    for (; i + 4 * GC_LANES <= n; i += 4 * GC_LANES)
        for (int g = 0; g < 4; g++)
            for (int q = 0; q < 2; q++) {
                const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + GC_LANES * g + 8 * q));
                acc[q] = _mm512_fmadd_pd(v, v, acc[q]);
            }
    for (; i + GC_LANES <= n; i += GC_LANES)
        for (int q = 0; q < 2; q++) {
            const __m512d v = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8 * q));
            acc[q] = _mm512_fmadd_pd(v, v, acc[q]);
        }
    double lanes[GC_LANES];
    for (int q = 0; q < 2; q++)
        _mm512_storeu_pd(lanes + 8 * q, acc[q]);
    return finish_f32_lanes(x, i, n, lanes, norm);
}

static double (*sumsq_f32)(const float *restrict, ptrdiff_t, const gc_norm *) = sumsq_f32_contiguous;
#else
#define GC_HAVE_F32_VECTORS 0
#endif

/* Whether a run goes to the explicit float16/float32 loops above: a contiguous plain 2-norm,
 * whose sum has no low part. */
static inline int explicit_sumsq(ptrdiff_t inc, const gc_norm *norm, double *lo)
{
    if (inc != 1 || norm->kind != GC_NORM_TWO || norm->scale != 1.0)
        return 0;
    if (lo != NULL)
        *lo = 0.0;
    return 1;
}

static double norm_run(gc_dtype dtype, const void *x, ptrdiff_t inc, ptrdiff_t n, const gc_norm *norm, double *lo)
{
    switch (dtype) {
    case GC_FLOAT16:
#if GC_HAVE_HALF_VECTORS
        if (explicit_sumsq(inc, norm, lo))
            return sumsq_f16(x, n, norm);
#endif
        return norm_run_f16(x, inc, n, norm, lo);
    case GC_FLOAT32:
#if GC_HAVE_F32_VECTORS
        if (explicit_sumsq(inc, norm, lo))
            return sumsq_f32(x, n, norm);
#endif
        return norm_run_f32(x, inc, n, norm, lo);
    case GC_FLOAT64:
        return norm_run_f64(x, inc, n, norm, lo);
    case GC_COMPLEX64:
        return norm_run_c64(x, inc, n, norm, lo);
    case GC_COMPLEX128:
        return norm_run_c128(x, inc, n, norm, lo);
    }
    return NAN;
}

/* ---------------------------------------------------------------------------------------- */
/* Elementwise in-place kernels                                                              */

/* Applies OP to x[k] for every element, with a contiguous branch the compiler can vectorise. */
#define GC_ELEMENTWISE(x, inc, n, OP)                                                            \
    do {                                                                                       \
        if ((inc) == 1) {                                                                      \
            for (ptrdiff_t k_ = 0; k_ < (n); k_++)                                             \
                OP((x), k_);                                                                   \
        } else {                                                                               \
            for (ptrdiff_t k_ = 0; k_ < (n); k_++)                                             \
                OP((x), k_ * (inc));                                                           \
        }                                                                                      \
    } while (0)

#define SCALE_REAL(x, k) ((x)[k] = (x)[k] * c)
#define SCALE_HALF(x, k) ((x)[k] = gc_float_to_half(gc_half_to_float((x)[k]) * c))
/* torch multiplies a complex tensor by a real scalar as complex(c, 0): keep the zero products,
 * they decide the result for inf/NaN components and signed zeros. The real part's
 * re * c - im * 0 is written as re * c + im * -0 (the same value: a - b is a + -b, and
 * im * -0 is -(im * 0)): with a subtraction in one lane and an addition in the other, GCC 12
 * vectorises the pair as vfmaddsub, fusing re * c into it despite -ffp-contract=off, which
 * rounded an underflowing re * c once instead of twice (-0.0 where torch gives +0.0). */
#define SCALE_COMPLEX(x, k)                                                                    \
    do {                                                                                       \
        const ptrdiff_t k2_ = 2 * (k);                                                         \
        const __typeof__((x)[0]) re_ = (x)[k2_], im_ = (x)[k2_ + 1];                           \
        (x)[k2_] = re_ * c + im_ * negzero;                                                    \
        (x)[k2_ + 1] = re_ * zero + im_ * c;                                                   \
    } while (0)

static void scale_f16(gc_half *restrict x, ptrdiff_t inc, ptrdiff_t n, float c)
{
#if GC_HAVE_HALF_VECTORS
    if (inc == 1) {
        scale_f16_contiguous(x, n, c);
        return;
    }
#endif
    GC_ELEMENTWISE(x, inc, n, SCALE_HALF);
}

static void scale_f32(float *restrict x, ptrdiff_t inc, ptrdiff_t n, float c)
{
    GC_ELEMENTWISE(x, inc, n, SCALE_REAL);
}

static void scale_f64(double *restrict x, ptrdiff_t inc, ptrdiff_t n, double c)
{
    GC_ELEMENTWISE(x, inc, n, SCALE_REAL);
}

static void scale_c64(float *restrict x, ptrdiff_t inc, ptrdiff_t n, float c)
{
    const float zero = 0.0f, negzero = -0.0f;
    GC_ELEMENTWISE(x, inc, n, SCALE_COMPLEX);
}

static void scale_c128(double *restrict x, ptrdiff_t inc, ptrdiff_t n, double c)
{
    const double zero = 0.0, negzero = -0.0;
    GC_ELEMENTWISE(x, inc, n, SCALE_COMPLEX);
}

static void scale_run(gc_dtype dtype, void *x, ptrdiff_t inc, ptrdiff_t n, double coef)
{
    switch (dtype) {
    case GC_FLOAT16:
        scale_f16(x, inc, n, (float)coef);
        break;
    case GC_FLOAT32:
        scale_f32(x, inc, n, (float)coef);
        break;
    case GC_FLOAT64:
        scale_f64(x, inc, n, coef);
        break;
    case GC_COMPLEX64:
        scale_c64(x, inc, n, (float)coef);
        break;
    case GC_COMPLEX128:
        scale_c128(x, inc, n, coef);
        break;
    }
}

/* torch's clamp: NaN stays, otherwise min(max(v, lo), hi) in std::max/std::min's argument order
 * (which fixes the sign of a zero result). A NaN v needs no test of its own: it fails both
 * comparisons, so t_ is v and so is the result. Each line is one maxps/minps. */
#define CLAMP_REAL(x, k)                                                                       \
    do {                                                                                       \
        const __typeof__((x)[0]) v_ = (x)[k];                                                  \
        const __typeof__((x)[0]) t_ = (v_ < lo) ? lo : v_;                                     \
        (x)[k] = (hi < t_) ? hi : t_;                                                          \
    } while (0)
/* float16 clamps without converting: a half's bits, read as sign and magnitude, map to an int16
 * key that orders like the value (+0 and -0 share key 0, as they compare equal), so the compare
 * is two integer comparisons that vectorise (16 halves per AVX2 instruction). NaN elements keep
 * their bits; a NaN bound has a key no element is beyond, as no float compares with NaN. */
static inline int16_t half_key(gc_half h)
{
    const int16_t magnitude = (int16_t)(h & 0x7FFF);
    return (h & 0x8000) ? (int16_t)-magnitude : magnitude;
}

static inline int half_is_nan(gc_half h)
{
    return (h & 0x7FFF) > 0x7C00;
}

#define CLAMP_HALF(x, k)                                                                       \
    do {                                                                                       \
        const gc_half h_ = (x)[k];                                                             \
        const int16_t key_ = half_key(h_);                                                     \
        const int nan_ = half_is_nan(h_);                                                      \
        (x)[k] = (!nan_ && key_ < lo_key) ? lo : ((!nan_ && hi_key < key_) ? hi : h_);         \
    } while (0)

static void clamp_f16(gc_half *restrict x, ptrdiff_t inc, ptrdiff_t n, gc_half lo, gc_half hi)
{
    /* The same as (v < lo) ? lo : ((hi < v) ? hi : v) on the float values. */
    const int16_t lo_key = half_is_nan(lo) ? INT16_MIN : half_key(lo);
    const int16_t hi_key = half_is_nan(hi) ? INT16_MAX : half_key(hi);
    GC_ELEMENTWISE(x, inc, n, CLAMP_HALF);
}

static void clamp_f32(float *restrict x, ptrdiff_t inc, ptrdiff_t n, float lo, float hi)
{
    GC_ELEMENTWISE(x, inc, n, CLAMP_REAL);
}

static void clamp_f64(double *restrict x, ptrdiff_t inc, ptrdiff_t n, double lo, double hi)
{
    GC_ELEMENTWISE(x, inc, n, CLAMP_REAL);
}

static void clamp_run(gc_dtype dtype, void *x, ptrdiff_t inc, ptrdiff_t n, double lo, double hi)
{
    /* torch converts a Python scalar to float16 through float32; do the same. */
    switch (dtype) {
    case GC_FLOAT16:
        clamp_f16(x, inc, n, gc_float_to_half((float)lo), gc_float_to_half((float)hi));
        break;
    case GC_FLOAT32:
        clamp_f32(x, inc, n, (float)lo, (float)hi);
        break;
    case GC_FLOAT64:
        clamp_f64(x, inc, n, lo, hi);
        break;
    case GC_COMPLEX64:
    case GC_COMPLEX128:
        break; /* rejected by the callers */
    }
}

void GC_ISA_NAME(gc_fill_kernel_table)(gc_kernel_table *table, int avx512)
{
#if GC_HAVE_HALF_VECTORS
    sumsq_f16 = avx512 ? sumsq_f16_contiguous_avx512 : sumsq_f16_contiguous;
#endif
#if GC_HAVE_F32_VECTORS
    sumsq_f32 = avx512 ? sumsq_f32_contiguous_avx512 : sumsq_f32_contiguous;
#endif
    (void)avx512;
    table->norm_run = norm_run;
    table->scale_run = scale_run;
    table->clamp_run = clamp_run;
}
