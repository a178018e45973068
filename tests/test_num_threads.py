"""Thread count: a setting, and results that never depend on it."""

import numpy as np
import pytest

import gradclip


@pytest.fixture
def restore_threads():
    saved = gradclip.get_num_threads()
    yield
    gradclip.set_num_threads(saved)


def test_set_and_get(restore_threads):
    gradclip.set_num_threads(3)
    assert gradclip.get_num_threads() == 3
    with pytest.raises(ValueError, match="between 1 and 64"):
        gradclip.set_num_threads(0)
    with pytest.raises(TypeError, match="must be an int"):
        gradclip.set_num_threads(2.0)
    assert gradclip.get_num_threads() == 3


def results(seed):
    rng = np.random.default_rng(seed)
    big = rng.standard_normal((1100, 1300)).astype(np.float32)
    grads = [big[:, ::-1], rng.standard_normal(3_000_001), rng.standard_normal(10).astype(np.float16)]
    out = [gradclip.get_total_norm(grads, p) for p in (2.0, 1.0, 3.0, float("inf"))]
    out.append(gradclip.clip_grad_norm_(grads, 1.0))
    gradclip.clip_grad_value_(grads, 1e-4)
    return out, [np.ascontiguousarray(g) for g in grads]


def test_results_identical_for_any_thread_count(restore_threads):
    gradclip.set_num_threads(1)
    norms1, grads1 = results(0)
    for n in (2, 3, 7):
        gradclip.set_num_threads(n)
        norms, grads = results(0)
        assert [x.tobytes() for x in norms] == [x.tobytes() for x in norms1]
        for a, b in zip(grads, grads1):
            np.testing.assert_array_equal(a, b, strict=True)


def test_array_listed_twice_scaled_twice_even_with_threads(restore_threads):
    gradclip.set_num_threads(4)
    g = np.full(2_000_000, 3.0)
    total = gradclip.clip_grad_norm_([g, g], 1.0)
    coef = min(1.0 * (1.0 / (float(total) + 1e-6)), 1.0)
    np.testing.assert_array_equal(g, (3.0 * coef) * coef)
