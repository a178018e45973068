"""Validation: torch's errors for torch's bad inputs, clear errors for NumPy-specific ones,
and nothing modified when a step is refused."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from gradclip import Parameter, optim


def same_error(make_ours, make_theirs, exc_type):
    """Both raise ``exc_type``; return the two messages."""
    with pytest.raises(exc_type) as ours:
        make_ours()
    with pytest.raises(exc_type) as theirs:
        make_theirs()
    return str(ours.value), str(theirs.value)


# -- constructor arguments: compared with what torch raises -----------------------------------------

BAD_HYPERPARAMETERS = [
    ("SGD", dict(lr=-1.0)),
    ("SGD", dict(lr=0.1, momentum=-0.5)),
    ("SGD", dict(lr=0.1, weight_decay=-1e-3)),
    ("SGD", dict(lr=0.1, nesterov=True)),  # no momentum
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)),
    ("SGD", dict(lr=-1.0, momentum=-1.0)),  # the first failing check wins
    ("Adam", dict(lr=-0.1)),
    ("Adam", dict(eps=-1e-8)),
    ("Adam", dict(betas=(1.0, 0.999))),
    ("Adam", dict(betas=(-0.1, 0.999))),
    ("Adam", dict(betas=(0.9, 1.0))),
    ("Adam", dict(weight_decay=-1.0)),
    ("Adam", dict(betas=(0.9, 1))),  # torch: both must be floats
    ("Adam", dict(betas=(0, 0.999))),
    ("AdamW", dict(lr=-1e-3)),
    ("AdamW", dict(betas=(0.9, 2.0))),
    ("AdamW", dict(weight_decay=-0.01)),
]


@pytest.mark.parametrize("name,kwargs", BAD_HYPERPARAMETERS)
def test_invalid_hyperparameters_raise_torchs_error(name, kwargs):
    ours, theirs = same_error(
        lambda: getattr(optim, name)([np.zeros(2)], **kwargs),
        lambda: getattr(torch.optim, name)([torch.zeros(2)], **kwargs),
        ValueError,
    )
    assert ours == theirs


def test_empty_parameter_list():
    for name in ("SGD", "Adam", "AdamW"):
        ours, theirs = same_error(
            lambda: getattr(optim, name)([], lr=0.1),
            lambda: getattr(torch.optim, name)([], lr=0.1),
            ValueError,
        )
        assert ours == theirs == "optimizer got an empty parameter list"


def test_parameter_in_two_groups():
    a, b = np.zeros(2), np.zeros(3)
    ta, tb = torch.zeros(2), torch.zeros(3)
    ours, theirs = same_error(
        lambda: optim.SGD([{"params": [a, b]}, {"params": [b]}], lr=0.1),
        lambda: torch.optim.SGD([{"params": [ta, tb]}, {"params": [tb]}], lr=0.1),
        ValueError,
    )
    assert ours == theirs == "some parameters appear in more than one parameter group"
    # Identity, not equality: equal arrays in two groups are distinct parameters.
    optim.SGD([{"params": [np.zeros(2)]}, {"params": [np.zeros(2)]}], lr=0.1)


@pytest.mark.parametrize("make", [lambda: np.zeros((3, 2)), lambda: Parameter(np.zeros((3, 2)))])
def test_a_bare_parameter_instead_of_an_iterable(make):
    ours, theirs = same_error(
        lambda: optim.Adam(make()), lambda: torch.optim.Adam(torch.zeros(3, 2)), TypeError
    )
    prefix = "params argument given to the optimizer should be an iterable of Tensors or dicts, but got "
    assert ours.startswith(prefix) and theirs.startswith(prefix)
    assert ours[len(prefix):] in ("numpy.ndarray", "gradclip.Parameter")


def test_params_as_a_set():
    p = Parameter(np.zeros(2))
    ours, theirs = same_error(
        lambda: optim.SGD([{"params": {p}}], lr=0.1),
        lambda: torch.optim.SGD([{"params": {torch.zeros(2)}}], lr=0.1),
        TypeError,
    )
    assert ours == theirs


def test_add_param_group_needs_a_dict():
    opt = optim.SGD([np.zeros(2)], lr=0.1)
    topt = torch.optim.SGD([torch.zeros(2)], lr=0.1)
    ours, theirs = same_error(
        lambda: opt.add_param_group([np.zeros(2)]),
        lambda: topt.add_param_group([torch.zeros(2)]),
        TypeError,
    )
    assert ours == theirs


def test_some_names_missing():
    ours, theirs = same_error(
        lambda: optim.SGD([("w", np.zeros(2)), np.zeros(2)], lr=0.1),
        lambda: torch.optim.SGD([("w", torch.zeros(2)), torch.zeros(2)], lr=0.1),
        ValueError,
    )
    assert ours == theirs


def test_duplicate_parameter_in_a_group_warns_like_torch():
    a, ta = np.zeros(2), torch.zeros(2)
    with pytest.warns(UserWarning) as ours:
        optim.SGD([a, a], lr=0.1)
    with pytest.warns(UserWarning) as theirs:
        torch.optim.SGD([ta, ta], lr=0.1)
    assert str(ours[0].message) == str(theirs[0].message)


@pytest.mark.parametrize(
    "param,exc,match",
    [
        ([1.0, 2.0], TypeError, "but one of the params is list"),
        (3.0, TypeError, "but one of the params is float"),
        (np.zeros(3, dtype=np.int64), TypeError, "dtype int64"),
        (np.zeros(3, dtype=np.clongdouble), TypeError, "dtype complex"),
        (np.zeros(3, dtype=">f8"), TypeError, "native byte order"),
    ],
)
def test_unusable_parameters(param, exc, match):
    with pytest.raises(exc, match=match):
        optim.SGD([param], lr=0.1)


def test_empty_and_zero_dimensional_parameters_are_fine():
    empty, scalar = np.zeros(0), np.array(2.0)
    tscalar = torch.tensor(2.0, dtype=torch.float64)
    opt = optim.Adam([empty, scalar], lr=0.5)
    topt = torch.optim.Adam([torch.zeros(0, dtype=torch.float64), tscalar], lr=0.5)
    for g in (1.0, -3.0):
        opt.step(grads=[np.zeros(0), np.array(g)])
        for t in topt.param_groups[0]["params"]:
            t.grad = torch.full_like(t, g)
        topt.step()
        assert scalar == tscalar.item()
    assert opt.state[empty]["exp_avg"].shape == (0,)


def test_read_only_parameter():
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    for param in (frozen, Parameter(frozen)):
        with pytest.raises(ValueError, match="read-only"):
            optim.Adam([param])


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(fused=True)),
        ("SGD", dict(differentiable=True)),
        ("Adam", dict(fused=True)),
        ("Adam", dict(capturable=True)),
        ("AdamW", dict(differentiable=True)),
    ],
)
def test_unsupported_torch_options_are_refused(name, kwargs):
    with pytest.raises(NotImplementedError, match=next(iter(kwargs))):
        getattr(optim, name)([np.zeros(2)], lr=0.1, **kwargs)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_accepted_compatibility_flags_are_stored(name):
    opt = getattr(optim, name)([np.zeros(2)], lr=0.1, foreach=True, fused=False)
    assert opt.param_groups[0]["foreach"] is True and opt.param_groups[0]["fused"] is False


# -- step-time errors: nothing is modified ----------------------------------------------------------


def snapshot(opt, grads):
    values = [np.asarray(p).copy() for g in opt.param_groups for p in g["params"]]
    dot_grads = [
        None if not isinstance(p, Parameter) or p.grad is None else p.grad.copy()
        for g in opt.param_groups
        for p in g["params"]
    ]
    given = None if grads is None else [None if x is None or not isinstance(x, np.ndarray) else x.copy() for x in grads]
    return values, dot_grads, given, copy.deepcopy(opt.state_dict())


def assert_unchanged(opt, grads, before):
    values, dot_grads, given, state = snapshot(opt, grads)
    for a, b in zip(values, before[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(dot_grads, before[1]):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_array_equal(a, b)
    if given is not None:
        for a, b in zip(given, before[2]):
            if a is not None:
                np.testing.assert_array_equal(a, b)
    for group, saved in zip(state["param_groups"], before[3]["param_groups"]):
        assert list(group) == list(saved)
        for key, value in saved.items():  # values may be arrays (a bad lr under test)
            assert np.array_equal(np.asarray(group[key], dtype=object), np.asarray(value, dtype=object)), key
    assert list(state["state"]) == list(before[3]["state"])
    for index, entry in before[3]["state"].items():
        assert list(state["state"][index]) == list(entry)
        for key, value in entry.items():
            np.testing.assert_array_equal(state["state"][index][key], value)


def warmed_up(name, dtype=np.float64):
    """An optimizer with state for some parameters (so a bad step could corrupt it)."""
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(dtype) for s in [(3,), (2, 2), (4,)]]
    kwargs = dict(momentum=0.9) if name == "SGD" else dict(amsgrad=True)
    opt = getattr(optim, name)([{"params": arrays[:2]}, {"params": arrays[2:], "lr": 0.5}], lr=0.1, **kwargs)
    opt.step(grads=[np.ones(3, dtype), np.ones((2, 2), dtype), None])
    return opt, arrays


def good_grads(arrays):
    return [np.full(a.shape, 0.5, a.dtype) for a in arrays]


BAD_GRADS = [
    ("too few", lambda a, g: g[:2], ValueError, "grads has 2 entries, but the optimizer has 3 parameters"),
    ("too many", lambda a, g: g + [None], ValueError, "grads has 4 entries"),
    ("shape", lambda a, g: g[:2] + [np.ones(5)], ValueError, r"shape \(5,\).*shape \(4,\)"),
    ("dtype", lambda a, g: g[:2] + [np.ones(4, np.float32)], TypeError, "dtype float32"),
    ("not an array", lambda a, g: g[:2] + [[1.0, 2.0, 3.0, 4.0]], TypeError, "must be a NumPy ndarray or None"),
    ("ndarray of grads", lambda a, g: np.ones((3, 4)), TypeError, "list or tuple"),
]


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
@pytest.mark.parametrize("case", BAD_GRADS, ids=[c[0] for c in BAD_GRADS])
def test_bad_grads_are_refused_before_anything_changes(case, name, clip):
    _, make_bad, exc, match = case
    opt, arrays = warmed_up(name)
    grads = make_bad(arrays, good_grads(arrays))
    before = snapshot(opt, grads if isinstance(grads, list) else None)
    with pytest.raises(exc, match=match):
        if clip:
            opt.clip_and_step(0.1, grads=grads)
        else:
            opt.step(grads=grads)
    assert_unchanged(opt, grads if isinstance(grads, list) else None, before)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_parameter_made_read_only_later(name):
    opt, arrays = warmed_up(name)
    arrays[2].flags.writeable = False  # the last one, after the others would have been updated
    grads = good_grads(arrays)
    before = snapshot(opt, grads)
    with pytest.raises(ValueError, match="read-only"):
        opt.step(grads=grads)
    assert_unchanged(opt, grads, before)


def test_parameter_data_replaced_with_another_dtype():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt = optim.Adam([p, q])
    p.grad, q.grad = np.ones(2), np.ones(3)
    opt.step()
    q.data = np.zeros(3, np.float32)  # the grad (float64) no longer matches
    before = snapshot(opt, None)
    with pytest.raises(TypeError, match="dtype float64, but the parameter has dtype float32"):
        opt.step()
    assert_unchanged(opt, None, before)


def test_plain_arrays_need_grads():
    opt = optim.SGD([Parameter(np.zeros(2)), np.zeros(2)], lr=0.1)
    with pytest.raises(TypeError, match=r"parameter 1 .* plain ndarray.*grads="):
        opt.step()


@pytest.mark.parametrize("read_only", [(0, 0), (0, 1), (1, 2)], ids=str)
def test_zero_grad_in_place_refuses_a_read_only_gradient_before_zeroing_any(read_only):
    """zero_grad(set_to_none=False) checks every gradient first: a read-only one (in any
    group, at any position) raises naming it, and no gradient has been zeroed."""
    params = [Parameter(np.ones(3)) for _ in range(5)]
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    for p in params:
        p.grad = np.full(3, 7.0)
    params[3].grad = None  # skipped, but still counted in the numbering
    group, position = read_only
    index = [0, 2][group] + position
    params[index].grad.flags.writeable = False
    with pytest.raises(ValueError, match=rf"parameter {index} \(in param_groups\[{group}\]\) is read-only"):
        opt.zero_grad(set_to_none=False)
    for p in params:
        if p.grad is not None:
            np.testing.assert_array_equal(p.grad, 7.0)
    opt.zero_grad()  # setting to None writes no array: fine
    assert all(p.grad is None for p in params)


@pytest.mark.parametrize("closure", [[np.ones(2)], (np.ones(2),), np.ones(2), 1.0])
def test_gradients_passed_to_step_positionally(closure):
    """step([dW, db]) (min-char-rnn's habit): the message says the positional argument is the
    closure and where gradients go; nothing changes."""
    w = np.zeros(2)
    opt = optim.SGD([w], lr=0.1)
    with pytest.raises(TypeError, match=r"positional argument is closure.*step\(grads=\[\.\.\.\]\)"):
        opt.step(closure)
    np.testing.assert_array_equal(w, 0.0)


def test_read_only_gradient_with_write_back():
    opt, arrays = warmed_up("Adam")
    grads = good_grads(arrays)
    grads[2].flags.writeable = False
    before = snapshot(opt, grads)
    with pytest.raises(ValueError, match="read-only"):
        opt.clip_and_step(0.1, grads=grads)
    assert_unchanged(opt, grads, before)
    # Reading it is fine: step() and clip_and_step(write_back=False) never write gradients.
    opt.clip_and_step(0.1, grads=grads, write_back=False)
    opt.step(grads=grads)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_nonfinite_norm_raises_before_clipping_or_stepping(name):
    opt, arrays = warmed_up(name)
    grads = good_grads(arrays)
    grads[2][1] = np.inf
    before = snapshot(opt, grads)
    with pytest.raises(RuntimeError, match="non-finite"):
        opt.clip_and_step(1.0, grads=grads, error_if_nonfinite=True)
    assert_unchanged(opt, grads, before)


def test_missing_amsgrad_state_after_switching_amsgrad_on():
    # torch raises this KeyError after stepping the earlier groups; here nothing has changed.
    arrays = [np.zeros(3), np.zeros(2), np.zeros(4)]
    opt = optim.Adam([{"params": arrays[:2]}, {"params": arrays[2:]}])
    opt.step(grads=good_grads(arrays))
    opt.param_groups[1]["amsgrad"] = True  # arrays[2] has no max_exp_avg_sq
    grads = good_grads(arrays)
    before = snapshot(opt, grads)
    with pytest.raises(KeyError, match="max_exp_avg_sq"):
        opt.step(grads=grads)
    assert_unchanged(opt, grads, before)


# -- hyper-parameters that are not numbers ------------------------------------------------------------

NOT_NUMBERS = ["abc", None, 1 + 0j, np.array([0.1, 0.2]), True, 10**400]


@pytest.mark.parametrize("value", NOT_NUMBERS, ids=["str", "None", "complex", "array", "bool", "huge_int"])
@pytest.mark.parametrize(
    "name,key", [("SGD", "lr"), ("SGD", "momentum"), ("SGD", "dampening"), ("Adam", "eps"), ("AdamW", "weight_decay")]
)
def test_constructor_names_a_hyperparameter_that_is_not_a_number(name, key, value):
    # torch fails on a comparison ("'<' not supported between ...") without naming it.
    if key == "lr" and isinstance(value, np.ndarray):
        # An array lr is torch's Tensor lr, which must have one element (torch's error).
        with pytest.raises(ValueError, match="^Tensor lr must be 1-element$"):
            getattr(optim, name)([np.zeros(2)], **{key: value})
        return
    with pytest.raises(TypeError, match=rf"^{key} "):
        getattr(optim, name)([np.zeros(2)], **{key: value})


@pytest.mark.parametrize("betas", [(0.9,), (0.9, 0.99, 0.999), 0.9, ("a", 0.99), (0.9, None)])
def test_betas_must_be_a_pair_of_numbers(betas):
    with pytest.raises(TypeError, match="betas"):
        optim.Adam([np.zeros(2)], betas=betas)


def test_real_numbers_of_other_types_are_accepted():
    p = np.ones(2)
    optim.SGD([p], lr=np.float32(0.5), momentum=np.array(0.5), weight_decay=0).step(grads=[np.ones(2)])
    optim.Adam([p], lr=1, betas=(np.float64(0.9), 0.999)).step(grads=[np.ones(2)])


@pytest.mark.parametrize(
    "name,key,value",
    [
        ("SGD", "lr", "abc"),
        ("SGD", "momentum", None),
        ("SGD", "maximize", np.array([True, False])),
        ("Adam", "lr", np.array([0.1, 0.2])),
        ("Adam", "betas", (0.9,)),
        ("Adam", "eps", "tiny"),
        ("AdamW", "amsgrad", np.array([True, True])),
    ],
)
def test_hyperparameter_set_on_a_later_group_is_checked_before_any_update(name, key, value):
    # Scheduler-style edits of param_groups are not validated when made (as in torch); they
    # must still be refused before the earlier groups are stepped.
    opt, arrays = warmed_up(name)
    opt.param_groups[1][key] = value
    grads = good_grads(arrays)
    before = snapshot(opt, grads)
    # An array lr is a Tensor lr of the wrong size: torch's ValueError, naming the group.
    error = ValueError if key == "lr" and isinstance(value, np.ndarray) else TypeError
    with pytest.raises(error, match=rf"param_groups\[1\]\['{key}'\]"):
        opt.step(grads=grads)
    assert_unchanged(opt, grads, before)


# -- layouts the kernels cannot update -----------------------------------------------------------------


def misaligned(n):
    return np.frombuffer(bytearray(8 * n + 1), dtype=np.float64, offset=1, count=n)


def zero_stride(n):
    return np.lib.stride_tricks.as_strided(np.zeros(1), shape=(n,), strides=(0,), writeable=True)


def odd_stride(n):
    # NumPy already calls this unaligned (float64's alignment is its size); the kernels'
    # stride check only matters where alignment is smaller than the item size.
    return np.lib.stride_tricks.as_strided(np.zeros(n + 1), shape=(n,), strides=(4,), writeable=True)


@pytest.mark.parametrize(
    "make,match",
    [(misaligned, "not aligned"), (zero_stride, "share memory"), (odd_stride, "not aligned|multiple of its item size")],
    ids=["misaligned", "broadcast", "odd_stride"],
)
def test_parameter_layouts_the_kernels_refuse(make, match):
    # Refused by the C layer when a step would write the parameter, before anything changes.
    good = np.ones(3)
    bad = make(3)
    opt = optim.SGD([good, bad], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=match):
        opt.step(grads=[np.ones(3), np.ones(3)])
    np.testing.assert_array_equal(good, 1.0)
    assert len(opt.state_dict()["state"]) == 0 or all(
        "momentum_buffer" not in s for s in opt.state_dict()["state"].values()
    )


@pytest.mark.parametrize("name", ["SGD", "Adam"])
@pytest.mark.parametrize(
    "make,match",
    [(misaligned, "not aligned"), (zero_stride, "share memory"), (odd_stride, "not aligned|multiple of its item size")],
    ids=["misaligned", "broadcast", "odd_stride"],
)
def test_gradient_layouts_are_refused_before_any_update(name, make, match):
    opt, arrays = warmed_up(name)
    grads = good_grads(arrays)
    grads[2] = make(4)
    grads[2][...] = 0.5
    before = snapshot(opt, grads)
    with pytest.raises(ValueError, match=match):
        opt.clip_and_step(0.1, grads=grads)
    assert_unchanged(opt, grads, before)
    if make is zero_stride:
        # A broadcast gradient is fine to read; it is only refused when clipping writes it.
        opt.clip_and_step(0.1, grads=grads, write_back=False)
    else:
        with pytest.raises(ValueError, match=match):
            opt.step(grads=grads)
        assert_unchanged(opt, grads, before)


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_gradient_sharing_memory_with_its_parameter(name):
    opt, arrays = warmed_up(name)
    grads = good_grads(arrays)
    grads[2] = arrays[2]  # e.g. a careless p.grad = p.data
    before = snapshot(opt, grads)
    # Checked by the C layer, which names the operands within the group's call.
    with pytest.raises(ValueError, match=r"params\[\d\] and grads\[\d\] share \(or interleave\) memory"):
        opt.step(grads=grads)
    assert_unchanged(opt, grads, before)


@pytest.mark.parametrize("name,key", [("SGD", "momentum_buffer"), ("Adam", "exp_avg_sq")])
def test_loaded_state_sharing_memory_with_the_parameter(name, key):
    opt, arrays = warmed_up(name)
    grads = [np.ones(3), np.ones((2, 2)), np.ones(4)]
    opt.step(grads=grads)  # the last parameter gets its state
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    opt.state[arrays[2]][key] = arrays[2]  # state aliasing its parameter
    before = snapshot(opt, grads)
    with pytest.raises(ValueError, match=rf"params\[\d\] and {key}s\[\d\] share \(or interleave\) memory"):
        opt.step(grads=grads)
    assert_unchanged(opt, grads, before)


def test_loaded_float64_step_counter_becomes_float32():
    # torch saves a float64 step under torch.set_default_dtype(torch.float64).
    values = [np.zeros(2)]
    opt = optim.Adam(values)
    opt.step(grads=[np.ones(2)])
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["step"] = np.array(1.0)
    fresh = [np.zeros(2)]
    other = optim.Adam(fresh)
    other.load_state_dict(sd)
    assert other.state[fresh[0]]["step"].dtype == np.float32
    other.step(grads=[np.ones(2)])
    assert other.state[fresh[0]]["step"] == 2


class _Impostor:
    """Not a Parameter, but with .grad and .data: the fast path would take it for one."""

    def __init__(self, explode: bool):
        self.data = np.zeros(3)
        self._explode = explode

    @property
    def grad(self):
        if self._explode:
            raise RuntimeError("boom")
        return np.ones(3)


@pytest.mark.parametrize("explode", [False, True])
@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_objects_slipped_into_a_group_later_are_refused(name, explode):
    """Steps gather parameters without Python checks and let the kernels validate; anything
    the kernels would accept but the constructor would not is still refused, by name."""
    p = Parameter(np.zeros(3))
    p.grad = np.ones(3)
    opt = getattr(optim, name)([p], lr=0.1)
    opt.step()
    opt.param_groups[0]["params"].append(_Impostor(explode))
    before = p.data.copy(), copy.deepcopy(opt.state_dict()["state"])
    with pytest.raises(TypeError, match=r"parameter 1 \(in param_groups\[0\]\) is _Impostor|"
                                        r"but parameter 1 \(in param_groups\[0\]\) is .*_Impostor"):
        opt.step()
    np.testing.assert_array_equal(p.data, before[0])
    for key, value in opt.state[p].items():
        np.testing.assert_array_equal(value, before[1][0][key])


def test_a_group_whose_params_became_a_tuple_still_steps():
    p = Parameter(np.zeros(3))
    p.grad = np.ones(3)
    opt = optim.SGD([p], lr=0.5)
    opt.param_groups[0]["params"] = tuple(opt.param_groups[0]["params"])
    opt.step()
    np.testing.assert_array_equal(p.data, -0.5)
