"""`Optimizer`: the base class of gradclip's optimizers, mirroring ``torch.optim.Optimizer``."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator, MutableMapping
from copy import deepcopy
from itertools import chain
from numbers import Number
from typing import Any, NamedTuple, Optional, TypeAlias, Union

import numpy as np

from .. import _C, _clip
from . import _clip_step
from .._parameter import Parameter
from ._hooks import (
    RemovableHandle,
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
    with_step_hooks,
)

__all__ = [
    "Optimizer",
    "ParamsT",
    "RemovableHandle",
    "register_optimizer_step_post_hook",
    "register_optimizer_step_pre_hook",
]

#: What an optimizer accepts as ``params`` (``torch.optim.optimizer.ParamsT``): any
#: iterable -- a list, a tuple, a generator -- of parameters (:class:`~gradclip.Parameter`
#: objects or float ndarrays), of ``(name, parameter)`` pairs, or of dicts defining
#: parameter groups.
ParamsT: TypeAlias = Union[Iterable[Any], Iterable[dict[str, Any]], Iterable[tuple[str, Any]]]

_FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))

# State entries that are 0-d float32 counters, not per-element quantities: kept in float32
# when a state dict is loaded. torch exempts only "step" and casts NAdam's mu_product and
# ASGD's eta and mu to a floating parameter's dtype, which changes its later arithmetic for
# float16/float64 parameters; gradclip keeps them as an uninterrupted run holds them.
_SCALAR_STATE_KEYS = frozenset({"step", "mu_product", "eta", "mu"})


def _is_param(obj: object) -> bool:
    return isinstance(obj, (Parameter, np.ndarray))


def _value(param: Any) -> np.ndarray:
    """The array a parameter's updates are written to."""
    return param.data if isinstance(param, Parameter) else param


def _typename(obj: object) -> str:
    # torch.typename's spelling ("float", "numpy.ndarray"), with Parameter under its public
    # name rather than its private module.
    if isinstance(obj, Parameter):
        return "gradclip.Parameter"
    cls = type(obj)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "") else f"{module}.{cls.__qualname__}"


def _group_offsets(groups: list[dict[str, Any]]) -> list[int]:
    """The index over all groups of each group's first parameter."""
    offsets, start = [], 0
    for group in groups:
        offsets.append(start)
        start += len(group["params"])
    return offsets


def _describe(index: int, group_index: int) -> str:
    return f"parameter {index} (in param_groups[{group_index}])"


def _is_real(value: object) -> bool:
    # What the C layer accepts as a real number: not bool or complex; a float, int, NumPy
    # real scalar, 0-d real array, or anything else with __float__.
    if isinstance(value, float):
        return True
    if isinstance(value, (bool, np.bool_, complex, np.complexfloating)):
        return False
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "fiu"
    return hasattr(type(value), "__float__")


def _check_real(value: Any, what: str) -> None:
    """Raise TypeError unless ``value`` is a real number (torch would fail on a comparison)."""
    if not _is_real(value):
        raise TypeError(f"{what} must be a real number, not {_typename(value)}")
    try:
        float(value)
    except (OverflowError, ValueError, TypeError) as exc:
        raise TypeError(f"{what} cannot be converted to a float: {exc}") from None


def _is_torch_tensor(value: object) -> bool:
    """A ``torch.Tensor`` (or a subclass), recognised without importing torch."""
    return any(cls.__name__ == "Tensor" and cls.__module__ == "torch" for cls in type(value).__mro__)


def _is_tensor_lr(value: object) -> bool:
    """An lr held in a torch tensor or an ndarray: torch's "Tensor lr"."""
    return isinstance(value, np.ndarray) or _is_torch_tensor(value)


def _check_lr(value: Any, what: str = "lr") -> None:
    """Raise unless ``value`` is a usable learning rate.

    A real number (as :func:`_check_real`), or, as torch accepts a Tensor lr, a torch tensor
    or ndarray of one element (any shape) and dtype float32 or float64 (an ndarray also of an
    integer dtype, which NumPy computes with in float64). torch's error for more elements; a
    float16 lr of any kind is refused, because torch would compute with it in float16.
    """
    prefix = "" if what == "lr" else f"{what}: "
    if _is_tensor_lr(value):
        size = value.numel() if _is_torch_tensor(value) else value.size
        if size != 1:
            raise ValueError(prefix + "Tensor lr must be 1-element")
        if _is_torch_tensor(value):
            ok = str(value.dtype) in ("torch.float32", "torch.float64")
        else:
            ok = value.dtype in (np.dtype(np.float32), np.dtype(np.float64)) or value.dtype.kind in "iu"
        if not ok:
            raise TypeError(
                f"{prefix}a Tensor lr must be float32 or float64, not {value.dtype} (torch computes "
                "with an lr in its own dtype; gradclip reproduces float32 and float64)"
            )
        return
    if isinstance(value, np.generic) and value.dtype == np.dtype(np.float16):
        raise TypeError(
            f"{prefix}a float16 lr is not supported (torch would compute with it in float16); "
            "pass a float or a float32/float64 value"
        )
    _check_real(value, what)


def _check_nonnegative(value: Any, what: str, message: str) -> None:
    """:func:`_check_real`, then torch's ``ValueError(f"{message}{value}")`` for a negative
    (or NaN) value."""
    _check_real(value, what)
    if not 0.0 <= value:
        raise ValueError(f"{message}{value}")


def _check_adam_family(
    lr: Any, eps: Any, betas: Any, weight_decay: Any, check_pair: Callable[[Any, str], Any]
) -> None:
    """The constructor checks torch's Adam, Adamax, NAdam and RAdam share, in torch's order and
    with its messages; a value that is not a number is named first (``check_pair`` checks that
    betas is a pair of them)."""
    _check_lr(lr)
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")
    _check_nonnegative(eps, "eps", "Invalid epsilon value: ")
    check_pair(betas, "betas")
    if not 0.0 <= betas[0] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
    if not 0.0 <= betas[1] < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
    _check_nonnegative(weight_decay, "weight_decay", "Invalid weight_decay value: ")


def _lr_scalar(value: Any) -> Any:
    """What a step computes with for the lr ``value`` (validated by :func:`_check_lr`).

    torch's Python computes with a Tensor lr as a 0-d tensor of its dtype: Python floats are
    converted to that dtype, another 0-d tensor promotes, an array with dimensions keeps its
    own dtype. NumPy computes with a scalar of that dtype the same way (NEP 50), so a float32
    or float64 tensor or array becomes a NumPy float32 or float64, and the C kernels compute
    their lr expressions in float32 when the lr is a float32 (``lr / bias_correction``,
    ``1 - lr * weight_decay``, ...), as torch does. A NumPy float32 lr stays one (torch
    computes with it in float32 too); everything else becomes the Python float it holds (a
    NumPy float64 is one, for torch as for NumPy).
    """
    if _is_tensor_lr(value):
        _check_lr(value)  # a group edited after construction: refused, not reinterpreted
    if _is_torch_tensor(value):
        item = value.item()
        return np.float32(item) if str(value.dtype) == "torch.float32" else np.float64(item)
    if isinstance(value, np.ndarray):
        item = value.reshape(()).item()
        return value.dtype.type(item) if value.dtype.kind == "f" else float(item)
    if isinstance(value, np.generic) and value.dtype == np.dtype(np.float32):
        return value
    return float(value)


def _step_group(group: dict[str, Any]) -> dict[str, Any]:
    """The group a step computes with: ``group`` itself, or a shallow copy whose Tensor lr is
    replaced by :func:`_lr_scalar` (the group keeps the tensor, as torch's does)."""
    lr = group.get("lr")
    if not _is_tensor_lr(lr):
        return group
    return {**group, "lr": _lr_scalar(lr)}


def _check_flag(value: object, what: str) -> None:
    try:
        bool(value)
    except Exception as exc:
        raise TypeError(f"{what} must be a bool, not {_typename(value)}") from exc


_NO_STATE: dict[str, Any] = {}  # read-only stand-in for a missing state
_NO_ENTRY = (None, _NO_STATE)


class _ParamState(MutableMapping[Any, Any]):
    """``Optimizer.state``: a mapping from parameter to its state dict.

    Like torch's ``defaultdict(dict)`` keyed by tensor: reading a missing parameter creates
    its empty state. Parameters (``Parameter`` objects and ndarrays, which are unhashable)
    are keyed by identity; other keys (only found after loading foreign state) by value.
    """

    def __init__(self, items: Iterable[tuple[object, object]] = ()) -> None:
        self._entries: dict[Hashable, tuple[Any, Any]] = {}
        # The same state dicts again, keyed by the Parameter objects themselves: the lookup
        # an optimizer step makes per parameter (hashing a Parameter is cheaper than id()).
        # Only Parameters are keys here, and distinct live objects never share a hash, so a
        # lookup by a Parameter never reaches Parameter's elementwise __eq__.
        self._by_param: dict[Parameter, Any] = {}
        for key, value in items:
            self[key] = value

    @staticmethod
    def _slot(key: object) -> Hashable:
        # Parameters by id (an int), anything else by value inside a 1-tuple: the two kinds
        # of slot never compare equal.
        return id(key) if _is_param(key) else (key,)

    def get_each(self, params: list[Any], name: str) -> list[Any]:
        """``self.get(p, {}).get(name)`` for each parameter, creating nothing."""
        try:
            by_param = self._by_param
            return [by_param.get(p, _NO_STATE).get(name) for p in params]
        except TypeError:  # ndarray parameters: unhashable, their slot is their id
            entries = self._entries
            return [entries.get(id(p), _NO_ENTRY)[1].get(name) for p in params]

    def dicts_of(self, params: list[Any]) -> list[dict[str, Any]]:
        """``self[p]`` for each parameter (an empty dict created where there was none)."""
        try:
            try:
                by_param = self._by_param
                return [by_param[p] for p in params]
            except TypeError:  # ndarray parameters: unhashable, their slot is their id
                entries = self._entries
                return [entries[id(p)][1] for p in params]
        except KeyError:  # a parameter without state yet: create it, as state[p] does
            return [self[p] for p in params]

    def __getitem__(self, key: object) -> Any:
        slot = self._slot(key)
        entry = self._entries.get(slot)
        if entry is None:
            self[key] = {}
            entry = self._entries[slot]
        return entry[1]

    def __setitem__(self, key: object, value: object) -> None:
        self._entries[self._slot(key)] = (key, value)
        if isinstance(key, Parameter):
            self._by_param[key] = value

    def __delitem__(self, key: object) -> None:
        del self._entries[self._slot(key)]
        if isinstance(key, Parameter):
            del self._by_param[key]

    def __contains__(self, key: object) -> bool:
        return self._slot(key) in self._entries

    def get(self, key: object, default: object = None) -> Any:
        entry = self._entries.get(self._slot(key))
        return default if entry is None else entry[1]

    def __iter__(self) -> Iterator[object]:
        return (key for key, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]  # noqa: D102 - the Mapping method, without a lookup per key
        return [(key, value) for key, value in self._entries.values()]

    def __reduce__(self) -> tuple[type[_ParamState], tuple[list[tuple[Any, Any]]]]:
        # Pickle and deepcopy by content: ids are meaningless in the copy.
        return (type(self), (self.items(),))

    def __repr__(self) -> str:
        body = ", ".join(f"{_typename(k)} at {id(k):#x}: {v!r}" for k, v in self.items())
        return "{" + body + "}"


def _get_each(state: MutableMapping[Any, Any], params: list[Any], name: str) -> list[Any]:
    """``state.get(p, {}).get(name)`` for each parameter, creating nothing."""
    if isinstance(state, _ParamState):
        return state.get_each(params, name)
    return [state.get(p, {}).get(name) for p in params]


def _dicts_of(state: MutableMapping[Any, Any], params: list[Any]) -> list[dict[str, Any]]:
    """``state[p]`` for each parameter (an empty dict created where there was none)."""
    if isinstance(state, _ParamState):
        return state.dicts_of(params)
    return [state[p] for p in params]


class _Batch(NamedTuple):
    """The parameters of one group that take part in a step (those with a gradient)."""

    group: dict[str, Any]
    keys: list[object]  # the parameter objects (state keys)
    values: list[np.ndarray]  # the arrays to update
    grads: list[np.ndarray]


class Optimizer:
    """Base class of all gradclip optimizers, as ``torch.optim.Optimizer``.

    Parameters
    ----------
    params : iterable
        The parameters to optimize: :class:`gradclip.Parameter` objects or float ndarrays
        (float16, float32, float64, complex64, complex128, writable, any layout), or
        ``(name, parameter)`` pairs,
        or dicts defining parameter groups (each with a ``"params"`` entry and optional
        per-group hyper-parameters).
    defaults : dict
        Default values of the hyper-parameters, used where a group does not set them.

    Attributes
    ----------
    defaults : dict
        As given.
    param_groups : list of dict
        One dict per group: ``"params"`` (a list of parameters) and every hyper-parameter.
    state : MutableMapping
        Per-parameter state, keyed by the parameter object itself (by identity, so plain
        ndarrays work as keys); reading a missing key creates an empty dict, as torch's
        ``defaultdict``.

    Notes
    -----
    Gradients come from each :class:`~gradclip.Parameter`'s ``.grad``, or, for every
    parameter at once, from the ``grads`` argument of :meth:`step` and :meth:`clip_and_step`:
    a list with one array (or ``None``) per parameter, in the order of the parameters over
    all groups. Plain ndarray parameters need ``grads``. A parameter whose gradient is
    ``None`` is skipped, as in torch. Every array is validated before anything is modified.

    A Tensor lr, as torch 2.13 takes one: a group's ``"lr"`` may be a 1-element torch tensor
    or ndarray (any shape) of dtype float32 or float64, kept in the group as given (torch's
    ``Tensor lr must be 1-element`` otherwise). torch's CPU step computes with it as a 0-d
    tensor of its dtype, so with a float32 lr its scalar expressions (``lr /
    bias_correction``, ``1 - lr * weight_decay``, ...) are float32 operations; gradclip
    computes them the same way (a NumPy float32 lr too, as torch does), and with a float64
    lr as with the float it holds.

    Hooks are torch's: ``register_step_pre_hook``/``register_step_post_hook`` (and the global
    ones in :mod:`gradclip.optim.optimizer`) run around :meth:`step` *and*
    :meth:`clip_and_step`, also around a subclass's own ``step``;
    ``register_state_dict_pre_hook``/``post_hook`` around :meth:`state_dict`,
    ``register_load_state_dict_pre_hook``/``post_hook`` around :meth:`load_state_dict`. Each
    returns a :class:`~gradclip.optim.optimizer.RemovableHandle`. Hooks are not copied by
    ``copy.deepcopy`` or pickling (as in torch).

    Writing your own optimizer is torch's pattern: subclass, pass the defaults to
    ``super().__init__``, and write a ``step`` that loops over :attr:`param_groups`, reads
    ``p.grad``, updates ``p.data`` *in place* and keeps per-parameter state in
    ``self.state[p]`` (a dict, created empty on first access). :meth:`state_dict`,
    :meth:`load_state_dict` (arrays copied and cast to the parameter's dtype, except a
    ``"step"`` entry), :meth:`zero_grad`, :meth:`add_param_group` and
    :meth:`clip_and_step` (the gradients clipped in place, then your ``step()``; every form:
    ``return_info``, ``nonfinite``, ``per_group``, the clippers, ``write_back=False``) work
    unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from gradclip import Parameter
    >>> from gradclip.optim import Optimizer
    >>> class MomentumSGD(Optimizer):
    ...     def __init__(self, params, lr=0.1, momentum=0.9):
    ...         super().__init__(params, {"lr": lr, "momentum": momentum})
    ...     def step(self, closure=None):
    ...         loss = closure() if closure is not None else None
    ...         for group in self.param_groups:
    ...             for p in group["params"]:
    ...                 if p.grad is None:
    ...                     continue
    ...                 state = self.state[p]
    ...                 if "buf" not in state:
    ...                     state["buf"] = np.zeros_like(p.data)
    ...                 state["buf"] *= group["momentum"]
    ...                 state["buf"] += p.grad
    ...                 p.data -= group["lr"] * state["buf"]   # in place
    ...         return loss
    >>> w = Parameter(np.array([1.0, 2.0]))
    >>> opt = MomentumSGD([w])
    >>> w.grad = np.array([1.0, 1.0])
    >>> opt.step()
    >>> w.data
    array([0.9, 1.9])
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # torch patches the class's step on first instantiation (_patch_step_function); here
        # every subclass that defines its own step (or clip_and_step) gets the wrapper once.
        super().__init_subclass__(**kwargs)
        for name in ("step", "clip_and_step"):
            if name in cls.__dict__:
                setattr(cls, name, with_step_hooks(cls.__dict__[name]))

    def _init_hooks(self) -> None:
        for name in _HOOK_DICTS:
            if name not in self.__dict__:
                setattr(self, name, OrderedDict())

    # Set by __init__ (see _hooks); declared for type checkers.
    _optimizer_step_pre_hooks: Any
    _optimizer_step_post_hooks: Any
    _optimizer_state_dict_pre_hooks: Any
    _optimizer_state_dict_post_hooks: Any
    _optimizer_load_state_dict_pre_hooks: Any
    _optimizer_load_state_dict_post_hooks: Any

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        self.defaults = defaults
        self._init_hooks()
        # A single array would otherwise be iterated row by row.
        if _is_param(params):
            raise TypeError(
                "params argument given to the optimizer should be "
                "an iterable of Tensors or dicts, but got " + _typename(params)
            )
        self.state: MutableMapping[object, dict[str, Any]] = _ParamState()
        self.param_groups: list[dict[str, Any]] = []

        param_groups: list[Any] = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    def __getstate__(self) -> dict[str, Any]:
        return {
            "defaults": self.defaults,
            "state": self.state,
            "param_groups": self.param_groups,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_hooks()

    def __repr__(self) -> str:
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {key}: {group[key]}" for key in sorted(group) if key != "params")
        lines.append(")")
        return "\n".join(lines)

    # -- hooks ---------------------------------------------------------------------------------

    def register_step_pre_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Register a hook called before each :meth:`step` and :meth:`clip_and_step`.

        Parameters
        ----------
        hook : callable
            ``hook(optimizer, args, kwargs) -> None or (new_args, new_kwargs)``; ``args`` starts
            with the optimizer. A returned pair replaces the call's arguments (for the next
            hooks and the call). Runs after the global pre hooks, in registration order.

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._optimizer_step_pre_hooks)
        self._optimizer_step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable[..., Any]) -> RemovableHandle:
        """Register a hook called after each :meth:`step` and :meth:`clip_and_step`.

        Parameters
        ----------
        hook : callable
            ``hook(optimizer, args, kwargs) -> None``, with the arguments the call got (as
            replaced by pre hooks). Runs before the global post hooks; not called if the step
            raised.

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        handle = RemovableHandle(self._optimizer_step_post_hooks)
        self._optimizer_step_post_hooks[handle.id] = hook
        return handle

    def _register(self, hooks: OrderedDict[int, Any], hook: Callable[..., Any], prepend: bool) -> RemovableHandle:
        handle = RemovableHandle(hooks)
        hooks[handle.id] = hook
        if prepend:
            hooks.move_to_end(handle.id, last=False)
        return handle

    def register_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Register a hook called as ``hook(optimizer)`` at the start of :meth:`state_dict`.

        Parameters
        ----------
        hook : callable
            ``hook(optimizer) -> None``.
        prepend : bool, default False
            Run before the hooks registered so far instead of after them.

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        return self._register(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Register a hook called as ``hook(optimizer, state_dict)`` at the end of :meth:`state_dict`.

        Parameters
        ----------
        hook : callable
            ``hook(optimizer, state_dict) -> None or dict``: may modify ``state_dict`` in place
            or return a new one, which the next hooks receive and ``state_dict()`` returns.
        prepend : bool, default False
            Run before the hooks registered so far instead of after them.

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        return self._register(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Register a hook called as ``hook(optimizer, state_dict)`` before :meth:`load_state_dict` loads.

        Parameters
        ----------
        hook : callable
            ``hook(optimizer, state_dict) -> None or dict``: receives a shallow copy of the
            argument; a returned dict is loaded instead (and passed to the next hooks).
        prepend : bool, default False
            Run before the hooks registered so far instead of after them.

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        return self._register(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook: Callable[..., Any], prepend: bool = False) -> RemovableHandle:
        """Register a hook called as ``hook(optimizer)`` after :meth:`load_state_dict` has loaded.

        Parameters
        ----------
        hook : callable
            ``hook(optimizer) -> None``.
        prepend : bool, default False
            Run before the hooks registered so far instead of after them.

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        return self._register(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # -- parameter groups ------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to :attr:`param_groups`.

        Parameters
        ----------
        param_group : dict
            ``"params"``: a parameter, or an ordered iterable of parameters or of
            ``(name, parameter)`` pairs; other keys override :attr:`defaults` for this group.

        Raises
        ------
        TypeError
            ``param_group`` is not a dict; ``params`` is a set; an entry is not a
            Parameter or ndarray, or has an unsupported dtype.
        ValueError
            A parameter is read-only or already in another group; names are given for some
            parameters or groups but not all.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")

        params = param_group["params"]
        if _is_param(params):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but "
                "the ordering of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            param_group["params"] = list(params)

        tensors = []
        names = []
        for param in param_group["params"]:
            if isinstance(param, tuple):
                names.append(param[0])
                tensors.append(param[1])
            else:
                tensors.append(param)
        param_group["params"] = tensors
        if names:
            if len(names) != len(tensors):
                raise ValueError(
                    "all optimizer params should be with/without names. Some param names are missing"
                )
            param_group["param_names"] = names

        for param in tensors:
            self._check_param(param)

        for name, default in self.defaults.items():
            param_group.setdefault(name, default)

        ids = {id(p) for p in tensors}
        if len(ids) != len(tensors):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; "
                "in future, this will cause an error; "
                "see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )

        existing: set[int] = set()
        for group in self.param_groups:
            existing.update(id(p) for p in group["params"])
            if ("param_names" in param_group) != ("param_names" in group):
                current = "with names" if "param_names" in param_group else "without names"
                raise ValueError(
                    "all optimizer param groups should be with/without names. "
                    f"cannot add param group {current} to the optimizer"
                )
        if not existing.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")

        self.param_groups.append(param_group)

    #: Whether complex64/complex128 parameters are accepted (their kernels view them as real
    #: pairs, as torch's single-tensor code does).
    _supports_complex = False

    @classmethod
    def _check_param(cls, param: object, where: str = "one of the params") -> None:
        if not _is_param(param):
            raise TypeError(
                "optimizer can only optimize gradclip.Parameter objects or NumPy arrays, "
                f"but {where} is " + _typename(param)
            )
        value = _value(param)
        if value.dtype not in _FLOAT_DTYPES and not (cls._supports_complex and value.dtype in _COMPLEX_DTYPES):
            kinds = "float16, float32, float64, complex64 or complex128" if cls._supports_complex else (
                "float16, float32 or float64"
            )
            raise TypeError(
                f"optimizer can only optimize {kinds} arrays in native "
                f"byte order, but {where} has dtype {value.dtype}"
            )
        if not value.flags.writeable:
            raise ValueError(
                f"optimizer parameters are updated in place, but {where} is a read-only array"
            )

    # -- gradients ---------------------------------------------------------------------------

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all :class:`~gradclip.Parameter` objects.

        Parameters
        ----------
        set_to_none : bool, default True
            Set each ``.grad`` to ``None`` (the parameter is then skipped by the next step
            unless it gets a gradient), or, if False, fill the existing gradient arrays with
            zeros in place.

        Raises
        ------
        ValueError
            With ``set_to_none=False``, a gradient is read-only (naming the parameter);
            raised before any gradient is zeroed.

        Notes
        -----
        Plain ndarray parameters have no ``.grad``; their gradients are whatever arrays the
        caller passes to :meth:`step`, so there is nothing to reset here.
        """
        with_grad = [
            (p, index, group_index)
            for group_index, group in enumerate(self.param_groups)
            for index, p in enumerate(group["params"])
            if isinstance(p, Parameter) and p.grad is not None
        ]
        if set_to_none:
            for p, _, _ in with_grad:
                p.grad = None
            return
        # Every gradient is checked before the first is zeroed: an error changes nothing.
        grads: list[tuple[Any, int, int]] = [(p.grad, index, group_index) for p, index, group_index in with_grad]
        offsets = _group_offsets(self.param_groups)
        for grad, index, group_index in grads:
            if not grad.flags.writeable:
                where = _describe(offsets[group_index] + index, group_index)
                raise ValueError(
                    f"the gradient of {where} is read-only, but zero_grad(set_to_none=False) "
                    "fills it with zeros in place"
                )
        for grad, _, _ in grads:
            grad.fill(0)

    def _collect(self, grads: Optional[object]) -> list[_Batch]:
        """The parameters that have a gradient, group by group, without validation.

        This is the per-step fast path: the kernels validate every array before changing
        any, and if anything fails, :meth:`_explain` re-checks in Python to say which
        parameter is at fault. It raises on anything unusual, which sends it there too.
        """
        if grads is None:
            # Anything but a Parameter raises (explained by _explain).
            return [
                _Batch(_step_group(group), *_C.with_grads(group["params"], Parameter, None))
                for group in self.param_groups
            ]
        if not isinstance(grads, (list, tuple)):
            raise TypeError("grads")
        batches, start = [], 0
        for group in self.param_groups:
            stop = start + len(group["params"])
            batches.append(_Batch(_step_group(group), *_C.with_grads(group["params"], Parameter, grads[start:stop])))
            start = stop
        if start != len(grads):
            raise ValueError("grads")
        return batches

    def _explain(self, grads: Optional[object], writable_grads: bool) -> None:
        """After the fast path failed: raise the Python check's error, naming the parameter
        at fault, if it finds one (else the caller re-raises the kernel's own error)."""
        try:
            self._validate(grads, writable_grads=writable_grads)
        except Exception as exc:
            raise exc from None

    def _validate(self, grads: Optional[object], *, writable_grads: bool = False) -> None:
        """Check every parameter, gradient and state entry in Python, raising an error that
        names the first one at fault; modify nothing."""
        n_params = sum(len(g["params"]) for g in self.param_groups)
        if grads is not None:
            if isinstance(grads, (np.ndarray, Parameter)) or not isinstance(grads, (list, tuple)):
                raise TypeError(
                    "grads must be a list or tuple with one gradient array (or None) per "
                    f"parameter, not {_typename(grads)}"
                )
            if len(grads) != n_params:
                raise ValueError(
                    f"grads has {len(grads)} entries, but the optimizer has {n_params} "
                    f"parameters in {len(self.param_groups)} group(s); pass one gradient (or "
                    "None) per parameter, in the order of the parameters over all groups"
                )

        index = 0
        for group_index, group in enumerate(self.param_groups):
            self._check_group(group, f"param_groups[{group_index}]")
            for p in group["params"]:
                where = _describe(index, group_index)
                if grads is not None:
                    grad = grads[index]
                elif isinstance(p, Parameter):
                    grad = p.grad
                else:
                    self._check_param(p, where)  # not an ndarray either: says what it is
                    raise TypeError(
                        f"{where} is a plain ndarray, which has no .grad: pass the gradients "
                        "to step()/clip_and_step() as grads=[...]"
                    )
                index += 1
                if grad is None:
                    continue
                self._check_param(p, where)
                value = _value(p)
                _check_grad(grad, value, where, writable_grads)
                self._check_state(group, p, value, grad, where)

    def _check_group(self, group: dict[str, Any], where: str) -> None:
        """Raise if a group's hyper-parameters (possibly changed since construction) are unusable."""

    def _check_state(
        self, group: dict[str, Any], param: object, value: np.ndarray, grad: np.ndarray, where: str
    ) -> None:
        """Raise if the saved state of ``param`` cannot be used with ``value`` and ``grad``."""

    # Whether _apply's grad_scale may also be AGC's per-unit factors (a list, see
    # _clip_step._agc_step): true for the optimizers whose step is one of gradclip's C kernels.
    _unit_grad_scales = False

    def _apply(self, batches: list[_Batch], grad_scale: Any, write_back: bool) -> None:
        """Apply one step to every validated batch in one kernel call (subclasses: init state,
        call the kernel, save new state). grad_scale: None, a clip coefficient, a tuple of
        them (one per group) or, where _unit_grad_scales, per-parameter unit factors."""
        raise NotImplementedError

    # -- stepping ------------------------------------------------------------------------------

    @with_step_hooks
    def step(
        self, closure: Optional[Callable[[], Any]] = None, *, grads: Optional[Union[list[Any], tuple[Any, ...]]] = None
    ) -> Any:
        """Perform one optimization step.

        Parameters
        ----------
        closure : callable, optional
            Called first, without arguments, to re-evaluate the model (and refresh the
            gradients); its return value is returned.
        grads : list of (numpy.ndarray or None), optional
            One gradient per parameter, in the order of the parameters over all groups,
            instead of the Parameters' ``.grad``. Required when the parameters are plain
            ndarrays. ``None`` skips that parameter.

        Returns
        -------
        object
            The closure's result, or None.

        Raises
        ------
        TypeError, ValueError
            A gradient of the wrong type, dtype, shape or count, or an unusable parameter;
            raised before anything is modified.
        """
        loss = None
        if closure is not None:
            if not callable(closure):
                # The min-char-rnn habit, step([dW, db]): say where gradients go.
                raise TypeError(
                    "step()'s positional argument is closure, a callable that re-evaluates "
                    f"the model, not {_typename(closure)}; pass the gradients as "
                    "step(grads=[...])"
                )
            loss = closure()
        try:
            self._apply(self._collect(grads), None, True)
        except Exception:
            self._explain(grads, writable_grads=False)
            raise
        return loss

    @with_step_hooks
    def clip_and_step(
        self,
        max_norm: Optional[float] = None,
        norm_type: Union[float, str] = 2.0,
        *,
        error_if_nonfinite: bool = False,
        grads: Optional[Union[list[Any], tuple[Any, ...]]] = None,
        write_back: bool = True,
        return_info: bool = False,
        nonfinite: str = "propagate",
        per_group: bool = False,
        clipper: Any = None,
        comm: Any = None,
        sharded: bool = False,
    ) -> Any:
        """Clip the gradients' total norm and take a step, in one pass.

        Equivalent to ``clip_grad_norm_(all_params, max_norm, norm_type,
        error_if_nonfinite)`` followed by :meth:`step`, bit for bit, but the clipped
        gradients are formed inside the update instead of in a separate pass.

        Parameters
        ----------
        max_norm : float
            The largest allowed total norm.
        norm_type : float or {'inf', '-inf'}, default 2.0
            The order of the norm (see :func:`gradclip.clip_grad_norm_`).
        error_if_nonfinite : bool, default False
            Raise ``RuntimeError`` (before modifying anything) if the total norm is NaN or
            infinite.
        grads : list of (numpy.ndarray or None), optional
            As in :meth:`step`.
        write_back : bool, default True
            Also store the clipped gradients into the gradient arrays, leaving them exactly
            as ``clip_grad_norm_`` would. With False the gradients are left untouched.
        return_info : bool, default False
            Return a :class:`gradclip.ClipInfo` (per group with ``per_group``) instead of
            the total norm; no extra pass.
        nonfinite : {'propagate', 'raise', 'skip', 'zero'}, default 'propagate'
            As for :func:`gradclip.clip_grad_norm_`. With ``'skip'`` a non-finite total
            leaves parameters, gradients, state and step counts untouched (no step is taken).
            With ``'zero'`` the gradients with a non-finite norm are zeroed in place (even
            with ``write_back=False``) and the step uses zero for them.
        per_group : bool, default False
            Clip each parameter group by its own total norm against
            ``group.get("max_norm", max_norm)`` (a group key, so schedulers and users can
            change it), in one norm pass and one step. Returns a list with one total (or
            ClipInfo) per group; ``'skip'`` skips the whole step if any group's total is
            non-finite.
        clipper : AutoClip, ZClip or AGC, optional
            Let an adaptive clipper choose the threshold from this step's total norm (then
            ``max_norm`` is not needed), still one norm pass and the fused step. With ``AGC``
            each gradient unit is scaled by its own factor inside the step (see
            :class:`gradclip.AGC`).
        comm : mpi4py.MPI.Comm, optional
            Clip by the total norm over every rank of ``comm``, as
            :func:`gradclip.distributed.clip_grad_norm_` computes it (every rank calls
            this, and gets the same total and coefficient); then each rank steps its own
            parameters. Not combined with the four options above yet. Without it (the default) nothing about MPI is imported.
        sharded : bool, default False
            With ``comm``: each rank's parameters are shards of the same arrays (see
            :func:`gradclip.distributed.get_total_norm`).

        Returns
        -------
        numpy.float32 or numpy.float64
            The total norm of the gradients (of every parameter in every group that has
            one) before clipping, as :func:`gradclip.clip_grad_norm_` returns it; see
            ``return_info`` and ``per_group`` for the other forms (``None`` with AGC).

        Notes
        -----
        An array that serves as the gradient of two parameters is clipped once here, but
        twice by ``clip_grad_norm_`` (which scales every listed gradient); avoid sharing.

        With ``comm``, an error in gathering the gradients or in the arguments is raised on
        every rank before any communication; errors that only the update's own validation
        finds (a state array of the wrong shape, a hyper-parameter made invalid) are raised
        on the ranks where they occur, after the total was agreed, with those ranks'
        parameters unchanged.

        The step hooks (:meth:`register_step_pre_hook`, :meth:`register_step_post_hook` and
        the global ones) run around this call as around :meth:`step`, with this call's
        arguments: it is a step.
        """
        if comm is not None:
            if return_info or per_group or clipper is not None or nonfinite != "propagate":
                raise NotImplementedError(
                    "clip_and_step(comm=...) does not combine with return_info, nonfinite, "
                    "per_group or clipper yet"
                )
            if max_norm is None:
                raise TypeError("clip_and_step(comm=...) needs max_norm")
            from .. import distributed  # mpi4py is needed only here

            return distributed._clip_and_step(
                self, comm, max_norm, norm_type, error_if_nonfinite, grads, write_back, sharded
            )
        if sharded:
            raise ValueError("sharded=True needs comm")
        # A subclass with its own step() (see the class notes) clips, then steps, there too.
        own_step = type(self)._apply is Optimizer._apply
        if return_info or per_group or clipper is not None or nonfinite != "propagate" or max_norm is None or own_step:
            return _clip_step.clip_and_step(
                self, max_norm, norm_type, error_if_nonfinite, grads, write_back,
                return_info, nonfinite, per_group, clipper,
            )
        try:
            batches = self._collect(grads)
            every_grad = [g for batch in batches for g in batch.grads]
            # write_back: the gradients must be writable whether or not this step clips (the
            # error must not depend on the data), so the norm pass checks that up front.
            total_norm, coef, unit = _clip._total_norm_and_coef(
                every_grad, max_norm, norm_type, error_if_nonfinite, write_back
            )
            # Nothing clipped (scaling by the coefficient would change no bit): the plain step,
            # which neither scales nor writes the gradients back, as clip_grad_norm_ leaves
            # its scaling out.
            self._apply(batches, None if unit else float(coef), write_back)
        except Exception:
            self._explain(grads, writable_grads=write_back)
            raise
        return total_norm

    # -- state dict ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return the optimizer state in torch's layout.

        Returns
        -------
        dict
            ``"state"``: a dict from parameter index (position over all groups; for a
            parameter listed twice in a group, its last position, as in torch) to that
            parameter's state dict (the optimizer's own dicts and arrays,
            not copies, as in torch); ``"param_groups"``: a list of dicts with every
            hyper-parameter and ``"params"`` as a list of indices.
        """
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        param_mappings: dict[int, int] = {}
        start_index = 0

        def pack_group(group: dict[str, Any]) -> dict[str, Any]:
            nonlocal start_index
            packed = {k: v for k, v in group.items() if k != "params"}
            # As torch: a parameter listed twice in one group gets the index of its last
            # occurrence ([p, q, p] -> [2, 1, 2]), one from an earlier group keeps its own.
            param_mappings.update(
                {id(p): i for i, p in enumerate(group["params"], start_index) if id(p) not in param_mappings}
            )
            packed["params"] = [param_mappings[id(p)] for p in group["params"]]
            start_index += len(packed["params"])
            return packed

        param_groups = [pack_group(g) for g in self.param_groups]
        packed_state = {
            (param_mappings[id(k)] if _is_param(k) else k): v for k, v in self.state.items()
        }
        state_dict = {"state": packed_state, "param_groups": param_groups}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            hook_result = post_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by :meth:`state_dict` (or torch's, with CPU tensors).

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`. Its groups must match this optimizer's in
            number and sizes; the saved hyper-parameters replace the current ones, and
            parameters are matched by position.

        Raises
        ------
        ValueError
            The number of groups or a group's size differs.

        Notes
        -----
        Every saved array is copied (floating state cast to its parameter's dtype, ``step``
        kept as is), so the loaded optimizer never shares memory with ``state_dict``. torch
        aliases a saved tensor that needs no cast; copying is the deliberate difference, so
        that two optimizers never update the same buffer.
        """
        state_dict = state_dict.copy()
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            hook_result = pre_hook(self, state_dict)
            if hook_result is not None:
                state_dict = hook_result
        groups = self.param_groups
        saved_groups = deepcopy(state_dict["param_groups"])

        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved_groups)):
            raise ValueError(
                "loaded state dict contains a parameter group "
                "that doesn't match the size of optimizer's group"
            )

        id_map = dict(
            zip(
                chain.from_iterable(g["params"] for g in saved_groups),
                chain.from_iterable(g["params"] for g in groups),
            )
        )

        state = _ParamState()
        for k, v in state_dict["state"].items():
            if k in id_map:
                param = id_map[k]
                state[param] = _cast(_value(param), v)
            else:
                state[k] = v

        def update_group(group: dict[str, Any], new_group: dict[str, Any]) -> dict[str, Any]:
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            return new_group

        param_groups = [update_group(g, ng) for g, ng in zip(groups, saved_groups)]
        self.__setstate__({"state": state, "param_groups": param_groups})
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)


_HOOK_DICTS = (
    "_optimizer_step_pre_hooks",
    "_optimizer_step_post_hooks",
    "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks",
    "_optimizer_load_state_dict_pre_hooks",
    "_optimizer_load_state_dict_post_hooks",
)


def _is_array_like(value: object) -> bool:
    # ndarrays and CPU tensors from a torch state dict; NumPy scalars stay scalars.
    return isinstance(value, np.ndarray) or (
        hasattr(value, "__array__") and not isinstance(value, (Number, np.generic, str, bytes))
    )


def _cast(param_value: np.ndarray, value: object, key: object = None) -> object:
    """Deep-copy ``value`` for ``param``: arrays copied, floating state in the param's dtype."""
    if _is_array_like(value):
        # asarray first: torch's __array__ rejects NumPy 2's copy keyword (with a warning).
        array = np.array(np.asarray(value), copy=True)
        # torch keeps the step counter's own dtype (it is not a per-element quantity).
        if key not in _SCALAR_STATE_KEYS:
            array = array.astype(param_value.dtype, copy=False)
        return array
    if isinstance(value, dict):
        return {k: _cast(param_value, v, key=k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(param_value, v) for v in value)
    return value


def _check_grad(grad: object, value: np.ndarray, where: str, writable: bool) -> None:
    if not isinstance(grad, np.ndarray):
        raise TypeError(f"the gradient of {where} must be a NumPy ndarray or None, not {_typename(grad)}")
    if grad.shape != value.shape:
        raise ValueError(
            f"the gradient of {where} has shape {grad.shape}, but the parameter has shape "
            f"{value.shape}"
        )
    if grad.dtype != value.dtype:
        raise TypeError(
            f"the gradient of {where} has dtype {grad.dtype}, but the parameter has dtype "
            f"{value.dtype}"
        )
    if writable and not grad.flags.writeable:
        raise ValueError(
            f"the gradient of {where} is read-only, but write_back=True stores the clipped "
            "gradient into it"
        )


def _check_state_array(array: object, value: np.ndarray, what: str) -> None:
    """Raise unless a state array can be updated in place alongside ``value``."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} must be an ndarray, not {_typename(array)}")
    if array.shape != value.shape or array.dtype != value.dtype:
        raise ValueError(
            f"{what} has shape {array.shape} and dtype {array.dtype}, but the parameter has "
            f"shape {value.shape} and dtype {value.dtype}"
        )
    if not array.flags.writeable:
        raise ValueError(f"{what} is read-only")
