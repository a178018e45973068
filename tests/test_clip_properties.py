"""Hypothesis properties of norm clipping."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import gradclip
import reference as ref

FLOATS = {
    np.float32: st.floats(-1e6, 1e6, width=32, allow_subnormal=False),
    np.float64: st.floats(-1e12, 1e12, allow_subnormal=False),
}


@st.composite
def gradient_lists(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(1, 5))
    arrays = []
    for _ in range(n):
        a = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
                            elements=FLOATS[dtype]))
        if a.ndim >= 1 and draw(st.booleans()):
            a = a[::-1]
        if a.ndim >= 2 and draw(st.booleans()):
            a = a.T
        arrays.append(a)
    return arrays


@settings(max_examples=300, deadline=None)
@given(gradient_lists(), st.floats(1e-3, 1e3), st.sampled_from([1.0, 2.0, 3.0, float("inf")]))
def test_after_clipping_the_norm_is_at_most_max_norm(grads, max_norm, p):
    if p == float("inf"):
        grads = [g for g in grads if g.size]  # the inf norm of an empty array is an error (torch)
    before = [g.copy() for g in grads]
    total = gradclip.clip_grad_norm_(grads, max_norm, p)
    np.testing.assert_allclose(float(total), ref.total_norm(before, p), rtol=1e-6)
    after = ref.total_norm(grads, p)
    assert after <= max_norm * (1 + 1e-5)


@settings(max_examples=300, deadline=None)
@given(gradient_lists(), st.floats(1e-3, 1e3))
def test_below_threshold_only_torchs_epsilon_factor(grads, max_norm):
    total = ref.total_norm(grads, 2.0)
    if total >= max_norm:
        grads = [np.asarray(g * np.asarray(max_norm / (2 * total), dtype=g.dtype)) for g in grads]
    before = [g.copy() for g in grads]
    gradclip.clip_grad_norm_(grads, max_norm)
    for g, b in zip(grads, before):
        # coef = min(max_norm / (total + 1e-6), 1) < 1 only when total > max_norm - 1e-6, and
        # then 1 - coef <= 1e-6 / max_norm; plus the rounding of the product.
        np.testing.assert_allclose(g, b, rtol=1e-6 / max_norm + 1e-6, atol=0)


@settings(max_examples=300, deadline=None)
@given(gradient_lists(), st.floats(1e-3, 1.0))
def test_direction_is_preserved(grads, max_norm):
    before = [g.copy() for g in grads]
    gradclip.clip_grad_norm_(grads, max_norm)
    flat_b = np.concatenate([b.astype(np.float64).ravel() for b in before] + [np.zeros(0)])
    flat_a = np.concatenate([g.astype(np.float64).ravel() for g in grads] + [np.zeros(0)])
    nb, na = np.linalg.norm(flat_b), np.linalg.norm(flat_a)
    if nb > 0 and na > 0:
        cosine = flat_a @ flat_b / (na * nb)
        assert cosine > 1 - 1e-6
        assert np.all(np.sign(flat_a) * np.sign(flat_b) >= 0)
