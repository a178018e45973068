/* torch tensors described without an ndarray, through the DLPack C exchange API.
 *
 * Viewing a tensor with Tensor.numpy() costs ~0.6 us (an argument parser and a new ndarray),
 * which on a list of 1000 small gradients is most of the call. torch (2.13 does) publishes, as
 * DLPack 1.x defines it, a table of C functions on the type (`__dlpack_c_exchange_api__`, a
 * capsule) whose dltensor_from_py_object_no_sync fills a caller's DLTensor: pointer, device,
 * dtype, shape and strides, borrowed from the tensor, valid while no Python code runs. For an
 * exact torch.Tensor that numpy() would view as it is (on the CPU, a dtype gradclip takes, no
 * requires_grad, no lazy negation or conjugation) the glue copies that description; the batch
 * holds the tensor and its untyped storage (glue_tensor_pin), so that a t.set_() elsewhere
 * cannot free the memory described. Everything else goes to numpy() and the converter, which
 * say why they refuse it. */
#include "py_glue.h"

#include <stdint.h>

/* The parts of dlpack.h (DLPack 1.x ABI) used here. */
typedef struct {
    int32_t device_type, device_id;
} dl_device;
typedef struct {
    uint8_t code, bits;
    uint16_t lanes;
} dl_dtype;
typedef struct {
    void *data;
    dl_device device;
    int32_t ndim;
    dl_dtype dtype;
    int64_t *shape, *strides; /* strides in elements; NULL means compact row-major */
    uint64_t byte_offset;
} dl_tensor;
typedef struct dl_api_header {
    struct {
        uint32_t major, minor;
    } version;
    struct dl_api_header *prev_api; /* an older major version's table, or NULL */
} dl_api_header;
typedef struct {
    dl_api_header header;
    void *managed_tensor_allocator;
    void *managed_tensor_from_py_object_no_sync;
    void *managed_tensor_to_py_object_no_sync;
    int (*dltensor_from_py_object_no_sync)(void *py_object, dl_tensor *out); /* may be NULL */
    void *current_work_stream;
} dl_exchange_api;

enum { DL_CPU = 1, DL_FLOAT = 2, DL_COMPLEX = 5 };

/* A new reference to type.name, or NULL with no exception set. */
static PyObject *lookup(PyObject *type, const char *name)
{
    PyObject *value = PyObject_GetAttrString(type, name);
    if (value == NULL)
        PyErr_Clear();
    return value;
}

int glue_tensor_setup(module_state *st, PyObject *type)
{
    Py_CLEAR(st->dlpack_capsule);
    Py_CLEAR(st->tensor_is_neg);
    Py_CLEAR(st->tensor_is_conj);
    Py_CLEAR(st->tensor_untyped_storage);
    Py_CLEAR(st->function_mode_enabled);
    st->dlpack_fill = NULL;
    if (type == NULL)
        return 0;
    PyObject *capsule = lookup(type, "__dlpack_c_exchange_api__");
    PyObject *is_neg = lookup(type, "is_neg"), *is_conj = lookup(type, "is_conj");
    PyObject *storage = lookup(type, "untyped_storage");
    PyObject *torch_c = PyImport_ImportModule("torch._C"); /* imported with torch.Tensor */
    if (torch_c == NULL)
        PyErr_Clear();
    PyObject *mode = torch_c != NULL ? lookup(torch_c, "_is_torch_function_mode_enabled") : NULL;
    Py_XDECREF(torch_c);
    const dl_exchange_api *api = NULL;
    if (capsule != NULL && PyCapsule_IsValid(capsule, "dlpack_exchange_api")) {
        /* A table of a newer major version links to the older ones it still serves. */
        for (const dl_api_header *h = PyCapsule_GetPointer(capsule, "dlpack_exchange_api"); h != NULL && api == NULL;
             h = h->prev_api) {
            if (h->version.major == 1)
                api = (const dl_exchange_api *)h;
        }
    }
    if (api == NULL || api->dltensor_from_py_object_no_sync == NULL || is_neg == NULL || is_conj == NULL ||
        storage == NULL || mode == NULL) {
        /* An older torch: numpy() for every tensor, as before. */
        Py_XDECREF(capsule);
        Py_XDECREF(is_neg);
        Py_XDECREF(is_conj);
        Py_XDECREF(storage);
        Py_XDECREF(mode);
        return 0;
    }
    st->dlpack_capsule = capsule; /* keeps the table alive (it is static in torch anyway) */
    st->dlpack_fill = (void *)api->dltensor_from_py_object_no_sync;
    st->tensor_is_neg = is_neg;
    st->tensor_is_conj = is_conj;
    st->tensor_untyped_storage = storage;
    st->function_mode_enabled = mode;
    return 0;
}

/* Fills *dl and *size (elements) from exact tensor t through the exchange API: 0, or -1 (no
 * exception set) when there is no API or it refuses (sparse, meta, ...: numpy() says why). */
static int fill(const module_state *st, PyObject *t, dl_tensor *dl, ptrdiff_t *size)
{
    if (st->dlpack_fill == NULL || ((int (*)(void *, dl_tensor *))st->dlpack_fill)(t, dl) != 0) {
        PyErr_Clear();
        return -1;
    }
    *size = 1;
    for (int d = 0; d < dl->ndim; d++)
        *size *= (ptrdiff_t)dl->shape[d];
    return 0;
}

int glue_tensor_memoryless(const module_state *st, PyObject *t)
{
    dl_tensor dl;
    ptrdiff_t size;
    return fill(st, t, &dl, &size) == 0 && dl.data == NULL && size > 0;
}

int glue_tensor_pin(const module_state *st, PyObject *t, PyObject **pins)
{
    if (*pins == NULL && (*pins = PyList_New(0)) == NULL)
        return -1;
    PyObject *storage = PyObject_CallOneArg(st->tensor_untyped_storage, t);
    if (storage == NULL)
        return -1;
    const int status = PyList_Append(*pins, storage);
    Py_DECREF(storage);
    return status;
}

int glue_torch_function_mode(const module_state *st)
{
    if (st->function_mode_enabled == NULL)
        return 1;
    PyObject *on = PyObject_CallNoArgs(st->function_mode_enabled);
    const int result = on != Py_False;
    Py_XDECREF(on);
    if (on == NULL)
        PyErr_Clear();
    return result;
}

/* The bool a method of the tensor type returns for t (looked up on the type, so nothing in the
 * instance's __dict__ can stand in for it); -1 if it fails. */
static int call_flag(PyObject *method, PyObject *t)
{
    PyObject *result = PyObject_CallOneArg(method, t);
    const int flag = result == Py_True ? 1 : result == Py_False ? 0 : -1;
    Py_XDECREF(result);
    return flag;
}

/* Contiguous in C or Fortran order, by NumPy's rule (dims of extent 1 do not count). */
static int is_contiguous(int ndim, const npy_intp *shape, const npy_intp *strides, npy_intp itemsize)
{
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0)
            return 1;
    }
    int c = 1, f = 1;
    npy_intp expect_c = itemsize, expect_f = itemsize;
    for (int d = 0; d < ndim; d++) {
        const int dc = ndim - 1 - d;
        if (shape[dc] != 1) {
            c &= strides[dc] == expect_c;
            expect_c *= shape[dc];
        }
        if (shape[d] != 1) {
            f &= strides[d] == expect_f;
            expect_f *= shape[d];
        }
    }
    return c || f;
}

int glue_tensor_view(const module_state *st, PyObject *t, int flags, int check_flags, glue_view *out)
{
    dl_tensor dl;
    ptrdiff_t size;
    if (st->tensor_type == NULL || Py_TYPE(t) != (PyTypeObject *)st->tensor_type || fill(st, t, &dl, &size) < 0)
        return 0;
    gc_dtype dtype;
    const int bits = dl.dtype.bits;
    if (dl.device.device_type != DL_CPU || dl.dtype.lanes != 1 || dl.ndim < 0 || dl.ndim > GLUE_MAXDIMS)
        return 0;
    if (dl.data == NULL && size > 0)
        return 0; /* no memory behind it (a ZeroTensor, a functionalized tensor) */
    if (dl.dtype.code == DL_FLOAT && (bits == 16 || bits == 32 || bits == 64))
        dtype = bits == 16 ? GC_FLOAT16 : bits == 32 ? GC_FLOAT32 : GC_FLOAT64;
    else if (dl.dtype.code == DL_COMPLEX && (bits == 64 || bits == 128) && (flags & ALLOW_COMPLEX))
        dtype = bits == 64 ? GC_COMPLEX64 : GC_COMPLEX128;
    else
        return 0; /* bfloat16, integers, or complex where it is refused: numpy()'s messages */
    /* What numpy() refuses: autograd's tensors, and lazy negation or conjugation (the memory
     * does not hold the values). requires_grad is a data descriptor of the type: no instance
     * attribute can shadow it. */
    if (check_flags) {
        PyObject *requires_grad = PyObject_GetAttr(t, st->str_requires_grad);
        const int plain = requires_grad == Py_False;
        Py_XDECREF(requires_grad);
        if (!plain || call_flag(st->tensor_is_neg, t) != 0 ||
            (gc_is_complex(dtype) && call_flag(st->tensor_is_conj, t) != 0)) {
            PyErr_Clear();
            return 0;
        }
    }
    const npy_intp itemsize = (npy_intp)gc_item_size(dtype);
    out->data = (char *)dl.data + dl.byte_offset;
    out->dtype = dtype;
    out->ndim = dl.ndim;
    out->itemsize = itemsize;
    out->size = size;
    npy_intp compact = itemsize;
    for (int d = dl.ndim - 1; d >= 0; d--) {
        out->shape[d] = (npy_intp)dl.shape[d];
        out->strides[d] = dl.strides != NULL ? (npy_intp)dl.strides[d] * itemsize : compact;
        compact *= out->shape[d];
    }
    out->contiguous = is_contiguous(out->ndim, out->shape, out->strides, itemsize);
    return 1;
}
