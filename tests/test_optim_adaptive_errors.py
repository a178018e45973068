"""Step-time errors of Adagrad, RMSprop, Adadelta and Adamax through the Python classes: the
error names the parameter at fault and nothing (parameters, gradients, state) changes."""

import numpy as np
import pytest

from gradclip import optim
from test_optim_errors import BAD_GRADS, assert_unchanged, good_grads, snapshot

NAMES = ["Adagrad", "RMSprop", "Adadelta", "Adamax"]
KWARGS = {
    "Adagrad": dict(lr_decay=0.1, weight_decay=0.1),
    "RMSprop": dict(centered=True, momentum=0.5, weight_decay=0.1),
    "Adadelta": dict(weight_decay=0.1),
    "Adamax": dict(weight_decay=0.1),
}
# A buffer of each optimizer's state, to break.
BUFFER = {"Adagrad": "sum", "RMSprop": "grad_avg", "Adadelta": "acc_delta", "Adamax": "exp_inf"}


def warmed_up(name, dtype=np.float64):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(dtype) for s in [(3,), (2, 2), (4,)]]
    opt = getattr(optim, name)([{"params": arrays[:2]}, {"params": arrays[2:], "lr": 0.5}], lr=0.1, **KWARGS[name])
    opt.step(grads=[np.ones(3, dtype), np.ones((2, 2), dtype), None])
    return opt, arrays


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("name", NAMES)
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


@pytest.mark.parametrize("breakage", ["shape", "read-only", "missing", "step float64 list"])
@pytest.mark.parametrize("name", NAMES)
def test_broken_state_is_named_and_nothing_changes(name, breakage):
    opt, arrays = warmed_up(name)
    state = opt.state[arrays[1]]
    key = BUFFER[name]
    if breakage == "shape":
        state[key] = np.zeros(5)
        match = rf"{key} of parameter 1 .* has shape \(5,\)"
    elif breakage == "read-only":
        state[key] = state[key].copy()
        state[key].flags.writeable = False
        match = f"{key} of parameter 1 .* is read-only"
    elif breakage == "missing":
        del state[key]
        match = f"{key} missing from the state of parameter 1"
    else:
        state["step"] = [1.0]
        match = "step of parameter 1 .* must be a writable 0-d float32 ndarray"
    grads = good_grads(arrays)
    before = snapshot(opt, grads)
    with pytest.raises((TypeError, ValueError, KeyError), match=match):
        opt.step(grads=grads)
    assert_unchanged(opt, grads, before)


@pytest.mark.parametrize("name", NAMES)
def test_state_created_by_a_failing_first_step_is_removed(name):
    arrays = [np.ones(3), np.ones(2)]
    opt = getattr(optim, name)(arrays)
    had = {id(a): dict(opt.state.get(a, {})) for a in arrays}  # Adagrad's from the constructor
    with pytest.raises(TypeError):
        opt.step(grads=[np.ones(3), np.ones(2, np.float32)])
    for a in arrays:
        assert list(opt.state.get(a, {})) == list(had[id(a)])


@pytest.mark.parametrize(
    "name,kwargs",
    [("Adagrad", dict(fused=True)), ("Adagrad", dict(differentiable=True)), ("RMSprop", dict(capturable=True)),
     ("RMSprop", dict(differentiable=True)), ("Adadelta", dict(capturable=True)), ("Adamax", dict(differentiable=True)),
     ("Adamax", dict(capturable=True))],
)
def test_unsupported_torch_options_are_refused(name, kwargs):
    with pytest.raises(NotImplementedError, match=next(iter(kwargs))):
        getattr(optim, name)([np.zeros(2)], lr=0.1, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_complex_parameters_only_where_supported(name):
    z = np.zeros(2, np.complex128)
    getattr(optim, name)([z])
    optim.Adam([z])  # every elementwise optimizer takes complex parameters now

    class NoComplex(optim.Optimizer):  # the base class's default: real parameters only
        pass

    with pytest.raises(TypeError, match="complex128"):
        NoComplex([z], {})
