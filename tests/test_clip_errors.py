"""Bad input to the clipping functions: the right exception, a message naming the culprit,
and no array modified (a valid gradient always comes first, so a half-done call would show)."""

import re

import numpy as np
import pytest

import gradclip

CLIPPERS = {
    "clip_grad_norm_": lambda ps: gradclip.clip_grad_norm_(ps, 1.0),
    "clip_grads_with_norm_": lambda ps: gradclip.clip_grads_with_norm_(ps, 1.0, 100.0),
    "clip_grad_value_": lambda ps: gradclip.clip_grad_value_(ps, 0.1),
}


def good():
    return np.full(4, 10.0)


class WithGrad:
    def __init__(self, grad):
        self.grad = grad


BAD_DTYPES = {
    "int": np.arange(3),
    "bool": np.ones(3, bool),
    "object": np.array([1.0, None], dtype=object),
    "str": np.array(["a", "b"]),
    "datetime": np.array(["2020-01-01"], dtype="datetime64[D]"),
    "structured": np.zeros(2, dtype=[("a", "f4"), ("b", "f8")]),
    "byteswapped": np.ones(3, dtype=">f8" if np.little_endian else "<f8"),
}


@pytest.mark.parametrize("fn", list(CLIPPERS))
@pytest.mark.parametrize("kind", list(BAD_DTYPES))
@pytest.mark.parametrize("via_grad", [False, True])
def test_unsupported_dtype_is_type_error(fn, kind, via_grad):
    first = good()
    bad = BAD_DTYPES[kind].copy()
    item = WithGrad(bad) if via_grad else bad
    with pytest.raises(TypeError, match=r"parameters\[1\]" + (r"\.grad" if via_grad else "")):
        CLIPPERS[fn]([first, item])
    np.testing.assert_array_equal(first, good())


@pytest.mark.parametrize("fn", list(CLIPPERS))
def test_read_only_gradient_is_value_error(fn):
    first, ro = good(), good()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"parameters\[1\] is read-only"):
        CLIPPERS[fn]([first, ro])
    np.testing.assert_array_equal(first, good())


@pytest.mark.parametrize("fn", list(CLIPPERS))
def test_broadcast_view_cannot_be_written(fn):
    first = good()
    shared = np.lib.stride_tricks.as_strided(np.ones(1), shape=(4,), strides=(0,), writeable=True)
    with pytest.raises(ValueError, match="share memory"):
        CLIPPERS[fn]([first, shared])
    np.testing.assert_array_equal(first, good())


@pytest.mark.parametrize("fn", list(CLIPPERS))
@pytest.mark.parametrize("grad", [[1.0, 2.0], 3.0, "x"], ids=["list", "float", "str"])
def test_grad_that_is_not_an_array(fn, grad):
    first = good()
    with pytest.raises(TypeError, match=r"parameters\[1\]\.grad must be a NumPy ndarray or None"):
        CLIPPERS[fn]([first, WithGrad(grad)])
    np.testing.assert_array_equal(first, good())


@pytest.mark.parametrize("fn", list(CLIPPERS))
@pytest.mark.parametrize("item", [None, 1.5, "abc", [np.ones(2)]], ids=["None", "float", "str", "nested"])
def test_item_that_is_neither_array_nor_parameter(fn, item):
    first = good()
    with pytest.raises(TypeError, match=r"parameters\[1\] must be a NumPy ndarray or have a \.grad"):
        CLIPPERS[fn]([first, item])
    np.testing.assert_array_equal(first, good())


@pytest.mark.parametrize("fn", list(CLIPPERS))
@pytest.mark.parametrize("parameters", [5, 2.0, None, "grads"])
def test_parameters_not_iterable(fn, parameters):
    with pytest.raises(TypeError, match="parameters must be"):
        CLIPPERS[fn](parameters)


@pytest.mark.parametrize("value", ["1.0", None, 1j, [1.0], np.ones(2), True, np.complex64(1)])
def test_non_real_max_norm_is_type_error(value):
    g = good()
    with pytest.raises(TypeError, match="max_norm must be a real number"):
        gradclip.clip_grad_norm_([g], value)
    with pytest.raises(TypeError, match="max_norm must be a real number"):
        gradclip.clip_grads_with_norm_([g], value, 3.0)
    np.testing.assert_array_equal(g, good())


@pytest.mark.parametrize("value", [-1.0, np.nan, -np.inf])
def test_negative_or_nan_max_norm_is_value_error(value):
    g = good()
    with pytest.raises(ValueError, match="max_norm must be a non-negative number"):
        gradclip.clip_grad_norm_([g], value)
    np.testing.assert_array_equal(g, good())


@pytest.mark.parametrize("value", [-0.5, np.nan])
def test_negative_or_nan_clip_value_is_value_error(value):
    g = good()
    with pytest.raises(ValueError, match="clip_value must be a non-negative number"):
        gradclip.clip_grad_value_([g], value)
    np.testing.assert_array_equal(g, good())


@pytest.mark.parametrize("value", ["1.0", None, "2", 1j, True, [2.0]])
def test_non_real_clip_value_and_norm_type(value):
    g = good()
    if not isinstance(value, str):
        with pytest.raises(TypeError, match="clip_value must be a real number"):
            gradclip.clip_grad_value_([g], value)
    with pytest.raises(TypeError, match="norm_type must be a real number"):
        gradclip.clip_grad_norm_([g], 1.0, value)
    np.testing.assert_array_equal(g, good())


def test_nan_norm_type_is_value_error():
    with pytest.raises(ValueError, match="norm_type must not be NaN"):
        gradclip.get_total_norm([good()], float("nan"))


def test_grad_property_that_raises_propagates_and_modifies_nothing():
    class Exploding:
        @property
        def grad(self):
            raise KeyError("boom")

    first = good()
    with pytest.raises(KeyError, match="boom"):
        gradclip.clip_grad_norm_([first, Exploding()], 1.0)
    np.testing.assert_array_equal(first, good())


def test_generator_that_raises_midway():
    first = good()

    def gen():
        yield first
        raise OSError("disk")

    with pytest.raises(OSError, match="disk"):
        gradclip.clip_grad_norm_(gen(), 1.0)
    np.testing.assert_array_equal(first, good())


def test_complex_rejected_by_clip_grad_value():
    with pytest.raises(TypeError, match="complex"):
        gradclip.clip_grad_value_([np.ones(2, np.complex64)], 1.0)


def test_get_total_norm_takes_arrays_not_parameters():
    with pytest.raises(TypeError, match=r"tensors\[0\] must be a NumPy ndarray"):
        gradclip.get_total_norm([gradclip.Parameter(np.ones(2))])


def test_foreach_must_be_bool_or_none():
    for fn in (lambda: gradclip.clip_grad_norm_([good()], 1.0, foreach="yes"),
               lambda: gradclip.clip_grad_value_([good()], 1.0, foreach=1)):
        with pytest.raises(TypeError, match="foreach"):
            fn()
    gradclip.clip_grad_norm_([good()], 1.0, foreach=True)
    gradclip.clip_grad_norm_([good()], 1.0, foreach=False)


def test_total_norm_must_be_a_real_scalar():
    with pytest.raises(TypeError, match="total_norm must be a real scalar"):
        gradclip.clip_grads_with_norm_([good()], 1.0, np.ones(3))
    with pytest.raises(TypeError, match="total_norm must be a real scalar"):
        gradclip.clip_grads_with_norm_([good()], 1.0, "3")


def test_unaligned_array_is_value_error():
    buf = np.zeros(8 * 5 + 1, np.uint8)
    unaligned = buf[1:].view(np.float64)
    assert not unaligned.flags.aligned
    first = good()
    with pytest.raises(ValueError, match="not aligned"):
        gradclip.clip_grad_norm_([first, unaligned], 1.0)
    np.testing.assert_array_equal(first, good())


@pytest.mark.parametrize("fn", list(CLIPPERS))
def test_a_torch_grad_says_how_to_pass_it(fn):
    """A torch Parameter is a parameter (its .grad is used, as in torch); while torch tensors
    are not arrays to gradclip, the error says to pass .numpy(), which then works in place."""
    import torch  # a test requirement: never skipped
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    p.grad = torch.tensor([30.0, 40.0], dtype=torch.float64)
    first = good()
    try:
        CLIPPERS[fn]([first, p])
    except TypeError as exc:
        assert re.search(r"parameters\[1\]\.grad must be a NumPy ndarray or None, not Tensor; pass its \.numpy\(\)", str(exc))
        np.testing.assert_array_equal(first, good())
        CLIPPERS[fn]([first, p.grad.numpy()])  # the view writes through to p.grad
    assert not np.array_equal(p.grad.numpy(), [30.0, 40.0])
