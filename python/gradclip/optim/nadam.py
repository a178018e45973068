"""NAdam, mirroring ``torch.optim.NAdam``."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C
from . import _state
from .optimizer import _check_adam_family, Optimizer, ParamsT, _Batch, _check_flag, _check_lr, _check_real, _dicts_of, _check_nonnegative
from .sgd import _reject_unsupported

__all__ = ["NAdam", "NAdamGroup", "nadam"]


class NAdamGroup(NamedTuple):
    """One parameter group's share of a NAdam step.

    ``exp_avgs``/``exp_avg_sqs``: state arrays, zeros before the first step, updated in place.
    ``state_steps``/``mu_products``: 0-d float32 arrays (torch's float32 tensors), advanced in
    place before use.
    """

    params: list[Any]
    grads: list[Any]
    exp_avgs: list[Any]
    exp_avg_sqs: list[Any]
    state_steps: list[Any]
    mu_products: list[Any]
    beta1: float
    beta2: float
    lr: float
    weight_decay: float
    momentum_decay: float
    eps: float
    decoupled_weight_decay: bool
    maximize: bool


def nadam(groups: list[NAdamGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one NAdam step to every group in place, as ``torch.optim._single_tensor_nadam``.

    Parameters
    ----------
    groups : list of NAdamGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per parameter, as torch's Python: ``step += 1`` (float32), then in float64
    ``mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))``, ``mu_next`` the same at
    ``step + 1``, ``mu_product *= mu`` (float32, with ``mu`` rounded to float32),
    ``bc2 = 1 - beta2 ** step``, ``c1 = -lr * (1 - mu) / (1 - mu_product)``,
    ``c2 = -lr * mu_next / (1 - mu_product * mu_next)``. Per element, rounding to the
    parameter's dtype after each operation (``fma`` rounds once)::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)                    decoupled, weight_decay != 0
        g = fma(p, weight_decay, g)                        coupled, weight_decay != 0
        m = lerp(m, g, 1 - beta1)
        v = fma((1 - beta2) * g, g, v * beta2)
        d = sqrt(v / bc2) + eps
        p = p + (c1 * g) / d
        p = p + (c2 * m) / d

    Complex parameters are updated as real pairs (torch's ``view_as_real``).
    """
    _C.nadam_step(groups, grad_scale, write_back)


class NAdam(Optimizer):
    r"""NAdam (Adam with Nesterov momentum), as ``torch.optim.NAdam``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 2e-3
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
    momentum_decay : float, default 4e-3
        The momentum schedule's decay, ``psi`` in the NAdam paper.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (NAdamW) instead of through the gradient.
    foreach : bool or None, default None
        Accepted and stored for compatibility; gradclip has one implementation, with the
        numbers of torch's single-tensor path.
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
    A parameter's state, created on its first step with a gradient: ``"step"`` and
    ``"mu_product"``, 0-d float32 ndarrays (torch's CPU tensors are float32), and
    ``"exp_avg"``, ``"exp_avg_sq"``, arrays like the parameter. The update is torch's
    single-tensor rule (see :func:`gradclip.optim.nadam.nadam`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
        *,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        # torch's checks, in torch's order; a non-number is named here first.
        _check_adam_family(lr, eps, betas, weight_decay, _state.check_pair)
        _check_nonnegative(momentum_decay, "momentum_decay", "Invalid momentum_decay value: ")
        _reject_unsupported("NAdam", capturable=capturable, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "momentum_decay": momentum_decay,
            "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
        _state.convert_scalars(self, ("step", "mu_product"))

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("eps", "weight_decay", "momentum_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        _state.check_pair(group["betas"], f"{where}['betas']")
        for key in ("decoupled_weight_decay", "maximize"):
            _check_flag(group[key], f"{where}[{key!r}]")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        _state.check_state(
            self.state.get(param, {}), ("exp_avg", "exp_avg_sq"), ("step", "mu_product"), value, where
        )

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
                        state["mu_product"] = _state.new_scalar(1.0)
                        state["exp_avg"] = np.zeros_like(value)
                        state["exp_avg_sq"] = np.zeros_like(value)
                beta1, beta2 = group["betas"]
                groups.append(
                    NAdamGroup(
                        batch.values,
                        batch.grads,
                        [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states],
                        [s["step"] for s in states],
                        [s["mu_product"] for s in states],
                        beta1, beta2, group["lr"], group["weight_decay"], group["momentum_decay"],
                        group["eps"], group["decoupled_weight_decay"], group["maximize"],
                    )
                )
            nadam(groups, grad_scale=grad_scale, write_back=write_back)
        except BaseException:
            # The kernel changed nothing; neither does a failed step here.
            for p in created:
                if p in self.state:
                    del self.state[p]
            raise
