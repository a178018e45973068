"""The workloads, operations and baselines that benchmarks/run.py times.

A case is one (workload, operation, dtype) with the callables to time: gradclip, torch 2.x on
CPU in its variants, a straightforward NumPy version, and for streaming workloads the bandwidth
probes of its limit. Cases are built one at a time and dropped after timing, so only one
workload's arrays are alive at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

try:
    import torch
except ImportError:  # the torch columns then say so
    torch = None

import gradclip

TORCH_MISSING = "not installed"

# ------------------------------------------------------------------------------------------
# Workloads


def _lstm_lm(vocab: int, emb: int, hidden: int, layers: int) -> list[tuple[int, ...]]:
    """Parameter shapes of an embedding + nn.LSTM + linear decoder language model, in
    torch's order (weight_ih_l*, weight_hh_l*, bias_ih_l*, bias_hh_l*)."""
    shapes: list[tuple[int, ...]] = [(vocab, emb)]
    for layer in range(layers):
        inp = emb if layer == 0 else hidden
        shapes += [(4 * hidden, inp), (4 * hidden, hidden), (4 * hidden,), (4 * hidden,)]
    return shapes + [(vocab, hidden), (vocab,)]


def _min_char_rnn(vocab: int = 65, hidden: int = 100) -> list[tuple[int, ...]]:
    """Karpathy's min-char-rnn: Wxh, Whh, Why, bh, by (vocab 65 = tiny Shakespeare)."""
    return [(hidden, vocab), (hidden, hidden), (vocab, hidden), (hidden, 1), (vocab, 1)]


WORKLOADS: dict[str, dict[str, object]] = {
    "W1": {
        "title": "one 2^26-element gradient",
        "full": [(1 << 26,)],
        "quick": [(1 << 18,)],
    },
    "W2": {
        "title": "LSTM LM (vocab 10k, emb 512, hidden 1024, 2 layers)",
        "full": _lstm_lm(10_000, 512, 1024, 2),
        "quick": _lstm_lm(500, 32, 64, 2),
    },
    "W3": {
        "title": "1000 arrays of 64",
        "full": [(64,)] * 1000,
        "quick": [(64,)] * 200,
    },
    "W4": {
        "title": "min-char-rnn (hidden 100, vocab 65)",
        "full": _min_char_rnn(),
        "quick": _min_char_rnn(),
    },
}


def workload_shapes(name: str, quick: bool) -> list[tuple[int, ...]]:
    return WORKLOADS[name]["quick" if quick else "full"]  # type: ignore[return-value]


def random_arrays(shapes: list[tuple[int, ...]], dtype: np.dtype, seed: int, scale: float = 0.1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    gen_dtype = np.float64 if dtype == np.float64 else np.float32
    out = []
    for shape in shapes:
        a = rng.standard_normal(shape, dtype=gen_dtype)
        a *= scale
        out.append(a.astype(dtype, copy=False))
    return out


# ------------------------------------------------------------------------------------------
# Cases


@dataclass
class Traffic:
    """Bytes an operation must move: `read` only read, `rw` read and written in place
    (counting reads plus writes). Roofline time = read / read_bw + rw / rw_bw."""

    read: int
    rw: int
    formula: str


@dataclass
class Case:
    workload: str
    op: str
    dtype: str
    n_arrays: int
    n_elements: int
    impls: dict[str, Callable[[], object]]
    setup: Callable[[], None] | None = None
    traffic: Traffic | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    context: str = "alone"  # or "after matmul": see training_loop()
    before: dict[str, Callable[[], object]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return self.n_elements * np.dtype(self.dtype).itemsize


TORCH_CLIP_VARIANTS = {"torch foreach=None": None, "torch foreach=False": False, "torch foreach=True": True}
TORCH_OPTIM_VARIANTS = {
    "torch foreach=False": {"foreach": False},
    "torch foreach=True": {"foreach": True},
    "torch fused": {"fused": True},
}
SGD_HP = {"lr": 1e-3, "momentum": 0.9}
ADAM_HP = {"lr": 1e-3}
ADAMW_HP = {"lr": 1e-3, "weight_decay": 1e-2}


def _grad_holders(tensors: list[torch.Tensor]) -> list[torch.nn.Parameter]:
    """torch's clip functions read `.grad` of parameters: zero-stride stand-ins whose grads are
    the (NumPy-shared) gradient tensors."""
    params = []
    for t in tensors:
        p = torch.nn.Parameter(torch.zeros((), dtype=t.dtype).expand(t.shape))
        p.grad = t
        params.append(p)
    return params


def _restorer(targets: list[np.ndarray], sources: list[np.ndarray]) -> Callable[[], None]:
    def restore() -> None:
        for dst, src in zip(targets, sources):
            np.copyto(dst, src)

    return restore


# --- NumPy baselines: the loops people write ----------------------------------------------


def np_total_norm(grads: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.linalg.norm(_no_half(g))) ** 2 for g in grads))


def _no_half(g: np.ndarray) -> np.ndarray:
    # np.linalg.norm of float16 squares and sums in float16 and overflows to inf (for W1 at
    # once); anyone who noticed would upcast first, as here.
    return g.astype(np.float32) if g.dtype == np.float16 else g


def np_clip_grad_norm_(grads: list[np.ndarray], max_norm: float) -> float:
    total = np_total_norm(grads)
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g *= coef
    return total


def np_clip_grad_value_(grads: list[np.ndarray], clip_value: float) -> None:
    for g in grads:
        np.clip(g, -clip_value, clip_value, out=g)


class NumpySGD:
    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], lr: float, momentum: float) -> None:
        self.params, self.grads, self.lr, self.momentum = params, grads, lr, momentum
        self.bufs: list[np.ndarray | None] = [None] * len(params)

    def step(self) -> None:
        for i, (p, g) in enumerate(zip(self.params, self.grads)):
            buf = self.bufs[i]
            if buf is None:
                buf = self.bufs[i] = g.copy()
            else:
                buf *= self.momentum
                buf += g
            p -= self.lr * buf


class NumpyAdam:
    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray], lr: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.params, self.grads, self.lr, self.betas, self.eps = params, grads, lr, betas, eps
        self.weight_decay = weight_decay  # decoupled (AdamW)
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v):
            if self.weight_decay:
                p *= 1 - self.lr * self.weight_decay
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            p -= (self.lr / bc1) * m / (np.sqrt(v / bc2) + self.eps)


# --- gradclip's optimizers, written concurrently: adapt to whichever form exists ----------


def gradclip_optimizer(kind: str, params: list[np.ndarray], grads: list[np.ndarray], hp: dict):
    """(step, optimizer, grads it reads) for gradclip.optim.<kind>, or (None, reason)."""
    try:
        import gradclip.optim as goptim

        cls = getattr(goptim, kind)
    except (ImportError, AttributeError) as exc:
        return None, f"n/a (not available: {type(exc).__name__})"
    errors = []
    try:  # torch's form: Parameters carrying .grad
        wrapped = []
        for p, g in zip(params, grads):
            q = gradclip.Parameter(p)
            q.grad = g
            wrapped.append(q)
        opt = cls(wrapped, **hp)
        opt.step()
        return (opt.step, opt, [q.grad for q in wrapped]), None
    except Exception as exc:  # noqa: BLE001 - any failure means "this form is not there"
        errors.append(f"Parameter form: {type(exc).__name__}: {exc}")
    try:  # plain arrays, gradients passed to step()
        opt = cls(params, **hp)
        opt.step(grads=grads)
        return ((lambda: opt.step(grads=grads)), opt, grads), None
    except Exception as exc:  # noqa: BLE001
        errors.append(f"array form: {type(exc).__name__}: {exc}")
    return None, "n/a (" + "; ".join(errors)[:200] + ")"


# --- case builders ----------------------------------------------------------------------------


def clip_case(workload: str, op: str, dtype: str, quick: bool) -> Case:
    dt = np.dtype(dtype)
    pristine = random_arrays(workload_shapes(workload, quick), dt, seed=1)
    work = [a.copy() for a in pristine]
    tensors = [torch.from_numpy(a) for a in work] if torch else []
    holders = _grad_holders(tensors) if torch else []
    variants = TORCH_CLIP_VARIANTS if torch else {}
    n = sum(a.size for a in work)
    nb = n * dt.itemsize
    total = np_total_norm([a.astype(np.float64) for a in pristine])
    case = Case(workload, op, dtype, len(work), n, impls={})
    if torch is None:
        case.unavailable.update({name: TORCH_MISSING for name in TORCH_CLIP_VARIANTS})

    if op == "get_total_norm":
        case.impls["gradclip"] = lambda: gradclip.get_total_norm(work)
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.get_total_norm(tensors, foreach=fe))
        case.impls["numpy"] = lambda: np_total_norm(work)
        case.traffic = Traffic(read=nb, rw=0, formula="read N")
        got = float(gradclip.get_total_norm(work))
        if not math.isclose(got, total, rel_tol=1e-2):
            case.notes.append(f"WARNING: gradclip norm {got} != float64 reference {total}")
    elif op == "clip_grad_norm_":
        # Clipping regime: max_norm is half the norm, and every call starts from the pristine
        # gradients (restored untimed), so each call scales and values never drift to denormals.
        max_norm = 0.5 * total
        case.setup = _restorer(work, pristine)
        case.impls["gradclip"] = lambda: gradclip.clip_grad_norm_(work, max_norm)
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.clip_grad_norm_(holders, max_norm, foreach=fe))
        case.impls["numpy"] = lambda: np_clip_grad_norm_(work, max_norm)
        case.traffic = Traffic(read=nb, rw=2 * nb, formula="read N, then read+write N (3N)")
        case.notes.append("max_norm = 0.5 x total norm; gradients restored before every call")
    elif op == "clip_grads_with_norm_":
        max_norm, given = 0.5 * total, float(gradclip.get_total_norm(work))
        case.setup = _restorer(work, pristine)
        case.impls["gradclip"] = lambda: gradclip.clip_grads_with_norm_(work, max_norm, given)
        given_t = torch.tensor(given, dtype=torch.float64 if dt == np.float64 else torch.float32) if torch else None
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.clip_grads_with_norm_(holders, max_norm, given_t, foreach=fe))
        case.impls["numpy"] = lambda: [np.multiply(g, min(max_norm / (given + 1e-6), 1.0), out=g) for g in work]
        case.traffic = Traffic(read=0, rw=2 * nb, formula="read+write N (2N)")
    elif op == "clip_grad_value_":
        clip_value = 0.05  # about 60 % of N(0, 0.1^2) values are clamped
        case.setup = _restorer(work, pristine)
        case.impls["gradclip"] = lambda: gradclip.clip_grad_value_(work, clip_value)
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.clip_grad_value_(holders, clip_value, foreach=fe))
        case.impls["numpy"] = lambda: np_clip_grad_value_(work, clip_value)
        case.traffic = Traffic(read=0, rw=2 * nb, formula="read+write N (2N)")
    else:
        raise ValueError(op)
    return case


def optim_case(workload: str, kind: str, dtype: str, quick: bool, fused_clip: bool) -> Case:
    """An optimizer step (kind 'SGD' with momentum 0.9, or 'Adam'), or with fused_clip the
    fused clip_and_step(max_norm) against clip_grad_norm_ followed by step()."""
    dt = np.dtype(dtype)
    shapes = workload_shapes(workload, quick)
    # All implementations update the same parameter arrays (each keeps its own optimizer
    # state): the values drift differently than in a real run, the work per step does not.
    params = random_arrays(shapes, dt, seed=2, scale=1.0)
    pristine = random_arrays(shapes, dt, seed=3)
    grads = [g.copy() for g in pristine]
    tparams = []
    for p, g in zip(params, grads) if torch else ():
        tp = torch.nn.Parameter(torch.from_numpy(p))
        tp.grad = torch.from_numpy(g)
        tparams.append(tp)
    torch_variants = TORCH_OPTIM_VARIANTS if torch else {}
    n = sum(a.size for a in grads)
    nb = n * dt.itemsize
    hp = {"SGD": SGD_HP, "Adam": ADAM_HP, "AdamW": ADAMW_HP}[kind]
    torch_cls = None if torch is None else getattr(torch.optim, kind)
    np_cls = NumpySGD if kind == "SGD" else NumpyAdam
    state_rw = 4 * nb if kind == "SGD" else 6 * nb  # p, buf  |  p, exp_avg, exp_avg_sq
    op = f"{kind} step"  # SGD: momentum 0.9 (SGD_HP)
    if fused_clip:
        op = f"clip+{kind} fused"
    case = Case(workload, op, dtype, len(grads), n, impls={})
    if torch is None:
        case.unavailable.update({name: TORCH_MISSING for name in TORCH_OPTIM_VARIANTS})

    # (array to restore before each call, its pristine values)
    restore = list(zip(grads, pristine))
    got, reason = gradclip_optimizer(kind, params, grads, hp)
    max_norm = 0.5 * np_total_norm([g.astype(np.float64) for g in pristine])
    if not fused_clip:
        if got is None:
            case.unavailable["gradclip"] = reason
        else:
            case.impls["gradclip"] = got[0]
        for name, kw in torch_variants.items():
            opt = torch_cls(tparams, **hp, **kw)
            opt.step()
            case.impls[name] = opt.step
        npopt = np_cls(params, grads, **hp)
        npopt.step()
        case.impls["numpy"] = npopt.step
        case.traffic = Traffic(read=nb, rw=state_rw, formula=f"read g (N), read+write {'p, buf' if kind == 'SGD' else 'p, m, v'} ({state_rw // nb}N)")
        return case

    case.notes.append("clipping regime (max_norm = 0.5 x norm); gradients restored before every call")
    if got is None:
        case.unavailable["gradclip"] = reason
    elif not hasattr(got[1], "clip_and_step"):
        case.unavailable["gradclip"] = "n/a (optimizer has no clip_and_step yet)"
    else:
        gc_opt = got[1]
        case.impls["gradclip"] = lambda: gc_opt.clip_and_step(max_norm)
        got2, _ = gradclip_optimizer(kind, params, grads, hp)
        step2, _, grads2 = got2
        for seen in (got[2], grads2):  # in case gradclip.Parameter copies what .grad is given
            restore += [(g, src) for g, src in zip(seen, pristine) if all(g is not t for t, _ in restore)]
        case.impls["gradclip unfused"] = lambda: (gradclip.clip_grad_norm_(grads2, max_norm), step2())
    for name, kw in torch_variants.items():
        opt = torch_cls(tparams, **hp, **kw)
        opt.step()
        fe = kw.get("foreach")
        case.impls[name] = (lambda opt=opt, fe=fe: (torch.nn.utils.clip_grad_norm_(tparams, max_norm, foreach=fe), opt.step()))
    npopt = np_cls(params, grads, **hp)
    npopt.step()
    case.impls["numpy"] = lambda: (np_clip_grad_norm_(grads, max_norm), npopt.step())
    case.setup = _restorer([t for t, _ in restore], [src for _, src in restore])
    case.traffic = Traffic(read=2 * nb, rw=state_rw, formula=f"read g twice (norm, step) (2N), read+write state ({state_rw // nb}N)")
    return case


def training_loop(case: Case, quick: bool) -> Case:
    """The same case inside a training loop: a matmul of a realistic size right before every
    timed call (NumPy's, so OpenBLAS, for gradclip and the NumPy loop; torch's for torch), whose
    threads are still spinning when the call starts. Nobody waits for them to sleep."""
    rng = np.random.default_rng(0)
    m, k, n = (64, 256, 256) if quick else (256, 1024, 1024)  # an LSTM layer's gates, batch 256
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), dtype=np.float32)
    np_matmul = lambda: np.matmul(a, b, out=out)  # noqa: E731
    before: dict[str, Callable[[], object]] = {}
    if torch is not None:
        ta, tb, tout = torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out)
        torch_matmul = lambda: torch.matmul(ta, tb, out=tout)  # noqa: E731
    for name in case.impls:
        before[name] = torch_matmul if name.startswith("torch") else np_matmul
    case.before = before
    case.context = "after matmul"
    case.notes.append(f"after matmul: a ({m}x{k}) @ ({k}x{n}) float32 matmul right before every timed call")
    return case


def all_cases(quick: bool, workloads: set[str], ops: set[str] | None) -> Iterator[Callable[[], Case]]:
    """Case factories in run order; each builds its arrays when called."""
    plan: list[tuple[str, str, str, Callable[[], Case]]] = []
    clip_ops = ("get_total_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_")
    for dtype in ("float32", "float16", "float64"):
        for op in clip_ops:
            plan.append(("W1", op, dtype, lambda op=op, dtype=dtype: clip_case("W1", op, dtype, quick)))
    for dtype in ("float32", "float16", "float64"):
        for op in clip_ops:
            plan.append(("W2", op, dtype, lambda op=op, dtype=dtype: clip_case("W2", op, dtype, quick)))
    for w in ("W1", "W2"):  # inside a training loop
        for op in clip_ops:
            plan.append((w, op, "float32", lambda w=w, op=op: training_loop(clip_case(w, op, "float32", quick), quick)))
    for w, dtype in (("W2", "float32"), ("W3", "float32"), ("W4", "float64")):
        if w != "W2":  # W2's clipping rows are above, for every dtype
            for op in clip_ops:
                plan.append((w, op, dtype, lambda w=w, op=op, dtype=dtype: clip_case(w, op, dtype, quick)))
        for kind in ("SGD", "Adam", "AdamW"):
            plan.append((w, f"{kind} step", dtype, lambda w=w, k=kind, d=dtype: optim_case(w, k, d, quick, False)))
        for kind in ("SGD", "Adam"):
            plan.append((w, f"clip+{kind} fused", dtype, lambda w=w, k=kind, d=dtype: optim_case(w, k, d, quick, True)))
    from cases_beyond import beyond_plan  # issue 14's features (return_info, AGC, per-example)

    plan += beyond_plan(quick)
    for w, op, _dtype, factory in plan:
        if w in workloads and (ops is None or any(o in op for o in ops)):
            yield factory
