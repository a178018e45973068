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
    # (name, key of run.py's result, bound, higher is better): this row's targets; when empty
    # run.py applies issue 11's rules by workload and operation.
    targets: list[tuple[str, str, float, bool]] = field(default_factory=list)
    issue: str = "11"  # the issue that asked for the row (set by all_cases)
    data: dict[str, object] = field(default_factory=dict)  # what tests look into (optimizer rows)

    @property
    def nbytes(self) -> int:
        return self.n_elements * np.dtype(self.dtype).itemsize


TORCH_CLIP_VARIANTS = {"torch foreach=None": None, "torch foreach=False": False, "torch foreach=True": True}


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


# --- case builders ----------------------------------------------------------------------------


TENSORS_NOTE = ("tensors: gradclip called on the torch.nn.Parameters (get_total_norm: on their .grad tensors) "
                "that torch's columns get, described through DLPack's C exchange API without copies; 'gradclip ndarray': "
                "on the same memory as ndarrays")


def clip_case(workload: str, op: str, dtype: str, quick: bool, on_tensors: bool = False) -> Case:
    """A clipping function on a workload's gradients. With `on_tensors` (issue 16) gradclip is
    called on the same torch objects as torch (Parameters whose .grad shares the arrays'
    memory, or those .grad tensors), and "gradclip ndarray" on the arrays, in place of the
    NumPy loop; the row is "<op> tensors"."""
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
    torch_in = holders  # what torch's function takes: parameters, or (get_total_norm) tensors
    if op == "get_total_norm":
        torch_in = tensors
        call = lambda xs: gradclip.get_total_norm(xs)  # noqa: E731
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
        call = lambda xs: gradclip.clip_grad_norm_(xs, max_norm)  # noqa: E731
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.clip_grad_norm_(holders, max_norm, foreach=fe))
        case.impls["numpy"] = lambda: np_clip_grad_norm_(work, max_norm)
        case.traffic = Traffic(read=nb, rw=2 * nb, formula="read N, then read+write N (3N)")
        case.notes.append("max_norm = 0.5 x total norm; gradients restored before every call")
    elif op == "clip_grads_with_norm_":
        max_norm, given = 0.5 * total, float(gradclip.get_total_norm(work))
        case.setup = _restorer(work, pristine)
        call = lambda xs: gradclip.clip_grads_with_norm_(xs, max_norm, given)  # noqa: E731
        given_t = torch.tensor(given, dtype=torch.float64 if dt == np.float64 else torch.float32) if torch else None
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.clip_grads_with_norm_(holders, max_norm, given_t, foreach=fe))
        case.impls["numpy"] = lambda: [np.multiply(g, min(max_norm / (given + 1e-6), 1.0), out=g) for g in work]
        case.traffic = Traffic(read=0, rw=2 * nb, formula="read+write N (2N)")
    elif op == "clip_grad_value_":
        clip_value = 0.05  # about 60 % of N(0, 0.1^2) values are clamped
        case.setup = _restorer(work, pristine)
        call = lambda xs: gradclip.clip_grad_value_(xs, clip_value)  # noqa: E731
        for name, fe in variants.items():
            case.impls[name] = (lambda fe=fe: torch.nn.utils.clip_grad_value_(holders, clip_value, foreach=fe))
        case.impls["numpy"] = lambda: np_clip_grad_value_(work, clip_value)
        case.traffic = Traffic(read=0, rw=2 * nb, formula="read+write N (2N)")
    else:
        raise ValueError(op)
    if not on_tensors:
        case.impls["gradclip"] = lambda: call(work)
        return case
    case.op = f"{op} tensors"
    del case.impls["numpy"]
    case.impls["gradclip ndarray"] = lambda: call(work)
    if torch is None:
        case.unavailable["gradclip"] = TORCH_MISSING
    else:
        case.impls["gradclip"] = lambda: call(torch_in)
        if op in ("get_total_norm", "clip_grad_norm_"):  # both return the total (the setup restores)
            got = float(call(torch_in))
            if not math.isclose(got, total, rel_tol=1e-2):
                case.notes.append(f"WARNING: gradclip on tensors {got} != float64 reference {total}")
    case.targets = [("vs torch", "torch_best_over_gradclip", 1.0, True)]  # issue 16: faster than torch
    case.notes.append(TENSORS_NOTE)
    return case


SHARED_CONTEXT = "after matmul, shared BLAS threads"


def blas_sharing_available() -> bool:
    """Whether gradclip.share_blas_threads works here (an OpenBLAS with the threads callback)."""
    try:
        gradclip.share_blas_threads(False)
    except RuntimeError:
        return False
    return True


def training_loop(case: Case, quick: bool, shared: bool = False) -> Case:
    """The same case inside a training loop: a matmul of a realistic size right before every
    timed call (NumPy's, so OpenBLAS, for gradclip and the NumPy loop; torch's for torch), whose
    threads are still spinning when the call starts. Nobody waits for them to sleep. `shared`:
    the row runs with gradclip.share_blas_threads() on (run.py turns it on for the row's rounds
    only), so NumPy's matmuls run on gradclip's threads, for gradclip's samples and the NumPy
    loop's alike; torch's matmul is not OpenBLAS's and does not change."""
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
    case.context = SHARED_CONTEXT if shared else "after matmul"
    case.notes.append(f"after matmul: a ({m}x{k}) @ ({k}x{n}) float32 matmul right before every timed call")
    if shared:
        case.notes.append("shared BLAS threads: gradclip.share_blas_threads() on during the row "
                          "(NumPy's matmuls on gradclip's threads)")
    return case


def all_cases(quick: bool, workloads: set[str], ops: set[str] | None, issues: set[str] | None = None,
              every_workload: bool = False) -> Iterator[Callable[[], Case]]:
    """Case factories in run order; each builds its arrays when called. `ops` keeps the rows
    whose operation contains one of its strings, `issues` those of the issues named (11: the
    performance targets; 12: more optimizers; 14: beyond torch; 16: torch tensors). A quick
    run (CI's smoke test) takes issue 12's optimizers on W4 only, the same code as on W2 and
    W3, unless `every_workload`."""
    from cases_beyond import beyond_plan  # issue 14's features (return_info, AGC, per-example)
    from cases_optim import SPEC_BY_LABEL, SPECS, optim_plan

    plan: list[tuple[str, str, str, str, Callable[[], Case]]] = []  # (issue, workload, op, dtype, factory)

    def add(issue: str, rows: list[tuple[str, str, str, Callable[[], Case]]]) -> None:
        plan.extend((issue, *row) for row in rows)

    clip_ops = ("get_total_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_")
    for w in ("W1", "W2"):
        for dtype in ("float32", "float16", "float64"):
            add("11", [(w, op, dtype, lambda w=w, op=op, dtype=dtype: clip_case(w, op, dtype, quick)) for op in clip_ops])
    for w in ("W1", "W2"):  # inside a training loop
        add("11", [(w, op, "float32", lambda w=w, op=op: training_loop(clip_case(w, op, "float32", quick), quick))
                   for op in clip_ops])
    if blas_sharing_available():  # the same, with NumPy's matmuls on gradclip's threads
        for w in ("W1", "W2"):
            add("11", [(w, op, "float32",
                        lambda w=w, op=op: training_loop(clip_case(w, op, "float32", quick), quick, shared=True))
                       for op in clip_ops])
    issue11 = [SPEC_BY_LABEL[k] for k in ("SGD", "Adam", "AdamW")]
    for w, dtype in (("W2", "float32"), ("W3", "float32"), ("W4", "float64")):
        if w != "W2":  # W2's clipping rows are above, for every dtype
            add("11", [(w, op, dtype, lambda w=w, op=op, dtype=dtype: clip_case(w, op, dtype, quick)) for op in clip_ops])
        add("11", optim_plan(issue11, w, dtype, quick, fused=False) + optim_plan(issue11[:2], w, dtype, quick, fused=True))
        add("12", optim_plan(issue11[2:], w, dtype, quick, fused=True))  # clip+AdamW: added with issue 12
    add("14", beyond_plan(quick))
    issue12 = [s for s in SPECS if s.issue == "12"]
    for w, dtype in (("W2", "float32"), ("W3", "float32"), ("W4", "float64")):
        if quick and w != "W4" and not every_workload:
            continue
        add("12", optim_plan(issue12, w, dtype, quick, fused=False) + optim_plan(issue12, w, dtype, quick, fused=True))
    for w in ("W1", "W2", "W3"):  # issue 16: gradclip on torch tensors, float32 as torch's default
        add("16", [(w, f"{op} tensors", "float32", lambda w=w, op=op: clip_case(w, op, "float32", quick, on_tensors=True))
                   for op in ("get_total_norm", "clip_grad_norm_", "clip_grad_value_")])
    for issue, w, op, _dtype, factory in plan:
        if w in workloads and (ops is None or any(o in op for o in ops)) and (issues is None or issue in issues):
            yield _tagged(issue, factory)


def _tagged(issue: str, factory: Callable[[], Case]) -> Callable[[], Case]:
    def build() -> Case:
        case = factory()
        case.issue = issue
        return case

    return build
