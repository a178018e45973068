"""Per-example clipping for differentially private SGD (Opacus' flat clipping), in C."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional, overload

import numpy as np

from . import _C
from ._clip import Arrays

__all__ = ["clip_per_example_and_sum"]


# One ndarray in: one summed array out; a list, tuple or other iterable: a list of them.
@overload
def clip_per_example_and_sum(
    per_example_grads: np.ndarray,
    max_norm: float,
    *,
    noise_multiplier: float = ...,
    rng: Optional[np.random.Generator] = ...,
    reduction: str = ...,
    expected_batch_size: Optional[int] = ...,
) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def clip_per_example_and_sum(
    per_example_grads: Sequence[Any],
    max_norm: float,
    *,
    noise_multiplier: float = ...,
    rng: Optional[np.random.Generator] = ...,
    reduction: str = ...,
    expected_batch_size: Optional[int] = ...,
) -> tuple[list[np.ndarray], np.ndarray]: ...
@overload
def clip_per_example_and_sum(
    per_example_grads: Iterable[Any],
    max_norm: float,
    *,
    noise_multiplier: float = ...,
    rng: Optional[np.random.Generator] = ...,
    reduction: str = ...,
    expected_batch_size: Optional[int] = ...,
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]: ...


def clip_per_example_and_sum(
    per_example_grads: Arrays,
    max_norm: float,
    *,
    noise_multiplier: float = 0.0,
    rng: Optional[np.random.Generator] = None,
    reduction: str = "sum",
    expected_batch_size: Optional[int] = None,
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray]:
    """Clip each example's gradient to ``max_norm`` and sum over the batch (DP-SGD).

    Opacus' flat clipping (``DPOptimizer.clip_and_accumulate``, ``add_noise``,
    ``scale_grad``): each array has a leading batch axis of length B; example ``i``'s norm is
    the 2-norm over all arrays of that example (the norm of its per-array norms);
    ``factor[i] = clamp(max_norm / (norm[i] + 1e-6), max=1)``, with torch's
    reciprocal-then-multiply rounding; ``summed[k] = einsum("i,i...", factor,
    per_example_grads[k])``. Then Gaussian noise of standard deviation
    ``noise_multiplier * max_norm`` is added, and ``reduction="mean"`` divides by
    ``expected_batch_size``.

    Parameters
    ----------
    per_example_grads : ndarray or list of ndarray
        Per-example gradients: array k has shape ``(B, *param_k.shape)`` (float16, float32
        or float64, any layout; the same B for all).
    max_norm : float
        The largest allowed per-example norm (non-negative).
    noise_multiplier : float, default 0.0
        The noise's standard deviation as a multiple of ``max_norm``; 0 adds none.
    rng : numpy.random.Generator, optional
        The source of the noise (``numpy.random.default_rng()`` if None). Not a
        cryptographically secure generator; privacy accounting is the caller's.
    reduction : {'sum', 'mean'}, default 'sum'
        ``'mean'`` divides the noised sum by ``expected_batch_size``, as Opacus does for a
        mean loss.
    expected_batch_size : int, optional
        The divisor for ``reduction='mean'`` (with Poisson sampling, the expected batch size);
        default B.

    Returns
    -------
    summed : list of ndarray
        One new C-contiguous array per input, of one example's shape and the input's dtype
        (one array, not a list, when ``per_example_grads`` is one ndarray).
    per_example_norms : ndarray
        The B per-example norms before clipping (float32 unless an input is float64).

    Notes
    -----
    Two passes in one C call: one over every example's arrays for the norms, one forming each
    weighted sum (accumulated in float64 over the examples in order, rounded once to the
    dtype, so the result does not depend on the thread count). An empty batch (B = 0) gives
    zeros (plus the noise, if any).

    Examples
    --------
    >>> import numpy as np, gradclip
    >>> g = np.array([[3.0, 4.0], [0.3, 0.4]])      # two examples of one 2-vector
    >>> summed, norms = gradclip.clip_per_example_and_sum([g], max_norm=1.0)
    >>> norms
    array([5. , 0.5])
    >>> np.round(summed[0], 6)                       # [0.6, 0.8] + [0.3, 0.4]
    array([0.9, 1.2])
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
    if isinstance(per_example_grads, tuple):
        per_example_grads = list(per_example_grads)
    elif not isinstance(per_example_grads, (list, np.ndarray)):
        per_example_grads = list(per_example_grads)
    if noise_multiplier < 0:
        raise ValueError(f"noise_multiplier must not be negative, got {noise_multiplier!r}")
    single = isinstance(per_example_grads, np.ndarray)
    summed, norms = _C.clip_per_example(per_example_grads, max_norm)
    if noise_multiplier > 0:
        rng = np.random.default_rng() if rng is None else rng
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, not {type(rng).__name__}")
        std = noise_multiplier * max_norm
        for s in summed:
            s += rng.normal(0.0, std, size=s.shape).astype(s.dtype)
    if reduction == "mean":
        batch = norms.shape[0] if expected_batch_size is None else expected_batch_size
        if batch <= 0:
            raise ValueError("reduction='mean' needs a positive expected_batch_size (the batch is empty)")
        for s in summed:
            s /= s.dtype.type(batch)
    return (summed[0] if single else summed), norms
