"""PyTorch's test/optim/test_lrscheduler.py, re-implemented for gradclip's schedulers.

The expected values are torch's test's own: closed forms and hand-derived tables, not
outputs of an implementation. As there, the optimizer is SGD with two param groups (lr 0.05
and 0.5) and comparisons use a relative tolerance of 1e-9 (torch: atol=1e-5). torch is not imported here.
"""

from __future__ import annotations

import gc
import math
import pickle
import types
import warnings
import weakref

import numpy as np
import pytest

from gradclip import Parameter
from gradclip import optim
from gradclip.optim.lr_scheduler import (
    EPOCH_DEPRECATION_WARNING,
    ChainedScheduler,
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)
from gradclip.optim.swa_utils import SWALR


def make_opt(cls=optim.SGD):
    params = [Parameter(np.zeros((1, 1))), Parameter(np.zeros(1))]
    return cls([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.5}], lr=0.05)


@pytest.fixture
def opt():
    return make_opt()


def close(a, b):
    # Tighter than torch's atol=1e-5, which cannot tell 5e-7 from 5e-6.
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


def check(opt, schedulers, targets, epochs=10):
    """torch's _test: check the lrs, then step every scheduler."""
    if isinstance(schedulers, LRScheduler):
        schedulers = [schedulers]
    for epoch in range(epochs):
        for group, target in zip(opt.param_groups, targets):
            assert close(group["lr"], target[epoch]), (epoch, group["lr"], target[epoch])
        opt.step()
        for s in schedulers:
            s.step()


def check_with_epoch(opt, schedulers, targets, epochs=10):
    if isinstance(schedulers, LRScheduler):
        schedulers = [schedulers]
    for epoch in range(epochs):
        opt.step()
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for s in schedulers:
                s.step(epoch)
        assert [str(x.message) for x in w] == [EPOCH_DEPRECATION_WARNING] * len(schedulers)
        for group, target in zip(opt.param_groups, targets):
            assert close(group["lr"], target[epoch]), (epoch, group["lr"], target[epoch])


def check_plateau(opt, schedulers, targets, metrics, epochs):
    if not isinstance(schedulers, list):
        schedulers = [schedulers]
    for epoch in range(epochs):
        opt.step()
        for s in schedulers:
            if isinstance(s, ReduceLROnPlateau):
                s.step(metrics[epoch])
            else:
                s.step()
        for group, target in zip(opt.param_groups, targets):
            assert close(group["lr"], target[epoch]), (epoch, group["lr"], target[epoch])


def check_cycle(opt, scheduler, lr_targets, momentum_targets, batches, use_beta1=False):
    for batch in range(batches):
        for group, lr_t, m_t in zip(opt.param_groups, lr_targets, momentum_targets):
            assert close(group["lr"], lr_t[batch]), (batch, group["lr"], lr_t[batch])
            if m_t[batch] is not None:
                momentum = group["betas"][0] if use_beta1 else group["momentum"]
                assert close(momentum, m_t[batch]), (batch, momentum, m_t[batch])
        opt.step()
        scheduler.step()


def check_get_last_lr(opt, schedulers, targets, epochs=10):
    if isinstance(schedulers, LRScheduler):
        schedulers = [schedulers]
    for epoch in range(epochs):
        result = [s.get_last_lr() for s in schedulers]
        opt.step()
        for s in schedulers:
            s.step()
        for r in result:
            assert all(close(a, t[epoch]) for a, t in zip(r, targets)), (epoch, r)


def by_ten(single):
    return [single, [x * 10 for x in single]]


# -- call-order warnings, references ------------------------------------------------------------


def test_error_when_get_lr_has_an_argument():
    class BadMultiStep(LRScheduler):
        def __init__(self, optimizer, gamma, milestones, last_epoch=-1):
            self.gamma, self.milestones = gamma, milestones
            super().__init__(optimizer, last_epoch)

        def get_lr(self, step):
            return [1.0]

    with pytest.raises(TypeError):
        BadMultiStep(optim.SGD([np.zeros(1)], lr=1), gamma=1, milestones=[10, 20])


def test_no_cyclic_references():
    o = optim.SGD([Parameter(np.zeros(10))], lr=0.5)
    scheduler = LambdaLR(o, lambda epoch: 1.0)
    del scheduler
    assert len(gc.get_referrers(o)) == 0, "Optimizer should contain no cyclic references"
    gc.collect()
    del o
    assert gc.collect() == 0, "Optimizer should be garbage-collected on __del__"


def test_no_cyclic_references_in_step():
    def run():
        p = Parameter(np.zeros(10))
        o = optim.SGD([p], lr=0.5)
        scheduler = LambdaLR(o, lambda epoch: 1.0)
        p.grad = np.ones(10)
        o.step()
        scheduler.step()
        return weakref.ref(scheduler)

    gc.disable()
    try:
        assert run()() is None
    finally:
        gc.enable()


def test_cycle_lr_removed_after_out_of_scope():
    def run():
        adam = optim.Adam([Parameter(np.zeros(3))])
        return weakref.ref(CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False))

    gc.disable()
    try:
        assert run()() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("resume", [False, True])
def test_old_pattern_warning(opt, resume):
    if resume:
        for group in opt.param_groups:
            group["initial_lr"] = 0.01
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        scheduler = StepLR(opt, gamma=0.1, step_size=3, last_epoch=10 if resume else -1)
    assert ws == []
    with pytest.warns(UserWarning, match="how-to-adjust-learning-rate"):
        for _ in range(35):
            scheduler.step()
            opt.step()


def test_old_pattern_warning_with_overridden_optim_step(opt):
    for group in opt.param_groups:
        group["initial_lr"] = 0.01
    scheduler = StepLR(opt, gamma=0.1, step_size=3, last_epoch=10)
    old_step = opt.step
    opt.step = types.MethodType(lambda o, *a, **k: old_step(*a, **k), opt)
    with pytest.warns(UserWarning, match="how-to-adjust-learning-rate"):
        for _ in range(35):
            scheduler.step()
            opt.step()


def test_new_pattern_no_warning(opt):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        scheduler = StepLR(opt, gamma=0.1, step_size=3)
        for _ in range(35):
            opt.step()
            scheduler.step()
    assert ws == []


def test_new_pattern_no_warning_with_overridden_optim_step(opt):
    scheduler = StepLR(opt, gamma=0.1, step_size=3)
    old_step = opt.step
    opt.step = types.MethodType(lambda o, *a, **k: old_step(*a, **k), opt)
    with pytest.warns(UserWarning, match=r"`optimizer.step\(\)` has been overridden"):
        for _ in range(35):
            opt.step()
            scheduler.step()


@pytest.mark.parametrize(
    "make",
    [lambda o: StepLR(o, 2), lambda o: ExponentialLR(o, gamma=0.9), lambda o: ConstantLR(o),
     lambda o: LinearLR(o), lambda o: PolynomialLR(o, power=0.9)],
    ids=["step", "exp", "constant", "linear", "poly"],
)
def test_lr_is_constant_for_constant_epoch(opt, make):
    scheduler = make(opt)
    seen = []
    for _ in range(10):
        opt.step()
        with pytest.warns(UserWarning, match="The epoch parameter"):
            scheduler.step(2)
        seen.append(opt.param_groups[0]["lr"])
    assert min(seen) == max(seen)


# -- the schedules, against torch's targets -----------------------------------------------------


def test_step_lr(opt):
    check(opt, StepLR(opt, gamma=0.1, step_size=3), by_ten([0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3))


def test_get_last_lr_step_lr():
    o = optim.SGD([Parameter(np.zeros((2, 2)))], 0.1)
    check_get_last_lr(o, StepLR(o, 3, gamma=0.1), [[0.1] * 3 + [0.01] * 3 + [0.001] * 3 + [0.0001]])


def test_get_last_lr_multi_step_lr(opt):
    check_get_last_lr(opt, MultiStepLR(opt, gamma=0.1, milestones=[2, 5, 9]),
                      by_ten([0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 1))


def test_multi_step_lr(opt):
    check(opt, MultiStepLR(opt, gamma=0.1, milestones=[2, 5, 9]),
          by_ten([0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 3))


def test_multi_step_lr_with_epoch(opt):
    check_with_epoch(opt, MultiStepLR(opt, gamma=0.1, milestones=[2, 5, 9]),
                     by_ten([0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 3))


def test_constantlr(opt):
    check(opt, ConstantLR(opt, factor=1.0 / 2, total_iters=5), by_ten([0.025] * 5 + [0.05] * 5))


def test_get_last_lr_constantlr(opt):
    check_get_last_lr(opt, ConstantLR(opt, factor=1.0 / 2, total_iters=5), by_ten([0.025] * 5 + [0.05] * 5))


def test_constantlr_with_epoch(opt):
    check_with_epoch(opt, ConstantLR(opt, factor=1.0 / 2, total_iters=5), by_ten([0.025] * 5 + [0.05] * 5))


def test_get_last_lr_linearlr(opt):
    start, end, iters = 1.0 / 4, 3.0 / 5, 4
    interp = [start + i * (end - start) / iters for i in range(iters)]
    single = [x * 0.05 for x in interp] + [0.05 * end] * (10 - iters)
    check_get_last_lr(opt, LinearLR(opt, start_factor=start, end_factor=end, total_iters=iters), by_ten(single))


@pytest.mark.parametrize("with_epoch", [False, True])
def test_linearlr(opt, with_epoch):
    start, iters = 1.0 / 2, 4
    interp = [start + i * (1 - start) / iters for i in range(iters)]
    single = [x * 0.05 for x in interp] + [0.05] * (10 - iters)
    (check_with_epoch if with_epoch else check)(opt, LinearLR(opt, start_factor=start, total_iters=iters),
                                                by_ten(single))


def test_exp_lr(opt):
    check(opt, ExponentialLR(opt, gamma=0.9), by_ten([0.05 * 0.9**x for x in range(10)]))


def test_poly_lr(opt):
    single = [(1.0 - x / 5) ** 0.9 * 0.05 for x in range(5)] + [0.0] * 5
    check(opt, PolynomialLR(opt, power=0.9, total_iters=5), by_ten(single))


def test_cos_anneal_lr(opt):
    eta_min = 1e-10
    targets = [[eta_min + (base - eta_min) * (1 + math.cos(math.pi * x / 10)) / 2 for x in range(10)]
               for base in (0.05, 0.5)]
    check(opt, CosineAnnealingLR(opt, T_max=10, eta_min=eta_min), targets)


@pytest.mark.parametrize(
    "make",
    [lambda o: StepLR(o, gamma=0.1, step_size=3),
     lambda o: LinearLR(o, start_factor=1.0 / 3, end_factor=0.7, total_iters=4),
     lambda o: ConstantLR(o, factor=1.0 / 3, total_iters=4),
     lambda o: MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]),
     lambda o: ExponentialLR(o, gamma=0.9),
     lambda o: PolynomialLR(o, power=0.9),
     lambda o: CosineAnnealingLR(o, T_max=5, eta_min=1e-10)],
    ids=["step", "linear", "constant", "multistep", "exp", "poly", "cosine"],
)
def test_against_closed_form(make):
    o = make_opt()
    closed = make(o)
    targets = []
    for epoch in range(20):
        o.step()
        with pytest.warns(UserWarning, match="The epoch parameter"):
            closed.step(epoch)
        targets.append([g["lr"] for g in o.param_groups])
    # (torch's version of this test reads the lrs of a fresh optimizer the schedulers do not
    # drive, so it compares constants; here the chainable form after `epoch` steps is
    # compared with the closed form at `epoch`.)
    o = make_opt()
    chained = make(o)
    for epoch in range(20):
        for g, t in zip(o.param_groups, targets[epoch]):
            assert close(g["lr"], t), epoch
        o.step()
        chained.step()


def test_cos_anneal_lr_continue(opt):
    scheduler = CosineAnnealingLR(opt, T_max=5, eta_min=0.1)
    opt.step()
    scheduler.step()
    original = scheduler._last_lr
    resumed = CosineAnnealingLR(opt, T_max=5, eta_min=0.1, last_epoch=0)
    np.testing.assert_allclose(original, resumed._last_lr, rtol=1e-4, atol=1e-5)


PLATEAU = [
    # (kwargs, targets for group 0, metrics, epochs), torch's test_reduce_lr_on_plateau1..8
    (dict(threshold_mode="abs", mode="min", threshold=0.01, patience=5, cooldown=5), [[0.5] * 20],
     [10 - i * 0.0167 for i in range(20)], 10),
    (dict(patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
     [[0.5] * 6 + [0.05] * 7 + [0.005] * 7 + [0.0005] * 2], [10 - i * 0.0165 for i in range(22)], 22),
    (dict(mode="max", patience=5, cooldown=5, threshold_mode="abs"), [[0.5] * (2 + 6) + [0.05] * (5 + 6) + [0.005] * 4],
     [-0.8] * 2 + [-0.234] * 20, 22),
    (dict(mode="max", patience=3, threshold_mode="rel", threshold=0.1), [[0.5] * 20],
     [1.5 * (1.025**i) for i in range(20)], 20),
    (dict(mode="max", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
     [[0.5] * 6 + [0.05] * (5 + 6) + [0.005] * 4], [1.5 * (1.005**i) for i in range(20)], 20),
    (dict(mode="min", threshold_mode="rel", threshold=0.1), [[0.5] * 20], [1.5 * (0.85**i) for i in range(20)], 20),
    (dict(mode="min", threshold_mode="rel", threshold=0.1, patience=5, cooldown=5),
     [[0.5] * 6 + [0.05] * (5 + 6) + [0.005] * 4], [1] * 7 + [0.6] + [0.5] * 12, 20),
    (dict(mode="max", threshold_mode="rel", min_lr=[0.4, 0.3], threshold=0.1, patience=5, cooldown=5),
     [[0.5] * 6 + [0.4] * 14, [0.5] * 6 + [0.3] * 14], [1.5 * (1.005**i) for i in range(20)], 20),
]


@pytest.mark.parametrize("case", range(len(PLATEAU)), ids=[f"plateau{i + 1}" for i in range(len(PLATEAU))])
def test_reduce_lr_on_plateau(opt, case):
    kwargs, targets, metrics, epochs = PLATEAU[case]
    for group in opt.param_groups:
        group["lr"] = 0.5
    check_plateau(opt, ReduceLROnPlateau(opt, **kwargs), targets, metrics, epochs)


def test_sequentiallr1(opt):
    targets = [[0.05, 0.04, 0.032] + [0.05] * 4 + [0.005] * 4 + [0.0005] * 4 + [0.00005] * 4]
    scheds = [ExponentialLR(opt, gamma=0.8), StepLR(opt, gamma=0.1, step_size=4)]
    check(opt, SequentialLR(opt, schedulers=scheds, milestones=[3]), targets, 19)


def test_sequentiallr2(opt):
    targets = [[0.005, 0.005, 0.005] + [0.05 * 0.9**x for x in range(10)]]
    scheds = [ConstantLR(opt, factor=0.1, total_iters=3), ExponentialLR(opt, gamma=0.9)]
    check(opt, SequentialLR(opt, schedulers=scheds, milestones=[3]), targets, 13)


def test_sequentiallr3(opt):
    targets = [[0.005] * 3 + [0.05, 0.04, 0.032] + [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005]]
    scheds = [ConstantLR(opt, factor=0.1, total_iters=3), ExponentialLR(opt, gamma=0.8),
              StepLR(opt, gamma=0.1, step_size=2)]
    check(opt, SequentialLR(opt, schedulers=scheds, milestones=[3, 6]), targets, 12)


def test_sequentiallr4():
    o = optim.SGD([np.array(0.5)], lr=0.1)
    before = o.param_groups[0]["lr"]
    SequentialLR(o, [ConstantLR(o, factor=1), ConstantLR(o, factor=0.1)], milestones=[10])
    assert o.param_groups[0]["lr"] == before


def test_get_last_lr_sequentiallr(opt):
    scheds = [ConstantLR(opt, factor=0.1, total_iters=3), ExponentialLR(opt, gamma=0.8),
              StepLR(opt, gamma=0.1, step_size=2)]
    scheduler = SequentialLR(opt, schedulers=scheds, milestones=[3, 6])
    single = [0.005] * 3 + [0.05, 0.04, 0.032] + [0.05, 0.05, 0.005, 0.005, 0.0005, 0.0005]
    check_get_last_lr(opt, scheduler, [single, [x * 10 for x in single]], 12)


def test_chained_lr_get_last_lr_before_step(opt):
    scheds = [LinearLR(opt, start_factor=0.4, total_iters=3), MultiStepLR(opt, milestones=[4, 8, 10], gamma=0.1)]
    assert ChainedScheduler(scheds).get_last_lr() == scheds[-1].get_last_lr()


CHAINED = [
    (lambda o: [StepLR(o, gamma=0.1, step_size=3)], [[0.05] * 3 + [0.005] * 3 + [0.0005] * 3 + [0.00005] * 3], 10),
    (lambda o: [LinearLR(o, start_factor=0.4, total_iters=3)], [[0.02, 0.03, 0.04] + [0.05] * 9], 10),
    (lambda o: [LinearLR(o, start_factor=0.4, total_iters=3), MultiStepLR(o, milestones=[4, 8, 10], gamma=0.1)],
     [[0.02, 0.03, 0.04, 0.05] + [0.005] * 4 + [0.0005] * 3 + [0.00005] * 3], 10),
    (lambda o: [ExponentialLR(o, gamma=0.9), ConstantLR(o, factor=0.2, total_iters=4), StepLR(o, gamma=0.1, step_size=3)],
     [[0.05 * 0.2 * 0.9**x for x in range(3)] + [0.05 * 0.2 * 0.9**3 * 0.1]
      + [0.05 * 0.9**x * 0.1 for x in range(4, 6)] + [0.05 * 0.9**x * 0.01 for x in range(6, 9)]], 9),
    (lambda o: [PolynomialLR(o, power=0.9, total_iters=5), ConstantLR(o, factor=0.1)],
     [[0.1 * lr * (1.0 - x / 5) ** 0.9 for x in range(5)] + [0.0] * 5 for lr in (0.05, 0.5)], 10),
]


@pytest.mark.parametrize("case", range(len(CHAINED)), ids=[f"chained{i + 1}" for i in range(len(CHAINED))])
def test_chained_lr(opt, case):
    make, targets, epochs = CHAINED[case]
    scheds = make(opt)
    scheduler = ChainedScheduler(scheds)
    check(opt, scheduler, targets, epochs)
    assert scheduler.get_last_lr() == scheds[-1].get_last_lr()


# torch's compound cosine tests use eta_min=1e-10 and targets that scale it with the lr (off by
# ~1e-10, within their atol); with eta_min=0 the product form is exact.
def _cos(x, eta_min=0.0, epochs=10):
    return eta_min + (0.05 - eta_min) * (1 + math.cos(math.pi * x / epochs)) / 2


def _lin(single, iters, start, end=1.0):
    single = list(single)
    for i in range(iters):
        single[i] *= start + i / iters * (end - start)
    for i in range(iters, len(single)):
        single[i] *= end
    return single


COMPOUND = [
    # two schedulers stepped one after the other (torch's test_compound_*)
    (lambda o: [StepLR(o, gamma=0.1, step_size=3), MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9])],
     [[0.05] * 2 + [0.005] * 1 + [5e-4] * 2 + [5e-5] + [5e-6] * 3 + [5e-8]]),
    (lambda o: [StepLR(o, gamma=0.1, step_size=3), ExponentialLR(o, gamma=0.9)],
     by_ten([0.05 * 0.1 ** (x // 3) * 0.9**x for x in range(12)])),
    (lambda o: [MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]), ExponentialLR(o, gamma=0.9)],
     by_ten([0.05 * 0.1 ** sum(x >= m for m in (2, 5, 9)) * 0.9**x for x in range(11)])),
    (lambda o: [LinearLR(o, start_factor=0.4, end_factor=0.9, total_iters=4), ExponentialLR(o, gamma=0.9)],
     by_ten(_lin([0.05 * 0.9**x for x in range(11)], 4, 0.4, 0.9))),
    (lambda o: [StepLR(o, gamma=0.1, step_size=3), ConstantLR(o, factor=0.4, total_iters=4)],
     by_ten([0.05 * 0.4] * 3 + [0.005 * 0.4] + [0.005] * 2 + [0.0005] * 3 + [0.00005] * 3)),
    (lambda o: [MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]), LinearLR(o, start_factor=0.4, total_iters=4)],
     by_ten(_lin([0.05] * 2 + [0.005] * 3 + [0.0005] * 4 + [0.00005] * 2, 4, 0.4))),
    (lambda o: [CosineAnnealingLR(o, T_max=10, eta_min=0.0), StepLR(o, gamma=0.1, step_size=3)],
     by_ten([_cos(x) * 0.1 ** (x // 3) for x in range(10)])),
    (lambda o: [CosineAnnealingLR(o, T_max=10, eta_min=0.0), MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9])],
     by_ten([_cos(x) * m for x, m in zip(range(10), [1] * 2 + [0.1] * 3 + [0.01] * 4 + [0.001])])),
    (lambda o: [LinearLR(o, start_factor=0.4, total_iters=4), CosineAnnealingLR(o, T_max=10, eta_min=0.0)],
     by_ten(_lin([_cos(x) for x in range(10)], 4, 0.4))),
    (lambda o: [CosineAnnealingLR(o, T_max=10, eta_min=0.0), ExponentialLR(o, gamma=0.1)],
     by_ten([_cos(x) * 0.1**x for x in range(10)])),
]


@pytest.mark.parametrize("case", range(len(COMPOUND)), ids=[f"compound{i + 1}" for i in range(len(COMPOUND))])
def test_compound(opt, case):
    make, targets = COMPOUND[case]
    check(opt, make(opt), targets, 10)


def test_compound_reduce_lr_on_plateau(opt):
    """torch's test_compound_reduce_lr_on_plateau2 (whose targets are emptied there, so it
    checks nothing), with targets derived here: the metric improves by more than the 0.1
    threshold every 7 epochs, so the plateau (patience 5) cuts the lr at epochs 6, 13 and 20;
    MultiStepLR cuts it at its steps 3, 8 and 12 (step e + 1 happens in epoch e)."""
    for group in opt.param_groups:
        group["lr"] = 0.5
    scheds = [ReduceLROnPlateau(opt, patience=5, cooldown=0, threshold_mode="abs", mode="min", threshold=0.1),
              MultiStepLR(opt, gamma=0.1, milestones=[3, 8, 12])]
    single = [0.5 * 0.1 ** sum(m <= e + 1 for m in (3, 8, 12)) * 0.1 ** sum(r <= e for r in (6, 13, 20))
              for e in range(22)]
    check_plateau(opt, scheds, [single, single], [10 - i * 0.0165 for i in range(22)], 22)


def test_cycle_lr_invalid_mode(opt):
    with pytest.raises(ValueError):
        CyclicLR(opt, base_lr=0, max_lr=0, mode="CATS")


TRI2 = [1, 2, 3, 4, 5, 4, 3, 2, 1, 1.5, 2.0, 2.5, 3.0, 2.5, 2.0, 1.5, 1, 1.25, 1.50, 1.75, 2.00, 1.75]
TRI2_M = [5.0, 4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 4.0, 3.5, 3.0, 3.5, 4.0, 4.5, 5.0, 4.75, 4.5, 4.25,
          4.0, 4.25]
XS = [0, 0.25, 0.5, 0.75, 1, 0.75, 0.50, 0.25, 0, 0.25, 0.5, 0.75, 1]


def test_cycle_lr_triangular_mode_one_lr(opt):
    lr, m = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3], [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3]
    s = CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=True, base_momentum=1, max_momentum=5)
    check_cycle(opt, s, [lr, lr], [m, m], len(lr))


def test_cycle_lr_triangular_mode_one_lr_no_momentum(opt):
    lr = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3]
    m = [opt.defaults["momentum"]] * len(lr)
    s = CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False)
    check_cycle(opt, s, [lr, lr], [m, m], len(lr))


def test_cycle_lr_triangular2_mode_one_lr(opt):
    s = CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=4, base_momentum=1, max_momentum=5, mode="triangular2")
    check_cycle(opt, s, [TRI2, TRI2], [TRI2_M, TRI2_M], len(TRI2))


def test_cycle_lr_exp_range_mode_one_lr(opt):
    lr = [1 + x * 4 * 0.9**i for i, x in enumerate(XS)]
    m = [5 - x * 4 * 0.9**i for i, x in enumerate(XS)]
    s = CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=4, base_momentum=1, max_momentum=5, mode="exp_range", gamma=0.9)
    check_cycle(opt, s, [lr, lr], [m, m], len(lr))


def test_cycle_lr_triangular_mode(opt):
    lr1, m1 = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3], [5, 4, 3, 2, 1, 2, 3, 4, 5, 4, 3]
    s = CyclicLR(opt, base_lr=[1, 2], max_lr=[5, 6], step_size_up=4, base_momentum=[1, 2], max_momentum=[5, 6])
    check_cycle(opt, s, [lr1, [x + 1 for x in lr1]], [m1, [x + 1 for x in m1]], len(lr1))


def test_cycle_lr_triangular2_mode(opt):
    s = CyclicLR(opt, base_lr=[1, 3], max_lr=[5, 7], step_size_up=4, base_momentum=[1, 3], max_momentum=[5, 7],
                 mode="triangular2")
    check_cycle(opt, s, [TRI2, [x + 2 for x in TRI2]], [TRI2_M, [x + 2 for x in TRI2_M]], len(TRI2))


def test_cycle_lr_exp_range_mode(opt):
    lr1 = [1 + x * 4 * 0.9**i for i, x in enumerate(XS)]
    lr2 = [5 + x * 7 * 0.9**i for i, x in enumerate(XS)]
    m1 = [5 - x * 4 * 0.9**i for i, x in enumerate(XS)]
    m2 = [12 - x * 7 * 0.9**i for i, x in enumerate(XS)]
    s = CyclicLR(opt, base_lr=[1, 5], max_lr=[5, 12], step_size_up=4, base_momentum=[1, 5], max_momentum=[5, 12],
                 mode="exp_range", gamma=0.9)
    check_cycle(opt, s, [lr1, lr2], [m1, m2], len(lr1))


def test_cycle_lr_triangular_mode_step_size_up_down(opt):
    lr = [1.0, 2.0, 3.0, 4.0, 5.0, 13.0 / 3, 11.0 / 3, 9.0 / 3, 7.0 / 3, 5.0 / 3, 1.0]
    m = [5.0, 4.0, 3.0, 2.0, 1.0, 5.0 / 3, 7.0 / 3, 3.0, 11.0 / 3, 13.0 / 3, 5.0]
    s = CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=4, step_size_down=6, base_momentum=1, max_momentum=5)
    check_cycle(opt, s, [lr, lr], [m, m], len(lr))


def test_cycle_lr_triangular2_mode_step_size_up_down(opt):
    lr = [1.0, 3.0, 5.0, 13.0 / 3, 11.0 / 3, 9.0 / 3, 7.0 / 3, 5.0 / 3, 1.0, 2.0, 3.0, 8.0 / 3, 7.0 / 3, 6.0 / 3,
          5.0 / 3, 4.0 / 3, 1.0, 3.0 / 2, 2.0, 11.0 / 6, 10.0 / 6, 9.0 / 6, 8.0 / 6, 7.0 / 6]
    m = [5.0, 3.0, 1.0, 5.0 / 3, 7.0 / 3, 3.0, 11.0 / 3, 13.0 / 3, 5.0, 4.0, 3.0, 10.0 / 3, 11.0 / 3, 4.0, 13.0 / 3,
         14.0 / 3, 5.0, 4.5, 4.0, 25.0 / 6, 13.0 / 3, 4.5, 14.0 / 3, 29.0 / 6]
    s = CyclicLR(opt, base_lr=[1, 3], max_lr=[5, 7], step_size_up=2, step_size_down=6, base_momentum=[1, 3],
                 max_momentum=[5, 7], mode="triangular2")
    check_cycle(opt, s, [lr, [x + 2 for x in lr]], [m, [x + 2 for x in m]], len(lr))


def test_cycle_lr_exp_range_mode_step_size_up_down(opt):
    xs = [0.0, 0.5, 1.0, 5.0 / 6, 4.0 / 6, 3.0 / 6, 2.0 / 6, 1.0 / 6, 0.0, 0.5, 1.0, 5.0 / 6, 4.0 / 6]
    lr = [1 + x * 4 * 0.9**i for i, x in enumerate(xs)]
    m = [5 - x * 4 * 0.9**i for i, x in enumerate(xs)]
    s = CyclicLR(opt, base_lr=1, max_lr=5, step_size_up=2, step_size_down=6, base_momentum=1, max_momentum=5,
                 mode="exp_range", gamma=0.9)
    check_cycle(opt, s, [lr, lr], [m, m], len(lr))


def test_cycle_lr_with_momentumless_optimizer():
    o = make_opt(optim.Adam)
    lr = [1, 2, 3, 4, 5, 4, 3, 2, 1, 2, 3]
    s = CyclicLR(o, base_lr=1, max_lr=5, step_size_up=4, cycle_momentum=False)
    check_cycle(o, s, [lr, lr], [[None] * len(lr)] * 2, len(lr))


def test_cycle_lr_state_dict_picklable():
    adam = optim.Adam([Parameter(np.zeros(3))])
    s = CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False)
    state = s.state_dict()
    assert "_scale_fn_ref" not in state
    pickle.dumps(state)


def test_cycle_lr_scale_fn_restored_from_state_dict():
    adam = optim.Adam([Parameter(np.zeros(3))])
    s = CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, mode="triangular2")
    restored = CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False)
    restored.load_state_dict(s.state_dict())
    assert restored.mode == s.mode == "triangular2"
    assert restored._scale_fn_ref is not None and restored._scale_fn_custom is None
    assert restored.scale_fn(3) == 0.25

    def scale_fn(_):
        return 0.5

    s = CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=scale_fn)
    restored = CyclicLR(adam, base_lr=1, max_lr=5, cycle_momentum=False, scale_fn=scale_fn)
    restored.load_state_dict(s.state_dict())
    assert s._scale_fn_custom is scale_fn and restored._scale_fn_custom is scale_fn


@pytest.mark.parametrize("kwargs", [dict(total_steps=10, anneal_strategy="CATS"), dict(total_steps=10, pct_start=1.1),
                                    dict()])
def test_onecycle_lr_invalid(opt, kwargs):
    with pytest.raises(ValueError):
        OneCycleLR(opt, max_lr=1e-3, **kwargs)


@pytest.mark.parametrize("cls, use_beta1", [(optim.SGD, False), (optim.Adam, True)])
def test_onecycle_lr_linear_annealing(cls, use_beta1):
    o = make_opt(cls)
    lr = [1, 13, 25, 21.5, 18, 14.5, 11, 7.5, 4, 0.5]
    m = [22, 11.5, 1, 4, 7, 10, 13, 16, 19, 22]
    s = OneCycleLR(o, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10,
                   anneal_strategy="linear")
    check_cycle(o, s, [lr, lr], [m, m], 10, use_beta1=use_beta1)


def test_onecycle_lr_linear_annealing_three_phases(opt):
    lr = [1, 9, 17, 25, 17, 9, 1, 0.75, 0.5, 0.25]
    m = [22, 15, 8, 1, 8, 15, 22, 22, 22, 22]
    s = OneCycleLR(opt, max_lr=25, div_factor=25, base_momentum=1, max_momentum=22, total_steps=10,
                   anneal_strategy="linear", pct_start=0.4, final_div_factor=4, three_phase=True)
    check_cycle(opt, s, [lr, lr], [m, m], 10)


def test_onecycle_lr_cosine_annealing(opt):
    def cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    lr = [1, 13, 25] + [cos(25, 0.5, i / 7.0) for i in range(1, 7)] + [0.5]
    m = [22, 11.5, 1] + [cos(1, 22, i / 7.0) for i in range(1, 7)] + [22]
    s = OneCycleLR(opt, max_lr=25, final_div_factor=2, base_momentum=1, max_momentum=22, total_steps=10)
    check_cycle(opt, s, [lr, lr], [m, m], 10)


def test_lambda_lr(opt):
    opt.param_groups[1]["lr"] = 0.4
    targets = [[0.05 * 0.9**x for x in range(10)], [0.4 * 0.8**x for x in range(10)]]
    check(opt, LambdaLR(opt, lr_lambda=[lambda x1: 0.9**x1, lambda x2: 0.8**x2]), targets)


def test_multiplicative_lr(opt):
    opt.param_groups[1]["lr"] = 0.4
    targets = [[0.05 * 0.9**x for x in range(10)], [0.4 * 0.8**x for x in range(10)]]
    check(opt, MultiplicativeLR(opt, lr_lambda=[lambda x1: 0.9, lambda x2: 0.8]), targets)


@pytest.mark.parametrize("T_mult", [1, 2, 4])
def test_cosine_annealing_warm_restarts_lr1(opt, T_mult):
    eta_min, T_i, T_cur = 1e-10, 10, 0
    targets = [[0.05], [0.5]]
    for _ in range(1, 100):
        T_cur += 1
        if T_cur >= T_i:
            T_cur, T_i = T_cur - T_i, T_mult * T_i
        for t, base in zip(targets, (0.05, 0.5)):
            t.append(eta_min + (base - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2)
    check(opt, CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=T_mult, eta_min=eta_min), targets, 100)


@pytest.mark.parametrize("T_mult", [1, 2, 4])
def test_cosine_annealing_warm_restarts_lr2(opt, T_mult):
    eta_min, T_i, T_cur = 1e-10, 10, 0
    targets = [[0.05], [0.5]]
    epochs = [round(e, 1) for e in np.arange(0, 30, 0.1)]
    for _ in epochs[1:]:
        T_cur = round(T_cur + 0.1, 1)
        if T_cur >= T_i:
            T_cur, T_i = T_cur - T_i, T_mult * T_i
        for t, base in zip(targets, (0.05, 0.5)):
            t.append(eta_min + (base - eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2)
    s = CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=T_mult, eta_min=eta_min)
    for i, e in enumerate(epochs):
        s.step(e)
        for g, t in zip(opt.param_groups, targets):
            assert close(g["lr"], t[i]), (e, g["lr"], t[i])


@pytest.mark.parametrize("case", range(3))
def test_cosine_annealing_warm_restarts_lr3(opt, case):
    epochs = [[0, 1, 2, 3, 4, 5, 12, 27, 3, 4, 5, 6, 13],
              [0, 1, 2, 3, 4, 5, 25, 32, 33, 34, 80, 81, 3],
              [0, 0.1, 0.2, 0.3, 1.3, 2.3, 17.5, 18.5, 19.5, 29.5, 30.5, 31.5, 50]][case]
    T_curs = [[1, 2, 3, 4, 5, 2, 7, 3, 4, 5, 6, 3],
              [1, 2, 3, 4, 5, 15, 2, 3, 4, 10, 11, 3],
              [0.1, 0.2, 0.3, 1.3, 2.3, 7.5, 8.5, 9.5, 19.5, 20.5, 21.5, 10]][case]
    T_is = [[10] * 12, [10, 10, 10, 10, 10, 20, 40, 40, 40, 80, 80, 10],
            [10, 10, 10, 10, 10, 30, 30, 30, 30, 30, 30, 90]][case]
    eta_min = 1e-10
    targets = [[base] + [eta_min + (base - eta_min) * (1 + math.cos(math.pi * c / i)) / 2 for c, i in zip(T_curs, T_is)]
               for base in (0.05, 0.5)]
    s = CosineAnnealingWarmRestarts(opt, T_0=10, T_mult=[1, 2, 3][case], eta_min=eta_min)
    for index, e in enumerate(epochs):
        s.step(e)
        for g, t in zip(opt.param_groups, targets):
            assert close(g["lr"], t[index]), (e, g["lr"], t[index])


def run_swalr(opt, swa_scheduler, scheduler, targets, swa_start, epochs):
    for epoch in range(epochs):
        for g, t in zip(opt.param_groups, targets):
            assert close(g["lr"], t[epoch]), (epoch, g["lr"], t[epoch])
        if epoch >= swa_start:
            opt.step()
            swa_scheduler.step()
        elif scheduler is not None:
            opt.step()
            scheduler.step()


def test_swalr_no_anneal(opt):
    initial = [g["lr"] for g in opt.param_groups]
    targets = [[lr] * 6 + [0.01] * 4 for lr in initial]
    run_swalr(opt, SWALR(opt, anneal_epochs=1, swa_lr=0.01), None, targets, 5, 10)


@pytest.mark.parametrize("strategy", ["cos", "linear"])
def test_swalr_anneal_after_multiplicative(opt, strategy):
    epochs, swa_start, anneal_epochs = 15, 5, 5 if strategy == "cos" else 4
    swa_lrs = [0.01, 0.01] if strategy == "cos" else [0.01, 0.02]
    scheduler = MultiplicativeLR(opt, lr_lambda=lambda epoch: 0.9)
    swa = SWALR(opt, anneal_epochs=anneal_epochs, swa_lr=swa_lrs if strategy == "linear" else 0.01,
                anneal_strategy=strategy)

    def coef(t):
        if t + 1 >= anneal_epochs:
            return 0.0
        if strategy == "cos":
            return (1 + math.cos(math.pi * (t + 1) / anneal_epochs)) / 2
        return 1 - (t + 1) / anneal_epochs

    before = [[lr * 0.9**i for i in range(swa_start + 1)] for lr in (0.05, 0.5)]
    targets = [lrs + [lrs[-1] * coef(t) + s * (1 - coef(t)) for t in range(epochs - swa_start - 1)]
               for lrs, s in zip(before, swa_lrs)]
    run_swalr(opt, swa, scheduler, targets, swa_start, epochs)


def test_swalr_hypers(opt):
    with pytest.raises(ValueError, match="anneal_strategy must"):
        SWALR(opt, anneal_strategy="exponential", swa_lr=1.0)
    with pytest.raises(ValueError, match="anneal_epochs must"):
        SWALR(opt, anneal_epochs=-1, swa_lr=1.0)
    with pytest.raises(ValueError, match="anneal_epochs must"):
        SWALR(opt, anneal_epochs=1.7, swa_lr=1.0)
    with pytest.raises(ValueError, match="swa_lr must"):
        SWALR(opt, swa_lr=[1.0, 0.1, 0.01])


STATE_DICT = [
    (lambda o: StepLR(o, gamma=0.1, step_size=3), lambda o: StepLR(o, gamma=0.01 / 2, step_size=1)),
    (lambda o: MultiStepLR(o, gamma=0.1, milestones=[2, 5, 9]), lambda o: MultiStepLR(o, gamma=0.01, milestones=[1, 4, 6])),
    (lambda o: ExponentialLR(o, gamma=0.1), lambda o: ExponentialLR(o, gamma=0.01)),
    (lambda o: CosineAnnealingLR(o, T_max=10, eta_min=1e-10), lambda o: CosineAnnealingLR(o, T_max=5, eta_min=5e-11)),
    (lambda o: CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2), lambda o: CosineAnnealingWarmRestarts(o, T_0=100)),
    (lambda o: SWALR(o, anneal_epochs=3, swa_lr=0.5), lambda o: SWALR(o, anneal_epochs=10, anneal_strategy="linear", swa_lr=5.0)),
]


@pytest.mark.parametrize("case", range(len(STATE_DICT)))
def test_scheduler_state_dict(opt, case):
    make, make2 = STATE_DICT[case]
    s = make(opt)
    for _ in range(10):
        opt.step()
        s.step()
    copy = make2(opt)
    copy.load_state_dict(s.state_dict())
    for key in s.__dict__:
        if key != "optimizer":
            assert s.__dict__[key] == copy.__dict__[key], key
    assert s.get_last_lr() == copy.get_last_lr()


def test_reduce_lr_on_plateau_state_dict(opt):
    s = ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=2)
    for score in [1.0, 2.0, 3.0, 4.0, 3.0, 4.0, 5.0, 3.0, 2.0, 1.0]:
        s.step(score)
    copy = ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=10)
    copy.load_state_dict(s.state_dict())
    for key in s.__dict__:
        if key != "optimizer":
            assert s.__dict__[key] == copy.__dict__[key], key


class LambdaObject:
    def __init__(self, value):
        self.value = value

    def __call__(self, epoch):
        return self.value * epoch

    def __eq__(self, other):
        return isinstance(other, LambdaObject) and self.__dict__ == other.__dict__


def test_lambda_lr_state_dict_fn(opt):
    s = LambdaLR(opt, lr_lambda=lambda x: x)
    state = s.state_dict()
    assert state["lr_lambdas"][0] is None
    copy = LambdaLR(opt, lr_lambda=lambda x: x)
    copy.load_state_dict(state)
    for key in s.__dict__:
        if key not in {"optimizer", "lr_lambdas"}:
            assert s.__dict__[key] == copy.__dict__[key], key


def test_lambda_lr_state_dict_obj(opt):
    s = LambdaLR(opt, lr_lambda=LambdaObject(10))
    state = s.state_dict()
    assert state["lr_lambdas"][0] is not None
    copy = LambdaLR(opt, lr_lambda=LambdaObject(-1))
    copy.load_state_dict(state)
    for key in s.__dict__:
        if key != "optimizer":
            assert s.__dict__[key] == copy.__dict__[key], key
