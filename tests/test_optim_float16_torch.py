"""float16 optimizers against real torch, bit for bit, in the sizes and layouts where torch's
CPU kernels split an operation between their two loops.

torch computes float16 operations in float32 and rounds each result to float16; its
vectorised loop and its scalar loop round the same way for every operation these optimizers
use (measured: mul, div, add and sub with a tensor or a scalar, addcmul, addcdiv, lerp, sqrt,
reciprocal, clamp, maximum) except ``a.add(b, alpha=s)``: ``fma(b, s, a)`` in float32 in the
vectorised loop, ``a + h(s * b)`` in float16 arithmetic in the scalar loop (``h``: rounded to
float16; ``s`` itself is rounded to float16 in both, as is a scalar added to a tensor, e.g.
``eps``). The scalar loop computes the last ``length % 32`` elements of each row torch
vectorises (a whole contiguous tensor, C or Fortran order, is one row), every element when
some operand of the operation has no unit-stride dim, and a 0-d tensor. gradclip reproduces
which element takes which loop in each operation (gc_optim_tmpl.h), for every elementwise
optimizer, and so gives torch's bits in every layout, with every option.

Sizes here stay below torch's parallel grain (32768 elements) or run with one torch thread:
above it, each of torch's threads has its own scalar tail, at offsets that depend on torch's
thread count (see the README). torch is a test requirement and these tests must run: they
import it unconditionally.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradclip import optim

pytestmark = pytest.mark.torch

SIZES = [1, 5, 7, 31, 32, 33, 63, 64, 65, 100, 127, 128, 130, 1000, 4097]
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.1, maximize=True)),
    ("SGD", dict(lr=0.1, weight_decay=0.1, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, maximize=True, amsgrad=True, eps=1e-3)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
    ("Adagrad", dict(weight_decay=0.1)),
    ("Adagrad", dict(weight_decay=0.1, maximize=True, lr_decay=0.01)),
    ("Adagrad", dict(eps=0.1, initial_accumulator_value=0.1)),
    ("RMSprop", dict(weight_decay=0.1)),
    ("RMSprop", dict(momentum=0.9)),
    ("RMSprop", dict(centered=True)),
    ("RMSprop", dict(centered=True, momentum=0.9, weight_decay=0.1, maximize=True)),
    ("RMSprop", dict(momentum=0.9, weight_decay=0.1, eps=1e-3, alpha=0.3)),
    ("Adadelta", dict(weight_decay=0.1)),
    ("Adadelta", dict(weight_decay=0.1, maximize=True)),
    ("Adadelta", dict(rho=0.5, eps=1e-3, lr=0.1)),
    ("Adamax", dict(weight_decay=0.1)),
    ("Adamax", dict(weight_decay=0.1, maximize=True)),
    ("Adamax", dict(eps=1e-3, betas=(0.3, 0.99))),
    ("NAdam", dict(weight_decay=0.1)),
    ("NAdam", dict(weight_decay=0.1, maximize=True)),
    ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True, momentum_decay=6e-3, eps=1e-3)),
    ("RAdam", dict(weight_decay=0.1)),  # 7 steps (see STEPS): the rectified branch from step 6
    ("RAdam", dict(weight_decay=0.1, maximize=True)),
    ("RAdam", dict(weight_decay=0.1, decoupled_weight_decay=True, eps=1e-3)),
    ("ASGD", dict()),
    ("ASGD", dict(weight_decay=0.1)),
    ("ASGD", dict(weight_decay=0.1, maximize=True)),
    ("ASGD", dict(t0=1, lambd=0.1, lr=0.05)),  # averaging from the second step
    ("Rprop", dict()),
    ("Rprop", dict(maximize=True)),
    ("Rprop", dict(etas=(0.3, 1.7), step_sizes=(1e-3, 0.1))),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]
STEPS = {"RAdam": 7}
# Time-dependent torch state the comparison leaves out: 0-d float32 scalars, compared by the
# optimizers' own parity tests (and the parameters depend on them).
SCALARS = ("step", "eta", "mu", "mu_product")


def layout(kind, n, rng, scale=1.0):
    """A float16 array of n (or n x something) elements in layout `kind`."""

    def draw(*shape):
        return (rng.standard_normal(shape) * scale).astype(np.float16)

    if kind == "contiguous":
        return draw(n)
    if kind == "strided":  # a 1-D view: torch's scalar loop throughout, its temporaries not
        return draw(2 * n)[::2]
    if kind == "fortran":
        return np.asfortranarray(draw(n, 3))
    if kind == "C":
        return draw(n, 3)
    if kind == "rows":  # rows of n contiguous elements that do not fuse: a tail per row
        return draw(6, n + 1)[::2, 1:]
    if kind == "3-d":
        return np.transpose(draw(4, 3, n), (2, 0, 1))
    if kind == "0-d":
        return np.asarray(rng.standard_normal() * scale).astype(np.float16)
    raise AssertionError(kind)


def as_torch(a):
    """A tensor with a's values and strides (in memory of its own)."""
    if a.ndim == 0:
        return torch.from_numpy(a.copy())
    extent = sum((size - 1) * stride for size, stride in zip(a.shape, a.strides)) // a.itemsize + 1
    t = torch.zeros(extent, dtype=torch.float16).as_strided(a.shape, [s // a.itemsize for s in a.strides])
    t.copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return t


def run_both(name, kwargs, kind, n, grad_kind=None, steps=None, seed=0):
    """Both optimizers over one parameter; the gradients in layout grad_kind (default: kind).
    Returns gradclip's and torch's parameter and (non-scalar) state, in that order."""
    rng = np.random.default_rng([seed, n, len(kind), len(grad_kind or "")])
    value = layout(kind, n, rng)
    tparam = torch.nn.Parameter(as_torch(value))
    assert tparam.stride() == tuple(s // 2 for s in value.strides)
    opt = getattr(optim, name)([value], **kwargs)
    topt = getattr(torch.optim, name)([tparam], **kwargs)
    for _ in range(steps or STEPS.get(name, 4)):
        grad = layout(grad_kind or kind, n, rng, 10.0)
        assert grad.shape == value.shape
        tparam.grad = as_torch(grad)
        opt.step(grads=[grad])
        topt.step()
    state = opt.state[value]
    tstate = topt.state[tparam]
    assert list(state) == list(tstate)
    ours = {"param": value, **{k: v for k, v in state.items() if k not in SCALARS}}
    theirs = {"param": tparam.detach().numpy(), **{k: v.numpy() for k, v in tstate.items() if k not in SCALARS}}
    return ours, theirs


def assert_same_bits(ours, theirs):
    assert list(ours) == list(theirs)
    for key in ours:
        a, b = np.asarray(ours[key]), theirs[key]
        assert a.shape == b.shape and a.dtype == b.dtype == np.float16, key
        bad = np.flatnonzero(np.ravel(a).view(np.uint16) != np.ravel(b).view(np.uint16))
        assert bad.size == 0, f"{key}: {bad.size} of {a.size} elements differ, first at {bad[:8]}"


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["contiguous", "fortran", "strided"])
def test_float16_tails_and_strided_parameters_match_torch(name, kwargs, n, kind):
    assert_same_bits(*run_both(name, kwargs, kind, n))


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("n", [7, 33, 130])
@pytest.mark.parametrize(
    "kind,grad_kind",
    [
        ("strided", "contiguous"),  # the update's operands are contiguous, the decay's not
        ("contiguous", "strided"),  # with maximize, torch's -grad is contiguous again
        ("fortran", "C"),  # the gradient's temporaries follow the gradient's order
        ("C", "fortran"),
        ("rows", None),
        ("3-d", None),
    ],
)
def test_float16_mixed_layouts_match_torch(name, kwargs, n, kind, grad_kind):
    assert_same_bits(*run_both(name, kwargs, kind, n, grad_kind))


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("n", [1, 7, 64, 100])
def test_float16_0d_parameters_match_torch(name, kwargs, n):
    # 0-d parameters, several seeds (n is only a seed here).
    for seed in range(n):
        assert_same_bits(*run_both(name, kwargs, "0-d", 1, seed=seed))


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)),
        ("RMSprop", dict(centered=True, momentum=0.9, weight_decay=0.1, maximize=True)),
        ("ASGD", dict(weight_decay=0.1)),
    ],
)
@pytest.mark.parametrize("kind,n", [("contiguous", 2**20 + 33), ("strided", 70001), ("rows", 40000)])
def test_float16_large_arrays_match_single_threaded_torch(name, kwargs, kind, n):
    # Over gradclip's blocks (65536 elements) and, at 2**20, its threads; torch on one thread
    # keeps one scalar tail per row.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert_same_bits(*run_both(name, kwargs, kind, n, steps=2))
    finally:
        torch.set_num_threads(threads)
