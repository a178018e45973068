"""Adamax, mirroring ``torch.optim.Adamax``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from ._common import apply_with_lazy_state, check_buffers, fix_steps, new_step
from .adam import _check_betas
from .optimizer import _check_adam_family, Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real
from .sgd import _reject_unsupported

__all__ = ["Adamax", "AdamaxGroup", "adamax"]


class AdamaxGroup(NamedTuple):
    """One parameter group's share of an Adamax step (the layout ``_C.adamax_step`` takes).

    ``exp_avgs``/``exp_infs``: state arrays, zeros before the first step, updated in place.
    ``state_steps``: 0-d float32 arrays, incremented in place before use.
    """

    params: list[Any]
    grads: list[Any]
    exp_avgs: list[Any]
    exp_infs: list[Any]
    state_steps: list[Any]
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    maximize: bool


def adamax(groups: list[AdamaxGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one Adamax step to every group in place, as ``torch.optim._single_tensor_adamax``.

    Parameters
    ----------
    groups : list of AdamaxGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per parameter, ``step += 1`` (float32), ``clr = lr / (1 - beta1 ** step)`` in float64 as
    torch's Python computes it; per element, rounding to the parameter dtype after each torch
    operation (torch 2.13's non-differentiable path, ``torch.maximum(..., out=exp_inf)``)::

        g = -g if maximize
        g = fma(p, weight_decay, g)                 weight_decay != 0 (complex p: g + wd * p)
        m = lerp(m, g, 1 - beta1)                   (an fma, as in Adam)
        e = maximum(e * beta2, |g| + eps)           NaN from either side propagates
        p = p + (-clr * m) / e                      addcdiv_

    Complex parameters are updated as real pairs (``|g|`` of each part).
    """
    _C.adamax_step(groups, grad_scale, write_back)


class Adamax(Optimizer):
    r"""Adamax (Adam with the infinity norm), as ``torch.optim.Adamax``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`. Plain ndarrays may be
        complex64/complex128 (updated as real pairs, as torch does).
    lr : float or Tensor, default 2e-3
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    betas : tuple of two floats, default (0.9, 0.999)
        Decay rates of the first moment and of the infinity norm, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to ``|g|`` before the maximum.
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    foreach : bool or None, default None
        Accepted and stored for compatibility.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable, capturable : bool, default False
        Must be False.

    Raises
    ------
    ValueError
        A negative ``lr``, ``eps`` or ``weight_decay``, a beta outside ``[0, 1)`` (torch's
        checks, order and messages).
    NotImplementedError
        ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"`` (0-d float32
    ndarray), ``"exp_avg"`` and ``"exp_inf"`` (zeros like the parameter). The update is
    torch's single-tensor rule (see :func:`adamax`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        foreach: Optional[bool] = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        _check_adam_family(lr, eps, betas, weight_decay, _check_betas)
        _reject_unsupported("Adamax", capturable=capturable, differentiable=differentiable)

        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "capturable": capturable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("capturable", False)
        fix_steps(self)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("eps", "weight_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_betas(group["betas"], f"{where}['betas']")
        _check_flag(group["maximize"], f"{where}['maximize']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        state = self.state.get(param, {})
        if len(state) != 0:
            check_buffers(state, ["exp_avg", "exp_inf"], value, where)

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        def init(group: dict[str, Any], value: np.ndarray) -> dict[str, Any]:
            return {"step": new_step(), "exp_avg": np.zeros_like(value), "exp_inf": np.zeros_like(value)}

        def make_group(batch: _Batch, states: list[dict[str, Any]]) -> AdamaxGroup:
            g = batch.group
            beta1, beta2 = g["betas"]
            return AdamaxGroup(
                batch.values, batch.grads,
                [s["exp_avg"] for s in states], [s["exp_inf"] for s in states], [s["step"] for s in states],
                g["lr"], beta1, beta2, g["eps"], g["weight_decay"], g["maximize"],
            )

        apply_with_lazy_state(self, batches, init, make_group, adamax, grad_scale, write_back)
