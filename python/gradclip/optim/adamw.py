"""AdamW, mirroring ``torch.optim.AdamW``."""

from __future__ import annotations

from typing import Any, Optional

from .adam import Adam
from .optimizer import ParamsT

__all__ = ["AdamW"]


class AdamW(Adam):
    r"""Adam with decoupled weight decay, as ``torch.optim.AdamW``.

    Identical to ``Adam(..., decoupled_weight_decay=True)`` (torch 2.13 implements it the
    same way), with a default ``weight_decay`` of ``1e-2``: before the Adam update each
    parameter is multiplied by ``1 - lr * weight_decay``.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 1e-3
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    betas : tuple of two floats or of two Tensors, default (0.9, 0.999)
        Decay rates of the moment estimates; Tensor betas as in :class:`Adam`.
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 1e-2
        Decoupled weight-decay factor.
    amsgrad : bool, default False
        Use AMSGrad.
    maximize : bool, default False
        Maximize the objective.
    foreach : bool or None, default None
        Accepted for compatibility.
    capturable, differentiable : bool, default False
        Must be False.
    fused : bool or None, default None
        Must be None or False.

    See Also
    --------
    Adam : the state, validation and update rule.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # As torch: a state dict saved by Adam still loads as AdamW.
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
