#include "gc_optim.h"

#include <stdlib.h>

#include "gc_layout.h"
#include "gc_parallel.h"

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

static void step_block(void *ctx_, size_t i, ptrdiff_t start, ptrdiff_t stop, size_t k)
{
    (void)k;
    const step_ctx *ctx = ctx_;
    const gc_optim_item *it = &ctx->items[i];
    if (it->ndim == 1) {
        /* One run per operand (contiguous operands arrive so): no layout to build. */
        char *ptrs[GC_OPTIM_MAXOPS];
        ptrdiff_t strides[GC_OPTIM_MAXOPS];
        for (int k = 0; k < it->nops; k++) {
            strides[k] = it->strides[k][0];
            ptrs[k] = it->data[k] + start * strides[k];
        }
        ctx->walk((void *)it, ptrs, strides, stop - start);
        return;
    }
    gc_layout layout;
    gc_layout_init(&layout, it->ndim, it->shape, it->nops, it->data, it->strides);
    gc_layout_walk(&layout, start, stop, ctx->walk, (void *)it);
}

/* Whether no operand of any item shares memory with an operand of another item (within an
 * item the caller has checked it). Only then may items be updated concurrently. */
static int items_disjoint(const gc_optim_item *items, size_t n)
{
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += (size_t)items[i].nops;
    const char **bounds = malloc(2 * count * sizeof *bounds);
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
    free(bounds);
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
