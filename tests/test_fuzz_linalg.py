"""Fuzzing the list-algebra entry points (_C.list_dot/list_axpy/list_lerp/list_copy).

Random lists of arrays (dtypes, shapes, layouts, 0-d, empty), each side a list or a flat
vector, with random defects (wrong dtype, shape, length, read-only, not an array, aliasing):
the call either raises TypeError/ValueError and modifies nothing, or matches a float64
reference (to one rounding of the dtype). Complex arrays are their real pairs
(torch.view_as_real): the reference works on those, and a flat vector holds them.
"""

import os
from fractions import Fraction

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gradclip import _C

EXAMPLES = int(os.environ.get("GRADCLIP_FUZZ_EXAMPLES", 10_000 if os.environ.get("GRADCLIP_STRESS") else 150))
DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
LAYOUTS = ["c", "f", "rev", "step"]


def _real(a):
    """A complex array's real pairs (torch.view_as_real, any strides); a real array itself."""
    if a.dtype.kind != "c":
        return a
    return np.lib.stride_tricks.as_strided(a.real, a.shape + (2,), a.strides + (a.itemsize // 2,))


def _array(rng, shape, dtype, layout):
    base = rng.standard_normal(shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        base = np.asarray(base + 1j * rng.standard_normal(shape), dtype)
    if layout == "f" and base.ndim >= 2:
        return np.asfortranarray(base)
    if layout == "rev" and base.ndim >= 1:
        return base[::-1]
    if layout == "step" and base.ndim >= 1:
        wide = np.zeros((2 * shape[0],) + tuple(shape[1:]), dtype)
        wide[::2] = base
        return wide[::2]
    return base


@st.composite
def problems(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    dtype = draw(st.sampled_from(DTYPES))
    n = draw(st.integers(0, 4))
    shapes = [tuple(draw(st.lists(st.integers(0, 4), max_size=3))) for _ in range(n)]
    ys = [_array(rng, s, dtype, draw(st.sampled_from(LAYOUTS))) for s in shapes]
    xs = [_array(rng, s, dtype, draw(st.sampled_from(LAYOUTS))) for s in shapes]
    flat_x = draw(st.booleans())
    defect = draw(st.sampled_from([None, None, "dtype", "shape", "length", "readonly", "junk", "alias", "flatlen"]))
    if defect == "dtype" and n:
        i = draw(st.integers(0, n - 1))
        other = {np.float16: np.float64, np.float32: np.complex64, np.float64: np.float32,
                 np.complex64: np.complex128, np.complex128: np.complex64}  # real vs complex too
        xs[i] = xs[i].astype(other[dtype])
    elif defect == "shape" and n:
        i = draw(st.integers(0, n - 1))
        xs[i] = np.zeros(xs[i].size + 1, dtype)
    elif defect == "length":
        xs = xs + [np.zeros(2, dtype)]
    elif defect == "readonly" and n:
        i = draw(st.integers(0, n - 1))
        ys[i] = ys[i].copy()
        ys[i].flags.writeable = False
    elif defect == "junk" and n:
        xs[draw(st.integers(0, n - 1))] = draw(st.sampled_from(["x", 3, None, [1.0]]))
    elif defect == "alias" and n and ys[0].size:
        xs[0] = ys[0]
    x_side = xs
    if flat_x and all(isinstance(x, np.ndarray) for x in xs):
        # The real vector torch's LBFGS makes of them (complex: real and imaginary parts).
        ref = xs[0].dtype if xs else np.dtype(dtype)
        real = np.finfo(ref).dtype if ref.kind == "c" else ref
        flat = np.concatenate([_real(x).astype(np.float64).ravel() for x in xs] or [np.zeros(0)]).astype(real)
        if defect == "flatlen":
            flat = np.concatenate([flat, np.zeros(1, flat.dtype)])
        x_side = flat
    alpha = draw(st.sampled_from([0.5, -1.25, 3.0, 1e-3]))
    return ys, x_side, alpha, defect


def _ok(ys, xs, written=True):
    if not isinstance(xs, np.ndarray) and len(xs) != len(ys):
        return False
    pieces = xs
    if isinstance(xs, np.ndarray):
        if xs.dtype.kind == "c" or sum(_real(y).size for y in ys) != xs.size or any(_real(y).dtype != xs.dtype for y in ys):
            return False
        pieces, off = [], 0
        for y in ys:
            pieces.append(xs[off : off + _real(y).size].reshape(_real(y).shape))
            off += _real(y).size
    else:
        for y, x in zip(ys, pieces):
            if not isinstance(x, np.ndarray) or x.dtype != y.dtype or x.shape != y.shape:
                return False
        pieces = [_real(x) for x in pieces]
    for y, x in zip(ys, pieces):
        if written and (not y.flags.writeable or (y.size and np.shares_memory(x, y))):
            return False
    return True, pieces


def _exact(f, u, v):
    """f applied elementwise in exact rational arithmetic, rounded once to float64 (an fma)."""
    out = [float(f(Fraction(float(p)), Fraction(float(q)))) for p, q in zip(u.ravel(), v.ravel())]
    return np.array(out, np.float64).reshape(u.shape)


def _ulp_close(a, b, dtype):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    spacing = np.spacing(np.abs(b).astype(dtype)).astype(np.float64)
    # The reference is exact then rounded to float64: one more rounding to the dtype.
    ulps = 1.01
    assert np.all(np.abs(a - b) <= ulps * spacing + np.finfo(dtype).tiny), (a, b)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems(), st.sampled_from(["axpy", "lerp", "dot", "copy"]))
def test_list_algebra_fuzz(problem, op):
    ys, xs, alpha, defect = problem
    before = [y.copy() for y in ys]
    valid = _ok(ys, xs, written=op != "dot")
    fn = {
        "axpy": lambda: _C.list_axpy(ys, alpha, xs),
        "lerp": lambda: _C.list_lerp(ys, xs, alpha / 4),
        "dot": lambda: _C.list_dot(ys, xs),
        "copy": lambda: _C.list_copy(ys, xs),
    }[op]
    try:
        result = fn()
    except (TypeError, ValueError):
        for y, b in zip(ys, before):
            np.testing.assert_array_equal(y, b)
        assert not valid or (op == "copy" and defect == "junk"), "refused a valid call"
        return
    if op == "copy" and defect == "junk":
        return  # copy's source may hold None (zeros): checked in test_optim_lbfgs
    assert valid, f"accepted an invalid call ({defect})"
    pieces = valid[1]
    before = [_real(b) for b in before]
    if op == "dot":
        exact = sum(float(np.sum(b.astype(np.float64) * x.astype(np.float64))) for b, x in zip(before, pieces))
        scale = sum(float(np.sum(np.abs(b.astype(np.float64) * x.astype(np.float64)))) for b, x in zip(before, pieces))
        assert abs(result - exact) <= 1e-12 * scale + 1e-300
        return
    for y, b, x in zip([_real(y) for y in ys], before, pieces):
        if y.size == 0:
            continue
        dtype = y.dtype.type
        b64, x64 = b.astype(np.float64), x.astype(np.float64)
        if op == "axpy":
            a = float(np.float16(alpha)) if y.dtype == np.float16 else float(dtype(alpha))
            expected = _exact(lambda bb, xx: bb + Fraction(a) * xx, b64, x64)
            if y.dtype == np.float16:
                # torch's scalar loop rounds the product to float16 first (exact in float64:
                # products and sums of halves fit); which elements take it is torch parity's
                # business (test_optim_lbfgs, test_optim_float16_torch): each is one of the two.
                two = (b64 + (a * x64).astype(np.float16).astype(np.float64)).astype(np.float16)
                fused = np.abs(y.astype(np.float64) - expected) <= 1.01 * np.spacing(
                    np.abs(expected).astype(np.float16)).astype(np.float64) + np.finfo(np.float16).tiny
                assert np.all(fused | (y.view(np.uint16) == two.view(np.uint16))), (y, expected, two)
                continue
        elif op == "lerp":
            w = float(np.float32(alpha / 4)) if y.dtype != np.float64 else alpha / 4
            compute = np.float64 if y.dtype == np.float64 else np.float32  # torch's opmath
            diff = (x64 - b64).astype(compute).astype(np.float64)  # rounded before the fma
            if abs(w) < 0.5:
                expected = _exact(lambda bb, dd: bb + Fraction(w) * dd, b64, diff)
            else:
                expected = _exact(lambda xx, dd: xx + Fraction(w - 1) * dd, x64, diff)
        else:
            expected = x64
        _ulp_close(y, expected, y.dtype)
