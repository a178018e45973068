"""The private halves of the total norm: per-array norms and the total formed from them.

They let a total over several processes be formed from each process's norms alone, so they
must reproduce gradclip.get_total_norm bit for bit.
"""

import numpy as np
import pytest

import gradclip
from gradclip import _C

NORMS = [2.0, 1.0, 3.5, 0.5, 0.0, float("inf"), float("-inf"), -1.0]
DTYPES = [np.float16, np.float32, np.float64, np.complex64]


def arrays(seed, dtype, count=7):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        shape = tuple(rng.integers(1, 40, size=rng.integers(0, 3)))
        x = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        out.append(np.asarray(x, dtype=dtype))
    return out


@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_split_lists_give_the_single_process_total(p, dtype, seed):
    tensors = arrays(seed, dtype) + [np.ones(3)]  # one float64 array: a float64 total
    expected = gradclip.get_total_norm(tensors, p)
    rng = np.random.default_rng(seed)
    cut = sorted(rng.integers(0, len(tensors) + 1, size=2))
    pieces = [tensors[: cut[0]], tensors[cut[0] : cut[1]], tensors[cut[1] :]]
    norms, singles = zip(*(_C.array_norms(piece, p, False) for piece in pieces))
    total = _C.combine_norms(np.concatenate(norms), p, False, all(singles))
    assert total.dtype == expected.dtype
    assert total == expected or (np.isnan(total) and np.isnan(expected))


@pytest.mark.parametrize("p", [2.0, 1.0, 3.5, 0.0, float("inf")])
@pytest.mark.parametrize("dtype", DTYPES)
def test_raw_accumulations_combine_to_the_norm_of_everything(p, dtype):
    tensors = arrays(7, dtype)
    raw, single = _C.array_norms(tensors, p, True)
    assert single == (np.dtype(dtype) != np.float64)
    flat = np.concatenate([np.abs(t.astype(np.complex128)).ravel() for t in tensors])
    if p == 0.0:
        expected = np.count_nonzero(flat)
    elif p == float("inf"):
        expected = flat.max()
    else:
        expected = (flat.astype(np.float64) ** p).sum() ** (1 / p)
    total = _C.combine_norms(raw, p, True, False)
    np.testing.assert_allclose(total, expected, rtol=1e-12)


def test_empty_and_bad_values():
    assert _C.combine_norms(np.zeros(0), 2.0, False, True) == np.float32(0)
    norms, single = _C.array_norms([], 2.0, False)
    assert norms.shape == (0,) and single
    for bad in (np.zeros(3, np.float32), np.zeros((2, 2)), [1.0, 2.0], np.zeros(6)[::2]):
        with pytest.raises(TypeError, match="float64"):
            _C.combine_norms(bad, 2.0, False, False)
    with pytest.raises(RuntimeError, match="identity"):
        _C.array_norms([np.zeros(0)], float("inf"), False)
