"""Adamax against torch.optim.Adamax 2.13 (tests/optim_suite.py), and what is Adamax's own."""

import numpy as np
import pytest
import torch

from gradclip import optim
from optim_suite import parity_tests

# No sqrt, no reduction: every operation is correctly rounded in torch too, so every bound is 0.
_EXACT = {"*": 0}
globals().update(
    parity_tests(
        "Adamax",
        bounds={"float32": _EXACT, "float64": _EXACT, "complex64": _EXACT, "complex128": _EXACT,
                "whole_run_float64": 0},
    )
)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(betas=(1.0, 0.5)), "Invalid beta parameter at index 0: 1.0"),
        (dict(betas=(0.0, 1.0)), "Invalid beta parameter at index 1: 1.0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ],
)
def test_constructor_errors_are_torchs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        torch.optim.Adamax([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError, match=match):
        optim.Adamax([np.zeros(2)], **kwargs)


def test_nan_gradient_propagates_through_the_maximum_like_torch():
    p, t = np.array([1.0, 2.0]), torch.tensor([1.0, 2.0], dtype=torch.float64)
    opt, topt = optim.Adamax([p]), torch.optim.Adamax([t])
    for g in ([np.nan, 1.0], [1.0, 1.0]):
        t.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
        opt.step(grads=[np.array(g)])
        np.testing.assert_array_equal(opt.state[p]["exp_inf"], topt.state[t]["exp_inf"].numpy())
        np.testing.assert_array_equal(p, t.numpy())
