"""Helpers shared by the optimizers whose state holds 0-d float32 scalars besides arrays.

torch keeps ``step`` (and NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) as 0-d float32
tensors on CPU, advanced in float32 and read back as Python floats; gradclip keeps them as
writable 0-d float32 ndarrays, which the C step advances in place exactly as torch does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .optimizer import _check_real, _check_state_array

SCALAR_DTYPE = np.dtype(np.float32)


def new_scalar(value: float) -> np.ndarray:
    """A new 0-d float32 state scalar (``torch.tensor(value, dtype=torch.float32)``)."""
    return np.array(value, dtype=SCALAR_DTYPE)


def as_scalar(value: object) -> object:
    """A loaded scalar as the kernels need it: a writable 0-d float32 array.

    torch turns plain numbers into tensors; a loaded tensor or array of another dtype is
    converted (float32 is what an uninterrupted run holds, so the continued run is the same).
    Anything unusable is returned as is, for :func:`check_state` to report at the next step.
    """
    if (
        isinstance(value, np.ndarray)
        and value.dtype == SCALAR_DTYPE
        and value.shape == ()
        and value.flags.writeable
    ):
        return value
    try:
        return np.array(float(np.asarray(value)), dtype=SCALAR_DTYPE)
    except (TypeError, ValueError):
        return value


def convert_scalars(optimizer: Any, keys: tuple[str, ...]) -> None:
    """In every parameter's non-empty state, make the scalar entries ``keys`` 0-d float32."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            if len(state) != 0:
                for key in keys:
                    if key in state:
                        state[key] = as_scalar(state[key])


def check_state(
    state: dict[str, Any], arrays: tuple[str, ...], scalars: tuple[str, ...], value: np.ndarray, where: str
) -> None:
    """Raise unless a non-empty state has every array (like ``value``) and scalar the step needs."""
    if len(state) == 0:
        return
    for key in arrays + scalars:
        if key not in state:
            raise KeyError(f"{key} missing from the state of {where}")
    for key in arrays:
        _check_state_array(state[key], value, f"{key} of {where}")
    for key in scalars:
        s = state[key]
        if not (
            isinstance(s, np.ndarray) and s.shape == () and s.dtype == SCALAR_DTYPE and s.flags.writeable
        ):
            raise TypeError(f"{key} of {where} must be a writable 0-d float32 ndarray")


def check_pair(pair: Any, what: str) -> None:
    """Raise TypeError unless ``pair`` (anything: this checks it) is a pair of real numbers."""
    try:
        n = len(pair)
    except TypeError:
        n = None
    if n != 2:
        raise TypeError(f"{what} must be a pair of floats, not {pair!r}")
    _check_real(pair[0], f"{what}[0]")
    _check_real(pair[1], f"{what}[1]")
