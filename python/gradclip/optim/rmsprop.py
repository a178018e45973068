"""RMSprop, mirroring ``torch.optim.RMSprop``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from ._common import apply_with_lazy_state, check_buffers, fix_steps, new_step
from .optimizer import Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _check_nonnegative
from .sgd import _reject_unsupported

__all__ = ["RMSprop", "RMSpropGroup", "rmsprop"]


class RMSpropGroup(NamedTuple):
    """One parameter group's share of an RMSprop step.

    ``square_avgs`` always; ``grad_avgs`` only when ``centered``, ``momentum_buffers`` only
    when ``momentum > 0`` (otherwise ignored); ``state_steps``: 0-d float32 arrays,
    incremented in place. Every state array is updated in place.
    """

    params: list[Any]
    grads: list[Any]
    square_avgs: list[Any]
    grad_avgs: list[Any]
    momentum_buffers: list[Any]
    state_steps: list[Any]
    lr: float
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool
    maximize: bool


def rmsprop(groups: list[RMSpropGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one RMSprop step to every group in place, as ``torch.optim._single_tensor_rmsprop``.

    Parameters
    ----------
    groups : list of RMSpropGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per element, rounding to the parameter dtype after each torch operation (``fma`` rounds
    once; ``lerp`` is an fma as in Adam)::

        g = -g if maximize
        g = fma(p, weight_decay, g)                     weight_decay != 0 (complex p: g + wd * p)
        v = fma((1 - alpha) * g, g, v * alpha)          square_avg.mul_(alpha).addcmul_
        a = lerp(a, g, 1 - alpha)                       centered
        avg = sqrt(fma(-a, a, v)) if centered else sqrt(v)
        avg = avg + eps                                 eps after the square root
        b = b * momentum + g / avg                      momentum > 0
        p = fma(b, -lr, p)                              momentum > 0
        p = p + (-lr * g) / avg                         otherwise

    ``step`` is counted but not used. Complex parameters are updated as real pairs after the
    weight decay (which torch adds on the complex tensors).
    """
    layout = []
    for g in groups:
        centered, momentum = bool(g.centered), g.momentum > 0
        # The kernel's operands: the optional buffers packed after square_avgs, in this order.
        extra = ([g.grad_avgs] if centered else []) + ([g.momentum_buffers] if momentum else [])
        extra += [[]] * (2 - len(extra))
        layout.append(
            (g.params, g.grads, g.square_avgs, *extra, g.state_steps,
             g.lr, g.alpha, g.eps, g.weight_decay, g.momentum, g.centered, g.maximize)
        )
    _C.rmsprop_step(layout, grad_scale, write_back)


class RMSprop(Optimizer):
    r"""RMSprop, as ``torch.optim.RMSprop`` (plain, ``centered``, with ``momentum``).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`. Plain ndarrays may be
        complex64/complex128 (updated as real pairs, as torch does).
    lr : float or Tensor, default 1e-2
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    alpha : float, default 0.99
        Smoothing constant of the squared-gradient average.
    eps : float, default 1e-8
        Added to the square root of the average (not under it).
    weight_decay : float, default 0
        L2 penalty, added to the gradient.
    momentum : float, default 0
        Momentum factor; a ``momentum_buffer`` is kept when positive.
    centered : bool, default False
        Normalise by the estimated variance (subtracting the squared mean gradient, kept
        in ``grad_avg``).
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
        A negative ``lr``, ``eps``, ``momentum``, ``weight_decay`` or ``alpha`` (torch's
        checks, order and messages).
    NotImplementedError
        ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"`` (0-d float32
    ndarray), ``"square_avg"``, then ``"momentum_buffer"`` if ``momentum > 0`` and
    ``"grad_avg"`` if ``centered`` (torch's key order), zeros like the parameter. The update
    is torch's single-tensor rule (see :func:`rmsprop`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        _check_nonnegative(eps, "eps", "Invalid epsilon value: ")
        _check_nonnegative(momentum, "momentum", "Invalid momentum value: ")
        _check_nonnegative(weight_decay, "weight_decay", "Invalid weight_decay value: ")
        _check_nonnegative(alpha, "alpha", "Invalid alpha value: ")
        _reject_unsupported("RMSprop", capturable=capturable, differentiable=differentiable)

        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("momentum", 0)
            group.setdefault("centered", False)
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("capturable", False)
        fix_steps(self)

    @staticmethod
    def _buffer_keys(group: dict[str, Any]) -> list[str]:
        return (
            ["square_avg"]
            + (["momentum_buffer"] if group["momentum"] > 0 else [])
            + (["grad_avg"] if group["centered"] else [])
        )

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("alpha", "eps", "weight_decay", "momentum"):
            _check_real(group[key], f"{where}[{key!r}]")
        for key in ("centered", "maximize"):
            _check_flag(group[key], f"{where}[{key!r}]")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        state = self.state.get(param, {})
        if len(state) != 0:
            check_buffers(state, self._buffer_keys(group), value, where)

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        def init(group: dict[str, Any], value: np.ndarray) -> dict[str, Any]:
            state = {"step": new_step()}
            for key in self._buffer_keys(group):
                state[key] = np.zeros_like(value)
            return state

        def make_group(batch: _Batch, states: list[dict[str, Any]]) -> RMSpropGroup:
            g = batch.group
            momentum, centered = g["momentum"] > 0, g["centered"]
            return RMSpropGroup(
                batch.values, batch.grads,
                [s["square_avg"] for s in states],
                [s["grad_avg"] for s in states] if centered else [],
                [s["momentum_buffer"] for s in states] if momentum else [],
                [s["step"] for s in states],
                g["lr"], g["alpha"], g["eps"], g["weight_decay"], g["momentum"], centered, g["maximize"],
            )

        apply_with_lazy_state(self, batches, init, make_group, rmsprop, grad_scale, write_back)
