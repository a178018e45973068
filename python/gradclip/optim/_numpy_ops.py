"""NumPy helpers of the optimizers whose updates are not elementwise (Adafactor, Muon).

Each reproduces one torch operation's rounding: a clipping coefficient applied as
``clip_grad_norm_`` applies it, a 2-norm reduction accumulated in float64 and rounded once,
and the rounding of float32 values to bfloat16 (torch's round-to-nearest-even, NaN kept).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["mul_", "norm", "round_bf16", "scaled_grad"]


def scaled_grad(grad: np.ndarray, grad_scale: Optional[float], write_back: bool) -> np.ndarray:
    """The gradient as ``clip_grad_norm_`` with coefficient ``grad_scale`` leaves it.

    The product rounds as gradclip's (and torch's) scaling does: in the gradient's dtype,
    float16 through float32. With ``write_back`` the result is stored into ``grad``.
    """
    if grad_scale is None:
        return grad
    if grad.dtype == np.float16:
        scaled = np.asarray((grad.astype(np.float32) * np.float32(grad_scale)).astype(np.float16))
    else:
        scaled = np.asarray(grad * grad.dtype.type(grad_scale))
    if write_back:
        grad[...] = scaled
        return grad
    return scaled


def mul_(x: np.ndarray, scalar: float) -> None:
    """``x.mul_(scalar)`` in place: the scalar in torch's compute type (float32 for float16,
    whose product is computed in float32 and rounded once)."""
    if x.dtype == np.float16:
        x[...] = (x.astype(np.float32) * np.float32(scalar)).astype(np.float16)
    else:
        x *= x.dtype.type(scalar)


def norm(x: np.ndarray, axis: Optional[int] = None) -> Any:
    """``torch.norm(x)`` (a scalar of x's dtype) or ``torch.norm(x, dim=axis, keepdim=True)``,
    accumulated in float64 and rounded once to x's dtype."""
    sq = np.square(x, dtype=np.float64)
    if axis is None:
        return x.dtype.type(np.sqrt(np.sum(sq)))
    return np.sqrt(np.sum(sq, axis=axis, keepdims=True)).astype(x.dtype)


def round_bf16(x: np.ndarray | np.floating) -> np.ndarray:
    """float32 values (array or scalar) rounded to the nearest bfloat16 (ties to even), as float32.

    torch's ``c10::BFloat16`` conversion: NaN becomes the quiet NaN 0x7fc0, everything else
    (infinities and overflow to them included) rounds to nearest even on the upper 16 bits.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32)
    rounded = (bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) & np.uint32(0xFFFF0000)
    rounded = np.where(np.isnan(x), np.uint32(0x7FC00000), rounded).astype(np.uint32)
    return rounded.view(np.float32)
