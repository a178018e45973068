"""A Tensor lr (torch 2.13 accepts a 1-element tensor) against torch's CPU single-tensor path.

gradclip accepts as lr a 1-element torch tensor or ndarray (any shape) of dtype float32 or
float64 and keeps it in the group, as torch does. torch's CPU (non-capturable) step computes
with it in its own dtype: for SGD, RMSprop, Adadelta, Rprop and RAdam without decoupled weight
decay only ``lr.item()`` reaches the kernels, but Adam/AdamW (``lr / bias_correction1``,
``1 - lr * weight_decay``), Adagrad, Adamax, NAdam, RAdam's decoupled decay, ASGD's eta,
Adafactor, Muon and LBFGS compute scalar expressions of a float32 lr in float32 (measured:
float32 parameters 1 ulp apart, float64 ones ~1e-8 relative, from Python floats). gradclip
reproduces that; the tests below demand bit identity (with torch's sqrt made correctly
rounded, as the other parity tests do), or the optimizer's usual bounds where it has some.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from optim_parity import MATRIX_LAYOUTS, TORCH_HAS_FMA, check_clip_and_step, run_parity

from test_optim_lbfgs import torch_reductions  # noqa: F401 - a fixture

from gradclip import Parameter, optim
from gradclip.optim import lr_scheduler as gls

needs_fma = pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")

# Every optimizer whose torch constructor takes a Tensor lr (SparseAdam aside: gradclip refuses
# it whatever the lr), with a parameter shape it accepts.
ALL = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam", "RMSprop", "Rprop",
       "Adafactor", "Muon", "LBFGS"]

# Configurations where torch's arithmetic with a float32 lr differs from a float's.
ELEMENTWISE = [
    ("SGD", dict(momentum=0.9, weight_decay=0.1)),
    ("Adam", dict(weight_decay=0.1)),
    ("Adam", dict(amsgrad=True, maximize=True)),
    ("AdamW", {}),
    ("AdamW", dict(amsgrad=True, weight_decay=0.05)),
    ("Adagrad", dict(lr_decay=0.01, weight_decay=0.1)),
    ("Adamax", dict(weight_decay=0.1)),
    ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("NAdam", dict(weight_decay=0.1)),
    ("RAdam", dict(weight_decay=0.1, decoupled_weight_decay=True)),
    ("ASGD", dict(weight_decay=0.1)),
    ("ASGD", dict(alpha=2.0, lambd=1e-3)),  # torch squares; alpha=0.5 is its (inexact) sqrt
    ("RMSprop", dict(momentum=0.5, centered=True)),
    ("Adadelta", dict(weight_decay=0.1)),
    ("Rprop", {}),
]
LR = 0.0123  # not a float32 number: the float32 tensor holds another value than the float


def _params(name, dtype=np.float64):
    shape = (3, 4)
    return [Parameter(np.ones(shape, dtype))], [torch.ones(shape, dtype=torch.from_numpy(np.ones(1, dtype)).dtype)]


def _raises_like_torch(name, kwargs, ours_kwargs=None):
    ps, ts = _params(name)
    with pytest.raises(Exception) as theirs:
        getattr(torch.optim, name)(ts, **kwargs)
    with pytest.raises(Exception) as ours:
        getattr(optim, name)(ps, **(kwargs if ours_kwargs is None else ours_kwargs))
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value)
    return str(ours.value)


@pytest.mark.parametrize("name", ALL)
def test_tensor_lr_errors_are_torchs(name):
    # More than one element: torch's message, for a tensor and for an ndarray alike.
    assert _raises_like_torch(name, dict(lr=torch.tensor([0.1, 0.2]))) == "Tensor lr must be 1-element"
    _raises_like_torch(name, dict(lr=torch.tensor([0.1, 0.2])), dict(lr=np.array([0.1, 0.2])))
    # A negative one: the constructor's own message, printing the tensor as torch does (a 0-d
    # tensor formats as its value).
    message = _raises_like_torch(name, dict(lr=torch.tensor(-0.5)))
    assert "-0.5" in message
    # One element in any shape is accepted.
    ps, ts = _params(name)
    for lr in (torch.tensor([[0.1]]), np.array([0.1], np.float32), np.array(0.1), torch.tensor(0.1, dtype=torch.float64)):
        opt = getattr(optim, name)(ps, lr=lr)
        assert opt.param_groups[0]["lr"] is lr  # kept as given, as torch keeps it
    getattr(torch.optim, name)(ts, lr=torch.tensor([[0.1]]))


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_tensor_lr_with_foreach_is_torchs_error(name):
    message = _raises_like_torch(name, dict(lr=torch.tensor(0.1), foreach=True))
    assert message == "lr as a Tensor is not supported for capturable=False and foreach=True"
    _raises_like_torch(name, dict(lr=torch.tensor(0.1), foreach=True), dict(lr=np.array(0.1), foreach=True))
    getattr(optim, name)(_params(name)[0], lr=torch.tensor(0.1), foreach=False)


def test_tensor_lr_dtypes_gradclip_does_not_reproduce_are_refused():
    p = [Parameter(np.ones(3))]
    for lr in (torch.tensor(0.1, dtype=torch.float16), torch.tensor(0.1, dtype=torch.bfloat16), torch.tensor(1),
               np.array(0.1, np.float16), np.float16(0.1), np.array(True), torch.tensor(0.1 + 0j)):
        with pytest.raises(TypeError, match="lr"):
            optim.Adam(p, lr=lr)
    # A group changed after construction is checked by step(), before anything moves.
    opt = optim.SGD(p, lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor([0.1, 0.1])
    p[0].grad = np.ones(3)
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['lr'\]: Tensor lr must be 1-element"):
        opt.step()
    opt.param_groups[0]["lr"] = torch.tensor(0.1, dtype=torch.float16)
    for call in (opt.step, lambda: opt.clip_and_step(1.0)):
        with pytest.raises(TypeError, match=r"param_groups\[0\]\['lr'\]: a Tensor lr must be float32 or float64"):
            call()
    np.testing.assert_array_equal(p[0].data, 1.0)


def _as(kind, tensor):
    """The lr gradclip is given: the torch tensor itself, an ndarray of it, or a NumPy scalar."""
    if kind == "tensor":
        return tensor
    if kind == "ndarray":
        return tensor.numpy().copy()
    return tensor.numpy().dtype.type(tensor.item())


@needs_fma
@pytest.mark.parametrize("kind", ["tensor", "ndarray", "numpy scalar"])
@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64], ids=["float32 lr", "float64 lr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs", ELEMENTWISE, ids=[f"{n}-{k}" for n, k in ELEMENTWISE])
def test_elementwise_tensor_lr_bitwise(name, kwargs, dtype, lr_dtype, kind):
    # torch's own code (its sqrt made correctly rounded) against gradclip, every step, a
    # state_dict reload midway, a second group with a float lr.
    from test_optim_nadam_radam_asgd_rprop import torch_twin  # torch, but keeping 0-d float32 state on reload

    lr = torch.tensor(LR, dtype=lr_dtype)
    run_parity(name, {**kwargs, "lr": _as(kind, lr)}, dtype, ulps=0, exact_sqrt=True, steps=12,
               torch_kwargs={"lr": lr}, torch_cls=torch_twin(name) if name in ("NAdam", "ASGD") else None)


@needs_fma
@pytest.mark.parametrize("name,kwargs", [("Adam", {}), ("AdamW", {}), ("Adagrad", dict(lr_decay=0.01)), ("NAdam", {}),
                                         ("ASGD", {})])
def test_a_float32_tensor_lr_is_not_its_float(name, kwargs):
    # The test above can fail: gradclip given the float the tensor holds computes otherwise.
    lr = torch.tensor(LR)
    with pytest.raises(AssertionError, match="ulp"):
        run_parity(name, {**kwargs, "lr": lr.item()}, np.float64, ulps=0, exact_sqrt=True, steps=3,
                   torch_kwargs={"lr": lr})


@pytest.mark.parametrize("lr", [torch.tensor(LR), torch.tensor(LR, dtype=torch.float64)], ids=["float32", "float64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adafactor_tensor_lr(dtype, lr):
    # Adafactor's reductions make it agree with torch within bounds (test_optim_adafactor);
    # the same bounds hold with a Tensor lr, with every step bit-identical in the variance.
    from test_optim_adafactor import PER_STEP

    run_parity("Adafactor", {"lr": lr, "weight_decay": 0.1}, dtype, ulps=PER_STEP[dtype], resync=True,
               torch_kwargs={"lr": lr})
    # And against gradclip itself: a tensor lr is exactly its NumPy scalar.
    a, b = [np.full(5, 2.0, dtype)], [np.full(5, 2.0, dtype)]
    oa, ob = optim.Adafactor(a, lr=lr, weight_decay=0.1), optim.Adafactor(b, lr=_as("numpy scalar", lr), weight_decay=0.1)
    for _ in range(3):
        oa.step(grads=[np.linspace(-1, 1, 5).astype(dtype)]), ob.step(grads=[np.linspace(-1, 1, 5).astype(dtype)])
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("lr", [torch.tensor(LR), torch.tensor(LR, dtype=torch.float64)], ids=["float32", "float64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_muon_tensor_lr_bitwise(dtype, lr):
    run_parity("Muon", {"lr": lr}, dtype, ulps=0, layouts=MATRIX_LAYOUTS, steps=6, torch_kwargs={"lr": lr})


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64], ids=["float32 lr", "float64 lr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lbfgs_tensor_lr(torch_reductions, dtype, lr_dtype, line_search_fn):
    # With torch's reductions (see test_optim_lbfgs): bit-identical parameters and state,
    # t included (torch's is a 0-d tensor of the lr's dtype, or of float64 where a float64 lr
    # met a float32 one; gradclip's a NumPy scalar of the same dtype).
    from test_optim_lbfgs import Side, _same, least_squares

    lr = torch.tensor(0.8, dtype=lr_dtype)
    init, f = least_squares(dtype)
    kw = dict(line_search_fn=line_search_fn, max_iter=4)
    ours, theirs = Side("gradclip", init, f, lr=lr, **kw), Side("torch", init, f, lr=lr, **kw)
    for step in range(3):
        assert ours.step() == theirs.step()
        assert ours.evaluations == theirs.evaluations
        for a, b in zip(ours.values(), theirs.values()):
            np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
        state, tstate = ours.state(), theirs.state()
        assert list(state) == list(tstate)
        for key, value in tstate.items():
            _same(state[key], value, f"{key} after step {step}")


@pytest.mark.parametrize("lr_dtype", [torch.float32, torch.float64], ids=["float32 lr", "float64 lr"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lbfgs_tensor_lr_as_shipped(dtype, lr_dtype):
    # gradclip's own reductions: one step (20 iterations) within the real tests' tolerance.
    from test_optim_lbfgs import TOLERANCE, Side, least_squares

    lr = torch.tensor(0.8, dtype=lr_dtype)
    init, f = least_squares(dtype)
    ours, theirs = Side("gradclip", init, f, lr=lr), Side("torch", init, f, lr=lr)
    ours.step(), theirs.step()
    scale = max(float(np.abs(b).max()) for b in theirs.values())
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours.values(), theirs.values())) <= TOLERANCE[dtype] * scale


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "NAdam"])
def test_clip_and_step_with_a_tensor_lr(name):
    for dtype in (np.float32, np.float64):
        check_clip_and_step(name, {"lr": torch.tensor(LR)}, dtype)
        check_clip_and_step(name, {"lr": np.array(LR, np.float32)}, dtype)


def test_state_dict_keeps_the_tensor_lr_and_torchs_loads():
    p = [Parameter(np.ones(4))]
    t = [torch.ones(4, dtype=torch.float64)]
    opt, topt = optim.Adam(p, lr=torch.tensor(LR)), torch.optim.Adam(t, lr=torch.tensor(LR))
    for _ in range(2):
        p[0].grad, t[0].grad = np.full(4, 0.5), torch.full((4,), 0.5, dtype=torch.float64)
        opt.step(), topt.step()
    np.testing.assert_array_equal(p[0].data, t[0].numpy())
    saved = opt.state_dict()
    assert isinstance(saved["param_groups"][0]["lr"], torch.Tensor)
    # A fresh gradclip optimizer loads either state dict and continues exactly as torch.
    for sd in (copy.deepcopy(saved), copy.deepcopy(topt.state_dict())):
        q = [Parameter(p[0].data.copy())]
        again = optim.Adam(q, lr=0.5)
        again.load_state_dict(sd)
        lr = again.param_groups[0]["lr"]
        assert isinstance(lr, torch.Tensor) and lr.dtype == torch.float32
        tq = [t[0].detach().clone()]
        tagain = torch.optim.Adam(tq, lr=0.5)
        tagain.load_state_dict(copy.deepcopy(topt.state_dict()))
        q[0].grad, tq[0].grad = np.full(4, -0.25), torch.full((4,), -0.25, dtype=torch.float64)
        again.step(), tagain.step()
        np.testing.assert_array_equal(q[0].data, tq[0].numpy())


def test_schedulers_fill_a_tensor_lr_in_place_like_torch():
    p, t = [Parameter(np.ones(2))], [torch.ones(2, dtype=torch.float64)]
    opt, topt = optim.SGD(p, lr=torch.tensor(0.1)), torch.optim.SGD(t, lr=torch.tensor(0.1))
    lr, tlr = opt.param_groups[0]["lr"], topt.param_groups[0]["lr"]
    sched, tsched = gls.StepLR(opt, step_size=2, gamma=0.3), torch.optim.lr_scheduler.StepLR(topt, step_size=2, gamma=0.3)
    for _ in range(5):
        p[0].grad, t[0].grad = np.ones(2), torch.ones(2, dtype=torch.float64)
        opt.step(), topt.step()
        sched.step(), tsched.step()
        assert opt.param_groups[0]["lr"] is lr and topt.param_groups[0]["lr"] is tlr
        assert lr.item() == tlr.item()
        last, tlast = sched.get_last_lr()[0], tsched.get_last_lr()[0]
        assert isinstance(last, torch.Tensor) and last is not lr and last.item() == tlast.item()
        np.testing.assert_array_equal(p[0].data, t[0].numpy())
    assert opt.param_groups[0]["initial_lr"] is not lr and opt.param_groups[0]["initial_lr"].item() == pytest.approx(0.1)
