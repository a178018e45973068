#include "gc_unitwise.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gc_half.h"
#include "gc_layout.h"
#include "gc_scratch.h"

size_t gc_unit_count(const gc_array *a, int split)
{
    if (a->ndim > 1 || (split && a->ndim == 1))
        return (size_t)a->shape[0];
    return 1;
}

void gc_units_of(const gc_array *a, int split, gc_array *units)
{
    if (!(a->ndim > 1 || (split && a->ndim == 1))) {
        units[0] = *a;
        return;
    }
    for (ptrdiff_t i = 0; i < a->shape[0]; i++) {
        units[i] = *a;
        units[i].data = a->data + i * a->strides[0];
        units[i].ndim = a->ndim - 1;
        units[i].shape = a->shape + 1;
        units[i].strides = a->strides + 1;
        units[i].zero_dim = 0;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* AGC                                                                                       */

static float to_half(float x)
{
    return gc_half_to_float(gc_float_to_half(x));
}

/* torch's clamp(min=lo): NaN propagates. */
static double clamp_min(double x, double lo)
{
    return (x != x) ? x : (x < lo ? lo : x);
}

int gc_agc_factor(gc_dtype dtype, double param_norm, double grad_norm, double clip_factor, double eps,
                  double *factor)
{
    switch (dtype) {
    case GC_FLOAT16: {
        /* Half tensors: each op computed in float32 and rounded to half; a scalar bound of
         * clamp is rounded to half first, a scalar factor of mul is used in float32. */
        const float pn = to_half((float)param_norm), gn = to_half((float)grad_norm);
        const float mx = to_half((float)clamp_min(pn, to_half((float)eps)) * (float)clip_factor);
        if (gn < mx)
            return 0;
        *factor = to_half(mx / (float)clamp_min(gn, to_half((float)1e-6)));
        return 1;
    }
    case GC_FLOAT32: {
        const float pn = (float)param_norm, gn = (float)grad_norm;
        const float mx = (float)clamp_min(pn, (float)eps) * (float)clip_factor;
        if (gn < mx)
            return 0;
        *factor = mx / (float)clamp_min(gn, (float)1e-6);
        return 1;
    }
    default: {
        const double mx = clamp_min(param_norm, eps) * clip_factor;
        if (grad_norm < mx)
            return 0;
        *factor = mx / clamp_min(grad_norm, 1e-6);
        return 1;
    }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Per-example weighted sums                                                                 */

/* Elements summed at a time: the float64 accumulator (16 KiB) stays in L1 while every
 * example's slice of it streams past once. */
#define SUM_CHUNK 2048
#define SUM_RUN 16384

typedef struct {
    gc_dtype dtype;
    double factor;
    double *acc; /* accumulator of the chunk, indexed by visiting position */
} sum_run_ctx;

static double load(gc_dtype dtype, const char *p)
{
    switch (dtype) {
    case GC_FLOAT16:
        return gc_half_to_float(*(const gc_half *)p);
    case GC_FLOAT32:
        return *(const float *)p;
    default:
        return *(const double *)p;
    }
}

/* acc[j] += f * x[j] over contiguous runs: loops the compiler vectorises (the same
 * operations, in the same order, as the strided ones). */
static void accumulate_f32(double *restrict acc, const float *restrict x, ptrdiff_t n, double f)
{
    for (ptrdiff_t j = 0; j < n; j++)
        acc[j] += f * (double)x[j];
}

static void accumulate_f64(double *restrict acc, const double *restrict x, ptrdiff_t n, double f)
{
    for (ptrdiff_t j = 0; j < n; j++)
        acc[j] += f * x[j];
}

static void accumulate_run(void *ctx_, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    sum_run_ctx *ctx = ctx_;
    const double f = ctx->factor;
    double *acc = ctx->acc;
    const char *x = ptrs[0];
    const ptrdiff_t s = strides[0];
    switch (ctx->dtype) {
    case GC_FLOAT32:
        if (s == (ptrdiff_t)sizeof(float)) {
            accumulate_f32(acc, (const float *)x, n, f);
            break;
        }
        for (ptrdiff_t j = 0; j < n; j++)
            acc[j] += f * (double)*(const float *)(x + j * s);
        break;
    case GC_FLOAT64:
        if (s == (ptrdiff_t)sizeof(double)) {
            accumulate_f64(acc, (const double *)x, n, f);
            break;
        }
        for (ptrdiff_t j = 0; j < n; j++)
            acc[j] += f * *(const double *)(x + j * s);
        break;
    default:
        for (ptrdiff_t j = 0; j < n; j++)
            acc[j] += f * load(ctx->dtype, x + j * s);
        break;
    }
    ctx->acc += n;
}

static void store_run(void *ctx_, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    sum_run_ctx *ctx = ctx_;
    char *out = ptrs[1];
    const ptrdiff_t s = strides[1];
    for (ptrdiff_t j = 0; j < n; j++) {
        const double v = ctx->acc[j];
        switch (ctx->dtype) {
        case GC_FLOAT16:
            *(gc_half *)(out + j * s) = gc_float_to_half((float)v);
            break;
        case GC_FLOAT32:
            *(float *)(out + j * s) = (float)v;
            break;
        default:
            *(double *)(out + j * s) = v;
            break;
        }
    }
    ctx->acc += n;
}

typedef struct {
    const gc_array *examples;
    const ptrdiff_t *example_strides;
    size_t batch;
    const double *factors;
    char *const *out;
} sums_ctx;

static ptrdiff_t example_size(void *ctx_, size_t k)
{
    const gc_array *a = &((sums_ctx *)ctx_)->examples[k];
    ptrdiff_t size = 1;
    for (int d = 0; d < a->ndim; d++)
        size *= a->shape[d];
    return size;
}

/* Whether one example of `a` is C-contiguous: a single run of elements. */
static int example_contiguous(const gc_array *a)
{
    ptrdiff_t step = (ptrdiff_t)gc_item_size(a->dtype);
    for (int d = a->ndim - 1; d >= 0; d--) {
        if (a->shape[d] != 1 && a->strides[d] != step)
            return 0;
        step *= a->shape[d];
    }
    return 1;
}

/* acc[j] = (((acc[j] + f[0] * x0[j]) + f[1] * x1[j]) + ...): four examples per pass over the
 * accumulator, each product and sum rounded as in the one-example loops above, in the same
 * order, so the bits are theirs; the accumulator is loaded and stored a quarter as often. */
#define GC_ACCUMULATE4(NAME, T)                                                                      \
    static void NAME(double *restrict acc, const T *restrict x0, const T *restrict x1,              \
                     const T *restrict x2, const T *restrict x3, ptrdiff_t n, const double *f)       \
    {                                                                                                \
        const double f0 = f[0], f1 = f[1], f2 = f[2], f3 = f[3];                                     \
        for (ptrdiff_t j = 0; j < n; j++) {                                                          \
            double v = acc[j] + f0 * (double)x0[j];                                                  \
            v = v + f1 * (double)x1[j];                                                              \
            v = v + f2 * (double)x2[j];                                                              \
            acc[j] = v + f3 * (double)x3[j];                                                         \
        }                                                                                            \
    }
GC_ACCUMULATE4(accumulate4_f32, float)
GC_ACCUMULATE4(accumulate4_f64, double)

/* The weighted sum of a contiguous float32 or float64 array over elements [start, stop) of one
 * example: chunk by chunk, four examples at a time. */
static void sum_block_contiguous(const sums_ctx *ctx, size_t k, ptrdiff_t start, ptrdiff_t stop)
{
    const gc_array *a = &ctx->examples[k];
    const int f32 = a->dtype == GC_FLOAT32;
    const ptrdiff_t itemsize = f32 ? (ptrdiff_t)sizeof(float) : (ptrdiff_t)sizeof(double);
    const ptrdiff_t es = ctx->example_strides[k];
    const size_t batch = ctx->batch;
    /* Long runs per example (the prefetchers follow four streams at a time): an accumulator
     * of SUM_RUN elements on the heap, in L2; SUM_CHUNK on the stack if that fails. */
    double small[SUM_CHUNK];
    double *acc = gc_scratch_alloc(SUM_RUN * sizeof *acc);
    const ptrdiff_t chunk = acc != NULL ? SUM_RUN : SUM_CHUNK;
    if (acc == NULL)
        acc = small;
    for (ptrdiff_t lo = start; lo < stop; lo += chunk) {
        const ptrdiff_t len = (stop - lo < chunk) ? stop - lo : chunk;
        const char *x = a->data + lo * itemsize;
        for (ptrdiff_t j = 0; j < len; j++)
            acc[j] = 0.0;
        size_t b = 0;
        for (; b + 4 <= batch; b += 4) {
            const char *x0 = x + (ptrdiff_t)b * es;
            if (f32)
                accumulate4_f32(acc, (const float *)x0, (const float *)(x0 + es), (const float *)(x0 + 2 * es),
                                (const float *)(x0 + 3 * es), len, ctx->factors + b);
            else
                accumulate4_f64(acc, (const double *)x0, (const double *)(x0 + es),
                                (const double *)(x0 + 2 * es), (const double *)(x0 + 3 * es), len,
                                ctx->factors + b);
        }
        for (; b < batch; b++) {
            const char *xb = x + (ptrdiff_t)b * es;
            if (f32)
                accumulate_f32(acc, (const float *)xb, len, ctx->factors[b]);
            else
                accumulate_f64(acc, (const double *)xb, len, ctx->factors[b]);
        }
        if (f32) {
            float *out = (float *)ctx->out[k] + lo;
            for (ptrdiff_t j = 0; j < len; j++)
                out[j] = (float)acc[j];
        }
        else {
            memcpy((double *)ctx->out[k] + lo, acc, (size_t)len * sizeof(double));
        }
    }
    if (acc != small)
        gc_scratch_free(acc);
}

static void sum_block(void *ctx_, size_t k, ptrdiff_t start, ptrdiff_t stop, size_t block)
{
    (void)block;
    const sums_ctx *ctx = ctx_;
    const gc_array *a = &ctx->examples[k];
    if ((a->dtype == GC_FLOAT32 || a->dtype == GC_FLOAT64) && example_contiguous(a)) {
        sum_block_contiguous(ctx, k, start, stop);
        return;
    }
    /* Two operands: the example (whose strides set the visiting order) and the output. */
    ptrdiff_t out_strides[GC_MAXDIMS];
    const ptrdiff_t itemsize = (ptrdiff_t)gc_item_size(a->dtype);
    ptrdiff_t step = itemsize;
    for (int d = a->ndim - 1; d >= 0; d--) {
        out_strides[d] = step;
        step *= a->shape[d];
    }
    char *data[2] = {a->data, ctx->out[k]};
    const ptrdiff_t *strides[2] = {a->strides, out_strides};
    gc_layout layout;
    gc_layout_init(&layout, a->ndim, a->shape, 2, data, strides);
    char *const first = layout.data[0];
    double acc[SUM_CHUNK];
    for (ptrdiff_t lo = start; lo < stop; lo += SUM_CHUNK) {
        const ptrdiff_t hi = (stop - lo < SUM_CHUNK) ? stop : lo + SUM_CHUNK;
        for (ptrdiff_t j = 0; j < hi - lo; j++)
            acc[j] = 0.0;
        for (size_t b = 0; b < ctx->batch; b++) {
            sum_run_ctx run = {a->dtype, ctx->factors[b], acc};
            layout.data[0] = first + (ptrdiff_t)b * ctx->example_strides[k];
            gc_layout_walk(&layout, lo, hi, accumulate_run, &run);
        }
        sum_run_ctx run = {a->dtype, 0.0, acc};
        gc_layout_walk(&layout, lo, hi, store_run, &run);
    }
    layout.data[0] = first;
}

void gc_weighted_sums(const gc_array *examples, const ptrdiff_t *example_strides, size_t n, size_t batch,
                      const double *factors, char *const *out)
{
    sums_ctx ctx = {examples, example_strides, batch, factors, out};
    ptrdiff_t elements = 0;
    for (size_t k = 0; k < n; k++)
        elements += example_size(&ctx, k) * (ptrdiff_t)(batch > 0 ? batch : 1);
    /* Each output element is summed inside one block, so the cut changes no result: blocks of
     * SUM_RUN elements of one example (times the batch), one at a time to each thread. */
    gc_for_each_block_sized(n, example_size, SUM_RUN, 1, elements >= GC_PARALLEL_MIN ? 0 : -1, sum_block, &ctx);
}
