"""Averaged SGD, mirroring ``torch.optim.ASGD``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from . import _state
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _dicts_of, _check_nonnegative
from .sgd import _reject_unsupported

__all__ = ["ASGD", "ASGDGroup", "asgd"]


class ASGDGroup(NamedTuple):
    """One parameter group's share of an ASGD step.

    ``axs``: the averages, updated in place. ``state_steps``, ``etas``, ``mus``: 0-d float32
    arrays (torch's float32 tensors): the step is incremented, this step uses ``eta`` and
    ``mu`` as stored, and both are then replaced by the next step's values.
    """

    params: list[Any]
    grads: list[Any]
    axs: list[Any]
    state_steps: list[Any]
    etas: list[Any]
    mus: list[Any]
    lambd: float
    lr: float
    t0: float
    alpha: float
    weight_decay: float
    maximize: bool


def asgd(groups: list[ASGDGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one ASGD step to every group in place, as ``torch.optim._single_tensor_asgd``.

    Parameters
    ----------
    groups : list of ASGDGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per parameter: ``step += 1`` (float32); ``eta`` and ``mu`` are read as stored (float32
    values, then float64). Per element, rounding to the parameter's dtype after each
    operation::

        g = -g if maximize
        g = fma(p, weight_decay, g)                        weight_decay != 0
        p = p * (1 - lambd * eta)
        p = fma(g, -eta, p)
        ax = ax + (p - ax) * mu          if mu != 1, else ax = p

    Then, as torch, in float64 from the new step and stored as float32:
    ``eta = lr / (1 + lambd * lr * step) ** alpha`` and ``mu = 1 / max(1, step - t0)``.
    Complex parameters are updated as real pairs (torch's ``view_as_real``).
    """
    _C.asgd_step(groups, grad_scale, write_back)


class ASGD(Optimizer):
    r"""Averaged stochastic gradient descent, as ``torch.optim.ASGD``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 1e-2
        Learning rate (the first ``eta``).
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    lambd : float, default 1e-4
        Decay term.
    alpha : float, default 0.75
        Power of the ``eta`` schedule.
    t0 : float, default 1e6
        The step at which averaging starts.
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
        Negative ``lr`` or ``weight_decay`` (torch's messages).
    NotImplementedError
        ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"``, ``"eta"``
    (the learning rate in float32) and ``"mu"`` (1), 0-d float32 ndarrays as torch's CPU
    tensors, and ``"ax"``, the running average of the parameter (AWD-LSTM evaluates with
    it), an array like the parameter. The update is torch's single-tensor rule (see
    :func:`gradclip.optim.asgd.asgd`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        lambd: float = 1e-4,
        alpha: float = 0.75,
        t0: float = 1e6,
        weight_decay: float = 0,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        differentiable: bool = False,
        capturable: bool = False,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        _check_nonnegative(weight_decay, "weight_decay", "Invalid weight_decay value: ")
        for value, name in ((lambd, "lambd"), (alpha, "alpha"), (t0, "t0")):
            _check_real(value, name)
        _reject_unsupported("ASGD", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "lambd": lambd,
            "alpha": alpha,
            "t0": t0,
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
        _state.convert_scalars(self, ("step", "eta", "mu"))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("lambd", "alpha", "t0", "weight_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_flag(group["maximize"], f"{where}['maximize']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        _state.check_state(self.state.get(param, {}), ("ax",), ("step", "eta", "mu"), value, where)

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        groups, created = [], []
        try:
            for batch in batches:
                group = batch.group
                states = _dicts_of(self.state, batch.keys)
                for p, value, state in zip(batch.keys, batch.values, states):
                    if len(state) == 0:
                        created.append(p)
                        state["step"] = _state.new_scalar(0.0)
                        state["eta"] = _state.new_scalar(float(group["lr"]))
                        state["mu"] = _state.new_scalar(1.0)
                        state["ax"] = np.zeros_like(value)
                groups.append(
                    ASGDGroup(
                        batch.values,
                        batch.grads,
                        [s["ax"] for s in states],
                        [s["step"] for s in states],
                        [s["eta"] for s in states],
                        [s["mu"] for s in states],
                        group["lambd"], group["lr"], group["t0"], group["alpha"], group["weight_decay"],
                        group["maximize"],
                    )
                )
            asgd(groups, grad_scale=grad_scale, write_back=write_back)
        except BaseException:
            for p in created:
                if p in self.state:
                    del self.state[p]
            raise
