"""A float64 NumPy reference for gradclip's semantics, written from torch's definitions.

Used as the test oracle: simple, slow, obviously right. Norms are exact to float64 rounding;
the clip coefficient and the clipped values are derived step by step in the precision torch
uses, with NumPy's own IEEE scalar arithmetic.
"""

import numpy as np

INF = float("inf")


def _sum_norm(a, p, accurate):
    """(sum |a|^p)^(1/p) for finite p != 0. Where torch's float64 sum overflows (or, for
    p < 0, underflows to 0) the result is torch's; elsewhere, with ``accurate``, the value
    free of intermediate underflow (every |a| divided by the dominant one first)."""
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        naive = np.sum(a**p)
        if np.isnan(naive):
            return float("nan")
        if np.isinf(naive):
            return INF if p > 0 else 0.0
        if p < 0 and naive == 0:
            return INF
        m = a.max() if p > 0 else a.min()
        if not accurate or m == 0:
            return float(naive ** (1.0 / p))
        return float(m * np.sum((a / m) ** p) ** (1.0 / p))


def vector_norm(x, p, *, accurate=None):
    """gradclip's torch.linalg.vector_norm(x, p) in float64 (complex elements contribute |z|,
    with hypot's rule: an infinite component makes |z| inf even if the other is NaN).

    As torch, a one-element vector's norm is |x| (for p = 0, whether x != 0), with no power
    that could overflow or underflow. For p > 0 (``accurate`` unset) gradclip also rescues
    sums whose terms underflowed; for p < 0 the per-array sum is plain float64 as torch's."""
    a = np.abs(np.asarray(x).astype(np.complex128 if np.iscomplexobj(x) else np.float64)).ravel()
    if a.size == 0 and (p == INF or p == -INF or p < 0):
        raise RuntimeError("no identity")
    if a.size == 1:
        return float(a[0] != 0) if p == 0 else float(a[0])
    if p == 0:
        return float(np.count_nonzero(a))
    if p == INF or p == -INF:
        if np.isnan(a).any():
            return float("nan")
        return float(a.max() if p == INF else a.min())
    if a.size == 0:
        return 0.0
    return _sum_norm(a, p, p > 0 if accurate is None else accurate)


def total_norm(arrays, p):
    """torch's get_total_norm: the p-norm of the per-array p-norms, in float64 (the outer norm
    free of intermediate underflow: gradclip forms it in extended precision)."""
    if len(arrays) == 0:
        return 0.0
    return vector_norm(np.array([vector_norm(a, p) for a in arrays]), p, accurate=True)


def result_dtype(arrays):
    """float64 if any array is float64/complex128, else float32 (gradclip's documented rule)."""
    wide = any(a.dtype in (np.float64, np.complex128) for a in arrays)
    return np.dtype(np.float64 if wide else np.float32)


def clip_coef(total, max_norm, dtype):
    """min(max_norm * (1 / (total + 1e-6)), 1), each step rounded to `dtype` (torch's order)."""
    t = dtype.type(total)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        coef = (dtype.type(1) / (t + dtype.type(1e-6))) * dtype.type(max_norm)
    return coef if np.isnan(coef) else min(coef, dtype.type(1))


def scaled(g, coef):
    """g * coef rounded as torch rounds it for g's dtype (coef already in the total's dtype)."""
    if g.ndim == 0 and g.dtype in (np.float16, np.float32, np.complex64):
        # torch's 0-d rule: two 0-dim operands multiply in the wider dtype, rounded once
        # (float16 through float32); coef is a double, exactly a float if computed in float32.
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            if g.dtype.kind == "c":
                re, im, c = float(g.real), float(g.imag), float(coef)
                return np.asarray(complex(np.float32(re * c - im * 0.0), np.float32(re * 0.0 + im * c)), g.dtype)
            return np.asarray(np.float32(float(g) * float(coef))).astype(g.dtype)
    with np.errstate(invalid="ignore", over="ignore", under="ignore"):
        if g.dtype == np.float16:
            return (g.astype(np.float32) * np.float32(coef)).astype(np.float16)
        if g.dtype == np.float32:
            return g * np.float32(coef)
        if g.dtype == np.float64:
            return g * np.float64(coef)
        real = np.float32 if g.dtype == np.complex64 else np.float64
        c, zero = real(coef), real(0)
        re, im = g.real, g.imag
        out = np.empty_like(g)  # in g's precision on every NumPy (1.x promotes 1j * x to complex128)
        out.real, out.imag = re * c - im * zero, re * zero + im * c
        return out


def clamped(g, clip_value):
    """torch's clamp_(-c, c): bounds rounded to g's dtype (float16 via float32), NaN kept."""
    hi = g.dtype.type(np.float32(clip_value)) if g.dtype == np.float16 else g.dtype.type(clip_value)
    out = np.where(g < -hi, -hi, g)
    out = np.where(hi < out, hi, out)
    return np.where(np.isnan(g), g, out).astype(g.dtype)
