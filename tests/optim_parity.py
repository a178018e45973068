"""A reusable parity harness: a gradclip optimizer and its torch 2.13 twin, side by side.

    from optim_parity import run_parity, check_clip_and_step
    worst = run_parity("Adagrad", dict(lr_decay=0.01), np.float32, ulps={"param": 1})

:func:`run_parity` builds equal parameters on both sides (same values, same memory layouts:
contiguous, a strided view of a larger array, a transposed array, ...), puts them in two
parameter groups with different hyper-parameters, and feeds both optimizers the same seeded
gradients for ``steps`` steps; the last parameter has no gradient (``None``) on steps 0, 1, 4,
7, .... After construction and after every step it compares every parameter and every state
entry (keys, order, dtype, shape, value), in ulps, against a tolerance per state key. Half way
(``save_at``) each side's ``state_dict()`` is deep-copied and loaded into a fresh optimizer of
its own kind, which carries on. The group hyper-parameters of the two ``state_dict()``s are
compared as well (torch's defaults and group keys).

It returns the largest ulp distance seen per key, so a test can both assert a bound and report
what it measured. With ``resync=True``, gradclip's parameters and state are overwritten with
torch's after every comparison, so the distances are per step instead of accumulated.

:func:`check_clip_and_step` checks the fused path: ``opt.clip_and_step(max_norm)`` against
``gradclip.clip_grad_norm_`` followed by ``opt.step()``, bit for bit, on the same problem.

The interface (names, arguments, return values) is stable: other test modules import it.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch

import gradclip
from gradclip import Parameter, optim

__all__ = [
    "DEFAULT_LAYOUTS",
    "MATRIX_LAYOUTS",
    "VECTOR_LAYOUTS",
    "TORCH_HAS_FMA",
    "check_clip_and_step",
    "correctly_rounded_sqrt",
    "gradient_schedule",
    "make_problem",
    "run_parity",
    "split_tensor_lr",
    "torch_optim_inputs",
    "ulp_distance",
]

# torch's CPU kernels only fuse multiply-adds where the CPU has FMA: gate bitwise claims on it.
TORCH_HAS_FMA = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")

# (base shape, view): each parameter is a view of a base array; the same view of a torch copy
# of the base gives a tensor with the same strides.
DEFAULT_LAYOUTS: list[tuple[tuple[int, ...], Callable]] = [
    ((3, 4), lambda x: x),
    ((6, 5), lambda x: x[::2, 1:]),  # strided view, non-contiguous
    ((4, 3), lambda x: x.T),  # transposed: Fortran order
    ((7,), lambda x: x),
    ((2, 2), lambda x: x),  # the one whose gradient is sometimes None
]
# Matrices only (Muon), still with a strided and a transposed one.
MATRIX_LAYOUTS = [
    ((3, 4), lambda x: x),
    ((6, 5), lambda x: x[::2, 1:]),
    ((4, 3), lambda x: x.T),
    ((5, 2), lambda x: x),
]
# float16: torch's vectorised and scalar-remainder loops round add(alpha=) differently;
# contiguous sizes that are multiples of 32 keep torch on its vectorised path throughout
# (DEFAULT_LAYOUTS, all under 32 elements, keep it on its scalar loops).
VECTOR_LAYOUTS = [
    ((64,), lambda x: x),
    ((8, 16), lambda x: x),
    ((4096,), lambda x: x),
    ((128,), lambda x: x),
]

_INT_OF = {2: np.int16, 4: np.int32, 8: np.int64}


def ulp_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The largest distance in units in the last place between two arrays of one float dtype.

    Complex arrays are compared as real pairs. ``+0`` and ``-0`` are 0 apart, two NaNs are 0
    apart, a NaN and a number are ``inf`` apart; an empty array gives 0.
    """
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
    if a.dtype.kind == "c":
        a, b = a[..., None].view(a.real.dtype), b[..., None].view(b.real.dtype)
    assert a.dtype.kind == "f", a.dtype
    if a.size == 0:
        return 0
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if (nan_a != nan_b).any():
        return float("inf")
    ints = _INT_OF[a.dtype.itemsize]
    mask = np.int64(np.iinfo(ints).max)

    def ordered(x: np.ndarray) -> np.ndarray:
        i = x.view(ints).astype(np.int64)
        return np.where(i < 0, -(i & mask), i)

    d = np.abs(ordered(a) - ordered(b))
    d[nan_a] = 0
    return int(d.max())


def gradient_schedule(arrays: Sequence[np.ndarray], steps: int, seed: int, scale: float = 1.0) -> list[list]:
    """Seeded gradients per step, like each array; the last has none on steps 0, 1, 4, 7, ..."""
    rng = np.random.default_rng(seed)
    schedule = []
    for step in range(steps):
        grads = [_random(rng, a.shape, a.dtype, scale) for a in arrays]
        if step == 0 or step % 3 == 1:
            grads[-1] = None
        schedule.append(grads)
    return schedule


def _random(rng: np.random.Generator, shape: tuple, dtype: Any, scale: float = 1.0) -> np.ndarray:
    dtype = np.dtype(dtype)
    values = scale * rng.standard_normal(shape)
    if dtype.kind == "c":
        values = values + 1j * scale * rng.standard_normal(shape)
    return np.asarray(values).astype(dtype)


def make_problem(dtype: Any, layouts=None, seed: int = 0) -> tuple[list[np.ndarray], list[torch.Tensor]]:
    """Equal parameters on both sides: NumPy views and torch tensors with the same strides."""
    layouts = DEFAULT_LAYOUTS if layouts is None else layouts
    rng = np.random.default_rng(seed)
    arrays, tensors = [], []
    for shape, view in layouts:
        base = _random(rng, shape, dtype)
        arrays.append(view(base))
        tensors.append(view(torch.from_numpy(base.copy())))
    for a, t in zip(arrays, tensors):
        assert np.array_equal(a, t.numpy())
        assert a.strides == tuple(s * a.itemsize for s in t.stride())
    return arrays, tensors


@functools.lru_cache(maxsize=None)
def _common_optimizers_tree() -> ast.Module:
    # Parsed, not imported: importing torch.testing._internal needs test-only packages
    # (expecttest) that gradclip does not depend on.
    import torch.optim  # noqa: F401 - the installed torch's location

    path = inspect.getfile(torch).replace("__init__.py", "testing/_internal/common_optimizers.py")
    with open(path, encoding="utf-8") as f:
        return ast.parse(f.read())


def _literal(node: ast.AST) -> Any:
    # torch.tensor(<literal>) is the one call torch's configurations use (a Tensor lr).
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.tensor" and len(node.args) == 1:
        return torch.tensor(ast.literal_eval(node.args[0]))
    if isinstance(node, ast.Dict):
        return {ast.literal_eval(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and ast.unparse(node.func) == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    return ast.literal_eval(node)


def torch_optim_inputs(name: str) -> list[tuple[str, dict]]:
    """The CPU configurations of torch's own optimizer tests, ``(desc, kwargs)`` per entry.

    Read from ``optim_inputs_func_<name>`` in the installed torch's
    ``torch/testing/_internal/common_optimizers.py`` (by parsing its source): every
    ``OptimizerInput(...)`` in the function except those assigned to a ``cuda_*`` list. Only
    functions made of literal configurations are supported (an error says otherwise).
    """
    fname = f"optim_inputs_func_{name.lower()}"
    func = next(
        (n for n in _common_optimizers_tree().body if isinstance(n, ast.FunctionDef) and n.name == fname), None
    )
    if func is None:
        raise LookupError(f"{fname} is not in torch's common_optimizers.py")
    skip = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and any("cuda" in ast.unparse(t) for t in node.targets):
            skip.update(id(n) for n in ast.walk(node.value))
    inputs = []
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "OptimizerInput" and id(node) not in skip:
            kw = {k.arg: k.value for k in node.keywords}
            inputs.append((_literal(kw.get("desc", ast.Constant(""))), _literal(kw["kwargs"])))
    # ast.walk is breadth-first; the source order is the order of the nodes' positions.
    return inputs


def split_tensor_lr(kwargs: dict) -> tuple[dict, dict]:
    """``(gradclip_kwargs, torch_kwargs)``: a Tensor ``lr`` (torch's "Tensor lr" configs) goes
    to torch as is and to gradclip as the Python float torch's step reads from it."""
    lr = kwargs.get("lr")
    if isinstance(lr, torch.Tensor):
        return {**kwargs, "lr": lr.item()}, {"lr": lr}
    return dict(kwargs), {}


def _groups(params: list, overrides: Sequence[dict]) -> list[dict]:
    n = len(params)
    split = [0, 2, n] if len(overrides) == 2 else np.linspace(0, n, len(overrides) + 1).astype(int)
    return [{"params": params[split[i] : split[i + 1]], **overrides[i]} for i in range(len(overrides))]


def _default_stepper(side: str, opt: Any, params: list, grads: list, mode: str) -> None:
    if side == "torch":
        for t, g in zip(params, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        opt.step()
    elif mode == "parameter":
        for p, g in zip(params, grads):
            p.grad = None if g is None else g.copy()
        opt.step()
    else:
        opt.step(grads=[None if g is None else g.copy() for g in grads])


class _Worst:
    """The largest ulp distance per key, checked against the tolerances as it grows."""

    def __init__(self, ulps: Union[int, dict, None]):
        if ulps is None:
            ulps = {}
        if not isinstance(ulps, dict):
            ulps = {"*": ulps}
        self.ulps = ulps
        self.worst: dict[str, float] = {}

    def bound(self, key: str) -> float:
        return self.ulps.get(key, self.ulps.get("*", 0))

    def add(self, key: str, distance: float, what: str) -> None:
        self.worst[key] = max(self.worst.get(key, 0), distance)
        assert distance <= self.bound(key), f"{what}: {distance} ulp apart (allowed {self.bound(key)})"


def _compare(ours: Any, theirs: Any, key: str, worst: _Worst, what: str) -> None:
    if isinstance(theirs, torch.Tensor):
        expected = theirs.detach().resolve_conj().numpy()
        assert isinstance(ours, np.ndarray), f"{what}: {type(ours).__name__}, torch has a tensor"
        assert ours.dtype == expected.dtype, f"{what}: dtype {ours.dtype}, torch {expected.dtype}"
        assert ours.shape == expected.shape, f"{what}: shape {ours.shape}, torch {expected.shape}"
        if expected.dtype.kind in "fc":
            worst.add(key, ulp_distance(ours, expected), what)
        else:
            assert np.array_equal(ours, expected), what
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), what
        for i, (o, t) in enumerate(zip(ours, theirs)):
            _compare(o, t, key, worst, f"{what}[{i}]")
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs), f"{what}: keys {list(ours)} != {list(theirs)}"
        for k in theirs:
            _compare(ours[k], theirs[k], key, worst, f"{what}[{k!r}]")
    elif isinstance(theirs, float) and not isinstance(ours, (np.ndarray, list, tuple, dict)):
        worst.add(key, ulp_distance(np.float64(ours), np.float64(theirs)), what)
    else:
        assert ours == theirs, f"{what}: {ours!r} != {theirs!r}"


def _compare_all(opt, topt, arrays, params, tensors, worst: _Worst, when: str) -> None:
    for i, (a, p, t) in enumerate(zip(arrays, params, tensors)):
        _compare(a, t, "param", worst, f"{when}: param {i}")
        tstate = topt.state.get(t, {})
        state = opt.state.get(p, {})
        assert list(state) == list(tstate), f"{when}: state keys of param {i}: {list(state)} != {list(tstate)}"
        for key, value in tstate.items():
            _compare(state[key], value, key, worst, f"{when}: state[{key!r}] of param {i}")


def _resync(opt, topt, arrays, params, tensors) -> None:
    """Overwrite gradclip's parameters and state arrays with torch's, in place."""

    def copy_into(ours, theirs):
        if isinstance(theirs, torch.Tensor) and isinstance(ours, np.ndarray):
            ours[...] = theirs.detach().resolve_conj().numpy()
        elif isinstance(theirs, (list, tuple)):
            for o, t in zip(ours, theirs):
                copy_into(o, t)

    for a, p, t in zip(arrays, params, tensors):
        a[...] = t.detach().numpy()
        for key, value in topt.state.get(t, {}).items():
            copy_into(opt.state[p][key], value)


def _compare_groups(sd: dict, tsd: dict, what: str) -> None:
    for i, (g, tg) in enumerate(zip(sd["param_groups"], tsd["param_groups"])):
        assert sorted(g) == sorted(tg), f"{what}: keys of param_groups[{i}]: {sorted(g)} != {sorted(tg)}"
        for key, value in tg.items():
            if key != "params":
                assert g[key] == value, f"{what}: param_groups[{i}][{key!r}]: {g[key]!r} != {value!r}"


@contextlib.contextmanager
def correctly_rounded_sqrt():
    """Within the block, ``torch.Tensor.sqrt``/``sqrt_`` (and ``torch.sqrt``) of CPU tensors
    return the correctly rounded square root (NumPy's), elementwise; everything else in torch is
    unchanged. torch's CPU ``sqrt`` (MKL/vectorised) is off by one ulp in ~17 % of float32 and
    ~1 % of float64 results; with this, torch's optimizer code runs op for op with the same
    ``sqrt`` as gradclip's kernels, so any remaining difference is gradclip's. ``t ** 0.5``
    too, which torch computes with the same ``sqrt`` kernel (Adam's bias correction of a Tensor
    beta2: ``bias_correction2 ** 0.5``, a 0-d tensor)."""
    saved = torch.Tensor.sqrt, torch.Tensor.sqrt_, torch.sqrt
    saved_pow = torch.Tensor.__pow__

    def sqrt(self, *args, **kwargs):
        assert not args and not kwargs
        x = self.detach()
        if x.is_complex():
            return saved[0](self)
        with np.errstate(invalid="ignore"):  # sqrt of a negative: NaN, as torch's
            return torch.from_numpy(np.asarray(np.sqrt(x.numpy()))).reshape(x.shape)

    def sqrt_(self):
        self.copy_(sqrt(self))
        return self

    def power(self, exponent):
        if isinstance(exponent, float) and exponent == 0.5 and not self.is_complex():
            return sqrt(self)
        return saved_pow(self, exponent)

    torch.Tensor.sqrt, torch.Tensor.sqrt_, torch.sqrt = sqrt, sqrt_, sqrt
    torch.Tensor.__pow__ = power
    try:
        yield
    finally:
        torch.Tensor.sqrt, torch.Tensor.sqrt_, torch.sqrt = saved
        torch.Tensor.__pow__ = saved_pow


def run_parity(
    name: str,
    kwargs: dict,
    dtype: Any,
    *,
    ulps: Union[int, dict, None] = 0,
    steps: int = 30,
    groups: Sequence[dict] = ({}, {"lr": 0.01}),
    layouts=None,
    mode: str = "parameter",
    save_at: Optional[int] = None,
    seed: int = 0,
    grad_scale: float = 1.0,
    resync: bool = False,
    torch_kwargs: Optional[dict] = None,
    gradclip_cls: Optional[type] = None,
    torch_cls: Optional[type] = None,
    stepper: Optional[Callable] = None,
    exact_sqrt: bool = False,
) -> dict[str, float]:
    """Run gradclip's and torch's optimizer ``name`` side by side; compare after every step.

    Parameters
    ----------
    name : str
        The class name in both ``gradclip.optim`` and ``torch.optim`` (see ``gradclip_cls``,
        ``torch_cls``).
    kwargs : dict
        Constructor keyword arguments, for both (``torch_kwargs`` are added for torch only).
    dtype : dtype
        Of every parameter, gradient and state buffer (complex dtypes too).
    ulps : int or dict, default 0
        The largest allowed distance in ulps: one number for everything, or a dict from key
        (``"param"`` or a state key such as ``"exp_avg"``; ``"*"`` for the rest) to a bound.
        Missing keys are 0: bit-identical.
    steps : int, default 30
    groups : sequence of dict, default ({}, {"lr": 0.01})
        Per-group overrides of the hyper-parameters; with two, the first group holds the
        first two parameters and the second the rest.
    layouts : list of (shape, view), default DEFAULT_LAYOUTS
    mode : {"parameter", "ndarray"}
        gradclip.Parameter objects with ``.grad``, or plain ndarrays stepped with ``grads=``.
    save_at : int, optional
        After this many steps (default ``steps // 2``; negative: never), both sides continue
        with a fresh optimizer that has loaded a deep copy of the old one's ``state_dict()``.
    seed : int
        Of the gradients (the parameters use ``seed`` too).
    grad_scale : float, default 1
        Standard deviation of the gradients.
    resync : bool, default False
        After each comparison, copy torch's parameters and state into gradclip's, so that the
        measured distances are those of one step.
    stepper : callable, optional
        ``stepper(side, opt, params, grads, mode)`` with side ``"gradclip"`` or ``"torch"``
        performs one step (default: set the gradients, call ``opt.step()``); for closures.
    exact_sqrt : bool, default False
        Run torch's step with ``Tensor.sqrt``/``sqrt_`` replaced by NumPy's correctly rounded
        square root (see :func:`correctly_rounded_sqrt`): torch's own CPU ``sqrt`` is not
        correctly rounded, gradclip's is, so this isolates every other difference.

    Returns
    -------
    dict
        The largest ulp distance seen per key over all steps and parameters.
    """
    gradclip_cls = gradclip_cls or getattr(optim, name)
    torch_cls = torch_cls or getattr(torch.optim, name)
    stepper = stepper or _default_stepper
    save_at = steps // 2 if save_at is None else save_at
    torch_kwargs = {**kwargs, **(torch_kwargs or {})}

    arrays, tensors = make_problem(dtype, layouts, seed)
    params = [Parameter(a) for a in arrays] if mode == "parameter" else list(arrays)
    opt = gradclip_cls(_groups(params, groups), **kwargs)
    topt = torch_cls(_groups(tensors, groups), **torch_kwargs)
    worst = _Worst(ulps)
    _compare_groups(opt.state_dict(), topt.state_dict(), "after construction")
    _compare_all(opt, topt, arrays, params, tensors, worst, "after construction")

    for step, grads in enumerate(gradient_schedule(arrays, steps, seed + 1, grad_scale)):
        if step == save_at:
            sd, tsd = copy.deepcopy(opt.state_dict()), copy.deepcopy(topt.state_dict())
            _compare_groups(sd, tsd, f"state_dict after {step} steps")
            opt = gradclip_cls(_groups(params, groups), **kwargs)
            topt = torch_cls(_groups(tensors, groups), **torch_kwargs)
            opt.load_state_dict(sd)
            topt.load_state_dict(tsd)
            _compare_all(opt, topt, arrays, params, tensors, worst, f"loaded after {step} steps")
        if exact_sqrt:
            with correctly_rounded_sqrt():
                stepper("torch", topt, tensors, grads, mode)
        else:
            stepper("torch", topt, tensors, grads, mode)
        stepper("gradclip", opt, params, grads, mode)
        _compare_all(opt, topt, arrays, params, tensors, worst, f"step {step}")
        if resync:
            _resync(opt, topt, arrays, params, tensors)
    return worst.worst


def check_clip_and_step(
    name: str,
    kwargs: dict,
    dtype: Any,
    *,
    max_norm: float = 1.0,
    norm_type: float = 2.0,
    steps: int = 10,
    groups: Sequence[dict] = ({}, {"lr": 0.01}),
    layouts=None,
    write_back: bool = True,
    seed: int = 0,
    gradclip_cls: Optional[type] = None,
) -> None:
    """Assert ``clip_and_step`` is bit-identical to ``clip_grad_norm_`` then ``step()``.

    Two gradclip optimizers over equal ndarray parameters take the same gradients (scaled so
    that clipping fires on most steps), one through ``clip_grad_norm_`` + ``step(grads=)``, the
    other through ``clip_and_step(grads=)``; parameters, state, returned norms and (with
    ``write_back``) the clipped gradients must agree exactly after every step.
    """
    gradclip_cls = gradclip_cls or getattr(optim, name)
    a1, _ = make_problem(dtype, layouts, seed)
    a2, _ = make_problem(dtype, layouts, seed)  # fresh bases: equal values, no shared memory
    o1 = gradclip_cls(_groups(a1, groups), **kwargs)
    o2 = gradclip_cls(_groups(a2, groups), **kwargs)
    for grads in gradient_schedule(a1, steps, seed + 1, scale=3.0):
        g1 = [None if g is None else g.copy() for g in grads]
        g2 = [None if g is None else g.copy() for g in grads]
        n1 = gradclip.clip_grad_norm_([g for g in g1 if g is not None], max_norm, norm_type)
        o1.step(grads=g1)
        n2 = o2.clip_and_step(max_norm, norm_type, grads=g2, write_back=write_back)
        assert n1.dtype == n2.dtype and (n1 == n2 or (np.isnan(n1) and np.isnan(n2))), (n1, n2)
        for i, (x, y) in enumerate(zip(a1, a2)):
            np.testing.assert_array_equal(x, y, err_msg=f"param {i}")
            s1, s2 = o1.state.get(x, {}), o2.state.get(y, {})
            assert list(s1) == list(s2)
            for key in s1:
                _assert_same(s1[key], s2[key], f"state[{key!r}] of param {i}")
        if write_back:
            for i, (x, y) in enumerate(zip(g1, g2)):
                if x is not None:
                    np.testing.assert_array_equal(x, y, err_msg=f"grad {i}")


def _assert_same(x: Any, y: Any, what: str) -> None:
    if isinstance(x, np.ndarray):
        assert isinstance(y, np.ndarray) and x.dtype == y.dtype, what
        np.testing.assert_array_equal(x, y, err_msg=what)
    elif isinstance(x, (list, tuple)):
        assert len(x) == len(y), what
        for i, (u, v) in enumerate(zip(x, y)):
            _assert_same(u, v, f"{what}[{i}]")
    else:
        assert x == y or (x != x and y != y), what
