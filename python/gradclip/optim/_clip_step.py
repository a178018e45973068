"""``Optimizer.clip_and_step`` beyond torch: rich results, non-finite policies, per-group
thresholds and adaptive clippers. Kept apart so the plain path stays as it was."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import _C, _clipinfo
from .._adaptive import AGC, _NormClipper


def clip_and_step(
    optimizer: Any,
    max_norm: Optional[float],
    norm_type: Any,
    error_if_nonfinite: bool,
    grads: Optional[list[Any] | tuple[Any, ...]],
    write_back: bool,
    return_info: bool,
    nonfinite: str,
    per_group: bool,
    clipper: Any,
) -> Any:
    from .._clip import _norm_type

    mode = _clipinfo._mode(nonfinite, error_if_nonfinite)
    if clipper is not None:
        if per_group:
            raise ValueError("clip_and_step() takes per_group=True or a clipper, not both")
        if not isinstance(clipper, (AGC, _NormClipper)):
            raise TypeError(f"clipper must be an AutoClip, ZClip or AGC, not {type(clipper).__name__}")
    elif max_norm is None:
        raise TypeError("clip_and_step() needs max_norm (or a clipper)")
    if grads is not None and _own_step(optimizer):
        raise TypeError(f"{type(optimizer).__name__}.clip_and_step() takes no grads=: set each parameter's .grad")
    p = _norm_type(norm_type)
    # Gradients are written only under nonfinite="zero" here; the step applies the coefficients.
    write = 2 if mode == _clipinfo._ZERO else 0
    try:
        batches = optimizer._collect(grads)
        every_grad = [g for batch in batches for g in batch.grads]
        if isinstance(clipper, AGC):
            _agc_step(optimizer, batches, every_grad, clipper, write_back)
            return None
        if per_group:
            sizes = tuple(len(batch.grads) for batch in batches)
            max_norms = tuple(batch.group.get("max_norm", max_norm) for batch in batches)
            result = _C.clip_info(every_grad, True, p, max_norms, sizes, mode, write)
            if not result[4]:
                _apply(optimizer, batches, result[2], write_back)
            if not return_info:
                return list(result[1])
            bounds = [0]
            for size in sizes:
                bounds.append(bounds[-1] + size)
            return _clipinfo._infos(result, list(zip(bounds[:-1], bounds[1:])))
        if clipper is not None:
            result = _C.clip_info(every_grad, True, clipper.norm_type, None, None, mode, write)
            coef = None if result[4] else clipper._decide(result[1][0])
            result = (result[0], result[1], (1.0 if coef is None else coef,), result[3], result[4])
        else:
            assert max_norm is not None  # no clipper: refused above when None
            result = _C.clip_info(every_grad, True, p, (max_norm,), None, mode, write)
            coef = result[2][0]
        if not result[4]:
            _apply(optimizer, batches, coef, write_back)
    except Exception:
        optimizer._explain(grads, writable_grads=write_back)
        raise
    return _clipinfo._infos(result)[0] if return_info else result[1][0]


def _own_step(optimizer: Any) -> bool:
    """A subclass written in Python with its own step() (see Optimizer's class notes)."""
    from .optimizer import Optimizer

    return type(optimizer)._apply is Optimizer._apply


def _apply(optimizer: Any, batches: list[Any], coef: Any, write_back: bool) -> None:
    """The step with the clip coefficient: None, one, or (per_group) a tuple of one per group.
    A subclass with its own step() gets its gradients scaled in place first (put back after
    with write_back=False), as clip_grad_norm_ then step() would."""
    if not _own_step(optimizer):
        optimizer._apply(batches, coef, write_back)
        return
    grads = [g for batch in batches for g in batch.grads]
    saved = None if write_back else [np.copy(g, order="K") for g in grads]
    coefs = coef if isinstance(coef, tuple) else (coef,) * len(batches)
    for batch, c in zip(batches, coefs):
        if c is not None and batch.grads:
            _C.scale_by(batch.grads, c)
    try:
        optimizer.step()
    finally:
        if saved is not None:
            _restore(grads, saved)


def _units_consecutive(optimizer: Any, key: object, value: Any, grad: Any) -> bool:
    """Whether the step visits this parameter's units one after the other: one unit, or the
    value, the gradient and every state array of its shape C-contiguous (the kernel then
    cuts its run at unit boundaries)."""
    if value.ndim <= 1 or value.shape[0] <= 1:
        return True
    if not (value.flags.c_contiguous and grad.flags.c_contiguous):
        return False
    state = optimizer.state.get(key, {})
    return all(
        x.flags.c_contiguous for x in state.values() if isinstance(x, np.ndarray) and x.shape == value.shape
    )


def _agc_step(optimizer: Any, batches: list[Any], every_grad: list[Any], clipper: AGC, write_back: bool) -> None:
    """AGC, then the step. Fused where the optimizer's kernel takes per-unit factors and every
    parameter's units are consecutive (the usual C-contiguous layout): one norm pass over the
    values and gradients, then the step, which scales each gradient unit as it reads it (and
    writes it back with write_back). Else the units are scaled in place first, then stepped,
    and the gradients put back as they were if the step fails or write_back is False. Both
    give the same bits."""
    from .._clip import _norm_type

    values = [v for batch in batches for v in batch.values]
    args = (values, every_grad, clipper.clip_factor, clipper.eps, _norm_type(clipper.norm_type))
    fused = type(optimizer)._unit_grad_scales and all(
        _units_consecutive(optimizer, key, value, grad)
        for batch in batches
        for key, value, grad in zip(batch.keys, batch.values, batch.grads)
    )
    if fused:
        factors = _C.adaptive_clip(*args, True)
        optimizer._apply(batches, factors, write_back)
        return
    # The gradients as they were: put back if the step fails (nothing changed on error) and,
    # with write_back=False, after it.
    saved = [np.copy(g, order="K") for g in every_grad]
    _C.adaptive_clip(*args, False)
    try:
        _apply(optimizer, batches, None, write_back)
    except BaseException:
        _restore(every_grad, saved)
        raise
    if not write_back:
        _restore(every_grad, saved)


def _restore(grads: list[Any], saved: list[Any]) -> None:
    for grad, original in zip(grads, saved):
        np.copyto(grad, original)
