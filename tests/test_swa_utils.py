"""gradclip.optim.swa_utils: AveragedParameters (AveragedModel for arrays), the averaging
functions and SWALR (SWALR's lr parity is in test_lr_scheduler.py).

Bit parity with torch's AveragedModel on the same tensors for every built-in update, dtype
and layout; PyTorch's test/optim/test_swa_utils.py cases with expected values computed here;
state_dict; errors.
"""

from __future__ import annotations

import copy
import pickle
import zlib

import numpy as np
import pytest
import torch
from torch.optim import swa_utils as tswa

import gradclip
from gradclip import Parameter
from gradclip.optim import _averaging
from gradclip.optim import swa_utils as gswa

from arrays import LAYOUTS, make_array

DTYPES = [np.float16, np.float32, np.float64]
SHAPES = [(), (0,), (7,), (33, 5), (2, 3, 4)]


def torch_module(arrays, buffers=()):
    m = torch.nn.Module()
    for i, a in enumerate(arrays):
        m.register_parameter(f"p{i}", torch.nn.Parameter(torch.from_numpy(np.array(a, order="C"))))
    for i, b in enumerate(buffers):
        m.register_buffer(f"b{i}", torch.from_numpy(np.array(b, order="C")))
    return m


def set_module(m, arrays, buffers=()):
    with torch.no_grad():
        for p, a in zip(m.parameters(), arrays):
            p.copy_(torch.from_numpy(np.array(a, order="C")))
        for b, a in zip(m.buffers(), buffers):
            b.copy_(torch.from_numpy(np.array(a, order="C")))


def random_list(rng, dtypes, shapes, scale=1.0):
    return [np.asarray(scale * rng.standard_normal(s)).astype(d) for d, s in zip(dtypes, shapes)]


# name -> (gradclip kwargs, torch kwargs)
UPDATES = {
    "default": ({}, {}),
    "swa_multi": ({"multi_avg_fn": gswa.get_swa_multi_avg_fn()}, {"multi_avg_fn": tswa.get_swa_multi_avg_fn()}),
    "ema_multi_0.999": ({"multi_avg_fn": gswa.get_ema_multi_avg_fn()}, {"multi_avg_fn": tswa.get_ema_multi_avg_fn()}),
    "ema_multi_0.3": ({"multi_avg_fn": gswa.get_ema_multi_avg_fn(0.3)}, {"multi_avg_fn": tswa.get_ema_multi_avg_fn(0.3)}),
    "ema_multi_0.5": ({"multi_avg_fn": gswa.get_ema_multi_avg_fn(0.5)}, {"multi_avg_fn": tswa.get_ema_multi_avg_fn(0.5)}),
    "ema_avg_fn": ({"avg_fn": gswa.get_ema_avg_fn(0.9)}, {"avg_fn": tswa.get_ema_avg_fn(0.9)}),
    "swa_avg_fn": ({"avg_fn": gswa.get_swa_avg_fn()}, {"avg_fn": tswa.get_swa_avg_fn()}),
}


@pytest.mark.parametrize("update", sorted(UPDATES))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_buffers", [False, True])
def test_bit_parity_with_averaged_model(update, dtype, use_buffers):
    rng = np.random.default_rng(zlib.crc32(f"{update}-{np.dtype(dtype).name}-{use_buffers}".encode()))
    shapes = [(5, 3), (1000,), (), (0,), (4, 1, 2)]
    dtypes = [dtype] * len(shapes)
    g_kwargs, t_kwargs = UPDATES[update]
    params = random_list(rng, dtypes, shapes)
    buffers = random_list(rng, [dtype, dtype], [(6,), (2, 2)])
    g = gswa.AveragedParameters(params, use_buffers=use_buffers, buffers=buffers, **g_kwargs)
    module = torch_module(params, buffers)
    t = tswa.AveragedModel(module, use_buffers=use_buffers, **t_kwargs)
    for step in range(25):
        # Values of very different sizes from step to step: rounding differences would show.
        params = random_list(rng, dtypes, shapes, scale=10.0 ** rng.integers(-3, 4))
        buffers = random_list(rng, [dtype, dtype], [(6,), (2, 2)])
        g.update_parameters([Parameter(p) if i % 2 else p for i, p in enumerate(params)], buffers)
        set_module(module, params, buffers)
        t.update_parameters(module)
        for mine, theirs in zip(g.params + g.buffers, list(t.module.parameters()) + list(t.module.buffers())):
            np.testing.assert_array_equal(mine, theirs.detach().numpy(), strict=True)
        assert int(g.n_averaged) == int(t.n_averaged)
    assert g.n_averaged.dtype == np.int64 and g.n_averaged.shape == ()


@pytest.mark.parametrize("which", ["lerp", "mean"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernel_on_every_layout_matches_torch(which, dtype, layout):
    rng = np.random.default_rng(7)
    avg = make_array(rng, layout, dtype)
    cur = make_array(rng, layout, dtype, scale=100.0)
    start = avg.copy()
    ta, tc = torch.from_numpy(np.array(avg, order="C")), torch.from_numpy(np.array(cur, order="C"))
    for arg in (0.001, 0.3, 0.5, 0.7, 1 / 3, -0.2, 1.5) if which == "lerp" else (2, 3, 7, 1001):
        avg[...] = start  # same values, same layout
        if which == "lerp":
            _averaging.lerp_([avg], [cur], arg)
            want = ta.clone().lerp_(tc, arg)
        else:
            _averaging.mean_([avg], [cur], arg)
            want = ta + (tc - ta) / torch.tensor(arg)
        np.testing.assert_array_equal(avg, want.numpy(), strict=True)


def test_mixed_dtypes_in_one_call():
    rng = np.random.default_rng(3)
    avgs = [rng.standard_normal(50).astype(d) for d in DTYPES]
    curs = [rng.standard_normal(50).astype(d) for d in DTYPES]
    mine = [a.copy() for a in avgs]
    gswa.get_ema_multi_avg_fn(0.99)(mine, curs, None)
    for a, c, m in zip(avgs, curs, mine):
        want = torch.from_numpy(a.copy()).lerp_(torch.from_numpy(c), 1 - 0.99)
        np.testing.assert_array_equal(m, want.numpy(), strict=True)


def test_swa_multi_weight_is_float32_for_array_counts():
    """torch's 1 / (n_averaged + 1) on AveragedModel's int64 tensor is a float32: the weight of
    float64 arrays is rounded to float32; a Python int count gives a float64 weight."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal(2000)
    c = rng.standard_normal(2000)
    fn, tfn = gswa.get_swa_multi_avg_fn(), tswa.get_swa_multi_avg_fn()
    for count in (np.array(2, dtype=np.int64), 2):
        mine = [a.copy()]
        fn(mine, [c], count)
        theirs = [torch.from_numpy(a.copy())]
        tfn(theirs, [torch.from_numpy(c)], torch.tensor(int(count)) if isinstance(count, np.ndarray) else count)
        np.testing.assert_array_equal(mine[0], theirs[0].numpy())
    w32, w64 = [a.copy()], [a.copy()]
    fn(w32, [c], np.array(2, dtype=np.int64))
    fn(w64, [c], 2)
    assert not np.array_equal(w32[0], w64[0])  # 1/3 differs in float32 and float64


def test_large_input_releases_the_gil_and_matches():
    rng = np.random.default_rng(1)
    a = rng.standard_normal(200_000).astype(np.float32)
    c = rng.standard_normal(200_000).astype(np.float32)
    mine = [a.copy()]
    _averaging.lerp_(mine, [c], 0.01)
    np.testing.assert_array_equal(mine[0], torch.from_numpy(a.copy()).lerp_(torch.from_numpy(c), 0.01).numpy())


# -- PyTorch's test_swa_utils.py, with expected values computed here ----------------------------


@pytest.mark.parametrize("ema", [True, False])
def test_averaged_params_closed_form(ema):
    """test_averaged_model_all_devices: after 10 updates the average is the mean (SWA) or the
    exponentially weighted sum (EMA, decay 0.999) of the values seen."""
    rng = np.random.default_rng(0)
    params = [Parameter(rng.standard_normal(s)) for s in [(5, 1, 3, 3), (5,), (2, 5, 3, 3), (2,), (5, 5), (10, 5)]]
    decay = 0.999
    fn = gswa.get_ema_multi_avg_fn(decay) if ema else gswa.get_swa_multi_avg_fn()
    avg = gswa.AveragedParameters(params, multi_avg_fn=fn)
    expected = [np.zeros_like(p.data) for p in params]
    n = 10
    for i in range(n):
        for p, e in zip(params, expected):
            p.data += rng.standard_normal(p.shape)
            if ema:
                e += p.data * decay ** (n - i - 1) * ((1 - decay) if i > 0 else 1.0)
            else:
                e += p.data / n
        avg.update_parameters(params)
    # SWA's weight 1/(n+1) is a float32, as in torch: float64 values are off by ~1e-8.
    tol = 1e-12 if ema else 1e-7
    for e, got in zip(expected, avg.parameters()):
        np.testing.assert_allclose(got, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("use_multi_avg_fn", [True, False])
@pytest.mark.parametrize("use_buffers", [True, False])
def test_averaged_params_exponential(use_multi_avg_fn, use_buffers):
    """test_averaged_model_exponential: EMA with decay 0.9, buffers averaged or copied."""
    rng = np.random.default_rng(1)
    params = [rng.standard_normal(s) for s in [(5, 1, 3, 3), (5,), (10, 5)]]
    buffers = [rng.standard_normal(5), rng.random(5)]
    decay = 0.9
    if use_multi_avg_fn:
        avg = gswa.AveragedParameters(params, multi_avg_fn=gswa.get_ema_multi_avg_fn(decay), use_buffers=use_buffers,
                                      buffers=buffers)
    else:
        avg = gswa.AveragedParameters(params, avg_fn=lambda a, p, n: decay * a + (1 - decay) * p,
                                      use_buffers=use_buffers, buffers=buffers)
    tracked = params + buffers if use_buffers else params
    expected = [np.zeros_like(p) for p in tracked]
    for i in range(10):
        for p in params + buffers:
            p += rng.standard_normal(p.shape)
        expected = [p.copy() if i == 0 else e * decay + p * (1 - decay) for p, e in zip(tracked, expected)]
        avg.update_parameters(params, buffers)
    got = avg.params + avg.buffers if use_buffers else avg.params
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    if not use_buffers:
        for b, g in zip(buffers, avg.buffers):
            np.testing.assert_array_equal(g, b)  # copied, not averaged


def test_averaged_params_state_dict():
    """test_averaged_model_state_dict."""
    rng = np.random.default_rng(2)
    params = [rng.standard_normal(s) for s in [(5, 1, 3, 3), (5,), (10, 5), (10,)]]
    avg = gswa.AveragedParameters(params)
    avg2 = gswa.AveragedParameters(params)
    for _ in range(10):
        for p in params:
            p += rng.standard_normal(p.shape)
        avg.update_parameters(params)
    avg2.load_state_dict(pickle.loads(pickle.dumps(avg.state_dict())))
    for a, b in zip(avg.parameters(), avg2.parameters()):
        np.testing.assert_array_equal(a, b)
        assert a is not b
    assert avg.n_averaged == avg2.n_averaged == 10
    # And the copy continues identically.
    for p in params:
        p += 1.0
    avg.update_parameters(params)
    avg2.update_parameters(params)
    for a, b in zip(avg.parameters(), avg2.parameters()):
        np.testing.assert_array_equal(a, b)


def test_averaged_params_picklable_and_copyable():
    avg = gswa.AveragedParameters([np.ones(3)], multi_avg_fn=gswa.get_swa_multi_avg_fn())
    avg.update_parameters([np.zeros(3)])
    clone = copy.deepcopy(avg)
    assert clone.n_averaged == 1 and clone.params[0] is not avg.params[0]
    plain = pickle.loads(pickle.dumps(gswa.AveragedParameters([np.ones(3)])))
    assert plain.n_averaged == 0


def test_first_update_copies_and_constructor_copies():
    w = np.arange(4.0)
    avg = gswa.AveragedParameters([Parameter(w)])
    w += 10
    np.testing.assert_array_equal(avg.params[0], np.arange(4.0))  # a copy at construction
    avg.update_parameters([w])
    np.testing.assert_array_equal(avg.params[0], w)  # the first update copies
    assert avg.params[0] is not w


def test_ema_formulas():
    a, c = np.array([1.0, 2.0]), np.array([3.0, -2.0])
    np.testing.assert_array_equal(gswa.get_ema_avg_fn(0.75)(a, c, 5), 0.75 * a + 0.25 * c)
    np.testing.assert_array_equal(gswa.get_swa_avg_fn()(a, c, np.array(3)), a + (c - a) / 4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_avg_fns_round_as_torch(dtype):
    rng = np.random.default_rng(4)
    a = rng.standard_normal(3000).astype(dtype)
    c = rng.standard_normal(3000).astype(dtype)
    ta, tc = torch.from_numpy(a), torch.from_numpy(c)
    np.testing.assert_array_equal(gswa.get_ema_avg_fn(0.999)(a, c, 3), tswa.get_ema_avg_fn(0.999)(ta, tc, 3).numpy(),
                                  strict=True)
    np.testing.assert_array_equal(gswa.get_swa_avg_fn()(a, c, np.array(6)),
                                  tswa.get_swa_avg_fn()(ta, tc, torch.tensor(6)).numpy(), strict=True)


# -- errors -----------------------------------------------------------------------------------


def test_errors():
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn should be provided"):
        gswa.AveragedParameters([np.ones(2)], avg_fn=gswa.get_swa_avg_fn(), multi_avg_fn=gswa.get_swa_multi_avg_fn())
    for fn in (gswa.get_ema_multi_avg_fn, gswa.get_ema_avg_fn, tswa.get_ema_avg_fn):
        with pytest.raises(ValueError, match=r"Invalid decay value 1.5 provided. Please provide a value in \[0,1\] range."):
            fn(1.5)
    with pytest.raises(TypeError, match="params\\[0\\] has dtype int64"):
        gswa.AveragedParameters([np.ones(2, dtype=np.int64)])
    gswa.AveragedParameters([np.ones(2)], buffers=[np.ones(2, dtype=np.int64)])  # copied only: fine
    with pytest.raises(TypeError, match="buffers\\[0\\] has dtype int64"):
        gswa.AveragedParameters([np.ones(2)], use_buffers=True, buffers=[np.ones(2, dtype=np.int64)])
    with pytest.raises(TypeError, match="must be a NumPy ndarray or a gradclip.Parameter, not list"):
        gswa.AveragedParameters([[1.0, 2.0]])

    avg = gswa.AveragedParameters([np.ones(2), np.ones(3)])
    avg.update_parameters([np.ones(2), np.ones(3)])
    before = [p.copy() for p in avg.params]
    with pytest.raises(ValueError, match="update_parameters got 1 params, but 2 were given"):
        avg.update_parameters([np.zeros(2)])
    with pytest.raises(ValueError, match=r"params\[1\] has shape \(4,\) and dtype float64"):
        avg.update_parameters([np.zeros(2), np.zeros(4)])
    with pytest.raises(ValueError, match=r"params\[1\] has shape \(3,\) and dtype float32"):
        avg.update_parameters([np.zeros(2), np.zeros(3, np.float32)])
    for a, b in zip(avg.params, before):
        np.testing.assert_array_equal(a, b)  # nothing changed
    assert avg.n_averaged == 1
    with pytest.raises(ValueError, match="saved params do not match"):
        avg.load_state_dict({"params": [np.ones(2)], "n_averaged": 3})


def test_kernel_validates_before_writing():
    a = [np.zeros(3), np.zeros(3)]
    with pytest.raises(TypeError, match="dtype"):
        _averaging.lerp_(a, [np.ones(3), np.ones(3, np.float32)], 0.5)
    with pytest.raises(ValueError, match="shape"):
        _averaging.mean_(a, [np.ones(3), np.ones(4)], 2)
    ro = np.zeros(3)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        _averaging.lerp_([np.zeros(3), ro], [np.ones(3), np.ones(3)], 0.5)
    with pytest.raises(ValueError, match="share"):
        _averaging.lerp_([a[0]], [a[0]], 0.5)
    with pytest.raises(TypeError):
        _averaging.lerp_([np.zeros(3, np.int64)], [np.zeros(3, np.int64)], 0.5)
    for x in a:
        np.testing.assert_array_equal(x, 0)


def test_update_bn_is_not_provided():
    assert not hasattr(gswa, "update_bn")
    assert "update_bn" in gswa.__doc__
    assert sorted(set(tswa.__all__) - {"AveragedModel", "update_bn"}) == sorted(set(gswa.__all__) - {"AveragedParameters"})


def test_user_multi_avg_fn_is_called_once_per_dtype():
    """As AveragedModel calls it once per (device, dtype) group, with the count as an array."""
    calls = []

    def multi(avgs, curs, n):
        calls.append(([a.dtype for a in avgs], len(curs), n.dtype, int(n)))
        for a, c in zip(avgs, curs):
            a += (c - a) / 2

    arrays = [np.zeros(2, np.float32), np.zeros(3), np.zeros(4, np.float32)]
    avg = gswa.AveragedParameters(arrays, multi_avg_fn=multi)
    avg.update_parameters(arrays)
    assert calls == []  # the first update copies
    avg.update_parameters([np.ones(2, np.float32), np.ones(3), np.ones(4, np.float32)])
    assert calls == [([np.float32, np.float32], 2, np.int64, 1), ([np.float64], 1, np.int64, 1)]
    np.testing.assert_array_equal(avg.params[1], [0.5, 0.5, 0.5])


def test_user_avg_fn_result_is_copied_in():
    avg = gswa.AveragedParameters([np.zeros(3, np.float32)], avg_fn=lambda a, c, n: np.full(3, float(n) + 0.25))
    avg.update_parameters([np.ones(3, np.float32)])
    avg.update_parameters([np.ones(3, np.float32)])
    assert avg.params[0].dtype == np.float32
    np.testing.assert_array_equal(avg.params[0], np.full(3, 1.25, np.float32))


@pytest.mark.parametrize("which", ["lerp", "mean"])
def test_threads_give_the_same_bits(which):
    rng = np.random.default_rng(11)
    a = [rng.standard_normal(1_500_000).astype(np.float32), rng.standard_normal(700_000)]
    c = [rng.standard_normal(x.shape).astype(x.dtype) for x in a]
    before = gradclip.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            gradclip.set_num_threads(n)
            out = [x.copy() for x in a]
            if which == "lerp":
                _averaging.lerp_(out, c, 0.25)
            else:
                _averaging.mean_(out, c, 5)
            results.append(out)
    finally:
        gradclip.set_num_threads(before)
    for x, y in zip(*results):
        np.testing.assert_array_equal(x, y)
    want = torch.from_numpy(a[0].copy()).lerp_(torch.from_numpy(c[0]), 0.25) if which == "lerp" else None
    if want is not None:
        np.testing.assert_array_equal(results[1][0], want.numpy())
