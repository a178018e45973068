"""Python threads and the C kernels (issue 6).

* Four threads clipping (and stepping) their own parameter lists at the same time get
  exactly, bit for bit, the results of running the same calls one after another.
* The GIL is released during a long kernel: another Python thread keeps running while a
  ``get_total_norm`` over 2**25 float32 elements is in C.
* Two threads clipping the *same* arrays at once is a data race (as with NumPy in-place
  operations) but never a crash: every element ends up some product of its original value
  and clip coefficients in (0, 1], so it keeps its sign and never grows.

``GRADCLIP_STRESS=1`` (CI) runs more rounds.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest

import gradclip
from gradclip import Parameter, _C

STRESS = os.environ.get("GRADCLIP_STRESS") == "1"
ROUNDS = int(os.environ.get("GRADCLIP_THREAD_ROUNDS", 200 if STRESS else 20))  # valgrind.sh: few
N_THREADS = 4

from gradclip.optim import SGD, Adam, AdamW


@pytest.fixture(params=[1, 2], ids=["kernel-threads-1", "kernel-threads-2"])
def kernel_threads(request):
    """The C layer's own worker threads (gradclip._C.set_num_threads), when it has them."""
    if not hasattr(_C, "set_num_threads"):
        if request.param != 1:
            pytest.skip("this build has no threaded kernels")
        yield 1
        return
    previous = _C.get_num_threads()
    _C.set_num_threads(request.param)
    try:
        yield request.param
    finally:
        _C.set_num_threads(previous)


def make_grads(seed):
    """A mix of sizes: below and above the GIL-release threshold (32768 elements)."""
    rng = np.random.default_rng(seed)
    return [
        (rng.standard_normal(70_000) * 3).astype(np.float32),
        rng.standard_normal((300, 200))[:, ::2],  # 30,000 float64, strided
        (rng.standard_normal(1000) * 5).astype(np.float16),
        rng.standard_normal((64, 64)).T.copy(),
        np.asarray(rng.standard_normal(()) * 10),
    ]


def workload(grads, rounds):
    """What one thread does to its own list; returns every intermediate result."""
    out = []
    for r in range(rounds):
        out.append(gradclip.get_total_norm(grads, 2.0))
        out.append(gradclip.clip_grad_norm_(grads, 50.0 + r, norm_type=[2.0, 1.0, np.inf][r % 3]))
        gradclip.clip_grad_value_(grads, 2.0 + 0.01 * r)
        gradclip.clip_grads_with_norm_(grads, 1.0, np.float32(1.5))
        for g in grads:  # regrow, so every round clips something
            g *= g.dtype.type(1.7)
    return out


def run_concurrently(target, n):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def run(i):
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_threads_on_separate_lists_match_sequential(kernel_threads):
    sequential_lists = [make_grads(i) for i in range(N_THREADS)]
    sequential = [workload(g, ROUNDS) for g in sequential_lists]
    concurrent_lists = [make_grads(i) for i in range(N_THREADS)]
    concurrent = run_concurrently(lambda i: workload(concurrent_lists[i], ROUNDS), N_THREADS)
    for i in range(N_THREADS):
        assert_bitwise_equal(concurrent[i], sequential[i])
        assert_bitwise_equal(concurrent_lists[i], sequential_lists[i])


def test_reference_values_of_the_workload():
    """The sequential baseline itself is right: one round against float64 NumPy."""
    grads = make_grads(7)
    before = [g.astype(np.float64) for g in grads]
    total = gradclip.get_total_norm(grads, 2.0)
    norms = [np.sqrt(np.sum(b.astype(np.float64) ** 2)) for b in before]
    np.testing.assert_allclose(float(total), np.sqrt(np.sum(np.square(norms))), rtol=1e-12)
    assert total.dtype == np.float64


def optimizer_workload(name, seed, rounds):
    rng = np.random.default_rng(seed)
    params = [
        Parameter(rng.standard_normal(40_000).astype(np.float32)),
        Parameter(rng.standard_normal((100, 50))),
        Parameter(rng.standard_normal(300).astype(np.float16)),
    ]
    cls = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name]
    opt = cls(params, lr=1e-2, momentum=0.9) if name == "SGD" else cls(params, lr=1e-3)
    grad_rng = np.random.default_rng(seed + 1000)
    totals = []
    for r in range(rounds):
        for p in params:
            p.grad = (grad_rng.standard_normal(p.shape) * 2).astype(p.dtype)
        totals.append(gradclip.clip_grad_norm_(params, 5.0))
        if r % 2:
            totals.append(opt.clip_and_step(5.0))
        else:
            opt.step()
    return totals + [p.data.copy() for p in params]


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_optimizers_on_separate_parameters_match_sequential(name, kernel_threads):
    rounds = max(ROUNDS // 2, 5)
    sequential = [optimizer_workload(name, i, rounds) for i in range(N_THREADS)]
    concurrent = run_concurrently(lambda i: optimizer_workload(name, i, rounds), N_THREADS)
    for i in range(N_THREADS):
        assert_bitwise_equal(concurrent[i], sequential[i])


def _progress_during(call, interval=1e-3):
    """Runs call() in this thread while a spinner thread records when it ran. Returns
    (seconds spent in call, seconds of that window during which the spinner made progress)."""
    gaps = []
    stop = threading.Event()
    started = threading.Event()

    def spin():
        last = time.perf_counter()
        started.set()
        while not stop.is_set():
            now = time.perf_counter()
            if now - last > 2e-4:
                gaps.append((last, now))
            last = now

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    spinner = threading.Thread(target=spin)
    try:
        spinner.start()
        started.wait()
        time.sleep(0.01)
        t0 = time.perf_counter()
        call()
        t1 = time.perf_counter()
    finally:
        stop.set()
        spinner.join()
        sys.setswitchinterval(old_interval)
    stalled = sum(max(0.0, min(b, t1) - max(a, t0)) for a, b in gaps)
    return t1 - t0, (t1 - t0) - stalled


def _repeated(call, seconds=0.08, at_least=3):
    """call() repeated for at least `seconds` (and `at_least` times), so that the window is
    long enough to tell on a fast machine as on a slow one."""

    def run():
        t0 = time.perf_counter()
        n = 0
        while n < at_least or time.perf_counter() - t0 < seconds:
            call()
            n += 1

    return run


def _best_ratio(call, tries=3):
    """The largest fraction of a call's duration during which the spinner progressed."""
    best = 0.0
    for _ in range(tries):
        spent, progressed = _progress_during(call)
        assert spent > 0.02, "the call ran too briefly to tell"
        best = max(best, progressed / spent)
    return best


def _numpy_baseline(x):
    """A NumPy float32 reduction of the same array: it releases the GIL, so the spinner's
    progress during it measures what this machine (its cores, its other load) allows."""
    return _best_ratio(_repeated(lambda: np.add.reduce(x)))


@pytest.fixture
def one_kernel_thread():
    # On a 2-core machine the spinner needs the other core: no kernel worker threads.
    previous = _C.get_num_threads() if hasattr(_C, "get_num_threads") else None
    if previous is not None:
        _C.set_num_threads(1)
    yield
    if previous is not None:
        _C.set_num_threads(previous)


def test_gil_is_released_during_a_long_kernel(one_kernel_thread):
    """While get_total_norm reduces 2**25 float32 elements in C, a Python thread runs.

    The spinner records every stretch of more than 0.2 ms in which it could not run. Had the
    kernel held the GIL, the spinner would stall for the whole call (bar one 1 ms switch
    interval before the call entered C). Its progress is compared with its progress during a
    NumPy reduction of the same array, which releases the GIL, so that other load on the
    machine does not decide the outcome."""
    x = np.full(1 << 25, 0.5, np.float32)
    expected = np.float32(np.sqrt(np.float64(0.25) * x.size))
    results = []

    baseline = _numpy_baseline(x)
    ours = _best_ratio(_repeated(lambda: results.append(gradclip.get_total_norm([x]))))
    assert all(r == expected for r in results)
    assert baseline > 0.1, f"the spinner barely ran even while NumPy released the GIL ({baseline:.2f})"
    assert ours > 0.5 * baseline, f"spinner progress {ours:.2f} of the call vs {baseline:.2f} under NumPy"


def test_the_gil_probe_detects_a_held_gil(one_kernel_thread):
    """Control for the test above: a long call that holds the GIL (a reduction over an object
    array) shows as (almost) no progress relative to the same baseline, so the probe can fail."""
    held = np.arange(3_000_000, dtype=object)
    baseline = _numpy_baseline(np.full(1 << 25, 0.5, np.float32))
    ratio = _best_ratio(_repeated(held.sum, at_least=1))
    assert ratio < 0.5 * baseline, f"spinner progress {ratio:.2f} vs baseline {baseline:.2f}"


def test_two_threads_clipping_the_same_arrays(kernel_threads):
    """A data race, documented as such: no crash, and no element gains magnitude or flips sign.

    clip_grad_norm_ only ever multiplies by a coefficient in (0, 1]; interleaved reads may see
    partly scaled values and lost updates may drop a scaling, but the result of any
    interleaving is the original times a product of such coefficients."""
    rng = np.random.default_rng(3)
    grads = [(rng.standard_normal(200_000) * 10).astype(np.float32), rng.standard_normal(50_000) * 10]
    before = [g.copy() for g in grads]

    def hammer(i):
        for r in range(ROUNDS):
            gradclip.clip_grad_norm_(grads, 1e3 * (0.9 ** r))
            gradclip.clip_grad_value_(grads, 30.0 - r * 0.1)
            gradclip.get_total_norm(grads, np.inf)

    run_concurrently(hammer, 2)
    for g, b in zip(grads, before):
        assert np.all(np.isfinite(g))
        assert np.all(np.abs(g) <= np.abs(b))
        assert np.all((g == 0) | (np.sign(g) == np.sign(b)))
    assert float(gradclip.get_total_norm(grads)) <= 1e3 * (0.9 ** (ROUNDS - 1)) * 1.01 + 1.0


def test_replacing_grads_while_another_thread_clips(kernel_threads):
    """One thread rebinds .grad attributes while another clips the parameters: each clip sees
    either the old or the new array, never freed memory (the C layer holds references)."""
    params = [Parameter(np.ones(50_000, np.float32)) for _ in range(4)]
    for p in params:
        p.grad = np.ones(50_000, np.float32)
    stop = threading.Event()

    def rebind():
        k = 0
        while not stop.is_set():
            for p in params:
                p.grad = np.full(50_000, float(k % 7 + 1), np.float32)
            k += 1

    t = threading.Thread(target=rebind)
    t.start()
    try:
        for _ in range(ROUNDS * 5):
            total = gradclip.clip_grad_norm_(params, 1.0)
            assert np.isfinite(total) and total > 0
    finally:
        stop.set()
        t.join()


def test_parallel_kernels_match_one_thread():
    """The C layer's own worker threads (>= 2**20 elements) give bit-identical results."""
    if not hasattr(_C, "set_num_threads"):
        pytest.skip("this build has no threaded kernels")

    def make():
        rng = np.random.default_rng(11)
        return [
            (rng.standard_normal(1 << 20) * 4).astype(np.float32),
            rng.standard_normal((700, 900))[:, ::-1],
            (rng.standard_normal(300_000) * 8).astype(np.float16),
        ]

    previous = _C.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3):
            _C.set_num_threads(n)
            grads = make()
            out = [gradclip.get_total_norm(grads, p) for p in (2.0, 1.0, np.inf, 0.5)]
            out.append(gradclip.clip_grad_norm_(grads, 100.0))
            gradclip.clip_grad_value_(grads, 1.5)
            results[n] = out + grads
    finally:
        _C.set_num_threads(previous)
    assert_bitwise_equal(results[2], results[1])
    assert_bitwise_equal(results[3], results[1])


def _large_workload():
    rng = np.random.default_rng(5)
    grads = [(rng.standard_normal(1 << 21) * 4).astype(np.float32), rng.standard_normal((900, 1300))[::-1]]
    return [gradclip.clip_grad_norm_(grads, 10.0), gradclip.get_total_norm(grads, 1.0)] + grads


def _same_bits_in_both_modes(set_mode, reference_mode, other_mode, restore_mode, threads):
    """_large_workload under set_mode(reference_mode), then three times under other_mode: the
    same bits each time."""
    previous = _C.get_num_threads()
    try:
        _C.set_num_threads(threads)
        set_mode(reference_mode)
        reference = _large_workload()
        set_mode(other_mode)
        others = [_large_workload() for _ in range(3)]
    finally:
        set_mode(restore_mode)
        _C.set_num_threads(previous)
    for result in others:
        assert_bitwise_equal(result, reference)


def test_pool_and_threads_per_call_agree():
    """The persistent workers and threads started per call compute the same bits."""
    _same_bits_in_both_modes(_C._set_thread_pool, False, True, True, threads=3)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_starts_its_own_pool():
    """After fork() the parent's workers do not exist in the child: the child must not wait for
    them (a hang) but start its own, and compute the same bits."""
    import multiprocessing

    previous = _C.get_num_threads()
    _C.set_num_threads(2)
    try:
        expected = _large_workload()  # the parent's pool is running now
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(1) as pool:
            got = pool.apply_async(_large_workload).get(timeout=120)
    finally:
        _C.set_num_threads(previous)
    assert_bitwise_equal(got, expected)


def test_adaptive_thread_count_gives_the_same_bits():
    """Using only the cores that look idle (GRADCLIP_ADAPTIVE_THREADS=1) changes who computes a
    block, never its result."""
    _same_bits_in_both_modes(_C._set_adaptive_threads, False, True, False, threads=2)


def test_many_threads_sharing_the_pool(kernel_threads):
    """Python threads calling large kernels at once: one gets the pool, the others start
    threads of their own; all results match the sequential ones."""
    sequential = [_large_workload() for _ in range(3)]
    concurrent = run_concurrently(lambda i: _large_workload(), 3)
    for result in concurrent:
        assert_bitwise_equal(result, sequential[0])
