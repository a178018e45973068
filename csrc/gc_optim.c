#include "gc_optim.h"

#include <stdlib.h>

#include "gc_layout.h"
#include "gc_parallel.h"
#include "gc_scratch.h"

/* Set once by gc_select_isa at module start-up; read-only afterwards. */
gc_optim_table gc_optim_kernels;

typedef struct {
    const gc_optim_item *items;
    gc_run_fn walk;
} step_ctx;

static ptrdiff_t item_size(void *ctx, size_t i)
{
    const gc_optim_item *it = &((const step_ctx *)ctx)->items[i];
    ptrdiff_t size = 1;
    for (int d = 0; d < it->ndim; d++)
        size *= it->shape[d];
    return size;
}

/* dims of an item: its operands', and as GC_OPTIM_GRAD_TMP_OP the gradient temporary's,
 * contiguous over the dims sorted by decreasing |gradient stride| (a stable sort: ties keep the
 * visiting order), as torch allocates the result of an operation on the gradient. */
static void describe_dims(gc_torch_dims *dims, int nd, const ptrdiff_t *shape, int nops,
                          const ptrdiff_t *const *strides, ptrdiff_t itemsize)
{
    gc_torch_dims_init(dims, nd, shape, nops, strides, itemsize);
    const ptrdiff_t *g = dims->strides[GC_OP_GRAD];
    int order[GC_MAXDIMS];
    for (int d = 0; d < nd; d++) {
        int pos = d;
        while (pos > 0 && llabs((long long)g[order[pos - 1]]) < llabs((long long)g[d])) {
            order[pos] = order[pos - 1];
            pos--;
        }
        order[pos] = d;
    }
    ptrdiff_t expect = 1;
    for (int j = nd - 1; j >= 0; j--) {
        dims->strides[GC_OPTIM_GRAD_TMP_OP][order[j]] = expect;
        expect *= shape[order[j]];
    }
}

ptrdiff_t gc_optim_torch_vector_end(const gc_optim_item *it, unsigned ops, ptrdiff_t n, ptrdiff_t tail)
{
    return it->zero_dim ? 0 : gc_torch_vector_end(it->dims, it->run_start, ops, n, tail);
}

/* A block's runs, each passed to the kernel with its position (see gc_optim_item). */
typedef struct {
    gc_optim_item item; /* the block's copy, its run_start advanced run by run */
    gc_run_fn walk;
} run_ctx;

static void visit_run(void *ctx_, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    run_ctx *ctx = ctx_;
    ctx->walk(&ctx->item, ptrs, strides, n);
    ctx->item.run_start += n;
}

/* Unit u's factor as the options' gradient scaling (see gc_optim_item). */
static void set_unit_scaling(gc_optim_options *options, const gc_optim_item *it, ptrdiff_t u)
{
    options->scaling.has_scale = it->unit_factors[u] != 0.0;
    options->scaling.scale = options->scaling.has_scale ? it->unit_factors[it->units + u] : 1.0;
}

static void step_block(void *ctx_, size_t i, ptrdiff_t start, ptrdiff_t stop, size_t k)
{
    (void)k;
    const step_ctx *ctx = ctx_;
    const gc_optim_item *it = &ctx->items[i];
    const ptrdiff_t itemsize = (ptrdiff_t)gc_item_size(it->dtype);
    gc_torch_dims dims;
    run_ctx run = {*it, ctx->walk};
    run.item.dims = &dims;
    run.item.run_start = start;
    /* Per-unit factors: a copy of the options carries the factor of the unit being run (the
     * only one when the item is one unit; else see the loop below). */
    gc_optim_options options;
    if (it->unit_factors != NULL) {
        options = *it->options;
        run.item.options = &options;
        set_unit_scaling(&options, it, 0);
        if (it->units == 1)
            run.item.unit_factors = NULL;
    }
    if (it->ndim == 1) {
        /* One run per operand (contiguous operands arrive so): no layout to build. */
        char *ptrs[GC_OPTIM_MAXOPS];
        ptrdiff_t strides[GC_OPTIM_MAXOPS];
        const ptrdiff_t *stride_of[GC_OPTIM_MAXOPS];
        for (int k = 0; k < it->nops; k++) {
            strides[k] = it->strides[k][0];
            stride_of[k] = &strides[k];
            ptrs[k] = it->data[k] + start * strides[k];
        }
        describe_dims(&dims, 1, it->shape, it->nops, stride_of, itemsize);
        if (run.item.unit_factors == NULL) {
            ctx->walk(&run.item, ptrs, strides, stop - start);
            return;
        }
        /* Unit by unit (consecutive runs of equal length), each with its own factor. */
        const ptrdiff_t length = it->shape[0] / it->units;
        for (ptrdiff_t at = start; at < stop;) {
            const ptrdiff_t unit = at / length, end = (unit + 1) * length < stop ? (unit + 1) * length : stop;
            set_unit_scaling(&options, it, unit);
            run.item.run_start = at;
            ctx->walk(&run.item, ptrs, strides, end - at);
            for (int k = 0; k < it->nops; k++)
                ptrs[k] += (end - at) * strides[k];
            at = end;
        }
        return;
    }
    gc_layout layout;
    gc_layout_init(&layout, it->ndim, it->shape, it->nops, it->data, it->strides);
    const ptrdiff_t *stride_of[GC_OPTIM_MAXOPS];
    for (int k = 0; k < it->nops; k++)
        stride_of[k] = layout.strides[k];
    describe_dims(&dims, layout.ndim, layout.shape, it->nops, stride_of, itemsize);
    gc_layout_walk(&layout, start, stop, visit_run, &run);
}

/* Whether no operand of any item shares memory with an operand of another item (within an
 * item the caller has checked it). Only then may items be updated concurrently. */
static int items_disjoint(const gc_optim_item *items, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += (size_t)items[i].nops;
    const char **bounds = gc_scratch_alloc(2 * count * sizeof *bounds);
    if (bounds == NULL)
        return 0;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        const gc_optim_item *it = &items[i];
        ptrdiff_t size = 1;
        for (int d = 0; d < it->ndim; d++)
            size *= it->shape[d];
        for (int op = 0; op < it->nops; op++, j++) {
            const char *lo = it->data[op], *hi = it->data[op];
            for (int d = 0; d < it->ndim && size > 0; d++) {
                const ptrdiff_t span = (it->shape[d] - 1) * it->strides[op][d];
                if (span < 0)
                    lo += span;
                else
                    hi += span;
            }
            bounds[j] = lo;
            bounds[count + j] = size > 0 ? hi + gc_item_size(it->dtype) : lo;
        }
    }
    const int disjoint = gc_ranges_disjoint(bounds, bounds + count, count) == 1;
    gc_scratch_free(bounds);
    return disjoint;
}

static void step_all(const gc_optim_item *items, size_t n, gc_run_fn walk)
{
    step_ctx ctx = {items, walk};
    ptrdiff_t elements = 0;
    for (size_t i = 0; i < n; i++)
        elements += item_size(&ctx, i);
    const int parallel = elements >= GC_PARALLEL_MIN && gc_get_num_threads() > 1 && items_disjoint(items, n);
    gc_for_each_block(n, item_size, parallel, step_block, &ctx);
}

void gc_optim_run(int which, const gc_optim_item *items, size_t n)
{
    step_all(items, n, gc_optim_kernels.walk[which]);
}
