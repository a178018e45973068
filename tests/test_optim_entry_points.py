"""The C entry points of Adagrad, RMSprop, Adadelta and Adamax trust nothing: every malformed
group is refused with an exception before any array or step counter changes."""

from __future__ import annotations

import numpy as np
import pytest

from gradclip import _C

# name -> (number of state buffers, hyper-parameters in the spec's order)
SPECS = {
    "adagrad": (1, [0.1, 0.01, 0.05, 1e-10, False]),
    "rmsprop": (3, [0.01, 0.99, 1e-8, 0.01, 0.5, True, False]),  # centered + momentum: all 5 operands
    "adadelta": (2, [1.0, 0.9, 1e-6, 0.01, False]),
    "adamax": (2, [0.002, 0.9, 0.999, 1e-8, 0.01, False]),
}


def make_group(name, dtype=np.float64, n=2, seed=0):
    nbuf, hyper = SPECS[name]
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(3 + i).astype(dtype) for i in range(n)]
    grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
    bufs = [[np.abs(rng.standard_normal(p.shape)).astype(dtype) for p in params] for _ in range(nbuf)]
    steps = [np.array(float(i), np.float32) for i in range(n)]
    return [params, grads, *bufs, steps, *hyper]


def arrays_of(groups):
    out = []
    for g in groups:
        for item in g:
            if isinstance(item, list):
                out += [a for a in item if isinstance(a, np.ndarray)]
    return out


def call(name, groups, scale=None, write_back=True):
    return getattr(_C, f"{name}_step")([tuple(g) for g in groups], scale, write_back)


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


# (description, mutation of the second group, expected exception)
MUTATIONS = [
    ("grad of another dtype", lambda g: g[1].__setitem__(1, g[1][1].astype(np.float32)), TypeError),
    ("grad of another shape", lambda g: g[1].__setitem__(1, np.zeros(9)), ValueError),
    ("grad not an array", lambda g: g[1].__setitem__(0, [1.0, 2.0, 3.0]), TypeError),
    ("state buffer None", lambda g: g[2].__setitem__(1, None), TypeError),
    ("state buffer read-only", lambda g: g[2].__setitem__(1, _ro(g[2][1])), ValueError),
    ("state buffer of another shape", lambda g: g[2].__setitem__(0, np.zeros((3, 1))), ValueError),
    ("state buffer is the parameter", lambda g: g[2].__setitem__(0, g[0][0]), ValueError),
    ("state buffer is the gradient", lambda g: g[2].__setitem__(1, g[1][1]), ValueError),
    ("parameter read-only", lambda g: g[0].__setitem__(1, _ro(g[0][1])), ValueError),
    ("parameter int64", lambda g: g[0].__setitem__(0, np.arange(3)), TypeError),
    ("state list too short", lambda g: g[2].pop(), ValueError),
    ("grads list too long", lambda g: g[1].append(np.zeros(3)), ValueError),
]


def step_mutations(name):
    nbuf = SPECS[name][0]
    k = 2 + nbuf  # index of the step list
    return [
        ("step float64", lambda g: g[k].__setitem__(1, np.array(1.0)), TypeError),
        ("step read-only", lambda g: g[k].__setitem__(1, _ro(g[k][1])), TypeError),
        ("step 1-d", lambda g: g[k].__setitem__(0, np.zeros(1, np.float32)), TypeError),
        ("step a Python float", lambda g: g[k].__setitem__(0, 1.0), TypeError),
        ("step list too short", lambda g: g[k].pop(), ValueError),
        ("hyper-parameter not a number", lambda g: g.__setitem__(k + 1, "x"), TypeError),
        ("hyper-parameter complex", lambda g: g.__setitem__(k + 1, 1j), TypeError),
        ("flag whose bool raises", lambda g: g.__setitem__(len(g) - 1, np.ones(2)), ValueError),
        ("tuple too short", lambda g: g.pop(), TypeError),
    ]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_valid_groups_step_and_count(name):
    groups = [make_group(name, np.float64), make_group(name, np.float32, seed=1)]
    before = [a.copy() for a in arrays_of(groups)]
    assert call(name, groups) == 0
    k = 2 + SPECS[name][0]
    assert [float(s) for g in groups for s in g[k]] == [1.0, 2.0, 1.0, 2.0]
    changed = [not np.array_equal(a, b) for a, b in zip(arrays_of(groups), before)]
    assert any(changed)


@pytest.mark.parametrize("name", sorted(SPECS))
@pytest.mark.parametrize("which", range(len(MUTATIONS) + 9))
def test_a_malformed_group_changes_nothing(name, which):
    cases = MUTATIONS + step_mutations(name)
    desc, mutate, exc = cases[which]
    groups = [make_group(name), make_group(name, seed=1)]
    mutate(groups[1])
    arrays = arrays_of(groups)
    before = [a.copy() for a in arrays]
    with pytest.raises(exc):
        call(name, groups, 0.5, True)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b, err_msg=desc)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_complex_parameter_with_real_state_is_refused(name):
    group = make_group(name)
    group[0][0] = group[0][0].astype(np.complex128)
    group[1][0] = group[1][0].astype(np.complex128)
    before = [a.copy() for a in arrays_of([group])]
    with pytest.raises(TypeError):
        call(name, [group])
    for a, b in zip(arrays_of([group]), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_complex_parameters_step_as_real_pairs(name):
    # The same numbers as the real view stepped as a real parameter (weight decay off: torch adds
    # it on the complex tensors, which rounds differently).
    real = make_group(name, n=1)
    hyper_wd = {"adagrad": 1, "rmsprop": 3, "adadelta": 3, "adamax": 4}[name]
    k = 2 + SPECS[name][0]
    real[k + 1 + hyper_wd] = 0.0
    cplx = [[None if a is None else a.copy() for a in lst] if isinstance(lst, list) else lst for lst in real]
    for lst in cplx[: k]:
        lst[0] = np.ascontiguousarray(lst[0][:2]).view(np.complex128) if lst[0].size >= 2 else lst[0]
    for lst in real[: k]:
        lst[0] = np.ascontiguousarray(lst[0][:2])
    call(name, [real])
    call(name, [cplx])
    for lst_r, lst_c in zip(real[:k], cplx[:k]):
        np.testing.assert_array_equal(lst_c[0].view(np.float64), lst_r[0])


@pytest.mark.parametrize("name", sorted(SPECS))
def test_groups_must_be_a_sequence_of_tuples(name):
    with pytest.raises(TypeError):
        getattr(_C, f"{name}_step")(None, None, True)
    with pytest.raises(TypeError):
        getattr(_C, f"{name}_step")([[1, 2]], None, True)
    with pytest.raises(TypeError):
        getattr(_C, f"{name}_step")([], None)
    assert getattr(_C, f"{name}_step")([], None, True) == 0


# ----------------------------------------------------------------------------------------
# Structured fuzzing: group tuples whose every slot is drawn valid or broken; the call must
# succeed exactly when every slot is valid, and change nothing when it raises.

from hypothesis import given, note  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_fuzz_c import FUZZ, draw_threads  # noqa: E402
from test_fuzz_c import call as checked_call  # noqa: E402

_OPERAND_KINDS = ["ok"] * 6 + ["strided", "fortran", "dtype", "shape", "read_only", "none", "junk", "alias"]
_STEP_KINDS = ["ok"] * 8 + ["float64", "read_only", "float", "1d"]
_HYPER_KINDS = ["ok"] * 10 + ["nan", "inf", "str", "complex"]


def _normal(rng, shape):
    return np.asarray(rng.standard_normal(shape))  # an ndarray also for shape ()


def _operand(kind, shape, dtype, rng, param, writable=True):
    if kind == "alias":
        return param, param is not None
    if kind == "none":
        return None, False
    if kind == "junk":
        return "junk", False
    if kind == "dtype":
        return _normal(rng, shape).astype(np.float32 if dtype != np.float32 else np.float64), False
    if kind == "shape":
        return _normal(rng, shape + (1,)).astype(dtype), False
    if kind == "strided":
        big = _normal(rng, tuple(2 * n for n in shape)).astype(dtype)
        a = big[tuple(slice(None, None, 2) for _ in shape) + (Ellipsis,)]  # a view, also when 0-d
    elif kind == "fortran":
        a = np.array(_normal(rng, shape), dtype=dtype, order="F")  # asfortranarray makes 0-d 1-d
    else:
        a = np.array(np.abs(_normal(rng, shape)), dtype=dtype)  # np.abs of a 0-d array is a scalar
    if kind == "read_only":
        a.flags.writeable = False
        return a, not writable
    return a, True


@FUZZ
@given(st.data())
def test_fuzz_adaptive_steps(data):
    draw = data.draw
    draw_threads(data)
    name = draw(st.sampled_from(sorted(SPECS)), label="entry point")
    nbuf, hyper = SPECS[name]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
    scale = draw(st.sampled_from([None, 0.5, 2.0]), label="grad_scale")
    write_back = draw(st.booleans(), label="write_back")
    groups, valid = [], True
    for _ in range(draw(st.integers(0, 2), label="ngroups")):
        lists = [[] for _ in range(3 + nbuf)]
        for _ in range(draw(st.integers(0, 3), label="items")):
            dtype = draw(st.sampled_from([np.float16, np.float32, np.float64, np.complex64, np.complex128]))
            shape = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
            pkind = draw(st.sampled_from(["ok", "ok", "strided", "read_only", "junk"]))
            param, ok = _operand(pkind, shape, dtype, rng, None)
            valid &= ok
            lists[0].append(param)
            param_arr = param if isinstance(param, np.ndarray) else None
            for k in range(1, 2 + nbuf):
                kind = draw(st.sampled_from(_OPERAND_KINDS))
                # the gradient may be read-only unless the clipped gradient is written back
                a, ok = _operand(kind, shape, dtype, rng, param_arr, writable=(k > 1 or (scale is not None and write_back)))
                if kind == "alias":
                    ok = False
                valid &= ok
                lists[k].append(a)
            skind = draw(st.sampled_from(_STEP_KINDS))
            step = {"ok": np.array(1.0, np.float32), "float64": np.array(1.0), "float": 1.0,
                    "1d": np.zeros(1, np.float32)}.get(skind)
            if skind == "read_only":
                step = np.array(1.0, np.float32)
                step.flags.writeable = False
            valid &= skind == "ok"
            lists[-1].append(step)
        hypers = list(hyper)
        for i in range(len(hypers)):
            kind = draw(st.sampled_from(_HYPER_KINDS))
            if isinstance(hypers[i], bool):
                continue
            hypers[i] = {"ok": hypers[i], "nan": float("nan"), "inf": float("inf"), "str": "x", "complex": 1j}[kind]
            valid &= kind in ("ok", "nan", "inf")
        groups.append((*lists, *hypers))
    watched = [a for g in groups for lst in g if isinstance(lst, list) for a in lst if isinstance(a, np.ndarray)]
    before = [a.copy() for a in watched]
    ok, result = checked_call(getattr(_C, f"{name}_step"), groups, scale, write_back)
    note(f"{name}: ok={ok} result={result!r} valid={valid}")
    if not ok:
        for a, b in zip(watched, before):
            assert np.array_equal(a, b, equal_nan=True), "changed on error"
    assert ok == valid, f"valid={valid} but ok={ok}: {result!r}"
