"""gradclip.optim.lr_scheduler: torch 2.13's schedulers for gradclip optimizers.

Three kinds of checks:

* torch parity: the same scheduler, with the same arguments, on a gradclip optimizer and on
  a torch optimizer with the same param groups, gives ``==`` learning rates (and momenta)
  at every one of 1000 steps, also resumed from ``last_epoch``, through a ``state_dict``
  round trip in mid-run, and with the deprecated ``step(epoch)``;
* PyTorch's own test/optim/test_lrscheduler.py cases that apply, with expected values
  computed here from the closed forms (a tolerance: the closed form and the chainable form
  round differently);
* warnings and errors.
"""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import numpy as np
import pytest
import torch

import gradclip
import gradclip.optim as optim
from gradclip import Parameter
from gradclip.optim import lr_scheduler as gls
from gradclip.optim import swa_utils as gswa
from torch.optim import lr_scheduler as tls
from torch.optim import swa_utils as tswa

STEPS = 1000
LRS = (0.05, 0.5)  # two param groups


# -- building the same thing twice -------------------------------------------------------------


def make_pair(kind="sgd", lrs=LRS, **extra):
    """A gradclip optimizer and a torch optimizer with the same groups (one 2-vector each)."""
    g_params = [Parameter(np.zeros(2)) for _ in lrs]
    t_params = [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64)) for _ in lrs]
    cls = {"sgd": (optim.SGD, torch.optim.SGD), "adam": (optim.Adam, torch.optim.Adam),
           "adamw": (optim.AdamW, torch.optim.AdamW)}[kind]
    if kind == "sgd":
        extra.setdefault("momentum", 0.9)
    g = cls[0]([{"params": [p], "lr": lr} for p, lr in zip(g_params, lrs)], **extra)
    t = cls[1]([{"params": [p], "lr": lr} for p, lr in zip(t_params, lrs)], **extra)
    return g, t


def opt_step(opt):
    """One optimizer step with a zero gradient (the lr schedule is what is tested)."""
    if isinstance(opt, torch.optim.Optimizer):
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.zeros_like(p)
    else:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = np.zeros_like(p.data)
    opt.step()


def momenta(opt):
    out = []
    for group in opt.param_groups:
        if "betas" in group:
            out.append(tuple(group["betas"]))
        elif "momentum" in group:
            out.append(group["momentum"])
    return out


def snapshot(opt, sched):
    return (
        [group["lr"] for group in opt.param_groups],
        list(sched.get_last_lr()),
        momenta(opt),
    )


def assert_same(g_snap, t_snap, step):
    # == on Python floats: bit-identical (an lr is never NaN here).
    assert g_snap == t_snap, f"step {step}: gradclip {g_snap} != torch {t_snap}"
    for gv, tv in zip(g_snap[0], t_snap[0]):
        assert type(gv) is type(tv) or {type(gv), type(tv)} <= {int, float}


# name -> (optimizer kind, factory(module, opt)), module being torch's or gradclip's
def _seq(m, o):
    return m.SequentialLR(o, [m.ConstantLR(o, factor=0.1, total_iters=3),
                              m.ExponentialLR(o, gamma=0.99),
                              m.CosineAnnealingLR(o, T_max=50)], milestones=[5, 300])


def _seq_warmup(m, o):
    return m.SequentialLR(o, [m.LinearLR(o, start_factor=0.01, total_iters=50),
                              m.CosineAnnealingLR(o, T_max=950, eta_min=1e-4)], milestones=[50])


def _chained(m, o):
    return m.ChainedScheduler([m.ConstantLR(o, factor=0.25, total_iters=7),
                               m.ExponentialLR(o, gamma=0.995),
                               m.StepLR(o, step_size=97, gamma=0.7)])


def _chained_nested(m, o):
    inner = m.SequentialLR(o, [m.LinearLR(o, start_factor=0.1, total_iters=20),
                               m.PolynomialLR(o, total_iters=500, power=2.0)], milestones=[20])
    return m.ChainedScheduler([inner, m.MultiplicativeLR(o, lr_lambda=lambda e: 0.999)], optimizer=o)


CONFIGS = {
    "LambdaLR": ("sgd", lambda m, o: m.LambdaLR(o, lr_lambda=lambda e: 0.97 ** e)),
    "LambdaLR-list": ("sgd", lambda m, o: m.LambdaLR(o, lr_lambda=[lambda e: 1 / (1 + e), lambda e: math.cos(e / 100)])),
    "MultiplicativeLR": ("sgd", lambda m, o: m.MultiplicativeLR(o, lr_lambda=lambda e: 0.995)),
    "MultiplicativeLR-list": ("adam", lambda m, o: m.MultiplicativeLR(o, lr_lambda=[lambda e: 0.99, lambda e: 1.001])),
    "StepLR": ("sgd", lambda m, o: m.StepLR(o, step_size=30)),
    "StepLR-gamma": ("adam", lambda m, o: m.StepLR(o, step_size=7, gamma=0.9)),
    "MultiStepLR": ("sgd", lambda m, o: m.MultiStepLR(o, milestones=[30, 80, 80, 500], gamma=0.3)),
    "ConstantLR": ("sgd", lambda m, o: m.ConstantLR(o)),
    "ConstantLR-0.7": ("adamw", lambda m, o: m.ConstantLR(o, factor=0.7, total_iters=400)),
    "LinearLR": ("sgd", lambda m, o: m.LinearLR(o)),
    "LinearLR-long": ("sgd", lambda m, o: m.LinearLR(o, start_factor=0.1, end_factor=0.6, total_iters=700)),
    "LinearLR-down": ("adam", lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=999)),
    "ExponentialLR": ("sgd", lambda m, o: m.ExponentialLR(o, gamma=0.99)),
    "ExponentialLR-up": ("adamw", lambda m, o: m.ExponentialLR(o, gamma=1.003)),
    "SequentialLR": ("sgd", _seq),
    "SequentialLR-warmup": ("adam", _seq_warmup),
    "CosineAnnealingLR": ("sgd", lambda m, o: m.CosineAnnealingLR(o, T_max=100)),
    "CosineAnnealingLR-eta": ("sgd", lambda m, o: m.CosineAnnealingLR(o, T_max=37, eta_min=0.01)),
    "CosineAnnealingLR-long": ("adam", lambda m, o: m.CosineAnnealingLR(o, T_max=1000, eta_min=1e-5)),
    "ChainedScheduler": ("sgd", _chained),
    "ChainedScheduler-nested": ("sgd", _chained_nested),
    "CyclicLR": ("sgd", lambda m, o: m.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=40)),
    "CyclicLR-tri2": ("sgd", lambda m, o: m.CyclicLR(o, base_lr=[0.01, 0.02], max_lr=[0.1, 1.0], step_size_up=25,
                                                     step_size_down=60, mode="triangular2")),
    "CyclicLR-exp": ("adam", lambda m, o: m.CyclicLR(o, base_lr=0.001, max_lr=0.01, step_size_up=33, mode="exp_range",
                                                     gamma=0.999)),
    "CyclicLR-scale_fn": ("sgd", lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=17, scale_fn=lambda x: 1 / (1 + x),
                                                         scale_mode="iterations", base_momentum=0.7,
                                                         max_momentum=[0.95, 0.99])),
    "CyclicLR-no-momentum": ("sgd", lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=10, cycle_momentum=False)),
    "CosineAnnealingWarmRestarts": ("sgd", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=50)),
    "CosineAnnealingWarmRestarts-mult": ("adam", lambda m, o: m.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=2,
                                                                                           eta_min=0.001)),
    "OneCycleLR": ("sgd", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=STEPS + 1)),
    "OneCycleLR-linear": ("adam", lambda m, o: m.OneCycleLR(o, max_lr=[0.1, 0.01], epochs=10, steps_per_epoch=101,
                                                            anneal_strategy="linear", pct_start=0.25)),
    "OneCycleLR-3phase": ("adamw", lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=STEPS + 1, three_phase=True,
                                                             div_factor=10.0, final_div_factor=100.0)),
    "OneCycleLR-no-momentum": ("sgd", lambda m, o: m.OneCycleLR(o, max_lr=0.3, total_steps=STEPS + 1,
                                                                cycle_momentum=False)),
    "PolynomialLR": ("sgd", lambda m, o: m.PolynomialLR(o)),
    "PolynomialLR-long": ("adam", lambda m, o: m.PolynomialLR(o, total_iters=800, power=1.7)),
    "SWALR": ("sgd", lambda m, o: (gswa if m is gls else tswa).SWALR(o, swa_lr=0.01, anneal_epochs=300)),
    "SWALR-linear": ("sgd", lambda m, o: (gswa if m is gls else tswa).SWALR(o, swa_lr=[0.1, 0.2], anneal_epochs=5,
                                                                            anneal_strategy="linear")),
    "SWALR-0": ("adam", lambda m, o: (gswa if m is gls else tswa).SWALR(o, swa_lr=0.01, anneal_epochs=0)),
}

PLATEAU_CONFIGS = {
    "min-rel": {},
    "max-abs": {"mode": "max", "threshold_mode": "abs", "threshold": 0.01, "factor": 0.5, "patience": 3},
    "cooldown": {"patience": 2, "cooldown": 5, "factor": 0.7, "min_lr": [0.001, 0.01]},
    "eps": {"patience": 0, "factor": 0.9, "min_lr": 0.04, "eps": 1e-3},
}


def metric(i):
    """A noisy, slowly improving validation loss with plateaus (the same for both sides)."""
    return 1.0 / (1 + (i // 37)) + 0.05 * math.sin(i * 1.7) ** 2


def build(name, kind, factory):
    g_opt, t_opt = make_pair(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return g_opt, factory(gls, g_opt), t_opt, factory(tls, t_opt)


def run(opt, sched, steps, plateau=False, start=0):
    out = []
    for i in range(start, start + steps):
        opt_step(opt)
        if plateau:
            sched.step(metric(i))
        else:
            sched.step()
        out.append(snapshot(opt, sched))
    return out


# -- parity -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_torch_parity_1000_steps(name):
    kind, factory = CONFIGS[name]
    g_opt, g_s, t_opt, t_s = build(name, kind, factory)
    assert_same(snapshot(g_opt, g_s), snapshot(t_opt, t_s), 0)
    assert [k for k in g_opt.param_groups[0] if k != "params"] == [k for k in t_opt.param_groups[0] if k != "params"]
    g_run, t_run = run(g_opt, g_s, STEPS), run(t_opt, t_s, STEPS)
    for step, (a, b) in enumerate(zip(g_run, t_run), 1):
        assert_same(a, b, step)
    assert {snap[0][0] for snap in g_run} != {LRS[0]}  # the schedule acted
    assert g_opt.param_groups[0]["initial_lr"] == t_opt.param_groups[0]["initial_lr"]


@pytest.mark.parametrize("name", sorted(PLATEAU_CONFIGS))
def test_reduce_lr_on_plateau_parity(name):
    kwargs = PLATEAU_CONFIGS[name]
    g_opt, t_opt = make_pair("sgd")
    g_s = gls.ReduceLROnPlateau(g_opt, **kwargs)
    t_s = tls.ReduceLROnPlateau(t_opt, **kwargs)
    g_run, t_run = run(g_opt, g_s, STEPS, plateau=True), run(t_opt, t_s, STEPS, plateau=True)
    for step, (a, b) in enumerate(zip(g_run, t_run), 1):
        assert_same(a, b, step)
    assert len({s[0][0] for s in g_run}) > 2  # it did reduce, several times
    assert g_s.state_dict() == t_s.state_dict()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_round_trip_mid_run(name):
    kind, factory = CONFIGS[name]
    g_opt, g_s, t_opt, t_s = build(name, kind, factory)
    reference = run(g_opt, g_s, 600)
    # torch saves the same entries (bar its optimizer objects inside nested schedulers).
    g_opt2, g_s2, _, _ = build(name, kind, factory)
    run(g_opt2, g_s2, 300)
    saved_sched = copy.deepcopy(g_s2.state_dict())
    saved_opt = copy.deepcopy(g_opt2.state_dict())
    # A fresh optimizer + scheduler, loaded (scheduler made first, as torch's docs say).
    g_opt3, g_s3, _, _ = build(name, kind, factory)
    g_opt3.load_state_dict(saved_opt)
    g_s3.load_state_dict(saved_sched)
    resumed = run(g_opt3, g_s3, 300)
    assert resumed == reference[300:]
    # torch's state_dict has the same entries.
    assert set(g_s.state_dict()) == set(t_s.state_dict())


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR-eta", "LinearLR-long",
                                  "PolynomialLR-long", "CyclicLR-tri2", "OneCycleLR", "LambdaLR", "ConstantLR-0.7",
                                  "CosineAnnealingWarmRestarts-mult", "MultiplicativeLR"])
@pytest.mark.parametrize("resume_at", [1, 137])
def test_resume_from_last_epoch(name, resume_at):
    """A scheduler made with last_epoch=k on an optimizer that has "initial_lr" (from a
    checkpoint) continues as torch's does."""
    kind, factory = CONFIGS[name]
    g_opt, g_s, t_opt, t_s = build(name, kind, factory)
    run(g_opt, g_s, resume_at)
    run(t_opt, t_s, resume_at)
    # Resume on the same optimizer groups (lr, initial_lr, momenta) from last_epoch.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g_r = _with_last_epoch(factory, gls, g_opt, resume_at)
        t_r = _with_last_epoch(factory, tls, t_opt, resume_at)
    assert_same(snapshot(g_opt, g_r), snapshot(t_opt, t_r), 0)
    for step, (a, b) in enumerate(zip(run(g_opt, g_r, 300), run(t_opt, t_r, 300)), 1):
        assert_same(a, b, step)


def _with_last_epoch(factory, module, opt, last_epoch):
    """Call the config's factory with last_epoch=... added to the scheduler's constructor."""

    class Shim:
        def __getattr__(self, name):
            cls = getattr(module, name)
            return lambda *a, **k: cls(*a, **k, last_epoch=last_epoch)

    return factory(Shim(), opt)


@pytest.mark.parametrize("name", ["StepLR", "StepLR-gamma", "MultiStepLR", "ConstantLR", "LinearLR-long",
                                  "ExponentialLR", "CosineAnnealingLR-eta", "PolynomialLR-long", "LambdaLR",
                                  "MultiplicativeLR", "CyclicLR", "OneCycleLR"])
def test_step_with_epoch_is_deprecated_and_matches_torch(name):
    kind, factory = CONFIGS[name]
    g_opt, g_s, t_opt, t_s = build(name, kind, factory)
    epochs = [1, 2, 5, 5, 3, 40, 41, 100, 260, 261, 700]
    for e in epochs:
        opt_step(g_opt)
        opt_step(t_opt)
        with pytest.warns(UserWarning, match="The epoch parameter in `scheduler.step\\(\\)` was not necessary"):
            g_s.step(e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t_s.step(e)
        assert_same(snapshot(g_opt, g_s), snapshot(t_opt, t_s), e)


def test_cosine_warm_restarts_fractional_epochs():
    g_opt, t_opt = make_pair("sgd")
    g_s = gls.CosineAnnealingWarmRestarts(g_opt, T_0=10, T_mult=2, eta_min=1e-3)
    t_s = tls.CosineAnnealingWarmRestarts(t_opt, T_0=10, T_mult=2, eta_min=1e-3)
    for epoch in range(40):
        for i in range(7):
            opt_step(g_opt)
            opt_step(t_opt)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # the float epoch form is not deprecated
                g_s.step(epoch + i / 7)
            t_s.step(epoch + i / 7)
            assert_same(snapshot(g_opt, g_s), snapshot(t_opt, t_s), epoch)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
@pytest.mark.parametrize("cls", ["CyclicLR", "OneCycleLR"])
def test_momentum_cycling_on_each_optimizer(kind, cls):
    g_opt, t_opt = make_pair(kind)
    args = {"CyclicLR": dict(base_lr=0.01, max_lr=0.1, step_size_up=5),
            "OneCycleLR": dict(max_lr=0.1, total_steps=50)}[cls]
    g_s, t_s = getattr(gls, cls)(g_opt, **args), getattr(tls, cls)(t_opt, **args)
    seen = set()
    for step in range(49):
        opt_step(g_opt)
        opt_step(t_opt)
        g_s.step()
        t_s.step()
        assert_same(snapshot(g_opt, g_s), snapshot(t_opt, t_s), step)
        key = "momentum" if kind == "sgd" else "betas"
        seen.add(str(g_opt.param_groups[0][key]))
        if kind != "sgd":
            assert g_opt.param_groups[0]["betas"][1] == 0.999
    assert len(seen) >= 9


def test_momentum_cycling_refuses_an_optimizer_without_momentum():
    class Plain(optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

    opt = Plain([np.zeros(2)])
    for make in (lambda: gls.CyclicLR(opt, 0.01, 0.1), lambda: gls.OneCycleLR(opt, 0.1, total_steps=10)):
        with pytest.raises(ValueError, match="optimizer must support momentum or beta1 with `cycle_momentum` option enabled"):
            make()
    gls.CyclicLR(opt, 0.01, 0.1, cycle_momentum=False)  # fine without


def test_user_optimizer_subclass():
    """A user's own Optimizer subclass (plain gradient descent, written in NumPy) is scheduled,
    and its step is wrapped for the call-order check like the built-in ones."""

    class GD(optim.Optimizer):
        def __init__(self, params, lr=0.1):
            super().__init__(params, {"lr": lr})

        def step(self, closure=None, *, grads=None):
            for group in self.param_groups:
                for p, g in zip(group["params"], grads):
                    p -= group["lr"] * g

    w = np.ones(3)
    opt = GD([w], lr=1.0)
    sched = gls.StepLR(opt, step_size=2, gamma=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):
            opt.step(grads=[np.ones(3)])
            sched.step()
    np.testing.assert_array_equal(w, 1 - (1 + 1 + 0.5 + 0.5) * np.ones(3))
    assert sched.get_last_lr() == [0.25]


def test_ndarray_lr_is_filled_in_place():
    """An lr held in a 0-d array (torch's tensor lr) is updated in place, never aliased."""
    opt = optim.SGD([np.zeros(2)], lr=np.array(0.1))
    lr = opt.param_groups[0]["lr"]
    sched = gls.ExponentialLR(opt, gamma=0.5)
    opt.step(grads=[np.zeros(2)])
    sched.step()
    assert opt.param_groups[0]["lr"] is lr and float(lr) == 0.05
    last = sched.get_last_lr()[0]
    assert isinstance(last, np.ndarray) and last is not lr and float(last) == 0.05
    assert float(opt.param_groups[0]["initial_lr"]) == 0.1 and opt.param_groups[0]["initial_lr"] is not lr


# -- warnings -----------------------------------------------------------------------------------


def test_warns_when_scheduler_steps_before_optimizer():
    opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1)
    sched = gls.StepLR(opt, 3)
    with pytest.warns(UserWarning, match=r"Detected call of `lr_scheduler.step\(\)` before `optimizer.step\(\)`"):
        sched.step()


@pytest.mark.parametrize("method", ["step", "clip_and_step"])
def test_no_warning_in_the_right_order(method):
    p = Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=0.1)
    sched = gls.StepLR(opt, 3)
    p.grad = np.ones(2)
    getattr(opt, method)(*([1.0] if method == "clip_and_step" else []))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
        sched.step()


def test_warns_when_optimizer_step_is_replaced():
    opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1)
    sched = gls.StepLR(opt, 3)
    opt.step = lambda *a, **k: None
    with pytest.warns(UserWarning, match=r"Seems like `optimizer.step\(\)` has been overridden"):
        sched.step()


def test_step_wrapping_is_shared_and_holds_no_strong_reference():
    import weakref

    opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1)
    s1 = gls.StepLR(opt, 3)
    wrapped = opt.step
    gls.ExponentialLR(opt, 0.9)
    assert opt.step is wrapped  # not wrapped twice
    ref = weakref.ref(opt)
    del opt, s1, wrapped
    # Only the schedulers refer to the optimizer; with them gone it is freed.
    assert ref() is None


def test_get_lr_outside_step_warns():
    opt = optim.SGD([np.zeros(2)], lr=0.1)
    sched = gls.StepLR(opt, 3)
    with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
        sched.get_lr()
    swa = gswa.SWALR(opt, swa_lr=0.01)
    with pytest.warns(UserWarning, match=r"please use `get_last_lr\(\)`"):
        swa.get_lr()


def test_plateau_epoch_argument_is_deprecated():
    opt = optim.SGD([np.zeros(2)], lr=0.1)
    sched = gls.ReduceLROnPlateau(opt)
    with pytest.warns(UserWarning, match="The epoch parameter"):
        sched.step(1.0, 5)
    assert sched.last_epoch == 5


# -- errors -----------------------------------------------------------------------------------


def test_torch_optimizer_is_refused_and_vice_versa():
    g_opt, t_opt = make_pair()
    for cls in (gls.StepLR, gls.ReduceLROnPlateau):
        with pytest.raises(TypeError, match="SGD is not an Optimizer"):
            cls(t_opt, *([3] if cls is gls.StepLR else []))
    with pytest.raises(TypeError, match="SGD is not an Optimizer"):
        tls.StepLR(g_opt, 3)  # why gradclip needs its own
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        gls.OneCycleLR([], 0.1, total_steps=3)
    with pytest.raises(TypeError, match="SGD is not an Optimizer"):
        gls.CyclicLR(t_opt, 0.1, 1.0)


ERRORS = [
    (lambda o: gls.ConstantLR(o, factor=1.5), ValueError, "Constant multiplicative factor expected to be between 0 and 1."),
    (lambda o: gls.ConstantLR(o, factor=-0.1), ValueError, "between 0 and 1"),
    (lambda o: gls.LinearLR(o, start_factor=0), ValueError, "Starting multiplicative factor expected to be greater than 0"),
    (lambda o: gls.LinearLR(o, start_factor=1.1), ValueError, "Starting multiplicative factor"),
    (lambda o: gls.LinearLR(o, end_factor=-1), ValueError, "Ending multiplicative factor expected to be between 0 and 1."),
    (lambda o: gls.LambdaLR(o, [lambda e: 1.0]), ValueError, "Expected 2 lr_lambdas, but got 1"),
    (lambda o: gls.MultiplicativeLR(o, 1.0), TypeError, "lr_lambda should be a function, but got float"),
    (lambda o: gls.ReduceLROnPlateau(o, factor=1.0), ValueError, r"Factor should be < 1.0."),
    (lambda o: gls.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode avg is unknown!"),
    (lambda o: gls.ReduceLROnPlateau(o, threshold_mode="x"), ValueError, "threshold mode x is unknown!"),
    (lambda o: gls.ReduceLROnPlateau(o, min_lr=[0.1]), ValueError, "expected 2 min_lrs, got 1"),
    (lambda o: gls.CyclicLR(o, 0.1, 1.0, mode="square"), ValueError, "mode is invalid and scale_fn is None"),
    (lambda o: gls.CyclicLR(o, [0.1], 1.0), ValueError, "base_lr must have the same length as optimizer.param_groups. base_lr has 1 values, param_groups has 2."),
    (lambda o: gls.CyclicLR(o, 0.1, 1.0, max_momentum=[0.9] * 3), ValueError, "max_momentum must have the same length"),
    (lambda o: gls.CosineAnnealingWarmRestarts(o, T_0=0), ValueError, "Expected positive integer T_0, but got 0"),
    (lambda o: gls.CosineAnnealingWarmRestarts(o, T_0=2.5), ValueError, "Expected positive integer T_0, but got 2.5"),
    (lambda o: gls.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=0), ValueError, "Expected integer T_mult >= 1, but got 0"),
    (lambda o: gls.CosineAnnealingWarmRestarts(o, T_0=2, eta_min="0"), ValueError, "Expected float or int eta_min"),
    (lambda o: gls.OneCycleLR(o, 0.1), ValueError, r"You must define either total_steps OR \(epochs AND steps_per_epoch\)"),
    (lambda o: gls.OneCycleLR(o, 0.1, total_steps=0), ValueError, "Expected positive integer total_steps, but got 0"),
    (lambda o: gls.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3), ValueError, "Expected positive integer epochs, but got 0"),
    (lambda o: gls.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=-3), ValueError, "Expected positive integer steps_per_epoch, but got -3"),
    (lambda o: gls.OneCycleLR(o, 0.1, total_steps=10, pct_start=1), ValueError, "Expected float between 0 and 1 pct_start, but got 1"),
    (lambda o: gls.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.2), ValueError, "Expected float between 0 and 1 pct_start"),
    (lambda o: gls.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="exp"), ValueError, "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
    (lambda o: gls.SequentialLR(o, [], []), ValueError, "SequentialLR expects at least one scheduler, but got no scheduler."),
    (lambda o: gls.SequentialLR(o, [gls.StepLR(o, 2)], [3]), ValueError, "Sequential Schedulers expects number of schedulers provided to be one more"),
    (lambda o: gls.SequentialLR(o, [gls.StepLR(o, 2), gls.ReduceLROnPlateau(o)], [3]), ValueError, "SequentialLR does not support `ReduceLROnPlateau`"),
    (lambda o: gls.SequentialLR(o, [gls.StepLR(o, 2), 3], [3]), TypeError, "SequentialLR at index 1 should have `optimizer` as its attribute."),
    (lambda o: gls.ChainedScheduler([]), ValueError, "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler."),
    (lambda o: gls.ChainedScheduler([gls.StepLR(o, 2), gls.StepLR(make_pair()[0], 2)]), ValueError, "ChainedScheduler expects all schedulers to belong to the same optimizer"),
    (lambda o: gls.StepLR(o, 2, last_epoch=3), KeyError, "param 'initial_lr' is not specified in param_groups\\[0\\] when resuming"),
    (lambda o: gswa.SWALR(o, 0.1, anneal_strategy="exp"), ValueError, "anneal_strategy must be one of 'cos' or 'linear', instead got exp"),
    (lambda o: gswa.SWALR(o, 0.1, anneal_epochs=-1), ValueError, "anneal_epochs must be equal or greater than 0, got -1"),
    (lambda o: gswa.SWALR(o, 0.1, anneal_epochs=1.5), ValueError, "anneal_epochs must be equal or greater than 0, got 1.5"),
    (lambda o: gswa.SWALR(o, [0.1]), ValueError, "swa_lr must have the same length"),
]


@pytest.mark.parametrize("i", range(len(ERRORS)))
def test_errors_match_torch(i):
    make, exc, match = ERRORS[i]
    g_opt, t_opt = make_pair()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc, match=match) as g_info:
            make(g_opt)
        # The same call in torch raises the same type with the same message.
        t_make = _as_torch(make)
        with pytest.raises(exc) as t_info:
            t_make(t_opt)
    g_msg, t_msg = str(g_info.value), str(t_info.value)
    if "which is different from" in t_msg:  # embeds the optimizers' reprs
        g_msg, t_msg = g_msg.split(" has ")[0], t_msg.split(" has ")[0]
    assert g_msg == t_msg


def _as_torch(make):
    """Run ``make`` with gls/gswa/make_pair()[0] rebound to torch's."""
    g = dict(make.__globals__)
    g.update(gls=tls, gswa=tswa, make_pair=lambda: make_pair()[::-1])
    return type(make)(make.__code__, g)


def test_one_cycle_stepping_past_total_steps():
    for m, opt in zip((gls, tls), make_pair()):
        sched = m.OneCycleLR(opt, 0.1, total_steps=5)
        for _ in range(4):
            opt_step(opt)
            sched.step()
        with pytest.raises(ValueError, match="Tried to step 6 times. The specified number of total steps is 5"):
            sched.step()
            sched.step()


def test_plateau_min_lrs_after_new_group():
    opt = optim.SGD([np.zeros(2)], lr=0.1)
    sched = gls.ReduceLROnPlateau(opt, min_lr=[0.0], patience=0)
    opt.add_param_group({"params": [np.zeros(2)]})
    sched.step(1.0)
    with pytest.raises(RuntimeError, match=r"The number of param groups in the `optimizer` \(2\) differs"):
        sched.step(2.0)
    sched2 = gls.ReduceLROnPlateau(opt, min_lr=0.01, patience=0)
    opt.add_param_group({"params": [np.zeros(2)]})
    sched2.step(1.0)
    sched2.step(2.0)  # a scalar min_lr extends to the new group
    assert sched2.min_lrs == [0.01] * 3


def test_cosine_warm_restarts_negative_epoch():
    opt = optim.SGD([np.zeros(2)], lr=0.1)
    sched = gls.CosineAnnealingWarmRestarts(opt, 2)
    with pytest.raises(ValueError, match="Expected non-negative epoch, but got -1"):
        sched.step(-1)


# -- PyTorch's test_lrscheduler.py cases, against closed forms computed here --------------------


def lrs_of(sched_factory, epochs, lr=0.05, plateau_metrics=None):
    opt = optim.SGD([{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(2))], "lr": lr * 10}], lr=lr)
    sched = sched_factory(opt)
    out = []
    for e in range(epochs):
        out.append([g["lr"] for g in opt.param_groups])
        opt_step(opt)
        if plateau_metrics is not None:
            sched.step(plateau_metrics[e])
        else:
            sched.step()
    return np.array(out)


def expect(fn, epochs, lr=0.05):
    return np.array([[fn(e, lr), fn(e, lr * 10)] for e in range(epochs)])


def test_step_lr_closed_form():
    # test_step_lr: lr = 0.05 if epoch < 3, 0.005 if 3 <= epoch < 6, ...
    np.testing.assert_allclose(lrs_of(lambda o: gls.StepLR(o, 3, 0.1), 10), expect(lambda e, b: b * 0.1 ** (e // 3), 10), rtol=1e-12)


def test_multi_step_lr_closed_form():
    np.testing.assert_allclose(lrs_of(lambda o: gls.MultiStepLR(o, [2, 5, 9], 0.1), 10),
                               expect(lambda e, b: b * 0.1 ** sum(e >= m for m in (2, 5, 9)), 10), rtol=1e-12)


def test_multi_step_lr_with_repeated_milestones():
    np.testing.assert_allclose(lrs_of(lambda o: gls.MultiStepLR(o, [2, 5, 5, 9], 0.1), 10),
                               expect(lambda e, b: b * 0.1 ** sum(e >= m for m in (2, 5, 5, 9)), 10), rtol=1e-12)


def test_constant_lr_closed_form():
    np.testing.assert_allclose(lrs_of(lambda o: gls.ConstantLR(o, 0.5, 4), 10),
                               expect(lambda e, b: b * (0.5 if e < 4 else 1.0), 10), rtol=1e-12)


def test_linear_lr_closed_form():
    start, end, iters = 0.5, 1.0, 4
    np.testing.assert_allclose(lrs_of(lambda o: gls.LinearLR(o, start, end, iters), 10),
                               expect(lambda e, b: b * (start + (end - start) * min(e, iters) / iters), 10), rtol=1e-12)


def test_linear_lr_decreasing():
    np.testing.assert_allclose(lrs_of(lambda o: gls.LinearLR(o, 1.0, 0.25, 6), 10),
                               expect(lambda e, b: b * (1 - 0.75 * min(e, 6) / 6), 10), rtol=1e-12)


def test_exp_lr_closed_form():
    np.testing.assert_allclose(lrs_of(lambda o: gls.ExponentialLR(o, 0.9), 20), expect(lambda e, b: b * 0.9**e, 20), rtol=1e-12)


def test_poly_lr_closed_form():
    np.testing.assert_allclose(lrs_of(lambda o: gls.PolynomialLR(o, 4, 0.9), 8),
                               expect(lambda e, b: b * (1 - min(e, 4) / 4) ** 0.9, 8), rtol=1e-12, atol=1e-15)


def test_cos_anneal_lr_closed_form():
    T, eta = 10, 0.01
    np.testing.assert_allclose(lrs_of(lambda o: gls.CosineAnnealingLR(o, T, eta), 25),
                               expect(lambda e, b: eta + (b - eta) * (1 + math.cos(math.pi * e / T)) / 2, 25), rtol=1e-10)


def test_cos_anneal_lr_continues_after_external_change():
    """The chainable form follows an lr changed by someone else between steps (why torch
    keeps the recursive form)."""
    opt = optim.SGD([np.zeros(2)], lr=1.0)
    sched = gls.CosineAnnealingLR(opt, T_max=10)
    opt_step_arrays(opt)
    sched.step()
    opt.param_groups[0]["lr"] *= 0.5
    before = opt.param_groups[0]["lr"]
    opt_step_arrays(opt)
    sched.step()
    ratio = (1 + math.cos(math.pi * 2 / 10)) / (1 + math.cos(math.pi / 10))
    assert opt.param_groups[0]["lr"] == pytest.approx(before * ratio, rel=1e-14)


def opt_step_arrays(opt):
    opt.step(grads=[np.zeros_like(p) for g in opt.param_groups for p in g["params"]])


def test_lambda_lr_closed_form():
    np.testing.assert_allclose(lrs_of(lambda o: gls.LambdaLR(o, [lambda e: e // 3, lambda e: 0.95**e]), 10),
                               np.array([[0.05 * (e // 3), 0.5 * 0.95**e] for e in range(10)]), rtol=1e-12)


def test_multiplicative_lr_closed_form():
    np.testing.assert_allclose(lrs_of(lambda o: gls.MultiplicativeLR(o, [lambda e: 0.9, lambda e: 0.8]), 10),
                               np.array([[0.05 * 0.9**e, 0.5 * 0.8**e] for e in range(10)]), rtol=1e-12)


def test_cosine_warm_restarts_closed_form():
    T_0, T_mult, eta = 3, 2, 0.001

    def lr(e, b):
        t_i, t_cur = T_0, e
        while t_cur >= t_i:
            t_cur -= t_i
            t_i *= T_mult
        return eta + (b - eta) * (1 + math.cos(math.pi * t_cur / t_i)) / 2

    np.testing.assert_allclose(lrs_of(lambda o: gls.CosineAnnealingWarmRestarts(o, T_0, T_mult, eta), 30),
                               expect(lr, 30), rtol=1e-12)


def test_cyclic_lr_triangular_closed_form():
    base, top, up = 0.01, 0.11, 4

    def lr(e, _):
        pos = e % (2 * up)
        return base + (top - base) * (pos / up if pos <= up else (2 * up - pos) / up)

    got = lrs_of(lambda o: gls.CyclicLR(o, base, top, step_size_up=up, cycle_momentum=False), 20)
    np.testing.assert_allclose(got, expect(lr, 20), rtol=1e-12)


def test_cyclic_lr_triangular2_halves_each_cycle():
    base, top, up = 0.0, 1.0, 2
    got = lrs_of(lambda o: gls.CyclicLR(o, base, top, step_size_up=up, mode="triangular2", cycle_momentum=False), 13)
    peaks = got[2::4, 0]
    np.testing.assert_allclose(peaks, [1.0, 0.5, 0.25], rtol=1e-12)


def test_one_cycle_closed_form():
    total, max_lr = 10, 1.0
    initial, minimum = max_lr / 25, max_lr / 25 / 1e4
    up_end = 0.3 * total - 1

    def lr(e, _):
        if e <= up_end:
            pct, a, b = e / up_end, initial, max_lr
        else:
            pct, a, b = (e - up_end) / (total - 1 - up_end), max_lr, minimum
        return b + (a - b) / 2 * (math.cos(math.pi * pct) + 1)

    opt = optim.SGD([np.zeros(2)], lr=0.1, momentum=0.9)
    sched = gls.OneCycleLR(opt, max_lr, total_steps=total)
    got = []
    for _ in range(total):
        got.append(opt.param_groups[0]["lr"])
        opt_step_arrays(opt)
        sched.step() if len(got) < total else None
    np.testing.assert_allclose(got, [lr(e, None) for e in range(total)], rtol=1e-12)


def test_reduce_lr_on_plateau_closed_form():
    # test_reduce_lr_on_plateau1: patience 2, metrics never improve after epoch 0.
    metrics = [10 - i * 0.0167 for i in range(20)]  # improves by less than the 1e-4 threshold? no: rel 0.1%
    got = lrs_of(lambda o: gls.ReduceLROnPlateau(o, threshold=0.1, patience=5, cooldown=5), 20, plateau_metrics=metrics)
    # Improvement of < 10% is no improvement: after 6 bad epochs (epoch 6) the lr drops,
    # then 5 epochs of cooldown + 6 bad epochs: the next drop after epoch 17.
    want = expect(lambda e, b: b * (1 if e <= 6 else 0.1 if e <= 17 else 0.01), 20)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_sequential_lr_closed_form():
    got = lrs_of(lambda o: gls.SequentialLR(o, [gls.ConstantLR(o, 0.1, 2), gls.ExponentialLR(o, 0.9)], [3]), 10)
    want = expect(lambda e, b: b * 0.1 if e < 2 else (b if e < 3 else b * 0.9 ** (e - 3)), 10)
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_chained_scheduler_closed_form():
    got = lrs_of(lambda o: gls.ChainedScheduler([gls.ConstantLR(o, 0.1, 4), gls.ExponentialLR(o, 0.9)]), 10)
    np.testing.assert_allclose(got, expect(lambda e, b: b * (0.1 if e < 4 else 1) * 0.9**e, 10), rtol=1e-12)


def test_swalr_closed_form():
    # From lr 0.05 to swa_lr 0.01 over 4 epochs, cosine: lr_t = swa + (lr - swa)(1 + cos(pi t / 4)) / 2.
    got = lrs_of(lambda o: gswa.SWALR(o, swa_lr=[0.01, 0.1], anneal_epochs=4), 8)
    want = np.array([[s + (b - s) * (1 + math.cos(math.pi * min(e, 4) / 4)) / 2 for b, s in ((0.05, 0.01), (0.5, 0.1))]
                     for e in range(8)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_initial_lr_written_and_kept():
    opt = optim.SGD([np.zeros(2)], lr=0.3)
    gls.StepLR(opt, 2)
    opt.param_groups[0]["lr"] = 7.0
    gls.StepLR(opt, 2)  # setdefault: an existing initial_lr is kept
    assert opt.param_groups[0]["initial_lr"] == 0.3


def test_lambda_state_dict_saves_callable_objects_only():
    class Factor:
        def __init__(self, f):
            self.f = f

        def __call__(self, epoch):
            return self.f**epoch

    opt = optim.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)]}], lr=0.1)
    sched = gls.LambdaLR(opt, [Factor(0.5), lambda e: 1.0])
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{"f": 0.5}, None]
    opt2 = optim.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)]}], lr=0.1)
    sched2 = gls.LambdaLR(opt2, [Factor(0.9), lambda e: 1.0])
    sched2.load_state_dict(state)
    assert sched2.lr_lambdas[0].f == 0.5
    assert state["lr_lambdas"] == [{"f": 0.5}, None]  # the caller's dict is left as it was


def test_cyclic_state_dict_without_functions():
    opt = optim.SGD([np.zeros(2)], lr=0.1, momentum=0.9)
    sched = gls.CyclicLR(opt, 0.01, 0.1, mode="exp_range", gamma=0.99)
    state = sched.state_dict()
    assert "_scale_fn_ref" not in state and state["_scale_fn_custom"] is None
    pickle.dumps(state)
    sched2 = gls.CyclicLR(opt, 0.01, 0.1)
    sched2.load_state_dict(state)
    assert sched2.mode == "exp_range" and sched2.scale_fn(2) == 0.99**2


def test_public_names():
    assert sorted(gls.__all__) == sorted(tls.__all__)
    import gradclip.optim

    assert gradclip.optim.lr_scheduler.StepLR is gls.StepLR
    assert issubclass(gls._LRScheduler, gls.LRScheduler)
    import inspect

    for name in tls.__all__:
        t_sig = inspect.signature(getattr(tls, name).__init__)
        g_sig = inspect.signature(getattr(gls, name).__init__)
        assert list(g_sig.parameters) == list(t_sig.parameters), name
        for p in t_sig.parameters.values():
            assert g_sig.parameters[p.name].default == p.default, (name, p.name)


# -- a training loop, side by side with torch -------------------------------------------------


@pytest.mark.parametrize("schedule", ["plateau", "onecycle"])
def test_training_loop_same_lr_as_torch(schedule):
    """The demo's LSTM trained with SGD + clip_grad_norm_ + a scheduler, and beside it torch's
    SGD and scheduler fed the same gradients and losses: the same lr at every step, and the
    same weights up to the float32 rounding of the clipping coefficient."""
    from gradclip.demo.data import Corpus, load_text, windows
    from gradclip.demo.models import CharLSTM

    steps, window, batch, seq_len = 300, 10, 8, 10
    corpus = Corpus.from_text(load_text())
    model = CharLSTM(corpus.vocab_size, 8, rng=np.random.default_rng(0))
    params = model.parameters()
    t_params = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
    g_opt = optim.SGD(params, lr=1.0, momentum=0.5)
    t_opt = torch.optim.SGD(t_params, lr=1.0, momentum=0.5)
    if schedule == "plateau":
        g_s, t_s = (gls.ReduceLROnPlateau(g_opt, factor=0.5, patience=1, threshold=0.02),
                    tls.ReduceLROnPlateau(t_opt, factor=0.5, patience=1, threshold=0.02))
    else:
        g_s = gls.OneCycleLR(g_opt, max_lr=1.0, total_steps=steps)
        t_s = tls.OneCycleLR(t_opt, max_lr=1.0, total_steps=steps)
    batches = windows(corpus.train, batch, seq_len)
    state = model.initial_state(batch)
    losses, lrs, momenta_seen = [], [], set()
    for step in range(steps):
        inputs, targets, fresh = next(batches)
        if fresh:
            state = model.initial_state(batch)
        g_opt.zero_grad()
        t_opt.zero_grad()
        loss, cache = model.forward(inputs, targets, state)
        grads, _ = model.backward(cache)
        state = cache.state
        for p, tp, g in zip(params, t_params, grads.values()):
            tp.grad = torch.from_numpy(g.copy())
            p.grad = g
        gradclip.nn.utils.clip_grad_norm_(params, 5.0)
        torch.nn.utils.clip_grad_norm_(t_params, 5.0)
        g_opt.step()
        t_opt.step()
        losses.append(loss / seq_len)
        if schedule == "plateau":
            if (step + 1) % window == 0:
                g_s.step(np.mean(losses[-window:]))
                t_s.step(float(np.mean(losses[-window:])))
        elif step + 1 < steps:
            g_s.step()
            t_s.step()
        assert g_opt.param_groups[0]["lr"] == t_opt.param_groups[0]["lr"], step
        assert g_s.get_last_lr() == t_s.get_last_lr(), step
        assert g_opt.param_groups[0]["momentum"] == t_opt.param_groups[0]["momentum"], step
        lrs.append(g_opt.param_groups[0]["lr"])
        momenta_seen.add(g_opt.param_groups[0]["momentum"])
    for p, tp in zip(params, t_params):
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=2e-3, atol=2e-4)
    assert losses[-1] < 0.8 * losses[0]  # it trained
    if schedule == "plateau":
        assert len(set(lrs)) >= 3  # the plateau was detected, and more than once
    else:
        assert len(momenta_seen) > 100  # OneCycleLR cycled SGD's momentum
