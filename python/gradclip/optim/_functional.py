"""The arithmetic of one optimizer step: torch's single-tensor SGD and Adam rules, in NumPy.

This module is the kernel boundary. Everything an optimizer computes per element happens
inside :func:`sgd` and :func:`adam`; the classes in :mod:`gradclip.optim` only decide which
arrays take part (groups, state, gradients) and validate them beforehand. The bodies here are
a NumPy reference that reproduces, operation by operation, what ``torch.optim`` 2.13 does on
CPU (``_single_tensor_sgd`` / ``_single_tensor_adam``, which torch selects for CPU tensors),
so that they can later be replaced by one C call each with the same signatures.

How torch rounds, and how it is reproduced here
-----------------------------------------------
Each torch operation rounds once to the tensor's dtype, with its Python-float scalars first
converted to that dtype (float16 tensors: scalars go to float32 and the operation runs in
float32, then rounds to float16). Three operations are *fused multiply-adds* in torch's CPU
kernels (``vec::fmadd`` in the vectorised loop; the scalar loop is contracted to an FMA by the
compiler, so both paths agree):

* ``a.add(b, alpha=s)``            ->  ``fma(b, s, a)``
* ``a.lerp_(b, w)`` (scalar w)      ->  ``fma(w, b - a, a)`` if ``|w| < 0.5``
  else ``fma(w - 1, b - a, b)``
* ``a.addcmul_(b, c, value=s)``     ->  ``fma(s * b, c, a)``

``addcdiv_`` is ``a + (s * b) / c`` with every step rounded, and ``mul_``, ``/``, ``sqrt``
are single IEEE operations. :func:`_fma` below evaluates ``x * y + z`` with one rounding
(exactly, via error-free transformations and round-to-odd), so for SGD these functions agree
with torch bit for bit on an FMA-capable build. For Adam the one remaining difference is
``sqrt``: torch's CPU ``sqrt`` (MKL VML on x86 builds) is not correctly rounded (about 17 % of
float32 and 1 % of float64 results are 1 ulp off), whereas ``np.sqrt`` is.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np

__all__ = ["adam", "sgd"]

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)

# Veltkamp's splitting constant 2**27 + 1: splits a double into two 26-bit halves whose
# pairwise products are exact (Dekker's two-product).
_SPLITTER = 134217729.0


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Knuth's TwoSum: s + e == a + b exactly (barring overflow).
    s = a + b
    bv = s - a
    e = (a - (s - bv)) + (b - bv)
    return s, e


def _two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Dekker's TwoProduct without a hardware FMA: p + e == a * b exactly (barring
    # overflow in the split, |x| > ~1e300, and underflow).
    p = a * b
    t = _SPLITTER * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLITTER * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


def _round_to_odd(s: np.ndarray, e: np.ndarray) -> np.ndarray:
    # s is the nearest double to s + e. Round-to-odd instead picks, when inexact, the
    # neighbour with an odd last bit; a later rounding to <= 51 bits is then correct
    # (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums", 2008).
    even = (s.view(np.int64) & 1) == 0
    fix = even & (e != 0) & np.isfinite(s)
    if not fix.any():
        return s
    toward = np.where(e > 0, np.inf, -np.inf)
    return np.where(fix, np.nextafter(s, toward), s)


def _fma64(x: np.ndarray, y: object, z: np.ndarray) -> np.ndarray:
    """``x * y + z`` in float64 with a single rounding."""
    x = np.asarray(x, _F64)
    y = np.asarray(y, _F64)
    z = np.asarray(z, _F64)
    uh, ul = _two_prod(x, y)
    th, tl = _two_sum(z, uh)
    v, ve = _two_sum(tl, ul)
    result = th + _round_to_odd(v, ve)
    # Non-finite inputs or an overflowing split make the error terms NaN; the plain
    # expression is then the right answer (inf/NaN propagate as in an FMA).
    naive = x * y + z
    return np.where(np.isfinite(result), result, naive)


def _fma32(x: np.ndarray, y: object, z: np.ndarray) -> np.ndarray:
    """``x * y + z`` for float32 operands with a single rounding to float32."""
    # The product of two floats is exact in a double; round-to-odd of the sum then makes
    # the final rounding to float32 correct (no double-rounding error).
    p = np.asarray(x, _F64) * np.asarray(y, _F64)
    s, e = _two_sum(p, np.asarray(z, _F64))
    s = np.where(np.isfinite(s), _round_to_odd(s, np.where(np.isfinite(e), e, 0.0)), s)
    return s.astype(_F32)


class _Arith:
    """torch's CPU rounding rules for one parameter dtype.

    ``compute`` is the dtype an operation runs in (``opmath``: float32 for float16), ``store``
    the dtype its result is rounded to. Scalars are converted to ``compute`` except where
    torch converts them to the tensor's own dtype (``alpha`` of ``add`` for float16).
    """

    def __init__(self, dtype: np.dtype) -> None:
        self.store = dtype
        self.compute = _F32 if dtype == _F16 else dtype
        self.fma = _fma64 if dtype == _F64 else _fma32

    def scalar(self, value: float) -> np.floating:
        return self.compute.type(value)

    def up(self, a: np.ndarray) -> np.ndarray:
        return a.astype(self.compute, copy=False)

    def down(self, a: np.ndarray) -> np.ndarray:
        return a.astype(self.store, copy=False)

    def neg(self, a: np.ndarray) -> np.ndarray:
        return np.negative(a)

    def mul(self, a: np.ndarray, s: float) -> np.ndarray:
        return self.down(self.up(a) * self.scalar(s))

    def add_scaled(self, a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
        # a.add(b, alpha=alpha). For float16 torch's vectorised loop rounds alpha to float16
        # first (its scalar tail differs again; we follow the contiguous path).
        if alpha == 1:
            return self.down(self.up(a) + self.up(b))
        s = self.store.type(alpha) if self.store == _F16 else self.scalar(alpha)
        return self.down(self.fma(self.up(b), s, self.up(a)))

    def lerp(self, start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
        w = self.scalar(weight)
        a = self.up(start)
        b = self.up(end)
        diff = b - a
        if abs(w) < 0.5:
            return self.down(self.fma(w, diff, a))
        return self.down(self.fma(w - self.compute.type(1), diff, b))

    def addcmul(self, a: np.ndarray, t1: np.ndarray, t2: np.ndarray, value: float) -> np.ndarray:
        return self.down(self.fma(self.scalar(value) * self.up(t1), self.up(t2), self.up(a)))

    def addcdiv(self, a: np.ndarray, t1: np.ndarray, t2: np.ndarray, value: float) -> np.ndarray:
        return self.down(self.up(a) + (self.scalar(value) * self.up(t1)) / self.up(t2))

    def sqrt(self, a: np.ndarray) -> np.ndarray:
        return self.down(np.sqrt(self.up(a)))

    def div(self, a: np.ndarray, s: float) -> np.ndarray:
        return self.down(self.up(a) / self.scalar(s))

    def add(self, a: np.ndarray, s: float) -> np.ndarray:
        return self.down(self.up(a) + self.scalar(s))


_ARITH = {dt: _Arith(dt) for dt in (_F16, _F32, _F64)}


def _arith(a: np.ndarray) -> _Arith:
    try:
        return _ARITH[a.dtype]
    except KeyError:
        raise TypeError(
            f"optimizer arrays must be float16, float32 or float64 in native byte order, "
            f"got {a.dtype}"
        ) from None


def _effective_grad(
    ar: _Arith, grads: list, i: int, grad_scale: Optional[float], write_back: bool
) -> np.ndarray:
    """The gradient a step uses: ``grads[i]``, clipped by ``grad_scale`` if given."""
    g = grads[i]
    if grad_scale is None:
        return g
    # clip_grad_norm_'s g.mul_(coef): coef rounded to the gradient's dtype (float16:
    # multiplied in float32, then rounded).
    clipped = ar.mul(g, grad_scale)
    if write_back:
        g[...] = clipped
        return g
    return clipped


def _check_lengths(name: str, n: int, **lists: list) -> None:
    for key, lst in lists.items():
        if len(lst) != n:
            raise ValueError(f"{name}: {key} has {len(lst)} entries, expected {n}")


def _quiet(func):
    # torch computes with inf/NaN silently; NumPy's warnings about them would only be noise.
    # A fresh errstate per call: one shared instance cannot be entered twice (threads).
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return func(*args, **kwargs)

    return wrapper


@_quiet
def sgd(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    momentum_buffers: list[Optional[np.ndarray]],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: Optional[float] = None,
    write_back: bool = True,
) -> None:
    """Apply one SGD step in place, as ``torch.optim._single_tensor_sgd``.

    Parameters
    ----------
    params : list of numpy.ndarray
        The parameters, updated in place. Any memory layout; all must be writable.
    grads : list of numpy.ndarray
        ``grads[i]`` has the shape and dtype of ``params[i]``. Read only, unless
        ``grad_scale`` is given with ``write_back``.
    momentum_buffers : list of numpy.ndarray or None
        One entry per parameter when ``momentum != 0`` (ignored otherwise). An array is
        updated in place; ``None`` means "first step": the buffer is created as a copy of the
        modified gradient (undampened, as torch does) and stored into this list so the caller
        can save it in the optimizer state.
    lr, momentum, dampening, weight_decay : float
        The group's hyper-parameters; each is rounded to the parameter dtype where torch
        rounds it.
    nesterov, maximize : bool
        As in torch.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grads[i] * grad_scale`` rounded to the
        gradient's dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradient into ``grads[i]`` (so the
        gradients end as after a separate clip).

    Notes
    -----
    Per element, with ``fma`` rounding once and every other operation rounding to the
    parameter dtype::

        g = -g if maximize
        g = fma(p, weight_decay, g)                        if weight_decay != 0
        b = copy(g)                                        first step, momentum != 0
        b = fma(g, 1 - dampening, b * momentum)            later steps
        g = fma(b, momentum, g) if nesterov else b         momentum != 0
        p = fma(g, -lr, p)
    """
    n = len(params)
    _check_lengths("sgd", n, grads=grads)
    if momentum != 0:
        _check_lengths("sgd", n, momentum_buffers=momentum_buffers)
    for i, param in enumerate(params):
        ar = _arith(param)
        grad = _effective_grad(ar, grads, i, grad_scale, write_back)
        if maximize:
            grad = ar.neg(grad)
        if weight_decay != 0:
            grad = ar.add_scaled(grad, param, weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = np.empty_like(grad)
                np.copyto(buf, grad)
                momentum_buffers[i] = buf
            else:
                buf[...] = ar.add_scaled(ar.mul(buf, momentum), grad, 1 - dampening)
            grad = ar.add_scaled(grad, buf, momentum) if nesterov else buf
        param[...] = ar.add_scaled(param, grad, -lr)


@_quiet
def adam(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    exp_avgs: list[np.ndarray],
    exp_avg_sqs: list[np.ndarray],
    max_exp_avg_sqs: list[np.ndarray],
    state_steps: list[np.ndarray],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Optional[float] = None,
    write_back: bool = True,
) -> None:
    """Apply one Adam/AdamW step in place, as ``torch.optim._single_tensor_adam``.

    Parameters
    ----------
    params : list of numpy.ndarray
        The parameters, updated in place. Any memory layout; all must be writable.
    grads : list of numpy.ndarray
        ``grads[i]`` has the shape and dtype of ``params[i]``. Read only, unless
        ``grad_scale`` is given with ``write_back``.
    exp_avgs, exp_avg_sqs : list of numpy.ndarray
        First and second moment estimates, one per parameter (zeros before the first step),
        updated in place.
    max_exp_avg_sqs : list of numpy.ndarray
        With ``amsgrad``, the running maxima of ``exp_avg_sqs`` (zeros initially), updated in
        place; ignored (may be empty) otherwise.
    state_steps : list of numpy.ndarray
        The step counters, 0-d float32 arrays (torch's float32 ``step`` tensor); each is
        incremented in place before it is used.
    amsgrad, maximize, decoupled_weight_decay : bool
        As in torch (``decoupled_weight_decay=True`` is AdamW).
    beta1, beta2, lr, weight_decay, eps : float
        The group's hyper-parameters.
    grad_scale : float, optional
        A clipping coefficient; see :func:`sgd`.
    write_back : bool, default True
        With ``grad_scale``, store the clipped gradients into ``grads``.

    Notes
    -----
    Per parameter, bias corrections are Python floats as in torch
    (``bc1 = 1 - beta1 ** step``, ``bc2 = 1 - beta2 ** step``, ``step_size = lr / bc1``,
    ``bc2_sqrt = bc2 ** 0.5``); per element, rounding to the parameter dtype after each
    operation::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)                    decoupled, weight_decay != 0
        g = fma(p, weight_decay, g)                        coupled, weight_decay != 0
        m = lerp(m, g, 1 - beta1)                          (an fma, see module notes)
        v = fma((1 - beta2) * g, g, v * beta2)
        vmax = max(vmax, v)                                amsgrad (NaN propagates)
        d = sqrt(vmax if amsgrad else v) / bc2_sqrt + eps
        p = p + (-step_size * m) / d
    """
    n = len(params)
    _check_lengths(
        "adam", n, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs, state_steps=state_steps
    )
    if amsgrad:
        _check_lengths("adam", n, max_exp_avg_sqs=max_exp_avg_sqs)
    for i, param in enumerate(params):
        ar = _arith(param)
        grad = _effective_grad(ar, grads, i, grad_scale, write_back)
        if maximize:
            grad = ar.neg(grad)
        exp_avg = exp_avgs[i]
        exp_avg_sq = exp_avg_sqs[i]
        step_t = state_steps[i]
        step_t += 1

        if weight_decay != 0:
            if decoupled_weight_decay:
                param[...] = ar.mul(param, 1 - lr * weight_decay)
            else:
                grad = ar.add_scaled(grad, param, weight_decay)

        exp_avg[...] = ar.lerp(exp_avg, grad, 1 - beta1)
        exp_avg_sq[...] = ar.addcmul(ar.mul(exp_avg_sq, beta2), grad, grad, 1 - beta2)

        # torch reads the float32 counter back as a Python float (Tensor.item()).
        step = float(step_t)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5

        if amsgrad:
            max_sq = max_exp_avg_sqs[i]
            np.maximum(max_sq, exp_avg_sq, out=max_sq)
            second = max_sq
        else:
            second = exp_avg_sq
        denom = ar.add(ar.div(ar.sqrt(second), bias_correction2_sqrt), eps)
        param[...] = ar.addcdiv(param, exp_avg, denom, -step_size)
