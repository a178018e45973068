"""Hypothesis fuzzing of the C entry points themselves (issue 6).

``gradclip._C`` must not trust the Python layer: these tests call it directly with random
argument objects, counts and arrays (every dtype, valid or not; C, Fortran, strided,
reversed, 0-d, empty, read-only, misaligned, self-overlapping, aliased) and random scalars.
The only thing asserted is the contract:

* the call returns or raises an ordinary Python exception (never ``SystemError``, which
  means a C function returned NULL without an exception, or the reverse);
* on exception, every byte of every buffer is unchanged;
* on success, the results match a float64 NumPy reference computed here, every array is
  what the reference says, and the bytes around every array are untouched;
* and, because the inputs are built from a model of the documented rules, a call on valid
  input must succeed and a call on invalid input must raise.

``GRADCLIP_STRESS=1`` (CI) runs 10,000 examples per entry point; the default is a few hundred.
"""

from __future__ import annotations

import fractions
import math
import os
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st

from gradclip import Parameter, _C
from arrays import MAX_DIMS

import reference

STRESS = os.environ.get("GRADCLIP_STRESS") == "1"
EXAMPLES = int(os.environ.get("GRADCLIP_FUZZ_EXAMPLES", 10_000 if STRESS else 200))  # valgrind.sh sets it low
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
INF = math.inf

# ----------------------------------------------------------------------------------------
# Arrays on guarded buffers

REAL_DTYPES = [np.dtype(t) for t in (np.float16, np.float32, np.float64)]
COMPLEX_DTYPES = [np.dtype(t) for t in (np.complex64, np.complex128)]
INVALID_DTYPES = [
    np.dtype(t)
    for t in (
        np.int8, np.int32, np.int64, np.uint16, np.bool_, np.longdouble, np.clongdouble,
        ">f8" if np.little_endian else "<f8", ">f4" if np.little_endian else "<f4",
        ">c16" if np.little_endian else "<c16", ">f2" if np.little_endian else "<f2",
        "datetime64[s]", "timedelta64[ms]", "V8", "S4", "U2",
        [("a", "<f4"), ("b", "<f4")],
    )
]
PALETTE = np.array([0.0, -0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 7.25, -7.25, 1e-3, -1e-3, 1e3, -1e3, 40.0, -65.0])
SPECIALS = np.array([np.nan, INF, -INF])
GUARD = 16  # bytes before and after every array's span


@dataclass
class Buffer:
    raw: np.ndarray  # uint8, owned here
    before: bytes = b""


@dataclass
class Arr:
    """An array viewing a Buffer, with what the rules say about it."""

    array: np.ndarray
    buffer: Buffer
    offset: int
    overlapping: bool  # some element is reachable by two indices
    odd_stride: bool  # a stride (on a dim longer than 1) not a multiple of the item size
    notes: list = field(default_factory=list)

    @property
    def dtype(self):
        return self.array.dtype

    def clone_on(self, raw):
        """The same view on another buffer (for the reference)."""
        a = self.array
        return np.ndarray(a.shape, a.dtype, buffer=raw, offset=self.offset, strides=a.strides)


def _span(shape, strides, itemsize):
    if any(n == 0 for n in shape):
        return 0, 0
    lo = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    hi = sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + itemsize
    return lo, hi


def _fill(rng, view, specials):
    if view.size == 0 or view.dtype.kind not in "fc":
        return
    values = rng.choice(PALETTE, size=view.shape)
    if specials:
        mask = rng.random(view.shape) < 0.1
        values = np.where(mask, rng.choice(SPECIALS, size=view.shape), values)
    if view.dtype.kind == "c":
        values = values + 1j * rng.choice(PALETTE, size=view.shape)
    view[...] = values.astype(view.dtype.newbyteorder("="))  # byte-swapped views too


@st.composite
def arrays(draw, dtypes, rng, *, specials=True, big=False):
    dtype = draw(st.sampled_from(dtypes))
    itemsize = dtype.itemsize
    if big:
        shape = draw(st.sampled_from([(40_000,), (200, 201), (1 << 20,)]))
    elif draw(st.integers(0, 19)) == 0:
        # Many dims (NumPy 2 allows 64): length-1 dims with any stride, a few real ones.
        ndim = draw(st.integers(min(33, MAX_DIMS), MAX_DIMS))
        shape = [1] * ndim
        for d in draw(st.lists(st.integers(0, ndim - 1), max_size=3)):
            shape[d] = draw(st.integers(0, 3))
        shape = tuple(shape)
    else:
        shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    ndim = len(shape)
    order = draw(st.permutations(range(ndim)))  # inner-most first
    step_choices = [1, 2, -1] if big else [1, 1, 1, 2, 3, -1, -2]
    # Length-1 dims step by 1: a step there would only inflate the outer strides (and with
    # 64 dims, the buffer) without changing which elements are addressed.
    steps = [draw(st.sampled_from(step_choices)) if n > 1 else 1 for n in shape]
    acc = itemsize
    strides = [0] * ndim
    for d in order:
        strides[d] = steps[d] * acc
        acc *= max(shape[d], 1) * abs(steps[d])
    overlapping = odd = False
    flavours = ["plain"] * 8 + ["overlap"] + ([] if big else ["odd_stride", "huge_unit_strides"])
    flavour = draw(st.sampled_from(flavours))
    long_dims = [d for d in range(ndim) if shape[d] > 1]
    if flavour == "overlap" and long_dims:
        strides[draw(st.sampled_from(long_dims))] = 0
        overlapping = True
    elif flavour == "odd_stride" and long_dims and itemsize > 1:
        d = draw(st.sampled_from(long_dims))
        strides[d] += 1 if strides[d] >= 0 else -1
        odd = True
    elif flavour == "huge_unit_strides":
        for d in range(ndim):
            if shape[d] == 1:
                strides[d] = draw(st.sampled_from([1 << 40, -(1 << 40), 1 << 62]))
    size = math.prod(shape)
    overlapping = overlapping and size > 0
    odd = odd and size > 0
    lo, hi = _span(shape, strides, itemsize)
    assert hi - lo < 1 << 26, (shape, strides)  # keep every buffer small
    misalign = draw(st.sampled_from([0] * 6 + [1, itemsize // 2]))
    if misalign and itemsize == 1:
        misalign = 0
    raw = np.frombuffer(rng.bytes(GUARD + (hi - lo) + GUARD + 8 + 16), np.uint8).copy()
    base = GUARD - lo + misalign + (-raw.ctypes.data % 16)  # 16-aligned start before misalign
    array = np.ndarray(shape, dtype, buffer=raw, offset=base, strides=tuple(strides))
    _fill(rng, array, specials)
    if draw(st.integers(0, 6)) == 0:
        array.flags.writeable = False
    return Arr(array, Buffer(raw), base, overlapping, odd)


def alias_of(arr: Arr, rng) -> Arr:
    """Another view of the same buffer, same dtype, overlapping or interleaving arr."""
    a = arr.array
    flat_view = np.ndarray(a.shape, a.dtype, buffer=arr.buffer.raw, offset=arr.offset, strides=a.strides)
    if a.ndim >= 1 and a.shape[0] > 1 and a.size > 0:
        view = flat_view[rng.integers(0, 2) :: int(rng.integers(1, 3))]
    else:
        view = flat_view
    offset = view.__array_interface__["data"][0] - arr.buffer.raw.ctypes.data
    return Arr(view, arr.buffer, offset, self_overlaps(view), odd_strides(view))


def self_overlaps(a):
    """Whether two elements of `a` share a byte (brute force over the element offsets)."""
    if a.size <= 1:
        return False
    offsets = np.zeros((), np.int64)
    for n, s in zip(a.shape, a.strides):
        offsets = np.add.outer(offsets, np.arange(n, dtype=np.int64) * s)
    offsets = np.sort(offsets.ravel())
    return bool(np.any(np.diff(offsets) < a.itemsize))


def odd_strides(a):
    return a.size > 0 and any(n > 1 and s % a.itemsize for n, s in zip(a.shape, a.strides))


# ----------------------------------------------------------------------------------------
# Scalars


class FloatRaises:
    def __float__(self):
        raise ArithmeticError("__float__ failed")


class BoolRaises:
    def __bool__(self):
        raise ArithmeticError("__bool__ failed")


@dataclass
class Scalar:
    value: object
    real: float | None  # None: not a real number for the C layer

    def __repr__(self):
        return f"Scalar({self.value!r})"


REAL_VALUES = [0.0, -0.0, 0.5, 1.0, 2.0, 3.0, 1e-3, 1e3, 1e300, 5e-324, INF, -1.0, -INF, -2.5, math.nan]


@st.composite
def scalars(draw):
    kind = draw(st.sampled_from(["float", "float", "numpy", "int", "0d", "fraction", "bad"]))
    if kind == "bad":
        value = draw(st.sampled_from([
            "1.0", None, 1 + 0j, np.complex128(1), True, np.bool_(False), [1.0], (2.0,),
            np.array([1.0, 2.0]), np.array(1 + 0j), np.array(True), np.array(1.0, dtype=object),
            object(), FloatRaises(), 10**400, np.float64,
        ]))
        return Scalar(value, None)
    if kind == "int":
        v = draw(st.sampled_from([0, 1, 2, 3, -1, 7, 2**53]))
        return Scalar(draw(st.sampled_from([int, np.int64, np.int8, np.uint16]))(v) if 0 <= v < 128 else v, float(v))
    x = draw(st.sampled_from(REAL_VALUES))
    if kind == "float":
        return Scalar(x, x)
    if kind == "numpy":
        t = draw(st.sampled_from([np.float64, np.float32, np.float16, np.longdouble]))
        with np.errstate(over="ignore", under="ignore"):
            v = t(x)
        return Scalar(v, float(v))
    if kind == "0d":
        t = draw(st.sampled_from([np.float64, np.float32]))
        with np.errstate(over="ignore", under="ignore"):
            v = np.array(x, dtype=t)
        return Scalar(v, float(v))
    if math.isfinite(x):
        f = fractions.Fraction(x)
        return Scalar(f, float(f))
    return Scalar(x, x)


# Truth values: (object, truth or None for "raises")
BOOLS = [(True, True), (False, False), (0, False), (1, True), (None, False), (np.bool_(True), True),
         ("", False), ("x", True), (np.array([1, 2]), None), (BoolRaises(), None)]


# ----------------------------------------------------------------------------------------
# A float64 reference


def ref_total(arrays, p):
    # gradclip's documented semantics (one-element rule, underflow rescued, torch's overflow).
    if 0 < p < 1e-16:
        # So small a p (the fuzzer's 5e-324) that |x|^p rounds to 1 for every nonzero x: the
        # reference's rescaled value (each |x| divided by the largest first) is the exact
        # norm, but gradclip returns the computed (sum |x|^p)^(1/p), as torch does in float64
        # (torch: the norm of [3, 0] at p = 5e-324 is 1.0; the exact one is 3).
        with np.errstate(all="ignore"):
            norms = [reference.vector_norm(a, p, accurate=False) for a in arrays]
            return reference.vector_norm(np.array(norms), p, accurate=False) if arrays else 0.0
    return reference.total_norm(arrays, p)


def rounded_total(expected, single):
    with np.errstate(over="ignore"):
        return float(np.float32(expected)) if single else expected


def single_precision(arrays):
    return not any(a.dtype in (np.float64, np.complex128) for a in arrays)


def ref_coef(total, max_norm, single):
    t = np.float32 if single else np.float64
    with np.errstate(all="ignore"):
        coef = (t(1) / (t(total) + t(1e-6))) * t(max_norm)
    return float(coef) if np.isnan(coef) else float(min(coef, t(1)))


def ref_scale_inplace(view, coef):
    with np.errstate(all="ignore"):
        if view.ndim == 0 and view.dtype in (np.float16, np.float32, np.complex64):
            # torch's 0-d rule: two 0-dim operands multiply in the wider dtype (coef is a
            # double, exactly a float when it was computed in float32), rounded once (float16
            # through float32, as c10 converts a double).
            wide = view.astype(np.complex128 if view.dtype.kind == "c" else np.float64)
            re, im = wide.real * coef - wide.imag * 0.0, wide.real * 0.0 + wide.imag * coef
            narrow = np.complex64 if view.dtype.kind == "c" else np.float32
            result = (re + 1j * im).astype(np.complex64) if view.dtype.kind == "c" else re.astype(narrow)
            view[...] = result.astype(view.dtype)
            return
        if view.dtype == np.float16:
            view[...] = (view.astype(np.float32) * np.float32(coef)).astype(np.float16)
        elif view.dtype == np.float32:
            view[...] = view * np.float32(coef)
        elif view.dtype == np.float64:
            view[...] = view * coef
        else:
            real = np.float32 if view.dtype == np.complex64 else np.float64
            c, zero = real(coef), real(0)
            re, im = view.real.copy(), view.imag.copy()
            view.real[...] = re * c - im * zero
            view.imag[...] = re * zero + im * c


def ref_clamp_inplace(view, c):
    with np.errstate(over="ignore"):
        hi = view.dtype.type(np.float32(c)) if view.dtype == np.float16 else view.dtype.type(c)
    out = np.where(view < -hi, -hi, view)
    out = np.where(hi < out, hi, out)
    view[...] = np.where(np.isnan(view), view, out)


def assert_total_close(result, expected, single):
    assert isinstance(result, np.float32 if single else np.float64), type(result)
    if math.isnan(expected):
        assert math.isnan(result)
        return
    expected_rounded = rounded_total(expected, single)
    if math.isinf(expected_rounded) or expected_rounded == 0:
        # Accumulation order may push a borderline total across the overflow threshold.
        if math.isinf(expected_rounded):
            assert float(result) >= np.finfo(np.float32 if single else np.float64).max / 4
        else:
            assert abs(float(result)) <= 1e-300 or float(result) == 0
        return
    rtol = 2.5e-7 if single else 1e-9
    assert math.isclose(float(result), expected_rounded, rel_tol=rtol), (float(result), expected_rounded)


# ----------------------------------------------------------------------------------------
# Items and containers


class WithGrad:
    def __init__(self, grad):
        self.grad = grad

    def __repr__(self):
        return f"WithGrad({self.grad!r})"


class RaisingGrad:
    @property
    def grad(self):
        raise LookupError("grad property failed")


@dataclass
class Item:
    obj: object
    arr: Arr | None  # the array it resolves to (None: skipped None grad or invalid)
    valid: bool


@st.composite
def items(draw, rng, dtypes, grads_source, prev):
    """One list item. grads_source: objects with .grad are allowed (SOURCE_GRADS)."""
    kind = draw(st.sampled_from(["array"] * 10 + ["alias", "grad", "grad_none", "junk", "bad_grad"]))
    if kind == "alias" and prev:
        base = draw(st.sampled_from(prev))
        if draw(st.booleans()):
            return Item(base.obj, base.arr, base.valid)  # the very same object again
        if base.arr is not None and isinstance(base.obj, np.ndarray):
            arr = alias_of(base.arr, rng)
            return Item(arr.array, arr, True)
    if kind in ("array", "alias"):
        big = draw(st.integers(0, 199)) == 0
        arr = draw(arrays(dtypes, rng, big=big))
        return Item(arr.array, arr, True)
    if kind == "grad":
        arr = draw(arrays(dtypes, rng))
        return Item(WithGrad(arr.array), arr, grads_source)
    if kind == "grad_none":
        return Item(WithGrad(None), None, grads_source)
    if kind == "bad_grad":
        junk = draw(st.sampled_from([RaisingGrad(), WithGrad([1.0]), WithGrad(2.5), WithGrad("g")]))
        return Item(junk, None, False)
    junk = draw(st.sampled_from([None, 1.5, "abc", [np.ones(2)], object(), np.float64(1.0)]))
    return Item(junk, None, False)


@dataclass
class Params:
    obj: object
    items: list
    container_ok: bool


@st.composite
def params(draw, rng, grads_source, allow_complex=True):
    pool = REAL_DTYPES + (COMPLEX_DTYPES if allow_complex else [])
    dtypes = pool * 4 + INVALID_DTYPES + ([] if allow_complex else COMPLEX_DTYPES)
    container = draw(st.sampled_from(["list"] * 6 + ["tuple", "tuple", "array", "generator", "junk"]))
    if container == "array":
        arr = draw(arrays(dtypes, rng))
        return Params(arr.array, [Item(arr.array, arr, True)], True)
    if container == "junk":
        return Params(draw(st.sampled_from([None, 3, "ab", {1: 2}, set(), b"x"])), [], False)
    n = draw(st.integers(0, 20 if draw(st.integers(0, 9)) == 0 else 4))
    out = []
    for _ in range(n):
        out.append(draw(items(rng, dtypes, grads_source, out)))
    objs = [i.obj for i in out]
    if container == "generator":
        return Params(iter(objs), out, False)
    return Params(objs if container == "list" else tuple(objs), out, True)


def all_buffers(p: Params):
    seen = {}
    for item in p.items:
        if item.arr is not None:
            seen[id(item.arr.buffer)] = item.arr.buffer
    return list(seen.values())


def snapshot(buffers):
    for b in buffers:
        b.before = b.raw.tobytes()


def assert_buffers_unchanged(buffers):
    for b in buffers:
        assert b.raw.tobytes() == b.before, "a buffer changed although the call raised"


def arrays_valid(p: Params, *, write, allow_complex, norm_p=None):
    if not p.container_ok:
        return False
    for item in p.items:
        if not item.valid:
            return False
        arr = item.arr
        if arr is None:
            continue
        dt = arr.dtype
        if dt not in REAL_DTYPES + (COMPLEX_DTYPES if allow_complex else []) or not dt.isnative:
            return False
        if not arr.array.flags.aligned or arr.odd_stride:
            return False
        if write and (not arr.array.flags.writeable or arr.overlapping):
            return False
        if norm_p is not None and arr.array.size == 0 and (norm_p in (INF, -INF) or norm_p < 0):
            return False
    return True


def resolved(p: Params):
    return [item.arr for item in p.items if item.arr is not None]


def call(fn, *args):
    """Run fn; return (ok, result-or-exception). SystemError is a C bug: never tolerated."""
    try:
        return True, fn(*args)
    except SystemError:
        raise
    except Exception as exc:  # noqa: BLE001 - any ordinary exception is allowed
        assert not isinstance(exc, (MemoryError,)), exc
        return False, exc


def reference_buffers(p: Params):
    """Copies of every buffer, and each resolved array re-viewed on the copies."""
    copies = {id(b): b.raw.copy() for b in all_buffers(p)}
    return copies, [a.clone_on(copies[id(a.buffer)]) for a in resolved(p)]


def assert_matches_reference(p: Params, copies):
    for arr in resolved(p):
        expected = arr.clone_on(copies[id(arr.buffer)])
        assert np.array_equal(arr.array, expected, equal_nan=True), (arr.array, expected)
    # Bytes outside every view: untouched.
    for buf in all_buffers(p):
        mask = np.zeros(buf.raw.shape, bool)
        for arr in resolved(p):
            if arr.buffer is buf and arr.array.size:
                a = arr.array
                # Element offsets, enumerated (a view with one more dim would break at 64 dims).
                offsets = np.full((), arr.offset, np.int64)
                for n, st_ in zip(a.shape, a.strides):
                    offsets = np.add.outer(offsets, np.arange(n, dtype=np.int64) * st_)
                mask[offsets.reshape(-1, 1) + np.arange(a.itemsize)] = True
        now = np.frombuffer(buf.raw.tobytes(), np.uint8)
        was = np.frombuffer(buf.before, np.uint8)
        assert np.array_equal(now[~mask], was[~mask]), "bytes outside the arrays were written"


@pytest.fixture(autouse=True)
def _restore_threads():
    n = _C.get_num_threads() if hasattr(_C, "get_num_threads") else None
    yield
    if n is not None:
        _C.set_num_threads(n)


def draw_threads(data):
    if hasattr(_C, "set_num_threads"):
        _C.set_num_threads(data.draw(st.sampled_from([1, 1, 2, 3]), label="threads"))


def rng_from(data):
    return np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))


def maybe_wrong_arity(data, args):
    """Occasionally drop, add or shuffle arguments; returns (args, arity_ok)."""
    what = data.draw(st.sampled_from(["same"] * 12 + ["drop", "extra", "none", "shuffle"]), label="arity")
    if what == "drop":
        return args[:-1], False
    if what == "extra":
        return args + [None], False
    if what == "none":
        return [], False
    if what == "shuffle" and len(args) > 1:
        return args[1:] + args[:1], None  # may or may not be valid: only "no crash" is checked
    return args, True


# ----------------------------------------------------------------------------------------
# The five entry points


@FUZZ
@given(st.data())
def test_fuzz_total_norm(data):
    draw_threads(data)
    rng = rng_from(data)
    p = data.draw(params(rng, grads_source=False), label="tensors")
    norm_type = data.draw(scalars(), label="norm_type")
    flag, truth = data.draw(st.sampled_from(BOOLS), label="error_if_nonfinite")
    bufs = all_buffers(p)
    snapshot(bufs)
    args, arity_ok = maybe_wrong_arity(data, [p.obj, norm_type.value, flag])
    ok, result = call(_C.total_norm, *args)
    note(f"ok={ok} result={result!r}")
    assert_buffers_unchanged(bufs)  # reads only, whatever happened
    pv = norm_type.real
    valid = (
        arity_ok is True and pv is not None and not math.isnan(pv) and truth is not None
        and arrays_valid(p, write=False, allow_complex=True, norm_p=pv)
    )
    if arity_ok is None:
        return
    if not valid:
        assert not ok, "invalid input accepted"
        return
    arrays_ = [a.array for a in resolved(p)]
    expected = ref_total(arrays_, pv)
    single = single_precision(arrays_)
    if truth and not math.isfinite(rounded_total(expected, single)):
        assert not ok and isinstance(result, RuntimeError), result
        return
    assert ok, f"valid input rejected: {result!r}"
    assert_total_close(result, expected, single)


@FUZZ
@given(st.data())
def test_fuzz_total_norm_and_coef(data):
    draw_threads(data)
    rng = rng_from(data)
    p = data.draw(params(rng, grads_source=True), label="parameters")
    max_norm = data.draw(scalars(), label="max_norm")
    norm_type = data.draw(scalars(), label="norm_type")
    flag, truth = data.draw(st.sampled_from(BOOLS), label="error_if_nonfinite")
    need, need_truth = data.draw(st.sampled_from(BOOLS), label="need_write")
    bufs = all_buffers(p)
    snapshot(bufs)
    args, arity_ok = maybe_wrong_arity(data, [p.obj, max_norm.value, norm_type.value, flag, need])
    ok, result = call(_C.total_norm_and_coef, *args)
    note(f"ok={ok} result={result!r}")
    assert_buffers_unchanged(bufs)
    if arity_ok is None:
        return
    pv, mv = norm_type.real, max_norm.real
    valid = (
        arity_ok and pv is not None and not math.isnan(pv) and mv is not None and mv >= 0
        and truth is not None and need_truth is not None
        and arrays_valid(p, write=bool(need_truth), allow_complex=True, norm_p=pv)
    )
    if not valid:
        assert not ok, "invalid input accepted"
        return
    arrays_ = [a.array for a in resolved(p)]
    expected = ref_total(arrays_, pv)
    single = single_precision(arrays_)
    if truth and not math.isfinite(rounded_total(expected, single)):
        assert not ok and isinstance(result, RuntimeError), result
        return
    assert ok, f"valid input rejected: {result!r}"
    total, coef, unit = result
    assert_total_close(total, expected, single)
    assert isinstance(coef, float)
    expected_coef = ref_coef(float(total), mv, single)
    assert coef == expected_coef or (math.isnan(coef) and math.isnan(expected_coef))
    real = not any(np.iscomplexobj(a) for a in arrays_)
    assert unit is (coef == 1.0 and pv > 0 and math.isfinite(float(total)) and real)


@FUZZ
@given(st.data())
def test_fuzz_clip_grad_norm(data):
    draw_threads(data)
    rng = rng_from(data)
    p = data.draw(params(rng, grads_source=True), label="parameters")
    max_norm = data.draw(scalars(), label="max_norm")
    norm_type = data.draw(scalars(), label="norm_type")
    flag, truth = data.draw(st.sampled_from(BOOLS), label="error_if_nonfinite")
    bufs = all_buffers(p)
    snapshot(bufs)
    copies, views = reference_buffers(p)
    args, arity_ok = maybe_wrong_arity(data, [p.obj, max_norm.value, norm_type.value, flag])
    ok, result = call(_C.clip_grad_norm, *args)
    note(f"ok={ok} result={result!r}")
    if not ok:
        assert_buffers_unchanged(bufs)
    if arity_ok is None:
        return
    pv, mv = norm_type.real, max_norm.real
    valid = (
        arity_ok and pv is not None and not math.isnan(pv) and mv is not None and mv >= 0
        and truth is not None and arrays_valid(p, write=True, allow_complex=True, norm_p=pv)
    )
    if not valid:
        assert not ok, "invalid input accepted"
        return
    expected = ref_total([v.copy() for v in views], pv)
    single = single_precision(views)
    if truth and not math.isfinite(rounded_total(expected, single)):
        assert not ok and isinstance(result, RuntimeError), result
        return
    assert ok, f"valid input rejected: {result!r}"
    assert_total_close(result, expected, single)
    coef = ref_coef(float(result), mv, single)
    for v in views:  # in list order, on the copies: aliases see earlier writes
        ref_scale_inplace(v, coef)
    assert_matches_reference(p, copies)


@FUZZ
@given(st.data())
def test_fuzz_clip_grads_with_norm(data):
    draw_threads(data)
    rng = rng_from(data)
    p = data.draw(params(rng, grads_source=True), label="parameters")
    max_norm = data.draw(scalars(), label="max_norm")
    total = data.draw(scalars(), label="total_norm")
    flag, truth = data.draw(st.sampled_from(BOOLS), label="single")
    bufs = all_buffers(p)
    snapshot(bufs)
    copies, views = reference_buffers(p)
    args, arity_ok = maybe_wrong_arity(data, [p.obj, max_norm.value, total.value, flag])
    ok, result = call(_C.clip_grads_with_norm, *args)
    note(f"ok={ok} result={result!r}")
    if not ok:
        assert_buffers_unchanged(bufs)
    if arity_ok is None:
        return
    mv, tv = max_norm.real, total.real
    valid = (
        arity_ok and mv is not None and mv >= 0 and tv is not None and not tv < 0  # NaN passes
        and truth is not None and arrays_valid(p, write=True, allow_complex=True)
    )
    if not valid:
        assert not ok, "invalid input accepted"
        return
    assert ok, f"valid input rejected: {result!r}"
    assert result is None
    coef = ref_coef(tv, mv, truth)
    for v in views:
        ref_scale_inplace(v, coef)
    assert_matches_reference(p, copies)


@FUZZ
@given(st.data())
def test_fuzz_clip_grad_value(data):
    draw_threads(data)
    rng = rng_from(data)
    p = data.draw(params(rng, grads_source=True, allow_complex=False), label="parameters")
    clip_value = data.draw(scalars(), label="clip_value")
    bufs = all_buffers(p)
    snapshot(bufs)
    copies, views = reference_buffers(p)
    args, arity_ok = maybe_wrong_arity(data, [p.obj, clip_value.value])
    ok, result = call(_C.clip_grad_value, *args)
    note(f"ok={ok} result={result!r}")
    if not ok:
        assert_buffers_unchanged(bufs)
    if arity_ok is None:
        return
    cv = clip_value.real
    valid = arity_ok and cv is not None and cv >= 0 and arrays_valid(p, write=True, allow_complex=False)
    if not valid:
        assert not ok, "invalid input accepted"
        return
    assert ok, f"valid input rejected: {result!r}"
    for v in views:
        ref_clamp_inplace(v, cv)
    assert_matches_reference(p, copies)


# ----------------------------------------------------------------------------------------
# Every callable in _C (the optimizer kernels too): random objects, no crash, no change


JUNK = [None, 0, 1, -1, 2.5, math.nan, INF, "x", b"y", (), [], {}, True, 1j, object(), FloatRaises(),
        BoolRaises(), np.float32(1.0), np.array(1.0, np.float32), np.array([1.0, 2.0]), 10**400]


@st.composite
def junk_lists(draw, rng):
    n = draw(st.integers(0, 3))
    out = []
    for _ in range(n):
        if draw(st.booleans()):
            out.append(draw(arrays(REAL_DTYPES * 3 + INVALID_DTYPES, rng)))
        else:
            out.append(draw(st.sampled_from(JUNK + [None, None])))
    return out


def _entry_points():
    return sorted(
        name for name in dir(_C)
        if not name.startswith("_") and callable(getattr(_C, name))
    )


@FUZZ
@given(st.data())
def test_fuzz_any_entry_point_with_junk(data):
    """Random argument objects and counts for every entry point; lists of arrays shared
    between arguments (aliasing operands) included. Raises or returns; on raise nothing
    changed."""
    rng = rng_from(data)
    name = data.draw(st.sampled_from(_entry_points()), label="entry point")
    pool_arrays = []
    args = []
    for _ in range(data.draw(st.integers(0, 17), label="nargs")):
        kind = data.draw(st.sampled_from(["junk", "list", "list", "same_list", "array"]))
        if kind == "junk":
            args.append(data.draw(st.sampled_from(JUNK)))
        elif kind == "array":
            arr = data.draw(arrays(REAL_DTYPES + INVALID_DTYPES, rng))
            pool_arrays.append(arr)
            args.append(arr.array)
        elif kind == "same_list" and args and isinstance(args[-1], list):
            args.append(list(args[-1]))  # the same arrays as another operand
        else:
            lst = data.draw(junk_lists(rng))
            pool_arrays += [a for a in lst if isinstance(a, Arr)]
            args.append([a.array if isinstance(a, Arr) else a for a in lst])
    buffers = list({id(a.buffer): a.buffer for a in pool_arrays}.values())
    snapshot(buffers)
    lists_before = [list(a) if isinstance(a, list) else None for a in args]
    ok, result = call(getattr(_C, name), *args)
    note(f"{name}: ok={ok} result={result!r}")
    if not ok:
        assert_buffers_unchanged(buffers)
        for a, before in zip(args, lists_before):
            if before is not None:
                assert len(a) == len(before) and all(x is y for x, y in zip(a, before))


def test_entry_points_are_the_documented_ones():
    """The fuzz above covers whatever _C exports; the five reference-checked ones must exist."""
    for name in ("total_norm", "total_norm_and_coef", "clip_grad_norm", "clip_grads_with_norm", "clip_grad_value"):
        assert callable(getattr(_C, name))


# ----------------------------------------------------------------------------------------
# A .grad property that mutates the list being collected


class Mutator:
    def __init__(self, target, action):
        self.target, self.action = target, action

    @property
    def grad(self):
        self.action(self.target)
        return np.array([2.0, -2.0])


@pytest.mark.parametrize(
    "action",
    [lambda lst: lst.clear(), lambda lst: lst.extend([np.ones(3)] * 50), lambda lst: lst.pop(),
     lambda lst: lst.insert(0, "junk"), lambda lst: lst.__setitem__(0, None)],
    ids=["clear", "extend", "pop", "insert", "replace"],
)
@pytest.mark.parametrize("entry", ["clip_grad_norm", "clip_grads_with_norm", "clip_grad_value", "total_norm_and_coef"])
def test_grad_property_that_mutates_the_list(entry, action):
    """The C layer re-reads the list after running Python code: no use-after-free, no crash.
    The outcome (success or a clean exception) is whatever the list holds when read."""
    first = np.array([30.0, -40.0])
    lst = [first, None]
    lst[1] = Mutator(lst, action)
    lst.append(np.array([5.0]))
    args = {
        "clip_grad_norm": (lst, 1.0, 2.0, False),
        "clip_grads_with_norm": (lst, 1.0, 100.0, False),
        "clip_grad_value": (lst, 0.5),
        "total_norm_and_coef": (lst, 1.0, 2.0, False, False),
    }[entry]
    before = first.copy()
    ok, result = call(getattr(_C, entry), *args)
    if not ok:
        np.testing.assert_array_equal(first, before)


# ----------------------------------------------------------------------------------------
# A scalar argument whose __float__ / __bool__ mutates the containers being parsed

_MUTATING_SCALAR = r"""
import sys
import numpy as np
from gradclip import _C

class Evil:
    '''A number whose conversion empties the list of groups (or parameters) being parsed.'''
    def __init__(self, target, value):
        self.target, self.value = target, value
    def __float__(self):
        self.target.clear()
        return float(self.value)
    def __bool__(self):
        self.target.clear()
        return bool(self.value)

def group_sgd(lr):
    return ([np.ones(3)], [np.ones(3)], [None], lr, 0.0, 0.0, 0.0, False, False)

def group_adam(amsgrad):
    z = lambda: [np.zeros(3)]
    return ([np.ones(3)], [np.ones(3)], z(), z(), z(), [np.array(0.0, np.float32)], amsgrad,
            0.9, 0.999, 1e-3, 0.0, 1e-8, False, False)

def group_nadam(maximize):
    z = lambda: [np.zeros(3)]
    s = lambda v: [np.array(v, np.float32)]
    return ([np.ones(3)], [np.ones(3)], z(), z(), s(0.0), s(1.0), 0.9, 0.999, 1e-3, 0.0, 4e-3, 1e-8, False,
            maximize)

def group_asgd(lr):
    s = lambda v: [np.array(v, np.float32)]
    return ([np.ones(3)], [np.ones(3)], [np.zeros(3)], s(0.0), s(0.01), s(1.0), 1e-4, lr, 1e6, 0.75, 0.0, False)

case = sys.argv[1]
target = []
if case == "sgd_step":
    target += [group_sgd(0.1), group_sgd(Evil(target, 0.1))]
    call = lambda: _C.sgd_step(target, None, True)
elif case == "adam_step":
    target += [group_adam(False), group_adam(Evil(target, False))]
    call = lambda: _C.adam_step(target, None, True)
elif case == "average_step":
    target += [([np.ones(3)], [np.ones(3)], False, 0.5), ([np.ones(3)], [np.ones(3)], Evil(target, True), 3)]
    call = lambda: _C.average_step(target, None, False)
elif case == "nadam_step":
    target += [group_nadam(False), group_nadam(Evil(target, False))]
    call = lambda: _C.nadam_step(target, None, True)
elif case == "asgd_step":
    target += [group_asgd(0.01), group_asgd(Evil(target, 0.01))]
    call = lambda: _C.asgd_step(target, None, True)
elif case == "clip_grad_norm":
    target += [np.ones(3), np.ones(4)]
    call = lambda: _C.clip_grad_norm(target, Evil(target, 1.0), 2.0, False)
elif case == "total_norm":
    target += [np.ones(3), np.ones(4)]
    call = lambda: _C.total_norm(target, Evil(target, 2.0), Evil(target, False))
elif case == "clip_grad_value":
    target += [np.ones(3), np.ones(4)]
    call = lambda: _C.clip_grad_value(target, Evil(target, 0.5))
try:
    call()
    print("returned")
except Exception as exc:
    print("raised", type(exc).__name__, str(exc).encode("ascii", "replace").decode())
"""

@pytest.mark.parametrize(
    "entry",
    ["sgd_step", "adam_step", "average_step", "nadam_step", "asgd_step", "clip_grad_norm", "total_norm",
     "clip_grad_value"],
)
def test_scalar_whose_conversion_mutates_the_arguments(entry):
    """No entry point may keep borrowed references across a conversion that runs Python code.
    (The optimizer glue did: a use-after-free, fixed in 581ca1e.)

    Run in a subprocess with PYTHONMALLOC=debug, which fills freed memory so that a
    use-after-free crashes deterministically instead of reading stale data."""
    import subprocess
    import sys

    if not hasattr(_C, entry):
        pytest.skip(f"_C has no {entry}")
    env = dict(os.environ, PYTHONMALLOC="debug", PYTHONFAULTHANDLER="1")
    proc = subprocess.run(
        [sys.executable, "-c", _MUTATING_SCALAR, entry], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 0, f"crashed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    out = proc.stdout.strip()
    assert out == "returned" or out.startswith(("raised TypeError", "raised ValueError", "raised RuntimeError")), out


# ----------------------------------------------------------------------------------------
# The optimizer entry points: random groups, validated as a whole, against float64 NumPy

OPT_VALUES = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -2.25, 0.125, 10.0, -40.0])


@dataclass
class Operand:
    array: object  # ndarray, None or junk
    valid: bool
    written: bool = False


@st.composite
def operand_array(draw, rng, dtype, shape, *, junk_ok=True):
    """An array like `shape`/`dtype`, sometimes not (wrong dtype/shape/layout, read-only, junk)."""
    kind = draw(st.sampled_from(["ok"] * 12 + ["strided", "reversed", "read_only", "dtype", "shape",
                                               "unaligned", "junk"]))
    values = rng.choice(OPT_VALUES, size=shape)
    if kind == "junk" and junk_ok:
        return Operand(draw(st.sampled_from([None, 1.5, "x", [1.0]])), False)
    if kind == "dtype":
        other = draw(st.sampled_from([d for d in REAL_DTYPES if d != dtype] + INVALID_DTYPES[:4]))
        return Operand(values.astype(other), False)
    if kind == "shape":
        return Operand(np.zeros(shape + (2,), dtype), False)
    if kind == "strided" and shape:
        big = np.zeros((shape[0] * 2,) + shape[1:], dtype)
        a = big[::2]
        a[...] = values
        return Operand(a, True)
    if kind == "reversed":
        a = values.astype(dtype)[::-1] if shape else values.astype(dtype)
        return Operand(a, True)
    if kind == "unaligned" and dtype.itemsize > 1 and math.prod(shape) > 0:
        raw = np.zeros(math.prod(shape) * dtype.itemsize + 1, np.uint8)
        a = raw[1:].view(dtype).reshape(shape)
        a[...] = values
        return Operand(a, False)
    a = values.astype(dtype)
    if kind == "read_only":
        a.flags.writeable = False
        return Operand(a, "read_only")
    return Operand(a, True)


def _real(s: Scalar):
    return s.real is not None


@st.composite
def hyper(draw, choices):
    """Mostly a plain valid value, sometimes any scalar (valid or not)."""
    if draw(st.integers(0, 9)) == 0:
        return draw(scalars())
    v = draw(st.sampled_from(choices))
    return Scalar(v, v)


def _ref_round(x, dtype):
    with np.errstate(all="ignore"):
        return np.asarray(x, np.float64).astype(dtype)


def _snapshot_operands(groups):
    out = []
    for g in groups:
        for item in g:
            for op in item:
                if isinstance(op.array, np.ndarray):
                    out.append((op.array, op.array.copy()))
    return out


def _assert_snapshot_unchanged(snap):
    for a, before in snap:
        assert a.tobytes() == before.tobytes(), "an array changed although the call raised"


def _operands_ok(param, operands):
    """The documented rules for one parameter's operands: float16/32/64 in native order,
    the parameter's dtype and shape, aligned, writable where written, no shared memory."""
    if not isinstance(param, np.ndarray):
        return False
    seen = []
    for a, written in operands:
        if not isinstance(a, np.ndarray) or a.dtype not in REAL_DTYPES or not a.dtype.isnative:
            return False
        if a.dtype != param.dtype or a.shape != param.shape or not a.flags.aligned:
            return False
        if written and not a.flags.writeable:
            return False
        if a.size and any(b.size and np.shares_memory(a, b) for b in seen):
            return False
        seen.append(a)
    return True


def _close(actual, expected, dtype):
    # Loose enough for a few roundings to the dtype per operation (torch's order is the
    # kernel's business; the reference here is plain float64), tight enough to catch a wrong
    # formula, a skipped element or a wrong operand.
    rtol = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}[dtype]
    atol = {np.dtype(np.float16): 1e-2, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}[dtype]
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol)


def _bad_or_real_scales():
    """grad_scale values for the optimizer fuzzers: scalars() without its 1-tuple, which the
    kernels take as the per-group form (one scale per group: valid when there is one group, as
    clip_and_step(per_group=True) passes it; tested in the per-group tests), not a bad scalar."""
    return scalars().filter(lambda s: not isinstance(s.value, tuple))


@FUZZ
@given(st.data())
def test_fuzz_sgd_step(data):
    if not hasattr(_C, "sgd_step"):
        pytest.skip("no sgd_step")
    draw_threads(data)
    rng = rng_from(data)
    draw = data.draw
    scale = draw(st.sampled_from([None, None, Scalar(0.5, 0.5), Scalar(1.0, 1.0)]) | _bad_or_real_scales(), label="grad_scale")
    if scale is not None and scale.value is None:
        scale = None  # None is "no scaling", not a bad scalar
    write_back, wb = draw(st.sampled_from(BOOLS), label="write_back")
    groups_args, model, valid = [], [], wb is not None and (scale is None or _real(scale))
    for _ in range(draw(st.integers(0, 3), label="ngroups")):
        lr = draw(hyper([0.0, 0.1, 1.0, 1e-3]))
        momentum = draw(hyper([0.0, 0.0, 0.9]))
        dampening = draw(hyper([0.0, 0.1]))
        wd = draw(hyper([0.0, 0.01]))
        nesterov, nv = draw(st.sampled_from(BOOLS[:6]))
        maximize, mx = draw(st.sampled_from(BOOLS[:6]))
        valid &= all(_real(s) for s in (lr, momentum, dampening, wd))
        uses_momentum = _real(momentum) and momentum.real != 0.0
        params, grads, bufs, items = [], [], [], []
        for _ in range(draw(st.integers(0, 3))):
            dtype = draw(st.sampled_from(REAL_DTYPES))
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
            p = draw(operand_array(rng, dtype, shape))
            g = draw(operand_array(rng, dtype, shape))
            if draw(st.booleans()):
                b = Operand(None, True)
            else:
                b = draw(operand_array(rng, dtype, shape))
            if draw(st.integers(0, 15)) == 0 and isinstance(p.array, np.ndarray):
                g = Operand(p.array, True)  # one parameter's operands must not share memory
            g_written = scale is not None and wb is True
            valid &= _operands_ok(p.array, [(p.array, True), (g.array, g_written)]
                                  + ([(b.array, True)] if uses_momentum and b.array is not None else []))
            params.append(p.array)
            grads.append(g.array)
            bufs.append(b.array)
            items.append((p, g, b))
        lists_kind = draw(st.sampled_from(["list"] * 8 + ["tuple", "short"]))
        if lists_kind == "tuple":
            bufs_obj = tuple(bufs)
            valid &= not uses_momentum  # momentum buffers must be a list (they are replaced)
        elif lists_kind == "short" and bufs:
            bufs_obj = bufs[:-1]
            valid &= not uses_momentum
        else:
            bufs_obj = bufs
        group = (params, grads, bufs_obj, lr.value, momentum.value, dampening.value, wd.value, nesterov, maximize)
        if draw(st.integers(0, 30)) == 0:
            group = group[:-1]
            valid = False
        groups_args.append(group)
        model.append((items, lr, momentum, dampening, wd, nv, mx, uses_momentum))
    snap = _snapshot_operands([[it for it in m[0]] for m in model])
    bufs_before = [list(g[2]) if len(g) > 2 and isinstance(g[2], list) else None for g in groups_args]
    ok, result = call(_C.sgd_step, groups_args, scale.value if scale is not None else None, write_back)
    note(f"ok={ok} result={result!r} valid={valid}")
    event(f"sgd ok={ok}")
    if not ok:
        _assert_snapshot_unchanged(snap)
        for g, before in zip(groups_args, bufs_before):
            if before is not None:
                assert all(x is y for x, y in zip(g[2], before)), "a buffer list changed although the call raised"
        assert not valid, f"valid input rejected: {result!r}"
        return
    assert valid, "invalid input accepted"
    for (items, lr, momentum, dampening, wd, nv, mx, uses_momentum), group in zip(model, groups_args):
        for i, (p, g, b) in enumerate(items):
            dtype = p.array.dtype
            p0 = dict((id(a), c) for a, c in snap)[id(p.array)].astype(np.float64)
            g0 = dict((id(a), c) for a, c in snap)[id(g.array)].astype(np.float64)
            if scale is not None:
                # As clip_grads_with_norm_ scales: the coefficient in float32 for float16/32.
                gs = g0.astype(dtype)
                ref_scale_inplace(gs, scale.real)
                g0 = gs.astype(np.float64)
                if wb:
                    _close(g.array, g0, dtype)
            with np.errstate(all="ignore"):
                d = -g0 if mx else g0
                if wd.real != 0:
                    d = d + wd.real * p0
                if uses_momentum:
                    if b.array is None:
                        buf = d
                    else:
                        b0 = dict((id(a), c) for a, c in snap)[id(b.array)].astype(np.float64)
                        buf = momentum.real * b0 + (1 - dampening.real) * d
                    if all(np.isfinite(_ref_round(x, dtype)).all() for x in (buf, momentum.real, dampening.real)):
                        _close(group[2][i], buf, dtype)
                    d = d + momentum.real * buf if nv else buf
                expected = p0 - lr.real * d
            hypers = [lr.real, momentum.real, dampening.real, wd.real]
            if not all(np.isfinite(_ref_round(x, dtype)).all() for x in hypers + [g0, d, expected]):
                continue  # inf/NaN details depend on torch's operation order: torch parity owns them
            _close(p.array, expected, dtype)


@FUZZ
@given(st.data())
def test_fuzz_adam_step(data):
    if not hasattr(_C, "adam_step"):
        pytest.skip("no adam_step")
    draw_threads(data)
    rng = rng_from(data)
    draw = data.draw
    scale = draw(st.sampled_from([None, None, Scalar(0.5, 0.5)]) | _bad_or_real_scales(), label="grad_scale")
    if scale is not None and scale.value is None:
        scale = None
    write_back, wb = draw(st.sampled_from(BOOLS), label="write_back")
    groups_args, model, valid = [], [], wb is not None and (scale is None or _real(scale))
    for _ in range(draw(st.integers(0, 3), label="ngroups")):
        amsgrad, ams = draw(st.sampled_from(BOOLS))
        b1, b2 = draw(hyper([0.9, 0.5])), draw(hyper([0.999, 0.9]))
        lr, wd, eps = draw(hyper([1e-3, 0.1])), draw(hyper([0.0, 0.01])), draw(hyper([1e-8, 1e-3]))
        maximize, mx = draw(st.sampled_from(BOOLS[:6]))
        decoupled, dec = draw(st.sampled_from(BOOLS[:6]))
        valid &= ams is not None and all(_real(x) for x in (b1, b2, lr, wd, eps))
        lists = [[] for _ in range(6)]
        items = []
        for _ in range(draw(st.integers(0, 3))):
            dtype = draw(st.sampled_from(REAL_DTYPES))
            shape = tuple(draw(st.lists(st.integers(0, 4), max_size=2)))
            ops = [draw(operand_array(rng, dtype, shape)) for _ in range(5)]
            for k in (3, 4):  # second moments are non-negative
                if isinstance(ops[k].array, np.ndarray) and ops[k].array.dtype.kind == "f" and ops[k].array.flags.writeable:
                    np.abs(ops[k].array, out=ops[k].array)
            if draw(st.integers(0, 15)) == 0 and isinstance(ops[0].array, np.ndarray):
                ops[2] = Operand(ops[0].array, True)  # shares memory with the parameter
            step = draw(st.sampled_from(
                [np.array(0.0, np.float32)] * 6 + [np.array(4.0, np.float32), np.array(0.0), 1.0, None]
            ))
            if isinstance(step, np.ndarray):
                step = step.copy()
                if draw(st.integers(0, 9)) == 0:
                    step.flags.writeable = False
            g_written = scale is not None and wb is True
            nops = 5 if ams else 4
            used = [(ops[0].array, True), (ops[1].array, g_written)] + [(ops[k].array, True) for k in range(2, nops)]
            valid &= _operands_ok(ops[0].array, used)
            valid &= (isinstance(step, np.ndarray) and step.dtype == np.float32 and step.ndim == 0
                      and step.flags.writeable)
            for k in range(5):
                lists[k].append(ops[k].array)
            lists[5].append(step)
            items.append((ops, step))
        group = (*lists, amsgrad, b1.value, b2.value, lr.value, wd.value, eps.value, maximize, decoupled)
        groups_args.append(group)
        model.append((items, ams, b1, b2, lr, wd, eps, mx, dec))
    arrays_watched = [op for m in model for ops, step in m[0] for op in ops + [Operand(step, True)]]
    snap = [(op.array, op.array.copy()) for op in arrays_watched if isinstance(op.array, np.ndarray)]
    before = {id(a): c for a, c in snap}
    ok, result = call(_C.adam_step, groups_args, scale.value if scale is not None else None, write_back)
    note(f"ok={ok} result={result!r} valid={valid}")
    event(f"adam ok={ok}")
    if not ok:
        _assert_snapshot_unchanged(snap)
        assert not valid, f"valid input rejected: {result!r}"
        return
    assert valid, "invalid input accepted"
    for items, ams, b1, b2, lr, wd, eps, mx, dec in model:
        for ops, step in items:
            p, g, m, v, vmax = (op.array for op in ops)
            dtype = p.dtype
            f64 = lambda a: before[id(a)].astype(np.float64)  # noqa: E731
            p0, g0, m0, v0 = f64(p), f64(g), f64(m), f64(v)
            if scale is not None:
                gs = g0.astype(dtype)
                ref_scale_inplace(gs, scale.real)
                g0 = gs.astype(np.float64)
                if wb:
                    _close(g, g0, dtype)
            s = float(before[id(step)]) + 1.0
            assert float(step) == np.float32(s)
            r = lambda x: _ref_round(x, dtype).astype(np.float64)  # noqa: E731 - a stored value
            with np.errstate(all="ignore"):
                d = -g0 if mx else g0
                if wd.real != 0:
                    if dec:
                        p0 = r(p0 * (1 - lr.real * wd.real))
                    else:
                        d = r(d + wd.real * p0)
                m1 = r(m0 + (1 - b1.real) * (d - m0))
                v1 = r(b2.real * v0 + (1 - b2.real) * d * d)
                one = np.float64(1.0)
                bc1, bc2 = one - np.float64(b1.real) ** s, one - np.float64(b2.real) ** s
                second = r(np.maximum(f64(vmax), v1)) if ams else v1
                expected = r(p0 - (lr.real / bc1) * m1 / (np.sqrt(second) / np.sqrt(bc2) + eps.real))
            if not all(np.isfinite(x).all() for x in (g0, d, m1, v1, second, expected, bc1, bc2)):
                # Which of inf/NaN comes out depends on the exact operation order (torch's lerp
                # and fma forms); the torch-parity tests own that. Here: finite cases only.
                continue
            _close(m, m1, dtype)
            _close(v, v1, dtype)
            if ams:
                _close(vmax, second, dtype)
            _close(p, expected, dtype)


# ----------------------------------------------------------------------------------------
# with_grads: an optimizer step's gathering


class _MutatingParameter(Parameter):
    """A Parameter whose .grad runs code that changes the list being gathered."""

    __slots__ = ("_target",)

    @property
    def grad(self):
        self._target.clear()
        return np.ones(self.data.shape)


def _with_grads_reference(params, given):
    """What with_grads must return, or the exception type it must raise."""
    if not isinstance(params, (list, tuple)) or not (given is None or isinstance(given, (list, tuple))):
        return TypeError
    if given is not None and len(given) != len(params):
        return ValueError
    keys, values, grads = [], [], []
    for i, p in enumerate(params):
        if given is None:
            if not isinstance(p, Parameter):
                return TypeError
            g = p.grad
        else:
            g = given[i]
        if g is None:
            continue
        if isinstance(p, Parameter):
            v = p.data
        elif isinstance(p, np.ndarray):
            v = p
        else:
            return TypeError
        keys.append(p), values.append(v), grads.append(g)
    return keys, values, grads


@FUZZ
@given(st.data())
def test_fuzz_with_grads(data):
    rng = rng_from(data)
    n = data.draw(st.integers(0, 12), label="n")
    params = []
    for _ in range(n):
        kind = data.draw(st.sampled_from(["param", "param", "param_no_grad", "array", "junk"]))
        if kind.startswith("param"):
            p = Parameter(rng.standard_normal(data.draw(st.integers(0, 5))))
            if kind == "param":
                p.grad = np.ones(p.data.shape)
            params.append(p)
        elif kind == "array":
            params.append(rng.standard_normal(3))
        else:
            params.append(data.draw(st.sampled_from(JUNK)))
    given_kind = data.draw(st.sampled_from(["none", "list", "list", "tuple", "short", "junk"]), label="given")
    if given_kind == "none":
        given = None
    elif given_kind == "junk":
        given = data.draw(st.sampled_from([3, "ab", {1: 2}, np.ones(2)]))
    else:
        given = [data.draw(st.sampled_from([None, np.ones(3), "g", 2.0])) for _ in range(n)]
        if given_kind == "short":
            given = given[:-1] if given else [None]
        if given_kind == "tuple":
            given = tuple(given)
    container = data.draw(st.sampled_from([list, list, tuple]))
    params = container(params)
    expected = _with_grads_reference(params, given)
    ok, result = call(_C.with_grads, params, Parameter, given)
    if isinstance(expected, type):
        assert not ok and isinstance(result, expected), (result, expected)
        return
    assert ok, result
    for got, want in zip(result, expected):
        assert len(got) == len(want) and all(a is b for a, b in zip(got, want))


def test_with_grads_when_a_grad_property_empties_the_list():
    victim = _MutatingParameter.__new__(_MutatingParameter)  # its grad property has no setter
    object.__setattr__(victim, "data", np.zeros(2))
    params = [Parameter(np.zeros(2)) for _ in range(3)]
    for p in params:
        p.grad = np.zeros(2)
    params.insert(1, victim)
    victim._target = params
    keys, values, grads = _C.with_grads(params, Parameter, None)
    # The first parameter and the victim were gathered; the list was empty afterwards.
    assert params == [] and keys[0] is not victim and keys[1] is victim and len(keys) == 2
    assert values[1] is victim.data and np.array_equal(grads[1], np.ones(2))
    with pytest.raises(TypeError, match="parameter_type must be a type"):
        _C.with_grads([], "Parameter", None)
