"""gradclip.optim against torch.optim 2.13: the same updates, step for step.

Every test runs the same seeded gradients through a gradclip optimizer and a torch optimizer
built over equal parameters (same shapes and memory layouts: contiguous, a strided view of a
larger array, a transposed array) and compares parameters and state after every step.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import gradclip
from gradclip import Parameter, optim

STEPS = 30
LRS = (0.05, 0.01)  # two param groups with different learning rates
RTOL = {np.float32: 1e-6, np.float64: 1e-12}

# torch's CPU kernels only use fused multiply-adds where the CPU has them; on such a build
# gradclip's SGD reproduces torch bit for bit.
TORCH_HAS_FMA = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def zero_atol(dtype: type) -> float:
    """The absolute tolerance next to RTOL, for values that cross zero.

    Rounding differences of an ulp or two in an update (a few times lr in size: an Adam
    update is at most (1 - beta1) / sqrt(1 - beta2) ~ 3.2 lr) add up over STEPS steps to an
    absolute difference that no rtol covers where a value is near zero. For Adam they are
    unavoidable: torch's CPU sqrt (MKL VML) is not correctly rounded, so a denominator can be
    1 ulp off. gradclip's SGD is bitwise equal to torch (test_sgd_matches_torch_bitwise); the
    atol lets a kernel that rounds differently (say, without FMA) pass the tolerance tests
    while the bitwise tests point at the difference.
    """
    return STEPS * 2 * 3.2 * max(LRS) * float(np.finfo(dtype).eps)


# -- building equal problems on both sides ------------------------------------------------------


# Each parameter is a view of a base array; applying the same view to a torch copy of the
# base gives a tensor with the same strides.
LAYOUTS = [
    ((3, 4), lambda x: x),
    ((6, 5), lambda x: x[::2, 1:]),  # strided view, non-contiguous
    ((4, 3), lambda x: x.T),  # transposed: Fortran order
    ((7,), lambda x: x),
    ((2, 2), lambda x: x),
]


def make_bases(dtype: type, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape, _ in LAYOUTS]


def make_arrays(dtype: type, seed: int = 0) -> list[np.ndarray]:
    """Five parameters in different layouts (NumPy side)."""
    return [view(base) for base, (_, view) in zip(make_bases(dtype, seed), LAYOUTS)]


def torch_twins(arrays: list[np.ndarray]) -> list[torch.Tensor]:
    """Torch tensors equal to ``arrays`` (made by :func:`make_arrays`), with the same strides."""
    twins = []
    for a, (_, view) in zip(arrays, LAYOUTS):
        base = a if a.base is None else a.base
        twins.append(view(torch.from_numpy(base.copy())))
    for a, t in zip(arrays, twins):
        assert np.array_equal(a, t.numpy())
        assert a.strides == tuple(s * a.itemsize for s in t.stride())
    return twins


def gradient_schedule(arrays: list[np.ndarray], steps: int, seed: int) -> list[list]:
    """Seeded gradients per step; the last parameter has none on steps 0, 1, 4, 7, ..."""
    rng = np.random.default_rng(seed)
    schedule = []
    for step in range(steps):
        grads = [rng.standard_normal(a.shape).astype(a.dtype) for a in arrays]
        if step == 0 or step % 3 == 1:
            grads[-1] = None
        schedule.append(grads)
    return schedule


def groups(params: list, lrs=LRS) -> list[dict]:
    return [{"params": params[:2], "lr": lrs[0]}, {"params": params[2:], "lr": lrs[1]}]


class Twin:
    """A gradclip optimizer and a torch optimizer over equal parameters."""

    def __init__(self, name: str, dtype: type, kwargs: dict, mode: str = "parameter", seed: int = 0):
        self.mode = mode
        self.arrays = make_arrays(dtype, seed)
        self.tensors = torch_twins(self.arrays)
        if mode == "parameter":
            self.params = [Parameter(a) for a in self.arrays]
        else:
            self.params = list(self.arrays)
        self.opt = getattr(optim, name)(groups(self.params), **kwargs)
        self.topt = getattr(torch.optim, name)(groups(self.tensors), **kwargs)

    def set_grads(self, grads: list) -> None:
        for t, g in zip(self.tensors, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        if self.mode == "parameter":
            for p, g in zip(self.params, grads):
                p.grad = None if g is None else g.copy()

    def step(self, grads: list) -> None:
        self.set_grads(grads)
        self.topt.step()
        if self.mode == "parameter":
            self.opt.step()
        else:
            self.opt.step(grads=[None if g is None else g.copy() for g in grads])

    def assert_close(self, rtol: float, atol: float = 0.0, exact: bool = False) -> None:
        for i, (a, t, p) in enumerate(zip(self.arrays, self.tensors, self.params)):
            check(a, t, rtol, atol, exact, f"param {i}")
            tstate = self.topt.state.get(t, {})
            state = self.opt.state.get(p, {})
            assert list(state) == list(tstate), f"state keys of param {i}"
            for key, tvalue in tstate.items():
                check(state[key], tvalue, rtol, atol, exact, f"state[{key!r}] of param {i}")


def check(actual: np.ndarray, expected: torch.Tensor, rtol: float, atol: float, exact: bool, what: str) -> None:
    assert isinstance(actual, np.ndarray), what
    expected = expected.detach().numpy()
    assert actual.dtype == expected.dtype, what
    assert actual.shape == expected.shape, what
    # np.testing's comparisons are slow; they only run to report a failure.
    if np.array_equal(actual, expected, equal_nan=True):
        return
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
    with np.errstate(invalid="ignore"):
        close = np.abs(actual - expected) <= atol + rtol * np.abs(expected)
    if not (close | (np.isnan(actual) & np.isnan(expected))).all():
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


def run(twin: Twin, rtol: float, atol: float = 0.0, exact: bool = False, seed: int = 1) -> None:
    for grads in gradient_schedule(twin.arrays, STEPS, seed):
        twin.step(grads)
        twin.assert_close(rtol, atol, exact)


# -- SGD ------------------------------------------------------------------------------------------


def sgd_configs():
    for momentum, dampening, nesterov, weight_decay, maximize in itertools.product(
        (0, 0.9), (0, 0.1), (False, True), (0, 1e-2), (False, True)
    ):
        if nesterov and (momentum == 0 or dampening != 0):
            continue  # torch rejects these (tested in test_optim_errors.py)
        yield dict(
            momentum=momentum,
            dampening=dampening,
            nesterov=nesterov,
            weight_decay=weight_decay,
            maximize=maximize,
        )


SGD_CONFIGS = list(sgd_configs())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_torch(kwargs, dtype):
    run(Twin("SGD", dtype, kwargs), rtol=RTOL[dtype], atol=zero_atol(dtype))


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_sgd_matches_torch_bitwise(kwargs, dtype):
    # torch's add(alpha=) is a fused multiply-add on CPU; reproducing that op by op gives the
    # same bits, in every layout (torch's strided loop is FMA-contracted as well).
    run(Twin("SGD", dtype, kwargs, mode="ndarray"), rtol=0, exact=True)


# -- Adam / AdamW ---------------------------------------------------------------------------------


def adam_configs():
    for name, amsgrad, weight_decay, maximize in itertools.product(
        ("Adam", "AdamW"), (False, True), (0, 1e-2), (False, True)
    ):
        yield name, dict(amsgrad=amsgrad, weight_decay=weight_decay, maximize=maximize)


ADAM_CONFIGS = list(adam_configs())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name,kwargs", ADAM_CONFIGS, ids=lambda x: x if isinstance(x, str) else "-".join(f"{k}={v}" for k, v in x.items())
)
def test_adam_matches_torch(name, kwargs, dtype):
    run(Twin(name, dtype, kwargs), rtol=RTOL[dtype], atol=zero_atol(dtype))


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_moments_match_torch_bitwise(name, amsgrad, dtype):
    # Without coupled weight decay the moments never see the parameters, so torch's
    # inexact sqrt cannot reach them: lerp_ and addcmul_ (both FMAs) must match exactly.
    twin = Twin(name, dtype, dict(amsgrad=amsgrad, maximize=True), mode="ndarray")
    for grads in gradient_schedule(twin.arrays, STEPS, seed=1):
        twin.step(grads)
        for p, t in zip(twin.params, twin.tensors):
            for key, value in twin.topt.state.get(t, {}).items():
                check(twin.opt.state[p][key], value, 0, 0, True, key)
        twin.assert_close(RTOL[dtype], zero_atol(dtype))


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_update_matches_torch_bitwise_when_sqrt_is_exact(name, amsgrad, maximize, dtype):
    # With beta2 = 0 the second moment is g*g, and with gradients whose squares are exact
    # (multiples of 1/4 up to 3) every sqrt is exact, in torch too. Then the whole update
    # (bias correction, division, eps, addcdiv_'s order, decoupled decay) must match.
    twin = Twin(name, dtype, dict(betas=(0.9, 0.0), amsgrad=amsgrad, maximize=maximize), mode="ndarray")
    rng = np.random.default_rng(9)
    choices = np.array([-3, -2, -1.5, -1, -0.5, -0.25, 0.25, 0.5, 1, 1.5, 2, 3], dtype=dtype)
    for step in range(STEPS):
        grads = [rng.choice(choices, size=a.shape) for a in twin.arrays]
        grads[-1] = None if step % 3 == 1 else grads[-1]
        twin.step(grads)
        twin.assert_close(0, exact=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_decoupled_weight_decay_is_adamw(dtype):
    twin = Twin("Adam", dtype, dict(weight_decay=0.1, decoupled_weight_decay=True), mode="ndarray")
    run(twin, rtol=RTOL[dtype], atol=zero_atol(dtype))


@pytest.mark.parametrize("mode", ["parameter", "ndarray"])
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_hyperparameters_other_than_defaults(name, mode):
    kwargs = (
        dict(momentum=0.5, dampening=0.3, weight_decay=0.2)
        if name == "SGD"
        else dict(betas=(0.5, 0.9), eps=1e-3, weight_decay=0.05, amsgrad=True)
    )
    run(Twin(name, np.float64, kwargs, mode=mode), rtol=1e-12, atol=zero_atol(np.float64))


# -- large arrays: vector loops, remainders, threads ------------------------------------------------


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-2, nesterov=True, maximize=True)),
        ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
        ("AdamW", dict(lr=0.01, amsgrad=True)),
    ],
)
def test_large_arrays_match_torch_bitwise(name, kwargs, dtype):
    # The tiny arrays above barely reach the kernels' SIMD loops; here an odd-sized
    # contiguous array (vector loop + remainder), a strided view and, together, more than
    # gradclip's threading threshold (2**20 elements), as several fixed blocks.
    rng = np.random.default_rng(8)
    base = rng.standard_normal((1003, 1031)).astype(dtype)
    arrays = [rng.standard_normal(650_003).astype(dtype), base[::2, 1:]]
    tensors = [
        torch.from_numpy(arrays[0].copy()),
        torch.from_numpy(base.copy())[::2, 1:],
    ]
    assert sum(a.size for a in arrays) > 2**20
    opt = getattr(optim, name)(arrays, **kwargs)
    topt = getattr(torch.optim, name)(tensors, **kwargs)
    for _ in range(3):
        grads = [rng.standard_normal(a.shape).astype(dtype) for a in arrays]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        topt.step()
        opt.step(grads=grads)
        for a, t in zip(arrays, tensors):
            for key, value in topt.state[t].items():
                check(opt.state[a][key], value, 0, 0, True, key)
            if name == "SGD":
                check(a, t, 0, 0, True, "param")
            else:  # Adam: torch's sqrt is inexact (see zero_atol)
                check(a, t, RTOL[dtype], zero_atol(dtype), False, "param")


# -- float16 --------------------------------------------------------------------------------------


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=1e-2)),
        ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True)),
        ("Adam", dict(lr=0.01, weight_decay=1e-2)),
        ("AdamW", dict(lr=0.01, amsgrad=True)),
    ],
)
def test_float16_matches_torch_bitwise(name, kwargs):
    # torch computes float16 in float32 and rounds after every op, but its vectorised loop
    # and its scalar remainder loop round add(alpha=) differently. Contiguous arrays whose
    # size is a multiple of 32 only ever take the vectorised path (the other layouts:
    # tests/test_optim_float16_torch.py).
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(shape).astype(np.float16) for shape in [(64,), (8, 16), (4096,)]]
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    opt = getattr(optim, name)(arrays, **kwargs)
    topt = getattr(torch.optim, name)(tensors, **kwargs)
    for _ in range(10):
        grads = [rng.standard_normal(a.shape).astype(np.float16) for a in arrays]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step(grads=grads)
        for a, t in zip(arrays, tensors):
            np.testing.assert_array_equal(a, t.numpy())
            for key, value in topt.state[t].items():
                np.testing.assert_array_equal(opt.state[a][key], value.numpy())


# -- the optimizer protocol -----------------------------------------------------------------------


def test_closure_is_called_first_and_its_loss_returned():
    w = Parameter(np.array([1.0, -2.0]))
    opt = optim.SGD([w], lr=0.5)
    calls = []

    def closure():
        calls.append(w.data.copy())
        w.grad = 2 * w.data  # gradient of |w|^2, set by the closure itself
        return float(w.data @ w.data)

    assert opt.step(closure) == 5.0
    assert len(calls) == 1
    np.testing.assert_array_equal(w.data, [0.0, 0.0])
    assert opt.step() is None


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad(set_to_none):
    a = Parameter(np.ones(3))
    b = Parameter(np.ones(2, np.float32))
    c = Parameter(np.ones(1))
    opt = optim.SGD([a, b, c], lr=0.1)
    grad_a = np.full(3, 7.0)
    a.grad = grad_a
    b.grad = np.full(2, 3.0, np.float32)
    opt.zero_grad(set_to_none=set_to_none)
    if set_to_none:
        assert a.grad is None and b.grad is None
    else:
        assert a.grad is grad_a  # zeroed in place, as torch's grad.zero_()
        np.testing.assert_array_equal(a.grad, 0.0)
        np.testing.assert_array_equal(b.grad, 0.0)
    assert c.grad is None


def test_params_without_grad_are_skipped_and_get_no_state():
    a, b = np.ones(3), np.ones(3)
    opt = optim.Adam([a, b], lr=0.1)
    opt.step(grads=[np.ones(3), None])
    np.testing.assert_array_equal(b, 1.0)
    assert b not in opt.state and a in opt.state
    sgd = optim.SGD([a], lr=0.1)  # momentum 0: torch keeps no state at all
    sgd.step(grads=[np.ones(3)])
    assert len(sgd.state) == 0


def test_grads_argument_overrides_dot_grad():
    w = Parameter(np.zeros(2))
    w.grad = np.array([100.0, 100.0])
    optim.SGD([w], lr=1.0).step(grads=[np.array([1.0, 2.0])])
    np.testing.assert_array_equal(w.data, [-1.0, -2.0])


def test_mixed_dtypes_in_one_group():
    arrays = [np.ones(4, np.float32), np.ones(4, np.float64)]
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    opt, topt = optim.Adam(arrays, lr=0.1), torch.optim.Adam(tensors, lr=0.1)
    rng = np.random.default_rng(0)
    for _ in range(5):
        grads = [rng.standard_normal(4).astype(a.dtype) for a in arrays]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g)
        topt.step()
        opt.step(grads=grads)
    for a, t in zip(arrays, tensors):
        np.testing.assert_allclose(a, t.numpy(), rtol=RTOL[a.dtype.type], atol=zero_atol(a.dtype.type))


def test_named_parameters():
    w, b = np.ones(2), np.zeros(2)
    opt = optim.SGD([("w", w), ("b", b)], lr=1.0)
    assert opt.param_groups[0]["param_names"] == ["w", "b"]
    assert opt.param_groups[0]["params"][0] is w
    tw, tb = torch.ones(2), torch.zeros(2)
    tsd = torch.optim.SGD([("w", tw), ("b", tb)], lr=1.0).state_dict()
    assert opt.state_dict()["param_groups"] == tsd["param_groups"]


# -- fused clipping -------------------------------------------------------------------------------


@pytest.mark.parametrize("write_back", [True, False])
@pytest.mark.parametrize("max_norm", [0.5, 1e6])  # clipping, and a coefficient of exactly 1
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(momentum=0.9, weight_decay=1e-2)),
        ("SGD", dict(momentum=0.9, dampening=0.1, maximize=True)),
        ("Adam", dict(amsgrad=True, weight_decay=1e-2)),
        ("AdamW", dict()),
    ],
)
def test_clip_and_step_equals_clip_then_step_bitwise(name, kwargs, dtype, max_norm, write_back):
    fused_arrays = make_arrays(dtype)
    plain_arrays = [a.copy() for a in fused_arrays]
    fused = [Parameter(a) for a in fused_arrays]
    plain = [Parameter(a) for a in plain_arrays]
    fused_opt = getattr(optim, name)(groups(fused), **kwargs)
    plain_opt = getattr(optim, name)(groups(plain), **kwargs)
    for grads in gradient_schedule(fused_arrays, 8, seed=2):
        for p, q, g in zip(fused, plain, grads):
            p.grad = None if g is None else g.copy()
            q.grad = None if g is None else g.copy()
        norm = fused_opt.clip_and_step(max_norm, write_back=write_back)
        expected_norm = gradclip.clip_grad_norm_(plain, max_norm)
        plain_opt.step()
        assert type(norm) is type(expected_norm) and norm == expected_norm
        for p, q, g in zip(fused, plain, grads):
            np.testing.assert_array_equal(p.data, q.data)
            if g is not None:
                np.testing.assert_array_equal(p.grad, q.grad if write_back else g)
            for key, value in plain_opt.state.get(q, {}).items():
                np.testing.assert_array_equal(fused_opt.state[p][key], value)


def test_clip_and_step_norm_covers_all_groups_and_other_norm_types():
    arrays = make_arrays(np.float64)
    copies = [a.copy() for a in arrays]
    grads = gradient_schedule(arrays, 3, seed=4)[2]  # the last parameter has a gradient
    opt = optim.SGD(groups(arrays), lr=0.1)
    norm = opt.clip_and_step(1.0, norm_type="inf", grads=[g.copy() for g in grads])
    assert norm == max(np.abs(g).max() for g in grads)
    clipped = [g.copy() for g in grads]
    gradclip.clip_grad_norm_(clipped, 1.0, norm_type="inf")
    for a, c, g, lr in zip(arrays, copies, clipped, [0.05, 0.05, 0.01, 0.01, 0.01]):
        reference = [c.copy()]
        optim.SGD(reference, lr=lr).step(grads=[g])
        np.testing.assert_array_equal(a, reference[0])


def test_clip_and_step_matches_torch_clip_then_step():
    twin = Twin("Adam", np.float32, dict(amsgrad=True))
    for grads in gradient_schedule(twin.arrays, 10, seed=5):
        twin.set_grads(grads)
        tnorm = torch.nn.utils.clip_grad_norm_(twin.tensors, 1.5)
        twin.topt.step()
        norm = twin.opt.clip_and_step(1.5)
        np.testing.assert_allclose(norm, tnorm.numpy(), rtol=1e-6)
        twin.assert_close(rtol=1e-5, atol=zero_atol(np.float32))
        for p, t in zip(twin.params, twin.tensors):
            if t.grad is not None:
                np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-5)


def test_reference_snippet_matches_torch():
    # The README's usage: Parameters, optim.SGD(params, lr=1.0), clip_grad_norm_(params, 5.0),
    # optimizer.step(). Gradients large enough that clipping happens on most steps.
    rng = np.random.default_rng(6)
    shapes = [(8, 5), (8, 8), (8,), (3, 8), (3,)]
    values = [rng.standard_normal(s).astype(np.float32) * 0.1 for s in shapes]
    params = [Parameter(v.copy()) for v in values]
    tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    optimizer = optim.SGD(params, lr=1.0)
    toptimizer = torch.optim.SGD(tparams, lr=1.0)
    clipped_steps = 0
    for _ in range(20):
        grads = [rng.standard_normal(s).astype(np.float32) * 2 for s in shapes]
        optimizer.zero_grad()
        toptimizer.zero_grad()
        for p, t, g in zip(params, tparams, grads):
            p.grad = g.copy()
            t.grad = torch.from_numpy(g.copy())
        norm = gradclip.nn.utils.clip_grad_norm_(params, 5.0)
        tnorm = torch.nn.utils.clip_grad_norm_(tparams, 5.0)
        clipped_steps += float(tnorm) > 5.0
        optimizer.step()
        toptimizer.step()
        np.testing.assert_allclose(norm, tnorm.numpy(), rtol=1e-6)
        for p, t in zip(params, tparams):
            np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6)
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert clipped_steps > 10


# Memory orders of (parameter, gradient) that the kernel may flatten to one run (both C, both
# Fortran) or must walk dimension by dimension (mixed, or a strided view).
ORDER_PAIRS = {
    "C/C": (lambda a: a, lambda g: g),
    "F/F": (np.asfortranarray, np.asfortranarray),
    "C/F": (lambda a: a, np.asfortranarray),
    "F/C": (np.asfortranarray, lambda g: g),
    "C/view": (lambda a: a, lambda g: np.repeat(g, 2, axis=1)[:, ::2]),
}


@pytest.mark.parametrize("orders", list(ORDER_PAIRS))
@pytest.mark.parametrize("name,kwargs", [("SGD", {"lr": 0.1, "momentum": 0.9}), ("Adam", {"lr": 0.1, "amsgrad": True})])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_layout_does_not_change_the_update(orders, name, kwargs, dtype):
    """The same values in any memory order give the same bits as C-ordered arrays, including
    the state a first step creates (a momentum buffer is laid out like the gradient)."""
    to_param, to_grad = ORDER_PAIRS[orders]
    rng = np.random.default_rng(7)
    p0 = rng.standard_normal((5, 6)).astype(dtype)
    grads = [rng.standard_normal((5, 6)).astype(dtype) for _ in range(3)]
    ref, other = Parameter(p0.copy()), Parameter(to_param(p0.copy()))
    assert np.array_equal(ref.data, other.data)
    opt_ref = getattr(optim, name)([ref], **kwargs)
    opt_other = getattr(optim, name)([other], **kwargs)
    for g in grads:
        ref.grad = g.copy()
        other.grad = to_grad(g.copy())
        opt_ref.step()
        opt_other.step()
        np.testing.assert_array_equal(other.data, ref.data, strict=True)
    for key, value in opt_ref.state[ref].items():
        np.testing.assert_array_equal(opt_other.state[other][key], value, strict=True)
