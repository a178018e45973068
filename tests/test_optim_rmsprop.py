"""RMSprop against torch.optim.RMSprop 2.13 (tests/optim_suite.py), and what is RMSprop's own."""

import numpy as np
import pytest
import torch

from gradclip import Parameter, optim
from optim_parity import run_parity
from optim_suite import parity_tests

# Measured (resync after every step, torch's configurations): square_avg and grad_avg are
# exact; avg = sqrt(...) + eps is 1 ulp off where torch's sqrt is, and a step of lr * g / avg
# (about 10 lr on the first steps, when avg ~ 0.1 |g|) moves a parameter near zero by many of
# its own ulps: up to 1310 (float32), 64 (complex128). The momentum buffer accumulates g / avg.
globals().update(
    parity_tests(
        "RMSprop",
        bounds={
            "float32": {"param": 4096, "momentum_buffer": 256},
            "float64": {"param": 16, "momentum_buffer": 16},
            "complex64": {"param": 512, "momentum_buffer": 512},
            "complex128": {"param": 256, "momentum_buffer": 16},
            "whole_run_float64": 32,
        },
    )
)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(momentum=-1.0), "Invalid momentum value: -1.0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
        (dict(alpha=-1.0), "Invalid alpha value: -1.0"),
    ],
)
def test_constructor_errors_are_torchs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        torch.optim.RMSprop([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError, match=match):
        optim.RMSprop([np.zeros(2)], **kwargs)


@pytest.mark.parametrize("momentum", [0, 0.5])
@pytest.mark.parametrize("centered", [False, True])
def test_state_keys_and_order_are_torchs(centered, momentum):
    p, t = Parameter(np.ones(3)), torch.ones(3, dtype=torch.float64)
    opt = optim.RMSprop([p], centered=centered, momentum=momentum)
    topt = torch.optim.RMSprop([t], centered=centered, momentum=momentum)
    p.grad, t.grad = np.ones(3), torch.ones(3, dtype=torch.float64)
    opt.step()
    topt.step()
    assert list(opt.state[p]) == list(topt.state[t])


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.6, 1.0])
def test_alpha_on_both_sides_of_lerps_switch(alpha):
    # lerp_(g, 1 - alpha) takes torch's other formula for weights >= 0.5.
    run_parity("RMSprop", dict(alpha=alpha, centered=True, momentum=0.3), np.float64, steps=8,
               ulps=0, exact_sqrt=True)
