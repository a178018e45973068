"""gradclip optimizer state saved with torch.save, loaded with torch.load(weights_only=True)
into torch's optimizer, and back; training continues identically both ways."""

import io

import numpy as np
import pytest
import torch

import gradclip
import gradclip.optim as optim

pytestmark = pytest.mark.torch

CASES = {
    "sgd-momentum": (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    "sgd-nesterov": (optim.SGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True)),
    "adam": (optim.Adam, torch.optim.Adam, dict(lr=1e-2, betas=(0.8, 0.99))),
    "adam-amsgrad": (optim.Adam, torch.optim.Adam, dict(lr=1e-2, amsgrad=True)),
    "adamw": (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.1)),
}
SHAPES = [(4, 3), (5,), ()]
GRADS = [[np.random.default_rng(100 * s + i).standard_normal(shape).astype(np.float32)
          for i, shape in enumerate(SHAPES)] for s in range(6)]


def through_torch_save(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def gradclip_steps(opt, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.copy()
        opt.step()


def torch_steps(opt, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = torch.from_numpy(gi.copy())
        opt.step()


def assert_same(ours, theirs, adam):
    for p, t in zip(ours, theirs):
        if adam:  # torch's MKL sqrt is not correctly rounded: 1 ulp (README)
            np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(p.data, t.detach().numpy(), strict=True)


def start():
    rng = np.random.default_rng(7)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


@pytest.mark.parametrize("case", CASES)
def test_gradclip_state_into_torch_and_back(case):
    ours_cls, torch_cls, kwargs = CASES[case]
    adam = ours_cls is not optim.SGD
    # Reference: torch for all six steps.
    ref = [torch.nn.Parameter(torch.from_numpy(v)) for v in start()]
    ref_opt = torch_cls(ref, foreach=False, **kwargs)
    torch_steps(ref_opt, ref, GRADS)

    # gradclip for three steps, then torch from gradclip's saved state for three more.
    params = [gradclip.Parameter(v) for v in start()]
    opt = ours_cls(params, **kwargs)
    gradclip_steps(opt, params, GRADS[:3])
    saved = through_torch_save(optim.state_dict_to_torch(opt.state_dict()))
    assert all(isinstance(v, torch.Tensor) for s in saved["state"].values() for v in s.values())
    moved = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    torch_opt = torch_cls(moved, foreach=False, **kwargs)
    torch_opt.load_state_dict(saved)
    torch_steps(torch_opt, moved, GRADS[3:])
    assert_same([gradclip.Parameter(t.detach().numpy()) for t in moved], ref, adam)

    # And torch's state after six steps back into gradclip, for six more on both sides.
    back = [gradclip.Parameter(t.detach().numpy().copy()) for t in moved]
    opt2 = ours_cls(back, **kwargs)
    opt2.load_state_dict(optim.state_dict_from_torch(through_torch_save(torch_opt.state_dict())))
    assert all(isinstance(v, np.ndarray) for s in opt2.state.values() for v in s.values())
    gradclip_steps(opt2, back, GRADS)
    torch_steps(torch_opt, moved, GRADS)
    assert_same(back, moved, adam)


@pytest.mark.parametrize("case", ["sgd-momentum", "adam"])
def test_continuing_after_a_round_trip_equals_never_stopping(case):
    ours_cls, _, kwargs = CASES[case]
    straight = [gradclip.Parameter(v) for v in start()]
    straight_opt = ours_cls(straight, **kwargs)
    gradclip_steps(straight_opt, straight, GRADS)

    params = [gradclip.Parameter(v) for v in start()]
    opt = ours_cls(params, **kwargs)
    gradclip_steps(opt, params, GRADS[:2])
    saved = through_torch_save(optim.state_dict_to_torch(opt.state_dict()))
    resumed = [gradclip.Parameter(p.data.copy()) for p in params]
    opt2 = ours_cls(resumed, **kwargs)
    opt2.load_state_dict(optim.state_dict_from_torch(saved))
    gradclip_steps(opt2, resumed, GRADS[2:])
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a.data, b.data, strict=True)


def test_raw_gradclip_state_is_refused_by_weights_only_load():
    # Why the conversion exists: ndarrays are not among weights_only's allowed types.
    p = gradclip.Parameter(np.zeros(2, np.float32))
    p.grad = np.ones(2, np.float32)
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    opt.step()
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported"):
        through_torch_save(opt.state_dict())


def test_to_torch_copies_and_keeps_dtypes():
    p = gradclip.Parameter(np.zeros(3, np.float64))
    p.grad = np.ones(3)
    opt = optim.Adam([p])
    opt.step()
    sd = opt.state_dict()
    converted = optim.state_dict_to_torch(sd)["state"][0]
    assert converted["step"].dtype == torch.float32 and converted["step"].shape == ()
    assert converted["exp_avg"].dtype == torch.float64
    converted["exp_avg"][0] = 123.0
    assert sd["state"][0]["exp_avg"][0] != 123.0
    assert optim.state_dict_to_torch(sd)["param_groups"][0]["betas"] == (0.9, 0.999)


def test_from_torch_refuses_non_cpu_tensors():
    sd = {"state": {0: {"momentum_buffer": torch.zeros(2, device="meta")}}, "param_groups": []}
    with pytest.raises(ValueError, match="map_location='cpu'"):
        optim.state_dict_from_torch(sd)
