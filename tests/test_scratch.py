"""The scratch blocks C calls keep between them (csrc/gc_scratch.c).

A call on a long list needs O(list length) bytes of descriptors, bounds and partials; they come
from a few kept blocks instead of malloc. What must hold: a reused block's old contents never
change a result, blocks are given back on every path (tests/conftest.py checks that after every
test of the suite), the memory kept is bounded, and threads and forked children are safe.
"""

from __future__ import annotations

import multiprocessing
import threading

import numpy as np
import pytest

import gradclip
from gradclip import _C
from gradclip.optim import SGD, Adam

SLOTS, SLOT_MAX = 8, 1 << 20  # GC_SCRATCH_SLOTS, GC_SCRATCH_MAX_BYTES


def _arrays(n, size, seed, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(size).astype(dtype) for _ in range(n)]


def _every_call(grads):
    """Each entry point that collects a list, on copies of `grads`: its results, as bytes."""
    out = []
    work = [g.copy() for g in grads]
    out.append(np.float64(gradclip.get_total_norm(work, 2.0)).tobytes())
    out.append(np.float64(gradclip.get_total_norm(work, 1.5)).tobytes())
    out.append(np.float64(gradclip.get_total_norm(work, float("inf"))).tobytes())
    out.append(np.float64(gradclip.clip_grad_norm_(work, 0.5)).tobytes())
    gradclip.clip_grad_value_(work, 0.01)
    gradclip.clip_grads_with_norm_(work, 1.0, 3.0)
    out.extend(w.tobytes() for w in work)
    for cls in (SGD, Adam):
        params = [gradclip.Parameter(np.linspace(-1, 1, g.size, dtype=g.dtype)) for g in grads]
        for p, g in zip(params, grads):
            p.grad = g.copy()
        opt = cls(params, lr=0.1) if cls is Adam else cls(params, lr=0.1, momentum=0.9)
        opt.step()
        opt.clip_and_step(0.5)
        out.extend(p.data.tobytes() for p in params)
    out.append(np.float64(_C.list_dot(grads, grads)).tobytes())
    return out


def test_a_reused_block_does_not_change_any_result():
    """The same calls before and after blocks were filled by calls on other lists (other sizes,
    dtypes and values) give the same bits."""
    grads = _arrays(1000, 64, seed=0)
    first = _every_call(grads)
    _every_call(_arrays(3000, 7, seed=1, dtype=np.float64))
    _every_call(_arrays(1500, 33, seed=2))
    assert _every_call(grads) == first
    assert _C._scratch()[0] == 0


def test_a_steady_loop_keeps_the_same_blocks():
    grads = _arrays(1000, 64, seed=3)
    gradclip.clip_grad_norm_(grads, 1.0)
    kept = _C._scratch()[1]
    assert kept > 0  # a list this long does use kept blocks
    for _ in range(20):
        gradclip.clip_grad_norm_(grads, 1.0)
        gradclip.get_total_norm(grads)
    assert _C._scratch() == (0, kept)


def test_tables_larger_than_a_slot_are_not_kept():
    """200,000 arrays: every table of the call (descriptors, shapes, bounds, sorted ranges) is
    over a slot's limit, so it goes to malloc and the kept memory does not change."""
    gradclip.clip_grad_norm_(_arrays(1000, 64, seed=4), 1.0)
    kept = _C._scratch()[1]
    assert 0 < kept <= SLOTS * SLOT_MAX
    grads = _arrays(200_000, 1, seed=4)
    total = gradclip.get_total_norm(grads)
    expected = np.sqrt(np.sum(np.concatenate(grads).astype(np.float64) ** 2))
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    gradclip.clip_grad_norm_(grads, 1.0)
    assert _C._scratch() == (0, kept)


@pytest.mark.parametrize("error", ["read-only", "dtype", "nonfinite"])
def test_blocks_are_given_back_when_a_call_fails(error):
    grads = _arrays(1000, 64, seed=5)
    if error == "read-only":
        grads[-1].flags.writeable = False
        with pytest.raises(ValueError, match="read-only"):
            gradclip.clip_grad_norm_(grads, 1.0)
    elif error == "dtype":
        grads[-1] = grads[-1].astype(np.int32)
        with pytest.raises(TypeError):
            gradclip.clip_grad_value_(grads, 1.0)
    else:
        grads[-1][3] = np.inf
        with pytest.raises(RuntimeError):
            gradclip.clip_grad_norm_(grads, 1.0, error_if_nonfinite=True)
    assert _C._scratch()[0] == 0


def test_threads_calling_at_once_get_the_sequential_bits():
    """Large lists (the GIL is released, the calls overlap): every thread's results equal the
    sequential ones, and every block is back afterwards."""
    grads = _arrays(600, 4096, seed=6)
    expected = _every_call(grads)
    results, errors = [None] * 4, []
    barrier = threading.Barrier(4)

    def run(i):
        try:
            barrier.wait()
            results[i] = [_every_call(grads) for _ in range(3)]
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for per_thread in results:
        for got in per_thread:
            assert got == expected
    assert _C._scratch()[0] == 0


def _child_call():
    grads = _arrays(1000, 64, seed=7)
    return _every_call(grads), _C._scratch()[0]


def test_a_forked_child_uses_the_blocks_it_inherited():
    expected = _every_call(_arrays(1000, 64, seed=7))  # the parent holds kept blocks now
    with multiprocessing.get_context("fork").Pool(1) as pool:
        got, in_use = pool.apply_async(_child_call).get(timeout=120)
    assert got == expected
    assert in_use == 0
