"""Adam, mirroring ``torch.optim.Adam``."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _functional
from .optimizer import (
    Optimizer,
    _check_adam_family,
    ParamsT,
    _Batch,
    _check_flag,
    _check_lr,
    _check_real,
    _check_state_array,
    _dicts_of,
    _is_tensor_lr,
    _is_torch_tensor,
)
from .sgd import _reject_unsupported

__all__ = ["Adam"]

# torch's step counter is a float32 0-d tensor on CPU (float64 only under
# torch.set_default_dtype(torch.float64), which has no NumPy equivalent).
_STEP_DTYPE = np.dtype(np.float32)


def _as_step(value: object) -> object:
    """A loaded step counter as the kernels need it: a writable 0-d float32 array.

    torch keeps a loaded tensor's dtype (float64 under a float64 default dtype) and turns
    plain numbers into tensors. The counts are integers below 2**24, exact in float32, and the
    bias corrections use ``float(step)``, so the conversion changes no result.
    """
    if isinstance(value, np.ndarray) and value.dtype == _STEP_DTYPE and value.shape == ():
        return value
    try:
        return np.array(float(np.asarray(value)), dtype=_STEP_DTYPE)
    except (TypeError, ValueError):
        return value  # left for _check_state to report at the next step


def _check_betas(betas: Any, what: str) -> None:
    """A pair of real numbers (Adamax's betas; Adam's, unless they are Tensors)."""
    try:
        n = len(betas)
    except TypeError:
        n = None
    if n != 2:
        raise TypeError(f"{what} must be a pair of floats, not {betas!r}")
    _check_real(betas[0], f"{what}[0]")
    _check_real(betas[1], f"{what}[1]")


def _check_adam_betas(betas: Any, what: str, torch_sizes: bool = True) -> None:
    """Adam's betas: a pair of real numbers or of Tensor betas (a torch tensor or ndarray of
    one element, float32 or float64). The constructor passes ``torch_sizes=False``: a torch
    tensor of more elements is then left to its range check, which raises torch's own error
    for it, as in torch."""
    try:
        tensors = len(betas) == 2 and (_is_tensor_lr(betas[0]) or _is_tensor_lr(betas[1]))
    except TypeError:
        tensors = False
    if not tensors:
        _check_betas(betas, what)
        return
    for i in (0, 1):
        beta, name = betas[i], f"{what}[{i}]"
        if not _is_tensor_lr(beta):
            _check_real(beta, name)
            continue
        size = beta.numel() if _is_torch_tensor(beta) else beta.size
        if (torch_sizes or isinstance(beta, np.ndarray)) and size != 1:
            raise ValueError(f"Tensor {name} must be 1-element")
        if str(beta.dtype) not in ("float32", "float64", "torch.float32", "torch.float64"):
            raise TypeError(
                f"{name}: a Tensor beta must be float32 or float64, not {beta.dtype} (torch computes "
                "with a beta in its own dtype; gradclip reproduces float32 and float64)"
            )


def _squeezed(beta: Any) -> Any:
    """torch's ``_to_scalar``: a Tensor beta with dimensions becomes its 0-d view."""
    if _is_tensor_lr(beta) and beta.ndim != 0:
        return beta.squeeze() if _is_torch_tensor(beta) else beta.reshape(())
    return beta


def _beta_scalar(beta: Any) -> Any:
    """What the kernel computes with for a beta: a float, or for a Tensor beta a 0-d ndarray of
    its dtype (the C code then computes its scalar expressions in that dtype, as torch)."""
    if not _is_tensor_lr(beta):
        return float(beta)
    name = str(beta.dtype).replace("torch.", "")
    size = beta.numel() if _is_torch_tensor(beta) else beta.size
    if name not in ("float32", "float64") or size != 1:
        raise TypeError("betas")  # an edited group: _explain (_check_group) names the fault
    return np.array(beta.item() if _is_torch_tensor(beta) else beta.reshape(()).item(), dtype=name)


class Adam(Optimizer):
    r"""Adam, as ``torch.optim.Adam`` (AdamW with ``decoupled_weight_decay=True``).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups; see :class:`Optimizer`.
    lr : float or Tensor, default 1e-3
        Learning rate.
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    betas : tuple of two floats or of two Tensors, default (0.9, 0.999)
        Decay rates of the first and second moment estimates, each in ``[0, 1)``: both Python
        floats (torch's rule: ``(0.9, 1)`` is rejected), or both torch's Tensor betas (a
        1-element torch tensor or ndarray, float32 or float64, kept in the group as its 0-d
        view). torch computes the bias corrections of Tensor betas in their dtype (a float32
        ``1 - beta1 ** step``, ``lr / bias_correction1``, ``sqrt`` of ``1 - beta2 ** step``)
        and ``1 - beta1`` in the parameter's; so does gradclip.
    eps : float, default 1e-8
        Added to the denominator.
    weight_decay : float, default 0
        L2 penalty added to the gradient, or with ``decoupled_weight_decay`` the factor of
        the decay applied to the parameter.
    amsgrad : bool, default False
        Use the running maximum of the second moment (AMSGrad).
    maximize : bool, default False
        Maximize the objective instead of minimizing it.
    foreach : bool or None, default None
        Accepted and stored for compatibility; gradclip has one implementation, with the
        numbers of torch's single-tensor path (the one torch uses on CPU).
    capturable, differentiable : bool, default False
        Must be False.
    fused : bool or None, default None
        Must be None or False; see :meth:`~Optimizer.clip_and_step`.
    decoupled_weight_decay : bool, default False
        Decay the parameters directly (AdamW) instead of through the gradient.

    Raises
    ------
    ValueError
        A hyper-parameter out of range (torch's checks, order and messages).
    NotImplementedError
        ``fused``, ``capturable`` or ``differentiable`` set to True.

    Notes
    -----
    A parameter's state, created on its first step with a gradient: ``"step"``, the number
    of steps taken, as a 0-d float32 ndarray (torch's CPU ``step`` is a 0-d float32 tensor;
    a 0-d array rather than a NumPy scalar so that it can be incremented in place);
    ``"exp_avg"``, ``"exp_avg_sq"`` and, with ``amsgrad``, ``"max_exp_avg_sq"``: ndarrays
    like the parameter. The update is torch's single-tensor rule (see
    :func:`gradclip.optim._functional.adam`).
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: Optional[bool] = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
        decoupled_weight_decay: bool = False,
    ) -> None:
        # torch's checks, in torch's order; a non-number fails on a comparison in torch, with a
        # message that does not say which argument, so it is named here first.
        if _is_tensor_lr(lr) and foreach and not capturable:
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        _check_adam_family(lr, eps, betas, weight_decay, lambda b, w: _check_adam_betas(b, w, torch_sizes=False))
        tensors = (_is_tensor_lr(betas[0]), _is_tensor_lr(betas[1]))
        if not ((isinstance(betas[0], float) and isinstance(betas[1], float)) or all(tensors)):
            raise ValueError("betas must be either both floats or both Tensors")
        for i in (0, 1):
            if tensors[i]:
                beta: Any = betas[i]
                if not capturable and foreach:
                    raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
                if (beta.numel() if _is_torch_tensor(beta) else beta.size) != 1:
                    raise ValueError(f"Tensor betas[{i}] must be 1-element")
        betas = (_squeezed(betas[0]), _squeezed(betas[1]))
        _reject_unsupported(
            type(self).__name__, fused=fused, capturable=capturable, differentiable=differentiable
        )

        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("decoupled_weight_decay", False)
            group.setdefault("fused", None)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                # Old or foreign state may hold the step as a number; the kernel increments
                # it in place.
                if len(p_state) != 0 and "step" in p_state:
                    p_state["step"] = _as_step(p_state["step"])

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        _check_lr(group["lr"], f"{where}['lr']")
        for key in ("eps", "weight_decay"):
            _check_real(group[key], f"{where}[{key!r}]")
        _check_adam_betas(group["betas"], f"{where}['betas']")
        for key in ("amsgrad", "maximize", "decoupled_weight_decay"):
            _check_flag(group[key], f"{where}[{key!r}]")

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        state = self.state.get(param, {})
        if len(state) == 0:
            return
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
        for key in keys:
            if key not in state:
                raise KeyError(f"{key} missing from the state of {where}")
            _check_state_array(state[key], value, f"{key} of {where}")
        step = state.get("step")
        if not (
            isinstance(step, np.ndarray)
            and step.shape == ()
            and step.dtype == _STEP_DTYPE
            and step.flags.writeable
        ):
            raise TypeError(f"step of {where} must be a writable 0-d float32 ndarray")

    _unit_grad_scales = True  # its C kernel takes AGC's per-unit factors

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        groups, created = [], []
        try:
            for batch in batches:
                group = batch.group
                amsgrad = group["amsgrad"]
                states = _dicts_of(self.state, batch.keys)
                for p, value, state in zip(batch.keys, batch.values, states):
                    if len(state) == 0:
                        # Lazy initialisation, as torch: zeros laid out like the parameter.
                        created.append(p)
                        state["step"] = np.array(0.0, dtype=_STEP_DTYPE)
                        state["exp_avg"] = np.zeros_like(value)
                        state["exp_avg_sq"] = np.zeros_like(value)
                        if amsgrad:
                            state["max_exp_avg_sq"] = np.zeros_like(value)
                beta1, beta2 = group["betas"]
                lr: Any = group["lr"]
                if _is_tensor_lr(beta1):
                    # A Tensor lr divides a Tensor beta's bias correction, where a number (a
                    # float, a NumPy scalar) multiplies its reciprocal: the kernel is told by a
                    # 0-d ndarray of the Tensor lr's dtype (gc_optim.h).
                    given = next(g["lr"] for g in self.param_groups if g["params"] is group["params"])
                    if _is_tensor_lr(given) and isinstance(lr, np.generic):  # _lr_scalar: float32 or float64
                        lr = np.array(lr)
                beta1, beta2 = _beta_scalar(beta1), _beta_scalar(beta2)
                groups.append(
                    _functional.AdamGroup(
                        batch.values,
                        batch.grads,
                        [s["exp_avg"] for s in states],
                        [s["exp_avg_sq"] for s in states],
                        [s["max_exp_avg_sq"] for s in states] if amsgrad else [],
                        [s["step"] for s in states],
                        amsgrad, beta1, beta2, lr, group["weight_decay"], group["eps"],
                        group["maximize"], group["decoupled_weight_decay"],
                    )
                )
            _functional.adam(groups, grad_scale=grad_scale, write_back=write_back)
        except BaseException:
            # The kernel changed nothing; neither does a failed step here.
            for p in created:
                if p in self.state:
                    del self.state[p]
            raise
