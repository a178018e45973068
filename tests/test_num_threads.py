"""Thread count: a setting, and results that never depend on it."""

import numpy as np
import pytest

import gradclip
from gradclip import _C


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


def test_small_array_norms_on_one_thread_match_the_threaded_path(restore_threads):
    """On one thread a whole small contiguous array's 2-norm comes straight from the kernel; a
    large array in the list makes the threaded call take the general block path for the same
    small arrays. Their norms must agree bit for bit, edge values included."""
    rng = np.random.default_rng(7)
    small = [
        rng.standard_normal(64).astype(np.float32),
        rng.standard_normal(1),
        rng.standard_normal(1000).astype(np.float16),
        (rng.standard_normal(33) + 1j * rng.standard_normal(33)).astype(np.complex64),
        rng.standard_normal((7, 9)),
        rng.uniform(0.5, 2.0, 50) * 1e-200,  # squares underflow: rescued after the walk
        np.array([1.0, np.nan, 2.0]),
        np.array([np.inf, 1.0], dtype=np.float32),
        np.zeros(5),
        rng.standard_normal(1 << 16),  # exactly one block
    ]
    arrays = [rng.standard_normal(1_500_000)] + small
    gradclip.set_num_threads(1)
    one = gradclip.get_norms(arrays)
    gradclip.set_num_threads(2)
    two = gradclip.get_norms(arrays)
    assert one.tobytes() == two.tobytes()
    for a, got in zip(arrays, one):
        if np.isfinite(a).all():
            assert got == pytest.approx(np.linalg.norm(a.astype(np.complex128).ravel()), rel=1e-12)


def test_array_listed_twice_scaled_twice_even_with_threads(restore_threads):
    gradclip.set_num_threads(4)
    g = np.full(2_000_000, 3.0)
    total = gradclip.clip_grad_norm_([g, g], 1.0)
    coef = min(1.0 * (1.0 / (float(total) + 1e-6)), 1.0)
    np.testing.assert_array_equal(g, (3.0 * coef) * coef)


# -- the list algebra (LBFGS's dot/axpy/lerp/copy) -----------------------------------------


def _exact_dot(xs, ys):
    """sum x * y over float64 pairs, correctly rounded: Dekker's exact products, then fsum."""
    import math

    terms = []
    for x, y in zip(xs, ys):
        a, b = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
        p = a * b
        split = 134217729.0  # 2**27 + 1
        ah = a * split - (a * split - a)
        bh = b * split - (b * split - b)
        al, bl = a - ah, b - bh
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
        terms += [p, e]
    return math.fsum(np.concatenate(terms))


def _as_real(z):
    if z.dtype.kind != "c":
        return z
    return np.lib.stride_tricks.as_strided(z.real, z.shape + (2,), z.strides + (z.itemsize // 2,))


def _list_algebra(dtype, seed=3):
    """Every list operation on lists of over 2**20 elements, in several layouts, with a flat
    vector as LBFGS uses them. Returns the results, computed afresh."""
    rng = np.random.default_rng(seed)

    def arr(shape):
        a = rng.standard_normal(shape)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.standard_normal(shape)
        return np.asarray(a, dtype)

    def lists():
        big = arr((1100, 700))
        return [big[:, ::-1], arr(600_003), arr(()), np.asfortranarray(arr((300, 500))), arr(0)]

    xs, ys = lists(), lists()
    n = sum(_as_real(x).size for x in xs)
    real = _as_real(xs[0]).dtype
    flat = np.empty(n, real)
    out = {}
    out["dot"] = _C.list_dot(xs, ys)
    out["dot_flat"] = _C.list_dot(flat_of(xs, real), ys)
    _C.list_copy(flat, xs)
    out["copy_to_flat"] = flat.copy()
    zs = [y.copy(order="K") if y.ndim else y.copy() for y in ys]
    _C.list_axpy(zs, -0.37, flat)
    out["axpy_flat"] = [z.copy() for z in zs]
    _C.list_axpy(zs, 1.25, xs)
    out["axpy"] = [z.copy() for z in zs]
    _C.list_lerp(zs, xs, 0.3)
    _C.list_lerp(zs, ys, 0.7)
    out["lerp"] = [z.copy() for z in zs]
    _C.list_copy(zs, flat)
    out["copy_from_flat"] = [z.copy() for z in zs]
    return out, xs, ys


def flat_of(arrays, real):
    return np.concatenate([_as_real(a).ravel() for a in arrays]).astype(real)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
def test_list_algebra_identical_for_any_thread_count(restore_threads, dtype):
    gradclip.set_num_threads(1)
    one, xs, ys = _list_algebra(dtype)
    for n in (2, 3):
        gradclip.set_num_threads(n)
        many, _, _ = _list_algebra(dtype)
        assert list(many) == list(one)
        for key in one:
            a, b = one[key], many[key]
            if isinstance(a, float):
                assert a.hex() == b.hex(), (key, n)
            else:
                for x, y in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
                    np.testing.assert_array_equal(x, y, strict=True, err_msg=f"{key}, {n} threads")
    # And right: the dot product is that of the real values (pairs for complex), accurate to
    # far better than the dtype (float64: compensated, as if in twice the precision;
    # float16/float32: exact products summed in float64); the copies are copies.
    exact = _exact_dot([_as_real(x) for x in xs], [_as_real(y) for y in ys])
    if np.finfo(dtype).dtype == np.float64:
        assert abs(one["dot"] - exact) <= 2.0**-50 * abs(exact)
    else:
        scale = sum(float(np.sum(np.abs(_as_real(x).astype(np.float64) * _as_real(y)))) for x, y in zip(xs, ys))
        assert abs(one["dot"] - exact) <= 1e-13 * scale  # measured 2e-11 of 3.7e3 (scale 1.6e6)
    assert np.dtype(dtype).type(one["dot_flat"]).real == np.finfo(dtype).dtype.type(exact)
    np.testing.assert_array_equal(one["copy_to_flat"], flat_of(xs, one["copy_to_flat"].dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_list_axpy_with_threads_is_torchs_add(restore_threads, dtype):
    import torch

    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        pytest.skip("torch fuses only with FMA")
    gradclip.set_num_threads(2)
    rng = np.random.default_rng(5)
    ys = [rng.standard_normal(1_500_001).astype(dtype), rng.standard_normal((900, 800)).astype(dtype)[:, ::-1]]
    xs = [rng.standard_normal(y.shape).astype(dtype) for y in ys]
    expected = [torch.from_numpy(np.ascontiguousarray(y)).add_(torch.from_numpy(x), alpha=0.3) for y, x in zip(ys, xs)]
    _C.list_axpy(ys, 0.3, xs)
    for y, e in zip(ys, expected):
        np.testing.assert_array_equal(y, e.numpy())


def test_list_axpy_on_shared_arrays_runs_in_list_order(restore_threads):
    # An array listed twice is updated twice; an array written by one pair and read by a
    # later one is read as that pair left it (sequential semantics, with threads too).
    gradclip.set_num_threads(4)
    n = 1 << 20
    a = np.full(n, 1.0)
    _C.list_axpy([a, a], 1.0, [np.full(n, 2.0), np.full(n, 4.0)])
    np.testing.assert_array_equal(a, 7.0)
    b, c = np.full(n, 1.0), np.full(n, 10.0)
    _C.list_axpy([b, c], 1.0, [np.full(n, 2.0), b])  # b = 3, then c = 10 + 3
    np.testing.assert_array_equal(b, 3.0)
    np.testing.assert_array_equal(c, 13.0)
    flat = np.arange(2 * n, dtype=np.float64)
    d = np.zeros(n)
    _C.list_copy([d, flat[n:]], [flat[:n], d])  # d = flat[:n], then flat[n:] = d
    np.testing.assert_array_equal(flat[n:], np.arange(n))
