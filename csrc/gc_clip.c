#include "gc_clip.h"

#include <stdlib.h>
#include <string.h>

#include "gc_layout.h"

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
    const char **bounds = malloc(2 * n * sizeof *bounds);
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
    free(bounds);
    return disjoint;
}

/* ---------------------------------------------------------------------------------------- */
/* Norms                                                                                     */

typedef struct {
    gc_dtype dtype;
    const gc_norm *norm;
    double acc;
} norm_run_ctx;

static void norm_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    norm_run_ctx *c = ctx;
    const ptrdiff_t inc = gc_elements(strides[0], c->dtype);
    c->acc = gc_norm_combine(c->norm, c->acc, gc_norm_run(c->dtype, ptrs[0], inc, n, c->norm));
}

static double block_norm(const gc_array *a, const gc_norm *norm, ptrdiff_t start, ptrdiff_t stop)
{
    norm_run_ctx ctx = {a->dtype, norm, gc_norm_identity(norm)};
    walk_block(a, start, stop, norm_run, &ctx);
    return ctx.acc;
}

typedef struct {
    const gc_array *arrays;
    size_t n;
    const gc_norm *norm;
    double *acc;      /* sequential: running accumulation per array */
    double *partials; /* parallel: one accumulation per block */
} total_ctx;

static ptrdiff_t total_size_of(void *ctx, size_t i)
{
    return size_of_array((void *)((total_ctx *)ctx)->arrays, i);
}

static void accumulate_block(void *ctx_, size_t i, ptrdiff_t start, ptrdiff_t stop, size_t k)
{
    total_ctx *ctx = ctx_;
    if (start == 0)
        prefetch_ahead(ctx->arrays, ctx->n, i + 2);
    const double block = block_norm(&ctx->arrays[i], ctx->norm, start, stop);
    if (ctx->partials != NULL)
        ctx->partials[k] = block;
    else
        ctx->acc[i] = gc_norm_combine(ctx->norm, ctx->acc[i], block);
}

void gc_array_norms(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms, int finish)
{
    ptrdiff_t elements = 0;
    size_t nblocks = 0;
    for (size_t i = 0; i < n; i++) {
        const ptrdiff_t size = array_size(&arrays[i]);
        elements += size;
        nblocks += (size_t)((size + GC_BLOCK - 1) / GC_BLOCK);
        norms[i] = gc_norm_identity(norm);
    }
    total_ctx ctx = {arrays, n, norm, norms, NULL};
    /* Threads write one partial per block; the partials are combined below, in block order,
     * exactly as the sequential path combines them as it goes. */
    if (elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1)
        ctx.partials = malloc(nblocks * sizeof *ctx.partials);
    gc_for_each_block(n, total_size_of, ctx.partials != NULL, accumulate_block, &ctx);
    if (ctx.partials != NULL) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const ptrdiff_t size = array_size(&arrays[i]);
            for (ptrdiff_t start = 0; start < size; start += GC_BLOCK)
                norms[i] = gc_norm_combine(norm, norms[i], ctx.partials[k++]);
        }
        free(ctx.partials);
    }
    if (finish) {
        for (size_t i = 0; i < n; i++)
            norms[i] = gc_norm_finish(norm, norms[i]);
    }
}

double gc_norms_total(const double *norms, size_t n, const gc_norm *norm)
{
    return gc_norm_finish(norm, gc_norm_run(GC_FLOAT64, norms, 1, (ptrdiff_t)n, norm));
}

double gc_raw_total(const double *accumulations, size_t n, const gc_norm *norm)
{
    double acc = gc_norm_identity(norm);
    for (size_t i = 0; i < n; i++)
        acc = gc_norm_combine(norm, acc, accumulations[i]);
    return gc_norm_finish(norm, acc);
}

double gc_total_norm(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms)
{
    gc_array_norms(arrays, n, norm, norms, 1);
    return gc_norms_total(norms, n, norm);
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
    double a, b;
} run_args;

static void scale_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const run_args *r = ctx;
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
    run_args args = {ctx->arrays[i].dtype, ctx->coefs != NULL ? ctx->coefs[i] : ctx->a, ctx->b};
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
        run_args args = {arrays[i].dtype, coefs != NULL ? coefs[i] : a, b};
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
