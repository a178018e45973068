"""Stochastic weight averaging and EMA for lists of arrays, mirroring ``torch.optim.swa_utils``.

``torch.optim.swa_utils.AveragedModel`` keeps a running average of an ``nn.Module``'s
parameters; gradclip has no modules, so :class:`AveragedParameters` keeps it for a list of
arrays (or :class:`gradclip.Parameter` objects) instead, with the same update rules and the
same numbers as ``AveragedModel`` on CPU tensors:

* the default (no ``avg_fn``/``multi_avg_fn``) is what ``AveragedModel`` runs on CPU:
  ``avg + (current - avg) / (n_averaged + 1)``, every operation rounded in the arrays' dtype;
* :func:`get_swa_multi_avg_fn` and :func:`get_ema_multi_avg_fn` are torch's
  ``_foreach_lerp_`` updates (with torch's weight: ``1 / (n_averaged + 1)`` rounded to
  float32, and ``1 - decay``);
* :func:`get_swa_avg_fn` and :func:`get_ema_avg_fn` are torch's per-array formulas.

The first three run as one C call over the whole list (``gradclip._C``, see
:mod:`gradclip.optim._averaging`). :class:`SWALR` is torch's scheduler.

``torch.optim.swa_utils.update_bn`` is not provided: it recomputes the running statistics of
a model's batch-norm layers by running the model forward over a data loader, and gradclip
has neither models nor layers. A NumPy model with batch norm recomputes its statistics with
its own forward pass over the data, using the averaged parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal, Optional, Union

import numpy as np

from .._parameter import Parameter
from . import _averaging
from .lr_scheduler import LRScheduler, Number, _format_param
from .optimizer import Optimizer

__all__ = [
    "AveragedParameters",
    "SWALR",
    "get_ema_multi_avg_fn",
    "get_swa_multi_avg_fn",
    "get_ema_avg_fn",
    "get_swa_avg_fn",
]

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))


def _check_decay(decay: float) -> None:
    if decay < 0.0 or decay > 1.0:
        raise ValueError(
            f"Invalid decay value {decay} provided. Please provide a value in [0,1] range."
        )


def _swa_weight(num_averaged: Any) -> float:
    """torch's ``1 / (num_averaged + 1)``: for a tensor count (as AveragedModel passes it),
    a float32 reciprocal; for a Python int, a float."""
    if isinstance(num_averaged, (np.ndarray, np.generic)):
        return float(np.float32(1.0) / np.float32(int(num_averaged) + 1))
    return float(1 / (num_averaged + 1))


def get_ema_multi_avg_fn(decay: float = 0.999) -> Callable[[list[Any], list[Any], Any], None]:
    """Return torch's in-place EMA update for lists of arrays.

    Parameters
    ----------
    decay : float, default 0.999
        In [0, 1].

    Returns
    -------
    callable
        ``ema_update(ema_list, current_list, num_averaged)``: every ``ema`` becomes
        ``ema.lerp(current, 1 - decay)`` in place, exactly as torch's
        ``torch._foreach_lerp_`` computes it, in one C call for the whole list.

    Raises
    ------
    ValueError
        ``decay`` outside [0, 1] (torch's message).
    """
    _check_decay(decay)

    def ema_update(ema_param_list: list[Any], current_param_list: list[Any], _: Any) -> None:
        _averaging.lerp_(ema_param_list, current_param_list, 1 - decay)

    ema_update._gradclip_whole_list = True  # type: ignore[attr-defined]
    return ema_update


def get_swa_multi_avg_fn() -> Callable[[list[Any], list[Any], Any], None]:
    """Return torch's in-place SWA (equal-weight running mean) update for lists of arrays.

    Returns
    -------
    callable
        ``swa_update(averaged_list, current_list, num_averaged)``: every ``averaged``
        becomes ``averaged.lerp(current, 1 / (num_averaged + 1))`` in place, in one C call.
        As in torch, an array ``num_averaged`` (what :class:`AveragedParameters` passes, like
        AveragedModel's tensor) gives a float32 weight, a Python int a float64 one.
    """

    def swa_update(averaged_param_list: list[Any], current_param_list: list[Any], num_averaged: Any) -> None:
        _averaging.lerp_(averaged_param_list, current_param_list, _swa_weight(num_averaged))

    swa_update._gradclip_whole_list = True  # type: ignore[attr-defined]
    return swa_update


def _opmath(array: np.ndarray) -> np.ndarray:
    # torch computes float16 arithmetic with scalars in float32 (its "opmath" type).
    return array.astype(np.float32) if array.dtype == np.float16 else array


def _scalar_for(dtype: np.dtype, value: float) -> np.generic:
    """A Python scalar as torch converts it for an operation on an array of ``dtype``."""
    return np.float32(value) if dtype == np.float16 else dtype.type(value)


def _scale(array: np.ndarray, scalar: float) -> np.ndarray:
    """torch's ``scalar * array``, rounded once to the array's dtype."""
    scaled: np.ndarray = (_opmath(array) * _scalar_for(array.dtype, scalar)).astype(array.dtype, copy=False)
    return scaled


def get_ema_avg_fn(decay: float = 0.999) -> Callable[[np.ndarray, np.ndarray, Any], np.ndarray]:
    """Return torch's per-array EMA formula.

    Parameters
    ----------
    decay : float, default 0.999
        In [0, 1].

    Returns
    -------
    callable
        ``ema_update(ema, current, num_averaged) -> decay * ema + (1 - decay) * current``,
        a new array, rounded as torch rounds it.

    Raises
    ------
    ValueError
        ``decay`` outside [0, 1].
    """
    _check_decay(decay)

    def ema_update(ema_param: np.ndarray, current_param: np.ndarray, num_averaged: Any) -> np.ndarray:
        updated: np.ndarray = _scale(ema_param, decay) + _scale(current_param, 1 - decay)
        return updated

    return ema_update


def get_swa_avg_fn() -> Callable[[np.ndarray, np.ndarray, Any], np.ndarray]:
    """Return torch's per-array SWA formula.

    Returns
    -------
    callable
        ``swa_update(averaged, current, num_averaged) -> averaged + (current - averaged) /
        (num_averaged + 1)``, a new array, rounded as torch rounds it (the division in the
        arrays' dtype; float32 for float16).
    """

    def swa_update(averaged_param: np.ndarray, current_param: np.ndarray, num_averaged: Any) -> np.ndarray:
        diff = current_param - averaged_param
        quotient = _opmath(diff) / _scalar_for(diff.dtype, int(num_averaged) + 1)
        updated: np.ndarray = averaged_param + quotient.astype(diff.dtype, copy=False)
        return updated

    return swa_update


def _values(arrays: Iterable[Any], what: str) -> list[np.ndarray]:
    if isinstance(arrays, (np.ndarray, Parameter)):
        arrays = [arrays]
    out = []
    for i, a in enumerate(arrays):
        value = a.data if isinstance(a, Parameter) else a
        if not isinstance(value, np.ndarray):
            raise TypeError(
                f"{what}[{i}] must be a NumPy ndarray or a gradclip.Parameter, not {type(a).__name__}"
            )
        out.append(value)
    return out


class AveragedParameters:
    """A running average (SWA or EMA) of a list of arrays: ``torch.optim.swa_utils.AveragedModel``
    without the ``nn.Module``.

    Parameters
    ----------
    params : iterable of (numpy.ndarray or gradclip.Parameter)
        The parameters to average. Copies are made (``.params``), so later changes to
        ``params`` do not affect them until :meth:`update_parameters`.
    avg_fn : callable, optional
        ``avg_fn(averaged, current, num_averaged) -> new averaged array``, applied per
        array (e.g. :func:`get_ema_avg_fn`); the result is copied into ``averaged``.
    multi_avg_fn : callable, optional
        ``multi_avg_fn(averaged_list, current_list, num_averaged)``, updating in place (e.g.
        :func:`get_ema_multi_avg_fn`). A user function is called once per dtype, as torch
        calls it once per (device, dtype) group; gradclip's own are called once.
    use_buffers : bool, default False
        Also average ``buffers`` (torch: the module's buffers); otherwise they are copied
        from the current values at every update.
    buffers : iterable of arrays, optional
        Keyword only: arrays that are not parameters (torch's module buffers, e.g. running
        statistics). Without ``use_buffers`` they may have any dtype.

    Attributes
    ----------
    params : list of numpy.ndarray
        The averaged parameters.
    buffers : list of numpy.ndarray
        The (averaged, with ``use_buffers``) buffers.
    n_averaged : numpy.ndarray
        0-d int64: how many updates have been averaged (torch's ``n_averaged`` buffer).

    Raises
    ------
    AssertionError
        Both ``avg_fn`` and ``multi_avg_fn`` given (torch's error).

    Notes
    -----
    With neither function, the update is the one ``AveragedModel`` runs on CPU,
    ``avg + (current - avg) / (n_averaged + 1)``, bit for bit (one C call for all arrays).
    The first update copies the current values. Averaged arrays must be float16, float32
    or float64 (torch also averages integer buffers, such as batch norm's
    ``num_batches_tracked``, with ``use_buffers=True``; here such a buffer can only be
    copied). Where torch's ``zip`` silently ignores extra or missing parameters, or
    ``copy_`` broadcasts and casts, :meth:`update_parameters` raises ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from gradclip.optim.swa_utils import AveragedParameters
    >>> w = np.array([0.0, 2.0])
    >>> swa = AveragedParameters([w])
    >>> for value in (1.0, 2.0, 3.0):
    ...     w[:] = value
    ...     swa.update_parameters([w])
    >>> swa.params[0], int(swa.n_averaged)
    (array([2., 2.]), 3)
    """

    def __init__(
        self,
        params: Iterable[Any],
        avg_fn: Optional[Callable[[np.ndarray, np.ndarray, Any], np.ndarray]] = None,
        multi_avg_fn: Optional[Callable[[list[Any], list[Any], Any], None]] = None,
        use_buffers: bool = False,
        *,
        buffers: Optional[Iterable[Any]] = None,
    ) -> None:
        if avg_fn is not None and multi_avg_fn is not None:
            raise AssertionError("Only one of avg_fn and multi_avg_fn should be provided")
        self.params: list[np.ndarray] = [np.array(v, copy=True) for v in _values(params, "params")]
        self.buffers: list[np.ndarray] = [
            np.array(v, copy=True) for v in _values(buffers if buffers is not None else (), "buffers")
        ]
        self.n_averaged = np.zeros((), dtype=np.int64)
        self.avg_fn = avg_fn
        self.multi_avg_fn = multi_avg_fn
        self.use_buffers = use_buffers
        for i, a in enumerate(self._averaged()):
            if a.dtype not in _FLOATS:
                what = f"params[{i}]" if i < len(self.params) else f"buffers[{i - len(self.params)}]"
                raise TypeError(
                    f"{what} has dtype {a.dtype}; only float16, float32 and float64 arrays can be averaged"
                )

    def _averaged(self) -> list[np.ndarray]:
        return self.params + self.buffers if self.use_buffers else list(self.params)

    def parameters(self) -> list[np.ndarray]:
        """Return the averaged parameters (``.params``), as ``AveragedModel.parameters()``.

        Returns
        -------
        list of numpy.ndarray
        """
        return self.params

    def update_parameters(self, params: Iterable[Any], buffers: Optional[Iterable[Any]] = None) -> None:
        """Average in the current values of the parameters (and buffers).

        Parameters
        ----------
        params : iterable of (numpy.ndarray or gradclip.Parameter)
            The current parameters, in the order given to the constructor.
        buffers : iterable of arrays, optional
            The current buffers, if the constructor had any.

        Raises
        ------
        ValueError
            A different number of arrays, or an array of another shape or dtype, than at
            construction; nothing is changed then.
        """
        current = _values(params, "params")
        current_buffers = _values(buffers if buffers is not None else (), "buffers")
        for what, mine, theirs in (("params", self.params, current), ("buffers", self.buffers, current_buffers)):
            if len(mine) != len(theirs):
                raise ValueError(
                    f"update_parameters got {len(theirs)} {what}, but {len(mine)} were given to the constructor"
                )
            for i, (a, b) in enumerate(zip(mine, theirs)):
                if a.shape != b.shape or a.dtype != b.dtype:
                    raise ValueError(
                        f"{what}[{i}] has shape {b.shape} and dtype {b.dtype}, but the averaged "
                        f"array has shape {a.shape} and dtype {a.dtype}"
                    )

        averaged = self._averaged()
        model = current + current_buffers if self.use_buffers else list(current)
        if self.n_averaged == 0:
            for a, b in zip(averaged, model):
                np.copyto(a, b)
        elif self.multi_avg_fn is not None or self.avg_fn is None:
            if self.multi_avg_fn is None:
                # AveragedModel's CPU path: get_swa_avg_fn per tensor, one kernel call here.
                _averaging.mean_(averaged, model, int(self.n_averaged) + 1)
            elif getattr(self.multi_avg_fn, "_gradclip_whole_list", False):
                self.multi_avg_fn(averaged, model, self.n_averaged.copy())
            else:
                for dtype in dict.fromkeys(a.dtype for a in averaged):
                    idx = [i for i, a in enumerate(averaged) if a.dtype == dtype]
                    self.multi_avg_fn([averaged[i] for i in idx], [model[i] for i in idx], self.n_averaged.copy())
        else:
            for a, b in zip(averaged, model):
                np.copyto(a, self.avg_fn(a, b, self.n_averaged.copy()), casting="unsafe")

        if not self.use_buffers:
            for a, b in zip(self.buffers, current_buffers):
                np.copyto(a, b)
        self.n_averaged += 1

    def state_dict(self) -> dict[str, Any]:
        """Return the averaged arrays and the count (the arrays themselves, not copies, as
        torch's ``state_dict``).

        Returns
        -------
        dict
            ``{"n_averaged": 0-d int64 array, "params": [...], "buffers": [...]}``.
        """
        return {"n_averaged": self.n_averaged, "params": list(self.params), "buffers": list(self.buffers)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Copy a saved state into this object's arrays.

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict` (arrays or anything ``np.asarray`` accepts).

        Raises
        ------
        ValueError, KeyError
            A missing entry, or arrays of another count or shape; nothing is changed then.
        """
        saved = [np.asarray(a) for a in state_dict["params"]], [np.asarray(a) for a in state_dict.get("buffers", [])]
        for what, mine, theirs in zip(("params", "buffers"), (self.params, self.buffers), saved):
            if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
                raise ValueError(f"the saved {what} do not match this AveragedParameters' {what}")
        n = np.asarray(state_dict["n_averaged"])
        for mine, theirs in zip((self.params, self.buffers), saved):
            for a, b in zip(mine, theirs):
                np.copyto(a, b, casting="unsafe")
        self.n_averaged[...] = n

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({len(self.params)} params, {len(self.buffers)} buffers, "
            f"n_averaged={int(self.n_averaged)})"
        )


class SWALR(LRScheduler):
    """Anneal each group's lr to a fixed ``swa_lr``, as ``torch.optim.swa_utils.SWALR``.

    Parameters
    ----------
    optimizer : gradclip.optim.Optimizer
    swa_lr : float or list of float
        The final learning rate(s); stored as ``group["swa_lr"]``.
    anneal_epochs : int, default 10
        Epochs of the annealing phase (>= 0).
    anneal_strategy : {'cos', 'linear'}, default 'cos'
    last_epoch : int, default -1

    Raises
    ------
    ValueError
        An unknown strategy, a negative or non-integer ``anneal_epochs`` (torch's messages),
        a ``swa_lr`` list of the wrong length.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        swa_lr: Union[float, list[float]],
        anneal_epochs: int = 10,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        last_epoch: int = -1,
    ) -> None:
        swa_lrs = _format_param("swa_lr", optimizer, swa_lr)
        for lr, group in zip(swa_lrs, optimizer.param_groups, strict=True):
            group["swa_lr"] = lr
        if anneal_strategy not in ["cos", "linear"]:
            raise ValueError(
                "anneal_strategy must be one of 'cos' or 'linear', "
                f"instead got {anneal_strategy}"
            )
        self._set_anneal_func(anneal_strategy)
        if not isinstance(anneal_epochs, int) or anneal_epochs < 0:
            raise ValueError(f"anneal_epochs must be equal or greater than 0, got {anneal_epochs}")
        self.anneal_epochs = anneal_epochs
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _linear_anneal(t: float) -> float:
        return t

    @staticmethod
    def _cosine_anneal(t: float) -> float:
        return (1 - math.cos(math.pi * t)) / 2

    @staticmethod
    def _get_initial_lr(lr: float, swa_lr: float, alpha: float) -> float:
        if alpha == 1:
            return swa_lr
        return (lr - alpha * swa_lr) / (1 - alpha)

    def get_lr(self) -> list[Number]:
        """The next lr of each group: the annealed mix of its start lr and ``swa_lr``.

        Returns
        -------
        list of float
        """
        if not self._get_lr_called_within_step:
            warnings.warn(
                "To get the last learning rate computed by the scheduler, "
                "please use `get_last_lr()`.",
                UserWarning,
                stacklevel=2,
            )
        step = self._step_count - 1
        if self.anneal_epochs == 0:
            step = max(1, step)
        prev_t = max(0, min(1, (step - 1) / max(1, self.anneal_epochs)))
        prev_alpha = self.anneal_func(prev_t)
        prev_lrs = [
            self._get_initial_lr(group["lr"], group["swa_lr"], prev_alpha)
            for group in self.optimizer.param_groups
        ]
        t = max(0, min(1, step / max(1, self.anneal_epochs)))
        alpha = self.anneal_func(t)
        return [
            group["swa_lr"] * alpha + lr * (1 - alpha)
            for group, lr in zip(self.optimizer.param_groups, prev_lrs, strict=True)
        ]

    def _set_anneal_func(self, anneal_strategy: str) -> None:
        self._anneal_strategy = anneal_strategy
        self.anneal_func = self._cosine_anneal if anneal_strategy == "cos" else self._linear_anneal

    def state_dict(self) -> dict[str, Any]:
        """Return the state, without the annealing function (rebuilt on load).

        Returns
        -------
        dict
        """
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "anneal_func")}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state returned by :meth:`state_dict`.

        Parameters
        ----------
        state_dict : dict
        """
        self.__dict__.update(state_dict)
        self._set_anneal_func(self._anneal_strategy)
