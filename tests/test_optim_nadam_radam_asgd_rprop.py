"""NAdam, RAdam, ASGD and Rprop against torch.optim 2.13, step for step.

The configurations are torch's own (``optim_inputs_func_<name>`` of
torch/testing/_internal/common_optimizers.py, CPU entries); each runs 30 steps through
tests/optim_parity.py (two groups, strided and transposed parameters, a gradient that is None
on some steps, state_dict() saved mid-run and loaded into fresh optimizers), comparing every
parameter and state entry after every step, in ulps.

Measured (see README): ASGD and Rprop are bit-identical to torch in float16/32/64 and
complex64/128; RAdam too except where torch's CPU sqrt (MKL) is not correctly rounded; NAdam's
moments are bit-identical and its parameters within a few ulps for the same reason.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from optim_parity import TORCH_HAS_FMA, VECTOR_LAYOUTS, check_clip_and_step, run_parity

from gradclip import Parameter, _C, optim

NAMES = ["NAdam", "RAdam", "ASGD", "Rprop"]
SCALAR_KEYS = ("step", "mu_product", "eta", "mu")

# torch 2.13's optim_inputs_func_<name>(device="cpu") entries, copied (importing
# torch.testing._internal.common_optimizers needs torch's test-only dependencies).
TORCH_INPUTS = {
    "NAdam": [
        ("default", {}), ("non-default lr", {"lr": 1e-3}),
        ("non-zero momentum_decay", {"momentum_decay": 6e-3}), ("weight_decay", {"weight_decay": 0.1}),
        ("weight_decay, momentum_decay", {"weight_decay": 0.1, "momentum_decay": 6e-3}),
        ("decoupled_weight_decay", {"weight_decay": 0.1, "momentum_decay": 6e-3, "decoupled_weight_decay": True}),
        ("maximize", {"weight_decay": 0.1, "maximize": True}),
    ],
    "RAdam": [
        ("default", {}), ("non-default lr", {"lr": 2e-3}), ("non-default eps", {"eps": 1e-6}),
        ("nonzero weight_decay", {"weight_decay": 0.1}),
        ("decoupled_weight_decay", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        ("maximize", {"weight_decay": 0.1, "maximize": True}),
    ],
    "ASGD": [
        ("default", {}), ("non-default lambd", {"lambd": 0.1}), ("non-default lr", {"lr": 0.02}),
        ("t0", {"t0": 100}), ("maximize", {"maximize": True}), ("nonzero weight_decay", {"weight_decay": 0.1}),
        ("maximize, nonzero weight_decay", {"weight_decay": 0.1, "maximize": True}),
    ],
    "Rprop": [
        ("default", {}), ("non-default lr", {"lr": 2e-4}), ("non-default etas", {"etas": (0.5, 1.5)}),
        ("non-default step_sizes", {"step_sizes": (2e-6, 100)}), ("maximize", {"maximize": True}),
    ],
}
# optim_error_inputs_func_<name>(device="cpu"): the optimizer-specific entries.
TORCH_ERRORS = {
    "NAdam": [(dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0"),
              (dict(lr=1e-2, momentum_decay=-0.2), "Invalid momentum_decay value: -0.2")],
    "RAdam": [(dict(lr=1e-2, betas=(1.0, 0.0)), "Invalid beta parameter at index 0: 1.0"),
              (dict(lr=1e-2, weight_decay=-1), "Invalid weight_decay value: -1")],
    "ASGD": [(dict(lr=1e-2, weight_decay=-0.5), "Invalid weight_decay value: -0.5")],
    "Rprop": [(dict(lr=1e-2, etas=(1.0, 0.5)), "Invalid eta values: 1.0, 0.5")],
}


def configs():
    for name in NAMES:
        for desc, kwargs in TORCH_INPUTS[name]:
            yield pytest.param(name, dict(kwargs), id=f"{name}-{desc}")


CONFIGS = list(configs())
REAL = [np.float32, np.float64]
COMPLEX = [np.complex64, np.complex128]


def torch_twin(name: str) -> type:
    """torch's class, except that load_state_dict keeps the 0-d float32 state as saved.

    torch casts a loaded mu_product/eta/mu to a floating parameter's dtype (only "step" is
    exempt), so a reloaded float64 run continues in float64 and a float16 one from rounded
    values; gradclip keeps them float32, as an uninterrupted run holds them (README). The
    reference is therefore torch's uninterrupted arithmetic.
    """
    base = getattr(torch.optim, name)

    def load_state_dict(self, state_dict):
        saved = state_dict["state"]
        base.load_state_dict(self, state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for key in SCALAR_KEYS:
                if i in saved and key in saved[i]:
                    self.state[p][key] = saved[i][key].detach().clone().to(torch.float32)

    return type(f"Torch{name}", (base,), {"load_state_dict": load_state_dict})


# The largest distance in ulps allowed per optimizer and key after one step from equal
# states (resync), as measured over these configurations (0: bit-identical). NAdam and RAdam
# divide by torch's sqrt, which is not correctly rounded on x86 (MKL VML); the other
# operations match bit for bit, so the distance is in the parameter only.
PER_STEP = {
    "NAdam": {"param": 4},
    "RAdam": {"param": 1},
    "ASGD": {},
    "Rprop": {},
}
# Over 30 steps without resync the parameter differences accumulate, and relative to
# elements near zero they are many ulps (measured: NAdam 128 in param, 512 in exp_avg of a
# complex64 element near zero through coupled weight decay; RAdam 1).
ACCUMULATED = {
    "NAdam": {"param": 256, "exp_avg": 1024},
    "RAdam": {"param": 4},
    "ASGD": {},
    "Rprop": {},
}
INEXACT = ("NAdam", "RAdam")


def parity(name, kwargs, dtype, **extra):
    """Per-step bounds for the optimizers that use torch's sqrt, bitwise for the others."""
    return run_parity(name, kwargs, dtype, ulps=PER_STEP[name], resync=name in INEXACT,
                      torch_cls=torch_twin(name), **extra)


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_matches_torch(name, kwargs, dtype):
    parity(name, kwargs, dtype)


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", REAL + COMPLEX)
@pytest.mark.parametrize("name", INEXACT)
def test_accumulated_distance_over_30_steps(name, dtype):
    for _, kwargs in TORCH_INPUTS[name]:
        run_parity(name, kwargs, dtype, ulps=ACCUMULATED[name], torch_cls=torch_twin(name))


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_matches_torch_ndarray_params(name, kwargs):
    parity(name, kwargs, np.float64, mode="ndarray", seed=3)


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("layouts", [VECTOR_LAYOUTS, None], ids=["vectorised", "scalar-loops"])
@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_float16_matches_torch(name, kwargs, layouts):
    # Contiguous sizes that are multiples of 32, where torch stays on its vectorised loop, and
    # the default small, strided and transposed parameters, which torch computes in its scalar
    # loops (their add(alpha) rounds the product to float16 first; see
    # test_optim_float16_torch.py). Bit-identical for all four (float16's sqrt is float32's,
    # correctly rounded to half).
    run_parity(name, kwargs, np.float16, ulps=0, layouts=layouts, mode="ndarray", torch_cls=torch_twin(name))


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("name", ["NAdam", "RAdam"])
def test_moments_bitwise_without_coupled_decay(name):
    # Without coupled weight decay the moments never see the parameters, so torch's inexact
    # sqrt cannot reach them.
    for dtype in REAL + COMPLEX:
        worst = run_parity(name, dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True), dtype,
                           ulps=ACCUMULATED[name], torch_cls=torch_twin(name))
        assert worst.get("exp_avg", 0) == 0 and worst.get("exp_avg_sq", 0) == 0, worst


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("kwargs", [dict(), dict(weight_decay=0.1), dict(weight_decay=0.1, decoupled_weight_decay=True),
                                    dict(maximize=True, momentum_decay=0.05)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_nadam_bitwise_when_sqrt_is_exact(dtype, kwargs):
    # beta2 = 0: exp_avg_sq is g*g and bias_correction2 is 1, and gradients whose squares are
    # exact make every sqrt exact in torch too: then the whole update (mu schedule, float32
    # mu_product, both addcdiv_ terms) must match bit for bit: torch's sqrt is the only cause
    # of the distances measured above.
    rng = np.random.default_rng(5)
    choices = np.array([-3, -2, -1.5, -1, -0.5, -0.25, 0.25, 0.5, 1, 1.5, 2, 3])
    pick = lambda shape: (rng.choice(choices, size=shape) + (1j * rng.choice(choices, size=shape) if np.dtype(dtype).kind == "c" else 0)).astype(dtype)  # noqa: E731
    arrays = [pick((5, 4)), pick(17)]
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    kw = dict(lr=0.01, betas=(0.9, 0.0), **kwargs)
    opt, topt = optim.NAdam(arrays, **kw), torch.optim.NAdam(tensors, **kw)
    for _ in range(20):
        grads = [pick(a.shape) for a in arrays]
        if "weight_decay" in kwargs and not kwargs.get("decoupled_weight_decay"):
            # coupled decay puts p into v; keep p exact-square-friendly by resetting it
            for a, t in zip(arrays, tensors):
                a[...] = pick(a.shape)
                t.data = torch.from_numpy(a.copy())
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step(grads=grads)
        for a, t in zip(arrays, tensors):
            np.testing.assert_array_equal(a, t.numpy())
            for key, value in topt.state[t].items():
                np.testing.assert_array_equal(opt.state[a][key], value.numpy(), err_msg=key)


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_radam_unrectified_steps_bitwise(dtype):
    # beta2 = 0: rho_inf = 1, never rectified: bias-corrected momentum steps, no sqrt.
    rng = np.random.default_rng(4)
    choices = np.array([-3, -2, -1.5, -1, -0.5, -0.25, 0.25, 0.5, 1, 1.5, 2, 3], dtype=dtype)
    arrays = [rng.choice(choices, size=(5, 4)), rng.choice(choices, size=17)]
    tensors = [torch.from_numpy(a.copy()) for a in arrays]
    kw = dict(lr=0.01, betas=(0.9, 0.0), eps=0.0)
    opt, topt = optim.RAdam(arrays, **kw), torch.optim.RAdam(tensors, **kw)
    for _ in range(10):
        grads = [rng.choice(choices, size=a.shape) for a in arrays]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step(grads=grads)
        for a, t in zip(arrays, tensors):
            np.testing.assert_array_equal(a, t.numpy())


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("name,kwargs", [
    ("RAdam", dict(betas=(0.9, 0.9))),  # rho_t crosses 5 at a step the groups reach at different times
    ("NAdam", dict(momentum_decay=0.5, betas=(0.5, 0.9))),
    ("ASGD", dict(t0=3, lambd=0.5, alpha=0.5, weight_decay=0.01)),  # averaging from step 4
    ("Rprop", dict(etas=(0.3, 1.7), step_sizes=(1e-3, 0.02), lr=0.01)),  # both bounds reached
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
def test_other_hyperparameters(name, kwargs, dtype):
    # NAdam with a steep momentum schedule: its two addcdiv_ terms nearly cancel, so one ulp
    # in torch's denominator is up to 20 ulps of the parameter (measured).
    ulps = {"param": 32} if name == "NAdam" else PER_STEP[name]
    run_parity(name, kwargs, dtype, ulps=ulps, resync=name in INEXACT, torch_cls=torch_twin(name), steps=40,
               groups=({}, {"lr": 0.003}))


@pytest.mark.parametrize("write_back", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("name,kwargs", [
    ("NAdam", dict(weight_decay=0.1)), ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict(weight_decay=0.1, maximize=True)), ("ASGD", dict(t0=2, weight_decay=0.1)),
    ("Rprop", dict(maximize=True)),
])
def test_clip_and_step_equals_clip_then_step_bitwise(name, kwargs, dtype, write_back):
    check_clip_and_step(name, kwargs, dtype, write_back=write_back)
    check_clip_and_step(name, kwargs, dtype, write_back=write_back, max_norm=1e6)


def test_large_arrays_and_threads_match_torch():
    # Vector loops, remainders, a strided view and more than the threading threshold.
    rng = np.random.default_rng(8)
    for name, kwargs in [("ASGD", dict(t0=1)), ("Rprop", {}), ("RAdam", dict(betas=(0.9, 0.9)))]:
        base = rng.standard_normal((1003, 1031)).astype(np.float32)
        arrays = [rng.standard_normal(650_003).astype(np.float32), base[::2, 1:]]
        tensors = [torch.from_numpy(arrays[0].copy()), torch.from_numpy(base.copy())[::2, 1:]]
        opt, topt = getattr(optim, name)(arrays, **kwargs), getattr(torch.optim, name)(tensors, **kwargs)
        for _ in range(8):
            grads = [rng.standard_normal(a.shape).astype(np.float32) for a in arrays]
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g)
            topt.step()
            opt.step(grads=grads)
        for a, t in zip(arrays, tensors):
            for key, value in topt.state[t].items():
                if key in ("exp_avg", "exp_avg_sq", "ax", "prev", "step_size", "step", "eta", "mu"):
                    np.testing.assert_array_equal(opt.state[a][key], value.numpy(), err_msg=f"{name} {key}")
            if name != "RAdam":
                np.testing.assert_array_equal(a, t.numpy(), err_msg=name)
            else:
                np.testing.assert_allclose(a, t.numpy(), rtol=1e-5, atol=1e-6)


# -- state ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_state_keys_and_dtypes_match_torch(name):
    p, t = Parameter(np.ones((2, 3), np.float64)), torch.ones((2, 3), dtype=torch.float64)
    opt, topt = getattr(optim, name)([p]), getattr(torch.optim, name)([t])
    p.grad, t.grad = np.full((2, 3), 0.5), torch.full((2, 3), 0.5, dtype=torch.float64)
    opt.step()
    topt.step()
    assert list(opt.state[p]) == list(topt.state[t])
    for key, value in topt.state[t].items():
        assert opt.state[p][key].dtype == value.numpy().dtype, key
        assert opt.state[p][key].shape == tuple(value.shape), key
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert sd["param_groups"] == tsd["param_groups"]


def test_asgd_ax_is_the_running_average():
    # mu = 1 / (step - t0) once step > t0 + 1: ax is then the mean of the iterates since t0.
    w = np.zeros(3)
    opt = optim.ASGD([w], lr=0.1, lambd=0.0, alpha=0.0, t0=0)
    iterates = []
    for k in range(6):
        opt.step(grads=[np.array([1.0, -2.0, 0.5]) * (k + 1)])
        iterates.append(w.copy())
    # torch's schedule: ax = p on steps 1 and 2 (mu == 1), then ax += (p - ax) / (step - 1 - t0)
    np.testing.assert_allclose(opt.state[w]["ax"], np.mean(iterates[1:], axis=0), rtol=1e-6)  # mu is float32
    assert opt.state[w]["eta"].dtype == np.float32 and float(opt.state[w]["eta"]) == np.float32(0.1)


def test_nadam_loaded_float64_state_keeps_float32_scalars():
    w = np.ones(4)
    opt = optim.NAdam([w])
    opt.step(grads=[np.ones(4)])
    sd = opt.state_dict()
    sd["state"][0]["mu_product"] = np.float64(sd["state"][0]["mu_product"])  # a plain number
    other = optim.NAdam([np.ones(4)])
    other.load_state_dict(sd)
    mp = other.state[other.param_groups[0]["params"][0]]["mu_product"]
    assert mp.dtype == np.float32 and mp.shape == () and mp.flags.writeable


@pytest.mark.parametrize("name", NAMES)
def test_torch_state_dict_loads_and_continues(name):
    tensors = [torch.linspace(-1, 1, 6, dtype=torch.float32)]
    topt = getattr(torch.optim, name)(tensors, lr=0.01)
    for k in range(3):
        tensors[0].grad = torch.cos(torch.arange(6.0) + k)
        topt.step()
    arrays = [tensors[0].detach().numpy().copy()]
    opt = getattr(optim, name)(arrays, lr=0.01)
    opt.load_state_dict(topt.state_dict())
    twin = torch_twin(name)([tensors[0]], lr=0.01)
    twin.load_state_dict(topt.state_dict())
    for k in range(3, 6):
        g = torch.cos(torch.arange(6.0) + k)
        tensors[0].grad = g
        twin.step()
        opt.step(grads=[g.numpy().copy()])
    np.testing.assert_allclose(arrays[0], tensors[0].detach().numpy(), rtol=1e-6, atol=1e-7)


# -- errors --------------------------------------------------------------------------------


def error_cases():
    for name in NAMES:
        for kwargs, message in TORCH_ERRORS[name]:
            yield pytest.param(name, kwargs, ValueError, message, id=f"{name}-{message}")


@pytest.mark.parametrize("name,kwargs,error,regex", list(error_cases()))
def test_torch_constructor_errors(name, kwargs, error, regex):
    for make, arg in ((getattr(torch.optim, name), torch.zeros(2)), (getattr(optim, name), np.zeros(2))):
        with pytest.raises(error) as info:
            make([arg], **kwargs)
        assert str(info.value) == regex


@pytest.mark.parametrize("name,kwargs,message", [
    ("NAdam", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("NAdam", dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ("NAdam", dict(betas=(0.5, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ("NAdam", dict(weight_decay=-0.1), "Invalid weight_decay value: -0.1"),
    ("RAdam", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("RAdam", dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ("RAdam", dict(betas=(0.5, 1.0)), "Invalid beta parameter at index 1: 1.0"),
    ("ASGD", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("Rprop", dict(lr=-1.0), "Invalid learning rate: -1.0"),
    ("Rprop", dict(etas=(0.5, 0.9)), "Invalid eta values: 0.5, 0.9"),
    ("Rprop", dict(etas=(0.0, 1.2)), "Invalid eta values: 0.0, 1.2"),
])
def test_constructor_messages_are_torchs(name, kwargs, message):
    for make, arg in ((getattr(torch.optim, name), torch.zeros(2)), (getattr(optim, name), np.zeros(2))):
        with pytest.raises(ValueError) as info:
            make([arg], **kwargs)
        assert str(info.value) == message


@pytest.mark.parametrize("name", NAMES)
def test_unsupported_flags(name):
    for flag in ("capturable", "differentiable"):
        with pytest.raises(NotImplementedError, match=flag):
            getattr(optim, name)([np.zeros(2)], **{flag: True})


# -- the C entry points: malformed groups refused, nothing modified ----------------------------

ENTRY = {"NAdam": _C.nadam_step, "RAdam": _C.radam_step, "ASGD": _C.asgd_step, "Rprop": _C.rprop_step}


def good_group(name, dtype=np.float64, n=3):
    arr = lambda v=0.5: np.full(n, v, dtype)  # noqa: E731
    step = lambda: np.array(0.0, np.float32)  # noqa: E731
    if name == "NAdam":
        return [[arr()], [arr()], [arr(0)], [arr(0)], [step()], [np.array(1.0, np.float32)],
                0.9, 0.999, 1e-3, 0.0, 4e-3, 1e-8, False, False]
    if name == "RAdam":
        return [[arr()], [arr()], [arr(0)], [arr(0)], [step()], 0.9, 0.999, 1e-3, 0.0, 1e-8, False, False]
    if name == "ASGD":
        return [[arr()], [arr()], [arr(0)], [step()], [np.array(0.01, np.float32)], [np.array(1.0, np.float32)],
                1e-4, 0.01, 1e6, 0.75, 0.0, False]
    return [[arr()], [arr()], [arr(0)], [arr(0.01)], [step()], 0.5, 1.2, 1e-6, 50.0, False]


def corruptions(name):
    g = good_group(name)
    nlists = sum(isinstance(x, list) for x in g)
    for k in range(nlists):
        yield f"list{k}-junk", k, ["x"]
        yield f"list{k}-short", k, []
        yield f"list{k}-readonly", k, "readonly"
        yield f"list{k}-dtype", k, "dtype"
        yield f"list{k}-shape", k, "shape"
    yield "hyper-junk", nlists, "x"


def _arrays(group):
    return [a for x in group if isinstance(x, list) for a in x if isinstance(a, np.ndarray)]


@pytest.mark.parametrize("name", NAMES)
def test_entry_point_refuses_malformed_groups_and_changes_nothing(name):
    entry = ENTRY[name]
    for desc, k, how in corruptions(name):
        good = good_group(name)
        bad = good_group(name)
        if how == "readonly":
            bad[k][0].flags.writeable = False
        elif how == "dtype":
            bad[k][0] = bad[k][0].astype(np.float16 if bad[k][0].ndim else np.float64)
        elif how == "shape":
            bad[k][0] = np.zeros((2, 2), bad[k][0].dtype) if bad[k][0].ndim else np.zeros(2, np.float32)
        else:
            bad[k] = how
        groups = [tuple(good), tuple(bad)]
        before = [a.copy() for a in _arrays(good) + _arrays(bad)]
        is_grad_readonly = how == "readonly" and k == 1
        if is_grad_readonly:
            assert entry(groups, None, True) == 0  # a gradient is only read
            continue
        with pytest.raises((TypeError, ValueError)):
            entry(groups, None, True)
        for a, b in zip(_arrays(good) + _arrays(bad), before):
            np.testing.assert_array_equal(a, b, err_msg=desc)
    with pytest.raises(TypeError):
        entry([tuple(good_group(name))[:-1]], None, True)
    assert entry([tuple(good_group(name))], None, True) == 0
    assert entry([], None, True) == 0


@pytest.mark.parametrize("name", NAMES)
def test_entry_point_refuses_aliased_operands(name):
    g = good_group(name)
    g[2] = [g[0][0]]  # a state buffer that is the parameter itself
    before = g[0][0].copy()
    with pytest.raises(ValueError, match="share"):
        ENTRY[name]([tuple(g)], None, True)
    np.testing.assert_array_equal(g[0][0], before)


# -- a fuzzer over the four entry points ----------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
LAYOUT = {
    "c": lambda a: a,
    "f": lambda a: np.asfortranarray(a) if a.ndim else a,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a,
    "reversed": lambda a: a[::-1] if a.ndim else a,
}


def _group_for(name, dtype, shape, layouts, rng):
    """A valid group of one parameter, its operands in the given layouts."""
    g = good_group(name, dtype)
    nops = {"NAdam": 4, "RAdam": 4, "ASGD": 3, "Rprop": 4}[name]
    for k in range(nops):
        x = rng.standard_normal(shape) * 0.5
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        if (name in ("NAdam", "RAdam") and k == 3) or (name == "Rprop" and k == 3):
            x = np.abs(x) + 0.01  # second moments and step sizes are positive
        g[k] = [LAYOUT[layouts[k]](np.asarray(x).astype(dtype))]
    return g


@settings(max_examples=int(os.environ.get("GRADCLIP_FUZZ_EXAMPLES", 5000 if os.environ.get("GRADCLIP_STRESS") else 150)), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_entry_points(data):
    """Random dtypes, shapes, layouts, clipping and one corruption at most: a valid call gives
    the bits of the same call on C-contiguous copies; an invalid one raises and changes nothing."""
    name = data.draw(st.sampled_from(NAMES))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    dtype = data.draw(st.sampled_from(DTYPES))
    shape = tuple(data.draw(st.lists(st.integers(0, 5), max_size=2)))
    layouts = [data.draw(st.sampled_from(list(LAYOUT))) for _ in range(4)]
    group = _group_for(name, dtype, shape, layouts, rng)
    scale = data.draw(st.sampled_from([None, 0.5, 1.0]))
    write_back = data.draw(st.booleans())
    corruption = data.draw(st.sampled_from(["none"] * 4 + ["dtype", "shape", "readonly", "alias", "scalar", "hyper"]))
    nlists = sum(isinstance(x, list) for x in group)
    k = data.draw(st.integers(0, nlists - 1))
    valid = True
    if corruption == "dtype":
        other = data.draw(st.sampled_from([d for d in DTYPES if d != dtype]))
        if k < {"NAdam": 4, "RAdam": 4, "ASGD": 3, "Rprop": 4}[name]:
            src = group[k][0]
            group[k] = [(src.real if np.dtype(other).kind != "c" else src).astype(other)]
        else:
            group[k] = [np.array(0.0, np.float64)]  # a scalar must be float32
        valid = False
    elif corruption == "shape" and k < nlists:
        group[k] = [np.zeros(shape + (2,), group[k][0].dtype)]
        valid = False
    elif corruption == "readonly":
        group[k][0].flags.writeable = False
        written_grad = k == 1 and scale is not None and write_back
        valid = k == 1 and not written_grad
    elif corruption == "alias" and math.prod(shape) > 0:
        j = data.draw(st.integers(1, {"NAdam": 3, "RAdam": 3, "ASGD": 2, "Rprop": 3}[name]))
        group[j] = [group[0][0]]
        valid = False
    elif corruption == "scalar":
        group[nlists - 1] = [None]
        valid = False
    elif corruption == "hyper":
        group[nlists] = "lr"
        valid = False
    arrays = _arrays(group)
    before = [a.copy() for a in arrays]
    copies = [[np.array(a, order="C", copy=True) for a in x] if isinstance(x, list) else x for x in group]
    try:
        ENTRY[name]([tuple(group)], scale, write_back)
    except (TypeError, ValueError):
        assert not valid, "a valid call raised"
        for a, b in zip(arrays, before):
            assert a.tobytes() == b.tobytes(), "an array changed although the call raised"
        return
    assert valid, f"an invalid call ({corruption}) was accepted"
    ENTRY[name]([tuple(copies)], scale, write_back)
    for x, y in zip(group, copies):
        if isinstance(x, list):
            for a, b in zip(x, y):
                np.testing.assert_array_equal(a, b)
