"""AGC through optimizer.clip_and_step(clipper=AGC(...)): the fused step (each gradient unit
scaled by its factor as the step reads it) gives the bits of adaptive_clip_grad_ then step(),
for every optimizer with a C kernel, every real dtype, both write_back settings, and the
layouts that take the two-pass path instead (F order, strided views); one pass fewer where
fused, nothing changed on error."""

import numpy as np
import pytest

import gradclip
from gradclip import _C, optim

OPTIMIZERS = [
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, maximize=True)),
    ("Adam", dict(weight_decay=0.1, amsgrad=True)),
    ("AdamW", {}),
    ("Adagrad", dict(lr_decay=0.01)),
    ("RMSprop", dict(centered=True, momentum=0.5, weight_decay=0.1)),
    ("Adadelta", {}),
    ("Adamax", {}),
    ("NAdam", dict(decoupled_weight_decay=True, weight_decay=0.1)),
    ("RAdam", {}),
    ("ASGD", dict(t0=0)),
    ("Rprop", {}),
]
SHAPES = [(30, 20), (20,), (), (5, 4, 3), (1, 7), (0, 3)]


def layouts(shape, dtype, layout, rng):
    a = rng.standard_normal(shape)
    if layout == "F" and a.ndim > 1:
        return np.asfortranarray(a.astype(dtype))
    if layout == "strided" and a.ndim > 1:
        big = np.zeros((shape[0], 2 * shape[1]) + shape[2:], dtype)
        view = big[:, ::2]
        view[...] = a
        return view
    return a.astype(dtype)


def same_layout_copy(a):
    """A copy in a's layout (np.copy gives a strided view's copy a compact one)."""
    if a.ndim > 1 and not (a.flags.c_contiguous or a.flags.f_contiguous):
        out = layouts(a.shape, a.dtype, "strided", np.random.default_rng(0))
        out[...] = a
        return out
    return a.copy(order="K")


def gradients(values, dtype, rng):
    """Units of very different sizes, so some are clipped and some are not."""
    out = []
    for v in values:
        g = rng.standard_normal(v.shape)
        if v.ndim > 1:
            g *= rng.choice([1e-4, 10.0], size=(v.shape[0],) + (1,) * (v.ndim - 1))
        out.append(np.asarray(g).astype(dtype))
    return out


def run_pair(name, kwargs, dtype, layout, write_back, steps=3, seed=0):
    rng = np.random.default_rng(seed)
    values = [layouts(s, dtype, layout, rng) for s in SHAPES]
    fused = [gradclip.Parameter(same_layout_copy(v)) for v in values]
    plain = [gradclip.Parameter(same_layout_copy(v)) for v in values]
    assert all(p.data.strides == v.strides for p, v in zip(fused, values))
    opt_f = getattr(optim, name)(fused, **kwargs)
    opt_p = getattr(optim, name)(plain, **kwargs)
    for _ in range(steps):
        gs = gradients(values, dtype, rng)
        for p, g in zip(fused, gs):
            p.grad = g.copy()
        for p, g in zip(plain, gs):
            p.grad = g.copy()
        assert opt_f.clip_and_step(clipper=gradclip.AGC(0.01), write_back=write_back) is None
        gradclip.adaptive_clip_grad_(plain, 0.01)
        opt_p.step()
        for a, b, g in zip(fused, plain, gs):
            assert np.array_equal(a.data, b.data, equal_nan=True)
            assert np.array_equal(a.grad, b.grad if write_back else g, equal_nan=True)
        for a, b in zip(fused, plain):
            for key, value in opt_p.state[b].items():
                assert np.array_equal(np.asarray(opt_f.state[a][key]), np.asarray(value), equal_nan=True), key


class Calls:
    def __init__(self, monkeypatch):
        self.factor_calls = 0
        original = _C.adaptive_clip

        def adaptive_clip(*args):
            self.factor_calls += bool(args[5])
            return original(*args)

        monkeypatch.setattr(_C, "adaptive_clip", adaptive_clip)


@pytest.mark.parametrize("name,kwargs", OPTIMIZERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMIZERS)])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("write_back", [True, False])
def test_fused_agc_step_is_agc_then_step(name, kwargs, dtype, write_back, monkeypatch):
    calls = Calls(monkeypatch)
    run_pair(name, kwargs, dtype, "C", write_back)
    assert calls.factor_calls == 3  # every step fused


@pytest.mark.parametrize("layout", ["F", "strided"])
@pytest.mark.parametrize("write_back", [True, False])
@pytest.mark.parametrize("name,kwargs", [OPTIMIZERS[0], OPTIMIZERS[2], OPTIMIZERS[5]], ids=["SGD", "Adam", "RMSprop"])
def test_units_not_one_after_another_take_the_two_pass_path(layout, write_back, name, kwargs, monkeypatch):
    calls = Calls(monkeypatch)
    run_pair(name, kwargs, np.float32, layout, write_back)
    assert calls.factor_calls == 0


def test_optimizers_without_a_c_kernel_clip_then_step():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    a, b = gradclip.Parameter(w.copy()), gradclip.Parameter(w.copy())
    oa, ob = optim.Adafactor([a]), optim.Adafactor([b])
    g = (rng.standard_normal(w.shape) * 10).astype(np.float32)
    a.grad, b.grad = g.copy(), g.copy()
    oa.clip_and_step(clipper=gradclip.AGC(0.01))
    gradclip.adaptive_clip_grad_([b], 0.01)
    ob.step()
    assert np.array_equal(a.data, b.data) and np.array_equal(a.grad, b.grad)


def test_fused_agc_on_threads_cuts_units_at_block_edges():
    """1.2 million elements: the step runs on threads, whose blocks start inside units."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((1201, 1001)).astype(np.float32)
    g = rng.standard_normal(w.shape).astype(np.float32)
    g[::3] *= np.float32(1e-5)  # a third of the units below their bound
    ref = gradclip.Parameter(w.copy())
    ref.grad = g.copy()
    gradclip.adaptive_clip_grad_([ref], 0.01)
    optim.Adam([ref]).step()
    threads = gradclip.get_num_threads()
    try:
        for n in (1, 2, 3):
            gradclip.set_num_threads(n)
            p = gradclip.Parameter(w.copy())
            p.grad = g.copy()
            optim.Adam([p]).clip_and_step(clipper=gradclip.AGC(0.01))
            assert np.array_equal(p.data, ref.data) and np.array_equal(p.grad, ref.grad), n
    finally:
        gradclip.set_num_threads(threads)


def test_an_error_in_the_step_changes_nothing():
    rng = np.random.default_rng(5)
    for layout in ("C", "F"):
        w = layouts((8, 6), np.float32, layout, rng)
        p = gradclip.Parameter(w.copy(order="K"))
        opt = optim.SGD([p], lr=0.1, momentum=0.9)
        g = (rng.standard_normal(w.shape) * 10).astype(np.float32)
        p.grad = g.copy()
        opt.step()
        opt.state[p]["momentum_buffer"] = np.zeros((3,), np.float32)  # the wrong shape
        before, grad_before = p.data.copy(), p.grad.copy()
        with pytest.raises(ValueError):
            opt.clip_and_step(clipper=gradclip.AGC(0.01))
        assert np.array_equal(p.data, before) and np.array_equal(p.grad, grad_before)


def test_unit_factors_entry_points():
    """The private forms: adaptive_clip(..., True) returns per-array (2, units) factors and
    writes nothing; the steps validate them."""
    rng = np.random.default_rng(6)
    v = [rng.standard_normal((4, 3)), rng.standard_normal(5)]
    g = [rng.standard_normal((4, 3)) * np.array([[10.0], [1e-4], [10.0], [1e-4]]), rng.standard_normal(5) * 1e-4]
    before = [x.copy() for x in g]
    factors = _C.adaptive_clip(v, g, 0.01, 1e-3, 2.0, True)
    assert _C.adaptive_clip(v, [x.copy() for x in g], 0.01, 1e-3, 2.0, False) is None
    assert all(np.array_equal(a, b) for a, b in zip(g, before))
    assert factors[1] is None and factors[0].shape == (2, 4) and list(factors[0][0]) == [1, 0, 1, 0]
    scaled = [x.copy() for x in g]
    gradclip.adaptive_clip_grad_(v, 0.01, grads=scaled)
    np.testing.assert_array_equal(scaled[0][0], g[0][0] * factors[0][1, 0])
    group = ([v[0].copy()], [g[0].copy()], [None], 0.1, 0.0, 0.0, 0.0, False, False)
    for bad, error in [([np.ones(4)], TypeError), ([np.ones((2, 5))], ValueError), ([], ValueError),
                       ([factors[0].astype(np.float32)], TypeError)]:
        with pytest.raises(error):
            _C.sgd_step([group], bad, True)
    F = np.asfortranarray(v[0])
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.sgd_step([([F], [np.asfortranarray(g[0])], [None], 0.1, 0.0, 0.0, 0.0, False, False)], [factors[0]], True)
