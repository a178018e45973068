"""PyTorch's own clipping tests (test_nn.py), re-implemented on NumPy arrays.

Each test follows the torch test of the same name; expected values come from the float64
NumPy reference in reference.py, not from torch.
"""

import itertools

import numpy as np
import pytest

import gradclip
import reference as ref

INF = float("inf")
NAN = float("nan")


def linear_params(rng, dtype=np.float32):
    """The parameters of torch's nn.Linear(10, 10): a 10x10 weight and a bias of 10."""
    return [gradclip.Parameter(rng.standard_normal((10, 10)).astype(dtype)),
            gradclip.Parameter(rng.standard_normal(10).astype(dtype))]


def norm_of(params, p):
    return ref.total_norm([q.grad for q in params], p)


def uniform_scale(params, grads):
    """The single factor by which every gradient element was multiplied (torch checks std == 0)."""
    ratios = np.concatenate([(q.grad.astype(np.float64) / g).ravel() for q, g in zip(params, grads)])
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-6)
    return ratios[0]


@pytest.mark.parametrize("norm_type", [0.5, 1.5, 2, 4, "inf"])
def test_clip_grad_norm(norm_type):
    rng = np.random.default_rng(0)
    max_norm = 2.0
    p = float(norm_type)
    params = linear_params(rng)
    grads = [np.arange(1.0, 101.0, dtype=np.float32).reshape(10, 10), np.ones(10, np.float32) / 1000]
    for q, g in zip(params, grads):
        q.grad = g.copy()
    norm_before = norm_of(params, p)
    norm = gradclip.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    norm_after = norm_of(params, p)
    np.testing.assert_allclose(float(norm), norm_before, rtol=1e-6)
    np.testing.assert_allclose(norm_after, max_norm, rtol=1e-5)
    assert norm_after <= norm_before
    uniform_scale(params, grads)

    # Small gradients are left unchanged (up to torch's 1e-6 in the denominator).
    grads = [rng.random((10, 10)).astype(np.float32) / 10000, np.ones(10, np.float32) / 500]
    for q, g in zip(params, grads):
        q.grad = g.copy()
    norm_before = norm_of(params, p)
    norm = gradclip.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    norm_after = norm_of(params, p)
    np.testing.assert_allclose(float(norm), norm_before, rtol=1e-6)
    np.testing.assert_allclose(norm_before, norm_after, rtol=1e-6)
    assert norm_after <= max_norm
    assert uniform_scale(params, grads) == 1.0

    # A single parameter is accepted as well as a list of one.
    p1, p2 = gradclip.Parameter(np.zeros((10, 10))), gradclip.Parameter(np.zeros((10, 10)))
    g = np.arange(1.0, 101.0).reshape(10, 10)
    p1.grad, p2.grad = g.copy(), g.copy()
    gradclip.clip_grad_norm_(p1, max_norm, norm_type=norm_type)
    gradclip.clip_grad_norm_([p2], max_norm, norm_type=norm_type)
    np.testing.assert_array_equal(p1.grad, p2.grad)


def test_clip_grad_norm_warns_on_exhausted_generator():
    params = linear_params(np.random.default_rng(1))
    gen = (q for q in params)
    for _ in gen:
        pass
    with pytest.warns(UserWarning):
        gradclip.clip_grad_norm_(gen, 1.0)


def test_clip_grad_value():
    rng = np.random.default_rng(2)
    clip_value = 2.5
    grad_w = np.arange(-50.0, 50.0, dtype=np.float32).reshape(10, 10) / 5
    grad_b = np.ones(10, np.float32) * 2
    for grad_list in [[grad_w, grad_b], [grad_w, None]]:
        params = linear_params(rng)
        for q, g in zip(params, grad_list):
            q.grad = None if g is None else g.copy()
        gradclip.clip_grad_value_(params, clip_value)
        for q in params:
            if q.grad is not None:
                assert q.grad.max() <= clip_value and q.grad.min() >= -clip_value
        assert params[1].grad is None or params[1].grad.max() == 2.0

    p1, p2 = gradclip.Parameter(np.zeros((10, 10))), gradclip.Parameter(np.zeros((10, 10)))
    g = np.arange(-50.0, 50.0).reshape(10, 10) / 5
    p1.grad, p2.grad = g.copy(), g.copy()
    gradclip.clip_grad_value_(p1, clip_value)
    gradclip.clip_grad_value_([p2], clip_value)
    np.testing.assert_array_equal(p1.grad, p2.grad)


NORMS_POS = [0.1, 1, 2, 3.5, INF]
NORMS_NEG = [-0.1, -1, -2, -3.5]
NORMS_EXCEPT_0 = NORMS_POS + NORMS_NEG
NORMS_ALL = NORMS_EXCEPT_0 + [0]

# (grad_only_one_elem, prefix_finite_grad_param, scalars, norms_nonfinite, norms_finite),
# torch's test_clip_grad_norm_error_if_nonfinite table.
NONFINITE_CASES = [
    (False, False, [INF, -INF], NORMS_EXCEPT_0, [0]),
    (False, True, [INF, -INF], NORMS_POS, NORMS_NEG + [0]),
    (True, False, [INF, -INF], NORMS_POS, NORMS_NEG + [0]),
    (True, True, [INF, -INF], NORMS_POS, NORMS_NEG + [0]),
    (False, False, [NAN], NORMS_EXCEPT_0, [0]),
    (False, True, [NAN], NORMS_EXCEPT_0, [0]),
    (True, False, [NAN], NORMS_EXCEPT_0, [0]),
    (True, True, [NAN], NORMS_EXCEPT_0, [0]),
    (False, False, [2e22, -2e22], [], NORMS_ALL),
    (False, True, [2e22, -2e22], [], NORMS_ALL),
    (True, False, [2e22, -2e22], [], NORMS_ALL),
    (True, True, [2e22, -2e22], [], NORMS_ALL),
    (False, False, [2e200, -2e200], [3.5, 2, -2, -3.5], [INF, 1, 0.1, 0, -1, -0.1]),
    (False, True, [2e200, -2e200], [3.5, 2], NORMS_NEG + [INF, 1, 0.1, 0]),
    (True, False, [2e200, -2e200], [3.5, 2], NORMS_NEG + [INF, 1, 0.1, 0]),
    (True, True, [2e200, -2e200], [3.5, 2], NORMS_NEG + [INF, 1, 0.1, 0]),
]


def gen_parameters(scalar, grad_only_one_elem, prefix_finite_grad_param):
    param = gradclip.Parameter(np.ones(10))
    grad = np.zeros(10)
    if grad_only_one_elem:
        grad[1] = scalar
    else:
        grad[:] = scalar
    param.grad = grad
    if not prefix_finite_grad_param:
        return [param]
    prefix = gradclip.Parameter(np.ones(1))
    prefix.grad = np.ones(1)
    return [prefix, param]


def nonfinite_cases():
    for one, prefix, scalars, nonfinite, finite in NONFINITE_CASES:
        for error_if_nonfinite in [False, True]:
            for norm_type, scalar in itertools.product(nonfinite, scalars):
                yield norm_type, error_if_nonfinite, scalar, one, prefix, True
            for norm_type, scalar in itertools.product(finite, scalars):
                yield norm_type, error_if_nonfinite, scalar, one, prefix, False


@pytest.mark.parametrize("norm_type,error_if_nonfinite,scalar,one,prefix,nonfinite", list(nonfinite_cases()))
def test_clip_grad_norm_error_if_nonfinite(norm_type, error_if_nonfinite, scalar, one, prefix, nonfinite):
    params = gen_parameters(scalar, one, prefix)
    # The table's verdict must agree with the independent reference.
    assert (not np.isfinite(norm_of(params, float(norm_type)))) == nonfinite
    if nonfinite and error_if_nonfinite:
        before = [q.grad.copy() for q in params]
        with pytest.raises(RuntimeError, match=f"The total norm of order {float(norm_type)} for gradients"):
            gradclip.clip_grad_norm_(params, 1, norm_type=norm_type, error_if_nonfinite=True)
        for q, b in zip(params, before):
            np.testing.assert_array_equal(q.grad, b)
    else:
        total = gradclip.clip_grad_norm_(params, 1, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite)
        assert np.isfinite(total) != nonfinite
