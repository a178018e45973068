/* Beyond torch: rich results and non-finite policies (clip_info), per-group thresholds, and
 * the unit-wise methods: adaptive clipping (AGC) and per-example clipping (DP-SGD). */
#include "py_glue.h"

#include <math.h>

#include "gc_unitwise.h"

enum { MODE_PROPAGATE, MODE_RAISE, MODE_SKIP, MODE_ZERO };
enum { WRITE_NOTHING, WRITE_CLIP, WRITE_ZERO_ONLY };

static int parse_small_int(PyObject *obj, const char *name, long lo, long hi, long *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", name);
        return -1;
    }
    *out = PyLong_AsLong(obj);
    if (*out == -1 && PyErr_Occurred())
        return -1;
    if (*out < lo || *out > hi) {
        PyErr_Format(PyExc_ValueError, "%s must be in [%ld, %ld]", name, lo, hi);
        return -1;
    }
    return 0;
}

static void run_norms(const gc_array *arrays, size_t n, ptrdiff_t elements, const gc_norm *norm, double *norms)
{
    if (elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_array_norms(arrays, n, norm, norms, 1);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_array_norms(arrays, n, norm, norms, 1);
    }
}

static void run_scale_each(const gc_array *arrays, size_t n, ptrdiff_t elements, const double *coefs)
{
    if (elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_scale_each(arrays, n, coefs);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_scale_each(arrays, n, coefs);
    }
}

/* Stores values into a new 1-D float32 (single) or float64 array of n elements. */
static void fill_norms(PyArrayObject *out, const double *values, Py_ssize_t n, int single)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (single)
            ((float *)PyArray_DATA(out))[i] = (float)values[i];
        else
            ((double *)PyArray_DATA(out))[i] = values[i];
    }
}

/* A 1-D ndarray of the values, float32 (single) or float64. */
static PyObject *norms_array(const double *values, Py_ssize_t n, int single)
{
    npy_intp len = n;
    PyObject *out = PyArray_SimpleNew(1, &len, single ? NPY_FLOAT : NPY_DOUBLE);
    if (out != NULL)
        fill_norms((PyArrayObject *)out, values, n, single);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* clip_info                                                                                 */

/* clip_info(parameters, source_grads, norm_type, max_norms, group_sizes, mode, write)
 *   -> (norms, totals, coefs, nonfinite_counts, skipped)
 * The per-array norms (float32 or float64 ndarray, as the total), and per group (consecutive
 * runs of group_sizes arrays; None: one group) its total, its clipping coefficient (1.0 without
 * max_norms, a tuple of one max_norm per group) and how many of its arrays have a non-finite
 * norm. mode: 0 propagate, 1 raise (torch's RuntimeError), 2 skip (any non-finite total: change
 * nothing, coefficients 1.0), 3 zero (arrays with a non-finite norm are left out of their
 * group's total and, when writing, zeroed). write: 0 nothing, 1 zero (mode 3) and scale each
 * group by its coefficient, 2 zero only (the caller applies the coefficients). One reduction
 * over the arrays; everything is decided before the first write. */
PyObject *py_clip_info(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int source_grads;
    long mode, write;
    batch b;
    int collected = 0;
    double *max_norms = NULL, *scratch = NULL, *coefs = NULL, *totals = NULL;
    Py_ssize_t *sizes = NULL;
    gc_array *subset = NULL;
    PyObject *norms = NULL, *totals_t = NULL, *coefs_t = NULL, *counts_t = NULL, *result = NULL;
    if (glue_check_nargs("clip_info", nargs, 7) < 0 || glue_parse_bool(args[1], &source_grads) < 0 ||
        glue_parse_norm_type(args[2], &norm) < 0 || parse_small_int(args[5], "mode", 0, 3, &mode) < 0 ||
        parse_small_int(args[6], "write", 0, 2, &write) < 0)
        return NULL;
    PyObject *max_obj = args[3], *sizes_obj = args[4];
    Py_ssize_t ngroups = 1;
    if (sizes_obj != Py_None) {
        if (!PyTuple_Check(sizes_obj)) {
            PyErr_SetString(PyExc_TypeError, "group_sizes must be None or a tuple of ints");
            return NULL;
        }
        ngroups = PyTuple_GET_SIZE(sizes_obj);
    }
    if (max_obj != Py_None && (!PyTuple_Check(max_obj) || PyTuple_GET_SIZE(max_obj) != ngroups)) {
        PyErr_Format(PyExc_TypeError, "max_norms must be None or a tuple of %zd max_norm(s)", ngroups);
        return NULL;
    }
    const size_t ng = ngroups > 0 ? (size_t)ngroups : 1;
    max_norms = PyMem_Calloc(ng, sizeof *max_norms);
    coefs = PyMem_Calloc(ng, sizeof *coefs);
    totals = PyMem_Calloc(ng, sizeof *totals);
    sizes = PyMem_Calloc(ng, sizeof *sizes);
    if (max_norms == NULL || coefs == NULL || totals == NULL || sizes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* Conversions (which may run Python code) before any array is collected. */
    Py_ssize_t listed = 0;
    for (Py_ssize_t g = 0; g < ngroups && sizes_obj != Py_None; g++) {
        sizes[g] = PyLong_AsSsize_t(PyTuple_GET_ITEM(sizes_obj, g));
        if (sizes[g] == -1 && PyErr_Occurred())
            goto done;
        if (sizes[g] < 0) {
            PyErr_SetString(PyExc_ValueError, "group sizes must not be negative");
            goto done;
        }
        listed += sizes[g];
    }
    for (Py_ssize_t g = 0; g < ngroups && max_obj != Py_None; g++) {
        if (glue_parse_nonnegative(PyTuple_GET_ITEM(max_obj, g), "max_norm", &max_norms[g]) < 0)
            goto done;
    }
    /* The result's tuples before the arrays are collected: allocating a tuple can start a
     * garbage collection, whose finalizers could rebind a torch tensor held in the batch. */
    totals_t = PyTuple_New(ngroups);
    coefs_t = PyTuple_New(ngroups);
    counts_t = PyTuple_New(ngroups);
    if (totals_t == NULL || coefs_t == NULL || counts_t == NULL)
        goto done;
    const int flags = TENSOR_VIEWS | ALLOW_COMPLEX | (write != WRITE_NOTHING ? NEED_WRITE : 0);
    if (glue_collect(glue_state(module), &b, args[0], source_grads ? SOURCE_GRADS : SOURCE_TENSORS, flags, &norm,
                     source_grads ? "parameters" : "tensors") < 0)
        goto done;
    collected = 1;
    if (sizes_obj == Py_None)
        sizes[0] = b.n;
    else if (listed != b.n) {
        PyErr_Format(PyExc_ValueError, "group_sizes add up to %zd arrays, but there are %zd", listed, b.n);
        goto done;
    }
    const size_t n = (size_t)b.n;
    const int single = b.single_precision;
    npy_intp len = b.n;
    scratch = PyMem_Malloc((n > 0 ? n : 1) * (sizeof *scratch + sizeof *subset));
    norms = PyArray_SimpleNew(1, &len, single ? NPY_FLOAT : NPY_DOUBLE); /* not tracked by the GC */
    if (scratch == NULL || norms == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    subset = (gc_array *)(scratch + (n > 0 ? n : 1));
    run_norms(b.arrays, n, GLUE_GIL_ELEMENTS(&b), &norm, b.norms);

    int nonfinite_total = 0;
    for (Py_ssize_t g = 0, first = 0; g < ngroups; first += sizes[g], g++) {
        Py_ssize_t kept = 0, bad = 0;
        for (Py_ssize_t i = first; i < first + sizes[g]; i++) {
            if (isfinite(b.norms[i]) || mode != MODE_ZERO)
                scratch[kept++] = b.norms[i];
            bad += !isfinite(b.norms[i]);
        }
        double total = kept > 0 ? gc_norms_total(scratch, (size_t)kept, &norm) : 0.0;
        if (single)
            total = (double)(float)total;
        totals[g] = total;
        nonfinite_total |= !isfinite(total);
        PyObject *count = PyLong_FromSsize_t(bad);
        if (count == NULL)
            goto done;
        PyTuple_SET_ITEM(counts_t, g, count);
        if (mode == MODE_RAISE && glue_check_finite(total, &norm, 1) < 0)
            goto done;
    }
    const int skipped = mode == MODE_SKIP && nonfinite_total;
    for (Py_ssize_t g = 0; g < ngroups; g++)
        coefs[g] = (max_obj != Py_None && !skipped) ? gc_clip_coef(totals[g], max_norms[g], single) : 1.0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        PyObject *t = glue_float_scalar(totals[g], single), *c = PyFloat_FromDouble(coefs[g]);
        if (t == NULL || c == NULL) {
            Py_XDECREF(t);
            Py_XDECREF(c);
            goto done;
        }
        PyTuple_SET_ITEM(totals_t, g, t);
        PyTuple_SET_ITEM(coefs_t, g, c);
    }
    fill_norms((PyArrayObject *)norms, b.norms, b.n, single);
    /* Nothing fails from here on: the writes. */
    if (write != WRITE_NOTHING && !skipped) {
        size_t m = 0;
        for (size_t i = 0; i < n && mode == MODE_ZERO; i++) {
            if (!isfinite(b.norms[i]))
                subset[m++] = b.arrays[i];
        }
        if (m > 0)
            gc_zero(subset, m);
        if (write == WRITE_CLIP && max_obj != Py_None) {
            if (ngroups == 1 && m == 0) {
                /* clip_grad_norm_'s own path, bit for bit */
                if (GLUE_RELEASES_GIL(&b)) {
                    Py_BEGIN_ALLOW_THREADS
                    gc_scale(b.arrays, n, coefs[0]);
                    Py_END_ALLOW_THREADS
                }
                else {
                    gc_scale(b.arrays, n, coefs[0]);
                }
            }
            else {
                m = 0;
                for (Py_ssize_t g = 0, first = 0; g < ngroups; first += sizes[g], g++) {
                    for (Py_ssize_t i = first; i < first + sizes[g]; i++) {
                        if (mode == MODE_ZERO && !isfinite(b.norms[i]))
                            continue;
                        subset[m] = b.arrays[i];
                        scratch[m++] = coefs[g];
                    }
                }
                run_scale_each(subset, m, GLUE_GIL_ELEMENTS(&b), scratch);
            }
        }
    }
    result = Py_BuildValue("(OOOOO)", norms, totals_t, coefs_t, counts_t, skipped ? Py_True : Py_False);
done:
    if (collected)
        glue_batch_release(&b);
    Py_XDECREF(norms);
    Py_XDECREF(totals_t);
    Py_XDECREF(coefs_t);
    Py_XDECREF(counts_t);
    PyMem_Free(max_norms);
    PyMem_Free(coefs);
    PyMem_Free(totals);
    PyMem_Free(sizes);
    PyMem_Free(scratch);
    return result;
}

/* scale_by(parameters, coef) -> None: every gradient times coef (rounded to its precision). */
PyObject *py_scale_by(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double coef;
    batch b;
    if (glue_check_nargs("scale_by", nargs, 2) < 0 || glue_parse_real(args[1], "coef", &coef) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_GRADS, TENSOR_VIEWS | NEED_WRITE | ALLOW_COMPLEX, NULL,
                     "parameters") < 0)
        return NULL;
    if (GLUE_RELEASES_GIL(&b)) {
        Py_BEGIN_ALLOW_THREADS
        gc_scale(b.arrays, (size_t)b.n, coef);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_scale(b.arrays, (size_t)b.n, coef);
    }
    glue_batch_release(&b);
    Py_RETURN_NONE;
}

/* clip_coef(total_norm, max_norm, single) -> float: torch's coefficient (gc_clip_coef). */
PyObject *py_clip_coef(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    double total, max_norm;
    int single;
    if (glue_check_nargs("clip_coef", nargs, 3) < 0 || glue_parse_real(args[0], "total_norm", &total) < 0 ||
        glue_parse_nonnegative(args[1], "max_norm", &max_norm) < 0 || glue_parse_bool(args[2], &single) < 0)
        return NULL;
    return PyFloat_FromDouble(gc_clip_coef(single ? (double)(float)total : total, max_norm, single));
}

/* ---------------------------------------------------------------------------------------- */
/* Units                                                                                     */

/* Whether every array of b still is what it was when validated: the unit-wise entry points
 * read the arrays' real dims after running Python code (a second collection's conversions, an
 * allocation's finalisers), which could have re-viewed an array in place (a.shape = ...,
 * a.dtype = ...). Raises if one changed. */
static int check_unchanged(const batch *b)
{
    for (Py_ssize_t k = 0; k < b->n; k++) {
        PyArrayObject *a = (PyArrayObject *)b->refs[k];
        const gc_array *d = &b->arrays[k];
        ptrdiff_t size = 1, described = 1;
        for (int i = 0; i < d->ndim; i++)
            described *= d->shape[i];
        int same = PyArray_BYTES(a) == d->data && (ptrdiff_t)PyArray_ITEMSIZE(a) == (ptrdiff_t)gc_item_size(d->dtype) &&
                   !PyArray_ISBYTESWAPPED(a) && PyArray_ISALIGNED(a);
        for (int i = 0; i < PyArray_NDIM(a); i++)
            size *= PyArray_DIM(a, i);
        same &= size == described;
        if (same && d->ndim == PyArray_NDIM(a)) {
            for (int i = 0; i < d->ndim; i++)
                same &= d->shape[i] == PyArray_DIM(a, i) && (d->shape[i] <= 1 || d->strides[i] == PyArray_STRIDE(a, i));
        }
        else if (same) {
            /* described as one contiguous run */
            same &= d->ndim == 1 && (PyArray_IS_C_CONTIGUOUS(a) || PyArray_IS_F_CONTIGUOUS(a));
        }
        if (!same) {
            PyErr_Format(PyExc_RuntimeError, "array %zd of the arguments changed while they were being read", k);
            return -1;
        }
    }
    return 0;
}

/* The units of every array of b (see gc_unitwise.h), from the arrays' real shapes (the batch
 * describes a contiguous array as 1-D): heads[k] is array k's first unit, row_strides[k] the
 * byte distance between its units, counts[k] how many it has. A unit that is itself
 * C-contiguous is described as 1-D. `dims` needs 2 * max(ndim, 1) entries per array. */
static void describe_rows(const batch *b, int split, gc_array *heads, ptrdiff_t *row_strides, size_t *counts,
                          ptrdiff_t *dims)
{
    for (Py_ssize_t k = 0; k < b->n; k++) {
        PyArrayObject *a = (PyArrayObject *)b->refs[k];
        const int nd = PyArray_NDIM(a);
        const int rows = nd > 1 || (split && nd == 1);
        const int sub = rows ? nd - 1 : nd;
        const npy_intp *shape = PyArray_DIMS(a) + (rows ? 1 : 0), *strides = PyArray_STRIDES(a) + (rows ? 1 : 0);
        const ptrdiff_t itemsize = PyArray_ITEMSIZE(a);
        ptrdiff_t expected = itemsize, size = 1;
        int contiguous = 1;
        for (int d = sub - 1; d >= 0; d--) {
            contiguous &= shape[d] == 1 || strides[d] == expected;
            expected *= shape[d];
            size *= shape[d];
        }
        gc_array *h = &heads[k];
        *h = b->arrays[k];
        h->data = PyArray_BYTES(a);
        h->zero_dim = !rows && nd == 0;
        if (contiguous && sub > 0) {
            h->ndim = 1;
            dims[0] = size;
            dims[1] = itemsize;
        }
        else {
            h->ndim = sub;
            for (int d = 0; d < sub; d++) {
                dims[d] = shape[d];
                dims[sub + d] = strides[d];
            }
        }
        h->shape = dims;
        h->strides = dims + h->ndim;
        dims += 2 * (nd > 1 ? nd : 1);
        counts[k] = rows ? (size_t)PyArray_DIM(a, 0) : 1;
        row_strides[k] = rows ? PyArray_STRIDE(a, 0) : 0;
    }
}

static ptrdiff_t unit_size(const gc_array *u)
{
    ptrdiff_t size = 1;
    for (int d = 0; d < u->ndim; d++)
        size *= u->shape[d];
    return size;
}

static size_t dims_needed(const batch *b)
{
    size_t total = 0;
    for (Py_ssize_t k = 0; k < b->n; k++) {
        const int nd = PyArray_NDIM((PyArrayObject *)b->refs[k]);
        total += 2 * (size_t)(nd > 1 ? nd : 1);
    }
    return total;
}

/* Scratch for unit-wise work: one block, carved into the pieces. */
typedef struct {
    void *block;
    gc_array *heads, *units;
    ptrdiff_t *row_strides, *dims;
    size_t *counts;
    double *norms, *values;
} unit_scratch;

static int unit_scratch_alloc(unit_scratch *s, size_t narrays, size_t nunits, size_t ndims, size_t nvalues)
{
    narrays++;
    nunits++;
    ndims++;
    nvalues++;
    const size_t bytes = narrays * (sizeof(gc_array) + sizeof(ptrdiff_t) + sizeof(size_t)) + nunits * sizeof(gc_array) +
                         ndims * sizeof(ptrdiff_t) + (nunits + nvalues) * sizeof(double);
    s->block = PyMem_Malloc(bytes);
    if (s->block == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    char *p = s->block;
    s->heads = (gc_array *)p, p += narrays * sizeof(gc_array);
    s->units = (gc_array *)p, p += nunits * sizeof(gc_array);
    s->norms = (double *)p, p += nunits * sizeof(double);
    s->values = (double *)p, p += nvalues * sizeof(double);
    s->row_strides = (ptrdiff_t *)p, p += narrays * sizeof(ptrdiff_t);
    s->dims = (ptrdiff_t *)p, p += ndims * sizeof(ptrdiff_t);
    s->counts = (size_t *)p;
    return 0;
}

/* Any empty unit under a norm without identity: torch's error (as for whole arrays). */
static int check_units(const gc_array *units, size_t n, const gc_norm *norm)
{
    for (size_t i = 0; i < n && gc_norm_needs_identity(norm); i++) {
        if (unit_size(&units[i]) == 0) {
            PyObject *p = PyFloat_FromDouble(norm->p);
            if (p != NULL)
                PyErr_Format(PyExc_RuntimeError,
                             "linalg.vector_norm cannot compute the %R norm on an empty tensor because the "
                             "operation does not have an identity",
                             p);
            Py_XDECREF(p);
            return -1;
        }
    }
    return 0;
}

/* The factors of array k's units, for the fused step (py_optim.c's set_unit_factors): a new
 * float64 array of shape (2, count), whether unit j is scaled and by what, or None if none is.
 * `units` are the gradient units of every array, `norms` their values' norms then theirs. */
static PyObject *unit_factors(const gc_array *units, const double *norms, size_t nunits, size_t first, size_t count,
                              double clip_factor, double eps)
{
    PyArrayObject *out = NULL;
    for (size_t j = 0; j < count; j++) {
        const size_t i = first + j;
        double factor;
        if (!gc_agc_factor(units[nunits + i].dtype, norms[i], norms[nunits + i], clip_factor, eps, &factor))
            continue;
        if (out == NULL) {
            npy_intp dims[2] = {2, (npy_intp)count};
            out = (PyArrayObject *)PyArray_ZEROS(2, dims, NPY_DOUBLE, 0);
            if (out == NULL)
                return NULL;
        }
        double *f = PyArray_DATA(out);
        f[j] = 1.0;
        f[count + j] = factor;
    }
    return out != NULL ? (PyObject *)out : Py_NewRef(Py_None);
}

/* adaptive_clip(values, grads, clip_factor, eps, norm_type, factors) -> None or a list
 * AGC on each pair (values[k], grads[k]) of equal shape and dtype (real), in place on grads:
 * one norm pass over every unit of every value and gradient, then one scaling pass over the
 * gradient units that exceed their bound (see gc_agc_factor). With factors true, nothing is
 * scaled: returns, per array, its units' factors (unit_factors) for the fused step. */
PyObject *py_adaptive_clip(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    double clip_factor, eps;
    batch pb, gb;
    int have_p = 0, have_g = 0;
    unit_scratch s = {0};
    PyObject *result = NULL;
    int want_factors;
    if (glue_check_nargs("adaptive_clip", nargs, 6) < 0 || glue_parse_real(args[2], "clip_factor", &clip_factor) < 0 ||
        glue_parse_real(args[3], "eps", &eps) < 0 || glue_parse_norm_type(args[4], &norm) < 0 ||
        glue_parse_bool(args[5], &want_factors) < 0)
        return NULL;
    module_state *st = glue_state(module);
    if (glue_collect(st, &pb, args[0], SOURCE_TENSORS, 0, NULL, "parameters") < 0)
        return NULL;
    have_p = 1;
    if (glue_collect(st, &gb, args[1], SOURCE_TENSORS, want_factors ? 0 : NEED_WRITE, NULL, "grads") < 0)
        goto done;
    have_g = 1;
    /* Collecting the gradients may have run conversions (Python code): the values are read
     * by their real dims below, so check they are still what was validated. */
    if (check_unchanged(&pb) < 0)
        goto done;
    if (pb.n != gb.n) {
        PyErr_Format(PyExc_ValueError, "got %zd parameters but %zd gradients", pb.n, gb.n);
        goto done;
    }
    size_t nunits = 0;
    for (Py_ssize_t k = 0; k < pb.n; k++) {
        PyArrayObject *p = (PyArrayObject *)pb.refs[k], *g = (PyArrayObject *)gb.refs[k];
        if (!glue_same_shape(p, g) || pb.arrays[k].dtype != gb.arrays[k].dtype) {
            PyErr_Format(PyExc_ValueError, "grads[%zd] must have the shape and dtype of parameters[%zd]", k, k);
            goto done;
        }
        nunits += PyArray_NDIM(p) > 1 ? (size_t)PyArray_DIM(p, 0) : 1;
    }
    const size_t n = (size_t)pb.n;
    if (unit_scratch_alloc(&s, 2 * n, 2 * nunits, dims_needed(&pb) + dims_needed(&gb), 0) < 0)
        goto done;
    describe_rows(&pb, 0, s.heads, s.row_strides, s.counts, s.dims);
    describe_rows(&gb, 0, s.heads + n, s.row_strides + n, s.counts + n, s.dims + dims_needed(&pb));
    /* units[0, nunits): the values' units; units[nunits, 2 nunits): the gradients'. */
    size_t u = 0;
    for (size_t k = 0; k < 2 * n; k++) {
        for (size_t i = 0; i < s.counts[k]; i++, u++) {
            s.units[u] = s.heads[k];
            s.units[u].data += (ptrdiff_t)i * s.row_strides[k];
        }
    }
    if (check_units(s.units, 2 * nunits, &norm) < 0)
        goto done;
    run_norms(s.units, 2 * nunits, pb.elements + gb.elements, &norm, s.norms);
    if (want_factors) {
        PyObject *list = PyList_New((Py_ssize_t)n);
        for (size_t k = 0, first = 0; k < n && list != NULL; first += s.counts[n + k], k++) {
            PyObject *entry = unit_factors(s.units, s.norms, nunits, first, s.counts[n + k], clip_factor, eps);
            if (entry == NULL)
                Py_CLEAR(list);
            else
                PyList_SET_ITEM(list, (Py_ssize_t)k, entry);
        }
        result = list;
        goto done;
    }
    /* The clipped gradient units and their factors, compacted to the front. */
    size_t m = 0;
    for (size_t i = 0; i < nunits; i++) {
        double factor;
        const gc_array *g = &s.units[nunits + i];
        if (gc_agc_factor(g->dtype, s.norms[i], s.norms[nunits + i], clip_factor, eps, &factor)) {
            s.units[m] = *g;
            s.norms[m++] = factor;
        }
    }
    run_scale_each(s.units, m, gb.elements, s.norms);
    result = Py_NewRef(Py_None);
done:
    PyMem_Free(s.block);
    if (have_g)
        glue_batch_release(&gb);
    if (have_p)
        glue_batch_release(&pb);
    return result;
}

/* clip_per_example(per_example_grads, max_norm) -> (sums, norms)
 * Opacus' flat clipping: every array has a leading batch axis of the same length B; example b's
 * norm is the 2-norm over all arrays of that example (the norm of its per-array norms, as a
 * total norm); its factor is torch's clip coefficient for that norm; sums[k] is the
 * factor-weighted sum of array k over the batch (a new C-contiguous array of one example's
 * shape and array k's dtype), norms the B per-example norms. One norm pass, one summing pass. */
PyObject *py_clip_per_example(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double max_norm;
    batch b;
    unit_scratch s = {0};
    PyObject *sums = NULL, *norms = NULL, *result = NULL;
    char **out = NULL;
    const gc_norm two = gc_norm_from_p(2.0);
    if (glue_check_nargs("clip_per_example", nargs, 2) < 0 ||
        glue_parse_nonnegative(args[1], "max_norm", &max_norm) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_TENSORS, 0, NULL, "per_example_grads") < 0)
        return NULL;
    const size_t n = (size_t)b.n;
    npy_intp batch_size = -1;
    for (Py_ssize_t k = 0; k < b.n; k++) {
        PyArrayObject *a = (PyArrayObject *)b.refs[k];
        if (PyArray_NDIM(a) == 0) {
            PyErr_Format(PyExc_ValueError, "per_example_grads[%zd] is 0-d: it needs a leading batch axis", k);
            goto done;
        }
        if (batch_size >= 0 && PyArray_DIM(a, 0) != batch_size) {
            PyErr_Format(PyExc_ValueError,
                         "per_example_grads[%zd] has %zd examples, but per_example_grads[0] has %zd", k,
                         (Py_ssize_t)PyArray_DIM(a, 0), (Py_ssize_t)batch_size);
            goto done;
        }
        batch_size = PyArray_DIM(a, 0);
    }
    const size_t B = batch_size > 0 ? (size_t)batch_size : 0;
    if (unit_scratch_alloc(&s, n, n * B, dims_needed(&b), B) < 0)
        goto done;
    out = PyMem_Calloc(n > 0 ? n : 1, sizeof *out);
    sums = PyList_New(b.n);
    if (out == NULL || sums == NULL) {
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < b.n; k++) {
        PyArrayObject *a = (PyArrayObject *)b.refs[k];
        PyObject *sum = PyArray_SimpleNew(PyArray_NDIM(a) - 1, PyArray_DIMS(a) + 1, PyArray_TYPE(a));
        if (sum == NULL)
            goto done;
        PyList_SET_ITEM(sums, k, sum);
        out[k] = PyArray_BYTES((PyArrayObject *)sum);
    }
    /* Described after the allocations (which may run a finaliser): only now is nothing left
     * that runs Python code before the kernels. */
    if (check_unchanged(&b) < 0)
        goto done;
    describe_rows(&b, 1, s.heads, s.row_strides, s.counts, s.dims);
    /* Example-major: unit b * n + k is example b of array k. */
    for (size_t e = 0; e < B; e++) {
        for (size_t k = 0; k < n; k++) {
            gc_array *unit = &s.units[e * n + k];
            *unit = s.heads[k];
            unit->data += (ptrdiff_t)e * s.row_strides[k];
        }
    }
    const int single = b.single_precision;
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_array_norms(s.units, n * B, &two, s.norms, 1);
        for (size_t e = 0; e < B; e++) {
            const double total = n > 0 ? gc_norms_total(s.norms + e * n, n, &two) : 0.0;
            s.values[e] = single ? (double)(float)total : total;
        }
        for (size_t e = 0; e < B; e++)
            s.norms[e] = gc_clip_coef(s.values[e], max_norm, single);
        gc_weighted_sums(s.heads, s.row_strides, n, B, s.norms, out);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_array_norms(s.units, n * B, &two, s.norms, 1);
        for (size_t e = 0; e < B; e++) {
            const double total = n > 0 ? gc_norms_total(s.norms + e * n, n, &two) : 0.0;
            s.values[e] = single ? (double)(float)total : total;
        }
        for (size_t e = 0; e < B; e++)
            s.norms[e] = gc_clip_coef(s.values[e], max_norm, single);
        gc_weighted_sums(s.heads, s.row_strides, n, B, s.norms, out);
    }
    norms = norms_array(s.values, (Py_ssize_t)B, single);
    if (norms != NULL)
        result = PyTuple_Pack(2, sums, norms);
done:
    Py_XDECREF(sums);
    Py_XDECREF(norms);
    PyMem_Free(out);
    PyMem_Free(s.block);
    glue_batch_release(&b);
    return result;
}
