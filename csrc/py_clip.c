/* The clipping and norm entry points. */
#include "py_glue.h"

#include <math.h>

PyObject *glue_float_scalar(double value, int single)
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

/* torch's error for a non-finite total, when asked for. */
int glue_check_finite(double total, const gc_norm *norm, int error_if_nonfinite)
{
    if (!error_if_nonfinite || isfinite(total))
        return 0;
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

/* The total norm of b, rounded to its dtype (float32 unless an array is float64/complex128),
 * with torch's error for a non-finite total when asked. */
static int compute_total(batch *b, const gc_norm *norm, int error_if_nonfinite, double *total)
{
    if (b->n == 0) {
        *total = 0.0;
        return 0;
    }
    if (GLUE_RELEASES_GIL(b)) {
        Py_BEGIN_ALLOW_THREADS
        *total = gc_total_norm(b->arrays, (size_t)b->n, norm, b->norms);
        Py_END_ALLOW_THREADS
    }
    else {
        *total = gc_total_norm(b->arrays, (size_t)b->n, norm, b->norms);
    }
    if (b->single_precision)
        *total = (double)(float)*total;
    return glue_check_finite(*total, norm, error_if_nonfinite);
}

static void run_scale(batch *b, double coef)
{
    if (GLUE_RELEASES_GIL(b)) {
        Py_BEGIN_ALLOW_THREADS
        gc_scale(b->arrays, (size_t)b->n, coef);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_scale(b->arrays, (size_t)b->n, coef);
    }
}

/* Whether clip_grad_norm_ may leave out its scaling pass: when nothing is clipped (a coefficient
 * of exactly 1), multiplying a real element by 1 changes no bit unless it is a signalling NaN,
 * and a finite total of a p-norm with p > 0 means no element is NaN or infinite. (torch's mul_
 * by 1 reads and writes every gradient for nothing; the common case of a training step that
 * is not clipped then costs one pass over the gradients instead of three.) A complex element
 * times 1 is (re*1 - im*0, re*0 + im*1), which can turn -0 into +0: those lists are scaled. */
static int skip_unit_scale(const batch *b, const gc_norm *norm, double total, double coef)
{
    if (!(coef == 1.0 && norm->p > 0.0 && isfinite(total)))
        return 0;
    for (Py_ssize_t i = 0; i < b->n; i++) {
        if (gc_is_complex(b->arrays[i].dtype))
            return 0;
    }
    return 1;
}

/* total_norm(tensors, norm_type, error_if_nonfinite) -> float32 or float64 scalar */
PyObject *py_total_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int error_if_nonfinite;
    batch b;
    double total;
    if (glue_check_nargs("total_norm", nargs, 3) < 0 || glue_parse_norm_type(args[1], &norm) < 0 ||
        glue_parse_bool(args[2], &error_if_nonfinite) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_TENSORS, TENSOR_VIEWS | ALLOW_COMPLEX, &norm, "tensors") < 0)
        return NULL;
    const int rc = compute_total(&b, &norm, error_if_nonfinite, &total);
    const int single = b.single_precision;
    glue_batch_release(&b);
    return rc < 0 ? NULL : glue_float_scalar(total, single);
}

/* The arguments shared by clip_grad_norm and total_norm_and_coef:
 * (parameters, max_norm, norm_type, error_if_nonfinite). */
static int parse_clip_norm_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, double *max_norm,
                                gc_norm *norm, int *error_if_nonfinite)
{
    if (glue_check_nargs(fname, nargs, 4) < 0 || glue_parse_nonnegative(args[1], "max_norm", max_norm) < 0 ||
        glue_parse_norm_type(args[2], norm) < 0 || glue_parse_bool(args[3], error_if_nonfinite) < 0)
        return -1;
    return 0;
}

/* total_norm_and_coef(parameters, max_norm, norm_type, error_if_nonfinite, need_write)
 *     -> (total, coef, unit)
 * The clipping coefficient clip_grad_norm_ would apply, without modifying anything; `unit`
 * says whether scaling by it changes no bit (clip_grad_norm_ then leaves its pass out, and a
 * fused step can leave out the scaling and the write-back). With need_write the gradients
 * must be writable (as for clip_grad_norm_), whether or not they will be written. */
PyObject *py_total_norm_and_coef(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int error_if_nonfinite, need_write;
    double max_norm, total;
    batch b;
    if (glue_check_nargs("total_norm_and_coef", nargs, 5) < 0 ||
        parse_clip_norm_args("total_norm_and_coef", args, 4, &max_norm, &norm, &error_if_nonfinite) < 0 ||
        glue_parse_bool(args[4], &need_write) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_GRADS, TENSOR_VIEWS | (need_write ? NEED_WRITE : 0) | ALLOW_COMPLEX,
                     &norm, "parameters") < 0)
        return NULL;
    const int rc = compute_total(&b, &norm, error_if_nonfinite, &total);
    const int single = b.single_precision;
    const double coef = rc < 0 ? 0.0 : gc_clip_coef(total, max_norm, single);
    const int unit = rc < 0 ? 0 : skip_unit_scale(&b, &norm, total, coef);
    glue_batch_release(&b);
    if (rc < 0)
        return NULL;
    PyObject *scalar = glue_float_scalar(total, single);
    if (scalar == NULL)
        return NULL;
    return Py_BuildValue("(NdN)", scalar, coef, PyBool_FromLong(unit));
}

/* clip_grad_norm(parameters, max_norm, norm_type, error_if_nonfinite) -> total norm */
PyObject *py_clip_grad_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int error_if_nonfinite;
    double max_norm, total;
    batch b;
    if (parse_clip_norm_args("clip_grad_norm", args, nargs, &max_norm, &norm, &error_if_nonfinite) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_GRADS, TENSOR_VIEWS | NEED_WRITE | ALLOW_COMPLEX, &norm,
                     "parameters") < 0)
        return NULL;
    /* The whole reduction (and its error check) ends before the first write. */
    const int single = b.single_precision;
    if (compute_total(&b, &norm, error_if_nonfinite, &total) < 0) {
        glue_batch_release(&b);
        return NULL;
    }
    const double coef = gc_clip_coef(total, max_norm, single);
    if (!skip_unit_scale(&b, &norm, total, coef))
        run_scale(&b, coef);
    glue_batch_release(&b);
    return glue_float_scalar(total, single);
}

/* clip_grads_with_norm(parameters, max_norm, total_norm, single) -> None
 * `single` says whether the total is float32 (the coefficient is then computed in float32). */
PyObject *py_clip_grads_with_norm(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double max_norm, total;
    int single;
    batch b;
    if (glue_check_nargs("clip_grads_with_norm", nargs, 4) < 0 ||
        glue_parse_nonnegative(args[1], "max_norm", &max_norm) < 0 ||
        glue_parse_real(args[2], "total_norm", &total) < 0 || glue_parse_bool(args[3], &single) < 0)
        return NULL;
    if (total < 0.0) {
        /* A norm is never negative; torch would flip every gradient. NaN passes, as in torch. */
        PyErr_Format(PyExc_ValueError, "total_norm must not be negative, got %R", args[2]);
        return NULL;
    }
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_GRADS, TENSOR_VIEWS | NEED_WRITE | ALLOW_COMPLEX, NULL,
                     "parameters") < 0)
        return NULL;
    if (b.n > 0)
        run_scale(&b, gc_clip_coef(total, max_norm, single));
    glue_batch_release(&b);
    Py_RETURN_NONE;
}

/* clip_grad_value(parameters, clip_value) -> None */
PyObject *py_clip_grad_value(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    double clip_value;
    batch b;
    if (glue_check_nargs("clip_grad_value", nargs, 2) < 0 ||
        glue_parse_nonnegative(args[1], "clip_value", &clip_value) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_GRADS, TENSOR_VIEWS | NEED_WRITE, NULL, "parameters") < 0)
        return NULL;
    if (GLUE_RELEASES_GIL(&b)) {
        Py_BEGIN_ALLOW_THREADS
        gc_clamp(b.arrays, (size_t)b.n, -clip_value, clip_value);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_clamp(b.arrays, (size_t)b.n, -clip_value, clip_value);
    }
    glue_batch_release(&b);
    Py_RETURN_NONE;
}

/* array_norms(tensors, norm_type, raw) -> (float64 ndarray, single)
 * Each array's norm as the total uses it (raw: its accumulation before the final step), and
 * whether every array is single precision (the total is then rounded to float32). */
PyObject *py_array_norms(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    gc_norm norm;
    int raw;
    batch b;
    if (glue_check_nargs("array_norms", nargs, 3) < 0 || glue_parse_norm_type(args[1], &norm) < 0 ||
        glue_parse_bool(args[2], &raw) < 0)
        return NULL;
    if (glue_collect(glue_state(module), &b, args[0], SOURCE_TENSORS, TENSOR_VIEWS | ALLOW_COMPLEX, &norm, "tensors") < 0)
        return NULL;
    npy_intp n = b.n;
    PyObject *out = PyArray_SimpleNew(1, &n, NPY_DOUBLE);
    if (out == NULL) {
        glue_batch_release(&b);
        return NULL;
    }
    double *norms = PyArray_DATA((PyArrayObject *)out);
    if (GLUE_RELEASES_GIL(&b)) {
        Py_BEGIN_ALLOW_THREADS
        gc_array_norms(b.arrays, (size_t)b.n, &norm, norms, !raw);
        Py_END_ALLOW_THREADS
    }
    else {
        gc_array_norms(b.arrays, (size_t)b.n, &norm, norms, !raw);
    }
    const int single = b.single_precision;
    glue_batch_release(&b);
    return Py_BuildValue("(NO)", out, single ? Py_True : Py_False);
}

/* combine_norms(values, norm_type, raw, single) -> float32 or float64 scalar
 * The total from per-array norms (a 1-D float64 array, as array_norms returns them), exactly as
 * total_norm forms it; with raw, from accumulations combined in order. */
PyObject *py_combine_norms(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    gc_norm norm;
    int raw, single;
    if (glue_check_nargs("combine_norms", nargs, 4) < 0 || glue_parse_norm_type(args[1], &norm) < 0 ||
        glue_parse_bool(args[2], &raw) < 0 || glue_parse_bool(args[3], &single) < 0)
        return NULL;
    PyArrayObject *values = (PyArrayObject *)args[0];
    if (!PyArray_CheckExact(args[0]) || PyArray_TYPE(values) != NPY_DOUBLE || PyArray_NDIM(values) != 1 ||
        !PyArray_IS_C_CONTIGUOUS(values) || PyArray_ISBYTESWAPPED(values) || !PyArray_ISALIGNED(values)) {
        PyErr_SetString(PyExc_TypeError, "values must be a contiguous 1-D float64 ndarray");
        return NULL;
    }
    const double *v = PyArray_DATA(values);
    const size_t n = (size_t)PyArray_DIM(values, 0);
    double total = 0.0;
    if (n > 0)
        total = raw ? gc_raw_total(v, n, &norm) : gc_norms_total(v, n, &norm);
    return glue_float_scalar(single ? (double)(float)total : total, single);
}
