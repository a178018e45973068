"""The self-overlap check for gradients written in place (issue 10, item 8).

A writable view is refused only when two of its elements really share memory. The oracle
enumerates every element's byte offset in Python, independently of the C check.
"""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.lib.stride_tricks import as_strided

import gradclip


def overlaps(view: np.ndarray) -> bool:
    if view.size == 0:
        return False
    offsets = set()
    for index in itertools.product(*(range(n) for n in view.shape)):
        offsets.add(sum(i * s for i, s in zip(index, view.strides)))
    return len(offsets) < view.size


def strided_view(buffer: np.ndarray, shape, strides_in_items):
    strides = tuple(s * buffer.itemsize for s in strides_in_items)
    return as_strided(buffer, shape=shape, strides=strides, writeable=True)


def test_issue_example_is_accepted():
    base = np.arange(8.0)
    view = as_strided(base, shape=(3, 2), strides=(16, 24), writeable=True)
    assert not overlaps(view)
    gradclip.clip_grad_value_([view], 1.5)
    # The view covers items 0, 2, 3, 4, 5, 7 of the base; 1 and 6 are not its elements.
    np.testing.assert_array_equal(base, [0.0, 1.0, 1.5, 1.5, 1.5, 1.5, 6.0, 1.5])


def test_broadcast_view_is_refused():
    view = as_strided(np.zeros(3), shape=(4, 3), strides=(0, 8), writeable=True)
    with pytest.raises(ValueError, match="share memory"):
        gradclip.clip_grad_norm_([view], 1.0)


@settings(max_examples=300, deadline=None)
@given(
    shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    strides=st.lists(st.integers(0, 6), min_size=3, max_size=3),
)
def test_refused_exactly_when_elements_overlap(shape, strides):
    strides = strides[: len(shape)]
    extent = 1 + sum((n - 1) * s for n, s in zip(shape, strides))
    buffer = np.arange(float(extent))
    view = strided_view(buffer, tuple(shape), strides)
    before = buffer.copy()
    if overlaps(view):
        with pytest.raises(ValueError, match="share memory"):
            gradclip.clip_grad_value_([view], 0.5)
        np.testing.assert_array_equal(buffer, before)
    else:
        gradclip.clip_grad_value_([view], 0.5)
        expected = before.copy()
        touched = np.zeros(extent, bool)
        for index in itertools.product(*(range(n) for n in shape)):
            touched[sum(i * s for i, s in zip(index, strides))] = True
        expected[touched] = np.clip(expected[touched], -0.5, 0.5)
        np.testing.assert_array_equal(buffer, expected)


def test_large_ambiguous_view_is_refused_with_a_clear_message():
    # 2^21 elements that the stride test cannot clear (the inner extent exceeds the outer
    # stride): too many to enumerate, so refused with advice rather than guessed.
    buffer = np.zeros(4 * 2**20 + 2**21 + 8, dtype=np.float16)
    view = strided_view(buffer, (2**20, 2, 1), (4, 2**21, 1))
    with pytest.raises(ValueError, match="too large to check exactly"):
        gradclip.clip_grad_value_([view], 1.0)


def test_byte_order_message_is_pasteable():
    a = np.zeros(3, dtype=">f8")
    with pytest.raises(TypeError) as info:
        gradclip.clip_grad_norm_([a], 1.0)
    code = str(info.value).split("convert it with ")[1]
    converted = eval(code, {"a": a})  # the suggestion runs as written
    assert converted.dtype.isnative and converted.dtype == np.float64
