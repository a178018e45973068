#include "gc_clip.h"

#include "gc_layout.h"

static void layout_of(gc_layout *layout, const gc_array *a)
{
    char *data = a->data;
    const ptrdiff_t *strides = a->strides;
    gc_layout_init(layout, a->ndim, a->shape, 1, &data, &strides);
}

typedef struct {
    gc_dtype dtype;
    const gc_norm *norm;
    double acc;
} norm_ctx;

static void norm_block_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    norm_ctx *c = ctx;
    const ptrdiff_t inc = strides[0] / (ptrdiff_t)gc_item_size(c->dtype);
    c->acc = gc_norm_combine(c->norm, c->acc, gc_norm_run(c->dtype, ptrs[0], inc, n, c->norm));
}

static double array_norm(const gc_array *a, const gc_norm *norm)
{
    gc_layout layout;
    double acc = gc_norm_identity(norm);
    layout_of(&layout, a);
    for (ptrdiff_t start = 0; start < layout.size; start += GC_BLOCK) {
        const ptrdiff_t stop = (layout.size - start < GC_BLOCK) ? layout.size : start + GC_BLOCK;
        norm_ctx block = {a->dtype, norm, gc_norm_identity(norm)};
        gc_layout_walk(&layout, start, stop, norm_block_run, &block);
        acc = gc_norm_combine(norm, acc, block.acc);
    }
    return gc_norm_finish(norm, acc);
}

double gc_total_norm(const gc_array *arrays, size_t n, const gc_norm *norm, double *norms)
{
    for (size_t i = 0; i < n; i++)
        norms[i] = array_norm(&arrays[i], norm);
    return gc_norm_finish(norm, gc_norm_run(GC_FLOAT64, norms, 1, (ptrdiff_t)n, norm));
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

typedef struct {
    gc_dtype dtype;
    double a, b;
} elementwise_ctx;

static void scale_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const elementwise_ctx *c = ctx;
    gc_scale_run(c->dtype, ptrs[0], strides[0] / (ptrdiff_t)gc_item_size(c->dtype), n, c->a);
}

static void clamp_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const elementwise_ctx *c = ctx;
    gc_clamp_run(c->dtype, ptrs[0], strides[0] / (ptrdiff_t)gc_item_size(c->dtype), n, c->a, c->b);
}

static void for_each_array(const gc_array *arrays, size_t n, gc_run_fn fn, double a, double b)
{
    gc_layout layout;
    for (size_t i = 0; i < n; i++) {
        elementwise_ctx ctx = {arrays[i].dtype, a, b};
        layout_of(&layout, &arrays[i]);
        gc_layout_walk(&layout, 0, layout.size, fn, &ctx);
    }
}

void gc_scale(const gc_array *arrays, size_t n, double coef)
{
    for_each_array(arrays, n, scale_run, coef, 0.0);
}

void gc_clamp(const gc_array *arrays, size_t n, double lo, double hi)
{
    for_each_array(arrays, n, clamp_run, lo, hi);
}
