"""Optimizer hooks with torch's names and semantics (``torch/optim/optimizer.py``,
``torch/utils/hooks.py``): removable handles, the global step hooks, and the wrapper that runs
the step hooks around ``step()`` and ``clip_and_step()``."""

from __future__ import annotations

import functools
import weakref
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain
from typing import Any, TypeVar, cast

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = [
    "RemovableHandle",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
    "with_step_hooks",
]


class RemovableHandle:
    """A handle that removes a hook, as ``torch.utils.hooks.RemovableHandle``.

    Parameters
    ----------
    hooks_dict : collections.OrderedDict
        The hooks, keyed by handle id; held by weak reference, so a handle does not keep its
        optimizer alive.
    extra_dict : OrderedDict or list of OrderedDict, optional
        More dicts whose entry under the same id is removed as well.

    Attributes
    ----------
    id : int
        The key of the hook in ``hooks_dict`` (unique in the process).

    Notes
    -----
    ``remove()`` may be called any number of times; ``with handle:`` removes the hook at the
    end of the block.
    """

    id: int
    next_id: int = 0

    def __init__(self, hooks_dict: Any, *, extra_dict: Any = None) -> None:
        self.hooks_dict_ref: weakref.ref[Any] = weakref.ref(hooks_dict)
        self.id = RemovableHandle.next_id
        RemovableHandle.next_id += 1
        self.extra_dict_ref: tuple[weakref.ref[Any], ...] = ()
        if isinstance(extra_dict, dict):
            self.extra_dict_ref = (weakref.ref(extra_dict),)
        elif isinstance(extra_dict, list):
            self.extra_dict_ref = tuple(weakref.ref(d) for d in extra_dict)

    def remove(self) -> None:
        """Remove the hook (nothing happens if it is gone already)."""
        hooks_dict = self.hooks_dict_ref()
        if hooks_dict is not None and self.id in hooks_dict:
            del hooks_dict[self.id]
        for ref in self.extra_dict_ref:
            extra_dict = ref()
            if extra_dict is not None and self.id in extra_dict:
                del extra_dict[self.id]

    def __getstate__(self) -> tuple[Any, ...]:
        return (self.hooks_dict_ref(), self.id, tuple(ref() for ref in self.extra_dict_ref))

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        # A dict that is gone becomes a dead reference, as in torch.
        self.hooks_dict_ref = weakref.ref(OrderedDict() if state[0] is None else state[0])
        self.id = state[1]
        RemovableHandle.next_id = max(RemovableHandle.next_id, self.id + 1)
        self.extra_dict_ref = tuple(weakref.ref(d) for d in state[2]) if len(state) > 2 and state[2] else ()

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, type: Any, value: Any, tb: Any) -> None:
        self.remove()


_global_optimizer_pre_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()
_global_optimizer_post_hooks: OrderedDict[int, Callable[..., Any]] = OrderedDict()


def register_optimizer_step_pre_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """Register a pre hook common to all optimizers, as torch's.

    Parameters
    ----------
    hook : callable
        ``hook(optimizer, args, kwargs) -> None or (new_args, new_kwargs)``, called before every
        ``step()`` and ``clip_and_step()`` of every optimizer, before the optimizer's own pre
        hooks. ``args`` starts with the optimizer itself.

    Returns
    -------
    RemovableHandle
        ``handle.remove()`` unregisters the hook.
    """
    handle = RemovableHandle(_global_optimizer_pre_hooks)
    _global_optimizer_pre_hooks[handle.id] = hook
    return handle


def register_optimizer_step_post_hook(hook: Callable[..., Any]) -> RemovableHandle:
    """Register a post hook common to all optimizers, as torch's.

    Parameters
    ----------
    hook : callable
        ``hook(optimizer, args, kwargs) -> None``, called after every ``step()`` and
        ``clip_and_step()`` of every optimizer, after the optimizer's own post hooks.

    Returns
    -------
    RemovableHandle
        ``handle.remove()`` unregisters the hook.
    """
    handle = RemovableHandle(_global_optimizer_post_hooks)
    _global_optimizer_post_hooks[handle.id] = hook
    return handle


def with_step_hooks(func: _F) -> _F:
    """``func`` (a step method) wrapped as torch's ``Optimizer.profile_hook_step`` wraps
    ``step``: global then own pre hooks (each may return ``(args, kwargs)`` to replace the
    call's arguments), the call, then own then global post hooks.

    A step reached from inside another hooked step of the same optimizer (a subclass's ``step``
    calling ``super().step()``) runs without hooks: they run once per outer call.
    """
    if getattr(func, "hooked", False):
        return func

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        self = args[0]
        if getattr(self, "_in_hooked_step", False):
            return func(*args, **kwargs)
        for pre_hook in chain(_global_optimizer_pre_hooks.values(), self._optimizer_step_pre_hooks.values()):
            result = pre_hook(self, args, kwargs)
            if result is not None:
                if isinstance(result, tuple) and len(result) == 2:
                    args, kwargs = result
                else:
                    raise RuntimeError(
                        f"{func} must return None or a tuple of (new_args, new_kwargs), but got {result}."
                    )
        self._in_hooked_step = True
        try:
            out = func(*args, **kwargs)
        finally:
            self._in_hooked_step = False
        for post_hook in chain(self._optimizer_step_post_hooks.values(), _global_optimizer_post_hooks.values()):
            post_hook(self, args, kwargs)
        return out

    wrapper.hooked = True  # type: ignore[attr-defined]  # a marker on the function object
    # The wrapper takes and returns what func does (pre hooks may only replace the arguments).
    return cast(_F, wrapper)
