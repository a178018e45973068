"""Adagrad, mirroring ``torch.optim.Adagrad``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from ._common import apply_with_lazy_state, check_buffers, fix_steps, new_step
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _value, _check_nonnegative
from .sgd import _reject_unsupported

__all__ = ["Adagrad", "AdagradGroup", "adagrad"]


class AdagradGroup(NamedTuple):
    """One parameter group's share of an Adagrad step (the layout ``_C.adagrad_step`` takes).

    ``state_sums``: the accumulated squared gradients, updated in place. ``state_steps``: 0-d
    float32 arrays (torch's ``step`` tensors), incremented in place before use.
    """

    params: list[Any]
    grads: list[Any]
    state_sums: list[Any]
    state_steps: list[Any]
    lr: float
    weight_decay: float
    lr_decay: float
    eps: float
    maximize: bool


def adagrad(groups: list[AdagradGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one Adagrad step to every group in place, as ``torch.optim._single_tensor_adagrad``.

    Parameters
    ----------
    groups : list of AdagradGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per parameter, ``step += 1`` (float32) and ``clr = lr / (1 + (step - 1) * lr_decay)`` in
    float64 as torch's Python computes it; per element, rounding to the parameter dtype after
    each torch operation (``fma`` rounds once)::

        g = -g if maximize
        g = fma(p, weight_decay, g)            weight_decay != 0 (complex p: g + wd * p, two roundings)
        sum = fma(g, g, sum)                   addcmul_(g, g, value=1)
        std = sqrt(sum) + eps
        p = p + (-clr * g) / std               addcdiv_

    Complex parameters are updated as real pairs (torch's ``view_as_real``), after the weight
    decay, which torch adds on the complex tensors.
    """
    _C.adagrad_step(groups, grad_scale, write_back)


def _initial_sum(value: np.ndarray, initial_accumulator_value: float) -> np.ndarray:
    init = complex(initial_accumulator_value, initial_accumulator_value) if value.dtype.kind == "c" else (
        initial_accumulator_value
    )
    return np.full_like(value, init)


class Adagrad(Optimizer):
    r"""Adagrad, as ``torch.optim.Adagrad``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`. Plain ndarrays may be
        complex64/complex128 (updated as real pairs, as torch does).
    lr : float or Tensor, default 1e-2
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    lr_decay : float, default 0
        The step size is ``lr / (1 + (step - 1) * lr_decay)``.
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    initial_accumulator_value : float, default 0
        The starting value of every ``sum`` element (``v + vj`` for a complex parameter).
    eps : float, default 1e-10
        Added to the denominator, after the square root.
    foreach : bool or None, default None
        Accepted and stored for compatibility; gradclip has one implementation, with the
        numbers of torch's single-tensor path (the one torch uses on CPU).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable : bool, default False
        Must be False.
    fused : bool or None, default None
        Must be None or False; see :meth:`~Optimizer.clip_and_step`.

    Raises
    ------
    ValueError
        A negative ``lr``, ``lr_decay``, ``weight_decay``, ``initial_accumulator_value`` or
        ``eps`` (torch's checks, order and messages).
    NotImplementedError
        ``fused`` or ``differentiable`` set to True.

    Notes
    -----
    Unlike the other optimizers, and as in torch, the state of every parameter is created by
    the constructor, not on its first step: ``"step"``, a 0-d float32 ndarray (0), and
    ``"sum"``, an ndarray like the parameter filled with ``initial_accumulator_value``. A
    parameter group added later gets its state on its first step, filled with the
    *constructor's* ``initial_accumulator_value`` (torch reads ``self.defaults``; a group's own
    ``initial_accumulator_value`` is stored but never used). The update is torch's
    single-tensor rule (see :func:`adagrad`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: Optional[bool] = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        _check_nonnegative(lr_decay, "lr_decay", "Invalid lr_decay value: ")
        _check_nonnegative(weight_decay, "weight_decay", "Invalid weight_decay value: ")
        _check_nonnegative(initial_accumulator_value, "initial_accumulator_value", "Invalid initial_accumulator_value value: ")
        _check_nonnegative(eps, "eps", "Invalid epsilon value: ")
        _reject_unsupported("Adagrad", fused=fused, differentiable=differentiable)

        defaults = {
            "lr": lr,
            "lr_decay": lr_decay,
            "eps": eps,
            "weight_decay": weight_decay,
            "initial_accumulator_value": initial_accumulator_value,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults)
        # torch creates the state here, for every parameter, with the constructor's value.
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = new_step()
                state["sum"] = _initial_sum(_value(p), initial_accumulator_value)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)
        fix_steps(self)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("weight_decay", "lr_decay", "eps"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_flag(group["maximize"], f"{where}['maximize']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        state = self.state.get(param, {})
        if len(state) != 0:
            check_buffers(state, ["sum"], value, where)

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        def init(group: dict[str, Any], value: np.ndarray) -> dict[str, Any]:
            return {"step": new_step(), "sum": _initial_sum(value, self.defaults["initial_accumulator_value"])}

        def make_group(batch: _Batch, states: list[dict[str, Any]]) -> AdagradGroup:
            g = batch.group
            return AdagradGroup(
                batch.values, batch.grads, [s["sum"] for s in states], [s["step"] for s in states],
                g["lr"], g["weight_decay"], g["lr_decay"], g["eps"], g["maximize"],
            )

        apply_with_lazy_state(self, batches, init, make_group, adagrad, grad_scale, write_back)
