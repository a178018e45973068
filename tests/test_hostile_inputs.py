"""Whatever a notebook user passes, no crash and no half-modified list (issue 6).

Every public function (and the optimizers' ``step``) gets a matrix of hostile inputs. Each
case either works with the documented semantics (checked against a float64 NumPy
computation) or raises a Python exception whose message names the argument. In both cases
every array involved is snapshotted before the call and compared byte for byte afterwards;
a valid, clippable array always comes *before* the bad item, so a call that wrote the first
array and then failed on the second would show.
"""

from __future__ import annotations

import decimal
import fractions
import re
import warnings

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import gradclip
from gradclip import Parameter
from gradclip.optim import SGD, Adam, AdamW
from arrays import MAX_DIMS

import reference

INF = float("inf")
NAN = float("nan")


# ----------------------------------------------------------------------------------------
# Snapshots


_VIEWS = {}  # id(tensor) -> (tensor, its NumPy view): one view object per tensor


def _numpy_view(x):
    """A DLPack array (a torch tensor gradient) as the one ndarray sharing its memory."""
    if x is None or isinstance(x, np.ndarray) or not hasattr(x, "__dlpack__"):
        return x
    return _VIEWS.setdefault(id(x), (x, np.from_dlpack(x)))[1]


class Watch:
    """Byte-exact snapshots of arrays (and of arrays reachable as .grad / .data)."""

    def __init__(self, *objects):
        self.items = []
        for obj in objects:
            self.add(obj)

    def add(self, obj):
        if isinstance(obj, np.ndarray):
            self.items.append((obj, obj.copy()))
        elif isinstance(obj, Parameter):
            self.add(obj.data)
            if obj.grad is not None:
                self.add(obj.grad)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                self.add(item)
        else:
            grad = _numpy_view(obj.__dict__.get("grad")) if hasattr(obj, "__dict__") else None
            if isinstance(grad, np.ndarray):
                self.add(grad)

    def assert_unchanged(self):
        for now, before in self.items:
            assert now.dtype == before.dtype and now.shape == before.shape
            assert now.tobytes() == before.tobytes(), f"array modified: {before!r} -> {now!r}"


# ----------------------------------------------------------------------------------------
# A float64 NumPy reference (independent of gradclip)


def total_norm(arrays, p):
    # gradclip's documented semantics (one-element rule, underflow rescued, torch's overflow).
    return reference.total_norm(arrays, p)


def is_single(arrays):
    return not any(a.dtype in (np.float64, np.complex128) for a in arrays)


def clip_coef(total, max_norm, single):
    """torch's min(max_norm * (1 / (total + 1e-6)), 1), step by step in float32 or float64."""
    t = np.float32 if single else np.float64
    with np.errstate(all="ignore"):
        coef = (t(1) / (t(total) + t(1e-6))) * t(max_norm)
    return coef if np.isnan(coef) else min(coef, t(1))


def scaled(g, coef):
    if g.ndim == 0 and g.dtype in (np.float16, np.float32, np.complex64):
        # torch's 0-d rule: two 0-dim operands multiply in the wider dtype, rounded once
        # (float16 through float32); coef is a double, exactly a float if computed in float32.
        with np.errstate(invalid="ignore", over="ignore", under="ignore"):
            if g.dtype.kind == "c":
                re, im, c = float(g.real), float(g.imag), float(coef)
                return np.asarray(complex(np.float32(re * c - im * 0.0), np.float32(re * 0.0 + im * c)), g.dtype)
            return np.asarray(np.float32(float(g) * float(coef))).astype(g.dtype)
    with np.errstate(all="ignore"):
        if g.dtype == np.float16:
            return (g.astype(np.float32) * np.float32(coef)).astype(np.float16)
        if g.dtype in (np.float32, np.complex64):
            return g * np.float32(coef)
        return g * np.float64(coef)


def clamped(g, c):
    with np.errstate(over="ignore"):  # a bound beyond the dtype's range rounds to inf
        hi = g.dtype.type(np.float32(c)) if g.dtype == np.float16 else g.dtype.type(c)
    out = np.minimum(np.maximum(g, -hi), hi)
    return np.where(np.isnan(g), g, out).astype(g.dtype)


def assert_same_values(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def assert_close_total(result, arrays, p):
    expected = total_norm(arrays, p)
    assert result.dtype == (np.float32 if is_single(arrays) else np.float64)
    rtol = 2e-7 if is_single(arrays) else 1e-12
    np.testing.assert_allclose(float(result), expected, rtol=rtol)


# ----------------------------------------------------------------------------------------
# The inputs


def first_good():
    """Float32, norm ~70.7 and entries beyond 0.5: every clipping function changes it."""
    return np.array([30.0, -40.0, 50.0], np.float32)


def last_good():
    return np.linspace(-20.0, 20.0, 6).reshape(2, 3)


class WithGrad:
    """torch-like: anything with a .grad attribute."""

    def __init__(self, grad):
        self.grad = grad


class RaisingGrad:
    @property
    def grad(self):
        raise RuntimeError("grad exploded")


def _unaligned():
    raw = np.zeros(8 * 4 + 1, np.uint8)
    a = raw[1:].view(np.float64)
    a[...] = [1.0, -2.0, 3.0, -4.0]
    assert not a.flags.aligned
    return a


def _self_overlapping():
    return as_strided(np.full(1, 7.0), shape=(3,), strides=(0,), writeable=True)


def _huge_strides():
    # Dims of length 1 may carry any stride: only element 0 of them is ever addressed.
    base = np.array([1.0, -2.0, 3.0])
    return as_strided(base, shape=(1, 3, 1), strides=(2**60, 8, -(2**60)), writeable=True)


def _torch_tensor():
    torch = pytest.importorskip("torch")
    return torch.ones(3)


def _read_only():
    a = np.array([1.0, -2.0, 3.0], np.float32)
    a.flags.writeable = False
    return a


def _param_with_grad():
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    p.grad = np.array([7.0, -8.0, 9.0])
    return p


def _param_with_bad_grad():
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    object.__setattr__(p, "grad", np.arange(3))  # an assignment that bypasses the checks
    return p


# name -> factory of the item put at index 1
ITEMS = {
    "None": lambda: None,
    "nested_list": lambda: [np.ones(2)],
    "python_float": lambda: 1.5,
    "string": lambda: "abc",
    "bytes": lambda: b"abc",
    "int_array": lambda: np.arange(3),
    "bool_array": lambda: np.array([True, False]),
    "object_array": lambda: np.array([1.0, 2.0], dtype=object),
    "str_array": lambda: np.array(["a", "bc"]),
    "datetime_array": lambda: np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
    "structured_array": lambda: np.zeros(2, dtype=[("a", "f4"), ("b", "f8")]),
    "byteswapped_array": lambda: np.array([1.0, -2.0], dtype=np.dtype(np.float32).newbyteorder()),
    "longdouble_array": lambda: np.array([1.0, -2.0], dtype=np.longdouble),
    "complex_array": lambda: np.array([3 + 4j, -1j]),
    "float16_array": lambda: np.array([3.0, -4.0], np.float16),
    "read_only_array": _read_only,
    "unaligned_array": _unaligned,
    "self_overlapping_view": _self_overlapping,
    "zero_d": lambda: np.array(-6.0, np.float32),
    "empty_2x0": lambda: np.zeros((2, 0)),
    # 40 and 64 dimensions with NumPy 2; 31 and 32 with NumPy 1.x (its limit).
    "empty_40_dims": lambda: np.zeros((0,) + (2,) * (min(40, MAX_DIMS - 1) - 1), np.float32),
    "40_dims": lambda: np.arange(6, dtype=np.float32).reshape((1,) * (min(40, MAX_DIMS - 1) - 2) + (2, 3)) - 2.5,
    "64_dims": lambda: np.arange(4.0).reshape((1,) * (MAX_DIMS - 2) + (2, 2)) - 1.5,
    "huge_strides": _huge_strides,
    "megabyte_stride": lambda: np.arange(3_000_001, dtype=np.float32)[::1_000_000] - 1.5e6,
    "reversed_2d": lambda: (np.arange(12.0).reshape(3, 4) - 6)[::-1, ::-2],
    "parameter_with_grad": _param_with_grad,
    "parameter_without_grad": lambda: Parameter(np.ones(3)),
    "parameter_with_int_grad": _param_with_bad_grad,
    "grad_property_raises": RaisingGrad,
    "grad_is_torch_tensor": lambda: WithGrad(_torch_tensor()),
    "grad_is_list": lambda: WithGrad([1.0, 2.0]),
    "grad_is_int_array": lambda: WithGrad(np.arange(3)),
    "grad_is_float_array": lambda: WithGrad(np.array([5.0, -12.0])),
}

C_TYPE_ERR_T = (TypeError, r"tensors\[1\]")
C_TYPE_ERR_P = (TypeError, r"parameters\[1\]")
OK = "ok"

# For the four C-backed functions: the outcome of ITEMS[name] at index 1. parameters_to_vector
# and vector_to_parameters are checked against their documented NumPy semantics instead.
_NOT_AN_ARRAY = {"norm": C_TYPE_ERR_T, "grads": C_TYPE_ERR_P, "value": C_TYPE_ERR_P}
_BAD_DTYPE = {
    "norm": (TypeError, r"tensors\[1\] has dtype"),
    "grads": (TypeError, r"parameters\[1\] has dtype"),
    "value": (TypeError, r"parameters\[1\] has dtype"),
}
_WORKS = {"norm": OK, "grads": OK, "value": OK}
_READ_ONLY_GRAD = {
    "norm": OK,
    "grads": (ValueError, r"parameters\[1\] is read-only"),
    "value": (ValueError, r"parameters\[1\] is read-only"),
}
_GRAD_ONLY = {"norm": C_TYPE_ERR_T, "grads": OK, "value": OK}
_BAD_GRAD = {
    "norm": C_TYPE_ERR_T,
    "grads": (TypeError, r"parameters\[1\]\.grad must be a NumPy ndarray or None"),
    "value": (TypeError, r"parameters\[1\]\.grad must be a NumPy ndarray or None"),
}
_BAD_GRAD_DTYPE = {
    "norm": C_TYPE_ERR_T,
    "grads": (TypeError, r"parameters\[1\]\.grad has dtype int64"),
    "value": (TypeError, r"parameters\[1\]\.grad has dtype int64"),
}
EXPECTED = {
    "None": _NOT_AN_ARRAY,
    "nested_list": _NOT_AN_ARRAY,
    "python_float": _NOT_AN_ARRAY,
    "string": _NOT_AN_ARRAY,
    "bytes": _NOT_AN_ARRAY,
    "int_array": _BAD_DTYPE,
    "bool_array": _BAD_DTYPE,
    "object_array": _BAD_DTYPE,
    "str_array": _BAD_DTYPE,
    "datetime_array": _BAD_DTYPE,
    "structured_array": _BAD_DTYPE,
    "byteswapped_array": {
        "norm": (TypeError, r"tensors\[1\] has non-native byte order"),
        "grads": (TypeError, r"parameters\[1\] has non-native byte order"),
        "value": (TypeError, r"parameters\[1\] has non-native byte order"),
    },
    "longdouble_array": _BAD_DTYPE,
    "complex_array": {
        "norm": OK,
        "grads": OK,
        "value": (TypeError, r"parameters\[1\] has complex dtype"),
    },
    "float16_array": _WORKS,
    "read_only_array": _READ_ONLY_GRAD,
    "unaligned_array": {
        "norm": (ValueError, r"tensors\[1\] is not aligned"),
        "grads": (ValueError, r"parameters\[1\] is not aligned"),
        "value": (ValueError, r"parameters\[1\] is not aligned"),
    },
    "self_overlapping_view": {
        "norm": OK,
        "grads": (ValueError, r"parameters\[1\] has elements that share memory"),
        "value": (ValueError, r"parameters\[1\] has elements that share memory"),
    },
    "zero_d": _WORKS,
    "empty_2x0": _WORKS,
    "empty_40_dims": _WORKS,
    "40_dims": _WORKS,
    "64_dims": _WORKS,
    "huge_strides": _WORKS,
    "megabyte_stride": _WORKS,
    "reversed_2d": _WORKS,
    "parameter_with_grad": _GRAD_ONLY,
    "parameter_without_grad": _GRAD_ONLY,
    "parameter_with_int_grad": _BAD_GRAD_DTYPE,
    "grad_property_raises": {
        "norm": C_TYPE_ERR_T,
        "grads": (RuntimeError, "grad exploded"),  # the user's own exception, unchanged
        "value": (RuntimeError, "grad exploded"),
    },
    "grad_is_torch_tensor": _GRAD_ONLY,  # converted through DLPack (gradclip._interop), in place
    "grad_is_list": _BAD_GRAD,
    "grad_is_int_array": _BAD_GRAD_DTYPE,
    "grad_is_float_array": _GRAD_ONLY,
}
assert EXPECTED.keys() == ITEMS.keys()

C_FUNCTIONS = {
    # name -> (kind, call)
    "get_total_norm": ("norm", lambda items: gradclip.get_total_norm(items)),
    "clip_grad_norm_": ("grads", lambda items: gradclip.clip_grad_norm_(items, 1.0)),
    "clip_grads_with_norm_": ("grads", lambda items: gradclip.clip_grads_with_norm_(items, 1.0, 100.0)),
    "clip_grad_value_": ("value", lambda items: gradclip.clip_grad_value_(items, 0.5)),
}


def resolve_grads(items):
    """The arrays the clipping functions operate on: arrays as is, else .grad (None skipped)."""
    out = []
    for item in items:
        grad = item if isinstance(item, np.ndarray) else _numpy_view(item.grad)
        if grad is not None:
            out.append(grad)
    return out


def check_c_success(name, items, result, before):
    """The documented semantics of a successful call, on distinct (unaliased) arrays."""
    grads = resolve_grads(items)
    old = [before[id(g)] for g in grads]
    if name == "get_total_norm":
        assert_close_total(result, old, 2.0)
        after = old
    elif name == "clip_grad_norm_":
        assert_close_total(result, old, 2.0)
        coef = clip_coef(float(result), 1.0, is_single(old))
        after = [scaled(g, coef) for g in old]
    elif name == "clip_grads_with_norm_":
        assert result is None
        after = [scaled(g, clip_coef(100.0, 1.0, False)) for g in old]
    else:
        assert result is None
        after = [clamped(g, 0.5) for g in old]
    for g, expected in zip(grads, after):
        assert_same_values(g, expected)


def run_case(call, items, expected):
    watch = Watch(items)
    before = {id(a): b for a, b in watch.items}
    if expected == OK:
        return watch, before, call(items)
    exc_type, pattern = expected
    with pytest.raises(exc_type, match=pattern):
        call(items)
    watch.assert_unchanged()
    return watch, before, None


@pytest.mark.parametrize("case", list(ITEMS))
@pytest.mark.parametrize("name", list(C_FUNCTIONS))
def test_bad_item_in_list(name, case):
    kind, call = C_FUNCTIONS[name]
    items = [first_good(), ITEMS[case](), last_good()]
    expected = EXPECTED[case][kind]
    watch, before, result = run_case(call, items, expected)
    if expected == OK:
        check_c_success(name, items, result, before)
        assert not np.array_equal(items[0], first_good()) or name == "get_total_norm"


@pytest.mark.parametrize("case", list(ITEMS))
@pytest.mark.parametrize("container", [list, tuple, iter])
def test_bad_item_any_container_clip_grad_norm(case, container):
    """Generators and tuples go through the same checks as lists."""
    items = [first_good(), ITEMS[case](), last_good()]
    watch = Watch(items)
    before = {id(a): b for a, b in watch.items}
    expected = EXPECTED[case]["grads"]
    if expected == OK:
        result = gradclip.clip_grad_norm_(container(items), 1.0)
        check_c_success("clip_grad_norm_", items, result, before)
    else:
        with pytest.raises(expected[0], match=expected[1]):
            gradclip.clip_grad_norm_(container(items), 1.0)
        watch.assert_unchanged()


def _values(items):
    return [item.data if isinstance(item, Parameter) else item for item in items]


@pytest.mark.parametrize("case", list(ITEMS))
def test_bad_item_parameters_to_vector(case):
    """Documented: each value flattened in C order, concatenated with NumPy's promotion."""
    items = [first_good(), ITEMS[case](), last_good()]
    watch = Watch(items)
    if not all(isinstance(i, (np.ndarray, Parameter)) for i in items):
        with pytest.raises(TypeError, match=r"parameters\[1\] must be an ndarray or a Parameter"):
            gradclip.parameters_to_vector(items)
        watch.assert_unchanged()
        return
    try:
        expected = np.concatenate([v.copy().reshape(-1) for v in _values(items)])
    except Exception as exc:  # noqa: BLE001 - NumPy refuses to promote: so must we
        with pytest.raises(type(exc)):
            gradclip.parameters_to_vector(items)
    else:
        result = gradclip.parameters_to_vector(items)
        assert result.dtype == expected.dtype
        # Values, not bytes: object arrays hold new float objects, long doubles have padding.
        assert np.array_equal(result, expected)
        assert not any(np.shares_memory(result, v) for v in _values(items))
    watch.assert_unchanged()


@pytest.mark.parametrize("case", list(ITEMS))
def test_bad_item_vector_to_parameters(case):
    """Documented: sizes, writeability and same_kind casts checked before the first write."""
    items = [first_good(), ITEMS[case](), last_good()]
    watch = Watch(items)
    if not all(isinstance(i, (np.ndarray, Parameter)) for i in items):
        with pytest.raises(TypeError, match=r"parameters\[1\] must be an ndarray or a Parameter"):
            gradclip.vector_to_parameters(np.zeros(1), items)
        watch.assert_unchanged()
        return
    values = _values(items)
    vec = np.arange(sum(v.size for v in values), dtype=np.float64) * 0.25 - 3.0
    bad = values[1]
    if not bad.flags.writeable:
        with pytest.raises(ValueError, match=r"parameters\[1\] is read-only"):
            gradclip.vector_to_parameters(vec, items)
        watch.assert_unchanged()
        return
    if not np.can_cast(vec.dtype, bad.dtype, casting="same_kind"):
        with pytest.raises(TypeError, match=r"parameters\[1\]"):
            gradclip.vector_to_parameters(vec, items)
        watch.assert_unchanged()
        return
    gradclip.vector_to_parameters(vec, items)
    offset = 0
    for v in values:
        piece = vec[offset : offset + v.size].reshape(v.shape)
        offset += v.size
        if v is bad and case == "self_overlapping_view":
            # One element seen three times: it holds one of the values written to it.
            assert v[0] in piece
            continue
        assert_same_values(v, piece.astype(v.dtype))


@pytest.mark.parametrize(
    "parameters",
    [5, 2.5, None, object(), "abc", b"abc", {"a": np.ones(2)}, np.float64(3.0)],
    ids=["int", "float", "None", "object", "str", "bytes", "dict", "numpy_scalar"],
)
@pytest.mark.parametrize("name", list(C_FUNCTIONS) + ["parameters_to_vector", "vector_to_parameters"])
def test_not_a_list_of_arrays(name, parameters):
    arg = "tensors" if name == "get_total_norm" else "parameters"
    pattern = rf"{arg}(\[0\])? must be"
    with pytest.raises(TypeError, match=pattern):
        if name == "vector_to_parameters":
            gradclip.vector_to_parameters(np.zeros(2), parameters)
        elif name == "parameters_to_vector":
            gradclip.parameters_to_vector(parameters)
        else:
            C_FUNCTIONS[name][1](parameters)


def test_get_total_norm_names_tensors_for_a_non_iterable():
    with pytest.raises(TypeError, match=r"^tensors must be"):
        gradclip.get_total_norm(5)


@pytest.mark.parametrize("vec", [[1.0, 2.0], 3.0, None, "ab"], ids=["list", "float", "None", "str"])
def test_vector_to_parameters_vec_not_an_array(vec):
    p = first_good()
    watch = Watch(p)
    with pytest.raises(TypeError, match="ndarray"):
        gradclip.vector_to_parameters(vec, [p])
    watch.assert_unchanged()


@pytest.mark.parametrize("name", list(C_FUNCTIONS) + ["parameters_to_vector", "vector_to_parameters"])
def test_generator_that_raises_midway(name):
    good = first_good()
    watch = Watch(good)

    def gen():
        yield good
        raise KeyError("midway")

    with pytest.raises(KeyError, match="midway"):
        if name == "vector_to_parameters":
            gradclip.vector_to_parameters(np.zeros(3), gen())
        elif name == "parameters_to_vector":
            gradclip.parameters_to_vector(gen())
        else:
            C_FUNCTIONS[name][1](gen())
    watch.assert_unchanged()


# ----------------------------------------------------------------------------------------
# Scalars


class FloatRaises:
    def __float__(self):
        raise ZeroDivisionError("no float for you")


HUGE_INT = 10**400
BAD_REAL = {
    # value -> (exception, message pattern); {name} is the argument's name
    "nan": (NAN, ValueError, "{name} must"),
    "float32_nan": (np.float32("nan"), ValueError, "{name} must"),
    "str": ("1.0", TypeError, "{name} must be a real number"),
    "None": (None, TypeError, "{name} must be a real number"),
    "complex": (1 + 0j, TypeError, "{name} must be a real number"),
    "numpy_complex": (np.complex64(1), TypeError, "{name} must be a real number"),
    "list": ([1.0], TypeError, "{name} must be a real number"),
    "array": (np.array([1.0, 2.0]), TypeError, "{name} must be a real number"),
    "bool": (True, TypeError, "{name} must be a real number"),
    "float_raises": (FloatRaises(), ZeroDivisionError, "no float for you"),
}
NEGATIVE = {"minus_one": -1.0, "minus_inf": -INF, "tiny_negative": -5e-324}
def _scalar_cases(name, calls, *, negative_ok=False):
    cases = []
    for call_name in calls:
        for key, (value, exc, pattern) in BAD_REAL.items():
            if name == "norm_type" and key == "str":
                pattern = "norm_type must be a real number or 'inf'"
            if name == "norm_type" and key == "nan" or name == "norm_type" and key == "float32_nan":
                pattern = "norm_type must not be NaN"
            cases.append(pytest.param(call_name, value, exc, pattern.format(name=name), id=f"{call_name}-{key}"))
        if not negative_ok:
            for key, value in NEGATIVE.items():
                cases.append(
                    pytest.param(call_name, value, ValueError, f"{name} must be a non-negative number", id=f"{call_name}-{key}")
                )
        # Fixed in ddd5a2b: the OverflowError names the argument.
        cases.append(pytest.param(call_name, HUGE_INT, OverflowError, name, id=f"{call_name}-huge_int"))
    return cases


def _with_max_norm(call_name, value):
    items = [first_good(), last_good()]
    if call_name == "clip_grad_norm_":
        return items, lambda: gradclip.clip_grad_norm_(items, value)
    return items, lambda: gradclip.clip_grads_with_norm_(items, value, 100.0)


@pytest.mark.parametrize(
    "call_name, value, exc, pattern",
    _scalar_cases("max_norm", ["clip_grad_norm_", "clip_grads_with_norm_"]),
)
def test_bad_max_norm(call_name, value, exc, pattern):
    items, call = _with_max_norm(call_name, value)
    watch = Watch(items)
    with pytest.raises(exc, match=pattern):
        call()
    watch.assert_unchanged()


@pytest.mark.parametrize(
    "call_name, value, exc, pattern",
    _scalar_cases("norm_type", ["get_total_norm", "clip_grad_norm_"], negative_ok=True),
)
def test_bad_norm_type(call_name, value, exc, pattern):
    items = [first_good(), last_good()]
    watch = Watch(items)
    with pytest.raises(exc, match=pattern):
        if call_name == "get_total_norm":
            gradclip.get_total_norm(items, value)
        else:
            gradclip.clip_grad_norm_(items, 1.0, value)
    watch.assert_unchanged()


@pytest.mark.parametrize("call_name, value, exc, pattern", _scalar_cases("clip_value", ["clip_grad_value_"]))
def test_bad_clip_value(call_name, value, exc, pattern):
    items = [first_good(), last_good()]
    watch = Watch(items)
    with pytest.raises(exc, match=pattern):
        gradclip.clip_grad_value_(items, value)
    watch.assert_unchanged()


@pytest.mark.parametrize(
    "value", ["abc", None, [1.0, 2.0], 1 + 0j, True, HUGE_INT, np.array([1.0, 2.0])],
    ids=["str", "None", "list", "complex", "bool", "huge_int", "array"],
)
def test_bad_total_norm(value):
    items = [first_good(), last_good()]
    watch = Watch(items)
    with pytest.raises(TypeError, match="total_norm must be a real scalar"):
        gradclip.clip_grads_with_norm_(items, 1.0, value)
    watch.assert_unchanged()


def test_negative_total_norm_is_rejected():
    items = [first_good(), last_good()]
    watch = Watch(items)
    with pytest.raises(ValueError, match="total_norm"):
        gradclip.clip_grads_with_norm_(items, 1.0, -1.0)
    watch.assert_unchanged()


@pytest.mark.parametrize("value", ["yes", 1, 0.0, np.array([True])], ids=["str", "int", "float", "array"])
@pytest.mark.parametrize("name", list(C_FUNCTIONS))
def test_bad_foreach(name, value):
    items = [first_good(), last_good()]
    watch = Watch(items)
    kwargs = {"foreach": value}
    with pytest.raises(TypeError, match="foreach must be None or a bool"):
        if name == "get_total_norm":
            gradclip.get_total_norm(items, **kwargs)
        elif name == "clip_grad_norm_":
            gradclip.clip_grad_norm_(items, 1.0, **kwargs)
        elif name == "clip_grads_with_norm_":
            gradclip.clip_grads_with_norm_(items, 1.0, 100.0, **kwargs)
        else:
            gradclip.clip_grad_value_(items, 0.5, **kwargs)
    watch.assert_unchanged()


# Scalars that work, with the documented meaning.


@pytest.mark.parametrize(
    "p",
    [INF, -INF, "inf", "-inf", " INF ", 0, 0.5, 1, 3, -1, -2.5, np.float32(2), np.int64(4),
     fractions.Fraction(3, 2), decimal.Decimal("2.5"), np.array(2.0), 1e-300, 1e300],
    ids=lambda p: repr(p),
)
def test_norm_type_that_works(p):
    items = [first_good(), last_good()]
    before = [a.copy() for a in items]
    p_value = {"inf": INF, "-inf": -INF, " INF ": INF}.get(p, p) if isinstance(p, str) else float(p)
    total = gradclip.clip_grad_norm_(items, 1.0, p)
    assert_close_total(total, before, p_value)
    coef = clip_coef(float(total), 1.0, False)
    for a, b in zip(items, before):
        assert_same_values(a, scaled(b, coef))


@pytest.mark.parametrize(
    "max_norm", [INF, 0.0, -0.0, 1e-300, np.float16(0.5), np.int8(3), fractions.Fraction(1, 3), decimal.Decimal("0.25")],
    ids=repr,
)
def test_max_norm_that_works(max_norm):
    items = [first_good(), last_good()]
    before = [a.copy() for a in items]
    total = gradclip.clip_grad_norm_(items, max_norm)
    assert_close_total(total, before, 2.0)
    coef = clip_coef(float(total), float(max_norm), False)
    for a, b in zip(items, before):
        assert_same_values(a, scaled(b, coef))
    if max_norm == INF:
        for a, b in zip(items, before):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    "total, expected",
    [(INF, "zeros"), (NAN, "nan"), (0.0, "clipped"), (np.float32(100.0), "clipped"), (np.array(100.0), "clipped")],
    ids=["inf", "nan", "zero", "float32", "0d_array"],
)
def test_total_norm_that_works(total, expected):
    """torch's arithmetic: an infinite total zeroes the gradients, NaN makes them NaN."""
    items = [first_good(), last_good()]
    before = [a.copy() for a in items]
    gradclip.clip_grads_with_norm_(items, 1.0, total)
    single = np.asarray(total).dtype == np.float32
    coef = clip_coef(float(total), 1.0, single)
    for a, b in zip(items, before):
        assert_same_values(a, scaled(b, coef))
        if expected == "zeros":
            assert not a.any()
        elif expected == "nan":
            assert np.isnan(a).all()


@pytest.mark.parametrize("clip_value", [INF, 0.0, 1e300, 5e-324, np.float32(0.5), np.uint8(2)], ids=repr)
def test_clip_value_that_works(clip_value):
    items = [first_good(), last_good(), np.array([1.0, -1.0], np.float16)]
    before = [a.copy() for a in items]
    gradclip.clip_grad_value_(items, clip_value)
    for a, b in zip(items, before):
        assert_same_values(a, clamped(b, float(clip_value)))


def test_error_if_nonfinite_with_an_array_that_has_no_truth_value():
    items = [first_good(), np.array([np.inf])]
    watch = Watch(items)
    with pytest.raises(ValueError, match="truth value"):
        gradclip.clip_grad_norm_(items, 1.0, 2.0, np.array([True, False]))
    watch.assert_unchanged()


@pytest.mark.parametrize("name", ["get_total_norm", "clip_grad_norm_"])
def test_error_if_nonfinite_raises_before_writing(name):
    items = [first_good(), np.array([1.0, np.nan]), last_good()]
    watch = Watch(items)
    with pytest.raises(RuntimeError, match="non-finite"):
        if name == "get_total_norm":
            gradclip.get_total_norm(items, 2.0, True)
        else:
            gradclip.clip_grad_norm_(items, 1.0, 2.0, True)
    watch.assert_unchanged()


# ----------------------------------------------------------------------------------------
# The same memory twice


def test_same_array_twice():
    """Listed twice, an array counts twice in the norm and is scaled twice (as in torch)."""
    g = first_good()
    before = g.copy()
    total = gradclip.clip_grad_norm_([g, g], 1.0)
    assert_close_total(total, [before, before], 2.0)
    coef = clip_coef(float(total), 1.0, True)
    assert_same_values(g, scaled(scaled(before, coef), coef))

    g = first_good()
    gradclip.clip_grads_with_norm_([g, g], 1.0, 100.0)
    c = clip_coef(100.0, 1.0, False)
    assert_same_values(g, scaled(scaled(before, c), c))

    g = first_good()
    gradclip.clip_grad_value_([g, g], 0.5)
    assert_same_values(g, clamped(before, 0.5))

    assert_close_total(gradclip.get_total_norm([before, before], 1), [before, before], 1)
    np.testing.assert_array_equal(gradclip.parameters_to_vector([before, before]), np.tile(before, 2))

    g = first_good()
    vec = np.arange(6.0)
    gradclip.vector_to_parameters(vec, [g, g])
    assert_same_values(g, vec[3:].astype(np.float32))  # written in order: the last one wins


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
def test_overlapping_views_of_one_buffer(dtype):
    """Views overlapping each other (not themselves): the total is taken before any write,
    then each view is scaled in list order, so the shared elements are scaled twice."""
    buf = (np.arange(9) - 4.5).astype(dtype) * 10
    before = buf.copy()
    a, b = buf[:6], buf[3:]
    total = gradclip.clip_grad_norm_([a, b], 1.0)
    assert_close_total(total, [before[:6], before[3:]], 2.0)
    expected = before.copy()
    coef = clip_coef(float(total), 1.0, is_single([a]))
    expected[:6] = scaled(expected[:6], coef)
    expected[3:] = scaled(expected[3:], coef)
    assert_same_values(buf, expected)

    if dtype is not np.complex64:
        buf[...] = before
        gradclip.clip_grad_value_([buf[::2], buf[:5], buf[::-1]], 2.0)
        assert_same_values(buf, clamped(before, 2.0))

    buf[...] = before
    gradclip.vector_to_parameters(np.arange(12.0), [buf[:6], buf[3:]])
    assert_same_values(buf, np.r_[0.0, 1, 2, 6, 7, 8, 9, 10, 11].astype(dtype))


def test_interleaved_views_of_one_buffer():
    """Disjoint strided views of one buffer behave like separate arrays."""
    buf = np.linspace(-30, 30, 10)
    before = buf.copy()
    total = gradclip.clip_grad_norm_([buf[0::2], buf[1::2]], 1.0)
    assert_close_total(total, [before[0::2], before[1::2]], 2.0)
    assert_same_values(buf, scaled(before, clip_coef(float(total), 1.0, False)))


# ----------------------------------------------------------------------------------------
# vector_to_parameters must not half-write either


def test_vector_to_parameters_cast_error_after_first_write():
    params = [np.zeros(2, np.float32), np.zeros(2, np.float32)]
    watch = Watch(params)
    vec = np.array([1.0, 2.0, 3.0, 1e300])
    with np.errstate(over="raise"), pytest.raises(FloatingPointError):
        gradclip.vector_to_parameters(vec, params)
    watch.assert_unchanged()


def test_vector_to_parameters_size_mismatch_writes_nothing():
    params = [first_good(), last_good()]
    watch = Watch(params)
    with pytest.raises(ValueError, match="vec has 8 elements but the parameters have 9"):
        gradclip.vector_to_parameters(np.zeros(8), params)
    with pytest.raises(ValueError, match="vec must be 1-D"):
        gradclip.vector_to_parameters(np.zeros((3, 3)), params)
    watch.assert_unchanged()


# ----------------------------------------------------------------------------------------
# Optimizers


def optimizer_classes():
    return {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}


def ref_first_step(name, p, g, lr):
    """One step from fresh state with default hyper-parameters, in float64 NumPy."""
    p, g = p.astype(np.float64), g.astype(np.float64)
    with np.errstate(all="ignore"):
        if name == "SGD":
            return p - lr * g
        if name == "AdamW":
            p = p * (1 - lr * 0.01)
        m, v = 0.1 * g, 0.001 * g * g
        m_hat, v_hat = m / 0.1, v / 0.001
        return p - lr * m_hat / (np.sqrt(v_hat) + 1e-8)


@pytest.mark.parametrize(
    "lr",
    [NAN, INF, -1.0, -INF, 0.0, 1e-300, "abc", None, 1 + 0j, np.array([0.1, 0.2])],
    ids=["nan", "inf", "negative", "minus_inf", "zero", "tiny", "str", "None", "complex", "array"],
)
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_bad_lr(name, lr):
    """Rejected with a message naming lr, or a step with the documented arithmetic."""
    cls = optimizer_classes()[name]
    p0, p1 = Parameter(np.array([1.0, -2.0, 3.0])), Parameter(np.array([0.5, 0.0]))
    p0.grad, p1.grad = np.array([0.25, 0.5, -1.0]), np.array([-1.0, 2.0])
    watch = Watch(p0, p1)
    try:
        opt = cls([p0, p1], lr=lr)
    except (TypeError, ValueError) as exc:
        assert re.search(r"\blr\b|learning rate", str(exc)), f"message does not name lr: {exc}"
        watch.assert_unchanged()
        return
    before = [p0.data.copy(), p1.data.copy()]
    opt.step()
    for p, b in zip((p0, p1), before):
        expected = ref_first_step(name, b, p.grad, float(lr))
        np.testing.assert_allclose(p.data, expected, rtol=1e-12, equal_nan=True)


def _bad_grads():
    return {
        "int_array": (np.arange(3), TypeError, "dtype"),
        "wrong_shape": (np.zeros(4), ValueError, "shape"),
        "float32_for_float64": (np.zeros(3, np.float32), TypeError, "dtype"),
        "list": ([1.0, 2.0, 3.0], TypeError, "ndarray"),
        "python_float": (1.5, TypeError, "ndarray"),
        "torch_tensor": (_torch_tensor(), TypeError, "ndarray"),
        "object_array": (np.array([1.0, 2.0, 3.0], dtype=object), TypeError, "dtype"),
        "byteswapped": (np.ones(3, np.dtype(np.float64).newbyteorder()), TypeError, "dtype"),
    }


BAD_GRAD_KEYS = ["int_array", "wrong_shape", "float32_for_float64", "list", "python_float",
                 "torch_tensor", "object_array", "byteswapped"]


@pytest.mark.parametrize("how", ["grads_argument", "grad_attribute"])
@pytest.mark.parametrize("key", BAD_GRAD_KEYS)
@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_step_bad_gradient(name, key, how):
    cls = optimizer_classes()[name]
    bad, exc, pattern = _bad_grads()[key]
    p0, p1 = Parameter(np.array([1.0, -2.0, 3.0])), Parameter(np.array([4.0, 5.0, 6.0]))
    g0 = np.array([0.5, 0.5, 0.5])
    opt = cls([p0, p1], lr=0.1, **({} if name == "SGD" else {"weight_decay": 0.1}))
    # A first good step so there is state to corrupt, too.
    opt.step(grads=[g0, g0.copy()])
    watch = Watch(p0, p1, g0)
    state_before = {k: {s: np.array(v, copy=True) for s, v in d.items()} for k, d in opt.state.items()}
    with pytest.raises(exc, match=pattern):
        if how == "grads_argument":
            opt.step(grads=[g0, bad])
        else:
            p0.grad = g0
            object.__setattr__(p1, "grad", bad)  # bypasses the checks, as careless code might
            opt.step()
    watch.assert_unchanged()
    for key_, d in opt.state.items():
        for s, v in d.items():
            assert np.array_equal(np.asarray(v), state_before[key_][s], equal_nan=True)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_parameter_made_read_only_after_construction(name):
    cls = optimizer_classes()[name]
    p0, p1 = Parameter(np.array([1.0, 2.0])), Parameter(np.array([3.0, 4.0]))
    p0.grad, p1.grad = np.ones(2), np.ones(2)
    opt = cls([p0, p1], lr=0.1)
    p1.data.flags.writeable = False
    watch = Watch(p0, p1)
    with pytest.raises(ValueError, match="read-only"):
        opt.step()
    watch.assert_unchanged()
    assert len(opt.state) == 0 or all(not d for _, d in opt.state.items())


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_params_that_are_not_parameters(name):
    cls = optimizer_classes()[name]
    for params in ([Parameter(np.ones(2)), None], [Parameter(np.ones(2)), 1.5], [Parameter(np.ones(2)), "w"],
                   [Parameter(np.ones(2)), np.arange(3)]):
        with pytest.raises(TypeError, match="optimizer can only optimize"):
            cls(params, lr=0.1)
    with pytest.raises(TypeError):
        cls(5, lr=0.1)

    def gen():
        yield Parameter(np.ones(2))
        raise KeyError("midway")

    with pytest.raises(KeyError, match="midway"):
        cls(gen(), lr=0.1)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizer_closure_that_raises_changes_nothing(name):
    cls = optimizer_classes()[name]
    p = Parameter(np.array([1.0, 2.0]))
    p.grad = np.ones(2)
    opt = cls([p], lr=0.1)
    watch = Watch(p)

    def closure():
        raise ArithmeticError("loss exploded")

    with pytest.raises(ArithmeticError, match="loss exploded"):
        opt.step(closure)
    watch.assert_unchanged()
    assert not opt.state.get(p)


def test_sgd_same_parameter_twice():
    """torch warns and updates a duplicated parameter twice; so does gradclip."""
    p = Parameter(np.array([1.0, -2.0]))
    p.grad = np.array([0.5, 0.25])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = SGD([p, p], lr=0.1)
    assert any("duplicate" in str(w.message) for w in caught)
    opt.step()
    np.testing.assert_array_equal(p.data, (np.array([1.0, -2.0]) - 0.1 * p.grad) - 0.1 * p.grad)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
@pytest.mark.parametrize("bad_lr", ["abc", None, np.array([0.1, 0.2])], ids=["str", "None", "array"])
def test_optimizer_bad_lr_on_a_later_group_changes_nothing(name, bad_lr):
    """A scheduler-style opt.param_groups[1]["lr"] = ... is validated with the rest before
    any group is stepped (it used to step group 0, then fail; fixed in 4fce8a1)."""
    cls = optimizer_classes()[name]
    p0, p1 = Parameter(np.ones(3)), Parameter(np.ones(3))
    p0.grad, p1.grad = np.ones(3), np.ones(3)
    opt = cls([{"params": [p0]}, {"params": [p1]}], lr=0.1)
    opt.param_groups[1]["lr"] = bad_lr
    watch = Watch(p0, p1)
    with pytest.raises((TypeError, ValueError), match=r"param_groups\[1\]\['lr'\]"):
        opt.step()
    watch.assert_unchanged()
    assert all(not d for _, d in opt.state.items())
