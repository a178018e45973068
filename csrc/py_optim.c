/* The optimizer entry points: one generic step, driven by the optimizer table (gc_optim_specs.c),
 * and the gathering of parameters with a gradient. */
#include "py_glue.h"

#include <string.h>

#include "gc_optim.h"
#include "gc_scratch.h"

/* The operands of one optimizer call, over all parameter groups: for each parameter, up to
 * GC_OPTIM_MAXOPS arrays (parameter, gradient, state...) of one shape and dtype, and a pointer
 * to its group's options. Strong references are held to every operand. */
typedef struct {
    Py_ssize_t n;
    ptrdiff_t elements;
    PyObject **refs; /* n * GC_OPTIM_MAXOPS, NULL where absent or still to be created */
    gc_optim_item *items;
    ptrdiff_t *dims;
    void *heap;
} optim_batch;

/* What one group contributes: its lists (params first), its scalar lists and its options. */
typedef struct {
    PyObject *lists[GC_OPTIM_MAXOPS];
    PyObject *scalars[GC_OPTIM_MAXSCALARS];
    int nops;
    const gc_optim_options *options;
} optim_group;

static void optim_release(optim_batch *b)
{
    if (b->refs != NULL) {
        for (Py_ssize_t i = 0; i < b->n * GC_OPTIM_MAXOPS; i++)
            Py_XDECREF(b->refs[i]);
    }
    gc_scratch_free(b->heap);
    b->heap = NULL;
    b->refs = NULL;
}

static void byte_extent(PyArrayObject *a, char **lo, char **hi)
{
    char *low = PyArray_BYTES(a), *high = PyArray_BYTES(a);
    for (int d = 0; d < PyArray_NDIM(a); d++) {
        const npy_intp span = (PyArray_DIMS(a)[d] - 1) * PyArray_STRIDES(a)[d];
        if (span < 0)
            low += span;
        else
            high += span;
    }
    *lo = low;
    *hi = high + PyArray_ITEMSIZE(a);
}

/* Operands of one parameter must not overlap: the kernels read and write them through
 * restrict pointers, and torch would treat them as distinct tensors anyway. The operands have
 * one shape (checked before), so an empty parameter has nothing to overlap. */
static int check_disjoint(PyObject **ops, int nops, const char *const *names, Py_ssize_t group, Py_ssize_t index)
{
    if (glue_array_size((PyArrayObject *)ops[0]) == 0)
        return 0;
    char *lo[GC_OPTIM_MAXOPS], *hi[GC_OPTIM_MAXOPS];
    for (int a = 0; a < nops; a++) {
        if (ops[a] != NULL)
            byte_extent((PyArrayObject *)ops[a], &lo[a], &hi[a]);
    }
    for (int a = 0; a < nops; a++) {
        for (int b = a + 1; b < nops; b++) {
            if (ops[a] != NULL && ops[b] != NULL && lo[a] < hi[b] && lo[b] < hi[a]) {
                PyErr_Format(PyExc_ValueError, "groups[%zd]: %s[%zd] and %s[%zd] share (or interleave) memory",
                             group, names[a], index, names[b], index);
                return -1;
            }
        }
    }
    return 0;
}

static gc_dtype real_dtype(gc_dtype dtype)
{
    return dtype == GC_COMPLEX64 ? GC_FLOAT32 : dtype == GC_COMPLEX128 ? GC_FLOAT64 : dtype;
}

/* Describes parameter `item`'s operands to the kernels: operands all contiguous in one order
 * (a buffer still to be created will be laid out like the gradient) are one run each, 1-D; a
 * complex parameter is its real view, one more dim of two reals (as torch's view_as_real).
 * Returns where the next item's dims start. */
static ptrdiff_t *describe_item(gc_optim_item *it, PyObject **ops, int nops, ptrdiff_t *dims)
{
    PyArrayObject *param = (PyArrayObject *)ops[0];
    const int ndim = PyArray_NDIM(param);
    const int pairs = gc_is_complex(it->dtype);
    int all_c = ndim > 0, all_f = ndim > 0;
    for (int k = 0; k < nops; k++) {
        if (ops[k] != NULL) {
            all_c &= PyArray_IS_C_CONTIGUOUS((PyArrayObject *)ops[k]);
            all_f &= PyArray_IS_F_CONTIGUOUS((PyArrayObject *)ops[k]);
        }
    }
    const npy_intp size = glue_array_size(param);
    const int flat = all_c || all_f;
    const int nd = flat ? 1 : ndim + pairs;
    const ptrdiff_t itemsize = PyArray_ITEMSIZE(param), realsize = pairs ? itemsize / 2 : itemsize;
    it->dtype = real_dtype(it->dtype);
    it->ndim = nd;
    it->nops = nops;
    it->zero_dim = ndim == 0;
    it->pairs = pairs;
    it->shape = dims;
    if (flat) {
        dims[0] = pairs ? 2 * size : size;
    }
    else {
        for (int d = 0; d < ndim; d++)
            dims[d] = PyArray_DIMS(param)[d];
        if (pairs)
            dims[ndim] = 2;
    }
    dims += nd;
    for (int k = 0; k < nops; k++) {
        it->strides[k] = dims;
        if (ops[k] != NULL) {
            it->data[k] = PyArray_BYTES((PyArrayObject *)ops[k]);
            if (flat) {
                dims[0] = realsize;
            }
            else {
                for (int d = 0; d < ndim; d++)
                    dims[d] = PyArray_STRIDES((PyArrayObject *)ops[k])[d];
                if (pairs)
                    dims[ndim] = realsize;
            }
        }
        dims += nd;
    }
    return dims;
}

/* Attaches per-unit clip factors to a described item: a C-contiguous float64 array of shape
 * (2, units), whether each unit is scaled (nonzero) and by what (see gc_optim_item). More than
 * one unit needs the units consecutive in visiting order: every operand C-contiguous (and so
 * the item flat); the Python layer only passes factors for such parameters. */
static int set_unit_factors(gc_optim_item *it, PyObject **ops, int nops, PyObject *factors, Py_ssize_t item)
{
    PyArrayObject *f = (PyArrayObject *)factors;
    if (!PyArray_Check(factors) || PyArray_NDIM(f) != 2 || PyArray_DIM(f, 0) != 2 || PyArray_DIM(f, 1) < 1 ||
        PyArray_TYPE(f) != NPY_DOUBLE || !PyArray_IS_C_CONTIGUOUS(f) || !PyArray_ISALIGNED(f) ||
        PyArray_ISBYTESWAPPED(f)) {
        PyErr_Format(PyExc_TypeError,
                     "grad_scale[%zd] must be None or a C-contiguous float64 array of shape (2, units): "
                     "whether each unit is scaled, and its factor",
                     item);
        return -1;
    }
    const ptrdiff_t units = PyArray_DIM(f, 1);
    ptrdiff_t size = 1;
    for (int d = 0; d < it->ndim; d++)
        size *= it->shape[d];
    int consecutive = units == 1 || it->ndim == 1;
    for (int k = 0; k < nops && units > 1; k++) {
        if (ops[k] != NULL && !PyArray_IS_C_CONTIGUOUS((PyArrayObject *)ops[k]))
            consecutive = 0;
    }
    if (size % units != 0 || !consecutive) {
        PyErr_Format(PyExc_ValueError,
                     "grad_scale[%zd]: %zd unit factors need %zd-element units, one after the other in "
                     "C-contiguous operands",
                     item, (Py_ssize_t)units, (Py_ssize_t)(size / units));
        return -1;
    }
    if (size > 0) {
        it->unit_factors = PyArray_DATA(f);
        it->units = units;
    }
    return 0;
}

/* Validates every group's operands and fills b: nothing is modified. units: NULL, or a tuple
 * with one entry per parameter over all groups, None or its unit factors. */
static int optim_collect(optim_batch *b, const gc_optim_spec *spec, const optim_group *groups, Py_ssize_t ngroups,
                         PyObject *units)
{
    const char *const *names = spec->operands;
    b->n = 0;
    b->elements = 0;
    b->refs = NULL;
    b->heap = NULL;
    char what[64];
    Py_ssize_t n = 0, ndims = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        const optim_group *grp = &groups[g];
        PyOS_snprintf(what, sizeof what, "groups[%zd]: %s", g, names[0]);
        if (glue_check_sequence(grp->lists[0], what, -1, 0) < 0)
            return -1;
        const Py_ssize_t count = PySequence_Fast_GET_SIZE(grp->lists[0]);
        for (int k = 1; k < grp->nops; k++) {
            PyOS_snprintf(what, sizeof what, "groups[%zd]: %s", g, names[k]);
            if (glue_check_sequence(grp->lists[k], what, count, k == spec->creatable) < 0)
                return -1;
        }
        for (int k = 0; k < spec->nscalars; k++) {
            PyOS_snprintf(what, sizeof what, "groups[%zd]: %s", g, spec->scalars[k]);
            if (glue_check_sequence(grp->scalars[k], what, count, 0) < 0)
                return -1;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            glue_prefetch_items(grp->lists[0], i);
            PyObject *p = PySequence_Fast_GET_ITEM(grp->lists[0], i);
            if (!PyArray_Check(p)) {
                PyErr_Format(PyExc_TypeError, "groups[%zd]: %s[%zd] must be a NumPy ndarray, not %.200s", g, names[0],
                             i, Py_TYPE(p)->tp_name);
                return -1;
            }
            /* One more dim for a complex parameter's real view. */
            ndims += ((Py_ssize_t)PyArray_NDIM((PyArrayObject *)p) + 1) * (1 + grp->nops);
        }
        n += count;
    }
    if (units != NULL && PyTuple_GET_SIZE(units) != n) {
        PyErr_Format(PyExc_ValueError, "grad_scale has %zd unit-factor entries for %zd parameters",
                     PyTuple_GET_SIZE(units), n);
        return -1;
    }
    /* One allocation: items, references, then every operand's shape and strides. */
    const size_t bytes = (size_t)n * sizeof(gc_optim_item) + (size_t)n * GC_OPTIM_MAXOPS * sizeof(PyObject *) +
                         (size_t)ndims * sizeof(ptrdiff_t);
    char *heap = gc_scratch_calloc(bytes);
    if (heap == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->heap = heap;
    b->items = (gc_optim_item *)heap;
    b->refs = (PyObject **)(heap + (size_t)n * sizeof(gc_optim_item));
    b->dims = (ptrdiff_t *)(heap + (size_t)n * sizeof(gc_optim_item) + (size_t)n * GC_OPTIM_MAXOPS * sizeof(PyObject *));
    b->n = n;
    /* Hold every operand before validating: validation itself runs no Python code, but the
     * references keep the arrays alive while the GIL is released later. */
    Py_ssize_t item = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        const optim_group *grp = &groups[g];
        const Py_ssize_t count = PySequence_Fast_GET_SIZE(grp->lists[0]);
        for (Py_ssize_t i = 0; i < count; i++, item++) {
            for (int k = 0; k < grp->nops; k++) {
                glue_prefetch_items(grp->lists[k], i);
                PyObject *obj = PySequence_Fast_GET_ITEM(grp->lists[k], i);
                if (obj == Py_None && k == spec->creatable)
                    continue;
                b->refs[item * GC_OPTIM_MAXOPS + k] = Py_NewRef(obj);
            }
        }
    }

    ptrdiff_t *dims = b->dims;
    item = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        const optim_group *grp = &groups[g];
        const Py_ssize_t count = PySequence_Fast_GET_SIZE(grp->lists[0]);
        for (Py_ssize_t i = 0; i < count; i++, item++) {
            PyObject **ops = b->refs + item * GC_OPTIM_MAXOPS;
            PyArrayObject *param = (PyArrayObject *)ops[0];
            gc_optim_item *it = &b->items[item];
            it->options = grp->options;
            /* The gradient is written too when the clipped gradient is stored back. */
            const gc_grad_scaling *scaling = &grp->options->scaling;
            PyObject *factors = units != NULL ? PyTuple_GET_ITEM(units, item) : Py_None;
            const int scaled = scaling->has_scale || factors != Py_None;
            const unsigned written = spec->written | (scaled && scaling->write_back ? 2u : 0u);
            for (int k = 0; k < grp->nops; k++) {
                const arg_name who = {names[k], g, i, 0};
                if (ops[k] == NULL) {
                    it->fresh = 1;
                    continue;
                }
                if (!PyArray_Check(ops[k])) {
                    PyErr_Format(PyExc_TypeError, "%s must be a NumPy ndarray%s, not %.200s", NAME(&who),
                                 k == spec->creatable ? " or None" : "", Py_TYPE(ops[k])->tp_name);
                    goto fail;
                }
                PyArrayObject *a = (PyArrayObject *)ops[k];
                const int flags = (((written >> k) & 1) ? NEED_WRITE : 0) | (spec->complex_ok ? ALLOW_COMPLEX : 0);
                gc_dtype dtype;
                if (glue_check_array(a, flags, NULL, &who, &dtype) < 0)
                    goto fail;
                if (k == 0) {
                    it->dtype = dtype;
                    continue;
                }
                if (dtype != it->dtype) {
                    PyErr_Format(PyExc_TypeError, "%s has dtype %S but %s[%zd] has dtype %S", NAME(&who),
                                 (PyObject *)PyArray_DESCR(a), names[0], i, (PyObject *)PyArray_DESCR(param));
                    goto fail;
                }
                if (!glue_same_shape(a, param)) {
                    PyErr_Format(PyExc_ValueError, "%s has a different shape from %s[%zd]", NAME(&who), names[0], i);
                    goto fail;
                }
            }
            if (check_disjoint(ops, grp->nops, names, g, i) < 0)
                goto fail;
            dims = describe_item(it, ops, grp->nops, dims);
            if (factors != Py_None && set_unit_factors(it, ops, grp->nops, factors, item) < 0)
                goto fail;
            b->elements += glue_array_size(param);
        }
    }
    return 0;
fail:
    optim_release(b);
    return -1;
}

/* Checks every group's per-parameter scalars: writable, aligned 0-d float32 arrays. */
static int check_scalars(const gc_optim_spec *spec, const optim_group *groups, Py_ssize_t ngroups)
{
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        for (int k = 0; k < spec->nscalars; k++) {
            PyObject *list = groups[g].scalars[k];
            for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(list); i++) {
                PyObject *obj = PySequence_Fast_GET_ITEM(list, i);
                PyArrayObject *a = (PyArrayObject *)obj;
                if (!PyArray_Check(obj) || PyArray_NDIM(a) != 0 || PyArray_TYPE(a) != NPY_FLOAT ||
                    PyArray_ISBYTESWAPPED(a) || !PyArray_ISWRITEABLE(a) || !PyArray_ISALIGNED(a)) {
                    PyErr_Format(PyExc_TypeError, "groups[%zd]: %s[%zd] must be a writeable 0-d float32 ndarray", g,
                                 spec->scalars[k], i);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* Creates the missing buffers (operand k, laid out like the gradient) and stores them in
 * each group's list. All are allocated before any is stored, so a failure leaves every list
 * unchanged. Returns how many were created, or -1. */
static Py_ssize_t optim_create_buffers(optim_batch *b, const optim_group *groups, Py_ssize_t ngroups, int k)
{
    Py_ssize_t created = 0;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        PyObject **slot = &b->refs[i * GC_OPTIM_MAXOPS + k];
        gc_optim_item *it = &b->items[i];
        if (!it->fresh || *slot != NULL)
            continue;
        PyObject *buffer =
            PyArray_NewLikeArray((PyArrayObject *)b->refs[i * GC_OPTIM_MAXOPS + 1], NPY_KEEPORDER, NULL, 0);
        if (buffer == NULL)
            return -1; /* optim_release frees the ones made so far */
        *slot = buffer;
        created++;
        it->data[k] = PyArray_BYTES((PyArrayObject *)buffer);
        /* Described like the other operands: flattened to one run of reals, or its own strides
         * (and a last dim of two reals for a complex parameter). */
        PyArrayObject *buf = (PyArrayObject *)buffer;
        const int pairs = PyArray_ISCOMPLEX(buf);
        const ptrdiff_t real = PyArray_ITEMSIZE(buf) / (pairs ? 2 : 1);
        ptrdiff_t *strides = (ptrdiff_t *)it->strides[k];
        if (it->ndim == PyArray_NDIM(buf) + pairs) {
            for (int d = 0; d < PyArray_NDIM(buf); d++)
                strides[d] = PyArray_STRIDES(buf)[d];
            if (pairs)
                strides[it->ndim - 1] = real;
        }
        else {
            strides[0] = real;
        }
    }
    Py_ssize_t item = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        const Py_ssize_t count = PySequence_Fast_GET_SIZE(groups[g].lists[0]);
        for (Py_ssize_t i = 0; i < count; i++, item++) {
            /* The bound is re-checked: allocating may have run a finaliser that shrank it. */
            if (b->items[item].fresh && i < PyList_GET_SIZE(groups[g].lists[k])) {
                PyObject *buffer = b->refs[item * GC_OPTIM_MAXOPS + k];
                PyList_SetItem(groups[g].lists[k], i, Py_NewRef(buffer)); /* steals; index checked */
            }
        }
    }
    return created;
}

/* grad_scale: None, one real for every group, (per-group thresholds) a tuple with one real or
 * None per group, read by parse_group_scale, or (AGC) a list with one entry per parameter over
 * all groups, None or its unit factors (set_unit_factors). */
static int parse_scaling(PyObject *scale, PyObject *write_back, gc_grad_scaling *out)
{
    if (PyTuple_Check(scale) || PyList_Check(scale))
        scale = Py_None;
    out->has_scale = scale != Py_None;
    out->scale = 1.0;
    if (out->has_scale && glue_parse_real(scale, "grad_scale", &out->scale) < 0)
        return -1;
    return glue_parse_bool(write_back, &out->write_back);
}

/* "(params, grads, ..., lr, ...)": the group tuple a spec expects, for messages. */
static void group_layout(const gc_optim_spec *spec, char *buf, size_t size)
{
    size_t used = 0;
    const int total = spec->max_ops + spec->nscalars + spec->nh;
    for (int k = 0; k < total && used < size; k++) {
        const char *name = k < spec->max_ops ? spec->operands[k]
                           : k < spec->max_ops + spec->nscalars ? spec->scalars[k - spec->max_ops]
                                                                : spec->hparams[k - spec->max_ops - spec->nscalars];
        if (name[0] == '?')
            name++;
        used += (size_t)PyOS_snprintf(buf + used, size - used, "%s%s%s", k == 0 ? "(" : ", ", name,
                                      k == total - 1 ? ")" : "");
    }
}

/* 32 or 64 for a 0-d float32 or float64 ndarray, else 0. */
static int zero_d_float_bits(PyObject *value)
{
    if (!PyArray_Check(value) || PyArray_NDIM((PyArrayObject *)value) != 0)
        return 0;
    const int type = PyArray_TYPE((PyArrayObject *)value);
    return type == NPY_FLOAT32 ? 32 : type == NPY_FLOAT64 ? 64 : 0;
}

/* Unpacks group g: its lists (borrowed) and hyper-parameters (converted into *options, which may
 * run Python code: __float__, __bool__). */
static int parse_group(const gc_optim_spec *spec, PyObject *groups, Py_ssize_t g, optim_group *out,
                       gc_optim_options *options)
{
    PyObject *group = PyTuple_GET_ITEM(groups, g);
    const Py_ssize_t size = spec->max_ops + spec->nscalars + spec->nh;
    if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != size) {
        char layout[512];
        group_layout(spec, layout, sizeof layout);
        PyErr_Format(PyExc_TypeError, "groups[%zd] must be a tuple %s", g, layout);
        return -1;
    }
    PyObject *const *a = &PyTuple_GET_ITEM(group, 0);
    options->h[GC_OPTIM_LR_SINGLE] = options->h[GC_OPTIM_LR_TENSOR] = 0.0;
    options->h[GC_OPTIM_BETA1_KIND] = options->h[GC_OPTIM_BETA2_KIND] = 0.0;
    for (int k = 0; k < spec->nh; k++) {
        PyObject *value = a[spec->max_ops + spec->nscalars + k];
        const char *name = spec->hparams[k];
        /* A float32 lr computes in float32, as torch's Python computes with one; Tensor lr and
         * betas are 0-d ndarrays (gc_optim.h). */
        const int bits = zero_d_float_bits(value);
        if (strcmp(name, "lr") == 0) {
            options->h[GC_OPTIM_LR_SINGLE] = PyArray_IsScalar(value, Float) || bits == 32;
            options->h[GC_OPTIM_LR_TENSOR] = bits;
        }
        else if (strcmp(name, "beta1") == 0) {
            options->h[GC_OPTIM_BETA1_KIND] = bits;
        }
        else if (strcmp(name, "beta2") == 0) {
            options->h[GC_OPTIM_BETA2_KIND] = bits;
        }
        if (name[0] == '?') {
            int flag;
            if (glue_parse_bool(value, &flag) < 0)
                return -1;
            options->h[k] = flag;
        }
        else if (glue_parse_real(value, name, &options->h[k]) < 0) {
            return -1;
        }
    }
    out->nops = spec->nops(options->h);
    for (int k = 0; k < spec->max_ops; k++)
        out->lists[k] = a[k];
    for (int k = 0; k < spec->nscalars; k++)
        out->scalars[k] = a[spec->max_ops + k];
    out->options = options;
    return 0;
}

/* <name>_step(groups, grad_scale, write_back) -> int
 * One step of optimizer `which` for every group, or an exception having changed nothing.
 * Returns how many buffers were created (None entries of the creatable operand's lists replaced
 * by new arrays, initialised by the kernel). */
static PyObject *optim_step(int which, PyObject *const *args, Py_ssize_t nargs)
{
    const gc_optim_spec *spec = &gc_optim_specs[which];
    optim_group *groups = NULL;
    gc_optim_options *options = NULL;
    optim_batch b = {0};
    gc_grad_scaling scaling;
    PyObject *result = NULL, *owned = NULL, *units = NULL;
    char fname[64];
    PyOS_snprintf(fname, sizeof fname, "%s_step", spec->name);
    if (glue_check_nargs(fname, nargs, 3) < 0 || glue_check_sequence(args[0], "groups", -1, 0) < 0)
        return NULL;
    /* Own the groups: converting a hyper-parameter (__float__, __bool__) runs Python code that
     * could empty the caller's list. The group tuples are immutable and own their lists; the
     * lists themselves are read only after every conversion is done. */
    owned = PySequence_Tuple(args[0]);
    if (owned == NULL)
        return NULL;
    if (parse_scaling(args[1], args[2], &scaling) < 0)
        goto done;
    const Py_ssize_t ngroups = PyTuple_GET_SIZE(owned);
    groups = PyMem_Calloc(ngroups > 0 ? (size_t)ngroups : 1, sizeof *groups);
    options = PyMem_Calloc(ngroups > 0 ? (size_t)ngroups : 1, sizeof *options);
    if (groups == NULL || options == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (PyTuple_Check(args[1]) && PyTuple_GET_SIZE(args[1]) != ngroups) {
        PyErr_Format(PyExc_ValueError, "grad_scale has %zd entries for %zd groups", PyTuple_GET_SIZE(args[1]),
                     ngroups);
        goto done;
    }
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        options[g].scaling = scaling;
        if (PyTuple_Check(args[1]) &&
            parse_scaling(PyTuple_GET_ITEM(args[1], g), args[2], &options[g].scaling) < 0)
            goto done;
        if (parse_group(spec, owned, g, &groups[g], &options[g]) < 0)
            goto done;
    }
    /* From here on no Python code runs until the arrays are validated and held. */
    /* Unit factors: the list copied (no Python code runs in that). */
    if (PyList_Check(args[1]) && (units = PySequence_Tuple(args[1])) == NULL)
        goto done;
    if (optim_collect(&b, spec, groups, ngroups, units) < 0 || check_scalars(spec, groups, ngroups) < 0)
        goto done;
    const Py_ssize_t created = spec->creatable >= 0 ? optim_create_buffers(&b, groups, ngroups, spec->creatable) : 0;
    if (created < 0)
        goto done;
    /* Everything is valid and allocated: from here on nothing fails. */
    Py_ssize_t item = 0;
    for (Py_ssize_t g = 0; g < ngroups && spec->prepare != NULL; g++) {
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(groups[g].lists[0]); i++, item++) {
            float *scalars[GC_OPTIM_MAXSCALARS];
            for (int k = 0; k < spec->nscalars; k++)
                scalars[k] = PyArray_DATA((PyArrayObject *)PySequence_Fast_GET_ITEM(groups[g].scalars[k], i));
            spec->prepare(&b.items[item], scalars, options[g].h);
        }
    }
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_optim_run(which, b.items, (size_t)b.n);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_optim_run(which, b.items, (size_t)b.n);
    }
    result = PyLong_FromSsize_t(created);
done:
    optim_release(&b);
    PyMem_Free(groups);
    PyMem_Free(options);
    Py_XDECREF(owned);
    Py_XDECREF(units);
    return result;
}

/* One entry point per optimizer: _C.sgd_step, _C.adam_step, ... */
#define GC_OPTIM_ENTRY(name)                                                                                    \
    PyObject *py_##name##_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)                       \
    {                                                                                                           \
        (void)module;                                                                                           \
        return optim_step(GC_OPTIM_##name, args, nargs);                                                        \
    }
GC_OPTIMIZERS(GC_OPTIM_ENTRY)
#undef GC_OPTIM_ENTRY

/* with_grads(params, parameter_type, given) -> (keys, values, grads)
 * An optimizer step's gathering, one pass in C instead of a Python loop per parameter: the items
 * of `params` (a list or tuple) that have a gradient, with their values and gradients. With
 * `given` None, items must be instances of parameter_type and their .grad is read; otherwise
 * `given` holds one gradient (or None) per item, and items may also be plain ndarrays, their
 * own values. A parameter_type item's value is its .data. Nothing else is validated here (the
 * step does that). */
PyObject *py_with_grads(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    module_state *st = glue_state(module);
    if (glue_check_nargs("with_grads", nargs, 3) < 0)
        return NULL;
    PyObject *params = args[0], *given = args[2];
    if (!PyType_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "parameter_type must be a type");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)args[1];
    if ((!PyList_Check(params) && !PyTuple_Check(params)) ||
        (given != Py_None && !PyList_Check(given) && !PyTuple_Check(given))) {
        PyErr_SetString(PyExc_TypeError, "params and given must be lists or tuples");
        return NULL;
    }
    PyObject *keys = PyList_New(0), *values = PyList_New(0), *grads = PyList_New(0);
    if (keys == NULL || values == NULL || grads == NULL)
        goto fail;
    /* Re-read by index, and the lengths re-checked: an attribute lookup may run code that
     * changes a list. */
    for (Py_ssize_t i = 0;; i++) {
        if (given != Py_None && PySequence_Fast_GET_SIZE(given) != PySequence_Fast_GET_SIZE(params)) {
            PyErr_SetString(PyExc_ValueError, "given must hold one gradient (or None) per parameter");
            goto fail;
        }
        if (i >= PySequence_Fast_GET_SIZE(params))
            break;
        if (i + 8 < PySequence_Fast_GET_SIZE(params))
            GC_PREFETCH(PySequence_Fast_GET_ITEM(params, i + 8));
        PyObject *p = Py_NewRef(PySequence_Fast_GET_ITEM(params, i));
        const int is_param = PyObject_TypeCheck(p, type);
        PyObject *grad = NULL, *data = NULL;
        if (given == Py_None) {
            if (is_param)
                grad = PyObject_GetAttr(p, st->str_grad);
            else
                PyErr_Format(PyExc_TypeError, "params[%zd] is a %.200s, not a %.200s", i, Py_TYPE(p)->tp_name,
                             type->tp_name);
        }
        else {
            grad = Py_NewRef(PySequence_Fast_GET_ITEM(given, i));
        }
        if (grad != NULL && grad != Py_None) {
            if (is_param)
                data = PyObject_GetAttr(p, st->str_data);
            else if (PyArray_Check(p))
                data = Py_NewRef(p);
            else
                PyErr_Format(PyExc_TypeError, "params[%zd] is a %.200s, not a %.200s or an ndarray", i,
                             Py_TYPE(p)->tp_name, type->tp_name);
        }
        const int ok = grad != NULL && (grad == Py_None ||
                                        (data != NULL && PyList_Append(keys, p) == 0 &&
                                         PyList_Append(values, data) == 0 && PyList_Append(grads, grad) == 0));
        Py_DECREF(p);
        Py_XDECREF(grad);
        Py_XDECREF(data);
        if (!ok)
            goto fail;
    }
    PyObject *result = PyTuple_Pack(3, keys, values, grads);
    Py_DECREF(keys);
    Py_DECREF(values);
    Py_DECREF(grads);
    return result;
fail:
    Py_XDECREF(keys);
    Py_XDECREF(values);
    Py_XDECREF(grads);
    return NULL;
}
