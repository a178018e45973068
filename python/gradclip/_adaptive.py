"""Adaptive clipping: AGC (unit-wise, in C), AutoClip and ZClip (thresholds from a history).

AutoClip and ZClip only decide a threshold per step from the total norm; the norm and the
scaling are gradclip's C passes, so used through ``optimizer.clip_and_step(clipper=...)``
they cost one norm pass and the fused step, like plain ``clip_and_step``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Optional

import numpy as np

from . import _C
from ._clip import Arrays, ArraysOrParameters
from ._clipinfo import ClipInfo
from ._parameter import Parameter

__all__ = ["AGC", "AutoClip", "ZClip", "adaptive_clip_grad_"]


def _values_and_grads(
    parameters: ArraysOrParameters, grads: Optional[Arrays]
) -> tuple[list[Any], list[Any]]:
    """The (value, gradient) pairs AGC works on: Parameters' .data/.grad, or arrays + grads."""
    if isinstance(parameters, (np.ndarray, Parameter)):
        parameters = [parameters]
    elif not isinstance(parameters, Iterable) or isinstance(parameters, (str, bytes)):
        raise TypeError(
            f"parameters must be an iterable of Parameters or arrays, not {type(parameters).__name__}"
        )
    items: list[Any] = list(parameters)
    pairs: list[tuple[Any, Any]]
    if grads is None:
        for i, p in enumerate(items):
            if not isinstance(p, Parameter):
                raise TypeError(
                    f"parameters[{i}] is a {type(p).__name__}: adaptive clipping needs the "
                    "parameters' values, so pass Parameters, or arrays with grads=[...]"
                )
        pairs = [(p.data, p.grad) for p in items]
    else:
        if isinstance(grads, np.ndarray):
            grads = [grads]
        grad_items: list[Any] = list(grads)
        if len(grad_items) != len(items):
            raise ValueError(f"got {len(items)} parameters but {len(grad_items)} gradients")
        pairs = [(p.data if isinstance(p, Parameter) else p, g) for p, g in zip(items, grad_items)]
    pairs = [(v, g) for v, g in pairs if g is not None]
    return [v for v, _ in pairs], [g for _, g in pairs]


def adaptive_clip_grad_(
    parameters: ArraysOrParameters,
    clip_factor: float = 0.01,
    eps: float = 1e-3,
    norm_type: float | str = 2.0,
    *,
    grads: Optional[Arrays] = None,
) -> None:
    """Adaptive gradient clipping (AGC, Brock et al. 2021), in place, with timm's semantics.

    Each unit of a gradient is scaled down so that its norm is at most ``clip_factor`` times
    the norm of the matching unit of the parameter. A unit is ``x[i]`` (every dim but the
    first: an output row of a Linear weight, an output filter of a Conv weight) for arrays with
    more than one dim, the whole array otherwise. As ``timm.utils.agc.adaptive_clip_grad``::

        max = clamp(unitwise_norm(p), min=eps) * clip_factor
        g   = where(unitwise_norm(g) < max, g, g * (max / clamp(unitwise_norm(g), min=1e-6)))

    with every step rounded to the arrays' dtype as torch rounds it.

    Parameters
    ----------
    parameters : Parameter, ndarray or iterable of them
        :class:`gradclip.Parameter` objects (their ``.data`` and ``.grad``; ``.grad is None`` is
        skipped), or the parameters' value arrays together with ``grads``.
    clip_factor : float, default 0.01
        The largest allowed ratio of gradient-unit norm to parameter-unit norm.
    eps : float, default 1e-3
        The floor of the parameter-unit norm, so that zero-initialised units can still move.
    norm_type : float or {'inf', '-inf'}, default 2.0
        The order of the unit-wise norms.
    grads : iterable of (ndarray or None), optional
        One gradient per parameter (``None`` skips it), instead of the Parameters' ``.grad``.
        Each must have its parameter's shape and dtype (float16, float32 or float64).

    Notes
    -----
    One C call for the whole list: one pass computes the unit norms of every parameter and
    gradient (any layout: each unit is described to the kernels as an array of its own), a
    second scales the gradient units that exceed their bound. The norms accumulate in float64
    and are rounded once to the dtype, where torch accumulates in the dtype: on the same
    inputs a unit norm can differ from torch's in its last bit, the rest of the arithmetic is
    torch's.

    Examples
    --------
    >>> import numpy as np, gradclip
    >>> w = gradclip.Parameter(np.ones((2, 3)))
    >>> w.grad = np.array([[1.0, 0.0, 0.0], [0.001, 0.0, 0.0]])
    >>> gradclip.adaptive_clip_grad_([w], clip_factor=0.01)
    >>> w.grad  # row 0 scaled to 0.01 * sqrt(3); row 1 below its bound, unchanged
    array([[0.01732051, 0.        , 0.        ],
           [0.001     , 0.        , 0.        ]])
    """
    from ._clip import _norm_type

    values, gradients = _values_and_grads(parameters, grads)
    _C.adaptive_clip(values, gradients, clip_factor, eps, _norm_type(norm_type), False)


class AGC:
    """AGC as a ``clipper`` for :meth:`gradclip.optim.Optimizer.clip_and_step`.

    ``optimizer.clip_and_step(clipper=AGC(0.01))`` gives the bits of
    :func:`adaptive_clip_grad_` on every parameter with a gradient, then :meth:`step`, in one
    pass fewer: one norm pass over the values and gradients (every unit's factor), then the
    step, which scales each gradient unit by its factor as it reads it and, with
    ``write_back=True`` (the default), stores the clipped unit back. That is the path for the
    optimizers with a C kernel (all but Adafactor, Muon and LBFGS) when every multi-unit
    parameter, its gradient and its state are C-contiguous (NumPy's default); otherwise the
    units are clipped in place first, then stepped, and with ``write_back=False`` the
    gradients are put back afterwards. Either way, an error leaves every array unchanged.

    Parameters
    ----------
    clip_factor, eps, norm_type
        As for :func:`adaptive_clip_grad_`.
    """

    def __init__(self, clip_factor: float = 0.01, eps: float = 1e-3, norm_type: float | str = 2.0) -> None:
        self.clip_factor = clip_factor
        self.eps = eps
        self.norm_type = norm_type

    def __call__(self, parameters: ArraysOrParameters, *, grads: Optional[Arrays] = None) -> None:
        """Apply :func:`adaptive_clip_grad_` with these settings."""
        adaptive_clip_grad_(parameters, self.clip_factor, self.eps, self.norm_type, grads=grads)

    def __repr__(self) -> str:
        return f"AGC(clip_factor={self.clip_factor!r}, eps={self.eps!r}, norm_type={self.norm_type!r})"


class _NormClipper:
    """Shared machinery of clippers that pick a threshold from the total 2-norm."""

    norm_type = 2.0

    def _decide(self, total: np.floating) -> Optional[float]:
        """Update the state with this step's total norm; the coefficient to scale the
        gradients by (rounded as ``clip_grad_norm_`` rounds), or None to leave them."""
        raise NotImplementedError

    def __call__(self, parameters: ArraysOrParameters) -> ClipInfo:
        """Measure, update the state, clip in place; the step's :class:`gradclip.ClipInfo`.

        Parameters
        ----------
        parameters : ndarray, Parameter or iterable
            Gradients, or objects with a ``.grad`` (``None`` skipped), as for
            :func:`gradclip.clip_grad_norm_`.
        """
        from ._clip import _as_sequence, _PASS_THROUGH

        if not isinstance(parameters, _PASS_THROUGH):
            parameters = _as_sequence(parameters)
        norms, (total,), _, (count,), _ = _C.clip_info(parameters, True, self.norm_type, None, None, 0, 0)
        coef = self._decide(total)
        if coef is not None:
            _C.scale_by(parameters, coef)
        coef = 1.0 if coef is None else coef
        return ClipInfo(total, coef, coef < 1.0, norms, count, False)

    @staticmethod
    def _single(total: np.floating) -> bool:
        # numpy's stubs declare float32 an alias of floating[_32Bit]; at run time it is a class.
        return isinstance(total, np.float32)  # pyright: ignore[reportArgumentType]


class AutoClip(_NormClipper):
    """AutoClip (Seetharaman et al. 2020): clip at a percentile of the norms seen so far.

    As its reference code (``pseeth/autoclip``, ``autoclip.py``): each step the current total
    2-norm is appended to the history *first*, the threshold is
    ``np.percentile(history, percentile)``, and the gradients are clipped with
    :func:`gradclip.clip_grad_norm_` at that threshold.

    Parameters
    ----------
    percentile : float, default 10.0
        The percentile of the history (0 to 100) used as ``max_norm``.
    history_size : int or None, default None
        Keep only the last ``history_size`` norms (a ring buffer). None keeps every norm, as
        the reference does (memory and the percentile's cost then grow with the step count).

    Examples
    --------
    >>> import numpy as np, gradclip
    >>> clipper = gradclip.AutoClip(percentile=50.0)
    >>> info = clipper([np.array([3.0, 4.0])])   # history [5]: threshold 5
    >>> float(info.total_norm), info.clip_coef   # torch's 5 / (5 + 1e-6)
    (5.0, 0.99999980000004)
    """

    def __init__(self, percentile: float = 10.0, history_size: Optional[int] = None) -> None:
        if not 0.0 <= float(percentile) <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
        if history_size is not None and (
            isinstance(history_size, bool) or not isinstance(history_size, (int, np.integer)) or history_size < 1
        ):
            raise ValueError(f"history_size must be None or a positive int, got {history_size!r}")
        self.percentile = float(percentile)
        self.history_size = None if history_size is None else int(history_size)
        self._history: list[float] = []
        self._next = 0  # ring buffer: where the next norm goes once the history is full
        #: The threshold of the last step (None before the first).
        self.last_threshold: Optional[float] = None

    @property
    def history(self) -> list[float]:
        """The norms the next threshold is taken over, oldest first."""
        return self._history[self._next:] + self._history[: self._next]

    def threshold(self, total: float | np.floating) -> float:
        """Append ``total`` to the history and return the threshold it gives."""
        value = float(total)
        if self.history_size is not None and len(self._history) == self.history_size:
            self._history[self._next] = value
            self._next = (self._next + 1) % self.history_size
        else:
            self._history.append(value)
        self.last_threshold = float(np.percentile(self._history, self.percentile))
        return self.last_threshold

    def _decide(self, total: np.floating) -> Optional[float]:
        return _C.clip_coef(total, self.threshold(total), self._single(total))

    def state_dict(self) -> dict[str, Any]:
        """The settings and the history (oldest first)."""
        return {"percentile": self.percentile, "history_size": self.history_size, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (settings and history)."""
        history = [float(v) for v in state_dict["history"]]
        size = state_dict.get("history_size")
        self.__init__(state_dict["percentile"], size)  # type: ignore[misc]  # validates
        self._history = history[-size:] if size is not None else history
        self._next = 0

    def __repr__(self) -> str:
        return f"AutoClip(percentile={self.percentile!r}, history_size={self.history_size!r})"


class ZClip(_NormClipper):
    """ZClip (Kumar et al. 2025): clip norm spikes detected by a z-score against EMA statistics.

    As its reference code (``bluorion-com/ZClip``, ``zclip/zclip.py``), step by step:

    - warm-up: the first ``warmup_steps`` total norms are collected (and clipped at
      ``max_grad_norm`` by :func:`gradclip.clip_grad_norm_`, if set); then the mean and the
      (population) variance of those norms start the EMA;
    - afterwards, with ``std = sqrt(var)`` and ``z = (norm - mean) / (std + eps)``:
      ``mode="percentile"`` clips to ``mean + z_thresh * std`` when the norm exceeds it;
      ``mode="zscore"`` clips when ``z > z_thresh``, to
      ``(mean + z_thresh * std / (z / z_thresh)) * clip_factor`` (``clip_option=
      "adaptive_scaling"``) or to ``mean`` (``clip_option="mean"``);
    - the threshold is capped at ``max_grad_norm`` (if set), and applied as the reference
      applies it: ``coef = threshold / (norm + 1e-6)`` when ``norm > threshold``;
    - the EMA is updated with the threshold (when clipping) or the norm:
      ``mean = alpha * mean + (1 - alpha) * x``, then
      ``var = alpha * var + (1 - alpha) * (x - mean) ** 2`` with the updated mean; with
      ``skip_update_on_spike`` a clipped step leaves the statistics unchanged.

    Parameters
    ----------
    alpha, z_thresh, max_grad_norm, eps, warmup_steps, mode, clip_option, clip_factor, skip_update_on_spike
        As in the reference.

    Examples
    --------
    >>> import numpy as np, gradclip
    >>> zclip = gradclip.ZClip(warmup_steps=3, max_grad_norm=None)
    >>> for scale in [1.0, 1.1, 0.9, 50.0]:
    ...     info = zclip([np.array([scale])])
    >>> info.clipped, round(info.clip_coef * 50.0, 3)   # the spike clipped near the mean, 1.0
    (True, 1.001)
    """

    def __init__(
        self,
        alpha: float = 0.97,
        z_thresh: float = 2.5,
        max_grad_norm: Optional[float] = 1.0,
        eps: float = 1e-6,
        warmup_steps: int = 25,
        mode: str = "zscore",
        clip_option: str = "adaptive_scaling",
        clip_factor: float = 1.0,
        skip_update_on_spike: bool = False,
    ) -> None:
        self.alpha = alpha
        self.z_thresh = z_thresh
        self.max_grad_norm = max_grad_norm
        self.eps = eps
        self.warmup_steps = warmup_steps
        self.mode = mode.lower()
        self.clip_factor = clip_factor
        self.skip_update_on_spike = skip_update_on_spike
        if self.mode == "zscore":
            if clip_option not in ("mean", "adaptive_scaling"):
                raise ValueError("For zscore mode, clip_option must be either 'mean' or 'adaptive_scaling'.")
            self.clip_option: Optional[str] = clip_option.lower()
        elif self.mode == "percentile":
            self.clip_option = None  # ignored in percentile mode, as in the reference
        else:
            raise ValueError("mode must be either 'zscore' or 'percentile'.")
        self.buffer: list[float] = []
        self.initialized = False
        self.mean: Optional[float] = None
        self.var: Optional[float] = None
        #: The max_norm the last step clipped against (None: not clipped, no threshold).
        self.last_threshold: Optional[float] = None

    def _initialize_ema(self) -> None:
        self.mean = sum(self.buffer) / len(self.buffer)
        self.var = sum((x - self.mean) ** 2 for x in self.buffer) / len(self.buffer)
        self.initialized = True
        self.buffer = []

    def _ema(self) -> tuple[float, float]:
        """The EMA's mean and variance, which the warm-up (or a loaded state) sets."""
        if self.mean is None or self.var is None:
            raise TypeError("ZClip's mean and variance are unset: its warm-up has not ended")
        return self.mean, self.var

    def _update_ema(self, grad_norm: float) -> None:
        mean, var = self._ema()
        self.mean = mean = self.alpha * mean + (1 - self.alpha) * grad_norm
        self.var = self.alpha * var + (1 - self.alpha) * (grad_norm - mean) ** 2

    def clip_value(self, grad_norm: float) -> Optional[float]:
        """The reference's adaptive threshold for this norm, or None (no spike)."""
        mean, var = self._ema()
        std: float = var**0.5
        if self.mode == "percentile":
            threshold = mean + self.z_thresh * std
            if grad_norm > threshold:
                return threshold
        else:
            z = (grad_norm - mean) / (std + self.eps)
            if z > self.z_thresh:
                if self.clip_option == "adaptive_scaling":
                    eta = z / self.z_thresh
                    return (mean + (self.z_thresh * std) / eta) * self.clip_factor
                return mean
        return None

    def _decide(self, total: np.floating) -> Optional[float]:
        grad_norm = float(total)
        if not self.initialized:
            self.buffer.append(grad_norm)
            if len(self.buffer) >= self.warmup_steps:
                self._initialize_ema()
            self.last_threshold = self.max_grad_norm
            if self.max_grad_norm is None:
                return None
            return _C.clip_coef(total, self.max_grad_norm, self._single(total))  # clip_grad_norm_
        clip_val = self.clip_value(grad_norm)
        adaptive = clip_val if clip_val is not None else grad_norm
        effective = min(adaptive, self.max_grad_norm) if self.max_grad_norm is not None else adaptive
        coef = (effective / (grad_norm + 1e-6)) if grad_norm > effective else 1.0
        self.last_threshold = effective
        if not (clip_val is not None and self.skip_update_on_spike):
            self._update_ema(clip_val if clip_val is not None else grad_norm)
        return coef if coef < 1.0 else None

    _SETTINGS = ("alpha", "z_thresh", "max_grad_norm", "eps", "warmup_steps", "mode", "clip_option",
                 "clip_factor", "skip_update_on_spike")
    _STATE = ("buffer", "initialized", "mean", "var")

    def state_dict(self) -> dict[str, Any]:
        """The settings and the statistics (warm-up buffer, mean, variance)."""
        state = {k: getattr(self, k) for k in self._SETTINGS + self._STATE}
        state["buffer"] = list(self.buffer)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        settings = {k: state_dict[k] for k in self._SETTINGS}
        if settings["clip_option"] is None:
            settings["clip_option"] = "adaptive_scaling"
        self.__init__(**settings)  # type: ignore[misc]  # validates
        self.buffer = [float(v) for v in state_dict["buffer"]]
        self.initialized = bool(state_dict["initialized"])
        self.mean = state_dict["mean"]
        self.var = state_dict["var"]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._SETTINGS if k != "clip_option" or self.clip_option)
        return f"ZClip({args})"
