"""Optimizer hooks against torch.optim 2.13: the same registrations give the same calls, in
the same order, with the same effect of return values and handle removal."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch
import torch.optim.optimizer as toptimizer

import gradclip.optim.optimizer as goptimizer
from gradclip import Parameter, optim


def make_pair(name="SGD", **kwargs):
    """(gradclip optimizer, torch optimizer, gradclip param, torch param), grads set."""
    p = Parameter(np.array([1.0, -2.0]))
    t = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
    kwargs.setdefault("lr", 0.1)
    opt, topt = getattr(optim, name)([p], **kwargs), getattr(torch.optim, name)([t], **kwargs)
    p.grad, t.grad = np.array([0.5, 0.25]), torch.tensor([0.5, 0.25], dtype=torch.float64)
    return opt, topt, p, t


def both(fn):
    """Run fn(opt, log) on a gradclip and a torch optimizer; return the two logs."""
    logs = []
    for side in (0, 1):
        pair = make_pair()
        log = []
        fn(pair[side], log)
        logs.append(log)
    return logs


def test_step_hooks_run_in_torchs_order_with_the_optimizer_args_and_kwargs():
    def fn(opt, log):
        def rec(tag):
            def hook(o, args, kwargs):
                assert o is opt and args[0] is opt
                log.append((tag, len(args), sorted(kwargs)))
            return hook

        handles = [
            opt.register_step_post_hook(rec("post1")),
            goptimizer.register_optimizer_step_post_hook(rec("gpost")) if isinstance(opt, optim.Optimizer)
            else toptimizer.register_optimizer_step_post_hook(rec("gpost")),
            opt.register_step_pre_hook(rec("pre1")),
            opt.register_step_pre_hook(rec("pre2")),
            opt.register_step_post_hook(rec("post2")),
            goptimizer.register_optimizer_step_pre_hook(rec("gpre")) if isinstance(opt, optim.Optimizer)
            else toptimizer.register_optimizer_step_pre_hook(rec("gpre")),
        ]
        try:
            opt.step()
            log.append("--")
            opt.step(closure=lambda: 1.0)
        finally:
            for h in handles:
                h.remove()

    ours, theirs = both(fn)
    assert ours == theirs
    assert ours[0][0] == "gpre" and ours[3][0] == "post1" and ours[5][0] == "gpost"


def test_a_pre_hook_returning_args_and_kwargs_replaces_them():
    def fn(opt, log):
        def swap_closure(o, args, kwargs):
            return (args[0],), {"closure": lambda: log.append("replaced") or 7.0}

        opt.register_step_pre_hook(swap_closure)
        opt.register_step_post_hook(lambda o, args, kwargs: log.append(sorted(kwargs)))
        log.append(opt.step(lambda: log.append("original") or 3.0))

    ours, theirs = both(fn)
    assert ours == theirs == ["replaced", ["closure"], 7.0]


@pytest.mark.parametrize("bad", [1, (1, 2, 3), [(), {}]])
def test_a_pre_hook_returning_anything_else_raises_runtime_error_like_torch(bad):
    opt, topt, p, t = make_pair()
    for o in (opt, topt):
        o.register_step_pre_hook(lambda *a: bad)
        with pytest.raises(RuntimeError, match=r"must return None or a tuple of \(new_args, new_kwargs\)"):
            o.step()
    np.testing.assert_array_equal(p.data, [1.0, -2.0])  # nothing stepped


def test_handles_remove_once_and_as_context_managers():
    def fn(opt, log):
        h1 = opt.register_step_pre_hook(lambda *a: log.append("h1"))
        h2 = opt.register_step_pre_hook(lambda *a: log.append("h2"))
        opt.step()
        h1.remove()
        h1.remove()  # a second remove is harmless
        opt.step()
        with h2:
            pass
        opt.step()
        log.append(h2.id > h1.id)

    ours, theirs = both(fn)
    assert ours == theirs == ["h1", "h2", "h2", True]


def test_removable_handle_does_not_keep_its_optimizer_alive():
    import gc
    import weakref

    opt = make_pair()[0]
    handle = opt.register_step_pre_hook(lambda *a: None)
    ref = weakref.ref(opt)
    del opt
    gc.collect()
    assert ref() is None
    handle.remove()  # a dead dict: nothing to do


def test_step_hooks_run_around_clip_and_step():
    opt, _, p, _ = make_pair()
    log = []
    opt.register_step_pre_hook(lambda o, args, kwargs: log.append(("pre", args[1:], kwargs)))
    opt.register_step_post_hook(lambda o, args, kwargs: log.append("post"))
    opt.clip_and_step(0.1, norm_type=2.0)
    assert log == [("pre", (0.1,), {"norm_type": 2.0}), "post"]
    # a pre hook can change clip_and_step's arguments too
    opt.register_step_pre_hook(lambda o, args, kwargs: ((o, 1e-9), kwargs))
    before = p.data.copy()
    p.grad = np.array([0.5, 0.25])
    opt.clip_and_step(100.0)
    np.testing.assert_allclose(p.data, before, atol=1e-9)


def test_post_hooks_do_not_run_when_the_step_raises():
    def fn(opt, log):
        opt.register_step_post_hook(lambda *a: log.append("post"))

        def closure():
            raise LookupError("boom")

        with pytest.raises(LookupError):
            opt.step(closure)
        log.append("after")

    ours, theirs = both(fn)
    assert ours == theirs == ["after"]


def test_a_subclass_step_is_hooked_once_even_when_it_calls_super():
    calls = []

    class Counting(optim.SGD):
        def step(self, closure=None, *, grads=None):
            calls.append("step")
            return super().step(closure, grads=grads)

    opt = Counting([Parameter(np.ones(2))], lr=0.1)
    opt.param_groups[0]["params"][0].grad = np.ones(2)
    opt.register_step_pre_hook(lambda *a: calls.append("pre"))
    opt.register_step_post_hook(lambda *a: calls.append("post"))
    opt.step()
    assert calls == ["pre", "step", "post"]


def test_a_python_optimizer_subclass_gets_step_hooks_like_torch():
    # A user's own optimizer, written as for torch: a step that loops over param_groups.
    def define(base):
        class Plain(base):
            def __init__(self, params, lr=0.1):
                super().__init__(params, {"lr": lr})

            def step(self, closure=None):
                for group in self.param_groups:
                    for p in group["params"]:
                        if p.grad is not None:
                            p.data -= group["lr"] * p.grad
                return None

        return Plain

    logs = []
    for base, param in ((optim.Optimizer, Parameter(np.ones(2))), (torch.optim.Optimizer, torch.ones(2, dtype=torch.float64))):
        log = []
        opt = define(base)([param])
        param.grad = np.ones(2) if isinstance(param, Parameter) else torch.ones(2, dtype=torch.float64)
        opt.register_step_pre_hook(lambda *a: log.append("pre"))
        opt.register_step_post_hook(lambda *a: log.append("post"))
        opt.step()
        logs.append((log, np.asarray(param.data).tolist()))
    assert logs[0] == logs[1] == (["pre", "post"], [0.9, 0.9])


def test_state_dict_hooks_order_prepend_and_replacement_like_torch():
    def fn(opt, log):
        opt.register_state_dict_pre_hook(lambda o: log.append("pre1"))
        opt.register_state_dict_pre_hook(lambda o: log.append("pre0"), prepend=True)

        def add_key(o, sd):
            log.append(("post1", sorted(sd)))
            sd["extra"] = 1

        def replace(o, sd):
            log.append(("post0", sorted(sd)))
            return {"replaced": sd}

        opt.register_state_dict_post_hook(add_key)
        opt.register_state_dict_post_hook(replace, prepend=True)
        opt.step()
        sd = opt.state_dict()
        log.append(sorted(sd))
        log.append(sorted(sd["replaced"]))

    ours, theirs = both(fn)
    assert ours == theirs
    assert ours == ["pre0", "pre1", ("post0", ["param_groups", "state"]), ("post1", ["replaced"]),
                    ["extra", "replaced"], ["param_groups", "state"]]


def test_load_state_dict_hooks_order_prepend_and_replacement_like_torch():
    def fn(opt, log):
        saved = opt.state_dict()
        saved["param_groups"][0]["lr"] = 0.5

        def pre(o, sd):
            log.append(("pre", sd is saved, sd["param_groups"][0]["lr"]))
            new = copy.deepcopy(sd)
            new["param_groups"][0]["lr"] = 0.25
            return new

        opt.register_load_state_dict_pre_hook(pre)
        opt.register_load_state_dict_pre_hook(lambda o, sd: log.append("pre0"), prepend=True)
        opt.register_load_state_dict_post_hook(lambda o: log.append(("post", o.param_groups[0]["lr"])))
        opt.register_load_state_dict_post_hook(lambda o: log.append("post0"), prepend=True)
        opt.load_state_dict(saved)
        log.append(opt.param_groups[0]["lr"])

    ours, theirs = both(fn)
    assert ours == theirs == ["pre0", ("pre", False, 0.5), "post0", ("post", 0.25), 0.25]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_hooks_are_not_copied_like_torch(how):
    copier = copy.deepcopy if how == "deepcopy" else lambda o: pickle.loads(pickle.dumps(o))
    results = []
    for side in (0, 1):
        opt = make_pair()[side]
        opt.register_step_pre_hook(print)
        opt.register_state_dict_post_hook(print)
        twin = copier(opt)
        results.append((len(twin._optimizer_step_pre_hooks), len(twin._optimizer_state_dict_post_hooks)))
        assert twin.register_step_post_hook(print) is not None
    assert results[0] == results[1] == (0, 0)


def test_global_hooks_see_every_optimizer_and_go_away_when_removed():
    seen = []
    pre = goptimizer.register_optimizer_step_pre_hook(lambda o, a, k: seen.append(type(o).__name__))
    post = goptimizer.register_optimizer_step_post_hook(lambda o, a, k: seen.append("post"))
    try:
        for name in ("SGD", "Adam", "Adagrad", "RMSprop", "Adadelta", "Adamax"):
            make_pair(name)[0].step()
    finally:
        pre.remove()
        post.remove()
    make_pair("Adam")[0].step()
    assert seen == [x for n in ("SGD", "Adam", "Adagrad", "RMSprop", "Adadelta", "Adamax") for x in (n, "post")]


def test_removable_handle_pickles_like_torchs():
    opt = make_pair()[0]
    handle = opt.register_step_pre_hook(print)
    clone = pickle.loads(pickle.dumps(handle))
    assert clone.id == handle.id
    assert goptimizer.RemovableHandle.next_id > handle.id
    clone.remove()  # its dict is a copy (or dead): the original hook stays
    assert handle.id in opt._optimizer_step_pre_hooks
