/* What the CPython/NumPy glue files (py_*.c) share. Only py_*.c include Python.h; the kernels
 * (gc_*.c) know nothing of Python.
 *
 *   py_module.c  the module: state, method table, start-up
 *   py_args.c    scalar arguments (reals, bools, norm types, argument counts)
 *   py_arrays.c  lists of arrays: resolving items, validating arrays, describing them to C
 *   py_clip.c    the clipping and norm entry points
 *   py_clip_extra.c  beyond torch: rich results, non-finite policies, per-group thresholds,
 *                adaptive (unit-wise) and per-example clipping
 *   py_optim.c   the optimizer entry points, one generic step driven by gc_optim_specs.c
 *   py_linalg.c  vector algebra over lists of arrays (dot, axpy, copy), for LBFGS
 *
 * Entry points are private and positional; keywords, defaults and documentation live in
 * python/gradclip. They still trust nothing: every argument is checked, every array is
 * validated before the first one is written, and the kernels run with the GIL released on
 * inputs large enough for that to pay.
 */
#ifndef PY_GLUE_H
#define PY_GLUE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define PY_ARRAY_UNIQUE_SYMBOL gradclip_ARRAY_API
#ifndef PY_GLUE_IMPORTS_NUMPY /* defined by py_module.c only, which imports the API */
#define NO_IMPORT_ARRAY
#endif
#include <numpy/arrayobject.h>
#include <numpy/arrayscalars.h>

#include "gc_clip.h"

/* Below this many elements releasing and re-acquiring the GIL costs more than it frees. */
#define GIL_RELEASE_ELEMENTS ((ptrdiff_t)1 << 15)
/* Whether the kernels over batch b run with the GIL released (see batch.holds_tensors). */
#define GLUE_RELEASES_GIL(b) ((b)->elements >= GIL_RELEASE_ELEMENTS && !(b)->holds_tensors)
/* b's element count for a helper that releases the GIL from GIL_RELEASE_ELEMENTS on. */
#define GLUE_GIL_ELEMENTS(b) ((b)->holds_tensors ? 0 : (b)->elements)

typedef struct {
    PyObject *str_grad;  /* interned "grad" */
    PyObject *str_data;  /* interned "data" */
    PyObject *converter; /* gradclip._interop's converter for non-ndarray items, or NULL */
    /* torch.Tensor once gradclip._interop has met torch (else NULL): exact instances are
     * viewed with their numpy() method from C, without a call into the converter. */
    PyObject *tensor_type;
    PyObject *str_numpy; /* interned "numpy" */
    /* With tensor_type, when it has the DLPack C exchange API (py_tensor.c): the capsule, its
     * dltensor_from_py_object_no_sync, and the type's is_neg / is_conj methods. */
    PyObject *dlpack_capsule;
    void *dlpack_fill;
    PyObject *tensor_is_neg, *tensor_is_conj;
    PyObject *tensor_untyped_storage; /* the type's untyped_storage method: pins the storage */
    PyObject *function_mode_enabled; /* torch._C._is_torch_function_mode_enabled */
    PyObject *str_requires_grad; /* interned "requires_grad" */
} module_state;

module_state *glue_state(PyObject *module);

/* ---- py_args.c ------------------------------------------------------------------------- */

int glue_check_nargs(const char *fname, Py_ssize_t nargs, Py_ssize_t expected);
/* A real number: float, int (not bool), NumPy real scalar or 0-d array, or anything else with
 * __float__ that is not complex. */
int glue_parse_real(PyObject *obj, const char *name, double *out);
int glue_parse_nonnegative(PyObject *obj, const char *name, double *out);
int glue_parse_norm_type(PyObject *obj, gc_norm *norm);
int glue_parse_bool(PyObject *obj, int *out);
/* A list (need_list) or a list or tuple, of n entries unless n < 0. */
int glue_check_sequence(PyObject *obj, const char *name, Py_ssize_t n, int need_list);

/* ---- py_arrays.c ----------------------------------------------------------------------- */

/* Who an array is, for error messages: "<what>[i]", "<what>[i].grad", a bare "<what>" for a
 * lone array (index < 0), prefixed with "groups[g]: " when group >= 0. Formatted only when an
 * error is raised: on the success path it costs nothing. */
typedef struct {
    const char *what;
    Py_ssize_t group, index;
    int via_grad;
} arg_name;

const char *glue_format_name(const arg_name *who, char *buf, size_t size);
/* The name as a temporary string, valid until the end of the enclosing block. */
#define NAME(who) glue_format_name((who), (char[160]){0}, 160)

enum {
    NEED_WRITE = 1,    /* modified in place */
    ALLOW_COMPLEX = 2, /* complex dtypes accepted */
    /* The caller reads only the batch's descriptors (b->arrays), never b->refs as ndarrays, so
     * a torch tensor may be held as it is and described through DLPack (py_tensor.c). */
    TENSOR_VIEWS = 4
};

/* Checks dtype, writeability, alignment, strides and (for written arrays) self-overlap; with a
 * norm, torch's error for an empty array under a norm without identity. */
int glue_check_array(PyArrayObject *a, int flags, const gc_norm *norm, const arg_name *who, gc_dtype *dtype);
npy_intp glue_array_size(PyArrayObject *a);
int glue_same_shape(PyArrayObject *a, PyArrayObject *b);
/* Hints to fetch items ahead while walking a long list of small arrays. */
void glue_prefetch_items(PyObject *seq, Py_ssize_t i);

typedef enum {
    SOURCE_GRADS,   /* items are gradients or objects with a .grad (None skipped) */
    SOURCE_TENSORS, /* items are the arrays themselves */
} source_kind;

typedef struct {
    Py_ssize_t index; /* position in the caller's list, or -1 for a lone array */
    int via_grad;     /* the array is that item's .grad */
} item_origin;

#define SMALL_ARRAYS 16
#define SMALL_DIMS 128

/* The arrays of one call: strong references plus plain-C descriptors of them (shape and
 * strides copied, so nothing Python owns is read while the GIL is released). Small calls use
 * the inline buffers and allocate nothing. */
typedef struct {
    Py_ssize_t n;
    ptrdiff_t elements;
    int single_precision; /* every array float16/float32/complex64 */
    /* Some array is a torch tensor described through DLPack (TENSOR_VIEWS). Its storage is
     * held in `pins` (so t.set_() or t.data = ... cannot free it), but a growing t.resize_()
     * would still move its memory; so the kernels keep the GIL, which makes Python threads
     * wait (torch's own in-place ops race another thread's resize_() alike). */
    int holds_tensors;
    PyObject *pins; /* a list of the described tensors' untyped storages, or NULL */
    PyObject **refs;
    item_origin *origins; /* where array k came from, for messages */
    gc_array *arrays;
    double *norms;
    ptrdiff_t *dims;
    Py_ssize_t dims_used, dims_cap;
    void *heap, *heap_dims;
    PyObject *small_refs[SMALL_ARRAYS];
    item_origin small_origins[SMALL_ARRAYS];
    gc_array small_arrays[SMALL_ARRAYS];
    double small_norms[SMALL_ARRAYS];
    ptrdiff_t small_dims[SMALL_DIMS];
} batch;

/* Fills b from `obj`: one ndarray, or a list or tuple of items (see source_kind). Every item
 * is resolved first (running any .grad property or conversion, holding a reference to each
 * array), and only then is every array validated and described: no Python code runs between
 * an array's validation and its use. On error b holds nothing and an exception is set. */
int glue_collect(module_state *st, batch *b, PyObject *obj, source_kind source, int flags, const gc_norm *norm,
                 const char *what);
void glue_batch_release(batch *b);

/* ---- py_tensor.c ----------------------------------------------------------------------- */

/* At most as many dims as numpy() takes on every NumPy version (NumPy 1.x has no more). */
#define GLUE_MAXDIMS 32

/* A tensor's memory as the kernels need it: strides in bytes. */
typedef struct {
    char *data;
    gc_dtype dtype;
    int ndim, contiguous; /* contiguous: in C or Fortran order */
    npy_intp itemsize, size;
    npy_intp shape[GLUE_MAXDIMS], strides[GLUE_MAXDIMS];
} glue_view;

/* Looks up `type`'s DLPack C exchange API (NULL or a type without one: none). */
int glue_tensor_setup(module_state *st, PyObject *type);
/* 1 and *out filled when t is an exact tensor that numpy() would view as it is and `flags`
 * accept (CPU memory, float16/32/64 or an allowed complex dtype and, with check_flags, no
 * requires_grad and no negative or conjugate bit); 0 otherwise (numpy() and the converter
 * then say why). Leaves no exception set. Without check_flags it runs no Python code; the
 * flag checks run none unless a torch function mode is on (glue_torch_function_mode). */
int glue_tensor_view(const module_state *st, PyObject *t, int flags, int check_flags, glue_view *out);
/* Whether t (an exact tensor) has elements but no memory (a ZeroTensor, a functionalized
 * tensor), whose numpy() would give a view of some other memory. */
int glue_tensor_memoryless(const module_state *st, PyObject *t);
/* Appends t's untyped storage (a new list at *pins if NULL) so that its memory outlives a
 * t.set_(); 0, or -1 with an exception set. */
int glue_tensor_pin(const module_state *st, PyObject *t, PyObject **pins);
/* Whether a torch function mode is on (1; also when that cannot be told) or not (0). */
int glue_torch_function_mode(const module_state *st);

/* ---- py_clip.c ------------------------------------------------------------------------- */

/* A float32 (single) or float64 NumPy scalar. */
PyObject *glue_float_scalar(double value, int single);
/* torch's RuntimeError for a non-finite total norm, when error_if_nonfinite is set. */
int glue_check_finite(double total, const gc_norm *norm, int error_if_nonfinite);

/* ---- entry points (METH_FASTCALL), listed in py_module.c --------------------------------- */

#define GLUE_ENTRY(name) PyObject *py_##name(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
GLUE_ENTRY(total_norm);
GLUE_ENTRY(total_norm_and_coef);
GLUE_ENTRY(clip_grad_norm);
GLUE_ENTRY(clip_grads_with_norm);
GLUE_ENTRY(clip_grad_value);
GLUE_ENTRY(array_norms);
GLUE_ENTRY(combine_norms);
GLUE_ENTRY(with_grads);
/* py_clip_extra.c */
GLUE_ENTRY(clip_info);
GLUE_ENTRY(scale_by);
GLUE_ENTRY(clip_coef);
GLUE_ENTRY(adaptive_clip);
GLUE_ENTRY(clip_per_example);
GLUE_ENTRY(list_dot);
GLUE_ENTRY(list_axpy);
GLUE_ENTRY(list_copy);
GLUE_ENTRY(list_lerp);
#define GLUE_OPTIM_ENTRY(name) GLUE_ENTRY(name##_step);
#include "gc_optim.h"
GC_OPTIMIZERS(GLUE_OPTIM_ENTRY)
#undef GLUE_OPTIM_ENTRY

#endif /* PY_GLUE_H */
