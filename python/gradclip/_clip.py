"""Gradient-norm utilities with ``torch.nn.utils``'s names, arguments and numbers.

The arithmetic happens in one C call per function (``gradclip._C``); this module only turns
torch's flexible argument forms into the list or array the C layer takes, and documents them.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterable
from typing import Any, Literal, TypeAlias, Union, overload

import numpy as np

from . import _C, _clipinfo, _interop
from ._clipinfo import ClipInfo
from ._parameter import Parameter

__all__ = [
    "Arrays",
    "ArraysOrParameters",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "parameters_to_vector",
    "vector_to_parameters",
]

#: What the in-place functions' ``parameters`` accepts: one gradient (an ndarray, a torch
#: CPU tensor or another DLPack array), one object with a ``.grad`` (a
#: :class:`~gradclip.Parameter`, a ``torch.nn.Parameter``), or any iterable of these -- a
#: list, a tuple, any sequence, a generator such as ``model.parameters()``.
ArraysOrParameters: TypeAlias = Union[np.ndarray, Parameter, Iterable[Any]]

#: What :func:`get_total_norm`'s ``tensors`` accepts: one array (an ndarray, a torch CPU
#: tensor or another DLPack array) or any iterable of them.
Arrays: TypeAlias = Union[np.ndarray, Iterable[Any]]

_PASS_THROUGH = (list, tuple, np.ndarray)
_INFINITIES = {"inf": float("inf"), "+inf": float("inf"), "-inf": float("-inf")}


def _as_sequence(
    parameters: Any, *, warn_if_empty_generator: bool = False, name: str = "parameters"
) -> Any:
    """A list, tuple or ndarray for the C layer (which rejects anything else)."""
    if type(parameters) in _PASS_THROUGH:
        return parameters
    # One Parameter, torch tensor, DLPack exporter or ndarray subclass (whose items the C
    # layer converts) is one item: torch iterates nothing here either.
    if isinstance(parameters, Parameter) or _interop.is_single_array(parameters):
        return (parameters,)
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{name} must be an ndarray, a Parameter or an iterable of them, "
            f"not {type(parameters).__name__}"
        )
    is_generator = isinstance(parameters, types.GeneratorType)
    items = list(parameters)
    if warn_if_empty_generator and is_generator and not items:
        # torch's warning, pointing at the caller of clip_grad_norm_.
        warnings.warn(
            "`parameters` is an empty generator, no gradient clipping will occur.",
            stacklevel=3,
        )
    return items


def _norm_type(norm_type: object) -> Any:
    # torch documents 'inf' as a valid norm_type; accept exactly the infinities as strings.
    if isinstance(norm_type, str):
        try:
            return _INFINITIES[norm_type.strip().lower()]
        except KeyError:
            raise TypeError(
                f"norm_type must be a real number or 'inf', not the string {norm_type!r}"
            ) from None
    return norm_type


def _check_foreach(foreach: object) -> None:
    if foreach is not None and not isinstance(foreach, bool):
        raise TypeError(f"foreach must be None or a bool, not {type(foreach).__name__}")


@overload
def get_total_norm(
    tensors: Arrays,
    norm_type: float | str = ...,
    error_if_nonfinite: bool = ...,
    foreach: bool | None = ...,
    *,
    return_info: Literal[False] = ...,
    nonfinite: str = ...,
) -> np.floating: ...
@overload
def get_total_norm(
    tensors: Arrays,
    norm_type: float | str = ...,
    error_if_nonfinite: bool = ...,
    foreach: bool | None = ...,
    *,
    return_info: Literal[True],
    nonfinite: str = ...,
) -> ClipInfo: ...
@overload
def get_total_norm(
    tensors: Arrays,
    norm_type: float | str = ...,
    error_if_nonfinite: bool = ...,
    foreach: bool | None = ...,
    *,
    return_info: bool,
    nonfinite: str = ...,
) -> np.floating | ClipInfo: ...


def get_total_norm(
    tensors: Arrays,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    *,
    return_info: bool = False,
    nonfinite: str = "propagate",
) -> np.floating | ClipInfo:
    """Compute the norm of a list of arrays, as if their norms were concatenated in one vector.

    The equivalent of ``torch.nn.utils.get_total_norm``: the result is the ``norm_type``-norm
    of the vector of per-array ``norm_type``-norms (not the norm of the concatenation, which
    differs for p = 0 and for negative p).

    Parameters
    ----------
    tensors : ndarray or iterable of ndarray
        The arrays (typically gradients). float16, float32, float64, complex64 and complex128
        are supported, mixed freely; a complex element contributes its modulus.
    norm_type : float or {'inf', '-inf'}, default 2.0
        The order p of the norm: any positive number, ``inf`` (max abs), ``-inf`` (min abs),
        ``0`` (count of non-zero elements; at the outer level, of non-zero arrays) or a
        negative number.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` (torch's message) if the total is NaN or infinite.
    foreach : bool or None
        Accepted for compatibility and ignored: gradclip always handles the whole list in one
        C call.
    return_info : bool, default False
        Return a :class:`gradclip.ClipInfo` (the total, each array's norm, how many are
        non-finite; ``clip_coef`` 1.0) instead of the total. Same single pass.
    nonfinite : {'propagate', 'raise', 'skip', 'zero'}, default 'propagate'
        What a non-finite total means: returned as is (torch); ``RuntimeError`` (as
        ``error_if_nonfinite=True``, which must not contradict it); returned with
        ``ClipInfo.skipped`` set; or, ``'zero'``, the total of the arrays whose norm is finite
        (nothing is modified here: :func:`clip_grad_norm_` zeroes them).

    Returns
    -------
    numpy.float32 or numpy.float64 or ClipInfo
        float64 if any array is float64 or complex128, else float32 (also for float16 input,
        whose norm often exceeds float16's range). An empty list gives ``float32(0.0)``.

    Raises
    ------
    TypeError
        An item is not an ndarray, or has an unsupported dtype or byte order; ``norm_type``
        is not a real number.
    ValueError
        ``norm_type`` is NaN; an array is misaligned.
    RuntimeError
        A non-finite total with ``error_if_nonfinite=True``; an empty array with a norm that
        has no identity (``inf``, ``-inf``, negative p), as torch.

    Notes
    -----
    Every norm accumulates in float64, so float16 and float32 inputs neither overflow nor
    lose precision the way torch's float32 accumulation does; the result is then rounded once
    to the returned dtype.
    """
    _check_foreach(foreach)
    items: Any = tensors
    if type(items) not in _PASS_THROUGH:
        items = _as_sequence(items, name="tensors")
    if return_info or nonfinite != "propagate":
        return _clipinfo._total(items, _norm_type(norm_type), error_if_nonfinite, return_info, nonfinite)
    return _C.total_norm(items, _norm_type(norm_type), error_if_nonfinite)


def clip_grads_with_norm_(
    parameters: ArraysOrParameters,
    max_norm: float,
    total_norm: float | np.floating | np.ndarray,
    foreach: bool | None = None,
) -> None:
    """Scale gradients in place given a pre-computed total norm.

    The equivalent of ``torch.nn.utils.clip_grads_with_norm_``: every gradient is multiplied
    by ``min(max_norm / (total_norm + 1e-6), 1)``, evaluated as torch evaluates it (``1e-6``
    added, reciprocal, times ``max_norm``, clamped) in ``total_norm``'s precision, and always
    applied, so the results are bit-identical to torch's for the same total.

    Parameters
    ----------
    parameters : ndarray, Parameter or iterable
        Gradients (ndarrays), or objects with a ``.grad`` attribute; ``.grad is None`` is
        skipped. Modified in place.
    max_norm : float
        The largest allowed total norm. Must be non-negative (``ValueError`` otherwise: torch
        would silently flip or destroy the gradients).
    total_norm : float, NumPy scalar or 0-d array
        The total norm, usually from :func:`get_total_norm`. A float32 (or float16) value
        makes the coefficient float32 arithmetic, as torch does with a float32 tensor; a
        Python float or float64 value makes it float64. Must not be negative (``ValueError``);
        NaN and inf propagate into the gradients as in torch.
    foreach : bool or None
        Accepted for compatibility and ignored.
    """
    _check_foreach(foreach)
    kind = type(total_norm)
    if kind is float or kind is np.float64:  # what get_total_norm returns: no array needed
        single, value = False, float(total_norm)
    elif kind is np.float32 or kind is np.float16:
        single, value = True, float(total_norm)
    else:
        total = np.asarray(total_norm)
        if total.size != 1 or total.dtype.kind not in "fiu":
            raise TypeError(
                "total_norm must be a real scalar (a float, NumPy scalar or 0-d array), "
                f"not {type(total_norm).__name__} with dtype {total.dtype} and shape {total.shape}"
            )
        single = total.dtype in (np.float16, np.float32)
        value = float(total.reshape(()))
    if type(parameters) not in _PASS_THROUGH:
        parameters = _as_sequence(parameters)
    _C.clip_grads_with_norm(parameters, max_norm, value, single)


@overload
def clip_grad_norm_(
    parameters: ArraysOrParameters,
    max_norm: float,
    norm_type: float | str = ...,
    error_if_nonfinite: bool = ...,
    foreach: bool | None = ...,
    *,
    return_info: Literal[False] = ...,
    nonfinite: str = ...,
) -> np.floating: ...
@overload
def clip_grad_norm_(
    parameters: ArraysOrParameters,
    max_norm: float,
    norm_type: float | str = ...,
    error_if_nonfinite: bool = ...,
    foreach: bool | None = ...,
    *,
    return_info: Literal[True],
    nonfinite: str = ...,
) -> ClipInfo: ...
@overload
def clip_grad_norm_(
    parameters: ArraysOrParameters,
    max_norm: float,
    norm_type: float | str = ...,
    error_if_nonfinite: bool = ...,
    foreach: bool | None = ...,
    *,
    return_info: bool,
    nonfinite: str = ...,
) -> np.floating | ClipInfo: ...


def clip_grad_norm_(
    parameters: ArraysOrParameters,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
    *,
    return_info: bool = False,
    nonfinite: str = "propagate",
) -> np.floating | ClipInfo:
    """Clip the gradients' total norm in place and return the norm before clipping.

    The equivalent of ``torch.nn.utils.clip_grad_norm_``: the total norm is computed as by
    :func:`get_total_norm`, then every gradient is multiplied by
    ``min(max_norm / (total + 1e-6), 1)`` as :func:`clip_grads_with_norm_` does. The whole
    norm is computed (and checked) before the first gradient is written, so an error never
    leaves the list half-clipped.

    Parameters
    ----------
    parameters : ndarray, Parameter or iterable
        Gradients (ndarrays), or objects with a ``.grad`` attribute (``Parameter`` or
        anything torch-like); ``.grad is None`` is skipped. Any iterable works, generators
        included (an empty generator warns, as in torch). Modified in place; an array listed
        twice counts twice and is scaled twice, as in torch.
    max_norm : float
        The largest allowed total norm; non-negative (``ValueError`` otherwise).
    norm_type : float or {'inf', '-inf'}, default 2.0
        The order of the norm; see :func:`get_total_norm`.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` before modifying anything if the total norm is NaN or
        infinite. Otherwise NaN/inf propagate into the gradients as in torch.
    foreach : bool or None
        Accepted for compatibility and ignored.
    return_info : bool, default False
        Return a :class:`gradclip.ClipInfo`: the total, the coefficient applied, whether it
        clipped, each gradient's norm, how many are non-finite. The per-array norms come out
        of the same reduction, so this costs no extra pass.
    nonfinite : {'propagate', 'raise', 'skip', 'zero'}, default 'propagate'
        What to do when the total norm is NaN or infinite. ``'propagate'``: torch's behaviour
        (the gradients are scaled by the non-finite coefficient). ``'raise'``: the same as
        ``error_if_nonfinite=True`` (passing both with different meanings is a
        ``ValueError``). ``'skip'``: modify nothing and return the non-finite total
        (``ClipInfo.skipped``), the mixed-precision "skip this step" pattern. ``'zero'``:
        gradients whose own norm is not finite are set to zero and left out of the total,
        the rest clipped as usual; the one policy that changes gradients beyond scaling.

    Returns
    -------
    numpy.float32 or numpy.float64 or ClipInfo
        The total norm of the gradients before clipping; see :func:`get_total_norm`.

    Examples
    --------
    >>> import numpy as np, gradclip
    >>> g = np.array([3.0, 4.0])
    >>> float(gradclip.clip_grad_norm_([g], max_norm=1.0))
    5.0
    >>> np.round(g, 6)
    array([0.6, 0.8])
    """
    _check_foreach(foreach)
    if type(parameters) not in _PASS_THROUGH:
        parameters = _as_sequence(parameters, warn_if_empty_generator=True)
    if return_info or nonfinite != "propagate":
        return _clipinfo._clip(
            parameters, max_norm, _norm_type(norm_type), error_if_nonfinite, return_info, nonfinite
        )
    return _C.clip_grad_norm(parameters, max_norm, _norm_type(norm_type), error_if_nonfinite)


def clip_grad_value_(
    parameters: ArraysOrParameters,
    clip_value: float,
    foreach: bool | None = None,
) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    The equivalent of ``torch.nn.utils.clip_grad_value_``, bit for bit: the bound is rounded
    to each array's dtype as torch rounds it, and NaN stays NaN.

    Parameters
    ----------
    parameters : ndarray, Parameter or iterable
        Gradients or objects with a ``.grad`` (``None`` skipped). Real dtypes only.
    clip_value : float
        The bound; non-negative (``ValueError`` otherwise: torch would produce
        ``[-c, c]`` with ``-c > c``).
    foreach : bool or None
        Accepted for compatibility and ignored.
    """
    _check_foreach(foreach)
    if type(parameters) not in _PASS_THROUGH:
        parameters = _as_sequence(parameters)
    _C.clip_grad_value(parameters, clip_value)


def _total_norm_and_coef(
    grads: Any, max_norm: float, norm_type: float | str, error_if_nonfinite: bool, need_write: bool = False
) -> tuple[np.floating, float, bool]:
    """The total norm, the coefficient ``clip_grad_norm_`` would apply, and whether scaling by
    it changes no bit (a coefficient of exactly 1, a finite p-norm with p > 0, real dtypes:
    ``clip_grad_norm_`` then leaves its scaling out); modifies nothing. With ``need_write``
    every gradient must be writable (ValueError otherwise), written or not.

    For fused clip-and-step optimizers: multiplying a gradient by ``coef`` (rounded as
    :func:`clip_grads_with_norm_` rounds) gives exactly the clipped gradient.
    """
    if type(grads) not in _PASS_THROUGH:
        grads = _as_sequence(grads)
    return _C.total_norm_and_coef(grads, max_norm, _norm_type(norm_type), error_if_nonfinite, need_write)


def _values(parameters: object) -> list[np.ndarray]:
    if isinstance(parameters, (np.ndarray, Parameter)):
        parameters = [parameters]
    elif not isinstance(parameters, Iterable) or isinstance(parameters, (str, bytes)):
        raise TypeError(
            f"parameters must be an iterable of arrays or Parameters, not {type(parameters).__name__}"
        )
    values = []
    for i, p in enumerate(parameters):
        value = p.data if isinstance(p, Parameter) else p
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"parameters[{i}] must be an ndarray or a Parameter, not {type(p).__name__}"
            )
        values.append(value)
    return values


def parameters_to_vector(parameters: Iterable[object]) -> np.ndarray:
    """Flatten parameters into one new 1-D array (``torch.nn.utils.parameters_to_vector``).

    Parameters
    ----------
    parameters : iterable of Parameter or ndarray
        The values are taken (a Parameter's ``.data``), each flattened in C order.

    Returns
    -------
    numpy.ndarray
        A new array; its dtype is the NumPy promotion of the inputs' dtypes, as ``torch.cat``
        promotes.
    """
    values = _values(parameters)
    if not values:
        raise ValueError("parameters_to_vector() needs at least one parameter")
    return np.concatenate([v.reshape(-1) for v in values])


def vector_to_parameters(vec: np.ndarray, parameters: Iterable[object]) -> None:
    """Copy slices of a 1-D array into parameters (``torch.nn.utils.vector_to_parameters``).

    Parameters
    ----------
    vec : numpy.ndarray
        A 1-D array with exactly as many elements as the parameters together.
    parameters : iterable of Parameter or ndarray
        Written in place, in order, each from the next ``size`` elements of ``vec`` in C
        order (cast to the parameter's dtype with ``same_kind`` casting).

    Notes
    -----
    torch rebinds each parameter's ``.data`` to a view of ``vec``; gradclip copies instead,
    so the parameters keep their own memory and plain ndarrays work too. The sizes are checked
    before anything is written.
    """
    if not isinstance(vec, np.ndarray):
        raise TypeError(f"expected numpy.ndarray, but got: {type(vec).__name__}")
    if vec.ndim != 1:
        raise ValueError(f"vec must be 1-D, got shape {vec.shape}")
    values = _values(parameters)
    needed = sum(v.size for v in values)
    if needed != vec.size:
        raise ValueError(f"vec has {vec.size} elements but the parameters have {needed}")
    for i, v in enumerate(values):
        if not v.flags.writeable:
            raise ValueError(f"parameters[{i}] is read-only")
        if not np.can_cast(vec.dtype, v.dtype, casting="same_kind"):
            raise TypeError(f"cannot cast vec from {vec.dtype} to parameters[{i}]'s {v.dtype}")
    # Cast every slice before the first write, so a failing cast changes nothing.
    offsets = np.cumsum([0] + [v.size for v in values])
    pieces = [vec[a:b].reshape(v.shape).astype(v.dtype, casting="same_kind")
              for v, a, b in zip(values, offsets[:-1], offsets[1:])]
    for v, piece in zip(values, pieces):
        v[...] = piece
