"""float16 SGD and Adam(weight_decay) against real torch, bit for bit, where torch's CPU
kernels split one operation between two roundings.

torch computes ``a.add(b, alpha=s)`` for float16 as ``fma(b, s, a)`` in float32 in its
vectorised loop, but as ``a + h(s * b)`` in float16 arithmetic in its scalar loop: the last
``n % 64`` elements of a contiguous tensor (two AVX-512 vectors of 32 halves per iteration),
every element of a non-contiguous tensor, and a 0-d tensor. gradclip reproduces both. Sizes
here stay below torch's parallel grain (32768 elements): above it, each of torch's threads
has its own scalar tail, at offsets that depend on torch's thread count (see the README).

torch is a test requirement and these tests must run: they import it unconditionally.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradclip import optim

pytestmark = pytest.mark.torch

SIZES = [1, 5, 31, 33, 63, 64, 65, 100, 127, 128, 130, 1000, 4097]
CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CONFIGS)]


def layout(kind, n, rng, scale=1.0):
    if kind == "contiguous":
        return (rng.standard_normal(n) * scale).astype(np.float16)
    if kind == "strided":
        return (rng.standard_normal(2 * n) * scale).astype(np.float16)[::2]
    if kind == "fortran":
        return np.asfortranarray((rng.standard_normal((n, 3)) * scale).astype(np.float16))
    if kind == "0-d":
        return np.asarray(rng.standard_normal() * scale).astype(np.float16)
    raise AssertionError(kind)


def as_torch(a):
    """A tensor with a's values and layout (torch.from_numpy of a view of a copy)."""
    if a.ndim == 1 and a.strides[0] != a.itemsize:
        return torch.from_numpy(np.repeat(a, 2))[::2]
    return torch.from_numpy(a.copy(order="K"))


def run_both(name, kwargs, kind, n, steps=3, seed=0):
    rng = np.random.default_rng([seed, n, len(kind)])
    value = layout(kind, n, rng)
    tparam = torch.nn.Parameter(as_torch(value))
    assert tparam.stride() == tuple(s // 2 for s in value.strides)
    opt = getattr(optim, name)([value], **kwargs)
    topt = getattr(torch.optim, name)([tparam], **kwargs)
    for _ in range(steps):
        grad = layout(kind, n, rng, 10.0)
        tparam.grad = as_torch(grad)
        opt.step(grads=[grad])
        topt.step()
    return value, tparam.detach().numpy()


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("kind", ["contiguous", "fortran", "strided"])
def test_float16_tails_and_strided_parameters_match_torch(name, kwargs, n, kind):
    ours, theirs = run_both(name, kwargs, kind, n)
    assert ours.shape == theirs.shape
    bad = np.flatnonzero(ours.view(np.uint16) != theirs.view(np.uint16))
    assert bad.size == 0, f"{bad.size} of {ours.size} elements differ, first at {bad[:8]}"


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=IDS)
@pytest.mark.parametrize("n", [1, 7, 64, 100])
def test_float16_0d_parameters_match_torch(name, kwargs, n):
    # 0-d parameters, several seeds (n is only a seed here).
    for seed in range(n):
        ours, theirs = run_both(name, kwargs, "0-d", 1, seed=seed)
        assert ours.tobytes() == theirs.tobytes(), (seed, ours, theirs)
