"""NumPy helpers of the optimizers whose updates are not elementwise (Adafactor, Muon).

Each reproduces one torch operation's rounding: a clipping coefficient applied as
``clip_grad_norm_`` applies it, a 2-norm reduction (accumulated in float64 and rounded once,
or for float16 as torch accumulates it), a division by a scalar, and the rounding of float32 values to bfloat16 (torch's round-to-nearest-even, NaN kept).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

__all__ = ["div_", "mul_", "norm", "round_bf16", "rsqrt", "scaled_grad"]


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


# torch's at::internal::GRAIN_SIZE: a CPU reduction over fewer elements runs on one thread.
_TORCH_GRAIN = 32768


def norm(x: np.ndarray, axis: Optional[int] = None) -> Any:
    """``torch.norm(x)`` (a scalar of x's dtype) or ``torch.norm(x, dim=axis, keepdim=True)``.

    Accumulated in float64 and rounded once to x's dtype, except float16 below torch's grain
    size, which is summed as torch's float16 kernel sums it: the squares (exact in float32)
    added one by one in float32, in memory order (along ``axis``), the square root taken in
    float32 and rounded to float16 (measured against torch 2.13; that sum is not correctly
    rounded, and the two differ in about one norm in 600). Larger float16 reductions are split
    over torch's threads, in an order that depends on their number: those keep float64.
    """
    if x.dtype == np.float16:
        count = x.size if axis is None else x.shape[axis]
        if 0 < count < _TORCH_GRAIN:
            if axis is None:
                total = np.add.accumulate(np.square(np.ravel(x, order="K"), dtype=np.float32))[-1]
                return np.float16(np.sqrt(total))
            sums = np.add.accumulate(np.square(x, dtype=np.float32), axis=axis)
            return np.sqrt(np.take(sums, [-1], axis=axis)).astype(np.float16)
    sq = np.square(x, dtype=np.float64)
    if axis is None:
        return x.dtype.type(np.sqrt(np.sum(sq)))
    return np.sqrt(np.sum(sq, axis=axis, keepdims=True)).astype(x.dtype)


# torch's float16 elementwise loops: the scalar loop takes the last length % 32 elements of a
# contiguous tensor (one AVX-512 vector of halves; see gc_layout.h).
_TORCH_HALF_TAIL = 32


def rsqrt(x: np.ndarray) -> np.ndarray:
    """``x.rsqrt()`` of a C-contiguous tensor of x's values, as a new C-contiguous array.

    ``1 / sqrt(x)`` rounded once, except float16, where torch's two loops differ (measured on
    every float16 value with torch 2.13): its vectorised loop rounds ``1 / sqrt(x)`` computed in
    float32 once, its scalar loop (the last ``x.size % 32`` elements in C order, and a 0-d
    tensor) rounds the float32 square root to float16 before dividing.
    """
    if x.dtype != np.float16:
        return np.asarray(1 / np.sqrt(x), order="C")
    roots = np.sqrt(np.asarray(x, dtype=np.float32).reshape(-1))  # C order
    out = (1 / roots).astype(np.float16)
    cut = 0 if x.ndim == 0 else x.size - x.size % _TORCH_HALF_TAIL
    out[cut:] = (1 / roots[cut:].astype(np.float16).astype(np.float32)).astype(np.float16)
    return out.reshape(x.shape)


def div_(x: np.ndarray, scalar: float) -> None:
    """``x.div_(scalar)`` in place, a true division by the scalar in torch's compute type
    (float32 for float16, rounded once)."""
    if x.dtype == np.float16:
        x[...] = (x.astype(np.float32) / np.float32(scalar)).astype(np.float16)
    else:
        x /= x.dtype.type(scalar)


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
