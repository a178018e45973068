"""Stochastic gradient descent, mirroring ``torch.optim.SGD``."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _functional
from .optimizer import (
    Optimizer,
    ParamsT,
    _Batch,
    _check_flag,
    _check_lr,
    _check_real,
    _check_state_array,
    _get_each,
    _is_tensor_lr,
    _is_torch_tensor,
)

__all__ = ["SGD"]


def _check_weight_decay(value: Any, what: str) -> None:
    """A real number, or (as torch 2.13's SGD takes one) a 0-d torch tensor or ndarray of a
    real dtype. torch's step passes it as ``add(alpha=)``, which takes no tensor with
    dimensions (its TypeError at the step is raised here, by the constructor)."""
    if not _is_tensor_lr(value):
        _check_real(value, what)
        return
    name = str(value.dtype).replace("torch.", "")
    real = name != "bool" and not name.startswith("complex")
    if value.ndim != 0 or not real:
        raise TypeError(
            f"{what} as a Tensor must be 0-d and real (torch's step passes it as add(alpha=), "
            f"which takes a number), not shape {tuple(value.shape)} and dtype {value.dtype}"
        )


def _weight_decay_value(value: Any) -> Any:
    """What the kernel computes with: the exact value a Tensor weight_decay holds, as torch's
    ``add(alpha=weight_decay)`` (or, with requires_grad, ``addcmul_``, the same fused
    multiply-add) reads it; without touching autograd."""
    if _is_tensor_lr(value) and value.ndim != 0:
        raise TypeError("weight_decay")  # an edited group: _explain names it
    if _is_torch_tensor(value):
        return value.detach().item()
    return value


def _reject_unsupported(name: str, **flags: object) -> None:
    """Refuse torch options that only select a different torch code path."""
    for flag, value in flags.items():
        if value:
            raise NotImplementedError(
                f"gradclip.optim.{name} does not support {flag}=True: {_WHY[flag]}"
            )


_WHY = {
    "fused": "gradclip has a single implementation; for a fused clip + update use "
    "clip_and_step()",
    "capturable": "there is no CUDA graph to capture; use capturable=False",
    "differentiable": "gradclip has no autograd; use differentiable=False",
}


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with momentum, as ``torch.optim.SGD``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 1e-3
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    momentum : float, default 0
        Momentum factor.
    dampening : float, default 0
        Dampening for momentum (not applied on the first step, as in torch).
    weight_decay : float or Tensor, default 0
        L2 penalty, added to the gradient. A 0-d torch tensor or ndarray is taken as torch
        takes one (kept in the group; its exact value used, as ``add(alpha=)`` reads it).
    nesterov : bool, default False
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    foreach : bool or None, default None
        Accepted and stored for compatibility; torch's per-tensor and foreach paths give
        the same numbers here, and gradclip has one implementation.
    differentiable : bool, default False
        Must be False (gradclip has no autograd).
    fused : bool or None, default None
        Must be None or False; see :meth:`~Optimizer.clip_and_step` for gradclip's fused
        clip-and-update.

    Raises
    ------
    ValueError
        Negative ``lr``, ``momentum`` or ``weight_decay``; ``nesterov`` without momentum or
        with dampening (torch's messages).
    NotImplementedError
        ``fused=True`` or ``differentiable=True``.

    Notes
    -----
    The update is torch's (single-tensor) rule, with ``g`` the gradient::

        g = -g if maximize;  g = g + weight_decay * p
        b = g (a copy) on the first step, else b = momentum * b + (1 - dampening) * g
        g = g + momentum * b if nesterov else b
        p = p - lr * g

    The state of a parameter is ``{"momentum_buffer": ndarray}``, created on its first step
    with a gradient and only when ``momentum != 0``. As in torch, hyper-parameters are
    validated only when given to the constructor, not when set on a group later.

    Examples
    --------
    >>> import numpy as np
    >>> from gradclip import Parameter, optim
    >>> w = Parameter(np.array([1.0, 2.0]))
    >>> opt = optim.SGD([w], lr=0.1, momentum=0.9)
    >>> w.grad = np.array([1.0, -1.0])
    >>> opt.step()
    >>> w.data
    array([0.9, 2.1])
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        differentiable: bool = False,
        fused: Optional[bool] = None,
    ) -> None:
        # torch's checks, in torch's order; a non-number fails on a comparison in torch, with a
        # message that does not say which argument, so it is named here first.
        _check_lr(lr)
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        _check_real(momentum, "momentum")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        _check_weight_decay(weight_decay, "weight_decay")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        _check_real(dampening, "dampening")

        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        _reject_unsupported("SGD", fused=fused, differentiable=differentiable)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("differentiable", False)
            group.setdefault("fused", False)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("momentum", "dampening"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_weight_decay(group["weight_decay"], f"{where}['weight_decay']")
        for key in ("nesterov", "maximize"):
            _check_flag(group[key], f"{where}[{key!r}]")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        if group["momentum"] == 0:
            return
        buf = self.state.get(param, {}).get("momentum_buffer")
        if buf is not None:
            _check_state_array(buf, value, f"momentum_buffer of {where}")

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        groups = [
            _functional.SGDGroup(
                batch.values,
                batch.grads,
                _get_each(self.state, batch.keys, "momentum_buffer") if batch.group["momentum"] != 0 else [],
                batch.group["lr"],
                batch.group["momentum"],
                batch.group["dampening"],
                _weight_decay_value(batch.group["weight_decay"]),
                batch.group["nesterov"],
                batch.group["maximize"],
            )
            for batch in batches
        ]
        if _functional.sgd(groups, grad_scale=grad_scale, write_back=write_back):
            # The kernel created the missing buffers in place of the Nones: keep them as state.
            for batch, args in zip(batches, groups):
                for p, buf in zip(batch.keys, args.momentum_buffers):
                    self.state[p]["momentum_buffer"] = buf
