"""RAdam, mirroring ``torch.optim.RAdam``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from . import _state
from .optimizer import _check_adam_family, Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _dicts_of
from .sgd import _reject_unsupported

__all__ = ["RAdam", "RAdamGroup", "radam"]


class RAdamGroup(NamedTuple):
    """One parameter group's share of a RAdam step.

    ``exp_avgs``/``exp_avg_sqs``: state arrays, zeros before the first step, updated in place.
    ``state_steps``: 0-d float32 arrays (torch's float32 ``step`` tensor), incremented in place
    before use.
    """

    params: list[Any]
    grads: list[Any]
    exp_avgs: list[Any]
    exp_avg_sqs: list[Any]
    state_steps: list[Any]
    beta1: float
    beta2: float
    lr: float
    weight_decay: float
    eps: float
    decoupled_weight_decay: bool
    maximize: bool


def radam(groups: list[RAdamGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one RAdam step to every group in place, as ``torch.optim._single_tensor_radam``.

    Parameters
    ----------
    groups : list of RAdamGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per parameter, in float64 as torch's Python from the float32 step (after ``step += 1``):
    ``bc1 = 1 - beta1 ** step``, ``bc2 = 1 - beta2 ** step``, ``rho_inf = 2 / (1 - beta2) - 1``,
    ``rho_t = rho_inf - 2 * step * beta2 ** step / bc2`` and, when ``rho_t > 5``,
    ``rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5``.
    Per element, rounding to the parameter's dtype after each operation::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)                    decoupled, weight_decay != 0
        g = fma(p, weight_decay, g)                        coupled, weight_decay != 0
        m = lerp(m, g, 1 - beta1)
        v = fma((1 - beta2) * g, g, v * beta2)
        u = (m / bc1) * lr
        u = (u * ((1 / (sqrt(v) + eps)) * bc2 ** 0.5)) * rect     only if rho_t > 5
        p = p - u

    (torch evaluates ``bc2 ** 0.5 / tensor`` as ``tensor.reciprocal() * bc2 ** 0.5``.)
    Complex parameters are updated as real pairs (torch's ``view_as_real``).
    """
    _C.radam_step(groups, grad_scale, write_back)


class RAdam(Optimizer):
    r"""RAdam (rectified Adam), as ``torch.optim.RAdam``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 1e-3
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    betas : tuple of two floats, default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0
        L2 penalty added to the gradient, or with ``decoupled_weight_decay`` the factor of
        the decay applied to the parameter.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (as AdamW) instead of through the gradient.
    foreach : bool or None, default None
        Accepted and stored for compatibility.
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    capturable, differentiable : bool, default False
        Must be False.

    Raises
    ------
    ValueError
        A hyper-parameter out of range (torch's checks, order and messages).
    NotImplementedError
        ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"``, a 0-d
    float32 ndarray, and ``"exp_avg"``, ``"exp_avg_sq"``, arrays like the parameter. Whether
    the rectified update applies is decided per parameter from its own step, as in torch.
    The update is torch's single-tensor rule (see :func:`gradclip.optim.radam.radam`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        _check_adam_family(lr, eps, betas, weight_decay, _state.check_pair)
        _reject_unsupported("RAdam", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "decoupled_weight_decay": decoupled_weight_decay,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("capturable", False)
        _state.convert_scalars(self, ("step",))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("eps", "weight_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        _state.check_pair(group["betas"], f"{where}['betas']")
        for key in ("decoupled_weight_decay", "maximize"):
            _check_flag(group[key], f"{where}[{key!r}]")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        _state.check_state(self.state.get(param, {}), ("exp_avg", "exp_avg_sq"), ("step",), value, where)

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
                        state["exp_avg"] = np.zeros_like(value)
                        state["exp_avg_sq"] = np.zeros_like(value)
                beta1, beta2 = group["betas"]
                groups.append(
                    RAdamGroup(
                        batch.values,
                        batch.grads,
                        [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states],
                        [s["step"] for s in states],
                        beta1, beta2, group["lr"], group["weight_decay"], group["eps"],
                        group["decoupled_weight_decay"], group["maximize"],
                    )
                )
            radam(groups, grad_scale=grad_scale, write_back=write_back)
        except BaseException:
            for p in created:
                if p in self.state:
                    del self.state[p]
            raise
