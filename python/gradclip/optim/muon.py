"""Muon, mirroring ``torch.optim.Muon`` (torch 2.13)."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from .. import _C
from ._numpy_ops import mul_, norm, round_bf16, scaled_grad
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_grad, _check_lr, _check_real, _check_state_array, _dicts_of, _lr_scalar, _value, _check_nonnegative

__all__ = ["Muon", "zeropower_via_newtonschulz"]

EPS = 1e-7
DEFAULT_A = 3.4445
DEFAULT_B = -4.7750
DEFAULT_C = 2.0315
DEFAULT_NS_STEPS = 5


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # bfloat16 products are exact in float64, and so, nearly always, is their sum: torch's
    # oneDNN kernels round like this far more often than a float32 NumPy matmul would.
    product: np.ndarray = np.matmul(a.astype(np.float64), b.astype(np.float64))
    return product


def _addmm(c: np.ndarray, a: np.ndarray, b: np.ndarray, *, beta: float = 1.0, alpha: float = 1.0) -> np.ndarray:
    """torch.addmm(c, a, b, beta=, alpha=) on bfloat16 values (held as float32): the product
    and the sum with ``beta * c`` formed in float64 (scalars as float32, torch's opmath), then
    rounded to float32 and to bfloat16."""
    combined = float(np.float32(alpha)) * _matmul(a, b) + float(np.float32(beta)) * c.astype(np.float64)
    return round_bf16(combined.astype(np.float32))


def zeropower_via_newtonschulz(
    grad: np.ndarray, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float
) -> np.ndarray:
    """torch's ``_zeropower_via_newtonschulz``: the quintic Newton–Schulz iteration, in bfloat16.

    Parameters
    ----------
    grad : numpy.ndarray
        A 2-D float array.
    ns_coefficients : tuple of three floats
        ``(a, b, c)``: each step is ``X = a X + (b A + c A @ A) @ X`` with ``A = X @ X.T``.
    ns_steps : int
        Number of steps (< 100).
    eps : float
        Floor of the Frobenius norm ``X`` is first divided by.

    Returns
    -------
    numpy.ndarray
        float32 values that are all bfloat16 numbers (torch returns a bfloat16 tensor).

    Notes
    -----
    As torch, the input is rounded to bfloat16, transposed if it has more rows than columns,
    and every operation's result is rounded to bfloat16. The matrix products are NumPy's, in
    float64 on the bfloat16 values (their products are exact), then rounded to float32 and to
    bfloat16; torch's are oneDNN's bfloat16 kernels with float32 accumulation. The two agree
    exactly on almost every element; a rare difference of one bfloat16 rounding is amplified
    by the later steps (see the README for the measured tolerance).
    """
    if ns_steps >= 100:
        raise ValueError("Number of steps must be less than 100 for computational efficiency")
    if grad.ndim != 2:
        raise ValueError("Input tensor gradient must be a 2D matrix")
    if len(ns_coefficients) != 3:
        raise ValueError("Coefficients must be a tuple of exactly 3 values")
    a, b, c = ns_coefficients
    x = round_bf16(grad.astype(np.float32))
    tall = grad.shape[0] > grad.shape[1]
    if tall:
        x = np.ascontiguousarray(x.T)
    n = round_bf16(np.float32(norm(x)))  # the bfloat16 norm of a bfloat16 tensor
    n = round_bf16(np.maximum(n, np.float32(eps)))
    x = round_bf16(x / n)
    for _ in range(ns_steps):
        gram = round_bf16(_matmul(x, x.T).astype(np.float32))
        gram_update = _addmm(gram, gram, gram, beta=b, alpha=c)
        x = _addmm(x, gram_update, x, beta=a)
    if tall:
        x = np.ascontiguousarray(x.T)
    return x


def _adjust_lr(lr: float, adjust_lr_fn: Optional[str], param_shape: tuple[int, ...]) -> float:
    A, B = param_shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        adjusted_ratio = math.sqrt(max(1, A / B))
    elif adjust_lr_fn == "match_rms_adamw":
        adjusted_ratio = 0.2 * math.sqrt(max(A, B))
    else:
        adjusted_ratio = 1.0
    return lr * adjusted_ratio


class Muon(Optimizer):
    r"""Muon, as ``torch.optim.Muon``: momentum orthogonalised by a Newton–Schulz iteration.

    Parameters
    ----------
    params : iterable
        2-D parameters or parameter groups of them (float16/32/64; complex ones are accepted,
        as torch accepts them, and refused by :meth:`step`); see :class:`Optimizer`.
        Biases, embeddings and other parameters belong in another optimizer (e.g. AdamW).
    lr : float or Tensor, default 1e-3
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    weight_decay : float, default 0.1
        Decoupled weight decay: ``p *= 1 - lr * weight_decay`` every step.
    momentum : float, default 0.95
        Momentum factor.
    nesterov : bool, default True
        Nesterov momentum.
    ns_coefficients : tuple of three floats, default (3.4445, -4.7750, 2.0315)
        Coefficients of the quintic Newton–Schulz polynomial.
    eps : float, default 1e-7
        Floor of the norm the momentum is divided by before the iteration.
    ns_steps : int, default 5
        Newton–Schulz steps (< 100).
    adjust_lr_fn : {None, 'original', 'match_rms_adamw'}, default None
        How the learning rate is scaled by the matrix shape ``(A, B)``: ``sqrt(max(1, A/B))``
        (None, 'original') or ``0.2 * sqrt(max(A, B))``.

    Raises
    ------
    ValueError
        A hyper-parameter out of range, an unknown ``adjust_lr_fn``, or a parameter that is
        not 2-D (torch's checks and messages; the size is printed as a NumPy shape).
    RuntimeError
        From :meth:`step`: a complex parameter with a gradient (torch's "Muon does not support
        complex parameters"), before anything is modified.

    Notes
    -----
    Per parameter, torch's single-tensor rule: ``buf.lerp_(g, 1 - momentum)``; the update is
    ``g.lerp(buf, momentum)`` (nesterov) or ``buf``, orthogonalised by
    :func:`zeropower_via_newtonschulz` (in bfloat16, as torch); then ``p *= 1 - lr *
    weight_decay`` and ``p += -adjusted_lr * update``. The state of a parameter is
    ``{"momentum_buffer": ndarray}``, created on its first step with a gradient. The ``lerp``
    and ``add_`` run in C with torch's fma rounding; the matrix products are NumPy's, so the
    result agrees with torch within a measured tolerance (see the README), not bit for bit.
    Not elementwise: :meth:`~Optimizer.clip_and_step` clips then steps (bit-identical to
    ``clip_grad_norm_`` followed by :meth:`step`).
    """

    # Accepted by the constructor as torch accepts them; step() refuses them, as torch's does.
    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = (DEFAULT_A, DEFAULT_B, DEFAULT_C),
        eps: float = EPS,
        ns_steps: int = DEFAULT_NS_STEPS,
        adjust_lr_fn: Optional[str] = None,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        _check_nonnegative(momentum, "momentum", "momentum should be >= 0 but is: ")
        _check_nonnegative(weight_decay, "weight_decay", "weight decay should be >= 0 but is: ")
        if adjust_lr_fn is not None and adjust_lr_fn not in ["original", "match_rms_adamw"]:
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        defaults = {
            "lr": lr,
            "weight_decay": weight_decay,
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_coefficients": ns_coefficients,
            "eps": eps,
            "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if _value(p).ndim != 2:
                    raise ValueError(
                        "Muon only supports 2D parameters whereas we found a parameter with size: "
                        f"{_value(p).shape}"
                    )

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("weight_decay", "momentum", "eps"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_flag(group["nesterov"], f"{where}['nesterov']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        buf = self.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            _check_state_array(buf, value, f"momentum_buffer of {where}")

    def _apply(self, batches: list[_Batch], grad_scale: Optional[float], write_back: bool) -> None:
        for gi, batch in enumerate(batches):
            self._check_group(batch.group, f"param_groups[{gi}]")
            for p, value, grad in zip(batch.keys, batch.values, batch.grads):
                if value.dtype.kind == "c":
                    raise RuntimeError("Muon does not support complex parameters")
                _check_grad(grad, value, "a parameter", grad_scale is not None and write_back)
                if grad.ndim != 2:
                    raise ValueError("Param gradient must be a 2D matrix")
                self._check_state(batch.group, p, value, grad, "a parameter")
        for batch in batches:
            group = batch.group
            lr, weight_decay, momentum = _lr_scalar(group["lr"]), group["weight_decay"], group["momentum"]
            states = _dicts_of(self.state, batch.keys)
            for value, grad, state in zip(batch.values, batch.grads, states):
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = np.zeros_like(grad)
                grad = scaled_grad(grad, grad_scale, write_back)
                buf = state["momentum_buffer"]
                _C.list_lerp(buf, grad, 1 - momentum)
                if group["nesterov"]:
                    update = grad.copy()
                    _C.list_lerp(update, buf, momentum)
                else:
                    update = buf
                update = zeropower_via_newtonschulz(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                adjusted_lr = _adjust_lr(lr, group["adjust_lr_fn"], value.shape)
                mul_(value, 1 - lr * weight_decay)
                # torch adds the bfloat16 update to the parameter in the parameter's dtype.
                _C.list_axpy(value, -adjusted_lr, update.astype(value.dtype))
