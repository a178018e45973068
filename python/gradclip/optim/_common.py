"""What the optimizers with lazily created state share: step counters, state checks, and a step
that creates missing state, calls the kernel and undoes the creation if anything fails."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

from .adam import _STEP_DTYPE, _as_step
from .optimizer import Optimizer, _Batch, _check_state_array, _dicts_of

__all__ = ["apply_with_lazy_state", "check_buffers", "fix_steps", "new_step"]


def new_step() -> np.ndarray:
    """A fresh step counter: torch's 0-d float32 ``step`` tensor, as a writable 0-d array."""
    return np.array(0.0, dtype=_STEP_DTYPE)


def fix_steps(optimizer: Optimizer) -> None:
    """After ``__setstate__``: numeric step counters (old or foreign state) become 0-d float32
    arrays, which the kernels increment in place (torch turns them into tensors)."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            p_state = optimizer.state.get(p, {})
            if len(p_state) != 0 and "step" in p_state:
                p_state["step"] = _as_step(p_state["step"])


def check_buffers(state: dict[str, Any], keys: Sequence[str], value: np.ndarray, where: str) -> None:
    """Raise unless ``state`` has a usable ``step`` and a usable array under each key."""
    for key in keys:
        if key not in state:
            raise KeyError(f"{key} missing from the state of {where}")
        _check_state_array(state[key], value, f"{key} of {where}")
    step = state.get("step")
    if not (
        isinstance(step, np.ndarray) and step.shape == () and step.dtype == _STEP_DTYPE and step.flags.writeable
    ):
        raise TypeError(f"step of {where} must be a writable 0-d float32 ndarray")


def apply_with_lazy_state(
    optimizer: Optimizer,
    batches: list[_Batch],
    init: Callable[[dict[str, Any], np.ndarray], dict[str, Any]],
    make_group: Callable[[_Batch, list[dict[str, Any]]], Any],
    kernel: Callable[..., Any],
    grad_scale: Optional[float],
    write_back: bool,
) -> None:
    """One step: ``init(group, value)`` fills the state of parameters that have none (torch's
    first-step initialisation), ``make_group(batch, states)`` builds each group's kernel
    arguments, ``kernel(groups, grad_scale=, write_back=)`` updates everything in one C call.
    If anything fails the kernel has changed nothing, and the state created here is removed."""
    groups, created = [], []
    try:
        for batch in batches:
            states = _dicts_of(optimizer.state, batch.keys)
            for p, value, state in zip(batch.keys, batch.values, states):
                if len(state) == 0:
                    created.append(p)
                    state.update(init(batch.group, value))
            groups.append(make_group(batch, states))
        kernel(groups, grad_scale=grad_scale, write_back=write_back)
    except BaseException:
        for p in created:
            if p in optimizer.state:
                del optimizer.state[p]
        raise
