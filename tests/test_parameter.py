"""gradclip.Parameter: an array with a gradient slot that behaves like its data."""

import copy
import pickle

import numpy as np
import pytest

from gradclip import Parameter


def test_wraps_without_copy_and_updates_are_visible():
    W = np.zeros((2, 3), np.float32)
    p = Parameter(W)
    assert p.data is W
    p -= 1.0  # in place, through __array_ufunc__
    assert isinstance(p, Parameter) and p.data is W
    np.testing.assert_array_equal(W, -1.0)
    p[0, 1] = 5.0
    assert W[0, 1] == 5.0


def test_numpy_expressions():
    p = Parameter(np.arange(6.0).reshape(2, 3))
    x = np.ones(3)
    np.testing.assert_array_equal(p @ x, p.data @ x)
    np.testing.assert_array_equal(np.tanh(p), np.tanh(p.data))
    np.testing.assert_array_equal(2 * p + 1, 2 * p.data + 1)
    assert np.asarray(p) is p.data
    assert np.asarray(p, dtype=np.float32).dtype == np.float32
    assert p.shape == (2, 3) and p.ndim == 2 and p.size == 6 and len(p) == 2
    assert p.dtype == np.float64 and p.T.shape == (3, 2)
    np.testing.assert_array_equal(p[1], [3.0, 4.0, 5.0])
    assert float(np.sum(p)) == 15.0


def test_python_numbers_become_float64_and_ints_are_refused():
    assert Parameter([1, 2]).dtype == np.float64
    with pytest.raises(TypeError, match="float16, float32, float64, complex64 or complex128"):
        Parameter(np.arange(3))
    assert Parameter(np.ones(2, np.complex64)).dtype == np.complex64  # as torch.nn.Parameter
    with pytest.raises(TypeError, match="complex128"):
        Parameter(np.ones(2, np.clongdouble))


def test_grad_must_match_shape_and_dtype():
    p = Parameter(np.zeros(3, np.float32))
    assert p.grad is None
    p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        p.grad = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="dtype"):
        p.grad = np.ones(3, np.float64)
    with pytest.raises(TypeError, match="ndarray"):
        p.grad = [1.0, 2.0, 3.0]
    np.testing.assert_array_equal(p.grad, 1.0)  # unchanged by the failed assignments
    p.grad = None
    assert p.grad is None


def test_hashable_by_identity_with_elementwise_equality():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    assert len({a, b}) == 2
    np.testing.assert_array_equal(a == b, [True, True])


def test_copy_pickle_repr():
    p = Parameter(np.arange(3.0))
    p.grad = np.ones(3)
    for clone in (copy.deepcopy(p), pickle.loads(pickle.dumps(p))):
        np.testing.assert_array_equal(clone.data, p.data)
        np.testing.assert_array_equal(clone.grad, p.grad)
        assert clone.data is not p.data
    assert repr(p).startswith("Parameter(") and "grad=array" in repr(p)


def test_data_and_grad_are_checked_slots():
    p = Parameter(np.zeros(3))
    with pytest.raises(TypeError, match="float16, float32, float64, complex64 or complex128"):
        p.data = np.arange(3)
    assert p.data.dtype == np.float64  # unchanged
    p.data = np.ones(3)  # a float array is accepted as the new value
    np.testing.assert_array_equal(p.data, 1.0)
    for name in ("data", "grad"):
        with pytest.raises(AttributeError, match=f"cannot delete Parameter.{name}"):
            delattr(p, name)
    with pytest.raises(AttributeError):
        p.velocity = np.zeros(3)  # no per-instance __dict__: a typo cannot add an attribute
    assert not hasattr(p, "__dict__")
