"""Adafactor, mirroring ``torch.optim.Adafactor``."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _C
from ._numpy_ops import div_, mul_, rsqrt
from ._numpy_ops import norm as _norm
from ._numpy_ops import scaled_grad
from .adam import _STEP_DTYPE, _as_step
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_grad, _check_lr, _check_real, _check_state_array, _dicts_of, _check_nonnegative

__all__ = ["Adafactor"]


class Adafactor(Optimizer):
    r"""Adafactor, as ``torch.optim.Adafactor`` (torch 2.13).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`. float16/32/64, real
        (complex ones are accepted, as torch accepts them, and refused by :meth:`step`).
    lr : float or Tensor, default 1e-2
        The largest relative step size (``rho_t = min(lr, 1 / sqrt(step))``).
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    beta2_decay : float, default -0.8
        The second-moment decay is ``1 - step ** beta2_decay``; must be <= 0.
    eps : tuple of (float or None, float), default (None, 1e-3)
        ``eps1`` floors the second-moment estimate (None: the machine epsilon of the first
        parameter's dtype, as in torch); ``eps2`` floors the parameter scale.
    d : float, default 1.0
        Clipping threshold of the update's root-mean-square; must be >= 1.
    weight_decay : float, default 0
        Decoupled weight decay: ``p *= 1 - lr * weight_decay``.
    foreach : bool or None, default None
        Accepted and stored for compatibility; gradclip runs torch's single-tensor rule.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.

    Raises
    ------
    ValueError
        A hyper-parameter out of range (torch's checks, order and messages).
    RuntimeError
        From :meth:`step`: a complex parameter with a gradient (torch's "Adafactor does not
        support complex parameters"), before anything is modified.

    Notes
    -----
    Per parameter (torch's ``_single_tensor_adafactor``): ``step`` (0-d float32 ndarray) is
    incremented; ``alpha = max(eps2, ||p|| / sqrt(numel)) * min(lr, step ** -0.5)``; a
    parameter with ``ndim >= 2`` keeps factored second moments ``row_var`` (shape with the
    last dim 1) and ``col_var`` (second-to-last dim 1), updated by ``lerp`` towards the row
    and column means of ``g ** 2`` with weight ``step ** beta2_decay``; their outer product
    divided by the mean of ``row_var`` (clamped to ``eps1``) estimates ``E[g ** 2]``. Smaller
    parameters keep the full ``variance``. The update ``g / sqrt(max(v, eps1 ** 2))`` is
    scaled down when its RMS exceeds ``d``, and ``p += -alpha / denom * update``.

    The arithmetic is NumPy's, each torch operation reproduced in order, with ``lerp`` and the
    final ``add_(alpha=)`` in C (``_C.list_lerp``/``list_axpy``, torch's fma rounding). The
    norms and means are reductions: accumulated in float64 and rounded once, where torch
    reduces in the dtype in an order of its own; this (and ``rsqrt``) is where gradclip can
    differ from torch, by the tolerance the README states. Not elementwise, so
    :meth:`~Optimizer.clip_and_step` clips then steps (bit-identical to ``clip_grad_norm_``
    followed by :meth:`step`).
    """

    # Accepted by the constructor as torch accepts them; step() refuses them, as torch's does.
    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[Optional[float], float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: Optional[bool] = None,
        maximize: bool = False,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Learning rate should be >= 0 but is: {lr}")
        _check_real(beta2_decay, "beta2_decay")
        if not 0.0 >= beta2_decay:
            raise ValueError(f"beta2_decay should be <= 0 but is: {beta2_decay}")
        if eps[0] is not None:
            _check_nonnegative(eps[0], "eps[0]", "epsilon1 should be >= 0 but is: ")
        _check_nonnegative(eps[1], "eps[1]", "epsilon2 should be >= 0 but is: ")
        _check_real(d, "d")
        if not 1.0 <= d:
            raise ValueError(f"Clipping threshold d should be >= 1 but is: {d}")
        _check_nonnegative(weight_decay, "weight_decay", "weight_decay should be >= 0 but is: ")
        defaults = {
            "lr": lr,
            "beta2_decay": beta2_decay,
            "eps": eps,
            "d": d,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                if len(p_state) != 0 and "step" in p_state:
                    p_state["step"] = _as_step(p_state["step"])

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("beta2_decay", "d", "weight_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        eps1, eps2 = group["eps"]
        if eps1 is not None:
            _check_real(eps1, f"{where}['eps'][0]")
        _check_real(eps2, f"{where}['eps'][1]")
        _check_flag(group["maximize"], f"{where}['maximize']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        state = self.state.get(param, {})
        if len(state) == 0:
            return
        if value.ndim > 1:
            for key, axis in (("row_var", -1), ("col_var", -2)):
                shape = list(value.shape)
                shape[axis] = 1
                like = np.empty(shape, value.dtype)
                if key not in state:
                    raise KeyError(f"{key} missing from the state of {where}")
                _check_state_array(state[key], like, f"{key} of {where}")
        else:
            if "variance" not in state:
                raise KeyError(f"variance missing from the state of {where}")
            _check_state_array(state["variance"], value, f"variance of {where}")
        step = state.get("step")
        if not (isinstance(step, np.ndarray) and step.shape == () and step.dtype == _STEP_DTYPE and step.flags.writeable):
            raise TypeError(f"step of {where} must be a writable 0-d float32 ndarray")

    def _apply(self, batches: list[_Batch], grad_scale: Optional[float], write_back: bool) -> None:
        # Validate everything first: an error must leave parameters and state unchanged.
        for gi, batch in enumerate(batches):
            self._check_group(batch.group, f"param_groups[{gi}]")
            for p, value, grad in zip(batch.keys, batch.values, batch.grads):
                if value.dtype.kind == "c":
                    raise RuntimeError("Adafactor does not support complex parameters")
                where = "a parameter"
                _check_grad(grad, value, where, grad_scale is not None and write_back)
                self._check_state(batch.group, p, value, grad, where)
        for batch in batches:
            group = batch.group
            lr, beta2_decay, d, weight_decay = group["lr"], group["beta2_decay"], group["d"], group["weight_decay"]
            eps1, eps2 = group["eps"]
            maximize = group["maximize"]
            states = _dicts_of(self.state, batch.keys)
            for value, grad, state in zip(batch.values, batch.grads, states):
                if len(state) == 0:
                    state["step"] = np.array(0.0, dtype=_STEP_DTYPE)
                    if grad.ndim > 1:
                        row_shape = list(grad.shape)
                        row_shape[-1] = 1
                        state["row_var"] = np.zeros(row_shape, grad.dtype)
                        col_shape = list(grad.shape)
                        col_shape[-2] = 1
                        state["col_var"] = np.zeros(col_shape, grad.dtype)
                    else:
                        state["variance"] = np.zeros_like(grad)
                grad = scaled_grad(grad, grad_scale, write_back)
                if maximize:
                    grad = -grad
                dtype = value.dtype.type
                if eps1 is None:  # torch: the first parameter's dtype decides for the group
                    eps1 = float(np.finfo(value.dtype).eps)
                step_t = state["step"]
                step_t += 1
                step_float = float(step_t)
                one_minus_beta2_t = step_float**beta2_decay
                rho_t = min(lr, 1 / (step_float**0.5))
                alpha = max(eps2, float(_norm(value)) / (value.size**0.5)) * rho_t
                if weight_decay != 0:
                    mul_(value, 1 - lr * weight_decay)
                if grad.ndim > 1:
                    row_var, col_var = state["row_var"], state["col_var"]
                    row_mean = _norm(grad, -1)
                    row_mean *= row_mean
                    div_(row_mean, grad.shape[-1])
                    _C.list_lerp(row_var, row_mean, one_minus_beta2_t)
                    col_mean = _norm(grad, -2)
                    col_mean *= col_mean
                    div_(col_mean, grad.shape[-2])
                    _C.list_lerp(col_var, col_mean, one_minus_beta2_t)
                    var_estimate = np.matmul(row_var, col_var)  # outer products: exact
                    row_var_mean = (row_var.sum(axis=-2, keepdims=True, dtype=np.float64) / row_var.shape[-2]).astype(
                        value.dtype
                    )
                    var_estimate /= np.maximum(row_var_mean, dtype(eps1))
                else:
                    variance = state["variance"]
                    grad_squared = np.asarray(grad * grad)  # 0-d stays an array
                    _C.list_lerp(variance, grad_squared, one_minus_beta2_t)
                    var_estimate = variance.copy()
                update = np.maximum(var_estimate, dtype(eps1 * eps1))
                update = rsqrt(update)  # torch's var_estimate is C-contiguous
                update *= grad
                denom = max(1.0, float(_norm(update)) / ((update.size**0.5) * d))
                _C.list_axpy(value, -alpha / denom, np.asarray(update))
