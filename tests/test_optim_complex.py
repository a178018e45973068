"""Complex parameters (complex64/complex128) against torch.optim 2.13.

torch's Adam/AdamW (and NAdam, RAdam, ASGD, Rprop) view a complex parameter, its gradient
and state as real pairs (``torch.view_as_real``), except that Adam's coupled weight decay runs
before the view, as a complex add. SGD never views: it updates complex tensors with complex
arithmetic, where ``a.add(b, alpha=s)`` is the complex product ``b * (s + 0i)`` rounded, then
the sum rounded -- two roundings, not the fused multiply-add of the real kernels. gradclip's
kernels take complex operands as real pairs and round as torch does in each case (measured:
bit-identical for SGD, ASGD and Rprop; Adam/AdamW/NAdam/RAdam as in the real dtypes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from optim_parity import TORCH_HAS_FMA, VECTOR_LAYOUTS, check_clip_and_step, run_parity

import gradclip
from gradclip import Parameter, optim

COMPLEX = [np.complex64, np.complex128]

SGD_CONFIGS = [
    {}, dict(momentum=0.9), dict(momentum=0.9, dampening=0.1, weight_decay=0.1),
    dict(momentum=0.9, nesterov=True, weight_decay=0.1, maximize=True), dict(weight_decay=0.1),
]
ADAM_CONFIGS = [
    ("Adam", {}), ("Adam", dict(weight_decay=0.1)), ("Adam", dict(amsgrad=True, maximize=True)),
    ("Adam", dict(weight_decay=0.1, decoupled_weight_decay=True)), ("AdamW", {}), ("AdamW", dict(amsgrad=True)),
]


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("layouts", [None, VECTOR_LAYOUTS], ids=["strided", "vectorised"])
@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=str)
def test_sgd_complex_bitwise(kwargs, dtype, layouts):
    run_parity("SGD", kwargs, dtype, ulps=0, layouts=layouts)


def test_sgd_complex_is_not_the_real_pair_fma():
    # The test above can only pass because the complex path rounds twice: the same values as
    # real pairs (which torch updates with fused multiply-adds) give different bits.
    rng = np.random.default_rng(0)
    z = (rng.standard_normal(4096) + 1j * rng.standard_normal(4096)).astype(np.complex64)
    g = (rng.standard_normal(4096) + 1j * rng.standard_normal(4096)).astype(np.complex64)
    a, b = z.copy(), z.view(np.float32).copy()
    optim.SGD([a], lr=0.0123).step(grads=[g.copy()])
    optim.SGD([b], lr=0.0123).step(grads=[g.view(np.float32).copy()])
    t = torch.from_numpy(z.copy())
    t.grad = torch.from_numpy(g.copy())
    torch.optim.SGD([t], lr=0.0123).step()
    np.testing.assert_array_equal(a, t.numpy())
    assert not np.array_equal(a.view(np.float32), b)


# Per-step distances (resync): torch's sqrt (MKL) is not correctly rounded, so an update is
# 1 ulp of itself off; in ulps of a parameter element near zero that is up to 256 (measured,
# as for real float32 parameters). test_adam_complex_bitwise_when_sqrt_is_exact shows that
# the sqrt is the only cause.
ADAM_PER_STEP = {"param": 512}


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name,kwargs", ADAM_CONFIGS, ids=str)
def test_adam_complex(name, kwargs, dtype):
    # The moments are bit-identical (lerp_, addcmul_; coupled decay as a complex add); the
    # parameter differs by what torch's sqrt does (as for real parameters).
    run_parity(name, kwargs, dtype, ulps=ADAM_PER_STEP, resync=True)
    run_parity(name, kwargs, dtype, ulps=ADAM_PER_STEP, resync=True, layouts=VECTOR_LAYOUTS)


@pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")
@pytest.mark.parametrize("dtype", COMPLEX)
def test_adam_complex_bitwise_when_sqrt_is_exact(dtype):
    rng = np.random.default_rng(9)
    choices = np.array([-3, -2, -1.5, -1, -0.5, -0.25, 0.25, 0.5, 1, 1.5, 2, 3])
    pick = lambda shape: (rng.choice(choices, size=shape) + 1j * rng.choice(choices, size=shape)).astype(dtype)  # noqa: E731
    for name, kwargs in [("Adam", dict(amsgrad=True)), ("AdamW", {}), ("Adam", dict(maximize=True))]:
        arrays = [pick((3, 4)), pick(9)]
        tensors = [torch.from_numpy(a.copy()) for a in arrays]
        opt = getattr(optim, name)(arrays, lr=0.01, betas=(0.9, 0.0), **kwargs)
        topt = getattr(torch.optim, name)(tensors, lr=0.01, betas=(0.9, 0.0), **kwargs)
        for _ in range(10):
            grads = [pick(a.shape) for a in arrays]
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g.copy())
            topt.step()
            opt.step(grads=grads)
            for a, t in zip(arrays, tensors):
                np.testing.assert_array_equal(a, t.numpy())


@pytest.mark.parametrize("dtype", COMPLEX)
@pytest.mark.parametrize("name,kwargs", [("SGD", dict(momentum=0.9, weight_decay=0.1)), ("Adam", dict(weight_decay=0.1)),
                                         ("AdamW", dict(amsgrad=True))])
def test_clip_and_step_complex(name, kwargs, dtype):
    check_clip_and_step(name, kwargs, dtype)
    check_clip_and_step(name, kwargs, dtype, write_back=False)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "NAdam", "RAdam", "ASGD", "Rprop"])
def test_complex_state_is_complex_like_torch(name):
    kwargs = dict(momentum=0.9) if name == "SGD" else {}
    p = Parameter(np.array([1 + 2j, -0.5j], np.complex64))
    t = torch.tensor([1 + 2j, -0.5j], dtype=torch.complex64)
    opt, topt = getattr(optim, name)([p], **kwargs), getattr(torch.optim, name)([t], **kwargs)
    p.grad = np.array([0.5 - 1j, 2j], np.complex64)
    t.grad = torch.from_numpy(p.grad.copy())
    opt.step()
    topt.step()
    assert list(opt.state[p]) == list(topt.state[t])
    for key, value in topt.state[t].items():
        assert opt.state[p][key].dtype == value.numpy().dtype, key
        np.testing.assert_allclose(opt.state[p][key], value.numpy(), rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-6)


def test_complex_parameters_need_complex_gradients():
    p = Parameter(np.ones(2, np.complex128))
    p.grad = np.ones(2, np.complex128)
    opt = optim.Adam([p])
    with pytest.raises(TypeError, match="dtype"):
        opt.step(grads=[np.ones(2)])
    np.testing.assert_array_equal(p.data, 1)
    gradclip.clip_grad_norm_([p], 1.0)  # the clipping functions take complex gradients too


@pytest.mark.parametrize("name,message", [("Adafactor", "Adafactor does not support complex parameters"),
                                          ("Muon", "Muon does not support complex parameters")])
@pytest.mark.parametrize("dtype", COMPLEX)
def test_adafactor_and_muon_refuse_complex_parameters_like_torch(name, message, dtype):
    # torch accepts them when constructed and raises when a step reaches one with a gradient;
    # gradclip raises the same error, before modifying anything (torch would already have
    # updated the groups before the offending one).
    rng = np.random.default_rng(0)
    real = rng.standard_normal((3, 4))
    z = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(dtype)
    params = [Parameter(real.copy()), Parameter(z.copy())]
    tensors = [torch.from_numpy(real.copy()), torch.from_numpy(z.copy())]
    opt = getattr(optim, name)([{"params": [params[0]]}, {"params": [params[1]]}])
    topt = getattr(torch.optim, name)([{"params": [tensors[0]]}, {"params": [tensors[1]]}])
    # Without a gradient the complex parameter is skipped: both step.
    params[0].grad = np.ones((3, 4))
    tensors[0].grad = torch.ones(3, 4, dtype=torch.float64)
    opt.step(), topt.step()
    np.testing.assert_allclose(params[0].data, tensors[0].numpy(), rtol=1e-6)
    before = [p.data.copy() for p in params]
    params[1].grad = np.ones((3, 4), dtype)
    tensors[1].grad = torch.ones(3, 4, dtype=tensors[1].dtype)
    with pytest.raises(RuntimeError) as theirs:
        topt.step()
    for call in (lambda: opt.step(), lambda: opt.clip_and_step(1.0)):
        with pytest.raises(RuntimeError) as ours:
            call()
        assert str(ours.value) == str(theirs.value) == message
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p.data, b)
        np.testing.assert_array_equal(params[0].grad, 1.0)  # not clipped either
    with pytest.raises(RuntimeError, match=message):
        getattr(optim, name)([z.copy()]).step(grads=[np.ones((3, 4), dtype)])


def test_lbfgs_takes_complex_parameters():
    # Its parity with torch is tested in test_optim_lbfgs.py.
    assert optim.LBFGS._supports_complex
    optim.LBFGS([Parameter(np.zeros(3, np.complex64)), Parameter(np.zeros(2, np.float32))])
