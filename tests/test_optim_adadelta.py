"""Adadelta against torch.optim.Adadelta 2.13 (tests/optim_suite.py), and what is Adadelta's own."""

import numpy as np
import pytest
import torch

from gradclip import optim
from optim_parity import run_parity
from optim_suite import parity_tests

# Measured (resync after every step, torch's configurations): square_avg is exact; both square
# roots (of square_avg + eps and acc_delta + eps) can be 1 ulp off in torch, so delta and
# acc_delta are a few ulps apart and the parameter 1 ulp.
globals().update(
    parity_tests(
        "Adadelta",
        bounds={
            "float32": {"param": 2, "acc_delta": 8},
            "float64": {"param": 2, "acc_delta": 8},
            "complex64": {"param": 2, "acc_delta": 8},
            "complex128": {"param": 2, "acc_delta": 8},
            "whole_run_float64": 16,
        },
    )
)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "Invalid learning rate: -0.1"),
        (dict(rho=1.1), "Invalid rho value: 1.1"),
        (dict(rho=-0.1), "Invalid rho value: -0.1"),
        (dict(eps=-1.0), "Invalid epsilon value: -1.0"),
        (dict(weight_decay=-1.0), "Invalid weight_decay value: -1.0"),
    ],
)
def test_constructor_errors_are_torchs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        torch.optim.Adadelta([torch.zeros(2)], **kwargs)
    with pytest.raises(ValueError, match=match):
        optim.Adadelta([np.zeros(2)], **kwargs)


@pytest.mark.parametrize("rho", [0.0, 1.0])
def test_rho_at_the_ends_of_its_range(rho):
    run_parity("Adadelta", dict(rho=rho), np.float64, steps=8, ulps=0, exact_sqrt=True)
