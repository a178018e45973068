#include "gc_linalg.h"

#include <math.h>
#include <string.h>

#include "gc_half.h"
#include "gc_layout.h"

/* Accumulators: plain float64 for float16/float32 (exact products), (sum, compensation) for
 * float64. */
typedef struct {
    gc_dtype dtype;
    double sum, comp;
} dot_acc;

/* Knuth's TwoSum: s + e == a + b exactly. */
static inline void two_sum(double a, double b, double *s, double *e)
{
    const double x = a + b, z = x - a;
    *s = x;
    *e = (a - (x - z)) + (b - z);
}

static void dot_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    dot_acc *acc = ctx;
    const ptrdiff_t i0 = gc_elements(strides[0], acc->dtype), i1 = gc_elements(strides[1], acc->dtype);
    double sum = acc->sum, comp = acc->comp;
    switch (acc->dtype) {
    case GC_FLOAT16: {
        const gc_half *x = (const gc_half *)ptrs[0], *y = (const gc_half *)ptrs[1];
        for (ptrdiff_t k = 0; k < n; k++)
            sum += (double)gc_half_to_float(x[k * i0]) * (double)gc_half_to_float(y[k * i1]);
        break;
    }
    case GC_FLOAT32: {
        const float *x = (const float *)ptrs[0], *y = (const float *)ptrs[1];
        for (ptrdiff_t k = 0; k < n; k++)
            sum += (double)x[k * i0] * (double)y[k * i1];
        break;
    }
    default: {
        const double *x = (const double *)ptrs[0], *y = (const double *)ptrs[1];
        for (ptrdiff_t k = 0; k < n; k++) {
            const double p = x[k * i0] * y[k * i1];
            const double pe = fma(x[k * i0], y[k * i1], -p);
            double e;
            two_sum(sum, p, &sum, &e);
            comp += e + pe;
        }
        break;
    }
    }
    acc->sum = sum;
    acc->comp = comp;
}

typedef struct {
    gc_dtype dtype;
    double alpha;
    const gc_torch_dims *dims; /* axpy: the pair's, and where the current run starts */
    ptrdiff_t run_start;
} axpy_args;

static void axpy_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    axpy_args *a = ctx;
    const ptrdiff_t i0 = gc_elements(strides[0], a->dtype), i1 = gc_elements(strides[1], a->dtype);
    switch (a->dtype) {
    case GC_FLOAT16: {
        gc_half *y = (gc_half *)ptrs[0];
        const gc_half *x = (const gc_half *)ptrs[1];
        /* torch's float16 add rounds alpha to float16, then computes fma(x, alpha, y) in float
         * in its vectorised loop, y + h(alpha * x) in float16 arithmetic in its scalar loop
         * (see gc_torch_vector_end). */
        const float alpha = gc_half_to_float(gc_float_to_half((float)a->alpha));
        const ptrdiff_t end = gc_torch_vector_end(a->dims, a->run_start, 3u, n, GC_TORCH_HALF_TAIL);
        for (ptrdiff_t k = 0; k < end; k++)
            y[k * i0] = gc_float_to_half(fmaf(gc_half_to_float(x[k * i1]), alpha, gc_half_to_float(y[k * i0])));
        for (ptrdiff_t k = end; k < n; k++) {
            const float product = gc_half_to_float(gc_float_to_half(alpha * gc_half_to_float(x[k * i1])));
            y[k * i0] = gc_float_to_half(gc_half_to_float(y[k * i0]) + product);
        }
        a->run_start += n;
        break;
    }
    case GC_FLOAT32: {
        float *y = (float *)ptrs[0];
        const float *x = (const float *)ptrs[1];
        const float alpha = (float)a->alpha;
        if (i0 == 1 && i1 == 1) {
            for (ptrdiff_t k = 0; k < n; k++)
                y[k] = fmaf(x[k], alpha, y[k]);
        }
        else {
            for (ptrdiff_t k = 0; k < n; k++)
                y[k * i0] = fmaf(x[k * i1], alpha, y[k * i0]);
        }
        break;
    }
    default: {
        double *y = (double *)ptrs[0];
        const double *x = (const double *)ptrs[1];
        const double alpha = a->alpha;
        if (i0 == 1 && i1 == 1) {
            for (ptrdiff_t k = 0; k < n; k++)
                y[k] = fma(x[k], alpha, y[k]);
        }
        else {
            for (ptrdiff_t k = 0; k < n; k++)
                y[k * i0] = fma(x[k * i1], alpha, y[k * i0]);
        }
        break;
    }
    }
}

static void lerp_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const axpy_args *a = ctx; /* alpha: the weight */
    const ptrdiff_t i0 = gc_elements(strides[0], a->dtype), i1 = gc_elements(strides[1], a->dtype);
    switch (a->dtype) {
    case GC_FLOAT16: {
        gc_half *x = (gc_half *)ptrs[0];
        const gc_half *e = (const gc_half *)ptrs[1];
        const float w = (float)a->alpha;
        const int small = fabsf(w) < 0.5f;
        for (ptrdiff_t k = 0; k < n; k++) {
            const float s = gc_half_to_float(x[k * i0]), t = gc_half_to_float(e[k * i1]), diff = t - s;
            x[k * i0] = gc_float_to_half(small ? fmaf(w, diff, s) : fmaf(w - 1.0f, diff, t));
        }
        break;
    }
    case GC_FLOAT32: {
        float *x = (float *)ptrs[0];
        const float *e = (const float *)ptrs[1];
        const float w = (float)a->alpha;
        const int small = fabsf(w) < 0.5f;
        for (ptrdiff_t k = 0; k < n; k++) {
            const float s = x[k * i0], t = e[k * i1], diff = t - s;
            x[k * i0] = small ? fmaf(w, diff, s) : fmaf(w - 1.0f, diff, t);
        }
        break;
    }
    default: {
        double *x = (double *)ptrs[0];
        const double *e = (const double *)ptrs[1];
        const double w = a->alpha;
        const int small = fabs(w) < 0.5;
        for (ptrdiff_t k = 0; k < n; k++) {
            const double s = x[k * i0], t = e[k * i1], diff = t - s;
            x[k * i0] = small ? fma(w, diff, s) : fma(w - 1.0, diff, t);
        }
        break;
    }
    }
}

static void copy_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const gc_dtype dtype = *(const gc_dtype *)ctx;
    const size_t size = gc_item_size(dtype);
    const ptrdiff_t i0 = gc_elements(strides[0], dtype), i1 = gc_elements(strides[1], dtype);
    if (i0 == 1 && i1 == 1) {
        memcpy(ptrs[0], ptrs[1], (size_t)n * size);
        return;
    }
    for (ptrdiff_t k = 0; k < n; k++)
        memcpy(ptrs[0] + k * i0 * (ptrdiff_t)size, ptrs[1] + k * i1 * (ptrdiff_t)size, size);
}

static void zero_run(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const gc_dtype dtype = *(const gc_dtype *)ctx;
    const size_t size = gc_item_size(dtype);
    const ptrdiff_t i0 = gc_elements(strides[0], dtype);
    if (i0 == 1) {
        memset(ptrs[0], 0, (size_t)n * size); /* all-zero bits are +0.0 in every dtype */
        return;
    }
    for (ptrdiff_t k = 0; k < n; k++)
        memset(ptrs[0] + k * i0 * (ptrdiff_t)size, 0, size);
}

static ptrdiff_t pair_size(const gc_pair *p)
{
    ptrdiff_t size = 1;
    for (int d = 0; d < p->ndim; d++)
        size *= p->shape[d];
    return size;
}

/* Visits the runs of pair p (both operands, or the first alone when nops is 1). */
static void walk_pair(const gc_pair *p, int nops, gc_run_fn fn, void *ctx)
{
    const ptrdiff_t size = pair_size(p);
    if (size == 0)
        return;
    if (p->ndim == 1) {
        ptrdiff_t strides[2] = {p->strides[0][0], nops > 1 ? p->strides[1][0] : 0};
        char *ptrs[2] = {p->data[0], nops > 1 ? p->data[1] : NULL};
        fn(ctx, ptrs, strides, size);
        return;
    }
    gc_layout layout;
    gc_layout_init(&layout, p->ndim, p->shape, nops, p->data, p->strides);
    gc_layout_walk(&layout, 0, size, fn, ctx);
}

double gc_pairs_dot(const gc_pair *pairs, size_t n)
{
    dot_acc acc = {GC_FLOAT64, 0.0, 0.0};
    for (size_t i = 0; i < n; i++) {
        acc.dtype = pairs[i].dtype;
        walk_pair(&pairs[i], 2, dot_run, &acc);
    }
    return acc.sum + acc.comp;
}

void gc_pairs_axpy(const gc_pair *pairs, size_t n, double alpha)
{
    gc_torch_dims dims;
    for (size_t i = 0; i < n; i++) {
        const gc_pair *p = &pairs[i];
        axpy_args args = {p->dtype, alpha, &dims, 0};
        if (p->dtype == GC_FLOAT16 && pair_size(p) > 0) {
            /* The dims walk_pair visits, for torch's loop split. */
            const ptrdiff_t itemsize = (ptrdiff_t)gc_item_size(p->dtype);
            if (p->ndim == 1) {
                gc_torch_dims_init(&dims, 1, p->shape, 2, p->strides, itemsize);
            }
            else {
                gc_layout layout;
                gc_layout_init(&layout, p->ndim, p->shape, 2, p->data, p->strides);
                const ptrdiff_t *strides[2] = {layout.strides[0], layout.strides[1]};
                gc_torch_dims_init(&dims, layout.ndim, layout.shape, 2, strides, itemsize);
            }
        }
        walk_pair(p, 2, axpy_run, &args);
    }
}

void gc_pairs_lerp(const gc_pair *pairs, size_t n, double weight)
{
    for (size_t i = 0; i < n; i++) {
        axpy_args args = {pairs[i].dtype, weight, NULL, 0};
        walk_pair(&pairs[i], 2, lerp_run, &args);
    }
}

void gc_pairs_copy(const gc_pair *pairs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        gc_dtype dtype = pairs[i].dtype;
        if (pairs[i].data[1] == NULL)
            walk_pair(&pairs[i], 1, zero_run, &dtype);
        else
            walk_pair(&pairs[i], 2, copy_run, &dtype);
    }
}
