/* gradclip._C: the CPython/NumPy glue. The only file that includes Python.h.
 *
 * Entry points are private and positional; keywords, defaults and documentation live in
 * python/gradclip. They still trust nothing: every argument is checked here, every array is
 * validated before the first one is written, and the kernels run with the GIL released on
 * inputs large enough for that to pay.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL gradclip_ARRAY_API
#include <numpy/arrayobject.h>
#include <numpy/arrayscalars.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gc_clip.h"
#include "gc_optim.h"
#include "gc_parallel.h"

/* Below this many elements releasing and re-acquiring the GIL costs more than it frees. */
#define GIL_RELEASE_ELEMENTS ((ptrdiff_t)1 << 15)

typedef struct {
    PyObject *str_grad; /* interned "grad" */
    PyObject *str_data; /* interned "data" */
} module_state;

static module_state *get_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

/* ---------------------------------------------------------------------------------------- */
/* Arguments                                                                                 */

/* A real number: a float, an int (not a bool), a NumPy real scalar or 0-d array, or anything
 * else with __float__ that is not complex. */
static int parse_real(PyObject *obj, const char *name, double *out)
{
    if (PyFloat_CheckExact(obj)) {
        *out = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    int is_real = !PyBool_Check(obj) && !PyComplex_Check(obj) &&
                  !PyArray_IsScalar(obj, ComplexFloating) && !PyArray_IsScalar(obj, Bool) &&
                  Py_TYPE(obj)->tp_as_number != NULL && Py_TYPE(obj)->tp_as_number->nb_float != NULL;
    if (is_real && PyArray_Check(obj)) {
        PyArrayObject *a = (PyArrayObject *)obj;
        is_real = PyArray_NDIM(a) == 0 && (PyArray_ISFLOAT(a) || PyArray_ISINTEGER(a));
    }
    if (!is_real) {
        PyErr_Format(PyExc_TypeError, "%s must be a real number, not %.200s", name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    const double value = PyFloat_AsDouble(obj);
    if (value == -1.0 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "%s is too large to convert to a float", name);
        }
        return -1;
    }
    *out = value;
    return 0;
}

static int parse_nonnegative(PyObject *obj, const char *name, double *out)
{
    if (parse_real(obj, name, out) < 0)
        return -1;
    if (!(*out >= 0.0)) {
        PyObject *repr = PyFloat_FromDouble(*out);
        if (repr != NULL)
            PyErr_Format(PyExc_ValueError, "%s must be a non-negative number, got %R", name, repr);
        Py_XDECREF(repr);
        return -1;
    }
    return 0;
}

static int parse_norm_type(PyObject *obj, gc_norm *norm)
{
    double p;
    if (parse_real(obj, "norm_type", &p) < 0)
        return -1;
    if (p != p) {
        PyErr_SetString(PyExc_ValueError, "norm_type must not be NaN");
        return -1;
    }
    *norm = gc_norm_from_p(p);
    return 0;
}

static int parse_bool(PyObject *obj, int *out)
{
    const int value = PyObject_IsTrue(obj);
    if (value < 0)
        return -1;
    *out = value;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Collecting and validating a list of arrays                                                */

typedef enum {
    SOURCE_GRADS,   /* items are gradients or objects with a .grad (None skipped) */
    SOURCE_TENSORS, /* items are the arrays themselves */
} source_kind;

enum {
    NEED_WRITE = 1,   /* modified in place */
    ALLOW_COMPLEX = 2 /* complex dtypes accepted */
};

#define SMALL_ARRAYS 16
#define SMALL_DIMS 128

/* The arrays of one call: strong references plus plain-C descriptors of them (shape and
 * strides copied, so nothing Python owns is read while the GIL is released). Small calls use
 * the inline buffers and allocate nothing. */
typedef struct {
    Py_ssize_t n;
    ptrdiff_t elements;
    int single_precision; /* every array float16/float32/complex64 */
    PyObject **refs;
    gc_array *arrays;
    double *norms;
    ptrdiff_t *dims;
    Py_ssize_t dims_used, dims_cap;
    void *heap, *heap_dims;
    PyObject *small_refs[SMALL_ARRAYS];
    gc_array small_arrays[SMALL_ARRAYS];
    double small_norms[SMALL_ARRAYS];
    ptrdiff_t small_dims[SMALL_DIMS];
} batch;

static void batch_release(batch *b)
{
    for (Py_ssize_t i = 0; i < b->n; i++)
        Py_DECREF(b->refs[i]);
    b->n = 0;
    PyMem_Free(b->heap);
    PyMem_Free(b->heap_dims);
    b->heap = b->heap_dims = NULL;
}

static int batch_reserve(batch *b, Py_ssize_t capacity)
{
    b->n = 0;
    b->elements = 0;
    b->single_precision = 1;
    b->heap = b->heap_dims = NULL;
    b->dims = b->small_dims;
    b->dims_used = 0;
    b->dims_cap = SMALL_DIMS;
    if (capacity <= SMALL_ARRAYS) {
        b->refs = b->small_refs;
        b->arrays = b->small_arrays;
        b->norms = b->small_norms;
        return 0;
    }
    const size_t each = sizeof(PyObject *) + sizeof(gc_array) + sizeof(double);
    if ((size_t)capacity > PY_SSIZE_T_MAX / each) {
        PyErr_NoMemory();
        return -1;
    }
    char *heap = PyMem_Malloc((size_t)capacity * each);
    if (heap == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* Room for the shape and stride of as many contiguous (1-D) arrays. */
    ptrdiff_t *dims = PyMem_Malloc((size_t)capacity * 2 * sizeof(ptrdiff_t));
    if (dims == NULL) {
        PyMem_Free(heap);
        PyErr_NoMemory();
        return -1;
    }
    b->heap_dims = b->dims = dims;
    b->dims_cap = capacity * 2;
    b->heap = heap;
    b->arrays = (gc_array *)heap;
    b->norms = (double *)(heap + (size_t)capacity * sizeof(gc_array));
    b->refs = (PyObject **)(heap + (size_t)capacity * (sizeof(gc_array) + sizeof(double)));
    return 0;
}

/* Room for 2 * ndim more dims; shape/strides pointers are fixed up by batch_finish. */
static int batch_reserve_dims(batch *b, int ndim)
{
    const Py_ssize_t need = b->dims_used + 2 * (Py_ssize_t)ndim;
    if (need <= b->dims_cap)
        return 0;
    Py_ssize_t cap = b->dims_cap * 2;
    while (cap < need)
        cap *= 2;
    ptrdiff_t *dims = PyMem_Malloc((size_t)cap * sizeof(ptrdiff_t));
    if (dims == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(dims, b->dims, (size_t)b->dims_used * sizeof(ptrdiff_t));
    PyMem_Free(b->heap_dims);
    b->heap_dims = b->dims = dims;
    b->dims_cap = cap;
    return 0;
}

static void batch_finish(batch *b)
{
    Py_ssize_t offset = 0;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        b->arrays[i].shape = b->dims + offset;
        b->arrays[i].strides = b->dims + offset + b->arrays[i].ndim;
        offset += 2 * (Py_ssize_t)b->arrays[i].ndim;
    }
}

/* Who an array is, for error messages: "<what>[i]", "<what>[i].grad", a bare "<what>" for a
 * lone array (index < 0), prefixed with "groups[g]: " when group >= 0. Formatted only when an
 * error is raised: on the success path it costs nothing. */
typedef struct {
    const char *what;
    Py_ssize_t group, index;
    int via_grad;
} arg_name;

static const char *format_name(const arg_name *who, char *buf, size_t size)
{
    char prefix[48] = "";
    if (who->group >= 0)
        PyOS_snprintf(prefix, sizeof prefix, "groups[%zd]: ", who->group);
    if (who->index < 0)
        PyOS_snprintf(buf, size, "%s%s", prefix, who->what);
    else
        PyOS_snprintf(buf, size, "%s%s[%zd]%s", prefix, who->what, who->index, who->via_grad ? ".grad" : "");
    return buf;
}

/* The name as a temporary string, valid until the end of the enclosing block. */
#define NAME(who) format_name((who), (char[160]){0}, 160)

static int dtype_of(PyArrayObject *a, int flags, const arg_name *who, gc_dtype *out)
{
    PyArray_Descr *descr = PyArray_DESCR(a);
    switch (PyArray_TYPE(a)) {
    case NPY_HALF:
        *out = GC_FLOAT16;
        break;
    case NPY_FLOAT:
        *out = GC_FLOAT32;
        break;
    case NPY_DOUBLE:
        *out = GC_FLOAT64;
        break;
    case NPY_CFLOAT:
        *out = GC_COMPLEX64;
        break;
    case NPY_CDOUBLE:
        *out = GC_COMPLEX128;
        break;
    default:
        PyErr_Format(PyExc_TypeError,
                     "%s has dtype %S; gradclip works on float16, float32 and float64 arrays%s",
                     NAME(who), (PyObject *)descr, (flags & ALLOW_COMPLEX) ? " (and complex64/complex128 here)" : "");
        return -1;
    }
    if (gc_is_complex(*out) && !(flags & ALLOW_COMPLEX)) {
        PyErr_Format(PyExc_TypeError, "%s has complex dtype %S, which this operation does not support",
                     NAME(who), (PyObject *)descr);
        return -1;
    }
    if (PyArray_ISBYTESWAPPED(a)) {
        PyErr_Format(PyExc_TypeError,
                     "%s has non-native byte order (dtype %S); convert it with .astype(%S.newbyteorder('='))",
                     NAME(who), (PyObject *)descr, (PyObject *)descr);
        return -1;
    }
    return 0;
}

/* Sufficient condition for no two elements sharing memory: with dims sorted by |stride|,
 * each stride clears everything the smaller dims span. */
static int may_self_overlap(int ndim, const npy_intp *shape, const npy_intp *strides, npy_intp itemsize)
{
    npy_intp order[NPY_MAXDIMS];
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0)
            return 0;
    }
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 1)
            continue;
        const npy_intp s = strides[d] < 0 ? -strides[d] : strides[d];
        int pos = nd++;
        while (pos > 0 && order[pos - 1] > s) {
            order[pos] = order[pos - 1];
            pos--;
        }
        order[pos] = s;
    }
    /* order[] holds |strides|; extents need the matching shapes, so recompute per stride. */
    npy_intp extent = itemsize;
    int used[NPY_MAXDIMS] = {0};
    for (int k = 0; k < nd; k++) {
        if (order[k] < extent)
            return 1;
        for (int d = 0; d < ndim; d++) {
            const npy_intp s = strides[d] < 0 ? -strides[d] : strides[d];
            if (shape[d] > 1 && !used[d] && s == order[k]) {
                used[d] = 1;
                extent += s * (shape[d] - 1);
                break;
            }
        }
    }
    return 0;
}

/* PyArray_SIZE without the call into NumPy (which matters for many small arrays). */
static npy_intp array_size(PyArrayObject *a)
{
    npy_intp size = 1;
    for (int d = 0; d < PyArray_NDIM(a); d++)
        size *= PyArray_DIMS(a)[d];
    return size;
}

static int same_shape(PyArrayObject *a, PyArrayObject *b)
{
    if (PyArray_NDIM(a) != PyArray_NDIM(b))
        return 0;
    for (int d = 0; d < PyArray_NDIM(a); d++) {
        if (PyArray_DIMS(a)[d] != PyArray_DIMS(b)[d])
            return 0;
    }
    return 1;
}

static int check_array(PyArrayObject *a, int flags, const gc_norm *norm, const arg_name *who, gc_dtype *dtype)
{
    if (dtype_of(a, flags, who, dtype) < 0)
        return -1;
    if ((flags & NEED_WRITE) && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s is read-only; gradients are modified in place", NAME(who));
        return -1;
    }
    if (!PyArray_ISALIGNED(a)) {
        PyErr_Format(PyExc_ValueError, "%s is not aligned in memory; pass an aligned copy", NAME(who));
        return -1;
    }
    const int ndim = PyArray_NDIM(a);
    const npy_intp *shape = PyArray_DIMS(a), *strides = PyArray_STRIDES(a);
    const npy_intp itemsize = PyArray_ITEMSIZE(a);
    const npy_intp size = array_size(a);
    /* A contiguous array (in either order) has item-size strides and no self-overlap: only
     * views need the checks below. An empty array's strides are never used. */
    const int contiguous = PyArray_CHKFLAGS(a, NPY_ARRAY_C_CONTIGUOUS) || PyArray_CHKFLAGS(a, NPY_ARRAY_F_CONTIGUOUS);
    for (int d = 0; d < ndim && size > 0 && !contiguous; d++) {
        if (shape[d] > 1 && strides[d] % itemsize != 0) {
            PyErr_Format(PyExc_ValueError, "%s has a stride (%zd bytes) that is not a multiple of its item size",
                         NAME(who), (Py_ssize_t)strides[d]);
            return -1;
        }
    }
    if ((flags & NEED_WRITE) && !contiguous && may_self_overlap(ndim, shape, strides, itemsize)) {
        PyErr_Format(PyExc_ValueError,
                     "%s has elements that share memory (a broadcast or as_strided view); "
                     "it cannot be modified in place",
                     NAME(who));
        return -1;
    }
    if (norm != NULL && size == 0 && gc_norm_needs_identity(norm)) {
        /* torch's messages: its foreach kernel reports +inf itself, vector_norm the rest. */
        if (norm->kind == GC_NORM_INF) {
            PyErr_SetString(PyExc_RuntimeError,
                            "_foreach_norm cannot compute the infinity norm on an empty tensor because "
                            "the operation does not have an identity");
            return -1;
        }
        char p[32];
        PyOS_snprintf(p, sizeof p, "%g", norm->p); /* torch prints -1, not -1.0 */
        PyErr_Format(PyExc_RuntimeError,
                     "linalg.vector_norm cannot compute the %s norm on an empty tensor because the "
                     "operation does not have an identity",
                     p);
        return -1;
    }
    return 0;
}

static int batch_add(batch *b, PyObject *array_obj, int flags, const gc_norm *norm, const char *what,
                     Py_ssize_t index, int via_grad)
{
    const arg_name who = {what, -1, index, via_grad};
    PyArrayObject *a = (PyArrayObject *)array_obj;
    gc_dtype dtype;
    if (check_array(a, flags, norm, &who, &dtype) < 0)
        return -1;
    /* A contiguous array (in either order) is one run: describe it as 1-D, which makes every
     * later step trivial. The order elements are visited in changes nothing for elementwise
     * work, and for a reduction it is the memory order either way. */
    const int contiguous = PyArray_IS_C_CONTIGUOUS(a) || PyArray_IS_F_CONTIGUOUS(a);
    const int ndim = contiguous ? 1 : PyArray_NDIM(a);
    const ptrdiff_t size = array_size(a);
    if (batch_reserve_dims(b, ndim) < 0)
        return -1;
    ptrdiff_t *dims = b->dims + b->dims_used;
    if (contiguous) {
        dims[0] = size;
        dims[1] = PyArray_ITEMSIZE(a);
    }
    else {
        for (int d = 0; d < ndim; d++) {
            dims[d] = PyArray_DIMS(a)[d];
            dims[ndim + d] = PyArray_STRIDES(a)[d];
        }
    }
    b->dims_used += 2 * ndim;
    gc_array *desc = &b->arrays[b->n];
    desc->data = PyArray_BYTES(a);
    desc->dtype = dtype;
    desc->ndim = ndim;
    b->elements += size;
    b->single_precision &= dtype != GC_FLOAT64 && dtype != GC_COMPLEX128;
    Py_INCREF(array_obj);
    b->refs[b->n++] = array_obj;
    return 0;
}

/* Resolves item -> array (new reference), or NULL with *skip set for a None gradient. */
static PyObject *resolve_item(module_state *st, PyObject *item, source_kind source, const char *what,
                              Py_ssize_t index, int *via_grad)
{
    *via_grad = 0;
    if (PyArray_Check(item)) {
        Py_INCREF(item);
        return item;
    }
    if (source == SOURCE_TENSORS) {
        PyErr_Format(PyExc_TypeError, "%s[%zd] must be a NumPy ndarray, not %.200s", what, index,
                     Py_TYPE(item)->tp_name);
        return NULL;
    }
    PyObject *grad = PyObject_GetAttr(item, st->str_grad);
    if (grad == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "%s[%zd] must be a NumPy ndarray or have a .grad attribute, not %.200s", what,
                         index, Py_TYPE(item)->tp_name);
        }
        return NULL;
    }
    *via_grad = 1;
    if (grad != Py_None && !PyArray_Check(grad)) {
        PyErr_Format(PyExc_TypeError, "%s[%zd].grad must be a NumPy ndarray or None, not %.200s", what,
                     index, Py_TYPE(grad)->tp_name);
        Py_DECREF(grad);
        return NULL;
    }
    return grad;
}

/* A list of many small arrays is latency-bound: each item is an object, a block holding its
 * shape and strides, and its data, rarely all in cache. While item i is validated, ask for item
 * i + 8's object and for item i + 4's shape block and data (its object was asked for four items
 * earlier). Hints only; the items are the list's own, alive while the GIL is held. */
static inline void prefetch_items(PyObject *seq, Py_ssize_t i)
{
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (i + 8 < n)
        GC_PREFETCH(PySequence_Fast_GET_ITEM(seq, i + 8));
    if (i + 4 < n) {
        PyObject *ahead = PySequence_Fast_GET_ITEM(seq, i + 4);
        if (PyArray_CheckExact(ahead)) {
            GC_PREFETCH(PyArray_DIMS((PyArrayObject *)ahead));
            GC_PREFETCH(PyArray_DATA((PyArrayObject *)ahead));
        }
    }
}

/* Fills b from `obj`: one ndarray, or a list or tuple of items (see source_kind). On error
 * b holds nothing and an exception is set. */
static int collect(module_state *st, batch *b, PyObject *obj, source_kind source, int flags,
                   const gc_norm *norm, const char *what)
{
    if (PyArray_Check(obj)) {
        if (batch_reserve(b, 1) < 0)
            return -1;
        if (batch_add(b, obj, flags, norm, what, -1, 0) < 0)
            goto fail;
        batch_finish(b);
        return 0;
    }
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an ndarray or a list or tuple, not %.200s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    /* Items are re-read by index each time: a .grad property may run code that mutates a list. */
    const Py_ssize_t capacity = PySequence_Fast_GET_SIZE(obj);
    if (batch_reserve(b, capacity) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < capacity && i < PySequence_Fast_GET_SIZE(obj); i++) {
        prefetch_items(obj, i);
        PyObject *item = PySequence_Fast_GET_ITEM(obj, i); /* borrowed */
        int via_grad;
        Py_INCREF(item);
        PyObject *array = resolve_item(st, item, source, what, i, &via_grad);
        Py_DECREF(item);
        if (array == NULL)
            goto fail;
        if (array != Py_None) {
            const int rc = batch_add(b, array, flags, norm, what, i, via_grad);
            Py_DECREF(array);
            if (rc < 0)
                goto fail;
        }
        else {
            Py_DECREF(array);
        }
    }
    batch_finish(b);
    return 0;
fail:
    batch_release(b);
    return -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Results                                                                                   */

static PyObject *float_scalar(double value, int single)
{
    PyObject *scalar;
    if (single) {
        scalar = PyArrayScalar_New(Float);
        if (scalar != NULL)
            PyArrayScalar_ASSIGN(scalar, Float, (npy_float)value);
    }
    else {
        scalar = PyArrayScalar_New(Double);
        if (scalar != NULL)
            PyArrayScalar_ASSIGN(scalar, Double, value);
    }
    return scalar;
}

/* The total norm of b, rounded to its dtype (float32 unless an array is float64/complex128),
 * with torch's error for a non-finite total when asked. */
static int compute_total(batch *b, const gc_norm *norm, int error_if_nonfinite, double *total)
{
    if (b->n == 0) {
        *total = 0.0;
        return 0;
    }
    if (b->elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        *total = gc_total_norm(b->arrays, (size_t)b->n, norm, b->norms);
        Py_END_ALLOW_THREADS
    }
    else {
        *total = gc_total_norm(b->arrays, (size_t)b->n, norm, b->norms);
    }
    if (b->single_precision)
        *total = (double)(float)*total;
    if (error_if_nonfinite && !isfinite(*total)) {
        PyObject *p = PyFloat_FromDouble(norm->p);
        if (p != NULL)
            PyErr_Format(PyExc_RuntimeError,
                         "The total norm of order %R for gradients from `parameters` is non-finite, so it "
                         "cannot be clipped. To disable this error and scale the gradients by the "
                         "non-finite norm anyway, set `error_if_nonfinite=False`",
                         p);
        Py_XDECREF(p);
        return -1;
    }
    return 0;
}

static void run_scale(batch *b, double coef)
{
    if (b->elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_scale(b->arrays, (size_t)b->n, coef);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_scale(b->arrays, (size_t)b->n, coef);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Entry points                                                                              */

static int check_nargs(const char *fname, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd positional arguments (%zd given)", fname,
                     expected, nargs);
        return -1;
    }
    return 0;
}

/* total_norm(tensors, norm_type, error_if_nonfinite) -> float32 or float64 scalar */
static PyObject *py_total_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int error_if_nonfinite;
    batch b;
    double total;
    if (check_nargs("total_norm", nargs, 3) < 0 || parse_norm_type(args[1], &norm) < 0 ||
        parse_bool(args[2], &error_if_nonfinite) < 0)
        return NULL;
    if (collect(get_state(module), &b, args[0], SOURCE_TENSORS, ALLOW_COMPLEX, &norm, "tensors") < 0)
        return NULL;
    const int rc = compute_total(&b, &norm, error_if_nonfinite, &total);
    const int single = b.single_precision;
    batch_release(&b);
    return rc < 0 ? NULL : float_scalar(total, single);
}

/* The arguments shared by clip_grad_norm and total_norm_and_coef:
 * (parameters, max_norm, norm_type, error_if_nonfinite). */
static int parse_clip_norm_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, double *max_norm,
                                gc_norm *norm, int *error_if_nonfinite)
{
    if (check_nargs(fname, nargs, 4) < 0 || parse_nonnegative(args[1], "max_norm", max_norm) < 0 ||
        parse_norm_type(args[2], norm) < 0 || parse_bool(args[3], error_if_nonfinite) < 0)
        return -1;
    return 0;
}

/* total_norm_and_coef(parameters, max_norm, norm_type, error_if_nonfinite) -> (total, coef)
 * The clipping coefficient clip_grad_norm_ would apply, without modifying anything. */
static PyObject *py_total_norm_and_coef(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int error_if_nonfinite;
    double max_norm, total;
    batch b;
    if (parse_clip_norm_args("total_norm_and_coef", args, nargs, &max_norm, &norm, &error_if_nonfinite) < 0)
        return NULL;
    if (collect(get_state(module), &b, args[0], SOURCE_GRADS, ALLOW_COMPLEX, &norm, "parameters") < 0)
        return NULL;
    const int rc = compute_total(&b, &norm, error_if_nonfinite, &total);
    const int single = b.single_precision;
    batch_release(&b);
    if (rc < 0)
        return NULL;
    PyObject *scalar = float_scalar(total, single);
    if (scalar == NULL)
        return NULL;
    return Py_BuildValue("(Nd)", scalar, gc_clip_coef(total, max_norm, single));
}

/* clip_grad_norm(parameters, max_norm, norm_type, error_if_nonfinite) -> total norm */
static PyObject *py_clip_grad_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int error_if_nonfinite;
    double max_norm, total;
    batch b;
    if (parse_clip_norm_args("clip_grad_norm", args, nargs, &max_norm, &norm, &error_if_nonfinite) < 0)
        return NULL;
    if (collect(get_state(module), &b, args[0], SOURCE_GRADS, NEED_WRITE | ALLOW_COMPLEX, &norm,
                "parameters") < 0)
        return NULL;
    /* The whole reduction (and its error check) ends before the first write. */
    const int single = b.single_precision;
    if (compute_total(&b, &norm, error_if_nonfinite, &total) < 0) {
        batch_release(&b);
        return NULL;
    }
    run_scale(&b, gc_clip_coef(total, max_norm, single));
    batch_release(&b);
    return float_scalar(total, single);
}

/* clip_grads_with_norm(parameters, max_norm, total_norm, single) -> None
 * `single` says whether the total is float32 (the coefficient is then computed in float32). */
static PyObject *py_clip_grads_with_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double max_norm, total;
    int single;
    batch b;
    if (check_nargs("clip_grads_with_norm", nargs, 4) < 0 || parse_nonnegative(args[1], "max_norm", &max_norm) < 0 ||
        parse_real(args[2], "total_norm", &total) < 0 || parse_bool(args[3], &single) < 0)
        return NULL;
    if (total < 0.0) {
        /* A norm is never negative; torch would flip every gradient. NaN passes, as in torch. */
        PyErr_Format(PyExc_ValueError, "total_norm must not be negative, got %R", args[2]);
        return NULL;
    }
    if (collect(get_state(module), &b, args[0], SOURCE_GRADS, NEED_WRITE | ALLOW_COMPLEX, NULL, "parameters") < 0)
        return NULL;
    if (b.n > 0)
        run_scale(&b, gc_clip_coef(total, max_norm, single));
    batch_release(&b);
    Py_RETURN_NONE;
}

/* clip_grad_value(parameters, clip_value) -> None */
static PyObject *py_clip_grad_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double clip_value;
    batch b;
    if (check_nargs("clip_grad_value", nargs, 2) < 0 || parse_nonnegative(args[1], "clip_value", &clip_value) < 0)
        return NULL;
    if (collect(get_state(module), &b, args[0], SOURCE_GRADS, NEED_WRITE, NULL, "parameters") < 0)
        return NULL;
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_clamp(b.arrays, (size_t)b.n, -clip_value, clip_value);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_clamp(b.arrays, (size_t)b.n, -clip_value, clip_value);
    }
    batch_release(&b);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------- */
/* Optimizer steps                                                                           */

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

/* What one group contributes: its lists (params first) and how each operand is used. */
typedef struct {
    PyObject *lists[GC_OPTIM_MAXOPS];
    int nops;
    unsigned written;   /* operand k is written if (written >> k) & 1 */
    int creatable;      /* operand that may be None (a buffer the kernel initialises), or -1 */
    const void *options;
} optim_group;

static void optim_release(optim_batch *b)
{
    if (b->refs != NULL) {
        for (Py_ssize_t i = 0; i < b->n * GC_OPTIM_MAXOPS; i++)
            Py_XDECREF(b->refs[i]);
    }
    PyMem_Free(b->heap);
    b->heap = NULL;
    b->refs = NULL;
}

static int check_sequence(PyObject *obj, const char *name, Py_ssize_t n, int need_list)
{
    if (need_list ? !PyList_Check(obj) : (!PyList_Check(obj) && !PyTuple_Check(obj))) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s, not %.200s", name, need_list ? "list" : "list or tuple",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (n >= 0 && PySequence_Fast_GET_SIZE(obj) != n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd entries, expected %zd (one per parameter)", name,
                     PySequence_Fast_GET_SIZE(obj), n);
        return -1;
    }
    return 0;
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
    if (array_size((PyArrayObject *)ops[0]) == 0)
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

/* Validates every group's operands and fills b: nothing is modified. `names` name the
 * operands in messages ("groups[g]: grads[i] ..."). */
static int optim_collect(optim_batch *b, const optim_group *groups, Py_ssize_t ngroups, const char *const *names)
{
    b->n = 0;
    b->elements = 0;
    b->refs = NULL;
    b->heap = NULL;
    char what[64];
    Py_ssize_t n = 0, ndims = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        const optim_group *grp = &groups[g];
        PyOS_snprintf(what, sizeof what, "groups[%zd]: %s", g, names[0]);
        if (check_sequence(grp->lists[0], what, -1, 0) < 0)
            return -1;
        const Py_ssize_t count = PySequence_Fast_GET_SIZE(grp->lists[0]);
        for (int k = 1; k < grp->nops; k++) {
            PyOS_snprintf(what, sizeof what, "groups[%zd]: %s", g, names[k]);
            if (check_sequence(grp->lists[k], what, count, k == grp->creatable) < 0)
                return -1;
        }
        for (Py_ssize_t i = 0; i < count; i++) {
            prefetch_items(grp->lists[0], i);
            PyObject *p = PySequence_Fast_GET_ITEM(grp->lists[0], i);
            if (!PyArray_Check(p)) {
                PyErr_Format(PyExc_TypeError, "groups[%zd]: %s[%zd] must be a NumPy ndarray, not %.200s", g, names[0],
                             i, Py_TYPE(p)->tp_name);
                return -1;
            }
            ndims += (Py_ssize_t)PyArray_NDIM((PyArrayObject *)p) * (1 + grp->nops);
        }
        n += count;
    }
    /* One allocation: items, references, then every operand's shape and strides. */
    const size_t bytes = (size_t)n * sizeof(gc_optim_item) + (size_t)n * GC_OPTIM_MAXOPS * sizeof(PyObject *) +
                         (size_t)ndims * sizeof(ptrdiff_t);
    char *heap = PyMem_Calloc(1, bytes > 0 ? bytes : 1);
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
                prefetch_items(grp->lists[k], i);
                PyObject *obj = PySequence_Fast_GET_ITEM(grp->lists[k], i);
                if (obj == Py_None && k == grp->creatable)
                    continue;
                Py_INCREF(obj);
                b->refs[item * GC_OPTIM_MAXOPS + k] = obj;
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
            const int ndim = PyArray_NDIM(param);
            it->options = grp->options;
            for (int k = 0; k < grp->nops; k++) {
                const arg_name who = {names[k], g, i, 0};
                if (ops[k] == NULL) {
                    it->fresh = 1;
                    continue;
                }
                if (!PyArray_Check(ops[k])) {
                    PyErr_Format(PyExc_TypeError, "%s must be a NumPy ndarray%s, not %.200s", NAME(&who),
                                 k == grp->creatable ? " or None" : "", Py_TYPE(ops[k])->tp_name);
                    goto fail;
                }
                PyArrayObject *a = (PyArrayObject *)ops[k];
                gc_dtype dtype;
                if (check_array(a, ((grp->written >> k) & 1) ? NEED_WRITE : 0, NULL, &who, &dtype) < 0)
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
                if (!same_shape(a, param)) {
                    PyErr_Format(PyExc_ValueError, "%s has a different shape from %s[%zd]", NAME(&who), names[0], i);
                    goto fail;
                }
            }
            if (check_disjoint(ops, grp->nops, names, g, i) < 0)
                goto fail;
            /* Operands all contiguous in one order (a buffer still to be created will be laid
             * out like the gradient) are one run each: describe them as 1-D. */
            int all_c = ndim > 0, all_f = ndim > 0;
            for (int k = 0; k < grp->nops; k++) {
                if (ops[k] != NULL) {
                    all_c &= PyArray_IS_C_CONTIGUOUS((PyArrayObject *)ops[k]);
                    all_f &= PyArray_IS_F_CONTIGUOUS((PyArrayObject *)ops[k]);
                }
            }
            const npy_intp size = array_size(param);
            const int flat = all_c || all_f;
            const int nd = flat ? 1 : ndim;
            it->ndim = nd;
            it->nops = grp->nops;
            it->shape = dims;
            for (int d = 0; d < nd; d++)
                dims[d] = flat ? size : PyArray_DIMS(param)[d];
            dims += nd;
            for (int k = 0; k < grp->nops; k++) {
                it->strides[k] = dims;
                if (ops[k] != NULL) {
                    it->data[k] = PyArray_BYTES((PyArrayObject *)ops[k]);
                    for (int d = 0; d < nd; d++)
                        dims[d] = flat ? PyArray_ITEMSIZE(param) : PyArray_STRIDES((PyArrayObject *)ops[k])[d];
                }
                dims += nd;
            }
            b->elements += size;
        }
    }
    return 0;
fail:
    optim_release(b);
    return -1;
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
        PyObject *buffer = PyArray_NewLikeArray((PyArrayObject *)b->refs[i * GC_OPTIM_MAXOPS + 1], NPY_KEEPORDER,
                                                NULL, 0);
        if (buffer == NULL)
            return -1; /* optim_release frees the ones made so far */
        *slot = buffer;
        created++;
        it->data[k] = PyArray_BYTES((PyArrayObject *)buffer);
        /* Laid out like the gradient: contiguous where the item was flattened. */
        const int flat = it->ndim != PyArray_NDIM((PyArrayObject *)buffer);
        ptrdiff_t *strides = (ptrdiff_t *)it->strides[k];
        for (int d = 0; d < it->ndim; d++)
            strides[d] = flat ? PyArray_ITEMSIZE((PyArrayObject *)buffer) : PyArray_STRIDES((PyArrayObject *)buffer)[d];
    }
    Py_ssize_t item = 0;
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        const Py_ssize_t count = PySequence_Fast_GET_SIZE(groups[g].lists[0]);
        for (Py_ssize_t i = 0; i < count; i++, item++) {
            /* The bound is re-checked: allocating may have run a finaliser that shrank it. */
            if (b->items[item].fresh && groups[g].creatable == k && i < PyList_GET_SIZE(groups[g].lists[k])) {
                PyObject *buffer = b->refs[item * GC_OPTIM_MAXOPS + k];
                Py_INCREF(buffer);
                PyList_SetItem(groups[g].lists[k], i, buffer); /* steals; cannot fail: index checked */
            }
        }
    }
    return created;
}

static int parse_scaling(PyObject *scale, PyObject *write_back, gc_grad_scaling *out)
{
    out->has_scale = scale != Py_None;
    out->scale = 1.0;
    if (out->has_scale && parse_real(scale, "grad_scale", &out->scale) < 0)
        return -1;
    return parse_bool(write_back, &out->write_back);
}

/* Unpacks a group tuple of exactly `size` items; borrowed references into it. */
static PyObject *const *group_items(PyObject *groups, Py_ssize_t g, Py_ssize_t size, const char *layout)
{
    PyObject *group = PyTuple_GET_ITEM(groups, g);
    if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) != size) {
        PyErr_Format(PyExc_TypeError, "groups[%zd] must be a tuple %s", g, layout);
        return NULL;
    }
    return &PyTuple_GET_ITEM(group, 0);
}

/* Runs one optimizer step for every group, or fails having changed nothing. */
typedef int (*parse_group_fn)(PyObject *groups, Py_ssize_t g, optim_group *out, void *options);

static PyObject *optim_step(PyObject *args_groups, PyObject *scale, PyObject *write_back, size_t options_size,
                            parse_group_fn parse_group, const char *const *names, int creatable_op,
                            int steps_list, void (*run)(const gc_optim_item *, size_t))
{
    optim_group *groups = NULL;
    char *options = NULL;
    optim_batch b = {0};
    gc_grad_scaling scaling;
    PyObject *result = NULL;
    if (check_sequence(args_groups, "groups", -1, 0) < 0)
        return NULL;
    /* Own the groups: converting a hyper-parameter (__float__, __bool__) runs Python code that
     * could empty the caller's list. The group tuples are immutable and own their lists; the
     * lists themselves are read only after every conversion is done. */
    PyObject *owned = PySequence_Tuple(args_groups);
    if (owned == NULL)
        return NULL;
    if (parse_scaling(scale, write_back, &scaling) < 0)
        goto done;
    const Py_ssize_t ngroups = PyTuple_GET_SIZE(owned);
    groups = PyMem_Calloc(ngroups > 0 ? (size_t)ngroups : 1, sizeof *groups);
    options = PyMem_Calloc(ngroups > 0 ? (size_t)ngroups : 1, options_size);
    if (groups == NULL || options == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t g = 0; g < ngroups; g++) {
        void *opt = options + (size_t)g * options_size;
        if (parse_group(owned, g, &groups[g], opt) < 0)
            goto done;
        /* Every options struct starts with the gradient scaling shared by the call. */
        memcpy(opt, &scaling, sizeof scaling);
        groups[g].options = opt;
        groups[g].written |= scaling.has_scale && scaling.write_back ? 2u : 0u;
    }
    /* From here on no Python code runs until the arrays are validated and held. */
    if (optim_collect(&b, groups, ngroups, names) < 0)
        goto done;
    if (steps_list >= 0) {
        /* Adam's 0-d float32 step counters, one per parameter, checked before any is bumped. */
        Py_ssize_t item = 0;
        for (Py_ssize_t g = 0; g < ngroups; g++) {
            PyObject *steps = PyTuple_GET_ITEM(PyTuple_GET_ITEM(owned, g), steps_list);
            const Py_ssize_t count = PySequence_Fast_GET_SIZE(groups[g].lists[0]);
            char what[64];
            PyOS_snprintf(what, sizeof what, "groups[%zd]: state_steps", g);
            if (check_sequence(steps, what, count, 0) < 0)
                goto done;
            for (Py_ssize_t i = 0; i < count; i++, item++) {
                PyObject *step = PySequence_Fast_GET_ITEM(steps, i);
                if (!PyArray_Check(step) || PyArray_NDIM((PyArrayObject *)step) != 0 ||
                    PyArray_TYPE((PyArrayObject *)step) != NPY_FLOAT ||
                    PyArray_ISBYTESWAPPED((PyArrayObject *)step) || !PyArray_ISWRITEABLE((PyArrayObject *)step)) {
                    PyErr_Format(PyExc_TypeError, "groups[%zd]: state_steps[%zd] must be a writeable 0-d float32 ndarray",
                                 g, i);
                    goto done;
                }
            }
        }
    }
    const Py_ssize_t created = creatable_op >= 0 ? optim_create_buffers(&b, groups, ngroups, creatable_op) : 0;
    if (created < 0)
        goto done;
    /* Everything is valid and allocated: from here on nothing fails. */
    if (steps_list >= 0) {
        Py_ssize_t item = 0;
        for (Py_ssize_t g = 0; g < ngroups; g++) {
            PyObject *steps = PyTuple_GET_ITEM(PyTuple_GET_ITEM(owned, g), steps_list);
            for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(steps); i++, item++) {
                PyArrayObject *step = (PyArrayObject *)PySequence_Fast_GET_ITEM(steps, i);
                float value;
                memcpy(&value, PyArray_DATA(step), sizeof value);
                value = value + 1.0f; /* torch's step tensor is float32 */
                memcpy(PyArray_DATA(step), &value, sizeof value);
                b.items[item].step = (double)value;
            }
        }
    }
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        run(b.items, (size_t)b.n);
        Py_END_ALLOW_THREADS
    }
    else {
        run(b.items, (size_t)b.n);
    }
    result = PyLong_FromSsize_t(created);
done:
    optim_release(&b);
    PyMem_Free(groups);
    PyMem_Free(options);
    Py_DECREF(owned);
    return result;
}

#define SGD_GROUP "(params, grads, momentum_buffers, lr, momentum, dampening, weight_decay, nesterov, maximize)"

static int parse_sgd_group(PyObject *groups, Py_ssize_t g, optim_group *out, void *options)
{
    gc_sgd_options *o = options;
    PyObject *const *a = group_items(groups, g, 9, SGD_GROUP);
    if (a == NULL || parse_real(a[3], "lr", &o->lr) < 0 || parse_real(a[4], "momentum", &o->momentum) < 0 ||
        parse_real(a[5], "dampening", &o->dampening) < 0 || parse_real(a[6], "weight_decay", &o->weight_decay) < 0 ||
        parse_bool(a[7], &o->nesterov) < 0 || parse_bool(a[8], &o->maximize) < 0)
        return -1;
    const int momentum = o->momentum != 0.0;
    out->nops = momentum ? 3 : 2;
    out->creatable = momentum ? 2 : -1;
    out->written = 1u | 4u;
    for (int k = 0; k < out->nops; k++)
        out->lists[k] = a[k];
    return 0;
}

#define ADAM_GROUP                                                                                                 \
    "(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, amsgrad, beta1, beta2, lr, "            \
    "weight_decay, eps, maximize, decoupled_weight_decay)"

static int parse_adam_group(PyObject *groups, Py_ssize_t g, optim_group *out, void *options)
{
    gc_adam_options *o = options;
    PyObject *const *a = group_items(groups, g, 14, ADAM_GROUP);
    if (a == NULL || parse_bool(a[6], &o->amsgrad) < 0 || parse_real(a[7], "beta1", &o->beta1) < 0 ||
        parse_real(a[8], "beta2", &o->beta2) < 0 || parse_real(a[9], "lr", &o->lr) < 0 ||
        parse_real(a[10], "weight_decay", &o->weight_decay) < 0 || parse_real(a[11], "eps", &o->eps) < 0 ||
        parse_bool(a[12], &o->maximize) < 0 || parse_bool(a[13], &o->decoupled_weight_decay) < 0)
        return -1;
    out->nops = o->amsgrad ? 5 : 4;
    out->creatable = -1;
    out->written = 1u | 4u | 8u | 16u;
    for (int k = 0; k < out->nops; k++)
        out->lists[k] = a[k];
    return 0;
}

/* sgd_step(groups, grad_scale, write_back) -> int
 * groups: tuples SGD_GROUP. With momentum != 0, None entries of momentum_buffers are replaced by
 * new buffers, initialised from the gradient; returns how many. */
static PyObject *py_sgd_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    static const char *const names[] = {"params", "grads", "momentum_buffers"};
    if (check_nargs("sgd_step", nargs, 3) < 0)
        return NULL;
    return optim_step(args[0], args[1], args[2], sizeof(gc_sgd_options), parse_sgd_group, names, 2, -1, gc_sgd);
}

/* adam_step(groups, grad_scale, write_back) -> 0 (it creates no state)
 * groups: tuples ADAM_GROUP; state_steps are 0-d float32 arrays, incremented (in float32). */
static PyObject *py_adam_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    static const char *const names[] = {"params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
    if (check_nargs("adam_step", nargs, 3) < 0)
        return NULL;
    return optim_step(args[0], args[1], args[2], sizeof(gc_adam_options), parse_adam_group, names, -1, 5, gc_adam);
}

/* with_grads(params, parameter_type, given) -> (keys, values, grads)
 * An optimizer step's gathering, one pass in C instead of a Python loop per parameter: the items
 * of `params` (a list or tuple) that have a gradient, with their values and gradients. With
 * `given` None, items must be instances of parameter_type and their .grad is read; otherwise
 * `given` holds one gradient (or None) per item, and items may also be plain ndarrays, their
 * own values. A parameter_type item's value is its .data. Nothing else is validated here (the
 * step does that). */
static PyObject *py_with_grads(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    module_state *st = get_state(module);
    if (check_nargs("with_grads", nargs, 3) < 0)
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

/* set_num_threads(n) -> None;  get_num_threads() -> int */
static PyObject *py_set_num_threads(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyLong_Check(arg) || PyBool_Check(arg)) {
        PyErr_Format(PyExc_TypeError, "the number of threads must be an int, not %.200s", Py_TYPE(arg)->tp_name);
        return NULL;
    }
    const long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred())
        return NULL;
    if (n < 1 || n > GC_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "the number of threads must be between 1 and %d, got %ld", GC_MAX_THREADS, n);
        return NULL;
    }
    gc_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(gc_get_num_threads());
}

/* ---------------------------------------------------------------------------------------- */
/* Module                                                                                    */

static PyMethodDef module_methods[] = {
    {"total_norm", (PyCFunction)(void (*)(void))py_total_norm, METH_FASTCALL,
     "total_norm(tensors, norm_type, error_if_nonfinite)"},
    {"total_norm_and_coef", (PyCFunction)(void (*)(void))py_total_norm_and_coef, METH_FASTCALL,
     "total_norm_and_coef(parameters, max_norm, norm_type, error_if_nonfinite)"},
    {"clip_grad_norm", (PyCFunction)(void (*)(void))py_clip_grad_norm, METH_FASTCALL,
     "clip_grad_norm(parameters, max_norm, norm_type, error_if_nonfinite)"},
    {"clip_grads_with_norm", (PyCFunction)(void (*)(void))py_clip_grads_with_norm, METH_FASTCALL,
     "clip_grads_with_norm(parameters, max_norm, total_norm, single)"},
    {"clip_grad_value", (PyCFunction)(void (*)(void))py_clip_grad_value, METH_FASTCALL,
     "clip_grad_value(parameters, clip_value)"},
    {"sgd_step", (PyCFunction)(void (*)(void))py_sgd_step, METH_FASTCALL,
     "sgd_step(groups, grad_scale, write_back); groups: [" SGD_GROUP ", ...]"},
    {"adam_step", (PyCFunction)(void (*)(void))py_adam_step, METH_FASTCALL,
     "adam_step(groups, grad_scale, write_back); groups: [" ADAM_GROUP ", ...]"},
    {"with_grads", (PyCFunction)(void (*)(void))py_with_grads, METH_FASTCALL,
     "with_grads(params, parameter_type, given) -> (keys, values, grads)"},
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module)
{
    module_state *st = get_state(module);
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    st->str_grad = PyUnicode_InternFromString("grad");
    st->str_data = PyUnicode_InternFromString("data");
    if (st->str_grad == NULL || st->str_data == NULL)
        return -1;
    if (PyModule_AddIntConstant(module, "BLOCK", (long)GC_BLOCK) < 0)
        return -1;
    /* The loops are chosen once per process from the CPU; GRADCLIP_ISA=baseline forces the
     * portable ones (the test suite checks that both give identical results). */
    if (PyModule_AddStringConstant(module, "ISA", gc_select_isa(getenv("GRADCLIP_ISA"))) < 0)
        return -1;
    gc_init_num_threads(getenv("GRADCLIP_NUM_THREADS"));
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    Py_VISIT(get_state(module)->str_grad);
    Py_VISIT(get_state(module)->str_data);
    return 0;
}

static int module_clear(PyObject *module)
{
    Py_CLEAR(get_state(module)->str_grad);
    Py_CLEAR(get_state(module)->str_data);
    return 0;
}

static void module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#ifdef Py_mod_multiple_interpreters
    /* NumPy itself does not support subinterpreters. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    /* No Py_mod_gil slot: the glue reads list items as borrowed references, which is safe
     * only under the GIL, so a free-threaded interpreter keeps the GIL on for this module. */
    {0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "gradclip._C",
    .m_doc = "gradclip's C kernels. Private: use the gradclip package.",
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC PyInit__C(void)
{
    return PyModuleDef_Init(&module_def);
}
