"""Adadelta, mirroring ``torch.optim.Adadelta``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from ._common import apply_with_lazy_state, check_buffers, fix_steps, new_step
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _check_nonnegative
from .sgd import _reject_unsupported

__all__ = ["Adadelta", "AdadeltaGroup", "adadelta"]


class AdadeltaGroup(NamedTuple):
    """One parameter group's share of an Adadelta step (the layout ``_C.adadelta_step`` takes).

    ``square_avgs``/``acc_deltas``: state arrays, zeros before the first step, updated in
    place. ``state_steps``: 0-d float32 arrays, incremented in place.
    """

    params: list[Any]
    grads: list[Any]
    square_avgs: list[Any]
    acc_deltas: list[Any]
    state_steps: list[Any]
    lr: float
    rho: float
    eps: float
    weight_decay: float
    maximize: bool


def adadelta(groups: list[AdadeltaGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one Adadelta step to every group in place, as ``torch.optim._single_tensor_adadelta``.

    Parameters
    ----------
    groups : list of AdadeltaGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per element, rounding to the parameter dtype after each torch operation::

        g = -g if maximize
        g = fma(p, weight_decay, g)                 weight_decay != 0 (complex p: g + wd * p)
        v = fma((1 - rho) * g, g, v * rho)          square_avg.mul_(rho).addcmul_
        std = sqrt(v + eps)
        d = sqrt(u + eps) / std * g                 u: acc_delta (before this step)
        u = fma((1 - rho) * d, d, u * rho)
        p = fma(d, -lr, p)                          (complex p: p + (-lr) * d, two roundings)

    ``step`` is counted but not used.
    """
    _C.adadelta_step(groups, grad_scale, write_back)


class Adadelta(Optimizer):
    r"""Adadelta, as ``torch.optim.Adadelta``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`. Plain ndarrays may be
        complex64/complex128 (updated as real pairs, as torch does).
    lr : float or Tensor, default 1.0
        Coefficient that scales the delta before it is applied.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    rho : float, default 0.9
        Decay rate of the running averages, in ``[0, 1]``.
    eps : float, default 1e-6
        Added under both square roots.
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    foreach : bool or None, default None
        Accepted and stored for compatibility.
    capturable : bool, default False
        Must be False.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable : bool, default False
        Must be False.

    Raises
    ------
    ValueError
        A negative ``lr``, ``eps`` or ``weight_decay``, ``rho`` outside ``[0, 1]`` (torch's
        checks, order and messages).
    NotImplementedError
        ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"`` (0-d float32
    ndarray), ``"square_avg"`` and ``"acc_delta"`` (zeros like the parameter). The update is
    torch's single-tensor rule (see :func:`adadelta`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0,
        foreach: Optional[bool] = None,
        *,
        capturable: bool = False,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        _check_real(rho, "rho")
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"Invalid rho value: {rho}")
        _check_nonnegative(eps, "eps", "Invalid epsilon value: ")
        _check_nonnegative(weight_decay, "weight_decay", "Invalid weight_decay value: ")
        _reject_unsupported("Adadelta", capturable=capturable, differentiable=differentiable)

        defaults = {
            "lr": lr,
            "rho": rho,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "capturable": capturable,
            "foreach": foreach,
            "differentiable": differentiable,
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
        for key in ("rho", "eps", "weight_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_flag(group["maximize"], f"{where}['maximize']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        state = self.state.get(param, {})
        if len(state) != 0:
            check_buffers(state, ["square_avg", "acc_delta"], value, where)

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        def init(group: dict[str, Any], value: np.ndarray) -> dict[str, Any]:
            return {"step": new_step(), "square_avg": np.zeros_like(value), "acc_delta": np.zeros_like(value)}

        def make_group(batch: _Batch, states: list[dict[str, Any]]) -> AdadeltaGroup:
            g = batch.group
            return AdadeltaGroup(
                batch.values, batch.grads,
                [s["square_avg"] for s in states], [s["acc_delta"] for s in states], [s["step"] for s in states],
                g["lr"], g["rho"], g["eps"], g["weight_decay"], g["maximize"],
            )

        apply_with_lazy_state(self, batches, init, make_group, adadelta, grad_scale, write_back)
