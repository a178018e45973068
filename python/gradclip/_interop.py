"""Other array types as gradients: torch CPU tensors and any DLPack exporter, without copies.

The C layer takes exact ndarrays. For anything else found among the items of a clipping call
(an item of ``tensors``, or the ``.grad`` of an item of ``parameters``) it calls
:func:`convert` first, through the hook registered with ``_C._set_converter`` when gradclip is
imported, and uses the ndarray returned. Nothing here imports torch: a torch object is
recognised through ``sys.modules``, which holds torch only if the caller imported it.

Once torch has been seen, the C layer handles the common case itself (``_C._set_tensor_type``):
in the clipping and norm functions an exact ``torch.Tensor`` that ``numpy()`` would view as it
is (CPU, float16/32/64 or complex, no ``requires_grad``, no negative or conjugate bit) is
described from the DLTensor torch fills through DLPack's C exchange API
(``torch.Tensor.__dlpack_c_exchange_api__``, which torch 2.13 has), with no ndarray made; other
entry points, and torch versions without that API, call ``numpy()`` from C. Whatever neither
takes comes here, so the errors below are the only ones a tensor can meet.

What is accepted, and what is refused (so that nothing is silently copied or ignored):

- a torch CPU tensor (a ``torch.nn.Parameter``'s ``.grad``): viewed with ``Tensor.numpy()``,
  the memory NumPy and torch share, so in-place clipping writes into the tensor itself;
- another object with ``__dlpack__`` on the CPU (JAX, CuPy host arrays, ...): viewed with
  ``np.from_dlpack``, sharing memory;
- a read-only export (JAX arrays, read-only NumPy arrays behind a wrapper, and with NumPy
  1.x every DLPack import but torch's): fine for the norm functions, ``ValueError`` for the
  in-place ones;
- a tensor on another device (CUDA, MPS, ...): ``ValueError`` -- gradclip works on host
  memory, and a copy would make in-place clipping a no-op;
- a torch tensor that requires grad: the norm functions read it (through ``detach()``, which
  shares memory); the in-place ones refuse it (``ValueError``), since writing behind
  autograd's back would corrupt the graph. torch's own gradients (``p.grad``) do not require
  grad;
- ``numpy.ma.MaskedArray``: refused (``TypeError``). Its mask would be ignored: masked
  elements would count in the norm and be scaled. Pass ``m.data`` (every element, in place)
  or ``m.compressed()`` (the unmasked ones, a copy, for the norm functions) explicitly;
- other ndarray subclasses (``np.matrix``, ``np.memmap``, ...): used through a base-class
  view of the same memory;
- anything else is returned unchanged, and the C layer raises its usual ``TypeError`` naming
  the argument and index.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

__all__ = ["convert"]

_KDLCPU = 1
_NUMPY_1 = np.lib.NumpyVersion(np.__version__) < "2.0.0"
_OLD_NUMPY_NOTE = (
    f" (NumPy {np.__version__}'s from_dlpack marks every import read-only; NumPy >= 2 "
    "keeps a writable export writable)"
)
# DLDeviceType values (dlpack.h) for the messages; anything but kDLCPU is refused.
_DEVICE_NAMES = {
    2: "CUDA", 3: "CUDA host (pinned)", 4: "OpenCL", 7: "Vulkan", 8: "Metal", 9: "VPI",
    10: "ROCm", 11: "ROCm host", 12: "external DMA", 13: "CUDA managed", 14: "oneAPI",
    15: "WebGPU", 16: "Hexagon", 17: "MAIA",
}


def _typename(obj: object) -> str:
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


_tensor_type: type | None = None
_registered: Any = None  # the C module whose converter is convert()


def _torch_tensor(obj: object) -> bool:
    global _tensor_type
    if _tensor_type is None:
        torch = sys.modules.get("torch")  # never imported here: only if the caller did
        tensor_type = getattr(torch, "Tensor", None)
        if not isinstance(tensor_type, type):
            return False
        _tensor_type = tensor_type
        if _registered is not None:
            # From now on the C layer views exact torch.Tensor items itself (numpy(), as
            # convert() does first), and calls convert() only for the rest.
            _registered._set_tensor_type(tensor_type)
    return isinstance(obj, _tensor_type)


def _from_torch(obj: Any, writable: bool) -> np.ndarray:
    tensor = obj
    device = tensor.device
    if device.type != "cpu":
        raise ValueError(
            f"gradclip works on CPU memory, but got a {_typename(obj)} on device {device}; "
            "a copy would not be clipped in place (clip it with torch.nn.utils, or move the "
            "model to the CPU first)"
        )
    if tensor.layout is not sys.modules["torch"].strided:
        raise TypeError(f"gradclip needs a dense (strided) tensor, got layout {tensor.layout}")
    if tensor.requires_grad:
        if writable:
            raise ValueError(
                f"cannot modify a {_typename(obj)} that requires grad in place: that would "
                "bypass autograd. Clip the gradients (p.grad, or the parameters themselves, "
                "whose .grad is used), or pass tensor.detach() if you really mean it"
            )
        tensor = tensor.detach()  # same memory, read only
    if tensor.is_conj() or tensor.is_neg():
        # A lazy conjugate/negation is not the memory's values: no view of it exists.
        if writable:
            raise ValueError(
                f"cannot modify a {_typename(obj)} with the conjugate or negative bit set in "
                "place; call resolve_conj()/resolve_neg() on it first"
            )
        tensor = tensor.resolve_conj().resolve_neg()  # a copy: only read
    # Tensor.numpy() is the view NumPy and torch share (the same memory as DLPack would give),
    # writable on every NumPy version; NumPy 1.x's from_dlpack marks every import read-only.
    try:
        array: np.ndarray = tensor.numpy()
    except TypeError as exc:  # "Got unsupported ScalarType BFloat16"
        raise TypeError(
            f"a {_typename(obj)} with dtype {tensor.dtype} has no NumPy equivalent ({exc}); "
            "gradclip supports float16, float32, float64, complex64 and complex128"
        ) from exc
    return array


def _from_dlpack(exporter: Any, obj: object, writable: bool) -> np.ndarray:
    try:
        device_type, device_id = exporter.__dlpack_device__()
    except AttributeError:
        device_type, device_id = _KDLCPU, 0  # the protocol requires it; assume the host
    if int(device_type) != _KDLCPU:
        name = _DEVICE_NAMES.get(int(device_type), f"DLPack device type {int(device_type)}")
        raise ValueError(
            f"gradclip works on CPU memory, but got a {_typename(obj)} on {name} device "
            f"{device_id}; move it to the CPU first (a copy is not clipped in place)"
        )
    try:
        array = np.from_dlpack(exporter)
    except BufferError as exc:
        raise ValueError(f"cannot view a {_typename(obj)} as a NumPy array: {exc}") from exc
    except RuntimeError as exc:  # NumPy: "Unsupported dtype in DLTensor."
        dtype = getattr(obj, "dtype", "?")
        raise TypeError(
            f"a {_typename(obj)} with dtype {dtype} has no NumPy equivalent ({exc}); "
            "gradclip supports float16, float32, float64, complex64 and complex128"
        ) from exc
    if writable and not array.flags.writeable:
        raise ValueError(
            f"the {_typename(obj)} is exported read-only (DLPack), so it cannot be clipped in "
            "place; the norm functions (get_total_norm) accept it"
            + (_OLD_NUMPY_NOTE if _NUMPY_1 else "")
        )
    return array


def convert(obj: object, writable: bool) -> object:
    """The ndarray sharing ``obj``'s memory, for the C layer (see the module docstring).

    Parameters
    ----------
    obj : object
        An item that is not an exact ndarray (and not None).
    writable : bool
        True when the caller modifies the array in place.

    Returns
    -------
    numpy.ndarray or object
        A view of ``obj``'s memory; ``obj`` itself when it is no array type this module knows
        (the C layer then raises its ``TypeError``).

    Examples
    --------
    >>> import numpy as np
    >>> from gradclip._interop import convert
    >>> m = np.ma.masked_array([1.0, 2.0], mask=[False, True])
    >>> convert(m, False)
    Traceback (most recent call last):
    ...
    TypeError: numpy.ma.MaskedArray is not supported: its mask would be ignored ...
    """
    if isinstance(obj, np.ndarray):
        if isinstance(obj, np.ma.MaskedArray):
            raise TypeError(
                "numpy.ma.MaskedArray is not supported: its mask would be ignored (masked "
                "elements would count in the norm and be scaled). Pass m.data to clip every "
                "element in place, or m.compressed() to measure only the unmasked ones"
            )
        return obj.view(np.ndarray)
    if _torch_tensor(obj):
        # numpy() takes a tensor that requires grad under torch.no_grad(): never for writing.
        if not (writable and obj.requires_grad):  # type: ignore[attr-defined]
            try:
                # The common case, a plain CPU tensor (p.grad): the view NumPy and torch share.
                # numpy() refuses every other case (another device, requires_grad, a conjugate
                # or negative bit, sparse, bfloat16); _from_torch then says why, or reads a view.
                return obj.numpy()  # type: ignore[attr-defined]
            except (RuntimeError, TypeError):
                pass
        return _from_torch(obj, writable)
    if hasattr(type(obj), "__dlpack__"):
        return _from_dlpack(obj, obj, writable)
    return obj


def is_single_array(obj: object) -> bool:
    """True for one array object (to be wrapped as a one-item list), False for a container.

    ``torch.Tensor`` and other DLPack exporters are iterable, row by row; torch treats a
    tensor passed as ``parameters`` as one parameter, and so does gradclip.
    """
    return isinstance(obj, np.ndarray) or hasattr(type(obj), "__dlpack__")


def register(module: Any) -> None:
    """Install :func:`convert` as the C layer's converter."""
    global _registered
    module._set_converter(convert)
    _registered = module
    if _tensor_type is not None:
        module._set_tensor_type(_tensor_type)
