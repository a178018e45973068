"""The optimizer benchmarks' baselines compute gradclip's update (benchmarks/cases_optim.py).

A benchmark row is honest only if all its implementations do the same work. For every
OptimSpec, plain step() and fused (clip_and_step against clip_grad_norm_ + step()), each
implementation the benchmark builds -- the NumPy loop, every torch variant torch has, gradclip
unfused -- is built alone on the W4 arrays (float64) by the benchmark's own optim_case, so all
start from the same values, and takes the spec's warm-up steps and then STEPS steps with a
fresh gradient each (past RAdam's rectification and into ASGD's averaging; Rprop sees sign
changes). Its updates (parameter after - before: the parameters themselves hardly move) and
its state arrays must match gradclip's, and the state arrays must be the ones whose bytes the
benchmark counts (OptimSpec.state).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))
import cases_optim  # noqa: E402
from cases_optim import SPECS, TORCH_OPTIM_VARIANTS  # noqa: E402

torch = cases_optim.torch  # None when torch is not installed
STEPS = 8
# float64 throughout: what differs is the order of operations (NumPy's temporaries, torch's
# foreach kernels, NAdam/ASGD scalars kept in float32 or not), not the update computed.
RTOL = 1e-6


def run(spec, fused, name):
    """(updates, final state) of implementation `name`, built alone by the benchmark."""
    case = cases_optim.optim_case("W4", spec, "float64", True, fused, only={name})
    assert name in case.impls, case.unavailable
    params, grads, pristine = case.data["params"], case.data["grads"], case.data["pristine"]
    start = [p.copy() for p in params]
    rng = np.random.default_rng(7)
    for _ in range(STEPS):
        for g, src in zip(grads, pristine):  # a fresh gradient; the fused rows restore it
            src[...] = 0.1 * rng.standard_normal(g.shape)
            np.copyto(g, src)
        if case.setup is not None:
            case.setup()
        case.impls[name]()
    return [p - s for p, s in zip(params, start)], case.data["built"][name].state()


def check_same(spec, got, want):
    (got_updates, got_state), (want_updates, want_state) = got, want
    for i, (u, w) in enumerate(zip(got_updates, want_updates)):
        assert np.abs(w).max() > 0, "gradclip did not move the parameters"
        np.testing.assert_allclose(u, w, rtol=RTOL, atol=RTOL * np.abs(w).max(), err_msg=f"update of parameter {i}")
    for i, (s, w) in enumerate(zip(got_state, want_state)):
        assert set(s) == set(w) == set(spec.state), f"state of parameter {i}: {sorted(s)} / {sorted(w)}"
        for key in w:
            scale = np.abs(w[key]).max()
            np.testing.assert_allclose(np.asarray(s[key]), w[key], rtol=RTOL, atol=RTOL * scale,
                                       err_msg=f"state {key!r} of parameter {i}")


IDS = [s.label for s in SPECS]


@pytest.fixture(scope="module")
def gradclip_runs():
    return {(s.label, fused): run(s, fused, "gradclip") for s in SPECS for fused in (False, True)}


@pytest.mark.parametrize("fused", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_numpy_loop_takes_gradclips_steps(spec, fused, gradclip_runs):
    check_same(spec, run(spec, fused, "numpy"), gradclip_runs[spec.label, fused])


@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_gradclip_unfused_takes_the_fused_steps(spec, gradclip_runs):
    check_same(spec, run(spec, True, "gradclip unfused"), gradclip_runs[spec.label, True])


@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("variant", list(TORCH_OPTIM_VARIANTS))
@pytest.mark.parametrize("fused", [False, True], ids=["step", "fused"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_torch_variants_take_gradclips_steps(spec, fused, variant, gradclip_runs):
    case = cases_optim.optim_case("W4", spec, "float64", True, fused, only={variant})
    if variant in case.unavailable:
        # Only "fused" may be missing, and only where torch 2.13 has no fused kernel (a fused
        # kernel it has must not be left out of the row by a wrong argument).
        assert variant == "torch fused" and spec.kind not in ("SGD", "Adam", "AdamW", "Adagrad"), case.unavailable
        return
    check_same(spec, run(spec, fused, variant), gradclip_runs[spec.label, fused])


def test_a_different_update_is_caught():
    """The comparison can fail: RMSprop without its momentum is not RMSprop c+m."""
    plain, centered = cases_optim.SPEC_BY_LABEL["RMSprop"], cases_optim.SPEC_BY_LABEL["RMSprop c+m"]
    with pytest.raises(AssertionError):
        check_same(centered, run(plain, False, "numpy"), run(centered, False, "gradclip"))
    # and a small error in a coefficient (lr 1e-5 too large) is far beyond the tolerance
    updates, state = run(plain, False, "numpy")
    wrong = cases_optim.OptimSpec("RMSprop", "RMSprop", {"lr": 1e-2 * (1 + 1e-5)}, ("square_avg",),
                                  cases_optim.NumpyRMSprop)
    with pytest.raises(AssertionError):
        check_same(plain, run(wrong, False, "numpy"), (updates, state))


def test_byte_counts():
    """The bytes a row counts: g read once (twice fused), p and each state array read+written."""
    spec = cases_optim.SPEC_BY_LABEL["RMSprop c+m"]
    assert spec.multiples(False) == (1, 8) and spec.multiples(True) == (2, 8)
    t = spec.traffic(100, fused=False)
    assert (t.read, t.rw) == (100, 800)
    lines = cases_optim.byte_table_lines([spec], 10**6, "N = 1 MB")
    assert "1N + 8N = 9N" in lines[-1] and "2N + 8N = 10N" in lines[-1] and "9 MB / 10 MB" in lines[-1]
