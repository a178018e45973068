"""Parity with real PyTorch 2.13 (CPU): same inputs, same returned norms, same gradients.

torch is a test requirement and these tests must run: they import it unconditionally.
"""

import numpy as np
import pytest
import torch

import gradclip
from arrays import LAYOUTS, make_array
import reference as ref

INF = float("inf")
NAN = float("nan")
TORCH_DTYPE = {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}
# Norm orders whose float32 result torch computes with one rounding per element sum; for
# the others torch's float32 pow() accumulates error that can exceed 1e-6 on its own.
SIMPLE_NORMS = [2.0, 1.0, 0.0, INF, -INF]
OTHER_NORMS = [0.5, 1.5, 3.0, -1.0, -2.0]
RTOL = {np.float32: 1e-6, np.float64: 1e-12}

pytestmark = pytest.mark.torch


def torch_params(grads):
    """torch Parameters whose .grad hold copies of `grads` (same dtype, same values)."""
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=TORCH_DTYPE[g.dtype.type]))
        p.grad = torch.from_numpy(np.array(g))
        params.append(p)
    return params


def grads_for(seed, dtype, scale, layouts=LAYOUTS):
    rng = np.random.default_rng(seed)
    return [make_array(rng, layout, dtype, scale) for layout in layouts]


def assert_same_norm(ours, theirs, dtype):
    theirs = theirs.item()
    assert ours.dtype == np.dtype(dtype)
    if np.isnan(theirs):
        assert np.isnan(ours)
    else:
        np.testing.assert_allclose(float(ours), theirs, rtol=RTOL[dtype], atol=0)


def layouts_for(p):
    # torch refuses empty arrays for norms without an identity; that error is tested separately.
    return LAYOUTS if (p >= 0 and p != INF) else [l for l in LAYOUTS if l != "empty"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", SIMPLE_NORMS + OTHER_NORMS)
@pytest.mark.parametrize("scale", [100.0, 1e-3], ids=["clipping", "not-clipping"])
@pytest.mark.parametrize("seed", range(3))
def test_clip_grad_norm_matches_torch(dtype, p, scale, seed):
    grads = grads_for(seed, dtype, scale, layouts_for(p))
    params = torch_params(grads)

    theirs = torch.nn.utils.clip_grad_norm_(params, max_norm=1.0, norm_type=p)
    ours = gradclip.clip_grad_norm_(grads, max_norm=1.0, norm_type=p)

    if dtype == np.float32 and p in OTHER_NORMS:
        # torch's own float32 error dominates here; ours must match torch's float64 answer.
        theirs = torch.nn.utils.get_total_norm([t.grad.double() for t in torch_params(
            grads_for(seed, dtype, scale, layouts_for(p)))], p)
        np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-6)
    else:
        assert_same_norm(ours, theirs, dtype)
    for g, t in zip(grads, params):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", SIMPLE_NORMS + OTHER_NORMS)
def test_same_total_gives_bit_identical_gradients(dtype, p):
    grads = grads_for(1, dtype, 50.0, layouts_for(p))
    params = torch_params(grads)
    theirs = torch.nn.utils.clip_grad_norm_(params, max_norm=2.0, norm_type=p)
    gradclip.clip_grads_with_norm_(grads, 2.0, theirs.numpy())
    for g, t in zip(grads, params):
        np.testing.assert_array_equal(g, t.grad.numpy(), strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_coefficient_bit_identical_over_many_totals(dtype):
    rng = np.random.default_rng(0)
    totals = np.concatenate([10.0 ** rng.uniform(-8, 8, 400), [0.0, 1e-6, 5.0, 4.999999, 5.000001, INF, NAN]])
    for total in totals.astype(dtype):
        t = torch.nn.Parameter(torch.zeros(1, dtype=TORCH_DTYPE[dtype]))
        t.grad = torch.ones(1, dtype=TORCH_DTYPE[dtype])
        torch.nn.utils.clip_grads_with_norm_([t], 5.0, torch.tensor(total))
        g = np.ones(1, dtype=dtype)
        gradclip.clip_grads_with_norm_([g], 5.0, total)
        np.testing.assert_array_equal(g, t.grad.numpy(), strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [NAN, INF, -INF])
@pytest.mark.parametrize("p", [2.0, 1.0, INF, -INF, 0.0, 0.5, -1.0])
@pytest.mark.parametrize("error_if_nonfinite", [False, True])
def test_nonfinite_gradients_like_torch(dtype, bad, p, error_if_nonfinite):
    def make():
        grads = grads_for(2, dtype, 3.0, ["C", "strided"])
        grads[1][1, 2] = bad
        return grads

    grads, params = make(), torch_params(make())
    try:
        theirs = torch.nn.utils.clip_grad_norm_(params, 1.0, p, error_if_nonfinite=error_if_nonfinite)
    except RuntimeError as e:
        saved = [g.copy() for g in grads]
        with pytest.raises(RuntimeError) as info:
            gradclip.clip_grad_norm_(grads, 1.0, p, error_if_nonfinite=error_if_nonfinite)
        assert str(info.value) == str(e)
        for g, s in zip(grads, saved):
            np.testing.assert_array_equal(g, s, strict=True)
        return
    ours = gradclip.clip_grad_norm_(grads, 1.0, p, error_if_nonfinite=error_if_nonfinite)
    assert_same_norm(ours, theirs, dtype)
    for g, t in zip(grads, params):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=RTOL[dtype], atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", SIMPLE_NORMS + OTHER_NORMS)
def test_get_total_norm_matches_torch(dtype, p):
    arrays = grads_for(5, dtype, 2.0, layouts_for(p))
    theirs = torch.nn.utils.get_total_norm([torch.from_numpy(np.array(a)) for a in arrays], p)
    if dtype == np.float32 and p in OTHER_NORMS:
        theirs = torch.nn.utils.get_total_norm([torch.from_numpy(np.array(a)).double() for a in arrays], p)
        np.testing.assert_allclose(float(gradclip.get_total_norm(arrays, p)), theirs.item(), rtol=1e-6)
    else:
        assert_same_norm(gradclip.get_total_norm(arrays, p), theirs, dtype)


@pytest.mark.parametrize("p", [INF, -INF, -1.0])
def test_empty_array_error_message_is_torchs(p):
    with pytest.raises(RuntimeError) as theirs:
        torch.nn.utils.get_total_norm([torch.ones(2), torch.zeros(0)], p)
    with pytest.raises(RuntimeError) as ours:
        gradclip.get_total_norm([np.ones(2), np.zeros(0)], p)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("clip_value", [0.0, 0.1, 1.0, 1.00048828125, 3.3, 1e4])
def test_clip_grad_value_bit_identical(dtype, clip_value):
    grads = grads_for(3, dtype, 2.0)
    for g in grads:
        if g.size > 2:
            g.reshape(-1)[:3] = [NAN, INF, -INF] if g.flags.c_contiguous else g.reshape(-1)[:3]
    params = torch_params(grads)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    gradclip.clip_grad_value_(grads, clip_value)
    for g, t in zip(grads, params):
        np.testing.assert_array_equal(g, t.grad.numpy(), strict=True)


@pytest.mark.parametrize("clip_value", [0.0, 6e-8, 1.00048828125, 65504.0, INF])  # torch refuses 1e5 for float16
def test_every_float16_value_clamped_bit_identical(clip_value):
    # Every bit pattern. NaN stays NaN with its bits kept; torch keeps them in its scalar loop
    # (strided arrays, the tail of a contiguous one) but quiets signalling NaNs in its vector
    # loop, so for NaN only the positions are compared with torch.
    g = np.arange(2**16, dtype=np.uint16).view(np.float16)
    (t,) = torch_params([g.copy()])
    torch.nn.utils.clip_grad_value_([t], clip_value)
    work = g.copy()
    gradclip.clip_grad_value_([work], clip_value)
    theirs = t.grad.numpy()
    nan = np.isnan(g)
    np.testing.assert_array_equal(np.isnan(work), nan)
    np.testing.assert_array_equal(np.isnan(theirs), nan)
    np.testing.assert_array_equal(work[~nan].view(np.uint16), theirs[~nan].view(np.uint16), strict=True)
    np.testing.assert_array_equal(work[nan].view(np.uint16), g[nan].view(np.uint16), strict=True)


def test_float16_clipping_differs_from_torch_only_by_being_right():
    # The documented difference: torch's float16 norm overflows to inf and zeroes the gradient.
    g = np.full(100, 10000.0, dtype=np.float16)
    (t,) = torch_params([g])
    theirs = torch.nn.utils.clip_grad_norm_([t], 5.0)
    ours = gradclip.clip_grad_norm_([g], 5.0)
    assert theirs.item() == INF and (t.grad == 0).all()
    assert np.isclose(float(ours), 1e5, rtol=1e-6) and np.allclose(g.astype(np.float32), 0.5, rtol=1e-3)


@pytest.mark.parametrize("p", [2.0, 1.0, INF])
def test_float16_norms_close_to_torch_in_range(p):
    rng = np.random.default_rng(9)
    g = make_array(rng, "strided", np.float16, 1.0)
    theirs = torch.nn.utils.get_total_norm([torch.from_numpy(np.array(g))], p)
    np.testing.assert_allclose(float(gradclip.get_total_norm(g, p)), theirs.item(), rtol=2e-3)


def test_float32_sum_is_more_accurate_than_torchs():
    # The documented difference, measured: on 10M float32 elements torch's float32
    # accumulation is off in the 4th digit; gradclip's float64 accumulation is not.
    rng = np.random.default_rng(0)
    g = rng.random(10_000_001, dtype=np.float32)
    exact = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    ours = float(gradclip.get_total_norm(g))
    theirs = torch.linalg.vector_norm(torch.from_numpy(g)).item()
    assert abs(ours - exact) / exact < 1e-7
    assert abs(ours - exact) <= abs(theirs - exact)


def test_reference_snippet_clip_matches_torch():
    rng = np.random.default_rng(4)
    values = [rng.standard_normal(s).astype(np.float32) for s in [(8, 5), (8,), (3, 8)]]
    params = [gradclip.Parameter(v.copy()) for v in values]
    tparams = [torch.nn.Parameter(torch.from_numpy(v.copy())) for v in values]
    for p, t in zip(params, tparams):
        grad = rng.standard_normal(p.shape).astype(np.float32) * 10
        p.grad, t.grad = grad, torch.from_numpy(grad.copy())
    ours = gradclip.nn.utils.clip_grad_norm_(params, 5.0)
    theirs = torch.nn.utils.clip_grad_norm_(tparams, 5.0)
    np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-6)
    for p, t in zip(params, tparams):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-6)


SPECIAL = [-0.0, 0.0, 1.0, -1.0, 5e-324, -5e-324, 1e-310, -1e-310, 1e-45, -1e-45, np.inf, -np.inf]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("n", [1, 7, 40, 67])
def test_complex_scaling_signed_zeros_and_underflow_as_torch(dtype, n):
    """torch scales a complex gradient by complex(coef, 0): re * coef - im * 0. An underflowing
    re * coef rounds to a signed zero first, and the zero products decide its sign: the
    vectorised loops must not fuse the product into the addition (GCC's vfmaddsub did)."""
    real = np.dtype(dtype).type(0).real.dtype
    values = [complex(r, i) for r in SPECIAL for i in SPECIAL]
    base = np.array([values[(k * 7 + s) % len(values)] for s in range(len(values)) for k in range(n)], dtype)
    ours = base.copy()
    gradclip.clip_grads_with_norm_([ours], 1.0, 7.000001)
    p = torch.nn.Parameter(torch.zeros(base.shape, dtype=torch.from_numpy(base).dtype))
    p.grad = torch.from_numpy(base.copy())
    torch.nn.utils.clip_grads_with_norm_([p], 1.0, torch.tensor(7.000001, dtype=torch.float64 if real == np.float64 else torch.float32))
    theirs = p.grad.numpy()
    a, b = ours.view(real), theirs.view(real)
    nan = np.isnan(a)
    assert np.array_equal(nan, np.isnan(b))
    assert np.array_equal(a[~nan].view(np.uint64 if real == np.float64 else np.uint32),
                          b[~nan].view(np.uint64 if real == np.float64 else np.uint32))
