"""A user's own Optimizer subclass, written in Python as one would for torch.

Its step loops over param_groups, reads p.grad, writes p.data in place and keeps state in
self.state[p]; state_dict/load_state_dict, zero_grad, add_param_group and clip_and_step must
work with it, and its numbers must equal the same subclass written against torch.optim.
"""

import copy

import numpy as np
import pytest
import torch

import gradclip
from gradclip import Parameter, optim


class MomentumSGD(optim.Optimizer):
    """Heavy-ball SGD with a step counter: arrays, an int and a float in the state."""

    def __init__(self, params, lr=0.1, momentum=0.9):
        if lr < 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr, "momentum": momentum})

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["n"] = 0
                    state["buf"] = np.zeros_like(p.data)
                    state["last_lr"] = 0.0
                state["n"] += 1
                state["buf"] *= group["momentum"]
                state["buf"] += p.grad
                state["last_lr"] = group["lr"] / state["n"]
                p.data -= state["last_lr"] * state["buf"]
        return loss


class TorchMomentumSGD(torch.optim.Optimizer):
    """The same optimizer written for torch."""

    def __init__(self, params, lr=0.1, momentum=0.9):
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if len(state) == 0:
                    state["n"] = 0
                    state["buf"] = torch.zeros_like(p)
                    state["last_lr"] = 0.0
                state["n"] += 1
                state["buf"].mul_(group["momentum"]).add_(p.grad)
                state["last_lr"] = group["lr"] / state["n"]
                p.sub_(state["last_lr"] * state["buf"])
        return loss


def _problem(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in [(3, 4), (5,), (2, 2)]]
    grads = [[rng.standard_normal(v.shape).astype(dtype) for v in values] for _ in range(8)]
    for g in grads[::3]:
        g[2] = None  # a parameter without a gradient on some steps
    return values, grads


def _groups(params):
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.01, "momentum": 0.5}]


def _set(params, grads, torch_side=False):
    for p, g in zip(params, grads):
        if torch_side:
            p.grad = None if g is None else torch.from_numpy(g.copy())
        else:
            p.grad = None if g is None else g.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_subclass_matches_torch_subclass_through_a_state_dict_reload(dtype):
    values, grads = _problem(dtype)
    ours = [Parameter(v.copy()) for v in values]
    theirs = [torch.from_numpy(v.copy()) for v in values]
    opt, topt = MomentumSGD(_groups(ours)), TorchMomentumSGD(_groups(theirs))
    for step, g in enumerate(grads):
        if step == 4:
            sd, tsd = copy.deepcopy(opt.state_dict()), copy.deepcopy(topt.state_dict())
            assert sd["param_groups"] == tsd["param_groups"]
            assert list(sd["state"]) == list(tsd["state"])
            for k in tsd["state"]:
                assert list(sd["state"][k]) == list(tsd["state"][k])
            opt, topt = MomentumSGD(_groups(ours)), TorchMomentumSGD(_groups(theirs))
            opt.load_state_dict(sd)
            topt.load_state_dict(tsd)
        _set(ours, g)
        _set(theirs, g, torch_side=True)
        opt.step(), topt.step()
        for p, t in zip(ours, theirs):
            np.testing.assert_array_equal(p.data, t.numpy())
            s, ts = opt.state[p], topt.state[t]
            assert list(s) == list(ts)
            if ts:
                assert s["n"] == ts["n"] and type(s["n"]) is int
                assert s["last_lr"] == ts["last_lr"]
                np.testing.assert_array_equal(s["buf"], ts["buf"].numpy())
                assert s["buf"].dtype == dtype


def test_round_trip_continues_identically_and_owns_its_arrays():
    values, grads = _problem()
    a = [Parameter(v.copy()) for v in values]
    b = [Parameter(v.copy()) for v in values]
    oa, ob = MomentumSGD(_groups(a)), MomentumSGD(_groups(b))
    for g in grads[:3]:
        _set(a, g), _set(b, g)
        oa.step(), ob.step()
    sd = ob.state_dict()
    ob = MomentumSGD(_groups(b))
    ob.load_state_dict(sd)
    assert ob.state[b[0]]["buf"] is not sd["state"][0]["buf"]  # copied on load
    for g in grads[3:]:
        _set(a, g), _set(b, g)
        oa.step(), ob.step()
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.data, y.data)


def test_load_casts_state_to_the_parameter_dtype():
    p = Parameter(np.ones(3, np.float32))
    opt = MomentumSGD([p])
    p.grad = np.ones(3, np.float32)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["buf"] = sd["state"][0]["buf"].astype(np.float64)
    opt.load_state_dict(sd)
    assert opt.state[p]["buf"].dtype == np.float32


def test_zero_grad_add_param_group_and_clip_and_step():
    values, grads = _problem()
    a = [Parameter(v.copy()) for v in values]
    b = [Parameter(v.copy()) for v in values]
    oa, ob = MomentumSGD(a[:2]), MomentumSGD(b[:2])
    oa.add_param_group({"params": a[2:], "lr": 0.01})
    ob.add_param_group({"params": b[2:], "lr": 0.01})
    for g in grads:
        scaled = [None if x is None else 5 * x for x in g]
        _set(a, scaled), _set(b, scaled)
        n1 = gradclip.clip_grad_norm_(a, 1.0)
        oa.step()
        n2 = ob.clip_and_step(1.0)
        assert n1 == n2
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.data, y.data)
            if x.grad is not None:
                np.testing.assert_array_equal(x.grad, y.grad)
    ob.zero_grad()
    assert all(p.grad is None for p in b)
    with pytest.raises(TypeError, match="grads="):
        ob.clip_and_step(1.0, grads=[None] * 3)


@pytest.mark.parametrize(
    "form",
    ["return_info", "per_group", "autoclip", "agc", "skip", "write_back=False"],
)
def test_clip_and_step_beyond_torch_on_a_subclass_is_clip_then_its_step(form):
    """The rich forms of clip_and_step on a subclass with its own step(): the gradients are
    clipped in place (as the matching clip function would), then its step() runs."""
    values, grads = _problem()
    a = [Parameter(v.copy()) for v in values]
    b = [Parameter(v.copy()) for v in values]
    oa, ob = MomentumSGD(_groups(a)), MomentumSGD(_groups(b))
    for p in b[2:]:
        ob.param_groups[1]["max_norm"] = 0.3
    clip_a, clip_b = gradclip.AutoClip(50.0), gradclip.AutoClip(50.0)
    for step, g in enumerate(grads):
        scaled = [None if x is None else 5 * x for x in g]
        if form == "skip" and step == 2:
            scaled[0] = np.full_like(scaled[0], np.nan)
        _set(a, scaled), _set(b, scaled)
        before = [p.data.copy() for p in a]
        if form == "return_info":
            info = ob.clip_and_step(1.0, return_info=True)
            assert info.total_norm == gradclip.clip_grad_norm_(a, 1.0)
        elif form == "per_group":
            totals = ob.clip_and_step(1.0, per_group=True)
            assert totals[0] == gradclip.clip_grad_norm_(a[:2], 1.0)
            with_grad = [p for p in a[2:] if p.grad is not None]
            if with_grad:
                assert totals[1] == gradclip.clip_grad_norm_(with_grad, 0.3)
        elif form == "autoclip":
            ob.clip_and_step(clipper=clip_b)
            clip_a(a)
        elif form == "agc":
            assert ob.clip_and_step(clipper=gradclip.AGC(0.01)) is None
            gradclip.adaptive_clip_grad_(a, 0.01)
        elif form == "skip":
            info = ob.clip_and_step(1.0, nonfinite="skip", return_info=True)
            assert info.skipped == (step == 2)
            if info.skipped:
                assert all(np.array_equal(p.data, v) for p, v in zip(b, before))
                continue
            gradclip.clip_grad_norm_(a, 1.0)
        else:
            ob.clip_and_step(1.0, write_back=False)
            gradclip.clip_grad_norm_(a, 1.0)
        oa.step()
        for x, y, gs in zip(a, b, scaled):
            np.testing.assert_array_equal(x.data, y.data)
            if gs is not None:
                np.testing.assert_array_equal(y.grad, gs if form == "write_back=False" else x.grad)
    with pytest.raises(TypeError, match="grads="):
        ob.clip_and_step(1.0, return_info=True, grads=[None] * 3)


def test_constructor_validation_and_repr():
    with pytest.raises(ValueError, match="Invalid learning rate"):
        MomentumSGD([Parameter(np.zeros(2))], lr=-1)
    text = repr(MomentumSGD([Parameter(np.zeros(2))]))
    assert text.startswith("MomentumSGD (") and "momentum: 0.9" in text


def test_sparse_adam_explains_itself():
    with pytest.raises(NotImplementedError, match="NumPy arrays have no sparse gradients.*Adam"):
        optim.SparseAdam([Parameter(np.zeros(2))])
    with pytest.raises(NotImplementedError, match="Adam"):
        optim.SparseAdam([Parameter(np.zeros(2))], lr=0.1, betas=(0.9, 0.99), eps=1e-6, maximize=True)
