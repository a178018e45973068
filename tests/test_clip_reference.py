"""gradclip's norms and clipping against the float64 NumPy reference, over dtypes and layouts."""

import itertools
import warnings

import numpy as np
import pytest

import gradclip
from arrays import DTYPES, LAYOUTS, make_array, mixed_list
import reference as ref

INF = float("inf")
NORMS = [2.0, 1.0, 0.0, INF, -INF, -1.0, -2.0, 0.5, 3.0, 1.5]
NORMS_WITH_IDENTITY = [p for p in NORMS if p >= 0 and p != INF]
RTOL = {np.float16: 1e-6, np.float32: 1e-6, np.float64: 1e-12, np.complex64: 1e-6, np.complex128: 1e-12}


def assert_bitwise_equal(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    mask = ~np.isnan(actual)
    a = np.ascontiguousarray(actual[mask]).view(np.uint8)
    e = np.ascontiguousarray(expected[mask]).view(np.uint8)
    np.testing.assert_array_equal(a, e)


def assert_norm_close(actual, expected, dtype):
    rtol = RTOL[np.dtype(dtype).type]
    if np.isnan(expected):
        assert np.isnan(actual)
    else:
        np.testing.assert_allclose(float(actual), expected, rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", DTYPES + [np.complex64, np.complex128])
@pytest.mark.parametrize("p", NORMS)
def test_total_norm_matches_reference_over_layouts(dtype, p):
    rng = np.random.default_rng(7)
    layouts = LAYOUTS if p in NORMS_WITH_IDENTITY else [l for l in LAYOUTS if l != "empty"]
    arrays = mixed_list(rng, dtype, layouts=layouts)
    total = gradclip.get_total_norm(arrays, p)
    assert total.dtype == ref.result_dtype(arrays)
    assert_norm_close(total, ref.total_norm(arrays, p), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scale", [100.0, 1e-3], ids=["clipping", "below-threshold"])
def test_clip_grad_norm_in_place_for_every_layout(layout, dtype, scale):
    rng = np.random.default_rng(11)
    grads = [make_array(rng, layout, dtype, scale), make_array(rng, "C", dtype, scale)]
    before = [g.copy() for g in grads]
    total = gradclip.clip_grad_norm_(grads, max_norm=1.0)

    assert_norm_close(total, ref.total_norm(before, 2.0), dtype)
    coef = ref.clip_coef(total, 1.0, total.dtype)
    for g, b in zip(grads, before):
        assert_bitwise_equal(g, ref.scaled(b, coef))


def test_elements_outside_a_strided_view_are_untouched():
    rng = np.random.default_rng(4)
    big = rng.standard_normal((9, 12)).astype(np.float32) * 100
    inside = np.zeros(big.shape, bool)
    inside[1::2, ::-3] = True
    saved = big.copy()
    gradclip.clip_grad_norm_([big[1::2, ::-3]], 1.0)
    np.testing.assert_array_equal(big[~inside], saved[~inside])
    assert not np.array_equal(big[inside], saved[inside])


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_clip_grad_norm_complex(dtype):
    rng = np.random.default_rng(3)
    grads = mixed_list(rng, dtype, scale=10.0)
    before = [g.copy() for g in grads]
    total = gradclip.clip_grad_norm_(grads, 2.0)
    assert_norm_close(total, ref.total_norm(before, 2.0), dtype)
    coef = ref.clip_coef(total, 2.0, total.dtype)
    for g, b in zip(grads, before):
        assert_bitwise_equal(g, ref.scaled(b, coef))


def test_large_strided_array_crosses_reduction_blocks():
    rng = np.random.default_rng(5)
    base = rng.standard_normal((1500, 1400)).astype(np.float32)
    g = base[::-1, 1::3]  # 700k elements over many blocks, reversed and strided
    before = g.copy()
    for p in [2.0, 1.0, INF, 0.0, 3.0]:
        assert_norm_close(gradclip.get_total_norm([g], p), ref.total_norm([before], p), np.float32)
    total = gradclip.clip_grad_norm_(g, 1.0)
    assert_bitwise_equal(g, ref.scaled(before, ref.clip_coef(total, 1.0, total.dtype)))


def test_result_is_independent_of_memory_layout_for_exact_sums():
    # Integer-valued float64 data sums exactly in any order, so every layout must agree exactly.
    rng = np.random.default_rng(0)
    a = rng.integers(-1000, 1000, size=(300, 200)).astype(np.float64)
    expected = ref.vector_norm(a, 1.0)
    for view in [a, np.asfortranarray(a), a.T, a[::-1], np.ascontiguousarray(a.T).T]:
        assert float(gradclip.get_total_norm(view, 1.0)) == expected


def test_mixed_dtypes_in_one_call():
    rng = np.random.default_rng(1)
    grads = [make_array(rng, "C", d, 10.0) for d in (np.float16, np.float32, np.float64)]
    before = [g.copy() for g in grads]
    total = gradclip.clip_grad_norm_(grads, 1.0)
    assert total.dtype == np.float64
    assert_norm_close(total, ref.total_norm(before, 2.0), np.float64)
    coef = ref.clip_coef(total, 1.0, np.dtype(np.float64))
    for g, b in zip(grads, before):
        assert_bitwise_equal(g, ref.scaled(b, coef))


def test_float16_input_returns_float32_and_survives_overflow():
    g = np.full(100, 10000.0, dtype=np.float16)  # norm 100000 > float16's max 65504
    total = gradclip.clip_grad_norm_([g], 5.0)
    assert total.dtype == np.float32
    np.testing.assert_allclose(float(total), 100000.0, rtol=1e-6)
    np.testing.assert_allclose(g.astype(np.float64), 0.5, rtol=1e-3)  # 10000 * 5/100000


def test_float32_accumulates_in_float64():
    g = np.full(2, 1e30, dtype=np.float32)  # x*x overflows float32
    assert np.isclose(float(gradclip.get_total_norm(g)), np.sqrt(2) * 1e30, rtol=1e-6)
    tiny = np.full(2, 1e-30, dtype=np.float32)  # x*x underflows float32
    assert np.isclose(float(gradclip.get_total_norm(tiny)), np.sqrt(2) * 1e-30, rtol=1e-6)


def test_every_float16_value_scaled_like_torch_rounds():
    # All 65536 bit patterns: float16 -> float32, times the coefficient, rounded back to nearest-even.
    g = np.arange(2**16, dtype=np.uint16).view(np.float16)
    for coef_total in [0.3, 7.0, 1234.5]:
        work = g.copy()
        gradclip.clip_grads_with_norm_([work], 1.0, np.float32(coef_total))
        coef = ref.clip_coef(np.float32(coef_total), 1.0, np.dtype(np.float32))
        assert_bitwise_equal(work, ref.scaled(g, coef))
    # With a coefficient of exactly 1, every non-NaN half survives the round trip bit for bit.
    work = g.copy()
    gradclip.clip_grads_with_norm_([work], 1.0, np.float32(0.5))
    assert_bitwise_equal(work, g)


FLOAT16_CLIP_VALUES = [0.0, 6e-8, 0.5, 1.00048828125, 65504.0, 1e5, np.inf]


@pytest.mark.parametrize("clip_value", FLOAT16_CLIP_VALUES)
@pytest.mark.parametrize("step", [1, 3, -1])
def test_every_float16_value_clamped_like_the_float_comparison(clip_value, step):
    # All 65536 bit patterns (both zeros, subnormals, infinities, every NaN), contiguous and
    # strided; the kernel compares integer keys, the reference compares float values.
    g = np.arange(2**16, dtype=np.uint16).view(np.float16)
    with np.errstate(over="ignore"):
        expected = ref.clamped(g[::step], clip_value)
    work = g.copy()
    gradclip.clip_grad_value_([work[::step]], clip_value)
    assert_bitwise_equal(work[::step], expected)
    if step != 1 and step != -1:  # the elements between the strided ones are untouched
        untouched = np.ones(g.size, bool)
        untouched[::step] = False
        assert_bitwise_equal(work[untouched], g[untouched])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_clip_grad_value_matches_reference(dtype, layout):
    rng = np.random.default_rng(2)
    g = make_array(rng, layout, dtype, 3.0)
    if g.size:
        g.reshape(-1)[0] = np.nan if g.flags.c_contiguous else g.flat[0]
    before = g.copy()
    gradclip.clip_grad_value_([g], 1.25)
    assert_bitwise_equal(g, ref.clamped(before, 1.25))


def test_clip_grad_value_keeps_nan_and_infinities_are_clamped():
    g = np.array([np.nan, np.inf, -np.inf, 0.5, -0.0], dtype=np.float32)
    gradclip.clip_grad_value_(g, 1.0)
    assert np.isnan(g[0]) and list(g[1:4]) == [1.0, -1.0, 0.5] and np.signbit(g[4])


def test_clip_grad_value_float16_bound_rounds_through_float32():
    # 1.00048828125 is halfway between two float16 values; torch rounds the bound double->float->half.
    g = np.array([2.0, -2.0], dtype=np.float16)
    gradclip.clip_grad_value_(g, 1.00048828125)
    assert_bitwise_equal(g, ref.clamped(np.array([2.0, -2.0], dtype=np.float16), 1.00048828125))


@pytest.mark.parametrize("p", NORMS_WITH_IDENTITY)
def test_empty_inputs(p):
    assert gradclip.get_total_norm([], p) == 0.0
    assert gradclip.get_total_norm([], p).dtype == np.float32
    assert gradclip.clip_grad_norm_([], 1.0, p) == 0.0
    assert gradclip.get_total_norm([np.zeros(0)], p) == 0.0


def test_none_grads_are_skipped():
    params = [gradclip.Parameter(np.zeros(3)), gradclip.Parameter(np.zeros(2))]
    params[1].grad = np.array([3.0, 4.0])
    assert float(gradclip.clip_grad_norm_(params, 1.0)) == 5.0
    assert params[0].grad is None
    assert float(gradclip.clip_grad_norm_([params[0]], 1.0)) == 0.0


@pytest.mark.parametrize("p", [INF, -INF, -1.0])
def test_empty_array_without_identity_raises_like_torch(p):
    g = np.ones(3)
    with pytest.raises(RuntimeError, match="cannot compute the .* norm on an empty tensor"):
        gradclip.clip_grad_norm_([g, np.zeros(0)], 1.0, p)
    np.testing.assert_array_equal(g, 1.0)


def test_accepts_every_torch_input_form():
    def fresh():
        return np.array([3.0, 4.0])

    expected = ref.scaled(fresh(), ref.clip_coef(5.0, 1.0, np.dtype(np.float64)))
    single = fresh()
    gradclip.clip_grad_norm_(single, 1.0)  # a lone array
    param = gradclip.Parameter(np.zeros(2))
    param.grad = fresh()
    gradclip.clip_grad_norm_(param, 1.0)  # a lone Parameter
    gen = [fresh()]
    gradclip.clip_grad_norm_((g for g in gen), 1.0)  # a generator
    tup = (fresh(),)
    gradclip.clip_grad_norm_(tup, 1.0)
    dct = {"w": fresh()}
    gradclip.clip_grad_norm_(dct.values(), 1.0)
    for result in [single, param.grad, gen[0], tup[0], dct["w"]]:
        assert_bitwise_equal(result, expected)


def test_torch_like_objects_with_grad_attribute():
    class Like:
        def __init__(self, grad):
            self.grad = grad

    items = [Like(np.array([6.0, 8.0])), Like(None)]
    assert float(gradclip.clip_grad_norm_(items, 5.0)) == 10.0
    np.testing.assert_allclose(items[0].grad, [3.0, 4.0], rtol=1e-6)


def test_empty_generator_warns_like_torch():
    with pytest.warns(UserWarning, match="`parameters` is an empty generator, no gradient clipping"):
        gradclip.clip_grad_norm_((p for p in []), 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gradclip.clip_grad_norm_([], 1.0)  # an empty list is not a generator: no warning


def test_same_array_twice_counts_and_scales_twice_like_torch():
    g = np.array([3.0, 4.0])
    total = gradclip.clip_grad_norm_([g, g], 1.0)
    assert float(total) == pytest.approx(np.sqrt(50.0), rel=1e-15)
    coef = ref.clip_coef(total, 1.0, np.dtype(np.float64))
    assert_bitwise_equal(g, ref.scaled(ref.scaled(np.array([3.0, 4.0]), coef), coef))


def test_error_if_nonfinite_raises_torch_message_before_modifying():
    a, b = np.array([1.0, 2.0]), np.array([np.inf, 1.0])
    with pytest.raises(RuntimeError) as info:
        gradclip.clip_grad_norm_([a, b], 1.0, error_if_nonfinite=True)
    assert str(info.value) == (
        "The total norm of order 2.0 for gradients from `parameters` is non-finite, so it cannot be "
        "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
        "`error_if_nonfinite=False`"
    )
    np.testing.assert_array_equal(a, [1.0, 2.0])
    np.testing.assert_array_equal(b, [np.inf, 1.0])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_propagates_when_allowed(bad):
    a, b = np.array([1.0, 2.0]), np.array([bad, 1.0])
    total = gradclip.clip_grad_norm_([a, b], 1.0)
    if bad == np.inf:
        assert total == np.inf
        np.testing.assert_array_equal(a, [0.0, 0.0])  # coefficient 1/(inf) * 1 = 0, as in torch
        assert np.isnan(b[0]) and b[1] == 0.0
    else:
        assert np.isnan(total) and np.isnan(a).all() and np.isnan(b).all()


def test_norm_type_strings_and_numpy_scalars():
    g = np.array([3.0, -4.0])
    assert float(gradclip.get_total_norm(g, "inf")) == 4.0
    assert float(gradclip.get_total_norm(g, "-inf")) == 3.0
    assert float(gradclip.get_total_norm(g, np.float32(1))) == 7.0
    assert float(gradclip.get_total_norm(g, np.int64(2))) == 5.0
    assert float(gradclip.get_total_norm(g, 1)) == 7.0


def test_norm_of_norms_not_norm_of_concatenation():
    # p = 0 counts arrays with a non-zero element, not elements.
    grads = [np.array([1.0, 2.0, 3.0]), np.zeros(4), np.array([0.0, 5.0])]
    assert float(gradclip.get_total_norm(grads, 0)) == 2.0
    # -inf: a single zero anywhere gives 0.
    assert float(gradclip.get_total_norm([np.array([1.0, 0.0]), np.array([2.0])], -INF)) == 0.0


def test_clip_grads_with_norm_precision_follows_total():
    g64 = np.array([1.0, 1.0])
    cases = [(np.float32(3.3), np.float32), (3.3, np.float64), (np.float64(3.3), np.float64),
             (np.float16(3.3), np.float32), (np.array(3.3, np.float32), np.float32), (np.array(3.3), np.float64),
             (np.array([3.3], np.float16), np.float32), (3, np.float64), (np.int32(3), np.float64)]
    for total, dtype in cases:
        g = g64.copy()
        gradclip.clip_grads_with_norm_([g], 1.0, total)
        coef = ref.clip_coef(total, 1.0, np.dtype(dtype))
        assert g[0] == np.float64(coef)


def test_parameters_to_vector_and_back():
    # torch's test: a Conv2d(3, 10, 5) and a Linear(10, 20) hold 980 parameters.
    shapes = [(10, 3, 5, 5), (10,), (20, 10), (20,)]
    params = [gradclip.Parameter(np.zeros(s, dtype=np.float32)) for s in shapes]
    assert gradclip.parameters_to_vector(params).shape == (980,)
    vec = np.arange(980.0, dtype=np.float32)
    gradclip.vector_to_parameters(vec, params)
    np.testing.assert_array_equal(params[0].data[0, 0, 0], vec[:5])
    np.testing.assert_array_equal(gradclip.parameters_to_vector(params), vec)
    with pytest.raises(ValueError, match="980 elements but the parameters have 981"):
        gradclip.vector_to_parameters(vec, params + [gradclip.Parameter(np.zeros(1))])
    np.testing.assert_array_equal(gradclip.parameters_to_vector(params), vec)  # unchanged on error
    with pytest.raises(TypeError, match="expected numpy.ndarray"):
        gradclip.vector_to_parameters(list(vec), params)


def test_nn_utils_mirrors_the_top_level_names():
    import gradclip.nn.utils as torch_utils

    for name in gradclip._clip.__all__:
        assert getattr(torch_utils, name) is getattr(gradclip, name)


@pytest.mark.parametrize("dtype, bits", [(np.float32, np.uint32), (np.float64, np.uint64)])
@pytest.mark.parametrize("step", [1, 3])
def test_clip_grad_value_keeps_every_nan_bit_pattern(dtype, bits, step):
    """Quiet, signalling and negative NaNs with payloads pass through the vector loops with
    their bits (the clamp is one max and one min; a NaN element fails both comparisons)."""
    info = np.finfo(dtype)
    mant = info.nmant
    exp_all = (bits(1) << bits(info.bits - 1)) - (bits(1) << bits(mant))  # all exponent bits set
    quiet = bits(1) << bits(mant - 1)
    patterns = [exp_all | quiet, exp_all | bits(1), exp_all | bits(0b1011), exp_all | quiet | bits(5)]
    sign = bits(1) << bits(info.bits - 1)
    patterns += [p | sign for p in patterns]
    rng = np.random.default_rng(3)
    values = (rng.standard_normal(1021) * 3).astype(dtype)
    where = rng.choice(values.size, 200, replace=False)
    raw = values.view(bits)
    raw[where] = np.array(patterns, dtype=bits)[np.arange(where.size) % len(patterns)]
    buf = np.zeros(values.size * step, dtype)
    g = buf[::step]
    g[...] = values
    expected = np.where(np.isnan(values), values, np.clip(values, -1.5, 1.5))
    gradclip.clip_grad_value_(g, 1.5)
    got = np.ascontiguousarray(g).view(bits)
    assert (got == expected.view(bits)).all()
    assert (got[where] == raw[where]).all()
