#include "gc_unitwise.h"

#include <math.h>

#include "gc_half.h"
#include "gc_layout.h"

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

static void sum_block(void *ctx_, size_t k, ptrdiff_t start, ptrdiff_t stop, size_t block)
{
    (void)block;
    const sums_ctx *ctx = ctx_;
    const gc_array *a = &ctx->examples[k];
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
    gc_for_each_block(n, example_size, elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1, sum_block, &ctx);
}
