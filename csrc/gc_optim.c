#include "gc_optim.h"

#include "gc_layout.h"

gc_optim_table gc_optim_kernels;

static void for_each_item(const gc_optim_item *items, size_t n, const void *options, gc_run_fn walk)
{
    gc_layout layout;
    for (size_t i = 0; i < n; i++) {
        gc_optim_run_ctx ctx = {&items[i], options};
        gc_layout_init(&layout, items[i].ndim, items[i].shape, items[i].nops, items[i].data, items[i].strides);
        gc_layout_walk(&layout, 0, layout.size, walk, &ctx);
    }
}

void gc_sgd(const gc_optim_item *items, size_t n, const gc_sgd_options *options)
{
    for_each_item(items, n, options, gc_optim_kernels.sgd_walk);
}

void gc_adam(const gc_optim_item *items, size_t n, const gc_adam_options *options)
{
    for_each_item(items, n, options, gc_optim_kernels.adam_walk);
}
