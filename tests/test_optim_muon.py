"""Muon against torch.optim.Muon (torch 2.13), with the measured tolerances.

gradclip runs torch's single-tensor Muon: the momentum lerps and the final add_ in C with
torch's fma rounding (bit-identical), the Newton-Schulz iteration in bfloat16 emulated on
NumPy's matmul (float64 products of bfloat16 values, rounded to float32 then bfloat16 after
every torch operation). Measured: each single operation of the iteration agrees with torch's
oneDNN bfloat16 kernels on all but a few elements in 10^4 (float32 accumulation order), and
the iteration amplifies those: on 4x3 to 40x30 matrices the result is bit-identical, on
64x128 to 256x64 it differs in up to 50% of elements by 1-2 bfloat16 ulps, a relative
Frobenius error of at most 4.3e-3 (bfloat16's own precision is 3.9e-3).
"""

import numpy as np
import pytest
import torch
from optim_parity import MATRIX_LAYOUTS, check_clip_and_step, run_parity
from torch.optim._muon import _zeropower_via_newtonschulz as torch_zeropower

from gradclip import Parameter, optim
from gradclip.optim._numpy_ops import round_bf16
from gradclip.optim.muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, zeropower_via_newtonschulz

CONFIGS = [
    {},
    {"lr": 0.01},
    {"weight_decay": 0.2},
    {"momentum": 0.8},
    {"ns_steps": 6},
    {"nesterov": False},
    {"adjust_lr_fn": "original"},
    {"adjust_lr_fn": "match_rms_adamw"},
]
COEFS = (DEFAULT_A, DEFAULT_B, DEFAULT_C)


@pytest.mark.parametrize("kwargs", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_matrices_bit_identical(kwargs, dtype):
    # Matrices up to 5x4 (strided and transposed too): measured bit-identical, state included.
    run_parity("Muon", kwargs, dtype, ulps=0, layouts=MATRIX_LAYOUTS, steps=10)  # torch is slow here


@pytest.mark.parametrize("shape", [(40, 30), (64, 128), (96, 96), (256, 64)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_newton_schulz_within_bf16_tolerance(shape, dtype):
    g = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    theirs = torch_zeropower(torch.from_numpy(g), COEFS, 5, 1e-7).float().numpy()
    ours = zeropower_via_newtonschulz(g, COEFS, 5, 1e-7)
    assert ours.dtype == np.float32 and ours.shape == shape
    np.testing.assert_array_equal(round_bf16(ours), ours)  # bfloat16 values
    assert np.linalg.norm(ours - theirs) <= 1e-2 * np.linalg.norm(theirs)
    # Orthogonalised, roughly: singular values within torch's band (0.5, 1.5).
    s = np.linalg.svd(ours.astype(np.float64), compute_uv=False)
    assert s.min() > 0.4 and s.max() < 1.6


def test_large_matrices_within_tolerance():
    layouts = [((64, 128), lambda x: x), ((96, 96), lambda x: x.T), ((256, 64), lambda x: x[:, :])]
    rng = np.random.default_rng(3)
    bases = [rng.standard_normal(s).astype(np.float32) for s, _ in layouts]
    ours = [Parameter(v(b.copy())) for (_, v), b in zip(layouts, bases)]
    theirs = [v(torch.from_numpy(b.copy())) for (_, v), b in zip(layouts, bases)]
    lr, steps = 0.02, 6
    opt, topt = optim.Muon(ours, lr=lr), torch.optim.Muon(theirs, lr=lr)
    for _ in range(steps):
        for p, t in zip(ours, theirs):
            g = rng.standard_normal(p.data.shape).astype(np.float32)
            p.grad, t.grad = g, torch.from_numpy(g.copy())
        opt.step(), topt.step()
    for p, t in zip(ours, theirs):
        # Each step moves a parameter by lr * adjusted ratio * |update| (<= ~1); a bfloat16
        # difference of the update is 2^-8 of it.
        assert np.abs(p.data - t.numpy()).max() <= 2 * steps * lr * 2.0**-7
        np.testing.assert_array_equal(opt.state[p]["momentum_buffer"], topt.state[t]["momentum_buffer"].numpy())


@pytest.mark.parametrize("write_back", [True, False])
def test_clip_and_step_is_clip_then_step(write_back):
    check_clip_and_step("Muon", {"lr": 0.01}, np.float32, layouts=MATRIX_LAYOUTS, write_back=write_back)


def test_state_and_defaults_like_torch():
    p, t = Parameter(np.ones((3, 2), np.float32)), torch.ones(3, 2)
    opt, topt = optim.Muon([p]), torch.optim.Muon([t])
    assert opt.defaults == topt.defaults
    assert opt.state_dict()["param_groups"] == topt.state_dict()["param_groups"]
    p.grad, t.grad = np.ones((3, 2), np.float32), torch.ones(3, 2)
    opt.step(), topt.step()
    assert list(opt.state[p]) == list(topt.state[t]) == ["momentum_buffer"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lr": -1.0}, "Learning rate should be >= 0 but is: -1.0"),
        ({"momentum": -1.0}, "momentum should be >= 0 but is: -1.0"),
        ({"weight_decay": -1.0}, "weight decay should be >= 0 but is: -1.0"),
        ({"adjust_lr_fn": "nope"}, "Adjust learning rate function nope is not supported"),
    ],
)
def test_constructor_errors_like_torch(kwargs, message):
    with pytest.raises(ValueError) as ours:
        optim.Muon([Parameter(np.zeros((2, 2)))], **kwargs)
    with pytest.raises(ValueError) as theirs:
        torch.optim.Muon([torch.zeros(2, 2)], **kwargs)
    assert str(ours.value) == str(theirs.value) == message


def test_only_matrices():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters whereas we found a parameter with size: \(3,\)"):
        optim.Muon([Parameter(np.zeros(3))])
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        torch.optim.Muon([torch.zeros(3)])
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        optim.Muon([Parameter(np.zeros((2, 2, 2)))])


def test_newton_schulz_errors_like_torch():
    g = np.zeros((2, 2))
    with pytest.raises(ValueError, match="less than 100"):
        zeropower_via_newtonschulz(g, COEFS, 100, 1e-7)
    with pytest.raises(ValueError, match="2D matrix"):
        zeropower_via_newtonschulz(np.zeros(3), COEFS, 5, 1e-7)
    with pytest.raises(ValueError, match="exactly 3 values"):
        zeropower_via_newtonschulz(g, (1.0, 2.0), 5, 1e-7)


def test_bad_state_changes_nothing():
    p, q = Parameter(np.ones((2, 3))), Parameter(np.ones((3, 3)))
    opt = optim.Muon([p, q])
    p.grad, q.grad = np.ones((2, 3)), np.ones((3, 3))
    opt.state[q]["momentum_buffer"] = np.zeros((3, 2))
    with pytest.raises(ValueError, match="momentum_buffer"):
        opt.step()
    assert (p.data == 1).all() and (q.data == 1).all() and "momentum_buffer" not in opt.state[p]
