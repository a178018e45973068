"""torch's type promotion for 0-d operands where a clip coefficient meets a gradient.

torch multiplies a 0-dim gradient by the 0-dim coefficient in the wider of the two dtypes and
rounds once (float16 through float32, as c10 converts a double), while a gradient with
dimensions takes the coefficient in its own precision. Checked bit for bit against real torch
over every gradient dtype x coefficient dtype x shape, and in the fused clip_and_step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gradclip
from gradclip import Parameter, optim

pytestmark = pytest.mark.torch

GRAD_DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
TOTAL_DTYPES = [np.float16, np.float32, np.float64]
SHAPES = [(), (1,), (1, 1), (3,)]


def random_grads(rng, dtype, shape, n):
    def one():
        g = rng.standard_normal(shape) * 10.0 ** rng.uniform(-3, 3)
        if np.dtype(dtype).kind == "c":
            g = g + 1j * rng.standard_normal(shape)
        return np.asarray(g).astype(dtype)

    return [one() for _ in range(n)]


def torch_grads(grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g.copy()).dtype))
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    return params


@pytest.mark.parametrize("grad_dtype", GRAD_DTYPES)
@pytest.mark.parametrize("total_dtype", TOTAL_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("foreach", [None, False])
def test_clip_grads_with_norm_promotes_0d_gradients_as_torch(grad_dtype, total_dtype, shape, foreach):
    rng = np.random.default_rng([int(np.dtype(grad_dtype).num), int(np.dtype(total_dtype).num), len(shape)])
    grads = random_grads(rng, grad_dtype, shape, 400)
    tparams = torch_grads(grads)
    for total in rng.uniform(1.5, 1e4, 3):
        total = total_dtype(total)
        before = [g.copy() for g in grads]
        gradclip.clip_grads_with_norm_(grads, 1.0, total)
        torch.nn.utils.clip_grads_with_norm_(tparams, 1.0, torch.tensor(total), foreach=foreach)
        if total_dtype == np.float16:
            # gradclip's documented difference: a float16 total gives a float32 coefficient
            # (torch: float16 arithmetic); only check that something was scaled.
            assert any(not np.array_equal(b, g) for b, g in zip(before, grads))
            for g, t in zip(grads, tparams):
                t.grad.copy_(torch.from_numpy(g.copy()))
            continue
        for i, (g, t) in enumerate(zip(grads, tparams)):
            assert g.tobytes() == t.grad.numpy().tobytes(), (i, before[i], g, t.grad)


@pytest.mark.parametrize("grad_dtype", [np.float16, np.float32, np.complex64])
def test_clip_grad_norm_of_a_mixed_list_scales_0d_gradients_in_float64(grad_dtype):
    """A float64 array in the list makes the total (and the coefficient) float64: 0-d
    gradients of narrower dtypes are multiplied in float64 and rounded once; given the same
    total the result is torch's."""
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(7) * 100] + random_grads(rng, grad_dtype, (), 300)
    tparams = torch_grads(grads)
    total = gradclip.clip_grad_norm_(grads, 1.0)
    assert total.dtype == np.float64
    torch.nn.utils.clip_grads_with_norm_(tparams, 1.0, torch.tensor(total))
    for g, t in zip(grads, tparams):
        assert g.tobytes() == t.grad.numpy().tobytes()


def test_the_rule_decides_some_results():
    """The test above can fail: on this data a float32 coefficient and the float64 product
    differ in about a quarter of the 0-d float32 results."""
    rng = np.random.default_rng(2)
    g = rng.standard_normal(1000).astype(np.float32)
    c = np.float64(1.0 / 3.0 + 1e-9)
    narrow = g * np.float32(c)
    wide = (g.astype(np.float64) * c).astype(np.float32)
    assert 0.1 < np.mean(narrow != wide) < 0.5


@pytest.mark.parametrize("name,kwargs", [("SGD", dict(momentum=0.9)), ("SGD", dict()), ("Adam", dict()),
                                         ("Adam", dict(weight_decay=0.1)), ("AdamW", dict())])
@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("write_back", [True, False])
def test_clip_and_step_applies_the_0d_rule_like_clip_grad_norm(name, kwargs, dtype, write_back):
    """The fused step clips exactly as clip_grad_norm_ followed by step() does, 0-d
    parameters included (a float64 parameter makes the coefficient float64)."""
    rng = np.random.default_rng(3)
    values = [rng.standard_normal(5)] + [np.asarray(rng.standard_normal()).astype(dtype) for _ in range(200)]
    grads = [rng.standard_normal(5) * 50] + [np.asarray(rng.standard_normal() * 50).astype(dtype) for _ in range(200)]
    fused_values = [v.copy() for v in values]
    fused_grads = [g.copy() for g in grads]
    fused = getattr(optim, name)(fused_values, lr=0.01, **kwargs)
    plain = getattr(optim, name)(values, lr=0.01, **kwargs)
    for _ in range(2):
        step_grads = [g.copy() for g in grads]
        total = gradclip.clip_grad_norm_(step_grads, 1.0)
        plain.step(grads=step_grads)
        given = [g.copy() for g in fused_grads]
        fused_total = fused.clip_and_step(1.0, grads=given, write_back=write_back)
        assert fused_total == total
        for a, b in zip(values, fused_values):
            assert a.tobytes() == b.tobytes()
        for g, h, orig in zip(step_grads, given, fused_grads):
            assert h.tobytes() == (g.tobytes() if write_back else orig.tobytes())


def test_parameter_0d_gradients_in_torch_sgd_are_torchs():
    """End to end against torch: clip_grad_norm_ over a mixed list then SGD, 0-d float32
    parameters and one float64, with the total forced equal (torch's own total may differ in
    its last bits)."""
    rng = np.random.default_rng(4)
    values = [rng.standard_normal(3)] + [np.asarray(rng.standard_normal(), np.float32) for _ in range(100)]
    grads = [rng.standard_normal(3) * 30] + [np.asarray(rng.standard_normal() * 30, np.float32) for _ in range(100)]
    params = [Parameter(v.copy()) for v in values]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    for t, g in zip(tparams, grads):
        t.grad = torch.from_numpy(g.copy())
    total = gradclip.clip_grad_norm_(params, 1.0)
    torch.nn.utils.clip_grads_with_norm_(tparams, 1.0, torch.tensor(total))
    for p, t in zip(params, tparams):
        assert p.grad.tobytes() == t.grad.numpy().tobytes()
    optim.SGD(params, lr=0.1).step()
    torch.optim.SGD(tparams, lr=0.1).step()
    for p, t in zip(params, tparams):
        assert p.data.tobytes() == t.detach().numpy().tobytes()


ELEMENTWISE = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax", "NAdam", "RAdam", "ASGD", "Rprop"]


@pytest.mark.parametrize("name", ELEMENTWISE)
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.complex64])
@pytest.mark.parametrize("write_back", [True, False])
def test_every_elementwise_optimizer_fuses_the_0d_rule(name, dtype, write_back):
    """clip_and_step == clip_grad_norm_ then step() for 0-d parameters (real and complex) in
    every elementwise optimizer, with a float64 array making the coefficient float64."""
    if np.dtype(dtype).kind == "c" and not getattr(optim, name)._supports_complex:
        pytest.skip(f"{name} takes no complex parameters")
    rng = np.random.default_rng(5)

    def scalar():
        x = rng.standard_normal() * 50
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal() * 50
        return np.asarray(x).astype(dtype)

    values = [rng.standard_normal(5)] + [scalar() for _ in range(60)]
    grads = [rng.standard_normal(5) * 50] + [scalar() for _ in range(60)]
    fused_values = [v.copy() for v in values]
    plain = getattr(optim, name)(values, lr=0.01)
    fused = getattr(optim, name)(fused_values, lr=0.01)
    for _ in range(2):
        step_grads = [g.copy() for g in grads]
        total = gradclip.clip_grad_norm_(step_grads, 1.0)
        plain.step(grads=step_grads)
        given = [g.copy() for g in grads]
        assert fused.clip_and_step(1.0, grads=given, write_back=write_back) == total
        for a, b in zip(values, fused_values):
            assert a.tobytes() == b.tobytes()
        for g, h, orig in zip(step_grads, given, grads):
            assert h.tobytes() == (g.tobytes() if write_back else orig.tobytes())
