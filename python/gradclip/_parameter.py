"""`Parameter`: a NumPy array with a gradient slot, the stand-in for ``torch.nn.Parameter``."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["Parameter"]

_FLOAT_DTYPES = (
    np.dtype(np.float16),
    np.dtype(np.float32),
    np.dtype(np.float64),
    np.dtype(np.complex64),
    np.dtype(np.complex128),
)


def _check_float_array(value: Any, what: str) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{what} must be a NumPy ndarray, not {type(value).__name__}")
    if value.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"{what} must have dtype float16, float32, float64, complex64 or complex128 in "
            "native byte order, "
            f"got {value.dtype}"
        )
    return value


def _unwrap(value: Any) -> Any:
    if isinstance(value, Parameter):
        return value.data
    if isinstance(value, tuple):
        return tuple(_unwrap(v) for v in value)
    return value


class Parameter(NDArrayOperatorsMixin):
    """A trainable array and its gradient, as ``torch.nn.Parameter`` is to a tensor.

    Parameters
    ----------
    data : array_like
        The values. An ndarray is used as is, without a copy, so in-place updates by an
        optimizer are visible through the original array; anything else is converted with
        ``np.asarray`` (Python floats become float64, Python complex numbers complex128). The
        dtype must be float16, float32, float64, complex64 or complex128 (as torch, whose
        optimizers update complex parameters).

    Attributes
    ----------
    data : numpy.ndarray
        The values, updated in place by optimizers.
    grad : numpy.ndarray or None
        The gradient: ``None`` until set, then an array of the same shape and dtype as
        ``data``. Clipping functions modify it in place; optimizers skip a parameter whose
        ``grad`` is ``None``.

    Notes
    -----
    A Parameter takes part in NumPy expressions as its ``data`` does: ``W @ x``,
    ``np.tanh(W)``, ``np.asarray(W)``, ``W[0]`` and ``W -= 0.1 * dW`` (in place) all work.
    It is deliberately not an ndarray subclass, so that a list of Parameters is never
    mistaken for a list of gradients. Equality is elementwise (like arrays and tensors);
    hashing is by identity, so Parameters can key optimizer state.
    """

    # Plain slots, so that reading ``.data``/``.grad`` (what every clip and optimizer call does
    # for every parameter) is an attribute load, not a Python call; assignments are validated
    # by __setattr__.
    __slots__ = ("data", "grad", "__weakref__")
    data: np.ndarray
    grad: np.ndarray | None

    def __init__(self, data: object) -> None:
        array = data if isinstance(data, np.ndarray) else np.asarray(data)
        if array.dtype.kind in "iub" and not isinstance(data, np.ndarray):
            array = array.astype(np.float64)
        object.__setattr__(self, "data", _check_float_array(array, "Parameter data"))
        object.__setattr__(self, "grad", None)

    # Elementwise __eq__ from the mixin would otherwise make instances unhashable.
    __hash__ = object.__hash__  # pyright: ignore[reportAssignmentType]

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "data":
            value = _check_float_array(value, "Parameter data")
        elif name == "grad" and value is not None:
            _check_float_array(value, "Parameter.grad")
            if value.shape != self.data.shape:
                raise ValueError(
                    f"assigned grad has shape {value.shape}, but the parameter has shape "
                    f"{self.data.shape}"
                )
            if value.dtype != self.data.dtype:
                raise TypeError(
                    f"assigned grad has dtype {value.dtype}, but the parameter has dtype "
                    f"{self.data.dtype}"
                )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if name in ("data", "grad"):
            raise AttributeError(f"cannot delete Parameter.{name}; set grad to None instead")
        object.__delattr__(self, name)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def T(self) -> np.ndarray:
        return self.data.T

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Any) -> Any:
        return self.data[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self.data[index] = _unwrap(value)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        if dtype is None or np.dtype(dtype) == self.data.dtype:
            return self.data
        if copy is False:
            raise ValueError("a copy is needed to convert the Parameter to the requested dtype")
        return self.data.astype(dtype)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = _unwrap(out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            # In-place operators (W -= lr * dW) must keep the Parameter, not rebind to its data.
            return out[0] if len(out) == 1 else out
        return result

    def __repr__(self) -> str:
        body = np.array2string(self.data, prefix="Parameter(", separator=", ")
        grad = "None" if self.grad is None else "array(...)"
        return f"Parameter({body}, dtype={self.data.dtype}, grad={grad})"
