"""Optimizer state: state_dict layout (compared with torch's key by key), round trips, loading."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
import torch

from gradclip import Parameter, optim

CONFIGS = [
    ("SGD", dict(momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(momentum=0.9, nesterov=True, maximize=True)),
    ("SGD", dict()),  # no momentum: no state at all
    ("Adam", dict(amsgrad=True, weight_decay=1e-2)),
    ("Adam", dict(betas=(0.8, 0.99), decoupled_weight_decay=True, weight_decay=0.1)),
    ("AdamW", dict(maximize=True)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]
SHAPES = [(3, 4), (5,), (2, 3), (4,)]


def make_values(dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    values[0] = np.asfortranarray(values[0])  # state arrays must follow any layout
    return values


def grad_steps(n, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    steps = []
    for k in range(n):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        grads[3] = None  # parameter 3 never gets a gradient: it never gets state
        if k == 0:
            grads[2] = None  # parameter 2 gets its state one step late
        steps.append(grads)
    return steps


def groups(params):
    return [{"params": params[:2]}, {"params": params[2:], "lr": 0.003}]


def make(name, kwargs, values, lr=0.01):
    return getattr(optim, name)(groups(values), lr=lr, **kwargs)


def step(opt, grads):
    opt.step(grads=[None if g is None else g.copy() for g in grads])


# -- the layout, against torch --------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_state_dict_matches_torch_key_by_key(name, kwargs):
    values = make_values()
    tensors = [torch.from_numpy(v.copy()) for v in values]
    opt = make(name, kwargs, values)
    topt = getattr(torch.optim, name)(groups(tensors), lr=0.01, **kwargs)
    for grads in grad_steps(3):
        step(opt, grads)
        for t, g in zip(tensors, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        topt.step()

    sd, tsd = opt.state_dict(), topt.state_dict()
    assert list(sd) == list(tsd) == ["state", "param_groups"]

    # param_groups: the same keys in the same order, the same values (indices for params).
    assert len(sd["param_groups"]) == len(tsd["param_groups"])
    for group, tgroup in zip(sd["param_groups"], tsd["param_groups"]):
        assert list(group) == list(tgroup)
        for key, tvalue in tgroup.items():
            assert group[key] == tvalue and type(group[key]) is type(tvalue), key

    # state: the same parameter indices, keys in the same order, equal arrays.
    assert list(sd["state"]) == list(tsd["state"])
    for index, tstate in tsd["state"].items():
        state = sd["state"][index]
        assert list(state) == list(tstate)
        for key, tvalue in tstate.items():
            value = state[key]
            assert isinstance(value, np.ndarray), key
            assert value.shape == tuple(tvalue.shape), key
            assert value.dtype == tvalue.numpy().dtype, key  # step: float32, as torch's
            np.testing.assert_allclose(value, tvalue.numpy(), rtol=1e-12, atol=1e-15)


def test_state_dict_returns_references_like_torch():
    values = make_values()
    opt = make("Adam", {}, values)
    step(opt, grad_steps(1)[0])
    sd = opt.state_dict()
    assert sd["state"][0] is opt.state[values[0]]
    assert sd["state"][0]["exp_avg"] is opt.state[values[0]]["exp_avg"]
    assert sd["param_groups"][0] is not opt.param_groups[0]  # packed copies of the groups


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["parameter", "ndarray"])
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
def test_round_trip_continues_exactly_like_an_uninterrupted_run(name, kwargs, mode):
    schedule = grad_steps(10)
    wrap = Parameter if mode == "parameter" else (lambda v: v)

    def run(opt, params, steps):
        for grads in steps:
            if mode == "parameter":
                for p, g in zip(params, grads):
                    p.grad = None if g is None else g.copy()
                opt.step()
            else:
                step(opt, grads)

    straight = [wrap(v) for v in make_values()]
    straight_opt = make(name, kwargs, straight)
    run(straight_opt, straight, schedule)

    first = [wrap(v) for v in make_values()]
    first_opt = make(name, kwargs, first)
    run(first_opt, first, schedule[:5])
    saved = first_opt.state_dict()

    # A fresh optimizer over copies of the parameters, built with another lr: the loaded
    # hyper-parameters must replace it.
    resumed = [wrap(np.array(v, copy=True, order="K")) for v in (np.asarray(p) for p in first)]
    resumed_opt = make(name, kwargs, resumed, lr=123.0)
    resumed_opt.load_state_dict(saved)
    assert [g["lr"] for g in resumed_opt.param_groups] == [0.01, 0.003]
    run(resumed_opt, resumed, schedule[5:])
    # The interrupted original goes on too: loading must not have tied the two together.
    run(first_opt, first, schedule[5:])

    for a, b, c in zip(straight, resumed, first):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))
    final = straight_opt.state_dict()["state"]
    for resumed_state in (resumed_opt.state_dict()["state"], first_opt.state_dict()["state"]):
        assert list(resumed_state) == list(final)
        for index, state in final.items():
            assert list(resumed_state[index]) == list(state)
            for key, value in state.items():
                np.testing.assert_array_equal(resumed_state[index][key], value)


def test_load_state_dict_copies_arrays():
    values = make_values()
    opt = make("SGD", dict(momentum=0.9), values)
    step(opt, grad_steps(1)[0])
    sd = opt.state_dict()
    other_values = [v.copy() for v in values]
    other = make("SGD", dict(momentum=0.9), other_values)
    other.load_state_dict(sd)
    buf = other.state[other_values[0]]["momentum_buffer"]
    assert buf is not sd["state"][0]["momentum_buffer"]
    assert not np.shares_memory(buf, sd["state"][0]["momentum_buffer"])
    np.testing.assert_array_equal(buf, sd["state"][0]["momentum_buffer"])
    assert other.param_groups[0]["params"][0] is other_values[0]


def test_load_state_dict_casts_floating_state_to_the_param_dtype_but_not_step():
    values64 = make_values(np.float64)
    opt64 = make("Adam", {}, values64)
    step(opt64, grad_steps(2)[1])
    values32 = make_values(np.float32)
    opt32 = make("Adam", {}, values32)
    opt32.load_state_dict(opt64.state_dict())
    state = opt32.state[values32[0]]
    assert state["exp_avg"].dtype == np.float32
    assert state["step"].dtype == np.float32 and state["step"] == 1


def test_load_torch_state_dict_and_continue_like_torch():
    values = make_values()
    tensors = [torch.from_numpy(v.copy()) for v in values]
    topt = torch.optim.Adam(groups(tensors), lr=0.01, amsgrad=True)
    schedule = grad_steps(6)
    for grads in schedule[:3]:
        for t, g in zip(tensors, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        topt.step()
    arrays = [t.numpy().copy() for t in tensors]
    opt = optim.Adam(groups(arrays), lr=0.5)
    opt.load_state_dict(topt.state_dict())
    assert isinstance(opt.state[arrays[0]]["step"], np.ndarray)
    for grads in schedule[3:]:
        for t, g in zip(tensors, grads):
            t.grad = None if g is None else torch.from_numpy(g.copy())
        topt.step()
        step(opt, grads)
    for a, t in zip(arrays, tensors):
        np.testing.assert_allclose(a, t.numpy(), rtol=1e-12, atol=1e-15)


def test_adam_state_with_a_numeric_step_is_converted():
    values = make_values()
    opt = make("Adam", {}, values)
    step(opt, grad_steps(2)[1])
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["step"] = 1  # as older torch versions saved it
    fresh_values = [v.copy() for v in values]
    fresh = make("Adam", {}, fresh_values)
    fresh.load_state_dict(sd)
    step_t = fresh.state[fresh_values[0]]["step"]
    assert isinstance(step_t, np.ndarray) and step_t.dtype == np.float32 and step_t == 1


def test_adam_state_dict_loaded_into_adamw_is_decoupled():
    values = make_values()
    adam = make("Adam", {}, values)
    adamw = optim.AdamW(groups([v.copy() for v in values]))
    adamw.load_state_dict(adam.state_dict())
    assert all(g["decoupled_weight_decay"] is True for g in adamw.param_groups)


def test_load_state_dict_errors_match_torch():
    values = make_values()
    opt = make("SGD", {}, values)
    tensors = [torch.from_numpy(v.copy()) for v in values]
    topt = torch.optim.SGD(groups(tensors), lr=0.01)
    bad = [
        {"state": {}, "param_groups": opt.state_dict()["param_groups"][:1]},
        {"state": {}, "param_groups": [dict(g, params=[0]) for g in opt.state_dict()["param_groups"]]},
    ]
    for sd in bad:
        with pytest.raises(ValueError) as ours:
            opt.load_state_dict(sd)
        with pytest.raises(ValueError) as theirs:
            topt.load_state_dict(sd)
        assert str(ours.value) == str(theirs.value)
    assert len(opt.state) == 0 and opt.param_groups[1]["lr"] == 0.003


def test_loaded_state_with_wrong_shape_is_rejected_before_any_update():
    values = make_values()
    opt = make("SGD", dict(momentum=0.9), values)
    sd = opt.state_dict()
    sd["state"][1] = {"momentum_buffer": np.zeros(3)}  # parameter 1 has shape (5,)
    opt.load_state_dict(sd)
    before = [v.copy() for v in values]
    with pytest.raises(ValueError, match="momentum_buffer"):
        step(opt, grad_steps(2)[1])
    for v, b in zip(values, before):
        np.testing.assert_array_equal(v, b)
    assert list(opt.state) == [values[1]]  # no lazily created state either


# -- the state mapping, pickling ------------------------------------------------------------------


def test_state_is_keyed_by_parameter_identity():
    a, b = np.zeros(3), np.zeros(3)  # equal, unhashable arrays
    opt = optim.SGD([a, b], lr=0.1, momentum=0.9)
    opt.step(grads=[np.ones(3), None])
    assert a in opt.state and b not in opt.state
    assert len(opt.state) == 1  # membership tests create nothing
    assert opt.state.get(b) is None
    assert opt.state[b] == {} and len(opt.state) == 2  # reading creates, like defaultdict


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_optimizer_copies_keep_state_attached_to_the_copied_params(how):
    params = [Parameter(v) for v in make_values()]
    opt = make("Adam", dict(amsgrad=True), params)
    for p, g in zip(params, grad_steps(1)[0]):
        p.grad = g
    opt.step()
    clone = pickle.loads(pickle.dumps(opt)) if how == "pickle" else copy.deepcopy(opt)
    cloned_params = [p for g in clone.param_groups for p in g["params"]]
    assert all(c is not p for c, p in zip(cloned_params, params))
    for c, p in zip(cloned_params, params):
        assert (c in clone.state) == (p in opt.state)
        for key, value in opt.state.get(p, {}).items():
            np.testing.assert_array_equal(clone.state[c][key], value)
    clone.step()  # the copies carry their gradients
    opt.step()
    for c, p in zip(cloned_params, params):
        np.testing.assert_array_equal(c.data, p.data)


def test_state_lookups_used_by_a_step_agree_with_the_mapping():
    """Optimizer.state keeps a second index by Parameter for the per-step lookups; it must
    follow every change made through the mapping (set, replace, delete, create on read,
    copies and pickles), for Parameter and ndarray keys alike."""
    from gradclip.optim.optimizer import _dicts_of, _get_each

    params = [Parameter(np.zeros(2)) for _ in range(3)]
    arrays = [np.zeros(2), np.ones(2)]
    opt = optim.SGD(params + arrays, lr=0.1, momentum=0.9)
    opt.step(grads=[np.ones(2)] * 5)
    keys = params + arrays
    state = opt.state

    def check(st):
        expect = [st.get(k, {}).get("momentum_buffer") for k in keys]
        got = _get_each(st, keys, "momentum_buffer")
        assert len(got) == len(expect) and all(a is b for a, b in zip(got, expect))
        got_params = _get_each(st, params, "momentum_buffer")
        assert all(a is b for a, b in zip(got_params, expect[:3]))

    check(state)
    state[params[0]] = {"momentum_buffer": np.full(2, 7.0)}  # replaced
    del state[params[1]]  # deleted
    check(state)
    assert params[1] not in state
    fresh = _dicts_of(state, params)  # creates the missing entry, as state[p] does
    assert params[1] in state and fresh[1] == {} and fresh[1] is state[params[1]]
    assert all(d is state[p] for d, p in zip(fresh, params))
    check(state)
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        # The copy's keys are the copy's parameters: look them up by those.
        clone_keys = [p for g in clone.param_groups for p in g["params"]]
        expect = [clone.state.get(k, {}).get("momentum_buffer") for k in clone_keys]
        got = _get_each(clone.state, clone_keys, "momentum_buffer")
        assert all(a is b for a, b in zip(got, expect))
        np.testing.assert_array_equal(got[0], 7.0)
    opt.load_state_dict(opt.state_dict())
    check(opt.state)
    np.testing.assert_array_equal(_get_each(opt.state, params, "momentum_buffer")[0], 7.0)


@pytest.mark.parametrize(
    "layout",
    [[[0, 1, 0]], [[0, 0, 1, 0]], [[0, 1], [2, 3, 2]], [[1, 0, 1, 1], [2]]],
    ids=str,
)
@pytest.mark.filterwarnings("ignore:optimizer contains a parameter group with duplicate parameters")
def test_state_dict_numbers_a_parameter_listed_twice_as_torch(layout):
    """torch numbers a parameter listed twice in a group by its last position; the state is
    keyed by that number, and loading the state dict back pairs it with the same parameter."""
    n = 1 + max(i for group in layout for i in group)
    values = [np.full(2, float(i + 1)) for i in range(n)]
    tensors = [torch.tensor(v) for v in values]
    opt = optim.SGD([{"params": [values[i] for i in g]} for g in layout], lr=0.1, momentum=0.9)
    topt = torch.optim.SGD([{"params": [tensors[i] for i in g]} for g in layout], lr=0.1, momentum=0.9)
    # Each parameter gets momentum state keyed by the parameter, however often it is listed.
    for v, t in zip(values, tensors):
        opt.state[v]["momentum_buffer"] = v * 10
        topt.state[t]["momentum_buffer"] = torch.tensor(v * 10)
    sd, tsd = opt.state_dict(), topt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [g["params"] for g in tsd["param_groups"]]
    assert sorted(sd["state"]) == sorted(tsd["state"])
    for key, state in sd["state"].items():
        np.testing.assert_array_equal(state["momentum_buffer"], tsd["state"][key]["momentum_buffer"].numpy())
    reloaded = optim.SGD([{"params": [values[i] for i in g]} for g in layout], lr=0.1, momentum=0.9)
    reloaded.load_state_dict(tsd)
    for v in values:
        np.testing.assert_array_equal(reloaded.state[v]["momentum_buffer"], v * 10)
