"""Per-example clipping (DP-SGD) against a loop of clip_grad_norm_ and Opacus' formula in torch."""

import numpy as np
import pytest
import torch

import gradclip

B = 7


def per_example(rng, layout, dtype, shape):
    """(B, *shape) per-example gradients in the given memory layout, with varied norms."""
    full = (B,) + shape
    scales = np.array([0.01, 1.0, 30.0, 0.5, 100.0, 0.0, 2.0])
    base = rng.standard_normal(full) * scales.reshape((B,) + (1,) * len(shape))
    if layout == "C":
        return base.astype(dtype)
    if layout == "F":
        return np.asfortranarray(base.astype(dtype))
    if layout == "strided":
        big = np.zeros((B, *(2 * s for s in shape)), dtype)
        view = big[(slice(None),) + tuple(slice(None, None, 2) for _ in shape)]
        view[...] = base
        return view
    if layout == "reversed":
        return base[::-1].astype(dtype)[::-1]
    if layout == "transposed":
        return np.ascontiguousarray(base.T.astype(dtype)).T
    raise ValueError(layout)


SHAPES = [(4, 3), (5,), (2, 3, 2)]


def make_case(seed, layout, dtype):
    rng = np.random.default_rng(seed)
    return [per_example(rng, layout, dtype, s) for s in SHAPES]


def loop_reference(grads, max_norm):
    """clip_grad_norm_ on each example alone, clipped examples summed in float64."""
    norms, sums = [], [np.zeros(g.shape[1:]) for g in grads]
    for b in range(grads[0].shape[0]):
        example = [g[b] for g in grads]  # views: the same layout, the same reduction order
        norms.append(gradclip.clip_grad_norm_(example, max_norm))
        for s, e in zip(sums, example):
            s += e
    return sums, norms


def opacus_reference(grads, max_norm):
    """opacus/optimizers/optimizer.py, DPOptimizer.clip_and_accumulate, in torch."""
    grad_samples = [torch.from_numpy(np.ascontiguousarray(g)) for g in grads]
    per_param_norms = [g.reshape(len(g), -1).norm(2, dim=-1) for g in grad_samples]
    per_sample_norms = torch.stack(per_param_norms, dim=1).norm(2, dim=1)
    per_sample_clip_factor = (max_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
    return [torch.einsum("i,i...", per_sample_clip_factor, g).numpy() for g in grad_samples], per_sample_norms.numpy()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed", "transposed"])
@pytest.mark.parametrize("max_norm", [0.0, 1.0, 50.0])
def test_matches_loop_of_clip_grad_norm(dtype, layout, max_norm):
    grads = make_case(1, layout, dtype)
    sums, norms = gradclip.clip_per_example_and_sum(grads, max_norm)
    ref_sums, ref_norms = loop_reference(make_case(1, layout, dtype), max_norm)
    assert norms.dtype == np.dtype(np.float64 if dtype == np.float64 else np.float32)
    np.testing.assert_array_equal(norms, ref_norms)  # the same norms, bit for bit
    tol = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-14}[dtype]
    for s, r, g in zip(sums, ref_sums, grads):
        assert s.dtype == dtype and s.shape == g.shape[1:] and s.flags.c_contiguous
        np.testing.assert_allclose(s.astype(np.float64), r, rtol=tol, atol=tol * max(max_norm, 1e-30))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_opacus_formula_in_torch(dtype):
    grads = make_case(2, "C", dtype)
    sums, norms = gradclip.clip_per_example_and_sum(grads, 1.0)
    ref_sums, ref_norms = opacus_reference(grads, 1.0)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(norms, ref_norms, rtol=tol)
    for s, r in zip(sums, ref_sums):
        np.testing.assert_allclose(s, r, rtol=5 * tol, atol=5 * tol)


def test_noise_mean_and_empty_batch():
    grads = make_case(3, "C", np.float64)
    plain, _ = gradclip.clip_per_example_and_sum(grads, 1.0)
    noised, _ = gradclip.clip_per_example_and_sum(
        grads, 1.0, noise_multiplier=0.5, rng=np.random.default_rng(11), reduction="mean", expected_batch_size=10
    )
    rng = np.random.default_rng(11)
    for p, n in zip(plain, noised):
        expected = (p + rng.normal(0.0, 0.5, size=p.shape)) / 10
        np.testing.assert_array_equal(n, expected)
    mean, _ = gradclip.clip_per_example_and_sum(grads, 1.0, reduction="mean")
    for p, m in zip(plain, mean):
        np.testing.assert_array_equal(m, p / B)
    empty = [np.zeros((0, 3, 2), np.float32), np.zeros((0,), np.float32)]
    sums, norms = gradclip.clip_per_example_and_sum(empty, 1.0)
    assert norms.shape == (0,) and sums[0].shape == (3, 2) and sums[1].shape == ()
    assert not sums[0].any() and sums[1] == 0
    with pytest.raises(ValueError, match="expected_batch_size"):
        gradclip.clip_per_example_and_sum(empty, 1.0, reduction="mean")
    one, n1 = gradclip.clip_per_example_and_sum(np.array([[3.0, 4.0]]), 1.0)
    assert isinstance(one, np.ndarray) and n1.tolist() == [5.0]


def test_errors_and_inputs_untouched():
    grads = make_case(4, "F", np.float32)
    before = [g.tobytes() for g in grads]
    gradclip.clip_per_example_and_sum(grads, 1.0)
    assert [g.tobytes() for g in grads] == before
    with pytest.raises(ValueError, match="examples"):
        gradclip.clip_per_example_and_sum([np.ones((3, 2)), np.ones((4, 2))], 1.0)
    with pytest.raises(ValueError, match="batch axis"):
        gradclip.clip_per_example_and_sum([np.ones(()), np.ones(3)], 1.0)
    with pytest.raises(TypeError, match="complex"):
        gradclip.clip_per_example_and_sum([np.ones((3, 2), np.complex64)], 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        gradclip.clip_per_example_and_sum(grads, -1.0)
    with pytest.raises(ValueError, match="reduction"):
        gradclip.clip_per_example_and_sum(grads, 1.0, reduction="none")
    with pytest.raises(TypeError, match="Generator"):
        gradclip.clip_per_example_and_sum(grads, 1.0, noise_multiplier=1.0, rng=np.random.RandomState(0))


def test_large_batch_threads_agree():
    rng = np.random.default_rng(5)
    grads = [rng.standard_normal((64, 128, 130)).astype(np.float32), rng.standard_normal((64, 9)).astype(np.float32)]
    threads = gradclip.get_num_threads()
    try:
        gradclip.set_num_threads(1)
        one = gradclip.clip_per_example_and_sum(grads, 1.0)
        gradclip.set_num_threads(4)
        many = gradclip.clip_per_example_and_sum(grads, 1.0)
    finally:
        gradclip.set_num_threads(threads)
    for a, b in zip(one[0] + [one[1]], many[0] + [many[1]]):
        np.testing.assert_array_equal(a, b)
    ref_sums, _ = opacus_reference(grads, 1.0)
    for s, r in zip(one[0], ref_sums):
        np.testing.assert_allclose(s, r, rtol=1e-4, atol=1e-5)


def test_arrays_changed_by_conversion_code_are_refused():
    """The unit-wise entry points read arrays' real dims after other code may have run: an
    array re-viewed in place meanwhile (here by a converter of a later item) is refused."""
    v = np.ones((4, 6))

    class Sneaky:
        def __array__(self, dtype=None, copy=None):
            v.dtype = np.float32  # same buffer, twice the elements
            return np.ones((4, 6))

    gradclip._C._set_converter(lambda obj, writable: np.asarray(obj))
    try:
        with pytest.raises(RuntimeError, match="changed while they were being read"):
            gradclip.adaptive_clip_grad_([v, np.ones(3)], grads=[np.ones((4, 6)), Sneaky()])
    finally:  # back to the package's own converter (gradclip._interop's, where it exists)
        interop = getattr(gradclip, "_interop", None)
        if interop is not None and hasattr(interop, "register"):
            interop.register(gradclip._C)
        else:
            gradclip._C._set_converter(None)
    assert v.view(np.float64).tolist() == np.ones((4, 6)).tolist()  # nothing written


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 10.0])
def test_every_clipped_example_within_max_norm(max_norm):
    """The DP-SGD property: each example contributes at most max_norm (up to rounding), so
    the sum's norm is at most B * max_norm; examples whose factor is 1 are summed unchanged."""
    grads = make_case(7, "transposed", np.float64)
    sums, norms = gradclip.clip_per_example_and_sum(grads, max_norm)
    total = np.sqrt(sum(np.sum(s**2) for s in sums))
    assert total <= B * max_norm * (1 + 1e-12)
    factor = np.minimum(max_norm * (1.0 / (norms + 1e-6)), 1.0)
    assert (factor == 1.0).any() and (factor < 1.0).any()
    for s, g in zip(sums, grads):
        np.testing.assert_allclose(s, np.einsum("i,i...", factor, g), rtol=1e-12, atol=1e-15)
    keep = factor == 1.0
    got, _ = gradclip.clip_per_example_and_sum([g[keep] for g in grads], max_norm)
    for s, g in zip(got, grads):
        np.testing.assert_allclose(s, g[keep].sum(axis=0), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_layouts_give_the_same_bits(dtype):
    """The contiguous loops and the strided ones add the same terms in the same order."""
    results = {}
    for layout in ["C", "strided", "reversed"]:
        sums, norms = gradclip.clip_per_example_and_sum(make_case(4, layout, dtype), 1.0)
        results[layout] = [norms] + sums
    for layout in ["strided", "reversed"]:
        for a, b in zip(results[layout], results["C"]):
            np.testing.assert_array_equal(a, b, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_long_rows_and_batches_not_a_multiple_of_four_same_bits(dtype, threads):
    """Rows longer than one summing run (16,384 elements) and 67 examples (passes of four and
    three left over; 1.1 million elements, enough to run on threads): the contiguous path gives
    the strided path's bits on any thread count."""
    rng = np.random.default_rng(11)
    base = [rng.standard_normal((67, 16_500 + 3)) * rng.uniform(0.1, 10, (67, 1)), rng.standard_normal((67, 2, 3))]
    contiguous = [b.astype(dtype) for b in base]
    strided = []
    for b in base:
        big = np.zeros((67, *(2 * s for s in b.shape[1:])), dtype)
        view = big[(slice(None),) + tuple(slice(None, None, 2) for _ in b.shape[1:])]
        view[...] = b
        strided.append(view)
    saved = gradclip.get_num_threads()
    try:
        gradclip.set_num_threads(threads)
        fast = gradclip.clip_per_example_and_sum(contiguous, 5.0)
        slow = gradclip.clip_per_example_and_sum(strided, 5.0)
    finally:
        gradclip.set_num_threads(saved)
    for a, b in zip([fast[1]] + fast[0], [slow[1]] + slow[0]):
        np.testing.assert_array_equal(a, b, strict=True)
    factor = np.minimum(5.0 * (1.0 / (fast[1].astype(np.float64) + 1e-6)), 1.0)
    for s, g in zip(fast[0], contiguous):
        # float32: each sum is the float64 sum rounded once, so within half an ulp of its value
        tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s, np.einsum("i,i...", factor, g.astype(np.float64)), **tol)
