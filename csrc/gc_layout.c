#include "gc_layout.h"

static ptrdiff_t abs_stride(ptrdiff_t s)
{
    return s < 0 ? -s : s;
}

void gc_layout_init(gc_layout *layout, int ndim, const ptrdiff_t *shape, int nops,
                    char *const *data, const ptrdiff_t *const *strides)
{
    int nd = 0;
    layout->nops = nops;
    layout->size = 1;
    for (int op = 0; op < nops; op++)
        layout->data[op] = data[op];

    for (int d = 0; d < ndim; d++) {
        layout->size *= shape[d];
        if (shape[d] == 1)
            continue;
        /* Insertion sort by decreasing |stride| of operand 0; stable, so ties keep C order. */
        int pos = nd++;
        while (pos > 0 && abs_stride(layout->strides[0][pos - 1]) < abs_stride(strides[0][d])) {
            layout->shape[pos] = layout->shape[pos - 1];
            for (int op = 0; op < nops; op++)
                layout->strides[op][pos] = layout->strides[op][pos - 1];
            pos--;
        }
        layout->shape[pos] = shape[d];
        for (int op = 0; op < nops; op++)
            layout->strides[op][pos] = strides[op][d];
    }
    if (layout->size == 0 || nd == 0) {
        layout->ndim = 1;
        layout->shape[0] = layout->size;
        for (int op = 0; op < nops; op++)
            layout->strides[op][0] = 0;
        return;
    }

    /* Visit dims whose first-operand stride is negative backwards. */
    for (int d = 0; d < nd; d++) {
        if (layout->strides[0][d] >= 0)
            continue;
        for (int op = 0; op < nops; op++) {
            layout->data[op] += (layout->shape[d] - 1) * layout->strides[op][d];
            layout->strides[op][d] = -layout->strides[op][d];
        }
    }

    /* Fuse dim d into its inner neighbour when every operand steps through them as one. */
    int out = 0;
    for (int d = 1; d < nd; d++) {
        int fusable = 1;
        for (int op = 0; op < nops; op++)
            fusable &= layout->strides[op][out] == layout->strides[op][d] * layout->shape[d];
        if (fusable) {
            layout->shape[out] *= layout->shape[d];
            for (int op = 0; op < nops; op++)
                layout->strides[op][out] = layout->strides[op][d];
        } else {
            out++;
            layout->shape[out] = layout->shape[d];
            for (int op = 0; op < nops; op++)
                layout->strides[op][out] = layout->strides[op][d];
        }
    }
    layout->ndim = out + 1;
}

void gc_layout_walk(const gc_layout *layout, ptrdiff_t start, ptrdiff_t stop, gc_run_fn fn, void *ctx)
{
    const int nd = layout->ndim, nops = layout->nops;
    const ptrdiff_t inner = layout->shape[nd - 1];
    ptrdiff_t index[GC_MAXDIMS];
    ptrdiff_t inner_strides[GC_MAXOPS];
    char *ptrs[GC_MAXOPS], *run[GC_MAXOPS];

    if (start >= stop)
        return;

    /* Position the odometer on element `start`. */
    ptrdiff_t rest = start / inner, offset = start % inner;
    for (int op = 0; op < nops; op++) {
        ptrs[op] = layout->data[op];
        inner_strides[op] = layout->strides[op][nd - 1];
    }
    for (int d = nd - 2; d >= 0; d--) {
        index[d] = rest % layout->shape[d];
        rest /= layout->shape[d];
        for (int op = 0; op < nops; op++)
            ptrs[op] += index[d] * layout->strides[op][d];
    }

    for (ptrdiff_t done = start; done < stop;) {
        const ptrdiff_t n = (inner - offset < stop - done) ? inner - offset : stop - done;
        for (int op = 0; op < nops; op++)
            run[op] = ptrs[op] + offset * inner_strides[op];
        fn(ctx, run, inner_strides, n);
        done += n;
        offset = 0;
        /* Advance the outer odometer by one. */
        for (int d = nd - 2; d >= 0; d--) {
            for (int op = 0; op < nops; op++)
                ptrs[op] += layout->strides[op][d];
            if (++index[d] < layout->shape[d])
                break;
            for (int op = 0; op < nops; op++)
                ptrs[op] -= layout->shape[d] * layout->strides[op][d];
            index[d] = 0;
        }
    }
}

void gc_torch_dims_init(gc_torch_dims *dims, int nd, const ptrdiff_t *shape, int nops,
                        const ptrdiff_t *const *strides, ptrdiff_t itemsize)
{
    dims->ndim = nd;
    for (int d = 0; d < nd; d++)
        dims->shape[d] = shape[d];
    for (int k = 0; k < nops; k++)
        for (int d = 0; d < nd; d++)
            dims->strides[k][d] = strides[k][d] % itemsize ? 0 : strides[k][d] / itemsize;
}

/* torch's TensorIterator, for one operation over the operands `ops` (all of one shape): it
 * fuses every pair of dims over which all operands are contiguous and runs the innermost
 * (fused) dim in its vectorised loop when every operand steps by one element along it, each
 * row's last length % tail elements excepted. So an element is vectorised when some dim has
 * stride 1 in every operand and the element's offset along the chain of dims fused onto that
 * one is below the chain's length rounded down to a multiple of `tail`. Along a run that offset
 * grows by a constant step (or stays), so the vectorised elements of a run are a prefix of it. */
ptrdiff_t gc_torch_vector_end(const gc_torch_dims *dims, ptrdiff_t run_start, unsigned ops, ptrdiff_t n,
                              ptrdiff_t tail)
{
    const int nd = dims->ndim;
    if (ops == 0)
        return 0;
    int first = 0;
    while (!(ops & (1u << first)))
        first++;
    char fused[GC_MAXDIMS] = {0};
    ptrdiff_t length = 0;
    for (int d = nd - 1; d >= 0 && length == 0; d--) {
        int unit = 1;
        for (int k = 0; k <= GC_MAXOPS; k++)
            if (ops & (1u << k))
                unit &= dims->strides[k][d] == 1;
        if (unit) {
            fused[d] = 1;
            length = dims->shape[d];
        }
    }
    if (length == 0)
        return 0; /* no unit-stride dim: the scalar loop throughout */
    for (int found = 1; found;) {
        found = 0;
        for (int d = 0; d < nd && !found; d++) {
            if (fused[d])
                continue;
            int next = 1;
            for (int k = 0; k <= GC_MAXOPS; k++)
                if (ops & (1u << k))
                    next &= dims->strides[k][d] == length;
            if (next) {
                fused[d] = 1;
                length *= dims->shape[d];
                found = 1;
            }
        }
    }
    /* The run's first element's offset along the chain, and its step along the run. */
    ptrdiff_t rest = run_start, offset = 0;
    for (int d = nd - 1; d >= 0; d--) {
        if (fused[d])
            offset += rest % dims->shape[d] * dims->strides[first][d];
        rest /= dims->shape[d];
    }
    const ptrdiff_t step = fused[nd - 1] ? dims->strides[first][nd - 1] : 0;
    const ptrdiff_t cut = length - length % tail;
    if (offset >= cut)
        return 0;
    if (step == 0)
        return n;
    const ptrdiff_t count = (cut - offset + step - 1) / step;
    return count < n ? count : n;
}
