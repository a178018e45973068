#include "gc_linalg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gc_half.h"
#include "gc_layout.h"
#include "gc_parallel.h"
#include "gc_scratch.h"

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
    acc->comp = isfinite(sum) ? comp : 0.0; /* see dot_combine */
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

/* Visits the runs of elements [start, stop) of pair p, in its layout's order (both operands,
 * or the first alone when nops is 1). */
static void walk_pair(const gc_pair *p, int nops, ptrdiff_t start, ptrdiff_t stop, gc_run_fn fn, void *ctx)
{
    if (start >= stop)
        return;
    if (p->ndim == 1) {
        const ptrdiff_t strides[2] = {p->strides[0][0], nops > 1 ? p->strides[1][0] : 0};
        char *ptrs[2] = {p->data[0] + start * strides[0], nops > 1 ? p->data[1] + start * strides[1] : NULL};
        fn(ctx, ptrs, strides, stop - start);
        return;
    }
    gc_layout layout;
    gc_layout_init(&layout, p->ndim, p->shape, nops, p->data, p->strides);
    gc_layout_walk(&layout, start, stop, fn, ctx);
}

/* The dims walk_pair visits a float16 pair in, for torch's loop split (gc_torch_vector_end). */
static void pair_torch_dims(const gc_pair *p, gc_torch_dims *dims)
{
    const ptrdiff_t itemsize = (ptrdiff_t)gc_item_size(p->dtype);
    if (p->ndim == 1) {
        gc_torch_dims_init(dims, 1, p->shape, 2, p->strides, itemsize);
        return;
    }
    gc_layout layout;
    gc_layout_init(&layout, p->ndim, p->shape, 2, p->data, p->strides);
    const ptrdiff_t *strides[2] = {layout.strides[0], layout.strides[1]};
    gc_torch_dims_init(dims, layout.ndim, layout.shape, 2, strides, itemsize);
}

/* ---- blocks and threads ------------------------------------------------------------------- */

/* Every operation visits the pairs in blocks of GC_BLOCK elements (gc_for_each_block): a
 * block is computed the same way whichever thread runs it, and a dot product is the sum of
 * its blocks' partial sums combined in block order, so results are bit-identical for any
 * thread count. */
enum { OP_DOT, OP_AXPY, OP_LERP, OP_COPY };

typedef struct {
    const gc_pair *pairs;
    int op;
    double alpha;
    dot_acc running;   /* dot, one thread: the blocks combined so far, in order */
    dot_acc *partials; /* dot, several threads: one per block */
} pairs_job;

static ptrdiff_t job_pair_size(void *ctx, size_t i)
{
    return pair_size(&((const pairs_job *)ctx)->pairs[i]);
}

/* a + b, as the partial sums of a dot product are combined (the same in every path). */
static dot_acc dot_combine(dot_acc a, dot_acc b)
{
    dot_acc r = {b.dtype, 0.0, 0.0};
    double e;
    two_sum(a.sum, b.sum, &r.sum, &e);
    /* An infinite or NaN sum is the plain sum's (the compensation would turn inf into NaN). */
    r.comp = isfinite(r.sum) ? (a.comp + b.comp) + e : 0.0;
    return r;
}

static void visit_block(void *ctx, size_t i, ptrdiff_t start, ptrdiff_t stop, size_t k)
{
    pairs_job *job = ctx;
    const gc_pair *p = &job->pairs[i];
    switch (job->op) {
    case OP_DOT: {
        dot_acc acc = {p->dtype, 0.0, 0.0};
        walk_pair(p, 2, start, stop, dot_run, &acc);
        if (job->partials != NULL)
            job->partials[k] = acc;
        else
            job->running = dot_combine(job->running, acc);
        break;
    }
    case OP_AXPY:
    case OP_LERP: {
        /* A float16 axpy rounds as torch's loops split the pair (see axpy_run): the split's
         * dims, and the block's position in the visiting order. */
        gc_torch_dims dims;
        axpy_args args = {p->dtype, job->alpha, NULL, start};
        if (job->op == OP_AXPY && p->dtype == GC_FLOAT16) {
            pair_torch_dims(p, &dims);
            args.dims = &dims;
        }
        walk_pair(p, 2, start, stop, job->op == OP_AXPY ? axpy_run : lerp_run, &args);
        break;
    }
    default: {
        gc_dtype dtype = p->dtype;
        if (p->data[1] == NULL)
            walk_pair(p, 1, start, stop, zero_run, &dtype);
        else
            walk_pair(p, 2, start, stop, copy_run, &dtype);
        break;
    }
    }
}

/* Byte extent [lo, hi) of one operand of a non-empty pair. */
static void operand_extent(const gc_pair *p, int s, const char **lo, const char **hi)
{
    const char *l = p->data[s], *h = p->data[s];
    for (int d = 0; d < p->ndim; d++) {
        const ptrdiff_t span = (p->shape[d] - 1) * p->strides[s][d];
        if (span < 0)
            l += span;
        else
            h += span;
    }
    *lo = l;
    *hi = h + gc_item_size(p->dtype);
}

/* Whether pairs may be written on several threads: every operand's memory disjoint from every
 * other's (operands of one pair are disjoint already, the glue checked). Otherwise an array
 * listed twice, or written by one pair and read by another, must be processed in list order. */
static int pairs_disjoint(const gc_pair *pairs, size_t n)
{
    const char **bounds = gc_scratch_alloc(4 * n * sizeof *bounds + 1);
    if (bounds == NULL)
        return 0;
    size_t m = 0;
    const char **lo = bounds, **hi = bounds + 2 * n;
    for (size_t i = 0; i < n; i++) {
        if (pair_size(&pairs[i]) == 0)
            continue;
        for (int s = 0; s < 2; s++) {
            if (pairs[i].data[s] == NULL)
                continue;
            operand_extent(&pairs[i], s, &lo[m], &hi[m]);
            m++;
        }
    }
    const int disjoint = gc_ranges_disjoint(lo, hi, m) == 1;
    gc_scratch_free(bounds);
    return disjoint;
}

static size_t pairs_blocks(const gc_pair *pairs, size_t n, ptrdiff_t *elements)
{
    size_t blocks = 0;
    *elements = 0;
    for (size_t i = 0; i < n; i++) {
        const ptrdiff_t size = pair_size(&pairs[i]);
        *elements += size;
        blocks += (size_t)((size + GC_BLOCK - 1) / GC_BLOCK);
    }
    return blocks;
}

static void run_elementwise(const gc_pair *pairs, size_t n, int op, double alpha)
{
    pairs_job job = {pairs, op, alpha, {GC_FLOAT64, 0.0, 0.0}, NULL};
    ptrdiff_t elements;
    pairs_blocks(pairs, n, &elements);
    const int parallel = elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1 && pairs_disjoint(pairs, n);
    gc_for_each_block(n, job_pair_size, parallel, visit_block, &job);
}

double gc_pairs_dot(const gc_pair *pairs, size_t n)
{
    pairs_job job = {pairs, OP_DOT, 0.0, {GC_FLOAT64, 0.0, 0.0}, NULL};
    ptrdiff_t elements;
    const size_t nblocks = pairs_blocks(pairs, n, &elements);
    /* Threads store one partial per block, combined below in block order, exactly as one
     * thread combines them as it goes (and as it does if there is no memory for them). */
    if (elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1)
        job.partials = gc_scratch_alloc(nblocks * sizeof *job.partials + 1);
    gc_for_each_block(n, job_pair_size, job.partials != NULL, visit_block, &job);
    if (job.partials != NULL) {
        for (size_t k = 0; k < nblocks; k++)
            job.running = dot_combine(job.running, job.partials[k]);
        gc_scratch_free(job.partials);
    }
    return job.running.sum + job.running.comp;
}

void gc_pairs_axpy(const gc_pair *pairs, size_t n, double alpha)
{
    run_elementwise(pairs, n, OP_AXPY, alpha);
}

void gc_pairs_lerp(const gc_pair *pairs, size_t n, double weight)
{
    run_elementwise(pairs, n, OP_LERP, weight);
}

void gc_pairs_copy(const gc_pair *pairs, size_t n)
{
    run_elementwise(pairs, n, OP_COPY, 0.0);
}
