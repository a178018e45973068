"""The hand-written BPTT gradients agree with central finite differences of the loss.

Checked in float64 on a tiny model, for every weight and for the state carried in from
the previous window (the path truncated BPTT relies on when it carries the state).
"""

import numpy as np
import pytest

from gradclip.demo.models import MODELS

V, H, T, B = 5, 4, 6, 3
EPS = 1e-6


def relative_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def make_problem(kind, seed, reduction):
    rng = np.random.default_rng(seed)
    # init_std 0.5 rather than 0.1 so the gates sit away from their linear regime and
    # the nonlinearities' derivatives are really exercised.
    model = MODELS[kind](V, H, rng=rng, dtype=np.float64, init_std=0.5)
    for p in model.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5  # biases too, not just zeros
    inputs = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    state = tuple(rng.standard_normal((B, H)) * 0.5 for _ in model.state_names)
    return model, inputs, targets, state


def numeric_grad(f, x):
    """Central differences of the scalar f() with respect to the array x, in place."""
    grad = np.empty_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        saved = x[idx]
        x[idx] = saved + EPS
        up = f()
        x[idx] = saved - EPS
        down = f()
        x[idx] = saved
        grad[idx] = (up - down) / (2 * EPS)
    return grad


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("seed", [0, 1])
def test_gradients_match_finite_differences(kind, reduction, seed):
    model, inputs, targets, state = make_problem(kind, seed, reduction)

    def loss():
        return model.forward(inputs, targets, state, reduction)[0]

    _, cache = model.forward(inputs, targets, state, reduction)
    grads, dstate = model.backward(cache)

    assert list(grads) == list(model.params)
    for name, p in model.params.items():
        assert grads[name].shape == p.shape and grads[name].dtype == p.dtype
        err = relative_error(grads[name], numeric_grad(loss, p.data))
        assert err < 1e-6, f"{kind} {name}: relative error {err:.2e}"
    assert len(dstate) == len(state) == len(model.state_names)
    for name, s, ds in zip(model.state_names, state, dstate):
        err = relative_error(ds, numeric_grad(loss, s))
        assert err < 1e-6, f"{kind} carried-in {name}: relative error {err:.2e}"


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_gradcheck_detects_a_wrong_gradient(kind):
    # The check above must be able to fail: perturbing one analytic entry breaks it.
    model, inputs, targets, state = make_problem(kind, 0, "sum")
    _, cache = model.forward(inputs, targets, state)
    grads, _ = model.backward(cache)
    w = model.params["W_hh"]
    numeric = numeric_grad(lambda: model.forward(inputs, targets, state)[0], w.data)
    grads["W_hh"][0, 0] += 1e-4 * np.abs(numeric).max()
    assert relative_error(grads["W_hh"], numeric) > 1e-6


@pytest.mark.parametrize("kind", ["rnn", "lstm"])
def test_final_state_feeds_the_next_window(kind):
    # Running two windows with the state carried across equals one window twice as long.
    model, inputs, targets, state = make_problem(kind, 3, "sum")
    whole, cache = model.forward(np.concatenate([inputs, inputs]),
                                 np.concatenate([targets, targets]), state)
    first, c1 = model.forward(inputs, targets, state)
    second, c2 = model.forward(inputs, targets, c1.state)
    assert whole == pytest.approx(first + second, rel=1e-12)
    for a, b in zip(cache.state, c2.state):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_sum_reduction_is_mean_times_window_length():
    model, inputs, targets, state = make_problem("lstm", 4, "sum")
    total, _ = model.forward(inputs, targets, state, "sum")
    mean, _ = model.forward(inputs, targets, state, "mean")
    assert total == pytest.approx(T * mean, rel=1e-12)
    # And a freshly initialised model is close to guessing uniformly: ~ln V per character.
    fresh = MODELS["lstm"](V, H, rng=np.random.default_rng(0), dtype=np.float64)
    loss, _ = fresh.forward(inputs, targets, fresh.initial_state(B), "mean")
    assert abs(loss - np.log(V)) < 0.1
