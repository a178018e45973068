"""Optimizer benchmark cases: each elementwise optimizer's step() and fused clip_and_step().

Issue 11 asked for SGD (momentum 0.9), Adam and AdamW; issue 12 adds Adagrad, RMSprop (plain,
and centered with momentum), Adadelta, Adamax, NAdam, RAdam, ASGD and Rprop, on W2, W3 and W4.
One :class:`OptimSpec` says everything a row needs:

- the hyper-parameters, given alike to gradclip, to torch and to the NumPy loop;
- the state arrays the step reads and writes (each the size of the parameter), which give
  the bytes the step must move (see :func:`byte_table_lines`);
- the steps taken before timing, so that the timed steps run in the optimizer's steady
  regime (RAdam rectified, ASGD averaging);
- the NumPy loop computing the same update. tests/test_bench_baselines.py checks, on tiny
  arrays, that the NumPy loop and every torch variant built here take the same steps as
  gradclip, and that the state arrays counted here are the ones the optimizers keep.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

try:
    import torch
except ImportError:  # the torch columns then say so
    torch = None

import gradclip
from cases import (TORCH_MISSING, Case, Traffic, _restorer, np_clip_grad_norm_, np_total_norm, random_arrays,
                   workload_shapes)

TORCH_OPTIM_VARIANTS = {
    "torch foreach=False": {"foreach": False},  # the single-tensor for-loop
    "torch foreach=True": {"foreach": True},
    "torch fused": {"fused": True},  # SGD, Adam, AdamW and Adagrad have a fused CPU kernel
}

# ------------------------------------------------------------------------------------------
# NumPy baselines: the loops people write (NumPy expressions with their temporaries, in the
# parameters' dtype; the per-step scalars in Python floats, once per step).


class NumpyLoop:
    """One optimizer over parallel lists of parameter and gradient arrays.

    Subclasses set ``state`` (the names of the arrays kept per parameter, zeros unless
    :meth:`initial` says otherwise), compute the step's scalars in :meth:`begin` and update
    one array in :meth:`update`. Every array takes the same number of steps, so one step
    counter ``t`` serves all of them.
    """

    state: tuple[str, ...] = ()

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.params, self.grads, self.t = params, grads, 0
        self.states = [{key: self.initial(key, p) for key in self.state} for p in params]

    def initial(self, key: str, p: np.ndarray) -> np.ndarray:
        return np.zeros_like(p)

    def begin(self) -> None:
        """The step's scalars (bias corrections, schedules), after ``t`` was advanced."""

    def update(self, p: np.ndarray, g: np.ndarray, s: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def end(self) -> None:
        """After every array was updated (ASGD's schedule for the next step)."""

    def step(self) -> None:
        self.t += 1
        self.begin()
        for p, g, s in zip(self.params, self.grads, self.states):
            self.update(p, g, s)
        self.end()


class NumpySGD(NumpyLoop):
    state = ("momentum_buffer",)  # zeros: the first step leaves buf = g, as torch's clone

    def __init__(self, params, grads, lr: float = 1e-3, momentum: float = 0.0) -> None:
        self.lr, self.momentum = lr, momentum
        super().__init__(params, grads)

    def update(self, p, g, s):
        buf = s["momentum_buffer"]
        buf *= self.momentum
        buf += g
        p -= self.lr * buf


class NumpyAdam(NumpyLoop):
    state = ("exp_avg", "exp_avg_sq")
    decoupled = False  # AdamW: decay the parameter, not the gradient

    def __init__(self, params, grads, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        super().__init__(params, grads)

    def begin(self):
        b1, b2 = self.betas
        self.bc1, self.bc2 = 1 - b1**self.t, 1 - b2**self.t

    def update(self, p, g, s):
        b1, b2 = self.betas
        m, v = s["exp_avg"], s["exp_avg_sq"]
        if self.weight_decay and self.decoupled:
            p *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        p -= (self.lr / self.bc1) * m / (np.sqrt(v / self.bc2) + self.eps)


class NumpyAdamW(NumpyAdam):
    decoupled = True


class NumpyAdagrad(NumpyLoop):
    state = ("sum",)

    def __init__(self, params, grads, lr: float = 1e-2, lr_decay: float = 0.0, eps: float = 1e-10) -> None:
        self.lr, self.lr_decay, self.eps = lr, lr_decay, eps
        super().__init__(params, grads)

    def begin(self):
        self.clr = self.lr / (1 + (self.t - 1) * self.lr_decay)

    def update(self, p, g, s):
        acc = s["sum"]
        acc += g * g
        p -= self.clr * g / (np.sqrt(acc) + self.eps)


class NumpyRMSprop(NumpyLoop):
    def __init__(self, params, grads, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False) -> None:
        self.lr, self.alpha, self.eps, self.momentum, self.centered = lr, alpha, eps, momentum, centered
        self.state = ("square_avg",) + ("grad_avg",) * centered + ("momentum_buffer",) * (momentum > 0)
        super().__init__(params, grads)

    def update(self, p, g, s):
        v = s["square_avg"]
        v *= self.alpha
        v += (1 - self.alpha) * (g * g)
        if self.centered:
            a = s["grad_avg"]
            a *= self.alpha
            a += (1 - self.alpha) * g
            avg = np.sqrt(v - a * a) + self.eps
        else:
            avg = np.sqrt(v) + self.eps
        if self.momentum > 0:
            buf = s["momentum_buffer"]
            buf *= self.momentum
            buf += g / avg
            p -= self.lr * buf
        else:
            p -= self.lr * g / avg


class NumpyAdadelta(NumpyLoop):
    state = ("square_avg", "acc_delta")

    def __init__(self, params, grads, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6) -> None:
        self.lr, self.rho, self.eps = lr, rho, eps
        super().__init__(params, grads)

    def update(self, p, g, s):
        v, u = s["square_avg"], s["acc_delta"]
        v *= self.rho
        v += (1 - self.rho) * (g * g)
        delta = np.sqrt(u + self.eps) / np.sqrt(v + self.eps) * g
        u *= self.rho
        u += (1 - self.rho) * (delta * delta)
        p -= self.lr * delta


class NumpyAdamax(NumpyLoop):
    state = ("exp_avg", "exp_inf")

    def __init__(self, params, grads, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        super().__init__(params, grads)

    def begin(self):
        self.clr = self.lr / (1 - self.betas[0] ** self.t)

    def update(self, p, g, s):
        b1, b2 = self.betas
        m, e = s["exp_avg"], s["exp_inf"]
        m *= b1
        m += (1 - b1) * g
        np.maximum(e * b2, np.abs(g) + self.eps, out=e)
        p -= self.clr * m / e


class NumpyNAdam(NumpyLoop):
    state = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, grads, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, momentum_decay: float = 4e-3) -> None:
        self.lr, self.betas, self.eps, self.momentum_decay = lr, betas, eps, momentum_decay
        self.mu_product = 1.0
        super().__init__(params, grads)

    def begin(self):
        b1, b2 = self.betas
        mu = b1 * (1 - 0.5 * 0.96 ** (self.t * self.momentum_decay))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((self.t + 1) * self.momentum_decay))
        self.mu_product *= mu
        self.c_grad = self.lr * (1 - mu) / (1 - self.mu_product)
        self.c_avg = self.lr * mu_next / (1 - self.mu_product * mu_next)
        self.bc2 = 1 - b2**self.t

    def update(self, p, g, s):
        b1, b2 = self.betas
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        denom = np.sqrt(v / self.bc2) + self.eps
        p -= (self.c_grad * g + self.c_avg * m) / denom


class NumpyRAdam(NumpyLoop):
    state = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, grads, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        self.lr, self.betas, self.eps = lr, betas, eps
        super().__init__(params, grads)

    def begin(self):
        b1, b2 = self.betas
        self.bc1, self.bc2 = 1 - b1**self.t, 1 - b2**self.t
        rho_inf = 2 / (1 - b2) - 1
        rho_t = rho_inf - 2 * self.t * b2**self.t / self.bc2
        self.rect = None  # the first steps (rho_t <= 5): unrectified, no second moment
        if rho_t > 5:
            self.rect = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5

    def update(self, p, g, s):
        b1, b2 = self.betas
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        if self.rect is None:
            p -= (self.lr / self.bc1) * m
        else:
            p -= (self.lr * self.rect * self.bc2**0.5 / self.bc1) * m / (np.sqrt(v) + self.eps)


class NumpyASGD(NumpyLoop):
    state = ("ax",)

    def __init__(self, params, grads, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6) -> None:
        self.lr, self.lambd, self.alpha, self.t0 = lr, lambd, alpha, t0
        self.eta, self.mu = np.float32(lr), np.float32(1.0)  # float32, as torch's state tensors
        super().__init__(params, grads)

    def update(self, p, g, s):
        eta = float(self.eta)
        p *= 1 - self.lambd * eta
        p -= eta * g
        if self.mu != 1:
            s["ax"] += (p - s["ax"]) * float(self.mu)
        else:
            np.copyto(s["ax"], p)

    def end(self):
        self.eta = np.float32(self.lr / (1 + self.lambd * self.lr * self.t) ** self.alpha)
        self.mu = np.float32(1 / max(1, self.t - self.t0))


class NumpyRprop(NumpyLoop):
    state = ("prev", "step_size")

    def __init__(self, params, grads, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50)) -> None:
        self.lr, self.etas, self.step_sizes = lr, etas, step_sizes
        super().__init__(params, grads)

    def initial(self, key, p):
        return np.full_like(p, self.lr) if key == "step_size" else np.zeros_like(p)

    def update(self, p, g, s):
        prev, size = s["prev"], s["step_size"]
        sign = np.sign(g * prev)
        factor = np.ones_like(p)
        factor[sign > 0] = self.etas[1]
        factor[sign < 0] = self.etas[0]
        size *= factor
        np.clip(size, *self.step_sizes, out=size)
        g = np.where(sign < 0, 0, g)  # a sign change: skip this element's step, forget g
        p -= np.sign(g) * size
        np.copyto(prev, g)


# ------------------------------------------------------------------------------------------
# The optimizers benchmarked


@dataclass(frozen=True)
class OptimSpec:
    label: str  # the rows: "<label> step" and "clip+<label> fused"
    kind: str  # the class in gradclip.optim and torch.optim
    hp: dict = field(hash=False)  # the rest are torch's defaults
    state: tuple[str, ...] = ()  # torch's state arrays, each like the parameter, read and written
    numpy: type[NumpyLoop] = NumpyLoop
    issue: str = "12"  # whose targets apply (11: SGD, Adam, AdamW)
    warmup: int = 1  # steps before timing; the timed steps follow
    regime: str = ""  # what the warm-up is for

    @property
    def limit_max(self) -> float:
        return 1.10 if self.issue == "11" else 1.15

    def op(self, fused: bool) -> str:
        return f"clip+{self.label} fused" if fused else f"{self.label} step"

    def multiples(self, fused: bool) -> tuple[int, int]:
        """(read, read+write) bytes in units of N, the gradients' bytes: g is read (twice with
        the norm pass of clip_and_step); p and every state array are read and written."""
        return (2 if fused else 1), 2 * (1 + len(self.state))

    def traffic(self, nbytes: int, fused: bool) -> Traffic:
        read, rw = self.multiples(fused)
        arrays = ", ".join(("p", *self.state))
        reads = "read g twice (norm, step) (2N)" if fused else "read g (N)"
        return Traffic(read=read * nbytes, rw=rw * nbytes, formula=f"{reads}, read+write {arrays} ({rw}N)")

    def targets(self, workload: str) -> list[tuple[str, str, float, bool]]:
        """(name, result key, bound, higher is better): W2 within limit_max of the memory
        limit; everywhere ahead of torch's fastest variant (issue 12)."""
        ahead = ("vs torch", "torch_best_over_gradclip", 1.0, True)
        return [("limit", "limit_ratio", self.limit_max, False), ahead] if workload == "W2" else [ahead]


SPECS = [
    OptimSpec("SGD", "SGD", {"lr": 1e-3, "momentum": 0.9}, ("momentum_buffer",), NumpySGD, issue="11"),
    OptimSpec("Adam", "Adam", {"lr": 1e-3}, ("exp_avg", "exp_avg_sq"), NumpyAdam, issue="11"),
    OptimSpec("AdamW", "AdamW", {"lr": 1e-3, "weight_decay": 1e-2}, ("exp_avg", "exp_avg_sq"), NumpyAdamW,
              issue="11"),
    OptimSpec("Adagrad", "Adagrad", {"lr": 1e-2}, ("sum",), NumpyAdagrad),
    OptimSpec("RMSprop", "RMSprop", {"lr": 1e-2}, ("square_avg",), NumpyRMSprop),
    OptimSpec("RMSprop c+m", "RMSprop", {"lr": 1e-2, "momentum": 0.9, "centered": True},
              ("square_avg", "grad_avg", "momentum_buffer"), NumpyRMSprop),
    OptimSpec("Adadelta", "Adadelta", {"lr": 1.0}, ("square_avg", "acc_delta"), NumpyAdadelta),
    OptimSpec("Adamax", "Adamax", {"lr": 2e-3}, ("exp_avg", "exp_inf"), NumpyAdamax),
    OptimSpec("NAdam", "NAdam", {"lr": 2e-3}, ("exp_avg", "exp_avg_sq"), NumpyNAdam),
    OptimSpec("RAdam", "RAdam", {"lr": 1e-3}, ("exp_avg", "exp_avg_sq"), NumpyRAdam, warmup=5,
              regime="5 steps first: from step 6 on (rho_t > 5) every step is rectified"),
    # t0=0: averaging from the start, as AWD-LSTM (an LSTM language model, like W2) uses ASGD;
    # with torch's t0=1e6 ax would only be overwritten (ax = p) for a million steps.
    OptimSpec("ASGD", "ASGD", {"lr": 1e-2, "t0": 0.0}, ("ax",), NumpyASGD, warmup=2,
              regime="t0=0 and 2 steps first: from step 3 on mu = 1/(step-1) and ax is averaged"),
    OptimSpec("Rprop", "Rprop", {"lr": 1e-2}, ("prev", "step_size"), NumpyRprop),
]
SPEC_BY_LABEL = {s.label: s for s in SPECS}


def spec_of(op: str) -> OptimSpec | None:
    """The spec of a row's operation ("Adagrad step", "clip+Adagrad fused"), if any."""
    return next((s for s in SPECS for fused in (False, True) if s.op(fused) == op), None)


def _hp_text(hp: dict) -> str:
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hp.items())


def byte_table_lines(specs: list[OptimSpec], n_bytes: int, n_label: str) -> list[str]:
    """One row per optimizer: what its step reads and writes, in N = the gradients' bytes,
    and in bytes for N = n_bytes (the limit of a row is these bytes at the probes' rates)."""
    lines = [
        f"| optimizer | hyper-parameters (others: torch's defaults) | read | read and written | step() "
        f"| clip_and_step() | {n_label}: step / clip_and_step |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in specs:
        (r1, rw), (r2, _) = s.multiples(False), s.multiples(True)
        step, fused = r1 + rw, r2 + rw
        lines.append(
            f"| {s.label} | {_hp_text(s.hp)} | g | {', '.join(('p', *s.state))} | {r1}N + {rw}N = {step}N "
            f"| {r2}N + {rw}N = {fused}N | {step * n_bytes / 1e6:,.0f} MB / {fused * n_bytes / 1e6:,.0f} MB |"
        )
    return lines


# ------------------------------------------------------------------------------------------
# The implementations of one row, also used by tests/test_bench_baselines.py


class Built(NamedTuple):
    """One implementation of a row, after the spec's warm-up steps."""

    step: Callable[[], object]
    opt: object
    grads: list[np.ndarray]  # the gradient arrays it reads
    state: Callable[[], list[dict[str, np.ndarray]]]  # per parameter, its state arrays (not the 0-d scalars)


def _arrays_like(state: dict, p) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in state.items() if tuple(v.shape) == tuple(p.shape) and v.ndim}


def gradclip_optimizer(spec: OptimSpec, params: list[np.ndarray], grads: list[np.ndarray]):
    """(Built, None) for gradclip.optim.<kind>, or (None, why not)."""
    try:
        import gradclip.optim as goptim

        cls = getattr(goptim, spec.kind)
    except (ImportError, AttributeError) as exc:
        return None, f"n/a (not available: {type(exc).__name__})"
    try:  # torch's form: Parameters carrying .grad
        wrapped = []
        for p, g in zip(params, grads):
            q = gradclip.Parameter(p)
            q.grad = g
            wrapped.append(q)
        opt = cls(wrapped, **spec.hp)
        for _ in range(spec.warmup):
            opt.step()
    except Exception as exc:  # noqa: BLE001 - any failure means "not there"
        return None, f"n/a ({type(exc).__name__}: {exc})"[:200]
    return Built(opt.step, opt, [q.grad for q in wrapped],
                 lambda: [_arrays_like(opt.state[q], q.data) for q in wrapped]), None


def torch_parameters(params: list[np.ndarray], grads: list[np.ndarray]) -> list:
    """torch Parameters sharing the arrays' memory, their .grad the gradients' ([] without torch)."""
    out = []
    for p, g in zip(params, grads) if torch is not None else ():
        tp = torch.nn.Parameter(torch.from_numpy(p))
        tp.grad = torch.from_numpy(g)
        out.append(tp)
    return out


def torch_optimizers(spec: OptimSpec, tparams: list, grads: list[np.ndarray],
                     names: list[str]) -> tuple[dict[str, Built], dict[str, str]]:
    """({column: Built}, {column: why it is missing}) for the variants of TORCH_OPTIM_VARIANTS
    named, on Parameters whose .grad tensors are `grads`."""
    if torch is None:
        return {}, {name: TORCH_MISSING for name in names}
    cls = getattr(torch.optim, spec.kind)
    built, missing = {}, {}
    for name in names:
        kw = TORCH_OPTIM_VARIANTS[name]
        try:
            opt = cls(tparams, **spec.hp, **kw)
        except (TypeError, RuntimeError, ValueError) as exc:
            flag = ", ".join(f"{k}={v}" for k, v in kw.items())
            missing[name] = f"n/a (torch.optim.{spec.kind} has no {flag} on CPU: {type(exc).__name__})"
            continue
        for _ in range(spec.warmup):
            opt.step()
        built[name] = Built(opt.step, opt, grads,
                            lambda opt=opt: [_arrays_like(opt.state[tp], tp) for tp in tparams])
    return built, missing


def numpy_optimizer(spec: OptimSpec, params: list[np.ndarray], grads: list[np.ndarray]) -> Built:
    opt = spec.numpy(params, grads, **spec.hp)
    for _ in range(spec.warmup):
        opt.step()
    return Built(opt.step, opt, grads, lambda: opt.states)


def optim_case(workload: str, spec: OptimSpec, dtype: str, quick: bool, fused: bool,
               only: Collection[str] | None = None) -> Case:
    """One optimizer step, or with `fused` the fused clip_and_step(max_norm) against
    clip_grad_norm_ followed by step(), in the clipping regime (max_norm = half the norm).
    `only`: build just these implementations (the tests build one at a time, each from the
    same start); ``case.data`` holds the arrays and the Built implementations."""
    dt = np.dtype(dtype)
    shapes = workload_shapes(workload, quick)
    # All implementations update the same parameter arrays (each keeps its own optimizer
    # state): the values drift differently than in a real run, the work per step does not.
    params = random_arrays(shapes, dt, seed=2, scale=1.0)
    pristine = random_arrays(shapes, dt, seed=3)
    grads = [g.copy() for g in pristine]
    tparams = torch_parameters(params, grads)
    n = sum(a.size for a in grads)
    case = Case(workload, spec.op(fused), dtype, len(grads), n, impls={},
                traffic=spec.traffic(n * dt.itemsize, fused), targets=spec.targets(workload))
    if spec.regime:
        case.notes.append(f"{spec.label}: {spec.regime}")
    names = ["gradclip", *(["gradclip unfused"] if fused else []), *TORCH_OPTIM_VARIANTS, "numpy"]
    names = [name for name in names if only is None or name in only]
    built: dict[str, Built] = {}
    for name in names:
        if name.startswith("gradclip"):
            got, reason = gradclip_optimizer(spec, params, grads)
            if got is None:
                case.unavailable[name] = reason
            else:
                built[name] = got
    torch_built, missing = torch_optimizers(spec, tparams, grads, [x for x in names if x in TORCH_OPTIM_VARIANTS])
    built.update(torch_built)
    case.unavailable.update(missing)
    if "numpy" in names:
        built["numpy"] = numpy_optimizer(spec, params, grads)
    case.data = {"params": params, "grads": grads, "pristine": pristine, "built": built}
    if not fused:
        case.impls = {name: b.step for name, b in built.items()}
        return case

    max_norm = 0.5 * np_total_norm([g.astype(np.float64) for g in pristine])
    case.data["max_norm"] = max_norm
    case.notes.append("clipping regime (max_norm = 0.5 x norm); gradients restored before every call")
    for name, b in built.items():
        if name == "gradclip":
            if hasattr(b.opt, "clip_and_step"):
                case.impls[name] = lambda opt=b.opt: opt.clip_and_step(max_norm)
            else:
                case.unavailable[name] = "n/a (optimizer has no clip_and_step yet)"
        elif name == "gradclip unfused":
            case.impls[name] = lambda b=b: (gradclip.clip_grad_norm_(b.grads, max_norm), b.step())
        elif name == "numpy":
            case.impls[name] = lambda b=b: (np_clip_grad_norm_(b.grads, max_norm), b.step())
        else:
            fe = TORCH_OPTIM_VARIANTS[name].get("foreach")
            case.impls[name] = lambda b=b, fe=fe: (torch.nn.utils.clip_grad_norm_(tparams, max_norm, foreach=fe),
                                                   b.step())
    # Every gradient array any implementation reads, once, back to its pristine values
    # before each call (in case gradclip.Parameter copies what .grad is given).
    restore = {id(g): (g, src) for seen in [grads] + [b.grads for b in built.values()] for g, src in zip(seen, pristine)}
    case.setup = _restorer([g for g, _ in restore.values()], [src for _, src in restore.values()])
    return case


def optim_plan(specs: list[OptimSpec], workload: str, dtype: str, quick: bool,
               fused: bool) -> list[tuple[str, str, str, Callable[[], Case]]]:
    return [(workload, s.op(fused), dtype, lambda s=s: optim_case(workload, s, dtype, quick, fused)) for s in specs]
