"""Rprop, mirroring ``torch.optim.Rprop``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from . import _state
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _dicts_of
from .sgd import _reject_unsupported

__all__ = ["Rprop", "RpropGroup", "rprop"]


class RpropGroup(NamedTuple):
    """One parameter group's share of an Rprop step.

    ``prevs`` (the previous step's gradients, zeros at first) and ``step_sizes`` (filled with
    ``lr`` at first): state arrays updated in place. ``state_steps``: 0-d float32 arrays,
    incremented in place.
    """

    params: list[Any]
    grads: list[Any]
    prevs: list[Any]
    step_sizes: list[Any]
    state_steps: list[Any]
    etaminus: float
    etaplus: float
    step_size_min: float
    step_size_max: float
    maximize: bool


def rprop(groups: list[RpropGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one Rprop step to every group in place, as ``torch.optim._single_tensor_rprop``.

    Parameters
    ----------
    groups : list of RpropGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per element, with every scalar first rounded to the parameter's dtype (torch assigns and
    compares them into tensors of that dtype) and ``sign`` torch's (0 for zeros and NaN)::

        g = -g if maximize
        f = sign(g * prev);  f = etaplus if f > 0;  f = etaminus if f < 0;  f = 1 if f == 0
        step_size = clamp(step_size * f, step_size_min, step_size_max)   (NaN stays NaN)
        g = 0 where f == etaminus
        p = fma(-sign(g), step_size, p)
        prev = g

    Complex parameters are updated as real pairs (torch's ``view_as_real``).
    """
    _C.rprop_step(groups, grad_scale, write_back)


class Rprop(Optimizer):
    r"""The resilient backpropagation algorithm, as ``torch.optim.Rprop``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 1e-2
        Learning rate: every element's initial step size.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    etas : tuple of two floats, default (0.5, 1.2)
        ``(etaminus, etaplus)``, the factors that shrink and grow the step sizes;
        ``0 < etaminus < 1 < etaplus``.
    step_sizes : tuple of two floats, default (1e-6, 50)
        The smallest and largest allowed step sizes.
    capturable : bool, default False
        Must be False.
    foreach : bool or None, default None
        Accepted and stored for compatibility.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    differentiable : bool, default False
        Must be False.

    Raises
    ------
    ValueError
        Negative ``lr`` or etas out of order (torch's messages).
    NotImplementedError
        ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"``, a 0-d
    float32 ndarray; ``"prev"``, zeros like the parameter; ``"step_size"``, like the
    gradient, filled with ``lr`` (``lr + lr*1j`` for a complex parameter, whose real and
    imaginary parts torch steps independently). The update is torch's single-tensor rule (see
    :func:`gradclip.optim.rprop.rprop`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        etas: tuple[float, float] = (0.5, 1.2),
        step_sizes: tuple[float, float] = (1e-6, 50),
        *,
        capturable: bool = False,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        _state.check_pair(etas, "etas")
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"Invalid eta values: {etas[0]}, {etas[1]}")
        _state.check_pair(step_sizes, "step_sizes")
        _reject_unsupported("Rprop", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "etas": etas,
            "step_sizes": step_sizes,
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
        _state.convert_scalars(self, ("step",))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        _state.check_pair(group["etas"], f"{where}['etas']")
        _state.check_pair(group["step_sizes"], f"{where}['step_sizes']")
        _check_flag(group["maximize"], f"{where}['maximize']")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        _state.check_state(self.state.get(param, {}), ("prev", "step_size"), ("step",), value, where)

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        groups, created = [], []
        try:
            for batch in batches:
                group = batch.group
                states = _dicts_of(self.state, batch.keys)
                for p, value, grad, state in zip(batch.keys, batch.values, batch.grads, states):
                    if len(state) == 0:
                        created.append(p)
                        state["step"] = _state.new_scalar(0.0)
                        state["prev"] = np.zeros_like(value)
                        lr = float(group["lr"])
                        # torch.full_like(grad, lr): a float16 fill goes through float32 first.
                        fill: complex | np.float32 | float
                        if value.dtype.kind == "c":
                            fill = complex(lr, lr)  # real and imaginary parts step independently
                        elif value.dtype == np.float16:
                            fill = np.float32(lr)
                        else:
                            fill = lr
                        state["step_size"] = np.full_like(grad, fill, dtype=value.dtype)
                etaminus, etaplus = group["etas"]
                step_size_min, step_size_max = group["step_sizes"]
                groups.append(
                    RpropGroup(
                        batch.values,
                        batch.grads,
                        [s["prev"] for s in states],
                        [s["step_size"] for s in states],
                        [s["step"] for s in states],
                        etaminus, etaplus, step_size_min, step_size_max, group["maximize"],
                    )
                )
            rprop(groups, grad_scale=grad_scale, write_back=write_back)
        except BaseException:
            for p in created:
                if p in self.state:
                    del self.state[p]
            raise
