/* The vector-algebra entry points (gc_linalg.h): dot products, axpy and copies over lists of
 * arrays, for optimizers that treat their parameters as one vector (LBFGS).
 *
 * Each side of an operation is a list or tuple of arrays, paired item by item, or one 1-D
 * contiguous array standing for the concatenation of the other side's arrays in C order
 * (torch's flattened parameter vector: segment i is viewed with item i's shape, as torch's
 * view_as). The source of a copy may also list objects with a .grad (a None gradient reads
 * as zeros shaped like the object's .data), or None itself where the other side is a list.
 *
 * A complex64/complex128 list item is its real pairs, as torch.view_as_real gives them (any
 * layout): paired with an item of the same complex dtype, or with 2 * size elements of a
 * float32/float64 flat vector (torch's LBFGS flattens complex parameters so). The flat
 * vector itself is real.
 */
#include "py_glue.h"

#include <string.h>

#include "gc_linalg.h"
#include "gc_scratch.h"

enum { SIDE_WRITTEN = 1, SIDE_GRADS = 2 }; /* side flags */

typedef struct {
    Py_ssize_t n;
    ptrdiff_t elements;
    PyObject **refs; /* 2n: the two operands of each pair (NULL where the flat array serves) */
    PyObject *flat;  /* the flat array, if a side is one */
    gc_pair *pairs;
    ptrdiff_t *dims;
    void *heap;
} pair_batch;

static void pairs_release(pair_batch *b)
{
    if (b->refs != NULL) {
        for (Py_ssize_t i = 0; i < 2 * b->n; i++)
            Py_XDECREF(b->refs[i]);
    }
    gc_scratch_free(b->heap);
    b->heap = NULL;
    b->refs = NULL;
}

static void batch_done(pair_batch *b)
{
    Py_CLEAR(b->flat);
    pairs_release(b);
    gc_scratch_free(b->dims);
    b->dims = NULL;
}

/* A list item as an array (new reference), or Py_None (new reference) for zeros; *like is set
 * to a new reference to the array whose shape the zeros take (NULL if unknown). */
static PyObject *resolve(module_state *st, PyObject *item, int flags, const char *what, Py_ssize_t i,
                         PyObject **like)
{
    *like = NULL;
    if (PyArray_CheckExact(item) || PyArray_Check(item))
        return Py_NewRef(item);
    if (item == Py_None && (flags & SIDE_GRADS))
        return Py_NewRef(item);
    if (flags & SIDE_GRADS) {
        PyObject *grad = PyObject_GetAttr(item, st->str_grad);
        if (grad == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "%s[%zd] must be a NumPy ndarray, None or have a .grad, not %.200s",
                             what, i, Py_TYPE(item)->tp_name);
            }
            return NULL;
        }
        if (grad == Py_None) {
            *like = PyObject_GetAttr(item, st->str_data);
            if (*like == NULL) {
                Py_DECREF(grad);
                return NULL;
            }
            if (!PyArray_Check(*like)) {
                PyErr_Format(PyExc_TypeError, "%s[%zd].data must be a NumPy ndarray, not %.200s", what, i,
                             Py_TYPE(*like)->tp_name);
                Py_CLEAR(*like);
                Py_DECREF(grad);
                return NULL;
            }
            return grad;
        }
        if (PyArray_Check(grad))
            return grad;
        PyErr_Format(PyExc_TypeError, "%s[%zd].grad must be a NumPy ndarray or None, not %.200s", what, i,
                     Py_TYPE(grad)->tp_name);
        Py_DECREF(grad);
        return NULL;
    }
    PyErr_Format(PyExc_TypeError, "%s[%zd] must be a NumPy ndarray, not %.200s", what, i, Py_TYPE(item)->tp_name);
    return NULL;
}

/* A float16/32/64 array, or (list items, allow_complex) a complex64/complex128 one. */
static int check_operand(PyArrayObject *a, int written, int allow_complex, const arg_name *who, gc_dtype *dtype)
{
    return glue_check_array(a, (written ? NEED_WRITE : 0) | (allow_complex ? ALLOW_COMPLEX : 0), NULL, who, dtype);
}

/* The real dtype a complex one is viewed as (torch.view_as_real). */
static gc_dtype real_part(gc_dtype dtype)
{
    return dtype == GC_COMPLEX64 ? GC_FLOAT32 : dtype == GC_COMPLEX128 ? GC_FLOAT64 : dtype;
}

/* Byte extent [lo, hi) of an array with shape/strides; empty arrays have none. */
static void extent(char *data, int ndim, const ptrdiff_t *shape, const ptrdiff_t *strides, ptrdiff_t itemsize,
                   char **lo, char **hi)
{
    char *l = data, *h = data;
    for (int d = 0; d < ndim; d++) {
        const ptrdiff_t span = (shape[d] - 1) * strides[d];
        if (span < 0)
            l += span;
        else
            h += span;
    }
    *lo = l;
    *hi = h + itemsize;
}

/* Collects the pairs of (side0, side1) into b, validating everything; nothing is modified.
 * flags0/flags1 say which side is written and which may hold gradients. */
static int collect_pairs(module_state *st, pair_batch *b, PyObject *side0, PyObject *side1, int flags0, int flags1,
                         const char *name0, const char *name1)
{
    memset(b, 0, sizeof *b);
    PyObject *sides[2] = {side0, side1};
    const int flags[2] = {flags0, flags1};
    const char *names[2] = {name0, name1};
    int is_flat[2];
    for (int s = 0; s < 2; s++) {
        is_flat[s] = PyArray_Check(sides[s]);
        if (!is_flat[s] && !PyList_Check(sides[s]) && !PyTuple_Check(sides[s])) {
            PyErr_Format(PyExc_TypeError, "%s must be an ndarray or a list or tuple, not %.200s", names[s],
                         Py_TYPE(sides[s])->tp_name);
            return -1;
        }
    }
    /* Two arrays: one pair. A list and an array: the array is flat, cut into segments. */
    const int both_arrays = is_flat[0] && is_flat[1];
    const int list_side = both_arrays ? -1 : (is_flat[0] ? 1 : 0);
    const Py_ssize_t n = both_arrays ? 1 : PySequence_Fast_GET_SIZE(sides[list_side]);
    if (!both_arrays && !is_flat[1 - list_side] && PySequence_Fast_GET_SIZE(sides[1 - list_side]) != n) {
        PyErr_Format(PyExc_ValueError, "%s has %zd entries but %s has %zd", name0, PySequence_Fast_GET_SIZE(side0),
                     name1, PySequence_Fast_GET_SIZE(side1));
        return -1;
    }
    /* refs: two per pair, plus `like` arrays (shapes of zero gradients) and the flat array. */
    const size_t nrefs = 2 * (size_t)n + (size_t)n + 1;
    char *heap = gc_scratch_calloc(nrefs * sizeof(PyObject *) + (size_t)n * sizeof(gc_pair) + 2 * (size_t)n + 1);
    if (heap == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->heap = heap;
    PyObject **refs = (PyObject **)heap;
    PyObject **likes = refs + 2 * n;
    PyObject **flat = likes + n;
    b->refs = refs;
    b->pairs = (gc_pair *)(heap + nrefs * sizeof(PyObject *));
    char *via_grad = heap + nrefs * sizeof(PyObject *) + (size_t)n * sizeof(gc_pair); /* 2n flags */
    b->n = 0; /* refs released through `release` below until the batch is complete */
    int rc = -1;
    ptrdiff_t *dims = NULL;

    /* Resolve every item first (a .grad may run code), holding references. */
    if (both_arrays) {
        refs[0] = Py_NewRef(side0);
        refs[1] = Py_NewRef(side1);
    }
    else {
        *flat = is_flat[1 - list_side] ? Py_NewRef(sides[1 - list_side]) : NULL;
        for (int s = 0; s < 2; s++) {
            if (is_flat[s])
                continue;
            for (Py_ssize_t i = 0; i < n; i++) {
                if (i >= PySequence_Fast_GET_SIZE(sides[s])) {
                    PyErr_Format(PyExc_ValueError, "%s changed size while it was read", names[s]);
                    goto done;
                }
                PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(sides[s], i));
                PyObject *like = NULL;
                PyObject *array = resolve(st, item, flags[s], names[s], i, &like);
                Py_DECREF(item); /* still compared by address below, never dereferenced */
                if (array == NULL)
                    goto done;
                refs[2 * i + s] = array;
                via_grad[2 * i + s] = (flags[s] & SIDE_GRADS) && array != Py_None && array != item;
                if (like != NULL) {
                    Py_XSETREF(likes[i], like);
                }
            }
        }
    }
    /* From here on no Python code runs. Validate and describe. */
    /* Each pair takes a shape and two strides of max(ndim, 1) entries (0-d as 1-D), ndim
     * being that of whichever array gives the pair its shape, one more for a complex array's
     * real and imaginary parts: reserve for the largest. */
    Py_ssize_t ndims = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        int nd = 1;
        for (int s = 0; s < 2; s++) {
            PyObject *a = both_arrays ? refs[s] : refs[2 * i + s];
            if (a != NULL && a != Py_None && PyArray_NDIM((PyArrayObject *)a) > nd)
                nd = PyArray_NDIM((PyArrayObject *)a);
        }
        if (likes[i] != NULL && PyArray_NDIM((PyArrayObject *)likes[i]) > nd)
            nd = PyArray_NDIM((PyArrayObject *)likes[i]);
        ndims += 3 * (Py_ssize_t)(nd + 1);
    }
    dims = gc_scratch_alloc((size_t)ndims * sizeof(ptrdiff_t) + 1);
    if (dims == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    b->dims = dims;
    gc_dtype flat_dtype = GC_FLOAT64;
    ptrdiff_t offset = 0, flat_len = 0;
    char *flat_data = NULL;
    if (!both_arrays && *flat != NULL) {
        PyArrayObject *f = (PyArrayObject *)*flat;
        const arg_name who = {names[1 - list_side], -1, -1, 0};
        if (check_operand(f, flags[1 - list_side] & SIDE_WRITTEN, 0, &who, &flat_dtype) < 0)
            goto done;
        if (PyArray_NDIM(f) != 1 || (PyArray_DIM(f, 0) > 1 && PyArray_STRIDE(f, 0) != PyArray_ITEMSIZE(f))) {
            PyErr_Format(PyExc_ValueError, "%s must be a contiguous 1-D array (a flattened vector)",
                         names[1 - list_side]);
            goto done;
        }
        flat_len = PyArray_DIM(f, 0);
        flat_data = PyArray_BYTES(f);
    }
    ptrdiff_t *next = dims;
    for (Py_ssize_t i = 0; i < n; i++) {
        gc_pair *p = &b->pairs[i];
        PyArrayObject *ops[2] = {NULL, NULL};
        PyArrayObject *shape_src = NULL;
        gc_dtype dtype = GC_FLOAT64; /* the arrays' own, possibly complex */
        for (int s = 0; s < 2; s++) {
            PyObject *a = both_arrays ? refs[s] : refs[2 * i + s];
            if (a != NULL && a != Py_None) {
                ops[s] = (PyArrayObject *)a;
                const arg_name who = {names[s], -1, both_arrays ? -1 : i, !both_arrays && via_grad[2 * i + s]};
                gc_dtype dt;
                if (check_operand(ops[s], flags[s] & SIDE_WRITTEN, 1, &who, &dt) < 0)
                    goto done;
                if (shape_src == NULL) {
                    shape_src = ops[s];
                    dtype = dt;
                }
                else if (dt != dtype) {
                    PyErr_Format(PyExc_TypeError, "%s has dtype %S but %s has dtype %S", NAME(&who),
                                 (PyObject *)PyArray_DESCR(ops[s]), names[0],
                                 (PyObject *)PyArray_DESCR(ops[0]));
                    goto done;
                }
                else if (!glue_same_shape(ops[0], ops[1])) {
                    PyErr_Format(PyExc_ValueError, "%s has a different shape from %s[%zd]", NAME(&who), names[0], i);
                    goto done;
                }
            }
        }
        if (shape_src == NULL) {
            if (likes[i] == NULL) {
                PyErr_Format(PyExc_ValueError, "%s[%zd] is None and %s gives no shape for it", names[list_side], i,
                             names[1 - list_side]);
                goto done;
            }
            shape_src = (PyArrayObject *)likes[i];
            const arg_name who = {names[list_side], -1, i, 0};
            gc_dtype dt;
            if (check_operand(shape_src, 0, 1, &who, &dt) < 0)
                goto done;
            dtype = dt;
        }
        /* A complex pair is a real one with a last dimension of 2 (torch.view_as_real). */
        const int pairs = gc_is_complex(dtype);
        const ptrdiff_t real_size = (ptrdiff_t)gc_item_size(real_part(dtype));
        p->dtype = real_part(dtype);
        const int ndim = PyArray_NDIM(shape_src);
        const ptrdiff_t size = glue_array_size(shape_src) * (pairs ? 2 : 1);
        p->ndim = pairs ? ndim + 1 : (ndim > 0 ? ndim : 1);
        p->shape = next;
        if (ndim == 0)
            next[0] = 1;
        for (int d = 0; d < ndim; d++)
            next[d] = PyArray_DIMS(shape_src)[d];
        if (pairs)
            next[ndim] = 2;
        next += p->ndim;
        for (int s = 0; s < 2; s++) {
            p->strides[s] = next;
            const int flat_side = !both_arrays && is_flat[s];
            if (flat_side) {
                if (p->dtype != flat_dtype) {
                    PyErr_Format(PyExc_TypeError, "%s[%zd] has dtype %S but %s has another dtype", names[list_side],
                                 i, (PyObject *)PyArray_DESCR(shape_src), names[s]);
                    goto done;
                }
                if (offset + size > flat_len) {
                    PyErr_Format(PyExc_ValueError, "%s has %zd elements, fewer than %s holds", names[s],
                                 (Py_ssize_t)flat_len, names[list_side]);
                    goto done;
                }
                /* Segment i viewed with item i's shape, C order. */
                ptrdiff_t stride = (ptrdiff_t)gc_item_size(flat_dtype);
                for (int d = p->ndim - 1; d >= 0; d--) {
                    next[d] = stride;
                    stride *= p->shape[d];
                }
                p->data[s] = flat_data + offset * (ptrdiff_t)gc_item_size(flat_dtype);
            }
            else if (ops[s] != NULL) {
                if (ndim == 0 || pairs)
                    next[p->ndim - 1] = real_size; /* a 0-d array's one element; the parts */
                for (int d = 0; d < ndim; d++)
                    next[d] = PyArray_STRIDES(ops[s])[d];
                p->data[s] = PyArray_BYTES(ops[s]);
            }
            else {
                if (s == 0) {
                    PyErr_Format(PyExc_TypeError, "%s[%zd] must be an array", names[0], i);
                    goto done;
                }
                for (int d = 0; d < p->ndim; d++)
                    next[d] = 0;
                p->data[s] = NULL; /* zeros */
            }
            next += p->ndim;
        }
        /* The written operand must not share memory with the one it is computed from. */
        if ((flags[0] & SIDE_WRITTEN) && p->data[1] != NULL && size > 0) {
            char *lo0, *hi0, *lo1, *hi1;
            const ptrdiff_t itemsize = (ptrdiff_t)gc_item_size(p->dtype);
            extent(p->data[0], p->ndim, p->shape, p->strides[0], itemsize, &lo0, &hi0);
            extent(p->data[1], p->ndim, p->shape, p->strides[1], itemsize, &lo1, &hi1);
            if (lo0 < hi1 && lo1 < hi0) {
                PyErr_Format(PyExc_ValueError, "%s[%zd] and %s[%zd] share memory", names[0], i, names[1], i);
                goto done;
            }
        }
        offset += size;
        b->elements += size;
    }
    if (!both_arrays && *flat != NULL && offset != flat_len) {
        PyErr_Format(PyExc_ValueError, "%s has %zd elements but %s holds %zd", names[1 - list_side],
                     (Py_ssize_t)flat_len, names[list_side], (Py_ssize_t)offset);
        goto done;
    }
    rc = 0;
done:
    /* The `likes` only gave shapes. The flat array is read by every pair: the batch keeps it. */
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(likes[i]);
    if (!both_arrays)
        b->flat = *flat;
    b->n = both_arrays ? 1 : n;
    if (rc < 0)
        batch_done(b);
    return rc;
}


/* list_dot(xs, ys) -> float: sum of x * y over all pairs, accumulated as gc_linalg.h says (the
 * caller rounds it to the dtype). */
PyObject *py_list_dot(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pair_batch b;
    if (glue_check_nargs("list_dot", nargs, 2) < 0 ||
        collect_pairs(glue_state(module), &b, args[0], args[1], 0, 0, "xs", "ys") < 0)
        return NULL;
    double dot;
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        dot = gc_pairs_dot(b.pairs, (size_t)b.n);
        Py_END_ALLOW_THREADS
    }
    else {
        dot = gc_pairs_dot(b.pairs, (size_t)b.n);
    }
    batch_done(&b);
    return PyFloat_FromDouble(dot);
}

/* list_axpy(ys, alpha, xs) -> None: y += alpha * x in place, torch's add_(x, alpha=alpha). */
PyObject *py_list_axpy(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pair_batch b;
    double alpha;
    if (glue_check_nargs("list_axpy", nargs, 3) < 0 || glue_parse_real(args[1], "alpha", &alpha) < 0 ||
        collect_pairs(glue_state(module), &b, args[0], args[2], SIDE_WRITTEN, 0, "ys", "xs") < 0)
        return NULL;
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_pairs_axpy(b.pairs, (size_t)b.n, alpha);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_pairs_axpy(b.pairs, (size_t)b.n, alpha);
    }
    batch_done(&b);
    Py_RETURN_NONE;
}

/* list_lerp(xs, ends, weight) -> None: x = x.lerp(end, weight) in place, torch's rounding. */
PyObject *py_list_lerp(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pair_batch b;
    double weight;
    if (glue_check_nargs("list_lerp", nargs, 3) < 0 || glue_parse_real(args[2], "weight", &weight) < 0 ||
        collect_pairs(glue_state(module), &b, args[0], args[1], SIDE_WRITTEN, 0, "xs", "ends") < 0)
        return NULL;
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_pairs_lerp(b.pairs, (size_t)b.n, weight);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_pairs_lerp(b.pairs, (size_t)b.n, weight);
    }
    batch_done(&b);
    Py_RETURN_NONE;
}

/* list_copy(dst, src) -> None: dst[...] = src in place; src items may be objects with a .grad
 * (None: zeros) or None. */
PyObject *py_list_copy(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    pair_batch b;
    if (glue_check_nargs("list_copy", nargs, 2) < 0 ||
        collect_pairs(glue_state(module), &b, args[0], args[1], SIDE_WRITTEN, SIDE_GRADS, "dst", "src") < 0)
        return NULL;
    if (b.elements >= GIL_RELEASE_ELEMENTS) {
        Py_BEGIN_ALLOW_THREADS
        gc_pairs_copy(b.pairs, (size_t)b.n);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_pairs_copy(b.pairs, (size_t)b.n);
    }
    batch_done(&b);
    Py_RETURN_NONE;
}
