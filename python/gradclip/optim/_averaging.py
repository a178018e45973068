"""The arithmetic of weight averaging (:mod:`gradclip.optim.swa_utils`): two in-place updates
of a list of averaged arrays from a list of current ones, each as torch computes it on CPU.

* :func:`lerp_` is ``torch._foreach_lerp_(averaged, current, weight)`` with a Python-float
  weight (torch's EMA and ``get_swa_multi_avg_fn`` updates): per element, with ``w`` the
  weight rounded to the compute type (float32 for float16 and float32 arrays),
  ``fma(w, c - a, a)`` if ``|w| < 0.5`` else ``fma(w - 1, c - a, c)``, rounded to the dtype.
* :func:`mean_` is ``a + (c - a) / count`` with every operation rounded to the dtype
  (float16: the division in float32, then rounded), what ``AveragedModel`` runs on CPU
  (``get_swa_avg_fn`` per tensor).
"""

from __future__ import annotations

import numpy as np

__all__ = ["lerp_", "mean_"]

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _check(averaged: list, current: list) -> None:
    if len(averaged) != len(current):
        raise ValueError(f"got {len(averaged)} averaged arrays but {len(current)} current ones")
    for i, (a, c) in enumerate(zip(averaged, current)):
        if not isinstance(a, np.ndarray) or not isinstance(c, np.ndarray):
            raise TypeError(f"item {i}: averaging needs NumPy arrays, not {type(a).__name__} and {type(c).__name__}")
        if a.dtype not in _FLOATS or c.dtype != a.dtype or a.shape != c.shape:
            raise TypeError(
                f"item {i}: averaging needs two float16/float32/float64 arrays of one shape and dtype, "
                f"not {a.dtype}{a.shape} and {c.dtype}{c.shape}"
            )
        if not a.flags.writeable:
            raise ValueError(f"item {i}: the averaged array is read-only")


def _fma32(w: np.float32, d: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``fma(w, d, a)`` for float32 operands, correctly rounded to float32."""
    p = np.float64(w) * d.astype(np.float64)  # exact: 24 + 24 bits
    a64 = a.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        s = p + a64
        # s + err == p + a exactly (TwoSum); rounding s to float32 is correct unless s lies
        # exactly halfway between two floats32 while err != 0: then err decides.
        bb = s - p
        err = (p - (s - bb)) + (a64 - bb)
        f = s.astype(np.float32)
        r = f.astype(np.float64)
        toward = np.where(s > r, np.float32(np.inf), np.float32(-np.inf))
        other = np.nextafter(f, toward).astype(np.float64)
        tie = (r != s) & ((r + other) * 0.5 == s) & (err != 0) & np.isfinite(err)
        if tie.any():
            f[tie] = np.nextafter(s[tie], s[tie] + err[tie]).astype(np.float32)
    return f


def lerp_(averaged: list, current: list, weight: float) -> None:
    """``averaged[i] = lerp(averaged[i], current[i], weight)`` in place, as torch's CPU lerp.

    Parameters
    ----------
    averaged, current : list of numpy.ndarray
        Pairwise of one shape and float dtype; ``averaged`` writable.
    weight : float
        The interpolation weight (a Python float, as torch's scalar overload takes it).
    """
    _check(averaged, current)
    from .. import _C

    kernel = getattr(_C, "average_step", None)
    if kernel is not None:
        kernel(averaged, current, 0, float(weight))
        return
    for a, c in zip(averaged, current):
        if a.dtype == np.float64:
            raise NotImplementedError("float64 lerp needs the C kernel")
        w = np.float32(weight)
        d = c.astype(np.float32) - a.astype(np.float32)
        if abs(w) < 0.5:
            out = _fma32(w, d, a.astype(np.float32))
        else:
            out = _fma32(w - np.float32(1), d, c.astype(np.float32))
        np.copyto(a, out, casting="unsafe")


def mean_(averaged: list, current: list, count: int) -> None:
    """``averaged[i] += (current[i] - averaged[i]) / count`` in place, rounded as torch.

    Parameters
    ----------
    averaged, current : list of numpy.ndarray
        Pairwise of one shape and float dtype; ``averaged`` writable.
    count : int
        The divisor (``n_averaged + 1``).
    """
    _check(averaged, current)
    from .. import _C

    kernel = getattr(_C, "average_step", None)
    if kernel is not None:
        kernel(averaged, current, 1, float(count))
        return
    for a, c in zip(averaged, current):
        diff = c - a
        if a.dtype == np.float16:
            q = (diff.astype(np.float32) / np.float32(count)).astype(np.float16)
        else:
            q = diff / a.dtype.type(count)
        np.add(a, q, out=a)
