"""Tensor hyper-parameters besides lr (see test_optim_tensor_lr): Adam's and AdamW's Tensor
betas and SGD's Tensor weight_decay, against torch 2.13's CPU single-tensor path.

Tensor betas (torch 2.13's Adam and AdamW take a pair of 1-element tensors):
torch's CPU single-tensor step computes with Tensor betas as 0-d tensors: ``1 - beta1 ** step``
and ``1 - beta2 ** step`` in the betas' dtype (``**`` with exponent 2 or 3 a product, else
``std::pow`` in double, rounded), ``lr / bias_correction1`` as ``Tensor.__rtruediv__`` (a
reciprocal times lr) for a float lr, ``bias_correction2 ** 0.5`` with torch's own ``sqrt``
kernel, and ``1 - beta1`` after converting beta1 to the parameter's dtype. gradclip computes
the same expressions in C. With torch's ``sqrt`` made correctly rounded (``exact_sqrt``, which
also covers ``** 0.5``), every step is bit-identical; with torch's own, a float32 beta2's
``bias_correction2 ** 0.5`` is sometimes one float32 ulp off (measured: float32 parameters 1
ulp apart per step, float64 parameters ~6e-8 relative, the float32 ulp of that scalar).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optim_parity import TORCH_HAS_FMA, check_clip_and_step, run_parity
from test_optim_tensor_lr import _raises_like_torch

from gradclip import Parameter, optim

needs_fma = pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")

CONFIGS = [
    ("Adam", {}),
    ("Adam", dict(weight_decay=0.1, amsgrad=True)),
    ("Adam", dict(maximize=True, decoupled_weight_decay=True, weight_decay=0.1)),
    ("AdamW", {}),
    ("AdamW", dict(amsgrad=True, weight_decay=0.05)),
]
BETAS = (0.9, 0.999)  # neither is a float32 number: the float32 tensors hold other values
LR = 0.0123


def _betas(dtype, shape=()):
    return tuple(torch.full(shape, b, dtype=dtype) for b in BETAS)


def _as(kind, betas):
    """What gradclip is given: the torch tensors themselves, or ndarrays of them."""
    return betas if kind == "tensor" else tuple(b.numpy().copy() for b in betas)


def _lr(kind):
    """A float, a NumPy scalar (a number to torch: it multiplies bc1's reciprocal, as a float)
    or a Tensor lr (it divides bc1)."""
    if kind == "float":
        return LR
    if isinstance(kind, type):
        return kind(LR)
    return torch.tensor(LR, dtype=kind)


def _params(dtype=np.float64):
    return [Parameter(np.ones((3, 4), dtype))], [torch.ones(3, 4, dtype=torch.float64)]


@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_betas_errors_are_torchs(name):
    t = torch.tensor(0.9)
    assert _raises_like_torch(name, dict(betas=(t, 0.999))) == "betas must be either both floats or both Tensors"
    _raises_like_torch(name, dict(betas=(0.9, torch.tensor(0.999))))
    assert (_raises_like_torch(name, dict(betas=_betas(torch.float32), foreach=True))
            == "betas[0] as a Tensor is not supported for capturable=False and foreach=True")
    _raises_like_torch(name, dict(betas=_betas(torch.float32), foreach=True),
                       dict(betas=_as("ndarray", _betas(torch.float32)), foreach=True))
    # Out of range: the constructor's message, formatting the tensor as torch does (a 0-d
    # tensor formats as its value).
    message = _raises_like_torch(name, dict(betas=(torch.tensor(1.0), torch.tensor(0.9))))
    assert message == "Invalid beta parameter at index 0: 1.0"
    _raises_like_torch(name, dict(betas=(torch.tensor(0.9), torch.tensor(-0.1))))
    # Several elements: torch's tensor fails its own range check (bool of a 2-element tensor);
    # an ndarray gets torch's 1-element message.
    _raises_like_torch(name, dict(betas=(torch.tensor([0.9, 0.8]), torch.tensor(0.9))))
    ps, _ = _params()
    with pytest.raises(ValueError, match=r"Tensor betas\[1\] must be 1-element"):
        getattr(optim, name)(ps, betas=(np.array(0.9), np.array([0.9, 0.99])))
    # A dtype gradclip does not reproduce: refused, before and at a step.
    for bad in (torch.tensor(0.9, dtype=torch.float16), np.array(0.9, np.float16), torch.tensor(0.9, dtype=torch.bfloat16)):
        with pytest.raises(TypeError, match="Tensor beta must be float32 or float64"):
            getattr(optim, name)(ps, betas=(bad, bad))


def test_tensor_betas_are_kept_as_torch_keeps_them():
    ps, ts = _params()
    for betas in (_betas(torch.float32, (1,)), _betas(torch.float64, (1, 1)), _as("ndarray", _betas(torch.float32, (1,)))):
        ours = optim.Adam(ps, betas=betas).param_groups[0]["betas"]
        for kept, given in zip(ours, betas):
            assert kept.shape == () and kept.dtype == given.dtype and type(kept) is type(given)
            assert float(kept) == float(given.reshape(-1)[0])
        if isinstance(betas[0], torch.Tensor):  # torch's own: the same 0-d tensors
            theirs = torch.optim.Adam(ts, betas=betas).param_groups[0]["betas"]
            assert [(t.shape, t.dtype, t.item()) for t in theirs] == [(k.shape, k.dtype, k.item()) for k in ours]


def test_an_edited_group_is_checked_before_anything_moves():
    ps, _ = _params()
    opt = optim.Adam(ps, betas=_betas(torch.float32))
    ps[0].grad = np.ones((3, 4))
    opt.step()
    before = ps[0].data.copy()
    opt.param_groups[0]["betas"] = (torch.tensor(0.9, dtype=torch.float16),) * 2
    for call in (opt.step, lambda: opt.clip_and_step(1.0)):
        with pytest.raises(TypeError, match=r"param_groups\[0\]\['betas'\]\[0\]: a Tensor beta must be float32"):
            call()
    for betas in ((np.array([0.9, 0.9]), np.array(0.9)), (torch.tensor([0.9, 0.9]), torch.tensor(0.9))):
        opt.param_groups[0]["betas"] = betas
        with pytest.raises(ValueError, match=r"Tensor param_groups\[0\]\['betas'\]\[0\] must be 1-element"):
            opt.step()
    np.testing.assert_array_equal(ps[0].data, before)
    assert float(opt.state[ps[0]]["step"]) == 1.0


@needs_fma
@pytest.mark.parametrize("lr", ["float", torch.float32, torch.float64, np.float32, np.float64],
                         ids=["float lr", "float32 lr", "float64 lr", "np_float32_lr", "np_float64_lr"])
@pytest.mark.parametrize("kind", ["tensor", "ndarray"])
@pytest.mark.parametrize("beta_dtype", [torch.float32, torch.float64], ids=["float32 betas", "float64 betas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{k}" for n, k in CONFIGS])
def test_tensor_betas_bitwise(name, kwargs, dtype, beta_dtype, kind, lr):
    # torch's own code (its sqrt made correctly rounded) against gradclip: params and every
    # state buffer after each step, a state_dict reload midway, a second group with lr 0.01.
    # (With a NumPy float32 lr and decoupled weight decay, torch's Python computes 1 - lr *
    # weight_decay with NumPy's promotion: float32 under NEP 50, as gradclip, but float64 under
    # NumPy 1.x, whose CI job deselects those cases by their id np_float32_lr.)
    betas = _betas(beta_dtype)
    run_parity(name, {**kwargs, "betas": _as(kind, betas), "lr": _lr(lr)}, dtype, ulps=0, exact_sqrt=True, steps=12,
               torch_kwargs={"betas": betas, "lr": _lr(lr)})


@needs_fma
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mixed_betas_after_an_edit_bitwise(dtype):
    # A group edited to one float and one Tensor beta (as CyclicLR with cycle_momentum writes a
    # float betas[0] over Tensor betas): torch computes each as what it is; so does gradclip.
    from optim_parity import make_problem

    arrays, tensors = make_problem(dtype)
    opt = optim.Adam(list(arrays), lr=LR, betas=_betas(torch.float32))
    topt = torch.optim.Adam(tensors, lr=LR, betas=_betas(torch.float32))
    rng = np.random.default_rng(5)
    for step in range(8):
        if step == 3:
            for o in (opt, topt):
                o.param_groups[0]["betas"] = (0.85, o.param_groups[0]["betas"][1])
        if step == 6:
            for o in (opt, topt):
                o.param_groups[0]["betas"] = (torch.tensor(0.8, dtype=torch.float64), 0.995)
        grads = [rng.standard_normal(a.shape).astype(dtype) for a in arrays]
        for t, g in zip(tensors, grads):
            t.grad = torch.from_numpy(g.copy())
        from optim_parity import correctly_rounded_sqrt

        with correctly_rounded_sqrt():
            topt.step()
        opt.step(grads=grads)
        for a, t in zip(arrays, tensors):
            np.testing.assert_array_equal(a, t.detach().numpy(), err_msg=f"step {step}")


@needs_fma
@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("beta_dtype", [torch.float32, torch.float64], ids=["float32 betas", "float64 betas"])
def test_tensor_betas_complex_bitwise(dtype, beta_dtype):
    betas = _betas(beta_dtype)
    for name, kwargs in CONFIGS[:2] + CONFIGS[3:4]:
        run_parity(name, {**kwargs, "betas": betas}, dtype, ulps=0, exact_sqrt=True, steps=8)


@needs_fma
@pytest.mark.parametrize("beta_dtype", [torch.float32, torch.float64], ids=["float32 betas", "float64 betas"])
def test_tensor_betas_float16_bitwise(beta_dtype):
    from test_optim_float16_torch import assert_same_bits, run_both

    for name, kwargs in [("Adam", dict(lr=0.01)), ("Adam", dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
                         ("AdamW", dict(lr=0.01))]:
        for n in (7, 64, 130, 1000):
            for layout in ("contiguous", "strided"):
                assert_same_bits(*run_both(name, {**kwargs, "betas": _betas(beta_dtype)}, layout, n, steps=6))


@needs_fma
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_betas_with_torchs_sqrt(dtype):
    # torch's own sqrt of the float32 bias correction: one float32 ulp of the update at most,
    # per step (resync); float64 betas take float64's sqrt, exact here.
    betas = _betas(torch.float32)
    worst = run_parity("Adam", {"betas": betas}, dtype, ulps=10**9, resync=True, steps=30)
    bound = 1 if dtype == np.float32 else 2 ** 29  # a float32 ulp, in float64 ulps
    assert worst["param"] <= bound and worst["exp_avg"] == worst["exp_avg_sq"] == 0, worst


@needs_fma
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_tensor_betas_are_not_their_floats(name):
    # The tests above can fail: gradclip given the floats the float32 tensors hold computes
    # otherwise (float64 bias corrections), and so do float64 tensors given as floats
    # (torch's reciprocal-times-lr and its products for steps 2 and 3).
    for beta_dtype in (torch.float32, torch.float64):
        betas = _betas(beta_dtype)
        floats = tuple(b.item() for b in betas)
        with pytest.raises(AssertionError, match="ulp"):
            run_parity(name, {"betas": floats}, np.float64, ulps=0, exact_sqrt=True, steps=4,
                       torch_kwargs={"betas": betas})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_clip_and_step_with_tensor_betas(name, dtype):
    for beta_dtype in (torch.float32, torch.float64):
        check_clip_and_step(name, {"betas": _betas(beta_dtype), "amsgrad": True}, dtype)
        check_clip_and_step(name, {"betas": _as("ndarray", _betas(beta_dtype))}, dtype, write_back=False)


# -- SGD's Tensor weight_decay -------------------------------------------------------------------
# torch 2.13's SGD takes weight_decay as a Tensor and passes it to grad.add(param, alpha=...)
# (with requires_grad, grad.addcmul_(param, weight_decay): the same fused multiply-add), which
# reads its value: a float32 tensor's float32 value, not the float it was made from.

WD = 0.0123


@needs_fma
@pytest.mark.parametrize("wd", [torch.tensor(WD), torch.tensor(WD, dtype=torch.float64), torch.tensor(WD, requires_grad=True),
                                "ndarray"], ids=["float32", "float64", "requires_grad", "ndarray"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("kwargs", [{}, dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                    dict(momentum=0.9, dampening=0.2, maximize=True)], ids=str)
def test_sgd_tensor_weight_decay_bitwise(kwargs, dtype, wd):
    theirs = torch.tensor(WD) if isinstance(wd, str) else wd
    ours = theirs.numpy().copy() if isinstance(wd, str) else wd
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gradclip reads a requires_grad tensor without autograd's warning
        run_parity("SGD", {**kwargs, "lr": 0.1, "weight_decay": ours}, dtype, ulps=0, steps=12,
                   torch_kwargs={"weight_decay": theirs})


@needs_fma
def test_sgd_tensor_weight_decay_is_not_its_float():
    with pytest.raises(AssertionError, match="ulp"):
        run_parity("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": WD}, np.float64, ulps=0, steps=3,
                   torch_kwargs={"weight_decay": torch.tensor(WD)})


def test_sgd_tensor_weight_decay_errors():
    ps, ts = _params()
    # Negative: torch's message (a 0-d tensor formats as its value).
    _raises_like_torch("SGD", dict(lr=0.1, weight_decay=torch.tensor(-0.5)))
    # With dimensions: torch fails at its first step (add(): argument 'alpha' must be Number);
    # gradclip says so at construction, and at a step for an edited group.
    topt = torch.optim.SGD(ts, lr=0.1, weight_decay=torch.tensor([WD]))
    ts[0].grad = torch.ones(3, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="alpha"):
        topt.step()
    for bad in (torch.tensor([WD]), np.array([WD]), torch.tensor(True), np.array(1j)):
        with pytest.raises(TypeError, match="weight_decay as a Tensor must be 0-d and real"):
            optim.SGD(ps, lr=0.1, weight_decay=bad)
    for fine in (torch.tensor(1), np.array(0)):  # integers: torch's step reads them too
        optim.SGD(ps, lr=0.1, weight_decay=fine)
    opt = optim.SGD(ps, lr=0.1, weight_decay=torch.tensor(WD))
    assert opt.param_groups[0]["weight_decay"].dtype == torch.float32  # kept, as torch keeps it
    ps[0].grad = np.ones((3, 4))
    opt.param_groups[0]["weight_decay"] = np.array([WD])
    with pytest.raises(TypeError, match=r"param_groups\[0\]\['weight_decay'\] as a Tensor must be 0-d"):
        opt.step()
    np.testing.assert_array_equal(ps[0].data, 1.0)
