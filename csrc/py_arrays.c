/* Lists of arrays: resolving items, validating arrays, describing them to the kernels. */
#include "py_glue.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gc_scratch.h"

const char *glue_format_name(const arg_name *who, char *buf, size_t size)
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

/* ---------------------------------------------------------------------------------------- */
/* One array                                                                                 */

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
        /* Code the user can paste, whatever the array is called. */
        PyErr_Format(PyExc_TypeError,
                     "%s has non-native byte order (dtype %S); convert it with "
                     "a.astype(a.dtype.newbyteorder('='))",
                     NAME(who), (PyObject *)descr);
        return -1;
    }
    return 0;
}

/* The dims that matter for overlap: extent > 1, |stride| in bytes. */
static int moving_dims(int ndim, const npy_intp *shape, const npy_intp *strides, npy_intp *ext, npy_intp *step)
{
    int nd = 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] <= 1)
            continue;
        ext[nd] = shape[d];
        step[nd] = strides[d] < 0 ? -strides[d] : strides[d];
        nd++;
    }
    return nd;
}

/* Sufficient condition for no two elements sharing memory: with dims sorted by |stride|,
 * each stride clears everything the smaller dims span. */
static int clearly_disjoint(int nd, npy_intp *ext, npy_intp *step, npy_intp itemsize)
{
    for (int i = 1; i < nd; i++) { /* insertion sort by stride: nd is small */
        for (int j = i; j > 0 && step[j - 1] > step[j]; j--) {
            npy_intp t = step[j];
            step[j] = step[j - 1];
            step[j - 1] = t;
            t = ext[j];
            ext[j] = ext[j - 1];
            ext[j - 1] = t;
        }
    }
    npy_intp extent = itemsize;
    for (int k = 0; k < nd; k++) {
        if (step[k] < extent)
            return 0;
        extent += step[k] * (ext[k] - 1);
    }
    return 1;
}

static int compare_offsets(const void *a, const void *b)
{
    const npy_intp x = *(const npy_intp *)a, y = *(const npy_intp *)b;
    return (x > y) - (x < y);
}

/* Views this large that fail the sufficient test are refused unexamined: enumerating their
 * offsets would cost more memory than the question is worth. */
#define OVERLAP_ENUMERATION_LIMIT ((npy_intp)1 << 20)

/* Whether two elements share memory: 0 no, 1 yes, 2 unknown (too large to enumerate), -1 on
 * an allocation failure (exception set). Strides are multiples of the item size (checked
 * before), so elements overlap exactly when two offsets are equal. */
static int self_overlap(int ndim, const npy_intp *shape, const npy_intp *strides, npy_intp itemsize)
{
    npy_intp ext[NPY_MAXDIMS], step[NPY_MAXDIMS], size = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0)
            return 0;
        size *= shape[d];
    }
    const int nd = moving_dims(ndim, shape, strides, ext, step);
    for (int k = 0; k < nd; k++) {
        if (step[k] == 0)
            return 1; /* a broadcast dimension */
    }
    if (clearly_disjoint(nd, ext, step, itemsize))
        return 0;
    if (size > OVERLAP_ENUMERATION_LIMIT)
        return 2;
    npy_intp *offsets = PyMem_Malloc((size_t)size * sizeof *offsets);
    if (offsets == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    npy_intp index[NPY_MAXDIMS] = {0}, offset = 0;
    for (npy_intp i = 0; i < size; i++) {
        offsets[i] = offset;
        for (int k = 0; k < nd; k++) { /* odometer */
            if (++index[k] < ext[k]) {
                offset += step[k];
                break;
            }
            offset -= step[k] * (ext[k] - 1);
            index[k] = 0;
        }
    }
    qsort(offsets, (size_t)size, sizeof *offsets, compare_offsets);
    int overlap = 0;
    for (npy_intp i = 1; i < size && !overlap; i++)
        overlap = offsets[i] == offsets[i - 1];
    PyMem_Free(offsets);
    return overlap;
}

/* PyArray_SIZE without the call into NumPy (which matters for many small arrays). */
npy_intp glue_array_size(PyArrayObject *a)
{
    npy_intp size = 1;
    for (int d = 0; d < PyArray_NDIM(a); d++)
        size *= PyArray_DIMS(a)[d];
    return size;
}

int glue_same_shape(PyArrayObject *a, PyArrayObject *b)
{
    if (PyArray_NDIM(a) != PyArray_NDIM(b))
        return 0;
    for (int d = 0; d < PyArray_NDIM(a); d++) {
        if (PyArray_DIMS(a)[d] != PyArray_DIMS(b)[d])
            return 0;
    }
    return 1;
}

/* The checks of an array's geometry, whoever describes it (an ndarray or a tensor's DLPack
 * view): strides, self-overlap of a written view, an empty array under a norm without
 * identity. Strides in bytes. */
static inline int check_geometry(int ndim, const npy_intp *shape, const npy_intp *strides, npy_intp itemsize,
                                 int contiguous, int flags, const gc_norm *norm, const arg_name *who)
{
    npy_intp size = 1;
    for (int d = 0; d < ndim; d++)
        size *= shape[d];
    /* A contiguous array (in either order) has item-size strides and no self-overlap: only
     * views need the checks below. An empty array's strides are never used. */
    for (int d = 0; d < ndim && size > 0 && !contiguous; d++) {
        if (shape[d] > 1 && strides[d] % itemsize != 0) {
            PyErr_Format(PyExc_ValueError, "%s has a stride (%zd bytes) that is not a multiple of its item size",
                         NAME(who), (Py_ssize_t)strides[d]);
            return -1;
        }
    }
    if ((flags & NEED_WRITE) && !contiguous && size > 1) {
        const int overlap = self_overlap(ndim, shape, strides, itemsize);
        if (overlap < 0)
            return -1;
        if (overlap == 1) {
            PyErr_Format(PyExc_ValueError,
                         "%s has elements that share memory (a broadcast or as_strided view); "
                         "it cannot be modified in place",
                         NAME(who));
            return -1;
        }
        if (overlap == 2) {
            PyErr_Format(PyExc_ValueError,
                         "%s is a view whose elements may share memory, and with %zd elements it is too "
                         "large to check exactly; pass a copy (np.ascontiguousarray) instead",
                         NAME(who), (Py_ssize_t)size);
            return -1;
        }
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

static int not_aligned(const arg_name *who)
{
    PyErr_Format(PyExc_ValueError, "%s is not aligned in memory; pass an aligned copy", NAME(who));
    return -1;
}

int glue_check_array(PyArrayObject *a, int flags, const gc_norm *norm, const arg_name *who, gc_dtype *dtype)
{
    if (dtype_of(a, flags, who, dtype) < 0)
        return -1;
    if ((flags & NEED_WRITE) && !PyArray_ISWRITEABLE(a)) {
        PyErr_Format(PyExc_ValueError, "%s is read-only; gradients are modified in place", NAME(who));
        return -1;
    }
    if (!PyArray_ISALIGNED(a))
        return not_aligned(who);
    const int contiguous = PyArray_CHKFLAGS(a, NPY_ARRAY_C_CONTIGUOUS) || PyArray_CHKFLAGS(a, NPY_ARRAY_F_CONTIGUOUS);
    return check_geometry(PyArray_NDIM(a), PyArray_DIMS(a), PyArray_STRIDES(a), PyArray_ITEMSIZE(a), contiguous,
                          flags, norm, who);
}

/* A list of many small arrays is latency-bound: each item is an object, a block holding its
 * shape and strides, and its data, rarely all in cache. While item i is visited, ask for item
 * i + 16's object (both its lines), for item i + 8's shape block and the first line of its data,
 * and for the rest of item i + 4's data (its first kilobyte): each step reads only what an
 * earlier one has asked for. Shorter distances (8 and 4, the first line of data alone) left a
 * list of 1000 arrays 5-10 % slower right after torch had evicted it from the caches.
 * Hints only; the items are the list's own, alive while the GIL is held. */
void glue_prefetch_items(PyObject *seq, Py_ssize_t i)
{
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (i + 16 < n) {
        const char *obj = (const char *)PySequence_Fast_GET_ITEM(seq, i + 16);
        GC_PREFETCH(obj);
        GC_PREFETCH(obj + 64);
    }
    if (i + 8 < n) {
        PyObject *ahead = PySequence_Fast_GET_ITEM(seq, i + 8);
        if (PyArray_CheckExact(ahead)) {
            GC_PREFETCH(PyArray_DIMS((PyArrayObject *)ahead));
            GC_PREFETCH(PyArray_DATA((PyArrayObject *)ahead));
        }
    }
    if (i + 4 < n) {
        PyObject *near = PySequence_Fast_GET_ITEM(seq, i + 4);
        if (PyArray_CheckExact(near)) {
            const char *data = PyArray_DATA((PyArrayObject *)near);
            npy_intp bytes = PyArray_ITEMSIZE((PyArrayObject *)near);
            for (int d = 0; d < PyArray_NDIM((PyArrayObject *)near); d++)
                bytes *= PyArray_DIMS((PyArrayObject *)near)[d];
            for (npy_intp offset = 64; offset < bytes && offset < 1024; offset += 64)
                GC_PREFETCH(data + offset);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* A batch                                                                                   */

void glue_batch_release(batch *b)
{
    for (Py_ssize_t i = 0; i < b->n; i++)
        Py_DECREF(b->refs[i]);
    b->n = 0;
    Py_CLEAR(b->pins);
    gc_scratch_free(b->heap);
    gc_scratch_free(b->heap_dims);
    b->heap = b->heap_dims = NULL;
}

static int batch_reserve(batch *b, Py_ssize_t capacity)
{
    b->n = 0;
    b->elements = 0;
    b->single_precision = 1;
    b->holds_tensors = 0;
    b->pins = NULL;
    b->heap = b->heap_dims = NULL;
    b->dims = b->small_dims;
    b->dims_used = 0;
    b->dims_cap = SMALL_DIMS;
    if (capacity <= SMALL_ARRAYS) {
        b->refs = b->small_refs;
        b->origins = b->small_origins;
        b->arrays = b->small_arrays;
        b->norms = b->small_norms;
        return 0;
    }
    const size_t each = sizeof(PyObject *) + sizeof(item_origin) + sizeof(gc_array) + sizeof(double);
    if ((size_t)capacity > PY_SSIZE_T_MAX / each) {
        PyErr_NoMemory();
        return -1;
    }
    char *heap = gc_scratch_alloc((size_t)capacity * each);
    /* Room for the shape and stride of as many contiguous (1-D) arrays. */
    ptrdiff_t *dims = gc_scratch_alloc((size_t)capacity * 2 * sizeof(ptrdiff_t));
    if (heap == NULL || dims == NULL) {
        gc_scratch_free(heap);
        gc_scratch_free(dims);
        PyErr_NoMemory();
        return -1;
    }
    b->heap_dims = b->dims = dims;
    b->dims_cap = capacity * 2;
    b->heap = heap;
    b->arrays = (gc_array *)heap;
    b->norms = (double *)(heap + (size_t)capacity * sizeof(gc_array));
    b->origins = (item_origin *)(heap + (size_t)capacity * (sizeof(gc_array) + sizeof(double)));
    b->refs = (PyObject **)(heap + (size_t)capacity * (sizeof(gc_array) + sizeof(double) + sizeof(item_origin)));
    return 0;
}

/* Drops what describe() wrote of the arrays held (to describe them again). */
static void batch_forget_descriptions(batch *b)
{
    b->elements = 0;
    b->single_precision = 1;
    b->holds_tensors = 0;
    b->dims_used = 0;
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
    ptrdiff_t *dims = gc_scratch_alloc((size_t)cap * sizeof(ptrdiff_t));
    if (dims == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(dims, b->dims, (size_t)b->dims_used * sizeof(ptrdiff_t));
    gc_scratch_free(b->heap_dims);
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

/* Puts a validated array into the batch as array k: data, dtype, and its shape and strides
 * (bytes) over ndim dims, of `size` elements in all. */
static inline int put_array(batch *b, Py_ssize_t k, char *data, gc_dtype dtype, int ndim, const npy_intp *shape,
                            const npy_intp *strides, ptrdiff_t size, npy_intp itemsize, int contiguous)
{
    /* A contiguous array (in either order) is one run: describe it as 1-D, which makes every
     * later step trivial. The order elements are visited in changes nothing for elementwise
     * work, and for a reduction it is the memory order either way. */
    const int nd = contiguous ? 1 : ndim;
    if (batch_reserve_dims(b, nd) < 0)
        return -1;
    ptrdiff_t *dims = b->dims + b->dims_used;
    if (contiguous) {
        dims[0] = size;
        dims[1] = itemsize;
    }
    else {
        for (int d = 0; d < nd; d++) {
            dims[d] = shape[d];
            dims[nd + d] = strides[d];
        }
    }
    b->dims_used += 2 * nd;
    gc_array *desc = &b->arrays[k];
    desc->data = data;
    desc->dtype = dtype;
    desc->ndim = nd;
    desc->zero_dim = ndim == 0;
    b->elements += size;
    b->single_precision &= dtype != GC_FLOAT64 && dtype != GC_COMPLEX128;
    return 0;
}

/* A tensor held as it is (TENSOR_VIEWS) and found viewable by settle_tensors() after the last
 * Python code ran: described from DLPack's fill alone, which runs none. Out of line: its
 * glue_view (0.5 kB) in describe()'s frame cost every ndarray ~2 % on 1000 small arrays. */
__attribute__((noinline)) static int describe_tensor(const module_state *st, batch *b, Py_ssize_t k, int flags,
                                                     const gc_norm *norm, const arg_name *who)
{
    glue_view v;
    if (glue_tensor_view(st, b->refs[k], flags, 0, &v) != 1) { /* cannot happen: checked, nothing ran since */
        PyErr_Format(PyExc_SystemError, "%s: its DLPack view failed after it was checked", NAME(who));
        return -1;
    }
    b->holds_tensors = 1;
    const npy_intp align = gc_is_complex(v.dtype) ? v.itemsize / 2 : v.itemsize;
    if ((uintptr_t)v.data % (uintptr_t)align != 0)
        return not_aligned(who);
    if (check_geometry(v.ndim, v.shape, v.strides, v.itemsize, v.contiguous, flags, norm, who) < 0)
        return -1;
    return put_array(b, k, v.data, v.dtype, v.ndim, v.shape, v.strides, v.size, v.itemsize, v.contiguous);
}

/* Validates held array k and describes it to the kernels. Runs no Python code. */
static int describe(const module_state *st, batch *b, Py_ssize_t k, int flags, const gc_norm *norm,
                    const char *what)
{
    const arg_name who = {what, -1, b->origins[k].index, b->origins[k].via_grad};
    if (!PyArray_Check(b->refs[k]))
        return describe_tensor(st, b, k, flags, norm, &who);
    PyArrayObject *a = (PyArrayObject *)b->refs[k];
    gc_dtype dtype;
    if (glue_check_array(a, flags, norm, &who, &dtype) < 0)
        return -1;
    return put_array(b, k, PyArray_BYTES(a), dtype, PyArray_NDIM(a), PyArray_DIMS(a), PyArray_STRIDES(a),
                     glue_array_size(a), PyArray_ITEMSIZE(a), PyArray_IS_C_CONTIGUOUS(a) || PyArray_IS_F_CONTIGUOUS(a));
}

/* Hands a value that is not an exact ndarray to gradclip's converter (DLPack objects, ndarray
 * subclasses); returns a new reference to an ndarray, or NULL. The converter returns `value`
 * itself for a type it does not know: then the TypeError says what `who` must be (`expected`). */
static PyObject *convert(module_state *st, PyObject *value, int flags, const arg_name *who,
                         const char *expected)
{
    const int writable = (flags & NEED_WRITE) != 0;
    if (st->tensor_type != NULL && Py_TYPE(value) == (PyTypeObject *)st->tensor_type) {
        if ((flags & TENSOR_VIEWS) && st->dlpack_fill != NULL)
            return Py_NewRef(value); /* held as it is: see settle_tensors() */
        if (glue_tensor_memoryless(st, value)) {
            PyErr_Format(PyExc_TypeError,
                         "%s is a torch.Tensor with no memory of its own (a ZeroTensor, or a functionalized "
                         "or traced tensor); gradclip reads and writes a tensor's memory",
                         NAME(who));
            return NULL;
        }
        /* numpy() takes a tensor that requires grad under torch.no_grad(); writing to one is
         * refused anyway (by the converter, which says why). */
        PyObject *requires_grad = writable ? PyObject_GetAttr(value, st->str_requires_grad) : NULL;
        const int refuse = requires_grad == Py_True;
        if (requires_grad == NULL)
            PyErr_Clear();
        Py_XDECREF(requires_grad);
        PyObject *array = refuse ? NULL : PyObject_CallMethodNoArgs(value, st->str_numpy);
        if (array != NULL && PyArray_CheckExact(array))
            return array;
        Py_XDECREF(array);
        if (array == NULL && !refuse) {
            if (!PyErr_ExceptionMatches(PyExc_RuntimeError) && !PyErr_ExceptionMatches(PyExc_TypeError))
                return NULL;
            PyErr_Clear(); /* the converter says why */
        }
    }
    if (st->converter != NULL) {
        PyObject *array = PyObject_CallFunctionObjArgs(st->converter, value, writable ? Py_True : Py_False, NULL);
        if (array == NULL || PyArray_Check(array))
            return array;
        if (array != value) {
            PyErr_Format(PyExc_TypeError, "%s: the converter returned %.200s, not an ndarray", NAME(who),
                         Py_TYPE(array)->tp_name);
            Py_DECREF(array);
            return NULL;
        }
        Py_DECREF(array);
    }
    else if (PyArray_Check(value)) {
        return Py_NewRef(value);
    }
    /* Anything with .numpy() (a torch tensor): say how to pass it. */
    const int has_numpy = PyObject_HasAttrString(value, "numpy");
    PyErr_Format(PyExc_TypeError, "%s must be %s, not %.200s%s", NAME(who), expected, Py_TYPE(value)->tp_name,
                 has_numpy ? "; pass its .numpy() (a view of the same memory, no copy)" : "");
    return NULL;
}

/* Resolves item -> array (new reference), or Py_None (new reference) for a None gradient. */
static PyObject *resolve_item(module_state *st, PyObject *item, source_kind source, int flags,
                              const char *what, Py_ssize_t index, int *via_grad)
{
    *via_grad = 0;
    if (PyArray_CheckExact(item))
        return Py_NewRef(item);
    const arg_name who = {what, -1, index, 0}, grad_of = {what, -1, index, 1};
    if (source == SOURCE_TENSORS || PyArray_Check(item))
        return convert(st, item, flags, &who, "a NumPy ndarray");
    PyObject *grad = PyObject_GetAttr(item, st->str_grad);
    if (grad == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        /* an array-like without .grad is a gradient itself */
        return convert(st, item, flags, &who, "a NumPy ndarray or have a .grad attribute");
    }
    *via_grad = 1;
    if (grad == Py_None || PyArray_CheckExact(grad))
        return grad;
    PyObject *array = convert(st, grad, flags, &grad_of, "a NumPy ndarray or None");
    Py_DECREF(grad);
    return array;
}

/* The tensors held in b->refs (TENSOR_VIEWS) that cannot be described through DLPack (or all
 * of them while a torch function mode is on, whose Python code the flag checks would run)
 * converted the old way: numpy(), the converter, their errors. Those conversions run Python
 * code, which could change a tensor checked before, so the check is repeated until a pass
 * converts nothing: then every tensor left is viewable, and nothing has run since. */
static int settle_tensors(module_state *st, batch *b, int flags, const char *what)
{
    for (int converted = 1; converted;) {
        converted = 0;
        const int mode = glue_torch_function_mode(st);
        for (Py_ssize_t k = 0; k < b->n; k++) {
            PyObject *tensor = b->refs[k];
            glue_view unused;
            if (PyArray_Check(tensor) || (!mode && glue_tensor_view(st, tensor, flags, 1, &unused) == 1))
                continue;
            const arg_name who = {what, -1, b->origins[k].index, b->origins[k].via_grad};
            PyObject *array = convert(st, tensor, flags & ~TENSOR_VIEWS, &who, "a NumPy ndarray");
            if (array == NULL)
                return -1;
            b->refs[k] = array;
            Py_DECREF(tensor);
            converted = 1;
        }
    }
    return 0;
}

/* The storages of the tensors left to describe, held in b->pins: another thread's t.set_() or
 * t.data = ... then leaves the memory the kernels use alive. No garbage collection may run
 * meanwhile (its callbacks are Python code that could rebind a tensor pinned before);
 * untyped_storage() and the list run no other. */
static int pin_tensors(const module_state *st, batch *b)
{
    const int collecting = PyGC_Disable();
    int status = 0;
    for (Py_ssize_t k = 0; k < b->n && status == 0; k++) {
        if (!PyArray_Check(b->refs[k]))
            status = glue_tensor_pin(st, b->refs[k], &b->pins);
    }
    if (collecting)
        PyGC_Enable();
    return status;
}

int glue_collect(module_state *st, batch *b, PyObject *obj, source_kind source, int flags, const gc_norm *norm,
                 const char *what)
{
    if (PyArray_Check(obj)) {
        if (batch_reserve(b, 1) < 0)
            return -1;
        const arg_name who = {what, -1, -1, 0};
        PyObject *array = PyArray_CheckExact(obj) ? Py_NewRef(obj) : convert(st, obj, flags, &who, "a NumPy ndarray");
        if (array == NULL)
            return -1;
        b->refs[0] = array;
        b->origins[0] = (item_origin){-1, 0};
        b->n = 1;
        if (describe(st, b, 0, flags, norm, what) < 0)
            goto fail;
        batch_finish(b);
        return 0;
    }
    if (!PyList_Check(obj) && !PyTuple_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an ndarray or a list or tuple, not %.200s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    /* Resolve every item first, holding a reference to each array: a .grad property or a
     * conversion may run arbitrary code (resize or re-flag an array seen before, mutate the
     * list), and all of it must be over before the first array is validated. Items are re-read
     * by index, as the list may change under us. */
    const Py_ssize_t capacity = PySequence_Fast_GET_SIZE(obj);
    if (batch_reserve(b, capacity) < 0)
        return -1;
    int held_tensors = 0; /* tensors held as they are, to be described through DLPack */
    /* While every item so far is an exact ndarray, resolving them has run no Python code, so
     * each can be described as it is met, in the same visit (a list of many small arrays is
     * bound by the visits). The first item that could run code (or an array that fails its
     * checks, whose error must wait until every item is resolved) ends that: the arrays are
     * then all described again after the loop, as every list used to be. */
    int described = 1;
    for (Py_ssize_t i = 0; i < capacity && i < PySequence_Fast_GET_SIZE(obj); i++) {
        glue_prefetch_items(obj, i);
        if (described && PyArray_CheckExact(PySequence_Fast_GET_ITEM(obj, i))) {
            const Py_ssize_t k = b->n++;
            b->refs[k] = Py_NewRef(PySequence_Fast_GET_ITEM(obj, i));
            b->origins[k] = (item_origin){i, 0};
            if (describe(st, b, k, flags, norm, what) < 0) {
                PyErr_Clear(); /* raised again by the describing after the loop */
                described = 0;
            }
            continue;
        }
        described = 0;
        PyObject *item = Py_NewRef(PySequence_Fast_GET_ITEM(obj, i));
        int via_grad;
        PyObject *array = resolve_item(st, item, source, flags, what, i, &via_grad);
        Py_DECREF(item);
        if (array == NULL) {
            /* The old way converted the tensors before this item as it met them, so their
             * errors come first; else this item's. */
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            if (held_tensors && settle_tensors(st, b, flags, what) < 0) {
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(traceback);
            }
            else {
                PyErr_Restore(type, value, traceback);
            }
            goto fail;
        }
        if (array == Py_None) {
            Py_DECREF(array);
            continue;
        }
        held_tensors |= !PyArray_Check(array);
        b->refs[b->n] = array;
        b->origins[b->n] = (item_origin){i, via_grad};
        b->n++;
    }
    if (held_tensors && (settle_tensors(st, b, flags, what) < 0 || pin_tensors(st, b) < 0))
        goto fail;
    /* From here on no Python code runs until the kernels are done with the arrays. */
    if (!described) {
        batch_forget_descriptions(b);
        for (Py_ssize_t k = 0; k < b->n; k++) {
            if (describe(st, b, k, flags, norm, what) < 0)
                goto fail;
        }
    }
    batch_finish(b);
    return 0;
fail:
    glue_batch_release(b);
    return -1;
}
