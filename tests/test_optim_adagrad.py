"""Adagrad against torch.optim.Adagrad 2.13 (tests/optim_suite.py), and what is Adagrad's own."""

import numpy as np
import pytest
import torch

from gradclip import Parameter, optim
from optim_parity import run_parity
from optim_suite import parity_tests

# Measured (resync after every step, torch's configurations): the sums are exact; a parameter
# moves by lr * g / (sqrt(sum) + eps), and torch's sqrt is 1 ulp off in ~17 % (float32) / ~1 %
# (float64) of elements, which is up to 8 ulps of a parameter near zero.
globals().update(
    parity_tests(
        "Adagrad",
        bounds={
            "float32": {"param": 16},
            "float64": {"param": 2},
            "complex64": {"param": 8},
            "complex128": {"param": 2},
            "whole_run_float64": 2,
        },
    )
)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(lr_decay=-0.5), "Invalid lr_decay value: -0.5"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(initial_accumulator_value=-1.0), "Invalid initial_accumulator_value value: -1.0"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
    ],
)
def test_constructor_errors_are_torchs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        torch.optim.Adagrad([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError, match=match):
        optim.Adagrad([np.zeros(2)], **kwargs)


def test_state_is_created_by_the_constructor_for_every_parameter():
    a, b = Parameter(np.zeros(3, np.float32)), Parameter(np.zeros((2, 2)))
    opt = optim.Adagrad([{"params": [a]}, {"params": [b], "lr": 0.5}], initial_accumulator_value=0.25)
    for p in (a, b):
        assert list(opt.state[p]) == ["step", "sum"]
        assert opt.state[p]["step"].dtype == np.float32 and opt.state[p]["step"].shape == ()
        np.testing.assert_array_equal(opt.state[p]["sum"], np.full_like(p.data, 0.25))
    assert list(opt.state_dict()["state"]) == [0, 1]


def test_complex_sum_starts_at_v_plus_vj():
    z = np.zeros(2, np.complex64)
    opt = optim.Adagrad([z], initial_accumulator_value=0.5)
    np.testing.assert_array_equal(opt.state[z]["sum"], np.full(2, 0.5 + 0.5j, np.complex64))


def test_a_later_group_gets_the_constructors_initial_accumulator_value_like_torch():
    # torch's _init_group reads self.defaults["initial_accumulator_value"]: a group's own value
    # is stored but not used.
    a, ta = np.ones(3), torch.ones(3, dtype=torch.float64)
    b, tb = np.ones(4), torch.ones(4, dtype=torch.float64)
    opt, topt = optim.Adagrad([a], initial_accumulator_value=0.1), torch.optim.Adagrad([ta], initial_accumulator_value=0.1)
    opt.add_param_group({"params": [b], "initial_accumulator_value": 3.0})
    topt.add_param_group({"params": [tb], "initial_accumulator_value": 3.0})
    assert b not in opt.state and tb not in topt.state
    g = np.array([0.5, -1.0, 2.0, 0.25])
    tb.grad = torch.from_numpy(g.copy())
    topt.step()
    opt.step(grads=[None, g.copy()])
    np.testing.assert_array_equal(opt.state[b]["sum"], topt.state[tb]["sum"].numpy())
    np.testing.assert_array_equal(b, tb.numpy())
    assert opt.param_groups[1]["initial_accumulator_value"] == 3.0


def test_lr_decay_uses_the_float32_step_like_torch():
    # clr = lr / (1 + (step - 1) * lr_decay) with step read from the float32 counter.
    worst = run_parity("Adagrad", dict(lr=0.1, lr_decay=0.37), np.float64, steps=12, ulps={"param": 2}, resync=True)
    assert worst["sum"] == 0 and worst["step"] == 0
