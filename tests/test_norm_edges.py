"""Norms at the edges, against real torch and exact arithmetic: one-element arrays and
one-array lists (torch's norm of one element is |x|, no power), complex inf/NaN moduli
(hypot's rule), underflow (gradclip rescues it), overflow (inf exactly where torch's float64
sum overflows) and accuracy against the exactly rounded value.

torch is a test requirement and these tests must run: they import it unconditionally.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import gradclip

INF = float("inf")
NAN = float("nan")
ORDERS = [2.0, 1.0, INF, -INF, 0.0, 3.5, 0.5, 0.1, -1.0, -2.5, 7.0, 100.0]
TORCH_DTYPE = {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}

pytestmark = pytest.mark.torch


def extremes(dtype):
    """The values where a power of x overflows or underflows first: the largest finite, the
    smallest normal and subnormal, and a few ordinary ones, with both signs."""
    info = np.finfo(dtype)
    values = [info.max, info.tiny, info.smallest_subnormal, info.max / 3, info.tiny * 7, 1.0, 3.0, 1e-3, 0.0]
    if dtype == np.float64:
        values += [1e200, 1e-310, 1e300, 1e-200]
    values = [dtype(v) for v in values]
    return values + [-v for v in values] + [dtype(INF), dtype(NAN)]


def torch_total(arrays, p):
    return torch.nn.utils.get_total_norm([torch.from_numpy(np.array(a)) for a in arrays], p).item()


def same(ours, theirs):
    ours = float(ours)
    return (math.isnan(ours) and math.isnan(theirs)) or ours == theirs


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (1,), (1, 1)], ids=str)
@pytest.mark.parametrize("p", ORDERS)
def test_one_element_arrays_are_their_absolute_value_as_in_torch(dtype, shape, p):
    """A one-element array's norm, and the total over a one-array list, is |x| (p = 0:
    x != 0) for every order: [1e200] is not inf, [1e-310] is not 0, as in torch."""
    for x in extremes(dtype):
        a = np.full(shape, x, dtype)
        ours = gradclip.get_total_norm([a], p)
        theirs = torch_total([a], p)
        assert same(ours, theirs), (x, float(ours), theirs)


@pytest.mark.parametrize("p", ORDERS)
def test_lists_of_one_element_arrays_at_the_extremes(p):
    """Two levels: the per-array norms are exact, and the total over several of them is
    torch's (float64, where torch's own sum is float64)."""
    values = extremes(np.float64)
    rng = np.random.default_rng(0)
    for _ in range(200):
        arrays = [np.array([v]) for v in rng.choice(values, int(rng.integers(2, 4)))]
        ours, theirs = float(gradclip.get_total_norm(arrays, p)), torch_total(arrays, p)
        if math.isinf(theirs) or math.isnan(theirs) or theirs == 0 or not math.isfinite(ours):
            # The same non-finite result, and inf/0 exactly where torch's float64 sum
            # overflows (or underflows where that makes the root inf).
            # Near the largest double torch's final rounding may also overflow where the
            # exact total (gradclip's) is the largest finite value.
            assert (
                same(ours, theirs)
                or (theirs == 0 and p > 0)
                or (math.isinf(theirs) and ours >= np.finfo(np.float64).max * (1 - 1e-12))
            ), (arrays, ours, theirs)
        else:
            # gradclip sums the powers of the norms in extended precision: torch's last bits
            # (or, where its terms underflow, more than that) may differ.
            assert ours == pytest.approx(theirs, rel=1e-12) or p > 0 and abs(ours) < 1e-150, (arrays, ours, theirs)


def test_clip_grad_norm_keeps_a_huge_single_gradient_as_torch():
    g = np.array([1e200])
    t = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    t.grad = torch.from_numpy(g.copy())
    total = gradclip.clip_grad_norm_([g], 1.0)
    ttotal = torch.nn.utils.clip_grad_norm_([t], 1.0)
    assert float(total) == ttotal.item() == 1e200
    assert g.tobytes() == t.grad.numpy().tobytes()
    assert g[0] == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("p", ORDERS)
@pytest.mark.parametrize("z", [complex(NAN, INF), complex(INF, NAN), complex(-INF, NAN), complex(NAN, -INF)])
@pytest.mark.parametrize("n", [1, 2, 40])
def test_complex_infinity_with_nan_is_infinite_as_in_torch(dtype, p, z, n):
    """|nan + inf j| is inf (hypot's rule), in every norm order and any position."""
    a = np.full(n, 1 + 1j, dtype)
    a[n // 2] = z
    ours = gradclip.get_total_norm([a], p)
    theirs = torch.linalg.vector_norm(torch.from_numpy(a.copy()), p).item()
    if p == 0:
        theirs = float(theirs != 0)  # the outer level counts non-zero arrays
    assert same(ours, theirs) or float(ours) == pytest.approx(theirs, rel=1e-6), (float(ours), theirs)


def exact_norm(values, p):
    """The p-norm of exact binary values, correctly rounded to float64 (p in {1, 2, inf})
    by integer arithmetic."""
    fracs = [abs(Fraction(float(v))) for v in values]
    if p == INF:
        return float(max(fracs))
    if p == 1:
        return float(sum(fracs))
    total = sum(f * f for f in fracs)
    # Correctly rounded sqrt: scale to an integer with plenty of bits, isqrt, compare.
    shift = 2 * 1100
    scaled = total * (1 << (2 * shift))
    root = math.isqrt(scaled.numerator // scaled.denominator)
    candidate = Fraction(root, 1 << shift)
    lo = math.nextafter(float(candidate), 0)
    best = min(
        (lo, float(candidate), math.nextafter(float(candidate), INF)),
        key=lambda c: abs(Fraction(c) ** 2 - total),
    )
    return best


@pytest.mark.parametrize("magnitude", [1e-320, 1e-300, 1e-200, 1e-160, 1e-100])
@pytest.mark.parametrize("n", [2, 5, 1000])
def test_underflowing_squares_are_rescued(magnitude, n):
    """torch's float64 2-norm of values whose squares underflow is 0 or a few correct bits;
    gradclip's is accurate to the last bits (compared with integer arithmetic)."""
    rng = np.random.default_rng(n)
    arrays = [rng.uniform(0.5, 2.0, n) * magnitude, rng.uniform(0.5, 2.0, 3) * magnitude * 1e-3]
    values = np.concatenate(arrays)
    exact = exact_norm(values, 2)
    ours = float(gradclip.get_total_norm(arrays, 2.0))
    assert ours == pytest.approx(exact, rel=4e-16), (ours, exact, torch_total(arrays, 2.0))


@pytest.mark.parametrize("p", [2.0, 3.5, 7.0, 1.0, 0.5])
@pytest.mark.parametrize("magnitude", [1e100, 1e200, 1e300])
@pytest.mark.parametrize("error_if_nonfinite", [False, True])
def test_overflow_is_inf_where_torchs_float64_sum_overflows(p, magnitude, error_if_nonfinite):
    """gradclip could avoid the overflow, but torch's inf (and error_if_nonfinite's error) is
    part of the parity: inf exactly where torch is inf, finite where torch is finite."""
    rng = np.random.default_rng(int(p * 10))
    arrays = [rng.uniform(0.5, 2.0, 7) * magnitude, rng.uniform(0.5, 2.0, 3) * magnitude]
    theirs = torch_total(arrays, p)
    if error_if_nonfinite and math.isinf(theirs):
        with pytest.raises(RuntimeError, match="non-finite"):
            gradclip.get_total_norm(arrays, p, error_if_nonfinite=True)
        return
    ours = float(gradclip.get_total_norm(arrays, p, error_if_nonfinite=error_if_nonfinite))
    assert math.isinf(ours) == math.isinf(theirs)
    if not math.isinf(theirs):
        assert ours == pytest.approx(theirs, rel=1e-13)


@pytest.mark.parametrize("p", [0.1, 0.5, 3.5])
@pytest.mark.parametrize("magnitude", [1e-200, 1e-20, 1.0, 1e22, 1e200])
def test_fractional_orders_are_accurate_to_a_few_ulp(p, magnitude):
    """sum |x|^p, compensated, then the root in extended precision: within 4 ulp of the exact
    value (mpmath at 300 bits) where torch's float64 is off by up to hundreds for p = 0.1."""
    mpmath = pytest.importorskip("mpmath")  # installed with torch (sympy)
    rng = np.random.default_rng(7)
    worst_ours = worst_torch = 0.0
    for _ in range(10):
        arrays = [rng.uniform(0.1, 10, int(rng.integers(2, 300))) * magnitude for _ in range(3)]
        with mpmath.workprec(300):
            s = mpmath.fsum(mpmath.mpf(float(v)) ** p for a in arrays for v in a)
            exact = s ** (1 / mpmath.mpf(p))
            ulp = np.spacing(float(exact))
            ours = float(gradclip.get_total_norm(arrays, p))
            theirs = torch_total(arrays, p)
            if not math.isfinite(theirs):
                assert math.isinf(ours) == math.isinf(theirs)
                continue
            worst_ours = max(worst_ours, float(abs(mpmath.mpf(ours) - exact) / ulp))
            if theirs != 0:
                worst_torch = max(worst_torch, float(abs(mpmath.mpf(theirs) - exact) / ulp))
    assert worst_ours <= 4, (worst_ours, worst_torch)


@pytest.mark.parametrize("p", [1500.0, 5000.0, 1e6, 1e17, 1e19, 1e300])
@pytest.mark.parametrize("magnitude", [1e-300, 1e-3, 0.7])
def test_enormous_orders_whose_powers_underflow_are_accurate(p, magnitude):
    """Where every |x|^p underflows (torch's float64 norm is then 0), and where the rescue's
    power-of-two scaling would overflow instead (found by test_fuzz_c: [0.001, 0] with p = 1e300
    was inf), the p-norm is accurate: within 4 ulp of mpmath's, per array and over the list
    (the norm of the arrays' norms, each rounded to float64 first, as torch's definition).
    Where the powers overflow instead (magnitudes above 1), the total is torch's inf (see
    test_overflow_is_inf_where_torchs_float64_sum_overflows)."""
    mpmath = pytest.importorskip("mpmath")  # installed with torch (sympy)
    rng = np.random.default_rng(int(math.log10(p)))
    lists = [
        [np.array([1.0, 0.0]) * magnitude],
        [np.array([], dtype=np.float16), np.array(magnitude)],
        [rng.uniform(0.5, 1.0, 5) * magnitude, np.array([magnitude, magnitude, 0.0]), rng.uniform(0.1, 1.0, 40) * magnitude],
        [np.full(3, magnitude), np.full(300, magnitude * 0.999)],
    ]
    for arrays in lists:
        with mpmath.workprec(200):
            pm = mpmath.mpf(p)

            def exact(values):
                values = [mpmath.mpf(float(abs(v))) for v in values]
                if len(values) == 1:
                    return values[0]  # torch's one-element norm is |x|
                return mpmath.fsum(v**pm for v in values) ** (1 / pm)

            norms = [float(exact(a.ravel())) if a.size else 0.0 for a in arrays]
            expected = exact(norms)
            info = gradclip.get_total_norm(arrays, p, return_info=True)
            for a, ours, ref in zip(arrays, info.norms, norms):
                assert abs(float(ours) - ref) <= 4 * np.spacing(ref), (a.size, float(ours), ref)
            ours = float(info.total_norm)
            assert abs(mpmath.mpf(ours) - expected) <= 4 * np.spacing(float(expected)), (ours, float(expected))


@pytest.mark.parametrize("p", [0.1, 3.5, 2.0, 1.0])
def test_norms_do_not_depend_on_threads_or_isa_paths_for_compensated_sums(p):
    """The compensated accumulation is combined in block order: the same bits on one thread
    and two (the ISA paths are compared in test_isa.py)."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((1 << 20) + 17) * 1e-160, rng.standard_normal(5000)[::3] * 1e22]
    before = gradclip.get_num_threads()
    try:
        gradclip.set_num_threads(1)
        one = gradclip.get_total_norm(arrays, p)
        gradclip.set_num_threads(2)
        two = gradclip.get_total_norm(arrays, p)
    finally:
        gradclip.set_num_threads(before)
    assert one.tobytes() == two.tobytes()
