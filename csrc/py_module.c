/* gradclip._C: the module. Its state, its method table and its start-up. */
#define PY_GLUE_IMPORTS_NUMPY
#include "py_glue.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gc_blas.h"
#include "gc_optim.h"
#include "gc_parallel.h"
#include "gc_scratch.h"

module_state *glue_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
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

/* The truth of arg, passed to set(); for the switches below. */
static PyObject *set_switch(PyObject *arg, void (*set)(int))
{
    const int enabled = PyObject_IsTrue(arg);
    if (enabled < 0)
        return NULL;
    set(enabled);
    Py_RETURN_NONE;
}

/* _set_thread_pool(enabled) -> None: persistent worker threads (the default) or threads started
 * for each call; for benchmarks that compare the two in one process. */
static PyObject *py_set_thread_pool(PyObject *module, PyObject *arg)
{
    (void)module;
    return set_switch(arg, gc_set_thread_pool);
}

/* _set_adaptive_threads(enabled) -> None: use only the cores that look idle, or always
 * get_num_threads() threads (the default); for tests and benchmarks. */
static PyObject *py_set_adaptive_threads(PyObject *module, PyObject *arg)
{
    (void)module;
    return set_switch(arg, gc_set_adaptive_threads);
}

/* _blas_threads_callback(new_library) -> int: the address of gc_blas_threads_callback, for
 * gradclip.share_blas_threads to hand to OpenBLAS's openblas_set_threads_callback_function;
 * with new_library true (a library not hooked before), first registers the fork handling. */
static PyObject *py_blas_threads_callback(PyObject *module, PyObject *arg)
{
    (void)module;
    const int new_library = PyObject_IsTrue(arg);
    if (new_library < 0)
        return NULL;
    if (new_library && gc_blas_prepare_fork() < 0) {
        PyErr_SetString(PyExc_RuntimeError, "pthread_atfork failed: cannot share BLAS threads safely");
        return NULL;
    }
    return PyLong_FromVoidPtr((void *)(uintptr_t)gc_blas_threads_callback);
}

/* _blas_sections() -> int: parallel sections run through the callback so far (for tests). */
static PyObject *py_blas_sections(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(gc_blas_sections());
}

/* _set_long_spin(enabled) -> None: pool workers spin ~0.1 s after a job (while they run
 * OpenBLAS's sections: gradclip.share_blas_threads) or 0.1 ms (the default). */
static PyObject *py_set_long_spin(PyObject *module, PyObject *arg)
{
    (void)module;
    return set_switch(arg, gc_set_long_spin);
}

/* _scratch() -> (blocks in use, bytes kept): the scratch blocks calls keep between them; for
 * tests (nothing is in use between calls, whatever happened in them). */
static PyObject *py_scratch(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return Py_BuildValue("(in)", gc_scratch_in_use(), (Py_ssize_t)gc_scratch_kept_bytes());
}

/* Stores `value` (None: NULL) in one of the module state's object slots; `accepted` says
 * whether a value other than None is of the right kind, else TypeError(message). */
static PyObject *set_slot(PyObject **slot, PyObject *value, int accepted, const char *message)
{
    if (value != Py_None && !accepted) {
        PyErr_SetString(PyExc_TypeError, message);
        return NULL;
    }
    Py_XSETREF(*slot, value == Py_None ? NULL : Py_NewRef(value));
    Py_RETURN_NONE;
}

/* _set_converter(fn or None) -> None
 * fn(obj, writable) -> ndarray is called for list items (or their .grad) that are not exact
 * ndarrays: DLPack objects such as torch tensors, ndarray subclasses. */
static PyObject *py_set_converter(PyObject *module, PyObject *fn)
{
    module_state *st = glue_state(module);
    if (fn == Py_None) { /* no converter: no conversion at all, torch tensors included */
        Py_CLEAR(st->tensor_type);
        glue_tensor_setup(st, NULL);
    }
    return set_slot(&st->converter, fn, PyCallable_Check(fn), "the converter must be callable or None");
}

/* _set_tensor_type(torch.Tensor or None) -> None
 * Exact instances of the type are described through its DLPack C exchange API where it has
 * one (py_tensor.c), else viewed with their numpy() method, called from C: the converter's own
 * first step for a torch tensor, without the Python call around it. When neither applies
 * (requires_grad, another device, bfloat16, ...) the converter runs as before and says why. */
static PyObject *py_set_tensor_type(PyObject *module, PyObject *type)
{
    module_state *st = glue_state(module);
    PyObject *result = set_slot(&st->tensor_type, type, PyType_Check(type), "the tensor type must be a type or None");
    if (result != NULL && glue_tensor_setup(st, st->tensor_type) < 0)
        Py_CLEAR(result);
    return result;
}

#define FASTCALL(name, doc) {#name, (PyCFunction)(void (*)(void))py_##name, METH_FASTCALL, doc}
#define OPTIM_METHOD(name)                                                                                      \
    {#name "_step", (PyCFunction)(void (*)(void))py_##name##_step, METH_FASTCALL,                               \
     #name "_step(groups, grad_scale, write_back) -> buffers created; groups: tuples laid out as "             \
           "gc_optim_specs.c says"},

static PyMethodDef module_methods[] = {
    FASTCALL(total_norm, "total_norm(tensors, norm_type, error_if_nonfinite)"),
    FASTCALL(total_norm_and_coef,
             "total_norm_and_coef(parameters, max_norm, norm_type, error_if_nonfinite, need_write) -> (total, coef, unit)"),
    FASTCALL(clip_grad_norm, "clip_grad_norm(parameters, max_norm, norm_type, error_if_nonfinite)"),
    FASTCALL(clip_grads_with_norm, "clip_grads_with_norm(parameters, max_norm, total_norm, single)"),
    FASTCALL(clip_grad_value, "clip_grad_value(parameters, clip_value)"),
    FASTCALL(array_norms, "array_norms(tensors, norm_type, raw) -> (float64 norms, single)"),
    FASTCALL(combine_norms, "combine_norms(values, norm_type, raw, single) -> total"),
    FASTCALL(with_grads, "with_grads(params, parameter_type, given) -> (keys, values, grads)"),
    FASTCALL(clip_info, "clip_info(parameters, source_grads, norm_type, max_norms, group_sizes, mode, write) -> "
                        "(norms, totals, coefs, nonfinite_counts, skipped)"),
    FASTCALL(scale_by, "scale_by(parameters, coef)"),
    FASTCALL(clip_coef, "clip_coef(total_norm, max_norm, single) -> float"),
    FASTCALL(adaptive_clip, "adaptive_clip(values, grads, clip_factor, eps, norm_type, factors) -> None or factors"),
    FASTCALL(clip_per_example, "clip_per_example(per_example_grads, max_norm) -> (sums, norms)"),
    GC_OPTIMIZERS(OPTIM_METHOD)
    FASTCALL(list_dot, "list_dot(xs, ys) -> float: the dot product over all pairs (a side may be one flat array)"),
    FASTCALL(list_axpy, "list_axpy(ys, alpha, xs): ys += alpha * xs in place, as torch's add_(alpha=)"),
    FASTCALL(list_lerp, "list_lerp(xs, ends, weight): xs = xs.lerp(ends, weight) in place, as torch's lerp_"),
    FASTCALL(list_copy, "list_copy(dst, src): dst[...] = src; src items may have a .grad (None: zeros)"),
    {"set_num_threads", py_set_num_threads, METH_O, "set_num_threads(n)"},
    {"_set_thread_pool", py_set_thread_pool, METH_O, "_set_thread_pool(enabled)"},
    {"_set_adaptive_threads", py_set_adaptive_threads, METH_O, "_set_adaptive_threads(enabled)"},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"_set_converter", py_set_converter, METH_O, "_set_converter(fn)"},
    {"_set_long_spin", py_set_long_spin, METH_O, "_set_long_spin(enabled)"},
    {"_blas_threads_callback", py_blas_threads_callback, METH_O, "_blas_threads_callback(new_library) -> int"},
    {"_blas_sections", py_blas_sections, METH_NOARGS, "_blas_sections() -> int"},
    {"_scratch", py_scratch, METH_NOARGS, "_scratch() -> (blocks in use, bytes kept)"},
    {"_set_tensor_type", py_set_tensor_type, METH_O, "_set_tensor_type(type)"},
    {NULL, NULL, 0, NULL},
};

static int module_exec(PyObject *module)
{
    module_state *st = glue_state(module);
    if (PyArray_ImportNumPyAPI() < 0)
        return -1;
    st->str_grad = PyUnicode_InternFromString("grad");
    st->str_data = PyUnicode_InternFromString("data");
    st->str_numpy = PyUnicode_InternFromString("numpy");
    st->str_requires_grad = PyUnicode_InternFromString("requires_grad");
    st->converter = NULL;
    st->tensor_type = NULL;
    st->dlpack_capsule = st->tensor_is_neg = st->tensor_is_conj = st->function_mode_enabled = NULL;
    st->tensor_untyped_storage = NULL;
    st->dlpack_fill = NULL;
    if (st->str_grad == NULL || st->str_data == NULL || st->str_numpy == NULL || st->str_requires_grad == NULL)
        return -1;
    if (PyModule_AddIntConstant(module, "BLOCK", (long)GC_BLOCK) < 0)
        return -1;
    /* The loops are chosen once per process from the CPU; GRADCLIP_ISA=baseline forces the
     * portable ones (the test suite checks that both give identical results). */
    if (PyModule_AddStringConstant(module, "ISA", gc_select_isa(getenv("GRADCLIP_ISA"))) < 0)
        return -1;
    gc_init_num_threads(getenv("GRADCLIP_NUM_THREADS"));
    /* GRADCLIP_ADAPTIVE_THREADS=1: use only the cores that look idle (see gc_parallel.c). */
    const char *adaptive = getenv("GRADCLIP_ADAPTIVE_THREADS");
    if (adaptive != NULL && strcmp(adaptive, "1") == 0)
        gc_set_adaptive_threads(1);
    return 0;
}

static int module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = glue_state(module);
    Py_VISIT(st->str_grad);
    Py_VISIT(st->str_data);
    Py_VISIT(st->converter);
    Py_VISIT(st->tensor_type);
    Py_VISIT(st->str_numpy);
    Py_VISIT(st->dlpack_capsule);
    Py_VISIT(st->tensor_is_neg);
    Py_VISIT(st->tensor_untyped_storage);
    Py_VISIT(st->tensor_is_conj);
    Py_VISIT(st->function_mode_enabled);
    Py_VISIT(st->str_requires_grad);
    return 0;
}

static int module_clear(PyObject *module)
{
    module_state *st = glue_state(module);
    Py_CLEAR(st->str_grad);
    Py_CLEAR(st->str_data);
    Py_CLEAR(st->converter);
    Py_CLEAR(st->tensor_type);
    Py_CLEAR(st->str_numpy);
    glue_tensor_setup(st, NULL);
    Py_CLEAR(st->str_requires_grad);
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
