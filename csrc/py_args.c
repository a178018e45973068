/* Scalar arguments of the entry points. */
#include "py_glue.h"

int glue_check_nargs(const char *fname, Py_ssize_t nargs, Py_ssize_t expected)
{
    if (nargs != expected) {
        PyErr_Format(PyExc_TypeError, "%s() takes exactly %zd positional arguments (%zd given)", fname, expected,
                     nargs);
        return -1;
    }
    return 0;
}

int glue_parse_real(PyObject *obj, const char *name, double *out)
{
    if (PyFloat_CheckExact(obj)) {
        *out = PyFloat_AS_DOUBLE(obj);
        return 0;
    }
    int is_real = !PyBool_Check(obj) && !PyComplex_Check(obj) && !PyArray_IsScalar(obj, ComplexFloating) &&
                  !PyArray_IsScalar(obj, Bool) && Py_TYPE(obj)->tp_as_number != NULL &&
                  Py_TYPE(obj)->tp_as_number->nb_float != NULL;
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

int glue_parse_nonnegative(PyObject *obj, const char *name, double *out)
{
    if (glue_parse_real(obj, name, out) < 0)
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

int glue_parse_norm_type(PyObject *obj, gc_norm *norm)
{
    double p;
    if (glue_parse_real(obj, "norm_type", &p) < 0)
        return -1;
    if (p != p) {
        PyErr_SetString(PyExc_ValueError, "norm_type must not be NaN");
        return -1;
    }
    *norm = gc_norm_from_p(p);
    return 0;
}

int glue_parse_bool(PyObject *obj, int *out)
{
    const int value = PyObject_IsTrue(obj);
    if (value < 0)
        return -1;
    *out = value;
    return 0;
}

int glue_check_sequence(PyObject *obj, const char *name, Py_ssize_t n, int need_list)
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
