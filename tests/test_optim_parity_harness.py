"""The parity harness itself (tests/optim_parity.py): it measures ulps and it can fail."""

import numpy as np
import pytest
import torch  # noqa: F401 - a torch-parity module (conftest marks it)

from optim_parity import check_clip_and_step, run_parity, ulp_distance


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_ulp_distance_counts_representable_values(dtype):
    x = np.array([1.0, -1.0, 0.0, 3.5], dtype=dtype)
    up = np.nextafter(x, np.array(np.inf, dtype=dtype))
    assert ulp_distance(x, x) == 0
    assert ulp_distance(x, up) == 1
    assert ulp_distance(x, np.nextafter(up, np.array(np.inf, dtype=dtype))) == 2
    tiny = np.array([np.finfo(dtype).smallest_subnormal], dtype=dtype)
    assert ulp_distance(tiny, -tiny) == 2  # across zero
    assert ulp_distance(np.array([0.0], dtype), np.array([-0.0], dtype)) == 0
    assert ulp_distance(np.array([np.nan], dtype), np.array([np.nan], dtype)) == 0
    assert ulp_distance(np.array([np.nan], dtype), np.array([1.0], dtype)) == float("inf")


def test_ulp_distance_of_complex_arrays_is_over_both_parts():
    z = np.array([1 + 1j], dtype=np.complex64)
    w = np.array([1 + 1j * float(np.nextafter(np.float32(1), np.float32(2)))], dtype=np.complex64)
    assert ulp_distance(z, w) == 1


def test_run_parity_reports_zero_for_bitwise_sgd():
    worst = run_parity("SGD", dict(lr=0.1, momentum=0.9), np.float64, steps=6)
    assert worst == {"param": 0, "momentum_buffer": 0}


def test_run_parity_fails_when_the_two_sides_differ():
    with pytest.raises(AssertionError, match="'lr'"):
        run_parity("SGD", dict(lr=0.1), np.float64, steps=4, torch_kwargs=dict(lr=0.1000001))

    class OneUlpOff(__import__("gradclip").optim.SGD):
        def step(self, closure=None, *, grads=None):
            super().step(closure, grads=grads)
            p = self.param_groups[1]["params"][0]
            p.data[0, 0] = np.nextafter(p.data[0, 0], np.inf)

    with pytest.raises(AssertionError, match="1 ulp apart"):
        run_parity("SGD", dict(lr=0.1), np.float64, steps=4, gradclip_cls=OneUlpOff)
    assert run_parity("SGD", dict(lr=0.1), np.float64, steps=4, gradclip_cls=OneUlpOff, ulps=1, resync=True) == {
        "param": 1
    }
    with pytest.raises(AssertionError, match="param_groups"):
        run_parity("SGD", dict(lr=0.1), np.float64, steps=4, torch_kwargs=dict(momentum=0.5))


def test_run_parity_compares_state_after_reloading():
    class Forgetful(__import__("gradclip").optim.SGD):
        def load_state_dict(self, state_dict):  # drops the momentum buffers
            state_dict = dict(state_dict, state={})
            super().load_state_dict(state_dict)

    with pytest.raises(AssertionError, match="state keys"):
        run_parity("SGD", dict(lr=0.1, momentum=0.9), np.float64, steps=6, gradclip_cls=Forgetful)


def test_check_clip_and_step_passes_for_sgd_and_can_fail():
    check_clip_and_step("SGD", dict(lr=0.1, momentum=0.9), np.float32)

    class Wrong(__import__("gradclip").optim.SGD):
        def clip_and_step(self, max_norm, norm_type=2.0, **kwargs):
            return super().clip_and_step(max_norm * 1.5, norm_type, **kwargs)

    with pytest.raises(AssertionError):
        check_clip_and_step("SGD", dict(lr=0.1), np.float32, gradclip_cls=Wrong)
