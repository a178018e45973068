#include "gc_clip.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gc_half.h"
#include "gc_layout.h"
#include "gc_scratch.h"

static ptrdiff_t array_size(const gc_array *a)
{
    ptrdiff_t size = 1;
    for (int d = 0; d < a->ndim; d++)
        size *= a->shape[d];
    return size;
}

static ptrdiff_t size_of_array(void *ctx, size_t i)
{
    return array_size(&((const gc_array *)ctx)[i]);
}

static void layout_of(gc_layout *layout, const gc_array *a)
{
    char *data = a->data;
    const ptrdiff_t *strides = a->strides;
    gc_layout_init(layout, a->ndim, a->shape, 1, &data, &strides);
}

/* Elementwise work on one block of one array: visit its runs with `run`. */
static void walk_block(const gc_array *a, ptrdiff_t start, ptrdiff_t stop, gc_run_fn run, void *ctx)
{
    const ptrdiff_t itemsize = (ptrdiff_t)gc_item_size(a->dtype);
    if (a->ndim == 1 && a->strides[0] == itemsize) {
        /* Contiguous (the glue describes every contiguous array so): one run, no layout. */
        char *first = a->data + start * itemsize;
        run(ctx, &first, &itemsize, stop - start);
        return;
    }
    gc_layout layout;
    layout_of(&layout, a);
    gc_layout_walk(&layout, start, stop, run, ctx);
}

/* Many small arrays are latency-bound: ask for the first kilobyte of an array's data a couple
 * of arrays ahead (the hardware prefetcher follows longer runs by itself). A hint only. */
static void prefetch_ahead(const gc_array *arrays, size_t n, size_t i)
{
    if (i >= n)
        return;
    const gc_array *a = &arrays[i];
    if (a->ndim != 1 || a->strides[0] != (ptrdiff_t)gc_item_size(a->dtype))
        return;
    const ptrdiff_t bytes = a->shape[0] * a->strides[0];
    for (ptrdiff_t offset = 0; offset < bytes && offset < 1024; offset += 64)
        GC_PREFETCH(a->data + offset);
}

/* Byte ranges of the arrays; whether they are pairwise disjoint (so blocks of different arrays
 * may be written concurrently). */
static int arrays_disjoint(const gc_array *arrays, size_t n)
{
    if (n < 2)
        return 1;
    const char **bounds = gc_scratch_alloc(2 * n * sizeof *bounds);
    if (bounds == NULL)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const gc_array *a = &arrays[i];
        const char *lo = a->data, *hi = a->data;
        for (int d = 0; d < a->ndim; d++) {
            const ptrdiff_t span = (a->shape[d] - 1) * a->strides[d];
            if (a->shape[d] == 0) {
                hi = lo = a->data;
                break;
            }
            if (span < 0)
                lo += span;
            else
                hi += span;
        }
        bounds[i] = lo;
        bounds[n + i] = (hi == lo && array_size(a) == 0) ? lo : hi + gc_item_size(a->dtype);
    }
    const int disjoint = gc_ranges_disjoint(bounds, bounds + n, n) == 1;
    gc_scratch_free(bounds);
    return disjoint;
}

/* ---------------------------------------------------------------------------------------- */
/* Norms                                                                                     */

/* A partial accumulation: for sums, the exact value is approximately hi + lo (lo is only
 * kept where the kernels compensate, see gc_norm_run). */
typedef struct {
    double hi, lo;
} accumulation;

static accumulation acc_identity(const gc_norm *norm)
{
    const accumulation a = {gc_norm_identity(norm), 0.0};
    return a;
}

static accumulation acc_combine(const gc_norm *norm, accumulation a, accumulation b)
{
    accumulation r = {gc_norm_combine(norm, a.hi, b.hi), 0.0};
    if (norm->kind == GC_NORM_POW || norm->scale != 1.0) {
        double e;
        gc_two_sum(a.hi, b.hi, &r.hi, &e);
        r.lo = isfinite(r.hi) ? (a.lo + b.lo) + e : 0.0;
    }
    return r;
}

/* sum^(1/p), from a sum known to about 2^-100: the root of hi + lo in long double (where it
 * has at least 64 bits), so that neither the sum's last bit nor the rounding of 1/p is
 * multiplied by 1/p (pow(sum, 1.0/p) in double loses up to ~10 ulp for p = 0.1 and up to
 * ~100 for p = 3.5 near 1e300). */
static double pow_root(double hi, double lo, double p)
{
    if (!(isfinite(hi) && hi > 0.0))
        return pow(hi, 1.0 / p); /* 0, inf, NaN: torch's results */
#if LDBL_MANT_DIG >= 64
    return (double)powl((long double)hi + (long double)lo, 1.0L / (long double)p);
#else
    (void)lo;
    return pow(hi, 1.0 / p);
#endif
}

static double acc_finish(const gc_norm *norm, accumulation a)
{
    switch (norm->kind) {
    case GC_NORM_TWO:
        if (norm->scale != 1.0)
            return pow_root(a.hi, a.lo, 2.0);
        return sqrt(a.hi);
    case GC_NORM_POW:
        return pow_root(a.hi, a.lo, norm->p);
    default:
        return a.hi;
    }
}

typedef struct {
    gc_dtype dtype;
    const gc_norm *norm;
    accumulation acc;
} norm_run_ctx;

static void norm_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    norm_run_ctx *c = ctx;
    const ptrdiff_t inc = gc_elements(strides[0], c->dtype);
    accumulation run;
    run.hi = gc_norm_run(c->dtype, ptrs[0], inc, n, c->norm, &run.lo);
    c->acc = acc_combine(c->norm, c->acc, run);
}

static accumulation block_norm(const gc_array *a, const gc_norm *norm, ptrdiff_t start, ptrdiff_t stop)
{
    norm_run_ctx ctx = {a->dtype, norm, acc_identity(norm)};
    walk_block(a, start, stop, norm_run, &ctx);
    return ctx.acc;
}

/* Whether an array's sum of |x|^p (p > 0) may have lost precision to underflow: each term
 * below DBL_MIN lost bits, which matters when the whole sum is within the array's size of
 * DBL_MIN. Such an array is reduced again with its elements scaled by a power of two
 * (exactly), and the norm scaled back: torch's float64 result there is 0 or a few correct
 * bits, gradclip's is accurate. Overflow is left as it is: an inf where torch's float64 sum
 * overflows too is part of the parity (error_if_nonfinite). */
static int may_have_underflowed(const gc_norm *norm, double sum, ptrdiff_t size)
{
    if (norm->kind != GC_NORM_TWO && norm->kind != GC_NORM_POW)
        return 0;
    if (!(norm->p > 0.0) || !(sum < (double)size * 0x1p-1020))
        return 0; /* NaN, inf, large sums; negative p: a zero sum is torch's inf */
    return 1;
}

/* The norm of a's elements times `factor` (multiplied in the kernels: exactly, for a power of
 * two). */
static double norm_scaled_by(const gc_array *a, const gc_norm *norm, ptrdiff_t size, double factor)
{
    gc_norm scaled = *norm;
    scaled.scale = factor;
    accumulation acc = acc_identity(norm);
    for (ptrdiff_t start = 0; start < size; start += GC_BLOCK)
        acc = acc_combine(&scaled, acc, block_norm(a, &scaled, start, start + GC_BLOCK < size ? start + GC_BLOCK : size));
    return acc_finish(&scaled, acc);
}

static double rescaled_norm(const gc_array *a, const gc_norm *norm, ptrdiff_t size)
{
    const gc_norm max_abs = {GC_NORM_INF, INFINITY, 1.0};
    const double largest = block_norm(a, &max_abs, 0, size).hi;
    if (!(largest > 0.0) || !isfinite(largest))
        return NAN; /* all zeros: nothing to rescue */
    /* largest * 2^-e is in [1, 2); for a subnormal largest 2^-e would overflow: stop at
     * 2^1023, which still lifts every power far above the underflow threshold. */
    const int e = ilogb(largest) < -1023 ? -1023 : ilogb(largest);
    const double exact = ldexp(norm_scaled_by(a, norm, size, ldexp(1.0, -e)), e);
    if (isfinite(exact))
        return exact;
    /* An enormous p: (largest * 2^-e)^p overflowed. Scaled by 1 / largest the largest power
     * is (1 +- 2^-52)^p, in range up to p ~ 3e18; beyond, the norm is the largest element
     * to double precision (the sum of n terms <= 1 changes it by a factor n^(1/p)). */
    if (norm->p < 3e18) {
        const double divided = norm_scaled_by(a, norm, size, 1.0 / largest) * largest;
        if (isfinite(divided) && divided > 0.0)
            return divided;
    }
    return largest;
}

/* torch's norm of a one-element vector is |x| exactly (1 or 0 for p = 0), whatever p: no
 * power, so [1e200] neither overflows nor [1e-310] underflows. */
static double single_norm(const gc_norm *norm, double value_abs)
{
    if (norm->kind == GC_NORM_ZERO)
        return (double)(value_abs != 0.0);
    return value_abs;
}

static double finish_array(const gc_array *a, const gc_norm *norm, accumulation acc)
{
    const ptrdiff_t size = array_size(a);
    if (size == 1) {
        const gc_norm max_abs = {GC_NORM_INF, INFINITY, 1.0};
        return single_norm(norm, block_norm(a, &max_abs, 0, 1).hi);
    }
    if (may_have_underflowed(norm, acc.hi, size)) {
        const double rescued = rescaled_norm(a, norm, size);
        if (!isnan(rescued))
            return rescued;
    }
    return acc_finish(norm, acc);
}

typedef struct {
    const gc_array *arrays;
    size_t n;
    const gc_norm *norm;
    int finish;               /* store finished norms (else plain accumulations) */
    int defer;                /* sequential 2-norm: store sums, finished after the walk */
    double *norms;            /* sequential: per array, as they complete */
    accumulation running;     /* sequential: the array being reduced */
    accumulation *partials;   /* parallel: one accumulation per block */
} total_ctx;

static ptrdiff_t total_size_of(void *ctx, size_t i)
{
    return size_of_array((void *)((total_ctx *)ctx)->arrays, i);
}

static void accumulate_block(void *ctx_, size_t i, ptrdiff_t start, ptrdiff_t stop, size_t k)
{
    total_ctx *ctx = ctx_;
    const gc_array *a = &ctx->arrays[i];
    if (start == 0)
        prefetch_ahead(ctx->arrays, ctx->n, i + 2);
    if (ctx->defer && start == 0 && a->ndim == 1 && stop == a->shape[0] &&
        a->strides[0] == (ptrdiff_t)gc_item_size(a->dtype)) {
        /* A whole contiguous array of a deferred 2-norm (the many small arrays of a list):
         * its sum straight from the kernel, skipping the block walk. The general path's two
         * combinations with the identity (0 + sum, no low part) give the same bits; the
         * threaded path, which takes the general one, is compared with it in
         * tests/test_num_threads.py. */
        double lo;
        ctx->norms[i] = gc_norm_run(a->dtype, a->data, 1, stop, ctx->norm, &lo);
        return;
    }
    const accumulation block = block_norm(a, ctx->norm, start, stop);
    if (ctx->partials != NULL) {
        ctx->partials[k] = block;
        return;
    }
    /* One thread visits the blocks of an array in order, one array after the other. */
    if (start == 0)
        ctx->running = acc_identity(ctx->norm);
    ctx->running = acc_combine(ctx->norm, ctx->running, block);
    if (stop == array_size(a))
        ctx->norms[i] = ctx->finish && !ctx->defer ? finish_array(a, ctx->norm, ctx->running)
                                                   : ctx->running.hi + ctx->running.lo;
}

/* The 2-norms of a sequential walk, finished from their sums (ctx.defer): the square root
 * alone except where finish_array has more to do, outside the walk, where one array's root
 * then waits on nothing (on 1000 arrays of 64 elements ~10 % of the call). The sums of an
 * unscaled 2-norm have no low part (acc_combine), so this is finish_array's result. */
static void finish_two_norms(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms)
{
    for (size_t i = 0; i < n; i++) {
        const ptrdiff_t size = array_size(&arrays[i]);
        const double sum = norms[i];
        if (size > 1 && !may_have_underflowed(norm, sum, size))
            norms[i] = sqrt(sum);
        else if (size > 0) /* one element, or a sum that may have underflowed */
            norms[i] = finish_array(&arrays[i], norm, (accumulation){sum, 0.0});
    }
}

void gc_array_norms(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms, int finish)
{
    ptrdiff_t elements = 0;
    size_t nblocks = 0;
    for (size_t i = 0; i < n; i++) {
        const ptrdiff_t size = array_size(&arrays[i]);
        elements += size;
        nblocks += (size_t)((size + GC_BLOCK - 1) / GC_BLOCK);
        /* An empty array has no block: its norm is the identity's. */
        norms[i] = finish ? acc_finish(norm, acc_identity(norm)) : gc_norm_identity(norm);
    }
    total_ctx ctx = {arrays, n, norm, finish, 0, norms, {0.0, 0.0}, NULL};
    /* Threads write one partial per block; the partials are combined below, in block order,
     * exactly as the sequential path combines them as it goes. */
    if (elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1)
        ctx.partials = gc_scratch_alloc(nblocks * sizeof *ctx.partials);
    ctx.defer = finish && ctx.partials == NULL && norm->kind == GC_NORM_TWO && norm->scale == 1.0;
    gc_for_each_block(n, total_size_of, ctx.partials != NULL, accumulate_block, &ctx);
    if (ctx.defer)
        finish_two_norms(arrays, n, norm, norms);
    if (ctx.partials != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const ptrdiff_t size = array_size(&arrays[i]);
            if (size == 0)
                continue;
            accumulation acc = acc_identity(norm);
            for (ptrdiff_t start = 0; start < size; start += GC_BLOCK)
                acc = acc_combine(norm, acc, ctx.partials[k++]);
            norms[i] = finish ? finish_array(&arrays[i], norm, acc) : acc.hi + acc.lo;
        }
        gc_scratch_free(ctx.partials);
    }
}

double gc_raw_total(const double *accumulations, size_t n, const gc_norm *norm)
{
    accumulation acc = acc_identity(norm);
    for (size_t i = 0; i < n; i++) {
        const accumulation a = {accumulations[i], 0.0};
        acc = acc_combine(norm, acc, a);
    }
    return acc_finish(norm, acc);
}

double gc_total_norm(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms)
{
    gc_array_norms(arrays, n, norm, norms, 1);
    return gc_norms_total(norms, n, norm);
}

double gc_norms_total(const double *norms, size_t n, const gc_norm *norm)
{
    if (n == 1)
        return single_norm(norm, fabs(norms[0]));
    switch (norm->kind) {
    case GC_NORM_ZERO:
    case GC_NORM_INF:
    case GC_NORM_NEGINF:
        /* Exact whatever the order: counts, maxima and minima. */
        return gc_norm_run(GC_FLOAT64, norms, 1, (ptrdiff_t)n, norm, NULL);
    default:
        break;
    }
    /* Sums of n norms (one per array, so few): in long double, where every power of a double
     * is in range and a sum of thousands of terms keeps 64 bits, then rounded once. torch sums
     * in float64: where that sum overflows (or, for negative p, underflows to 0, whose root is
     * inf) torch's total is inf, and so is gradclip's. */
    const double p = norm->p;
#if LDBL_MANT_DIG >= 64
    typedef long double wide;
#else
    typedef double wide;
#endif
    wide sum = 0;
    for (size_t i = 0; i < n; i++) {
        const wide v = (wide)fabs(norms[i]);
        switch (norm->kind) {
        case GC_NORM_ONE:
            sum += v;
            break;
        case GC_NORM_TWO:
            sum += v * v;
            break;
        default:
            sum += (v == 0 && p < 0) ? (wide)INFINITY : (wide)powl(v, (wide)p);
            break;
        }
    }
    if (norm->kind == GC_NORM_POW && p > 0 && sum < (wide)LDBL_MIN * (wide)n) {
        /* Every power underflowed, even in long double (p in the thousands and more): torch's
         * 0, or bits lost. The largest norm M taken out, the terms (v / M)^p are at most 1 and
         * one of them is 1, so neither the sum nor its root can leave the range. */
        wide largest = 0;
        for (size_t i = 0; i < n; i++)
            largest = (wide)fabs(norms[i]) > largest ? (wide)fabs(norms[i]) : largest;
        if (largest > 0) {
            wide scaled = 0;
            for (size_t i = 0; i < n; i++)
                scaled += powl((wide)fabs(norms[i]) / largest, (wide)p);
            return (double)(largest * powl(scaled, 1.0L / (wide)p));
        }
    }
    if (sum > (wide)DBL_MAX)
        return norm->kind == GC_NORM_POW && p < 0 ? 0.0 : INFINITY;
    if (sum != sum)
        return NAN;
    if (norm->kind == GC_NORM_POW && p < 0 && sum < (wide)DBL_TRUE_MIN / 2)
        return INFINITY;
    switch (norm->kind) {
    case GC_NORM_ONE:
        return (double)sum;
    case GC_NORM_TWO:
        return (double)sqrtl(sum);
    default:
        return (double)powl(sum, 1.0L / (long double)p);
    }
}

double gc_clip_coef(double total, double max_norm, int single)
{
    if (single) {
        const float denom = (float)total + (float)1e-6;
        const float coef = (1.0f / denom) * (float)max_norm;
        return (1.0f < coef) ? 1.0 : (double)coef;
    }
    const double coef = (1.0 / (total + 1e-6)) * max_norm;
    return (1.0 < coef) ? 1.0 : coef;
}

/* ---------------------------------------------------------------------------------------- */
/* Elementwise                                                                               */

typedef struct {
    const gc_array *arrays;
    gc_run_fn run;
    double a, b;
    const double *coefs; /* per-array first argument instead of `a`, or NULL */
} elementwise_ctx;

typedef struct {
    gc_dtype dtype;
    int zero_dim;
    double a, b;
} run_args;

/* torch multiplies two 0-dim tensors in the wider of their types and rounds once: a 0-d
 * float32 (float16, complex64) gradient times a float64 coefficient is computed in float64
 * (complex128) and rounded to the gradient's dtype (float16 through float32, as c10 converts a
 * double), where an array with dimensions takes the coefficient rounded to its own precision.
 * A float32 coefficient is exactly a double, and then the product in double rounded once is
 * the product in float, so the rule needs no flag for the coefficient's precision. Complex:
 * (re*c - im*0, re*0 + im*c), see gc_scale_run. */
static void scale_zero_dim(gc_dtype dtype, char *x, double c)
{
    switch (dtype) {
    case GC_FLOAT16: {
        gc_half h;
        memcpy(&h, x, sizeof h);
        h = gc_float_to_half((float)((double)gc_half_to_float(h) * c));
        memcpy(x, &h, sizeof h);
        break;
    }
    case GC_FLOAT32: {
        float *f = (float *)(void *)x;
        *f = (float)((double)*f * c);
        break;
    }
    case GC_COMPLEX64: {
        float *z = (float *)(void *)x;
        const double re = z[0], im = z[1];
        z[0] = (float)(re * c - im * 0.0);
        z[1] = (float)(re * 0.0 + im * c);
        break;
    }
    default: /* float64, complex128: already the wider type */
        gc_scale_run(dtype, x, 1, 1, c);
        break;
    }
}

static void scale_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const run_args *r = ctx;
    if (r->zero_dim) {
        scale_zero_dim(r->dtype, ptrs[0], r->a);
        return;
    }
    gc_scale_run(r->dtype, ptrs[0], gc_elements(strides[0], r->dtype), n, r->a);
}

static void clamp_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const run_args *r = ctx;
    gc_clamp_run(r->dtype, ptrs[0], gc_elements(strides[0], r->dtype), n, r->a, r->b);
}

static void zero_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const run_args *r = ctx;
    const size_t itemsize = gc_item_size(r->dtype);
    if (strides[0] == (ptrdiff_t)itemsize) {
        memset(ptrs[0], 0, (size_t)n * itemsize);
        return;
    }
    for (ptrdiff_t k = 0; k < n; k++)
        memset(ptrs[0] + k * strides[0], 0, itemsize);
}

static ptrdiff_t elementwise_size_of(void *ctx, size_t i)
{
    return array_size(&((elementwise_ctx *)ctx)->arrays[i]);
}

static void elementwise_block(void *ctx_, size_t i, ptrdiff_t start, ptrdiff_t stop, size_t k)
{
    (void)k;
    const elementwise_ctx *ctx = ctx_;
    run_args args = {ctx->arrays[i].dtype, ctx->arrays[i].zero_dim, ctx->coefs != NULL ? ctx->coefs[i] : ctx->a, ctx->b};
    walk_block(&ctx->arrays[i], start, stop, ctx->run, &args);
}

static void for_each_element(const gc_array *arrays, size_t n, gc_run_fn run, double a, double b,
                             const double *coefs)
{
    elementwise_ctx ctx = {arrays, run, a, b, coefs};
    ptrdiff_t elements = 0;
    for (size_t i = 0; i < n; i++)
        elements += array_size(&arrays[i]);
    /* Arrays that share memory must be processed in list order (torch scales a gradient
     * listed twice twice), so they stay on one thread. */
    const int parallel = elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1 && arrays_disjoint(arrays, n);
    if (parallel) {
        gc_for_each_block(n, elementwise_size_of, 1, elementwise_block, &ctx);
        return;
    }
    /* One thread: blocks make no difference to elementwise work, so each array is one walk. */
    for (size_t i = 0; i < n; i++) {
        run_args args = {arrays[i].dtype, arrays[i].zero_dim, coefs != NULL ? coefs[i] : a, b};
        prefetch_ahead(arrays, n, i + 2);
        walk_block(&arrays[i], 0, array_size(&arrays[i]), run, &args);
    }
}

void gc_scale(const gc_array *arrays, size_t n, double coef)
{
    for_each_element(arrays, n, scale_run, coef, 0.0, NULL);
}

void gc_scale_each(const gc_array *arrays, size_t n, const double *coefs)
{
    for_each_element(arrays, n, scale_run, 0.0, 0.0, coefs);
}

void gc_zero(const gc_array *arrays, size_t n)
{
    for_each_element(arrays, n, zero_run, 0.0, 0.0, NULL);
}

void gc_clamp(const gc_array *arrays, size_t n, double lo, double hi)
{
    for_each_element(arrays, n, clamp_run, lo, hi, NULL);
}
